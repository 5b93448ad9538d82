/*
 * kernels_avx2.c: the AVX2 (+FMA, F16C) kernel table for x86 CPUs without
 * AVX-512. A 64-byte ternary group is handled as two 32-byte halves;
 * codes times int8 activations go through vpmaddubsw (unsigned x signed
 * bytes to int16 pairs, which cannot saturate since codes are <= 2) and
 * vpmaddwd to int32. Tiles of several rows x tokens (as many as 16 ymm
 * registers hold) reuse each unpacked weight vector across tokens and each
 * activation vector across rows. This file is compiled with AVX2 flags
 * and is only called after cpu.c has checked the CPU.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/kernels.h"
#include "tern/ops.h"

#define KINLINE static inline __attribute__((always_inline))

/* Prefetch base + off. The address may lie past the end of the weights
 * (prefetches never fault), so it is formed as an integer, not as an
 * out-of-bounds pointer. */
KINLINE void prefetch_at(const void *base, size_t off)
{
	_mm_prefetch((const char *)((uintptr_t)base + off), _MM_HINT_T0);
}

/* Rows of a tile lie back to back, but hardware prefetch follows R
 * interleaved short row streams poorly. The tiles prefetch the same spot
 * some whole number of R-row blocks ahead, at least PF_BYTES away: enough
 * bytes in flight to cover DRAM latency at full bandwidth. */
#define PF_BYTES 8192

KINLINE size_t prefetch_distance(int R, size_t ws)
{
	size_t blk = (size_t)R * ws;
	return blk == 0 ? 0 : (PF_BYTES + blk - 1) / blk * blk;
}

KINLINE int32_t hsum_epi32(__m256i v)
{
	__m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
	return _mm_cvtsi128_si32(s);
}

KINLINE float hsum_ps(__m256 v)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* ---- ternary ---------------------------------------------------------- */

/* Slice p of 32 packed T2 bytes: reloading the bytes (an L1 hit) and
 * shifting by 2p costs fewer registers than keeping them live. The 16-bit
 * shift pulls bits of the neighbouring byte in above the 2 kept. */
KINLINE __m256i t2_slice(const uint8_t *bytes, int p)
{
	__m256i v = _mm256_loadu_si256((const __m256i *)bytes);
	v = _mm256_srl_epi16(v, _mm_cvtsi32_si128(2 * p));
	return _mm256_and_si256(v, _mm256_set1_epi8(3));
}

/* Next trit slice of a T3 half group; `cur` starts as the packed bytes.
 * The trit is the high byte of q*3: (q >= 86) + (q >= 171), done with
 * signed compares after moving the range by 128. */
KINLINE __m256i t3_next(__m256i *cur)
{
	__m256i q = *cur;
	__m256i qs = _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
	__m256i ge1 = _mm256_cmpgt_epi8(qs, _mm256_set1_epi8(85 - 128));
	__m256i ge2 = _mm256_cmpgt_epi8(qs, _mm256_set1_epi8(42));
	*cur = _mm256_add_epi8(_mm256_add_epi8(q, q), q);
	return _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(ge1, ge2));
}

KINLINE __m256i dot_u8s8(__m256i acc, __m256i w, __m256i a)
{
	return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, a),
							_mm256_set1_epi16(1)));
}

/*
 * R rows x T tokens over a whole padded row; P codes per byte (4: T2,
 * 5: T3). A full group (64 bytes) is two halves of 32 bytes; a half group
 * is one. Slices are 64 (or 32) weights and blocks end on multiples of
 * 128 or at kpad, so a block always ends right after some slice.
 */
KINLINE void tdot_tile(const uint8_t *w, size_t ws, const int8_t *a, size_t as, int64_t kpad,
		       int64_t blk, int32_t *out, int64_t ors, int64_t ots, const int P,
		       const int R, const int T, const int BLOCKED)
{
	__m256i acc[4][2];
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm256_setzero_si256();

	const int64_t gw = 64 * P;
	const int64_t full = kpad / gw * gw;
	const size_t pf = prefetch_distance(R, ws);
	int64_t next = blk < kpad ? blk : kpad;
	int64_t b = 0;

#define TDOT_FLUSH_ALL()                                                             \
	do {                                                                         \
		_Pragma("GCC unroll 4") for (int r_ = 0; r_ < R; r_++)               \
		_Pragma("GCC unroll 2") for (int t_ = 0; t_ < T; t_++)               \
		{                                                                    \
			out[r_ * ors + t_ * ots + b] = hsum_epi32(acc[r_][t_]);      \
			acc[r_][t_] = _mm256_setzero_si256();                        \
		}                                                                    \
		b++;                                                                 \
		next = next + blk < kpad ? next + blk : kpad;                        \
	} while (0)
	/* Unblocked tiles (one sum per row) reduce once at the end; keeping
	 * the check out of their loop keeps the accumulators in registers. */
#define TDOT_FLUSH(end)                                                              \
	do {                                                                         \
		if (BLOCKED && (end) == next)                                        \
			TDOT_FLUSH_ALL();                                            \
	} while (0)

	int64_t j = 0;
	for (; j < full; j += gw) {
		__m256i cur[4][2];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			prefetch_at(w, pf + (size_t)r * ws + (size_t)(j / P));
		if (P == 5) {
#pragma GCC unroll 4
			for (int r = 0; r < R; r++) {
				cur[r][0] = _mm256_loadu_si256((const __m256i *)(w + r * ws + j / P));
				cur[r][1] = _mm256_loadu_si256(
					(const __m256i *)(w + r * ws + j / P + 32));
			}
		}
#pragma GCC unroll 16
		for (int p = 0; p < P; p++) {
#pragma GCC unroll 2
			for (int h = 0; h < 2; h++) {
				__m256i wv[4];
#pragma GCC unroll 4
				for (int r = 0; r < R; r++)
					wv[r] = P == 4 ? t2_slice(w + r * ws + j / P + 32 * h, p)
						       : t3_next(&cur[r][h]);
#pragma GCC unroll 2
				for (int t = 0; t < T; t++) {
					__m256i av = _mm256_loadu_si256(
						(const __m256i *)(a + t * as + j + 64 * p + 32 * h));
#pragma GCC unroll 4
					for (int r = 0; r < R; r++)
						acc[r][t] = dot_u8s8(acc[r][t], wv[r], av);
				}
			}
			TDOT_FLUSH(j + 64 * (p + 1));
		}
	}
	if (j < kpad) {
		__m256i cur[4];
		if (P == 5) {
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				cur[r] = _mm256_loadu_si256((const __m256i *)(w + r * ws + j / P));
		}
#pragma GCC unroll 16
		for (int p = 0; p < P; p++) {
			__m256i wv[4];
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				wv[r] = P == 4 ? t2_slice(w + r * ws + j / P, p) : t3_next(&cur[r]);
#pragma GCC unroll 2
			for (int t = 0; t < T; t++) {
				__m256i av = _mm256_loadu_si256(
					(const __m256i *)(a + t * as + j + 32 * p));
#pragma GCC unroll 4
				for (int r = 0; r < R; r++)
					acc[r][t] = dot_u8s8(acc[r][t], wv[r], av);
			}
			TDOT_FLUSH(j + 32 * (p + 1));
		}
	}
	if (!BLOCKED)
		TDOT_FLUSH_ALL();
#undef TDOT_FLUSH
#undef TDOT_FLUSH_ALL
}

typedef void (*tdot_tile_fn)(const uint8_t *w, size_t ws, const int8_t *a, size_t as,
			     int64_t kpad, int64_t blk, int32_t *out, int64_t ors, int64_t ots);

#define TDOT_TILE(name, P, R, T, B)                                                          \
	static void name(const uint8_t *w, size_t ws, const int8_t *a, size_t as, int64_t kpad, \
			 int64_t blk, int32_t *out, int64_t ors, int64_t ots)                   \
	{                                                                                    \
		tdot_tile(w, ws, a, as, kpad, blk, out, ors, ots, P, R, T, B);               \
	}

/* Tiles: rows x tokens, for T2 (P=4) and T3 (P=5), one sum per row (u) or
 * per scale block (b). */
#define TDOT_TILES(pre, P)                                                                   \
	TDOT_TILE(pre##_u22, P, 2, 2, 0)                                                     \
	TDOT_TILE(pre##_u41, P, 4, 1, 0)                                                     \
	TDOT_TILE(pre##_u12, P, 1, 2, 0)                                                     \
	TDOT_TILE(pre##_u11, P, 1, 1, 0)                                                     \
	TDOT_TILE(pre##_b22, P, 2, 2, 1)                                                     \
	TDOT_TILE(pre##_b41, P, 4, 1, 1)                                                     \
	TDOT_TILE(pre##_b12, P, 1, 2, 1)                                                     \
	TDOT_TILE(pre##_b11, P, 1, 1, 1)                                                     \
	static const tdot_tile_fn pre##_tiles[2][4] = {                                      \
		{ pre##_u22, pre##_u41, pre##_u12, pre##_u11 },                              \
		{ pre##_b22, pre##_b41, pre##_b12, pre##_b11 },                              \
	};

TDOT_TILES(t2, 4)
TDOT_TILES(t3, 5)

/*
 * Covers nrows x ntok: one token with 4-row tiles, several tokens with
 * 2 rows x 2 tokens (what fits in 16 ymm registers without spilling).
 */
static void tdot_run(const tdot_tile_fn tiles[2][4], const uint8_t *w, size_t ws, int64_t nrows,
		     const int8_t *a, size_t as, int64_t ntok, int64_t kpad, int64_t blk,
		     int32_t *out)
{
	const int64_t nb = (kpad + blk - 1) / blk;
	const int64_t ors = ntok * nb;
	const tdot_tile_fn *tl = tiles[blk < kpad];
	for (int64_t t0 = 0; t0 < ntok; t0 += 2) {
		int64_t nt = ntok - t0 < 2 ? ntok - t0 : 2;
		const int8_t *at = a + t0 * as;
		int64_t step = nt == 2 ? 2 : 4;
		for (int64_t r0 = 0; r0 < nrows; r0 += step) {
			int64_t nr = nrows - r0 < step ? nrows - r0 : step;
			const uint8_t *wr = w + r0 * ws;
			int32_t *o = out + r0 * ors + t0 * nb;
			if (nr == 2 && nt == 2) {
				tl[0](wr, ws, at, as, kpad, blk, o, ors, nb);
			} else if (nr == 4) {
				tl[1](wr, ws, at, as, kpad, blk, o, ors, nb);
			} else {
				for (int64_t r = 0; r < nr; r++)
					tl[nt == 2 ? 2 : 3](wr + r * ws, ws, at, as, kpad, blk,
							    o + r * ors, ors, nb);
			}
		}
	}
}

static void t2_dot_avx2(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out)
{
	tdot_run(t2_tiles, w, w_stride, nrows, a, a_stride, ntok, kpad, blk, out);
}

static void t3_dot_avx2(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out)
{
	tdot_run(t3_tiles, w, w_stride, nrows, a, a_stride, ntok, kpad, blk, out);
}

/* ---- 4-bit x int8 ----------------------------------------------------- */

/* Up to 8 scales (f16 or f32) as floats, lanes from n on zero. */
KINLINE __m256 i4_scales8(const uint8_t *s, bool f16, int n)
{
	const size_t sb = f16 ? 2 : 4;
	uint8_t buf[32] = { 0 };
	if (n == 8)
		memcpy(buf, s, 8 * sb);
	else
		memcpy(buf, s, (size_t)n * sb);
	if (f16)
		return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)buf));
	return _mm256_loadu_ps((const float *)buf);
}

/*
 * R rows x T tokens. A 64-byte group is two 32-byte halves; each gives
 * its low nibbles (weights m) and high nibbles (weights 64 + m) as
 * unsigned codes c = q + 8. vpmaddubsw pairs c * a into int16 (at most
 * 2 * 15 * 128 in magnitude), four of them add up within int16 (15360),
 * and vpmaddwd makes 8 int32 lanes: the group's dot in 8 partial sums,
 * converted and multiply-added with the group's broadcast scale. Every 8
 * groups the +8 is taken back as -8 * (activation sum of a group) times
 * its scale into the same float lanes, summed once at the end. The
 * unpacked weights of one row are reused across the T tokens; rows are
 * unpacked one at a time to stay within 16 registers.
 */
KINLINE void i4_tile(const uint8_t *w, size_t ws, const uint8_t *s, size_t ss, bool f16,
		     const int8_t *a, size_t as, const int32_t *bsum, int64_t ng, float *out,
		     int64_t ors, const int R, const int T)
{
	__m256 acc[4][2];
	const __m256i nib = _mm256_set1_epi8(0x0f);
	const __m256i ones = _mm256_set1_epi16(1);
	const size_t pf = prefetch_distance(R, ws);
	const size_t sb = f16 ? 2 : 4;
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm256_setzero_ps();
	for (int64_t g0 = 0; g0 < ng; g0 += 8) {
		const int n = ng - g0 < 8 ? (int)(ng - g0) : 8;
		float sc[4][8] __attribute__((aligned(32)));
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			_mm256_store_ps(sc[r], i4_scales8(s + r * ss + (size_t)g0 * sb, f16, n));
		for (int g = 0; g < n; g++) {
			const int64_t j = (g0 + g) * 128;
#pragma GCC unroll 4
			for (int r = 0; r < R; r++) {
				const uint8_t *wg = w + r * ws + j / 2;
				const __m256i b0 = _mm256_loadu_si256((const __m256i *)wg);
				const __m256i b1 = _mm256_loadu_si256((const __m256i *)(wg + 32));
				prefetch_at(w, pf + (size_t)r * ws + (size_t)(j / 2));
				const __m256i l0 = _mm256_and_si256(b0, nib);
				const __m256i l1 = _mm256_and_si256(b1, nib);
				const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(b0, 4), nib);
				const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(b1, 4), nib);
				const __m256 scale = _mm256_set1_ps(sc[r][g]);
#pragma GCC unroll 2
				for (int t = 0; t < T; t++) {
					const int8_t *ag = a + t * as + j;
					__m256i p = _mm256_add_epi16(
						_mm256_maddubs_epi16(l0, _mm256_loadu_si256((const __m256i *)ag)),
						_mm256_maddubs_epi16(l1, _mm256_loadu_si256((const __m256i *)(ag + 32))));
					__m256i q = _mm256_add_epi16(
						_mm256_maddubs_epi16(h0, _mm256_loadu_si256((const __m256i *)(ag + 64))),
						_mm256_maddubs_epi16(h1, _mm256_loadu_si256((const __m256i *)(ag + 96))));
					__m256i d = _mm256_madd_epi16(_mm256_add_epi16(p, q), ones);
					acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, acc[r][t]);
				}
			}
		}
#pragma GCC unroll 2
		for (int t = 0; t < T; t++) {
			int32_t bs[8] = { 0 };
			memcpy(bs, bsum + t * ng + g0, (size_t)n * sizeof bs[0]);
			const __m256 off = _mm256_mul_ps(
				_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)bs)),
				_mm256_set1_ps(-8.0f));
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm256_fmadd_ps(_mm256_load_ps(sc[r]), off, acc[r][t]);
		}
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int t = 0; t < T; t++)
			out[r * ors + t] = hsum_ps(acc[r][t]);
}

typedef void (*i4_tile_fn)(const uint8_t *w, size_t ws, const uint8_t *s, size_t ss, bool f16,
			   const int8_t *a, size_t as, const int32_t *bsum, int64_t ng,
			   float *out, int64_t ors);

#define I4_TILE(name, R, T)                                                                  \
	static void name(const uint8_t *w, size_t ws, const uint8_t *s, size_t ss, bool f16,  \
			 const int8_t *a, size_t as, const int32_t *bsum, int64_t ng,          \
			 float *out, int64_t ors)                                              \
	{                                                                                    \
		i4_tile(w, ws, s, ss, f16, a, as, bsum, ng, out, ors, R, T);                 \
	}

I4_TILE(i4_tile_2x2, 2, 2)
I4_TILE(i4_tile_4x1, 4, 1)
I4_TILE(i4_tile_1x2, 1, 2)
I4_TILE(i4_tile_1x1, 1, 1)

/* One token: 4-row tiles; several: 2 rows x 2 tokens (as tdot_run). */
static void i4_dot_avx2(const uint8_t *w, size_t w_stride, const void *scales, size_t s_stride,
			bool f16, int64_t nrows, const int8_t *a, size_t a_stride,
			const int32_t *bsum, int64_t ntok, int64_t kpad, float *out)
{
	const int64_t ng = kpad / 128;
	const uint8_t *s = scales;
	for (int64_t t0 = 0; t0 < ntok; t0 += 2) {
		const int64_t nt = ntok - t0 < 2 ? ntok - t0 : 2;
		const int8_t *at = a + t0 * a_stride;
		const int32_t *bt = bsum + t0 * ng;
		const int64_t step = nt == 2 ? 2 : 4;
		for (int64_t r0 = 0; r0 < nrows; r0 += step) {
			const int64_t nr = nrows - r0 < step ? nrows - r0 : step;
			const uint8_t *wr = w + r0 * w_stride;
			const uint8_t *sr = s + r0 * s_stride;
			float *o = out + r0 * ntok + t0;
			if (nr == 2 && nt == 2) {
				i4_tile_2x2(wr, w_stride, sr, s_stride, f16, at, a_stride, bt, ng, o,
					    ntok);
			} else if (nr == 4) {
				i4_tile_4x1(wr, w_stride, sr, s_stride, f16, at, a_stride, bt, ng, o,
					    ntok);
			} else {
				for (int64_t r = 0; r < nr; r++)
					(nt == 2 ? i4_tile_1x2 : i4_tile_1x1)(
						wr + r * w_stride, w_stride, sr + r * s_stride, s_stride,
						f16, at, a_stride, bt, ng, o + r * ntok, ntok);
			}
		}
	}
}

/* ---- int8 x int8 ------------------------------------------------------ */

/* Both sides are sign-extended to int16 and multiplied with vpmaddwd,
 * which is exact (vpmaddubsw could saturate on -128 * -128 pairs). The
 * k % 16 tail is added in scalar code; integer sums do not care about
 * order. */
KINLINE void i8_tile(const int8_t *w, size_t ws, const int8_t *a, size_t as, int64_t k,
		     int32_t *out, int64_t ors, const int R, const int T)
{
	__m256i acc[4][2];
	const size_t pf = prefetch_distance(R, ws);
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm256_setzero_si256();
	int64_t j = 0;
	for (; j + 16 <= k; j += 16) {
		__m256i wv[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			wv[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + r * ws + j)));
			prefetch_at(w, pf + (size_t)r * ws + (size_t)j);
		}
#pragma GCC unroll 2
		for (int t = 0; t < T; t++) {
			__m256i av = _mm256_cvtepi8_epi16(
				_mm_loadu_si128((const __m128i *)(a + t * as + j)));
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(wv[r], av));
		}
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int t = 0; t < T; t++) {
			int32_t s = hsum_epi32(acc[r][t]);
			for (int64_t i = j; i < k; i++)
				s += (int32_t)w[r * ws + i] * a[t * as + i];
			out[r * ors + t] = s;
		}
}

typedef void (*i8_tile_fn)(const int8_t *w, size_t ws, const int8_t *a, size_t as, int64_t k,
			   int32_t *out, int64_t ors);

#define I8_TILE(name, R, T)                                                                  \
	static void name(const int8_t *w, size_t ws, const int8_t *a, size_t as, int64_t k,   \
			 int32_t *out, int64_t ors)                                           \
	{                                                                                    \
		i8_tile(w, ws, a, as, k, out, ors, R, T);                                    \
	}

I8_TILE(i8_tile_4x2, 4, 2)
I8_TILE(i8_tile_4x1, 4, 1)
I8_TILE(i8_tile_1x2, 1, 2)
I8_TILE(i8_tile_1x1, 1, 1)

static void i8_dot_avx2(const int8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			size_t a_stride, int64_t ntok, int64_t k, int32_t *out)
{
	if (ntok == 1) {
		/* Rows one after another: the weights stream in address
		 * order, which the prefetchers follow better than 4
		 * interleaved rows (head GEMV 80-95% of the probe, 72-85% in
		 * 4-row tiles; t2 gained nothing and t3, compute-bound here,
		 * lost its shared activation loads, so they keep the tiles). */
		for (int64_t r = 0; r < nrows; r++)
			i8_tile_1x1(w + r * w_stride, w_stride, a, a_stride, k, out + r, 1);
		return;
	}
	for (int64_t t0 = 0; t0 < ntok; t0 += 2) {
		int64_t nt = ntok - t0 < 2 ? ntok - t0 : 2;
		const int8_t *at = a + t0 * a_stride;
		for (int64_t r0 = 0; r0 < nrows; r0 += 4) {
			int64_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
			const int8_t *wr = w + r0 * w_stride;
			int32_t *o = out + r0 * ntok + t0;
			if (nr == 4 && nt == 2) {
				i8_tile_4x2(wr, w_stride, at, a_stride, k, o, ntok);
			} else if (nr == 4) {
				i8_tile_4x1(wr, w_stride, at, a_stride, k, o, ntok);
			} else {
				for (int64_t r = 0; r < nr; r++) {
					if (nt == 2)
						i8_tile_1x2(wr + r * w_stride, w_stride, at, a_stride, k,
							    o + r * ntok, ntok);
					else
						i8_tile_1x1(wr + r * w_stride, w_stride, at, a_stride, k,
							    o + r * ntok, ntok);
				}
			}
		}
	}
}

/* ---- float weights ---------------------------------------------------- */

/*
 * Every (row, token) dot is one 8-lane FMA chain over k in steps of 8, a
 * zero-padded tail step and a fixed reduction, whatever tile computes it,
 * so results do not depend on how rows and tokens were split.
 */
enum { W_F32, W_F16, W_BF16 };

KINLINE __m256 load_w8(const void *w, int64_t j, const int kind)
{
	if (kind == W_F32)
		return _mm256_loadu_ps((const float *)w + j);
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + j));
	if (kind == W_F16)
		return _mm256_cvtph_ps(h);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The last k - j (< 8) weights, zero padded. */
KINLINE __m256 load_w8_tail(const void *w, int64_t j, int64_t n, const int kind)
{
	if (kind == W_F32) {
		float buf[8] = { 0 };
		memcpy(buf, (const float *)w + j, (size_t)n * sizeof(float));
		return _mm256_loadu_ps(buf);
	}
	uint16_t buf[8] = { 0 };
	memcpy(buf, (const uint16_t *)w + j, (size_t)n * sizeof(uint16_t));
	return load_w8(buf, 0, kind);
}

KINLINE __m256 load_x8_tail(const float *x, int64_t n)
{
	float buf[8] = { 0 };
	memcpy(buf, x, (size_t)n * sizeof(float));
	return _mm256_loadu_ps(buf);
}

KINLINE void fdot_tile(const void *w, size_t ws, const float *x, int64_t ldx, int64_t k,
		       float *y, int64_t ldy, const int kind, const int R, const int T)
{
	__m256 acc[4][2];
	const size_t pf = prefetch_distance(R, ws);
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm256_setzero_ps();
	int64_t j = 0;
	for (; j + 8 <= k; j += 8) {
		__m256 wv[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			wv[r] = load_w8((const char *)w + r * ws, j, kind);
			prefetch_at(w, pf + (size_t)r * ws + (size_t)j * (kind == W_F32 ? 4 : 2));
		}
#pragma GCC unroll 2
		for (int t = 0; t < T; t++) {
			__m256 xv = _mm256_loadu_ps(x + t * ldx + j);
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
		}
	}
	if (j < k) {
		__m256 wv[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			wv[r] = load_w8_tail((const char *)w + r * ws, j, k - j, kind);
#pragma GCC unroll 2
		for (int t = 0; t < T; t++) {
			__m256 xv = load_x8_tail(x + t * ldx + j, k - j);
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
		}
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 2
		for (int t = 0; t < T; t++)
			y[t * ldy + r] = hsum_ps(acc[r][t]);
}

typedef void (*fdot_tile_fn)(const void *w, size_t ws, const float *x, int64_t ldx, int64_t k,
			     float *y, int64_t ldy);

#define FDOT_TILE(name, kind, R, T)                                                          \
	static void name(const void *w, size_t ws, const float *x, int64_t ldx, int64_t k,    \
			 float *y, int64_t ldy)                                               \
	{                                                                                    \
		fdot_tile(w, ws, x, ldx, k, y, ldy, kind, R, T);                             \
	}

FDOT_TILE(f32_tile_4x2, W_F32, 4, 2)
FDOT_TILE(f32_tile_4x1, W_F32, 4, 1)
FDOT_TILE(f32_tile_1x1, W_F32, 1, 1)
FDOT_TILE(f16_tile_4x2, W_F16, 4, 2)
FDOT_TILE(f16_tile_4x1, W_F16, 4, 1)
FDOT_TILE(f16_tile_1x1, W_F16, 1, 1)
FDOT_TILE(bf16_tile_4x2, W_BF16, 4, 2)
FDOT_TILE(bf16_tile_4x1, W_BF16, 4, 1)
FDOT_TILE(bf16_tile_1x1, W_BF16, 1, 1)

static void fdot_run(fdot_tile_fn t42, fdot_tile_fn t41, fdot_tile_fn t11, const void *w,
		     size_t ws, int64_t nrows, const float *x, int64_t ldx, int64_t ntok,
		     int64_t k, float *y, int64_t ldy)
{
	const char *wb = (const char *)w;
	for (int64_t t0 = 0; t0 < ntok; t0 += 2) {
		int64_t nt = ntok - t0 < 2 ? ntok - t0 : 2;
		const float *xt = x + t0 * ldx;
		for (int64_t r0 = 0; r0 < nrows; r0 += 4) {
			int64_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
			const char *wr = wb + r0 * ws;
			float *o = y + t0 * ldy + r0;
			if (nr == 4 && nt == 2) {
				t42(wr, ws, xt, ldx, k, o, ldy);
			} else if (nr == 4) {
				t41(wr, ws, xt, ldx, k, o, ldy);
			} else {
				for (int64_t r = 0; r < nr; r++)
					for (int64_t t = 0; t < nt; t++)
						t11(wr + r * ws, ws, xt + t * ldx, ldx, k,
						    o + t * ldy + r, ldy);
			}
		}
	}
}

#define FDOT_ENTRY(name, pre)                                                                \
	static void name(const void *w, size_t w_stride, int64_t nrows, const float *x,       \
			 int64_t ldx, int64_t ntok, int64_t k, float *y, int64_t ldy)          \
	{                                                                                    \
		fdot_run(pre##_tile_4x2, pre##_tile_4x1, pre##_tile_1x1, w, w_stride, nrows, \
			 x, ldx, ntok, k, y, ldy);                                            \
	}

FDOT_ENTRY(f32_dot_avx2, f32)
FDOT_ENTRY(f16_dot_avx2, f16)
FDOT_ENTRY(bf16_dot_avx2, bf16)

/* ---- activation rows ---------------------------------------------------- */

/* tern_quant_fn. The absolute maximum is taken on the bit patterns: with
 * the sign cleared, float order is unsigned integer order, and inf/NaN
 * patterns lie above every finite one, so `bits >= 0x7f800000` is the
 * scalar code's "not finite". Rows the scalar code zeroes (zero, inf,
 * NaN) or whose reciprocal scale overflows (subnormal maxima) go to the
 * scalar reference; otherwise each value takes the scalar steps in the
 * same float operations (multiply, clamp, add and subtract 1.5 * 2^23),
 * so results are identical. */
static void quant_row_avx2(const float *x, int64_t n, int64_t kpad, int8_t *q, float *scale,
			   int32_t *csum, int32_t *sum)
{
	const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
	__m256i mx = _mm256_setzero_si256();
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i)),
							   absmask));
	uint32_t lanes[8], bits = 0;
	_mm256_storeu_si256((__m256i *)lanes, mx);
	for (int l = 0; l < 8; l++)
		bits = lanes[l] > bits ? lanes[l] : bits;
	for (; i < n; i++) {
		uint32_t b;
		memcpy(&b, x + i, sizeof b);
		b &= 0x7fffffffu;
		bits = b > bits ? b : bits;
	}
	float amax, id;
	if (!tern_quant_screen(bits, &amax, &id)) {
		tern_quant_row_scalar(x, n, kpad, q, scale, csum, sum);
		return;
	}
	const __m256 vid = _mm256_set1_ps(id), lo = _mm256_set1_ps(-128.0f),
		     hi = _mm256_set1_ps(127.0f), magic = _mm256_set1_ps(12582912.0f);
	int32_t total = 0;
	for (int64_t j = 0; j < kpad; j += 32) {
		/* 32 values (fewer at the end): full vectors while x lasts,
		 * then the same steps one value at a time, then padding. */
		const int64_t end = j + 32 < kpad ? j + 32 : kpad;
		__m256i acc = _mm256_setzero_si256();
		int64_t o = j;
		for (; o + 8 <= end && o + 8 <= n; o += 8) {
			__m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + o), vid);
			v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
			v = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
			const __m256i iv = _mm256_cvtps_epi32(v);
			acc = _mm256_add_epi32(acc, iv);
			const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(iv),
							    _mm256_extracti128_si256(iv, 1));
			_mm_storel_epi64((__m128i *)(q + o), _mm_packs_epi16(w16, w16));
		}
		int32_t part[8], s = 0;
		_mm256_storeu_si256((__m256i *)part, acc);
		for (int l = 0; l < 8; l++)
			s += part[l];
		for (; o < end && o < n; o++) {
			float v = x[o] * id;
			v = v < -128.0f ? -128.0f : v > 127.0f ? 127.0f : v;
			v = (v + 12582912.0f) - 12582912.0f;
			q[o] = (int8_t)(int32_t)v;
			s += q[o];
		}
		for (; o < end; o++)
			q[o] = 0;
		if (end - j == 32)
			csum[j / 32] = s;
		total += s;
	}
	*scale = amax / 127.0f;
	*sum = total;
}

/* Lane masks for maskload/maskstore: the first n of 8 lanes. */
static inline __m256i avx2_lanes(int64_t n)
{
	return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
				  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline float avx2_hsum(__m256 x)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

/* The first n (<= 8) f16 values at p as floats, the other lanes 0. */
static inline __m256 avx2_load_h(const uint16_t *p, int64_t n)
{
	uint16_t t[8] = { 0 };
	memcpy(t, p, (size_t)n * sizeof *p);
	return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)t));
}

/* e^x for x <= 0, as exp_neg16 in kernels_avx512.c (Taylor series of
 * e^r to r^7), with 2^n built in the exponent bits: x below -87 (where e^x
 * nears the smallest normal float) and -inf give 0. */
static inline __m256 exp_neg8(__m256 x)
{
	const __m256 lo = _mm256_set1_ps(-87.0f);
	const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
	x = _mm256_max_ps(x, lo);
	const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
					 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
	r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
	__m256 p = _mm256_set1_ps(1.0f / 5040.0f);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
	const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
							     _mm256_set1_epi32(127)), 23);
	return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

static inline float avx2_hmax(__m256 x)
{
	__m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
	m = _mm_max_ps(m, _mm_movehl_ps(m, m));
	m = _mm_max_ss(m, _mm_movehdup_ps(m));
	return _mm_cvtss_f32(m);
}

/* softmax over s[0..n), as softmax_avx512. */
static void softmax_avx2(float *s, int64_t n)
{
	__m256 m = _mm256_set1_ps(-INFINITY);
	int64_t i = 0;
	for (; i + 8 <= n; i += 8)
		m = _mm256_max_ps(m, _mm256_loadu_ps(s + i));
	float mx = avx2_hmax(m);
	for (int64_t t = i; t < n; t++)
		mx = s[t] > mx ? s[t] : mx;
	if (!isfinite(mx)) {
		tern_softmax(s, n); /* all -inf, or an inf or NaN: its rules */
		return;
	}
	const __m256 vm = _mm256_set1_ps(mx);
	__m256 sum = _mm256_setzero_ps();
	for (i = 0; i + 8 <= n; i += 8) {
		__m256 e = exp_neg8(_mm256_sub_ps(_mm256_loadu_ps(s + i), vm));
		_mm256_storeu_ps(s + i, e);
		sum = _mm256_add_ps(sum, e);
	}
	if (i < n) {
		const __m256i tm = avx2_lanes(n - i);
		__m256 e = exp_neg8(_mm256_sub_ps(_mm256_maskload_ps(s + i, tm), vm));
		e = _mm256_and_ps(e, _mm256_castsi256_ps(tm));
		_mm256_maskstore_ps(s + i, tm, e);
		sum = _mm256_add_ps(sum, e);
	}
	const __m256 inv = _mm256_set1_ps(1.0f / avx2_hsum(sum));
	for (i = 0; i + 8 <= n; i += 8)
		_mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), inv));
	for (; i < n; i++)
		s[i] *= _mm256_cvtss_f32(inv);
}

/* out[r] = scale * (sum of the 8 lanes of a[r]), r < 8, by two rounds of
 * pairwise horizontal adds and one add across the 128-bit halves. */
static inline void hsum8_avx2(const __m256 *a, float scale, float *out)
{
	const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
	const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
	const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
	/* u0: keys 0-3 in each half (low half lanes 0-3, high half 4-7). */
	const __m256 v = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
				       _mm256_permute2f128_ps(u0, u1, 0x31));
	_mm256_storeu_ps(out, _mm256_mul_ps(v, _mm256_set1_ps(scale)));
}

#define VEC 8
#define VT __m256
#define MASKT __m256i
#define TAILMASK(n) avx2_lanes(n)
#define ZERO() _mm256_setzero_ps()
#define LOAD(p) _mm256_loadu_ps(p)
#define MLOAD(m, p) _mm256_maskload_ps((p), (m))
/* KV element `off` of base, f32 or (f16) f16; masked: the first n lanes
 * (f32 by the lane mask m, f16 through a zeroed copy: AVX2 has no 16-bit
 * masked load). */
#define KVLOAD(f16, base, off)                                                              \
	((f16) ? _mm256_cvtph_ps(                                                           \
			 _mm_loadu_si128((const __m128i *)((const uint16_t *)(base) + (off)))) \
	       : _mm256_loadu_ps((const float *)(base) + (off)))
#define KVMLOAD(f16, m, n, base, off)                                                       \
	((f16) ? avx2_load_h(((const uint16_t *)(base) + (off)), (n))                           \
	       : _mm256_maskload_ps((const float *)(base) + (off), (m)))
#define STORE(p, x) _mm256_storeu_ps((p), (x))
#define MSTORE(m, p, x) _mm256_maskstore_ps((p), (m), (x))
#define FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define SET1(x) _mm256_set1_ps(x)
#define HSUM(x) avx2_hsum(x)
#define HSUM8(a, sc, o) hsum8_avx2((a), (sc), (o))
#define SOFTMAX(s, n) softmax_avx2((s), (n))

#define ATT_QH 1 /* 16 ymm registers: one head's 8 accumulators at a time */
#include "core/kernels_attn.h"

/* F16C converts 8 floats at a time with tern_f32_to_f16's rounding (to
 * nearest even, past 65504 to infinity, exact f16 subnormals; the default
 * MXCSR, which tern never changes). NaNs differ: the instruction quiets a
 * signalling NaN where the reference keeps its payload, so a block
 * holding a NaN goes through the reference. */
void tern_f16_row_f16c(const float *x, uint16_t *y, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_loadu_ps(x + i);
		if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q))) {
			tern_f16_row_scalar(x + i, y + i, 8);
			continue;
		}
		_mm_storeu_si128((__m128i *)(void *)(y + i),
				 _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
	}
	tern_f16_row_scalar(x + i, y + i, n - i);
}

static const tern_kernels avx2_table = {
	.path = TERN_KERNEL_AVX2,
	.t2_dot = t2_dot_avx2,
	.t3_dot = t3_dot_avx2,
	.i8_dot = i8_dot_avx2,
	.i4_dot = i4_dot_avx2,
	.f32_dot = f32_dot_avx2,
	.f16_dot = f16_dot_avx2,
	.bf16_dot = bf16_dot_avx2,
	.quant_row = quant_row_avx2,
	.attn = attn_simd,
	.f16_row = tern_f16_row_f16c,
};

const tern_kernels *tern_kernels_avx2(void)
{
	return &avx2_table;
}
