/*
 * attention.c: scaled dot-product attention over a KV cache for one
 * sequence, causal or bidirectional, with grouped-query heads and strided
 * layouts. Scores for one query head live in caller scratch, so the call
 * allocates nothing and decode (n_q = 1) and prefill share one code path.
 */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "core/kernels.h"
#include "core/vecf.h"
#include "tern/ops.h"

/* y += a x over one head in vecf.h's blocks, with a scalar tail; out
 * may not overlap v. */
static void axpy(float *y, float a, const float *x, int64_t n)
{
	const vf4 va = VF_SPLAT(a);
	int64_t i = 0;
	for (; i + VF_LANES <= n; i += VF_LANES)
#pragma GCC unroll 4
		for (int p = 0; p < VF_PARTS; p++) {
			vf4 u, v;
			VF_LOAD(u, y + i + 4 * p);
			VF_LOAD(v, x + i + 4 * p);
			u += va * v;
			VF_STORE(y + i + 4 * p, u);
		}
	for (; i < n; i++)
		y[i] += a * x[i];
}

/* Two keys' dots with q per pass, each with tern_vec_dot's lanes and fold
 * (so the scores equal tern_vec_dot's exactly): q's vectors are loaded
 * once for both, and the two sets of accumulators give the adds twice
 * the independent chains. out[j] = scale * (q . k_j) for j < nk. */
static void scores(const float *q, const float *k, int64_t kvs, int64_t nk, int64_t hd,
		   float scale, float *out)
{
	int64_t j = 0;
	for (; j + 2 <= nk; j += 2) {
		const float *k0 = k + j * kvs, *k1 = k0 + kvs;
		vf4 a0[VF_PARTS] = { 0 }, a1[VF_PARTS] = { 0 };
		int64_t i = 0;
		for (; i + VF_LANES <= hd; i += VF_LANES)
#pragma GCC unroll 4
			for (int p = 0; p < VF_PARTS; p++) {
				vf4 u, v0, v1;
				VF_LOAD(u, q + i + 4 * p);
				VF_LOAD(v0, k0 + i + 4 * p);
				VF_LOAD(v1, k1 + i + 4 * p);
				a0[p] += u * v0;
				a1[p] += u * v1;
			}
		float t0 = 0.0f, t1 = 0.0f;
		for (; i < hd; i++) {
			t0 += q[i] * k0[i];
			t1 += q[i] * k1[i];
		}
		out[j] = vf_fold(a0, t0) * scale;
		out[j + 1] = vf_fold(a1, t1) * scale;
	}
	if (j < nk)
		out[j] = tern_vec_dot(q, k + j * kvs, hd) * scale;
}

/* axpy of x0 then x1 in one pass over y: the same adds in the same order
 * as two axpy calls, with y loaded and stored once. */
static void axpy2(float *y, float a0, const float *x0, float a1, const float *x1, int64_t n)
{
	const vf4 va0 = VF_SPLAT(a0), va1 = VF_SPLAT(a1);
	int64_t i = 0;
	for (; i + VF_LANES <= n; i += VF_LANES)
#pragma GCC unroll 4
		for (int p = 0; p < VF_PARTS; p++) {
			vf4 u, v0, v1;
			VF_LOAD(u, y + i + 4 * p);
			VF_LOAD(v0, x0 + i + 4 * p);
			VF_LOAD(v1, x1 + i + 4 * p);
			u += va0 * v0;
			u += va1 * v1;
			VF_STORE(y + i + 4 * p, u);
		}
	for (; i < n; i++) {
		y[i] += a0 * x0[i];
		y[i] += a1 * x1[i];
	}
}

/* Position `rows - 1` at `stride` plus `width` floats must be addressable. */
static bool extent_ok(int64_t rows, int64_t stride, int64_t width)
{
	int64_t last, end;
	return !__builtin_mul_overflow(rows - 1, stride, &last) &&
	       !__builtin_add_overflow(last, width, &end);
}

static int attn_check(const tern_attn_params *p, const float *q, const float *k, const float *v,
		      const float *out, const float *scratch)
{
	if (!p || !q || !k || !v || !out || !scratch)
		return tern_error(NULL, TERN_E_INVALID, "attention: NULL argument");
	if (p->n_q <= 0 || p->n_kv <= 0 || p->n_heads <= 0 || p->n_kv_heads <= 0 ||
	    p->head_dim <= 0 || p->q_pos0 < 0)
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: dims must be positive (n_q %lld, n_kv %lld, n_heads "
				  "%lld, n_kv_heads %lld, head_dim %lld, q_pos0 %lld)",
				  (long long)p->n_q, (long long)p->n_kv, (long long)p->n_heads,
				  (long long)p->n_kv_heads, (long long)p->head_dim,
				  (long long)p->q_pos0);
	if (p->n_heads % p->n_kv_heads)
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: n_heads %lld is not a multiple of n_kv_heads %lld",
				  (long long)p->n_heads, (long long)p->n_kv_heads);
	if (!isfinite(p->scale))
		return tern_error(NULL, TERN_E_INVALID, "attention: scale is not finite");
	int64_t qw, kvw, last;
	if (__builtin_mul_overflow(p->n_heads, p->head_dim, &qw) ||
	    __builtin_mul_overflow(p->n_kv_heads, p->head_dim, &kvw))
		return tern_error(NULL, TERN_E_OVERFLOW, "attention: heads * head_dim overflows");
	if (p->q_stride < 0 || (p->q_stride && p->q_stride < qw) || p->out_stride < 0 ||
	    (p->out_stride && p->out_stride < qw) || p->kv_stride < 0 ||
	    (p->kv_stride && p->kv_stride < kvw))
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: strides (q %lld, kv %lld, out %lld) below the dense "
				  "widths (%lld, %lld)",
				  (long long)p->q_stride, (long long)p->kv_stride,
				  (long long)p->out_stride, (long long)qw, (long long)kvw);
	if (p->causal && (__builtin_add_overflow(p->q_pos0, p->n_q, &last) || last > p->n_kv))
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: causal queries at positions %lld..%lld need keys the "
				  "cache (n_kv %lld) does not hold",
				  (long long)p->q_pos0, (long long)(p->q_pos0 + p->n_q - 1),
				  (long long)p->n_kv);
	if (!extent_ok(p->n_q, p->q_stride ? p->q_stride : qw, qw) ||
	    !extent_ok(p->n_q, p->out_stride ? p->out_stride : qw, qw) ||
	    !extent_ok(p->n_kv, p->kv_stride ? p->kv_stride : kvw, kvw))
		return tern_error(NULL, TERN_E_OVERFLOW, "attention: buffer extent overflows");
	return TERN_OK;
}

void tern_attn_head_scalar(const float *q, const float *k, const float *v, int64_t kvs,
			   int64_t nk, int64_t hd, float scale, float *s, float *out)
{
	/* Scale after the dot, as llama.cpp scales KQ. */
	scores(q, k, kvs, nk, hd, scale, s);
	tern_softmax(s, nk);

	/* q is fully consumed; writing out may now begin. */
	memset(out, 0, (size_t)hd * sizeof(float));
	int64_t j = 0;
	for (; j + 2 <= nk; j += 2)
		axpy2(out, s[j], v + j * kvs, s[j + 1], v + (j + 1) * kvs, hd);
	if (j < nk)
		axpy(out, s[j], v + j * kvs, hd);
}

static int attention_run(tern_attn_head_fn head, const tern_attn_params *p, const float *q,
			 const float *k, const float *v, float *out, float *scratch)
{
	int rc = attn_check(p, q, k, v, out, scratch);
	if (rc)
		return rc;
	const int64_t hd = p->head_dim;
	const int64_t group = p->n_heads / p->n_kv_heads;
	const int64_t qs = p->q_stride ? p->q_stride : p->n_heads * hd;
	const int64_t os = p->out_stride ? p->out_stride : p->n_heads * hd;
	const int64_t kvs = p->kv_stride ? p->kv_stride : p->n_kv_heads * hd;

	for (int64_t i = 0; i < p->n_q; i++) {
		const int64_t nk = p->causal ? p->q_pos0 + i + 1 : p->n_kv;
		for (int64_t h = 0; h < p->n_heads; h++) {
			const float *qh = q + i * qs + h * hd;
			const float *kh = k + (h / group) * hd;
			const float *vh = v + (h / group) * hd;
			head(qh, kh, vh, kvs, nk, hd, p->scale, scratch, out + i * os + h * hd);
		}
	}
	return TERN_OK;
}

int tern_attention(const tern_attn_params *p, const float *q, const float *k, const float *v,
		   float *out, float *scratch)
{
	return attention_run(tern_attn_head_scalar, p, q, k, v, out, scratch);
}

int tern_attention_ctx(const tern_ctx *ctx, const tern_attn_params *p, const float *q,
		       const float *k, const float *v, float *out, float *scratch)
{
	if (!ctx)
		return tern_error(NULL, TERN_E_INVALID, "attention: NULL context");
	return attention_run(tern_ctx_kernels_of(ctx)->attn_head, p, q, k, v, out, scratch);
}
