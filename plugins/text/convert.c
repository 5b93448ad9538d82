/*
 * convert.c: the text plugin's importers (convert.h). bitllama2.c's ak42
 * files are small, so they are read whole and their tensors copied into
 * the writer; a Hugging Face checkpoint can be several gigabytes, so its
 * tensors are described up front (every name, dtype, shape and packed
 * code checked) and produced one at a time at tern_writer_finish by a fill
 * callback that finds everything it needs from the tensor's name and the
 * still-open source.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plugins/text/convert.h"
#include "plugins/text/tokenizer.h"

/* ---- small helpers ------------------------------------------------------ */

/* Read a whole regular file into a new buffer (free() it). */
static int read_all(tern_ctx *ctx, const char *path, size_t limit, uint8_t **data, size_t *size)
{
	*data = NULL;
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return tern_error(ctx, errno == ENOENT ? TERN_E_NOT_FOUND : TERN_E_IO,
				  "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
		fclose(fp);
		return tern_error(ctx, TERN_E_IO, "%s: not a regular file", path);
	}
	if ((uint64_t)st.st_size > limit) {
		fclose(fp);
		return tern_error(ctx, TERN_E_OVERFLOW, "%s: %lld bytes is more than %zu", path,
				  (long long)st.st_size, limit);
	}
	size_t n = (size_t)st.st_size;
	uint8_t *buf = malloc(n ? n : 1);
	if (!buf) {
		fclose(fp);
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", path);
	}
	size_t got = fread(buf, 1, n, fp);
	fclose(fp);
	if (got != n) {
		free(buf);
		return tern_error(ctx, TERN_E_IO, "%s: short read", path);
	}
	*data = buf;
	*size = n;
	return TERN_OK;
}

static int32_t rd_i32(const uint8_t *p)
{
	uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		     (uint32_t)p[3] << 24;
	int32_t v;
	memcpy(&v, &u, 4);
	return v;
}

static float rd_f32(const uint8_t *p)
{
	uint32_t u = (uint32_t)rd_i32(p);
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static bool is_float(tern_dtype d)
{
	return d == TERN_DTYPE_F32 || d == TERN_DTYPE_F16 || d == TERN_DTYPE_BF16;
}

/* Options with defaults filled in: ternary T2 or T3; float types valid
 * or COUNT ("keep"). */
static tern_convert_opts opts_of(tern_ctx *ctx, const tern_convert_opts *in)
{
	tern_convert_opts o = { .struct_size = sizeof o, .ternary_type = TERN_DTYPE_T2,
				.float_type = TERN_DTYPE_COUNT, .head_type = TERN_DTYPE_COUNT };
	if (!in)
		return o;
	if (in->ternary_type == TERN_DTYPE_T3)
		o.ternary_type = TERN_DTYPE_T3;
	if (is_float(in->float_type))
		o.float_type = in->float_type;
	if (is_float(in->head_type) || in->head_type == TERN_DTYPE_I8 ||
	    in->head_type == TERN_DTYPE_I4)
		o.head_type = in->head_type;
	if (in->struct_size >= offsetof(tern_convert_opts, head_residual) + sizeof(bool))
		o.head_residual = in->head_residual && o.head_type == TERN_DTYPE_I4;
	(void)ctx;
	return o;
}

/* The dtype an embedding or head of source dtype `src` is written in. */
static tern_dtype head_dtype(const tern_convert_opts *o, tern_dtype src)
{
	if (o->head_type != TERN_DTYPE_COUNT)
		return o->head_type;
	if (o->float_type != TERN_DTYPE_COUNT)
		return o->float_type;
	return is_float(src) ? src : TERN_DTYPE_F32;
}

/* hparams: GGUF key names without the architecture prefix. */
static int put_int(tern_meta *obj, const char *key, int64_t v)
{
	return tern_meta_set(obj, key, tern_meta_new_int(v));
}

static int put_double(tern_meta *obj, const char *key, double v)
{
	return tern_meta_set(obj, key, tern_meta_new_double(v));
}

static int put_str(tern_meta *obj, const char *key, const char *v)
{
	return tern_meta_set(obj, key, tern_meta_new_string(v, strlen(v)));
}

/* Set header object `key` of w to obj, which is freed. */
static int set_object(tern_writer *w, const char *key, tern_meta *obj, int rc)
{
	if (rc == TERN_OK)
		rc = tern_writer_set_meta(w, key, obj);
	tern_meta_free(obj);
	return rc;
}

/* Embed a tokenizer file's bytes as the i8 vector `name` and point the
 * header's "tokenizer" object at it. */
static int put_tokenizer(tern_ctx *ctx, tern_writer *w, const char *format, const char *name,
			 const void *data, size_t size)
{
	if (size > (size_t)INT64_MAX / 2 || size == 0)
		return tern_error(ctx, TERN_E_FORMAT, "text convert: tokenizer of %zu bytes", size);
	tern_tensor *t;
	const int64_t shape[1] = { (int64_t)size };
	int rc = tern_tensor_new(ctx, TERN_DTYPE_I8, NULL, 1, shape, &t);
	if (rc)
		return rc;
	memcpy(t->data, data, size);
	t->name = name;
	rc = tern_writer_add_tensor(w, t);
	tern_tensor_free(t);
	tern_meta *tok = tern_meta_new_object();
	if (!tok)
		return tern_error(ctx, TERN_E_NOMEM, "text convert: out of memory");
	if (rc == TERN_OK)
		rc = put_str(tok, "format", format);
	if (rc == TERN_OK)
		rc = put_str(tok, "tensor", name);
	if (rc == TERN_OK)
		rc = put_int(tok, "size", (int64_t)size);
	return set_object(w, "tokenizer", tok, rc);
}

/* The scales of a float matrix written as `to`: per row for an int8
 * head, f16 per 128 weights for a 4-bit one, none for float types. */
static tern_qparams float_qparams(tern_dtype to)
{
	if (to == TERN_DTYPE_I8)
		return (tern_qparams){ .kind = TERN_SCALE_ROW, .scale_type = TERN_DTYPE_F32 };
	if (to == TERN_DTYPE_I4)
		return (tern_qparams){ .kind = TERN_SCALE_BLOCK, .block = 128,
				       .scale_type = TERN_DTYPE_F16 };
	return (tern_qparams){ .kind = TERN_SCALE_NONE };
}

/* Write the rows of float tensor src into dst as dtype `to`: a float type
 * (rounded to nearest even), int8 with one absmax f32 scale per row
 * (q = round-half-even(x / (max|x| / 127)), scales after the codes), or
 * I4 (tern_quantize_row_i4, f16 block scales after the codes); with
 * `residual` (to I4 only), the 4-bit residual of each row instead
 * (tern_quantize_row_i4_residual). Fails with TERN_E_NOMEM, or
 * TERN_E_INVALID for a row I4 cannot code. */
static int float_rows_to(const tern_tensor *src, tern_dtype to, bool residual, void *dst)
{
	int rc = TERN_OK;
	const int64_t rows = tern_tensor_rows(src), cols = tern_tensor_cols(src);
	const size_t rb = tern_row_bytes(to, cols);
	float *buf = malloc(sizeof(float) * (size_t)cols * 2);
	if (!buf)
		return TERN_E_NOMEM;
	const tern_type_traits *tr = tern_type_traits_of(to);
	for (int64_t r = 0; r < rows; r++) {
		uint8_t *d = (uint8_t *)dst + (size_t)r * rb;
		tern_tensor_row_to_float(src, r, buf);
		if (to == TERN_DTYPE_I8) {
			float s;
			tern_quantize_row_i8(buf, cols, (int64_t)rb, TERN_ACTQ_DIV, TERN_ROUND_EVEN,
					     (int8_t *)d, &s);
			memcpy((uint8_t *)dst + (size_t)rows * rb + 4 * (size_t)r, &s, 4);
		} else if (to == TERN_DTYPE_I4) {
			/* rb / 64 groups per row, one f16 scale each. */
			uint8_t *s = (uint8_t *)dst + (size_t)rows * rb + (size_t)r * (rb / 64) * 2;
			rc = residual ? tern_quantize_row_i4_residual(buf, cols, TERN_DTYPE_F16, d, s,
								      buf + cols)
				      : tern_quantize_row_i4(buf, cols, TERN_DTYPE_F16, d, s);
			if (rc != TERN_OK)
				break;
		} else {
			tr->row_from_float(buf, d, cols);
		}
	}
	free(buf);
	return rc;
}

/* The head matrices that can have a residual, and the residual's name. */
static const char *const residual_pairs[2][2] = {
	{ "token_embd.weight", "token_embd.residual" },
	{ "output.weight", "output.residual" },
};

/* The name paired with `name` in residual_pairs, looked up in column
 * `from` (0: a head, giving its residual; 1: a residual, giving its head);
 * NULL if there is none. Static strings. */
static const char *residual_pair(const char *name, int from)
{
	for (int i = 0; i < 2; i++)
		if (strcmp(name, residual_pairs[i][from]) == 0)
			return residual_pairs[i][1 - from];
	return NULL;
}

static const char *residual_name(const char *name)
{
	return residual_pair(name, 0);
}

static const char *head_of_residual(const char *name)
{
	return residual_pair(name, 1);
}

/* Convert float rows of src into a new tensor of dtype `to` and add it to
 * w under `name`; with `residual` (to I4), its 4-bit residual too, under
 * residual_name(name). */
static int add_float(tern_ctx *ctx, tern_writer *w, const char *name, const tern_tensor *src,
		     tern_dtype to, bool residual)
{
	const tern_qparams qp = float_qparams(to);
	int rc = TERN_OK;
	for (int pass = 0; pass < (residual ? 2 : 1) && rc == TERN_OK; pass++) {
		tern_tensor *t;
		if ((rc = tern_tensor_new(ctx, to, &qp, src->n_dims, src->shape, &t)))
			return rc;
		if ((rc = float_rows_to(src, to, pass == 1, t->data))) {
			tern_tensor_free(t);
			return rc == TERN_E_NOMEM
				       ? tern_error(ctx, rc, "text convert: out of memory")
				       : tern_error(ctx, rc,
						    "text convert: '%s' has a non-finite value or one "
						    "too large for 4-bit codes with f16 scales",
						    name);
		}
		t->name = pass == 1 ? residual_name(name) : name;
		rc = t->name ? tern_writer_add_tensor(w, t) : TERN_E_INTERNAL;
		tern_tensor_free(t);
	}
	return rc;
}

/* ---- bitllama2.c ak42 ---------------------------------------------------- */

#define AK42_MAGIC 0x616b3432u
#define AK42_HEADER 256
#define AK42_MAX_DIM (1 << 20)
#define AK42_MAX_LAYERS 1024
#define AK42_MAX_VOCAB (1 << 22)
#define AK42_MAX_SEQ (1 << 24)
#define AK42_MAX_FILE ((size_t)1 << 36)
#define L2C_TOKENIZER_MAX ((size_t)64 << 20)

typedef struct ak42_config {
	int32_t dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
} ak42_config;

/* The seven matrices in file order: tern name, [out][in] from the config. */
typedef struct ak42_kind {
	const char *name;
	int out, in; /* 0 dim, 1 hidden, 2 kv_dim */
} ak42_kind;

static const ak42_kind ak42_kinds[7] = {
	{ "attn_q", 0, 0 },   { "attn_k", 2, 0 },   { "attn_v", 2, 0 },  { "attn_output", 0, 0 },
	{ "ffn_gate", 1, 0 }, { "ffn_down", 0, 1 }, { "ffn_up", 1, 0 },
};

static int64_t ak42_size(const ak42_config *c, int which)
{
	return which == 0 ? c->dim : which == 1 ? c->hidden
						: (int64_t)c->dim / c->n_heads * c->n_kv_heads;
}

static bool ak42_magic(const uint8_t *p, size_t n)
{
	return n >= 4 && (uint32_t)rd_i32(p) == AK42_MAGIC;
}

static int ak42_header(tern_ctx *ctx, const char *path, const uint8_t *d, size_t size,
		       ak42_config *c)
{
	if (size < AK42_HEADER)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: %zu bytes, shorter than the 256-byte ak42 header", path, size);
	int32_t version = rd_i32(d + 4);
	if (version != 1)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: ak42 version %ld (only version 1, ternary, is supported)", path,
				  (long)version);
	int32_t *f[7] = { &c->dim, &c->hidden, &c->n_layers, &c->n_heads, &c->n_kv_heads,
			  &c->vocab, &c->seq_len };
	static const char *const names[7] = { "dim", "hidden_dim", "n_layers", "n_heads",
					      "n_kv_heads", "vocab_size", "seq_len" };
	const int32_t max[7] = { AK42_MAX_DIM, AK42_MAX_DIM,   AK42_MAX_LAYERS, AK42_MAX_DIM,
				 AK42_MAX_DIM, AK42_MAX_VOCAB, AK42_MAX_SEQ };
	for (int i = 0; i < 7; i++) {
		*f[i] = rd_i32(d + 8 + 4 * i);
		if (*f[i] < 1 || *f[i] > max[i])
			return tern_error(ctx, TERN_E_FORMAT, "%s: ak42 %s = %ld is outside 1..%ld",
					  path, names[i], (long)*f[i], (long)max[i]);
	}
	if (d[36] != 1)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: ak42 shared_classifier = %u (only a shared classifier is "
				  "supported)",
				  path, d[36]);
	if (c->dim % c->n_heads || c->n_heads % c->n_kv_heads || (c->dim / c->n_heads) % 2)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: ak42 heads do not divide evenly (dim %ld, n_heads %ld, "
				  "n_kv_heads %ld; head size must be even)",
				  path, (long)c->dim, (long)c->n_heads, (long)c->n_kv_heads);
	if (c->dim % 4 || c->hidden % 4)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: ak42 dim %ld and hidden_dim %ld must be multiples of 4 (four "
				  "codes per byte)",
				  path, (long)c->dim, (long)c->hidden);
	/* Every size below is at most 2^20 * 2^22 * 4 bytes per tensor and
	 * 1024 layers: far inside 64 bits, so plain uint64_t arithmetic. */
	uint64_t need = AK42_HEADER + 4ull * (uint64_t)c->dim +
			4ull * (uint64_t)c->vocab * (uint64_t)c->dim;
	for (int k = 0; k < 7; k++)
		need += (uint64_t)c->n_layers *
			(4 + (uint64_t)ak42_size(c, ak42_kinds[k].out) *
				     (uint64_t)ak42_size(c, ak42_kinds[k].in) / 4);
	if (need > size)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: truncated: the ak42 header implies %llu bytes, the file has "
				  "%zu",
				  path, (unsigned long long)need, size);
	if (need < size)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: %zu bytes after the last ak42 matrix (the header implies %llu "
				  "bytes)",
				  path, size - (size_t)need, (unsigned long long)need);
	return TERN_OK;
}

/* One ak42 matrix at p (f32 scale, then [out][in] 2-bit codes, the most
 * significant pair first; 1 = +1, 3 = -1, else 0) as a ternary tensor
 * with that one scale. */
static int ak42_matrix(tern_ctx *ctx, const char *path, const uint8_t *p, int64_t out,
		       int64_t in, tern_dtype ttype, const char *name, tern_writer *w)
{
	const float scale = rd_f32(p);
	if (!isfinite(scale) || scale < 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: matrix %s has scale %g", path, name,
				  (double)scale);
	const tern_qparams qp = { .kind = TERN_SCALE_TENSOR, .scale_type = TERN_DTYPE_F32 };
	const int64_t shape[2] = { out, in };
	tern_tensor *t;
	int rc = tern_tensor_new(ctx, ttype, &qp, 2, shape, &t);
	if (rc)
		return rc;
	int8_t *row = malloc((size_t)in);
	if (!row) {
		tern_tensor_free(t);
		return tern_error(ctx, TERN_E_NOMEM, "text convert: out of memory");
	}
	const uint8_t *codes = p + 4;
	const size_t rb = tern_row_bytes(ttype, in);
	const tern_type_traits *tr = tern_type_traits_of(ttype);
	for (int64_t r = 0; r < out; r++) {
		const uint8_t *src = codes + (size_t)r * (size_t)(in / 4);
		for (int64_t j = 0; j < in; j++) {
			const int c = src[j / 4] >> (6 - 2 * (j % 4)) & 3;
			row[j] = (int8_t)(c == 1 ? 1 : c == 3 ? -1 : 0);
		}
		tr->row_from_i8(row, (uint8_t *)t->data + (size_t)r * rb, in);
	}
	free(row);
	memcpy((void *)tern_tensor_scales(t), &scale, sizeof scale);
	t->name = name;
	rc = tern_writer_add_tensor(w, t);
	tern_tensor_free(t);
	return rc;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

static int ak42_meta(tern_ctx *ctx, tern_writer *w, const ak42_config *c, const char *bin_path,
		     uint64_t n_params)
{
	tern_meta *hp = tern_meta_new_object();
	tern_meta *md = tern_meta_new_object();
	if (!hp || !md) {
		tern_meta_free(hp);
		tern_meta_free(md);
		return tern_error(ctx, TERN_E_NOMEM, "text convert: out of memory");
	}
	int rc = TERN_OK;
	if (!rc) rc = put_int(hp, "block_count", c->n_layers);
	if (!rc) rc = put_int(hp, "embedding_length", c->dim);
	if (!rc) rc = put_int(hp, "feed_forward_length", c->hidden);
	if (!rc) rc = put_int(hp, "attention.head_count", c->n_heads);
	if (!rc) rc = put_int(hp, "attention.head_count_kv", c->n_kv_heads);
	if (!rc) rc = put_int(hp, "context_length", c->seq_len);
	if (!rc) rc = put_int(hp, "vocab_size", c->vocab);
	if (!rc) rc = put_double(hp, "rope.freq_base", 10000.0);
	if (!rc) rc = put_double(hp, "attention.layer_norm_rms_epsilon", 1e-5);
	if (!rc) rc = put_str(hp, "feed_forward_activation", "silu");
	if (!rc) rc = put_str(md, "source", "https://github.com/HKUSTGZ-MICS-LYU/bitllama2.c");
	if (!rc) rc = put_str(md, "license", "MIT");
	if (!rc) rc = put_str(md, "copyright", "Copyright (c) 2023 Andrej");
	if (!rc) rc = put_str(md, "training_data", "TinyStories");
	if (!rc) rc = put_str(md, "converted_from", base_name(bin_path));
	if (!rc) rc = put_str(md, "format", "bitllama2.c ak42 version 1 (ternary, 2-bit codes)");
	if (!rc) rc = put_str(md, "description",
			      "BitNet-style ternary Llama trained on TinyStories with "
			      "bitllama2.c; weights exactly as in the ak42 file");
	if (!rc) rc = put_int(md, "parameters", (int64_t)n_params);
	rc = set_object(w, "hparams", hp, rc);
	return set_object(w, "metadata", md, rc);
}

int text_convert_ak42(tern_ctx *ctx, const char *bin_path, const char *tokenizer_path,
		      const tern_convert_opts *in_opts, tern_writer *w)
{
	const tern_convert_opts o = opts_of(ctx, in_opts);
	uint8_t *d = NULL, *tk = NULL;
	size_t size, tk_size;
	int rc = read_all(ctx, bin_path, AK42_MAX_FILE, &d, &size);
	if (rc)
		return rc;
	ak42_config c;
	text_tokenizer *tok = NULL;
	if (!ak42_magic(d, size))
		rc = tern_error(ctx, TERN_E_FORMAT, "%s: not an ak42 file (magic)", bin_path);
	if (!rc)
		rc = ak42_header(ctx, bin_path, d, size, &c);
	if (!rc)
		rc = read_all(ctx, tokenizer_path, L2C_TOKENIZER_MAX, &tk, &tk_size);
	if (!rc)
		rc = text_tok_load_l2c_memory(ctx, tokenizer_path, tk, tk_size, &tok);
	if (!rc && text_tok_n_vocab(tok) != c.vocab)
		rc = tern_error(ctx, TERN_E_FORMAT, "%s: %ld tokens, but the model has vocab_size %ld",
				tokenizer_path, (long)text_tok_n_vocab(tok), (long)c.vocab);
	text_tok_free(tok);
	if (!rc)
		rc = tern_writer_set_architecture(w, "bitllama2c");
	const uint8_t *p = d + AK42_HEADER;
	uint64_t n_params = 0;
	if (!rc) {
		n_params = (uint64_t)c.dim * (1 + (uint64_t)c.vocab);
		/* Final norm [dim], then the embedding [vocab][dim], float32. */
		tern_tensor norm = { .name = "output_norm.weight", .dtype = TERN_DTYPE_F32,
				     .n_dims = 1, .shape = { c.dim }, .data = (void *)p,
				     .nbytes = 4 * (size_t)c.dim };
		rc = add_float(ctx, w, norm.name, &norm, TERN_DTYPE_F32, false);
		p += norm.nbytes;
	}
	if (!rc) {
		tern_tensor emb = { .name = "token_embd.weight", .dtype = TERN_DTYPE_F32,
				    .n_dims = 2, .shape = { c.vocab, c.dim }, .data = (void *)p,
				    .nbytes = 4 * (size_t)c.vocab * (size_t)c.dim };
		const tern_dtype hd = head_dtype(&o, TERN_DTYPE_F32);
		rc = add_float(ctx, w, emb.name, &emb, hd,
			       o.head_residual && hd == TERN_DTYPE_I4);
		p += emb.nbytes;
	}
	/* The file holds all layers' wq, then all wk, ...; the .tern is
	 * written layer by layer so a layer's weights sit together. */
	size_t kind_start[7];
	for (int k = 0; k < 7 && !rc; k++) {
		kind_start[k] = (size_t)(p - d);
		p += (size_t)c.n_layers *
		     (4 + (size_t)(ak42_size(&c, ak42_kinds[k].out) *
				   ak42_size(&c, ak42_kinds[k].in) / 4));
	}
	for (int32_t l = 0; l < c.n_layers && !rc; l++)
		for (int k = 0; k < 7 && !rc; k++) {
			const int64_t out = ak42_size(&c, ak42_kinds[k].out);
			const int64_t in = ak42_size(&c, ak42_kinds[k].in);
			const size_t bytes = 4 + (size_t)(out * in / 4);
			char name[64];
			snprintf(name, sizeof name, "blk.%ld.%s.weight", (long)l, ak42_kinds[k].name);
			rc = ak42_matrix(ctx, bin_path, d + kind_start[k] + (size_t)l * bytes, out, in,
					 o.ternary_type, name, w);
			n_params += (uint64_t)(out * in);
		}
	if (!rc)
		rc = ak42_meta(ctx, w, &c, bin_path, n_params);
	if (!rc)
		rc = put_tokenizer(ctx, w, "llama2c", "tokenizer.llama2c", tk, tk_size);
	free(d);
	free(tk);
	return rc;
}

/* src_path is an ak42 file: 1 yes, 0 no (or unreadable). */
static int sniff_ak42(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return 0;
	uint8_t m[4];
	int yes = fread(m, 1, 4, fp) == 4 && ak42_magic(m, 4);
	fclose(fp);
	return yes;
}

/* ---- Hugging Face BitNet b1.58 checkpoints -------------------------------- */

/* Per-layer tensors: tern name, the Hugging Face names (2B4T, 1bitLLM),
 * whether it is a BitLinear weight. */
typedef struct hf_part {
	const char *tern;
	const char *hf[2];
	bool ternary;
} hf_part;

static const hf_part hf_parts[] = {
	{ "attn_norm", { "input_layernorm", NULL }, false },
	{ "attn_q", { "self_attn.q_proj", NULL }, true },
	{ "attn_k", { "self_attn.k_proj", NULL }, true },
	{ "attn_v", { "self_attn.v_proj", NULL }, true },
	{ "attn_sub_norm", { "self_attn.attn_sub_norm", "self_attn.inner_attn_ln" }, false },
	{ "attn_output", { "self_attn.o_proj", NULL }, true },
	{ "ffn_norm", { "post_attention_layernorm", NULL }, false },
	{ "ffn_gate", { "mlp.gate_proj", NULL }, true },
	{ "ffn_up", { "mlp.up_proj", NULL }, true },
	{ "ffn_sub_norm", { "mlp.ffn_sub_norm", "mlp.ffn_layernorm" }, false },
	{ "ffn_down", { "mlp.down_proj", NULL }, true },
};
#define N_HF_PARTS (sizeof hf_parts / sizeof hf_parts[0])

/* The source tensor of tern tensor `name` (NULL if unknown or absent);
 * *ternary says whether it is a BitLinear weight, base receives the Hugging
 * Face name without ".weight". */
static const tern_tensor *hf_source(const tern_file *src, const char *name, bool *ternary,
				    char *base, size_t len)
{
	*ternary = false;
	if (strcmp(name, "token_embd.weight") == 0)
		snprintf(base, len, "model.embed_tokens");
	else if (strcmp(name, "output_norm.weight") == 0)
		snprintf(base, len, "model.norm");
	else if (strcmp(name, "output.weight") == 0)
		snprintf(base, len, "lm_head");
	else {
		long l;
		char part[64];
		if (sscanf(name, "blk.%ld.%63[a-z_].weight", &l, part) != 2)
			return NULL;
		for (size_t i = 0; i < N_HF_PARTS; i++) {
			if (strcmp(part, hf_parts[i].tern))
				continue;
			*ternary = hf_parts[i].ternary;
			for (int k = 0; k < 2 && hf_parts[i].hf[k]; k++) {
				char full[256];
				snprintf(base, len, "model.layers.%ld.%s", l, hf_parts[i].hf[k]);
				snprintf(full, sizeof full, "%s.weight", base);
				const tern_tensor *t = tern_file_find(src, full);
				if (t)
					return t;
			}
			return NULL;
		}
		return NULL;
	}
	char full[256];
	snprintf(full, sizeof full, "%s.weight", base);
	return tern_file_find(src, full);
}

/* A packed weight (uint8 served as i32 [out/4][in]) holds four row blocks:
 * row r of the matrix is block r / (out/4), whose 2-bit code sits at bits
 * 2 * block of packed row r % (out/4); the weight is code - 1. */
static int packed_code(const tern_tensor *p, int64_t r, int64_t j, int64_t out)
{
	const int64_t rows4 = out / 4;
	const int32_t *v = p->data;
	return (int)((v[(r % rows4) * p->shape[1] + j] >> (2 * (r / rows4))) & 3);
}

/* The output multiplier of a packed weight: weight_scale multiplies in
 * transformers' AutoBitLinear (2B4T: linear_class "autobitlinear") and
 * divides in its older BitLinear ("bitlinear"). */
static int packed_scale(tern_ctx *ctx, const tern_file *src, const char *base, float *out)
{
	char name[300];
	snprintf(name, sizeof name, "%s.weight_scale", base);
	const tern_tensor *s = tern_file_find(src, name);
	if (!s || !is_float(s->dtype) || tern_tensor_rows(s) * tern_tensor_cols(s) != 1)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: packed weight '%s.weight' needs a one-element float '%s'",
				  tern_file_path(src), base, name);
	float v;
	tern_tensor_row_to_float(s, 0, &v);
	const char *cls = tern_meta_get_string(tern_file_meta(src),
					       "config.quantization_config.linear_class",
					       "autobitlinear");
	if (strcmp(cls, "bitlinear") == 0)
		v = 1.0f / v;
	if (!isfinite(v) || v < 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: '%s' gives the scale %g",
				  tern_file_path(src), name, (double)v);
	*out = v;
	return TERN_OK;
}

/* Fill callback: the bytes of tern tensor desc from the source (user). */
static int hf_fill(void *user, const tern_tensor *desc, void *dst)
{
	const tern_file *src = user;
	bool ternary;
	char base[256];
	/* A residual comes from the same source tensor as its head. */
	const char *head = head_of_residual(desc->name);
	const bool residual = head != NULL;
	const tern_tensor *t = hf_source(src, residual ? head : desc->name, &ternary, base,
					 sizeof base);
	if (!t)
		return TERN_E_INTERNAL;
	const int64_t rows = tern_tensor_rows(desc), cols = tern_tensor_cols(desc);
	const size_t rb = tern_row_bytes(desc->dtype, cols);
	const tern_type_traits *tr = tern_type_traits_of(desc->dtype);
	if (!ternary)
		return float_rows_to(t, desc->dtype, residual, dst);
	if (t->dtype == TERN_DTYPE_I32) {
		int8_t *row = malloc((size_t)cols);
		if (!row)
			return TERN_E_NOMEM;
		for (int64_t r = 0; r < rows; r++) {
			for (int64_t j = 0; j < cols; j++)
				row[j] = (int8_t)(packed_code(t, r, j, rows) - 1);
			tr->row_from_i8(row, (uint8_t *)dst + (size_t)r * rb, cols);
		}
		free(row);
		float s;
		int rc = packed_scale(NULL, src, base, &s);
		if (rc)
			return rc;
		memcpy((uint8_t *)dst + (size_t)rows * rb, &s, sizeof s);
		return TERN_OK;
	}
	/* Float master weights: absmean over the whole tensor. */
	size_t n;
	if (tern_size_mul((size_t)rows, (size_t)cols, &n) || n > SIZE_MAX / sizeof(float))
		return TERN_E_OVERFLOW;
	float *f = malloc(n * sizeof(float));
	if (!f)
		return TERN_E_NOMEM;
	for (int64_t r = 0; r < rows; r++)
		tern_tensor_row_to_float(t, r, f + (size_t)r * (size_t)cols);
	tern_tensor view = *desc;
	view.data = dst;
	int rc = tern_ternarize(NULL, f, TERN_TERNARIZE_ABSMEAN, &view);
	free(f);
	return rc;
}

/* Check one source tensor and describe its output on w. */
static int hf_add(tern_ctx *ctx, const tern_file *src, const tern_convert_opts *o, tern_writer *w,
		  const char *name, int64_t rows, int64_t cols)
{
	bool ternary;
	char base[256];
	const char *path = tern_file_path(src);
	const tern_tensor *t = hf_source(src, name, &ternary, base, sizeof base);
	if (!t)
		return tern_error(ctx, TERN_E_FORMAT, "%s: no source tensor for '%s' (%s.weight)",
				  path, name, base);
	const bool packed = ternary && t->dtype == TERN_DTYPE_I32;
	if (!packed && !is_float(t->dtype))
		return tern_error(ctx, TERN_E_FORMAT, "%s: tensor '%s.weight' is %s, expected float%s",
				  path, base, tern_dtype_name(t->dtype),
				  ternary ? " or packed uint8" : "");
	const int64_t want_rows = packed ? rows / 4 : rows;
	const bool shape_ok = rows ? t->n_dims == 2 && t->shape[0] == want_rows &&
					     t->shape[1] == cols && (!packed || rows % 4 == 0)
				   : t->n_dims == 1 && t->shape[0] == cols;
	if (!shape_ok) {
		char got[96] = "";
		size_t off = 0;
		for (int d = 0; d < t->n_dims; d++)
			off += (size_t)snprintf(got + off, sizeof got - off, "[%lld]",
						(long long)t->shape[d]);
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: tensor '%s.weight' has shape %s, expected [%lld][%lld]%s", path,
				  base, got, (long long)(rows ? want_rows : cols),
				  (long long)(rows ? cols : 1), packed ? " (packed: rows / 4)" : "");
	}
	if (packed) {
		float s;
		int rc = packed_scale(ctx, src, base, &s);
		if (rc)
			return rc;
		const int32_t *v = t->data;
		for (int64_t i = 0; i < want_rows * cols; i++) {
			bool bad = v[i] < 0 || v[i] > 255;
			for (int k = 0; k < 4 && !bad; k++)
				bad = (v[i] >> (2 * k) & 3) == 3;
			if (bad)
				return tern_error(ctx, TERN_E_FORMAT,
						  "%s: packed weight '%s.weight' element %lld = %ld is "
						  "not four codes 0..2",
						  path, base, (long long)i, (long)v[i]);
		}
	}
	tern_tensor desc;
	memset(&desc, 0, sizeof desc);
	desc.name = name;
	desc.n_dims = rows ? 2 : 1;
	desc.shape[0] = rows ? rows : cols;
	desc.shape[1] = cols;
	if (ternary) {
		desc.dtype = o->ternary_type;
		desc.q = (tern_qparams){ .kind = TERN_SCALE_TENSOR, .scale_type = TERN_DTYPE_F32 };
	} else if (rows) {
		desc.dtype = head_dtype(o, t->dtype);
		desc.q = float_qparams(desc.dtype);
	} else {
		desc.dtype = TERN_DTYPE_F32; /* norms: the decoder reads f32 */
	}
	size_t nbytes;
	int rc = tern_tensor_bytes(ctx, &desc, &nbytes);
	if (rc)
		return rc;
	desc.nbytes = nbytes;
	rc = tern_writer_add_tensor_fn(w, &desc, hf_fill, (void *)src);
	if (rc == TERN_OK && !ternary && rows && desc.dtype == TERN_DTYPE_I4 && o->head_residual &&
	    (desc.name = residual_name(name)))
		rc = tern_writer_add_tensor_fn(w, &desc, hf_fill, (void *)src);
	return rc;
}

typedef struct hf_config {
	int64_t n_embd, n_ff, n_layers, n_heads, n_kv_heads, n_vocab, n_ctx;
	double eps, theta;
	const char *act;
} hf_config;

static int hf_int(tern_ctx *ctx, const tern_file *src, const char *key, int64_t def, int64_t *out)
{
	const tern_meta *cfg = tern_meta_get(tern_file_meta(src), "config");
	const tern_meta *v = tern_meta_get(cfg, key);
	if (!v && def > 0) {
		*out = def;
		return TERN_OK;
	}
	if (tern_meta_as_int(v, out) != TERN_OK || *out < 1 || *out > (INT64_C(1) << 24))
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: config.json '%s' is missing or not an integer in 1..2^24",
				  tern_file_path(src), key);
	return TERN_OK;
}

static int hf_read_config(tern_ctx *ctx, const tern_file *src, hf_config *c)
{
	const tern_meta *cfg = tern_meta_get(tern_file_meta(src), "config");
	int rc;
	if ((rc = hf_int(ctx, src, "hidden_size", 0, &c->n_embd)) ||
	    (rc = hf_int(ctx, src, "intermediate_size", 0, &c->n_ff)) ||
	    (rc = hf_int(ctx, src, "num_hidden_layers", 0, &c->n_layers)) ||
	    (rc = hf_int(ctx, src, "num_attention_heads", 0, &c->n_heads)) ||
	    (rc = hf_int(ctx, src, "num_key_value_heads", c->n_heads, &c->n_kv_heads)) ||
	    (rc = hf_int(ctx, src, "max_position_embeddings", 2048, &c->n_ctx)))
		return rc;
	c->eps = tern_meta_get_double(cfg, "rms_norm_eps", 1e-5);
	c->theta = tern_meta_get_double(cfg, "rope_theta", 10000.0);
	c->act = tern_meta_get_string(cfg, "hidden_act", "silu");
	if (strcmp(c->act, "silu") && strcmp(c->act, "relu2"))
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: config.json hidden_act '%s' (silu or relu2 supported)",
				  tern_file_path(src), c->act);
	if (c->n_embd % c->n_heads || c->n_heads % c->n_kv_heads ||
	    (c->n_embd / c->n_heads) % 2 || !(c->eps > 0) || !(c->theta > 0))
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: config.json is inconsistent (hidden_size %lld, heads %lld, "
				  "kv heads %lld, rms_norm_eps %g, rope_theta %g)",
				  tern_file_path(src), (long long)c->n_embd, (long long)c->n_heads,
				  (long long)c->n_kv_heads, c->eps, c->theta);
	return TERN_OK;
}

/* Embed tokenizer.model (SentencePiece) or else tokenizer.json, after
 * checking it loads; a checkpoint without either converts with a warning. */
static int hf_tokenizer(tern_ctx *ctx, const tern_file *src, tern_writer *w, int64_t n_vocab)
{
	const tern_meta *meta = tern_file_meta(src);
	const char *spm = tern_meta_get_string(meta, "tokenizer.model", NULL);
	const char *json = tern_meta_get_string(meta, "tokenizer.json", NULL);
	const char *path = spm ? spm : json;
	if (!path) {
		tern_log(ctx, TERN_LOG_WARN, "%s: no tokenizer.model or tokenizer.json; the model is "
			 "converted without a tokenizer", tern_file_path(src));
		return TERN_OK;
	}
	uint8_t *d;
	size_t n;
	int rc = read_all(ctx, path, (size_t)256 << 20, &d, &n);
	if (rc)
		return rc;
	text_tokenizer *tok = NULL;
	rc = spm ? text_tok_load_spm_model_memory(ctx, path, d, n, &tok)
		 : text_tok_load_hf_json_memory(ctx, path, (const char *)d, n, &tok);
	if (!rc && text_tok_n_vocab(tok) > n_vocab)
		rc = tern_error(ctx, TERN_E_FORMAT, "%s: %ld tokens, more than the %lld embeddings",
				path, (long)text_tok_n_vocab(tok), (long long)n_vocab);
	text_tok_free(tok);
	if (!rc)
		rc = put_tokenizer(ctx, w, spm ? "spm" : "hf-json",
				   spm ? "tokenizer.spm" : "tokenizer.json", d, n);
	free(d);
	return rc;
}

static int convert_hf(tern_ctx *ctx, const tern_file *src, const tern_convert_opts *opts,
		      tern_writer *w)
{
	/* Unless told otherwise, the embedding/head becomes 4-bit codes plus
	 * a 4-bit residual: the head is most of what a decode step reads
	 * (2B4T: 0.66 GB of 1.18 GB in f16), the decoder reads the residual
	 * only for the best candidates, and docs/BENCHMARKS.md measures what
	 * it does to the logits. */
	tern_convert_opts ho = *opts;
	if (ho.head_type == TERN_DTYPE_COUNT && ho.float_type == TERN_DTYPE_COUNT) {
		ho.head_type = TERN_DTYPE_I4;
		ho.head_residual = true;
	}
	const tern_convert_opts *o = &ho;
	/* Which flavour: 2B4T's sub-norm names or 1bitLLM's. */
	const char *arch;
	if (tern_file_find(src, "model.layers.0.self_attn.attn_sub_norm.weight"))
		arch = "bitnet-b1.58";
	else if (tern_file_find(src, "model.layers.0.self_attn.inner_attn_ln.weight"))
		arch = "bitnet";
	else
		return TERN_E_UNSUPPORTED;
	hf_config c;
	int rc = hf_read_config(ctx, src, &c);
	if (rc)
		return rc;
	const tern_tensor *emb = tern_file_find(src, "model.embed_tokens.weight");
	if (!emb || emb->n_dims != 2 || emb->shape[1] != c.n_embd)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: 'model.embed_tokens.weight' is missing or not [vocab][%lld]",
				  tern_file_path(src), (long long)c.n_embd);
	c.n_vocab = emb->shape[0];
	const int64_t E = c.n_embd, hd = E / c.n_heads, QW = c.n_heads * hd;
	const int64_t KW = c.n_kv_heads * hd, F = c.n_ff;
	if ((rc = tern_writer_set_architecture(w, arch)) ||
	    (rc = hf_add(ctx, src, o, w, "token_embd.weight", c.n_vocab, E)) ||
	    (rc = hf_add(ctx, src, o, w, "output_norm.weight", 0, E)))
		return rc;
	const bool tied = tern_meta_get_bool(tern_file_meta(src), "config.tie_word_embeddings",
					     false);
	if (!tied && tern_file_find(src, "lm_head.weight") &&
	    (rc = hf_add(ctx, src, o, w, "output.weight", c.n_vocab, E)))
		return rc;
	const int64_t shape[N_HF_PARTS][2] = {
		{ 0, E }, { QW, E }, { KW, E }, { KW, E }, { 0, QW }, { E, QW },
		{ 0, E }, { F, E },  { F, E },  { 0, F },  { E, F },
	};
	for (int64_t l = 0; l < c.n_layers && !rc; l++)
		for (size_t p = 0; p < N_HF_PARTS && !rc; p++) {
			char name[96];
			snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)l,
				 hf_parts[p].tern);
			rc = hf_add(ctx, src, o, w, name, shape[p][0], shape[p][1]);
		}
	if (rc)
		return rc;
	tern_meta *hp = tern_meta_new_object();
	tern_meta *md = tern_meta_new_object();
	if (!hp || !md) {
		tern_meta_free(hp);
		tern_meta_free(md);
		return tern_error(ctx, TERN_E_NOMEM, "text convert: out of memory");
	}
	const tern_meta *cfg = tern_meta_get(tern_file_meta(src), "config");
	tern_meta *cfg_copy = NULL;
	if (!rc) rc = put_int(hp, "block_count", c.n_layers);
	if (!rc) rc = put_int(hp, "embedding_length", E);
	if (!rc) rc = put_int(hp, "feed_forward_length", F);
	if (!rc) rc = put_int(hp, "attention.head_count", c.n_heads);
	if (!rc) rc = put_int(hp, "attention.head_count_kv", c.n_kv_heads);
	if (!rc) rc = put_int(hp, "context_length", c.n_ctx);
	if (!rc) rc = put_int(hp, "vocab_size", c.n_vocab);
	if (!rc) rc = put_double(hp, "rope.freq_base", c.theta);
	if (!rc) rc = put_double(hp, "attention.layer_norm_rms_epsilon", c.eps);
	if (!rc) rc = put_str(hp, "feed_forward_activation", c.act);
	if (!rc) rc = put_str(md, "source", base_name(tern_file_path(src)));
	if (!rc) rc = put_str(md, "source_format", "Hugging Face safetensors + config.json");
	if (!rc) rc = put_str(md, "weights",
			      "ternary with one f32 scale per tensor: packed codes times "
			      "weight_scale, or absmean-ternarized float weights");
	if (!rc && cfg && !(rc = tern_meta_copy(cfg, &cfg_copy)))
		rc = tern_meta_set(md, "hf_config", cfg_copy);
	rc = set_object(w, "hparams", hp, rc);
	rc = set_object(w, "metadata", md, rc);
	if (!rc)
		rc = hf_tokenizer(ctx, src, w, c.n_vocab);
	return rc;
}

/* ---- the op --------------------------------------------------------------- */

int text_convert(const tern_host *host, const char *src_path, const tern_file *src,
		 const tern_convert_opts *opts, tern_writer *w)
{
	tern_ctx *ctx = host ? host->ctx : NULL;
	const tern_convert_opts o = opts_of(ctx, opts);
	if (src)
		return tern_file_format_of(src) == TERN_FORMAT_HF ? convert_hf(ctx, src, &o, w)
								  : TERN_E_UNSUPPORTED;
	if (!src_path || !sniff_ak42(src_path))
		return TERN_E_UNSUPPORTED;
	const char *slash = strrchr(src_path, '/');
	size_t dir = slash ? (size_t)(slash - src_path + 1) : 0;
	char *tok = malloc(dir + sizeof "tokenizer.bin");
	if (!tok)
		return tern_error(ctx, TERN_E_NOMEM, "text convert: out of memory");
	memcpy(tok, src_path, dir);
	memcpy(tok + dir, "tokenizer.bin", sizeof "tokenizer.bin");
	struct stat st;
	int rc;
	if (stat(tok, &st) != 0)
		rc = tern_error(ctx, TERN_E_NOT_FOUND,
				"%s: an ak42 model needs its llama2.c tokenizer; %s does not exist",
				src_path, tok);
	else
		rc = text_convert_ak42(ctx, src_path, tok, &o, w);
	free(tok);
	return rc;
}
