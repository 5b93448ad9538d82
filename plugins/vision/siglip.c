/*
 * siglip.c: `tern convert` of a Hugging Face SigLIP vision tower (the
 * image encoder of BitVLA, which keeps bf16 master weights and ternarizes
 * on the fly) into a "vit" file: attention and MLP linears ternarized per
 * tensor with absmean (their biases kept), patch embedding, position
 * embedding and norms kept in float (written f32), tanh GELU, no class
 * token, pool "none". Preprocessing is SigLIP's: bicubic resize to
 * image_size, no crop, x/255, mean 0.5, std 0.5.
 *
 * Tensor names (after a prefix such as "vision_model." or, in LLaVA-style
 * checkpoints like BitVLA's, "vision_tower.vision_model."):
 *   embeddings.patch_embedding.{weight [D][C][p][p], bias}
 *   embeddings.position_embedding.weight [patches][D]
 *   encoder.layers.N.{layer_norm1,layer_norm2}.{weight,bias}
 *   encoder.layers.N.self_attn.{q_proj,k_proj,v_proj,out_proj}.{weight,bias}
 *   encoder.layers.N.mlp.{fc1,fc2}.{weight,bias}
 *   post_layernorm.{weight,bias}
 * The attention-pooling head ("head.*") is not imported. With a LLaVA
 * config whose vision_feature_layer is negative, the tower stops at that
 * layer and has no final norm, as the language model saw it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plugins/vision/vit.h"

/* Largest config.json read (they are a few KiB). */
#define MAX_CONFIG_BYTES (1u << 20)

typedef struct siglip_src {
	tern_ctx *ctx;
	const tern_file *file;  /* where the tensors are */
	const char *prefix;
	char name[320];
	tern_writer *w;
	tern_dtype ttype;
	float *buf;             /* conversion buffer, grown as needed */
	size_t buf_len;
} siglip_src;

static int read_json_file(tern_ctx *ctx, const char *path, tern_meta **out)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return tern_error(ctx, TERN_E_IO, "siglip: cannot open %s: %s", path, strerror(errno));
	char *text = malloc(MAX_CONFIG_BYTES + 1);
	size_t n = text ? fread(text, 1, MAX_CONFIG_BYTES + 1, f) : 0;
	int bad = ferror(f);
	fclose(f);
	if (!text)
		return tern_error(ctx, TERN_E_NOMEM, "siglip: out of memory");
	int rc;
	if (bad)
		rc = tern_error(ctx, TERN_E_IO, "siglip: cannot read %s", path);
	else if (n > MAX_CONFIG_BYTES)
		rc = tern_error(ctx, TERN_E_FORMAT, "siglip: %s is larger than 1 MiB", path);
	else
		rc = tern_meta_from_json(ctx, text, n, out);
	free(text);
	return rc;
}

static const tern_tensor *find(siglip_src *s, const char *fmt, long long i)
{
	char tail[200];
	snprintf(tail, sizeof tail, fmt, i);
	snprintf(s->name, sizeof s->name, "%s%s", s->prefix, tail);
	return tern_file_find(s->file, s->name);
}

/* The float buffer, at least n floats. */
static float *buffer(siglip_src *s, size_t n)
{
	if (n > s->buf_len) {
		size_t bytes;
		if (tern_size_mul(n, sizeof(float), &bytes))
			return NULL;
		float *p = tern_alloc(bytes);
		if (!p)
			return NULL;
		tern_free(s->buf);
		s->buf = p;
		s->buf_len = n;
	}
	return s->buf;
}

/* Source tensor `fmt` (with layer i), checked to hold rows x cols
 * elements (any number of dims: conv kernels flatten), as floats in the
 * buffer. Returns NULL after recording an error. */
static const float *read_float(siglip_src *s, const char *fmt, long long i, int64_t rows,
			       int64_t cols)
{
	const tern_tensor *t = find(s, fmt, i);
	if (!t) {
		tern_error(s->ctx, TERN_E_FORMAT, "siglip: tensor '%s' is missing", s->name);
		return NULL;
	}
	const tern_type_traits *tr = tern_type_traits_of(t->dtype);
	if (!tr || tr->quantized || t->dtype == TERN_DTYPE_I32) {
		tern_error(s->ctx, TERN_E_FORMAT, "siglip: tensor '%s' is %s, expected a float type",
			   s->name, tern_dtype_name(t->dtype));
		return NULL;
	}
	int64_t n = 1;
	for (int d = 0; d < t->n_dims; d++)
		n *= t->shape[d]; /* the reader bounded the shape by the file size */
	if (t->shape[0] != rows || n != rows * cols) {
		tern_error(s->ctx, TERN_E_FORMAT,
			   "siglip: tensor '%s' must hold [%lld][%lld] values (first dim %lld, %lld in all)",
			   s->name, (long long)rows, (long long)cols, (long long)t->shape[0],
			   (long long)n);
		return NULL;
	}
	float *dst = buffer(s, (size_t)n);
	if (!dst) {
		tern_error(s->ctx, TERN_E_NOMEM, "siglip: out of memory for '%s'", s->name);
		return NULL;
	}
	/* the source is a contiguous float array: convert it as one row */
	tr->row_to_float(t->data, dst, n);
	return dst;
}

/* Write source `src_fmt` as f32 [rows] (cols < 0) or [rows][cols] under dst_name. */
static int put_float(siglip_src *s, const char *src_fmt, const char *dst_fmt, long long i,
		     int64_t rows, int64_t cols)
{
	const float *v = read_float(s, src_fmt, i, rows, cols < 0 ? 1 : cols);
	if (!v)
		return TERN_E_FORMAT;
	char name[200];
	snprintf(name, sizeof name, dst_fmt, i);
	tern_tensor t = { .name = name, .dtype = TERN_DTYPE_F32, .n_dims = cols < 0 ? 1 : 2,
			  .shape = { rows, cols < 0 ? 0 : cols }, .data = (void *)v };
	int rc = tern_tensor_bytes(s->ctx, &t, &t.nbytes);
	return rc ? rc : tern_writer_add_tensor(s->w, &t);
}

/* Ternarize source `src_fmt` [rows][cols] per tensor (absmean) into dst. */
static int put_ternary(siglip_src *s, const char *src_fmt, const char *dst_fmt, long long i,
		       int64_t rows, int64_t cols)
{
	const float *v = read_float(s, src_fmt, i, rows, cols);
	if (!v)
		return TERN_E_FORMAT;
	char name[200];
	snprintf(name, sizeof name, dst_fmt, i);
	tern_qparams qp = { .kind = TERN_SCALE_TENSOR, .block = 0, .scale_type = TERN_DTYPE_F32 };
	int64_t shape[2] = { rows, cols };
	tern_tensor *t = NULL;
	int rc = tern_tensor_new(s->ctx, s->ttype, &qp, 2, shape, &t);
	if (!rc)
		rc = tern_ternarize(s->ctx, v, TERN_TERNARIZE_ABSMEAN, t);
	if (!rc) {
		t->name = name;
		rc = tern_writer_add_tensor(s->w, t);
		t->name = NULL;
	}
	tern_tensor_free(t);
	if (rc && !*tern_ctx_errmsg(s->ctx))
		tern_error(s->ctx, rc, "siglip: ternarizing '%s' failed", name);
	return rc;
}

static int cfg_int(tern_ctx *ctx, const tern_meta *vc, const char *key, int64_t def, int64_t lo,
		   int64_t hi, int64_t *out)
{
	const tern_meta *v = tern_meta_get(vc, key);
	if (!v) {
		if (def < 0)
			return tern_error(ctx, TERN_E_FORMAT, "siglip: config key '%s' is missing", key);
		*out = def;
		return TERN_OK;
	}
	if (tern_meta_as_int(v, out) != TERN_OK || *out < lo || *out > hi)
		return tern_error(ctx, TERN_E_FORMAT, "siglip: config '%s' must be an integer in %lld..%lld",
				  key, (long long)lo, (long long)hi);
	return TERN_OK;
}

static const char *const prefixes[] = {
	"vision_model.",
	"vision_tower.vision_model.",
	"model.vision_tower.vision_model.",
	"vision_tower.vision_tower.vision_model.",
	"model.vision_model.",
	"",
	NULL,
};

static int set_json(tern_writer *w, const char *path, const char *fmt, ...) TERN_PRINTF(3, 4);

static int set_json(tern_writer *w, const char *path, const char *fmt, ...)
{
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	return tern_writer_set_json(w, path, text);
}

static int convert(siglip_src *s, const tern_meta *config, const char *src_path)
{
	tern_ctx *ctx = s->ctx;
	const tern_meta *vc = tern_meta_get(config, "vision_config");
	if (!vc)
		vc = config;
	int64_t D, L, H, M, S, P, C, vfl = 0;
	int rc;
	if ((rc = cfg_int(ctx, vc, "hidden_size", -1, 1, 65536, &D)) ||
	    (rc = cfg_int(ctx, vc, "num_hidden_layers", -1, 1, 256, &L)) ||
	    (rc = cfg_int(ctx, vc, "num_attention_heads", -1, 1, 1024, &H)) ||
	    (rc = cfg_int(ctx, vc, "intermediate_size", -1, 1, 262144, &M)) ||
	    (rc = cfg_int(ctx, vc, "image_size", 224, 1, 4096, &S)) ||
	    (rc = cfg_int(ctx, vc, "patch_size", 16, 1, 1024, &P)) ||
	    (rc = cfg_int(ctx, vc, "num_channels", 3, 3, 3, &C)))
		return rc;
	if (tern_meta_type_of(tern_meta_get(config, "vision_feature_layer")) == TERN_META_ARRAY)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "siglip: vision_feature_layer lists several layers (their features "
				  "are concatenated); only one layer is supported");
	if (tern_meta_get(config, "vision_feature_layer") &&
	    (rc = cfg_int(ctx, config, "vision_feature_layer", 0, -L, L, &vfl)))
		return rc;
	double eps = tern_meta_get_double(vc, "layer_norm_eps", 1e-6);
	const char *act = tern_meta_get_string(vc, "hidden_act", "gelu_pytorch_tanh");
	const bool tanh_gelu = strcmp(act, "gelu_pytorch_tanh") == 0 || strcmp(act, "gelu_new") == 0;
	if (!tanh_gelu && strcmp(act, "gelu") != 0)
		return tern_error(ctx, TERN_E_UNSUPPORTED, "siglip: hidden_act '%s' is not supported", act);
	if (S % P || D % H || !(eps > 0 && eps < 1))
		return tern_error(ctx, TERN_E_FORMAT,
				  "siglip: inconsistent config (image_size %lld, patch_size %lld, "
				  "hidden_size %lld, heads %lld, eps %g)",
				  (long long)S, (long long)P, (long long)D, (long long)H, eps);
	/* LLaVA: hidden_states[vfl] of L + 1 states; a non-negative index
	 * counts from the embeddings */
	int64_t depth = L;
	bool final_norm = true;
	if (vfl < 0) {
		depth = L + 1 + vfl;
		final_norm = false;
	} else if (vfl > 0) {
		depth = vfl;
		final_norm = false;
	}
	if (depth < 1)
		return tern_error(ctx, TERN_E_FORMAT, "siglip: vision_feature_layer %lld leaves no layer",
				  (long long)vfl);
	if (final_norm && !find(s, "post_layernorm.weight", 0))
		final_norm = false;
	const int64_t grid = S / P, patches = grid * grid, plen = C * P * P;

	if ((rc = tern_writer_set_architecture(s->w, "vit")) ||
	    (rc = set_json(s->w, "hparams",
			   "{\"image_size\": %lld, \"channels\": %lld, \"patch_size\": %lld, "
			   "\"dim\": %lld, \"depth\": %lld, \"heads\": %lld, \"mlp_dim\": %lld, "
			   "\"n_classes\": 0, \"pool\": \"none\", \"pos_embed\": \"learned\", "
			   "\"gelu\": \"%s\", \"norm_eps\": %.9g, \"patch_ternary\": false, "
			   "\"final_norm\": %s}",
			   (long long)S, (long long)C, (long long)P, (long long)D, (long long)depth,
			   (long long)H, (long long)M, tanh_gelu ? "tanh" : "erf", eps,
			   final_norm ? "true" : "false")) ||
	    (rc = set_json(s->w, "preprocess",
			   "{\"grayscale\": false, \"resize\": \"bicubic\", \"resize_size\": %lld, "
			   "\"crop_size\": %lld, \"scale\": 0.00392156862745098, "
			   "\"mean\": [0.5, 0.5, 0.5], \"std\": [0.5, 0.5, 0.5]}",
			   (long long)S, (long long)S)))
		return rc;
	tern_meta *src_name = tern_meta_new_string(src_path ? src_path : "", src_path ? strlen(src_path) : 0);
	if (!src_name)
		return tern_error(ctx, TERN_E_NOMEM, "siglip: out of memory");
	rc = tern_writer_set_meta(s->w, "metadata.source", src_name);
	tern_meta_free(src_name);
	if (rc ||
	    (rc = set_json(s->w, "metadata.conversion",
			   "{\"from\": \"huggingface siglip vision tower\", \"tensor_prefix\": \"%s\", "
			   "\"layers_in_source\": %lld, \"vision_feature_layer\": %lld, "
			   "\"ternarization\": \"per-tensor absmean of attention and MLP linears\"}",
			   s->prefix, (long long)L, (long long)vfl)))
		return rc;

	if ((rc = put_float(s, "embeddings.patch_embedding.weight", "patch_embed.weight", 0, D,
			    plen)) ||
	    (rc = put_float(s, "embeddings.patch_embedding.bias", "patch_embed.bias", 0, D, -1)) ||
	    (rc = put_float(s, "embeddings.position_embedding.weight", "pos_embed", 0, patches, D)))
		return rc;
	static const char *const lin_src[4] = { "q_proj", "k_proj", "v_proj", "out_proj" };
	static const char *const lin_dst[4] = { "q", "k", "v", "o" };
	for (long long i = 0; i < depth; i++) {
		char sf[160], df[160];
		for (int j = 0; j < 4; j++) {
			snprintf(sf, sizeof sf, "encoder.layers.%%lld.self_attn.%s.weight", lin_src[j]);
			snprintf(df, sizeof df, "blk.%%lld.attn.%s.weight", lin_dst[j]);
			if ((rc = put_ternary(s, sf, df, i, D, D)))
				return rc;
			snprintf(sf, sizeof sf, "encoder.layers.%%lld.self_attn.%s.bias", lin_src[j]);
			snprintf(df, sizeof df, "blk.%%lld.attn.%s.bias", lin_dst[j]);
			if (find(s, sf, i) && (rc = put_float(s, sf, df, i, D, -1)))
				return rc;
		}
		if ((rc = put_float(s, "encoder.layers.%lld.layer_norm1.weight", "blk.%lld.norm1.weight", i, D, -1)) ||
		    (rc = put_float(s, "encoder.layers.%lld.layer_norm1.bias", "blk.%lld.norm1.bias", i, D, -1)) ||
		    (rc = put_float(s, "encoder.layers.%lld.layer_norm2.weight", "blk.%lld.norm2.weight", i, D, -1)) ||
		    (rc = put_float(s, "encoder.layers.%lld.layer_norm2.bias", "blk.%lld.norm2.bias", i, D, -1)) ||
		    (rc = put_ternary(s, "encoder.layers.%lld.mlp.fc1.weight", "blk.%lld.mlp.fc1.weight", i, M, D)) ||
		    (rc = put_float(s, "encoder.layers.%lld.mlp.fc1.bias", "blk.%lld.mlp.fc1.bias", i, M, -1)) ||
		    (rc = put_ternary(s, "encoder.layers.%lld.mlp.fc2.weight", "blk.%lld.mlp.fc2.weight", i, D, M)) ||
		    (rc = put_float(s, "encoder.layers.%lld.mlp.fc2.bias", "blk.%lld.mlp.fc2.bias", i, D, -1)))
			return rc;
	}
	if (final_norm &&
	    ((rc = put_float(s, "post_layernorm.weight", "norm.weight", 0, D, -1)) ||
	     (rc = put_float(s, "post_layernorm.bias", "norm.bias", 0, D, -1))))
		return rc;
	return TERN_OK;
}

/* dir + "/" + name into out. */
static int join(tern_ctx *ctx, const char *dir, const char *name, char *out, size_t n)
{
	if ((size_t)snprintf(out, n, "%s/%s", dir, name) >= n)
		return tern_error(ctx, TERN_E_INVALID, "siglip: path too long");
	return TERN_OK;
}

int vit_convert_siglip(tern_ctx *ctx, const char *src_path, const tern_file *src,
		       tern_dtype ternary_type, tern_writer *w)
{
	char path[4096];
	struct stat st;
	tern_file *own = NULL;
	tern_meta *own_cfg = NULL;
	const tern_meta *config = NULL;
	bool is_dir = src_path && stat(src_path, &st) == 0 && S_ISDIR(st.st_mode);
	int rc;

	if (!src) {
		/* the host could not open it: a directory with model.safetensors */
		if (!is_dir || join(ctx, src_path, "model.safetensors", path, sizeof path) ||
		    access(path, R_OK) != 0)
			return TERN_E_UNSUPPORTED;
		if ((rc = tern_file_open(ctx, path, &own)))
			return rc;
		src = own;
	}
	siglip_src s = { .ctx = ctx, .file = src, .w = w,
			 .ttype = ternary_type == TERN_DTYPE_T3 ? TERN_DTYPE_T3 : TERN_DTYPE_T2 };
	for (int i = 0; prefixes[i]; i++) {
		s.prefix = prefixes[i];
		if (find(&s, "embeddings.patch_embedding.weight", 0) &&
		    find(&s, "encoder.layers.0.self_attn.q_proj.weight", 0))
			break;
		s.prefix = NULL;
	}
	if (!s.prefix) {
		tern_file_close(own);
		return TERN_E_UNSUPPORTED;
	}
	/* config: the host's Hugging Face reader keeps it; else config.json
	 * in the directory or beside the .safetensors file */
	config = tern_meta_get(tern_file_meta(src), "config");
	if (tern_meta_type_of(config) != TERN_META_OBJECT) {
		config = NULL;
		if (is_dir) {
			rc = join(ctx, src_path, "config.json", path, sizeof path);
		} else {
			const char *slash = src_path ? strrchr(src_path, '/') : NULL;
			int dl = slash ? (int)(slash - src_path) : 1;
			rc = TERN_OK;
			if ((size_t)snprintf(path, sizeof path, "%.*s/config.json", dl,
					     slash ? src_path : ".") >= sizeof path)
				rc = tern_error(ctx, TERN_E_INVALID, "siglip: path too long");
		}
		if (!rc)
			rc = read_json_file(ctx, path, &own_cfg);
		if (rc) {
			tern_file_close(own);
			return rc;
		}
		config = own_cfg;
	}
	rc = convert(&s, config, src_path);
	tern_free(s.buf);
	tern_meta_free(own_cfg);
	tern_file_close(own);
	return rc;
}
