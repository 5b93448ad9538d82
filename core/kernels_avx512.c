/*
 * kernels_avx512.c: the AVX-512 (F, BW, VL, VNNI) kernel table. Ternary
 * codes are unpacked one 64-weight slice at a time from a 64-byte group
 * and multiplied into int32 lanes with vpdpbusd (unsigned codes x signed
 * activations). Tiles of several rows x several tokens reuse every
 * unpacked weight vector across tokens and every activation vector across
 * rows. One token reads rows one after another (t2_row, t3_row, i8_rows:
 * sequential streams prefetch best); t3_row decodes nothing, and 16
 * tokens or more take t3_dot_decoded, which decodes once into L1.
 * This file is compiled with AVX-512 flags and is only called after
 * cpu.c has checked the CPU; the VBMI decoder is picked here at run time.
 */
#include <immintrin.h>
#include <string.h>
#include <math.h>
#include <stdint.h>

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

/* ---- ternary ---------------------------------------------------------- */

/* The decoders hand out one slice of codes per call and advance `cur`,
 * which starts as the group's packed bytes. */
KINLINE __m512i t2_next(__m512i *cur)
{
	__m512i c = _mm512_and_si512(*cur, _mm512_set1_epi8(3));
	/* 16-bit shifts are fine: the bits pulled in from the neighbouring
	 * byte land above the 2 bits kept. */
	*cur = _mm512_srli_epi16(*cur, 2);
	return c;
}

KINLINE __m512i t3_next(__m512i *cur)
{
	__m512i q = *cur;
	/* The trit is the high byte of q*3: 1 from q >= 86, 2 from q >= 171. */
	__mmask64 ge1 = _mm512_cmpge_epu8_mask(q, _mm512_set1_epi8(86));
	__mmask64 ge2 = _mm512_cmpge_epu8_mask(q, _mm512_set1_epi8((char)171));
	__m512i t = _mm512_maskz_mov_epi8(ge1, _mm512_set1_epi8(1));
	t = _mm512_mask_mov_epi8(t, ge2, _mm512_set1_epi8(2));
	*cur = _mm512_add_epi8(_mm512_add_epi8(q, q), q);
	return t;
}

KINLINE __m512i load_zext256(const void *p)
{
	return _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)p));
}

/*
 * R rows x T tokens over a whole padded row. P is codes per byte (4: T2,
 * 5: T3). Slices end on multiples of 32 weights and blocks on multiples
 * of 128 (or at kpad), so a block always ends exactly after some slice;
 * the block's sums are then reduced and stored at out[r*ors + t*ots + b].
 */
KINLINE void tdot_tile(const uint8_t *w, size_t ws, const int8_t *a, size_t as, int64_t kpad,
		       int64_t blk, int32_t *out, int64_t ors, int64_t ots, const int P,
		       const int R, const int T, const int BLOCKED)
{
	__m512i acc[4][4];
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm512_setzero_si512();

	const int64_t gw = 64 * P;
	const int64_t full = kpad / gw * gw;
	const size_t pf = prefetch_distance(R, ws);
	int64_t next = blk < kpad ? blk : kpad;
	int64_t b = 0;

#define TDOT_FLUSH_ALL()                                                             \
	do {                                                                         \
		_Pragma("GCC unroll 4") for (int r_ = 0; r_ < R; r_++)               \
		_Pragma("GCC unroll 4") for (int t_ = 0; t_ < T; t_++)               \
		{                                                                    \
			out[r_ * ors + t_ * ots + b] =                               \
				_mm512_reduce_add_epi32(acc[r_][t_]);                \
			acc[r_][t_] = _mm512_setzero_si512();                        \
		}                                                                    \
		b++;                                                                 \
		next = next + blk < kpad ? next + blk : kpad;                        \
	} while (0)
	/* Unblocked tiles (one sum per row) reduce once at the end; keeping
	 * the check out of their loop keeps all accumulators in registers. */
#define TDOT_FLUSH(end)                                                              \
	do {                                                                         \
		if (BLOCKED && (end) == next)                                        \
			TDOT_FLUSH_ALL();                                            \
	} while (0)

	int64_t j = 0;
	for (; j < full; j += gw) {
		__m512i cur[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			cur[r] = _mm512_loadu_si512(w + r * ws + j / P);
			prefetch_at(w, pf + (size_t)r * ws + (size_t)(j / P));
		}
#pragma GCC unroll 16
		for (int p = 0; p < P; p++) {
			__m512i wv[4];
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				wv[r] = P == 4 ? t2_next(&cur[r]) : t3_next(&cur[r]);
#pragma GCC unroll 4
			for (int t = 0; t < T; t++) {
				__m512i av = _mm512_loadu_si512(a + t * as + j + 64 * p);
#pragma GCC unroll 4
				for (int r = 0; r < R; r++)
					acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], wv[r], av);
			}
			TDOT_FLUSH(j + 64 * (p + 1));
		}
	}
	if (j < kpad) {
		/* The half group: 32 bytes, zero-extended so 512-bit ops add
		 * nothing from the upper half (code 0 times activation 0). */
		__m512i cur[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			cur[r] = load_zext256(w + r * ws + j / P);
#pragma GCC unroll 16
		for (int p = 0; p < P; p++) {
			__m512i wv[4];
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				wv[r] = P == 4 ? t2_next(&cur[r]) : t3_next(&cur[r]);
#pragma GCC unroll 4
			for (int t = 0; t < T; t++) {
				__m512i av = load_zext256(a + t * as + j + 32 * p);
#pragma GCC unroll 4
				for (int r = 0; r < R; r++)
					acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], wv[r], av);
			}
			TDOT_FLUSH(j + 32 * (p + 1));
		}
	}
	if (!BLOCKED)
		TDOT_FLUSH_ALL();
#undef TDOT_FLUSH
#undef TDOT_FLUSH_ALL
}

/*
 * T3 for one token, without decoding trits (t3_row, below). With q_0 the stored
 * byte and q_{p+1} = 3 q_p mod 256, trit p is t_p = (3 q_p - q_{p+1}) / 256,
 * so sum_p t_p a_p = (3 sum_p q_p a_p - sum_p q_{p+1} a_p) / 256: two
 * vpdpbusd per slice on the bytes q_p themselves (two vpaddb each), no
 * compares or lookups. The identity holds per byte, so each int32 lane of
 * 3 * acc3 - acc1 is exactly 256 times that lane's share of the dot
 * product; the lanes wrap freely while they accumulate, and the true
 * value of a lane grows by at most 256 * 5 * 4 * 2 * 128 per group, so
 * it is shifted down into `fin` every 1024 groups, long before it could
 * leave int32.
 */
#define T3L_FOLD_GROUPS 1024


/* Slice p of a group for the one-token rows, left in place: its codes
 * times 4^p. Masking without the shift saves the 3 shifts of a group
 * (from L1, 1.10-1.13 -> 0.94-1.00 ns per 64 bytes, one thread), and since
 * each slice has its own accumulator, the 4^p comes off exactly at the
 * end: every lane of acc[p] is a sum of multiples of 4^p, so an
 * arithmetic shift by 2p divides it exactly. A lane sums 4 products of at
 * most 128 x 128 per group (valid codes are 0..2): 2^31 allows 32768
 * groups, 8 million inputs, twice the longest row matmul.c takes
 * (MAX_KPAD_TERNARY, 2^22). */
KINLINE __m512i t2_slice(__m512i c, int p)
{
	return _mm512_and_si512(c, _mm512_set1_epi8((char)(3 << (2 * p))));
}

/*
 * One token (decode): rows one after another, so the weights stream in
 * address order. Hardware prefetchers follow one sequential stream far
 * better than the R short interleaved ones of a tile: on the Zen 5 VM of
 * docs/BENCHMARKS.md the int8 head GEMV read 58-62% of the probe's
 * bandwidth in 4-row tiles and 83-95% row by row. Each slice position
 * gets its own accumulator so a row's vpdpbusd do not wait on each other.
 * Outputs as the tiles': out[r * nb + b].
 */
KINLINE void t2_row(const uint8_t *w, const int8_t *a, int64_t kpad, int64_t blk, int32_t *out,
		    size_t pf, const int BLOCKED)
{
	__m512i acc[4];
#pragma GCC unroll 4
	for (int p = 0; p < 4; p++)
		acc[p] = _mm512_setzero_si512();
	const int64_t full = kpad / 256 * 256;
	int64_t next = blk < kpad ? blk : kpad;
	int64_t b = 0;
#define ROW_FLUSH()                                                                  \
	do {                                                                         \
		__m512i s_ = _mm512_add_epi32(                                       \
			_mm512_add_epi32(acc[0], _mm512_srai_epi32(acc[1], 2)),      \
			_mm512_add_epi32(_mm512_srai_epi32(acc[2], 4),               \
					 _mm512_srai_epi32(acc[3], 6)));             \
		out[b++] = _mm512_reduce_add_epi32(s_);                              \
		_Pragma("GCC unroll 4") for (int p_ = 0; p_ < 4; p_++) acc[p_] =     \
			_mm512_setzero_si512();                                      \
		next = next + blk < kpad ? next + blk : kpad;                        \
	} while (0)
	int64_t j = 0;
	if (!BLOCKED) {
		/* Two groups at a time, each with its own accumulators: the
		 * shift chains and vpdpbusd latencies of one row overlap. */
		__m512i acc2[4];
#pragma GCC unroll 4
		for (int p = 0; p < 4; p++)
			acc2[p] = _mm512_setzero_si512();
		for (; j + 512 <= full; j += 512) {
			__m512i c0 = _mm512_loadu_si512(w + j / 4);
			__m512i c1 = _mm512_loadu_si512(w + j / 4 + 64);
			prefetch_at(w, pf + (size_t)(j / 4));
			prefetch_at(w, pf + (size_t)(j / 4) + 64);
#pragma GCC unroll 4
			for (int p = 0; p < 4; p++) {
				acc[p] = _mm512_dpbusd_epi32(acc[p], t2_slice(c0, p),
							     _mm512_loadu_si512(a + j + 64 * p));
				acc2[p] = _mm512_dpbusd_epi32(
					acc2[p], t2_slice(c1, p), _mm512_loadu_si512(a + j + 256 + 64 * p));
			}
		}
#pragma GCC unroll 4
		for (int p = 0; p < 4; p++)
			acc[p] = _mm512_add_epi32(acc[p], acc2[p]);
	}
	for (; j < full; j += 256) {
		__m512i cur = _mm512_loadu_si512(w + j / 4);
		prefetch_at(w, pf + (size_t)(j / 4));
#pragma GCC unroll 4
		for (int p = 0; p < 4; p++) {
			acc[p] = _mm512_dpbusd_epi32(acc[p], t2_slice(cur, p),
						     _mm512_loadu_si512(a + j + 64 * p));
			if (BLOCKED && j + 64 * (p + 1) == next)
				ROW_FLUSH();
		}
	}
	if (j < kpad) {
		__m512i cur = load_zext256(w + j / 4);
#pragma GCC unroll 4
		for (int p = 0; p < 4; p++) {
			acc[p] = _mm512_dpbusd_epi32(acc[p], t2_slice(cur, p),
						     load_zext256(a + j + 32 * p));
			if (BLOCKED && j + 32 * (p + 1) == next)
				ROW_FLUSH();
		}
	}
	if (!BLOCKED)
		ROW_FLUSH();
#undef ROW_FLUSH
}

#define ROW_TILES(pre)                                                                       \
	static void pre##_rows(const uint8_t *w, size_t ws, int64_t nrows, const int8_t *a,     \
			       int64_t kpad, int64_t blk, int32_t *out)                         \
	{                                                                                    \
		const int64_t nb = (kpad + blk - 1) / blk;                                   \
		const size_t pf = prefetch_distance(1, ws);                                  \
		for (int64_t r = 0; r < nrows; r++) {                                        \
			if (blk < kpad)                                                      \
				pre##_row(w + (size_t)r * ws, a, kpad, blk, out + r * nb, pf, 1); \
			else                                                                 \
				pre##_row(w + (size_t)r * ws, a, kpad, blk, out + r * nb, pf, 0); \
		}                                                                            \
	}

/* T3 without decoding, as explained above T3L_FOLD_GROUPS, with separate
 * accumulator pairs per slice: 3 acc3[p] - acc1[p] is 256 times slice p's
 * share exactly, so the pairs may be summed in any grouping at a fold. */
KINLINE void t3_row(const uint8_t *w, const int8_t *a, int64_t kpad, int64_t blk, int32_t *out,
		    size_t pf, const int BLOCKED)
{
	__m512i acc3[5], acc1[5], fin = _mm512_setzero_si512();
#pragma GCC unroll 5
	for (int p = 0; p < 5; p++)
		acc3[p] = acc1[p] = _mm512_setzero_si512();
	const int64_t full = kpad / 320 * 320;
	int64_t next = blk < kpad ? blk : kpad;
	int64_t b = 0;
	int groups = 0;
#define ROW_FOLD()                                                                   \
	do {                                                                         \
		__m512i v_ = _mm512_setzero_si512();                                 \
		_Pragma("GCC unroll 5") for (int p_ = 0; p_ < 5; p_++)               \
		{                                                                    \
			__m512i t_ = _mm512_add_epi32(acc3[p_], acc3[p_]);           \
			t_ = _mm512_sub_epi32(_mm512_add_epi32(t_, acc3[p_]), acc1[p_]); \
			v_ = _mm512_add_epi32(v_, t_);                               \
			acc3[p_] = acc1[p_] = _mm512_setzero_si512();                \
		}                                                                    \
		fin = _mm512_add_epi32(fin, _mm512_srai_epi32(v_, 8));               \
	} while (0)
#define ROW_FLUSH()                                                                  \
	do {                                                                         \
		ROW_FOLD();                                                          \
		out[b++] = _mm512_reduce_add_epi32(fin);                             \
		fin = _mm512_setzero_si512();                                        \
		next = next + blk < kpad ? next + blk : kpad;                        \
	} while (0)
	int64_t j = 0;
	if (!BLOCKED) {
		/* Two groups at a time with their own accumulator pairs: one
		 * row's q -> 3q chain is 10 dependent byte adds per group, so
		 * a lone group would wait on it. */
		__m512i b3[5], b1[5];
#pragma GCC unroll 5
		for (int p = 0; p < 5; p++)
			b3[p] = b1[p] = _mm512_setzero_si512();
		for (; j + 640 <= full; j += 640) {
			__m512i q0 = _mm512_loadu_si512(w + j / 5);
			__m512i q1 = _mm512_loadu_si512(w + j / 5 + 64);
			prefetch_at(w, pf + (size_t)(j / 5));
			prefetch_at(w, pf + (size_t)(j / 5) + 64);
#pragma GCC unroll 5
			for (int p = 0; p < 5; p++) {
				__m512i a0 = _mm512_loadu_si512(a + j + 64 * p);
				__m512i a1 = _mm512_loadu_si512(a + j + 320 + 64 * p);
				acc3[p] = _mm512_dpbusd_epi32(acc3[p], q0, a0);
				b3[p] = _mm512_dpbusd_epi32(b3[p], q1, a1);
				q0 = _mm512_add_epi8(_mm512_add_epi8(q0, q0), q0);
				q1 = _mm512_add_epi8(_mm512_add_epi8(q1, q1), q1);
				acc1[p] = _mm512_dpbusd_epi32(acc1[p], q0, a0);
				b1[p] = _mm512_dpbusd_epi32(b1[p], q1, a1);
			}
			groups += 2;
			if (groups >= T3L_FOLD_GROUPS) {
				/* Each pair is exact on its own (see above). */
#pragma GCC unroll 5
				for (int p = 0; p < 5; p++) {
					acc3[p] = _mm512_add_epi32(acc3[p], b3[p]);
					acc1[p] = _mm512_add_epi32(acc1[p], b1[p]);
					b3[p] = b1[p] = _mm512_setzero_si512();
				}
				ROW_FOLD();
				groups = 0;
			}
		}
#pragma GCC unroll 5
		for (int p = 0; p < 5; p++) {
			acc3[p] = _mm512_add_epi32(acc3[p], b3[p]);
			acc1[p] = _mm512_add_epi32(acc1[p], b1[p]);
		}
	}
	for (; j < full; j += 320) {
		__m512i q = _mm512_loadu_si512(w + j / 5);
		prefetch_at(w, pf + (size_t)(j / 5));
#pragma GCC unroll 5
		for (int p = 0; p < 5; p++) {
			__m512i av = _mm512_loadu_si512(a + j + 64 * p);
			acc3[p] = _mm512_dpbusd_epi32(acc3[p], q, av);
			q = _mm512_add_epi8(_mm512_add_epi8(q, q), q);
			acc1[p] = _mm512_dpbusd_epi32(acc1[p], q, av);
			if (BLOCKED && j + 64 * (p + 1) == next)
				ROW_FLUSH();
		}
		if (++groups == T3L_FOLD_GROUPS) {
			ROW_FOLD();
			groups = 0;
		}
	}
	if (j < kpad) {
		__m512i q = load_zext256(w + j / 5);
#pragma GCC unroll 5
		for (int p = 0; p < 5; p++) {
			__m512i av = load_zext256(a + j + 32 * p);
			acc3[p] = _mm512_dpbusd_epi32(acc3[p], q, av);
			q = _mm512_add_epi8(_mm512_add_epi8(q, q), q);
			acc1[p] = _mm512_dpbusd_epi32(acc1[p], q, av);
			if (BLOCKED && j + 32 * (p + 1) == next)
				ROW_FLUSH();
		}
	}
	if (!BLOCKED)
		ROW_FLUSH();
#undef ROW_FLUSH
#undef ROW_FOLD
}

ROW_TILES(t2)
ROW_TILES(t3)

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
	TDOT_TILE(pre##_u44, P, 4, 4, 0)                                                     \
	TDOT_TILE(pre##_u41, P, 4, 1, 0)                                                     \
	TDOT_TILE(pre##_u14, P, 1, 4, 0)                                                     \
	TDOT_TILE(pre##_u11, P, 1, 1, 0)                                                     \
	TDOT_TILE(pre##_b44, P, 4, 4, 1)                                                     \
	TDOT_TILE(pre##_b41, P, 4, 1, 1)                                                     \
	TDOT_TILE(pre##_b14, P, 1, 4, 1)                                                     \
	TDOT_TILE(pre##_b11, P, 1, 1, 1)                                                     \
	static const tdot_tile_fn pre##_tiles[2][4] = {                                      \
		{ pre##_u44, pre##_u41, pre##_u14, pre##_u11 },                              \
		{ pre##_b44, pre##_b41, pre##_b14, pre##_b11 },                              \
	};

TDOT_TILES(t2, 4)

/* T3 tiles: four tokens share each decoded slice (tdot_tile); a single
 * token's rows go through t3_row one after another, decoding nothing. */
#define T3_ROW_TILE(name, R, B)                                                              \
	static void name(const uint8_t *w, size_t ws, const int8_t *a, size_t as, int64_t kpad, \
			 int64_t blk, int32_t *out, int64_t ors, int64_t ots)                   \
	{                                                                                    \
		(void)as;                                                                    \
		(void)ots;                                                                   \
		const size_t pf = prefetch_distance(1, ws);                                  \
		for (int r = 0; r < (R); r++)                                                \
			t3_row(w + (size_t)r * ws, a, kpad, blk, out + r * ors, pf, B);      \
	}

TDOT_TILE(t3_u44, 5, 4, 4, 0)
TDOT_TILE(t3_u14, 5, 1, 4, 0)
TDOT_TILE(t3_b44, 5, 4, 4, 1)
TDOT_TILE(t3_b14, 5, 1, 4, 1)
T3_ROW_TILE(t3_u41, 4, 0)
T3_ROW_TILE(t3_u11, 1, 0)
T3_ROW_TILE(t3_b41, 4, 1)
T3_ROW_TILE(t3_b11, 1, 1)
static const tdot_tile_fn t3_tiles[2][4] = {
	{ t3_u44, t3_u41, t3_u14, t3_u11 },
	{ t3_b44, t3_b41, t3_b14, t3_b11 },
};

/*
 * Covers nrows x ntok with 4x4 tiles and narrower ones at the edges.
 * Tokens are the outer loop: a block of 4 tokens' activations stays in L1
 * while the (4x smaller) weight rows stream past it.
 */
static void tdot_run(const tdot_tile_fn tiles[2][4], const uint8_t *w, size_t ws, int64_t nrows,
		     const int8_t *a, size_t as, int64_t ntok, int64_t kpad, int64_t blk,
		     int32_t *out)
{
	const int64_t nb = (kpad + blk - 1) / blk;
	const int64_t ors = ntok * nb;
	const tdot_tile_fn *tl = tiles[blk < kpad];
	for (int64_t t0 = 0; t0 < ntok; t0 += 4) {
		int64_t nt = ntok - t0 < 4 ? ntok - t0 : 4;
		const int8_t *at = a + t0 * as;
		for (int64_t r0 = 0; r0 < nrows; r0 += 4) {
			int64_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
			const uint8_t *wr = w + r0 * ws;
			int32_t *o = out + r0 * ors + t0 * nb;
			if (nr == 4 && nt == 4) {
				tl[0](wr, ws, at, as, kpad, blk, o, ors, nb);
			} else if (nr == 4) {
				for (int64_t t = 0; t < nt; t++)
					tl[1](wr, ws, at + t * as, as, kpad, blk, o + t * nb, ors, nb);
			} else if (nt == 4) {
				for (int64_t r = 0; r < nr; r++)
					tl[2](wr + r * ws, ws, at, as, kpad, blk, o + r * ors, ors, nb);
			} else {
				for (int64_t r = 0; r < nr; r++)
					for (int64_t t = 0; t < nt; t++)
						tl[3](wr + r * ws, ws, at + t * as, as, kpad, blk,
						      o + r * ors + t * nb, ors, nb);
			}
		}
	}
}

static void t2_dot_avx512(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			  size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out)
{
	if (ntok == 1) {
		t2_rows(w, w_stride, nrows, a, kpad, blk, out);
		return;
	}
	tdot_run(t2_tiles, w, w_stride, nrows, a, a_stride, ntok, kpad, blk, out);
}

/*
 * T3 for several tokens: the trits of T3_RB rows x T3_KC weights are
 * decoded once into a byte buffer (20 KiB, stays in L1) and every token
 * block then runs the plain u8-code x int8 loop on it, one vpdpbusd per
 * 64 weights, so the decoding is shared by all the tokens of the call.
 * The activations stream from L2, each vector serving 8 rows. T3_KC is a
 * multiple of the 320-weight group, so chunks start on groups and only
 * the last one can end in a half group; blocks straddling a chunk
 * boundary get their sums added in two parts.
 */
#ifndef T3_KC
#define T3_KC 2560
#endif
#define T3_RB 8

static void t3_decode_rows(const uint8_t *w, size_t ws, int64_t nr, int64_t j0, int64_t j1,
			   int64_t full, uint8_t *buf)
{
	for (int64_t r = 0; r < nr; r++) {
		const uint8_t *wr = w + r * ws;
		uint8_t *o = buf + r * T3_KC - j0;
		int64_t j = j0;
		for (; j < j1 && j < full; j += 320) {
			__m512i q = _mm512_loadu_si512(wr + j / 5);
#pragma GCC unroll 5
			for (int p = 0; p < 5; p++)
				_mm512_storeu_si512(o + j + 64 * p, t3_next(&q));
		}
		if (j < j1) {
			__m512i q = load_zext256(wr + j / 5);
#pragma GCC unroll 5
			for (int p = 0; p < 5; p++)
				_mm256_storeu_si256((__m256i *)(o + j + 32 * p),
						    _mm512_castsi512_si256(t3_next(&q)));
		}
	}
}

/*
 * The same with VBMI (Ice Lake, Zen 4 and later; Skylake-X and Cascade
 * Lake lack it): trit p of every byte comes from two 128-entry vpermi2b
 * lookups, the first filling the bytes >= 128 and leaving the others as
 * their own index for the second. About twice as fast as the compares,
 * which matters because this pass does not overlap the tiles' vpdpbusd.
 * The tables are built with t3_next from the byte values themselves.
 */
#define TARGET_VBMI __attribute__((target("avx512vbmi")))

typedef struct t3_tabs {
	__m512i v[20]; /* v[4p + h]: trit p of the bytes 64h .. 64h + 63 */
} t3_tabs;

static void t3_tabs_make(t3_tabs *tb)
{
	const __m512i iota = _mm512_set_epi8(63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51,
					     50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38,
					     37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25,
					     24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12,
					     11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
	for (int h = 0; h < 4; h++) {
		__m512i q = _mm512_add_epi8(iota, _mm512_set1_epi8((char)(64 * h)));
		for (int p = 0; p < 5; p++)
			tb->v[4 * p + h] = t3_next(&q);
	}
}

static inline __attribute__((always_inline)) TARGET_VBMI __m512i
t3_lookup(const t3_tabs *tb, __m512i q, __mmask64 hi, int p)
{
	__m512i t = _mm512_mask2_permutex2var_epi8(tb->v[4 * p + 2], q, hi, tb->v[4 * p + 3]);
	return _mm512_mask2_permutex2var_epi8(tb->v[4 * p], t, (__mmask64)~hi, tb->v[4 * p + 1]);
}

TARGET_VBMI static void t3_decode_rows_vbmi(const uint8_t *w, size_t ws, int64_t nr, int64_t j0,
					    int64_t j1, int64_t full, uint8_t *buf)
{
	t3_tabs tb;
	t3_tabs_make(&tb);
	for (int64_t r = 0; r < nr; r++) {
		const uint8_t *wr = w + r * ws;
		uint8_t *o = buf + r * T3_KC - j0;
		int64_t j = j0;
		for (; j < j1 && j < full; j += 320) {
			__m512i q = _mm512_loadu_si512(wr + j / 5);
			__mmask64 hi = _mm512_movepi8_mask(q);
#pragma GCC unroll 5
			for (int p = 0; p < 5; p++)
				_mm512_storeu_si512(o + j + 64 * p, t3_lookup(&tb, q, hi, p));
		}
		if (j < j1) {
			__m512i q = load_zext256(wr + j / 5);
			__mmask64 hi = _mm512_movepi8_mask(q);
#pragma GCC unroll 5
			for (int p = 0; p < 5; p++)
				_mm256_storeu_si256((__m256i *)(o + j + 32 * p),
						    _mm512_castsi512_si256(t3_lookup(&tb, q, hi, p)));
		}
	}
}

typedef void (*t3_decode_fn)(const uint8_t *w, size_t ws, int64_t nr, int64_t j0, int64_t j1,
			     int64_t full, uint8_t *buf);

/* R rows (codes T3_KC apart in c) x T tokens over weights [j0, j1), adding
 * each block's sum into out[r*ors + t*ots + b]. Steps are 64 weights but
 * for a last 32 at kpad; j0 is a multiple of 64 and blocks end on
 * multiples of 128 or at kpad, so they end on a step. */
KINLINE void u8_tile(const uint8_t *c, const int8_t *a, size_t as, int64_t j0, int64_t j1,
		     int64_t kpad, int64_t blk, int32_t *out, int64_t ors, int64_t ots, const int R,
		     const int T)
{
	__m512i acc[8][4];
#pragma GCC unroll 8
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm512_setzero_si512();
	int64_t b = j0 / blk;
	int64_t next = (b + 1) * blk < kpad ? (b + 1) * blk : kpad;
	if (next > j1)
		next = j1;
	int64_t j = j0;
	c -= j0;
	for (;;) {
		/* The last step of kpad may be 32 weights: a partial block end
		 * or j1 always falls on 64 weights otherwise. */
		for (; j + 64 <= next; j += 64) {
#pragma GCC unroll 4
			for (int t = 0; t < T; t++) {
				__m512i av = _mm512_loadu_si512(a + t * as + j);
#pragma GCC unroll 8
				for (int r = 0; r < R; r++)
					acc[r][t] = _mm512_dpbusd_epi32(
						acc[r][t], _mm512_loadu_si512(c + r * T3_KC + j), av);
			}
		}
		if (j < next) {
#pragma GCC unroll 4
			for (int t = 0; t < T; t++) {
				__m512i av = load_zext256(a + t * as + j);
#pragma GCC unroll 8
				for (int r = 0; r < R; r++)
					acc[r][t] = _mm512_dpbusd_epi32(
						acc[r][t], load_zext256(c + r * T3_KC + j), av);
			}
			j = next;
		}
#pragma GCC unroll 8
		for (int r = 0; r < R; r++)
#pragma GCC unroll 4
			for (int t = 0; t < T; t++) {
				out[r * ors + t * ots + b] += _mm512_reduce_add_epi32(acc[r][t]);
				acc[r][t] = _mm512_setzero_si512();
			}
		if (j == j1)
			break;
		b++;
		next = next + blk < j1 ? next + blk : j1;
	}
}

typedef void (*u8_tile_fn)(const uint8_t *c, const int8_t *a, size_t as, int64_t j0, int64_t j1,
			   int64_t kpad, int64_t blk, int32_t *out, int64_t ors, int64_t ots);

#define U8_TILE(name, R, T)                                                                  \
	static void name(const uint8_t *c, const int8_t *a, size_t as, int64_t j0, int64_t j1, \
			 int64_t kpad, int64_t blk, int32_t *out, int64_t ors, int64_t ots)    \
	{                                                                                    \
		u8_tile(c, a, as, j0, j1, kpad, blk, out, ors, ots, R, T);                   \
	}

U8_TILE(u8_tile_8x2, 8, 2)
U8_TILE(u8_tile_8x1, 8, 1)
U8_TILE(u8_tile_4x4, 4, 4)
U8_TILE(u8_tile_4x1, 4, 1)
U8_TILE(u8_tile_1x4, 1, 4)
U8_TILE(u8_tile_1x1, 1, 1)

/* The nr (<= 8) rows decoded in c x ntok tokens over [j0, j1): 8x2 tiles
 * for a full block of rows, 4x4 and single rows for the rest. */
static void u8_rows(const uint8_t *c, int64_t nr, const int8_t *a, size_t as, int64_t ntok,
		    int64_t j0, int64_t j1, int64_t kpad, int64_t blk, int32_t *out, int64_t ors,
		    int64_t nb)
{
	int64_t r = 0;
	if (nr == 8) {
		int64_t t = 0;
		for (; t + 2 <= ntok; t += 2)
			u8_tile_8x2(c, a + t * as, as, j0, j1, kpad, blk, out + t * nb, ors, nb);
		if (t < ntok)
			u8_tile_8x1(c, a + t * as, as, j0, j1, kpad, blk, out + t * nb, ors, nb);
		return;
	}
	for (; r + 4 <= nr; r += 4) {
		int64_t t = 0;
		for (; t + 4 <= ntok; t += 4)
			u8_tile_4x4(c + r * T3_KC, a + t * as, as, j0, j1, kpad, blk,
				    out + r * ors + t * nb, ors, nb);
		for (; t < ntok; t++)
			u8_tile_4x1(c + r * T3_KC, a + t * as, as, j0, j1, kpad, blk,
				    out + r * ors + t * nb, ors, nb);
	}
	for (; r < nr; r++) {
		int64_t t = 0;
		for (; t + 4 <= ntok; t += 4)
			u8_tile_1x4(c + r * T3_KC, a + t * as, as, j0, j1, kpad, blk,
				    out + r * ors + t * nb, ors, nb);
		for (; t < ntok; t++)
			u8_tile_1x1(c + r * T3_KC, a + t * as, as, j0, j1, kpad, blk,
				    out + r * ors + t * nb, ors, nb);
	}
}

/* The next block's packed bytes (rows r0.. of chunk [j0, j1), or the next
 * chunk's first rows) are fetched while the tiles run on this block: the
 * short per-row runs are too short for the hardware prefetcher, and the
 * decoding pass would otherwise wait on them. */
static void t3_prefetch_next(const uint8_t *w, size_t ws, int64_t nrows, int64_t r0, int64_t j0,
			     int64_t j1, int64_t kpad)
{
	if (r0 >= nrows) {
		if (j1 >= kpad)
			return;
		r0 = 0;
		j0 = j1;
		j1 = kpad - j0 < T3_KC ? kpad : j0 + T3_KC;
	}
	const int64_t nr = nrows - r0 < T3_RB ? nrows - r0 : T3_RB;
	for (int64_t r = r0; r < r0 + nr; r++)
		for (int64_t off = j0 / 5; off < j1 / 5; off += 64)
			prefetch_at(w, (size_t)r * ws + (size_t)off);
}

static void t3_dot_decoded(const uint8_t *w, size_t ws, int64_t nrows, const int8_t *a,
			   size_t as, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out,
			   t3_decode_fn decode)
{
	_Alignas(64) uint8_t buf[T3_RB * T3_KC];
	const int64_t nb = (kpad + blk - 1) / blk;
	const int64_t ors = ntok * nb;
	const int64_t full = kpad / 320 * 320;
	memset(out, 0, sizeof(int32_t) * (size_t)(nrows * ntok * nb));
	/* Chunks outer: one chunk of every token's activations (ntok x T3_KC
	 * bytes) stays in L2 while the rows pass. */
	for (int64_t j0 = 0; j0 < kpad; j0 += T3_KC) {
		const int64_t j1 = kpad - j0 < T3_KC ? kpad : j0 + T3_KC;
		for (int64_t r0 = 0; r0 < nrows; r0 += T3_RB) {
			const int64_t nr = nrows - r0 < T3_RB ? nrows - r0 : T3_RB;
			decode(w + r0 * ws, ws, nr, j0, j1, full, buf);
			t3_prefetch_next(w, ws, nrows, r0 + T3_RB, j0, j1, kpad);
			u8_rows(buf, nr, a, as, ntok, j0, j1, kpad, blk, out + r0 * ors, ors, nb);
		}
	}
}

/* From this many tokens on, t3_dot_decoded's separate decoding pass costs
 * less than the tiles' decoding per 4 tokens (measured on Zen 5). */
#ifndef T3_DECODED_MIN_TOK
#define T3_DECODED_MIN_TOK 16
#endif

/* T3's three routes by token count; `decode` is the 16+ token decoder. */
KINLINE void t3_dot_route(const uint8_t *w, size_t ws, int64_t nrows, const int8_t *a,
			  size_t as, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out,
			  t3_decode_fn decode)
{
	if (ntok == 1)
		t3_rows(w, ws, nrows, a, kpad, blk, out);
	else if (ntok >= T3_DECODED_MIN_TOK)
		t3_dot_decoded(w, ws, nrows, a, as, ntok, kpad, blk, out, decode);
	else
		tdot_run(t3_tiles, w, ws, nrows, a, as, ntok, kpad, blk, out);
}

static void t3_dot_avx512(const uint8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			  size_t a_stride, int64_t ntok, int64_t kpad, int64_t blk, int32_t *out)
{
	t3_dot_route(w, w_stride, nrows, a, a_stride, ntok, kpad, blk, out, t3_decode_rows);
}

static void t3_dot_avx512_vbmi(const uint8_t *w, size_t w_stride, int64_t nrows,
			       const int8_t *a, size_t a_stride, int64_t ntok, int64_t kpad,
			       int64_t blk, int32_t *out)
{
	t3_dot_route(w, w_stride, nrows, a, a_stride, ntok, kpad, blk, out, t3_decode_rows_vbmi);
}

/* ---- 4-bit x int8 ----------------------------------------------------- */

/* Up to 16 scales (f16 or f32) as floats, lanes from n on zero. */
KINLINE __m512 i4_scales16(const void *s, bool f16, int n)
{
	const __mmask16 m = (__mmask16)((1u << n) - 1);
	if (f16)
		return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s));
	return _mm512_maskz_loadu_ps(m, s);
}

/*
 * R rows x T tokens. A 64-byte group gives two vectors of nibbles (its low
 * nibbles are weights 0..63, the high ones 64..127), multiplied as unsigned
 * codes c = q + 8 with vpdpbusd into one int32 vector per row and token.
 * That vector is the group's dot in 16 partial sums, so it is converted and
 * multiply-added with the group's broadcast scale as it is: no horizontal
 * sum per group. Every 16 groups the +8 of the codes is taken back, as
 * 16 lanes of -8 * (activation sum of a group) times the group's scale,
 * into the same float lanes; the lanes are summed once at the end. Lane
 * sums are at most 8 * 15 * 128 per group, far inside int32 and exact in
 * float. The float operations per (row, token) are the same for every
 * tile shape, so results do not depend on the tiling.
 */
KINLINE void i4_tile(const uint8_t *w, size_t ws, const uint8_t *s, size_t ss, bool f16,
		     const int8_t *a, size_t as, const int32_t *bsum, int64_t ng, float *out,
		     int64_t ors, const int R, const int T)
{
	__m512 acc[4][4];
	const __m512i nib = _mm512_set1_epi8(0x0f);
	const size_t pf = prefetch_distance(R, ws);
	const size_t sb = f16 ? 2 : 4;
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm512_setzero_ps();
	for (int64_t g0 = 0; g0 < ng; g0 += 16) {
		const int n = ng - g0 < 16 ? (int)(ng - g0) : 16;
		float sc[4][16] __attribute__((aligned(64)));
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			_mm512_store_ps(sc[r], i4_scales16(s + r * ss + (size_t)g0 * sb, f16, n));
		for (int g = 0; g < n; g++) {
			const int64_t j = (g0 + g) * 128;
			__m512i lo[4], hi[4];
#pragma GCC unroll 4
			for (int r = 0; r < R; r++) {
				__m512i b = _mm512_loadu_si512(w + r * ws + j / 2);
				prefetch_at(w, pf + (size_t)r * ws + (size_t)(j / 2));
				lo[r] = _mm512_and_si512(b, nib);
				hi[r] = _mm512_and_si512(_mm512_srli_epi16(b, 4), nib);
			}
#pragma GCC unroll 4
			for (int t = 0; t < T; t++) {
				const __m512i a0 = _mm512_loadu_si512(a + t * as + j);
				const __m512i a1 = _mm512_loadu_si512(a + t * as + j + 64);
#pragma GCC unroll 4
				for (int r = 0; r < R; r++) {
					__m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[r], a0);
					d = _mm512_dpbusd_epi32(d, hi[r], a1);
					acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d),
								    _mm512_set1_ps(sc[r][g]), acc[r][t]);
				}
			}
		}
		const __mmask16 m = (__mmask16)((1u << n) - 1);
#pragma GCC unroll 4
		for (int t = 0; t < T; t++) {
			const __m512 off = _mm512_mul_ps(
				_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, bsum + t * ng + g0)),
				_mm512_set1_ps(-8.0f));
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm512_fmadd_ps(_mm512_load_ps(sc[r]), off, acc[r][t]);
		}
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int t = 0; t < T; t++)
			out[r * ors + t] = _mm512_reduce_add_ps(acc[r][t]);
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

I4_TILE(i4_tile_4x4, 4, 4)
I4_TILE(i4_tile_4x1, 4, 1)
I4_TILE(i4_tile_1x4, 1, 4)
I4_TILE(i4_tile_1x1, 1, 1)

/* 4 x 4 tiles, narrower ones at the edges; tokens outer, as tdot_run. One
 * token (decode) goes row by row through 1 x 1 tiles, so the weights
 * stream in address order (see t2_row): the 128256 x 2560 head GEMV read
 * 69% of the probe's bandwidth in 4 x 1 tiles and 95% row by row. The
 * float steps per (row, token) are those of every tile, so results do
 * not change. */
static void i4_dot_avx512(const uint8_t *w, size_t w_stride, const void *scales, size_t s_stride,
			  bool f16, int64_t nrows, const int8_t *a, size_t a_stride,
			  const int32_t *bsum, int64_t ntok, int64_t kpad, float *out)
{
	const int64_t ng = kpad / 128;
	const uint8_t *s = scales;
	for (int64_t t0 = 0; t0 < ntok; t0 += 4) {
		const int64_t nt = ntok - t0 < 4 ? ntok - t0 : 4;
		const int8_t *at = a + t0 * a_stride;
		const int32_t *bt = bsum + t0 * ng;
		for (int64_t r0 = 0; r0 < nrows; r0 += 4) {
			const int64_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
			const uint8_t *wr = w + r0 * w_stride;
			const uint8_t *sr = s + r0 * s_stride;
			float *o = out + r0 * ntok + t0;
			if (nr == 4 && nt == 4) {
				i4_tile_4x4(wr, w_stride, sr, s_stride, f16, at, a_stride, bt, ng, o,
					    ntok);
			} else if (nr == 4 && ntok > 1) {
				for (int64_t t = 0; t < nt; t++)
					i4_tile_4x1(wr, w_stride, sr, s_stride, f16, at + t * a_stride,
						    a_stride, bt + t * ng, ng, o + t, ntok);
			} else if (nt == 4) {
				for (int64_t r = 0; r < nr; r++)
					i4_tile_1x4(wr + r * w_stride, w_stride, sr + r * s_stride,
						    s_stride, f16, at, a_stride, bt, ng, o + r * ntok,
						    ntok);
			} else {
				for (int64_t r = 0; r < nr; r++)
					for (int64_t t = 0; t < nt; t++)
						i4_tile_1x1(wr + r * w_stride, w_stride,
							    sr + r * s_stride, s_stride, f16,
							    at + t * a_stride, a_stride, bt + t * ng,
							    ng, o + r * ntok + t, ntok);
			}
		}
	}
}

/* ---- int8 x int8 ------------------------------------------------------ */

/* Mask of the first n (1..63) bytes of a 64-byte vector. */
KINLINE __mmask64 tail_mask64(int64_t n)
{
	return (__mmask64)(~0ull >> (64 - n));
}

/*
 * vpdpbusd wants one unsigned operand, so weights are flipped to w + 128
 * (xor 0x80) and 128 * sum(a) is taken off at the end. Intermediate sums
 * may wrap; the arithmetic is modulo 2^32 and the true result fits in
 * int32 (|w*a| <= 2^14, k < 2^17), so the final value is exact.
 */
KINLINE void i8_tile(const int8_t *w, size_t ws, const int8_t *a, size_t as, int64_t k,
		     const uint32_t *asum, int32_t *out, int64_t ors, const int R, const int T)
{
	__m512i acc[4][4];
	const __m512i flip = _mm512_set1_epi8((char)0x80);
	const size_t pf = prefetch_distance(R, ws);
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm512_setzero_si512();
	int64_t j = 0;
	for (; j + 64 <= k; j += 64) {
		__m512i wv[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			wv[r] = _mm512_xor_si512(_mm512_loadu_si512(w + r * ws + j), flip);
			prefetch_at(w, pf + (size_t)r * ws + (size_t)j);
		}
#pragma GCC unroll 4
		for (int t = 0; t < T; t++) {
			__m512i av = _mm512_loadu_si512(a + t * as + j);
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], wv[r], av);
		}
	}
	if (j < k) {
		/* Masked-off weight bytes become 128 after the flip, but their
		 * activations are loaded as 0, so they add nothing. */
		__mmask64 m = tail_mask64(k - j);
		__m512i wv[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			wv[r] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, w + r * ws + j), flip);
#pragma GCC unroll 4
		for (int t = 0; t < T; t++) {
			__m512i av = _mm512_maskz_loadu_epi8(m, a + t * as + j);
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm512_dpbusd_epi32(acc[r][t], wv[r], av);
		}
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int t = 0; t < T; t++) {
			uint32_t s = (uint32_t)_mm512_reduce_add_epi32(acc[r][t]);
			out[r * ors + t] = (int32_t)(s - 128u * asum[t]);
		}
}

typedef void (*i8_tile_fn)(const int8_t *w, size_t ws, const int8_t *a, size_t as, int64_t k,
			   const uint32_t *asum, int32_t *out, int64_t ors);

#define I8_TILE(name, R, T)                                                                  \
	static void name(const int8_t *w, size_t ws, const int8_t *a, size_t as, int64_t k,   \
			 const uint32_t *asum, int32_t *out, int64_t ors)                     \
	{                                                                                    \
		i8_tile(w, ws, a, as, k, asum, out, ors, R, T);                              \
	}

I8_TILE(i8_tile_4x4, 4, 4)
I8_TILE(i8_tile_4x1, 4, 1)
I8_TILE(i8_tile_1x4, 1, 4)
I8_TILE(i8_tile_1x1, 1, 1)

static uint32_t i8_sum(const int8_t *a, int64_t k)
{
	const __m512i ones = _mm512_set1_epi8(1);
	__m512i acc = _mm512_setzero_si512();
	int64_t j = 0;
	for (; j + 64 <= k; j += 64)
		acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512(a + j));
	if (j < k)
		acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(tail_mask64(k - j), a + j));
	return (uint32_t)_mm512_reduce_add_epi32(acc);
}

/* One token, rows in address order (see t2_row): two accumulators per
 * row, the bytes flipped to unsigned as in i8_tile. */
static void i8_rows(const int8_t *w, size_t ws, int64_t nrows, const int8_t *a, int64_t k,
		    uint32_t asum, int32_t *out)
{
	const __m512i flip = _mm512_set1_epi8((char)0x80);
	const size_t pf = prefetch_distance(1, ws);
	for (int64_t r = 0; r < nrows; r++) {
		const int8_t *wr = w + (size_t)r * ws;
		__m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
		int64_t j = 0;
		for (; j + 128 <= k; j += 128) {
			prefetch_at(wr, pf + (size_t)j);
			prefetch_at(wr, pf + (size_t)j + 64);
			acc0 = _mm512_dpbusd_epi32(acc0,
						   _mm512_xor_si512(_mm512_loadu_si512(wr + j), flip),
						   _mm512_loadu_si512(a + j));
			acc1 = _mm512_dpbusd_epi32(
				acc1, _mm512_xor_si512(_mm512_loadu_si512(wr + j + 64), flip),
				_mm512_loadu_si512(a + j + 64));
		}
		if (j + 64 <= k) {
			prefetch_at(wr, pf + (size_t)j);
			acc0 = _mm512_dpbusd_epi32(acc0,
						   _mm512_xor_si512(_mm512_loadu_si512(wr + j), flip),
						   _mm512_loadu_si512(a + j));
			j += 64;
		}
		if (j < k) {
			/* Masked-off bytes become 128 after the flip against
			 * activations loaded as 0: they add nothing. */
			const __mmask64 m = tail_mask64(k - j);
			acc1 = _mm512_dpbusd_epi32(
				acc1, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, wr + j), flip),
				_mm512_maskz_loadu_epi8(m, a + j));
		}
		uint32_t sum = (uint32_t)_mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
		out[r] = (int32_t)(sum - 128u * asum);
	}
}

static void i8_dot_avx512(const int8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			  size_t a_stride, int64_t ntok, int64_t k, int32_t *out)
{
	if (ntok == 1) {
		i8_rows(w, w_stride, nrows, a, k, i8_sum(a, k), out);
		return;
	}
	for (int64_t t0 = 0; t0 < ntok; t0 += 4) {
		int64_t nt = ntok - t0 < 4 ? ntok - t0 : 4;
		const int8_t *at = a + t0 * a_stride;
		uint32_t asum[4];
		for (int64_t t = 0; t < nt; t++)
			asum[t] = i8_sum(at + t * a_stride, k);
		for (int64_t r0 = 0; r0 < nrows; r0 += 4) {
			int64_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
			const int8_t *wr = w + r0 * w_stride;
			int32_t *o = out + r0 * ntok + t0;
			if (nr == 4 && nt == 4) {
				i8_tile_4x4(wr, w_stride, at, a_stride, k, asum, o, ntok);
			} else if (nr == 4) {
				for (int64_t t = 0; t < nt; t++)
					i8_tile_4x1(wr, w_stride, at + t * a_stride, a_stride, k,
						    asum + t, o + t, ntok);
			} else if (nt == 4) {
				for (int64_t r = 0; r < nr; r++)
					i8_tile_1x4(wr + r * w_stride, w_stride, at, a_stride, k, asum,
						    o + r * ntok, ntok);
			} else {
				for (int64_t r = 0; r < nr; r++)
					for (int64_t t = 0; t < nt; t++)
						i8_tile_1x1(wr + r * w_stride, w_stride,
							    at + t * a_stride, a_stride, k, asum + t,
							    o + r * ntok + t, ntok);
			}
		}
	}
}

/* ---- float weights ---------------------------------------------------- */

/*
 * Every (row, token) dot is one 16-lane FMA chain over k in steps of 16,
 * a masked tail and a fixed reduction, whatever tile computes it, so the
 * result does not depend on how rows and tokens were split. As for the
 * ternary tiles, rows further on are prefetched while R rows are read.
 */
enum { W_F32, W_F16, W_BF16 };

KINLINE __m512 load_w16(const void *w, int64_t j, const int kind)
{
	if (kind == W_F32)
		return _mm512_loadu_ps((const float *)w + j);
	__m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + j));
	if (kind == W_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

KINLINE __m512 load_w16_tail(const void *w, int64_t j, __mmask16 m, const int kind)
{
	if (kind == W_F32)
		return _mm512_maskz_loadu_ps(m, (const float *)w + j);
	__m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)w + j);
	if (kind == W_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

KINLINE void fdot_tile(const void *w, size_t ws, const float *x, int64_t ldx, int64_t k,
		       float *y, int64_t ldy, const int kind, const int R, const int T)
{
	__m512 acc[4][4];
	const size_t pf = prefetch_distance(R, ws);
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int t = 0; t < T; t++)
			acc[r][t] = _mm512_setzero_ps();
	int64_t j = 0;
	for (; j + 16 <= k; j += 16) {
		__m512 wv[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++) {
			wv[r] = load_w16((const char *)w + r * ws, j, kind);
			prefetch_at(w, pf + (size_t)r * ws + (size_t)j * (kind == W_F32 ? 4 : 2));
		}
#pragma GCC unroll 4
		for (int t = 0; t < T; t++) {
			__m512 xv = _mm512_loadu_ps(x + t * ldx + j);
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
		}
	}
	if (j < k) {
		__mmask16 m = (__mmask16)((1u << (k - j)) - 1u);
		__m512 wv[4];
#pragma GCC unroll 4
		for (int r = 0; r < R; r++)
			wv[r] = load_w16_tail((const char *)w + r * ws, j, m, kind);
#pragma GCC unroll 4
		for (int t = 0; t < T; t++) {
			__m512 xv = _mm512_maskz_loadu_ps(m, x + t * ldx + j);
#pragma GCC unroll 4
			for (int r = 0; r < R; r++)
				acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
		}
	}
#pragma GCC unroll 4
	for (int r = 0; r < R; r++)
#pragma GCC unroll 4
		for (int t = 0; t < T; t++)
			y[t * ldy + r] = _mm512_reduce_add_ps(acc[r][t]);
}

typedef void (*fdot_tile_fn)(const void *w, size_t ws, const float *x, int64_t ldx, int64_t k,
			     float *y, int64_t ldy);

#define FDOT_TILE(name, kind, R, T)                                                          \
	static void name(const void *w, size_t ws, const float *x, int64_t ldx, int64_t k,    \
			 float *y, int64_t ldy)                                               \
	{                                                                                    \
		fdot_tile(w, ws, x, ldx, k, y, ldy, kind, R, T);                             \
	}

FDOT_TILE(f32_tile_4x4, W_F32, 4, 4)
FDOT_TILE(f32_tile_4x1, W_F32, 4, 1)
FDOT_TILE(f32_tile_1x4, W_F32, 1, 4)
FDOT_TILE(f32_tile_1x1, W_F32, 1, 1)
FDOT_TILE(f16_tile_4x4, W_F16, 4, 4)
FDOT_TILE(f16_tile_4x1, W_F16, 4, 1)
FDOT_TILE(f16_tile_1x4, W_F16, 1, 4)
FDOT_TILE(f16_tile_1x1, W_F16, 1, 1)
FDOT_TILE(bf16_tile_4x4, W_BF16, 4, 4)
FDOT_TILE(bf16_tile_4x1, W_BF16, 4, 1)
FDOT_TILE(bf16_tile_1x4, W_BF16, 1, 4)
FDOT_TILE(bf16_tile_1x1, W_BF16, 1, 1)

static void fdot_run(fdot_tile_fn t44, fdot_tile_fn t41, fdot_tile_fn t14, fdot_tile_fn t11,
		     const void *w, size_t ws, int64_t nrows, const float *x, int64_t ldx,
		     int64_t ntok, int64_t k, float *y, int64_t ldy)
{
	const char *wb = (const char *)w;
	for (int64_t t0 = 0; t0 < ntok; t0 += 4) {
		int64_t nt = ntok - t0 < 4 ? ntok - t0 : 4;
		const float *xt = x + t0 * ldx;
		for (int64_t r0 = 0; r0 < nrows; r0 += 4) {
			int64_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
			const char *wr = wb + r0 * ws;
			float *o = y + t0 * ldy + r0;
			if (nr == 4 && nt == 4) {
				t44(wr, ws, xt, ldx, k, o, ldy);
			} else if (nr == 4) {
				for (int64_t t = 0; t < nt; t++)
					t41(wr, ws, xt + t * ldx, ldx, k, o + t * ldy, ldy);
			} else if (nt == 4) {
				for (int64_t r = 0; r < nr; r++)
					t14(wr + r * ws, ws, xt, ldx, k, o + r, ldy);
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
		fdot_run(pre##_tile_4x4, pre##_tile_4x1, pre##_tile_1x4, pre##_tile_1x1, w,   \
			 w_stride, nrows, x, ldx, ntok, k, y, ldy);                           \
	}

FDOT_ENTRY(f32_dot_avx512, f32)
FDOT_ENTRY(f16_dot_avx512, f16)
FDOT_ENTRY(bf16_dot_avx512, bf16)

/* ---- activation rows ---------------------------------------------------- */

/* tern_quant_fn. The absolute maximum is taken on the bit patterns: with
 * the sign cleared, float order is unsigned integer order, and inf/NaN
 * patterns lie above every finite one, so `bits >= 0x7f800000` is the
 * scalar code's "not finite". Rows the scalar code zeroes (zero, inf,
 * NaN) or whose reciprocal scale overflows (subnormal maxima) go to the
 * scalar reference; otherwise each value takes the scalar steps in the
 * same float operations (multiply, clamp, add and subtract 1.5 * 2^23),
 * so results are identical. */
static void quant_row_avx512(const float *x, int64_t n, int64_t kpad, int8_t *q, float *scale,
			     int32_t *csum, int32_t *sum)
{
	const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
	__m512i mx = _mm512_setzero_si512();
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_loadu_si512(x + i), absmask));
	if (i < n) {
		__mmask16 m = (__mmask16)((1u << (n - i)) - 1);
		mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + i),
							   absmask));
	}
	const uint32_t bits = _mm512_reduce_max_epu32(mx);
	float amax, id;
	if (!tern_quant_screen(bits, &amax, &id)) {
		tern_quant_row_scalar(x, n, kpad, q, scale, csum, sum);
		return;
	}
	const __m512 vid = _mm512_set1_ps(id), lo = _mm512_set1_ps(-128.0f),
		     hi = _mm512_set1_ps(127.0f), magic = _mm512_set1_ps(12582912.0f);
	__m512i tot = _mm512_setzero_si512();
	for (int64_t j = 0; j < kpad; j += 32) {
		__m512i half[2];
		for (int h = 0; h < 2; h++) {
			const int64_t o = j + 16 * h;
			const int64_t left_n = n - o, left_k = kpad - o;
			const __mmask16 ml = left_n >= 16 ? (__mmask16)0xffff
					     : left_n <= 0 ? (__mmask16)0
							   : (__mmask16)((1u << left_n) - 1);
			const __mmask16 ms = left_k >= 16 ? (__mmask16)0xffff
					     : left_k <= 0 ? (__mmask16)0
							   : (__mmask16)((1u << left_k) - 1);
			__m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(ml, x + (ml ? o : 0)), vid);
			v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
			v = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
			half[h] = _mm512_cvtps_epi32(v);
			if (ms)
				_mm512_mask_cvtsepi32_storeu_epi8(q + o, ms, half[h]);
		}
		const __m512i s = _mm512_add_epi32(half[0], half[1]);
		if (j + 32 <= kpad)
			csum[j / 32] = _mm512_reduce_add_epi32(s);
		tot = _mm512_add_epi32(tot, s);
	}
	*scale = amax / 127.0f;
	*sum = _mm512_reduce_add_epi32(tot);
}

/* ---- float helpers of the attention head -------------------------------- */

/* e^x for x <= 0 (and x >= -inf): x = n ln2 + r with |r| <= ln2 / 2 (ln2
 * split in two so n ln2 is exact enough), e^r by its Taylor series to r^7
 * (truncation below 6e-9 relative), times 2^n by vscalefps, which gives
 * 0 for large negative n and -inf. A few ulp against expf. */
KINLINE __m512 exp_neg16(__m512 x)
{
	const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
					      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
	__m512 p = _mm512_set1_ps(1.0f / 5040.0f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	/* -inf: n = -inf, r = NaN; the scale by 2^-inf is 0 only for a
	 * number, so those lanes are zeroed. */
	const __mmask16 fin = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
	return _mm512_maskz_scalef_ps(fin, p, n);
}

/* softmax over s[0..n): max, e^(s - max) and their sum 16 at a time, then
 * one multiply by 1 / sum. */
static void softmax_avx512(float *s, int64_t n)
{
	__m512 m = _mm512_set1_ps(-INFINITY);
	int64_t i = 0;
	for (; i + 16 <= n; i += 16)
		m = _mm512_max_ps(m, _mm512_loadu_ps(s + i));
	const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1u);
	m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, s + i));
	const float mx = _mm512_reduce_max_ps(m);
	if (!isfinite(mx)) {
		tern_softmax(s, n); /* all -inf, or an inf or NaN: its rules */
		return;
	}
	const __m512 vm = _mm512_set1_ps(mx);
	__m512 sum = _mm512_setzero_ps();
	for (i = 0; i + 16 <= n; i += 16) {
		__m512 e = exp_neg16(_mm512_sub_ps(_mm512_loadu_ps(s + i), vm));
		_mm512_storeu_ps(s + i, e);
		sum = _mm512_add_ps(sum, e);
	}
	if (i < n) {
		__m512 e = exp_neg16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, s + i), vm));
		e = _mm512_maskz_mov_ps(tail, e);
		_mm512_mask_storeu_ps(s + i, tail, e);
		sum = _mm512_add_ps(sum, e);
	}
	const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
	for (i = 0; i + 16 <= n; i += 16)
		_mm512_storeu_ps(s + i, _mm512_mul_ps(_mm512_loadu_ps(s + i), inv));
	if (i < n)
		_mm512_mask_storeu_ps(s + i, tail,
				      _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + i), inv));
}

/* out[r] = scale * (sum of the 16 lanes of a[r]), r < 8: 128-bit blocks of
 * pairs, then of quads, are added across registers, then the four lanes
 * left per key inside each block. */
KINLINE void hsum8_avx512(const __m512 *a, float scale, float *out)
{
	__m512 x[4], y[2];
	for (int i = 0; i < 4; i++)
		x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
				     _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
	/* x[i]: blocks 0-1 key 2i, blocks 2-3 key 2i+1. */
	for (int i = 0; i < 2; i++)
		y[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0x88),
				     _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0xDD));
	/* y[i]: block b holds 4 partial sums of key 4i + b. */
	__m512 z = _mm512_add_ps(_mm512_unpacklo_ps(y[0], y[1]), _mm512_unpackhi_ps(y[0], y[1]));
	z = _mm512_add_ps(z, _mm512_shuffle_ps(z, z, _MM_SHUFFLE(1, 0, 3, 2)));
	/* Block b: lane 0 key b, lane 1 key 4 + b. */
	const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
	__m256 v = _mm512_castps512_ps256(_mm512_permutexvar_ps(idx, z));
	_mm256_storeu_ps(out, _mm256_mul_ps(v, _mm256_set1_ps(scale)));
}

#define VEC 16
#define VT __m512
#define MASKT __mmask16
#define TAILMASK(n) ((__mmask16)((1u << (n)) - 1u))
#define ZERO() _mm512_setzero_ps()
#define LOAD(p) _mm512_loadu_ps(p)
#define MLOAD(m, p) _mm512_maskz_loadu_ps((m), (p))
/* KV element `off` of base, f32 or (f16) f16; masked: the lanes of m. */
#define KVLOAD(f16, base, off)                                                              \
	((f16) ? _mm512_cvtph_ps(_mm256_loadu_si256(                                        \
			 (const __m256i *)((const uint16_t *)(base) + (off))))                 \
	       : _mm512_loadu_ps((const float *)(base) + (off)))
#define KVMLOAD(f16, m, n, base, off)                                                       \
	((f16) ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((m), (const uint16_t *)(base) + (off))) \
	       : _mm512_maskz_loadu_ps((m), (const float *)(base) + (off)))
#define STORE(p, x) _mm512_storeu_ps((p), (x))
#define MSTORE(m, p, x) _mm512_mask_storeu_ps((p), (m), (x))
#define FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define SET1(x) _mm512_set1_ps(x)
#define HSUM(x) _mm512_reduce_add_ps(x)
#define HSUM8(a, sc, o) hsum8_avx512((a), (sc), (o))
#define SOFTMAX(s, n) softmax_avx512((s), (n))

#define ATT_QH 2 /* 32 zmm registers: two heads' 8 accumulators each */
#include "core/kernels_attn.h"

static const tern_kernels avx512_table = {
	.path = TERN_KERNEL_AVX512,
	.t2_dot = t2_dot_avx512,
	.t3_dot = t3_dot_avx512,
	.i8_dot = i8_dot_avx512,
	.i4_dot = i4_dot_avx512,
	.f32_dot = f32_dot_avx512,
	.f16_dot = f16_dot_avx512,
	.bf16_dot = bf16_dot_avx512,
	.quant_row = quant_row_avx512,
	.attn = attn_simd,
	.f16_row = tern_f16_row_f16c,
};

/* The same with the VBMI decoder for T3 where the CPU has it. */
static const tern_kernels avx512_vbmi_table = {
	.path = TERN_KERNEL_AVX512,
	.t2_dot = t2_dot_avx512,
	.t3_dot = t3_dot_avx512_vbmi,
	.i8_dot = i8_dot_avx512,
	.i4_dot = i4_dot_avx512,
	.f32_dot = f32_dot_avx512,
	.f16_dot = f16_dot_avx512,
	.bf16_dot = bf16_dot_avx512,
	.quant_row = quant_row_avx512,
	.attn = attn_simd,
	.f16_row = tern_f16_row_f16c,
};

const tern_kernels *tern_kernels_avx512(bool vbmi)
{
	return vbmi ? &avx512_vbmi_table : &avx512_table;
}

const tern_kernels *tern_kernels_avx512_novbmi(void)
{
	return &avx512_table;
}
