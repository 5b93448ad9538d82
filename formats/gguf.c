/*
 * gguf.c: reader of GGUF v2 and v3 files (llama.cpp's model format and
 * bitnet.cpp's fork of it). A bounds-checked cursor walks the header, the
 * key/value metadata (into a tern_meta tree under the GGUF keys) and the
 * tensor table; every tensor's byte range is checked before anything is
 * built. F32, F16 and BF16 tensors are used in place; Q8_0 is dequantized
 * to F32; TQ1_0, TQ2_0 and I2_S are converted exactly into tern's T3/T2
 * layouts. docs/FORMAT.md ("GGUF and safetensors") states the rules.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "formats/format.h"

/* GGUF metadata value types (the numbers are the file's). */
enum {
	GGUF_U8 = 0,
	GGUF_I8 = 1,
	GGUF_U16 = 2,
	GGUF_I16 = 3,
	GGUF_U32 = 4,
	GGUF_I32 = 5,
	GGUF_F32 = 6,
	GGUF_BOOL = 7,
	GGUF_STRING = 8,
	GGUF_ARRAY = 9,
	GGUF_U64 = 10,
	GGUF_I64 = 11,
	GGUF_F64 = 12,
	GGUF_NTYPES = 13,
};

/* ggml tensor type ids read here (ggml.h; I2_S is bitnet.cpp's). */
enum {
	GGML_F32 = 0,
	GGML_F16 = 1,
	GGML_Q8_0 = 8,
	GGML_BF16 = 30,
	GGML_TQ1_0 = 34,
	GGML_TQ2_0 = 35,
	/* bitnet.cpp's I2_S. Upstream ggml used 36 for IQ4_NL_4_4, a repacked
	 * type it later dropped from files; see i2s_or_iq4nl() for the choice. */
	GGML_I2_S = 36,
};

#define GGUF_DEFAULT_ALIGNMENT 32
/* Nested arrays deeper than this are refused (real files use depth 1). */
#define GGUF_MAX_DEPTH 8
/* The GGUF spec bounds keys at 65535 bytes. */
#define GGUF_MAX_KEY 65535
#define GGML_MAX_DIMS 4
#define Q8_0_BLOCK 32
#define Q8_0_BYTES 34

typedef struct gcur {
	tern_ctx *ctx;
	const char *path;
	const uint8_t *p;
	size_t size;
	size_t pos;
} gcur;

typedef struct gguf_tinfo {
	const char *name; /* points into the mapping, not NUL-terminated */
	size_t name_len;
	uint32_t n_dims;
	uint64_t ne[GGML_MAX_DIMS]; /* ggml order: ne[0] varies fastest */
	uint32_t type;
	uint64_t offset; /* from the data section's start */
	uint64_t n;      /* elements */
	uint64_t nbytes;
} gguf_tinfo;

static const char *const vtype_names[GGUF_NTYPES] = {
	"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

/* ---- cursor ------------------------------------------------------------------------ */

static int need(gcur *c, size_t n, const char *what)
{
	if (n <= c->size - c->pos)
		return TERN_OK;
	return tern_error(c->ctx, TERN_E_FORMAT,
			  "%s: truncated: %s at offset %zu needs %zu bytes but only %zu are left",
			  c->path, what, c->pos, n, c->size - c->pos);
}

static int rd_u8(gcur *c, uint8_t *v, const char *what)
{
	int rc = need(c, 1, what);
	if (rc == TERN_OK)
		*v = c->p[c->pos++];
	return rc;
}

static int rd_u16(gcur *c, uint16_t *v, const char *what)
{
	int rc = need(c, 2, what);
	if (rc == TERN_OK) {
		*v = (uint16_t)(c->p[c->pos] | c->p[c->pos + 1] << 8);
		c->pos += 2;
	}
	return rc;
}

static int rd_u32(gcur *c, uint32_t *v, const char *what)
{
	int rc = need(c, 4, what);
	if (rc == TERN_OK) {
		*v = tern_rd_u32(c->p + c->pos);
		c->pos += 4;
	}
	return rc;
}

static int rd_u64(gcur *c, uint64_t *v, const char *what)
{
	int rc = need(c, 8, what);
	if (rc == TERN_OK) {
		*v = tern_rd_u64(c->p + c->pos);
		c->pos += 8;
	}
	return rc;
}

/* A declared length or count of `n` items of at least `unit` bytes each
 * must fit in what is left. A claim larger than the whole file is absurd
 * (TERN_E_OVERFLOW); a smaller one that runs past the end is truncation. */
static int check_claim(gcur *c, uint64_t n, size_t unit, size_t at, const char *what)
{
	size_t left = c->size - c->pos;
	if (n <= left / unit)
		return TERN_OK;
	if (n > c->size / unit)
		return tern_error(c->ctx, TERN_E_OVERFLOW,
				  "%s: %s at offset %zu claims %llu items of >= %zu bytes, more than "
				  "the whole file (%zu bytes) holds",
				  c->path, what, at, (unsigned long long)n, unit, c->size);
	return tern_error(c->ctx, TERN_E_FORMAT,
			  "%s: truncated: %s at offset %zu claims %llu items of >= %zu bytes but "
			  "only %zu bytes are left",
			  c->path, what, at, (unsigned long long)n, unit, left);
}

/* A GGUF string (u64 length, bytes); *s points into the mapping. */
static int rd_str(gcur *c, const char **s, size_t *len, const char *what)
{
	size_t at = c->pos;
	uint64_t n;
	int rc = rd_u64(c, &n, what);
	if (rc != TERN_OK)
		return rc;
	rc = check_claim(c, n, 1, at, what);
	if (rc != TERN_OK)
		return rc;
	*s = (const char *)c->p + c->pos;
	*len = (size_t)n;
	c->pos += (size_t)n;
	return TERN_OK;
}

/* ---- metadata values ------------------------------------------------------------------ */

/* Smallest encoding of one value of type t, for bounding array counts. */
static size_t min_value_bytes(uint32_t t)
{
	switch (t) {
	case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
	case GGUF_U16: case GGUF_I16: return 2;
	case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
	case GGUF_ARRAY: return 12; /* element type + count */
	default: return 8;          /* 64-bit scalars, string length */
	}
}

static int read_value(gcur *c, uint32_t type, int depth, const char *key, tern_meta **out);

static int read_array(gcur *c, int depth, const char *key, tern_meta **out)
{
	size_t at = c->pos;
	uint32_t et;
	uint64_t n;
	int rc = rd_u32(c, &et, "array element type");
	if (rc == TERN_OK)
		rc = rd_u64(c, &n, "array length");
	if (rc != TERN_OK)
		return rc;
	if (et >= GGUF_NTYPES)
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: key '%s': array at offset %zu has unknown element type %u", c->path,
				  key, at, et);
	if (et == GGUF_ARRAY && depth + 1 >= GGUF_MAX_DEPTH)
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: key '%s': arrays nested deeper than %d levels at offset %zu",
				  c->path, key, GGUF_MAX_DEPTH, at);
	char what[48];
	snprintf(what, sizeof what, "array of %s", vtype_names[et]);
	rc = check_claim(c, n, min_value_bytes(et), at, what);
	if (rc != TERN_OK)
		return rc;
	tern_meta *arr = tern_meta_new_array();
	if (!arr)
		return tern_error(c->ctx, TERN_E_NOMEM, "%s: out of memory", c->path);
	for (uint64_t i = 0; i < n; i++) {
		tern_meta *item;
		rc = read_value(c, et, depth + 1, key, &item);
		if (rc == TERN_OK && tern_meta_append(arr, item) != TERN_OK)
			rc = tern_error(c->ctx, TERN_E_NOMEM, "%s: out of memory", c->path);
		if (rc != TERN_OK) {
			tern_meta_free(arr);
			return rc;
		}
	}
	*out = arr;
	return TERN_OK;
}

static int read_value(gcur *c, uint32_t type, int depth, const char *key, tern_meta **out)
{
	tern_meta *m = NULL;
	int rc = TERN_OK;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	*out = NULL;
	switch (type) {
	case GGUF_U8:
		if ((rc = rd_u8(c, &u8, "u8 value")) == TERN_OK)
			m = tern_meta_new_uint(u8);
		break;
	case GGUF_I8:
		if ((rc = rd_u8(c, &u8, "i8 value")) == TERN_OK)
			m = tern_meta_new_int((int8_t)u8);
		break;
	case GGUF_U16:
		if ((rc = rd_u16(c, &u16, "u16 value")) == TERN_OK)
			m = tern_meta_new_uint(u16);
		break;
	case GGUF_I16:
		if ((rc = rd_u16(c, &u16, "i16 value")) == TERN_OK)
			m = tern_meta_new_int((int16_t)u16);
		break;
	case GGUF_U32:
		if ((rc = rd_u32(c, &u32, "u32 value")) == TERN_OK)
			m = tern_meta_new_uint(u32);
		break;
	case GGUF_I32:
		if ((rc = rd_u32(c, &u32, "i32 value")) == TERN_OK)
			m = tern_meta_new_int((int32_t)u32);
		break;
	case GGUF_U64:
		if ((rc = rd_u64(c, &u64, "u64 value")) == TERN_OK)
			m = tern_meta_new_uint(u64);
		break;
	case GGUF_I64:
		if ((rc = rd_u64(c, &u64, "i64 value")) == TERN_OK)
			m = tern_meta_new_int((int64_t)u64);
		break;
	case GGUF_F32:
		if ((rc = rd_u32(c, &u32, "f32 value")) == TERN_OK) {
			float f;
			memcpy(&f, &u32, sizeof f);
			m = tern_meta_new_double(f);
		}
		break;
	case GGUF_F64:
		if ((rc = rd_u64(c, &u64, "f64 value")) == TERN_OK) {
			double d;
			memcpy(&d, &u64, sizeof d);
			m = tern_meta_new_double(d);
		}
		break;
	case GGUF_BOOL:
		if ((rc = rd_u8(c, &u8, "bool value")) != TERN_OK)
			break;
		if (u8 > 1)
			return tern_error(c->ctx, TERN_E_FORMAT,
					  "%s: key '%s': bool at offset %zu is %u (expected 0 or 1)",
					  c->path, key, c->pos - 1, u8);
		m = tern_meta_new_bool(u8 != 0);
		break;
	case GGUF_STRING: {
		const char *s;
		size_t len;
		if ((rc = rd_str(c, &s, &len, "string value")) == TERN_OK)
			m = tern_meta_new_string(s, len);
		break;
	}
	case GGUF_ARRAY:
		return read_array(c, depth, key, out);
	default:
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: key '%s': unknown value type %u at offset %zu", c->path, key,
				  type, c->pos - 4);
	}
	if (rc != TERN_OK)
		return rc;
	if (!m)
		return tern_error(c->ctx, TERN_E_NOMEM, "%s: out of memory", c->path);
	*out = m;
	return TERN_OK;
}

/* One key/value pair into the root object. Keys are copied with a NUL. */
static int read_kv(gcur *c, tern_meta *root, uint64_t index)
{
	size_t at = c->pos;
	const char *k;
	size_t klen;
	int rc = rd_str(c, &k, &klen, "metadata key");
	if (rc != TERN_OK)
		return rc;
	if (klen == 0 || klen > GGUF_MAX_KEY)
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: metadata key %llu at offset %zu has length %zu (expected 1 to %d)",
				  c->path, (unsigned long long)index, at, klen, GGUF_MAX_KEY);
	if (memchr(k, '\0', klen) || !tern_utf8_valid(k, klen))
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: metadata key %llu at offset %zu is not NUL-free UTF-8", c->path,
				  (unsigned long long)index, at);
	char *key = malloc(klen + 1);
	if (!key)
		return tern_error(c->ctx, TERN_E_NOMEM, "%s: out of memory", c->path);
	memcpy(key, k, klen);
	key[klen] = '\0';
	uint32_t type;
	tern_meta *v = NULL;
	rc = rd_u32(c, &type, "metadata value type");
	if (rc == TERN_OK)
		rc = read_value(c, type, 0, key, &v);
	if (rc == TERN_OK) {
		size_t before = tern_meta_count(root);
		if (tern_meta_set(root, key, v) != TERN_OK)
			rc = tern_error(c->ctx, TERN_E_NOMEM, "%s: out of memory", c->path);
		else if (tern_meta_count(root) == before)
			rc = tern_error(c->ctx, TERN_E_FORMAT,
					"%s: metadata key '%.200s' appears twice (second at offset %zu)",
					c->path, key, at);
	}
	free(key);
	return rc;
}

/* ---- tensor table ----------------------------------------------------------------------- */

/* Bytes of n elements of a ggml type with rows of ne0; 0 if unknown. */
static int type_bytes(gcur *c, const gguf_tinfo *t, uint64_t *out)
{
	uint64_t n = t->n, ne0 = t->ne[0];
	uint64_t block = 1, bb;
	const char *tn;
	switch (t->type) {
	case GGML_F32: bb = 4; tn = "F32"; break;
	case GGML_F16: bb = 2; tn = "F16"; break;
	case GGML_BF16: bb = 2; tn = "BF16"; break;
	case GGML_Q8_0: block = Q8_0_BLOCK; bb = Q8_0_BYTES; tn = "Q8_0"; break;
	case GGML_TQ1_0: block = 256; bb = 54; tn = "TQ1_0"; break;
	case GGML_TQ2_0: block = 256; bb = 66; tn = "TQ2_0"; break;
	case GGML_I2_S: block = 128; bb = 0; tn = "I2_S"; break;
	default:
		return tern_error(c->ctx, TERN_E_UNSUPPORTED,
				  "%s: tensor '%.*s' has ggml type %u, which tern does not read "
				  "(F32, F16, BF16, Q8_0, TQ1_0, TQ2_0 and I2_S are)",
				  c->path, (int)TERN_MIN(t->name_len, 200), t->name, t->type);
	}
	if (ne0 % block != 0)
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: tensor '%.*s': %s rows of %llu elements are not a multiple of "
				  "its block of %llu",
				  c->path, (int)TERN_MIN(t->name_len, 200), t->name, tn,
				  (unsigned long long)ne0, (unsigned long long)block);
	if (t->type == GGML_I2_S) {
		/* 2 bits per weight, then one f32 scale padded to 32 bytes. */
		*out = n / 4 + 32;
		return TERN_OK;
	}
	if (__builtin_mul_overflow(n / block, bb, out))
		return tern_error(c->ctx, TERN_E_OVERFLOW, "%s: tensor '%.*s': byte size overflows",
				  c->path, (int)TERN_MIN(t->name_len, 200), t->name);
	return TERN_OK;
}

static int read_tinfo(gcur *c, gguf_tinfo *t, uint64_t index)
{
	size_t at = c->pos;
	int rc = rd_str(c, &t->name, &t->name_len, "tensor name");
	if (rc == TERN_OK)
		rc = rd_u32(c, &t->n_dims, "tensor dimension count");
	if (rc != TERN_OK)
		return rc;
	int nl = (int)TERN_MIN(t->name_len, 200);
	if (t->n_dims < 1 || t->n_dims > GGML_MAX_DIMS)
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: tensor %llu '%.*s' at offset %zu has %u dimensions (expected 1 "
				  "to %d)",
				  c->path, (unsigned long long)index, nl, t->name, at, t->n_dims,
				  GGML_MAX_DIMS);
	t->n = 1;
	for (uint32_t d = 0; d < t->n_dims; d++) {
		if ((rc = rd_u64(c, &t->ne[d], "tensor dimension")) != TERN_OK)
			return rc;
		if (t->ne[d] == 0 || t->ne[d] > INT64_MAX)
			return tern_error(c->ctx, TERN_E_FORMAT,
					  "%s: tensor '%.*s': dimension %u is %llu (expected 1 to "
					  "2^63-1)",
					  c->path, nl, t->name, d, (unsigned long long)t->ne[d]);
		if (__builtin_mul_overflow(t->n, t->ne[d], &t->n) || t->n > INT64_MAX)
			return tern_error(c->ctx, TERN_E_OVERFLOW,
					  "%s: tensor '%.*s': element count overflows", c->path, nl,
					  t->name);
	}
	rc = rd_u32(c, &t->type, "tensor type");
	if (rc == TERN_OK)
		rc = rd_u64(c, &t->offset, "tensor offset");
	return rc;
}

/* Type 36 is I2_S in bitnet.cpp and was IQ4_NL_4_4 (4.5 bits per weight,
 * 72 bytes per 128) in upstream ggml for a while. The two differ by size:
 * I2_S needs n/4 + 32 bytes, IQ4_NL_4_4 9n/16. A file whose architecture
 * is a BitNet one is taken as I2_S; otherwise the room up to the next
 * tensor (or the end of the data) must be too small for IQ4_NL_4_4. */
static int i2s_or_iq4nl(gcur *c, const gguf_tinfo *t, uint64_t room, const char *arch)
{
	if (strncmp(arch, "bitnet", 6) == 0)
		return TERN_OK;
	uint64_t iq4 = t->n / 128 * 72;
	if (room < iq4)
		return TERN_OK;
	return tern_error(c->ctx, TERN_E_UNSUPPORTED,
			  "%s: tensor '%.*s' has ggml type 36 and room for %llu bytes, enough for "
			  "upstream IQ4_NL_4_4 (%llu bytes): tern reads type 36 only as "
			  "bitnet.cpp's I2_S (%llu bytes)",
			  c->path, (int)TERN_MIN(t->name_len, 200), t->name,
			  (unsigned long long)room, (unsigned long long)iq4,
			  (unsigned long long)t->nbytes);
}

static int ext_offset_cmp(const void *a, const void *b)
{
	const tern_extent *x = a, *y = b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* ---- conversion into tern tensors ------------------------------------------------------------ */

static float f16_at(const uint8_t *p)
{
	return tern_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

/* Q8_0 blocks (f16 d, int8 q[32]) to floats d * q. */
static void q8_0_to_f32(const uint8_t *src, float *dst, uint64_t n)
{
	for (uint64_t b = 0; b < n / Q8_0_BLOCK; b++) {
		const uint8_t *blk = src + b * Q8_0_BYTES;
		float d = f16_at(blk);
		for (int i = 0; i < Q8_0_BLOCK; i++)
			dst[b * Q8_0_BLOCK + (uint64_t)i] = d * (float)(int8_t)blk[2 + i];
	}
}

static int prefix_error(gcur *c, int rc, const gguf_tinfo *t)
{
	char detail[TERN_ERRMSG_MAX];
	snprintf(detail, sizeof detail, "%s", tern_ctx_errmsg(c->ctx));
	return tern_error(c->ctx, rc == TERN_E_INVALID ? TERN_E_FORMAT : rc,
			  "%s: tensor '%.*s': %s", c->path, (int)TERN_MIN(t->name_len, 200),
			  t->name, detail);
}

static int add_one(gcur *c, tern_file_builder *b, const gguf_tinfo *t, const uint8_t *src)
{
	/* tern shapes are row-major: the reverse of ggml's ne[]. */
	int nd = (int)t->n_dims;
	int64_t shape[GGML_MAX_DIMS];
	for (int d = 0; d < nd; d++)
		shape[d] = (int64_t)t->ne[nd - 1 - d];
	int64_t cols = (int64_t)t->ne[0];
	int64_t rows = (int64_t)(t->n / t->ne[0]);
	size_t nbytes = (size_t)t->nbytes;

	if (t->type == GGML_F32 || t->type == GGML_F16 || t->type == GGML_BF16) {
		tern_dtype dt = t->type == GGML_F32 ? TERN_DTYPE_F32
			      : t->type == GGML_F16 ? TERN_DTYPE_F16 : TERN_DTYPE_BF16;
		size_t esize = t->type == GGML_F32 ? 4 : 2;
		const void *data = src;
		/* An alignment below the element size (general.alignment 1 or 2)
		 * leaves data unaligned for kernels: copy it then. */
		if ((uintptr_t)src % esize != 0) {
			void *copy = tern_fb_alloc(b, nbytes);
			if (!copy)
				return TERN_E_NOMEM;
			memcpy(copy, src, nbytes);
			data = copy;
		}
		int rc = tern_fb_add_tensor(b, t->name, t->name_len, dt, nd, shape, NULL, data,
					    nbytes);
		if (rc == TERN_OK && data != src)
			tern_fb_set_source(b, NULL, src, nbytes);
		return rc;
	}
	if (t->type == GGML_Q8_0) {
		/* tern has no Q8_0 dtype: dequantize (exact: d * q in float). */
		size_t fbytes;
		if (tern_size_mul((size_t)t->n, sizeof(float), &fbytes) != TERN_OK)
			return tern_error(c->ctx, TERN_E_OVERFLOW, "%s: tensor '%.*s' too large",
					  c->path, (int)TERN_MIN(t->name_len, 200), t->name);
		float *dst = tern_fb_alloc(b, fbytes);
		if (!dst)
			return TERN_E_NOMEM;
		q8_0_to_f32(src, dst, t->n);
		int rc = tern_fb_add_tensor(b, t->name, t->name_len, TERN_DTYPE_F32, nd, shape, NULL,
					    dst, fbytes);
		if (rc == TERN_OK)
			tern_fb_set_source(b, "q8_0", src, nbytes);
		return rc;
	}
	tern_foreign_type ft = t->type == GGML_TQ1_0 ? TERN_FOREIGN_TQ1_0
			     : t->type == GGML_TQ2_0 ? TERN_FOREIGN_TQ2_0 : TERN_FOREIGN_I2_S;
	/* TQ1_0 is base 3 like T3; the 2-bit types go to T2. */
	tern_dtype dt = ft == TERN_FOREIGN_TQ1_0 ? TERN_DTYPE_T3 : TERN_DTYPE_T2;
	tern_tensor *out;
	int rc = tern_foreign_import(c->ctx, ft, src, nbytes, rows, cols, dt, &out);
	if (rc != TERN_OK)
		return prefix_error(c, rc, t);
	/* The import is a rows x cols matrix; the file's shape has the same
	 * row-major layout, so only the dims change. */
	out->n_dims = nd;
	for (int d = 0; d < TERN_MAX_DIMS; d++)
		out->shape[d] = d < nd ? shape[d] : 0;
	rc = tern_fb_adopt_tensor(b, t->name, t->name_len, out);
	if (rc == TERN_OK)
		tern_fb_set_source(b, ft == TERN_FOREIGN_TQ1_0   ? "tq1_0"
				      : ft == TERN_FOREIGN_TQ2_0 ? "tq2_0"
								 : "i2_s",
				   src, nbytes);
	return rc;
}

/* ---- the reader ------------------------------------------------------------------------- */

static int read_header(gcur *c, uint32_t *version, uint64_t *n_tensors, uint64_t *n_kv)
{
	if (c->size < 4 || memcmp(c->p, "GGUF", 4) != 0)
		return tern_error(c->ctx, TERN_E_FORMAT, "%s: not a GGUF file (bad magic)", c->path);
	c->pos = 4;
	int rc = rd_u32(c, version, "version");
	if (rc != TERN_OK)
		return rc;
	if (*version != 2 && *version != 3) {
		if (*version != 0 && (*version & 0xFFFF) == 0)
			return tern_error(c->ctx, TERN_E_UNSUPPORTED,
					  "%s: big-endian GGUF (version field %08x): tern reads "
					  "little-endian files only",
					  c->path, *version);
		return tern_error(c->ctx, TERN_E_UNSUPPORTED,
				  "%s: GGUF version %u: tern reads versions 2 and 3", c->path,
				  *version);
	}
	size_t at = c->pos;
	rc = rd_u64(c, n_tensors, "tensor count");
	if (rc == TERN_OK)
		rc = rd_u64(c, n_kv, "metadata count");
	if (rc != TERN_OK)
		return rc;
	/* Smallest key/value: u64 key length, a 1-byte key, u32 type, 1 byte. */
	rc = check_claim(c, *n_kv, 14, at + 8, "metadata count");
	if (rc != TERN_OK)
		return rc;
	/* Smallest tensor info: name length, 1 byte, n_dims, one dim, type, offset. */
	return check_claim(c, *n_tensors, 33, at, "tensor count");
}

static int read_alignment(gcur *c, const tern_meta *root, uint64_t *align)
{
	const tern_meta *m = tern_meta_get(root, "general.alignment");
	*align = GGUF_DEFAULT_ALIGNMENT;
	if (!m)
		return TERN_OK;
	uint64_t a;
	if (tern_meta_type_of(m) != TERN_META_UINT || tern_meta_as_uint(m, &a) != TERN_OK)
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: general.alignment is not an unsigned integer", c->path);
	if (a == 0 || (a & (a - 1)) != 0 || a > (1u << 30))
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: general.alignment %llu is not a power of two up to 2^30",
				  c->path, (unsigned long long)a);
	*align = a;
	return TERN_OK;
}

static int read_tensors(gcur *c, tern_file_builder *b, gguf_tinfo *ti, uint64_t nt,
			uint64_t align, const char *arch)
{
	int rc;
	for (uint64_t i = 0; i < nt; i++)
		if ((rc = read_tinfo(c, &ti[i], i)) != TERN_OK)
			return rc;
	/* The data section starts at the next multiple of the alignment; a file
	 * without tensors may end before it. */
	uint64_t data_start = ((uint64_t)c->pos + align - 1) / align * align;
	uint64_t data_size = data_start <= c->size ? c->size - data_start : 0;
	if (nt > 0 && data_start > c->size)
		return tern_error(c->ctx, TERN_E_FORMAT,
				  "%s: truncated: the data section would start at %llu, past the end "
				  "(%zu bytes)",
				  c->path, (unsigned long long)data_start, c->size);
	if (nt == 0)
		return TERN_OK;
	tern_extent *ext = calloc((size_t)nt, sizeof *ext);
	char **names = calloc((size_t)nt, sizeof *names);
	if (!ext || !names) {
		free(ext);
		free(names);
		return tern_error(c->ctx, TERN_E_NOMEM, "%s: out of memory", c->path);
	}
	rc = TERN_OK;
	for (uint64_t i = 0; i < nt && rc == TERN_OK; i++) {
		gguf_tinfo *t = &ti[i];
		int nl = (int)TERN_MIN(t->name_len, 200);
		rc = type_bytes(c, t, &t->nbytes);
		if (rc == TERN_OK && t->offset % align != 0)
			rc = tern_error(c->ctx, TERN_E_FORMAT,
					"%s: tensor '%.*s': offset %llu is not a multiple of the "
					"alignment %llu",
					c->path, nl, t->name, (unsigned long long)t->offset,
					(unsigned long long)align);
		if (rc != TERN_OK)
			break;
		names[i] = malloc((size_t)nl + 1);
		if (!names[i]) {
			rc = tern_error(c->ctx, TERN_E_NOMEM, "%s: out of memory", c->path);
			break;
		}
		memcpy(names[i], t->name, (size_t)nl);
		names[i][nl] = '\0';
		ext[i] = (tern_extent){ names[i], t->offset, t->nbytes };
	}
	if (rc == TERN_OK)
		rc = tern_extents_check(c->ctx, c->path, ext, (size_t)nt, data_size, "data section");
	/* Extents are now sorted and disjoint, so offsets are unique among
	 * non-empty tensors: the next extent bounds the room of a type-36 one. */
	for (uint64_t i = 0; i < nt && rc == TERN_OK; i++) {
		if (ti[i].type != GGML_I2_S)
			continue;
		tern_extent key = { NULL, ti[i].offset, 0 };
		tern_extent *e = bsearch(&key, ext, (size_t)nt, sizeof *ext, ext_offset_cmp);
		size_t k = e ? (size_t)(e - ext) : 0;
		uint64_t end = k + 1 < nt ? ext[k + 1].offset : data_size;
		rc = i2s_or_iq4nl(c, &ti[i], end - ti[i].offset, arch);
	}
	for (uint64_t i = 0; i < nt; i++)
		free(names[i]);
	free(names);
	free(ext);
	for (uint64_t i = 0; i < nt && rc == TERN_OK; i++)
		rc = add_one(c, b, &ti[i], c->p + data_start + ti[i].offset);
	return rc;
}

int tern_gguf_open(tern_ctx *ctx, const uint8_t *map, size_t size, tern_file_builder *b)
{
	gcur c = { ctx, tern_fb_path(b), map, size, 0 };
	uint32_t version;
	uint64_t nt, nkv;
	int rc = read_header(&c, &version, &nt, &nkv);
	if (rc != TERN_OK)
		return rc;
	tern_fb_set_version(b, version);
	tern_meta *root = tern_fb_meta(b);
	for (uint64_t i = 0; i < nkv; i++)
		if ((rc = read_kv(&c, root, i)) != TERN_OK)
			return rc;
	const tern_meta *am = tern_meta_get(root, "general.architecture");
	const char *arch = "";
	if (am) {
		size_t alen;
		arch = tern_meta_as_string(am, &alen);
		if (!arch || strlen(arch) != alen)
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: general.architecture is not a NUL-free string", c.path);
	}
	if ((rc = tern_fb_set_architecture(b, arch)) != TERN_OK)
		return rc;
	uint64_t align;
	if ((rc = read_alignment(&c, root, &align)) != TERN_OK)
		return rc;
	gguf_tinfo *ti = NULL;
	if (nt > 0) {
		ti = calloc((size_t)nt, sizeof *ti);
		if (!ti)
			return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory for %llu tensors", c.path,
					  (unsigned long long)nt);
	}
	rc = read_tensors(&c, b, ti, nt, align, arch);
	free(ti);
	return rc;
}
