/*
 * kernels.h (private): the per-ISA kernel table behind tern_matmul. Each
 * path (kernels_scalar.c, kernels_avx2.c, kernels_avx512.c,
 * kernels_neon.c) fills one tern_kernels; the scalar one is the reference
 * the tests compare every other path against.
 */
#ifndef TERN_CORE_KERNELS_H
#define TERN_CORE_KERNELS_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tern/matmul.h"

/*
 * Ternary raw dot: for rows r < nrows and tokens t < ntok,
 *   out[(r * ntok + t) * nb + b] = sum_{j in block b} code(w_r, j) * a_t[j]
 * where code is the stored unsigned code (T2 0..2, T3 trit 0..2), blocks
 * are `blk` weights (blk is a multiple of 32 or equals kpad; there are
 * nb = ceil(kpad / blk) blocks and the last may be partial),
 * w_r = w + r * w_stride bytes, a_t = a + t * a_stride bytes; kpad is the
 * padded row length (multiple of the dtype's row_align).
 */
typedef void (*tern_tdot_fn)(const uint8_t *w, size_t w_stride, int64_t nrows,
			     const int8_t *a, size_t a_stride, int64_t ntok, int64_t kpad,
			     int64_t blk, int32_t *out);

/* int8 x int8 raw dot, same output convention, nb = 1 (per row). */
typedef void (*tern_i8dot_fn)(const int8_t *w, size_t w_stride, int64_t nrows, const int8_t *a,
			      size_t a_stride, int64_t ntok, int64_t k, int32_t *out);

/*
 * I4 x int8 dot with the weight scales applied: for rows r < nrows and
 * tokens t < ntok,
 *   out[r * ntok + t] = sum_g s_r[g] * sum_{j in group g} (c(w_r, j) - 8) * a_t[j]
 * over the ng = kpad / 128 groups of 128 weights (64 bytes) of a row, c the
 * stored nibble. w_r = w + r * w_stride bytes; s_r = scales + r * s_stride
 * bytes holds ng scales, f16 if `f16` else f32; a_t = a + t * a_stride
 * bytes; bsum[t * ng + g] = sum of a_t over group g (kernels that multiply
 * the unsigned nibble take 8 * sum_g s_r[g] * bsum[g] off at the end).
 * The float rounding differs between paths (each sums in its own order);
 * for a given path the result does not depend on nrows or ntok.
 */
typedef void (*tern_i4dot_fn)(const uint8_t *w, size_t w_stride, const void *scales,
			      size_t s_stride, bool f16, int64_t nrows, const int8_t *a,
			      size_t a_stride, const int32_t *bsum, int64_t ntok, int64_t kpad,
			      float *out);

/* Float weight x float activation: y[t * ldy + r] = dot(W_r, x_t) over k,
 * W rows of dtype F32/F16/BF16 (w_stride bytes apart). */
typedef void (*tern_fdot_fn)(const void *w, size_t w_stride, int64_t nrows, const float *x,
			     int64_t ldx, int64_t ntok, int64_t k, float *y, int64_t ldy);

/* One activation row as tern_quantize_row_i8(x, n, kpad, TERN_ACTQ_MUL,
 * TERN_ROUND_EVEN, q, scale) makes it, bit for bit, plus its sums:
 * csum[c] = q[32c] + ... + q[32c + 31] for c < kpad / 32, *sum = the sum
 * of all kpad values (padding is 0). */
typedef void (*tern_quant_fn)(const float *x, int64_t n, int64_t kpad, int8_t *q, float *scale,
			      int32_t *csum, int32_t *sum);

/* SIMD quantizers take the row's absmax as bit patterns (sign cleared:
 * float order is then unsigned order, inf/NaN above every finite value).
 * True, with *amax and *id = 127 / amax, when the scalar steps apply as
 * they are; false for the rows left to tern_quant_row_scalar (zero,
 * inf/NaN, or a subnormal max whose reciprocal overflows). */
static inline bool tern_quant_screen(uint32_t bits, float *amax, float *id)
{
	float a;
	memcpy(&a, &bits, sizeof a);
	*amax = a;
	*id = 127.0f / a;
	return bits != 0 && bits < 0x7f800000u && *id < INFINITY;
}

/* csum and *sum of tern_quant_fn for a quantized row q [kpad]. */
void tern_quant_row_sums(const int8_t *q, int64_t kpad, int32_t *csum, int32_t *sum);

/* The scalar reference of tern_quant_fn; SIMD versions hand it the rows
 * they do not take (see kernels_scalar.c). */
void tern_quant_row_scalar(const float *x, int64_t n, int64_t kpad, int8_t *q, float *scale,
			   int32_t *csum, int32_t *sum);

/* Attention for G >= 1 query heads that share one kv head (GQA), over nk
 * keys and values whose consecutive positions are kvs elements apart, all
 * hd wide, stored as f32, or as f16 when kv_f16. Head g's query is
 * q + g hd and its output out + g hd:
 * s_g[j] = scale * (q_g . k_j), s_g = softmax(s_g), out_g = sum_j
 * s_g[j] v_j. s: caller scratch of G * nk floats. out may overlap q
 * (the queries are read first), not k or v. The scalar one is the
 * reference (one head at a time); SIMD ones differ from it in rounding
 * only (FMA, other summation orders, their own exp). */
/* y[i] = tern_f32_to_f16(x[i]) for i < n, bit for bit on every path (the
 * f16 KV cache's stores). */
typedef void (*tern_f16_row_fn)(const float *x, uint16_t *y, int64_t n);
void tern_f16_row_scalar(const float *x, uint16_t *y, int64_t n);
#if defined(__x86_64__) || defined(__i386__)
/* F16C (kernels_avx2.c), shared by the AVX2 and AVX-512 tables. */
void tern_f16_row_f16c(const float *x, uint16_t *y, int64_t n);
#endif

typedef void (*tern_attn_fn)(const float *q, int64_t G, const void *k, const void *v,
			     bool kv_f16, int64_t kvs, int64_t nk, int64_t hd, float scale, float *s,
			     float *out);

/* One head of the scalar reference, which runs a group's heads one after
 * another (tern_attn_scalar). */
void tern_attn_head_scalar(const float *q, const float *k, const float *v, int64_t kvs,
			   int64_t nk, int64_t hd, float scale, float *s, float *out);
void tern_attn_scalar(const float *q, int64_t G, const void *k, const void *v, bool kv_f16,
		      int64_t kvs, int64_t nk, int64_t hd, float scale, float *s, float *out);

typedef struct tern_kernels {
	tern_kernel_path path;
	tern_tdot_fn t2_dot;
	tern_tdot_fn t3_dot;
	tern_i8dot_fn i8_dot;
	tern_i4dot_fn i4_dot;
	tern_fdot_fn f32_dot;
	tern_fdot_fn f16_dot;
	tern_fdot_fn bf16_dot;
	tern_quant_fn quant_row;
	tern_attn_fn attn;
	tern_f16_row_fn f16_row;
} tern_kernels;

/* Each returns its table, or NULL if the path is not compiled in. */
const tern_kernels *tern_kernels_scalar(void);
const tern_kernels *tern_kernels_avx2(void);
/* vbmi: the CPU has AVX-512 VBMI (cpu.c detects it), which some T3
 * routes use; without it they take the compare-based fallback. */
const tern_kernels *tern_kernels_avx512(bool vbmi);
const tern_kernels *tern_kernels_neon(void);
/* The AVX-512 table without its VBMI-only parts, so tests on CPUs with
 * VBMI can check both. */
const tern_kernels *tern_kernels_avx512_novbmi(void);

/* Table for a path, NULL if not built or the CPU lacks it. */
const tern_kernels *tern_kernels_get(tern_kernel_path p);

#endif
