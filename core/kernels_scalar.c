/*
 * kernels_scalar.c: the plain C kernel table. It is the reference every
 * SIMD path is tested against, and the fallback on CPUs without one, so it
 * favours being obviously correct: codes are read one weight at a time in
 * the order the layout in include/tern/tensor.h defines.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/kernels.h"
#include "core/vecf.h"
#include "tern/ops.h"
#include "tern/tensor.h"

/* Stored code of weight m + p*G of a group whose bytes start at `bytes`. */
static unsigned t2_code(const uint8_t *bytes, int p, int64_t m)
{
	return (bytes[m] >> (2 * p)) & 3u;
}

static unsigned t3_code(const uint8_t *bytes, int p, int64_t m)
{
	unsigned q = bytes[m];
	for (int i = 0; i < p; i++)
		q = (q * 3u) & 0xffu;
	return (q * 3u) >> 8;
}

/*
 * One row x one token. Walks the groups of the row (full groups of 64
 * bytes, then an optional half group of 32) and, inside a group, the P
 * slices of G consecutive weights; weight j adds into block j / blk.
 */
static void tdot_one(const uint8_t *w, const int8_t *a, int64_t kpad, int64_t blk, int per_byte,
		     unsigned (*code)(const uint8_t *, int, int64_t), int32_t *out)
{
	int64_t nb = (kpad + blk - 1) / blk;
	for (int64_t b = 0; b < nb; b++)
		out[b] = 0;
	int64_t full = kpad / (64 * per_byte) * (64 * per_byte);
	int64_t j0 = 0;
	while (j0 < kpad) {
		int64_t g = j0 < full ? 64 : 32;
		const uint8_t *bytes = w + j0 / per_byte;
		for (int p = 0; p < per_byte; p++) {
			for (int64_t m = 0; m < g; m++) {
				int64_t j = j0 + p * g + m;
				out[j / blk] += (int32_t)code(bytes, p, m) * a[j];
			}
		}
		j0 += g * per_byte;
	}
}

static void t2_dot_scalar(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			  size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out)
{
	int64_t nb = (kpad + blk - 1) / blk;
	for (int64_t r = 0; r < nrows; r++)
		for (int64_t t = 0; t < ntok; t++)
			tdot_one(w + r * w_stride, a + t * a_stride, kpad, blk, 4, t2_code,
				 out + (r * ntok + t) * nb);
}

static void t3_dot_scalar(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			  size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out)
{
	int64_t nb = (kpad + blk - 1) / blk;
	for (int64_t r = 0; r < nrows; r++)
		for (int64_t t = 0; t < ntok; t++)
			tdot_one(w + r * w_stride, a + t * a_stride, kpad, blk, 5, t3_code,
				 out + (r * ntok + t) * nb);
}

static void i8_dot_scalar(const int8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			  size_t a_stride, int64_t ntok, int64_t k, int32_t *out)
{
	for (int64_t r = 0; r < nrows; r++) {
		for (int64_t t = 0; t < ntok; t++) {
			const int8_t *wr = w + r * w_stride;
			const int8_t *at = a + t * a_stride;
			int32_t s = 0;
			for (int64_t j = 0; j < k; j++)
				s += (int32_t)wr[j] * at[j];
			out[r * ntok + t] = s;
		}
	}
}

/* Scale g of a row of I4 scales. */
static float i4_scale(const void *s, bool f16, int64_t g)
{
	const uint8_t *p = s;
	if (f16) {
		uint16_t h;
		memcpy(&h, p + 2 * g, 2);
		return tern_f16_to_f32(h);
	}
	float f;
	memcpy(&f, p + 4 * g, 4);
	return f;
}

/* Each group's exact integer sum, then one float multiply-add per group
 * in group order. */
static void i4_dot_scalar(const uint8_t *w, size_t w_stride, const void *scales, size_t s_stride,
			  bool f16, int64_t nrows, const int8_t *a, size_t a_stride,
			  const int32_t *bsum, int64_t ntok, int64_t kpad, float *out)
{
	(void)bsum;
	const int64_t ng = kpad / 128;
	for (int64_t r = 0; r < nrows; r++) {
		const uint8_t *wr = w + r * w_stride;
		const void *sr = (const uint8_t *)scales + r * s_stride;
		for (int64_t t = 0; t < ntok; t++) {
			const int8_t *at = a + t * a_stride;
			float acc = 0.0f;
			for (int64_t g = 0; g < ng; g++) {
				const uint8_t *bytes = wr + 64 * g;
				const int8_t *ag = at + 128 * g;
				int32_t raw = 0;
				for (int m = 0; m < 64; m++) {
					raw += ((int32_t)(bytes[m] & 15) - 8) * ag[m];
					raw += ((int32_t)(bytes[m] >> 4) - 8) * ag[64 + m];
				}
				acc += (float)raw * i4_scale(sr, f16, g);
			}
			out[r * ntok + t] = acc;
		}
	}
}

/* Float dots: one float accumulator, weights converted one at a time. */
#define FDOT_SCALAR(name, wtype, conv)                                                       \
	static void name(const void *w, size_t w_stride, int64_t nrows, const float *x,       \
			 int64_t ldx, int64_t ntok, int64_t k, float *y, int64_t ldy)          \
	{                                                                                      \
		for (int64_t r = 0; r < nrows; r++) {                                          \
			const wtype *wr = (const wtype *)((const char *)w + r * w_stride);     \
			for (int64_t t = 0; t < ntok; t++) {                                   \
				const float *xt = x + t * ldx;                                 \
				float s = 0.0f;                                                \
				for (int64_t j = 0; j < k; j++)                                \
					s += conv(wr[j]) * xt[j];                              \
				y[t * ldy + r] = s;                                            \
			}                                                                      \
		}                                                                              \
	}

static float f32_id(float v)
{
	return v;
}

FDOT_SCALAR(f32_dot_scalar, float, f32_id)
FDOT_SCALAR(f16_dot_scalar, uint16_t, tern_f16_to_f32)
FDOT_SCALAR(bf16_dot_scalar, uint16_t, tern_bf16_to_f32)

void tern_quant_row_scalar(const float *x, int64_t n, int64_t kpad, int8_t *q, float *scale,
			   int32_t *csum, int32_t *sum)
{
	tern_quantize_row_i8(x, n, kpad, TERN_ACTQ_MUL, TERN_ROUND_EVEN, q, scale);
	tern_quant_row_sums(q, kpad, csum, sum);
}

void tern_quant_row_sums(const int8_t *q, int64_t kpad, int32_t *csum, int32_t *sum)
{
	int64_t nc = kpad / 32;
	int32_t total = 0;
	for (int64_t c = 0; c < nc; c++) {
		int32_t s = 0;
		for (int i = 0; i < 32; i++)
			s += q[c * 32 + i];
		csum[c] = s;
		total += s;
	}
	for (int64_t i = nc * 32; i < kpad; i++)
		total += q[i];
	*sum = total;
}

/* ---- int8 activations -------------------------------------------------- */

/* Ties to even without a libm call: adding 1.5 * 2^23 pushes the fraction
 * out of a float's mantissa, so the default rounding mode does the work.
 * Valid for |v| < 2^22 (callers clamp to [-128, 127] first) and only where
 * floats are evaluated in float precision. */
static inline float round_even_small(float v)
{
#if FLT_EVAL_METHOD == 0
	const float magic = 12582912.0f;
	float t = v + magic;
	return t - magic;
#else
	return nearbyintf(v);
#endif
}

/* Ties away from zero, exact for |v| < 2^23 (roundf's rule without
 * the libm call). */
static inline float round_away_small(float v)
{
	float t = (float)(int32_t)v;
	float frac = v - t;
	if (frac >= 0.5f)
		t += 1.0f;
	else if (frac <= -0.5f)
		t -= 1.0f;
	return t;
}

/* One loop per (mode, rounding) pair so the compiler sees straight-line
 * code; the values are finite here (the caller screened amax). */
#define QUANT_LOOP(EXPR, ROUND)                                                   \
	for (int64_t i = 0; i < n; i++) {                                         \
		float v = (EXPR);                                                 \
		v = v < -128.0f ? -128.0f : v > 127.0f ? 127.0f : v;              \
		q[i] = (int8_t)ROUND(v);                                          \
	}

void tern_quantize_row_i8(const float *x, int64_t n, int64_t kpad, tern_actq_mode mode,
			  tern_round_mode round, int8_t *q, float *scale)
{
	float amax = 0.0f;
	for (int64_t i = 0; i < n; i++) {
		float a = fabsf(x[i]);
		/* A NaN element makes amax NaN, caught below. */
		amax = (a > amax || a != a) ? a : amax;
	}
	if (kpad > n)
		memset(q + n, 0, (size_t)(kpad - n));
	if (!(amax > 0.0f) || !isfinite(amax)) {
		/* All zero (or poisoned by inf/NaN): a zero row keeps the
		 * integer dot products meaningful instead of propagating NaN. */
		if (n > 0)
			memset(q, 0, (size_t)n);
		*scale = 0.0f;
		return;
	}
	const float d = amax / 127.0f;
	const float id = 127.0f / amax;
	if (mode == TERN_ACTQ_MUL && round == TERN_ROUND_EVEN)
		QUANT_LOOP(x[i] * id, round_even_small)
	else if (mode == TERN_ACTQ_MUL)
		QUANT_LOOP(x[i] * id, round_away_small)
	else if (round == TERN_ROUND_EVEN)
		QUANT_LOOP(x[i] / d, round_even_small)
	else
		QUANT_LOOP(x[i] / d, round_away_small)
	*scale = d;
}

/* ---- attention -------------------------------------------------------- */

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

void tern_attn_head_scalar(const float *q, const float *k, const float *v, int64_t kvs,
			   int64_t nk, int64_t hd, float scale, float *s, float *out)
{
	/* Scale after the dot, as llama.cpp scales KQ. */
	for (int64_t j = 0; j < nk; j++)
		s[j] = tern_vec_dot(q, k + j * kvs, hd) * scale;
	tern_softmax(s, nk);

	/* q is fully consumed; writing out may now begin. */
	memset(out, 0, (size_t)hd * sizeof(float));
	for (int64_t j = 0; j < nk; j++)
		axpy(out, s[j], v + j * kvs, hd);
}

/* One head over an f16 cache: each dot and each output element summed in
 * order, in float, from the converted values. */
static void attn_head_f16_scalar(const float *q, const uint16_t *k, const uint16_t *v,
				 int64_t kvs, int64_t nk, int64_t hd, float scale, float *s,
				 float *out)
{
	for (int64_t j = 0; j < nk; j++) {
		float d = 0.0f;
		for (int64_t i = 0; i < hd; i++)
			d += q[i] * tern_f16_to_f32(k[j * kvs + i]);
		s[j] = d * scale;
	}
	tern_softmax(s, nk);
	for (int64_t i = 0; i < hd; i++) {
		float o = 0.0f;
		for (int64_t j = 0; j < nk; j++)
			o += s[j] * tern_f16_to_f32(v[j * kvs + i]);
		out[i] = o;
	}
}

void tern_f16_row_scalar(const float *x, uint16_t *y, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = tern_f32_to_f16(x[i]);
}

void tern_attn_scalar(const float *q, int64_t G, const void *k, const void *v, bool kv_f16,
		      int64_t kvs, int64_t nk, int64_t hd, float scale, float *s, float *out)
{
	for (int64_t g = 0; g < G; g++) {
		if (kv_f16)
			attn_head_f16_scalar(q + g * hd, k, v, kvs, nk, hd, scale, s, out + g * hd);
		else
			tern_attn_head_scalar(q + g * hd, k, v, kvs, nk, hd, scale, s,
					      out + g * hd);
	}
}

static const tern_kernels scalar_table = {
	.path = TERN_KERNEL_SCALAR,
	.t2_dot = t2_dot_scalar,
	.t3_dot = t3_dot_scalar,
	.i8_dot = i8_dot_scalar,
	.i4_dot = i4_dot_scalar,
	.f32_dot = f32_dot_scalar,
	.f16_dot = f16_dot_scalar,
	.bf16_dot = bf16_dot_scalar,
	.quant_row = tern_quant_row_scalar,
	.attn = tern_attn_scalar,
	.f16_row = tern_f16_row_scalar,
};

const tern_kernels *tern_kernels_scalar(void)
{
	return &scalar_table;
}
