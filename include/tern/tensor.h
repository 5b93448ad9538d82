/*
 * tensor.h: element types, the ternary packings, tensors and quantization.
 *
 * Every dtype has one row in a traits table (tern_type_traits). Ternary
 * matrices are stored row-major: `rows` packed rows of tern_row_bytes()
 * bytes each, followed immediately by the scales (see tern_qparams).
 *
 * Ternary code layout (docs/FORMAT.md has the byte-by-byte version). A
 * packed row is a sequence of groups. A group of G bytes with P codes per
 * byte holds P*G weights; code p of byte m is weight (group start + p*G + m).
 * So a SIMD register of G bytes unpacks into P registers of consecutive
 * weights, and activations are read contiguously.
 *
 *  T2 (2 bits/weight): codes c in {0,1,2} mean w = c - 1 (3 is invalid).
 *     Code p of a byte sits in bits 2p..2p+1. Main groups: G=64, P=4
 *     (256 weights). Rows are zero-padded (w = 0, code 1) to a multiple of
 *     128; a final half group has G=32, P=4 (128 weights).
 *  T3 (base 3, 1.6 bits/weight): 5 trits per byte. For trits t0..t4
 *     (t = w + 1), v = t0*81 + t1*27 + t2*9 + t3*3 + t4 and the byte is
 *     b = ceil(v * 256 / 243) (llama.cpp TQ1_0's encoding). Trit p is
 *     recovered as ((b * 3^p mod 256) * 3) >> 8. Main groups: G=64, P=5
 *     (320 weights); rows are padded to a multiple of 160; a final half
 *     group has G=32, P=5 (160 weights).
 *  I4 (4 bits/weight, not ternary): signed codes q in [-8, 7] stored as
 *     the nibble q + 8. Groups: G=64, P=2 (128 weights): byte m holds
 *     weight m in its low nibble and weight 64 + m in its high nibble.
 *     Rows are padded to a multiple of 128 with q = 0 (nibble 8); readers
 *     accept any pad nibble. Scales: kind BLOCK with block 128 only.
 */
#ifndef TERN_TENSOR_H
#define TERN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tern_dtype {
	TERN_DTYPE_F32 = 0,
	TERN_DTYPE_F16 = 1,
	TERN_DTYPE_BF16 = 2,
	TERN_DTYPE_I8 = 3,  /* int8, rows padded to 32; as a weight matrix it
	                       carries scales, with kind NONE it is plain int8 */
	TERN_DTYPE_I32 = 4,
	TERN_DTYPE_T2 = 5,  /* ternary, 2-bit codes */
	TERN_DTYPE_T3 = 6,  /* ternary, base-3, 5 trits per byte */
	TERN_DTYPE_I4 = 7,  /* 4-bit signed codes, block(128) scales */
	TERN_DTYPE_COUNT
} tern_dtype;

/* Where the float scales of a quantized (I8/T2/T3/I4) matrix live. */
typedef enum tern_scale_kind {
	TERN_SCALE_NONE = 0,   /* float types */
	TERN_SCALE_TENSOR = 1, /* one scale */
	TERN_SCALE_ROW = 2,    /* one per row */
	TERN_SCALE_BLOCK = 3,  /* one per `block` weights of each padded row:
	                          ceil(padded / block) per row, row-major */
} tern_scale_kind;

typedef struct tern_qparams {
	tern_scale_kind kind;
	uint32_t block;        /* 128 or 256 when kind == TERN_SCALE_BLOCK, else 0 */
	tern_dtype scale_type; /* TERN_DTYPE_F32 or TERN_DTYPE_F16 */
} tern_qparams;

typedef struct tern_type_traits {
	const char *name;      /* "f32", "t2", ... as written in .tern headers */
	bool quantized;        /* has scales (I8 as a matrix, T2, T3, I4) */
	bool ternary;
	uint32_t row_align;    /* rows are padded to a multiple of this many elements */
	uint32_t group;        /* elements per full SIMD group (T2 256, T3 320, I4 128;
	                          else 1); above 1 the dtype is packed */
	uint32_t group_bytes;  /* bytes per full group (T2/T3/I4 64; else element size) */
	/* Unscaled conversion of one row of n elements (n = logical columns).
	 * For float types: element <-> float. For T2/T3/I8/I4: codes <-> int8
	 * values in {-1,0,1} (T2/T3), [-128,127] (I8) or [-8,7] (I4); pad bytes
	 * are written as zero weights. Row pointers address the packed row.
	 * row_from_float rounds to nearest even and saturates (I8/I4/I32;
	 * NaN -> 0) or clamps to [-1,1] (T2/T3); I4's row_from_i8 saturates
	 * to [-8,7]. row_to_i8/row_from_i8 are NULL for F32/F16/BF16/I32. */
	void (*row_to_float)(const void *src, float *dst, int64_t n);
	void (*row_from_float)(const float *src, void *dst, int64_t n);
	void (*row_to_i8)(const void *src, int8_t *dst, int64_t n);
	void (*row_from_i8)(const int8_t *src, void *dst, int64_t n);
} tern_type_traits;

/* The traits of a dtype, or NULL if dtype is out of range. Static storage. */
TERN_API const tern_type_traits *tern_type_traits_of(tern_dtype dtype);

/* dtype from its name ("t2"); returns TERN_DTYPE_COUNT if unknown. */
TERN_API tern_dtype tern_dtype_from_name(const char *name);
TERN_API const char *tern_dtype_name(tern_dtype dtype);

/* Elements per row after padding (cols rounded up to row_align); -1 for
 * an invalid dtype, negative cols or overflow. */
TERN_API int64_t tern_row_padded(tern_dtype dtype, int64_t cols);
/* Bytes of one packed row of `cols` logical columns (codes only); 0 for an
 * invalid dtype, negative cols or a size that does not fit. */
TERN_API size_t tern_row_bytes(tern_dtype dtype, int64_t cols);
/* Number of scales for a rows x cols matrix under qp (0 if not quantized;
 * qp NULL means kind NONE). TERN_E_INVALID/TERN_E_OVERFLOW on failure. */
TERN_API int tern_scale_count(tern_dtype dtype, const tern_qparams *qp, int64_t rows,
			      int64_t cols, size_t *out);
/* Total bytes of a rows x cols matrix (codes + scales), overflow-checked. */
TERN_API int tern_matrix_bytes(tern_dtype dtype, const tern_qparams *qp, int64_t rows,
			       int64_t cols, size_t *out);
/* Checks qp is valid for dtype (block 128/256, scale type f32/f16, ...). */
TERN_API int tern_qparams_check(tern_ctx *ctx, tern_dtype dtype, const tern_qparams *qp);

/* ---- tensors --------------------------------------------------------- */

#define TERN_MAX_DIMS 4

/* A tensor view. Does not own `data` unless the creating function says so.
 * Shapes are row-major: shape[n_dims-1] varies fastest ("cols"); a tensor
 * of more than 2 dims is a matrix of rows = product of the other dims. */
typedef struct tern_tensor {
	const char *name;         /* may be NULL */
	tern_dtype dtype;
	int n_dims;               /* 1..TERN_MAX_DIMS */
	int64_t shape[TERN_MAX_DIMS];
	tern_qparams q;           /* kind NONE for float types */
	void *data;               /* codes/elements, then scales */
	size_t nbytes;            /* == tern_tensor_bytes(...) */
} tern_tensor;

TERN_API int64_t tern_tensor_rows(const tern_tensor *t);
TERN_API int64_t tern_tensor_cols(const tern_tensor *t);
/* Bytes a tensor of this dtype/shape/qparams occupies, overflow-checked.
 * Rejects n_dims out of range and negative or zero dims with a message. */
TERN_API int tern_tensor_bytes(tern_ctx *ctx, const tern_tensor *t, size_t *out);

/* Pointer to the scales of a quantized tensor (after the codes); NULL if
 * the tensor has none. */
TERN_API const void *tern_tensor_scales(const tern_tensor *t);
/* The float scale that applies to (row, col) of a quantized tensor (1 for
 * a tensor without scales). */
TERN_API float tern_tensor_scale_at(const tern_tensor *t, int64_t row, int64_t col);

/* Dequantize one row into cols floats (scales applied). */
TERN_API void tern_tensor_row_to_float(const tern_tensor *t, int64_t row, float *dst);

/* Allocate a tensor with owned, zeroed, 64-byte aligned data of the right
 * size; free with tern_tensor_free. shape has n_dims entries. */
TERN_API int tern_tensor_new(tern_ctx *ctx, tern_dtype dtype, const tern_qparams *qp,
			     int n_dims, const int64_t *shape, tern_tensor **out);
/* Frees a tensor made by tern_tensor_new (and its data). Accepts NULL. */
TERN_API void tern_tensor_free(tern_tensor *t);

/* ---- quantization ---------------------------------------------------- */

typedef enum tern_ternarize_method {
	TERN_TERNARIZE_ABSMEAN = 0, /* s = mean|W| (BitNet b1.58) */
	TERN_TERNARIZE_MEDIAN = 1,  /* s = median|W| (BitNet b1.58 Reloaded) */
} tern_ternarize_method;

/* Ternarize a float matrix src [rows][cols] into dst (a T2/T3 tensor of
 * that shape, allocated by the caller, with kind TENSOR, ROW or BLOCK):
 * s = mean|W| (or the lower median) over the scale's span (logical columns
 * only), w = clamp(round(W/s),-1,1) with ties to even, stored scale = s in
 * the scale type. A span whose s is 0 gets scale 0 and all-zero codes.
 * Rejects non-finite input and scales that overflow f16 (TERN_E_INVALID). */
TERN_API int tern_ternarize(tern_ctx *ctx, const float *src, tern_ternarize_method method,
			    tern_tensor *dst);

/* Pack ternary-valued floats (each exactly -s, 0 or +s for its span's
 * scale s = its largest magnitude) into dst exactly; TERN_E_INVALID if a
 * value is not ternary or s is not exactly representable in an f16 scale. */
TERN_API int tern_pack_ternary_exact(tern_ctx *ctx, const float *src, tern_tensor *dst);

/* 4-bit quantization of one row of n floats (see docs/FORMAT.md, "I4"):
 * per block of 128 weights (the last one holding the row's tail and zero
 * padding) with absmax m, the candidate scales d_i = m * (50 - i) / 350
 * (i = 0..10: m/7 shrunk in steps of 2%), each rounded to scale_type
 * (TERN_DTYPE_F32 or F16), give q = clamp(round_even(x / d_i), -7, 7) (in
 * double; q = 0 where d_i is 0); the d_i with the least sum of
 * (x - q * d_i)^2 wins, ties to the smallest i. Writes
 * tern_row_bytes(I4, n) bytes of codes and ceil(n / 128) scales of
 * scale_type. TERN_E_INVALID for a non-finite x or a scale that overflows
 * f16. Reentrant; allocates nothing. */
TERN_API int tern_quantize_row_i4(const float *x, int64_t n, tern_dtype scale_type,
				  uint8_t *codes, void *scales);
/* The 4-bit residual of a row: r = x - (the values tern_quantize_row_i4(x)
 * codes, dequantized in float), itself coded by tern_quantize_row_i4 into
 * codes and scales. A matrix and its residual together ("--head i4r",
 * docs/FORMAT.md) hold each weight to about 1/14 of the 4-bit step.
 * work: n floats. Errors as tern_quantize_row_i4. Reentrant. */
TERN_API int tern_quantize_row_i4_residual(const float *x, int64_t n, tern_dtype scale_type,
					   uint8_t *codes, void *scales, float *work);
/* tern_quantize_row_i4 over the rows of src [rows][cols] into dst, an I4
 * tensor of that shape (allocated by the caller). The detail message
 * names the failing row. */
TERN_API int tern_quantize_i4(tern_ctx *ctx, const float *src, tern_tensor *dst);

typedef enum tern_round_mode {
	TERN_ROUND_EVEN = 0,    /* nearbyint: ties to even (PyTorch's round) */
	TERN_ROUND_AWAY = 1,    /* roundf: ties away from zero (C's round) */
} tern_round_mode;

typedef enum tern_actq_mode {
	TERN_ACTQ_MUL = 0,      /* q = round(x * (127 / absmax)) */
	TERN_ACTQ_DIV = 1,      /* q = round(x / (absmax / 127)) */
} tern_actq_mode;

/* int8 absmax quantization of one token (row) of n floats into q[kpad]
 * (q[n..kpad) = 0, kpad >= n), clamped to [-128,127]. *scale = absmax / 127
 * (0 for an all-zero row, or one holding inf/NaN, whose q is all zero), so
 * x ~= q * scale. Reentrant; allocates nothing. */
TERN_API void tern_quantize_row_i8(const float *x, int64_t n, int64_t kpad, tern_actq_mode mode,
				   tern_round_mode round, int8_t *q, float *scale);

/* ---- exact converters to and from other projects' ternary types ------ */

/* llama.cpp TQ2_0 (block 256: qs[64] 2-bit, d f16) and TQ1_0 (block 256:
 * qs[48], qh[4], d f16), bitnet.cpp I2_S (x86 layout: n/4 bytes of codes,
 * f32 tensor scale, padding to n/4 + 32 bytes); docs/FORMAT.md has the
 * bytes. Import converts rows x cols (cols a multiple of 256 for TQ*, 128
 * for I2_S) into a new tern tensor in dtype T2 or T3 with per-block(256,
 * f16) scales for TQ* and per-tensor f32 for I2_S; export converts back and
 * is byte-identical on data produced by those tools, except the 28 I2_S
 * padding bytes after the scale, which bitnet.cpp leaves uninitialized and
 * tern writes as zeros. */
typedef enum tern_foreign_type {
	TERN_FOREIGN_TQ1_0 = 0,
	TERN_FOREIGN_TQ2_0 = 1,
	TERN_FOREIGN_I2_S = 2,
} tern_foreign_type;

/* Bytes of a rows x cols tensor in the foreign type (overflow-checked). */
TERN_API int tern_foreign_bytes(tern_ctx *ctx, tern_foreign_type ft, int64_t rows, int64_t cols,
				size_t *out);
/* Convert foreign data (src_bytes long, exactly tern_foreign_bytes) into
 * *out (a new tensor; caller frees with tern_tensor_free). dtype picks T2
 * or T3. Invalid codes and non-canonical base-3 bytes are TERN_E_FORMAT. */
TERN_API int tern_foreign_import(tern_ctx *ctx, tern_foreign_type ft, const void *src,
				 size_t src_bytes, int64_t rows, int64_t cols, tern_dtype dtype,
				 tern_tensor **out);
/* Convert a T2/T3 tensor back into foreign bytes (dst of dst_bytes). Fails
 * with TERN_E_UNSUPPORTED if its scales cannot be expressed in ft. */
TERN_API int tern_foreign_export(tern_ctx *ctx, tern_foreign_type ft, const tern_tensor *src,
				 void *dst, size_t dst_bytes);

/* ---- half floats ------------------------------------------------------ */
TERN_API float tern_f16_to_f32(uint16_t h);
TERN_API uint16_t tern_f32_to_f16(float f);   /* round to nearest even */
TERN_API float tern_bf16_to_f32(uint16_t h);
TERN_API uint16_t tern_f32_to_bf16(float f);  /* round to nearest even */

#ifdef __cplusplus
}
#endif
#endif
