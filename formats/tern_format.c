/*
 * tern_format.c: the native .tern container (docs/FORMAT.md, ".tern
 * container"): a 16-byte preamble ("TERN", u32 version, u64 header
 * length), a UTF-8 JSON header, zero padding to 64 bytes, then the data
 * section with every tensor 64-byte aligned so kernels read it in place.
 * The reader trusts nothing in the file; the writer produces exactly what
 * the reader accepts, via a temporary file renamed into place.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"
#include "formats/format.h"

#define TERN_FILE_VERSION 1u
#define TERN_PREAMBLE 16u
#define TERN_ALIGN 64u
/* json-c takes an int length; headers are kilobytes in practice. */
#define TERN_HEADER_MAX ((uint64_t)INT_MAX - 1)

static const char *const scale_kind_names[] = { "none", "tensor", "row", "block" };

static uint64_t align_up(uint64_t v)
{
	return (v + (TERN_ALIGN - 1)) & ~(uint64_t)(TERN_ALIGN - 1);
}

/* ---- reader --------------------------------------------------------------- */

typedef struct reader {
	tern_ctx *ctx;
	const char *path;
	const char *tname; /* tensor being read, for messages; NULL before its name */
	size_t ti;
} reader;

/* Message prefix naming the tensor (by name once known, else by index). */
static int terr(const reader *r, int status, const char *what)
{
	if (r->tname)
		return tern_error(r->ctx, status, "%s: tensor '%.200s': %s", r->path, r->tname, what);
	return tern_error(r->ctx, status, "%s: tensor #%zu: %s", r->path, r->ti, what);
}

static int read_u64_field(const reader *r, const tern_meta *e, const char *key, uint64_t *out)
{
	char msg[160];
	const tern_meta *v = tern_meta_get(e, key);
	if (!v) {
		snprintf(msg, sizeof msg, "missing \"%s\"", key);
		return terr(r, TERN_E_FORMAT, msg);
	}
	if (tern_meta_as_uint(v, out) != TERN_OK) {
		snprintf(msg, sizeof msg, "\"%s\" is not a non-negative integer", key);
		return terr(r, TERN_E_FORMAT, msg);
	}
	return TERN_OK;
}

static int read_scale(const reader *r, const tern_meta *e, tern_qparams *q)
{
	char msg[200];
	memset(q, 0, sizeof *q);
	const tern_meta *s = tern_meta_get(e, "scale");
	if (!s)
		return TERN_OK; /* kind none; add_tensor rejects it for ternary dtypes */
	if (tern_meta_type_of(s) != TERN_META_OBJECT)
		return terr(r, TERN_E_FORMAT, "\"scale\" is not an object");
	for (size_t i = 0; i < tern_meta_count(s); i++) {
		const char *k = tern_meta_key(s, i);
		if (strcmp(k, "kind") && strcmp(k, "block") && strcmp(k, "type")) {
			snprintf(msg, sizeof msg, "unknown key \"%.60s\" in \"scale\"", k);
			return terr(r, TERN_E_FORMAT, msg);
		}
	}
	const char *kind = tern_meta_get_string(s, "kind", NULL);
	if (!kind)
		return terr(r, TERN_E_FORMAT, "\"scale\" has no \"kind\" string");
	if (strcmp(kind, "tensor") == 0)
		q->kind = TERN_SCALE_TENSOR;
	else if (strcmp(kind, "row") == 0)
		q->kind = TERN_SCALE_ROW;
	else if (strcmp(kind, "block") == 0)
		q->kind = TERN_SCALE_BLOCK;
	else {
		snprintf(msg, sizeof msg,
			 "unknown scale kind \"%.60s\" (expected tensor, row or block)", kind);
		return terr(r, TERN_E_FORMAT, msg);
	}
	const tern_meta *blk = tern_meta_get(s, "block");
	if (q->kind == TERN_SCALE_BLOCK) {
		uint64_t b;
		if (tern_meta_as_uint(blk, &b) != TERN_OK || b > UINT32_MAX)
			return terr(r, TERN_E_FORMAT, "block scales need an integer \"block\"");
		q->block = (uint32_t)b;
	} else if (blk) {
		return terr(r, TERN_E_FORMAT, "\"block\" given for a scale kind other than block");
	}
	const char *type = tern_meta_get_string(s, "type", NULL);
	tern_dtype st = type ? tern_dtype_from_name(type) : TERN_DTYPE_COUNT;
	if (st != TERN_DTYPE_F32 && st != TERN_DTYPE_F16) {
		snprintf(msg, sizeof msg, "scale \"type\" must be \"f32\" or \"f16\", not %s%.40s%s",
			 type ? "\"" : "", type ? type : "missing", type ? "\"" : "");
		return terr(r, TERN_E_FORMAT, msg);
	}
	q->scale_type = st;
	return TERN_OK;
}

/* Packed layouts (T2, T3, I4: group > 1) are spelled out in the file so a
 * reader built for another layout refuses the data instead of misreading
 * it. */
static int read_packing(const reader *r, const tern_meta *e, tern_dtype dtype)
{
	const tern_type_traits *tr = tern_type_traits_of(dtype);
	const tern_meta *p = tern_meta_get(e, "packing");
	if (tr->group <= 1) {
		if (p)
			return terr(r, TERN_E_FORMAT, "\"packing\" given for a dtype that is not packed");
		return TERN_OK;
	}
	if (tern_meta_type_of(p) != TERN_META_OBJECT)
		return terr(r, TERN_E_FORMAT, "packed (ternary or i4) tensor has no \"packing\" object");
	const struct {
		const char *key;
		uint64_t want;
	} f[] = {
		{ "group", tr->group },
		{ "group_bytes", tr->group_bytes },
		{ "codes_per_byte", tr->group / tr->group_bytes },
		{ "row_align", tr->row_align },
	};
	if (tern_meta_count(p) != sizeof f / sizeof f[0])
		return terr(r, TERN_E_FORMAT,
			    "\"packing\" must have exactly group, group_bytes, codes_per_byte and "
			    "row_align");
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		uint64_t v;
		if (tern_meta_as_uint(tern_meta_get(p, f[i].key), &v) != TERN_OK || v != f[i].want) {
			char msg[200];
			snprintf(msg, sizeof msg,
				 "packing \"%s\" must be %llu for dtype %s (this reader's layout)",
				 f[i].key, (unsigned long long)f[i].want, tr->name);
			return terr(r, TERN_E_FORMAT, msg);
		}
	}
	return TERN_OK;
}

static const char *const entry_keys[] = { "name",  "dtype", "shape",  "offset",
					  "nbytes", "scale", "packing" };

static int read_entry(reader *r, const tern_meta *e, const uint8_t *data, uint64_t data_len,
		      tern_file_builder *b, tern_extent *ext)
{
	char msg[200];
	if (tern_meta_type_of(e) != TERN_META_OBJECT)
		return terr(r, TERN_E_FORMAT, "table entry is not an object");
	size_t name_len;
	const char *name = tern_meta_as_string(tern_meta_get(e, "name"), &name_len);
	if (!name)
		return terr(r, TERN_E_FORMAT, "no \"name\" string");
	if (name_len == 0)
		return terr(r, TERN_E_FORMAT, "empty name");
	if (memchr(name, '\0', name_len))
		return terr(r, TERN_E_FORMAT, "name contains a NUL character");
	if (!tern_utf8_valid(name, name_len))
		return terr(r, TERN_E_FORMAT, "name is not valid UTF-8");
	r->tname = name;
	for (size_t i = 0; i < tern_meta_count(e); i++) {
		const char *k = tern_meta_key(e, i);
		bool known = false;
		for (size_t j = 0; j < sizeof entry_keys / sizeof entry_keys[0]; j++)
			known = known || strcmp(k, entry_keys[j]) == 0;
		if (!known) {
			snprintf(msg, sizeof msg, "unknown key \"%.60s\"", k);
			return terr(r, TERN_E_FORMAT, msg);
		}
	}

	const char *dname = tern_meta_get_string(e, "dtype", NULL);
	if (!dname)
		return terr(r, TERN_E_FORMAT, "no \"dtype\" string");
	tern_dtype dtype = tern_dtype_from_name(dname);
	if (dtype == TERN_DTYPE_COUNT) {
		snprintf(msg, sizeof msg, "unknown dtype \"%.60s\"", dname);
		return terr(r, TERN_E_UNSUPPORTED, msg);
	}

	const tern_meta *sh = tern_meta_get(e, "shape");
	if (tern_meta_type_of(sh) != TERN_META_ARRAY)
		return terr(r, TERN_E_FORMAT, "no \"shape\" array");
	size_t nd = tern_meta_count(sh);
	if (nd < 1 || nd > TERN_MAX_DIMS) {
		snprintf(msg, sizeof msg, "shape has %zu dimensions (expected 1 to %d)", nd,
			 TERN_MAX_DIMS);
		return terr(r, TERN_E_FORMAT, msg);
	}
	int64_t shape[TERN_MAX_DIMS];
	for (size_t i = 0; i < nd; i++) {
		if (tern_meta_as_int(tern_meta_item(sh, i), &shape[i]) != TERN_OK ||
		    shape[i] <= 0) {
			snprintf(msg, sizeof msg, "shape[%zu] is not a positive integer", i);
			return terr(r, TERN_E_FORMAT, msg);
		}
	}

	tern_qparams q;
	int rc = read_scale(r, e, &q);
	if (rc == TERN_OK)
		rc = read_packing(r, e, dtype);
	if (rc != TERN_OK)
		return rc;

	uint64_t off, nbytes;
	if ((rc = read_u64_field(r, e, "offset", &off)) != TERN_OK ||
	    (rc = read_u64_field(r, e, "nbytes", &nbytes)) != TERN_OK)
		return rc;
	if (off % TERN_ALIGN) {
		snprintf(msg, sizeof msg, "offset %llu is not a multiple of %u",
			 (unsigned long long)off, TERN_ALIGN);
		return terr(r, TERN_E_FORMAT, msg);
	}
	if (off > data_len || nbytes > data_len - off) {
		snprintf(msg, sizeof msg,
			 "bytes [%llu, %llu + %llu) run past the end of the data section (%llu "
			 "bytes)",
			 (unsigned long long)off, (unsigned long long)off,
			 (unsigned long long)nbytes, (unsigned long long)data_len);
		return terr(r, TERN_E_FORMAT, msg);
	}
	rc = tern_fb_add_tensor(b, name, name_len, dtype, (int)nd, shape, &q, data + off,
				(size_t)nbytes);
	if (rc != TERN_OK)
		return rc;
	ext->name = name;
	ext->offset = off;
	ext->nbytes = nbytes;
	return TERN_OK;
}

/* Header keys with a fixed meaning must have the right type when present. */
static int check_header_keys(reader *r, const tern_meta *root)
{
	const char *arch = tern_meta_get_string(root, "architecture", NULL);
	if (!arch)
		return tern_error(r->ctx, TERN_E_FORMAT, "%s: header has no \"architecture\" string",
				  r->path);
	if (!*arch)
		return tern_error(r->ctx, TERN_E_FORMAT, "%s: header \"architecture\" is empty",
				  r->path);
	static const char *const objs[] = { "hparams", "metadata" };
	for (size_t i = 0; i < 2; i++) {
		const tern_meta *v = tern_meta_get(root, objs[i]);
		if (v && tern_meta_type_of(v) != TERN_META_OBJECT)
			return tern_error(r->ctx, TERN_E_FORMAT,
					  "%s: header \"%s\" is not an object", r->path, objs[i]);
	}
	return TERN_OK;
}

static const char *meta_type_name(tern_meta_type t)
{
	static const char *const n[] = { "null",   "a boolean", "an integer", "an integer",
					 "a number", "a string", "an array",  "an object" };
	return n[t];
}

int tern_tern_open(tern_ctx *ctx, const uint8_t *map, size_t size, tern_file_builder *b)
{
	reader r = { ctx, tern_fb_path(b), NULL, 0 };
	const char *path = r.path;
	if (size < TERN_PREAMBLE)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: truncated: %zu bytes, but the preamble (magic, version, "
				  "header length) takes %u",
				  path, size, TERN_PREAMBLE);
	if (memcmp(map, "TERN", 4) != 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: bad magic (expected \"TERN\")", path);
	uint32_t version = tern_rd_u32(map + 4);
	if (version == 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: version 0 is invalid", path);
	if (version != TERN_FILE_VERSION)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: .tern version %u is not supported (this reader knows %u)",
				  path, version, TERN_FILE_VERSION);
	tern_fb_set_version(b, version);
	uint64_t hlen = tern_rd_u64(map + 8);
	if (hlen == 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: header length is 0", path);
	if (hlen > size - TERN_PREAMBLE)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: header length %llu runs past the end of the file (%zu "
				  "bytes after the preamble)",
				  path, (unsigned long long)hlen, size - TERN_PREAMBLE);
	if (hlen > TERN_HEADER_MAX)
		return tern_error(ctx, TERN_E_OVERFLOW,
				  "%s: header length %llu is absurd (at most %llu accepted)", path,
				  (unsigned long long)hlen, (unsigned long long)TERN_HEADER_MAX);
	uint64_t data_start = align_up(TERN_PREAMBLE + hlen);
	if (data_start > size)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: truncated in the header padding: the data section starts at "
				  "%llu but the file has %zu bytes",
				  path, (unsigned long long)data_start, size);
	for (uint64_t i = TERN_PREAMBLE + hlen; i < data_start; i++)
		if (map[i] != 0)
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: non-zero byte 0x%02x in the header padding at offset "
					  "%llu",
					  path, map[i], (unsigned long long)i);

	const char *text = (const char *)map + TERN_PREAMBLE;
	size_t tlen = (size_t)hlen;
	const char *nul = memchr(text, '\0', tlen);
	if (nul)
		return tern_error(ctx, TERN_E_FORMAT, "%s: header contains a NUL byte at offset %zu",
				  path, TERN_PREAMBLE + (size_t)(nul - text));
	size_t bad = tern_utf8_check(text, tlen);
	if (bad != tlen)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: header is not valid UTF-8 (bad byte 0x%02x at offset %zu)",
				  path, (unsigned char)text[bad], TERN_PREAMBLE + bad);
	tern_meta *root;
	int rc = tern_meta_from_json(ctx, text, tlen, &root);
	if (rc != TERN_OK) {
		char detail[TERN_ERRMSG_MAX];
		snprintf(detail, sizeof detail, "%s", tern_ctx_errmsg(ctx));
		return tern_error(ctx, rc, "%s: header: %s", path, detail);
	}
	/* From here root belongs to the builder, which frees it on failure. */
	if (tern_meta_type_of(root) != TERN_META_OBJECT) {
		tern_meta_type t = tern_meta_type_of(root);
		tern_meta_free(root);
		return tern_error(ctx, TERN_E_FORMAT, "%s: header is %s, not a JSON object", path,
				  meta_type_name(t));
	}
	rc = tern_fb_set_meta(b, root);
	if (rc != TERN_OK)
		return rc;
	if ((rc = check_header_keys(&r, root)) != TERN_OK)
		return rc;
	rc = tern_fb_set_architecture(b, tern_meta_get_string(root, "architecture", ""));
	if (rc != TERN_OK)
		return rc;

	tern_meta *table = tern_meta_take(root, "tensors");
	if (tern_meta_type_of(table) != TERN_META_ARRAY) {
		rc = tern_error(ctx, TERN_E_FORMAT, "%s: header has no \"tensors\" array", path);
		tern_meta_free(table);
		return rc;
	}
	size_t n = tern_meta_count(table);
	tern_extent *ext = NULL;
	if (n) {
		ext = calloc(n, sizeof *ext);
		if (!ext) {
			tern_meta_free(table);
			return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory for %zu tensors",
					  path, n);
		}
	}
	const uint8_t *data = map + data_start;
	uint64_t data_len = size - data_start;
	uint64_t end = 0;
	for (size_t i = 0; i < n && rc == TERN_OK; i++) {
		r.ti = i;
		r.tname = NULL;
		rc = read_entry(&r, tern_meta_item(table, i), data, data_len, b, &ext[i]);
		if (rc == TERN_OK && ext[i].offset + ext[i].nbytes > end)
			end = ext[i].offset + ext[i].nbytes;
	}
	if (rc == TERN_OK)
		rc = tern_extents_check(ctx, path, ext, n, data_len, "data section");
	if (rc == TERN_OK && align_up(end) != data_len) {
		if (align_up(end) > data_len)
			rc = tern_error(ctx, TERN_E_FORMAT,
					"%s: truncated: the data section should be padded to %llu "
					"bytes but the file holds %llu",
					path, (unsigned long long)align_up(end),
					(unsigned long long)data_len);
		else
			rc = tern_error(ctx, TERN_E_FORMAT,
					"%s: %llu trailing bytes after the data section", path,
					(unsigned long long)(data_len - align_up(end)));
	}
	free(ext);
	tern_meta_free(table);
	return rc;
}

/* ---- writer ---------------------------------------------------------------- */

typedef enum wsource { WSRC_COPY, WSRC_REF, WSRC_FN } wsource;

typedef struct wtensor {
	tern_tensor t; /* name owned; data owned for WSRC_COPY */
	wsource src;
	tern_writer_fill_fn fill;
	void *user;
	uint64_t offset;
} wtensor;

struct tern_writer {
	tern_ctx *ctx;
	char *path;
	char *tmp;
	char *arch;
	tern_meta *meta; /* header keys other than architecture and tensors */
	wtensor *t;
	size_t n, cap;
	bool spent;
	tern_writer_progress_fn progress;
	void *progress_user;
	uint64_t done, total; /* bytes written by finish, and the file size */
};

int tern_writer_new(tern_ctx *ctx, const char *path, tern_writer **out)
{
	*out = NULL;
	if (!path || !*path)
		return tern_error(ctx, TERN_E_INVALID, "writer: no path given");
	tern_writer *w = calloc(1, sizeof *w);
	size_t plen = strlen(path);
	if (w) {
		w->ctx = ctx;
		w->path = strdup(path);
		w->tmp = plen < SIZE_MAX - 5 ? malloc(plen + 5) : NULL;
		w->meta = tern_meta_new_object();
	}
	if (!w || !w->path || !w->tmp || !w->meta) {
		tern_writer_free(w);
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", path);
	}
	memcpy(w->tmp, path, plen);
	memcpy(w->tmp + plen, ".tmp", 5);
	*out = w;
	return TERN_OK;
}

void tern_writer_free(tern_writer *w)
{
	if (!w)
		return;
	for (size_t i = 0; i < w->n; i++) {
		free((char *)(uintptr_t)w->t[i].t.name);
		if (w->t[i].src == WSRC_COPY)
			tern_free(w->t[i].t.data);
	}
	free(w->t);
	tern_meta_free(w->meta);
	free(w->arch);
	free(w->path);
	free(w->tmp);
	free(w);
}

static int writer_usable(tern_writer *w)
{
	if (!w)
		return TERN_E_INVALID;
	if (w->spent)
		return tern_error(w->ctx, TERN_E_INVALID, "%s: writer already finished", w->path);
	return TERN_OK;
}

int tern_writer_set_progress(tern_writer *w, tern_writer_progress_fn fn, void *user)
{
	int rc = writer_usable(w);
	if (rc != TERN_OK)
		return rc;
	w->progress = fn;
	w->progress_user = fn ? user : NULL;
	return TERN_OK;
}

int tern_writer_set_architecture(tern_writer *w, const char *arch)
{
	int rc = writer_usable(w);
	if (rc != TERN_OK)
		return rc;
	if (!arch || !*arch || !tern_utf8_valid(arch, strlen(arch)))
		return tern_error(w->ctx, TERN_E_INVALID,
				  "%s: architecture must be a non-empty UTF-8 string", w->path);
	char *a = strdup(arch);
	if (!a)
		return tern_error(w->ctx, TERN_E_NOMEM, "%s: out of memory", w->path);
	free(w->arch);
	w->arch = a;
	return TERN_OK;
}

/* True if path's first component is a key the writer manages itself. */
static bool reserved_key(const char *path)
{
	size_t len = strcspn(path, ".");
	return (len == 7 && strncmp(path, "tensors", 7) == 0) ||
	       (len == 12 && strncmp(path, "architecture", 12) == 0);
}

/* Takes ownership of value. */
static int writer_set(tern_writer *w, const char *path, tern_meta *value)
{
	if (!path || !*path || reserved_key(path)) {
		tern_meta_free(value);
		return tern_error(w->ctx, TERN_E_INVALID,
				  "%s: header key \"%s\" is empty or reserved", w->path,
				  path ? path : "(null)");
	}
	int rc = tern_meta_set_path(w->meta, path, value);
	if (rc != TERN_OK)
		return tern_error(w->ctx, rc, "%s: cannot set header key \"%s\"%s", w->path, path,
				  rc == TERN_E_INVALID ? ": a parent is not an object" : "");
	return TERN_OK;
}

int tern_writer_set_meta(tern_writer *w, const char *path, const tern_meta *value)
{
	int rc = writer_usable(w);
	if (rc != TERN_OK)
		return rc;
	tern_meta *copy;
	if (tern_meta_copy(value, &copy) != TERN_OK)
		return tern_error(w->ctx, value ? TERN_E_NOMEM : TERN_E_INVALID,
				  "%s: cannot copy the value for \"%s\"", w->path,
				  path ? path : "(null)");
	return writer_set(w, path, copy);
}

int tern_writer_set_json(tern_writer *w, const char *path, const char *json)
{
	int rc = writer_usable(w);
	if (rc != TERN_OK)
		return rc;
	if (!json)
		return tern_error(w->ctx, TERN_E_INVALID, "%s: no JSON text", w->path);
	tern_meta *v;
	if ((rc = tern_meta_from_json(w->ctx, json, strlen(json), &v)) != TERN_OK)
		return rc;
	if (path)
		return writer_set(w, path, v);
	if (tern_meta_type_of(v) != TERN_META_OBJECT) {
		tern_meta_free(v);
		return tern_error(w->ctx, TERN_E_INVALID,
				  "%s: JSON merged into the header must be an object", w->path);
	}
	for (size_t i = 0; i < tern_meta_count(v) && rc == TERN_OK; i++) {
		const char *k = tern_meta_key(v, i);
		const tern_meta *val = tern_meta_item(v, i);
		if (strcmp(k, "architecture") == 0) {
			const char *a = tern_meta_as_string(val, NULL);
			rc = a ? tern_writer_set_architecture(w, a)
			       : tern_error(w->ctx, TERN_E_INVALID,
					    "%s: \"architecture\" must be a string", w->path);
			continue;
		}
		if (strchr(k, '.') || reserved_key(k)) {
			rc = tern_error(w->ctx, TERN_E_INVALID,
					"%s: header key \"%s\" has a dot or is reserved", w->path, k);
			continue;
		}
		tern_meta *copy;
		rc = tern_meta_copy(val, &copy);
		if (rc == TERN_OK)
			rc = writer_set(w, k, copy);
		else
			rc = tern_error(w->ctx, rc, "%s: out of memory", w->path);
	}
	tern_meta_free(v);
	return rc;
}

/* Validate t's description and append it; data is set by the caller. */
static int writer_add(tern_writer *w, const tern_tensor *t, wsource src, wtensor **out)
{
	int rc = writer_usable(w);
	if (rc != TERN_OK)
		return rc;
	if (!t || !t->name || !*t->name)
		return tern_error(w->ctx, TERN_E_INVALID, "%s: tensor without a name", w->path);
	size_t nl = strlen(t->name);
	if (!tern_utf8_valid(t->name, nl))
		return tern_error(w->ctx, TERN_E_INVALID, "%s: tensor name is not valid UTF-8",
				  w->path);
	for (size_t i = 0; i < w->n; i++)
		if (strcmp(w->t[i].t.name, t->name) == 0)
			return tern_error(w->ctx, TERN_E_INVALID, "%s: duplicate tensor name '%s'",
					  w->path, t->name);
	size_t want;
	if ((rc = tern_tensor_bytes(w->ctx, t, &want)) != TERN_OK) {
		char detail[TERN_ERRMSG_MAX];
		snprintf(detail, sizeof detail, "%s", tern_ctx_errmsg(w->ctx));
		return tern_error(w->ctx, rc, "%s: tensor '%s': %s", w->path, t->name, detail);
	}
	if (src != WSRC_FN ? t->nbytes != want : (t->nbytes != 0 && t->nbytes != want))
		return tern_error(w->ctx, TERN_E_INVALID,
				  "%s: tensor '%s': nbytes is %zu but dtype %s and shape need %zu",
				  w->path, t->name, t->nbytes, tern_dtype_name(t->dtype), want);
	if (src != WSRC_FN && !t->data)
		return tern_error(w->ctx, TERN_E_INVALID, "%s: tensor '%s' has no data", w->path,
				  t->name);
	if (w->n == w->cap) {
		size_t ncap = w->cap ? w->cap * 2 : 16;
		wtensor *nt = ncap > SIZE_MAX / sizeof *nt ? NULL : realloc(w->t, ncap * sizeof *nt);
		if (!nt)
			return tern_error(w->ctx, TERN_E_NOMEM, "%s: out of memory", w->path);
		w->t = nt;
		w->cap = ncap;
	}
	char *name = strdup(t->name);
	if (!name)
		return tern_error(w->ctx, TERN_E_NOMEM, "%s: out of memory", w->path);
	wtensor *wt = &w->t[w->n];
	memset(wt, 0, sizeof *wt);
	wt->t = *t;
	wt->t.name = name;
	wt->t.data = NULL;
	wt->t.nbytes = want;
	wt->src = src;
	*out = wt;
	return TERN_OK;
}

int tern_writer_add_tensor(tern_writer *w, const tern_tensor *t)
{
	wtensor *wt;
	int rc = writer_add(w, t, WSRC_COPY, &wt);
	if (rc != TERN_OK)
		return rc;
	void *copy = tern_alloc(wt->t.nbytes);
	if (!copy) {
		free((char *)(uintptr_t)wt->t.name);
		return tern_error(w->ctx, TERN_E_NOMEM, "%s: out of memory copying tensor '%s'",
				  w->path, t->name);
	}
	memcpy(copy, t->data, wt->t.nbytes);
	wt->t.data = copy;
	w->n++;
	return TERN_OK;
}

int tern_writer_add_tensor_ref(tern_writer *w, const tern_tensor *t)
{
	wtensor *wt;
	int rc = writer_add(w, t, WSRC_REF, &wt);
	if (rc != TERN_OK)
		return rc;
	wt->t.data = t->data;
	w->n++;
	return TERN_OK;
}

int tern_writer_add_tensor_fn(tern_writer *w, const tern_tensor *desc, tern_writer_fill_fn fill,
			      void *user)
{
	if (w && !fill)
		return tern_error(w->ctx, TERN_E_INVALID, "%s: no fill function", w->path);
	wtensor *wt;
	int rc = writer_add(w, desc, WSRC_FN, &wt);
	if (rc != TERN_OK)
		return rc;
	wt->fill = fill;
	wt->user = user;
	w->n++;
	return TERN_OK;
}

/* The tensor table entry of one tensor. */
static tern_meta *entry_meta(const wtensor *wt)
{
	const tern_tensor *t = &wt->t;
	const tern_type_traits *tr = tern_type_traits_of(t->dtype);
	tern_meta *e = tern_meta_new_object();
	tern_meta *shape = tern_meta_new_array();
	int rc = e && shape ? TERN_OK : TERN_E_NOMEM;
	for (int i = 0; i < t->n_dims && rc == TERN_OK; i++)
		rc = tern_meta_append(shape, tern_meta_new_int(t->shape[i]));
	if (rc == TERN_OK)
		rc = tern_meta_set(e, "name", tern_meta_new_string(t->name, strlen(t->name)));
	if (rc == TERN_OK)
		rc = tern_meta_set(e, "dtype", tern_meta_new_string(tr->name, strlen(tr->name)));
	if (rc == TERN_OK) {
		rc = tern_meta_set(e, "shape", shape);
		shape = NULL;
	}
	if (rc == TERN_OK)
		rc = tern_meta_set(e, "offset", tern_meta_new_uint(wt->offset));
	if (rc == TERN_OK)
		rc = tern_meta_set(e, "nbytes", tern_meta_new_uint(t->nbytes));
	if (rc == TERN_OK && t->q.kind != TERN_SCALE_NONE) {
		tern_meta *s = tern_meta_new_object();
		const char *kn = scale_kind_names[t->q.kind];
		const char *st = tern_dtype_name(t->q.scale_type);
		rc = s ? tern_meta_set(s, "kind", tern_meta_new_string(kn, strlen(kn)))
		       : TERN_E_NOMEM;
		if (rc == TERN_OK && t->q.kind == TERN_SCALE_BLOCK)
			rc = tern_meta_set(s, "block", tern_meta_new_uint(t->q.block));
		if (rc == TERN_OK)
			rc = tern_meta_set(s, "type", tern_meta_new_string(st, strlen(st)));
		if (rc == TERN_OK) {
			rc = tern_meta_set(e, "scale", s);
			s = NULL;
		}
		tern_meta_free(s);
	}
	if (rc == TERN_OK && tr->group > 1) {
		tern_meta *p = tern_meta_new_object();
		rc = p ? tern_meta_set(p, "group", tern_meta_new_uint(tr->group)) : TERN_E_NOMEM;
		if (rc == TERN_OK)
			rc = tern_meta_set(p, "group_bytes", tern_meta_new_uint(tr->group_bytes));
		if (rc == TERN_OK)
			rc = tern_meta_set(p, "codes_per_byte",
					   tern_meta_new_uint(tr->group / tr->group_bytes));
		if (rc == TERN_OK)
			rc = tern_meta_set(p, "row_align", tern_meta_new_uint(tr->row_align));
		if (rc == TERN_OK) {
			rc = tern_meta_set(e, "packing", p);
			p = NULL;
		}
		tern_meta_free(p);
	}
	tern_meta_free(shape);
	if (rc != TERN_OK) {
		tern_meta_free(e);
		return NULL;
	}
	return e;
}

/* The whole JSON header: architecture first, the caller's keys, then the
 * table (offsets relative to the data section, so independent of the
 * header's own length). */
static int build_header(tern_writer *w, char **json)
{
	tern_meta *h = tern_meta_new_object();
	tern_meta *table = tern_meta_new_array();
	int rc = h && table ? TERN_OK : TERN_E_NOMEM;
	if (rc == TERN_OK)
		rc = tern_meta_set(h, "architecture", tern_meta_new_string(w->arch, strlen(w->arch)));
	for (size_t i = 0; i < tern_meta_count(w->meta) && rc == TERN_OK; i++) {
		tern_meta *c;
		rc = tern_meta_copy(tern_meta_item(w->meta, i), &c);
		if (rc == TERN_OK)
			rc = tern_meta_set(h, tern_meta_key(w->meta, i), c);
	}
	for (size_t i = 0; i < w->n && rc == TERN_OK; i++) {
		tern_meta *e = entry_meta(&w->t[i]);
		rc = e ? tern_meta_append(table, e) : TERN_E_NOMEM;
	}
	if (rc == TERN_OK) {
		rc = tern_meta_set(h, "tensors", table);
		table = NULL;
	}
	if (rc == TERN_OK)
		rc = tern_meta_to_json(w->ctx, h, false, json);
	tern_meta_free(table);
	tern_meta_free(h);
	if (rc != TERN_OK)
		return tern_error(w->ctx, rc, "%s: cannot build the header", w->path);
	return TERN_OK;
}

static int write_all(tern_writer *w, int fd, const void *p, size_t n)
{
	const uint8_t *c = p;
	while (n) {
		ssize_t k = write(fd, c, n > (1u << 30) ? (1u << 30) : n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return tern_error(w->ctx, TERN_E_IO, "%s: write failed: %s", w->tmp,
					  k < 0 ? strerror(errno) : "no progress");
		c += k;
		n -= (size_t)k;
	}
	return TERN_OK;
}

/* Report progress; the caller's nonzero answer cancels the write. */
static int report(tern_writer *w)
{
	if (w->progress && w->progress(w->progress_user, w->done, w->total) != 0)
		return tern_error(w->ctx, TERN_E_CANCELLED, "%s: cancelled after %llu of %llu bytes",
				  w->path, (unsigned long long)w->done,
				  (unsigned long long)w->total);
	return TERN_OK;
}

/* Progress chunk: small enough for a smooth bar, large enough to cost
 * nothing next to the write itself. */
#define PROGRESS_CHUNK ((size_t)16 << 20)

/* write_all, counting bytes and reporting progress every chunk. */
static int emit(tern_writer *w, int fd, const void *p, size_t n)
{
	const uint8_t *c = p;
	while (n) {
		size_t k = n < PROGRESS_CHUNK ? n : PROGRESS_CHUNK;
		int rc = write_all(w, fd, c, k);
		if (rc != TERN_OK)
			return rc;
		c += k;
		n -= k;
		w->done += k;
		if (n && (rc = report(w)) != TERN_OK)
			return rc;
	}
	return TERN_OK;
}

static int write_zeros(tern_writer *w, int fd, size_t n)
{
	static const uint8_t zeros[TERN_ALIGN];
	return emit(w, fd, zeros, n);
}

static int write_body(tern_writer *w, int fd, const char *json, size_t hlen, void *buf)
{
	uint8_t pre[TERN_PREAMBLE];
	memcpy(pre, "TERN", 4);
	uint32_t v = TERN_FILE_VERSION;
	uint64_t hl = hlen;
	memcpy(pre + 4, &v, 4); /* little-endian host (configure checks) */
	memcpy(pre + 8, &hl, 8);
	w->done = 0;
	int rc = report(w);
	if (rc == TERN_OK)
		rc = emit(w, fd, pre, sizeof pre);
	if (rc == TERN_OK)
		rc = emit(w, fd, json, hlen);
	if (rc == TERN_OK)
		rc = write_zeros(w, fd, (size_t)(align_up(TERN_PREAMBLE + hlen) - TERN_PREAMBLE - hlen));
	uint64_t pos = 0;
	for (size_t i = 0; i < w->n && rc == TERN_OK; i++) {
		wtensor *wt = &w->t[i];
		rc = write_zeros(w, fd, (size_t)(wt->offset - pos));
		const void *src = wt->t.data;
		if (rc == TERN_OK && wt->src == WSRC_FN) {
			tern_tensor desc = wt->t;
			desc.data = buf;
			rc = wt->fill(wt->user, &desc, buf);
			if (rc != TERN_OK)
				rc = tern_error(w->ctx, rc < 0 ? rc : TERN_E_INVALID,
						"%s: producing tensor '%s' failed (%s)", w->path,
						wt->t.name, tern_status_str(rc));
			src = buf;
		}
		if (rc == TERN_OK)
			rc = emit(w, fd, src, wt->t.nbytes);
		if (rc == TERN_OK)
			rc = report(w);
		pos = wt->offset + wt->t.nbytes;
	}
	if (rc == TERN_OK)
		rc = write_zeros(w, fd, (size_t)(align_up(pos) - pos));
	if (rc == TERN_OK && w->n == 0)
		rc = report(w);
	return rc;
}

int tern_writer_finish(tern_writer *w)
{
	int rc = writer_usable(w);
	if (rc != TERN_OK)
		return rc;
	w->spent = true;
	if (!w->arch)
		return tern_error(w->ctx, TERN_E_INVALID, "%s: no architecture set", w->path);
	/* Lay the data section out; the largest streamed tensor sizes the buffer. */
	uint64_t pos = 0;
	size_t buf_size = 0;
	for (size_t i = 0; i < w->n; i++) {
		pos = align_up(pos);
		w->t[i].offset = pos;
		if (__builtin_add_overflow(pos, (uint64_t)w->t[i].t.nbytes, &pos) ||
		    pos > UINT64_MAX - TERN_ALIGN)
			return tern_error(w->ctx, TERN_E_OVERFLOW, "%s: data section too large",
					  w->path);
		if (w->t[i].src == WSRC_FN && w->t[i].t.nbytes > buf_size)
			buf_size = w->t[i].t.nbytes;
	}
	char *json;
	if ((rc = build_header(w, &json)) != TERN_OK)
		return rc;
	size_t hlen = strlen(json);
	if (__builtin_add_overflow(align_up(TERN_PREAMBLE + (uint64_t)hlen), align_up(pos),
				   &w->total)) {
		free(json);
		return tern_error(w->ctx, TERN_E_OVERFLOW, "%s: file size overflows", w->path);
	}
	void *buf = NULL;
	if (buf_size && !(buf = tern_alloc(buf_size))) {
		free(json);
		return tern_error(w->ctx, TERN_E_NOMEM, "%s: out of memory (%zu-byte buffer)",
				  w->path, buf_size);
	}
	int fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = tern_error(w->ctx, TERN_E_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
	} else {
		rc = write_body(w, fd, json, hlen, buf);
		if (rc == TERN_OK && fsync(fd) != 0)
			rc = tern_error(w->ctx, TERN_E_IO, "%s: fsync failed: %s", w->tmp,
					strerror(errno));
		if (close(fd) != 0 && rc == TERN_OK)
			rc = tern_error(w->ctx, TERN_E_IO, "%s: close failed: %s", w->tmp,
					strerror(errno));
		if (rc == TERN_OK && rename(w->tmp, w->path) != 0)
			rc = tern_error(w->ctx, TERN_E_IO, "%s: cannot rename onto %s: %s", w->tmp,
					w->path, strerror(errno));
		if (rc != TERN_OK)
			unlink(w->tmp);
	}
	tern_free(buf);
	free(json);
	return rc;
}
