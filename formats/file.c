/*
 * file.c: opening model files of any format: map the file, detect the
 * format by its first bytes, let the format's reader fill a builder, and
 * serve tensors and metadata from the result. Also the checks every
 * reader shares (names, sizes, extents), so each format reports the same
 * problem the same way.
 */
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "formats/format.h"
#include "formats/hf.h"

/* How a tensor is stored in the file, when the reader converted it. */
typedef struct tsource {
	const char *type; /* static name; NULL = as served */
	const void *data;
	size_t nbytes;
} tsource;

struct tern_file {
	tern_file_format format;
	uint32_t version;
	char *path;
	const uint8_t *map;
	size_t size;
	bool mapped; /* munmap on close (open_memory borrows instead) */
	char *arch;
	tern_meta *meta;
	tern_tensor *tensors;
	tsource *sources; /* parallel to tensors */
	size_t n_tensors, cap_tensors;
	size_t *name_slots; /* hash index over tensor names: index + 1, 0 = empty */
	size_t name_hcap;
	void **allocs; /* tern_fb_alloc blocks */
	size_t *alloc_sizes;
	size_t n_allocs, cap_allocs;
	tern_tensor **adopted;
	size_t n_adopted, cap_adopted;
	tern_hf *hf; /* a directory's checkpoint: its shards own the tensors */
};

struct tern_file_builder {
	tern_ctx *ctx;
	tern_file *f;
};

static const char *const format_names[TERN_FORMAT_COUNT] = { "tern", "gguf", "safetensors",
								"huggingface" };

/* ---- shared checks --------------------------------------------------------- */

bool tern_utf8_valid(const char *s, size_t len)
{
	return tern_utf8_check(s, len) == len;
}

size_t tern_utf8_check(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while (i < len) {
		unsigned char c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		size_t n;
		uint32_t cp;
		if (c >= 0xC2 && c <= 0xDF) {
			n = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			n = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return i;
		}
		if (len - i <= n)
			return i;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return i;
		i += n + 1;
	}
	return len;
}

static int extent_cmp(const void *a, const void *b)
{
	const tern_extent *x = a, *y = b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

int tern_extents_check(tern_ctx *ctx, const char *path, tern_extent *ext, size_t n,
		       uint64_t limit, const char *what)
{
	for (size_t i = 0; i < n; i++) {
		if (ext[i].offset > limit || ext[i].nbytes > limit - ext[i].offset)
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: tensor '%s': bytes [%llu, %llu + %llu) run past the "
					  "end of the %s (%llu bytes)",
					  path, ext[i].name, (unsigned long long)ext[i].offset,
					  (unsigned long long)ext[i].offset,
					  (unsigned long long)ext[i].nbytes, what,
					  (unsigned long long)limit);
	}
	if (n > 1)
		qsort(ext, n, sizeof *ext, extent_cmp);
	for (size_t i = 1; i < n; i++) {
		const tern_extent *a = &ext[i - 1], *b = &ext[i];
		if (b->offset < a->offset + a->nbytes)
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) "
					  "overlap in the %s",
					  path, a->name, (unsigned long long)a->offset,
					  (unsigned long long)(a->offset + a->nbytes), b->name,
					  (unsigned long long)b->offset,
					  (unsigned long long)(b->offset + b->nbytes), what);
	}
	return TERN_OK;
}

/* ---- name index ------------------------------------------------------------------ */

static uint64_t name_hash(const char *k, size_t len)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)k[i];
		h *= 1099511628211ull;
	}
	return h;
}

static void name_index_insert(tern_file *f, size_t idx)
{
	const char *k = f->tensors[idx].name;
	size_t mask = f->name_hcap - 1;
	size_t s = (size_t)name_hash(k, strlen(k)) & mask;
	while (f->name_slots[s])
		s = (s + 1) & mask;
	f->name_slots[s] = idx + 1;
}

static size_t name_find(const tern_file *f, const char *name, size_t len)
{
	if (!f->name_slots)
		return SIZE_MAX;
	size_t mask = f->name_hcap - 1;
	size_t s = (size_t)name_hash(name, len) & mask;
	while (f->name_slots[s]) {
		size_t i = f->name_slots[s] - 1;
		const char *k = f->tensors[i].name;
		if (strncmp(k, name, len) == 0 && k[len] == '\0')
			return i;
		s = (s + 1) & mask;
	}
	return SIZE_MAX;
}

/* Make room for one more tensor (array and index at most half full). */
static int reserve_tensor(tern_file *f)
{
	size_t need = f->n_tensors + 1;
	if (need > f->cap_tensors) {
		size_t ncap = f->cap_tensors ? f->cap_tensors * 2 : 16;
		size_t bytes;
		if (ncap < f->cap_tensors || tern_size_mul(ncap, sizeof(tern_tensor), &bytes))
			return TERN_E_NOMEM;
		tern_tensor *nt = realloc(f->tensors, bytes);
		if (!nt)
			return TERN_E_NOMEM;
		f->tensors = nt;
		tsource *ns = realloc(f->sources, ncap * sizeof *ns); /* smaller than bytes */
		if (!ns)
			return TERN_E_NOMEM;
		f->sources = ns;
		f->cap_tensors = ncap;
	}
	if (need > f->name_hcap / 2) {
		size_t hcap = f->name_hcap ? f->name_hcap * 2 : 32;
		if (hcap < f->name_hcap || hcap > SIZE_MAX / sizeof(size_t))
			return TERN_E_NOMEM;
		size_t *slots = calloc(hcap, sizeof *slots);
		if (!slots)
			return TERN_E_NOMEM;
		free(f->name_slots);
		f->name_slots = slots;
		f->name_hcap = hcap;
		for (size_t i = 0; i < f->n_tensors; i++)
			name_index_insert(f, i);
	}
	return TERN_OK;
}

/* ---- builder ------------------------------------------------------------------------ */

const char *tern_fb_path(const tern_file_builder *b)
{
	return b->f->path;
}

void tern_fb_set_version(tern_file_builder *b, uint32_t version)
{
	b->f->version = version;
}

int tern_fb_set_architecture(tern_file_builder *b, const char *arch)
{
	char *a = strdup(arch ? arch : "");
	if (!a)
		return tern_error(b->ctx, TERN_E_NOMEM, "%s: out of memory", b->f->path);
	free(b->f->arch);
	b->f->arch = a;
	return TERN_OK;
}

tern_meta *tern_fb_meta(tern_file_builder *b)
{
	return b->f->meta;
}

int tern_fb_set_meta(tern_file_builder *b, tern_meta *root)
{
	if (!root || tern_meta_type_of(root) != TERN_META_OBJECT) {
		tern_meta_free(root);
		return tern_error(b->ctx, TERN_E_INTERNAL, "%s: metadata root is not an object",
				  b->f->path);
	}
	tern_meta_free(b->f->meta);
	b->f->meta = root;
	return TERN_OK;
}

void *tern_fb_alloc(tern_file_builder *b, size_t bytes)
{
	tern_file *f = b->f;
	if (f->n_allocs == f->cap_allocs) {
		size_t ncap = f->cap_allocs ? f->cap_allocs * 2 : 8;
		void **na = realloc(f->allocs, ncap * sizeof *na);
		if (!na)
			goto nomem;
		f->allocs = na;
		size_t *ns = realloc(f->alloc_sizes, ncap * sizeof *ns);
		if (!ns)
			goto nomem;
		f->alloc_sizes = ns;
		f->cap_allocs = ncap;
	}
	void *p = tern_alloc(bytes);
	if (!p)
		goto nomem;
	memset(p, 0, bytes);
	f->allocs[f->n_allocs] = p;
	f->alloc_sizes[f->n_allocs] = bytes;
	f->n_allocs++;
	return p;
nomem:
	tern_error(b->ctx, TERN_E_NOMEM, "%s: out of memory allocating %zu bytes", f->path, bytes);
	return NULL;
}

/* True if [p, p+n) lies inside the mapping or one tern_fb_alloc block. */
static bool data_owned_by(const tern_file *f, const void *p, size_t n)
{
	uintptr_t a = (uintptr_t)p;
	uintptr_t m = (uintptr_t)f->map;
	if (a >= m && a - m <= f->size && n <= f->size - (a - m))
		return true;
	for (size_t i = 0; i < f->n_allocs; i++) {
		uintptr_t b = (uintptr_t)f->allocs[i];
		if (a >= b && a - b <= f->alloc_sizes[i] && n <= f->alloc_sizes[i] - (a - b))
			return true;
	}
	return false;
}

/* Prefix the message a core check left on ctx with the file and tensor.
 * Bad scales or shapes are a property of the file here, not of a call. */
static int rewrap(tern_ctx *ctx, int rc, const char *path, int nl, const char *name)
{
	char detail[TERN_ERRMSG_MAX];
	snprintf(detail, sizeof detail, "%s", tern_ctx_errmsg(ctx));
	return tern_error(ctx, rc == TERN_E_INVALID ? TERN_E_FORMAT : rc, "%s: tensor '%.*s': %s",
			  path, nl, name, detail);
}

/* Validate and append; data ownership is the caller's business. */
static int add_tensor(tern_file_builder *b, const char *name, size_t name_len, tern_dtype dtype,
		      int n_dims, const int64_t *shape, const tern_qparams *qp, void *data,
		      size_t nbytes, bool check_range)
{
	tern_ctx *ctx = b->ctx;
	tern_file *f = b->f;
	const char *path = f->path;
	if (name_len == 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: tensor %zu has an empty name", path,
				  f->n_tensors);
	if (memchr(name, '\0', name_len))
		return tern_error(ctx, TERN_E_FORMAT, "%s: tensor %zu: name contains a NUL byte",
				  path, f->n_tensors);
	if (!tern_utf8_valid(name, name_len))
		return tern_error(ctx, TERN_E_FORMAT, "%s: tensor %zu: name is not valid UTF-8",
				  path, f->n_tensors);
	/* Names are bounded in messages so a huge name cannot hide the problem. */
	int nl = name_len > 200 ? 200 : (int)name_len;
	if (name_find(f, name, name_len) != SIZE_MAX)
		return tern_error(ctx, TERN_E_FORMAT, "%s: duplicate tensor name '%.*s'", path, nl,
				  name);
	if ((unsigned)dtype >= TERN_DTYPE_COUNT)
		return tern_error(ctx, TERN_E_UNSUPPORTED, "%s: tensor '%.*s': unknown dtype %d",
				  path, nl, name, (int)dtype);
	if (n_dims < 1 || n_dims > TERN_MAX_DIMS)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: tensor '%.*s': %d dimensions (expected 1 to %d)", path, nl,
				  name, n_dims, TERN_MAX_DIMS);
	tern_tensor t;
	memset(&t, 0, sizeof t);
	t.dtype = dtype;
	t.n_dims = n_dims;
	for (int i = 0; i < n_dims; i++)
		t.shape[i] = shape[i];
	if (qp)
		t.q = *qp;
	int rc = tern_qparams_check(ctx, dtype, &t.q);
	if (rc != TERN_OK)
		return rewrap(ctx, rc, path, nl, name);
	size_t want;
	rc = tern_tensor_bytes(ctx, &t, &want);
	if (rc != TERN_OK)
		return rewrap(ctx, rc, path, nl, name);
	if (want != nbytes)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: tensor '%.*s': stores %zu bytes but its dtype %s and shape "
				  "need %zu",
				  path, nl, name, nbytes, tern_dtype_name(dtype), want);
	if (check_range && !data_owned_by(f, data, nbytes))
		return tern_error(ctx, TERN_E_INTERNAL,
				  "%s: tensor '%.*s': data lies outside the file and its buffers",
				  path, nl, name);
	if (reserve_tensor(f) != TERN_OK)
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory adding tensor '%.*s'",
				  path, nl, name);
	char *nm = malloc(name_len + 1);
	if (!nm)
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory adding tensor '%.*s'",
				  path, nl, name);
	memcpy(nm, name, name_len);
	nm[name_len] = '\0';
	t.name = nm;
	t.data = data;
	t.nbytes = nbytes;
	f->tensors[f->n_tensors] = t;
	f->sources[f->n_tensors] = (tsource){ NULL, data, nbytes };
	name_index_insert(f, f->n_tensors);
	f->n_tensors++;
	return TERN_OK;
}

int tern_fb_add_tensor(tern_file_builder *b, const char *name, size_t name_len,
		       tern_dtype dtype, int n_dims, const int64_t *shape,
		       const tern_qparams *qp, const void *data, size_t nbytes)
{
	/* Tensors are read-only views; the cast only fits tern_tensor's field. */
	return add_tensor(b, name, name_len, dtype, n_dims, shape, qp, (void *)(uintptr_t)data,
			  nbytes, true);
}

int tern_fb_adopt_tensor(tern_file_builder *b, const char *name, size_t name_len,
			 tern_tensor *t)
{
	tern_file *f = b->f;
	if (!t)
		return tern_error(b->ctx, TERN_E_INTERNAL, "%s: no tensor to adopt", f->path);
	if (f->n_adopted == f->cap_adopted) {
		size_t ncap = f->cap_adopted ? f->cap_adopted * 2 : 8;
		tern_tensor **na = realloc(f->adopted, ncap * sizeof *na);
		if (!na) {
			tern_tensor_free(t);
			return tern_error(b->ctx, TERN_E_NOMEM, "%s: out of memory", f->path);
		}
		f->adopted = na;
		f->cap_adopted = ncap;
	}
	int rc = add_tensor(b, name, name_len, t->dtype, t->n_dims, t->shape, &t->q, t->data,
			    t->nbytes, false);
	if (rc != TERN_OK) {
		tern_tensor_free(t);
		return rc;
	}
	f->adopted[f->n_adopted++] = t;
	return TERN_OK;
}

void tern_fb_set_source(tern_file_builder *b, const char *type, const void *data, size_t nbytes)
{
	tern_file *f = b->f;
	if (f->n_tensors == 0)
		return;
	f->sources[f->n_tensors - 1] = (tsource){ type, data, nbytes };
}

/* ---- open / close ---------------------------------------------------------------- */

static int detect(tern_ctx *ctx, const char *path, const uint8_t *p, size_t size,
		  tern_file_format *fmt)
{
	if (size >= 4 && memcmp(p, "TERN", 4) == 0) {
		*fmt = TERN_FORMAT_TERN;
		return TERN_OK;
	}
	if (size >= 4 && memcmp(p, "GGUF", 4) == 0) {
		*fmt = TERN_FORMAT_GGUF;
		return TERN_OK;
	}
	if (size >= 9 && p[8] == '{') {
		*fmt = TERN_FORMAT_SAFETENSORS;
		return TERN_OK;
	}
	if (size < 4)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: %zu bytes is too short to be a model file", path, size);
	return tern_error(ctx, TERN_E_FORMAT,
			  "%s: unknown format: starts with bytes %02x %02x %02x %02x (expected "
			  "\"TERN\", \"GGUF\" or a safetensors header)",
			  path, p[0], p[1], p[2], p[3]);
}

static const tern_format_open_fn readers[TERN_FORMAT_COUNT] = {
	tern_tern_open,
	tern_gguf_open,
	tern_safetensors_open,
};

/* Takes the mapping (and path) over: on failure everything is released. */
static int finish_open(tern_ctx *ctx, char *path, const uint8_t *map, size_t size, bool mapped,
		       tern_file **out)
{
	tern_file *f = calloc(1, sizeof *f);
	tern_meta *meta = tern_meta_new_object();
	if (!f || !meta) {
		free(f);
		tern_meta_free(meta);
		if (mapped)
			munmap((void *)(uintptr_t)map, size);
		int rc = tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", path);
		free(path);
		return rc;
	}
	f->path = path;
	f->map = map;
	f->size = size;
	f->mapped = mapped;
	f->meta = meta;
	tern_file_format fmt = TERN_FORMAT_TERN;
	int rc = detect(ctx, path, map, size, &fmt);
	if (rc == TERN_OK) {
		f->format = fmt;
		tern_file_builder b = { ctx, f };
		rc = readers[fmt](ctx, map, size, &b);
	}
	if (rc == TERN_OK && !f->arch)
		rc = tern_fb_set_architecture(&(tern_file_builder){ ctx, f }, "");
	if (rc != TERN_OK) {
		tern_file_close(f);
		return rc;
	}
	*out = f;
	return TERN_OK;
}

/* A Hugging Face checkpoint: the file serves the tensors of every shard
 * in place (the shards stay mapped while f->hf lives). */
static int open_hf(tern_ctx *ctx, tern_file *f, tern_hf *hf)
{
	tern_file_builder b = { ctx, f };
	tern_meta *meta;
	int rc = tern_meta_copy(tern_hf_meta(hf), &meta);
	if (rc != TERN_OK)
		return tern_error(ctx, rc, "%s: out of memory", f->path);
	if ((rc = tern_fb_set_meta(&b, meta)) != TERN_OK ||
	    (rc = tern_fb_set_architecture(&b, tern_hf_architecture(hf))) != TERN_OK)
		return rc;
	f->size = tern_hf_bytes(hf);
	for (size_t i = 0; i < tern_hf_n_tensors(hf) && rc == TERN_OK; i++) {
		const tern_tensor *t = tern_hf_tensor(hf, i);
		rc = add_tensor(&b, t->name, strlen(t->name), t->dtype, t->n_dims, t->shape, &t->q,
				t->data, t->nbytes, false);
	}
	return rc;
}

static int open_dir(tern_ctx *ctx, const char *path, tern_file **out)
{
	size_t plen = strlen(path);
	char *cfg = malloc(plen + sizeof "/config.json");
	if (!cfg)
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", path);
	memcpy(cfg, path, plen);
	memcpy(cfg + plen, "/config.json", sizeof "/config.json");
	struct stat st;
	bool has_config = stat(cfg, &st) == 0;
	free(cfg);
	if (!has_config)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: is a directory without config.json, so not a Hugging Face "
				  "checkpoint",
				  path);
	tern_hf *hf;
	int rc = tern_hf_open(ctx, path, &hf);
	if (rc != TERN_OK)
		return rc;
	tern_file *f = calloc(1, sizeof *f);
	if (f) {
		f->path = strdup(path);
		f->meta = tern_meta_new_object();
	}
	if (!f || !f->path || !f->meta) {
		tern_hf_close(hf);
		tern_file_close(f);
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", path);
	}
	f->format = TERN_FORMAT_HF;
	f->hf = hf;
	rc = open_hf(ctx, f, hf);
	if (rc != TERN_OK) {
		tern_file_close(f);
		return rc;
	}
	*out = f;
	return TERN_OK;
}

/* Private anonymous memory for `size` bytes, 2 MiB aligned so the kernel
 * can back it with transparent huge pages; NULL if none. */
#define HUGE_PAGE ((size_t)2 << 20)

static void *alloc_huge(size_t size)
{
	if (size > SIZE_MAX - HUGE_PAGE)
		return NULL;
	size_t span = size + HUGE_PAGE;
	uint8_t *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	uintptr_t a = ((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
	uint8_t *p = (uint8_t *)a;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t used = (size + page - 1) / page * page;
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	if (raw + span > p + used)
		munmap(p + used, (size_t)(raw + span - (p + used)));
#ifdef MADV_HUGEPAGE
	madvise(p, used, MADV_HUGEPAGE); /* a hint: failure only costs speed */
#endif
	return p;
}

/* Read the whole of fd (size bytes) into huge-page-backed private memory,
 * read-only afterwards: *out (release with munmap). */
static int load_private(tern_ctx *ctx, const char *path, int fd, size_t size, void **out)
{
	uint8_t *p = alloc_huge(size);
	if (!p)
		return tern_error(ctx, TERN_E_NOMEM, "%s: cannot allocate %zu bytes to load it",
				  path, size);
	size_t done = 0;
	while (done < size) {
		size_t want = TERN_MIN(size - done, (size_t)1 << 30);
		ssize_t r = pread(fd, p + done, want, (off_t)done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = errno;
			munmap(p, size);
			if (r < 0)
				return tern_error(ctx, TERN_E_IO, "%s: read failed at byte %zu: %s",
						  path, done, strerror(e));
			return tern_error(ctx, TERN_E_IO,
					  "%s: the file shrank to %zu bytes while it was read", path,
					  done);
		}
		done += (size_t)r;
	}
	mprotect(p, size, PROT_READ);
	*out = p;
	return TERN_OK;
}

int tern_file_open(tern_ctx *ctx, const char *path, tern_file **out)
{
	return tern_file_open_ex(ctx, path, 0, out);
}

int tern_file_open_ex(tern_ctx *ctx, const char *path, unsigned flags, tern_file **out)
{
	*out = NULL;
	if (flags & ~(unsigned)TERN_FILE_LOAD)
		return tern_error(ctx, TERN_E_INVALID, "%s: unknown open flags 0x%x",
				  path ? path : "(null)", flags);
	if (!path)
		return tern_error(ctx, TERN_E_INVALID, "no path given");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tern_error(ctx, TERN_E_IO, "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return tern_error(ctx, TERN_E_IO, "%s: cannot stat: %s", path, strerror(e));
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return open_dir(ctx, path, out);
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return tern_error(ctx, TERN_E_IO, "%s: not a regular file", path);
	}
	if (st.st_size <= 0) {
		close(fd);
		return tern_error(ctx, TERN_E_FORMAT, "%s: empty file", path);
	}
	if ((uint64_t)st.st_size > SIZE_MAX) {
		close(fd);
		return tern_error(ctx, TERN_E_OVERFLOW, "%s: too large to map", path);
	}
	size_t size = (size_t)st.st_size;
	void *map = NULL;
	if (flags & TERN_FILE_LOAD) {
		int rc = load_private(ctx, path, fd, size, &map);
		close(fd);
		if (rc != TERN_OK)
			return rc;
	} else {
		map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
		int e = errno;
		close(fd);
		if (map == MAP_FAILED)
			return tern_error(ctx, TERN_E_IO, "%s: cannot map %zu bytes: %s", path,
					  size, strerror(e));
	}
	char *p = strdup(path);
	if (!p) {
		munmap(map, size);
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", path);
	}
	return finish_open(ctx, p, map, size, true, out);
}

int tern_file_open_memory(tern_ctx *ctx, const void *data, size_t size, tern_file **out)
{
	*out = NULL;
	if (!data && size)
		return tern_error(ctx, TERN_E_INVALID, "<memory>: NULL buffer");
	char *p = strdup("<memory>");
	if (!p)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	if (size == 0) {
		free(p);
		return tern_error(ctx, TERN_E_FORMAT, "<memory>: empty buffer");
	}
	return finish_open(ctx, p, data, size, false, out);
}

void tern_file_close(tern_file *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n_tensors; i++)
		free((char *)(uintptr_t)f->tensors[i].name);
	free(f->tensors);
	free(f->sources);
	free(f->name_slots);
	for (size_t i = 0; i < f->n_allocs; i++)
		tern_free(f->allocs[i]);
	free(f->allocs);
	free(f->alloc_sizes);
	for (size_t i = 0; i < f->n_adopted; i++)
		tern_tensor_free(f->adopted[i]);
	free(f->adopted);
	tern_meta_free(f->meta);
	free(f->arch);
	if (f->mapped)
		munmap((void *)(uintptr_t)f->map, f->size);
	tern_hf_close(f->hf);
	free(f->path);
	free(f);
}

/* ---- queries ---------------------------------------------------------------------- */

tern_file_format tern_file_format_of(const tern_file *f)
{
	return f->format;
}

const char *tern_file_format_name(const tern_file *f)
{
	return format_names[f->format];
}

uint32_t tern_file_version(const tern_file *f)
{
	return f->version;
}

const char *tern_file_path(const tern_file *f)
{
	return f->path;
}

size_t tern_file_size(const tern_file *f)
{
	return f->size;
}

const char *tern_file_architecture(const tern_file *f)
{
	return f->arch;
}

size_t tern_file_n_tensors(const tern_file *f)
{
	return f->n_tensors;
}

const tern_tensor *tern_file_tensor(const tern_file *f, size_t i)
{
	return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const tern_tensor *tern_file_find(const tern_file *f, const char *name)
{
	if (!name)
		return NULL;
	size_t i = name_find(f, name, strlen(name));
	return i == SIZE_MAX ? NULL : &f->tensors[i];
}

const tern_meta *tern_file_meta(const tern_file *f)
{
	return f->meta;
}

int tern_file_tensor_source(const tern_file *f, size_t i, const char **type, const void **data,
			    size_t *nbytes)
{
	if (!f || i >= f->n_tensors)
		return TERN_E_INVALID;
	const tsource *s = &f->sources[i];
	if (type)
		*type = s->type ? s->type : tern_dtype_name(f->tensors[i].dtype);
	if (data)
		*data = s->data;
	if (nbytes)
		*nbytes = s->nbytes;
	return TERN_OK;
}
