/*
 * convert.c: the generic GGUF -> .tern conversion (see convert.h and
 * docs/FORMAT.md, "Converted GGUF files"). The architecture and every
 * key/value of the GGUF go into the header as they are, under "gguf", so
 * a plugin reads a converted file with the same keys as the original.
 * Tensors keep their names; ternary ones are re-imported exactly from
 * their stored bytes into the requested packing, float ones are kept or
 * cast, and the head may be quantized to int8 per row or to 4 bits (with
 * its 4-bit residual for --head i4r). Each tensor is
 * produced by a fill callback at tern_writer_finish, so memory stays at
 * one tensor whatever the model's size.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "formats/convert.h"
#include "formats/format.h"

typedef struct job {
	struct tern_gguf_conv *conv;
	const tern_tensor *src; /* the served tensor of the source file */
	size_t index;           /* its index in the source file */
} job;

struct tern_gguf_conv {
	tern_ctx *ctx;
	const tern_file *src;
	job *jobs;
	size_t n_jobs;
	float *row; /* one row of floats, the widest tensor's */
	int64_t row_cap;
};

/* Names llama.cpp gives the token embedding and the output head. */
static bool is_head(const char *name)
{
	return strcmp(name, "token_embd.weight") == 0 || strcmp(name, "output.weight") == 0;
}

static bool foreign_of(const char *type, tern_foreign_type *ft)
{
	if (strcmp(type, "tq1_0") == 0)
		*ft = TERN_FOREIGN_TQ1_0;
	else if (strcmp(type, "tq2_0") == 0)
		*ft = TERN_FOREIGN_TQ2_0;
	else if (strcmp(type, "i2_s") == 0)
		*ft = TERN_FOREIGN_I2_S;
	else
		return false;
	return true;
}

/* A .tern header is UTF-8; GGUF value strings are bytes. Refuse what the
 * header could not hold rather than write a file no reader accepts. */
static int check_strings(tern_ctx *ctx, const char *path, const char *key, const tern_meta *m)
{
	size_t len;
	const char *s = tern_meta_as_string(m, &len);
	if (s && !tern_utf8_valid(s, len))
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: GGUF key '%.200s' holds a string that is not UTF-8, which a "
				  ".tern header cannot store",
				  path, key);
	for (size_t i = 0; i < tern_meta_count(m); i++) {
		int rc = check_strings(ctx, path, key, tern_meta_item(m, i));
		if (rc != TERN_OK)
			return rc;
	}
	return TERN_OK;
}

/* ---- fill callbacks (run inside tern_writer_finish) ---------------------- */

static int fill_ternary(void *user, const tern_tensor *desc, void *dst)
{
	job *j = user;
	tern_gguf_conv *c = j->conv;
	const char *type;
	const void *data;
	size_t nbytes;
	tern_foreign_type ft;
	if (tern_file_tensor_source(c->src, j->index, &type, &data, &nbytes) != TERN_OK ||
	    !foreign_of(type, &ft))
		return tern_error(c->ctx, TERN_E_INTERNAL, "tensor '%s': source vanished",
				  desc->name);
	tern_tensor *t;
	int rc = tern_foreign_import(c->ctx, ft, data, nbytes, tern_tensor_rows(j->src),
				     tern_tensor_cols(j->src), desc->dtype, &t);
	if (rc != TERN_OK)
		return rc;
	if (t->nbytes != desc->nbytes) {
		tern_tensor_free(t);
		return tern_error(c->ctx, TERN_E_INTERNAL, "tensor '%s': %zu bytes, planned %zu",
				  desc->name, t->nbytes, desc->nbytes);
	}
	memcpy(dst, t->data, desc->nbytes);
	tern_tensor_free(t);
	return TERN_OK;
}

static int fill_float(void *user, const tern_tensor *desc, void *dst)
{
	job *j = user;
	const tern_tensor *s = j->src;
	const tern_type_traits *from = tern_type_traits_of(s->dtype);
	const tern_type_traits *to = tern_type_traits_of(desc->dtype);
	int64_t rows = tern_tensor_rows(s), cols = tern_tensor_cols(s);
	size_t sb = tern_row_bytes(s->dtype, cols), db = tern_row_bytes(desc->dtype, cols);
	float *row = j->conv->row;
	for (int64_t r = 0; r < rows; r++) {
		from->row_to_float((const uint8_t *)s->data + (size_t)r * sb, row, cols);
		to->row_from_float(row, (uint8_t *)dst + (size_t)r * db, cols);
	}
	return TERN_OK;
}

/* int8 per row: codes rows (padded to I8's alignment), then f32 scales. */
static int fill_i8(void *user, const tern_tensor *desc, void *dst)
{
	job *j = user;
	const tern_tensor *s = j->src;
	const tern_type_traits *from = tern_type_traits_of(s->dtype);
	int64_t rows = tern_tensor_rows(s), cols = tern_tensor_cols(s);
	(void)desc; /* planned from s: I8, row scales, f32 */
	int64_t kpad = tern_row_padded(TERN_DTYPE_I8, cols);
	size_t sb = tern_row_bytes(s->dtype, cols), db = tern_row_bytes(TERN_DTYPE_I8, cols);
	float *row = j->conv->row;
	uint8_t *scales = (uint8_t *)dst + (size_t)rows * db;
	for (int64_t r = 0; r < rows; r++) {
		float scale;
		from->row_to_float((const uint8_t *)s->data + (size_t)r * sb, row, cols);
		tern_quantize_row_i8(row, cols, kpad, TERN_ACTQ_DIV, TERN_ROUND_EVEN,
				     (int8_t *)dst + (size_t)r * db, &scale);
		memcpy(scales + (size_t)r * sizeof scale, &scale, sizeof scale);
	}
	return TERN_OK;
}

/* 4-bit: codes rows, then one f16 scale per 128 weights of each row
 * (tern_quantize_row_i4), or, with `residual`, the same layout holding
 * each row's 4-bit residual (tern_quantize_row_i4_residual). */
static int i4_rows(job *j, void *dst, bool residual)
{
	const tern_tensor *s = j->src;
	const tern_type_traits *from = tern_type_traits_of(s->dtype);
	int64_t rows = tern_tensor_rows(s), cols = tern_tensor_cols(s);
	size_t sb = tern_row_bytes(s->dtype, cols), db = tern_row_bytes(TERN_DTYPE_I4, cols);
	size_t ssz = db / 64 * 2;
	float *row = j->conv->row, *work = residual ? malloc(sizeof(float) * (size_t)cols) : NULL;
	uint8_t *scales = (uint8_t *)dst + (size_t)rows * db;
	if (residual && !work)
		return tern_error(j->conv->ctx, TERN_E_NOMEM, "out of memory");
	int rc = TERN_OK;
	for (int64_t r = 0; r < rows && rc == TERN_OK; r++) {
		uint8_t *codes = (uint8_t *)dst + (size_t)r * db, *sc = scales + (size_t)r * ssz;
		from->row_to_float((const uint8_t *)s->data + (size_t)r * sb, row, cols);
		if ((residual ? tern_quantize_row_i4_residual(row, cols, TERN_DTYPE_F16, codes, sc,
							      work)
			      : tern_quantize_row_i4(row, cols, TERN_DTYPE_F16, codes, sc)) != TERN_OK)
			rc = tern_error(j->conv->ctx, TERN_E_INVALID,
					"tensor '%s' row %lld: a non-finite value or one too large "
					"for 4-bit codes with f16 scales",
					s->name, (long long)r);
	}
	free(work);
	return rc;
}

static int fill_i4(void *user, const tern_tensor *desc, void *dst)
{
	(void)desc; /* planned from the source: I4, block(128) f16 scales */
	return i4_rows(user, dst, false);
}

static int fill_i4_residual(void *user, const tern_tensor *desc, void *dst)
{
	(void)desc;
	return i4_rows(user, dst, true);
}

/* ---- planning ---------------------------------------------------------- */

static int add_one(tern_gguf_conv *c, const tern_convert_opts *o, tern_writer *w, size_t i)
{
	const tern_tensor *s = tern_file_tensor(c->src, i);
	const char *type;
	tern_foreign_type ft;
	job *j = &c->jobs[c->n_jobs];
	*j = (job){ c, s, i };
	tern_tensor desc = *s;
	desc.data = NULL;
	desc.nbytes = 0;
	tern_file_tensor_source(c->src, i, &type, NULL, NULL);
	if (tern_type_traits_of(s->dtype)->ternary) {
		if (!foreign_of(type, &ft))
			return tern_error(c->ctx, TERN_E_INTERNAL, "tensor '%s': ternary from %s",
					  s->name, type);
		desc.dtype = o->ternary_type;
		c->n_jobs++;
		return tern_writer_add_tensor_fn(w, &desc, fill_ternary, j);
	}
	tern_dtype want = s->dtype;
	if (s->n_dims >= 2 && o->float_type != TERN_DTYPE_COUNT)
		want = o->float_type;
	if (is_head(s->name) && o->head_type != TERN_DTYPE_COUNT)
		want = o->head_type;
	if (want == s->dtype)
		return tern_writer_add_tensor_ref(w, s);
	int64_t cols = tern_tensor_cols(s);
	if (cols > c->row_cap) {
		size_t bytes;
		if (tern_size_mul((size_t)cols, sizeof(float), &bytes) != TERN_OK)
			return tern_error(c->ctx, TERN_E_OVERFLOW, "tensor '%s': rows too long",
					  s->name);
		float *nr = realloc(c->row, bytes);
		if (!nr)
			return tern_error(c->ctx, TERN_E_NOMEM, "out of memory");
		c->row = nr;
		c->row_cap = cols;
	}
	desc.dtype = want;
	c->n_jobs++;
	if (want == TERN_DTYPE_I8) {
		desc.q = (tern_qparams){ TERN_SCALE_ROW, 0, TERN_DTYPE_F32 };
		return tern_writer_add_tensor_fn(w, &desc, fill_i8, j);
	}
	if (want == TERN_DTYPE_I4) {
		desc.q = (tern_qparams){ TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16 };
		int rc = tern_writer_add_tensor_fn(w, &desc, fill_i4, j);
		/* --head i4r: "<base>.residual" beside "<base>.weight". */
		if (rc == TERN_OK && is_head(s->name) && o->head_residual) {
			desc.name = s->name[0] == 't' ? "token_embd.residual" : "output.residual";
			rc = tern_writer_add_tensor_fn(w, &desc, fill_i4_residual, j);
		}
		return rc;
	}
	return tern_writer_add_tensor_fn(w, &desc, fill_float, j);
}

static int set_header(tern_gguf_conv *c, tern_writer *w)
{
	const char *path = tern_file_path(c->src);
	const char *arch = tern_file_architecture(c->src);
	if (!*arch)
		return tern_error(c->ctx, TERN_E_UNSUPPORTED,
				  "%s: the GGUF names no general.architecture, so its .tern would "
				  "have none",
				  path);
	const tern_meta *kv = tern_file_meta(c->src);
	for (size_t i = 0; i < tern_meta_count(kv); i++) {
		int rc = check_strings(c->ctx, path, tern_meta_key(kv, i), tern_meta_item(kv, i));
		if (rc != TERN_OK)
			return rc;
	}
	char info[160];
	snprintf(info, sizeof info,
		 "{\"source_format\":\"gguf\",\"source_version\":%u,"
		 "\"converter\":\"tern convert (generic GGUF)\"}",
		 tern_file_version(c->src));
	int rc = tern_writer_set_architecture(w, arch);
	if (rc == TERN_OK)
		rc = tern_writer_set_meta(w, "gguf", kv);
	if (rc == TERN_OK)
		rc = tern_writer_set_json(w, "metadata", info);
	return rc;
}

int tern_gguf_conv_new(tern_ctx *ctx, const tern_file *src, const tern_convert_opts *opts,
		       tern_writer *w, tern_gguf_conv **out)
{
	*out = NULL;
	if (tern_file_format_of(src) != TERN_FORMAT_GGUF)
		return tern_error(ctx, TERN_E_INTERNAL, "%s: not a GGUF file", tern_file_path(src));
	tern_gguf_conv *c = calloc(1, sizeof *c);
	size_t n = tern_file_n_tensors(src);
	if (c)
		c->jobs = calloc(n ? n : 1, sizeof *c->jobs);
	if (!c || !c->jobs) {
		free(c);
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	}
	c->ctx = ctx;
	c->src = src;
	*out = c;
	int rc = set_header(c, w);
	for (size_t i = 0; i < n && rc == TERN_OK; i++)
		rc = add_one(c, opts, w, i);
	return rc;
}

void tern_gguf_conv_free(tern_gguf_conv *c)
{
	if (!c)
		return;
	free(c->jobs);
	free(c->row);
	free(c);
}
