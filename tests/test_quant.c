/*
 * test_quant.c: ternarization (absmean and median; per tensor, row and
 * block), exact packing of ternary-valued floats, int8 absmax
 * activation quantization and the I4 block quantizer, each against an
 * independent computation in this file. Everything is compared exactly (no tolerance): the reference
 * evaluates the same float expressions in the same order (absmean sums
 * |x| in double, element by element), so any difference is a bug.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tern/tensor.h"
#include "testutil.h"

/* ---- int8 activations ---------------------------------------------------- */

static int8_t ref_q(float x, float amax, tern_actq_mode mode, tern_round_mode rnd)
{
	float v = mode == TERN_ACTQ_MUL ? x * (127.0f / amax) : x / (amax / 127.0f);
	float r = rnd == TERN_ROUND_EVEN ? nearbyintf(v) : roundf(v);
	if (r > 127.0f)
		r = 127.0f;
	if (r < -128.0f)
		r = -128.0f;
	return (int8_t)r;
}

Test(quant, i8_rows_match_reference_in_every_mode)
{
	tu_rng r = tu_rng_new(11);
	static const int64_t ns[] = { 1, 7, 31, 32, 33, 256, 1000, 2560 };
	for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
		for (int mode = 0; mode < 2; mode++)
			for (int rnd = 0; rnd < 2; rnd++) {
				int64_t n = ns[ni], kpad = (n + 159) / 160 * 160;
				float *x = malloc((size_t)n * sizeof *x);
				int8_t *q = malloc((size_t)kpad);
				float amax = 0.0f;
				for (int64_t i = 0; i < n; i++) {
					x[i] = tu_normal(&r) * 3.0f;
					amax = fmaxf(amax, fabsf(x[i]));
				}
				memset(q, 0x55, (size_t)kpad);
				float scale = -1.0f;
				tern_quantize_row_i8(x, n, kpad, (tern_actq_mode)mode,
						     (tern_round_mode)rnd, q, &scale);
				cr_assert_eq(scale, amax / 127.0f);
				for (int64_t i = 0; i < n; i++)
					cr_assert_eq(q[i], ref_q(x[i], amax, mode, rnd),
						     "n %lld mode %d round %d at %lld: x %a", (long long)n,
						     mode, rnd, (long long)i, (double)x[i]);
				for (int64_t i = n; i < kpad; i++)
					cr_assert_eq(q[i], 0);
				free(x);
				free(q);
			}
}

Test(quant, i8_rounding_modes_differ_on_ties)
{
	/* amax 127 makes the quantization step exactly 1. */
	float x[6] = { 127.0f, 0.5f, 2.5f, -0.5f, -1.5f, -127.0f };
	int8_t even[6] = { 127, 0, 2, 0, -2, -127 };
	int8_t away[6] = { 127, 1, 3, -1, -2, -127 };
	int8_t q[6];
	float s;
	for (int mode = 0; mode < 2; mode++) {
		tern_quantize_row_i8(x, 6, 6, (tern_actq_mode)mode, TERN_ROUND_EVEN, q, &s);
		cr_assert_arr_eq(q, even, 6);
		cr_assert_eq(s, 1.0f);
		tern_quantize_row_i8(x, 6, 6, (tern_actq_mode)mode, TERN_ROUND_AWAY, q, &s);
		cr_assert_arr_eq(q, away, 6);
	}
}

Test(quant, i8_zero_rows_and_extremes)
{
	float z[40] = { 0 };
	int8_t q[64];
	float s = 1.0f;
	memset(q, 7, sizeof q);
	tern_quantize_row_i8(z, 40, 64, TERN_ACTQ_MUL, TERN_ROUND_EVEN, q, &s);
	cr_assert_eq(s, 0.0f);
	for (int i = 0; i < 64; i++)
		cr_assert_eq(q[i], 0);
	/* The extreme always lands on +-127, never beyond: the values stay in
	 * [-127, 127] after clamping even when float rounding overshoots. */
	tu_rng r = tu_rng_new(12);
	for (int t = 0; t < 2000; t++) {
		float x[16];
		for (int i = 0; i < 16; i++)
			x[i] = tu_float(&r) * (float)tu_int(&r, 1, 1000000);
		x[t % 16] = -1e-3f * (float)(t + 1);
		for (int mode = 0; mode < 2; mode++) {
			tern_quantize_row_i8(x, 16, 16, (tern_actq_mode)mode, TERN_ROUND_AWAY, q, &s);
			int amax_i = 0;
			for (int i = 0; i < 16; i++) {
				cr_assert(q[i] >= -127 && q[i] <= 127);
				if (fabsf(x[i]) > fabsf(x[amax_i]))
					amax_i = i;
			}
			cr_assert_eq(abs(q[amax_i]), 127);
		}
	}
	/* A non-finite row quantizes to zeros instead of spreading NaN. */
	float bad[3] = { 1.0f, INFINITY, 2.0f };
	tern_quantize_row_i8(bad, 3, 3, TERN_ACTQ_DIV, TERN_ROUND_EVEN, q, &s);
	cr_assert_eq(s, 0.0f);
	cr_assert(q[0] == 0 && q[1] == 0 && q[2] == 0);
	float nan_row[3] = { 1.0f, NAN, 2.0f };
	q[0] = 5;
	tern_quantize_row_i8(nan_row, 3, 3, TERN_ACTQ_MUL, TERN_ROUND_AWAY, q, &s);
	cr_assert_eq(s, 0.0f);
	cr_assert(q[0] == 0 && q[1] == 0 && q[2] == 0);
}

/* ---- ternarization -------------------------------------------------------- */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* Reference scale of a span: mean (in double) or lower median (by sort). */
static float ref_span_scale(const float *x, int64_t n, tern_ternarize_method m)
{
	if (n == 0)
		return 0.0f;
	float *a = malloc((size_t)n * sizeof *a);
	double sum = 0.0;
	for (int64_t i = 0; i < n; i++) {
		a[i] = fabsf(x[i]);
		sum += a[i];
	}
	float s;
	if (m == TERN_TERNARIZE_MEDIAN) {
		qsort(a, (size_t)n, sizeof *a, cmp_float);
		s = a[(n - 1) / 2];
	} else {
		s = (float)(sum / (double)n);
	}
	free(a);
	return s;
}

static tern_qparams qp_of(int variant, int f16)
{
	tern_qparams q = { TERN_SCALE_TENSOR, 0, f16 ? TERN_DTYPE_F16 : TERN_DTYPE_F32 };
	if (variant == 1)
		q.kind = TERN_SCALE_ROW;
	if (variant >= 2) {
		q.kind = TERN_SCALE_BLOCK;
		q.block = variant == 2 ? 128 : 256;
	}
	return q;
}

static void check_ternarize(tern_dtype dt, tern_ternarize_method m, int variant, int f16,
			    int64_t rows, int64_t cols, tu_rng *r)
{
	tern_qparams q = qp_of(variant, f16);
	int64_t shape[2] = { rows, cols };
	tern_tensor *t;
	cr_assert_eq(tern_tensor_new(NULL, dt, &q, 2, shape, &t), TERN_OK);
	float *x = malloc((size_t)(rows * cols) * sizeof *x);
	for (int64_t i = 0; i < rows * cols; i++)
		x[i] = tu_normal(r) * 0.02f;
	/* One all-zero row exercises the zero-span rule. */
	if (rows > 2)
		memset(x + cols, 0, (size_t)cols * sizeof *x);
	cr_assert_eq(tern_ternarize(NULL, x, m, t), TERN_OK);

	int8_t *w = malloc((size_t)cols);
	for (int64_t i = 0; i < rows; i++) {
		tern_type_traits_of(dt)->row_to_i8((uint8_t *)t->data + (size_t)i * tern_row_bytes(dt, cols),
						   w, cols);
		for (int64_t c = 0; c < cols; c++) {
			int64_t c0 = 0, n = cols;
			const float *span = x + i * cols;
			if (variant == 0) {
				span = x;
				n = rows * cols;
			} else if (variant >= 2) {
				c0 = c / q.block * q.block;
				n = (c0 + q.block < cols ? c0 + q.block : cols) - c0;
			}
			float s = ref_span_scale(span + c0, n, m);
			float stored = f16 ? tern_f16_to_f32(tern_f32_to_f16(s)) : s;
			cr_assert_eq(tern_tensor_scale_at(t, i, c), stored, "%s m%d v%d f16 %d at %lld,%lld",
				     tern_dtype_name(dt), m, variant, f16, (long long)i, (long long)c);
			int want = 0;
			if (s != 0.0f) {
				float v = nearbyintf(x[i * cols + c] / s);
				want = v > 1.0f ? 1 : v < -1.0f ? -1 : (int)v;
			}
			cr_assert_eq(w[c], want, "%s m%d v%d at %lld,%lld", tern_dtype_name(dt), m,
				     variant, (long long)i, (long long)c);
		}
	}
	free(w);
	free(x);
	tern_tensor_free(t);
}

Test(quant, ternarize_matches_reference_for_every_span_kind)
{
	tu_rng r = tu_rng_new(13);
	static const int64_t cols[] = { 1, 100, 256, 300, 1152 };
	for (int dt = 0; dt < 2; dt++)
		for (int m = 0; m < 2; m++)
			for (int variant = 0; variant < 4; variant++)
				for (int f16 = 0; f16 < 2; f16++)
					for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
						check_ternarize(dt ? TERN_DTYPE_T3 : TERN_DTYPE_T2,
								(tern_ternarize_method)m, variant, f16,
								1 + (int64_t)ci % 4, cols[ci], &r);
}

Test(quant, ternarize_small_example_by_hand)
{
	/* mean|W| = (0.1 + 0.4 + 0.05 + 0.9) / 4 = 0.3625; W/s = 0.28, -1.10,
	 * 0.14, 2.48 -> 0, -1, 0, 1. Median (lower) of 0.05 0.1 0.4 0.9 = 0.1:
	 * W/s = 1, -4, 0.5, 9 -> 1, -1, 0 (tie to even), 1. */
	float x[4] = { 0.1f, -0.4f, 0.05f, 0.9f };
	tern_qparams q = { TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32 };
	int64_t shape[2] = { 1, 4 };
	tern_tensor *t;
	int8_t w[4];
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_T2, &q, 2, shape, &t), TERN_OK);
	cr_assert_eq(tern_ternarize(NULL, x, TERN_TERNARIZE_ABSMEAN, t), TERN_OK);
	cr_assert_float_eq(tern_tensor_scale_at(t, 0, 0), 0.3625f, 1e-7f);
	tern_type_traits_of(TERN_DTYPE_T2)->row_to_i8(t->data, w, 4);
	cr_assert(w[0] == 0 && w[1] == -1 && w[2] == 0 && w[3] == 1);
	cr_assert_eq(tern_ternarize(NULL, x, TERN_TERNARIZE_MEDIAN, t), TERN_OK);
	cr_assert_eq(tern_tensor_scale_at(t, 0, 0), 0.1f);
	tern_type_traits_of(TERN_DTYPE_T2)->row_to_i8(t->data, w, 4);
	cr_assert(w[0] == 1 && w[1] == -1 && w[2] == 0 && w[3] == 1, "%d %d %d %d", w[0], w[1],
		  w[2], w[3]);
	tern_tensor_free(t);
}

Test(quant, ternarize_rejects_bad_input)
{
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	tern_qparams q = { TERN_SCALE_ROW, 0, TERN_DTYPE_F16 };
	int64_t shape[2] = { 2, 3 };
	tern_tensor *t, *f;
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_T3, &q, 2, shape, &t), TERN_OK);
	float x[6] = { 1, 2, 3, 4, NAN, 6 };
	cr_assert_eq(tern_ternarize(ctx, x, TERN_TERNARIZE_ABSMEAN, t), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "row 1, column 1") != NULL, "%s", tern_ctx_errmsg(ctx));
	float big[6] = { 1e6f, 1e6f, 1e6f, 1, 1, 1 };
	cr_assert_eq(tern_ternarize(ctx, big, TERN_TERNARIZE_ABSMEAN, t), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "f16") != NULL, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_ternarize(ctx, x, (tern_ternarize_method)7, t), TERN_E_INVALID);
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_F32, NULL, 2, shape, &f), TERN_OK);
	cr_assert_eq(tern_ternarize(ctx, big, TERN_TERNARIZE_ABSMEAN, f), TERN_E_INVALID);
	t->nbytes--;
	cr_assert_eq(tern_ternarize(ctx, big, TERN_TERNARIZE_ABSMEAN, t), TERN_E_INVALID);
	t->nbytes++;
	tern_tensor_free(t);
	tern_tensor_free(f);
	tern_ctx_free(ctx);
}

Test(quant, pack_exact_rejects_values_that_are_not_ternary)
{
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	tern_qparams q = { TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16 };
	int64_t shape[2] = { 1, 200 };
	tern_tensor *t;
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_T2, &q, 2, shape, &t), TERN_OK);
	float x[200] = { 0 };
	x[3] = 0.5f;
	x[7] = -0.5f;
	x[150] = 0.25f;
	cr_assert_eq(tern_pack_ternary_exact(ctx, x, t), TERN_OK);
	cr_assert_eq(tern_tensor_scale_at(t, 0, 0), 0.5f);
	cr_assert_eq(tern_tensor_scale_at(t, 0, 199), 0.25f);
	x[9] = 0.25f; /* a second magnitude in block 0 */
	cr_assert_eq(tern_pack_ternary_exact(ctx, x, t), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "column 9") != NULL, "%s", tern_ctx_errmsg(ctx));
	x[9] = 0.0f;
	x[150] = 0.1f; /* ternary, but 0.1 has no exact f16 */
	cr_assert_eq(tern_pack_ternary_exact(ctx, x, t), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "f16") != NULL, "%s", tern_ctx_errmsg(ctx));
	tern_tensor_free(t);
	tern_ctx_free(ctx);
}

/* ---- I4 -------------------------------------------------------------------- */

/* Squared error of x [len] coded as q (unpacked from codes) times d. */
static double i4_err(const float *x, int64_t len, const uint8_t *codes, float d)
{
	double e = 0;
	for (int64_t j = 0; j < len; j++) {
		uint8_t b = codes[j % 64];
		int q = (j < 64 ? b & 15 : b >> 4) - 8;
		double diff = (double)x[j] - q * (double)d;
		e += diff * diff;
	}
	return e;
}

static float i4_scale_at(const void *scales, int f16, int64_t b)
{
	if (f16) {
		uint16_t h;
		memcpy(&h, (const uint8_t *)scales + 2 * b, 2);
		return tern_f16_to_f32(h);
	}
	float f;
	memcpy(&f, (const uint8_t *)scales + 4 * b, 4);
	return f;
}

Test(quant, i4_blocks_pick_the_least_error_candidate_never_worse_than_absmax)
{
	tu_rng r = tu_rng_new(41);
	static const int64_t ns[] = { 1, 5, 127, 128, 129, 300, 2560 };
	int wins = 0, blocks = 0;
	for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
		for (int f16 = 0; f16 < 2; f16++)
			for (int rep = 0; rep < 4; rep++) {
				int64_t n = ns[ni], nb = (n + 127) / 128;
				float *x = malloc(sizeof(float) * (size_t)n);
				for (int64_t j = 0; j < n; j++)
					x[j] = tu_normal(&r) * (rep == 3 ? 1e-3f : 0.05f);
				uint8_t *codes = malloc((size_t)(nb * 64));
				uint8_t scales[4 * 32];
				memset(codes, 0x11, (size_t)(nb * 64));
				cr_assert_eq(tern_quantize_row_i4(x, n,
								  f16 ? TERN_DTYPE_F16 : TERN_DTYPE_F32,
								  codes, scales),
					     TERN_OK);
				for (int64_t b = 0; b < nb; b++) {
					const float *xb = x + b * 128;
					int64_t len = n - b * 128 < 128 ? n - b * 128 : 128;
					float m = 0;
					for (int64_t j = 0; j < len; j++)
						m = fmaxf(m, fabsf(xb[j]));
					float d = i4_scale_at(scales, f16, b);
					/* Recompute every candidate independently: the
					 * stored codes must be the rounding of x / d, and
					 * no candidate may do better. */
					double best = INFINITY;
					int besti = -1;
					for (int i = 0; i <= 10; i++) {
						float di = (float)((double)m * (50 - i) / 350.0);
						if (f16)
							di = tern_f16_to_f32(tern_f32_to_f16(di));
						double e = 0;
						for (int64_t j = 0; j < len; j++) {
							double q = nearbyint((double)xb[j] / di);
							q = q < -7 ? -7 : q > 7 ? 7 : q;
							double diff = xb[j] - q * (double)di;
							e += diff * diff;
						}
						if (e < best) {
							best = e;
							besti = i;
						}
					}
					double got = i4_err(xb, len, codes + b * 64, d);
					cr_assert_eq(got, best, "n=%lld block %lld: %g vs best %g", (long long)n,
						     (long long)b, got, best);
					float d0 = (float)((double)m / 7.0);
					if (f16)
						d0 = tern_f16_to_f32(tern_f32_to_f16(d0));
					/* The absmax / 7 candidate's own error bounds it. */
					double e0 = 0;
					for (int64_t j = 0; j < len; j++) {
						double q = nearbyint((double)xb[j] / d0);
						q = q < -7 ? -7 : q > 7 ? 7 : q;
						double diff = xb[j] - q * (double)d0;
						e0 += diff * diff;
					}
					cr_assert(got <= e0);
					wins += besti > 0;
					blocks++;
					/* Codes are in [-7, 7] and the pad is q = 0. */
					for (int64_t j = 0; j < 128; j++) {
						uint8_t c = (j < 64 ? codes[b * 64 + j] & 15
								    : codes[b * 64 + j % 64] >> 4);
						cr_assert(c >= 1 && c <= 15);
						if (j >= len)
							cr_assert_eq(c, 8, "pad nibble %lld", (long long)j);
					}
				}
				free(x);
				free(codes);
			}
	/* On Gaussian data a shrunk scale wins most blocks of 128: the search
	 * is doing something. */
	cr_assert(wins * 2 > blocks, "%d of %d blocks", wins, blocks);
}

/* The residual row: computed independently from the plain row's codes
 * and scales (unpacked here), it must be what tern_quantize_row_i4 makes
 * of x - hi, and hi + res must hold every weight to 0.2 max|x - hi| of
 * its block (+ f16 rounding of the scale): the bound of the 4-bit
 * quantizer itself, applied to the residual. */
Test(quant, i4_residual_is_the_quantized_rounding_error_of_the_plain_row)
{
	tu_rng r = tu_rng_new(43);
	static const int64_t ns[] = { 1, 127, 128, 129, 300, 2560 };
	for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
		for (int f16 = 0; f16 < 2; f16++) {
			const tern_dtype st = f16 ? TERN_DTYPE_F16 : TERN_DTYPE_F32;
			int64_t n = ns[ni], nb = (n + 127) / 128;
			float *x = malloc(sizeof(float) * (size_t)n);
			float *want_r = malloc(sizeof(float) * (size_t)n);
			float *work = malloc(sizeof(float) * (size_t)n);
			uint8_t *hi = malloc((size_t)(nb * 64)), *res = malloc((size_t)(nb * 64));
			uint8_t *want = malloc((size_t)(nb * 64));
			uint8_t hs[4 * 32], rs[4 * 32], ws[4 * 32];
			for (int64_t j = 0; j < n; j++)
				x[j] = tu_normal(&r) * 0.05f;
			cr_assert_eq(tern_quantize_row_i4(x, n, st, hi, hs), TERN_OK);
			cr_assert_eq(tern_quantize_row_i4_residual(x, n, st, res, rs, work), TERN_OK);
			for (int64_t j = 0; j < n; j++) {
				uint8_t b = hi[(j / 128) * 64 + j % 64];
				int q = ((j % 128) < 64 ? b & 15 : b >> 4) - 8;
				want_r[j] = x[j] - (float)q * i4_scale_at(hs, f16, j / 128);
			}
			cr_assert_eq(tern_quantize_row_i4(want_r, n, st, want, ws), TERN_OK);
			cr_assert_arr_eq(res, want, (size_t)(nb * 64), "n=%lld codes", (long long)n);
			cr_assert_arr_eq(rs, ws, (size_t)(nb * (f16 ? 2 : 4)), "n=%lld scales",
					 (long long)n);
			double e_hi = 0, e_sum = 0; /* sums of squares */
			for (int64_t b = 0; b < nb; b++) {
				int64_t len = n - b * 128 < 128 ? n - b * 128 : 128;
				float rmax = 0;
				for (int64_t j = 0; j < len; j++)
					rmax = fmaxf(rmax, fabsf(want_r[b * 128 + j]));
				for (int64_t j = 0; j < len; j++) {
					const int64_t k = b * 128 + j;
					uint8_t c = res[b * 64 + j % 64];
					int q = (j < 64 ? c & 15 : c >> 4) - 8;
					float got = (float)q * i4_scale_at(rs, f16, b);
					cr_assert_leq(fabsf(want_r[k] - got), 0.201f * rmax + 1e-12f,
						      "n=%lld weight %lld", (long long)n, (long long)k);
					e_hi += (double)want_r[k] * want_r[k];
					e_sum += ((double)want_r[k] - got) * ((double)want_r[k] - got);
				}
			}
			/* In RMS the residual leaves well under a fifth of the
			 * plain row's error (about 1/14 on Gaussian data). */
			cr_assert_leq(sqrt(e_sum), sqrt(e_hi) / 5, "n=%lld: rms %g left of %g",
				      (long long)n, sqrt(e_sum / n), sqrt(e_hi / n));
			free(x);
			free(want_r);
			free(work);
			free(hi);
			free(res);
			free(want);
		}
	float x[3] = { 1, 2, 3 }, w[3];
	uint8_t c[64], sc[4];
	cr_assert_eq(tern_quantize_row_i4_residual(x, 3, TERN_DTYPE_F32, c, sc, NULL), TERN_E_INVALID);
	x[1] = NAN;
	cr_assert_eq(tern_quantize_row_i4_residual(x, 3, TERN_DTYPE_F32, c, sc, w), TERN_E_INVALID);
}

Test(quant, i4_zero_blocks_bad_input_and_the_tensor_form)
{
	float x[200] = { 0 };
	uint8_t codes[128], scales[8];
	x[150] = -3.5f;
	cr_assert_eq(tern_quantize_row_i4(x, 200, TERN_DTYPE_F32, codes, scales), TERN_OK);
	for (int j = 0; j < 64; j++)
		cr_assert_eq(codes[j], 0x88, "zero block byte %d", j);
	cr_assert_eq(i4_scale_at(scales, 0, 0), 0.0f);
	/* One value: absmax / 7 codes it exactly as -7; no smaller scale can
	 * do better, so the first candidate stays. */
	cr_assert_eq(i4_scale_at(scales, 0, 1), 0.5f);
	cr_assert_eq(codes[64 + (150 - 128)] & 15, 1); /* q = -7 */
	x[3] = NAN;
	cr_assert_eq(tern_quantize_row_i4(x, 200, TERN_DTYPE_F32, codes, scales), TERN_E_INVALID);
	x[3] = 1e6f; /* 1e6 / 7 overflows f16 */
	cr_assert_eq(tern_quantize_row_i4(x, 200, TERN_DTYPE_F16, codes, scales), TERN_E_INVALID);
	cr_assert_eq(tern_quantize_row_i4(x, 200, TERN_DTYPE_I8, codes, scales), TERN_E_INVALID);

	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	tern_qparams q = { TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16 };
	int64_t shape[2] = { 2, 200 };
	tern_tensor *t;
	cr_assert_eq(tern_tensor_new(ctx, TERN_DTYPE_I4, &q, 2, shape, &t), TERN_OK);
	float src[400];
	tu_rng r = tu_rng_new(42);
	for (int i = 0; i < 400; i++)
		src[i] = tu_normal(&r);
	cr_assert_eq(tern_quantize_i4(ctx, src, t), TERN_OK);
	/* Dequantized through the dtype's traits, every value is within half
	 * a step of its block's scale, or clipped at 7 steps. */
	float y[200];
	for (int64_t row = 0; row < 2; row++) {
		tern_tensor_row_to_float(t, row, y);
		for (int64_t c = 0; c < 200; c++) {
			float d = tern_tensor_scale_at(t, row, c), v = src[row * 200 + c];
			cr_assert(fabsf(y[c] - v) <= 0.5f * d * 1.0001f || fabsf(y[c]) == 7 * d,
				  "row %lld col %lld: %g for %g (scale %g)", (long long)row,
				  (long long)c, y[c], v, d);
		}
	}
	src[333] = INFINITY;
	cr_assert_eq(tern_quantize_i4(ctx, src, t), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "row 1") != NULL, "%s", tern_ctx_errmsg(ctx));
	tern_tensor_free(t);
	tern_ctx_free(ctx);
}
