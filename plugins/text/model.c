/*
 * model.c: loading and running the BitNet b1.58 decoder (model.h). The
 * loader reads llama.cpp's "bitnet" GGUF layout through tern_file and
 * refuses anything it cannot run with a message naming the key or the
 * tensor; the forward pass processes a chunk of tokens at once so every
 * linear layer is one GEMM, and writes K and V straight into the cache.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/text/model.h"
#include "tern/matmul.h"
#include "tern/ops.h"

/* Bounds that keep every size product far from overflow and refuse
 * absurd headers before anything is allocated. */
#define MAX_DIM (INT64_C(1) << 24)
#define MAX_LAYERS 4096
#define MAX_CTX (INT64_C(1) << 24)
#define DEFAULT_BATCH 512
/* Head refinement (text_weights.output_res): the REFINE_FIRST rows of
 * highest 4-bit logit first, then REFINE_MAX, then every row, until no
 * other row can win: none has a 4-bit logit within REFINE_MARGIN times
 * the largest correction seen of the best refined logit. */
#define REFINE_FIRST 64
#define REFINE_MAX 1024
#define REFINE_MARGIN 3.0f

/* Context scratch slots: 0 is tern_matmul's own; these are ours. */
#define SLOT_QACT 1
#define SLOT_ATTN 2
#define SLOT_RAW 3

/* ---- loading ------------------------------------------------------------ */

/* Where the hyper-parameters live: `hp` is the object that holds them
 * under llama.cpp's key names with `prefix` ("<arch>." for GGUF keys, ""
 * for "hparams"); `where` is hp's path from the file's root, for
 * messages. */
typedef struct loader {
	tern_ctx *ctx;
	const tern_file *file;
	const tern_meta *hp;
	const char *where;
	char prefix[96];
	const char *arch;
} loader;

static int find_hparams(loader *L)
{
	const tern_meta *root = tern_file_meta(L->file);
	const tern_meta *gguf = tern_meta_get(root, "gguf");
	const tern_meta *hparams = tern_meta_get(root, "hparams");
	const char *gguf_arch = L->arch;
	if (tern_file_format_of(L->file) == TERN_FORMAT_GGUF) {
		L->hp = root;
		L->where = "";
	} else if (tern_meta_type_of(gguf) == TERN_META_OBJECT) {
		/* The generic GGUF conversion keeps every key verbatim, so the
		 * prefix is the GGUF's own architecture. */
		L->hp = gguf;
		L->where = "gguf.";
		gguf_arch = tern_meta_get_string(gguf, "general.architecture", L->arch);
	} else if (tern_meta_type_of(hparams) == TERN_META_OBJECT) {
		L->hp = hparams;
		L->where = "hparams.";
		L->prefix[0] = 0;
		return TERN_OK;
	} else {
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: the file has no hyper-parameters (no header object "
				  "'hparams' or 'gguf')",
				  L->arch);
	}
	if (strlen(gguf_arch) + 2 > sizeof L->prefix)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: architecture name too long", L->arch);
	snprintf(L->prefix, sizeof L->prefix, "%s.", gguf_arch);
	return TERN_OK;
}

/* The value of hyper-parameter `key` (NULL if absent); *path receives
 * its full name for messages. */
static const tern_meta *hparam(const loader *L, const char *key, char *path, size_t len)
{
	char rel[256];
	snprintf(rel, sizeof rel, "%s%s", L->prefix, key);
	snprintf(path, len, "%s%s", L->where, rel);
	return tern_meta_get(L->hp, rel);
}

static int meta_int(const loader *L, const char *key, bool required, int64_t def, int64_t lo,
		    int64_t hi, int64_t *out)
{
	char path[320];
	const tern_meta *v = hparam(L, key, path, sizeof path);
	if (!v) {
		if (required)
			return tern_error(L->ctx, TERN_E_FORMAT, "%s: metadata '%s' is missing",
					  L->arch, path);
		*out = def;
		return TERN_OK;
	}
	int64_t x;
	if (tern_meta_as_int(v, &x) != TERN_OK)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: metadata '%s' is not an integer",
				  L->arch, path);
	if (x < lo || x > hi)
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: metadata '%s' = %lld is outside %lld..%lld", L->arch, path,
				  (long long)x, (long long)lo, (long long)hi);
	*out = x;
	return TERN_OK;
}

static int meta_float(const loader *L, const char *key, bool required, double def, float *out)
{
	char path[320];
	const tern_meta *v = hparam(L, key, path, sizeof path);
	double x = def;
	if (!v && required)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: metadata '%s' is missing", L->arch,
				  path);
	if (v && tern_meta_as_double(v, &x) != TERN_OK)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: metadata '%s' is not a number",
				  L->arch, path);
	/* Both uses (RoPE base, norm epsilon) need a positive finite float. */
	if (!(x > 0) || !isfinite((float)x))
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: metadata '%s' = %g must be positive",
				  L->arch, path, x);
	*out = (float)x;
	return TERN_OK;
}

static int read_activation(const loader *L, text_act *out)
{
	char path[320];
	const tern_meta *v = hparam(L, "feed_forward_activation", path, sizeof path);
	/* llama.cpp's "bitnet" and bitllama2.c gate with SiLU; bitnet.cpp's
	 * 2B4T architectures use BitNet b1.58 2B4T's squared ReLU. */
	*out = strcmp(L->arch, "bitnet") == 0 || strcmp(L->arch, "bitllama2c") == 0
		       ? TEXT_ACT_SILU
		       : TEXT_ACT_RELU2;
	if (!v)
		return TERN_OK;
	const char *s = tern_meta_as_string(v, NULL);
	if (s && strcmp(s, "silu") == 0)
		*out = TEXT_ACT_SILU;
	else if (s && strcmp(s, "relu2") == 0)
		*out = TEXT_ACT_RELU2;
	else
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: metadata '%s' must be \"silu\" or \"relu2\"", L->arch, path);
	return TERN_OK;
}

static int read_config(const loader *L, text_config *c)
{
	int rc;
	if ((rc = meta_int(L, "block_count", true, 0, 1, MAX_LAYERS, &c->n_layers)) ||
	    (rc = meta_int(L, "embedding_length", true, 0, 1, MAX_DIM, &c->n_embd)) ||
	    (rc = meta_int(L, "feed_forward_length", true, 0, 1, MAX_DIM, &c->n_ff)) ||
	    (rc = meta_int(L, "attention.head_count", true, 0, 1, MAX_DIM, &c->n_heads)) ||
	    (rc = meta_int(L, "attention.head_count_kv", false, c->n_heads, 1, MAX_DIM,
			   &c->n_kv_heads)) ||
	    (rc = meta_int(L, "context_length", true, 0, 1, MAX_CTX, &c->n_ctx)) ||
	    (rc = meta_float(L, "rope.freq_base", false, 10000.0, &c->rope_base)) ||
	    (rc = meta_float(L, "attention.layer_norm_rms_epsilon", true, 0, &c->norm_eps)) ||
	    (rc = read_activation(L, &c->act)))
		return rc;
	if (c->n_embd % c->n_heads)
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: embedding_length %lld is not a multiple of head_count %lld",
				  L->arch, (long long)c->n_embd, (long long)c->n_heads);
	if (c->n_heads % c->n_kv_heads)
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: head_count %lld is not a multiple of head_count_kv %lld",
				  L->arch, (long long)c->n_heads, (long long)c->n_kv_heads);
	c->head_dim = c->n_embd / c->n_heads;
	if ((rc = meta_int(L, "rope.dimension_count", false, c->head_dim, 2, c->head_dim,
			   &c->rot_dim)))
		return rc;
	if (c->rot_dim % 2)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: rope.dimension_count %lld is odd",
				  L->arch, (long long)c->rot_dim);
	if (c->arch == TEXT_ARCH_BITLLAMA2C && (c->rot_dim != c->head_dim || c->act != TEXT_ACT_SILU))
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: bitllama2.c models turn whole heads and gate with SiLU", L->arch);
	return TERN_OK;
}

static const char *shape_str(const tern_tensor *t, char *buf, size_t len)
{
	size_t off = 0;
	for (int d = 0; d < t->n_dims && off < len; d++)
		off += (size_t)snprintf(buf + off, len - off, "[%lld]", (long long)t->shape[d]);
	return buf;
}

/* The tensor `name` with shape [rows][cols] (rows 0: a vector [cols]),
 * else a message naming what is wrong. */
static int find_tensor(const loader *L, const char *name, int64_t rows, int64_t cols,
		       const tern_tensor **out)
{
	const tern_tensor *t = tern_file_find(L->file, name);
	if (!t)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: tensor '%s' is missing", L->arch,
				  name);
	bool ok = rows ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols
		       : t->n_dims == 1 && t->shape[0] == cols;
	if (!ok) {
		char got[96], want[64];
		shape_str(t, got, sizeof got);
		if (rows)
			snprintf(want, sizeof want, "[%lld][%lld]", (long long)rows, (long long)cols);
		else
			snprintf(want, sizeof want, "[%lld]", (long long)cols);
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: tensor '%s' has shape %s, expected %s",
				  L->arch, name, got, want);
	}
	*out = t;
	return TERN_OK;
}

static int find_vector(const loader *L, const char *name, int64_t n, const float **out)
{
	const tern_tensor *t;
	int rc = find_tensor(L, name, 0, n, &t);
	if (rc)
		return rc;
	if (t->dtype != TERN_DTYPE_F32)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: tensor '%s' is %s, expected f32",
				  L->arch, name, tern_dtype_name(t->dtype));
	*out = t->data;
	return TERN_OK;
}

static bool is_float_dtype(tern_dtype d)
{
	return d == TERN_DTYPE_F32 || d == TERN_DTYPE_F16 || d == TERN_DTYPE_BF16;
}

/* A weight matrix tern_matmul can run: float, or ternary/int8 with
 * scales. bitllama2c's BitLinears need ternary codes with one scale per
 * tensor, which its integer path (linear_l2c) applies itself. */
static int find_matrix(const loader *L, const char *name, int64_t rows, int64_t cols,
		       const tern_tensor **out)
{
	const tern_tensor *t;
	int rc = find_tensor(L, name, rows, cols, &t);
	if (rc)
		return rc;
	bool quant = t->dtype == TERN_DTYPE_T2 || t->dtype == TERN_DTYPE_T3 ||
		     t->dtype == TERN_DTYPE_I8 || t->dtype == TERN_DTYPE_I4;
	if (strcmp(L->arch, "bitllama2c") == 0 && strncmp(name, "blk.", 4) == 0 &&
	    !((t->dtype == TERN_DTYPE_T2 || t->dtype == TERN_DTYPE_T3) &&
	      t->q.kind == TERN_SCALE_TENSOR))
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: tensor '%s' is %s, expected t2 or t3 with one scale per "
				  "tensor",
				  L->arch, name, tern_dtype_name(t->dtype));
	if (!is_float_dtype(t->dtype) && !(quant && t->q.kind != TERN_SCALE_NONE))
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: tensor '%s' is %s, expected f32, f16, bf16, or t2, t3, "
				  "i8 or i4 with scales",
				  L->arch, name, tern_dtype_name(t->dtype));
	*out = t;
	return TERN_OK;
}

/* The optional one-element output scale "<base>.scale" (1 when absent). */
static int find_scale(const loader *L, const char *base, float *out)
{
	char name[128];
	snprintf(name, sizeof name, "%s.scale", base);
	*out = 1.0f;
	const tern_tensor *t = tern_file_find(L->file, name);
	if (!t)
		return TERN_OK;
	int64_t n = 1;
	for (int d = 0; d < t->n_dims; d++)
		n *= t->shape[d];
	if (t->dtype != TERN_DTYPE_F32 || n != 1)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: tensor '%s' must be one f32 value",
				  L->arch, name);
	*out = *(const float *)t->data;
	if (!isfinite(*out))
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: tensor '%s' is not finite", L->arch,
				  name);
	return TERN_OK;
}

static int load_layer(const loader *L, const text_config *c, int64_t i, text_layer *ly)
{
	const int64_t E = c->n_embd, QW = c->n_heads * c->head_dim;
	const int64_t KW = c->n_kv_heads * c->head_dim, F = c->n_ff;
	char n[12][96];
	static const char *const part[12] = {
		"attn_norm", "attn_q", "attn_k", "attn_v", "attn_sub_norm", "attn_output",
		"ffn_norm", "ffn_gate", "ffn_up", "ffn_sub_norm", "ffn_down", NULL,
	};
	for (int p = 0; part[p]; p++)
		snprintf(n[p], sizeof n[p], "blk.%lld.%s.weight", (long long)i, part[p]);
	int rc;
	/* bitllama2.c's norms have no weights: the vectors stay NULL. */
	const bool norms = c->arch != TEXT_ARCH_BITLLAMA2C;
	if ((norms && (rc = find_vector(L, n[0], E, &ly->attn_norm))) ||
	    (rc = find_matrix(L, n[1], QW, E, &ly->wq)) ||
	    (rc = find_matrix(L, n[2], KW, E, &ly->wk)) ||
	    (rc = find_matrix(L, n[3], KW, E, &ly->wv)) ||
	    (norms && (rc = find_vector(L, n[4], QW, &ly->attn_sub_norm))) ||
	    (rc = find_matrix(L, n[5], E, QW, &ly->wo)) ||
	    (norms && (rc = find_vector(L, n[6], E, &ly->ffn_norm))) ||
	    (rc = find_matrix(L, n[7], F, E, &ly->w_gate)) ||
	    (rc = find_matrix(L, n[8], F, E, &ly->w_up)) ||
	    (norms && (rc = find_vector(L, n[9], F, &ly->ffn_sub_norm))) ||
	    (rc = find_matrix(L, n[10], E, F, &ly->w_down)))
		return rc;
	/* The scale of "blk.N.attn_q.weight" is "blk.N.attn_q.scale". */
	float *const sc[] = { &ly->scale_q, &ly->scale_k, &ly->scale_v, &ly->scale_o,
			      &ly->scale_gate, &ly->scale_up, &ly->scale_down };
	const int which[] = { 1, 2, 3, 5, 7, 8, 10 };
	for (int k = 0; k < 7; k++) {
		char base[96];
		snprintf(base, sizeof base, "blk.%lld.%s", (long long)i, part[which[k]]);
		if ((rc = find_scale(L, base, sc[k])))
			return rc;
	}
	return TERN_OK;
}

/* The optional residual "<base>.residual" of matrix w (see text_weights):
 * I4 with block scales, of w's shape, and only beside a quantized w. */
static int find_residual(const loader *L, const char *base, const tern_tensor *w,
			 const tern_tensor **out)
{
	char name[64];
	snprintf(name, sizeof name, "%s.residual", base);
	*out = NULL;
	const tern_tensor *t = tern_file_find(L->file, name);
	if (!t)
		return TERN_OK;
	int rc = find_tensor(L, name, w->shape[0], w->shape[1], &t);
	if (rc)
		return rc;
	if (t->dtype != TERN_DTYPE_I4 || t->q.kind != TERN_SCALE_BLOCK || is_float_dtype(w->dtype))
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: tensor '%s' is %s and '%s.weight' %s; a residual must be i4 "
				  "with block scales, beside a quantized matrix",
				  L->arch, name, tern_dtype_name(t->dtype), base,
				  tern_dtype_name(w->dtype));
	*out = t;
	return TERN_OK;
}

static int load_weights(const loader *L, const text_config *c, text_weights *w)
{
	int rc;
	const tern_tensor *emb = tern_file_find(L->file, "token_embd.weight");
	if (!emb)
		return tern_error(L->ctx, TERN_E_FORMAT, "%s: tensor 'token_embd.weight' is missing",
				  L->arch);
	if (emb->n_dims != 2 || emb->shape[1] != c->n_embd || emb->shape[0] < 1) {
		char got[96];
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: tensor 'token_embd.weight' has shape %s, expected "
				  "[n_vocab][%lld]",
				  L->arch, shape_str(emb, got, sizeof got), (long long)c->n_embd);
	}
	/* An int8 or 4-bit embedding (tern convert --head i8|i4) is
	 * dequantized row by row like a float one. */
	if (!is_float_dtype(emb->dtype) &&
	    !((emb->dtype == TERN_DTYPE_I8 || emb->dtype == TERN_DTYPE_I4) &&
	      emb->q.kind != TERN_SCALE_NONE))
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: tensor 'token_embd.weight' is %s, expected f32, f16, bf16, "
				  "or i8 or i4 with scales",
				  L->arch, tern_dtype_name(emb->dtype));
	w->tok_embd = emb;
	const int64_t V = emb->shape[0];
	if ((rc = find_vector(L, "output_norm.weight", c->n_embd, &w->output_norm)))
		return rc;
	w->output = emb;
	if (tern_file_find(L->file, "output.weight") &&
	    (rc = find_matrix(L, "output.weight", V, c->n_embd, &w->output)))
		return rc;
	if ((rc = find_residual(L, "token_embd", emb, &w->tok_embd_res)))
		return rc;
	w->output_res = w->tok_embd_res;
	if (w->output != emb && (rc = find_residual(L, "output", w->output, &w->output_res)))
		return rc;
	for (int64_t i = 0; i < c->n_layers; i++)
		if ((rc = load_layer(L, c, i, &w->layers[i])))
			return rc;
	return TERN_OK;
}

int text_model_load(tern_ctx *ctx, const tern_file *file, text_model **out)
{
	*out = NULL;
	loader L = { .ctx = ctx, .file = file, .arch = tern_file_architecture(file) };
	text_config c;
	memset(&c, 0, sizeof c);
	if (strcmp(L.arch, "bitllama2c") == 0) {
		c.arch = TEXT_ARCH_BITLLAMA2C;
		c.rope = TERN_ROPE_ADJACENT;
	} else if (strcmp(L.arch, "bitnet") == 0 || strcmp(L.arch, "bitnet-b1.58") == 0 ||
		   strcmp(L.arch, "bitnet-25") == 0) {
		c.arch = TEXT_ARCH_BITNET;
		c.rope = TERN_ROPE_NEOX;
	} else {
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "text: architecture '%s' is not a BitNet decoder", L.arch);
	}
	int rc = find_hparams(&L);
	if (rc || (rc = read_config(&L, &c)))
		return rc;
	text_model *m = calloc(1, sizeof *m);
	if (!m || !(m->w.layers = calloc((size_t)c.n_layers, sizeof *m->w.layers))) {
		free(m);
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", L.arch);
	}
	if ((rc = load_weights(&L, &c, &m->w))) {
		text_model_free(m);
		return rc;
	}
	c.n_vocab = m->w.tok_embd->shape[0];
	m->cfg = c;
	m->file = file;
	*out = m;
	return TERN_OK;
}

void text_model_free(text_model *m)
{
	if (!m)
		return;
	free(m->w.layers);
	free(m);
}

/* ---- run state ---------------------------------------------------------- */

void text_state_free(text_state *s)
{
	if (!s)
		return;
	tern_free(s->k_cache);
	tern_free(s->v_cache);
	tern_free(s->kbuf);
	tern_free(s->vbuf);
	tern_free(s->x);
	tern_free(s->xb);
	tern_free(s->q);
	tern_free(s->att);
	tern_free(s->hb);
	tern_free(s->hb2);
	tern_tensor_free(s->res_rows);
	free(s->res_idx);
	free(s->res_out);
	free(s);
}

void text_state_reset(text_state *s)
{
	s->pos = 0;
}

/* A zeroed buffer of a * b floats. */
static float *alloc_floats(int64_t a, int64_t b, int *rc)
{
	size_t n, bytes;
	if (*rc)
		return NULL;
	if (tern_size_mul((size_t)a, (size_t)b, &n) || tern_size_mul(n, sizeof(float), &bytes)) {
		*rc = TERN_E_OVERFLOW;
		return NULL;
	}
	float *p = tern_alloc(bytes);
	if (!p)
		*rc = TERN_E_NOMEM;
	else
		memset(p, 0, bytes);
	return p;
}

int text_state_new(tern_ctx *ctx, const text_model *m, int64_t n_ctx, int64_t n_batch,
		   text_state **out)
{
	return text_state_new_kv(ctx, m, n_ctx, n_batch, TERN_DTYPE_F32, out);
}

int text_state_new_kv(tern_ctx *ctx, const text_model *m, int64_t n_ctx, int64_t n_batch,
		      tern_dtype kv_type, text_state **out)
{
	*out = NULL;
	const text_config *c = &m->cfg;
	if (kv_type != TERN_DTYPE_F32 && kv_type != TERN_DTYPE_F16)
		return tern_error(ctx, TERN_E_UNSUPPORTED, "text: a KV cache of %s (f32 or f16 only)",
				  tern_dtype_name(kv_type));
	if (kv_type == TERN_DTYPE_F16 && c->arch == TEXT_ARCH_BITLLAMA2C)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "text: bitllama2c models keep an f32 KV cache (their runner's "
				  "float steps are followed one for one)");
	if (n_ctx == 0)
		n_ctx = c->n_ctx;
	if (n_batch == 0)
		n_batch = DEFAULT_BATCH;
	if (n_ctx < 1 || n_ctx > c->n_ctx)
		return tern_error(ctx, TERN_E_INVALID,
				  "text: context of %lld positions requested; the model allows "
				  "1..%lld",
				  (long long)n_ctx, (long long)c->n_ctx);
	if (n_batch < 1 || n_batch > MAX_CTX)
		return tern_error(ctx, TERN_E_INVALID, "text: batch of %lld tokens", (long long)n_batch);
	if (n_batch > n_ctx)
		n_batch = n_ctx;
	const int64_t QW = c->n_heads * c->head_dim, KW = c->n_kv_heads * c->head_dim;
	text_state *s = calloc(1, sizeof *s);
	if (!s)
		return tern_error(ctx, TERN_E_NOMEM, "text: out of memory");
	s->n_ctx = n_ctx;
	s->n_batch = n_batch;
	s->kv_type = kv_type;
	int rc = TERN_OK;
	/* n_layers * n_ctx cannot overflow: both are bounded well below 2^32.
	 * An f16 cache takes half the floats' bytes. */
	const int64_t kv_rows = kv_type == TERN_DTYPE_F16 ? (KW + 1) / 2 : KW;
	s->k_cache = alloc_floats(c->n_layers * n_ctx, kv_rows, &rc);
	s->v_cache = alloc_floats(c->n_layers * n_ctx, kv_rows, &rc);
	s->kbuf = alloc_floats(n_batch, KW, &rc);
	s->vbuf = alloc_floats(n_batch, KW, &rc);
	s->x = alloc_floats(n_batch, c->n_embd, &rc);
	s->xb = alloc_floats(n_batch, c->n_embd > QW ? c->n_embd : QW, &rc);
	s->q = alloc_floats(n_batch, QW, &rc);
	s->att = alloc_floats(n_batch, QW, &rc);
	s->hb = alloc_floats(n_batch, c->n_ff, &rc);
	s->hb2 = alloc_floats(n_batch, c->n_ff, &rc);
	if (m->w.output_res && rc == TERN_OK) {
		const int64_t V = c->n_vocab;
		s->res_cap = V < REFINE_MAX ? V : REFINE_MAX;
		s->refine_first = V < REFINE_FIRST ? V : REFINE_FIRST;
		const int64_t shape[2] = { s->res_cap, c->n_embd };
		rc = tern_tensor_new(ctx, TERN_DTYPE_I4, &m->w.output_res->q, 2, shape, &s->res_rows);
		s->res_idx = malloc(sizeof(int32_t) * (size_t)s->res_cap);
		/* V floats: the fallback refines every row at once. */
		s->res_out = malloc(sizeof(float) * (size_t)V);
		if (rc == TERN_OK && (!s->res_idx || !s->res_out))
			rc = TERN_E_NOMEM;
	}
	if (rc) {
		text_state_free(s);
		return tern_error(ctx, rc, "text: cannot allocate the state for %lld positions",
				  (long long)n_ctx);
	}
	*out = s;
	return TERN_OK;
}

/* ---- forward ------------------------------------------------------------ */

static void trace(const text_state *s, const char *name, int64_t layer, const float *data,
		  int64_t n, int64_t width)
{
	if (s->trace)
		s->trace(s->trace_user, name, layer, data, n, width);
}

static bool is_quant_dtype(tern_dtype d)
{
	return d == TERN_DTYPE_T2 || d == TERN_DTYPE_T3 || d == TERN_DTYPE_I8 ||
	       d == TERN_DTYPE_I4;
}

/* y_i = scale_i * W_i x for up to three weights reading the same input
 * x [n][k]: when all are quantized alike the activations are quantized
 * once and shared, as BitNet quantizes a BitLinear's input once. */
static int linear_group(tern_ctx *ctx, int count, const tern_tensor *const *W, const float *scale,
			const float *x, int64_t n, int64_t k, float *const *y, const int64_t *ldy)
{
	bool shared = true;
	for (int i = 0; i < count; i++)
		shared = shared && is_quant_dtype(W[i]->dtype) && W[i]->dtype == W[0]->dtype;
	int rc = TERN_OK;
	tern_qact a;
	if (shared)
		rc = tern_qact_quantize(ctx, SLOT_QACT, W[0]->dtype, x, n, k, k, TERN_ACTQ_MUL,
					TERN_ROUND_EVEN, &a);
	if (shared && rc == TERN_OK)
		rc = tern_matmul_q_many(ctx, count, W, &a, y, ldy);
	for (int i = 0; i < count && rc == TERN_OK; i++) {
		if (!shared)
			rc = tern_matmul(ctx, W[i], x, n, k, y[i], ldy[i]);
		if (rc == TERN_OK && scale[i] != 1.0f)
			for (int64_t t = 0; t < n; t++)
				tern_vec_scale(y[i] + t * ldy[i], scale[i], tern_tensor_rows(W[i]));
	}
	return rc;
}

/* ---- bitllama2.c's numerics ---------------------------------------------
 * Its runner's float steps, kept one for one so greedy decoding follows
 * the same path: each rounding below is one the runner performs. */

/* y = x * (1 / sqrt(mean(x^2))) / n, the sum of squares accumulated in
 * order, no eps. An all-zero x (the runner would make NaN) gives zeros. */
static void bit_norm(const float *x, int64_t n, float *y)
{
	float ss = 0.0f;
	for (int64_t i = 0; i < n; i++)
		ss += x[i] * x[i];
	ss /= (float)n;
	const float r = ss > 0.0f ? 1.0f / sqrtf(ss) / (float)n : 0.0f;
	for (int64_t i = 0; i < n; i++)
		y[i] = x[i] * r;
}

/* The final RMSNorm with weights: y = w * (x / sqrt(mean(x^2) + eps)). */
static void final_norm_l2c(const float *x, const float *w, int64_t n, float eps, float *y)
{
	float ss = 0.0f;
	for (int64_t i = 0; i < n; i++)
		ss += x[i] * x[i];
	ss = 1.0f / sqrtf(ss / (float)n + eps);
	for (int64_t i = 0; i < n; i++)
		y[i] = w[i] * (ss * x[i]);
}

/* One token's int8 activations: d = max|x| / 127 and q = round(x * (1/d))
 * with halves away from zero, 1/d rounded to float first (the runner's
 * order; x / d would round differently near halves). Returns d. */
static float quantize_l2c(const float *x, int64_t k, int8_t *q)
{
	float amax = 0.0f;
	for (int64_t i = 0; i < k; i++)
		amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
	if (!(amax > 0.0f) || !isfinite(amax)) {
		memset(q, 0, (size_t)k);
		return 0.0f;
	}
	const float d = (float)((double)amax / 127.0);
	const float inv = (float)(1.0 / (double)d);
	for (int64_t i = 0; i < k; i++) {
		const float v = roundf(x[i] * inv);
		q[i] = (int8_t)(v > 127.0f ? 127.0f : v < -128.0f ? -128.0f : v);
	}
	return d;
}

/* bitllama2.c's BitLinear for up to three weights reading x [n][k]:
 * y = int32_sum(w * q) * (weight_scale * d), the two scales multiplied
 * first as the runner does. The integer sums come from the ternary
 * kernels (raw accumulators), so only the float steps are ours. */
static int linear_l2c(tern_ctx *ctx, int count, const tern_tensor *const *W, const float *x,
		      int64_t n, int64_t k, float *const *y, const int64_t *ldy)
{
	tern_qact a;
	int rc = TERN_OK;
	for (int i = 0; i < count && rc == TERN_OK; i++) {
		if (i == 0 || W[i]->dtype != W[i - 1]->dtype) {
			/* Buffers of the right padding for this dtype; the values
			 * are then replaced by the runner's quantization. */
			rc = tern_qact_quantize(ctx, SLOT_QACT, W[i]->dtype, x, n, k, k, TERN_ACTQ_DIV,
						TERN_ROUND_AWAY, &a);
			if (rc)
				break;
			const int64_t nc = a.kpad / 32;
			for (int64_t t = 0; t < n; t++) {
				int8_t *q = a.q + t * a.kpad;
				a.scale[t] = quantize_l2c(x + t * k, k, q);
				int32_t sum = 0;
				for (int64_t c = 0; c < nc; c++) {
					int32_t cs = 0;
					for (int64_t j = 0; j < 32; j++)
						cs += q[c * 32 + j];
					if (a.csum)
						a.csum[t * nc + c] = cs;
					sum += cs;
				}
				a.sum[t] = sum;
			}
		}
		const int64_t rows = tern_tensor_rows(W[i]);
		size_t cnt, bytes;
		if (tern_size_mul((size_t)rows, (size_t)n, &cnt) ||
		    tern_size_mul(cnt, sizeof(int32_t), &bytes))
			return tern_error(ctx, TERN_E_OVERFLOW, "text: accumulator size overflows");
		int32_t *raw = tern_ctx_scratch(ctx, SLOT_RAW, bytes);
		if (!raw)
			return TERN_E_NOMEM;
		if ((rc = tern_matmul_raw_i32(ctx, W[i], &a, raw)))
			break;
		/* Codes are stored as w + 1: subtracting the activation sum
		 * leaves sum(w * q). */
		const float ws = tern_tensor_scale_at(W[i], 0, 0);
		for (int64_t t = 0; t < n; t++) {
			const float sc = ws * a.scale[t];
			float *yt = y[i] + t * ldy[i];
			for (int64_t r = 0; r < rows; r++)
				yt[r] = (float)(raw[r * n + t] - a.sum[t]) * sc;
		}
	}
	return rc;
}

/* Adjacent pairs (x[i], x[i+1]) of each head turn by
 * pos / base^(i / head_dim), each frequency from its own powf. */
static void rope_l2c(float *x, int64_t n_heads, int64_t hd, int64_t pos, float base)
{
	for (int64_t i = 0; i < hd; i += 2) {
		const float freq = 1.0f / powf(base, (float)i / (float)hd);
		const float ang = (float)pos * freq;
		const float cs = cosf(ang), sn = sinf(ang);
		for (int64_t h = 0; h < n_heads; h++) {
			float *p = x + h * hd + i;
			const float v0 = p[0], v1 = p[1];
			p[0] = v0 * cs - v1 * sn;
			p[1] = v0 * sn + v1 * cs;
		}
	}
}

/* Causal attention of n tokens at pos0.. over the cache (text_state's
 * layout, n_ctx positions a kv head), one head at a time: float dot
 * products in order, divided by sqrt(head size), a float softmax, values
 * accumulated position by position. scratch [pos0 + n]. */
static void attn_l2c(const text_config *c, const float *q, const float *kc, const float *vc,
		     float *out, int64_t n, int64_t pos0, int64_t n_ctx, float *scratch)
{
	const int64_t hd = c->head_dim, QW = c->n_heads * hd;
	const int64_t group = c->n_heads / c->n_kv_heads;
	const float div = sqrtf((float)hd);
	for (int64_t t = 0; t < n; t++) {
		const int64_t nk = pos0 + t + 1;
		for (int64_t h = 0; h < c->n_heads; h++) {
			const float *qh = q + t * QW + h * hd;
			const int64_t koff = (h / group) * n_ctx * hd;
			float mx = -INFINITY, sum = 0.0f;
			for (int64_t j = 0; j < nk; j++) {
				const float *kh = kc + koff + j * hd;
				float sc = 0.0f;
				for (int64_t i = 0; i < hd; i++)
					sc += qh[i] * kh[i];
				scratch[j] = sc / div;
				mx = scratch[j] > mx ? scratch[j] : mx;
			}
			for (int64_t j = 0; j < nk; j++) {
				scratch[j] = expf(scratch[j] - mx);
				sum += scratch[j];
			}
			for (int64_t j = 0; j < nk; j++)
				scratch[j] /= sum;
			float *oh = out + t * QW + h * hd;
			memset(oh, 0, (size_t)hd * sizeof(float));
			for (int64_t j = 0; j < nk; j++) {
				const float *vh = vc + koff + j * hd;
				for (int64_t i = 0; i < hd; i++)
					oh[i] += scratch[j] * vh[i];
			}
		}
	}
}

/* The output head as the runner computes it: each logit a float dot
 * product summed in order. x [n][E], logits [n][V]. */
static void head_l2c(const text_model *m, const float *x, int64_t n, float *logits)
{
	const int64_t E = m->cfg.n_embd, V = m->cfg.n_vocab;
	const float *w = m->w.output->data;
	for (int64_t t = 0; t < n; t++)
		for (int64_t v = 0; v < V; v++) {
			float acc = 0.0f;
			for (int64_t i = 0; i < E; i++)
				acc += w[v * E + i] * x[t * E + i];
			logits[t * V + v] = acc;
		}
}

/* ---- per-architecture steps -------------------------------------------- */

static int linear_any(tern_ctx *ctx, const text_config *c, int count, const tern_tensor *const *W,
		      const float *scale, const float *x, int64_t n, int64_t k, float *const *y,
		      const int64_t *ldy)
{
	if (c->arch == TEXT_ARCH_BITLLAMA2C)
		return linear_l2c(ctx, count, W, x, n, k, y, ldy);
	return linear_group(ctx, count, W, scale, x, n, k, y, ldy);
}

static int linear(tern_ctx *ctx, const text_config *c, const tern_tensor *W, float scale,
		  const float *x, int64_t n, int64_t k, float *y)
{
	const int64_t ld = tern_tensor_rows(W);
	return linear_any(ctx, c, 1, &W, &scale, x, n, k, &y, &ld);
}

/* The norm before a BitLinear group: weighted RMSNorm, or bitllama2.c's
 * parameter-free one (w is NULL there). x, y [n][width]; y may be x. */
static void norm_rows(const text_config *c, const float *w, const float *x, int64_t n,
		      int64_t width, float *y)
{
	for (int64_t t = 0; t < n; t++) {
		if (c->arch == TEXT_ARCH_BITLLAMA2C)
			bit_norm(x + t * width, width, y + t * width);
		else
			tern_rmsnorm(x + t * width, w, width, c->norm_eps, y + t * width);
	}
}

static int rope_rows(const text_config *c, float *x, int64_t n_heads, int64_t pos)
{
	if (c->arch == TEXT_ARCH_BITLLAMA2C) {
		rope_l2c(x, n_heads, c->head_dim, pos, c->rope_base);
		return TERN_OK;
	}
	return tern_rope(x, n_heads, c->head_dim, c->rot_dim, pos, c->rope_base, c->rope);
}

/* Causal attention of a chunk. In prefill the threads take (token, kv
 * head) items in turn from a shared counter (later tokens see more keys,
 * so a static split would leave the first threads idle); a decode step's
 * query heads are split evenly, and each thread passes its heads to
 * tern_attention_ctx in runs that share a kv head (so that head's keys and
 * values are read once per run). A head's result does not depend on the
 * run it is in, so results do not change with the thread count. */
typedef struct attn_job {
	const tern_ctx *ctx;
	const text_config *c;
	const float *q;         /* [n][QW] */
	tern_dtype kv_type;
	const void *k, *v;      /* this layer's caches: n_kv_heads runs of n_ctx rows */
	float *out;             /* [n][QW] */
	int64_t n, pos0, n_ctx;
	float *scratch;         /* nth rows of n_ctx x (n_heads / n_kv_heads) floats */
	atomic_llong next;      /* next item to take */
	atomic_int rc;
} attn_job;

static void attn_fn(void *arg, int ith, int nth)
{
	attn_job *j = arg;
	const text_config *c = j->c;
	const int64_t group = c->n_heads / c->n_kv_heads, hd = c->head_dim;
	const int64_t QW = c->n_heads * hd;
	const int64_t items = j->n * c->n_kv_heads;
	float *scratch = j->scratch + (size_t)ith * (size_t)j->n_ctx * (size_t)group;
	/* One token (decode): every head costs the same, so each thread
	 * takes an even contiguous run of query heads, cut where the kv head
	 * changes. */
	int64_t hb = 0, he = 0;
	if (j->n == 1)
		tern_split_range(c->n_heads, 1, ith, nth, &hb, &he);
	for (;;) {
		int64_t t, h, nh;
		if (j->n == 1) {
			if (hb >= he)
				break;
			t = 0;
			h = hb;
			const int64_t end = (h / group + 1) * group;
			nh = (end < he ? end : he) - h;
			hb += nh;
		} else {
			const int64_t it =
				atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
			if (it >= items)
				break;
			t = it / c->n_kv_heads;
			h = it % c->n_kv_heads * group;
			nh = group;
		}
		const tern_attn_params p = {
			.n_q = 1, .n_kv = j->pos0 + t + 1, .n_heads = nh, .n_kv_heads = 1,
			.head_dim = hd, .q_pos0 = j->pos0 + t, .causal = true,
			.scale = 1.0f / sqrtf((float)hd),
			.q_stride = QW, .kv_stride = hd, .out_stride = QW,
		};
		const size_t esz = j->kv_type == TERN_DTYPE_F16 ? 2 : 4;
		const size_t off = (size_t)((h / group) * j->n_ctx * hd) * esz;
		int rc = tern_attention_ctx(j->ctx, &p, j->q + t * QW + h * hd, j->kv_type,
					    (const char *)j->k + off, (const char *)j->v + off,
					    j->out + t * QW + h * hd, scratch);
		if (rc)
			atomic_store(&j->rc, rc);
	}
}

static void activate(text_act act, float *x, int64_t n)
{
	if (act == TEXT_ACT_RELU2)
		tern_relu2(x, n);
	else
		tern_silu(x, n);
}

/* The per-token float steps between the matmuls, spread over the pool by
 * token when a chunk has several (prefill): each row is computed by the
 * same code whichever thread takes it, so results do not change. */
typedef enum row_op {
	ROW_NORM,    /* y = norm(x) with weight w over `width` */
	ROW_ROPE,    /* rotate q (x) and k of each token at pos0 + t */
	ROW_ACT_MUL, /* x = act(x) * x2 over `width` */
	ROW_ADD,     /* x += x2 over `width` */
} row_op;

typedef struct row_job {
	row_op op;
	const text_config *c;
	const float *w;
	float *x, *y;
	const float *x2;
	int64_t n, width, pos0;
	float *k;   /* ROW_ROPE: the cache rows of these tokens */
	int64_t kw; /* ROW_ROPE: k row stride */
	atomic_int rc;
} row_job;

static void act_mul_row(const text_config *c, float *x, const float *x2, int64_t n)
{
	if (c->arch == TEXT_ARCH_BITLLAMA2C) {
		for (int64_t i = 0; i < n; i++) {
			const float g = x[i];
			x[i] = g * (1.0f / (1.0f + expf(-g))) * x2[i];
		}
	} else {
		activate(c->act, x, n);
		tern_vec_mul(x, x2, n);
	}
}

static void row_range(row_job *j, int64_t t0, int64_t t1)
{
	const int64_t W = j->width;
	for (int64_t t = t0; t < t1; t++) {
		switch (j->op) {
		case ROW_NORM:
			norm_rows(j->c, j->w, j->x + t * W, 1, W, j->y + t * W);
			break;
		case ROW_ROPE: {
			int rc = rope_rows(j->c, j->x + t * W, j->c->n_heads, j->pos0 + t);
			if (rc == TERN_OK)
				rc = rope_rows(j->c, j->k + t * j->kw, j->c->n_kv_heads, j->pos0 + t);
			if (rc)
				atomic_store(&j->rc, rc);
			break;
		}
		case ROW_ACT_MUL:
			act_mul_row(j->c, j->x + t * W, j->x2 + t * W, W);
			break;
		case ROW_ADD:
			tern_vec_add(j->x + t * W, j->x2 + t * W, W);
			break;
		}
	}
}

static void row_fn(void *arg, int ith, int nth)
{
	row_job *j = arg;
	int64_t b, e;
	tern_split_range(j->n, 1, ith, nth, &b, &e);
	row_range(j, b, e);
}

/* Run j over its j->n tokens: on the pool when there are several. */
static int rows_run(tern_ctx *ctx, row_job *j)
{
	atomic_init(&j->rc, TERN_OK);
	if (j->n > 1 && tern_ctx_threads(ctx) > 1)
		tern_pool_run(tern_ctx_pool(ctx), row_fn, j);
	else
		row_range(j, 0, j->n);
	return atomic_load(&j->rc);
}

/* One pass of the layers over n <= s->n_batch tokens at s->pos. */
/* Stores the chunk's n rows of new keys or values, src [n][KW], at
 * positions pos0.. of one layer's cache (f32 or f16, as the state's),
 * each kv head's slice into that head's run. */
static int store_kv(tern_ctx *ctx, const text_state *s, const text_config *c, void *cache,
		    const float *src, int64_t pos0, int64_t n)
{
	const int64_t hd = c->head_dim, KW = c->n_kv_heads * hd;
	for (int64_t h = 0; h < c->n_kv_heads; h++) {
		const size_t row0 = (size_t)(h * s->n_ctx + pos0) * (size_t)hd;
		for (int64_t t = 0; t < n; t++) {
			const float *x = src + t * KW + h * hd;
			const size_t at = row0 + (size_t)(t * hd);
			if (s->kv_type == TERN_DTYPE_F16) {
				int rc = tern_f32_to_f16_row(ctx, x, (uint16_t *)cache + at, hd);
				if (rc)
					return rc;
			} else {
				memcpy((float *)cache + at, x, sizeof(float) * (size_t)hd);
			}
		}
	}
	return TERN_OK;
}

static int forward_chunk(tern_ctx *ctx, const text_model *m, text_state *s, const int32_t *tok,
			 int64_t n)
{
	const text_config *c = &m->cfg;
	const int64_t E = c->n_embd, hd = c->head_dim, F = c->n_ff;
	const int64_t QW = c->n_heads * hd, KW = c->n_kv_heads * hd;
	const int64_t pos0 = s->pos;
	int nth = tern_ctx_threads(ctx);
	size_t rows, bytes;
	/* Per thread: the scores of one kv head's group of query heads. */
	const size_t group = (size_t)(c->n_heads / c->n_kv_heads);
	if (tern_size_mul((size_t)nth, (size_t)s->n_ctx, &rows) ||
	    tern_size_mul(rows, group, &rows) ||
	    tern_size_mul(rows, sizeof(float), &bytes))
		return tern_error(ctx, TERN_E_OVERFLOW, "text: attention scratch size overflows");
	float *scratch = tern_ctx_scratch(ctx, SLOT_ATTN, bytes);
	if (!scratch)
		return TERN_E_NOMEM;

	for (int64_t t = 0; t < n; t++)
		text_embed(m, tok[t], s->x + t * E, s->xb + t * E);

	int rc = TERN_OK;
	for (int64_t l = 0; l < c->n_layers && rc == TERN_OK; l++) {
		const text_layer *ly = &m->w.layers[l];
		/* The layer's caches (in elements: n_kv_heads runs of n_ctx
		 * positions); this chunk's keys and values are computed in
		 * kbuf/vbuf and stored after RoPE. */
		const bool f16 = s->kv_type == TERN_DTYPE_F16;
		const size_t loff = (size_t)l * (size_t)s->n_ctx * (size_t)KW;
		float *kc = f16 ? NULL : (float *)s->k_cache + loff;
		float *vc = f16 ? NULL : (float *)s->v_cache + loff;
		uint16_t *kh = f16 ? (uint16_t *)s->k_cache + loff : NULL;
		uint16_t *vh = f16 ? (uint16_t *)s->v_cache + loff : NULL;
		float *knew = s->kbuf, *vnew = s->vbuf;

		row_job rj = { .op = ROW_NORM, .c = c, .w = ly->attn_norm, .x = s->x, .y = s->xb,
			       .n = n, .width = E };
		rows_run(ctx, &rj);
		trace(s, "attn_norm", l, s->xb, n, E);

		const tern_tensor *qkv[3] = { ly->wq, ly->wk, ly->wv };
		const float qkv_scale[3] = { ly->scale_q, ly->scale_k, ly->scale_v };
		float *const qkv_out[3] = { s->q, knew, vnew };
		const int64_t qkv_ld[3] = { QW, KW, KW };
		if ((rc = linear_any(ctx, c, 3, qkv, qkv_scale, s->xb, n, E, qkv_out, qkv_ld)))
			break;
		rj = (row_job){ .op = ROW_ROPE, .c = c, .x = s->q, .n = n, .width = QW,
				.pos0 = pos0, .k = knew, .kw = KW };
		if ((rc = rows_run(ctx, &rj)))
			break;
		trace(s, "Qcur", l, s->q, n, QW);
		trace(s, "Kcur", l, knew, n, KW);
		trace(s, "Vcur", l, vnew, n, KW);
		if ((rc = store_kv(ctx, s, c, kc ? (void *)kc : kh, knew, pos0, n)) ||
		    (rc = store_kv(ctx, s, c, vc ? (void *)vc : vh, vnew, pos0, n)))
			break;

		if (c->arch == TEXT_ARCH_BITLLAMA2C) {
			attn_l2c(c, s->q, kc, vc, s->att, n, pos0, s->n_ctx, scratch);
		} else {
			attn_job aj = { .ctx = ctx, .c = c, .q = s->q, .kv_type = s->kv_type,
					.k = f16 ? (const void *)kh : kc,
					.v = f16 ? (const void *)vh : vc, .out = s->att, .n = n,
					.pos0 = pos0, .n_ctx = s->n_ctx, .scratch = scratch };
			atomic_init(&aj.rc, TERN_OK);
			atomic_init(&aj.next, 0);
			if (nth > 1 && n * c->n_heads > 1)
				tern_pool_run(tern_ctx_pool(ctx), attn_fn, &aj);
			else
				attn_fn(&aj, 0, 1);
			if ((rc = atomic_load(&aj.rc)))
				break;
		}
		trace(s, "kqv_out", l, s->att, n, QW);

		rj = (row_job){ .op = ROW_NORM, .c = c, .w = ly->attn_sub_norm, .x = s->att,
				.y = s->att, .n = n, .width = QW };
		rows_run(ctx, &rj);
		trace(s, "attn_sub_norm", l, s->att, n, QW);
		if ((rc = linear(ctx, c, ly->wo, ly->scale_o, s->att, n, QW, s->xb)))
			break;
		trace(s, "attn_o_out", l, s->xb, n, E);
		rj = (row_job){ .op = ROW_ADD, .c = c, .x = s->x, .x2 = s->xb, .n = n, .width = E };
		rows_run(ctx, &rj);
		trace(s, "ffn_inp", l, s->x, n, E);

		rj = (row_job){ .op = ROW_NORM, .c = c, .w = ly->ffn_norm, .x = s->x, .y = s->xb,
				.n = n, .width = E };
		rows_run(ctx, &rj);
		trace(s, "ffn_norm", l, s->xb, n, E);
		const tern_tensor *gu[2] = { ly->w_gate, ly->w_up };
		const float gu_scale[2] = { ly->scale_gate, ly->scale_up };
		float *const gu_out[2] = { s->hb, s->hb2 };
		const int64_t gu_ld[2] = { F, F };
		if ((rc = linear_any(ctx, c, 2, gu, gu_scale, s->xb, n, E, gu_out, gu_ld)))
			break;
		rj = (row_job){ .op = ROW_ACT_MUL, .c = c, .x = s->hb, .x2 = s->hb2, .n = n,
				.width = F };
		rows_run(ctx, &rj);
		trace(s, "ffn_sub_out", l, s->hb, n, F);
		rj = (row_job){ .op = ROW_NORM, .c = c, .w = ly->ffn_sub_norm, .x = s->hb,
				.y = s->hb, .n = n, .width = F };
		rows_run(ctx, &rj);
		trace(s, "ffn_sub_norm", l, s->hb, n, F);
		if ((rc = linear(ctx, c, ly->w_down, ly->scale_down, s->hb, n, F, s->xb)))
			break;
		trace(s, "ffn_down", l, s->xb, n, E);
		rj = (row_job){ .op = ROW_ADD, .c = c, .x = s->x, .x2 = s->xb, .n = n, .width = E };
		rows_run(ctx, &rj);
		trace(s, "l_out", l, s->x, n, E);
	}
	return rc;
}

void text_embed(const text_model *m, int64_t id, float *dst, float *tmp)
{
	const int64_t E = m->cfg.n_embd;
	tern_tensor_row_to_float(m->w.tok_embd, id, dst);
	if (!m->w.tok_embd_res)
		return;
	tern_tensor_row_to_float(m->w.tok_embd_res, id, tmp);
	for (int64_t j = 0; j < E; j++)
		dst[j] += tmp[j];
}

/* Add the head residual to one row of 4-bit logits, for the candidates
 * that can matter (REFINE_* above): their rows are gathered into
 * s->res_rows and multiplied by x, the same activations the 4-bit head
 * took, so a refined logit is what the summed matrix gives. */
static int refine_logits(tern_ctx *ctx, const text_model *m, text_state *s, const float *x,
			 float *logits)
{
	const tern_tensor *R = m->w.output_res;
	const int64_t V = m->cfg.n_vocab, E = m->cfg.n_embd;
	const size_t rb = tern_row_bytes(R->dtype, E);
	size_t n_sc = 0;
	if (tern_scale_count(R->dtype, &R->q, 1, E, &n_sc))
		return tern_error(ctx, TERN_E_INTERNAL, "text: head residual scales");
	const size_t sb = n_sc * (R->q.scale_type == TERN_DTYPE_F16 ? 2 : 4);
	const uint8_t *codes = R->data, *scales = tern_tensor_scales(R);
	int rc;
	for (int64_t k = s->refine_first > 0 ? s->refine_first : 1;;
	     k = k < s->res_cap ? s->res_cap : V + 1) {
		if (k > s->res_cap) {
			/* Too close to call: refine every row. */
			if ((rc = tern_matmul(ctx, R, x, 1, E, s->res_out, V)))
				return rc;
			for (int64_t i = 0; i < V; i++)
				logits[i] += s->res_out[i];
			return TERN_OK;
		}
		if (tern_top_k(logits, V, k, s->res_idx))
			return tern_error(ctx, TERN_E_INTERNAL, "text: top %lld of %lld logits",
					  (long long)k, (long long)V);
		const float kth = logits[s->res_idx[k - 1]];
		tern_tensor g = *s->res_rows;
		g.shape[0] = k;
		g.nbytes = (size_t)k * (rb + sb);
		uint8_t *gc = g.data, *gs = gc + (size_t)k * rb;
		for (int64_t j = 0; j < k; j++) {
			const size_t r = (size_t)s->res_idx[j];
			memcpy(gc + (size_t)j * rb, codes + r * rb, rb);
			memcpy(gs + (size_t)j * sb, scales + r * sb, sb);
		}
		if ((rc = tern_matmul(ctx, &g, x, 1, E, s->res_out, k)))
			return rc;
		float most = 0.0f, best = -INFINITY;
		for (int64_t j = 0; j < k; j++) {
			most = fmaxf(most, fabsf(s->res_out[j]));
			best = fmaxf(best, logits[s->res_idx[j]] + s->res_out[j]);
		}
		if (k == V || kth + REFINE_MARGIN * most <= best) {
			for (int64_t j = 0; j < k; j++)
				logits[s->res_idx[j]] += s->res_out[j];
			return TERN_OK;
		}
	}
}

int text_forward(tern_ctx *ctx, const text_model *m, text_state *s, const int32_t *tokens,
		 int64_t n, float *logits, bool all_logits)
{
	const text_config *c = &m->cfg;
	if (n < 1 || !tokens)
		return tern_error(ctx, TERN_E_INVALID, "text: no tokens to run");
	if (n > s->n_ctx - s->pos)
		return tern_error(ctx, TERN_E_INVALID,
				  "text: %lld tokens at position %lld exceed the context of %lld "
				  "positions",
				  (long long)n, (long long)s->pos, (long long)s->n_ctx);
	for (int64_t t = 0; t < n; t++)
		if (tokens[t] < 0 || tokens[t] >= c->n_vocab)
			return tern_error(ctx, TERN_E_INVALID,
					  "text: token %lld has id %ld outside the vocabulary of "
					  "%lld",
					  (long long)t, (long)tokens[t], (long long)c->n_vocab);

	const int64_t E = c->n_embd, V = c->n_vocab;
	for (int64_t t0 = 0; t0 < n; t0 += s->n_batch) {
		const int64_t nc = n - t0 < s->n_batch ? n - t0 : s->n_batch;
		int rc = forward_chunk(ctx, m, s, tokens + t0, nc);
		if (rc)
			return rc;
		s->pos += nc;
		if (!logits)
			continue;
		/* Only the rows whose logits are wanted go through the head. */
		const int64_t first = all_logits ? 0 : (t0 + nc == n ? nc - 1 : nc);
		if (first == nc)
			continue;
		for (int64_t t = first; t < nc; t++) {
			if (c->arch == TEXT_ARCH_BITLLAMA2C)
				final_norm_l2c(s->x + t * E, m->w.output_norm, E, c->norm_eps,
					       s->xb + t * E);
			else
				tern_rmsnorm(s->x + t * E, m->w.output_norm, E, c->norm_eps,
					     s->xb + t * E);
		}
		trace(s, "result_norm", -1, s->xb + first * E, nc - first, E);
		float *dst = all_logits ? logits + t0 * V : logits;
		if (c->arch == TEXT_ARCH_BITLLAMA2C && m->w.output->dtype == TERN_DTYPE_F32)
			head_l2c(m, s->xb + first * E, nc - first, dst);
		else if ((rc = tern_matmul(ctx, m->w.output, s->xb + first * E, nc - first, E, dst,
					   V)))
			return rc;
		for (int64_t t = first; t < nc && m->w.output_res; t++)
			if ((rc = refine_logits(ctx, m, s, s->xb + t * E, dst + (t - first) * V)))
				return rc;
	}
	return TERN_OK;
}
