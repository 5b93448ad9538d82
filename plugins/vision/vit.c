/*
 * vit.c: the ternary ViT of docs/FORMAT.md ("Architecture vit"): loading
 * with complete validation, and the forward pass (patch embedding, class
 * token, position embedding, pre-norm blocks with ternary BitLinears,
 * final norm, pooling and the float head).
 *
 * Every BitLinear quantizes its input once per token (absmax, x / (a/127),
 * ties to even, as PyTorch does) and reuses it for the matrices that share
 * it (q, k and v). The kernels thread over output rows; the float work in
 * between is split over the same pool: norms and GELU by tokens, and
 * attention runs per head as two float GEMMs (tern_matmul) around a
 * row-wise softmax. Working memory is the context's scratch (slot 1: quantized
 * activations, slot 2: activations), sized by the model alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugins/vision/vit.h"
#include "tern/matmul.h"
#include "tern/ops.h"

#define SLOT_QACT 1
#define SLOT_ACT 2

/* Below this many floats of per-token work the pool is not woken. */
#define SMALL_ROWS_WORK 32768

/* ---- loading ------------------------------------------------------------- */

typedef struct loader {
	tern_ctx *ctx;
	const tern_file *file;
	const char *prefix;
	char name[256];
} loader;

static const char *full_name(loader *l, const char *fmt, long long i)
{
	char tail[160];
	snprintf(tail, sizeof tail, fmt, i);
	snprintf(l->name, sizeof l->name, "%s%s", l->prefix, tail);
	return l->name;
}

/* A tensor of dtype class `want` ("f32" or "ternary"), shape [d0] (d1 < 0)
 * or [d0][d1]. optional: absent is fine (*out NULL). */
static int get_tensor(loader *l, const char *fmt, long long i, bool ternary, int64_t d0,
		      int64_t d1, bool optional, const tern_tensor **out)
{
	const char *name = full_name(l, fmt, i);
	const tern_tensor *t = tern_file_find(l->file, name);
	*out = NULL;
	if (!t) {
		if (optional)
			return TERN_OK;
		return tern_error(l->ctx, TERN_E_FORMAT, "vit: tensor '%s' is missing", name);
	}
	if (ternary ? (t->dtype != TERN_DTYPE_T2 && t->dtype != TERN_DTYPE_T3)
		    : t->dtype != TERN_DTYPE_F32)
		return tern_error(l->ctx, TERN_E_FORMAT, "vit: tensor '%s' is %s, expected %s", name,
				  tern_dtype_name(t->dtype), ternary ? "t2 (or t3)" : "f32");
	bool ok = d1 < 0 ? (t->n_dims == 1 && t->shape[0] == d0)
			 : (t->n_dims == 2 && t->shape[0] == d0 && t->shape[1] == d1);
	if (!ok) {
		if (d1 < 0)
			return tern_error(l->ctx, TERN_E_FORMAT, "vit: tensor '%s' must have shape [%lld]",
					  name, (long long)d0);
		return tern_error(l->ctx, TERN_E_FORMAT, "vit: tensor '%s' must have shape [%lld][%lld]",
				  name, (long long)d0, (long long)d1);
	}
	*out = t;
	return TERN_OK;
}

static int get_f32(loader *l, const char *fmt, long long i, int64_t d0, int64_t d1, bool optional,
		   const float **out)
{
	const tern_tensor *t;
	int rc = get_tensor(l, fmt, i, false, d0, d1, optional, &t);
	*out = t ? t->data : NULL;
	return rc;
}

static int meta_int(tern_ctx *ctx, const tern_meta *obj, const char *where, const char *key,
		    int64_t lo, int64_t hi, int64_t *out)
{
	const tern_meta *v = tern_meta_get(obj, key);
	if (!v)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%s is missing", where, key);
	if (tern_meta_as_int(v, out) != TERN_OK || *out < lo || *out > hi)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%s must be an integer in %lld..%lld",
				  where, key, (long long)lo, (long long)hi);
	return TERN_OK;
}

static int meta_bool(tern_ctx *ctx, const tern_meta *obj, const char *where, const char *key,
		     bool *out)
{
	const tern_meta *v = tern_meta_get(obj, key);
	if (!v)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%s is missing", where, key);
	if (tern_meta_as_bool(v, out) != TERN_OK)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%s must be true or false", where, key);
	return TERN_OK;
}

/* The index of `key`'s string value in names (NULL-terminated). */
static int meta_enum(tern_ctx *ctx, const tern_meta *obj, const char *where, const char *key,
		     const char *const *names, int *out)
{
	const tern_meta *v = tern_meta_get(obj, key);
	const char *s = tern_meta_as_string(v, NULL);
	if (!v)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%s is missing", where, key);
	for (int i = 0; s && names[i]; i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = i;
			return TERN_OK;
		}
	}
	char list[128] = "";
	for (int i = 0; names[i]; i++) {
		size_t n = strlen(list);
		snprintf(list + n, sizeof list - n, "%s\"%s\"", i ? ", " : "", names[i]);
	}
	return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%s must be one of %s", where, key, list);
}

static int meta_float(tern_ctx *ctx, const tern_meta *obj, const char *where, const char *key,
		      double lo, double hi, float *out)
{
	const tern_meta *v = tern_meta_get(obj, key);
	double d;
	if (!v)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%s is missing", where, key);
	if (tern_meta_as_double(v, &d) != TERN_OK || !(d > lo && d < hi))
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%s must be a number in (%g, %g)", where,
				  key, lo, hi);
	*out = (float)d;
	return TERN_OK;
}

static int parse_hparams(tern_ctx *ctx, const tern_meta *h, const char *where, vit_hparams *hp)
{
	static const char *const pools[] = { "cls", "mean", "none", NULL };
	static const char *const pos[] = { "learned", "sincos", NULL };
	static const char *const gelus[] = { "erf", "tanh", NULL };
	int pool, posm, gelu, rc;
	if (tern_meta_type_of(h) != TERN_META_OBJECT)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s is missing or not an object", where);
	if ((rc = meta_int(ctx, h, where, "image_size", 1, 4096, &hp->image_size)) ||
	    (rc = meta_int(ctx, h, where, "channels", 1, 3, &hp->channels)) ||
	    (rc = meta_int(ctx, h, where, "patch_size", 1, 1024, &hp->patch)) ||
	    (rc = meta_int(ctx, h, where, "dim", 1, 65536, &hp->dim)) ||
	    (rc = meta_int(ctx, h, where, "depth", 1, 256, &hp->depth)) ||
	    (rc = meta_int(ctx, h, where, "heads", 1, 1024, &hp->heads)) ||
	    (rc = meta_int(ctx, h, where, "mlp_dim", 1, 262144, &hp->mlp_dim)) ||
	    (rc = meta_int(ctx, h, where, "n_classes", 0, 1 << 20, &hp->n_classes)) ||
	    (rc = meta_enum(ctx, h, where, "pool", pools, &pool)) ||
	    (rc = meta_enum(ctx, h, where, "pos_embed", pos, &posm)) ||
	    (rc = meta_enum(ctx, h, where, "gelu", gelus, &gelu)) ||
	    (rc = meta_float(ctx, h, where, "norm_eps", 0.0, 1.0, &hp->eps)) ||
	    (rc = meta_bool(ctx, h, where, "patch_ternary", &hp->patch_ternary)) ||
	    (rc = meta_bool(ctx, h, where, "final_norm", &hp->final_norm)))
		return rc;
	if (hp->channels == 2)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.channels must be 1 or 3", where);
	if (hp->image_size % hp->patch)
		return tern_error(ctx, TERN_E_FORMAT,
				  "vit: %s.patch_size %lld does not divide image_size %lld", where,
				  (long long)hp->patch, (long long)hp->image_size);
	if (hp->dim % hp->heads)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s.heads %lld does not divide dim %lld",
				  where, (long long)hp->heads, (long long)hp->dim);
	hp->pool = (vit_pool)pool;
	hp->sincos = posm == 1;
	hp->gelu_tanh = gelu == 1;
	if (hp->pool == VIT_POOL_NONE && hp->n_classes)
		return tern_error(ctx, TERN_E_FORMAT,
				  "vit: %s.pool \"none\" needs n_classes 0 (a head needs pooling)", where);
	if (hp->sincos && hp->dim % 4)
		return tern_error(ctx, TERN_E_FORMAT,
				  "vit: %s.pos_embed \"sincos\" needs dim a multiple of 4", where);
	hp->grid = hp->image_size / hp->patch;
	hp->n_patches = hp->grid * hp->grid;
	hp->n_tokens = hp->n_patches + (hp->pool == VIT_POOL_CLS);
	hp->head_dim = hp->dim / hp->heads;
	hp->patch_len = hp->channels * hp->patch * hp->patch;
	/* keeps every [tokens][width] buffer well inside int64 and size_t */
	if (hp->n_tokens > (1 << 20) || hp->patch_len > (1 << 22))
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s: %lld tokens of %lld values is too large",
				  where, (long long)hp->n_tokens, (long long)hp->patch_len);
	return TERN_OK;
}

int vit_preprocess_parse(tern_ctx *ctx, const tern_meta *pre, const vit_hparams *hp,
			 vit_preprocess *out)
{
	static const char *const modes[] = { "bilinear", "bicubic", "none", NULL };
	const char *where = "preprocess";
	int mode, rc;
	if (tern_meta_type_of(pre) != TERN_META_OBJECT)
		return tern_error(ctx, TERN_E_FORMAT, "vit: preprocess is missing or not an object");
	memset(out, 0, sizeof *out);
	if ((rc = meta_bool(ctx, pre, where, "grayscale", &out->grayscale)) ||
	    (rc = meta_enum(ctx, pre, where, "resize", modes, &mode)) ||
	    (rc = meta_int(ctx, pre, where, "resize_size", 1, TERN_IMAGE_MAX_DIM, &out->resize_size)) ||
	    (rc = meta_int(ctx, pre, where, "crop_size", 1, TERN_IMAGE_MAX_DIM, &out->crop_size)) ||
	    (rc = meta_float(ctx, pre, where, "scale", 0.0, 1e6, &out->scale)))
		return rc;
	out->resize = mode == 0 ? TERN_RESIZE_BILINEAR : mode == 1 ? TERN_RESIZE_BICUBIC
								   : VIT_RESIZE_NONE;
	if (out->grayscale != (hp->channels == 1))
		return tern_error(ctx, TERN_E_FORMAT,
				  "vit: preprocess.grayscale is %s but hparams.channels is %lld",
				  out->grayscale ? "true" : "false", (long long)hp->channels);
	if (out->crop_size > out->resize_size)
		return tern_error(ctx, TERN_E_FORMAT,
				  "vit: preprocess.crop_size %lld exceeds resize_size %lld",
				  (long long)out->crop_size, (long long)out->resize_size);
	if (out->crop_size != hp->image_size)
		return tern_error(ctx, TERN_E_FORMAT,
				  "vit: preprocess.crop_size %lld differs from hparams.image_size %lld",
				  (long long)out->crop_size, (long long)hp->image_size);
	static const char *const keys[2] = { "mean", "std" };
	for (int k = 0; k < 2; k++) {
		const tern_meta *a = tern_meta_get(pre, keys[k]);
		float *dst = k ? out->std : out->mean;
		if (tern_meta_type_of(a) != TERN_META_ARRAY ||
		    tern_meta_count(a) != (size_t)hp->channels)
			return tern_error(ctx, TERN_E_FORMAT,
					  "vit: preprocess.%s must be an array of %lld numbers", keys[k],
					  (long long)hp->channels);
		for (int64_t c = 0; c < hp->channels; c++) {
			double d;
			if (tern_meta_as_double(tern_meta_item(a, (size_t)c), &d) != TERN_OK ||
			    !isfinite(d) || (k == 1 && !(d > 0)))
				return tern_error(ctx, TERN_E_FORMAT,
						  "vit: preprocess.%s[%lld] must be a finite number%s",
						  keys[k], (long long)c, k ? " > 0" : "");
			dst[c] = (float)d;
		}
	}
	return TERN_OK;
}

void vit_sincos_table(int64_t grid, int64_t dim, float *out)
{
	const int64_t q = dim / 4;
	for (int64_t r = 0; r < grid; r++) {
		for (int64_t c = 0; c < grid; c++) {
			float *row = out + (r * grid + c) * dim;
			for (int64_t i = 0; i < q; i++) {
				double omega = pow(10000.0, -(double)i / (double)q);
				row[i] = (float)sin((double)c * omega);
				row[q + i] = (float)cos((double)c * omega);
				row[2 * q + i] = (float)sin((double)r * omega);
				row[3 * q + i] = (float)cos((double)r * omega);
			}
		}
	}
}

static int load_labels(tern_ctx *ctx, const tern_meta *root, const char *meta_path, vit_model *m)
{
	char path[160];
	snprintf(path, sizeof path, "%s%smetadata.labels", meta_path, *meta_path ? "." : "");
	const tern_meta *labels = tern_meta_get(root, path);
	if (!labels || !m->hp.n_classes)
		return TERN_OK;
	if (tern_meta_type_of(labels) != TERN_META_ARRAY ||
	    tern_meta_count(labels) != (size_t)m->hp.n_classes)
		return tern_error(ctx, TERN_E_FORMAT, "vit: %s must be an array of %lld strings", path,
				  (long long)m->hp.n_classes);
	m->labels = calloc((size_t)m->hp.n_classes, sizeof *m->labels);
	if (!m->labels)
		return tern_error(ctx, TERN_E_NOMEM, "vit: out of memory for labels");
	for (int64_t i = 0; i < m->hp.n_classes; i++) {
		m->labels[i] = tern_meta_as_string(tern_meta_item(labels, (size_t)i), NULL);
		if (!m->labels[i])
			return tern_error(ctx, TERN_E_FORMAT, "vit: %s.%lld is not a string", path,
					  (long long)i);
	}
	return TERN_OK;
}

static int load_block(loader *l, const vit_hparams *hp, long long i, vit_block *b)
{
	const int64_t D = hp->dim, M = hp->mlp_dim;
	const tern_tensor *t;
	int rc;
	if ((rc = get_f32(l, "blk.%lld.norm1.weight", i, D, -1, false, &b->ln1_w)) ||
	    (rc = get_f32(l, "blk.%lld.norm1.bias", i, D, -1, false, &b->ln1_b)) ||
	    (rc = get_tensor(l, "blk.%lld.attn.q.weight", i, true, D, D, false, &b->wq)) ||
	    (rc = get_tensor(l, "blk.%lld.attn.k.weight", i, true, D, D, false, &b->wk)) ||
	    (rc = get_tensor(l, "blk.%lld.attn.v.weight", i, true, D, D, false, &b->wv)) ||
	    (rc = get_tensor(l, "blk.%lld.attn.o.weight", i, true, D, D, false, &b->wo)) ||
	    (rc = get_f32(l, "blk.%lld.attn.q.bias", i, D, -1, true, &b->bq)) ||
	    (rc = get_f32(l, "blk.%lld.attn.k.bias", i, D, -1, true, &b->bk)) ||
	    (rc = get_f32(l, "blk.%lld.attn.v.bias", i, D, -1, true, &b->bv)) ||
	    (rc = get_f32(l, "blk.%lld.attn.o.bias", i, D, -1, true, &b->bo)) ||
	    (rc = get_f32(l, "blk.%lld.norm2.weight", i, D, -1, false, &b->ln2_w)) ||
	    (rc = get_f32(l, "blk.%lld.norm2.bias", i, D, -1, false, &b->ln2_b)) ||
	    (rc = get_tensor(l, "blk.%lld.mlp.fc1.weight", i, true, M, D, false, &b->fc1)) ||
	    (rc = get_f32(l, "blk.%lld.mlp.fc1.bias", i, M, -1, false, &b->b1)) ||
	    (rc = get_tensor(l, "blk.%lld.mlp.fc2.weight", i, true, D, M, false, &b->fc2)) ||
	    (rc = get_f32(l, "blk.%lld.mlp.fc2.bias", i, D, -1, false, &b->b2)))
		return rc;
	/* q, k and v share one quantized input, whose padding the dtype fixes */
	if (b->wk->dtype != b->wq->dtype || b->wv->dtype != b->wq->dtype) {
		t = b->wk->dtype != b->wq->dtype ? b->wk : b->wv;
		return tern_error(l->ctx, TERN_E_FORMAT,
				  "vit: block %lld: q, k and v weights must share one dtype (%s is %s)",
				  i, t->name ? t->name : "k/v", tern_dtype_name(t->dtype));
	}
	return TERN_OK;
}

int vit_model_load(tern_ctx *ctx, const tern_file *file, const char *meta_path,
		   const char *prefix, vit_model **out)
{
	const tern_meta *root = tern_file_meta(file);
	char where[160], pwhere[160];
	*out = NULL;
	if (!meta_path)
		meta_path = "";
	if (!prefix)
		prefix = "";
	if (strlen(meta_path) > 100 || strlen(prefix) > 100)
		return tern_error(ctx, TERN_E_INVALID, "vit: metadata path or tensor prefix too long");
	snprintf(where, sizeof where, "%s%shparams", meta_path, *meta_path ? "." : "");
	snprintf(pwhere, sizeof pwhere, "%s%spreprocess", meta_path, *meta_path ? "." : "");

	vit_model *m = calloc(1, sizeof *m);
	if (!m)
		return tern_error(ctx, TERN_E_NOMEM, "vit: out of memory");
	vit_hparams *hp = &m->hp;
	int rc = parse_hparams(ctx, tern_meta_get(root, where), where, hp);
	if (!rc)
		rc = vit_preprocess_parse(ctx, tern_meta_get(root, pwhere), hp, &m->pp);
	if (!rc)
		rc = load_labels(ctx, root, meta_path, m);
	if (rc)
		goto fail;

	loader l = { .ctx = ctx, .file = file, .prefix = prefix };
	const tern_tensor *t;
	const int64_t D = hp->dim;
	if ((rc = get_tensor(&l, "patch_embed.weight", 0, hp->patch_ternary, D, hp->patch_len, false,
			     &m->patch_w)) ||
	    (rc = get_f32(&l, "patch_embed.bias", 0, D, -1, false, &m->patch_b)) ||
	    (rc = get_f32(&l, "cls_token", 0, D, -1, hp->pool != VIT_POOL_CLS, &m->cls)))
		goto fail;
	if (hp->pool == VIT_POOL_CLS && !m->cls) {
		rc = tern_error(ctx, TERN_E_FORMAT, "vit: tensor '%scls_token' is missing", prefix);
		goto fail;
	}
	if (hp->pool != VIT_POOL_CLS && m->cls) {
		rc = tern_error(ctx, TERN_E_FORMAT,
				"vit: tensor '%scls_token' present but pool is not \"cls\"", prefix);
		goto fail;
	}
	if (hp->sincos) {
		size_t n;
		if (tern_size_mul((size_t)hp->n_tokens, (size_t)D, &n) ||
		    tern_size_mul(n, sizeof(float), &n)) {
			rc = tern_error(ctx, TERN_E_OVERFLOW, "vit: position table too large");
			goto fail;
		}
		if (!(m->pos_owned = tern_alloc(n))) {
			rc = tern_error(ctx, TERN_E_NOMEM, "vit: out of memory for positions");
			goto fail;
		}
		memset(m->pos_owned, 0, n);
		vit_sincos_table(hp->grid, D, m->pos_owned + (hp->n_tokens - hp->n_patches) * D);
		m->pos = m->pos_owned;
		if ((rc = get_tensor(&l, "pos_embed", 0, false, hp->n_tokens, D, true, &t)))
			goto fail;
		if (t) {
			rc = tern_error(ctx, TERN_E_FORMAT,
					"vit: tensor '%spos_embed' present but pos_embed is \"sincos\"",
					prefix);
			goto fail;
		}
	} else if ((rc = get_f32(&l, "pos_embed", 0, hp->n_tokens, D, false, &m->pos))) {
		goto fail;
	}
	if (!(m->blocks = calloc((size_t)hp->depth, sizeof *m->blocks))) {
		rc = tern_error(ctx, TERN_E_NOMEM, "vit: out of memory");
		goto fail;
	}
	for (int64_t i = 0; i < hp->depth; i++)
		if ((rc = load_block(&l, hp, (long long)i, &m->blocks[i])))
			goto fail;
	if (hp->final_norm &&
	    ((rc = get_f32(&l, "norm.weight", 0, D, -1, false, &m->norm_w)) ||
	     (rc = get_f32(&l, "norm.bias", 0, D, -1, false, &m->norm_b))))
		goto fail;
	if (hp->n_classes &&
	    ((rc = get_tensor(&l, "head.weight", 0, false, hp->n_classes, D, false, &m->head_w)) ||
	     (rc = get_f32(&l, "head.bias", 0, hp->n_classes, -1, false, &m->head_b))))
		goto fail;
	*out = m;
	return TERN_OK;
fail:
	vit_model_free(m);
	return rc;
}

void vit_model_free(vit_model *m)
{
	if (!m)
		return;
	tern_free(m->pos_owned);
	free(m->blocks);
	free(m->labels);
	free(m);
}

/* ---- forward -------------------------------------------------------------- */

/* Activation buffers, carved from scratch slot 2. */
typedef struct vit_bufs {
	float *x;       /* [T][D] the residual stream */
	float *h;       /* [T][D] norm outputs, attention output */
	float *q, *k, *v; /* [T][D] */
	float *mlp;     /* [T][M] */
	float *patches; /* [P][patch_len] */
	float *pooled;  /* [D] */
	float *kh;      /* [T][head_dim] one head's keys, contiguous */
	float *vt;      /* [head_dim][T] one head's values, transposed */
	float *sc;      /* [T][T] one head's scores, then probabilities */
} vit_bufs;

#define N_BUFS 11

static size_t pad16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

static int bufs_get(tern_ctx *ctx, const vit_hparams *hp, vit_bufs *b)
{
	/* T, D, M, patch_len are bounded by parse_hparams; products are checked */
	const size_t T = (size_t)hp->n_tokens, D = (size_t)hp->dim, hd = (size_t)hp->head_dim;
	size_t sizes[N_BUFS] = { T * D, T * D, T * D, T * D, T * D, 0, 0, D, T * hd, T * hd, 0 };
	size_t total = 0;
	if (tern_size_mul(T, (size_t)hp->mlp_dim, &sizes[5]) ||
	    tern_size_mul((size_t)hp->n_patches, (size_t)hp->patch_len, &sizes[6]) ||
	    tern_size_mul(T, T, &sizes[10]))
		return tern_error(ctx, TERN_E_OVERFLOW, "vit: activations too large");
	for (int i = 0; i < N_BUFS; i++)
		if (tern_size_add(total, pad16(sizes[i]), &total))
			return tern_error(ctx, TERN_E_OVERFLOW, "vit: activations too large");
	if (tern_size_mul(total, sizeof(float), &total))
		return tern_error(ctx, TERN_E_OVERFLOW, "vit: activations too large");
	float *p = tern_ctx_scratch(ctx, SLOT_ACT, total);
	if (!p)
		return TERN_E_NOMEM;
	float **dst[N_BUFS] = { &b->x, &b->h, &b->q, &b->k, &b->v, &b->mlp,
				&b->patches, &b->pooled, &b->kh, &b->vt, &b->sc };
	for (int i = 0; i < N_BUFS; i++) {
		*dst[i] = p;
		p += pad16(sizes[i]);
	}
	return TERN_OK;
}

static double clock_s(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double now_s(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

static double cpu_s(void)
{
	return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* y [n][rows] = W x for a ternary W with x [n][cols] already quantized. */
static int bitlinear_q(tern_ctx *ctx, const tern_tensor *W, const tern_qact *a, const float *bias,
		       float *y, vit_stats *st)
{
	double t0 = st ? now_s() : 0.0, c0 = st ? cpu_s() : 0.0;
	int rc = tern_matmul_q(ctx, W, a, y, tern_tensor_rows(W));
	if (st) {
		st->ternary_gemm += now_s() - t0;
		st->ternary_gemm_cpu += cpu_s() - c0;
	}
	if (rc || !bias)
		return rc;
	const int64_t rows = tern_tensor_rows(W);
	for (int64_t t = 0; t < a->n; t++)
		tern_vec_add(y + t * rows, bias, rows);
	return TERN_OK;
}

static int quantize(tern_ctx *ctx, const tern_tensor *W, const float *x, int64_t n, int64_t k,
		    tern_qact *a)
{
	return tern_qact_quantize(ctx, SLOT_QACT, W->dtype, x, n, k, k, TERN_ACTQ_DIV,
				  TERN_ROUND_EVEN, a);
}

static int bitlinear(tern_ctx *ctx, const tern_tensor *W, const float *x, int64_t n,
		     const float *bias, float *y, vit_stats *st)
{
	tern_qact a;
	int rc = quantize(ctx, W, x, n, tern_tensor_cols(W), &a);
	return rc ? rc : bitlinear_q(ctx, W, &a, bias, y, st);
}

/* Per-token float work, split over the pool's threads by rows. */
typedef enum { ROWS_LAYERNORM, ROWS_BIAS_GELU, ROWS_SCALED_SOFTMAX } rows_op;

typedef struct rows_job {
	rows_op op;
	const vit_hparams *hp;
	const float *src, *w, *b; /* layernorm: src -> dst with w, b; gelu: bias b */
	float *dst;
	int64_t n, width;         /* rows and their width */
	float scale;              /* softmax: scores are multiplied by this first */
} rows_job;

static void rows_range(const rows_job *j, int64_t r0, int64_t r1)
{
	const vit_hparams *hp = j->hp;
	for (int64_t r = r0; r < r1; r++) {
		float *row = j->dst + r * j->width;
		if (j->op == ROWS_LAYERNORM) {
			tern_layernorm(j->src + r * j->width, j->w, j->b, j->width, hp->eps, row);
		} else if (j->op == ROWS_BIAS_GELU) {
			tern_vec_add(row, j->b, j->width);
			if (hp->gelu_tanh)
				tern_gelu_tanh(row, j->width);
			else
				tern_gelu_erf(row, j->width);
		} else {
			tern_vec_scale(row, j->scale, j->width);
			tern_softmax(row, j->width);
		}
	}
}

static void rows_fn(void *arg, int ith, int nth)
{
	const rows_job *j = arg;
	int64_t b, e;
	tern_split_range(j->n, 1, ith, nth, &b, &e);
	rows_range(j, b, e);
}

static void rows_run(tern_ctx *ctx, rows_job *j)
{
	if (tern_ctx_threads(ctx) > 1 && j->n * j->width >= SMALL_ROWS_WORK && j->n > 1)
		tern_pool_run(tern_ctx_pool(ctx), rows_fn, j);
	else
		rows_range(j, 0, j->n);
}

/* Multi-head attention of q, k, v [T][D] into out [T][D], one head at a
 * time as two float GEMMs on the pool: scores = q_h k_h^T (k_h copied
 * contiguous), softmax(scores / sqrt(hd)) by rows, out_h = P v_h (v_h
 * copied transposed). */
static int attention(tern_ctx *ctx, const vit_hparams *hp, vit_bufs *b, float *out)
{
	const int64_t T = hp->n_tokens, D = hp->dim, hd = hp->head_dim;
	tern_tensor kt = { .name = "attention keys", .dtype = TERN_DTYPE_F32, .n_dims = 2,
			   .shape = { T, hd }, .data = b->kh };
	tern_tensor vt = { .name = "attention values", .dtype = TERN_DTYPE_F32, .n_dims = 2,
			   .shape = { hd, T }, .data = b->vt };
	kt.nbytes = vt.nbytes = (size_t)(T * hd) * sizeof(float);
	rows_job sm = { .op = ROWS_SCALED_SOFTMAX, .hp = hp, .dst = b->sc, .n = T, .width = T,
			.scale = 1.0f / sqrtf((float)hd) };
	for (int64_t h = 0; h < hp->heads; h++) {
		const int64_t off = h * hd;
		for (int64_t t = 0; t < T; t++) {
			memcpy(b->kh + t * hd, b->k + t * D + off, (size_t)hd * sizeof(float));
			for (int64_t j = 0; j < hd; j++)
				b->vt[j * T + t] = b->v[t * D + off + j];
		}
		int rc = tern_matmul(ctx, &kt, b->q + off, T, D, b->sc, T);
		if (rc)
			return rc;
		rows_run(ctx, &sm);
		if ((rc = tern_matmul(ctx, &vt, b->sc, T, T, out + off, D)))
			return rc;
	}
	return TERN_OK;
}

static void layernorm_rows(tern_ctx *ctx, const vit_hparams *hp, const float *src,
			   const float *w, const float *b, float *dst)
{
	rows_job j = { .op = ROWS_LAYERNORM, .hp = hp, .src = src, .w = w, .b = b, .dst = dst,
		       .n = hp->n_tokens, .width = hp->dim };
	rows_run(ctx, &j);
}

static int embed(tern_ctx *ctx, const vit_model *m, const float *img, vit_bufs *b, vit_stats *st)
{
	const vit_hparams *hp = &m->hp;
	const int64_t D = hp->dim, first = hp->n_tokens - hp->n_patches;
	float *xp = b->x + first * D;
	int rc = tern_im2col_patches(img, hp->channels, hp->image_size, hp->image_size, hp->patch,
				     b->patches);
	if (rc)
		return tern_error(ctx, rc, "vit: patch extraction failed");
	if (hp->patch_ternary)
		rc = bitlinear(ctx, m->patch_w, b->patches, hp->n_patches, m->patch_b, xp, st);
	else if (!(rc = tern_matmul(ctx, m->patch_w, b->patches, hp->n_patches, hp->patch_len, xp,
				    D)))
		for (int64_t t = 0; t < hp->n_patches; t++)
			tern_vec_add(xp + t * D, m->patch_b, D);
	if (rc)
		return rc;
	if (m->cls)
		memcpy(b->x, m->cls, (size_t)D * sizeof(float));
	tern_vec_add(b->x, m->pos, hp->n_tokens * D);
	return TERN_OK;
}

static int block_forward(tern_ctx *ctx, const vit_model *m, const vit_block *blk, vit_bufs *b,
			 vit_stats *st)
{
	const vit_hparams *hp = &m->hp;
	const int64_t T = hp->n_tokens, D = hp->dim, M = hp->mlp_dim;
	tern_qact a;
	int rc;

	layernorm_rows(ctx, hp, b->x, blk->ln1_w, blk->ln1_b, b->h);
	if ((rc = quantize(ctx, blk->wq, b->h, T, D, &a)) ||
	    (rc = bitlinear_q(ctx, blk->wq, &a, blk->bq, b->q, st)) ||
	    (rc = bitlinear_q(ctx, blk->wk, &a, blk->bk, b->k, st)) ||
	    (rc = bitlinear_q(ctx, blk->wv, &a, blk->bv, b->v, st)) ||
	    (rc = attention(ctx, hp, b, b->h)))
		return rc;
	/* o projection into q (free now), then the residual */
	if ((rc = bitlinear(ctx, blk->wo, b->h, T, blk->bo, b->q, st)))
		return rc;
	tern_vec_add(b->x, b->q, T * D);

	layernorm_rows(ctx, hp, b->x, blk->ln2_w, blk->ln2_b, b->h);
	if ((rc = bitlinear(ctx, blk->fc1, b->h, T, NULL, b->mlp, st)))
		return rc;
	rows_job g = { .op = ROWS_BIAS_GELU, .hp = hp, .b = blk->b1, .dst = b->mlp, .n = T,
		       .width = M };
	rows_run(ctx, &g);
	if ((rc = bitlinear(ctx, blk->fc2, b->mlp, T, blk->b2, b->q, st)))
		return rc;
	tern_vec_add(b->x, b->q, T * D);
	return TERN_OK;
}

int vit_forward(tern_ctx *ctx, const vit_model *m, const float *img, float *tokens_out,
		float *logits_out, vit_stats *st)
{
	const vit_hparams *hp = &m->hp;
	const int64_t T = hp->n_tokens, D = hp->dim;
	double t0 = st ? now_s() : 0.0, c0 = st ? cpu_s() : 0.0;
	vit_bufs b;
	int rc = bufs_get(ctx, hp, &b);
	if (!rc)
		rc = embed(ctx, m, img, &b, st);
	for (int64_t i = 0; !rc && i < hp->depth; i++)
		rc = block_forward(ctx, m, &m->blocks[i], &b, st);
	if (!rc && hp->final_norm)
		layernorm_rows(ctx, hp, b.x, m->norm_w, m->norm_b, b.x);
	if (rc)
		return rc;
	if (tokens_out)
		memcpy(tokens_out, b.x, (size_t)(T * D) * sizeof(float));
	if (logits_out && hp->n_classes) {
		if (hp->pool == VIT_POOL_CLS) {
			memcpy(b.pooled, b.x, (size_t)D * sizeof(float));
		} else {
			/* mean over tokens, summed in double like the norms */
			for (int64_t j = 0; j < D; j++) {
				double s = 0.0;
				for (int64_t t = 0; t < T; t++)
					s += b.x[t * D + j];
				b.pooled[j] = (float)(s / (double)T);
			}
		}
		if ((rc = tern_matmul(ctx, m->head_w, b.pooled, 1, D, logits_out, hp->n_classes)))
			return rc;
		tern_vec_add(logits_out, m->head_b, hp->n_classes);
	}
	if (st) {
		st->total += now_s() - t0;
		st->total_cpu += cpu_s() - c0;
	}
	return TERN_OK;
}
