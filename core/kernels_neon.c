/*
 * kernels_neon.c: the AArch64 kernel path (NEON with the dotprod extension).
 * Ternary codes are unpacked one plane at a time (16 bytes give 16
 * consecutive weights, see include/tern/tensor.h) into bytes 0..2 and fed
 * to SDOT against the int8 activations, so the raw sums use the stored
 * codes exactly as the scalar reference does and match it bit for bit.
 * Up to TILE tokens share each unpacked plane, which is what makes the
 * GEMM (prefill) case cheaper per token than repeated GEMVs.
 */
#if !defined(__aarch64__) || !defined(__ARM_FEATURE_DOTPROD)
#error "kernels_neon.c needs AArch64 with dotprod (-march=armv8.2-a+dotprod)"
#endif

#include <arm_neon.h>
#include <string.h>

#include "core/kernels.h"
#include "tern/ops.h"

#define INLINE static inline __attribute__((always_inline))
/* Tile loops must unroll fully so accumulators live in registers. */
#define UNROLL _Pragma("GCC unroll 8")

#define FAM_T2 0
#define FAM_T3 1
/* Tokens per pass over a weight row: 2 accumulators per token plus the
 * unpacked codes stay well inside the 32 vector registers. */
#define TILE 4

/* ---- ternary ---------------------------------------------------------- */

/* Codes of plane p from 16 packed bytes. T2: bits 2p..2p+1. T3: trit p is
 * (q * 3) >> 8 with q = b * 3^p mod 256; (q + (q >> 1)) >> 7 equals it
 * (floor of a floor) and the halving add keeps it within 8 bits. */
INLINE int8x16_t plane_codes(uint8x16_t b, int fam, int p)
{
	if (fam == FAM_T2) {
		uint8x16_t s = vshlq_u8(b, vdupq_n_s8((int8_t)(-2 * p)));
		return vreinterpretq_s8_u8(vandq_u8(s, vdupq_n_u8(3)));
	}
	static const uint8_t pow3[5] = { 1, 3, 9, 27, 81 };
	uint8x16_t q = vmulq_u8(b, vdupq_n_u8(pow3[p]));
	return vreinterpretq_s8_u8(vshrq_n_u8(vhaddq_u8(q, vshrq_n_u8(q, 1)), 6));
}

/* Running state of one row against a tile of tokens: two accumulators per
 * token (two independent SDOT chains), the current scale block and where
 * it ends. */
typedef struct tdot_state {
	int32x4_t acc0[TILE], acc1[TILE];
	int64_t b, bend, blk;
	int32_t *out[TILE]; /* out[t][b] is token t's block b of this row */
} tdot_state;

INLINE void tdot_flush(tdot_state *st, int nt)
{
	UNROLL
	for (int t = 0; t < nt; t++) {
		st->out[t][st->b] = vaddvq_s32(vaddq_s32(st->acc0[t], st->acc1[t]));
		st->acc0[t] = vdupq_n_s32(0);
		st->acc1[t] = vdupq_n_s32(0);
	}
}

/* One group of G bytes (64 full, 32 half) whose first weight is j. Scale
 * blocks are multiples of 32 weights, so a 32-weight chunk never straddles
 * two of them. */
INLINE void tdot_group(tdot_state *st, const uint8_t *wg, int G, int fam, int nt,
		       const int8_t *const *at, int64_t j)
{
	const int P = fam == FAM_T2 ? 4 : 5;
	UNROLL
	for (int p = 0; p < P; p++) {
		UNROLL
		for (int c = 0; c < G / 32; c++) {
			int64_t jj = j + (int64_t)p * G + 32 * c;
			if (jj >= st->bend) {
				tdot_flush(st, nt);
				st->b++;
				st->bend += st->blk;
			}
			int8x16_t c0 = plane_codes(vld1q_u8(wg + 32 * c), fam, p);
			int8x16_t c1 = plane_codes(vld1q_u8(wg + 32 * c + 16), fam, p);
			UNROLL
			for (int t = 0; t < nt; t++) {
				st->acc0[t] = vdotq_s32(st->acc0[t], c0, vld1q_s8(at[t] + jj));
				st->acc1[t] = vdotq_s32(st->acc1[t], c1, vld1q_s8(at[t] + jj + 16));
			}
		}
	}
}

/* One row against nt tokens (nt a constant after inlining). */
INLINE void tdot_row(const uint8_t *w, const int8_t *const *at, int32_t *const *ot, int nt,
		     int64_t kpad, int64_t blk, int fam)
{
	const int64_t full = fam == FAM_T2 ? 256 : 320;
	const int64_t half = full / 2;
	tdot_state st;
	UNROLL
	for (int t = 0; t < TILE; t++) {
		st.acc0[t] = vdupq_n_s32(0);
		st.acc1[t] = vdupq_n_s32(0);
		st.out[t] = t < nt ? ot[t] : 0;
	}
	st.b = 0;
	st.bend = blk;
	st.blk = blk;
	int64_t j = 0;
	for (; j + full <= kpad; j += full, w += 64)
		tdot_group(&st, w, 64, fam, nt, at, j);
	if (j + half <= kpad)
		tdot_group(&st, w, 32, fam, nt, at, j);
	tdot_flush(&st, nt);
}

INLINE void tdot_tile(const uint8_t *w, int64_t kpad, int64_t blk, int64_t nb, int fam,
		      const int8_t *a, size_t a_stride, int64_t t0, int nt, int64_t ntok,
		      int64_t r, int32_t *out)
{
	const int8_t *at[TILE];
	int32_t *ot[TILE];
	UNROLL
	for (int t = 0; t < nt; t++) {
		at[t] = a + (size_t)(t0 + t) * a_stride;
		ot[t] = out + ((r * ntok + t0 + t) * nb);
	}
	tdot_row(w, at, ot, nt, kpad, blk, fam);
}

INLINE void tdot(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
		 size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out, int fam)
{
	if (blk <= 0 || blk > kpad)
		blk = kpad;
	if (blk % 32 != 0 && blk != kpad) {
		/* A block edge inside a 32-weight chunk: no layout produces
		 * this, but the contract allows it, so the reference serves. */
		const tern_kernels *ref = tern_kernels_scalar();
		(fam == FAM_T2 ? ref->t2_dot : ref->t3_dot)(w, w_stride, nrows, a, a_stride, ntok,
							    kpad, blk, out);
		return;
	}
	const int64_t nb = (kpad + blk - 1) / blk;
	for (int64_t r = 0; r < nrows; r++) {
		const uint8_t *wr = w + (size_t)r * w_stride;
		int64_t t0 = 0;
		for (; t0 + TILE <= ntok; t0 += TILE)
			tdot_tile(wr, kpad, blk, nb, fam, a, a_stride, t0, TILE, ntok, r, out);
		switch (ntok - t0) {
		case 3: tdot_tile(wr, kpad, blk, nb, fam, a, a_stride, t0, 3, ntok, r, out); break;
		case 2: tdot_tile(wr, kpad, blk, nb, fam, a, a_stride, t0, 2, ntok, r, out); break;
		case 1: tdot_tile(wr, kpad, blk, nb, fam, a, a_stride, t0, 1, ntok, r, out); break;
		default: break;
		}
	}
}

static void neon_t2_dot(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out)
{
	tdot(w, w_stride, nrows, a, a_stride, ntok, kpad, blk, out, FAM_T2);
}

static void neon_t3_dot(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out)
{
	tdot(w, w_stride, nrows, a, a_stride, ntok, kpad, blk, out, FAM_T3);
}

/* ---- 4-bit x int8 ----------------------------------------------------- */

/* Scale g of a row (f16 or f32) as a float. */
INLINE float i4_scale(const uint8_t *s, bool f16, int64_t g)
{
	if (f16) {
		float16_t h;
		memcpy(&h, s + 2 * g, 2);
		return (float)h;
	}
	float f;
	memcpy(&f, s + 4 * g, 4);
	return f;
}

/*
 * One row against nt tokens. SDOT multiplies signed bytes, so the nibbles
 * become the signed codes q = c - 8 right away and no offset correction
 * is needed. A group's dot (two int32 chains of 4 lanes, exact) is
 * converted and multiply-added with the group's scale into 4 float lanes,
 * summed at the end.
 */
INLINE void i4_row(const uint8_t *w, const uint8_t *s, bool f16, const int8_t *const *at,
		   float *const *ot, int nt, int64_t ng)
{
	float32x4_t acc[TILE];
	UNROLL
	for (int t = 0; t < nt; t++)
		acc[t] = vdupq_n_f32(0.0f);
	const uint8x16_t nib = vdupq_n_u8(15);
	const int8x16_t eight = vdupq_n_s8(8);
	for (int64_t g = 0; g < ng; g++) {
		const uint8_t *wg = w + 64 * g;
		int8x16_t lo[4], hi[4];
		UNROLL
		for (int i = 0; i < 4; i++) {
			uint8x16_t b = vld1q_u8(wg + 16 * i);
			lo[i] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, nib)), eight);
			hi[i] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(b, 4)), eight);
		}
		const float sc = i4_scale(s, f16, g);
		UNROLL
		for (int t = 0; t < nt; t++) {
			const int8_t *ag = at[t] + 128 * g;
			int32x4_t d0 = vdupq_n_s32(0), d1 = vdupq_n_s32(0);
			UNROLL
			for (int i = 0; i < 4; i += 2) {
				d0 = vdotq_s32(d0, lo[i], vld1q_s8(ag + 16 * i));
				d1 = vdotq_s32(d1, lo[i + 1], vld1q_s8(ag + 16 * i + 16));
				d0 = vdotq_s32(d0, hi[i], vld1q_s8(ag + 64 + 16 * i));
				d1 = vdotq_s32(d1, hi[i + 1], vld1q_s8(ag + 64 + 16 * i + 16));
			}
			acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(vaddq_s32(d0, d1)), sc);
		}
	}
	UNROLL
	for (int t = 0; t < nt; t++)
		*ot[t] = vaddvq_f32(acc[t]);
}

INLINE void i4_tiles(const uint8_t *wr, const uint8_t *sr, bool f16, const int8_t *a,
		     size_t a_stride, int64_t t0, int nt, int64_t ntok, int64_t r, int64_t ng,
		     float *out)
{
	const int8_t *at[TILE];
	float *ot[TILE];
	UNROLL
	for (int t = 0; t < nt; t++) {
		at[t] = a + (size_t)(t0 + t) * a_stride;
		ot[t] = out + r * ntok + t0 + t;
	}
	i4_row(wr, sr, f16, at, ot, nt, ng);
}

static void neon_i4_dot(const uint8_t *w, size_t w_stride, const void *scales, size_t s_stride,
			bool f16, int64_t nrows, const int8_t *a, size_t a_stride,
			const int32_t *bsum, int64_t ntok, int64_t kpad, float *out)
{
	(void)bsum;
	const int64_t ng = kpad / 128;
	for (int64_t r = 0; r < nrows; r++) {
		const uint8_t *wr = w + (size_t)r * w_stride;
		const uint8_t *sr = (const uint8_t *)scales + (size_t)r * s_stride;
		int64_t t0 = 0;
		for (; t0 + TILE <= ntok; t0 += TILE)
			i4_tiles(wr, sr, f16, a, a_stride, t0, TILE, ntok, r, ng, out);
		switch (ntok - t0) {
		case 3: i4_tiles(wr, sr, f16, a, a_stride, t0, 3, ntok, r, ng, out); break;
		case 2: i4_tiles(wr, sr, f16, a, a_stride, t0, 2, ntok, r, ng, out); break;
		case 1: i4_tiles(wr, sr, f16, a, a_stride, t0, 1, ntok, r, ng, out); break;
		default: break;
		}
	}
}

/* ---- int8 x int8 ------------------------------------------------------ */

INLINE void i8dot_tile(const int8_t *wr, const int8_t *const *at, int32_t *const *ot, int nt,
		       int64_t k)
{
	int32x4_t acc0[TILE], acc1[TILE];
	UNROLL
	for (int t = 0; t < nt; t++) {
		acc0[t] = vdupq_n_s32(0);
		acc1[t] = vdupq_n_s32(0);
	}
	int64_t j = 0;
	for (; j + 32 <= k; j += 32) {
		int8x16_t w0 = vld1q_s8(wr + j), w1 = vld1q_s8(wr + j + 16);
		UNROLL
		for (int t = 0; t < nt; t++) {
			acc0[t] = vdotq_s32(acc0[t], w0, vld1q_s8(at[t] + j));
			acc1[t] = vdotq_s32(acc1[t], w1, vld1q_s8(at[t] + j + 16));
		}
	}
	if (j + 16 <= k) {
		int8x16_t w0 = vld1q_s8(wr + j);
		UNROLL
		for (int t = 0; t < nt; t++)
			acc0[t] = vdotq_s32(acc0[t], w0, vld1q_s8(at[t] + j));
		j += 16;
	}
	UNROLL
	for (int t = 0; t < nt; t++) {
		int32_t s = vaddvq_s32(vaddq_s32(acc0[t], acc1[t]));
		for (int64_t i = j; i < k; i++)
			s += (int32_t)wr[i] * at[t][i];
		*ot[t] = s;
	}
}

INLINE void i8dot_tiles(const int8_t *wr, const int8_t *a, size_t a_stride, int64_t t0, int nt,
			int64_t ntok, int64_t r, int64_t k, int32_t *out)
{
	const int8_t *at[TILE];
	int32_t *ot[TILE];
	UNROLL
	for (int t = 0; t < nt; t++) {
		at[t] = a + (size_t)(t0 + t) * a_stride;
		ot[t] = out + r * ntok + t0 + t;
	}
	i8dot_tile(wr, at, ot, nt, k);
}

static void neon_i8_dot(const int8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			size_t a_stride, int64_t ntok, int64_t k, int32_t *out)
{
	for (int64_t r = 0; r < nrows; r++) {
		const int8_t *wr = (const int8_t *)((const uint8_t *)w + (size_t)r * w_stride);
		int64_t t0 = 0;
		for (; t0 + TILE <= ntok; t0 += TILE)
			i8dot_tiles(wr, a, a_stride, t0, TILE, ntok, r, k, out);
		switch (ntok - t0) {
		case 3: i8dot_tiles(wr, a, a_stride, t0, 3, ntok, r, k, out); break;
		case 2: i8dot_tiles(wr, a, a_stride, t0, 2, ntok, r, k, out); break;
		case 1: i8dot_tiles(wr, a, a_stride, t0, 1, ntok, r, k, out); break;
		default: break;
		}
	}
}

/* ---- float weights ---------------------------------------------------- */

#define WT_F32 0
#define WT_F16 1
#define WT_BF16 2

/* Four consecutive weights of row w starting at j, as floats. F16 and BF16
 * widen exactly, so only the summation order differs from the reference. */
INLINE float32x4_t load_w4(const void *w, int64_t j, int wt)
{
	if (wt == WT_F32)
		return vld1q_f32((const float *)w + j);
	uint16x4_t h = vld1_u16((const uint16_t *)w + j);
	if (wt == WT_F16)
		return vcvt_f32_f16(vreinterpret_f16_u16(h));
	return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

INLINE float load_w1(const void *w, int64_t j, int wt)
{
	if (wt == WT_F32)
		return ((const float *)w)[j];
	uint16_t h = ((const uint16_t *)w)[j];
	if (wt == WT_F16)
		return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
	return vgetq_lane_f32(vreinterpretq_f32_u32(vshll_n_u16(vdup_n_u16(h), 16)), 0);
}

INLINE void fdot_tile(const void *wr, const float *const *xt, float *const *yt, int nt, int64_t k,
		      int wt)
{
	float32x4_t acc0[TILE], acc1[TILE];
	UNROLL
	for (int t = 0; t < nt; t++) {
		acc0[t] = vdupq_n_f32(0.0f);
		acc1[t] = vdupq_n_f32(0.0f);
	}
	int64_t j = 0;
	for (; j + 8 <= k; j += 8) {
		float32x4_t w0 = load_w4(wr, j, wt), w1 = load_w4(wr, j + 4, wt);
		UNROLL
		for (int t = 0; t < nt; t++) {
			acc0[t] = vfmaq_f32(acc0[t], w0, vld1q_f32(xt[t] + j));
			acc1[t] = vfmaq_f32(acc1[t], w1, vld1q_f32(xt[t] + j + 4));
		}
	}
	UNROLL
	for (int t = 0; t < nt; t++) {
		float s = vaddvq_f32(vaddq_f32(acc0[t], acc1[t]));
		for (int64_t i = j; i < k; i++)
			s += load_w1(wr, i, wt) * xt[t][i];
		*yt[t] = s;
	}
}

INLINE void fdot_tiles(const void *wr, const float *x, int64_t ldx, int64_t t0, int nt,
		       int64_t r, int64_t k, float *y, int64_t ldy, int wt)
{
	const float *xt[TILE];
	float *yt[TILE];
	UNROLL
	for (int t = 0; t < nt; t++) {
		xt[t] = x + (t0 + t) * ldx;
		yt[t] = y + (t0 + t) * ldy + r;
	}
	fdot_tile(wr, xt, yt, nt, k, wt);
}

INLINE void fdot(const void *w, size_t w_stride, int64_t nrows, const float *x, int64_t ldx,
		 int64_t ntok, int64_t k, float *y, int64_t ldy, int wt)
{
	for (int64_t r = 0; r < nrows; r++) {
		const void *wr = (const uint8_t *)w + (size_t)r * w_stride;
		int64_t t0 = 0;
		for (; t0 + TILE <= ntok; t0 += TILE)
			fdot_tiles(wr, x, ldx, t0, TILE, r, k, y, ldy, wt);
		switch (ntok - t0) {
		case 3: fdot_tiles(wr, x, ldx, t0, 3, r, k, y, ldy, wt); break;
		case 2: fdot_tiles(wr, x, ldx, t0, 2, r, k, y, ldy, wt); break;
		case 1: fdot_tiles(wr, x, ldx, t0, 1, r, k, y, ldy, wt); break;
		default: break;
		}
	}
}

static void neon_f32_dot(const void *w, size_t w_stride, int64_t nrows, const float *x,
			 int64_t ldx, int64_t ntok, int64_t k, float *y, int64_t ldy)
{
	fdot(w, w_stride, nrows, x, ldx, ntok, k, y, ldy, WT_F32);
}

static void neon_f16_dot(const void *w, size_t w_stride, int64_t nrows, const float *x,
			 int64_t ldx, int64_t ntok, int64_t k, float *y, int64_t ldy)
{
	fdot(w, w_stride, nrows, x, ldx, ntok, k, y, ldy, WT_F16);
}

static void neon_bf16_dot(const void *w, size_t w_stride, int64_t nrows, const float *x,
			  int64_t ldx, int64_t ntok, int64_t k, float *y, int64_t ldy)
{
	fdot(w, w_stride, nrows, x, ldx, ntok, k, y, ldy, WT_BF16);
}

/* ---- attention ------------------------------------------------------------
 * One query head, as the AVX2/AVX-512 kernels do for a group: scores of
 * ATT_KB keys per pass with FMA accumulators, tern_softmax, then the
 * weighted sum of the values in up to ATT_OB accumulators per chunk of
 * out. Dimensions past the last multiple of 4 go through scalar tails.
 * Keys and values are f32, or f16 converted four at a time. */
#define ATT_KB 8
#define ATT_OB 8

/* KV element `off` of base as f32, or (f16) converted from f16: four
 * lanes, and one element for the tails. */
#define KV4(f16, base, off)                                                                 \
	((f16) ? vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)(base) + (off)))) \
	       : vld1q_f32((const float *)(base) + (off)))
#define KV1(f16, base, off)                                                                 \
	((f16) ? tern_f16_to_f32(((const uint16_t *)(base))[off])                             \
	       : ((const float *)(base))[off])

INLINE void neon_attn_head(const float *q, const void *k, const void *v, const int F16,
			   int64_t kvs, int64_t nk, int64_t hd, float scale, float *s, float *out)
{
	const int64_t full = hd / 4 * 4;
	for (int64_t j = 0; j < nk; j += ATT_KB) {
		const int64_t kb = nk - j < ATT_KB ? nk - j : ATT_KB;
		const int64_t kj = j * kvs;
		float32x4_t acc[ATT_KB];
		for (int r = 0; r < ATT_KB; r++)
			acc[r] = vdupq_n_f32(0.0f);
		if (kb == ATT_KB) {
			for (int64_t i = 0; i < full; i += 4) {
				const float32x4_t qv = vld1q_f32(q + i);
				for (int r = 0; r < ATT_KB; r++)
					acc[r] = vfmaq_f32(acc[r], qv,
							   KV4(F16, k, kj + r * kvs + i));
			}
		} else {
			for (int64_t r = 0; r < kb; r++)
				for (int64_t i = 0; i < full; i += 4)
					acc[r] = vfmaq_f32(acc[r], vld1q_f32(q + i),
							   KV4(F16, k, kj + r * kvs + i));
		}
		for (int64_t r = 0; r < kb; r++) {
			float t = vaddvq_f32(acc[r]);
			for (int64_t i = full; i < hd; i++)
				t += q[i] * KV1(F16, k, kj + r * kvs + i);
			s[j + r] = t * scale;
		}
	}
	tern_softmax(s, nk);
	for (int64_t c0 = 0; c0 < full; c0 += ATT_OB * 4) {
		const int64_t nv = (full - c0 < ATT_OB * 4 ? full - c0 : ATT_OB * 4) / 4;
		float32x4_t o[ATT_OB];
		for (int u = 0; u < ATT_OB; u++)
			o[u] = vdupq_n_f32(0.0f);
		if (nv == ATT_OB) {
			for (int64_t jj = 0; jj < nk; jj++) {
				const float32x4_t pj = vdupq_n_f32(s[jj]);
				const int64_t vj = jj * kvs + c0;
				for (int u = 0; u < ATT_OB; u++)
					o[u] = vfmaq_f32(o[u], pj, KV4(F16, v, vj + 4 * u));
			}
		} else {
			for (int64_t jj = 0; jj < nk; jj++) {
				const float32x4_t pj = vdupq_n_f32(s[jj]);
				const int64_t vj = jj * kvs + c0;
				for (int64_t u = 0; u < nv; u++)
					o[u] = vfmaq_f32(o[u], pj, KV4(F16, v, vj + 4 * u));
			}
		}
		for (int64_t u = 0; u < nv; u++)
			vst1q_f32(out + c0 + 4 * u, o[u]);
	}
	for (int64_t d = full; d < hd; d++) {
		float t = 0.0f;
		for (int64_t jj = 0; jj < nk; jj++)
			t += s[jj] * KV1(F16, v, jj * kvs + d);
		out[d] = t;
	}
}
#undef ATT_KB
#undef ATT_OB
#undef KV4
#undef KV1

/* The heads of a group one after another (tern_attn_fn). */
static void neon_attn(const float *q, int64_t G, const void *k, const void *v, bool kv_f16,
		      int64_t kvs, int64_t nk, int64_t hd, float scale, float *s, float *out)
{
	for (int64_t g = 0; g < G; g++) {
		if (kv_f16)
			neon_attn_head(q + g * hd, k, v, 1, kvs, nk, hd, scale, s, out + g * hd);
		else
			neon_attn_head(q + g * hd, k, v, 0, kvs, nk, hd, scale, s, out + g * hd);
	}
}

static const tern_kernels neon_kernels = {
	.path = TERN_KERNEL_NEON,
	.t2_dot = neon_t2_dot,
	.t3_dot = neon_t3_dot,
	.i8_dot = neon_i8_dot,
	.i4_dot = neon_i4_dot,
	.f32_dot = neon_f32_dot,
	.f16_dot = neon_f16_dot,
	.bf16_dot = neon_bf16_dot,
	.quant_row = tern_quant_row_scalar,
	.attn = neon_attn,
	.f16_row = tern_f16_row_scalar,
};

const tern_kernels *tern_kernels_neon(void)
{
	return &neon_kernels;
}
