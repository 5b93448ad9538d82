/*
 * model.h: the BitNet b1.58 decoder of the text plugin, as three plain
 * structs (what the model is, what it borrows from the file, what it
 * computes with) and the functions that load and run it. Private to the
 * plugin; tests/test_text.c compiles model.c directly and calls these.
 *
 * Two architectures share the block structure. llama.cpp's "bitnet":
 * pre-norm blocks with RMSNorm, GQA attention with NeoX RoPE, an RMS
 * sub-norm on the attention output before attn_output and on the gated
 * FFN product before ffn_down, and the token embedding reused as the
 * output head unless output.weight exists. The gate activation is SiLU
 * (llama.cpp's bitnet) or squared ReLU (BitNet b1.58 2B4T), chosen by the
 * metadata (text_model_load). bitllama2.c's "bitllama2c": the same four
 * BitLinear groups, but each input is normalized without weights or eps
 * as x / rms(x) / n, activations are quantized exactly as its runner does
 * (d = max|x| / 127, q = round-half-away(x * (1/d))), RoPE turns adjacent
 * pairs, the FFN is SwiGLU and only the final norm has weights.
 *
 * Linear layers run through tern_matmul, so the weight dtype picks the
 * numeric path: float weights (F32/F16/BF16) take float activations;
 * ternary (T2/T3) and I8 weights take int8 activations quantized per
 * token (absmax), as BitNet trains.
 *
 * Thread safety: a loaded text_model is read-only and may serve several
 * threads; each thread needs its own text_state and tern_ctx.
 */
#ifndef TERN_TEXT_MODEL_H
#define TERN_TEXT_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "tern/file.h"
#include "tern/ops.h"
#include "tern/tensor.h"
#include "tern/tern.h"

typedef enum text_act {
	TEXT_ACT_SILU = 0,  /* x * sigmoid(x) */
	TEXT_ACT_RELU2 = 1, /* max(x, 0)^2 */
} text_act;

typedef enum text_arch {
	TEXT_ARCH_BITNET = 0,     /* "bitnet", "bitnet-b1.58", "bitnet-25" */
	TEXT_ARCH_BITLLAMA2C = 1, /* "bitllama2c": bitllama2.c's ak42 models */
} text_arch;

/* Hyper-parameters. */
typedef struct text_config {
	int64_t n_vocab;
	int64_t n_embd;
	int64_t n_layers;
	int64_t n_heads;
	int64_t n_kv_heads;
	int64_t head_dim;   /* n_embd / n_heads */
	int64_t rot_dim;    /* dims of each head that RoPE turns (<= head_dim) */
	int64_t n_ff;
	int64_t n_ctx;      /* the longest context the model was trained for */
	float rope_base;
	float norm_eps;     /* of the weighted RMSNorms */
	text_act act;
	text_arch arch;
	tern_rope_mode rope; /* NeoX (bitnet) or adjacent pairs (bitllama2c) */
} text_config;

/* One decoder block. Matrices are [out][in] (tern row-major), borrowed
 * from the file. A *_scale is the optional per-tensor output multiplier
 * some converters store beside a weight ("blk.N.attn_q.scale"); 1 when
 * absent. bitllama2c has no norm weights: the four norm pointers are
 * NULL. */
typedef struct text_layer {
	const float *attn_norm;        /* [n_embd] */
	const tern_tensor *wq;         /* [n_heads * head_dim][n_embd] */
	const tern_tensor *wk;         /* [n_kv_heads * head_dim][n_embd] */
	const tern_tensor *wv;         /* [n_kv_heads * head_dim][n_embd] */
	const float *attn_sub_norm;    /* [n_heads * head_dim] */
	const tern_tensor *wo;         /* [n_embd][n_heads * head_dim] */
	const float *ffn_norm;         /* [n_embd] */
	const tern_tensor *w_gate;     /* [n_ff][n_embd] */
	const tern_tensor *w_up;       /* [n_ff][n_embd] */
	const float *ffn_sub_norm;     /* [n_ff] */
	const tern_tensor *w_down;     /* [n_embd][n_ff] */
	float scale_q, scale_k, scale_v, scale_o, scale_gate, scale_up, scale_down;
} text_layer;

/* Everything borrowed from the file: pointers into its tensors. */
typedef struct text_weights {
	const tern_tensor *tok_embd;   /* [n_vocab][n_embd], F32/F16/BF16 */
	const float *output_norm;      /* [n_embd] */
	const tern_tensor *output;     /* [n_vocab][n_embd]; tok_embd when tied */
	/* Optional 4-bit residuals ("<base>.residual", I4 with block scales,
	 * tern convert --head i4r): the weight is the sum of the two. The
	 * embedding adds its row; the head refines its best candidates
	 * (text_forward). output_res is tok_embd_res when tied. */
	const tern_tensor *tok_embd_res;
	const tern_tensor *output_res;
	text_layer *layers;            /* [n_layers], owned by the model */
} text_weights;

typedef struct text_model {
	text_config cfg;
	text_weights w;
	const tern_file *file;         /* borrowed; outlives the model */
} text_model;

/* Called by text_forward on named intermediate activations, when set:
 * `name` as llama.cpp's graph names the same tensor ("attn_norm",
 * "Qcur" and "Kcur" after RoPE, "Vcur", "kqv_out", "attn_sub_norm",
 * "attn_o_out", "ffn_inp", "ffn_norm", "ffn_sub_out", "ffn_sub_norm",
 * "ffn_down", "l_out"; layer -1 for "result_norm", of the rows whose
 * logits are computed), data [n][width] for the n tokens of the current
 * chunk. For debugging and tests; NULL in normal use. */
typedef void (*text_trace_fn)(void *user, const char *name, int64_t layer, const float *data,
			      int64_t n, int64_t width);

/* Working memory of one sequence. Everything is allocated by
 * text_state_new; text_forward allocates nothing of its own (the kernels
 * reuse the context's scratch). */
typedef struct text_state {
	int64_t n_ctx;      /* capacity of the KV cache, in positions */
	int64_t n_batch;    /* most tokens one pass of the layers takes */
	int64_t pos;        /* positions already in the cache */
	tern_dtype kv_type; /* of the cache: TERN_DTYPE_F32 or TERN_DTYPE_F16 */
	/* The caches hold each kv head's positions together, so attention
	 * reads one contiguous run per kv head: [n_layers][n_kv_heads][n_ctx]
	 * [head_dim], keys after RoPE. */
	void *k_cache;
	void *v_cache;
	float *kbuf, *vbuf; /* [n_batch][n_kv_heads * head_dim]: the chunk's new keys
	                       (RoPE applied here) and values in f32, before they are
	                       stored (and for an f16 cache rounded) into the caches */
	float *x;           /* [n_batch][n_embd] residual stream */
	float *xb;          /* [n_batch][max(n_embd, n_heads * head_dim)] normed input / projection out */
	float *q;           /* [n_batch][n_heads * head_dim] */
	float *att;         /* [n_batch][n_heads * head_dim] attention output */
	float *hb;          /* [n_batch][n_ff] gate, then the gated product */
	float *hb2;         /* [n_batch][n_ff] up */
	/* Head refinement, when the model has output_res: refine_first
	 * candidates first, then res_cap, then every row (text_forward);
	 * the gathered residual rows of up to res_cap candidates (an I4
	 * buffer laid out as a [res_cap][n_embd] tensor), their ids and
	 * corrections. Tests may lower refine_first and res_cap. */
	tern_tensor *res_rows;
	int64_t refine_first;
	int64_t res_cap;
	int32_t *res_idx;   /* [res_cap] */
	float *res_out;     /* [max(res_cap, n_vocab)] */
	text_trace_fn trace;
	void *trace_user;
} text_state;

/* Build a model from an opened file whose architecture is "bitnet",
 * "bitnet-b1.58", "bitnet-25" or "bitllama2c", with llama.cpp's tensor
 * names, checking every tensor's presence, dtype and shape (TERN_E_FORMAT
 * naming the key or tensor). Hyper-parameters use llama.cpp's key names
 * and are read from the GGUF keys "<arch>.<key>" (a GGUF file), from the
 * same keys under the header object "gguf" (a .tern made by the generic
 * GGUF conversion), or as "<key>" under "hparams" (the text plugin's own
 * .tern files); docs/FORMAT.md lists them. The FFN activation is the
 * string key "feed_forward_activation" ("silu" or "relu2") when present,
 * else SiLU for "bitnet" and "bitllama2c" and squared ReLU for the 2B4T
 * architectures. *out borrows the file, which must outlive it; free with
 * text_model_free. */
int text_model_load(tern_ctx *ctx, const tern_file *file, text_model **out);
/* Accepts NULL. */
void text_model_free(text_model *m);

/* Working memory for a sequence of up to n_ctx positions (0: the model's
 * context length, which n_ctx may not exceed), processing at most n_batch
 * tokens per pass (0: 512). Free with text_state_free. */
int text_state_new(tern_ctx *ctx, const text_model *m, int64_t n_ctx, int64_t n_batch,
		   text_state **out);
/* The same with the KV cache in kv_type: TERN_DTYPE_F32 (text_state_new)
 * or TERN_DTYPE_F16, which halves the cache and the bytes attention
 * reads; keys and values are rounded to f16 as they are stored. Another
 * type, or f16 with a bitllama2c model (whose runner keeps f32), gives
 * TERN_E_UNSUPPORTED. */
int text_state_new_kv(tern_ctx *ctx, const text_model *m, int64_t n_ctx, int64_t n_batch,
		      tern_dtype kv_type, text_state **out);
/* Accepts NULL. */
void text_state_free(text_state *s);
/* Forget the sequence (the cache is overwritten as new tokens arrive). */
void text_state_reset(text_state *s);

/* Row `id` (checked by the caller) of the token embedding into dst[n_embd],
 * its residual added when the model has one (tmp: n_embd floats). */
void text_embed(const text_model *m, int64_t id, float *dst, float *tmp);

/* Run n tokens at positions s->pos .. s->pos + n - 1 and advance s->pos.
 * Longer inputs are processed n_batch tokens at a time, each chunk's
 * linear layers as one GEMM. logits receives [n][n_vocab] (every token's
 * prediction of the next) when all_logits, else [n_vocab] for the last
 * token only; NULL skips the output head. TERN_E_INVALID, with nothing
 * changed, if the tokens do not fit the context or an id is out of range. */
int text_forward(tern_ctx *ctx, const text_model *m, text_state *s, const int32_t *tokens,
		 int64_t n, float *logits, bool all_logits);

#endif
