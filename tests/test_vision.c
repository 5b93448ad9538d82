/*
 * test_vision.c: the ViT of plugins/vision (compiled in directly from
 * vit.c, preprocess.c and siglip.c, and loaded as a module through the
 * registry) against an independent, plainly written forward pass of
 * small random models that this suite writes with tern_writer: class
 * token or mean pooling, learned or sin-cos positions, erf or tanh GELU,
 * float or ternary patch embedding, with and without biases and final
 * norm. Also: the loader's errors name the tensor or key; the
 * image-encoder component; the SigLIP import from a random Hugging Face
 * style checkpoint (bf16 safetensors + config.json) written here; and,
 * when tests/data/vit/ holds a PyTorch export, parity with its logits.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plugins/vision/vit.h"
#include "tern/file.h"
#include "tern/plugin.h"
#include "tern/vision.h"
#include "testutil.h"

static tern_ctx *ctx;

static void setup(void)
{
	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = 2; /* exercise the pool's split of tokens and heads */
	cr_assert_eq(tern_ctx_new(&p, &ctx), TERN_OK);
}

static void teardown(void)
{
	tern_ctx_free(ctx);
}

TestSuite(vision, .init = setup, .fini = teardown);

/* ---- a random model and its plain reference ------------------------------ */

typedef struct cfg {
	int S, C, P, D, depth, heads, M, n_classes;
	const char *pool;    /* "cls", "mean", "none" */
	bool sincos, gelu_tanh, patch_ternary, final_norm, attn_bias;
	unsigned seed;
} cfg;

/* A ternary matrix: codes [rows][cols] in {-1,0,1} and one scale. */
typedef struct tlin {
	int rows, cols;
	int8_t *codes;
	float s;
} tlin;

typedef struct rblock {
	float *ln1w, *ln1b, *ln2w, *ln2b;
	tlin q, k, v, o, fc1, fc2;
	float *bq, *bk, *bv, *bo, *b1, *b2; /* bq..bo NULL without attention biases */
} rblock;

typedef struct rmodel {
	cfg c;
	int T, NP;
	float *patch_w; /* float [D][C*P*P] (float patch embedding) */
	tlin patch_t;   /* ternary patch embedding */
	float *patch_b, *cls, *pos; /* pos [T][D], learned only */
	rblock *blk;
	float *nw, *nb, *hw, *hb;
} rmodel;

static float *randv(tu_rng *r, int n, float mul, float add)
{
	float *v = malloc((size_t)n * sizeof *v);
	cr_assert_not_null(v);
	for (int i = 0; i < n; i++)
		v[i] = add + mul * tu_normal(r);
	return v;
}

static tlin rand_tlin(tu_rng *r, int rows, int cols)
{
	tlin t = { rows, cols, malloc((size_t)rows * cols), 0.02f + 0.05f * (float)fabs(tu_float(r)) };
	for (int i = 0; i < rows * cols; i++)
		t.codes[i] = (int8_t)tu_int(r, -1, 1);
	t.codes[0] = 1; /* the scale is the largest magnitude */
	return t;
}

static void add_f32(tern_writer *w, const char *name, int rows, int cols, const float *v)
{
	tern_tensor t = { .name = name, .dtype = TERN_DTYPE_F32, .n_dims = cols ? 2 : 1,
			  .shape = { rows, cols }, .data = (void *)v };
	cr_assert_eq(tern_tensor_bytes(ctx, &t, &t.nbytes), TERN_OK);
	cr_assert_eq(tern_writer_add_tensor(w, &t), TERN_OK, "%s", tern_ctx_errmsg(ctx));
}

static void add_t2(tern_writer *w, const char *name, const tlin *l)
{
	tern_qparams qp = { TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32 };
	int64_t shape[2] = { l->rows, l->cols };
	tern_tensor *t;
	cr_assert_eq(tern_tensor_new(ctx, TERN_DTYPE_T2, &qp, 2, shape, &t), TERN_OK);
	float *f = malloc((size_t)l->rows * l->cols * sizeof *f);
	for (int i = 0; i < l->rows * l->cols; i++)
		f[i] = l->codes[i] * l->s;
	cr_assert_eq(tern_pack_ternary_exact(ctx, f, t), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_float_eq(tern_tensor_scale_at(t, 0, 0), l->s, 0.0f);
	t->name = name;
	cr_assert_eq(tern_writer_add_tensor(w, t), TERN_OK);
	t->name = NULL;
	tern_tensor_free(t);
	free(f);
}

static rmodel make_model(const cfg *c)
{
	rmodel m = { .c = *c };
	tu_rng r = tu_rng_new(c->seed);
	const int D = c->D, plen = c->C * c->P * c->P, g = c->S / c->P;
	m.NP = g * g;
	m.T = m.NP + (strcmp(c->pool, "cls") == 0);
	if (c->patch_ternary)
		m.patch_t = rand_tlin(&r, D, plen);
	else
		m.patch_w = randv(&r, D * plen, 0.2f, 0.0f);
	m.patch_b = randv(&r, D, 0.1f, 0.0f);
	if (m.T > m.NP)
		m.cls = randv(&r, D, 0.5f, 0.0f);
	if (!c->sincos)
		m.pos = randv(&r, m.T * D, 0.3f, 0.0f);
	m.blk = calloc((size_t)c->depth, sizeof *m.blk);
	for (int i = 0; i < c->depth; i++) {
		rblock *b = &m.blk[i];
		b->ln1w = randv(&r, D, 0.1f, 1.0f);
		b->ln1b = randv(&r, D, 0.1f, 0.0f);
		b->ln2w = randv(&r, D, 0.1f, 1.0f);
		b->ln2b = randv(&r, D, 0.1f, 0.0f);
		b->q = rand_tlin(&r, D, D);
		b->k = rand_tlin(&r, D, D);
		b->v = rand_tlin(&r, D, D);
		b->o = rand_tlin(&r, D, D);
		b->fc1 = rand_tlin(&r, c->M, D);
		b->fc2 = rand_tlin(&r, D, c->M);
		if (c->attn_bias) {
			b->bq = randv(&r, D, 0.1f, 0.0f);
			b->bk = randv(&r, D, 0.1f, 0.0f);
			b->bv = randv(&r, D, 0.1f, 0.0f);
			b->bo = randv(&r, D, 0.1f, 0.0f);
		}
		b->b1 = randv(&r, c->M, 0.1f, 0.0f);
		b->b2 = randv(&r, D, 0.1f, 0.0f);
	}
	if (c->final_norm) {
		m.nw = randv(&r, D, 0.1f, 1.0f);
		m.nb = randv(&r, D, 0.1f, 0.0f);
	}
	if (c->n_classes) {
		m.hw = randv(&r, c->n_classes * D, 0.3f, 0.0f);
		m.hb = randv(&r, c->n_classes, 0.1f, 0.0f);
	}
	return m;
}

static void free_tlin(tlin *t)
{
	free(t->codes);
}

static void free_model(rmodel *m)
{
	free(m->patch_w);
	free_tlin(&m->patch_t);
	free(m->patch_b);
	free(m->cls);
	free(m->pos);
	for (int i = 0; i < m->c.depth; i++) {
		rblock *b = &m->blk[i];
		float *fs[] = { b->ln1w, b->ln1b, b->ln2w, b->ln2b, b->bq, b->bk, b->bv, b->bo, b->b1, b->b2 };
		for (size_t j = 0; j < sizeof fs / sizeof fs[0]; j++)
			free(fs[j]);
		tlin *ts[] = { &b->q, &b->k, &b->v, &b->o, &b->fc1, &b->fc2 };
		for (size_t j = 0; j < 6; j++)
			free_tlin(ts[j]);
	}
	free(m->blk);
	free(m->nw);
	free(m->nb);
	free(m->hw);
	free(m->hb);
}

/* Write m as a .tern file; hparams_override replaces the hparams object
 * (the loader tests break it one way at a time). */
static void write_model(const rmodel *m, const char *path, const char *hparams_override)
{
	const cfg *c = &m->c;
	tern_writer *w;
	char buf[1024], name[64];
	cr_assert_eq(tern_writer_new(ctx, path, &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "vit"), TERN_OK);
	snprintf(buf, sizeof buf,
		 "{\"image_size\": %d, \"channels\": %d, \"patch_size\": %d, \"dim\": %d, \"depth\": %d, "
		 "\"heads\": %d, \"mlp_dim\": %d, \"n_classes\": %d, \"pool\": \"%s\", "
		 "\"pos_embed\": \"%s\", \"gelu\": \"%s\", \"norm_eps\": 1e-5, "
		 "\"patch_ternary\": %s, \"final_norm\": %s}",
		 c->S, c->C, c->P, c->D, c->depth, c->heads, c->M, c->n_classes, c->pool,
		 c->sincos ? "sincos" : "learned", c->gelu_tanh ? "tanh" : "erf",
		 c->patch_ternary ? "true" : "false", c->final_norm ? "true" : "false");
	cr_assert_eq(tern_writer_set_json(w, "hparams", hparams_override ? hparams_override : buf), TERN_OK);
	snprintf(buf, sizeof buf,
		 "{\"grayscale\": %s, \"resize\": \"none\", \"resize_size\": %d, \"crop_size\": %d, "
		 "\"scale\": 0.00392156862745098, \"mean\": %s, \"std\": %s}",
		 c->C == 1 ? "true" : "false", c->S, c->S, c->C == 1 ? "[0.3]" : "[0.4, 0.5, 0.6]",
		 c->C == 1 ? "[0.25]" : "[0.2, 0.25, 0.3]");
	cr_assert_eq(tern_writer_set_json(w, "preprocess", buf), TERN_OK);
	if (c->n_classes) {
		char labels[512] = "[";
		for (int i = 0; i < c->n_classes; i++)
			snprintf(labels + strlen(labels), sizeof labels - strlen(labels), "%s\"class%d\"",
				 i ? ", " : "", i);
		strcat(labels, "]");
		cr_assert_eq(tern_writer_set_json(w, "metadata.labels", labels), TERN_OK);
	}
	const int D = c->D, plen = c->C * c->P * c->P;
	if (c->patch_ternary)
		add_t2(w, "patch_embed.weight", &m->patch_t);
	else
		add_f32(w, "patch_embed.weight", D, plen, m->patch_w);
	add_f32(w, "patch_embed.bias", D, 0, m->patch_b);
	if (m->cls)
		add_f32(w, "cls_token", D, 0, m->cls);
	if (m->pos)
		add_f32(w, "pos_embed", m->T, D, m->pos);
	for (int i = 0; i < c->depth; i++) {
		const rblock *b = &m->blk[i];
#define NAME(fmt) (snprintf(name, sizeof name, fmt, i), name)
		add_f32(w, NAME("blk.%d.norm1.weight"), D, 0, b->ln1w);
		add_f32(w, NAME("blk.%d.norm1.bias"), D, 0, b->ln1b);
		add_t2(w, NAME("blk.%d.attn.q.weight"), &b->q);
		add_t2(w, NAME("blk.%d.attn.k.weight"), &b->k);
		add_t2(w, NAME("blk.%d.attn.v.weight"), &b->v);
		add_t2(w, NAME("blk.%d.attn.o.weight"), &b->o);
		if (b->bq) {
			add_f32(w, NAME("blk.%d.attn.q.bias"), D, 0, b->bq);
			add_f32(w, NAME("blk.%d.attn.k.bias"), D, 0, b->bk);
			add_f32(w, NAME("blk.%d.attn.v.bias"), D, 0, b->bv);
			add_f32(w, NAME("blk.%d.attn.o.bias"), D, 0, b->bo);
		}
		add_f32(w, NAME("blk.%d.norm2.weight"), D, 0, b->ln2w);
		add_f32(w, NAME("blk.%d.norm2.bias"), D, 0, b->ln2b);
		add_t2(w, NAME("blk.%d.mlp.fc1.weight"), &b->fc1);
		add_f32(w, NAME("blk.%d.mlp.fc1.bias"), c->M, 0, b->b1);
		add_t2(w, NAME("blk.%d.mlp.fc2.weight"), &b->fc2);
		add_f32(w, NAME("blk.%d.mlp.fc2.bias"), D, 0, b->b2);
#undef NAME
	}
	if (m->nw) {
		add_f32(w, "norm.weight", D, 0, m->nw);
		add_f32(w, "norm.bias", D, 0, m->nb);
	}
	if (m->hw) {
		add_f32(w, "head.weight", c->n_classes, D, m->hw);
		add_f32(w, "head.bias", c->n_classes, 0, m->hb);
	}
	cr_assert_eq(tern_writer_finish(w), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_writer_free(w);
}

/* -- the reference: plain loops, double accumulators -- */

/* BitLinear of one row: absmax int8 (x / (a/127), ties to even), integer
 * dot with the codes, then (acc * s) * xs + bias, as FORMAT.md states. */
static void ref_bitlinear(const tlin *l, const float *x, const float *bias, float *y)
{
	float a = 0.0f;
	for (int j = 0; j < l->cols; j++)
		a = fmaxf(a, fabsf(x[j]));
	const float xs = a / 127.0f;
	for (int r = 0; r < l->rows; r++) {
		long acc = 0;
		for (int j = 0; a > 0 && j < l->cols; j++) {
			float q = nearbyintf(x[j] / xs);
			q = q > 127 ? 127 : q < -127 ? -127 : q;
			acc += (long)l->codes[(size_t)r * l->cols + j] * (long)q;
		}
		y[r] = (float)acc * l->s * xs + (bias ? bias[r] : 0.0f);
	}
}

static void ref_layernorm(const float *x, const float *w, const float *b, int n, float *y)
{
	double mean = 0, var = 0;
	for (int i = 0; i < n; i++)
		mean += x[i];
	mean /= n;
	for (int i = 0; i < n; i++)
		var += (x[i] - mean) * (x[i] - mean);
	var /= n;
	const float rs = 1.0f / sqrtf((float)var + 1e-5f);
	for (int i = 0; i < n; i++)
		y[i] = (float)(x[i] - mean) * rs * w[i] + b[i];
}

static float ref_gelu(float x, bool tanh_form)
{
	double v = x;
	if (tanh_form)
		return (float)(0.5 * v * (1.0 + tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v))));
	return (float)(0.5 * v * (1.0 + erf(v / sqrt(2.0))));
}

/* x: the normalized input [C][S][S]; tokens [T][D] after the final norm,
 * logits [n_classes]. */
static void ref_forward(const rmodel *m, const float *img, float *tokens, float *logits)
{
	const cfg *c = &m->c;
	const int D = c->D, T = m->T, g = c->S / c->P, plen = c->C * c->P * c->P, hd = D / c->heads;
	const int first = T - m->NP;
	float *x = calloc((size_t)T * D, sizeof *x), *h = calloc((size_t)T * D, sizeof *h);
	float *q = calloc((size_t)T * D, sizeof *q), *k = calloc((size_t)T * D, sizeof *k);
	float *v = calloc((size_t)T * D, sizeof *v), *att = calloc((size_t)T * D, sizeof *att);
	float *mlp = calloc((size_t)T * c->M, sizeof *mlp), *y = calloc((size_t)D, sizeof *y);
	float *patch = calloc((size_t)plen, sizeof *patch);
	double *sc = calloc((size_t)T, sizeof *sc);
	for (int py = 0; py < g; py++)
		for (int px = 0; px < g; px++) {
			int i = 0;
			for (int ch = 0; ch < c->C; ch++)
				for (int ky = 0; ky < c->P; ky++)
					for (int kx = 0; kx < c->P; kx++)
						patch[i++] = img[(ch * c->S + py * c->P + ky) * c->S + px * c->P + kx];
			float *row = x + (first + py * g + px) * D;
			if (c->patch_ternary) {
				ref_bitlinear(&m->patch_t, patch, m->patch_b, row);
			} else {
				for (int d = 0; d < D; d++) {
					double s = 0;
					for (int j = 0; j < plen; j++)
						s += (double)m->patch_w[d * plen + j] * patch[j];
					row[d] = (float)s + m->patch_b[d];
				}
			}
		}
	if (m->cls)
		memcpy(x, m->cls, (size_t)D * sizeof *x);
	for (int t = 0; t < T; t++) {
		for (int d = 0; d < D; d++) {
			float pe;
			if (!c->sincos) {
				pe = m->pos[t * D + d];
			} else if (t < first) {
				pe = 0.0f;
			} else {
				/* FORMAT.md: [sin(col w), cos(col w), sin(row w), cos(row w)] */
				int p = t - first, row = p / g, col = p % g, qd = D / 4, blk = d / qd, i = d % qd;
				double om = 1.0 / pow(10000.0, (double)i / qd), pos = blk < 2 ? col : row;
				pe = (float)(blk % 2 == 0 ? sin(pos * om) : cos(pos * om));
			}
			x[t * D + d] += pe;
		}
	}
	for (int l = 0; l < c->depth; l++) {
		const rblock *b = &m->blk[l];
		for (int t = 0; t < T; t++) {
			ref_layernorm(x + t * D, b->ln1w, b->ln1b, D, h + t * D);
			ref_bitlinear(&b->q, h + t * D, b->bq, q + t * D);
			ref_bitlinear(&b->k, h + t * D, b->bk, k + t * D);
			ref_bitlinear(&b->v, h + t * D, b->bv, v + t * D);
		}
		for (int hh = 0; hh < c->heads; hh++)
			for (int t = 0; t < T; t++) {
				double mx = -INFINITY, sum = 0;
				for (int u = 0; u < T; u++) {
					double s = 0;
					for (int j = 0; j < hd; j++)
						s += (double)q[t * D + hh * hd + j] * k[u * D + hh * hd + j];
					sc[u] = s / sqrt((double)hd);
					mx = fmax(mx, sc[u]);
				}
				for (int u = 0; u < T; u++)
					sum += sc[u] = exp(sc[u] - mx);
				for (int j = 0; j < hd; j++) {
					double o = 0;
					for (int u = 0; u < T; u++)
						o += sc[u] / sum * v[u * D + hh * hd + j];
					att[t * D + hh * hd + j] = (float)o;
				}
			}
		for (int t = 0; t < T; t++) {
			ref_bitlinear(&b->o, att + t * D, b->bo, y);
			for (int d = 0; d < D; d++)
				x[t * D + d] += y[d];
			ref_layernorm(x + t * D, b->ln2w, b->ln2b, D, h + t * D);
			ref_bitlinear(&b->fc1, h + t * D, b->b1, mlp + t * c->M);
			for (int j = 0; j < c->M; j++)
				mlp[t * c->M + j] = ref_gelu(mlp[t * c->M + j], c->gelu_tanh);
			ref_bitlinear(&b->fc2, mlp + t * c->M, b->b2, y);
			for (int d = 0; d < D; d++)
				x[t * D + d] += y[d];
		}
	}
	if (m->nw)
		for (int t = 0; t < T; t++)
			ref_layernorm(x + t * D, m->nw, m->nb, D, x + t * D);
	if (tokens)
		memcpy(tokens, x, (size_t)T * D * sizeof *x);
	if (logits && c->n_classes) {
		for (int d = 0; d < D; d++) {
			double s = 0;
			for (int t = 0; t < T; t++)
				s += x[t * D + d];
			y[d] = strcmp(c->pool, "cls") == 0 ? x[d] : (float)(s / T);
		}
		for (int n = 0; n < c->n_classes; n++) {
			double s = m->hb[n];
			for (int d = 0; d < D; d++)
				s += (double)m->hw[n * D + d] * y[d];
			logits[n] = (float)s;
		}
	}
	free(x), free(h), free(q), free(k), free(v), free(att), free(mlp), free(y), free(patch), free(sc);
}

/* Relative agreement: |a - b| <= tol * max(1, max|ref|) over n values. */
static void assert_close(const float *got, const float *ref, int n, double tol, const char *what)
{
	double scale = 1.0;
	for (int i = 0; i < n; i++)
		scale = fmax(scale, fabs(ref[i]));
	for (int i = 0; i < n; i++)
		cr_assert_leq(fabs((double)got[i] - ref[i]), tol * scale,
			      "%s[%d]: got %.7g, reference %.7g (scale %.3g)", what, i, got[i], ref[i],
			      scale);
}

static char *tmp_path(const char *tag)
{
	static char buf[256];
	snprintf(buf, sizeof buf, "/tmp/tern_test_vision_%d_%s.tern", (int)getpid(), tag);
	return buf;
}

/* A deterministic random input image of side S, channels C, already
 * normalized (what vit_forward takes). */
static float *rand_input(int C, int S, unsigned seed)
{
	tu_rng r = tu_rng_new(seed);
	return randv(&r, C * S * S, 1.0f, 0.0f);
}

/* Write, load with vit_model_load, run vit_forward and the reference. */
static void check_forward(const cfg *c)
{
	rmodel rm = make_model(c);
	char path[256];
	snprintf(path, sizeof path, "%s", tmp_path("fwd"));
	write_model(&rm, path, NULL);
	tern_file *f;
	vit_model *m;
	cr_assert_eq(tern_file_open(ctx, path, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(vit_model_load(ctx, f, "", "", &m), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	float *img = rand_input(c->C, c->S, c->seed + 7);
	const int n_tok = rm.T * c->D;
	float *tok = malloc((size_t)n_tok * sizeof *tok), *rtok = malloc((size_t)n_tok * sizeof *rtok);
	float logits[16], rlogits[16];
	cr_assert_eq(vit_forward(ctx, m, img, tok, c->n_classes ? logits : NULL, NULL), TERN_OK,
		     "%s", tern_ctx_errmsg(ctx));
	ref_forward(&rm, img, rtok, rlogits);
	/* 1e-4 relative: float vs double accumulation in norms, attention
	 * and the float matmuls; identical int8 codes in the BitLinears */
	assert_close(tok, rtok, n_tok, 1e-4, "token");
	if (c->n_classes)
		assert_close(logits, rlogits, c->n_classes, 1e-4, "logit");
	/* a second run reuses the warm scratch, and one thread instead of two
	 * gives the same bits */
	float *tok2 = malloc((size_t)n_tok * sizeof *tok2);
	cr_assert_eq(vit_forward(ctx, m, img, tok2, NULL, NULL), TERN_OK);
	cr_assert_eq(memcmp(tok, tok2, (size_t)n_tok * sizeof *tok), 0);
	tern_ctx_params p1 = tern_ctx_default_params();
	p1.n_threads = 1;
	tern_ctx *ctx1;
	cr_assert_eq(tern_ctx_new(&p1, &ctx1), TERN_OK);
	cr_assert_eq(vit_forward(ctx1, m, img, tok2, NULL, NULL), TERN_OK);
	cr_assert_eq(memcmp(tok, tok2, (size_t)n_tok * sizeof *tok), 0, "1 vs 2 threads differ");
	tern_ctx_free(ctx1);
	free(tok2);
	vit_model_free(m);
	tern_file_close(f);
	unlink(path);
	free(img), free(tok), free(rtok);
	free_model(&rm);
}

Test(vision, forward_cls_learned_erf_float_patch)
{
	cfg c = { 16, 3, 4, 32, 2, 4, 64, 10, "cls", false, false, false, true, true, 1 };
	check_forward(&c);
}

Test(vision, forward_mean_sincos_tanh_ternary_patch)
{
	cfg c = { 16, 1, 4, 32, 2, 2, 96, 7, "mean", true, true, true, true, true, 2 };
	check_forward(&c);
}

Test(vision, forward_cls_sincos_tanh_no_biases_no_final_norm)
{
	cfg c = { 12, 3, 3, 24, 3, 3, 48, 5, "cls", true, true, false, false, false, 3 };
	check_forward(&c);
}

Test(vision, forward_mean_learned_erf_ternary_patch_rgb)
{
	cfg c = { 16, 3, 8, 64, 1, 4, 128, 3, "mean", false, false, true, true, false, 4 };
	check_forward(&c);
}

/* big enough that the kernels, the attention GEMMs and bias+GELU run on
 * both threads of the pool (the other cases run on the calling thread) */
Test(vision, forward_threaded_sizes)
{
	cfg c = { 32, 3, 4, 128, 1, 4, 512, 10, "cls", false, false, false, true, true, 6 };
	check_forward(&c);
}

Test(vision, forward_encoder_pool_none)
{
	cfg c = { 16, 3, 4, 32, 2, 2, 64, 0, "none", false, true, false, true, true, 5 };
	check_forward(&c);
}

Test(vision, sincos_table_matches_formula)
{
	float t[4 * 8];
	vit_sincos_table(2, 8, t);
	/* patch (row 1, col 0) is index 2: col blocks sin(0)=0, cos(0)=1;
	 * row blocks sin(1*w_i), cos(1*w_i) with w_0 = 1, w_1 = 0.01 */
	const float *p = t + 2 * 8;
	cr_assert_float_eq(p[0], 0.0f, 0.0f);
	cr_assert_float_eq(p[2], 1.0f, 0.0f);
	cr_assert_float_eq(p[4], (float)sin(1.0), 1e-7f);
	cr_assert_float_eq(p[5], (float)sin(0.01), 1e-7f);
	cr_assert_float_eq(p[6], (float)cos(1.0), 1e-7f);
	cr_assert_float_eq(p[7], (float)cos(0.01), 1e-7f);
}

/* ---- the module through the registry --------------------------------------- */

static const tern_plugin_desc *vision_plugin(tern_registry **reg)
{
	cr_assert_eq(tern_registry_new(ctx, NULL, reg), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_plugin_desc *d = tern_registry_find_arch(*reg, "vit");
	cr_assert_not_null(d, "no plugin for 'vit' (TERN_PLUGIN_PATH=%s)",
			   getenv("TERN_PLUGIN_PATH") ? getenv("TERN_PLUGIN_PATH") : "");
	return d;
}

Test(vision, classify_through_registry_matches_reference)
{
	cfg c = { 8, 3, 4, 16, 2, 2, 32, 6, "cls", false, false, false, true, true, 11 };
	rmodel rm = make_model(&c);
	char path[256];
	snprintf(path, sizeof path, "%s", tmp_path("cls"));
	write_model(&rm, path, NULL);
	tern_registry *reg;
	vision_plugin(&reg);
	tern_model *m;
	cr_assert_eq(tern_model_load(ctx, reg, path, &m), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_image *img;
	cr_assert_eq(tern_image_new(ctx, 8, 8, &img), TERN_OK);
	tu_rng r = tu_rng_new(5);
	for (int i = 0; i < 8 * 8 * 3; i++)
		img->data[i] = (uint8_t)tu_int(&r, 0, 255);
	/* the normalized input, as write_model's preprocess header says */
	const float mean[3] = { 0.4f, 0.5f, 0.6f }, std[3] = { 0.2f, 0.25f, 0.3f };
	float x[3 * 64], rlogits[6];
	for (int ch = 0; ch < 3; ch++)
		for (int i = 0; i < 64; i++)
			x[ch * 64 + i] = (img->data[i * 3 + ch] * 0.00392156862745098f - mean[ch]) / std[ch];
	ref_forward(&rm, x, NULL, rlogits);
	double mx = -INFINITY, sum = 0, p[6];
	for (int i = 0; i < 6; i++)
		mx = fmax(mx, rlogits[i]);
	for (int i = 0; i < 6; i++)
		sum += p[i] = exp(rlogits[i] - mx);
	tern_class out[6];
	int n = 0;
	cr_assert_eq(tern_classify(ctx, m, img, 6, out, &n), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(n, 6);
	for (int i = 0; i < 6; i++) {
		char want[16];
		snprintf(want, sizeof want, "class%d", out[i].index);
		cr_assert_str_eq(out[i].label, want);
		cr_assert_float_eq(out[i].prob, p[out[i].index] / sum, 1e-5, "class %d", out[i].index);
		if (i)
			cr_assert_geq(out[i - 1].prob, out[i].prob);
	}
	/* a differently sized image needs a resize, which this model forbids */
	tern_image *big;
	cr_assert_eq(tern_image_new(ctx, 9, 8, &big), TERN_OK);
	cr_assert_eq(tern_classify(ctx, m, big, 1, out, &n), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "8x8"), "%s", tern_ctx_errmsg(ctx));
	tern_image_free(big);
	tern_image_free(img);
	tern_model_free(m);
	tern_registry_free(reg);
	unlink(path);
	free_model(&rm);
}

Test(vision, image_encoder_component)
{
	cfg c = { 8, 3, 4, 16, 1, 2, 32, 0, "none", true, true, false, true, true, 12 };
	rmodel rm = make_model(&c);
	char path[256];
	snprintf(path, sizeof path, "%s", tmp_path("enc"));
	write_model(&rm, path, NULL);
	tern_registry *reg;
	vision_plugin(&reg);
	const tern_plugin_desc *prov = NULL;
	const tern_image_encoder *ie = tern_registry_component(reg, TERN_IMAGE_ENCODER_INTERFACE,
								  TERN_IMAGE_ENCODER_VERSION, &prov);
	cr_assert_not_null(ie);
	cr_assert_str_eq(prov->name, "vision");
	cr_assert_null(tern_registry_component(reg, TERN_IMAGE_ENCODER_INTERFACE, 99, NULL));
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, path, &f), TERN_OK);
	tern_host host = { .struct_size = sizeof host, .abi_major = TERN_PLUGIN_ABI_MAJOR,
			   .abi_minor = TERN_PLUGIN_ABI_MINOR, .ctx = ctx, .registry = reg };
	void *enc;
	cr_assert_eq(ie->load(&host, f, "", "", &enc), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_image_encoder_info info = { .struct_size = sizeof info };
	cr_assert_eq(ie->info(enc, &info), TERN_OK);
	cr_assert_eq(info.n_tokens, 4);
	cr_assert_eq(info.dim, 16);
	cr_assert_eq(info.image_size, 8);
	cr_assert_eq(info.has_cls, 0);
	float *x = rand_input(3, 8, 3), got[64], ref[64];
	cr_assert_eq(ie->encode_planar(&host, enc, x, got), TERN_OK);
	ref_forward(&rm, x, ref, NULL);
	assert_close(got, ref, 64, 1e-4, "embedding");
	/* a prefix that names nothing: the first tensor is reported */
	void *bad = NULL;
	cr_assert_eq(ie->load(&host, f, "", "vision.", &bad), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "vision.patch_embed.weight"), "%s",
		  tern_ctx_errmsg(ctx));
	ie->free(enc);
	tern_file_close(f);
	tern_registry_free(reg);
	unlink(path);
	free(x);
	free_model(&rm);
}

/* ---- loader errors ------------------------------------------------------------ */

/* Load path and expect TERN_E_FORMAT whose message contains `needle`. */
static void expect_load_error(const char *path, const char *needle)
{
	tern_file *f;
	vit_model *m = NULL;
	cr_assert_eq(tern_file_open(ctx, path, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(vit_model_load(ctx, f, "", "", &m), TERN_E_FORMAT);
	cr_assert_null(m);
	cr_assert(strstr(tern_ctx_errmsg(ctx), needle), "message '%s' lacks '%s'",
		  tern_ctx_errmsg(ctx), needle);
	tern_file_close(f);
}

Test(vision, loader_rejects_bad_hparams)
{
	cfg c = { 8, 3, 4, 16, 1, 2, 32, 4, "cls", false, false, false, true, true, 21 };
	rmodel rm = make_model(&c);
	static const struct {
		const char *hp, *needle;
	} cases[] = {
		{ "{\"image_size\": 8}", "hparams.channels is missing" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 3, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"cls\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "patch_size 3 does not divide image_size 8" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 3, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"cls\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "heads 3 does not divide dim 16" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"max\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "hparams.pool must be one of \"cls\", \"mean\", \"none\"" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"cls\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 0, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "hparams.norm_eps must be a number" },
		{ "{\"image_size\": 8, \"channels\": 1, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"cls\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "grayscale is false but hparams.channels is 1" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 2, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"cls\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "tensor 'blk.1.norm1.weight' is missing" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"cls\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": true, \"final_norm\": true}",
		  "tensor 'patch_embed.weight' is f32, expected t2" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 64, \"n_classes\": 4, \"pool\": \"cls\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "tensor 'blk.0.mlp.fc1.weight' must have shape [64][16]" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"mean\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "tensor 'cls_token' present but pool is not \"cls\"" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"cls\", "
		  "\"pos_embed\": \"sincos\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "tensor 'pos_embed' present but pos_embed is \"sincos\"" },
		{ "{\"image_size\": 8, \"channels\": 3, \"patch_size\": 4, \"dim\": 16, \"depth\": 1, "
		  "\"heads\": 2, \"mlp_dim\": 32, \"n_classes\": 4, \"pool\": \"none\", "
		  "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-5, "
		  "\"patch_ternary\": false, \"final_norm\": true}",
		  "pool \"none\" needs n_classes 0" },
	};
	char path[256];
	snprintf(path, sizeof path, "%s", tmp_path("bad"));
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		write_model(&rm, path, cases[i].hp);
		expect_load_error(path, cases[i].needle);
	}
	unlink(path);
	free_model(&rm);
}

Test(vision, loader_rejects_missing_head)
{
	cfg c = { 8, 3, 4, 16, 1, 2, 32, 4, "cls", false, false, false, true, true, 22 };
	rmodel rm = make_model(&c);
	char path[256];
	snprintf(path, sizeof path, "%s", tmp_path("head"));
	float *hw = rm.hw;
	rm.hw = NULL; /* the writer leaves the head out */
	write_model(&rm, path, NULL);
	expect_load_error(path, "tensor 'head.weight' is missing");
	rm.hw = hw;
	unlink(path);
	free_model(&rm);
}

/* ---- SigLIP import ------------------------------------------------------------ */

typedef struct st_entry {
	char name[128];
	int nd;
	int64_t shape[4];
	uint16_t *bf16;
	size_t n;
} st_entry;

/* A safetensors file of bf16 tensors (header padded to 8 bytes). */
static void write_safetensors(const char *path, const st_entry *e, int n)
{
	char *hdr = malloc(1 << 16);
	size_t len = 0, off = 0;
	len += (size_t)sprintf(hdr + len, "{\"__metadata__\": {\"format\": \"pt\"}");
	for (int i = 0; i < n; i++) {
		len += (size_t)sprintf(hdr + len, ", \"%s\": {\"dtype\": \"BF16\", \"shape\": [", e[i].name);
		for (int d = 0; d < e[i].nd; d++)
			len += (size_t)sprintf(hdr + len, "%s%lld", d ? ", " : "", (long long)e[i].shape[d]);
		len += (size_t)sprintf(hdr + len, "], \"data_offsets\": [%zu, %zu]}", off, off + 2 * e[i].n);
		off += 2 * e[i].n;
	}
	hdr[len++] = '}';
	while (len % 8)
		hdr[len++] = ' ';
	FILE *fp = fopen(path, "wb");
	cr_assert_not_null(fp);
	uint64_t hl = len;
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(hl >> (8 * i));
	fwrite(le, 1, 8, fp);
	fwrite(hdr, 1, len, fp);
	for (int i = 0; i < n; i++)
		for (size_t j = 0; j < e[i].n; j++) {
			unsigned char b[2] = { (unsigned char)e[i].bf16[j], (unsigned char)(e[i].bf16[j] >> 8) };
			fwrite(b, 1, 2, fp);
		}
	fclose(fp);
	free(hdr);
}

static float bf16_round(float x)
{
	return tern_bf16_to_f32(tern_f32_to_bf16(x));
}

/* Random bf16 values (returned as floats too). */
static float *st_add(st_entry *e, int *n, const char *name, int nd, const int64_t *shape, tu_rng *r,
		     float mul, float add)
{
	st_entry *t = &e[(*n)++];
	snprintf(t->name, sizeof t->name, "%s", name);
	t->nd = nd;
	t->n = 1;
	for (int d = 0; d < nd; d++) {
		t->shape[d] = shape[d];
		t->n *= (size_t)shape[d];
	}
	t->bf16 = malloc(t->n * sizeof *t->bf16);
	float *f = malloc(t->n * sizeof *f);
	for (size_t j = 0; j < t->n; j++) {
		f[j] = bf16_round(add + mul * tu_normal(r));
		t->bf16[j] = tern_f32_to_bf16(f[j]);
	}
	return f;
}

/* absmean ternarization, plainly: s = mean|W|, codes = clamp(round(W/s)) */
static tlin ternarize_plain(const float *w, int rows, int cols)
{
	tlin t = { rows, cols, malloc((size_t)rows * cols), 0 };
	double s = 0;
	for (int i = 0; i < rows * cols; i++)
		s += fabs(w[i]);
	t.s = (float)(s / (rows * cols));
	for (int i = 0; i < rows * cols; i++) {
		float q = nearbyintf(w[i] / t.s);
		t.codes[i] = (int8_t)(q > 1 ? 1 : q < -1 ? -1 : q);
	}
	return t;
}

Test(vision, siglip_import_matches_reference)
{
	const int D = 32, L = 3, H = 4, M = 64, S = 16, P = 8, NP = 4;
	const char *pre = "vision_tower.vision_model.";
	tu_rng r = tu_rng_new(99);
	st_entry e[80];
	int n = 0;
	char name[160];
	cfg c = { S, 3, P, D, L - 1, H, M, 0, "none", false, true, false, false, true, 0 };
	rmodel rm = { .c = c, .T = NP, .NP = NP };
	rm.blk = calloc(L, sizeof *rm.blk);
#define ADD(suffix, nd, shp, mul, add) \
	(snprintf(name, sizeof name, "%s%s", pre, suffix), st_add(e, &n, name, nd, shp, &r, mul, add))
	int64_t pshape[4] = { D, 3, P, P }, d1[1] = { D }, posshape[2] = { NP, D };
	rm.patch_w = ADD("embeddings.patch_embedding.weight", 4, pshape, 0.2f, 0.0f);
	rm.patch_b = ADD("embeddings.patch_embedding.bias", 1, d1, 0.1f, 0.0f);
	rm.pos = ADD("embeddings.position_embedding.weight", 2, posshape, 0.3f, 0.0f);
	for (int l = 0; l < L; l++) {
		rblock *b = &rm.blk[l];
		char s[128];
		int64_t dd[2] = { D, D }, md[2] = { M, D }, dm[2] = { D, M }, m1[1] = { M };
		const char *lin[4] = { "q_proj", "k_proj", "v_proj", "out_proj" };
		tlin *dst[4] = { &b->q, &b->k, &b->v, &b->o };
		float **bias[4] = { &b->bq, &b->bk, &b->bv, &b->bo };
		for (int j = 0; j < 4; j++) {
			snprintf(s, sizeof s, "encoder.layers.%d.self_attn.%s.weight", l, lin[j]);
			float *w = ADD(s, 2, dd, 0.05f, 0.0f);
			*dst[j] = ternarize_plain(w, D, D);
			free(w);
			snprintf(s, sizeof s, "encoder.layers.%d.self_attn.%s.bias", l, lin[j]);
			*bias[j] = ADD(s, 1, d1, 0.1f, 0.0f);
		}
		snprintf(s, sizeof s, "encoder.layers.%d.layer_norm1.weight", l);
		b->ln1w = ADD(s, 1, d1, 0.1f, 1.0f);
		snprintf(s, sizeof s, "encoder.layers.%d.layer_norm1.bias", l);
		b->ln1b = ADD(s, 1, d1, 0.1f, 0.0f);
		snprintf(s, sizeof s, "encoder.layers.%d.layer_norm2.weight", l);
		b->ln2w = ADD(s, 1, d1, 0.1f, 1.0f);
		snprintf(s, sizeof s, "encoder.layers.%d.layer_norm2.bias", l);
		b->ln2b = ADD(s, 1, d1, 0.1f, 0.0f);
		snprintf(s, sizeof s, "encoder.layers.%d.mlp.fc1.weight", l);
		float *w = ADD(s, 2, md, 0.05f, 0.0f);
		b->fc1 = ternarize_plain(w, M, D);
		free(w);
		snprintf(s, sizeof s, "encoder.layers.%d.mlp.fc1.bias", l);
		b->b1 = ADD(s, 1, m1, 0.1f, 0.0f);
		snprintf(s, sizeof s, "encoder.layers.%d.mlp.fc2.weight", l);
		w = ADD(s, 2, dm, 0.05f, 0.0f);
		b->fc2 = ternarize_plain(w, D, M);
		free(w);
		snprintf(s, sizeof s, "encoder.layers.%d.mlp.fc2.bias", l);
		b->b2 = ADD(s, 1, d1, 0.1f, 0.0f);
	}
	free(ADD("post_layernorm.weight", 1, d1, 0.1f, 1.0f));
	free(ADD("post_layernorm.bias", 1, d1, 0.1f, 0.0f));
#undef ADD
	char dir[256], st[300], cfgp[300], out[300];
	snprintf(dir, sizeof dir, "/tmp/tern_test_siglip_%d", (int)getpid());
	mkdir(dir, 0700);
	snprintf(st, sizeof st, "%s/model.safetensors", dir);
	snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
	snprintf(out, sizeof out, "%s/out.tern", dir);
	write_safetensors(st, e, n);
	FILE *fp = fopen(cfgp, "w");
	/* a LLaVA-style config: features from the second-to-last layer */
	fprintf(fp, "{\"architectures\": [\"LlavaForConditionalGeneration\"], \"vision_feature_layer\": -2, "
		    "\"vision_config\": {\"model_type\": \"siglip_vision_model\", \"hidden_size\": %d, "
		    "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"intermediate_size\": %d, "
		    "\"image_size\": %d, \"patch_size\": %d, \"layer_norm_eps\": 1e-5, "
		    "\"hidden_act\": \"gelu_pytorch_tanh\"}}",
		D, L, H, M, S, P);
	fclose(fp);

	tern_registry *reg;
	const tern_plugin_desc *d = vision_plugin(&reg);
	cr_assert_not_null(d->ops->convert);
	tern_host host = { .struct_size = sizeof host, .abi_major = TERN_PLUGIN_ABI_MAJOR,
			   .abi_minor = TERN_PLUGIN_ABI_MINOR, .ctx = ctx, .registry = reg };
	/* three ways in: the directory unopened (src NULL); the .safetensors
	 * file opened, config.json beside it; the directory opened by the
	 * host's Hugging Face reader (config in the metadata), with T3 asked */
	for (int pass = 0; pass < 3; pass++) {
		tern_file *src = NULL;
		if (pass == 1)
			cr_assert_eq(tern_file_open(ctx, st, &src), TERN_OK, "%s", tern_ctx_errmsg(ctx));
		if (pass == 2 && tern_file_open(ctx, dir, &src) != TERN_OK)
			continue; /* a host without the Hugging Face reader */
		tern_convert_opts opts = { .struct_size = sizeof opts, .ternary_type = TERN_DTYPE_T3,
					   .float_type = TERN_DTYPE_COUNT, .head_type = TERN_DTYPE_COUNT };
		tern_writer *w;
		cr_assert_eq(tern_writer_new(ctx, out, &w), TERN_OK);
		cr_assert_eq(d->ops->convert(&host, pass == 1 ? st : dir, src, pass == 2 ? &opts : NULL, w),
			     TERN_OK, "%s", tern_ctx_errmsg(ctx));
		cr_assert_eq(tern_writer_finish(w), TERN_OK, "%s", tern_ctx_errmsg(ctx));
		tern_writer_free(w);
		tern_file_close(src);

		tern_file *f;
		vit_model *m;
		cr_assert_eq(tern_file_open(ctx, out, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
		cr_assert_str_eq(tern_file_architecture(f), "vit");
		cr_assert_eq(vit_model_load(ctx, f, "", "", &m), TERN_OK, "%s", tern_ctx_errmsg(ctx));
		cr_assert_eq(m->hp.depth, L - 1);
		cr_assert_eq(m->blocks[0].fc1->dtype, pass == 2 ? TERN_DTYPE_T3 : TERN_DTYPE_T2);
		cr_assert(!m->hp.final_norm);
		cr_assert(m->hp.gelu_tanh);
		cr_assert_eq(m->pp.resize, TERN_RESIZE_BICUBIC);
		cr_assert_float_eq(m->pp.mean[2], 0.5f, 0.0f);
		cr_assert_float_eq(tern_tensor_scale_at(m->blocks[0].wq, 0, 0), rm.blk[0].q.s, 1e-6f * rm.blk[0].q.s);
		float *x = rand_input(3, S, 8), got[4 * 32], ref[4 * 32];
		cr_assert_eq(vit_forward(ctx, m, x, got, NULL, NULL), TERN_OK, "%s", tern_ctx_errmsg(ctx));
		ref_forward(&rm, x, ref, NULL);
		assert_close(got, ref, NP * D, 1e-4, "siglip token");
		free(x);
		vit_model_free(m);
		tern_file_close(f);
	}
	/* a missing tensor is named */
	for (int i = 0; i < n; i++)
		if (strstr(e[i].name, "layers.1.mlp.fc1.bias"))
			strcat(e[i].name, "_renamed");
	write_safetensors(st, e, n);
	{
		tern_writer *w;
		cr_assert_eq(tern_writer_new(ctx, out, &w), TERN_OK);
		cr_assert_eq(d->ops->convert(&host, dir, NULL, NULL, w), TERN_E_FORMAT);
		cr_assert(strstr(tern_ctx_errmsg(ctx),
				 "'vision_tower.vision_model.encoder.layers.1.mlp.fc1.bias' is missing"),
			  "%s", tern_ctx_errmsg(ctx));
		tern_writer_free(w);
	}
	/* something that is not SigLIP is declined without a message */
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, out, &w), TERN_OK);
	cr_assert_eq(d->ops->convert(&host, "/nonexistent", NULL, NULL, w), TERN_E_UNSUPPORTED);
	tern_writer_free(w);
	tern_registry_free(reg);
	unlink(st), unlink(cfgp), unlink(out), rmdir(dir);
	for (int i = 0; i < n; i++)
		free(e[i].bf16);
	rm.c.depth = L;
	free_model(&rm);
}

/* ---- the CLI: tern classify and tern eval classify ---------------------------- */

/* Run the built tern with args (stderr folded in); output into out. */
static int run_tern(const char *args, char *out, size_t cap)
{
	const char *dir = getenv("TERN_BUILDDIR");
	char cmd[2048];
	snprintf(cmd, sizeof cmd, "'%s/apps/tern' %s 2>&1", dir ? dir : ".", args);
	FILE *p = popen(cmd, "r");
	cr_assert_not_null(p);
	size_t n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_bytes(const char *path, const void *b, size_t n)
{
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(b, 1, n, f), n);
	fclose(f);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

Test(vision, cli_eval_classify_counts_and_rejects_bad_idx)
{
	if (!getenv("TERN_BUILDDIR"))
		cr_skip_test("TERN_BUILDDIR not set (run through make check)");
	enum { N = 24, SIDE = 8, K = 3 };
	cfg c = { SIDE, 1, 4, 16, 1, 2, 32, K, "mean", false, true, false, true, true, 31 };
	rmodel rm = make_model(&c);
	char model[256], imgs[300], labs[300], bad[300], args[1600], out[4096];
	snprintf(model, sizeof model, "%s", tmp_path("eval"));
	snprintf(imgs, sizeof imgs, "%s.images", model);
	snprintf(labs, sizeof labs, "%s.labels", model);
	snprintf(bad, sizeof bad, "%s.bad", model);
	write_model(&rm, model, NULL);

	/* images and the reference's prediction for each; labels agree with
	 * the prediction on even images only */
	static unsigned char im[16 + N * SIDE * SIDE], lb[8 + N];
	put_be32(im, 0x803), put_be32(im + 4, N), put_be32(im + 8, SIDE), put_be32(im + 12, SIDE);
	put_be32(lb, 0x801), put_be32(lb + 4, N);
	tu_rng r = tu_rng_new(77);
	int expect = 0, bests[N];
	for (int i = 0; i < N; i++) {
		float x[SIDE * SIDE], logits[K];
		for (int j = 0; j < SIDE * SIDE; j++) {
			im[16 + i * SIDE * SIDE + j] = (unsigned char)tu_int(&r, 0, 255);
			x[j] = (im[16 + i * SIDE * SIDE + j] * 0.00392156862745098f - 0.3f) / 0.25f;
		}
		ref_forward(&rm, x, NULL, logits);
		int best = 0;
		for (int k = 1; k < K; k++)
			best = logits[k] > logits[best] ? k : best;
		bests[i] = best;
		lb[8 + i] = (unsigned char)(i % 2 ? (best + 1) % K : best);
		expect += i % 2 == 0;
	}
	write_bytes(imgs, im, sizeof im);
	write_bytes(labs, lb, sizeof lb);
	snprintf(args, sizeof args,
		 "eval classify -m '%s' --images '%s' --labels '%s' --json -t 1 --predictions '%s'",
		 model, imgs, labs, bad);
	cr_assert_eq(run_tern(args, out, sizeof out), 0, "%s", out);
	char want[64];
	snprintf(want, sizeof want, "\"images\": %d, \"correct\": %d,", N, expect);
	cr_assert(strstr(out, want), "'%s' lacks '%s'", out, want);
	/* --predictions: one "class probability" line per image, in order */
	FILE *pf = fopen(bad, "r");
	cr_assert_not_null(pf);
	for (int i = 0; i < N; i++) {
		int cls = -2;
		double prob = -1;
		cr_assert_eq(fscanf(pf, "%d %lf", &cls, &prob), 2, "line %d", i + 1);
		cr_assert_eq(cls, bests[i], "image %d: class %d, reference %d", i, cls, bests[i]);
		cr_assert(prob > 1.0 / K && prob <= 1.0, "image %d: probability %g", i, prob);
	}
	int extra = 0;
	cr_assert_eq(fscanf(pf, "%d", &extra), EOF, "more lines than images");
	fclose(pf);
	/* --limit 4: images 0..3, two of them right */
	snprintf(args, sizeof args, "eval classify -m '%s' --images '%s' --labels '%s' --limit 4",
		 model, imgs, labs);
	cr_assert_eq(run_tern(args, out, sizeof out), 0, "%s", out);
	cr_assert(strstr(out, "accuracy: 0.5000 (2/4)"), "%s", out);

	/* malformed files: each exits 1 with a message naming the problem */
	static const struct {
		size_t keep;   /* bytes of the image file kept */
		int patch_at;  /* byte to overwrite, -1 none */
		unsigned char v;
		const char *needle;
	} cases[] = {
		{ sizeof im, 2, 0x09, "bad IDX magic" },
		{ sizeof im - 5, -1, 0, "truncated" },
		{ 10, -1, 0, "truncated IDX header" },
		{ sizeof im, 7, N + 1, "truncated" },
		{ sizeof im, 0, 0x1f, "gzip" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned char tmp[sizeof im];
		memcpy(tmp, im, sizeof im);
		if (cases[i].patch_at >= 0)
			tmp[cases[i].patch_at] = cases[i].v;
		if (cases[i].patch_at == 0)
			tmp[1] = 0x8b;
		write_bytes(bad, tmp, cases[i].keep);
		snprintf(args, sizeof args, "eval classify -m '%s' --images '%s' --labels '%s'", model,
			 bad, labs);
		cr_assert_eq(run_tern(args, out, sizeof out), 1, "case %zu: %s", i, out);
		cr_assert(strstr(out, cases[i].needle), "case %zu: '%s' lacks '%s'", i, out,
			  cases[i].needle);
	}
	/* counts that disagree between the two files */
	put_be32(lb + 4, N - 1);
	write_bytes(bad, lb, sizeof lb - 1);
	snprintf(args, sizeof args, "eval classify -m '%s' --images '%s' --labels '%s'", model, imgs,
		 bad);
	cr_assert_eq(run_tern(args, out, sizeof out), 1, "%s", out);
	cr_assert(strstr(out, "24 images but"), "%s", out);

	/* tern classify on a PNG of image 0: labels from the metadata */
	tern_image *img;
	cr_assert_eq(tern_image_new(ctx, SIDE, SIDE, &img), TERN_OK);
	for (int j = 0; j < SIDE * SIDE; j++)
		img->data[3 * j] = img->data[3 * j + 1] = img->data[3 * j + 2] = im[16 + j];
	snprintf(bad, sizeof bad, "%s.png", model);
	cr_assert_eq(tern_image_save_png(ctx, img, bad, NULL, NULL, 0), TERN_OK);
	tern_image_free(img);
	snprintf(args, sizeof args, "classify -m '%s' '%s' --top 2", model, bad);
	cr_assert_eq(run_tern(args, out, sizeof out), 0, "%s", out);
	snprintf(want, sizeof want, "\t1\tclass%d\t", lb[8]);
	cr_assert(strstr(out, want), "'%s' lacks '%s'", out, want);
	cr_assert(strstr(out, "\t2\tclass"), "%s", out);
	/* a truncated image file is a clear error, not a crash */
	FILE *f = fopen(bad, "r+b");
	cr_assert_eq(ftruncate(fileno(f), 40), 0);
	fclose(f);
	cr_assert_eq(run_tern(args, out, sizeof out), 1, "%s", out);
	cr_assert(strstr(out, "truncated PNG"), "%s", out);

	unlink(model), unlink(imgs), unlink(labs), unlink(bad);
	free_model(&rm);
}

/* ---- parity with the PyTorch export (tests/data/vit, when present) --------- */

static void *slurp_opt(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	void *b = malloc(n > 0 ? (size_t)n : 1);
	cr_assert_not_null(b);
	cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* tests/data/vit (README there, made by tools/train/make_tiny_vit.py):
 * NAME.tern, the four inputs (inputs.u8 pixels, inputs.f32 normalized,
 * input0..3.png), and PyTorch's eval-mode NAME.logits.f32 [4][K] and
 * NAME.tokens.f32 [4][T][D]. Tolerances as the README derives them: the
 * float work outside the BitLinears rounds differently, which can flip
 * one int8 code; logit_tol is 1e-4 for tiny-vit (no flips: ~1e-6) and
 * 1e-2 for tiny-vit-mean (one flip on image 3: 1.7e-3), tokens 2e-2.
 * The argmax must agree (the smallest top-2 gap is 0.049). */
static void check_parity(const char *name, double logit_tol)
{
	char path[512];
	size_t n_in = 0, n_u8 = 0, n_lg = 0, n_tk = 0;
	float *in = slurp_opt(tu_srcpath("tests/data/vit/inputs.f32"), &n_in);
	unsigned char *u8 = slurp_opt(tu_srcpath("tests/data/vit/inputs.u8"), &n_u8);
	snprintf(path, sizeof path, "tests/data/vit/%s.logits.f32", name);
	float *lg = slurp_opt(tu_srcpath(path), &n_lg);
	snprintf(path, sizeof path, "tests/data/vit/%s.tokens.f32", name);
	float *tk = slurp_opt(tu_srcpath(path), &n_tk);
	cr_assert(in && u8 && lg && tk, "tests/data/vit: a file for %s is missing", name);
	snprintf(path, sizeof path, "tests/data/vit/%s.tern", name);
	tern_file *f;
	vit_model *m;
	cr_assert_eq(tern_file_open(ctx, tu_srcpath(path), &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(vit_model_load(ctx, f, "", "", &m), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const int S = (int)m->hp.image_size, C = (int)m->hp.channels;
	const int per_in = C * S * S, K = (int)m->hp.n_classes;
	const int TD = (int)(m->hp.n_tokens * m->hp.dim), N = 4;
	cr_assert_eq(n_in, (size_t)N * per_in * 4, "inputs.f32 size");
	cr_assert_eq(n_u8, (size_t)N * S * S * 3, "inputs.u8 size");
	cr_assert_eq(n_lg, (size_t)N * K * 4, "%s.logits.f32 size", name);
	cr_assert_eq(n_tk, (size_t)N * TD * 4, "%s.tokens.f32 size", name);
	float *x = malloc((size_t)per_in * sizeof *x), *tok = malloc((size_t)TD * sizeof *tok);
	float logits[16];
	cr_assert_leq(K, 16);
	tern_image *img;
	cr_assert_eq(tern_image_new(ctx, S, S, &img), TERN_OK);
	for (int i = 0; i < N; i++) {
		/* preprocessing of the raw pixels: the same f32 expression, so exact */
		memcpy(img->data, u8 + (size_t)i * S * S * 3, (size_t)S * S * 3);
		cr_assert_eq(vit_preprocess_image(ctx, &m->pp, C, img, x), TERN_OK);
		for (int j = 0; j < per_in; j++)
			cr_assert_eq(x[j], in[i * per_in + j], "%s image %d input %d: %.9g vs %.9g", name,
				     i, j, x[j], in[i * per_in + j]);
		cr_assert_eq(vit_forward(ctx, m, in + (size_t)i * per_in, tok, logits, NULL), TERN_OK);
		double dmax = 0;
		for (int k = 0; k < K; k++)
			dmax = fmax(dmax, fabs(logits[k] - lg[i * K + k]));
		cr_log_info("%s image %d: max |logit - PyTorch| = %.3g", name, i, dmax);
		for (int k = 0; k < K; k++)
			cr_assert_leq(fabs(logits[k] - lg[i * K + k]), logit_tol,
				      "%s image %d logit %d: %.7g, PyTorch %.7g", name, i, k, logits[k],
				      lg[i * K + k]);
		for (int j = 0; j < TD; j++)
			cr_assert_leq(fabs(tok[j] - tk[(size_t)i * TD + j]), 2e-2,
				      "%s image %d token value %d: %.7g, PyTorch %.7g", name, i, j, tok[j],
				      tk[(size_t)i * TD + j]);
		int a = 0, b = 0;
		for (int k = 1; k < K; k++) {
			a = logits[k] > logits[a] ? k : a;
			b = lg[i * K + k] > lg[i * K + b] ? k : b;
		}
		cr_assert_eq(a, b, "%s image %d: class %d, PyTorch %d", name, i, a, b);
	}
	/* and the whole path: PNG file -> registry -> classify */
	tern_registry *reg;
	vision_plugin(&reg);
	tern_model *tm;
	snprintf(path, sizeof path, "tests/data/vit/%s.tern", name);
	cr_assert_eq(tern_model_load(ctx, reg, tu_srcpath(path), &tm), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	for (int i = 0; i < N; i++) {
		tern_image *png;
		snprintf(path, sizeof path, "tests/data/vit/input%d.png", i);
		cr_assert_eq(tern_image_load(ctx, tu_srcpath(path), &png), TERN_OK, "%s", tern_ctx_errmsg(ctx));
		tern_class top;
		int n = 0;
		cr_assert_eq(tern_classify(ctx, tm, png, 1, &top, &n), TERN_OK, "%s", tern_ctx_errmsg(ctx));
		int b = 0;
		for (int k = 1; k < K; k++)
			b = lg[i * K + k] > lg[i * K + b] ? k : b;
		char want[16];
		snprintf(want, sizeof want, "class%d", b);
		cr_assert_eq(top.index, b, "%s input%d.png", name, i);
		cr_assert_str_eq(top.label, want);
		tern_image_free(png);
	}
	tern_model_free(tm);
	tern_registry_free(reg);
	tern_image_free(img);
	free(x), free(tok), free(in), free(u8), free(lg), free(tk);
	vit_model_free(m);
	tern_file_close(f);
}

Test(vision, pytorch_parity_cls_erf_float_patch)
{
	if (access(tu_srcpath("tests/data/vit/README.md"), R_OK) != 0)
		cr_skip_test("tests/data/vit/ not present");
	check_parity("tiny-vit", 1e-4);
}

Test(vision, pytorch_parity_mean_tanh_ternary_patch)
{
	if (access(tu_srcpath("tests/data/vit/README.md"), R_OK) != 0)
		cr_skip_test("tests/data/vit/ not present");
	check_parity("tiny-vit-mean", 1e-2);
}
