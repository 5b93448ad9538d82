/*
 * test_attention.c: tern_attention against a naive per-head
 * softmax(Q K^T * scale) V computed here in double, for bidirectional and
 * causal masks, grouped-query heads, a KV cache filled one query at a time,
 * strided (fused QKV) layouts, huge scores, and argument validation.
 *
 * Tolerance (U = 2^-24, float unit roundoff): each score is a float dot of
 * head_dim terms, off by at most (hd + 2) U * scale * sum|q k| = delta; a
 * softmax input error delta changes each probability by at most 2 delta
 * relative; the float weighted sum over nk keys adds (nk + 4) U, and
 * the SIMD paths' own exp (a few ulp against expf) up to 8 U more. So an
 * output is within (2 delta_max + (nk + 12) U) * sum_j p_j |v_j|; the
 * check uses twice that.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "tern/ops.h"
#include "tern/tensor.h"
#include "testutil.h"

#define U (1.0 / 16777216.0)

static void fill(tu_rng *r, float *x, int64_t n, float amp)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = amp * tu_normal(r);
}

static tern_attn_params params(int64_t n_q, int64_t n_kv, int64_t nh, int64_t nkv, int64_t hd,
			       int64_t q_pos0, bool causal)
{
	tern_attn_params p = { .n_q = n_q, .n_kv = n_kv, .n_heads = nh, .n_kv_heads = nkv,
			       .head_dim = hd, .q_pos0 = q_pos0, .causal = causal,
			       .scale = 1.0f / sqrtf((float)hd) };
	return p;
}

/* The naive reference on dense buffers; checks `out` (dense) against it. */
static void check_reference(const tern_attn_params *p, const float *q, const float *k,
			    const float *v, const float *out)
{
	const int64_t hd = p->head_dim, nh = p->n_heads, nkvh = p->n_kv_heads;
	double s[512], dl[512];
	for (int64_t i = 0; i < p->n_q; i++)
		for (int64_t h = 0; h < nh; h++) {
			const int64_t kvh = h / (nh / nkvh);
			const float *qh = q + (i * nh + h) * hd;
			const int64_t nk = p->causal ? p->q_pos0 + i + 1 : p->n_kv;
			double mx = -INFINITY, sum = 0, dmax = 0;
			for (int64_t j = 0; j < nk; j++) {
				const float *kj = k + (j * nkvh + kvh) * hd;
				double d = 0, a = 0;
				for (int64_t e = 0; e < hd; e++) {
					d += (double)qh[e] * kj[e];
					a += fabs((double)qh[e] * kj[e]);
				}
				s[j] = d * p->scale;
				dl[j] = (hd + 2) * U * fabs(p->scale) * a;
				mx = fmax(mx, s[j]);
				dmax = fmax(dmax, dl[j]);
			}
			for (int64_t j = 0; j < nk; j++)
				sum += s[j] = exp(s[j] - mx);
			for (int64_t e = 0; e < hd; e++) {
				double want = 0, mag = 0;
				for (int64_t j = 0; j < nk; j++) {
					const double vj = v[(j * nkvh + kvh) * hd + e];
					want += s[j] / sum * vj;
					mag += s[j] / sum * fabs(vj);
				}
				const double tol = 2 * (2 * dmax + (nk + 12) * U) * mag + 1e-30;
				const float got = out[(i * nh + h) * hd + e];
				cr_assert(fabs(got - want) <= tol,
					  "q %lld head %lld dim %lld: got %.9g want %.9g (tol %.3g)",
					  (long long)i, (long long)h, (long long)e, got, want, tol);
			}
		}
}

static float Q[8192], K[8192], V[8192], O[8192], O2[8192], S[512];
static uint16_t KH[8192], VH[8192];

static void run_case(int64_t n_q, int64_t n_kv, int64_t nh, int64_t nkv, int64_t hd,
		     int64_t q_pos0, bool causal, uint64_t seed)
{
	tu_rng r = tu_rng_new(seed);
	tern_attn_params p = params(n_q, n_kv, nh, nkv, hd, q_pos0, causal);
	fill(&r, Q, n_q * nh * hd, 1.0f);
	fill(&r, K, n_kv * nkv * hd, 1.0f);
	fill(&r, V, n_kv * nkv * hd, 1.0f);
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_OK);
	check_reference(&p, Q, K, V, O);
}

Test(attention, bidirectional_matches_naive_reference)
{
	run_case(5, 7, 4, 4, 16, 0, false, 1);
	run_case(1, 1, 1, 1, 1, 0, false, 2);
	run_case(3, 33, 2, 2, 17, 0, false, 3);  /* odd head_dim */
	run_case(9, 9, 3, 3, 64, 0, false, 4);
	run_case(2, 5, 2, 2, 8, 100, false, 5); /* q_pos0 ignored */
}

Test(attention, causal_prefill_matches_masked_reference)
{
	run_case(9, 9, 4, 4, 16, 0, true, 6);
	run_case(1, 1, 2, 2, 8, 0, true, 7);
	run_case(4, 11, 2, 2, 32, 7, true, 8); /* chunk at the end of a cache */
	run_case(3, 10, 2, 2, 5, 2, true, 9);  /* cache longer than needed */
}

Test(attention, gqa_maps_query_heads_to_kv_groups)
{
	run_case(6, 6, 8, 2, 16, 0, true, 10);
	run_case(3, 8, 6, 3, 8, 0, false, 11);
	run_case(2, 4, 5, 1, 12, 0, false, 12); /* multi-query */
}

/* GQA must equal ordinary multi-head attention over K/V whose heads are
 * repeated group times; the arithmetic per head is identical, so exactly. */
Test(attention, gqa_equals_mha_with_repeated_kv_heads)
{
	tu_rng r = tu_rng_new(13);
	const int64_t nq = 4, nkv = 6, nh = 6, nkvh = 2, hd = 8, g = nh / nkvh;
	static float K2[8192], V2[8192];
	fill(&r, Q, nq * nh * hd, 1.0f);
	fill(&r, K, nkv * nkvh * hd, 1.0f);
	fill(&r, V, nkv * nkvh * hd, 1.0f);
	for (int64_t j = 0; j < nkv; j++)
		for (int64_t h = 0; h < nh; h++) {
			memcpy(K2 + (j * nh + h) * hd, K + (j * nkvh + h / g) * hd, hd * sizeof(float));
			memcpy(V2 + (j * nh + h) * hd, V + (j * nkvh + h / g) * hd, hd * sizeof(float));
		}
	tern_attn_params p = params(nq, nkv, nh, nkvh, hd, 2, true);
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_OK);
	p.n_kv_heads = nh;
	cr_assert(tern_attention(&p, Q, K2, V2, O2, S) == TERN_OK);
	cr_assert(memcmp(O, O2, nq * nh * hd * sizeof(float)) == 0);
}

/* Decoding one token at a time against a growing cache (q_pos0 = t,
 * n_kv = t + 1) performs the same float operations as the causal batch
 * row t, so the results are identical, not just close. */
Test(attention, kv_cache_incremental_equals_full_causal_batch)
{
	tu_rng r = tu_rng_new(14);
	const int64_t n = 12, nh = 4, nkvh = 2, hd = 16, w = nh * hd;
	fill(&r, Q, n * w, 1.0f);
	fill(&r, K, n * nkvh * hd, 1.0f);
	fill(&r, V, n * nkvh * hd, 1.0f);
	tern_attn_params p = params(n, n, nh, nkvh, hd, 0, true);
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_OK);
	check_reference(&p, Q, K, V, O);

	for (int64_t t = 0; t < n; t++) {
		tern_attn_params d = params(1, t + 1, nh, nkvh, hd, t, true);
		cr_assert(tern_attention(&d, Q + t * w, K, V, O2 + t * w, S) == TERN_OK);
	}
	cr_assert(memcmp(O, O2, n * w * sizeof(float)) == 0);

	/* Chunked prefill: the first 5 positions, then the remaining 7. */
	tern_attn_params a = params(5, 5, nh, nkvh, hd, 0, true);
	tern_attn_params b = params(7, 12, nh, nkvh, hd, 5, true);
	memset(O2, 0, n * w * sizeof(float));
	cr_assert(tern_attention(&a, Q, K, V, O2, S) == TERN_OK);
	cr_assert(tern_attention(&b, Q + 5 * w, K, V, O2 + 5 * w, S) == TERN_OK);
	cr_assert(memcmp(O, O2, n * w * sizeof(float)) == 0);
}

/* A fused QKV projection output [n][q | k | v] read in place through
 * strides, and an output with padding between rows that must survive. */
Test(attention, strided_layout_equals_dense)
{
	tu_rng r = tu_rng_new(15);
	const int64_t n = 7, nh = 4, nkvh = 2, hd = 8;
	const int64_t qw = nh * hd, kw = nkvh * hd, fw = qw + 2 * kw, ow = qw + 3;
	static float F[8192], OS[8192];
	fill(&r, F, n * fw, 1.0f);
	for (int64_t t = 0; t < n; t++) {
		memcpy(Q + t * qw, F + t * fw, qw * sizeof(float));
		memcpy(K + t * kw, F + t * fw + qw, kw * sizeof(float));
		memcpy(V + t * kw, F + t * fw + qw + kw, kw * sizeof(float));
	}
	tern_attn_params p = params(n, n, nh, nkvh, hd, 0, true);
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_OK);

	for (int64_t i = 0; i < n * ow; i++)
		OS[i] = -7.0f;
	p.q_stride = fw;
	p.kv_stride = fw;
	p.out_stride = ow;
	cr_assert(tern_attention(&p, F, F + qw, F + qw + kw, OS, S) == TERN_OK);
	for (int64_t t = 0; t < n; t++) {
		cr_assert(memcmp(O + t * qw, OS + t * ow, qw * sizeof(float)) == 0);
		for (int64_t e = qw; e < ow; e++)
			cr_assert(OS[t * ow + e] == -7.0f, "padding overwritten");
	}
}

/* Scores of order 1e4: the softmax must stay finite and pick the best key. */
Test(attention, huge_scores_stay_finite)
{
	tu_rng r = tu_rng_new(16);
	const int64_t nkv = 9, hd = 4;
	fill(&r, V, nkv * hd, 1.0f);
	for (int64_t j = 0; j < nkv; j++)
		for (int64_t e = 0; e < hd; e++)
			K[j * hd + e] = (float)(j == 5 ? 100 : j * 10) * (e % 2 ? -1.0f : 1.0f);
	for (int64_t e = 0; e < hd; e++)
		Q[e] = 50.0f * (e % 2 ? -1.0f : 1.0f);
	tern_attn_params p = params(1, nkv, 1, 1, hd, 0, false);
	p.scale = 1.0f;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_OK);
	for (int64_t e = 0; e < hd; e++) {
		cr_assert(isfinite(O[e]));
		cr_assert(O[e] == V[5 * hd + e], "key 5 wins by 4000: p = 1 in float");
	}
}

Test(attention, single_key_returns_its_value)
{
	tu_rng r = tu_rng_new(17);
	fill(&r, Q, 3 * 8, 1.0f);
	fill(&r, K, 8, 1.0f);
	fill(&r, V, 8, 1.0f);
	tern_attn_params p = params(1, 1, 3, 1, 8, 0, true);
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_OK);
	for (int64_t h = 0; h < 3; h++)
		cr_assert(memcmp(O + h * 8, V, 8 * sizeof(float)) == 0);
}

Test(attention, rejects_bad_parameters)
{
	const tern_attn_params good = params(2, 4, 4, 2, 8, 0, true);
	cr_assert(tern_attention(&good, Q, K, V, O, S) == TERN_OK);

	tern_attn_params p = good;
	p.n_kv_heads = 3; /* 4 % 3 != 0 */
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.n_kv_heads = 0;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.n_heads = -4;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.head_dim = 0;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.n_q = 0;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.n_kv = 0;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.q_pos0 = -1;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.q_pos0 = 3; /* causal queries at 3..4 need 5 keys, cache has 4 */
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p.causal = false; /* bidirectional ignores q_pos0 */
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_OK);
	p = good; p.q_stride = 31; /* below n_heads * head_dim = 32 */
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.kv_stride = 15;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.out_stride = -1;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	p = good; p.scale = NAN;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_INVALID);
	cr_assert(tern_attention(NULL, Q, K, V, O, S) == TERN_E_INVALID);
	cr_assert(tern_attention(&good, Q, K, V, O, NULL) == TERN_E_INVALID);
	cr_assert(tern_attention(&good, Q, NULL, V, O, S) == TERN_E_INVALID);
	p = good; p.n_heads = INT64_MAX / 4; p.n_kv_heads = 1;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_OVERFLOW);
	p = good; p.causal = false; p.n_kv = INT64_MAX / 8;
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_E_OVERFLOW);
}

/* The header's recipe for threading: one call per kv head on offset
 * pointers with full-width strides gives the whole call's result exactly. */
Test(attention, per_kv_head_calls_equal_one_call)
{
	tu_rng r = tu_rng_new(18);
	const int64_t n = 5, nh = 6, nkvh = 3, hd = 8, g = nh / nkvh;
	fill(&r, Q, n * nh * hd, 1.0f);
	fill(&r, K, n * nkvh * hd, 1.0f);
	fill(&r, V, n * nkvh * hd, 1.0f);
	tern_attn_params p = params(n, n, nh, nkvh, hd, 0, true);
	cr_assert(tern_attention(&p, Q, K, V, O, S) == TERN_OK);
	for (int64_t kh = 0; kh < nkvh; kh++) {
		tern_attn_params s = params(n, n, g, 1, hd, 0, true);
		s.q_stride = s.out_stride = nh * hd;
		s.kv_stride = nkvh * hd;
		cr_assert(tern_attention(&s, Q + kh * g * hd, K + kh * hd, V + kh * hd,
					 O2 + kh * g * hd, S) == TERN_OK);
	}
	cr_assert(memcmp(O, O2, n * nh * hd * sizeof(float)) == 0);
}

/* tern_attention_ctx on every kernel path this machine runs: the SIMD
 * kernels (FMA, VEC-wide slices, masked tails, blocks of 8 keys, out in
 * chunks of 8 vectors, a kv head's query heads together) against the same
 * double reference, on head sizes around every slice and chunk edge, key
 * counts around the block, groups of 2 and 5 query heads, and keys and
 * values in f32 and in f16 (the reference then takes the rounded values). */
static const char *const paths[] = { "scalar", "avx2", "avx512", "neon" };
#define N_PATHS (sizeof paths / sizeof paths[0])

/* A one-thread context on kernel path `name`, NULL when it is not built
 * here or the CPU lacks it. */
static tern_ctx *path_ctx(const char *name)
{
	tern_ctx_params cp = tern_ctx_default_params();
	cp.n_threads = 1;
	cp.kernel = name;
	tern_ctx *ctx = NULL;
	return tern_ctx_new(&cp, &ctx) == TERN_OK ? ctx : NULL;
}

Test(attention, every_kernel_path_matches_naive_reference)
{
	static const int64_t hds[] = { 1, 7, 8, 9, 16, 17, 33, 64, 100, 128, 129, 200, 257 };
	int ran = 0;
	for (size_t pi = 0; pi < N_PATHS; pi++) {
		tern_ctx *ctx = path_ctx(paths[pi]);
		if (!ctx)
			continue;
		ran++;
		for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
			const int64_t hd = hds[hi];
			for (int64_t n_kv = 1; n_kv <= 19; n_kv += 3) {
				if (n_kv * 2 * hd > 8192)
					continue;
				tu_rng r = tu_rng_new((uint64_t)(hd * 100 + n_kv));
				/* Causal prefill over up to 4 queries: groups of 2
				 * (4 heads on 2 kv heads) and of 5 (5 on 1) in turn. */
				const int64_t nq = n_kv < 4 ? n_kv : 4;
				const int64_t nh = hi % 2 ? 5 : 4, nkv = hi % 2 ? 1 : 2;
				if (nq * nh * hd > 8192 || n_kv * nkv * hd > 8192)
					continue;
				tern_attn_params p = params(nq, n_kv, nh, nkv, hd, n_kv - nq, true);
				/* Amplitude 1, then 12: scores spread over hundreds,
				 * so the softmax's exp runs far into its negative range
				 * (and underflows to 0). */
				for (int amp = 1; amp <= 12; amp += 11) {
					fill(&r, Q, nq * nh * hd, (float)amp);
					fill(&r, K, n_kv * nkv * hd, (float)amp);
					fill(&r, V, n_kv * nkv * hd, 1.0f);
					const tern_dtype F32 = TERN_DTYPE_F32, F16 = TERN_DTYPE_F16;
					int rc = tern_attention_ctx(ctx, &p, Q, F32, K, V, O, S);
					cr_assert(rc == TERN_OK, "%s", paths[pi]);
					check_reference(&p, Q, K, V, O);
					/* An f16 cache: the reference on the rounded values. */
					for (int64_t e = 0; e < n_kv * nkv * hd; e++) {
						KH[e] = tern_f32_to_f16(K[e]);
						VH[e] = tern_f32_to_f16(V[e]);
						K[e] = tern_f16_to_f32(KH[e]);
						V[e] = tern_f16_to_f32(VH[e]);
					}
					rc = tern_attention_ctx(ctx, &p, Q, F16, KH, VH, O, S);
					cr_assert(rc == TERN_OK, "%s f16", paths[pi]);
					check_reference(&p, Q, K, V, O);
				}
			}
		}
		tern_ctx_free(ctx);
	}
	cr_assert(ran >= 1, "not even the scalar path ran");
	tern_attn_params p = params(1, 1, 1, 1, 8, 0, true);
	cr_assert(tern_attention_ctx(NULL, &p, Q, TERN_DTYPE_F32, K, V, O, S) == TERN_E_INVALID);
	tern_ctx *ctx = NULL;
	cr_assert(tern_ctx_new(NULL, &ctx) == TERN_OK);
	cr_assert(tern_attention_ctx(ctx, &p, Q, TERN_DTYPE_BF16, K, V, O, S) == TERN_E_INVALID);
	tern_ctx_free(ctx);
}

Test(attention, a_group_of_heads_equals_its_heads_one_at_a_time_bitwise)
{
	/* tern_attention_ctx takes a kv head's query heads together (the
	 * AVX-512 path two at a time, sharing each key and value vector it
	 * loads, with key prefetches from 24 keys on): every head's output
	 * must be exactly what that head alone gives, f32 and f16 caches,
	 * groups of 2 to 5 (odd ones leave a single head), whole and partial
	 * blocks of keys and of output chunks. */
	static const int64_t hds[] = { 64, 128, 129, 200 }, nks[] = { 8, 23, 24, 40, 100 };
	const int64_t cap = 100 * 200;
	float *q = malloc(sizeof(float) * 5 * 200), *k = malloc(sizeof(float) * cap),
	      *v = malloc(sizeof(float) * cap), *o1 = malloc(sizeof(float) * 5 * 200),
	      *o2 = malloc(sizeof(float) * 5 * 200), *s = malloc(sizeof(float) * 5 * 100);
	uint16_t *kh = malloc(2 * cap), *vh = malloc(2 * cap);
	tu_rng r = tu_rng_new(77);
	for (size_t pi = 0; pi < N_PATHS; pi++) {
		tern_ctx *ctx = path_ctx(paths[pi]);
		if (!ctx)
			continue;
		for (size_t hi = 0; hi < 4; hi++)
			for (size_t ni = 0; ni < 5; ni++)
				for (int64_t G = 2; G <= 5; G++)
					for (int f16 = 0; f16 < 2; f16++) {
						const int64_t hd = hds[hi], nk = nks[ni];
						fill(&r, q, G * hd, 3.0f);
						fill(&r, k, nk * hd, 3.0f);
						fill(&r, v, nk * hd, 1.0f);
						for (int64_t e = 0; e < nk * hd; e++) {
							kh[e] = tern_f32_to_f16(k[e]);
							vh[e] = tern_f32_to_f16(v[e]);
						}
						const tern_dtype t = f16 ? TERN_DTYPE_F16 : TERN_DTYPE_F32;
						const void *kk = f16 ? (const void *)kh : k;
						const void *vv = f16 ? (const void *)vh : v;
						tern_attn_params p = params(1, nk, G, 1, hd, nk - 1, true);
						cr_assert_eq(tern_attention_ctx(ctx, &p, q, t, kk, vv, o1, s), TERN_OK);
						tern_attn_params p1 = params(1, nk, 1, 1, hd, nk - 1, true);
						for (int64_t g = 0; g < G; g++)
							cr_assert_eq(tern_attention_ctx(ctx, &p1, q + g * hd, t, kk, vv,
											o2 + g * hd, s),
								     TERN_OK);
						cr_assert_eq(memcmp(o1, o2, sizeof(float) * (size_t)(G * hd)), 0,
							     "%s hd=%lld nk=%lld G=%lld f16=%d", paths[pi],
							     (long long)hd, (long long)nk, (long long)G, f16);
					}
		tern_ctx_free(ctx);
	}
	free(q);
	free(k);
	free(v);
	free(o1);
	free(o2);
	free(s);
	free(kh);
	free(vh);
}
