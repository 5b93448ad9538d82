/*
 * attention.c: scaled dot-product attention over a KV cache for one
 * sequence, causal or bidirectional, with grouped-query heads and strided
 * layouts. Scores for one query head live in caller scratch, so the call
 * allocates nothing and decode (n_q = 1) and prefill share one code path.
 * The heads are the kernel table's attn (scalar reference in
 * kernels_scalar.c), one at a time for tern_attention and a kv head's
 * whole group at a time for tern_attention_ctx; this file checks the
 * arguments and walks the queries and heads. tern_f32_to_f16_row, the
 * f16 KV cache's store, is here too: the other call an attention layer
 * makes through the kernel table.
 */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "core/kernels.h"
#include "tern/ops.h"

/* Position `rows - 1` at `stride` plus `width` floats must be addressable. */
static bool extent_ok(int64_t rows, int64_t stride, int64_t width)
{
	int64_t last, end;
	return !__builtin_mul_overflow(rows - 1, stride, &last) &&
	       !__builtin_add_overflow(last, width, &end);
}

static int attn_check(const tern_attn_params *p, const float *q, const void *k, const void *v,
		      const float *out, const float *scratch)
{
	if (!p || !q || !k || !v || !out || !scratch)
		return tern_error(NULL, TERN_E_INVALID, "attention: NULL argument");
	if (p->n_q <= 0 || p->n_kv <= 0 || p->n_heads <= 0 || p->n_kv_heads <= 0 ||
	    p->head_dim <= 0 || p->q_pos0 < 0)
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: dims must be positive (n_q %lld, n_kv %lld, n_heads "
				  "%lld, n_kv_heads %lld, head_dim %lld, q_pos0 %lld)",
				  (long long)p->n_q, (long long)p->n_kv, (long long)p->n_heads,
				  (long long)p->n_kv_heads, (long long)p->head_dim,
				  (long long)p->q_pos0);
	if (p->n_heads % p->n_kv_heads)
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: n_heads %lld is not a multiple of n_kv_heads %lld",
				  (long long)p->n_heads, (long long)p->n_kv_heads);
	if (!isfinite(p->scale))
		return tern_error(NULL, TERN_E_INVALID, "attention: scale is not finite");
	int64_t qw, kvw, last;
	if (__builtin_mul_overflow(p->n_heads, p->head_dim, &qw) ||
	    __builtin_mul_overflow(p->n_kv_heads, p->head_dim, &kvw))
		return tern_error(NULL, TERN_E_OVERFLOW, "attention: heads * head_dim overflows");
	if (p->q_stride < 0 || (p->q_stride && p->q_stride < qw) || p->out_stride < 0 ||
	    (p->out_stride && p->out_stride < qw) || p->kv_stride < 0 ||
	    (p->kv_stride && p->kv_stride < kvw))
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: strides (q %lld, kv %lld, out %lld) below the dense "
				  "widths (%lld, %lld)",
				  (long long)p->q_stride, (long long)p->kv_stride,
				  (long long)p->out_stride, (long long)qw, (long long)kvw);
	if (p->causal && (__builtin_add_overflow(p->q_pos0, p->n_q, &last) || last > p->n_kv))
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: causal queries at positions %lld..%lld need keys the "
				  "cache (n_kv %lld) does not hold",
				  (long long)p->q_pos0, (long long)(p->q_pos0 + p->n_q - 1),
				  (long long)p->n_kv);
	if (!extent_ok(p->n_q, p->q_stride ? p->q_stride : qw, qw) ||
	    !extent_ok(p->n_q, p->out_stride ? p->out_stride : qw, qw) ||
	    !extent_ok(p->n_kv, p->kv_stride ? p->kv_stride : kvw, kvw))
		return tern_error(NULL, TERN_E_OVERFLOW, "attention: buffer extent overflows");
	return TERN_OK;
}

/* per_group: the heads sharing a kv head go to `attn` together (scratch
 * for all their scores); else one at a time (scratch for one head's). */
static int attention_run(tern_attn_fn attn, bool per_group, const tern_attn_params *p,
			 const float *q, bool kv_f16, const void *k, const void *v, float *out,
			 float *scratch)
{
	int rc = attn_check(p, q, k, v, out, scratch);
	if (rc)
		return rc;
	const int64_t hd = p->head_dim;
	const int64_t group = p->n_heads / p->n_kv_heads;
	const int64_t qs = p->q_stride ? p->q_stride : p->n_heads * hd;
	const int64_t os = p->out_stride ? p->out_stride : p->n_heads * hd;
	const int64_t kvs = p->kv_stride ? p->kv_stride : p->n_kv_heads * hd;

	for (int64_t i = 0; i < p->n_q; i++) {
		const int64_t nk = p->causal ? p->q_pos0 + i + 1 : p->n_kv;
		const int64_t G = per_group ? group : 1;
		for (int64_t h = 0; h < p->n_heads; h += G) {
			const float *qh = q + i * qs + h * hd;
			const size_t off = (size_t)((h / group) * hd) * (kv_f16 ? 2 : 4);
			const void *kh = (const char *)k + off, *vh = (const char *)v + off;
			attn(qh, G, kh, vh, kv_f16, kvs, nk, hd, p->scale, scratch,
			     out + i * os + h * hd);
		}
	}
	return TERN_OK;
}

int tern_attention(const tern_attn_params *p, const float *q, const float *k, const float *v,
		   float *out, float *scratch)
{
	return attention_run(tern_attn_scalar, false, p, q, false, k, v, out, scratch);
}

int tern_f32_to_f16_row(const tern_ctx *ctx, const float *x, uint16_t *y, int64_t n)
{
	if (!ctx || n < 0 || (n > 0 && (!x || !y)))
		return TERN_E_INVALID;
	tern_ctx_kernels_of(ctx)->f16_row(x, y, n);
	return TERN_OK;
}

int tern_attention_ctx(const tern_ctx *ctx, const tern_attn_params *p, const float *q,
		       tern_dtype kv_type, const void *k, const void *v, float *out,
		       float *scratch)
{
	if (!ctx)
		return tern_error(NULL, TERN_E_INVALID, "attention: NULL context");
	if (kv_type != TERN_DTYPE_F32 && kv_type != TERN_DTYPE_F16)
		return tern_error(NULL, TERN_E_INVALID,
				  "attention: keys and values of dtype %s (f32 or f16 only)",
				  tern_dtype_name(kv_type));
	return attention_run(tern_ctx_kernels_of(ctx)->attn, true, p, q, kv_type == TERN_DTYPE_F16,
			     k, v, out, scratch);
}
