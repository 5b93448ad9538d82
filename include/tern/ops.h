/*
 * ops.h: the float32 operations that sit between linear layers, shared by
 * every model family. All are plain functions on caller-owned buffers; none
 * allocates or fails except where a status is returned. Row-major layouts;
 * shapes are given in the comments as [outer][inner]. A length n <= 0
 * makes the void functions do nothing. Reductions (norm statistics,
 * softmax sums) accumulate in double so results track a double-precision
 * reference to float rounding.
 */
#ifndef TERN_OPS_H
#define TERN_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "tern/tensor.h"
#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[i] = x[i] / sqrt(mean(x^2) + eps) * (w ? w[i] : 1); x, y [n]; y may be x. */
TERN_API void tern_rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y);

/* y = (x - mean) / sqrt(var + eps) * (w ? w : 1) + (b ? b : 0); biased var.
 * x, y [n]; y may alias x. */
TERN_API void tern_layernorm(const float *x, const float *w, const float *b, int64_t n, float eps,
			     float *y);

/* In place softmax over x[n]; numerically stable (subtracts the max, sums
 * in double). A row that is entirely -inf becomes uniform (1/n) rather
 * than NaN, so a fully masked row stays usable. */
TERN_API void tern_softmax(float *x, int64_t n);

/* Activations, in place over x[n]. */
TERN_API void tern_silu(float *x, int64_t n);           /* x * sigmoid(x) */
TERN_API void tern_relu2(float *x, int64_t n);          /* max(x,0)^2 */
TERN_API void tern_gelu_erf(float *x, int64_t n);       /* 0.5x(1+erf(x/sqrt2)) */
TERN_API void tern_gelu_tanh(float *x, int64_t n);      /* tanh approximation */

/* RoPE pairing, with d = rot_dim: ADJACENT rotates (x[2i], x[2i+1])
 * (llama2.c, Meta's Llama, llama.cpp's normal mode); NEOX rotates
 * (x[i], x[i + d/2]) (llama.cpp's NeoX mode, HF rotate_half). */
typedef enum tern_rope_mode { TERN_ROPE_ADJACENT = 0, TERN_ROPE_NEOX = 1 } tern_rope_mode;

/* Rotate n_heads heads of head_dim floats each (x [n_heads][head_dim], in
 * place) for position pos: pair i < rot_dim/2 turns by
 * angle_i = pos * base^(-2i/rot_dim), computed in float exactly as
 * llama.cpp does (powf(base, -2/rot_dim) raised by repeated multiplication
 * from pos), so decoder logits can match it. Only the first rot_dim dims
 * turn; the rest are untouched. Returns TERN_E_INVALID unless
 * n_heads >= 0, 0 < rot_dim <= head_dim, rot_dim even, pos >= 0, base > 0. */
TERN_API int tern_rope(float *x, int64_t n_heads, int64_t head_dim, int64_t rot_dim, int64_t pos,
		       float base, tern_rope_mode mode);

/* Scaled dot-product attention for one sequence.
 * q [n_q][n_heads][head_dim] for query positions q_pos0 .. q_pos0 + n_q - 1,
 * k, v [n_kv][n_kv_heads][head_dim] (the cache: positions 0 .. n_kv - 1),
 * out [n_q][n_heads][head_dim]. Query head h uses kv head
 * h / (n_heads / n_kv_heads) (GQA). causal: query at position p attends to
 * keys 0..p, so q_pos0 + n_q <= n_kv is required; otherwise every query
 * attends to all n_kv keys and q_pos0 is ignored. scale: usually
 * 1/sqrt(head_dim). Strides, in floats between consecutive positions, are
 * 0 for dense or at least the dense width. out must not overlap k or v.
 * scratch: at least n_kv floats. Returns TERN_E_INVALID on bad shapes
 * (non-positive dims, n_heads % n_kv_heads != 0, NULL buffers, non-finite
 * scale), TERN_E_OVERFLOW if an extent does not fit in int64_t.
 * Single-threaded; to split work, call once per kv head with q, k, v, out
 * offset to that head's group, n_heads = n_heads / n_kv_heads,
 * n_kv_heads = 1 and the full-width strides (one scratch per caller). */
typedef struct tern_attn_params {
	int64_t n_q, n_kv, n_heads, n_kv_heads, head_dim;
	int64_t q_pos0;
	bool causal;
	float scale;
	int64_t q_stride, kv_stride, out_stride; /* floats between positions; 0 = dense */
} tern_attn_params;
TERN_API int tern_attention(const tern_attn_params *p, const float *q, const float *k,
			    const float *v, float *out, float *scratch);

/* The same on ctx's kernel path (tern_ctx_kernel), taking the query heads
 * that share a kv head together so its keys and values are read once:
 * scratch must hold n_kv * (n_heads / n_kv_heads) floats. k and v hold
 * kv_type elements, TERN_DTYPE_F32 or TERN_DTYPE_F16 (an f16 KV cache;
 * strides still count elements). The SIMD paths
 * use FMA, wider accumulators and their own exp, so results differ from
 * tern_attention's in the last bits; a path gives the same results every
 * run. Only reads ctx, so threads of ctx's pool (or any threads) may call
 * it at once, each with its own scratch. TERN_E_INVALID for a NULL ctx or
 * another kv_type, else as tern_attention. */
TERN_API int tern_attention_ctx(const tern_ctx *ctx, const tern_attn_params *p, const float *q,
				tern_dtype kv_type, const void *k, const void *v, float *out,
				float *scratch);

/* y[i] = tern_f32_to_f16(x[i]) for i < n, bit for bit, with ctx's kernel
 * path (F16C on x86). Only reads ctx: any threads may call it at once.
 * x and y must not overlap. TERN_E_INVALID for a NULL ctx, n < 0, or NULL
 * arrays with n > 0 (the message goes nowhere without a ctx). */
TERN_API int tern_f32_to_f16_row(const tern_ctx *ctx, const float *x, uint16_t *y, int64_t n);

/* Patch embedding: a convolution with stride = kernel = patch, as a matmul.
 * img [C][H][W] float (planar); H, W multiples of patch. w [D][C*patch*patch]
 * in (c, ky, kx) order (PyTorch Conv2d weight flattened), b [D] or NULL.
 * out [(H/patch)*(W/patch)][D], patches in row-major order.
 * cols: caller scratch for one row of patches, at least
 * (W/patch)*C*patch*patch floats. Returns TERN_E_INVALID on non-positive
 * sizes, H or W not a multiple of patch, or NULL buffers (b excepted),
 * TERN_E_OVERFLOW if a size does not fit. */
TERN_API int tern_patch_embed(const float *img, int64_t C, int64_t H, int64_t W, int64_t patch,
			      const float *w, const float *b, int64_t D, float *out, float *cols);
/* Only the im2col step: patches [(H/p)*(W/p)][C*p*p] in (c, ky, kx) order,
 * for use with tern_matmul on a quantized patch-embedding weight. Same
 * checks and status codes as tern_patch_embed. */
TERN_API int tern_im2col_patches(const float *img, int64_t C, int64_t H, int64_t W, int64_t patch,
				 float *patches);

/* adaLN modulation (DiT): y = x * (1 + scale) + shift, x, y [n]; y may be x. */
TERN_API void tern_modulate(const float *x, const float *shift, const float *scale, int64_t n,
			    float *y);
/* Gated residual: x += gate * y, [n]. */
TERN_API void tern_gate_add(float *x, const float *gate, const float *y, int64_t n);

/* Sinusoidal timestep embedding (DiT/ADM convention): for i < dim/2,
 * f_i = exp(-ln(max_period) * i / (dim/2)); out = [cos(t f), sin(t f)]
 * (cos first), zero-padded if dim is odd. out [dim]. */
TERN_API void tern_timestep_embedding(float t, int64_t dim, float max_period, float *out);

/* The ids of the k largest values of v[n] into idx[k], best first: the
 * larger value first, the lower id first among equal values.
 * TERN_E_INVALID unless 1 <= k <= n <= INT32_MAX and v, idx are given.
 * v should hold no NaN: where it does, which ids come out is unspecified,
 * but nothing outside v[n] and idx[k] is touched. One pass with a heap of
 * k ids; 16 values none of which beats the k-th best so far cost one
 * vector compare, so a large n with a small k reads like a plain scan. */
TERN_API int tern_top_k(const float *v, int64_t n, int64_t k, int32_t *idx);

/* Vector helpers; y may be x. */
TERN_API void tern_vec_add(float *y, const float *x, int64_t n);   /* y += x */
TERN_API void tern_vec_mul(float *y, const float *x, int64_t n);   /* y *= x */
TERN_API void tern_vec_scale(float *y, float s, int64_t n);        /* y *= s */
TERN_API float tern_vec_dot(const float *a, const float *b, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
