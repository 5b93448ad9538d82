/*
 * matmul.h: y = W x for every weight dtype, threaded over the context's
 * pool. Ternary and int8 weights take int8 activations quantized per token
 * (absmax); float weights take float activations.
 *
 * Shapes: W is [rows][k] (a tern_tensor, any dtype). x is [n][k] floats,
 * y is [n][rows] floats, both row-major with the given leading strides.
 * n = 1 is a GEMV, n > 1 a GEMM. Results do not depend on the thread count.
 */
#ifndef TERN_MATMUL_H
#define TERN_MATMUL_H

#include "tern/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Quantized activations: n tokens of kpad int8 values each, zero padded
 * past k. sum[t] is the sum of token t's values; csum[t][c] the sum over
 * chunk c of 32 values (c < kpad/32), used by per-block weight scales.
 * Memory is owned by whoever filled it (see tern_qact_init). */
typedef struct tern_qact {
	int64_t n, k, kpad;
	int8_t *q;       /* [n][kpad], 64-byte aligned rows */
	float *scale;    /* [n] */
	int32_t *sum;    /* [n] */
	int32_t *csum;   /* [n][kpad/32] */
} tern_qact;

/* Quantize x [n][k] (row stride ldx floats) for weights of dtype (which
 * fixes kpad). Buffers come from the context's scratch slot `slot` (1..7),
 * so no allocation happens once warm; they stay valid until that slot is
 * reused. */
TERN_API int tern_qact_quantize(tern_ctx *ctx, int slot, tern_dtype wtype, const float *x,
				int64_t n, int64_t k, int64_t ldx, tern_actq_mode mode,
				tern_round_mode round, tern_qact *out);

/* y[t][r] (row stride ldy) = sum_j W[r][j] * x[t][j], for t < n, r < rows. */
TERN_API int tern_matmul(tern_ctx *ctx, const tern_tensor *W, const float *x, int64_t n,
			 int64_t ldx, float *y, int64_t ldy);

/* Same with activations already quantized (reuse one x for q, k and v).
 * W must be I8, T2 or T3 and a->kpad must equal its padded row length. */
TERN_API int tern_matmul_q(tern_ctx *ctx, const tern_tensor *W, const tern_qact *a, float *y,
			   int64_t ldy);

/* Up to TERN_MATMUL_MANY_MAX weights reading the same activations (q, k
 * and v; gate and up) in one dispatch to the threads: y[i] (row stride
 * ldy[i]) = W[i] a, bit for bit what count calls of tern_matmul_q give,
 * with one wake-up and one wait instead of count. Checks as tern_matmul_q,
 * for every W[i]; TERN_E_INVALID if count is outside 1..MAX. */
#define TERN_MATMUL_MANY_MAX 4
TERN_API int tern_matmul_q_many(tern_ctx *ctx, int count, const tern_tensor *const *W,
				const tern_qact *a, float *const *y, const int64_t *ldy);

/* Raw integer accumulators, for tests and tools: out[r][t][b] (int32) =
 * sum over scale block b of row r of code*q, with codes as stored
 * (T2/T3: w + 1, so subtract the block's activation sum to get w*q).
 * nb = blocks per row (1 unless the tensor has per-block scales). */
TERN_API int tern_matmul_raw_i32(tern_ctx *ctx, const tern_tensor *W, const tern_qact *a,
				 int32_t *out);

/* Kernel paths. */
typedef enum tern_kernel_path {
	TERN_KERNEL_SCALAR = 0,
	TERN_KERNEL_AVX2 = 1,
	TERN_KERNEL_AVX512 = 2,   /* AVX-512 BW/VL + VNNI */
	TERN_KERNEL_NEON = 3,     /* AArch64 NEON + dotprod */
	TERN_KERNEL_COUNT
} tern_kernel_path;

TERN_API const char *tern_kernel_path_name(tern_kernel_path p);
/* Best path this CPU supports (ignores TERN_KERNEL). */
TERN_API tern_kernel_path tern_kernel_detect(void);
/* Whether this build and CPU can run path p. */
TERN_API bool tern_kernel_available(tern_kernel_path p);
/* Force a path on a context (TERN_E_UNSUPPORTED if unavailable). */
TERN_API int tern_ctx_set_kernel(tern_ctx *ctx, tern_kernel_path p);
TERN_API tern_kernel_path tern_ctx_kernel_path(const tern_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
