/*
 * test_kernels.c: the ternary, int8 and float matmul kernels and their
 * driver. The scalar table is checked against naive sums over unpacked
 * values; every SIMD path this CPU has is checked against the scalar one
 * on odd shapes; the public tern_matmul* entry points are checked against
 * double-precision references, across kernel paths and thread counts.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "core/kernels.h"
#include "core/pack.h"
#include "tern/matmul.h"
#include "tern/ops.h"
#include "tern/tensor.h"
#include "testutil.h"

/* Lengths that hit every edge of the layouts: shorter than a half group,
 * one past a half group, exact groups, several groups plus a tail. */
static const int64_t k_list[] = { 1,   7,   127, 128, 129, 160,  161,
				  255, 256, 300, 321, 480, 1152, 4304 };
#define N_K (sizeof k_list / sizeof k_list[0])

static void pack_row(tern_dtype dt, const int8_t *w, int64_t n, uint8_t *dst)
{
	if (dt == TERN_DTYPE_T2)
		tern_t2_pack_row(w, n, dst);
	else
		tern_t3_pack_row(w, n, dst);
}

static void unpack_row(tern_dtype dt, const uint8_t *src, int64_t n, int8_t *w)
{
	if (dt == TERN_DTYPE_T2)
		tern_t2_unpack_row(src, n, w);
	else
		tern_t3_unpack_row(src, n, w);
}

/* ---- packing ------------------------------------------------------------ */

Test(kernels, pack_unpack_round_trips_every_length_up_to_700)
{
	tu_rng rng = tu_rng_new(1);
	int8_t w[704], back[960];
	uint8_t packed[256];
	for (int dti = 0; dti < 2; dti++) {
		tern_dtype dt = dti ? TERN_DTYPE_T3 : TERN_DTYPE_T2;
		for (int64_t n = 1; n <= 700; n++) {
			for (int64_t j = 0; j < n; j++)
				w[j] = (int8_t)tu_int(&rng, -1, 1);
			int64_t padded = tern_row_padded(dt, n);
			cr_assert_eq(tern_row_bytes(dt, n), (size_t)(padded / (dt == TERN_DTYPE_T2 ? 4 : 5)));
			memset(packed, 0xAA, sizeof packed);
			pack_row(dt, w, n, packed);
			/* Unpacking the padded length shows the pad is zero weights. */
			unpack_row(dt, packed, padded, back);
			cr_assert_eq(memcmp(w, back, (size_t)n), 0, "%s n=%lld", tern_dtype_name(dt),
				     (long long)n);
			for (int64_t j = n; j < padded; j++)
				cr_assert_eq(back[j], 0, "%s n=%lld pad %lld", tern_dtype_name(dt),
					     (long long)n, (long long)j);
			if (dt == TERN_DTYPE_T2)
				cr_assert(tern_t2_row_valid(packed, n));
		}
	}
}

Test(kernels, t2_layout_matches_the_header_formula)
{
	/* 300 weights pad to 384: one full group (64 bytes) + a half group
	 * (32 bytes); weight (start + p*G + m) is code p of byte start/4 + m. */
	int8_t w[300];
	uint8_t packed[96];
	tu_rng rng = tu_rng_new(2);
	for (int j = 0; j < 300; j++)
		w[j] = (int8_t)tu_int(&rng, -1, 1);
	tern_t2_pack_row(w, 300, packed);
	for (int j = 0; j < 384; j++) {
		int start = j < 256 ? 0 : 256, g = j < 256 ? 64 : 32;
		int p = (j - start) / g, m = (j - start) % g;
		int code = (packed[start / 4 + m] >> (2 * p)) & 3;
		cr_assert_eq(code - 1, j < 300 ? w[j] : 0, "weight %d", j);
	}
}

Test(kernels, t3_encoding_decodes_all_243_bytes_and_rejects_nothing_valid)
{
	for (int v = 0; v < 243; v++) {
		uint8_t t[5] = { (uint8_t)(v / 81), (uint8_t)(v / 27 % 3), (uint8_t)(v / 9 % 3),
				 (uint8_t)(v / 3 % 3), (uint8_t)(v % 3) };
		uint8_t b = tern_t3_encode(t), u[5];
		cr_assert_eq(b, (v * 256 + 242) / 243, "ceil(v*256/243) for v=%d", v);
		tern_t3_decode(b, u);
		for (int p = 0; p < 5; p++) {
			cr_assert_eq(u[p], t[p], "v=%d trit %d", v, p);
			/* The header's formula: ((b * 3^p mod 256) * 3) >> 8. */
			unsigned pw = 1;
			for (int i = 0; i < p; i++)
				pw *= 3;
			cr_assert_eq(((b * pw) % 256 * 3) >> 8, t[p]);
		}
	}
}

Test(kernels, t2_row_valid_rejects_code_3)
{
	int8_t w[200] = { 0 };
	uint8_t packed[64];
	tern_t2_pack_row(w, 200, packed);
	cr_assert(tern_t2_row_valid(packed, 200));
	packed[63] = (uint8_t)(packed[63] | 0xC0);
	cr_assert_not(tern_t2_row_valid(packed, 200));
}

/* ---- raw ternary kernels -------------------------------------------------- */

/* A packed random matrix with its unpacked values, and random activations
 * over the whole padded length (kernels see every padded position). */
typedef struct tcase {
	tern_dtype dt;
	int64_t rows, k, kpad, ntok;
	size_t ws;
	int8_t *wv;     /* [rows][kpad] unpacked values, pad = 0 */
	uint8_t *w;     /* [rows][ws] packed */
	int8_t *a;      /* [ntok][kpad] */
} tcase;

static void tcase_make(tcase *c, tern_dtype dt, int64_t rows, int64_t k, int64_t ntok, tu_rng *rng)
{
	c->dt = dt;
	c->rows = rows;
	c->k = k;
	c->kpad = tern_row_padded(dt, k);
	c->ntok = ntok;
	c->ws = tern_row_bytes(dt, k);
	c->wv = calloc((size_t)(rows * c->kpad), 1);
	c->w = malloc((size_t)rows * c->ws);
	c->a = malloc((size_t)(ntok * c->kpad));
	for (int64_t r = 0; r < rows; r++) {
		for (int64_t j = 0; j < k; j++)
			c->wv[r * c->kpad + j] = (int8_t)tu_int(rng, -1, 1);
		pack_row(dt, c->wv + r * c->kpad, k, c->w + r * c->ws);
	}
	for (int64_t i = 0; i < ntok * c->kpad; i++)
		c->a[i] = (int8_t)tu_int(rng, -128, 127);
}

static void tcase_free(tcase *c)
{
	free(c->wv);
	free(c->w);
	free(c->a);
}

static tern_tdot_fn tdot_of(const tern_kernels *kt, tern_dtype dt)
{
	return dt == TERN_DTYPE_T2 ? kt->t2_dot : kt->t3_dot;
}

static int32_t *run_tdot(const tern_kernels *kt, const tcase *c, int64_t blk)
{
	int64_t nb = (c->kpad + blk - 1) / blk;
	int32_t *out = malloc(sizeof(int32_t) * (size_t)(c->rows * c->ntok * nb));
	/* Poison so a skipped output cannot pass by accident. */
	memset(out, 0x5A, sizeof(int32_t) * (size_t)(c->rows * c->ntok * nb));
	tdot_of(kt, c->dt)(c->w, c->ws, c->rows, c->a, (size_t)c->kpad, c->ntok, c->kpad, blk, out);
	return out;
}

static const int64_t blk_list[] = { 0 /* = kpad */, 128, 256 };

Test(kernels, scalar_ternary_raw_equals_naive_sum_over_unpacked_codes)
{
	tu_rng rng = tu_rng_new(3);
	const tern_kernels *sc = tern_kernels_scalar();
	for (int dti = 0; dti < 2; dti++) {
		tern_dtype dt = dti ? TERN_DTYPE_T3 : TERN_DTYPE_T2;
		for (size_t ki = 0; ki < N_K; ki++) {
			tcase c;
			tcase_make(&c, dt, 3, k_list[ki], 2, &rng);
			for (size_t bi = 0; bi < 3; bi++) {
				int64_t blk = blk_list[bi] ? blk_list[bi] : c.kpad;
				int64_t nb = (c.kpad + blk - 1) / blk;
				int32_t *out = run_tdot(sc, &c, blk);
				for (int64_t r = 0; r < c.rows; r++)
					for (int64_t t = 0; t < c.ntok; t++)
						for (int64_t b = 0; b < nb; b++) {
							int64_t s = 0;
							for (int64_t j = b * blk; j < (b + 1) * blk && j < c.kpad; j++)
								s += (c.wv[r * c.kpad + j] + 1) * c.a[t * c.kpad + j];
							cr_assert_eq(out[(r * c.ntok + t) * nb + b], s,
								     "%s k=%lld blk=%lld r=%lld t=%lld b=%lld",
								     tern_dtype_name(dt), (long long)c.k,
								     (long long)blk, (long long)r, (long long)t,
								     (long long)b);
						}
				free(out);
			}
			tcase_free(&c);
		}
	}
}

/* Paths other than scalar that this build and CPU can run. */
static int simd_paths(tern_kernel_path *out)
{
	int n = 0;
	for (int p = TERN_KERNEL_SCALAR + 1; p < TERN_KERNEL_COUNT; p++)
		if (tern_kernel_available((tern_kernel_path)p))
			out[n++] = (tern_kernel_path)p;
	return n;
}

/* Row kinds for the activation quantizer: ordinary, exact ties (amax 127
 * makes the scale 1, so x.5 rounds to even), all zero, a NaN or an inf,
 * subnormal (the reciprocal scale overflows), huge, and one large outlier. */
static void quant_row_fill(int kind, float *x, int64_t n, tu_rng *rng)
{
	for (int64_t i = 0; i < n; i++) {
		switch (kind) {
		case 0: x[i] = tu_normal(rng); break;
		case 1: x[i] = (float)tu_int(rng, -254, 254) * 0.5f; break;
		case 2: x[i] = 0.0f; break;
		case 3: x[i] = tu_normal(rng); break;
		case 4: x[i] = tu_normal(rng) * 1e-45f; break;
		case 5: x[i] = tu_normal(rng) * 1e30f; break;
		default: x[i] = tu_normal(rng) * 1e-3f; break;
		}
	}
	if (kind == 1)
		x[tu_int(rng, 0, n - 1)] = 127.0f;
	if (kind == 3)
		x[tu_int(rng, 0, n - 1)] = tu_int(rng, 0, 1) ? NAN : -INFINITY;
	if (kind == 6)
		x[tu_int(rng, 0, n - 1)] = 50.0f;
}

/* Every table this machine can run fills every entry (a variant table
 * that forgets one crashes only on that dtype). */
static void expect_complete(const tern_kernels *k, const char *what)
{
	cr_assert_not_null(k, "%s", what);
	cr_expect(k->t2_dot && k->t3_dot && k->i8_dot && k->i4_dot && k->f32_dot && k->f16_dot &&
			  k->bf16_dot && k->quant_row && k->attn && k->f16_row,
		  "%s table has an empty entry", what);
}

Test(kernels, every_kernel_table_is_complete)
{
	expect_complete(tern_kernels_get(TERN_KERNEL_SCALAR), "scalar");
	tern_kernel_path paths[TERN_KERNEL_COUNT];
	int np = simd_paths(paths);
	for (int p = 0; p < np; p++)
		expect_complete(tern_kernels_get(paths[p]), tern_kernel_path_name(paths[p]));
	if (tern_kernel_available(TERN_KERNEL_AVX512))
		expect_complete(tern_kernels_avx512_novbmi(), "avx512 without vbmi");
}

Test(kernels, simd_activation_quantizer_is_bit_exact_with_scalar)
{
	tern_kernel_path paths[TERN_KERNEL_COUNT];
	int np = simd_paths(paths);
	tu_rng rng = tu_rng_new(14);
	const tern_kernels *ks = tern_kernels_get(TERN_KERNEL_SCALAR);
	for (int64_t n = 1; n <= 300; n += (n < 70 ? 1 : 23)) {
		/* kpad: the next multiple of 32, 128, and one that is not a
		 * multiple of 32 (an int8 row's padding) */
		const int64_t kpads[3] = { (n + 31) / 32 * 32, (n + 127) / 128 * 128, n + 5 };
		for (int ki = 0; ki < 3; ki++)
			for (int kind = 0; kind < 7; kind++) {
				const int64_t kpad = kpads[ki], nc = kpad / 32;
				float *x = malloc(sizeof(float) * (size_t)n);
				quant_row_fill(kind, x, n, &rng);
				int8_t *q0 = malloc((size_t)kpad), *q1 = malloc((size_t)kpad);
				int32_t c0[16], c1[16], s0, s1;
				float d0, d1;
				memset(q0, 0x55, (size_t)kpad);
				ks->quant_row(x, n, kpad, q0, &d0, c0, &s0);
				/* the scalar entry is the public quantizer plus sums */
				int8_t *qr = malloc((size_t)kpad);
				float dr;
				tern_quantize_row_i8(x, n, kpad, TERN_ACTQ_MUL, TERN_ROUND_EVEN, qr, &dr);
				cr_assert_eq(memcmp(qr, q0, (size_t)kpad), 0);
				cr_assert_eq(memcmp(&dr, &d0, sizeof dr), 0);
				int32_t tot = 0;
				for (int64_t i = 0; i < kpad; i++)
					tot += q0[i];
				cr_assert_eq(s0, tot);
				for (int64_t c = 0; c < nc; c++) {
					int32_t cs = 0;
					for (int i = 0; i < 32; i++)
						cs += q0[c * 32 + i];
					cr_assert_eq(c0[c], cs);
				}
				if (kind == 1 && kpad >= n)
					for (int64_t i = 0; i < n; i++)
						cr_assert_eq(q0[i], (int8_t)nearbyintf(x[i]),
							     "tie x=%g q=%d", x[i], q0[i]);
				for (int p = 0; p < np; p++) {
					const tern_kernels *kt = tern_kernels_get(paths[p]);
					memset(q1, 0x55, (size_t)kpad);
					memset(c1, 0x55, sizeof c1);
					kt->quant_row(x, n, kpad, q1, &d1, c1, &s1);
					cr_assert_eq(memcmp(q0, q1, (size_t)kpad), 0,
						     "%s n=%lld kpad=%lld kind %d",
						     tern_kernel_path_name(paths[p]), (long long)n,
						     (long long)kpad, kind);
					cr_assert_eq(memcmp(&d0, &d1, sizeof d0), 0, "%s scale",
						     tern_kernel_path_name(paths[p]));
					cr_assert_eq(s0, s1, "%s sum", tern_kernel_path_name(paths[p]));
					cr_assert_eq(memcmp(c0, c1, sizeof(int32_t) * (size_t)nc), 0,
						     "%s chunk sums n=%lld kpad=%lld kind %d",
						     tern_kernel_path_name(paths[p]), (long long)n,
						     (long long)kpad, kind);
				}
				free(x);
				free(q0);
				free(q1);
				free(qr);
			}
	}
}

Test(kernels, simd_ternary_raw_is_bit_exact_with_scalar)
{
	tern_kernel_path paths[TERN_KERNEL_COUNT];
	int np = simd_paths(paths);
	if (np == 0)
		cr_skip_test("no SIMD kernel path on this CPU");
	tu_rng rng = tu_rng_new(4);
	static const int64_t rows_list[] = { 1, 2, 3, 4, 5, 7, 9, 13 };
	static const int64_t tok_list[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16 };
	for (int dti = 0; dti < 2; dti++) {
		tern_dtype dt = dti ? TERN_DTYPE_T3 : TERN_DTYPE_T2;
		for (size_t ki = 0; ki < N_K; ki++) {
			for (int rep = 0; rep < 3; rep++) {
				int64_t rows = rows_list[tu_int(&rng, 0, 7)];
				int64_t ntok = tok_list[tu_int(&rng, 0, 10)];
				tcase c;
				tcase_make(&c, dt, rows, k_list[ki], ntok, &rng);
				for (size_t bi = 0; bi < 3; bi++) {
					int64_t blk = blk_list[bi] ? blk_list[bi] : c.kpad;
					int64_t nb = (c.kpad + blk - 1) / blk;
					size_t bytes = sizeof(int32_t) * (size_t)(rows * ntok * nb);
					int32_t *ref = run_tdot(tern_kernels_scalar(), &c, blk);
					for (int pi = 0; pi < np; pi++) {
						int32_t *out = run_tdot(tern_kernels_get(paths[pi]), &c, blk);
						cr_assert_eq(memcmp(out, ref, bytes), 0,
							     "%s %s rows=%lld k=%lld n=%lld blk=%lld",
							     tern_kernel_path_name(paths[pi]),
							     tern_dtype_name(dt), (long long)rows,
							     (long long)c.k, (long long)ntok, (long long)blk);
						free(out);
					}
					free(ref);
				}
				tcase_free(&c);
			}
		}
	}
}

Test(kernels, simd_t3_many_tokens_are_bit_exact_with_scalar)
{
	/* From 16 tokens on, AVX-512 decodes T3 rows in chunks of 2560
	 * weights, 8 rows at a time: cover chunk edges (2560, 2561, 5121),
	 * half groups (300, 2720, 4304), row counts around 8 and blocks that
	 * straddle a chunk (384). */
	tern_kernel_path paths[TERN_KERNEL_COUNT];
	int np = simd_paths(paths);
	if (np == 0)
		cr_skip_test("no SIMD kernel path on this CPU");
	tu_rng rng = tu_rng_new(6);
	static const int64_t ks[] = { 160, 300, 2560, 2561, 2720, 4304, 5121 };
	static const int64_t rows_list[] = { 1, 5, 8, 13, 17 };
	static const int64_t tok_list[] = { 16, 17, 19 };
	static const int64_t blks[] = { 0, 128, 256, 384 };
	for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
		int64_t rows = rows_list[ki % 5], ntok = tok_list[ki % 3];
		tcase c;
		tcase_make(&c, TERN_DTYPE_T3, rows, ks[ki], ntok, &rng);
		for (size_t bi = 0; bi < 4; bi++) {
			int64_t blk = blks[bi] ? blks[bi] : c.kpad;
			int64_t nb = (c.kpad + blk - 1) / blk;
			int32_t *ref = run_tdot(tern_kernels_scalar(), &c, blk);
			for (int pi = 0; pi <= np; pi++) {
				const tern_kernels *kt = pi < np ? tern_kernels_get(paths[pi]) : NULL;
#if defined(TERN_HAVE_X86)
				/* The AVX-512 path decodes with VBMI where the CPU has it;
				 * check its fallback decoder too. */
				if (pi == np && tern_kernel_available(TERN_KERNEL_AVX512))
					kt = tern_kernels_avx512_novbmi();
#endif
				if (!kt)
					continue;
				int32_t *out = run_tdot(kt, &c, blk);
				cr_assert_eq(memcmp(out, ref, sizeof(int32_t) * (size_t)(rows * ntok * nb)),
					     0, "%s%s rows=%lld k=%lld n=%lld blk=%lld",
					     tern_kernel_path_name(kt->path), pi == np ? " (no VBMI)" : "",
					     (long long)rows, (long long)c.k, (long long)ntok,
					     (long long)blk);
				free(out);
			}
			free(ref);
		}
		tcase_free(&c);
	}
}

Test(kernels, simd_single_token_rows_are_bit_exact_with_scalar)
{
	/* One token (decode) takes row-by-row kernels on AVX-512: every
	 * length and block size, row counts around the 4-row tiles, and the
	 * int8 head kernel with odd strides and lengths. */
	tern_kernel_path paths[TERN_KERNEL_COUNT];
	int np = simd_paths(paths);
	if (np == 0)
		cr_skip_test("no SIMD kernel path on this CPU");
	tu_rng rng = tu_rng_new(41);
	static const int64_t rows_list[] = { 1, 3, 4, 9 };
	static const int64_t extra_k[] = { 2560, 6912, 1600 };
	for (int dti = 0; dti < 2; dti++) {
		tern_dtype dt = dti ? TERN_DTYPE_T3 : TERN_DTYPE_T2;
		for (size_t ki = 0; ki < N_K + 3; ki++) {
			int64_t k = ki < N_K ? k_list[ki] : extra_k[ki - N_K];
			int64_t rows = rows_list[ki % 4];
			tcase c;
			tcase_make(&c, dt, rows, k, 1, &rng);
			for (size_t bi = 0; bi < 3; bi++) {
				int64_t blk = blk_list[bi] ? blk_list[bi] : c.kpad;
				int64_t nb = (c.kpad + blk - 1) / blk;
				int32_t *ref = run_tdot(tern_kernels_scalar(), &c, blk);
				for (int pi = 0; pi < np; pi++) {
					int32_t *out = run_tdot(tern_kernels_get(paths[pi]), &c, blk);
					cr_assert_eq(memcmp(out, ref, sizeof(int32_t) * (size_t)(rows * nb)),
						     0, "%s %s rows=%lld k=%lld blk=%lld",
						     tern_kernel_path_name(paths[pi]), tern_dtype_name(dt),
						     (long long)rows, (long long)k, (long long)blk);
					free(out);
				}
				free(ref);
			}
			tcase_free(&c);
		}
	}
	static const int64_t ks[] = { 1, 63, 64, 65, 127, 128, 129, 191, 192, 2560, 2561 };
	for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
		int64_t k = ks[ki], rows = rows_list[ki % 4];
		size_t ws = (size_t)k + 3;
		int8_t *w = malloc(ws * (size_t)rows), *a = malloc((size_t)k);
		for (size_t i = 0; i < ws * (size_t)rows; i++)
			w[i] = (int8_t)tu_int(&rng, -128, 127);
		for (int64_t i = 0; i < k; i++)
			a[i] = (int8_t)tu_int(&rng, -128, 127);
		int32_t *ref = malloc(sizeof(int32_t) * (size_t)rows);
		int32_t *out = malloc(sizeof(int32_t) * (size_t)rows);
		tern_kernels_scalar()->i8_dot(w, ws, rows, a, (size_t)k, 1, k, ref);
		for (int64_t r = 0; r < rows; r++) {
			int32_t s = 0;
			for (int64_t j = 0; j < k; j++)
				s += (int32_t)w[(size_t)r * ws + (size_t)j] * a[j];
			cr_assert_eq(ref[r], s);
		}
		for (int pi = 0; pi < np; pi++) {
			tern_kernels_get(paths[pi])->i8_dot(w, ws, rows, a, (size_t)k, 1, k, out);
			cr_assert_eq(memcmp(out, ref, sizeof(int32_t) * (size_t)rows), 0,
				     "%s i8 rows=%lld k=%lld", tern_kernel_path_name(paths[pi]),
				     (long long)rows, (long long)k);
		}
		free(w);
		free(a);
		free(ref);
		free(out);
	}
}

Test(kernels, simd_long_rows_stay_exact)
{
	/* All codes 2 against -128, one token. AVX-512's one-token T3 tile
	 * keeps 256 times each lane's sum and folds it every 1024 groups:
	 * over 700000 weights a lane would leave int32 without the fold. Its
	 * T2 rows keep slice p's sums times 4^p (128 x -128 a product for
	 * the top slice): at the longest row matmul takes (2^22 weights) a
	 * lane reaches -2^29, which must come back exactly. */
	tern_kernel_path paths[TERN_KERNEL_COUNT];
	int np = simd_paths(paths);
	if (np == 0)
		cr_skip_test("no SIMD kernel path on this CPU");
	tu_rng rng = tu_rng_new(7);
	for (int dti = 0; dti < 2; dti++) {
		tcase c;
		if (dti == 0)
			tcase_make(&c, TERN_DTYPE_T3, 5, 700000, 1, &rng);
		else
			tcase_make(&c, TERN_DTYPE_T2, 2, (1 << 22) - 3, 1, &rng);
		for (int64_t r = 0; r < c.rows; r++) {
			memset(c.wv + r * c.kpad, 1, (size_t)c.k);
			pack_row(c.dt, c.wv + r * c.kpad, c.k, c.w + r * c.ws);
		}
		memset(c.a, 0x80, (size_t)c.kpad);
		int32_t *ref = run_tdot(tern_kernels_scalar(), &c, c.kpad);
		cr_assert_eq(ref[0], (2 * c.k + (c.kpad - c.k)) * -128);
		for (int pi = 0; pi < np; pi++) {
			int32_t *out = run_tdot(tern_kernels_get(paths[pi]), &c, c.kpad);
			cr_assert_eq(memcmp(out, ref, sizeof(int32_t) * (size_t)c.rows), 0,
				     "%s %s", tern_dtype_name(c.dt), tern_kernel_path_name(paths[pi]));
			free(out);
		}
		free(ref);
		tcase_free(&c);
	}
}

Test(kernels, simd_ternary_raw_handles_extreme_activations)
{
	/* All codes 2 against all -128 (and 127) is the largest magnitude a
	 * lane can see; any int16 saturation in a SIMD path would show. */
	tern_kernel_path paths[TERN_KERNEL_COUNT];
	int np = simd_paths(paths);
	if (np == 0)
		cr_skip_test("no SIMD kernel path on this CPU");
	tu_rng rng = tu_rng_new(5);
	for (int dti = 0; dti < 2; dti++) {
		tcase c;
		tcase_make(&c, dti ? TERN_DTYPE_T3 : TERN_DTYPE_T2, 5, 4304, 5, &rng);
		for (int64_t r = 0; r < c.rows; r++) {
			memset(c.wv + r * c.kpad, 1, (size_t)c.k);
			pack_row(c.dt, c.wv + r * c.kpad, c.k, c.w + r * c.ws);
		}
		for (int64_t t = 0; t < c.ntok; t++)
			memset(c.a + t * c.kpad, t % 2 ? 0x7F : 0x80, (size_t)c.kpad);
		int32_t *ref = run_tdot(tern_kernels_scalar(), &c, c.kpad);
		for (int64_t t = 0; t < c.ntok; t++)
			cr_assert_eq(ref[t], (2 * c.k + (c.kpad - c.k)) * (t % 2 ? 127 : -128));
		for (int pi = 0; pi < np; pi++) {
			int32_t *out = run_tdot(tern_kernels_get(paths[pi]), &c, c.kpad);
			cr_assert_eq(memcmp(out, ref, sizeof(int32_t) * (size_t)(c.rows * c.ntok)), 0,
				     "%s", tern_kernel_path_name(paths[pi]));
			free(out);
		}
		free(ref);
		tcase_free(&c);
	}
}

/* ---- int8 and float kernels ----------------------------------------------- */

Test(kernels, i8_kernels_are_exact_on_every_path)
{
	tu_rng rng = tu_rng_new(6);
	static const int64_t ks[] = { 1, 7, 31, 63, 64, 65, 127, 129, 1000, 2561 };
	for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
		int64_t k = ks[ki], rows = tu_int(&rng, 1, 9), ntok = tu_int(&rng, 1, 9);
		size_t ws = (size_t)k + 3, as = (size_t)k + 5; /* odd strides on purpose */
		int8_t *w = malloc(ws * (size_t)rows), *a = malloc(as * (size_t)ntok);
		for (size_t i = 0; i < ws * (size_t)rows; i++)
			w[i] = (int8_t)tu_int(&rng, -128, 127);
		for (size_t i = 0; i < as * (size_t)ntok; i++)
			a[i] = (int8_t)tu_int(&rng, -128, 127);
		if (ki == 0)
			w[0] = a[0] = -128;
		int32_t *out = malloc(sizeof(int32_t) * (size_t)(rows * ntok));
		for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
			const tern_kernels *kt = tern_kernels_get((tern_kernel_path)p);
			if (!kt)
				continue;
			kt->i8_dot(w, ws, rows, a, as, ntok, k, out);
			for (int64_t r = 0; r < rows; r++)
				for (int64_t t = 0; t < ntok; t++) {
					int32_t s = 0;
					for (int64_t j = 0; j < k; j++)
						s += w[r * (int64_t)ws + j] * a[t * (int64_t)as + j];
					cr_assert_eq(out[r * ntok + t], s, "%s k=%lld",
						     tern_kernel_path_name((tern_kernel_path)p), (long long)k);
				}
		}
		free(w);
		free(a);
		free(out);
	}
}

/* Float weights of one dtype, stored as bytes, and their exact values. */
static void *float_weights(tern_dtype dt, int64_t n, tu_rng *rng, double *vals)
{
	size_t es = dt == TERN_DTYPE_F32 ? 4 : 2;
	uint8_t *buf = malloc(es * (size_t)n);
	for (int64_t i = 0; i < n; i++) {
		float f = tu_normal(rng);
		if (dt == TERN_DTYPE_F32) {
			memcpy(buf + 4 * i, &f, 4);
			vals[i] = f;
		} else if (dt == TERN_DTYPE_F16) {
			uint16_t h = tern_f32_to_f16(f);
			memcpy(buf + 2 * i, &h, 2);
			vals[i] = tern_f16_to_f32(h);
		} else {
			uint16_t h = tern_f32_to_bf16(f);
			memcpy(buf + 2 * i, &h, 2);
			vals[i] = tern_bf16_to_f32(h);
		}
	}
	return buf;
}

static tern_fdot_fn fdot_of(const tern_kernels *kt, tern_dtype dt)
{
	return dt == TERN_DTYPE_F32 ? kt->f32_dot : dt == TERN_DTYPE_F16 ? kt->f16_dot : kt->bf16_dot;
}

Test(kernels, float_kernels_match_double_reference_on_every_path)
{
	/* Tolerance: any summation order of k products of floats (f16/bf16
	 * weights are exact in f32) errs by at most ~k * 2^-24 * sum|terms|;
	 * (k + 2) * FLT_EPSILON is twice that bound. */
	tu_rng rng = tu_rng_new(7);
	static const tern_dtype dts[] = { TERN_DTYPE_F32, TERN_DTYPE_F16, TERN_DTYPE_BF16 };
	static const int64_t ks[] = { 1, 5, 8, 15, 16, 17, 33, 127, 1000, 2561 };
	for (int di = 0; di < 3; di++) {
		for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
			int64_t k = ks[ki], rows = tu_int(&rng, 1, 9), ntok = tu_int(&rng, 1, 9);
			int64_t ldx = k + 1, ldy = rows + 2;
			size_t ws = (size_t)k * (dts[di] == TERN_DTYPE_F32 ? 4 : 2);
			double *wv = malloc(sizeof(double) * (size_t)(rows * k));
			void *w = float_weights(dts[di], rows * k, &rng, wv);
			float *x = malloc(sizeof(float) * (size_t)(ntok * ldx));
			float *y = malloc(sizeof(float) * (size_t)(ntok * ldy));
			for (int64_t i = 0; i < ntok * ldx; i++)
				x[i] = tu_normal(&rng);
			for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
				const tern_kernels *kt = tern_kernels_get((tern_kernel_path)p);
				if (!kt)
					continue;
				fdot_of(kt, dts[di])(w, ws, rows, x, ldx, ntok, k, y, ldy);
				for (int64_t r = 0; r < rows; r++)
					for (int64_t t = 0; t < ntok; t++) {
						double s = 0, mag = 0;
						for (int64_t j = 0; j < k; j++) {
							double term = wv[r * k + j] * x[t * ldx + j];
							s += term;
							mag += fabs(term);
						}
						double tol = (double)(k + 2) * FLT_EPSILON * mag;
						cr_assert(fabs(y[t * ldy + r] - s) <= tol,
							  "%s %s k=%lld r=%lld t=%lld: %g vs %g",
							  tern_kernel_path_name((tern_kernel_path)p),
							  tern_dtype_name(dts[di]), (long long)k, (long long)r,
							  (long long)t, y[t * ldy + r], s);
					}
			}
			free(wv);
			free(w);
			free(x);
			free(y);
		}
	}
}

/* ---- the driver ----------------------------------------------------------- */

static tern_ctx *ctx_with(int threads, tern_kernel_path p)
{
	tern_ctx_params prm = tern_ctx_default_params();
	prm.n_threads = threads;
	prm.kernel = tern_kernel_path_name(p);
	tern_ctx *ctx = NULL;
	cr_assert_eq(tern_ctx_new(&prm, &ctx), TERN_OK);
	return ctx;
}

/* A quantized weight tensor with random values and scales; vals gets the
 * integer values [rows][cols]. */
static tern_tensor *quant_tensor(tern_dtype dt, tern_qparams qp, int64_t rows, int64_t cols,
				 tu_rng *rng, int8_t *vals)
{
	int64_t shape[2] = { rows, cols };
	tern_tensor *t = NULL;
	cr_assert_eq(tern_tensor_new(NULL, dt, &qp, 2, shape, &t), TERN_OK);
	size_t rb = tern_row_bytes(dt, cols);
	uint8_t *codes = t->data;
	for (int64_t r = 0; r < rows; r++) {
		int8_t *v = vals + r * cols;
		for (int64_t j = 0; j < cols; j++)
			v[j] = (int8_t)(dt == TERN_DTYPE_I8 ? tu_int(rng, -127, 127) : tu_int(rng, -1, 1));
		if (dt == TERN_DTYPE_I8) {
			memset(codes + r * rb, 0, rb);
			memcpy(codes + r * rb, v, (size_t)cols);
		} else {
			pack_row(dt, v, cols, codes + r * rb);
		}
	}
	size_t ns = 0;
	cr_assert_eq(tern_scale_count(dt, &qp, rows, cols, &ns), TERN_OK);
	uint8_t *s = codes + (size_t)rows * rb;
	for (size_t i = 0; i < ns; i++) {
		float f = 0.01f + 0.1f * (float)tu_int(rng, 0, 1000) / 1000.0f;
		if (qp.scale_type == TERN_DTYPE_F16) {
			uint16_t h = tern_f32_to_f16(f);
			memcpy(s + 2 * i, &h, 2);
		} else {
			memcpy(s + 4 * i, &f, 4);
		}
	}
	return t;
}

/* y_ref[t][r] = sum_j w * q * scale(r, j) * ascale[t], in double. */
static void ref_matmul_q(const tern_tensor *W, const int8_t *vals, const tern_qact *a, double *y,
			 double *mag)
{
	int64_t rows = tern_tensor_rows(W), cols = tern_tensor_cols(W);
	for (int64_t t = 0; t < a->n; t++)
		for (int64_t r = 0; r < rows; r++) {
			double s = 0, m = 0;
			for (int64_t j = 0; j < cols; j++) {
				double term = (double)vals[r * cols + j] * a->q[t * a->kpad + j] *
					      tern_tensor_scale_at(W, r, j) * a->scale[t];
				s += term;
				m += fabs(term);
			}
			y[t * rows + r] = s;
			mag[t * rows + r] = m;
		}
}

static const tern_qparams qp_list[] = {
	{ TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32 },
	{ TERN_SCALE_ROW, 0, TERN_DTYPE_F16 },
	{ TERN_SCALE_BLOCK, 128, TERN_DTYPE_F32 },
	{ TERN_SCALE_BLOCK, 256, TERN_DTYPE_F16 },
};

Test(kernels, matmul_q_matches_double_reference_and_paths_agree_bitwise)
{
	/* Float outputs: each block's integer sum is exact, then a handful of
	 * float products and (per block) additions: 1e-5 relative to
	 * sum|terms| leaves ample room over the ~(nb + 3) * 2^-24 they cost. */
	tu_rng rng = tu_rng_new(8);
	static const int64_t ks[] = { 7, 129, 161, 480, 1152, 4304 };
	static const tern_dtype dts[] = { TERN_DTYPE_T2, TERN_DTYPE_T3, TERN_DTYPE_I8 };
	tern_ctx *ctxs[TERN_KERNEL_COUNT] = { 0 };
	for (int p = 0; p < TERN_KERNEL_COUNT; p++)
		if (tern_kernel_available((tern_kernel_path)p))
			ctxs[p] = ctx_with(2, (tern_kernel_path)p);
	for (int di = 0; di < 3; di++)
		for (size_t qi = 0; qi < 4; qi++) {
			if (dts[di] == TERN_DTYPE_I8 && qp_list[qi].kind == TERN_SCALE_BLOCK)
				continue;
			for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
				int64_t k = ks[ki], rows = tu_int(&rng, 1, 70), n = tu_int(&rng, 1, 11);
				int8_t *vals = malloc((size_t)(rows * k));
				tern_tensor *W = quant_tensor(dts[di], qp_list[qi], rows, k, &rng, vals);
				float *x = malloc(sizeof(float) * (size_t)(n * k));
				for (int64_t i = 0; i < n * k; i++)
					x[i] = tu_normal(&rng);
				tern_qact a;
				cr_assert_eq(tern_qact_quantize(ctxs[0], 1, dts[di], x, n, k, k,
								TERN_ACTQ_MUL, TERN_ROUND_EVEN, &a),
					     TERN_OK);
				double *yr = malloc(sizeof(double) * (size_t)(n * rows));
				double *mag = malloc(sizeof(double) * (size_t)(n * rows));
				ref_matmul_q(W, vals, &a, yr, mag);
				float *y0 = malloc(sizeof(float) * (size_t)(n * rows));
				float *y1 = malloc(sizeof(float) * (size_t)(n * rows));
				cr_assert_eq(tern_matmul_q(ctxs[0], W, &a, y0, rows), TERN_OK);
				for (int64_t i = 0; i < n * rows; i++)
					cr_assert(fabs(y0[i] - yr[i]) <= 1e-5 * mag[i] + 1e-30,
						  "%s kind %d k=%lld i=%lld: %g vs %g",
						  tern_dtype_name(dts[di]), (int)qp_list[qi].kind,
						  (long long)k, (long long)i, y0[i], yr[i]);
				for (int p = 1; p < TERN_KERNEL_COUNT; p++) {
					if (!ctxs[p])
						continue;
					cr_assert_eq(tern_matmul_q(ctxs[p], W, &a, y1, rows), TERN_OK);
					cr_assert_eq(memcmp(y0, y1, sizeof(float) * (size_t)(n * rows)), 0,
						     "%s vs scalar, %s kind %d k=%lld",
						     tern_kernel_path_name((tern_kernel_path)p),
						     tern_dtype_name(dts[di]), (int)qp_list[qi].kind,
						     (long long)k);
				}
				free(vals);
				free(x);
				free(yr);
				free(mag);
				free(y0);
				free(y1);
				tern_tensor_free(W);
			}
		}
	for (int p = 0; p < TERN_KERNEL_COUNT; p++)
		tern_ctx_free(ctxs[p]);
}

Test(kernels, qact_sums_and_padding_are_consistent)
{
	tu_rng rng = tu_rng_new(9);
	tern_ctx *ctx = ctx_with(2, TERN_KERNEL_SCALAR);
	int64_t n = 5, k = 333, ldx = 340;
	float x[5 * 340];
	for (int i = 0; i < 5 * 340; i++)
		x[i] = tu_normal(&rng);
	tern_qact a;
	cr_assert_eq(tern_qact_quantize(ctx, 3, TERN_DTYPE_T3, x, n, k, ldx, TERN_ACTQ_MUL,
					TERN_ROUND_EVEN, &a),
		     TERN_OK);
	cr_assert_eq(a.kpad, 480);
	for (int64_t t = 0; t < n; t++) {
		int32_t total = 0;
		float amax = 0;
		for (int64_t j = 0; j < k; j++)
			amax = fmaxf(amax, fabsf(x[t * ldx + j]));
		cr_assert_float_eq(a.scale[t], amax / 127.0f, 1e-12);
		for (int64_t c = 0; c < a.kpad / 32; c++) {
			int32_t s = 0;
			for (int i = 0; i < 32; i++)
				s += a.q[t * a.kpad + c * 32 + i];
			cr_assert_eq(a.csum[t * (a.kpad / 32) + c], s);
			total += s;
		}
		cr_assert_eq(a.sum[t], total);
		for (int64_t j = k; j < a.kpad; j++)
			cr_assert_eq(a.q[t * a.kpad + j], 0);
	}
	tern_ctx_free(ctx);
}

Test(kernels, raw_i32_returns_block_sums_of_stored_codes)
{
	tu_rng rng = tu_rng_new(10);
	tern_ctx *ctx = ctx_with(2, tern_kernel_detect());
	int64_t rows = 37, k = 700, n = 6;
	int8_t *vals = malloc((size_t)(rows * k));
	tern_tensor *W = quant_tensor(TERN_DTYPE_T2, qp_list[2], rows, k, &rng, vals);
	float *x = malloc(sizeof(float) * (size_t)(n * k));
	for (int64_t i = 0; i < n * k; i++)
		x[i] = tu_normal(&rng);
	tern_qact a;
	cr_assert_eq(tern_qact_quantize(ctx, 1, TERN_DTYPE_T2, x, n, k, k, TERN_ACTQ_MUL,
					TERN_ROUND_EVEN, &a),
		     TERN_OK);
	int64_t nb = (a.kpad + 127) / 128;
	int32_t *out = malloc(sizeof(int32_t) * (size_t)(rows * n * nb));
	cr_assert_eq(tern_matmul_raw_i32(ctx, W, &a, out), TERN_OK);
	for (int64_t r = 0; r < rows; r++)
		for (int64_t t = 0; t < n; t++)
			for (int64_t b = 0; b < nb; b++) {
				int32_t s = 0;
				for (int64_t j = b * 128; j < (b + 1) * 128 && j < a.kpad; j++)
					s += ((j < k ? vals[r * k + j] : 0) + 1) * a.q[t * a.kpad + j];
				cr_assert_eq(out[(r * n + t) * nb + b], s);
			}
	free(vals);
	free(x);
	free(out);
	tern_tensor_free(W);
	tern_ctx_free(ctx);
}

/* Runs tern_matmul on W with 1..4 threads, on every kernel path, and
 * checks the bytes agree for each path. */
static void check_threads_identical(const tern_tensor *W, int64_t n, tu_rng *rng)
{
	int64_t rows = tern_tensor_rows(W), k = tern_tensor_cols(W), ldx = k + 3, ldy = rows + 1;
	float *x = malloc(sizeof(float) * (size_t)(n * ldx));
	for (int64_t i = 0; i < n * ldx; i++)
		x[i] = tu_normal(rng);
	size_t ybytes = sizeof(float) * (size_t)(n * ldy);
	float *y1 = malloc(ybytes), *yn = malloc(ybytes);
	for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
		tern_kernel_path path = (tern_kernel_path)p;
		if (!tern_kernel_available(path))
			continue;
		memset(y1, 0, ybytes);
		tern_ctx *c1 = ctx_with(1, path);
		cr_assert_eq(tern_matmul(c1, W, x, n, ldx, y1, ldy), TERN_OK, "%s",
			     tern_ctx_errmsg(c1));
		tern_ctx_free(c1);
		for (int th = 2; th <= 4; th++) {
			tern_ctx *c = ctx_with(th, path);
			memset(yn, 0, ybytes);
			cr_assert_eq(tern_matmul(c, W, x, n, ldx, yn, ldy), TERN_OK);
			cr_assert_eq(memcmp(y1, yn, ybytes), 0,
				     "%s %s rows=%lld k=%lld n=%lld threads=%d",
				     tern_kernel_path_name(path), tern_dtype_name(W->dtype),
				     (long long)rows, (long long)k, (long long)n, th);
			tern_ctx_free(c);
		}
	}
	free(x);
	free(y1);
	free(yn);
}

Test(kernels, results_do_not_depend_on_thread_count)
{
	tu_rng rng = tu_rng_new(11);
	/* Shapes large enough to be threaded, with row counts that do not
	 * divide evenly and few rows with many tokens (split by tokens). */
	static const int64_t shapes[][3] = { { 301, 1152, 1 }, { 77, 640, 9 }, { 6, 1000, 40 },
					     { 129, 161, 17 } };
	static const tern_dtype qdts[] = { TERN_DTYPE_T2, TERN_DTYPE_T3, TERN_DTYPE_I8 };
	static const tern_dtype fdts[] = { TERN_DTYPE_F32, TERN_DTYPE_F16, TERN_DTYPE_BF16 };
	for (size_t si = 0; si < 4; si++) {
		int64_t rows = shapes[si][0], k = shapes[si][1], n = shapes[si][2];
		int8_t *vals = malloc((size_t)(rows * k));
		for (int di = 0; di < 3; di++) {
			tern_qparams qp = qp_list[si % 4];
			if (qdts[di] == TERN_DTYPE_I8 && qp.kind == TERN_SCALE_BLOCK)
				qp = qp_list[1];
			tern_tensor *W = quant_tensor(qdts[di], qp, rows, k, &rng, vals);
			check_threads_identical(W, n, &rng);
			tern_tensor_free(W);
		}
		for (int di = 0; di < 3; di++) {
			int64_t shape[2] = { rows, k };
			tern_tensor *W = NULL;
			cr_assert_eq(tern_tensor_new(NULL, fdts[di], NULL, 2, shape, &W), TERN_OK);
			double *v = malloc(sizeof(double) * (size_t)(rows * k));
			void *buf = float_weights(fdts[di], rows * k, &rng, v);
			memcpy(W->data, buf, W->nbytes);
			check_threads_identical(W, n, &rng);
			free(v);
			free(buf);
			tern_tensor_free(W);
		}
		free(vals);
	}
}

Test(kernels, matmul_float_weights_match_double_reference)
{
	/* Same bound as the float kernel test: (k + 2) * FLT_EPSILON * sum|terms|. */
	tu_rng rng = tu_rng_new(12);
	tern_ctx *ctx = ctx_with(2, tern_kernel_detect());
	static const tern_dtype fdts[] = { TERN_DTYPE_F32, TERN_DTYPE_F16, TERN_DTYPE_BF16 };
	int64_t rows = 93, k = 517, n = 3, ldy = 100;
	for (int di = 0; di < 3; di++) {
		int64_t shape[2] = { rows, k };
		tern_tensor *W = NULL;
		cr_assert_eq(tern_tensor_new(NULL, fdts[di], NULL, 2, shape, &W), TERN_OK);
		double *v = malloc(sizeof(double) * (size_t)(rows * k));
		void *buf = float_weights(fdts[di], rows * k, &rng, v);
		memcpy(W->data, buf, W->nbytes);
		float *x = malloc(sizeof(float) * (size_t)(n * k));
		float *y = malloc(sizeof(float) * (size_t)(n * ldy));
		for (int64_t i = 0; i < n * k; i++)
			x[i] = tu_normal(&rng);
		cr_assert_eq(tern_matmul(ctx, W, x, n, k, y, ldy), TERN_OK);
		for (int64_t t = 0; t < n; t++)
			for (int64_t r = 0; r < rows; r++) {
				double s = 0, m = 0;
				for (int64_t j = 0; j < k; j++) {
					s += v[r * k + j] * x[t * k + j];
					m += fabs(v[r * k + j] * x[t * k + j]);
				}
				cr_assert(fabs(y[t * ldy + r] - s) <= (double)(k + 2) * FLT_EPSILON * m);
			}
		free(v);
		free(buf);
		free(x);
		free(y);
		tern_tensor_free(W);
	}
	tern_ctx_free(ctx);
}

Test(kernels, matmul_ternary_quantizes_activations_like_qact)
{
	tu_rng rng = tu_rng_new(13);
	tern_ctx *ctx = ctx_with(2, tern_kernel_detect());
	int64_t rows = 50, k = 900, n = 4;
	int8_t *vals = malloc((size_t)(rows * k));
	tern_tensor *W = quant_tensor(TERN_DTYPE_T3, qp_list[0], rows, k, &rng, vals);
	float *x = malloc(sizeof(float) * (size_t)(n * k));
	for (int64_t i = 0; i < n * k; i++)
		x[i] = tu_normal(&rng);
	float y[200], yq[200];
	cr_assert_eq(tern_matmul(ctx, W, x, n, k, y, rows), TERN_OK);
	tern_qact a;
	cr_assert_eq(tern_qact_quantize(ctx, 2, TERN_DTYPE_T3, x, n, k, k, TERN_ACTQ_MUL,
					TERN_ROUND_EVEN, &a),
		     TERN_OK);
	cr_assert_eq(tern_matmul_q(ctx, W, &a, yq, rows), TERN_OK);
	cr_assert_eq(memcmp(y, yq, sizeof y), 0);
	free(vals);
	free(x);
	tern_tensor_free(W);
	tern_ctx_free(ctx);
}

Test(kernels, bad_arguments_fail_with_a_message)
{
	tu_rng rng = tu_rng_new(14);
	tern_ctx *ctx = ctx_with(1, TERN_KERNEL_SCALAR);
	int8_t vals[8 * 40];
	tern_tensor *W = quant_tensor(TERN_DTYPE_T2, qp_list[0], 8, 40, &rng, vals);
	float x[2 * 40] = { 0 }, y[16];
	cr_assert_eq(tern_matmul(ctx, W, x, 2, 40, y, 7), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "stride") != NULL);
	cr_assert_eq(tern_matmul(ctx, W, x, 2, 39, y, 8), TERN_E_INVALID);
	tern_qact a;
	cr_assert_eq(tern_qact_quantize(ctx, 0, TERN_DTYPE_T2, x, 2, 40, 40, TERN_ACTQ_MUL,
					TERN_ROUND_EVEN, &a),
		     TERN_E_INVALID);
	cr_assert_eq(tern_qact_quantize(ctx, 1, TERN_DTYPE_T3, x, 2, 40, 40, TERN_ACTQ_MUL,
					TERN_ROUND_EVEN, &a),
		     TERN_OK);
	cr_assert_eq(tern_matmul_q(ctx, W, &a, y, 8), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "padded") != NULL);
	W->nbytes -= 1;
	cr_assert_eq(tern_matmul(ctx, W, x, 2, 40, y, 8), TERN_E_INVALID);
	W->nbytes += 1;
	tern_tensor_free(W);
	tern_ctx_free(ctx);
}

/* ---- I4 ------------------------------------------------------------------ */

Test(kernels, i4_pack_unpack_round_trips_and_pads_with_nibble_8)
{
	tu_rng rng = tu_rng_new(21);
	int8_t q[704], back[768];
	uint8_t packed[384];
	for (int64_t n = 1; n <= 700; n++) {
		for (int64_t j = 0; j < n; j++)
			q[j] = (int8_t)tu_int(&rng, -8, 7);
		int64_t padded = tern_row_padded(TERN_DTYPE_I4, n);
		cr_assert_eq(padded % 128, 0);
		cr_assert_eq(tern_row_bytes(TERN_DTYPE_I4, n), (size_t)(padded / 2));
		memset(packed, 0xAA, sizeof packed);
		tern_i4_pack_row(q, n, packed);
		tern_i4_unpack_row(packed, padded, back);
		cr_assert_eq(memcmp(q, back, (size_t)n), 0, "n=%lld", (long long)n);
		for (int64_t j = n; j < padded; j++)
			cr_assert_eq(back[j], 0, "n=%lld pad %lld", (long long)n, (long long)j);
		/* The layout as FORMAT.md states it: byte m of a group holds
		 * weight m (low nibble) and 64 + m (high nibble), as q + 8. */
		for (int64_t j = 0; j < n; j++) {
			int64_t g = j / 128, m = j % 128;
			uint8_t b = packed[64 * g + m % 64];
			cr_assert_eq((m < 64 ? b & 15 : b >> 4), q[j] + 8);
		}
	}
	/* Out-of-range values saturate. */
	int8_t wide[2] = { -100, 100 };
	tern_i4_pack_row(wide, 2, packed);
	tern_i4_unpack_row(packed, 2, back);
	cr_assert(back[0] == -8 && back[1] == 7);
}

/* One I4 kernel case: rows x k random codes (every nibble, pad nibbles
 * random too: readers accept any pad, and the activations' pad is 0),
 * random scales, ntok quantized token rows with their group sums. */
typedef struct i4case {
	int64_t rows, k, kpad, ng, ntok;
	size_t ws, ss, as;
	bool f16;
	uint8_t *w, *s;
	int8_t *a;
	int32_t *bsum;
	double *ref, *mag; /* [rows][ntok] */
} i4case;

static double i4_scale_of(const i4case *c, int64_t r, int64_t g)
{
	const uint8_t *p = c->s + (size_t)r * c->ss;
	if (c->f16) {
		uint16_t h;
		memcpy(&h, p + 2 * g, 2);
		return tern_f16_to_f32(h);
	}
	float f;
	memcpy(&f, p + 4 * g, 4);
	return f;
}

static void i4case_make(i4case *c, int64_t rows, int64_t k, int64_t ntok, bool f16, int extreme,
			tu_rng *rng)
{
	memset(c, 0, sizeof *c);
	c->rows = rows;
	c->k = k;
	c->kpad = tern_row_padded(TERN_DTYPE_I4, k);
	c->ng = c->kpad / 128;
	c->ntok = ntok;
	c->f16 = f16;
	c->ws = (size_t)(c->kpad / 2) + (size_t)tu_int(rng, 0, 2) * 16; /* strides wider than rows */
	c->ss = (size_t)c->ng * (f16 ? 2 : 4) + (size_t)tu_int(rng, 0, 2) * 4;
	c->as = (size_t)c->kpad + (size_t)tu_int(rng, 0, 2) * 32;
	c->w = malloc((size_t)rows * c->ws);
	c->s = malloc((size_t)rows * c->ss);
	c->a = calloc((size_t)ntok, c->as);
	c->bsum = calloc((size_t)(ntok * c->ng), sizeof(int32_t));
	c->ref = calloc((size_t)(rows * ntok), sizeof(double));
	c->mag = calloc((size_t)(rows * ntok), sizeof(double));
	for (size_t i = 0; i < (size_t)rows * c->ws; i++)
		c->w[i] = extreme ? 0x00 : (uint8_t)tu_int(rng, 0, 255); /* 0x00: q = -8 */
	for (int64_t r = 0; r < rows; r++)
		for (int64_t g = 0; g < c->ng; g++) {
			float f = (float)(1e-3 * tu_int(rng, 1, 4000));
			if (tu_int(rng, 0, 7) == 0)
				f = -f; /* the kernels must not assume a sign */
			uint8_t *p = c->s + (size_t)r * c->ss;
			if (f16) {
				uint16_t h = tern_f32_to_f16(f);
				memcpy(p + 2 * g, &h, 2);
			} else {
				memcpy(p + 4 * g, &f, 4);
			}
		}
	for (int64_t t = 0; t < ntok; t++)
		for (int64_t j = 0; j < k; j++) /* past k: zero, as quantized rows are */
			c->a[(size_t)t * c->as + (size_t)j] =
				extreme ? -128 : (int8_t)tu_int(rng, -128, 127);
	for (int64_t t = 0; t < ntok; t++)
		for (int64_t j = 0; j < c->kpad; j++)
			c->bsum[t * c->ng + j / 128] += c->a[(size_t)t * c->as + (size_t)j];
	/* Independent reference: dequantize weight by weight, dot in double. */
	int8_t *q = malloc((size_t)c->kpad);
	for (int64_t r = 0; r < rows; r++) {
		tern_i4_unpack_row(c->w + (size_t)r * c->ws, c->kpad, q);
		for (int64_t t = 0; t < ntok; t++) {
			double sum = 0, mag = 0;
			for (int64_t j = 0; j < c->kpad; j++) {
				double sw = i4_scale_of(c, r, j / 128);
				double av = c->a[(size_t)t * c->as + (size_t)j];
				sum += q[j] * sw * av;
				/* Kernels that multiply the unsigned nibble q + 8 see
				 * terms up to (|q| + 8) |a| before the offset cancels. */
				mag += (fabs((double)q[j]) + 8.0) * fabs(sw * av);
			}
			c->ref[r * ntok + t] = sum;
			c->mag[r * ntok + t] = mag;
		}
	}
	free(q);
}

static void i4case_free(i4case *c)
{
	free(c->w);
	free(c->s);
	free(c->a);
	free(c->bsum);
	free(c->ref);
	free(c->mag);
}

static float *i4_run(const tern_kernels *kt, const i4case *c)
{
	float *out = malloc(sizeof(float) * (size_t)(c->rows * c->ntok));
	for (int64_t i = 0; i < c->rows * c->ntok; i++)
		out[i] = NAN; /* every output must be written */
	kt->i4_dot(c->w, c->ws, c->s, c->ss, c->f16, c->rows, c->a, c->as, c->bsum, c->ntok,
		   c->kpad, out);
	return out;
}

/* Float error bound: each path sums ng group products (and, where it uses
 * the unsigned nibble, as many offset terms) in its own order over at
 * most 16 lanes, so (2 ng + 16 + 2) * FLT_EPSILON relative to the sum of
 * |terms| (mag) covers every path's recursive summation; the group sums
 * themselves are exact integers. */
static double i4_bound(const i4case *c, int64_t i)
{
	return (double)(2 * c->ng + 18) * FLT_EPSILON * c->mag[i];
}

static const int64_t i4_k_list[] = { 1, 7, 127, 128, 129, 255, 256, 300, 1152, 2049, 2560, 4304 };

Test(kernels, i4_every_path_matches_double_dequantized_dot)
{
	tu_rng rng = tu_rng_new(22);
	for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
		const tern_kernels *kt = tern_kernels_get((tern_kernel_path)p);
		if (!kt)
			continue;
		for (size_t ki = 0; ki < sizeof i4_k_list / sizeof i4_k_list[0]; ki++)
			for (int f16 = 0; f16 < 2; f16++) {
				i4case c;
				/* Odd row counts and 1..9 tokens cover every tile edge. */
				i4case_make(&c, tu_int(&rng, 1, 11), i4_k_list[ki], tu_int(&rng, 1, 9),
					    f16, 0, &rng);
				float *out = i4_run(kt, &c);
				for (int64_t i = 0; i < c.rows * c.ntok; i++)
					cr_assert(fabs(out[i] - c.ref[i]) <= i4_bound(&c, i),
						  "%s k=%lld f16=%d out[%lld] = %.9g, reference %.9g",
						  tern_kernel_path_name((tern_kernel_path)p),
						  (long long)c.k, f16, (long long)i, out[i], c.ref[i]);
				free(out);
				i4case_free(&c);
			}
	}
}

Test(kernels, i4_simd_paths_agree_with_scalar_and_do_not_depend_on_tiling)
{
	tu_rng rng = tu_rng_new(23);
	tern_kernel_path paths[TERN_KERNEL_COUNT];
	int np = simd_paths(paths);
	const tern_kernels *ks = tern_kernels_get(TERN_KERNEL_SCALAR);
	for (int pi = -1; pi < np; pi++) {
		const tern_kernels *kt = pi < 0 ? ks : tern_kernels_get(paths[pi]);
		for (int extreme = 0; extreme < 2; extreme++)
			for (int64_t nt = 1; nt <= 9; nt++) {
				i4case c;
				i4case_make(&c, 2 * nt + 1, extreme ? 4304 : 1000 + 37 * nt, nt, nt & 1,
					    extreme, &rng);
				float *all = i4_run(kt, &c);
				float *ref = i4_run(ks, &c);
				for (int64_t i = 0; i < c.rows * c.ntok; i++)
					cr_assert(fabs(all[i] - ref[i]) <= 2 * i4_bound(&c, i),
						  "%s vs scalar, tokens %lld out[%lld]: %.9g vs %.9g",
						  tern_kernel_path_name(kt->path), (long long)nt,
						  (long long)i, all[i], ref[i]);
				if (extreme)
					/* All q = -8, a = -128: the result is exact. */
					for (int64_t i = 0; i < c.rows * c.ntok; i++)
						cr_assert(fabs(all[i] - c.ref[i]) <= i4_bound(&c, i));
				/* One row and one token at a time: bit for bit the same. */
				for (int64_t r = 0; r < c.rows; r++)
					for (int64_t t = 0; t < c.ntok; t++) {
						float one;
						kt->i4_dot(c.w + (size_t)r * c.ws, c.ws,
							   c.s + (size_t)r * c.ss, c.ss, c.f16, 1,
							   c.a + (size_t)t * c.as, c.as,
							   c.bsum + t * c.ng, 1, c.kpad, &one);
						cr_assert(memcmp(&one, &all[r * c.ntok + t], sizeof one) == 0,
							  "%s r=%lld t=%lld: %.9g alone, %.9g in a tile",
							  tern_kernel_path_name(kt->path), (long long)r,
							  (long long)t, one, all[r * c.ntok + t]);
					}
				free(all);
				free(ref);
				i4case_free(&c);
			}
	}
}

/* An I4 tensor of random codes and block scales; vals [rows][cols]. */
static tern_tensor *i4_tensor(tern_dtype scale_type, int64_t rows, int64_t cols, tu_rng *rng,
			      int8_t *vals)
{
	tern_qparams qp = { TERN_SCALE_BLOCK, 128, scale_type };
	int64_t shape[2] = { rows, cols };
	tern_tensor *t = NULL;
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_I4, &qp, 2, shape, &t), TERN_OK);
	size_t rb = tern_row_bytes(TERN_DTYPE_I4, cols);
	for (int64_t r = 0; r < rows; r++) {
		for (int64_t j = 0; j < cols; j++)
			vals[r * cols + j] = (int8_t)tu_int(rng, -8, 7);
		tern_i4_pack_row(vals + r * cols, cols, (uint8_t *)t->data + r * rb);
	}
	size_t ns = 0;
	cr_assert_eq(tern_scale_count(TERN_DTYPE_I4, &qp, rows, cols, &ns), TERN_OK);
	uint8_t *s = (uint8_t *)t->data + (size_t)rows * rb;
	for (size_t i = 0; i < ns; i++) {
		float f = 0.01f + 0.1f * (float)tu_int(rng, 0, 1000) / 1000.0f;
		if (scale_type == TERN_DTYPE_F16) {
			uint16_t h = tern_f32_to_f16(f);
			memcpy(s + 2 * i, &h, 2);
		} else {
			memcpy(s + 4 * i, &f, 4);
		}
	}
	return t;
}

Test(kernels, matmul_i4_matches_double_reference_on_every_path_and_thread_count)
{
	/* Bound: as i4_bound, with 4 more roundings for the activation
	 * scale; 1e-5 relative to sum (|q| + 8) |w a| covers ng up to ~40. */
	tu_rng rng = tu_rng_new(24);
	static const int64_t ks[] = { 7, 129, 480, 2560, 4304 };
	for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
		if (!tern_kernel_available((tern_kernel_path)p))
			continue;
		tern_ctx *c1 = ctx_with(1, (tern_kernel_path)p), *c2 = ctx_with(2, (tern_kernel_path)p);
		for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
			for (int f16 = 0; f16 < 2; f16++) {
				int64_t k = ks[ki], rows = tu_int(&rng, 1, 150), n = tu_int(&rng, 1, 11);
				int8_t *vals = malloc((size_t)(rows * k));
				tern_tensor *W = i4_tensor(f16 ? TERN_DTYPE_F16 : TERN_DTYPE_F32, rows, k,
							   &rng, vals);
				float *x = malloc(sizeof(float) * (size_t)(n * k));
				for (int64_t i = 0; i < n * k; i++)
					x[i] = tu_normal(&rng);
				tern_qact a;
				cr_assert_eq(tern_qact_quantize(c1, 1, TERN_DTYPE_I4, x, n, k, k,
								TERN_ACTQ_MUL, TERN_ROUND_EVEN, &a),
					     TERN_OK);
				float *y0 = malloc(sizeof(float) * (size_t)(n * rows));
				float *y1 = malloc(sizeof(float) * (size_t)(n * rows));
				float *y2 = malloc(sizeof(float) * (size_t)(n * rows));
				cr_assert_eq(tern_matmul_q(c1, W, &a, y0, rows), TERN_OK);
				cr_assert_eq(tern_matmul_q(c2, W, &a, y1, rows), TERN_OK);
				/* tern_matmul quantizes x the same way itself. */
				cr_assert_eq(tern_matmul(c2, W, x, n, k, y2, rows), TERN_OK);
				cr_assert_eq(memcmp(y0, y1, sizeof(float) * (size_t)(n * rows)), 0);
				cr_assert_eq(memcmp(y0, y2, sizeof(float) * (size_t)(n * rows)), 0);
				for (int64_t t = 0; t < n; t++)
					for (int64_t r = 0; r < rows; r++) {
						double s = 0, m = 0;
						for (int64_t j = 0; j < k; j++) {
							double term = (double)a.q[t * a.kpad + j] *
								      tern_tensor_scale_at(W, r, j) *
								      a.scale[t];
							s += vals[r * k + j] * term;
							m += (fabs((double)vals[r * k + j]) + 8) * fabs(term);
						}
						cr_assert(fabs(y0[t * rows + r] - s) <= 1e-5 * m + 1e-30,
							  "%s k=%lld f16=%d t=%lld r=%lld: %g vs %g",
							  tern_kernel_path_name((tern_kernel_path)p),
							  (long long)k, f16, (long long)t, (long long)r,
							  y0[t * rows + r], s);
					}
				free(vals);
				free(x);
				free(y0);
				free(y1);
				free(y2);
				tern_tensor_free(W);
			}
		tern_ctx_free(c1);
		tern_ctx_free(c2);
	}
}

Test(kernels, i4_refuses_raw_sums_and_scale_kinds_other_than_block_128)
{
	tu_rng rng = tu_rng_new(25);
	tern_ctx *ctx = ctx_with(1, TERN_KERNEL_SCALAR);
	int8_t vals[4 * 200];
	tern_tensor *W = i4_tensor(TERN_DTYPE_F32, 4, 200, &rng, vals);
	float x[200] = { 1.0f };
	tern_qact a;
	cr_assert_eq(tern_qact_quantize(ctx, 1, TERN_DTYPE_I4, x, 1, 200, 200, TERN_ACTQ_MUL,
					TERN_ROUND_EVEN, &a),
		     TERN_OK);
	int32_t raw[8];
	cr_assert_eq(tern_matmul_raw_i32(ctx, W, &a, raw), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "i4") != NULL);
	float y[4];
	W->q = (tern_qparams){ TERN_SCALE_ROW, 0, TERN_DTYPE_F32 };
	cr_assert_eq(tern_matmul(ctx, W, x, 1, 200, y, 4), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "block scales of 128") != NULL,
		  "%s", tern_ctx_errmsg(ctx));
	W->q = (tern_qparams){ TERN_SCALE_BLOCK, 256, TERN_DTYPE_F32 };
	cr_assert_eq(tern_matmul(ctx, W, x, 1, 200, y, 4), TERN_E_INVALID);
	W->q = (tern_qparams){ TERN_SCALE_BLOCK, 128, TERN_DTYPE_F32 };
	W->nbytes -= 1;
	cr_assert_eq(tern_matmul(ctx, W, x, 1, 200, y, 4), TERN_E_INVALID);
	W->nbytes += 1;
	cr_assert_eq(tern_matmul(ctx, W, x, 1, 200, y, 4), TERN_OK);
	tern_tensor_free(W);
	tern_ctx_free(ctx);
}

Test(kernels, matmul_q_many_equals_separate_calls_bit_for_bit)
{
	/* Weights of every quantized dtype and scale kind behind one set of
	 * activations, in one dispatch: the outputs must be exactly those of
	 * one tern_matmul_q per weight, whatever the thread count (the
	 * threads steal each other's tiles, so the split varies run to run). */
	tu_rng rng = tu_rng_new(31);
	static const int64_t ks[] = { 129, 1152, 2560 };
	static const int64_t ns[] = { 1, 3, 17 };
	tern_ctx *c1 = ctx_with(1, tern_kernel_detect());
	tern_ctx *cs[3] = { c1, ctx_with(2, tern_kernel_detect()), ctx_with(3, tern_kernel_detect()) };
	for (size_t ki = 0; ki < 3; ki++)
		for (size_t ni = 0; ni < 3; ni++) {
			const int64_t k = ks[ki], n = ns[ni];
			const int64_t rows[4] = { tu_int(&rng, 1, 9), tu_int(&rng, 60, 300),
						  tu_int(&rng, 200, 700), tu_int(&rng, 1, 130) };
			int8_t *vals = malloc((size_t)(700 * k));
			tern_tensor *W[4] = {
				quant_tensor(TERN_DTYPE_T2, qp_list[ki % 4], rows[0], k, &rng, vals),
				quant_tensor(TERN_DTYPE_T3, qp_list[(ki + 2) % 4], rows[1], k, &rng,
					     vals),
				quant_tensor(TERN_DTYPE_I8, qp_list[ni % 2], rows[2], k, &rng, vals),
				i4_tensor(TERN_DTYPE_F16, rows[3], k, &rng, vals),
			};
			float *x = malloc(sizeof(float) * (size_t)(n * k));
			for (int64_t i = 0; i < n * k; i++)
				x[i] = tu_normal(&rng);
			for (int c = 0; c < 4; c++) {
				/* The activations' padding is fixed by the dtype. */
				tern_qact a;
				cr_assert_eq(tern_qact_quantize(c1, 1, W[c]->dtype, x, n, k, k,
								TERN_ACTQ_MUL, TERN_ROUND_EVEN, &a),
					     TERN_OK);
				float *ref = malloc(sizeof(float) * (size_t)(n * rows[c] + 1));
				cr_assert_eq(tern_matmul_q(c1, W[c], &a, ref, rows[c]), TERN_OK);
				/* The same weight three times (with different output
				 * strides) and once alone, on every thread count. */
				for (int ti = 0; ti < 3; ti++) {
					const tern_tensor *Wm[3] = { W[c], W[c], W[c] };
					const int64_t ld[3] = { rows[c], rows[c] + 5, rows[c] };
					float *y[3];
					for (int i = 0; i < 3; i++)
						y[i] = malloc(sizeof(float) * (size_t)(n * ld[i]));
					cr_assert_eq(tern_matmul_q_many(cs[ti], 3, Wm, &a, y, ld), TERN_OK);
					for (int i = 0; i < 3; i++)
						for (int64_t t = 0; t < n; t++)
							cr_assert_eq(memcmp(y[i] + t * ld[i], ref + t * rows[c],
									    sizeof(float) * (size_t)rows[c]),
								     0, "%s k=%lld n=%lld threads=%d part %d",
								     tern_dtype_name(W[c]->dtype), (long long)k,
								     (long long)n, ti + 1, i);
					for (int i = 0; i < 3; i++)
						free(y[i]);
				}
				free(ref);
			}
			/* Mixed dtypes need one activation set per padding; T2 and
			 * I8 pad alike when k is a multiple of 256, so mix those. */
			if (tern_row_padded(TERN_DTYPE_T2, k) == tern_row_padded(TERN_DTYPE_I8, k)) {
				tern_qact a;
				cr_assert_eq(tern_qact_quantize(c1, 1, TERN_DTYPE_T2, x, n, k, k,
								TERN_ACTQ_MUL, TERN_ROUND_EVEN, &a),
					     TERN_OK);
				const tern_tensor *Wm[2] = { W[0], W[2] };
				const int64_t ld[2] = { rows[0], rows[2] };
				float *y[2], *r[2];
				for (int i = 0; i < 2; i++) {
					y[i] = malloc(sizeof(float) * (size_t)(n * ld[i]));
					r[i] = malloc(sizeof(float) * (size_t)(n * ld[i]));
					cr_assert_eq(tern_matmul_q(c1, Wm[i], &a, r[i], ld[i]), TERN_OK);
				}
				cr_assert_eq(tern_matmul_q_many(cs[1], 2, Wm, &a, y, ld), TERN_OK);
				for (int i = 0; i < 2; i++) {
					cr_assert_eq(memcmp(y[i], r[i], sizeof(float) * (size_t)(n * ld[i])),
						     0, "mixed t2/i8 part %d k=%lld", i, (long long)k);
					free(y[i]);
					free(r[i]);
				}
			}
			/* Counts outside 1..TERN_MATMUL_MANY_MAX are refused. */
			{
				tern_qact a;
				cr_assert_eq(tern_qact_quantize(c1, 1, TERN_DTYPE_T2, x, n, k, k,
								TERN_ACTQ_MUL, TERN_ROUND_EVEN, &a),
					     TERN_OK);
				const tern_tensor *Wm[5] = { W[0], W[0], W[0], W[0], W[0] };
				float *y[5] = { x, x, x, x, x };
				const int64_t ld[5] = { k, k, k, k, k };
				cr_assert_eq(tern_matmul_q_many(c1, 0, Wm, &a, y, ld), TERN_E_INVALID);
				cr_assert_eq(tern_matmul_q_many(c1, 5, Wm, &a, y, ld), TERN_E_INVALID);
				cr_assert_str_not_empty(tern_ctx_errmsg(c1));
			}
			free(x);
			free(vals);
			for (int c = 0; c < 4; c++)
				tern_tensor_free(W[c]);
		}
	for (int i = 0; i < 3; i++)
		tern_ctx_free(cs[i]);
}

Test(kernels, one_token_matmul_equals_its_row_of_a_two_token_call_bitwise)
{
	/* One token has its own finishing loop (contiguous, vectorized);
	 * several tokens take the strided one. Both must give the same floats
	 * for every row count (each vector tail length) and scale kind, on
	 * every path and with 1 and 2 threads. */
	tu_rng rng = tu_rng_new(31);
	const int64_t k = 161;
	float *x = malloc(sizeof(float) * 2 * 2560);
	for (int64_t i = 0; i < 2 * 2560; i++)
		x[i] = tu_normal(&rng);
	for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
		if (!tern_kernel_available((tern_kernel_path)p))
			continue;
		for (int threads = 1; threads <= 2; threads++) {
			tern_ctx *ctx = ctx_with(threads, (tern_kernel_path)p);
			for (int di = 0; di < 4; di++)
				for (size_t qi = 0; qi < 4; qi++) {
					const tern_dtype dt = di == 3 ? TERN_DTYPE_I4 :
								  (tern_dtype[]){ TERN_DTYPE_T2, TERN_DTYPE_T3,
										  TERN_DTYPE_I8 }[di];
					if ((dt == TERN_DTYPE_I8 && qp_list[qi].kind == TERN_SCALE_BLOCK) ||
					    (dt == TERN_DTYPE_I4 && qi > 0))
						continue;
					/* Row counts 1..70 and a threaded 1500 (the kernels
					 * quantize and finish in 64-row tiles). */
					for (int64_t rows = 1; rows <= 71; rows++) {
						const int64_t nr = rows == 71 ? 1500 : rows, kk = rows == 71 ? 2560 : k;
						int8_t *vals = malloc((size_t)(nr * kk));
						tern_tensor *W = dt == TERN_DTYPE_I4 ?
									 i4_tensor(TERN_DTYPE_F16, nr, kk, &rng, vals) :
									 quant_tensor(dt, qp_list[qi], nr, kk, &rng, vals);
						float *y2 = malloc(sizeof(float) * (size_t)(2 * nr));
						float *y1 = malloc(sizeof(float) * (size_t)nr);
						tern_qact a;
						cr_assert_eq(tern_qact_quantize(ctx, 1, dt, x, 2, kk, kk, TERN_ACTQ_MUL,
										TERN_ROUND_EVEN, &a),
							     TERN_OK);
						cr_assert_eq(tern_matmul_q(ctx, W, &a, y2, nr), TERN_OK);
						cr_assert_eq(tern_qact_quantize(ctx, 1, dt, x, 1, kk, kk, TERN_ACTQ_MUL,
										TERN_ROUND_EVEN, &a),
							     TERN_OK);
						cr_assert_eq(tern_matmul_q(ctx, W, &a, y1, nr), TERN_OK);
						cr_assert_eq(memcmp(y1, y2, sizeof(float) * (size_t)nr), 0,
							     "%s %s kind %d rows %lld threads %d",
							     tern_kernel_path_name((tern_kernel_path)p),
							     tern_dtype_name(dt), (int)qp_list[qi].kind,
							     (long long)nr, threads);
						free(vals);
						free(y1);
						free(y2);
						tern_tensor_free(W);
					}
				}
			tern_ctx_free(ctx);
		}
	}
	free(x);
}

Test(kernels, f16_rows_equal_the_scalar_conversion_bit_for_bit_on_every_path)
{
	/* The f16 KV cache's stores: every path must give tern_f32_to_f16's
	 * bits, for normal values, exact ties at f16's last place (both
	 * parities), f16 subnormals and the ties between them, values that
	 * round up to the next binade or to infinity, f32 subnormals, zeros,
	 * infinities, and quiet and signalling NaNs (which the SIMD paths
	 * hand to the reference); every length up to 40 covers each vector
	 * tail, and a NaN in any lane of a block. */
	tu_rng rng = tu_rng_new(41);
	enum { N = 1000 };
	static const uint32_t special[] = {
		0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu, /* zeros, f32 subnormals */
		0x33000000u, 0x33000001u, 0x33800000u, 0xb3c00000u, /* around half the least subnormal */
		0x387fe000u, 0x387ff000u, 0x38800000u, 0x38801000u, /* subnormal/normal edge, ties */
		0x3f801000u, 0x3f803000u, 0x3f800fffu, 0xbf803000u, /* ties to even at 1.0 */
		0x477fe000u, 0x477fefffu, 0x477ff000u, 0x47800000u, /* 65504, past it, to infinity */
		0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc12345u, /* infinities, quiet NaNs */
		0x7f800001u, 0x7fa00000u, 0xff812345u,              /* signalling NaNs */
	};
	const size_t ns = sizeof special / sizeof special[0];
	float *x = malloc(sizeof(float) * N);
	uint16_t *ref = malloc(2 * N), *got = malloc(2 * N);
	for (int i = 0; i < N; i++) {
		uint32_t u;
		switch (i % 4) {
		case 0: /* any bits */
			u = (uint32_t)tu_int(&rng, 0, 0xffff) << 16 | (uint32_t)tu_int(&rng, 0, 0xffff);
			break;
		case 1: /* f16's range, ties likely: low 13 bits 0x1000 */
			u = (uint32_t)tu_int(&rng, 0x33000000, 0x477fffff) & ~0x1fffu;
			u |= tu_int(&rng, 0, 1) ? 0x1000u : (uint32_t)tu_int(&rng, 0, 0x1fff);
			u |= tu_int(&rng, 0, 1) ? 0x80000000u : 0;
			break;
		case 2:
			u = special[tu_int(&rng, 0, (int)ns - 1)];
			break;
		default: { /* KV-like values */
			float f = tu_normal(&rng) * 4.0f;
			memcpy(&u, &f, 4);
		}
		}
		memcpy(&x[i], &u, 4);
	}
	tern_f16_row_scalar(x, ref, N);
	for (int i = 0; i < N; i++)
		cr_assert_eq(ref[i], tern_f32_to_f16(x[i]));
	/* The special values one by one, at each lane of an 8-wide block. */
	float blk[16];
	uint16_t rb[16], gb[16];
	for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
		const tern_kernels *kt = tern_kernels_get((tern_kernel_path)p);
		if (!kt)
			continue;
		for (int64_t n = 0; n <= 40; n++)
			for (int64_t off = 0; off < 3; off++) {
				memset(got, 0xa5, 2 * N);
				kt->f16_row(x + off * 41, got, n);
				cr_assert_eq(memcmp(got, ref + off * 41, 2 * (size_t)n), 0, "%s n=%lld",
					     tern_kernel_path_name((tern_kernel_path)p), (long long)n);
				cr_assert_eq(got[n], 0xa5a5, "%s wrote past n=%lld",
					     tern_kernel_path_name((tern_kernel_path)p), (long long)n);
			}
		kt->f16_row(x, got, N);
		cr_assert_eq(memcmp(got, ref, 2 * N), 0, "%s", tern_kernel_path_name((tern_kernel_path)p));
		for (size_t si = 0; si < ns; si++)
			for (int lane = 0; lane < 16; lane++) {
				for (int i = 0; i < 16; i++)
					blk[i] = 0.1f * (float)(i + 1);
				memcpy(&blk[lane], &special[si], 4);
				tern_f16_row_scalar(blk, rb, 16);
				kt->f16_row(blk, gb, 16);
				cr_assert_eq(memcmp(gb, rb, sizeof rb), 0, "%s special %08x lane %d",
					     tern_kernel_path_name((tern_kernel_path)p), special[si], lane);
			}
	}
	/* The public entry and its argument checks. */
	tern_ctx *ctx = ctx_with(1, tern_kernel_detect());
	cr_assert_eq(tern_f32_to_f16_row(ctx, x, got, N), TERN_OK);
	cr_assert_eq(memcmp(got, ref, 2 * N), 0);
	cr_expect_eq(tern_f32_to_f16_row(NULL, x, got, N), TERN_E_INVALID);
	cr_expect_eq(tern_f32_to_f16_row(ctx, x, got, -1), TERN_E_INVALID);
	cr_expect_eq(tern_f32_to_f16_row(ctx, NULL, got, 1), TERN_E_INVALID);
	cr_expect_eq(tern_f32_to_f16_row(ctx, NULL, NULL, 0), TERN_OK);
	tern_ctx_free(ctx);
	free(x);
	free(ref);
	free(got);
}
