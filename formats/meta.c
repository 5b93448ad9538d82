/*
 * meta.c: the metadata tree (tern_meta) every model file exposes: typed
 * values, dotted-path lookup, JSON in (through json-c, privately) and out.
 * Large objects (tokenizer vocabularies) get a hash index so lookups stay
 * O(1); small ones are searched linearly.
 */
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "formats/format.h"

/* Objects with at least this many keys get a hash index. */
#define META_HASH_MIN 16
/* Nesting limit for JSON input: headers are shallow, and json-c recurses. */
#define META_JSON_DEPTH 64

struct tern_meta {
	tern_meta_type type;
	union {
		bool b;
		int64_t i;
		uint64_t u;
		double d;
		struct {
			char *s; /* NUL-terminated, len bytes before the NUL */
			size_t len;
		} str;
		struct {
			tern_meta **items;
			size_t n, cap;
		} arr;
		struct {
			char **keys;
			tern_meta **vals;
			size_t n, cap;
			size_t *slots; /* index + 1 per slot, 0 = empty; hcap slots */
			size_t hcap;
		} obj;
	} v;
};

static tern_meta *meta_alloc(tern_meta_type type)
{
	tern_meta *m = calloc(1, sizeof *m);
	if (m)
		m->type = type;
	return m;
}

tern_meta *tern_meta_new_null(void)
{
	return meta_alloc(TERN_META_NULL);
}

tern_meta *tern_meta_new_bool(bool v)
{
	tern_meta *m = meta_alloc(TERN_META_BOOL);
	if (m)
		m->v.b = v;
	return m;
}

tern_meta *tern_meta_new_int(int64_t v)
{
	tern_meta *m = meta_alloc(TERN_META_INT);
	if (m)
		m->v.i = v;
	return m;
}

tern_meta *tern_meta_new_uint(uint64_t v)
{
	tern_meta *m = meta_alloc(TERN_META_UINT);
	if (m)
		m->v.u = v;
	return m;
}

tern_meta *tern_meta_new_double(double v)
{
	tern_meta *m = meta_alloc(TERN_META_DOUBLE);
	if (m)
		m->v.d = v;
	return m;
}

tern_meta *tern_meta_new_string(const char *s, size_t len)
{
	if (len == SIZE_MAX || (!s && len))
		return NULL;
	tern_meta *m = meta_alloc(TERN_META_STRING);
	if (!m)
		return NULL;
	m->v.str.s = malloc(len + 1);
	if (!m->v.str.s) {
		free(m);
		return NULL;
	}
	if (len)
		memcpy(m->v.str.s, s, len);
	m->v.str.s[len] = '\0';
	m->v.str.len = len;
	return m;
}

tern_meta *tern_meta_new_array(void)
{
	return meta_alloc(TERN_META_ARRAY);
}

tern_meta *tern_meta_new_object(void)
{
	return meta_alloc(TERN_META_OBJECT);
}

void tern_meta_free(tern_meta *m)
{
	if (!m)
		return;
	switch (m->type) {
	case TERN_META_STRING:
		free(m->v.str.s);
		break;
	case TERN_META_ARRAY:
		for (size_t i = 0; i < m->v.arr.n; i++)
			tern_meta_free(m->v.arr.items[i]);
		free(m->v.arr.items);
		break;
	case TERN_META_OBJECT:
		for (size_t i = 0; i < m->v.obj.n; i++) {
			free(m->v.obj.keys[i]);
			tern_meta_free(m->v.obj.vals[i]);
		}
		free(m->v.obj.keys);
		free(m->v.obj.vals);
		free(m->v.obj.slots);
		break;
	default:
		break;
	}
	free(m);
}

/* ---- object index --------------------------------------------------------- */

static uint64_t key_hash(const char *k, size_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)k[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void index_insert(tern_meta *o, size_t idx)
{
	const char *k = o->v.obj.keys[idx];
	size_t mask = o->v.obj.hcap - 1;
	size_t s = (size_t)key_hash(k, strlen(k)) & mask;
	while (o->v.obj.slots[s])
		s = (s + 1) & mask;
	o->v.obj.slots[s] = idx + 1;
}

/* (Re)build the index so that it stays at most half full. */
static int index_rebuild(tern_meta *o, size_t want_n)
{
	size_t hcap = 64;
	while (hcap / 2 < want_n) {
		if (hcap > SIZE_MAX / 4)
			return TERN_E_NOMEM;
		hcap *= 2;
	}
	size_t *slots = calloc(hcap, sizeof *slots);
	if (!slots)
		return TERN_E_NOMEM;
	free(o->v.obj.slots);
	o->v.obj.slots = slots;
	o->v.obj.hcap = hcap;
	for (size_t i = 0; i < o->v.obj.n; i++)
		index_insert(o, i);
	return TERN_OK;
}

/* Index of key (len bytes) in object o, or SIZE_MAX. */
static size_t obj_find(const tern_meta *o, const char *key, size_t len)
{
	if (o->v.obj.slots) {
		size_t mask = o->v.obj.hcap - 1;
		size_t s = (size_t)key_hash(key, len) & mask;
		while (o->v.obj.slots[s]) {
			size_t i = o->v.obj.slots[s] - 1;
			const char *k = o->v.obj.keys[i];
			if (strncmp(k, key, len) == 0 && k[len] == '\0')
				return i;
			s = (s + 1) & mask;
		}
		return SIZE_MAX;
	}
	for (size_t i = 0; i < o->v.obj.n; i++) {
		const char *k = o->v.obj.keys[i];
		if (strncmp(k, key, len) == 0 && k[len] == '\0')
			return i;
	}
	return SIZE_MAX;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return TERN_OK;
	size_t ncap = *cap ? *cap : 4;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return TERN_E_NOMEM;
		ncap *= 2;
	}
	size_t bytes;
	if (tern_size_mul(ncap, elem, &bytes) != TERN_OK)
		return TERN_E_NOMEM;
	void *np = realloc(*p, bytes);
	if (!np)
		return TERN_E_NOMEM;
	*p = np;
	*cap = ncap;
	return TERN_OK;
}

int tern_meta_append(tern_meta *arr, tern_meta *item)
{
	if (!arr || arr->type != TERN_META_ARRAY || !item) {
		tern_meta_free(item);
		return TERN_E_INVALID;
	}
	if (grow((void **)&arr->v.arr.items, &arr->v.arr.cap, arr->v.arr.n + 1,
		 sizeof(tern_meta *)) != TERN_OK) {
		tern_meta_free(item);
		return TERN_E_NOMEM;
	}
	arr->v.arr.items[arr->v.arr.n++] = item;
	return TERN_OK;
}

/* Set key[0..len) of obj; takes ownership of value. */
static int obj_set(tern_meta *obj, const char *key, size_t len, tern_meta *value)
{
	size_t i = obj_find(obj, key, len);
	if (i != SIZE_MAX) {
		tern_meta_free(obj->v.obj.vals[i]);
		obj->v.obj.vals[i] = value;
		return TERN_OK;
	}
	size_t n = obj->v.obj.n;
	size_t kcap = obj->v.obj.cap;
	char *k = malloc(len + 1);
	if (!k)
		goto nomem;
	memcpy(k, key, len);
	k[len] = '\0';
	if (grow((void **)&obj->v.obj.keys, &kcap, n + 1, sizeof(char *)) != TERN_OK)
		goto nomem_k;
	kcap = obj->v.obj.cap;
	if (grow((void **)&obj->v.obj.vals, &kcap, n + 1, sizeof(tern_meta *)) != TERN_OK)
		goto nomem_k;
	obj->v.obj.cap = kcap;
	if ((n + 1 >= META_HASH_MIN && !obj->v.obj.slots) ||
	    (obj->v.obj.slots && n + 1 > obj->v.obj.hcap / 2)) {
		obj->v.obj.keys[n] = k;
		obj->v.obj.vals[n] = value;
		obj->v.obj.n = n + 1;
		if (index_rebuild(obj, 2 * (n + 1)) != TERN_OK) {
			obj->v.obj.n = n;
			goto nomem_k;
		}
		return TERN_OK;
	}
	obj->v.obj.keys[n] = k;
	obj->v.obj.vals[n] = value;
	obj->v.obj.n = n + 1;
	if (obj->v.obj.slots)
		index_insert(obj, n);
	return TERN_OK;
nomem_k:
	free(k);
nomem:
	tern_meta_free(value);
	return TERN_E_NOMEM;
}

int tern_meta_set(tern_meta *obj, const char *key, tern_meta *value)
{
	if (!obj || obj->type != TERN_META_OBJECT || !key || !value) {
		tern_meta_free(value);
		return TERN_E_INVALID;
	}
	return obj_set(obj, key, strlen(key), value);
}

int tern_meta_set_path(tern_meta *obj, const char *path, tern_meta *value)
{
	if (!obj || obj->type != TERN_META_OBJECT || !path || !*path || !value) {
		tern_meta_free(value);
		return TERN_E_INVALID;
	}
	const char *dot;
	while ((dot = strchr(path, '.')) != NULL) {
		size_t len = (size_t)(dot - path);
		if (len == 0) {
			tern_meta_free(value);
			return TERN_E_INVALID;
		}
		size_t i = obj_find(obj, path, len);
		tern_meta *next;
		if (i == SIZE_MAX) {
			next = tern_meta_new_object();
			if (!next) {
				tern_meta_free(value);
				return TERN_E_NOMEM;
			}
			int rc = obj_set(obj, path, len, next);
			if (rc != TERN_OK) {
				tern_meta_free(value);
				return rc;
			}
		} else {
			next = obj->v.obj.vals[i];
			if (next->type != TERN_META_OBJECT) {
				tern_meta_free(value);
				return TERN_E_INVALID;
			}
		}
		obj = next;
		path = dot + 1;
	}
	if (!*path) {
		tern_meta_free(value);
		return TERN_E_INVALID;
	}
	return obj_set(obj, path, strlen(path), value);
}

tern_meta *tern_meta_take(tern_meta *obj, const char *key)
{
	if (!obj || obj->type != TERN_META_OBJECT || !key)
		return NULL;
	size_t i = obj_find(obj, key, strlen(key));
	if (i == SIZE_MAX)
		return NULL;
	tern_meta *v = obj->v.obj.vals[i];
	free(obj->v.obj.keys[i]);
	size_t rest = obj->v.obj.n - i - 1;
	memmove(obj->v.obj.keys + i, obj->v.obj.keys + i + 1, rest * sizeof(char *));
	memmove(obj->v.obj.vals + i, obj->v.obj.vals + i + 1, rest * sizeof(tern_meta *));
	obj->v.obj.n--;
	if (obj->v.obj.slots) {
		/* Indices shifted: rebuilding in place cannot fail at the same size. */
		memset(obj->v.obj.slots, 0, obj->v.obj.hcap * sizeof(size_t));
		for (size_t j = 0; j < obj->v.obj.n; j++)
			index_insert(obj, j);
	}
	return v;
}

int tern_meta_copy(const tern_meta *m, tern_meta **out)
{
	*out = NULL;
	if (!m)
		return TERN_E_INVALID;
	tern_meta *c = NULL;
	switch (m->type) {
	case TERN_META_NULL: c = tern_meta_new_null(); break;
	case TERN_META_BOOL: c = tern_meta_new_bool(m->v.b); break;
	case TERN_META_INT: c = tern_meta_new_int(m->v.i); break;
	case TERN_META_UINT: c = tern_meta_new_uint(m->v.u); break;
	case TERN_META_DOUBLE: c = tern_meta_new_double(m->v.d); break;
	case TERN_META_STRING: c = tern_meta_new_string(m->v.str.s, m->v.str.len); break;
	case TERN_META_ARRAY:
		c = tern_meta_new_array();
		for (size_t i = 0; c && i < m->v.arr.n; i++) {
			tern_meta *item;
			int rc = tern_meta_copy(m->v.arr.items[i], &item);
			if (rc == TERN_OK)
				rc = tern_meta_append(c, item);
			if (rc != TERN_OK) {
				tern_meta_free(c);
				return rc;
			}
		}
		break;
	case TERN_META_OBJECT:
		c = tern_meta_new_object();
		for (size_t i = 0; c && i < m->v.obj.n; i++) {
			tern_meta *val;
			int rc = tern_meta_copy(m->v.obj.vals[i], &val);
			if (rc == TERN_OK)
				rc = tern_meta_set(c, m->v.obj.keys[i], val);
			if (rc != TERN_OK) {
				tern_meta_free(c);
				return rc;
			}
		}
		break;
	}
	if (!c)
		return TERN_E_NOMEM;
	*out = c;
	return TERN_OK;
}

/* ---- reading ----------------------------------------------------------------- */

tern_meta_type tern_meta_type_of(const tern_meta *m)
{
	return m ? m->type : TERN_META_NULL;
}

/* Parse a decimal array index; false unless all len bytes are digits. */
static bool parse_index(const char *s, size_t len, size_t *out)
{
	if (len == 0 || len > 19)
		return false;
	size_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (size_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

static const tern_meta *get_rec(const tern_meta *m, const char *path, size_t len)
{
	if (len == 0)
		return m;
	if (m->type == TERN_META_ARRAY) {
		const char *dot = memchr(path, '.', len);
		size_t clen = dot ? (size_t)(dot - path) : len;
		size_t idx;
		if (!parse_index(path, clen, &idx) || idx >= m->v.arr.n)
			return NULL;
		if (!dot)
			return m->v.arr.items[idx];
		return get_rec(m->v.arr.items[idx], dot + 1, len - clen - 1);
	}
	if (m->type != TERN_META_OBJECT)
		return NULL;
	/* Longest literal key first: the whole rest, then shorter prefixes
	 * ending before each dot, right to left. */
	size_t clen = len;
	for (;;) {
		size_t i = obj_find(m, path, clen);
		if (i != SIZE_MAX) {
			if (clen == len)
				return m->v.obj.vals[i];
			const tern_meta *r =
				get_rec(m->v.obj.vals[i], path + clen + 1, len - clen - 1);
			if (r)
				return r;
		}
		while (clen > 0 && path[clen - 1] != '.')
			clen--;
		if (clen <= 1)
			return NULL;
		clen--; /* drop the dot itself */
	}
}

const tern_meta *tern_meta_get(const tern_meta *m, const char *path)
{
	if (!m || !path)
		return NULL;
	return get_rec(m, path, strlen(path));
}

int tern_meta_as_bool(const tern_meta *m, bool *out)
{
	if (!m || m->type != TERN_META_BOOL)
		return TERN_E_INVALID;
	*out = m->v.b;
	return TERN_OK;
}

int tern_meta_as_int(const tern_meta *m, int64_t *out)
{
	if (!m)
		return TERN_E_INVALID;
	switch (m->type) {
	case TERN_META_INT:
		*out = m->v.i;
		return TERN_OK;
	case TERN_META_UINT:
		if (m->v.u > (uint64_t)INT64_MAX)
			return TERN_E_INVALID;
		*out = (int64_t)m->v.u;
		return TERN_OK;
	case TERN_META_DOUBLE:
		/* 2^63 is exactly representable; anything >= it does not fit. */
		if (!(m->v.d >= -9223372036854775808.0 && m->v.d < 9223372036854775808.0) ||
		    m->v.d != floor(m->v.d))
			return TERN_E_INVALID;
		*out = (int64_t)m->v.d;
		return TERN_OK;
	default:
		return TERN_E_INVALID;
	}
}

int tern_meta_as_uint(const tern_meta *m, uint64_t *out)
{
	if (!m)
		return TERN_E_INVALID;
	switch (m->type) {
	case TERN_META_INT:
		if (m->v.i < 0)
			return TERN_E_INVALID;
		*out = (uint64_t)m->v.i;
		return TERN_OK;
	case TERN_META_UINT:
		*out = m->v.u;
		return TERN_OK;
	case TERN_META_DOUBLE:
		if (!(m->v.d >= 0.0 && m->v.d < 18446744073709551616.0) ||
		    m->v.d != floor(m->v.d))
			return TERN_E_INVALID;
		*out = (uint64_t)m->v.d;
		return TERN_OK;
	default:
		return TERN_E_INVALID;
	}
}

int tern_meta_as_double(const tern_meta *m, double *out)
{
	if (!m)
		return TERN_E_INVALID;
	switch (m->type) {
	case TERN_META_INT: *out = (double)m->v.i; return TERN_OK;
	case TERN_META_UINT: *out = (double)m->v.u; return TERN_OK;
	case TERN_META_DOUBLE: *out = m->v.d; return TERN_OK;
	default: return TERN_E_INVALID;
	}
}

const char *tern_meta_as_string(const tern_meta *m, size_t *len)
{
	if (!m || m->type != TERN_META_STRING)
		return NULL;
	if (len)
		*len = m->v.str.len;
	return m->v.str.s;
}

int64_t tern_meta_get_int(const tern_meta *m, const char *path, int64_t def)
{
	int64_t v;
	return tern_meta_as_int(tern_meta_get(m, path), &v) == TERN_OK ? v : def;
}

double tern_meta_get_double(const tern_meta *m, const char *path, double def)
{
	double v;
	return tern_meta_as_double(tern_meta_get(m, path), &v) == TERN_OK ? v : def;
}

bool tern_meta_get_bool(const tern_meta *m, const char *path, bool def)
{
	bool v;
	return tern_meta_as_bool(tern_meta_get(m, path), &v) == TERN_OK ? v : def;
}

const char *tern_meta_get_string(const tern_meta *m, const char *path, const char *def)
{
	const char *s = tern_meta_as_string(tern_meta_get(m, path), NULL);
	return s ? s : def;
}

size_t tern_meta_count(const tern_meta *m)
{
	if (!m)
		return 0;
	if (m->type == TERN_META_ARRAY)
		return m->v.arr.n;
	if (m->type == TERN_META_OBJECT)
		return m->v.obj.n;
	return 0;
}

const tern_meta *tern_meta_item(const tern_meta *m, size_t i)
{
	if (!m)
		return NULL;
	if (m->type == TERN_META_ARRAY)
		return i < m->v.arr.n ? m->v.arr.items[i] : NULL;
	if (m->type == TERN_META_OBJECT)
		return i < m->v.obj.n ? m->v.obj.vals[i] : NULL;
	return NULL;
}

const char *tern_meta_key(const tern_meta *m, size_t i)
{
	if (!m || m->type != TERN_META_OBJECT || i >= m->v.obj.n)
		return NULL;
	return m->v.obj.keys[i];
}

/* ---- JSON in ------------------------------------------------------------------ */

static int from_jsonc(const struct json_object *j, tern_meta **out)
{
	tern_meta *m = NULL;
	switch (json_object_get_type(j)) {
	case json_type_null:
		m = tern_meta_new_null();
		break;
	case json_type_boolean:
		m = tern_meta_new_bool(json_object_get_boolean(j) != 0);
		break;
	case json_type_int: {
		/* json-c keeps large positive literals as uint64; get_int64
		 * saturates them at INT64_MAX. */
		int64_t v = json_object_get_int64(j);
		if (v == INT64_MAX && json_object_get_uint64(j) > (uint64_t)INT64_MAX)
			m = tern_meta_new_uint(json_object_get_uint64(j));
		else
			m = tern_meta_new_int(v);
		break;
	}
	case json_type_double:
		m = tern_meta_new_double(json_object_get_double(j));
		break;
	case json_type_string:
		m = tern_meta_new_string(json_object_get_string((struct json_object *)j),
					 (size_t)json_object_get_string_len(j));
		break;
	case json_type_array: {
		m = tern_meta_new_array();
		size_t n = json_object_array_length(j);
		for (size_t i = 0; m && i < n; i++) {
			tern_meta *item;
			int rc = from_jsonc(json_object_array_get_idx(j, i), &item);
			if (rc == TERN_OK)
				rc = tern_meta_append(m, item);
			if (rc != TERN_OK) {
				tern_meta_free(m);
				return rc;
			}
		}
		break;
	}
	case json_type_object: {
		m = tern_meta_new_object();
		if (!m)
			break;
		struct json_object_iterator it = json_object_iter_begin((struct json_object *)j);
		struct json_object_iterator end = json_object_iter_end(j);
		while (!json_object_iter_equal(&it, &end)) {
			tern_meta *val;
			int rc = from_jsonc(json_object_iter_peek_value(&it), &val);
			if (rc == TERN_OK)
				rc = tern_meta_set(m, json_object_iter_peek_name(&it), val);
			if (rc != TERN_OK) {
				tern_meta_free(m);
				return rc;
			}
			json_object_iter_next(&it);
		}
		break;
	}
	}
	if (!m)
		return TERN_E_NOMEM;
	*out = m;
	return TERN_OK;
}

int tern_meta_from_jsonc(tern_ctx *ctx, const void *jobj, tern_meta **out)
{
	*out = NULL;
	int rc = from_jsonc(jobj, out);
	if (rc != TERN_OK)
		return tern_error(ctx, rc, "out of memory converting JSON metadata");
	return TERN_OK;
}

int tern_meta_from_json(tern_ctx *ctx, const char *text, size_t len, tern_meta **out)
{
	*out = NULL;
	if (!text)
		return tern_error(ctx, TERN_E_INVALID, "JSON text is NULL");
	if (len > (size_t)INT_MAX - 1)
		return tern_error(ctx, TERN_E_OVERFLOW, "JSON text of %zu bytes is too long", len);
	const char *nul = memchr(text, '\0', len);
	if (nul)
		return tern_error(ctx, TERN_E_FORMAT, "JSON text contains a NUL byte at offset %zu",
				  (size_t)(nul - text));
	struct json_tokener *tok = json_tokener_new_ex(META_JSON_DEPTH);
	if (!tok)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory parsing JSON");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	struct json_object *j = json_tokener_parse_ex(tok, text, (int)len);
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t end = json_tokener_get_parse_end(tok);
	if (!j && jerr == json_tokener_continue) {
		/* a bare number ("4") is complete only once the tokener sees the end */
		j = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		end = len;
	}
	json_tokener_free(tok);
	if (!j || jerr != json_tokener_success) {
		json_object_put(j);
		/* json-c reports running out of input as either of these,
		 * depending on where it stopped. */
		if (jerr == json_tokener_continue || jerr == json_tokener_error_parse_eof)
			return tern_error(ctx, TERN_E_FORMAT, "JSON text ends early (%zu bytes)",
					  len);
		return tern_error(ctx, TERN_E_FORMAT, "JSON syntax error near byte %zu: %s", end,
				  json_tokener_error_desc(jerr));
	}
	for (size_t i = end; i < len; i++) {
		char c = text[i];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			json_object_put(j);
			return tern_error(ctx, TERN_E_FORMAT,
					  "JSON text has trailing bytes after the value at byte %zu",
					  i);
		}
	}
	int rc = tern_meta_from_jsonc(ctx, j, out);
	json_object_put(j);
	return rc;
}

/* ---- JSON out ----------------------------------------------------------------- */

typedef struct strbuf {
	char *p;
	size_t n, cap;
	bool oom;
} strbuf;

static void sb_put(strbuf *b, const char *s, size_t len)
{
	if (b->oom)
		return;
	size_t need;
	if (tern_size_add(b->n, len + 1, &need) != TERN_OK) {
		b->oom = true;
		return;
	}
	if (need > b->cap) {
		size_t ncap = b->cap ? b->cap : 256;
		while (ncap < need) {
			if (ncap > SIZE_MAX / 2) {
				b->oom = true;
				return;
			}
			ncap *= 2;
		}
		char *np = realloc(b->p, ncap);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = ncap;
	}
	memcpy(b->p + b->n, s, len);
	b->n += len;
	b->p[b->n] = '\0';
}

static void sb_puts(strbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void sb_string(strbuf *b, const char *s, size_t len)
{
	sb_put(b, "\"", 1);
	size_t run = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		sb_put(b, s + run, i - run);
		run = i + 1;
		char esc[8];
		switch (c) {
		case '"': sb_puts(b, "\\\""); break;
		case '\\': sb_puts(b, "\\\\"); break;
		case '\n': sb_puts(b, "\\n"); break;
		case '\r': sb_puts(b, "\\r"); break;
		case '\t': sb_puts(b, "\\t"); break;
		default:
			snprintf(esc, sizeof esc, "\\u%04x", c);
			sb_puts(b, esc);
			break;
		}
	}
	sb_put(b, s + run, len - run);
	sb_put(b, "\"", 1);
}

static void sb_indent(strbuf *b, bool pretty, int depth)
{
	if (!pretty)
		return;
	sb_put(b, "\n", 1);
	for (int i = 0; i < depth; i++)
		sb_put(b, "  ", 2);
}

static void to_json(strbuf *b, const tern_meta *m, bool pretty, int depth)
{
	char num[64];
	switch (m->type) {
	case TERN_META_NULL: sb_puts(b, "null"); break;
	case TERN_META_BOOL: sb_puts(b, m->v.b ? "true" : "false"); break;
	case TERN_META_INT:
		snprintf(num, sizeof num, "%lld", (long long)m->v.i);
		sb_puts(b, num);
		break;
	case TERN_META_UINT:
		snprintf(num, sizeof num, "%llu", (unsigned long long)m->v.u);
		sb_puts(b, num);
		break;
	case TERN_META_DOUBLE:
		/* JSON has no NaN or infinity. %.17g round-trips every double;
		 * a ".0" keeps integral values doubles when read back. */
		if (!isfinite(m->v.d)) {
			sb_puts(b, "null");
			break;
		}
		snprintf(num, sizeof num, "%.17g", m->v.d);
		sb_puts(b, num);
		if (!strpbrk(num, ".eE"))
			sb_puts(b, ".0");
		break;
	case TERN_META_STRING: sb_string(b, m->v.str.s, m->v.str.len); break;
	case TERN_META_ARRAY:
		sb_put(b, "[", 1);
		for (size_t i = 0; i < m->v.arr.n; i++) {
			if (i)
				sb_put(b, ",", 1);
			sb_indent(b, pretty, depth + 1);
			to_json(b, m->v.arr.items[i], pretty, depth + 1);
		}
		if (m->v.arr.n)
			sb_indent(b, pretty, depth);
		sb_put(b, "]", 1);
		break;
	case TERN_META_OBJECT:
		sb_put(b, "{", 1);
		for (size_t i = 0; i < m->v.obj.n; i++) {
			if (i)
				sb_put(b, ",", 1);
			sb_indent(b, pretty, depth + 1);
			sb_string(b, m->v.obj.keys[i], strlen(m->v.obj.keys[i]));
			sb_put(b, pretty ? ": " : ":", pretty ? 2 : 1);
			to_json(b, m->v.obj.vals[i], pretty, depth + 1);
		}
		if (m->v.obj.n)
			sb_indent(b, pretty, depth);
		sb_put(b, "}", 1);
		break;
	}
}

int tern_meta_to_json(tern_ctx *ctx, const tern_meta *m, bool pretty, char **out)
{
	*out = NULL;
	if (!m)
		return tern_error(ctx, TERN_E_INVALID, "no metadata value to serialize");
	strbuf b = { 0 };
	to_json(&b, m, pretty, 0);
	if (b.oom || !b.p) {
		free(b.p);
		return tern_error(ctx, TERN_E_NOMEM, "out of memory serializing metadata");
	}
	*out = b.p;
	return TERN_OK;
}
