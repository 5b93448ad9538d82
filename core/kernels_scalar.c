/*
 * kernels_scalar.c: the plain C kernel table. It is the reference every
 * SIMD path is tested against, and the fallback on CPUs without one, so it
 * favours being obviously correct: codes are read one weight at a time in
 * the order the layout in include/tern/tensor.h defines.
 */
#include "core/kernels.h"
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

static const tern_kernels scalar_table = {
	.path = TERN_KERNEL_SCALAR,
	.t2_dot = t2_dot_scalar,
	.t3_dot = t3_dot_scalar,
	.i8_dot = i8_dot_scalar,
	.f32_dot = f32_dot_scalar,
	.f16_dot = f16_dot_scalar,
	.bf16_dot = bf16_dot_scalar,
};

const tern_kernels *tern_kernels_scalar(void)
{
	return &scalar_table;
}
