/*
 * safetensors.c: reader of Hugging Face safetensors files: a u64 header
 * length, a JSON header (tensor name -> dtype, shape, data_offsets, plus
 * an optional "__metadata__" object of strings) and the data buffer.
 * F32, F16, BF16, I8 and I32 tensors are used in place; U8 (which tern has
 * no dtype for) is widened exactly to I32. The "__metadata__" strings
 * become the file's metadata. docs/FORMAT.md ("GGUF and safetensors")
 * states the rules.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "formats/format.h"

#define ST_MAX_RANK 8

typedef struct st_dtype {
	const char *name;
	size_t size;
	int tern; /* tern_dtype, or -1: known to safetensors but not read */
} st_dtype;

/* U8 is widened to I32; the entry's `tern` is what the file gets. */
static const st_dtype st_dtypes[] = {
	{ "F32", 4, TERN_DTYPE_F32 },  { "F16", 2, TERN_DTYPE_F16 },
	{ "BF16", 2, TERN_DTYPE_BF16 }, { "I8", 1, TERN_DTYPE_I8 },
	{ "I32", 4, TERN_DTYPE_I32 },  { "U8", 1, TERN_DTYPE_I32 },
	{ "F64", 8, -1 },              { "I16", 2, -1 },
	{ "I64", 8, -1 },              { "U16", 2, -1 },
	{ "U32", 4, -1 },              { "U64", 8, -1 },
	{ "BOOL", 1, -1 },             { "F8_E4M3", 1, -1 },
	{ "F8_E5M2", 1, -1 },
};

typedef struct st_tensor {
	const char *name; /* owned by the parsed header tree */
	const st_dtype *dt;
	int n_dims;
	int64_t shape[TERN_MAX_DIMS];
	uint64_t begin, end;
} st_tensor;

typedef struct st_reader {
	tern_ctx *ctx;
	const char *path;
} st_reader;

static const st_dtype *find_dtype(const char *s)
{
	for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
		if (strcmp(st_dtypes[i].name, s) == 0)
			return &st_dtypes[i];
	return NULL;
}

/* A JSON number that is a non-negative integer. */
static bool meta_u64(const tern_meta *m, uint64_t *out)
{
	tern_meta_type t = tern_meta_type_of(m);
	return (t == TERN_META_INT || t == TERN_META_UINT) && tern_meta_as_uint(m, out) == TERN_OK;
}

/* Shapes of more than 4 dims fold their leading dims together: tern's
 * tensors are row-major, so the bytes keep their meaning. A rank-0 scalar
 * becomes shape [1]. */
static int parse_shape(st_reader *r, const char *name, const tern_meta *sh, st_tensor *t)
{
	if (tern_meta_type_of(sh) != TERN_META_ARRAY)
		return tern_error(r->ctx, TERN_E_FORMAT, "%s: tensor '%.200s': \"shape\" is not an array",
				  r->path, name);
	size_t rank = tern_meta_count(sh);
	if (rank > ST_MAX_RANK)
		return tern_error(r->ctx, TERN_E_UNSUPPORTED,
				  "%s: tensor '%.200s': rank %zu (tern reads up to %d)", r->path, name,
				  rank, ST_MAX_RANK);
	uint64_t dims[ST_MAX_RANK];
	uint64_t n = 1;
	for (size_t i = 0; i < rank; i++) {
		if (!meta_u64(tern_meta_item(sh, i), &dims[i]) || dims[i] > INT64_MAX)
			return tern_error(r->ctx, TERN_E_FORMAT,
					  "%s: tensor '%.200s': shape entry %zu is not a non-negative "
					  "integer",
					  r->path, name, i);
		if (dims[i] == 0)
			return tern_error(r->ctx, TERN_E_UNSUPPORTED,
					  "%s: tensor '%.200s' is empty (dimension %zu is 0)", r->path,
					  name, i);
		if (__builtin_mul_overflow(n, dims[i], &n) || n > INT64_MAX)
			return tern_error(r->ctx, TERN_E_OVERFLOW,
					  "%s: tensor '%.200s': element count overflows", r->path, name);
	}
	if (rank == 0) {
		t->n_dims = 1;
		t->shape[0] = 1;
		return TERN_OK;
	}
	size_t lead = rank > TERN_MAX_DIMS ? rank - TERN_MAX_DIMS + 1 : 1;
	uint64_t first = 1;
	for (size_t i = 0; i < lead; i++)
		first *= dims[i]; /* cannot overflow: a factor of n */
	t->n_dims = (int)(rank - lead + 1);
	t->shape[0] = (int64_t)first;
	for (size_t i = lead; i < rank; i++)
		t->shape[i - lead + 1] = (int64_t)dims[i];
	return TERN_OK;
}

static int parse_tensor(st_reader *r, const char *name, const tern_meta *e, st_tensor *t)
{
	t->name = name;
	if (tern_meta_type_of(e) != TERN_META_OBJECT)
		return tern_error(r->ctx, TERN_E_FORMAT, "%s: header entry '%.200s' is not an object",
				  r->path, name);
	const char *ds = tern_meta_as_string(tern_meta_get(e, "dtype"), NULL);
	if (!ds)
		return tern_error(r->ctx, TERN_E_FORMAT,
				  "%s: tensor '%.200s': missing or non-string \"dtype\"", r->path, name);
	t->dt = find_dtype(ds);
	if (!t->dt)
		return tern_error(r->ctx, TERN_E_FORMAT, "%s: tensor '%.200s': unknown dtype \"%.32s\"",
				  r->path, name, ds);
	if (t->dt->tern < 0)
		return tern_error(r->ctx, TERN_E_UNSUPPORTED,
				  "%s: tensor '%.200s': dtype %s is not read by tern (F32, F16, BF16, "
				  "I8, I32 and U8 are)",
				  r->path, name, t->dt->name);
	const tern_meta *sh = tern_meta_get(e, "shape");
	if (!sh)
		return tern_error(r->ctx, TERN_E_FORMAT, "%s: tensor '%.200s': missing \"shape\"",
				  r->path, name);
	int rc = parse_shape(r, name, sh, t);
	if (rc != TERN_OK)
		return rc;
	const tern_meta *off = tern_meta_get(e, "data_offsets");
	if (tern_meta_type_of(off) != TERN_META_ARRAY || tern_meta_count(off) != 2 ||
	    !meta_u64(tern_meta_item(off, 0), &t->begin) ||
	    !meta_u64(tern_meta_item(off, 1), &t->end))
		return tern_error(r->ctx, TERN_E_FORMAT,
				  "%s: tensor '%.200s': \"data_offsets\" is not [begin, end] of "
				  "non-negative integers",
				  r->path, name);
	if (t->end < t->begin)
		return tern_error(r->ctx, TERN_E_FORMAT,
				  "%s: tensor '%.200s': data_offsets [%llu, %llu) end before they begin",
				  r->path, name, (unsigned long long)t->begin,
				  (unsigned long long)t->end);
	uint64_t n = 1, want;
	for (int i = 0; i < t->n_dims; i++)
		n *= (uint64_t)t->shape[i]; /* checked in parse_shape */
	if (__builtin_mul_overflow(n, (uint64_t)t->dt->size, &want))
		return tern_error(r->ctx, TERN_E_OVERFLOW, "%s: tensor '%.200s': byte size overflows",
				  r->path, name);
	if (t->end - t->begin != want)
		return tern_error(r->ctx, TERN_E_FORMAT,
				  "%s: tensor '%.200s': data_offsets span %llu bytes but %s with %llu "
				  "elements needs %llu",
				  r->path, name, (unsigned long long)(t->end - t->begin), t->dt->name,
				  (unsigned long long)n, (unsigned long long)want);
	return TERN_OK;
}

static int parse_metadata(st_reader *r, const tern_meta *md, tern_file_builder *b)
{
	if (tern_meta_type_of(md) != TERN_META_OBJECT)
		return tern_error(r->ctx, TERN_E_FORMAT, "%s: \"__metadata__\" is not an object",
				  r->path);
	tern_meta *root = tern_fb_meta(b);
	for (size_t i = 0; i < tern_meta_count(md); i++) {
		const tern_meta *v = tern_meta_item(md, i);
		size_t len;
		const char *s = tern_meta_as_string(v, &len);
		if (!s)
			return tern_error(r->ctx, TERN_E_FORMAT,
					  "%s: \"__metadata__\" value of '%.200s' is not a string",
					  r->path, tern_meta_key(md, i));
		tern_meta *copy = tern_meta_new_string(s, len);
		if (!copy || tern_meta_set(root, tern_meta_key(md, i), copy) != TERN_OK)
			return tern_error(r->ctx, TERN_E_NOMEM, "%s: out of memory", r->path);
	}
	return TERN_OK;
}

static int add_one(st_reader *r, tern_file_builder *b, const st_tensor *t, const uint8_t *src)
{
	size_t nbytes = (size_t)(t->end - t->begin);
	size_t nl = strlen(t->name);
	if (strcmp(t->dt->name, "U8") == 0) {
		size_t bytes;
		if (tern_size_mul(nbytes, sizeof(int32_t), &bytes) != TERN_OK)
			return tern_error(r->ctx, TERN_E_OVERFLOW, "%s: tensor '%.200s' too large",
					  r->path, t->name);
		int32_t *dst = tern_fb_alloc(b, bytes);
		if (!dst)
			return TERN_E_NOMEM;
		for (size_t i = 0; i < nbytes; i++)
			dst[i] = src[i];
		return tern_fb_add_tensor(b, t->name, nl, TERN_DTYPE_I32, t->n_dims, t->shape, NULL,
					  dst, bytes);
	}
	const void *data = src;
	int64_t cols = t->shape[t->n_dims - 1];
	size_t row_bytes = tern_row_bytes((tern_dtype)t->dt->tern, cols);
	if (row_bytes != (size_t)cols * t->dt->size) {
		/* tern pads I8 rows (for its kernels): repack with zero padding. */
		size_t rows = nbytes / ((size_t)cols * t->dt->size), bytes;
		if (tern_size_mul(rows, row_bytes, &bytes) != TERN_OK)
			return tern_error(r->ctx, TERN_E_OVERFLOW, "%s: tensor '%.200s' too large",
					  r->path, t->name);
		uint8_t *dst = tern_fb_alloc(b, bytes);
		if (!dst)
			return TERN_E_NOMEM;
		for (size_t i = 0; i < rows; i++)
			memcpy(dst + i * row_bytes, src + i * (size_t)cols * t->dt->size,
			       (size_t)cols * t->dt->size);
		return tern_fb_add_tensor(b, t->name, nl, (tern_dtype)t->dt->tern, t->n_dims,
					  t->shape, NULL, dst, bytes);
	}
	/* The header length is free, so the buffer may be unaligned for the
	 * element size: copy such tensors rather than hand out bad pointers. */
	if ((uintptr_t)src % t->dt->size != 0) {
		void *copy = tern_fb_alloc(b, nbytes);
		if (!copy)
			return TERN_E_NOMEM;
		memcpy(copy, src, nbytes);
		data = copy;
	}
	return tern_fb_add_tensor(b, t->name, nl, (tern_dtype)t->dt->tern, t->n_dims, t->shape,
				  NULL, data, nbytes);
}

static int read_body(st_reader *r, const tern_meta *hdr, const uint8_t *buf, uint64_t buf_size,
		     tern_file_builder *b)
{
	if (tern_meta_type_of(hdr) != TERN_META_OBJECT)
		return tern_error(r->ctx, TERN_E_FORMAT, "%s: the header is not a JSON object",
				  r->path);
	size_t n = tern_meta_count(hdr);
	st_tensor *ts = calloc(n ? n : 1, sizeof *ts);
	tern_extent *ext = calloc(n ? n : 1, sizeof *ext);
	int rc = TERN_OK;
	size_t nt = 0;
	if (!ts || !ext)
		rc = tern_error(r->ctx, TERN_E_NOMEM, "%s: out of memory", r->path);
	for (size_t i = 0; i < n && rc == TERN_OK; i++) {
		const char *key = tern_meta_key(hdr, i);
		if (strcmp(key, "__metadata__") == 0) {
			rc = parse_metadata(r, tern_meta_item(hdr, i), b);
			continue;
		}
		rc = parse_tensor(r, key, tern_meta_item(hdr, i), &ts[nt]);
		if (rc == TERN_OK) {
			ext[nt] = (tern_extent){ key, ts[nt].begin, ts[nt].end - ts[nt].begin };
			nt++;
		}
	}
	if (rc == TERN_OK)
		rc = tern_extents_check(r->ctx, r->path, ext, nt, buf_size, "data buffer");
	for (size_t i = 0; i < nt && rc == TERN_OK; i++)
		rc = add_one(r, b, &ts[i], buf + ts[i].begin);
	free(ext);
	free(ts);
	return rc;
}

int tern_safetensors_open(tern_ctx *ctx, const uint8_t *map, size_t size, tern_file_builder *b)
{
	st_reader r = { ctx, tern_fb_path(b) };
	if (size < 8)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: truncated: %zu bytes cannot hold the 8-byte header length",
				  r.path, size);
	uint64_t hlen = tern_rd_u64(map);
	if (hlen > size)
		return tern_error(ctx, TERN_E_OVERFLOW,
				  "%s: header length %llu is larger than the whole file (%zu bytes)",
				  r.path, (unsigned long long)hlen, size);
	if (hlen > size - 8)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: truncated: the %llu-byte header runs past the end of the file "
				  "(%zu bytes after the length)",
				  r.path, (unsigned long long)hlen, size - 8);
	if (hlen < 2 || map[8] != '{')
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: the header does not start with a JSON object", r.path);
	tern_meta *hdr;
	int rc = tern_meta_from_json(ctx, (const char *)map + 8, (size_t)hlen, &hdr);
	if (rc != TERN_OK) {
		char detail[TERN_ERRMSG_MAX];
		snprintf(detail, sizeof detail, "%s", tern_ctx_errmsg(ctx));
		return tern_error(ctx, rc, "%s: header: %s", r.path, detail);
	}
	tern_fb_set_version(b, 0);
	rc = read_body(&r, hdr, map + 8 + hlen, size - 8 - hlen, b);
	tern_meta_free(hdr);
	return rc;
}
