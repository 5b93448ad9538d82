/*
 * hf.c: Hugging Face checkpoint directories (see hf.h): config.json into a
 * metadata tree, the tokenizer files by path, and the safetensors weights,
 * single or sharded, each shard opened (mapped and validated) as its own
 * tern_file so tensors are served in place.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "formats/format.h"
#include "formats/hf.h"

/* JSON side files are small; a larger one is not what it claims to be. */
#define HF_JSON_MAX ((size_t)256 << 20)

struct tern_hf {
	tern_meta *meta;
	tern_meta *shard_names; /* meta's "shards" array, kept to append to */
	char *arch;
	tern_file **shards;
	size_t n_shards;
	const tern_tensor **tensors;
	size_t n_tensors;
};

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = malloc(a + b + 2);
	if (p) {
		memcpy(p, dir, a);
		p[a] = '/';
		memcpy(p + a + 1, name, b + 1);
	}
	return p;
}

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Read and parse a JSON file into a new tree; it must be an object. */
static int read_json(tern_ctx *ctx, const char *path, tern_meta **out)
{
	*out = NULL;
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return tern_error(ctx, errno == ENOENT ? TERN_E_NOT_FOUND : TERN_E_IO,
				  "%s: cannot open: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
		fclose(fp);
		return tern_error(ctx, TERN_E_IO, "%s: not a regular file", path);
	}
	if ((uint64_t)st.st_size > HF_JSON_MAX) {
		fclose(fp);
		return tern_error(ctx, TERN_E_OVERFLOW, "%s: %lld bytes is too large for a JSON file",
				  path, (long long)st.st_size);
	}
	size_t n = (size_t)st.st_size;
	char *text = malloc(n ? n : 1);
	if (!text) {
		fclose(fp);
		return tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", path);
	}
	size_t got = fread(text, 1, n, fp);
	fclose(fp);
	if (got != n) {
		free(text);
		return tern_error(ctx, TERN_E_IO, "%s: short read", path);
	}
	tern_meta *m;
	int rc = tern_meta_from_json(ctx, text, n, &m);
	free(text);
	if (rc != TERN_OK) {
		char detail[TERN_ERRMSG_MAX];
		snprintf(detail, sizeof detail, "%s", tern_ctx_errmsg(ctx));
		return tern_error(ctx, rc, "%s: %s", path, detail);
	}
	if (tern_meta_type_of(m) != TERN_META_OBJECT) {
		tern_meta_free(m);
		return tern_error(ctx, TERN_E_FORMAT, "%s: not a JSON object", path);
	}
	*out = m;
	return TERN_OK;
}

/* Set obj[key] to a copy of s. */
static int set_string(tern_ctx *ctx, tern_meta *obj, const char *key, const char *s)
{
	tern_meta *v = tern_meta_new_string(s, strlen(s));
	if (!v || tern_meta_set(obj, key, v) != TERN_OK)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	return TERN_OK;
}

static int add_tokenizer_paths(tern_ctx *ctx, tern_hf *h, const char *dir)
{
	static const char *const files[][2] = {
		{ "json", "tokenizer.json" },
		{ "model", "tokenizer.model" },
		{ "config", "tokenizer_config.json" },
	};
	tern_meta *tok = tern_meta_new_object();
	if (!tok || tern_meta_set(h->meta, "tokenizer", tok) != TERN_OK)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		char *p = join(dir, files[i][1]);
		if (!p)
			return tern_error(ctx, TERN_E_NOMEM, "out of memory");
		int rc = is_file(p) ? set_string(ctx, tok, files[i][0], p) : TERN_OK;
		free(p);
		if (rc != TERN_OK)
			return rc;
	}
	return TERN_OK;
}

/* A shard name from the index must stay inside the directory. */
static bool plain_name(const char *s)
{
	return s[0] && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int open_shard(tern_ctx *ctx, tern_hf *h, const char *dir, const char *name)
{
	tern_file **ns = realloc(h->shards, (h->n_shards + 1) * sizeof *ns);
	if (!ns)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	h->shards = ns;
	char *p = join(dir, name);
	if (!p)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	tern_file *f = NULL;
	/* A directory would open as a checkpoint of its own: shards are files. */
	int rc = is_file(p) || access(p, F_OK) != 0
			 ? tern_file_open(ctx, p, &f)
			 : tern_error(ctx, TERN_E_FORMAT, "%s: is not a regular file", p);
	if (rc == TERN_OK && tern_file_format_of(f) != TERN_FORMAT_SAFETENSORS) {
		rc = tern_error(ctx, TERN_E_FORMAT, "%s: is a %s file, not safetensors", p,
				tern_file_format_name(f));
		tern_file_close(f);
	}
	free(p);
	if (rc != TERN_OK)
		return rc;
	h->shards[h->n_shards++] = f;
	tern_meta *v = tern_meta_new_string(name, strlen(name));
	if (!v || tern_meta_append(h->shard_names, v) != TERN_OK)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	return TERN_OK;
}

/* The shards of model.safetensors.index.json, in order of first mention,
 * after checking every name is plain. */
static int open_index(tern_ctx *ctx, tern_hf *h, const char *dir, const char *ipath,
		      tern_meta **index)
{
	int rc = read_json(ctx, ipath, index);
	if (rc != TERN_OK)
		return rc;
	const tern_meta *wm = tern_meta_get(*index, "weight_map");
	if (tern_meta_type_of(wm) != TERN_META_OBJECT)
		return tern_error(ctx, TERN_E_FORMAT, "%s: no \"weight_map\" object", ipath);
	size_t n = tern_meta_count(wm);
	for (size_t i = 0; i < n; i++) {
		const char *shard = tern_meta_as_string(tern_meta_item(wm, i), NULL);
		if (!shard || !plain_name(shard))
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: tensor '%.200s' maps to %s, not a file name in the "
					  "directory",
					  ipath, tern_meta_key(wm, i), shard ? shard : "a non-string");
		bool seen = false;
		for (size_t k = 0; k < h->n_shards && !seen; k++)
			seen = strcmp(tern_meta_as_string(tern_meta_item(h->shard_names, k), NULL),
				      shard) == 0;
		if (!seen && (rc = open_shard(ctx, h, dir, shard)) != TERN_OK)
			return rc;
	}
	if (h->n_shards == 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: \"weight_map\" is empty", ipath);
	return TERN_OK;
}

/* Every tensor the index lists must be in its shard. */
static int check_index(tern_ctx *ctx, const tern_hf *h, const char *ipath, const tern_meta *index)
{
	const tern_meta *wm = tern_meta_get(index, "weight_map");
	const tern_meta *names = h->shard_names;
	for (size_t i = 0; i < tern_meta_count(wm); i++) {
		const char *shard = tern_meta_as_string(tern_meta_item(wm, i), NULL);
		const char *tname = tern_meta_key(wm, i);
		for (size_t k = 0; k < h->n_shards; k++) {
			if (strcmp(tern_meta_as_string(tern_meta_item(names, k), NULL), shard) != 0)
				continue;
			if (!tern_file_find(h->shards[k], tname))
				return tern_error(ctx, TERN_E_FORMAT,
						  "%s: tensor '%.200s' is listed in %s, which lacks it",
						  ipath, tname, shard);
		}
	}
	return TERN_OK;
}

static int collect_tensors(tern_ctx *ctx, tern_hf *h, const char *dir)
{
	size_t total = 0;
	for (size_t k = 0; k < h->n_shards; k++)
		total += tern_file_n_tensors(h->shards[k]);
	h->tensors = calloc(total ? total : 1, sizeof *h->tensors);
	if (!h->tensors)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	const tern_meta *names = h->shard_names;
	for (size_t k = 0; k < h->n_shards; k++) {
		for (size_t i = 0; i < tern_file_n_tensors(h->shards[k]); i++) {
			const tern_tensor *t = tern_file_tensor(h->shards[k], i);
			for (size_t j = 0; j < k; j++)
				if (tern_file_find(h->shards[j], t->name))
					return tern_error(
						ctx, TERN_E_FORMAT,
						"%s: tensor '%.200s' is in both %s and %s", dir, t->name,
						tern_meta_as_string(tern_meta_item(names, j), NULL),
						tern_meta_as_string(tern_meta_item(names, k), NULL));
			h->tensors[h->n_tensors++] = t;
		}
	}
	return TERN_OK;
}

static int set_architecture(tern_ctx *ctx, tern_hf *h)
{
	const tern_meta *cfg = tern_meta_get(h->meta, "config");
	const char *a = tern_meta_as_string(tern_meta_item(tern_meta_get(cfg, "architectures"), 0),
					    NULL);
	if (!a)
		a = tern_meta_get_string(cfg, "model_type", "");
	h->arch = strdup(a);
	return h->arch ? TERN_OK : tern_error(ctx, TERN_E_NOMEM, "out of memory");
}

static int open_dir(tern_ctx *ctx, tern_hf *h, const char *dir)
{
	h->meta = tern_meta_new_object();
	if (!h->meta)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	int rc = set_string(ctx, h->meta, "format", "huggingface");
	if (rc != TERN_OK)
		return rc;
	char *cpath = join(dir, "config.json");
	if (!cpath)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	tern_meta *cfg;
	rc = read_json(ctx, cpath, &cfg);
	free(cpath);
	if (rc != TERN_OK)
		return rc;
	if (tern_meta_set(h->meta, "config", cfg) != TERN_OK)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	if ((rc = add_tokenizer_paths(ctx, h, dir)) != TERN_OK ||
	    (rc = set_architecture(ctx, h)) != TERN_OK)
		return rc;
	h->shard_names = tern_meta_new_array();
	if (!h->shard_names || tern_meta_set(h->meta, "shards", h->shard_names) != TERN_OK)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");

	char *ipath = join(dir, "model.safetensors.index.json");
	if (!ipath)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	if (is_file(ipath)) {
		tern_meta *index = NULL;
		rc = open_index(ctx, h, dir, ipath, &index);
		if (rc == TERN_OK)
			rc = collect_tensors(ctx, h, dir);
		if (rc == TERN_OK)
			rc = check_index(ctx, h, ipath, index);
		tern_meta_free(index);
	} else {
		char *single = join(dir, "model.safetensors");
		if (!single)
			rc = tern_error(ctx, TERN_E_NOMEM, "out of memory");
		else if (!is_file(single))
			rc = tern_error(ctx, TERN_E_NOT_FOUND,
					"%s: neither model.safetensors nor "
					"model.safetensors.index.json is there",
					dir);
		else
			rc = open_shard(ctx, h, dir, "model.safetensors");
		if (rc == TERN_OK)
			rc = collect_tensors(ctx, h, dir);
		free(single);
	}
	free(ipath);
	return rc;
}

int tern_hf_open(tern_ctx *ctx, const char *dir, tern_hf **out)
{
	if (!out)
		return tern_error(ctx, TERN_E_INVALID, "tern_hf_open: NULL out");
	*out = NULL;
	if (!dir)
		return tern_error(ctx, TERN_E_INVALID, "tern_hf_open: no directory given");
	struct stat st;
	if (stat(dir, &st) != 0)
		return tern_error(ctx, errno == ENOENT ? TERN_E_NOT_FOUND : TERN_E_IO,
				  "%s: cannot open: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return tern_error(ctx, TERN_E_INVALID, "%s: not a directory", dir);
	tern_hf *h = calloc(1, sizeof *h);
	if (!h)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	int rc = open_dir(ctx, h, dir);
	if (rc != TERN_OK) {
		tern_hf_close(h);
		return rc;
	}
	*out = h;
	return TERN_OK;
}

void tern_hf_close(tern_hf *h)
{
	if (!h)
		return;
	for (size_t k = 0; k < h->n_shards; k++)
		tern_file_close(h->shards[k]);
	free(h->shards);
	free(h->tensors);
	free(h->arch);
	tern_meta_free(h->meta);
	free(h);
}

const tern_meta *tern_hf_meta(const tern_hf *h)
{
	return h->meta;
}

const char *tern_hf_architecture(const tern_hf *h)
{
	return h->arch;
}

size_t tern_hf_bytes(const tern_hf *h)
{
	size_t n = 0;
	for (size_t k = 0; k < h->n_shards; k++)
		n += tern_file_size(h->shards[k]); /* all mapped at once, so no overflow */
	return n;
}

size_t tern_hf_n_tensors(const tern_hf *h)
{
	return h->n_tensors;
}

const tern_tensor *tern_hf_tensor(const tern_hf *h, size_t i)
{
	return i < h->n_tensors ? h->tensors[i] : NULL;
}

const tern_tensor *tern_hf_find(const tern_hf *h, const char *name)
{
	for (size_t k = 0; k < h->n_shards; k++) {
		const tern_tensor *t = tern_file_find(h->shards[k], name);
		if (t)
			return t;
	}
	return NULL;
}
