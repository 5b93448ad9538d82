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
/* Context scratch slots: 0 is tern_matmul's own; these are ours. */
#define SLOT_QACT 1
#define SLOT_ATTN 2

/* ---- loading ------------------------------------------------------------ */

typedef struct loader {
	tern_ctx *ctx;
	const tern_file *file;
	const tern_meta *meta;
	const char *arch;
} loader;

static int meta_int(const loader *L, const char *key, bool required, int64_t def, int64_t lo,
		    int64_t hi, int64_t *out)
{
	char path[256];
	snprintf(path, sizeof path, "%s.%s", L->arch, key);
	const tern_meta *v = tern_meta_get(L->meta, path);
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
	char path[256];
	snprintf(path, sizeof path, "%s.%s", L->arch, key);
	const tern_meta *v = tern_meta_get(L->meta, path);
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
	char path[256];
	snprintf(path, sizeof path, "%s.feed_forward_activation", L->arch);
	const tern_meta *v = tern_meta_get(L->meta, path);
	/* llama.cpp's "bitnet" gates with SiLU; bitnet.cpp's 2B4T
	 * architectures use BitNet b1.58 2B4T's squared ReLU. */
	*out = strcmp(L->arch, "bitnet") == 0 ? TEXT_ACT_SILU : TEXT_ACT_RELU2;
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

/* A weight matrix tern_matmul can run: float, or ternary/int8 with scales. */
static int find_matrix(const loader *L, const char *name, int64_t rows, int64_t cols,
		       const tern_tensor **out)
{
	const tern_tensor *t;
	int rc = find_tensor(L, name, rows, cols, &t);
	if (rc)
		return rc;
	bool quant = t->dtype == TERN_DTYPE_T2 || t->dtype == TERN_DTYPE_T3 ||
		     t->dtype == TERN_DTYPE_I8;
	if (!is_float_dtype(t->dtype) && !(quant && t->q.kind != TERN_SCALE_NONE))
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: tensor '%s' is %s, expected f32, f16, bf16, or t2, t3 or "
				  "i8 with scales",
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
	if ((rc = find_vector(L, n[0], E, &ly->attn_norm)) ||
	    (rc = find_matrix(L, n[1], QW, E, &ly->wq)) ||
	    (rc = find_matrix(L, n[2], KW, E, &ly->wk)) ||
	    (rc = find_matrix(L, n[3], KW, E, &ly->wv)) ||
	    (rc = find_vector(L, n[4], QW, &ly->attn_sub_norm)) ||
	    (rc = find_matrix(L, n[5], E, QW, &ly->wo)) ||
	    (rc = find_vector(L, n[6], E, &ly->ffn_norm)) ||
	    (rc = find_matrix(L, n[7], F, E, &ly->w_gate)) ||
	    (rc = find_matrix(L, n[8], F, E, &ly->w_up)) ||
	    (rc = find_vector(L, n[9], F, &ly->ffn_sub_norm)) ||
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
	if (!is_float_dtype(emb->dtype))
		return tern_error(L->ctx, TERN_E_FORMAT,
				  "%s: tensor 'token_embd.weight' is %s, expected f32, f16 or bf16",
				  L->arch, tern_dtype_name(emb->dtype));
	w->tok_embd = emb;
	const int64_t V = emb->shape[0];
	if ((rc = find_vector(L, "output_norm.weight", c->n_embd, &w->output_norm)))
		return rc;
	w->output = emb;
	if (tern_file_find(L->file, "output.weight") &&
	    (rc = find_matrix(L, "output.weight", V, c->n_embd, &w->output)))
		return rc;
	for (int64_t i = 0; i < c->n_layers; i++)
		if ((rc = load_layer(L, c, i, &w->layers[i])))
			return rc;
	return TERN_OK;
}

int text_model_load(tern_ctx *ctx, const tern_file *file, text_model **out)
{
	*out = NULL;
	loader L = { ctx, file, tern_file_meta(file), tern_file_architecture(file) };
	if (strcmp(L.arch, "bitnet") && strcmp(L.arch, "bitnet-b1.58") && strcmp(L.arch, "bitnet-25"))
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "text: architecture '%s' is not a BitNet decoder", L.arch);
	text_config c;
	memset(&c, 0, sizeof c);
	int rc = read_config(&L, &c);
	if (rc)
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
	tern_free(s->x);
	tern_free(s->xb);
	tern_free(s->q);
	tern_free(s->att);
	tern_free(s->hb);
	tern_free(s->hb2);
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
	*out = NULL;
	const text_config *c = &m->cfg;
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
	int rc = TERN_OK;
	/* n_layers * n_ctx cannot overflow: both are bounded well below 2^32. */
	s->k_cache = alloc_floats(c->n_layers * n_ctx, KW, &rc);
	s->v_cache = alloc_floats(c->n_layers * n_ctx, KW, &rc);
	s->x = alloc_floats(n_batch, c->n_embd, &rc);
	s->xb = alloc_floats(n_batch, c->n_embd > QW ? c->n_embd : QW, &rc);
	s->q = alloc_floats(n_batch, QW, &rc);
	s->att = alloc_floats(n_batch, QW, &rc);
	s->hb = alloc_floats(n_batch, c->n_ff, &rc);
	s->hb2 = alloc_floats(n_batch, c->n_ff, &rc);
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
	return d == TERN_DTYPE_T2 || d == TERN_DTYPE_T3 || d == TERN_DTYPE_I8;
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
	for (int i = 0; i < count && rc == TERN_OK; i++) {
		rc = shared ? tern_matmul_q(ctx, W[i], &a, y[i], ldy[i])
			    : tern_matmul(ctx, W[i], x, n, k, y[i], ldy[i]);
		if (rc == TERN_OK && scale[i] != 1.0f)
			for (int64_t t = 0; t < n; t++)
				tern_vec_scale(y[i] + t * ldy[i], scale[i], tern_tensor_rows(W[i]));
	}
	return rc;
}

static int linear(tern_ctx *ctx, const tern_tensor *W, float scale, const float *x, int64_t n,
		  int64_t k, float *y)
{
	const int64_t ld = tern_tensor_rows(W);
	return linear_group(ctx, 1, &W, &scale, x, n, k, &y, &ld);
}

/* Causal attention of a chunk, split into (token, kv head) items so both
 * prefill and single-token decode spread over the pool. */
typedef struct attn_job {
	const text_config *c;
	const float *q, *k, *v; /* q [n][QW]; k, v: this layer's cache from position 0 */
	float *out;             /* [n][QW] */
	int64_t n, pos0, n_ctx;
	float *scratch;         /* nth rows of n_ctx floats */
	atomic_int rc;
} attn_job;

static void attn_fn(void *arg, int ith, int nth)
{
	attn_job *j = arg;
	const text_config *c = j->c;
	const int64_t group = c->n_heads / c->n_kv_heads, hd = c->head_dim;
	const int64_t QW = c->n_heads * hd, KW = c->n_kv_heads * hd;
	int64_t b, e;
	tern_split_range(j->n * c->n_kv_heads, 1, ith, nth, &b, &e);
	for (int64_t it = b; it < e; it++) {
		const int64_t t = it / c->n_kv_heads, g = it % c->n_kv_heads;
		const tern_attn_params p = {
			.n_q = 1, .n_kv = j->pos0 + t + 1, .n_heads = group, .n_kv_heads = 1,
			.head_dim = hd, .q_pos0 = j->pos0 + t, .causal = true,
			.scale = 1.0f / sqrtf((float)hd),
			.q_stride = QW, .kv_stride = KW, .out_stride = QW,
		};
		int rc = tern_attention(&p, j->q + t * QW + g * group * hd, j->k + g * hd,
					j->v + g * hd, j->out + t * QW + g * group * hd,
					j->scratch + (size_t)ith * (size_t)j->n_ctx);
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

/* One pass of the layers over n <= s->n_batch tokens at s->pos. */
static int forward_chunk(tern_ctx *ctx, const text_model *m, text_state *s, const int32_t *tok,
			 int64_t n)
{
	const text_config *c = &m->cfg;
	const int64_t E = c->n_embd, hd = c->head_dim, F = c->n_ff;
	const int64_t QW = c->n_heads * hd, KW = c->n_kv_heads * hd;
	const int64_t pos0 = s->pos;
	int nth = tern_ctx_threads(ctx);
	size_t rows, bytes;
	if (tern_size_mul((size_t)nth, (size_t)s->n_ctx, &rows) ||
	    tern_size_mul(rows, sizeof(float), &bytes))
		return tern_error(ctx, TERN_E_OVERFLOW, "text: attention scratch size overflows");
	float *scratch = tern_ctx_scratch(ctx, SLOT_ATTN, bytes);
	if (!scratch)
		return TERN_E_NOMEM;

	for (int64_t t = 0; t < n; t++)
		tern_tensor_row_to_float(m->w.tok_embd, tok[t], s->x + t * E);

	int rc = TERN_OK;
	for (int64_t l = 0; l < c->n_layers && rc == TERN_OK; l++) {
		const text_layer *ly = &m->w.layers[l];
		float *kc = s->k_cache + (size_t)l * (size_t)s->n_ctx * (size_t)KW;
		float *vc = s->v_cache + (size_t)l * (size_t)s->n_ctx * (size_t)KW;

		for (int64_t t = 0; t < n; t++)
			tern_rmsnorm(s->x + t * E, ly->attn_norm, E, c->norm_eps, s->xb + t * E);
		trace(s, "attn_norm", l, s->xb, n, E);

		const tern_tensor *qkv[3] = { ly->wq, ly->wk, ly->wv };
		const float qkv_scale[3] = { ly->scale_q, ly->scale_k, ly->scale_v };
		float *const qkv_out[3] = { s->q, kc + pos0 * KW, vc + pos0 * KW };
		const int64_t qkv_ld[3] = { QW, KW, KW };
		if ((rc = linear_group(ctx, 3, qkv, qkv_scale, s->xb, n, E, qkv_out, qkv_ld)))
			break;
		for (int64_t t = 0; t < n && rc == TERN_OK; t++) {
			rc = tern_rope(s->q + t * QW, c->n_heads, hd, c->rot_dim, pos0 + t,
				       c->rope_base, TERN_ROPE_NEOX);
			if (rc == TERN_OK)
				rc = tern_rope(kc + (pos0 + t) * KW, c->n_kv_heads, hd, c->rot_dim,
					       pos0 + t, c->rope_base, TERN_ROPE_NEOX);
		}
		if (rc)
			break;
		trace(s, "Qcur", l, s->q, n, QW);
		trace(s, "Kcur", l, kc + pos0 * KW, n, KW);
		trace(s, "Vcur", l, vc + pos0 * KW, n, KW);

		attn_job aj = { .c = c, .q = s->q, .k = kc, .v = vc, .out = s->att, .n = n,
				.pos0 = pos0, .n_ctx = s->n_ctx, .scratch = scratch };
		atomic_init(&aj.rc, TERN_OK);
		if (nth > 1 && n * c->n_kv_heads > 1)
			tern_pool_run(tern_ctx_pool(ctx), attn_fn, &aj);
		else
			attn_fn(&aj, 0, 1);
		if ((rc = atomic_load(&aj.rc)))
			break;
		trace(s, "kqv_out", l, s->att, n, QW);

		for (int64_t t = 0; t < n; t++)
			tern_rmsnorm(s->att + t * QW, ly->attn_sub_norm, QW, c->norm_eps,
				     s->att + t * QW);
		trace(s, "attn_sub_norm", l, s->att, n, QW);
		if ((rc = linear(ctx, ly->wo, ly->scale_o, s->att, n, QW, s->xb)))
			break;
		trace(s, "attn_o_out", l, s->xb, n, E);
		tern_vec_add(s->x, s->xb, n * E);
		trace(s, "ffn_inp", l, s->x, n, E);

		for (int64_t t = 0; t < n; t++)
			tern_rmsnorm(s->x + t * E, ly->ffn_norm, E, c->norm_eps, s->xb + t * E);
		trace(s, "ffn_norm", l, s->xb, n, E);
		const tern_tensor *gu[2] = { ly->w_gate, ly->w_up };
		const float gu_scale[2] = { ly->scale_gate, ly->scale_up };
		float *const gu_out[2] = { s->hb, s->hb2 };
		const int64_t gu_ld[2] = { F, F };
		if ((rc = linear_group(ctx, 2, gu, gu_scale, s->xb, n, E, gu_out, gu_ld)))
			break;
		activate(c->act, s->hb, n * F);
		tern_vec_mul(s->hb, s->hb2, n * F);
		trace(s, "ffn_sub_out", l, s->hb, n, F);
		for (int64_t t = 0; t < n; t++)
			tern_rmsnorm(s->hb + t * F, ly->ffn_sub_norm, F, c->norm_eps, s->hb + t * F);
		trace(s, "ffn_sub_norm", l, s->hb, n, F);
		if ((rc = linear(ctx, ly->w_down, ly->scale_down, s->hb, n, F, s->xb)))
			break;
		trace(s, "ffn_down", l, s->xb, n, E);
		tern_vec_add(s->x, s->xb, n * E);
		trace(s, "l_out", l, s->x, n, E);
	}
	return rc;
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
		for (int64_t t = first; t < nc; t++)
			tern_rmsnorm(s->x + t * E, m->w.output_norm, E, c->norm_eps, s->xb + t * E);
		trace(s, "result_norm", -1, s->xb + first * E, nc - first, E);
		float *dst = all_logits ? logits + t0 * V : logits;
		if ((rc = tern_matmul(ctx, m->w.output, s->xb + first * E, nc - first, E, dst, V)))
			return rc;
	}
	return TERN_OK;
}
