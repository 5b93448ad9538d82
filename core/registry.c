/*
 * registry.c: plugin discovery and validation (dlopen), architecture and
 * component lookup, the model handle that ties a file to its plugin, and
 * conversion (tern_convert), which picks the plugin that converts a file.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "formats/convert.h"
#include "tern/plugin.h"

#define MAX_DIRS 64
#define MAX_PLUGINS 256

typedef struct plugin_entry {
	void *handle;
	const tern_plugin_desc *desc;
	char *path;
} plugin_entry;

typedef struct refusal {
	char *path;
	char *reason;
	int status;
} refusal;

struct tern_registry {
	tern_ctx *ctx;
	char *dirs[MAX_DIRS];
	size_t n_dirs;
	plugin_entry *plugins;
	size_t n_plugins, cap_plugins;
	refusal *refused;
	size_t n_refused, cap_refused;
};

struct tern_model {
	const tern_registry *reg;
	const tern_plugin_desc *desc;
	tern_file *file;
	void *impl;
};

static int refuse(tern_registry *reg, const char *path, int status, const char *fmt, ...)
	TERN_PRINTF(4, 5);

static int refuse(tern_registry *reg, const char *path, int status, const char *fmt, ...)
{
	if (reg->n_refused == reg->cap_refused) {
		size_t cap = reg->cap_refused ? reg->cap_refused * 2 : 8;
		refusal *r = realloc(reg->refused, cap * sizeof *r);
		if (!r)
			return TERN_E_NOMEM;
		reg->refused = r;
		reg->cap_refused = cap;
	}
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	refusal *r = &reg->refused[reg->n_refused];
	r->path = strdup(path);
	r->reason = strdup(buf);
	r->status = status;
	if (!r->path || !r->reason) {
		free(r->path);
		free(r->reason);
		return TERN_E_NOMEM;
	}
	reg->n_refused++;
	tern_log(reg->ctx, TERN_LOG_WARN, "plugin %s refused: %s", path, buf);
	return TERN_OK;
}

static bool valid_name(const char *s)
{
	if (!s || !*s || strlen(s) > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
			return false;
	return true;
}

/* The fields of a descriptor/ops struct that a given minor guarantees. */
#define HAS_FIELD(ptr, type, field) \
	((ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

static const struct {
	uint32_t task;
	const char *name;
	size_t offset;
} task_ops[] = {
	{ TERN_TASK_CLASSIFY, "classify", offsetof(tern_plugin_ops, classify) },
};

/* Checks a descriptor; returns NULL if fine, else a static reason with
 * *status set. */
static const char *check_desc(const tern_plugin_desc *d, int *status, char *buf, size_t len)
{
	*status = TERN_E_PLUGIN;
	if (!d)
		return "entry function returned NULL";
	if (d->struct_size < offsetof(tern_plugin_desc, abi_minor) + sizeof d->abi_minor)
		return "descriptor struct_size too small";
	if (d->abi_major != TERN_PLUGIN_ABI_MAJOR || d->abi_minor > TERN_PLUGIN_ABI_MINOR) {
		*status = TERN_E_ABI;
		snprintf(buf, len, "plugin ABI %u.%u, host ABI %u.%u (major must match, minor <= host)",
			 d->abi_major, d->abi_minor, TERN_PLUGIN_ABI_MAJOR, TERN_PLUGIN_ABI_MINOR);
		return buf;
	}
	if (!HAS_FIELD(d, tern_plugin_desc, ops))
		return "descriptor struct_size too small for ABI 1.0";
	if (!valid_name(d->name))
		return "name missing or not [a-z0-9_-]{1,64}";
	if (!d->version)
		return "version string missing";
	if (!d->architectures)
		return "architecture list missing";
	if (d->n_components && !d->components)
		return "components count set but list missing";
	for (size_t i = 0; i < d->n_components; i++)
		if (!d->components[i].interface || !*d->components[i].interface)
			return "component without an interface name";
	const tern_plugin_ops *ops = d->ops;
	if (!ops)
		return "ops table missing";
	if (!HAS_FIELD(ops, tern_plugin_ops, free))
		return "ops struct_size too small";
	if (!ops->load)
		return "required op 'load' is NULL";
	if (!ops->free)
		return "required op 'free' is NULL";
	if (d->n_components && (!HAS_FIELD(ops, tern_plugin_ops, component) || !ops->component))
		return "components listed but op 'component' is NULL";
	uint32_t known = 0;
	for (size_t i = 0; i < sizeof task_ops / sizeof task_ops[0]; i++) {
		known |= task_ops[i].task;
		if (!(d->tasks & task_ops[i].task))
			continue;
		void *fn = NULL;
		if (ops->struct_size >= task_ops[i].offset + sizeof fn)
			memcpy(&fn, (const char *)ops + task_ops[i].offset, sizeof fn);
		if (!fn) {
			snprintf(buf, len, "task '%s' offered but its op is NULL", task_ops[i].name);
			return buf;
		}
	}
	/* Generation has no op: the host drives the plugin's "lm" component. */
	known |= TERN_TASK_GENERATE;
	if (d->tasks & TERN_TASK_GENERATE) {
		bool lm = false;
		for (size_t i = 0; i < d->n_components; i++)
			lm = lm || strcmp(d->components[i].interface, "lm") == 0;
		if (!lm)
			return "task 'generate' offered but no 'lm' component listed";
	}
	if (d->tasks & ~known) {
		snprintf(buf, len, "offers tasks 0x%x unknown to ABI %u.%u", d->tasks & ~known,
			 TERN_PLUGIN_ABI_MAJOR, TERN_PLUGIN_ABI_MINOR);
		return buf;
	}
	return NULL;
}

static int add_plugin(tern_registry *reg, const char *path)
{
	for (size_t i = 0; i < reg->n_plugins; i++)
		if (strcmp(reg->plugins[i].path, path) == 0)
			return TERN_OK; /* same file reached twice through the path */
	dlerror();
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char *e = dlerror();
		return refuse(reg, path, TERN_E_PLUGIN, "cannot dlopen: %s", e ? e : "unknown error");
	}
	void *sym = dlsym(h, TERN_PLUGIN_ENTRY_SYMBOL);
	if (!sym) {
		dlclose(h);
		return refuse(reg, path, TERN_E_PLUGIN, "no '%s' symbol: not a tern plugin",
			      TERN_PLUGIN_ENTRY_SYMBOL);
	}
	tern_plugin_entry_fn entry;
	memcpy(&entry, &sym, sizeof entry);
	const tern_plugin_desc *d = entry();
	char buf[256];
	int status;
	const char *why = check_desc(d, &status, buf, sizeof buf);
	if (why) {
		dlclose(h);
		return refuse(reg, path, status, "%s", why);
	}
	for (size_t i = 0; i < reg->n_plugins; i++)
		if (strcmp(reg->plugins[i].desc->name, d->name) == 0) {
			/* d lives in the library: record the reason before closing it */
			int rc = refuse(reg, path, TERN_E_PLUGIN,
					"duplicate plugin name '%s' (already loaded from %s)", d->name,
					reg->plugins[i].path);
			dlclose(h);
			return rc;
		}
	if (reg->n_plugins == MAX_PLUGINS) {
		dlclose(h);
		return refuse(reg, path, TERN_E_PLUGIN, "more than %d plugins", MAX_PLUGINS);
	}
	if (reg->n_plugins == reg->cap_plugins) {
		size_t cap = reg->cap_plugins ? reg->cap_plugins * 2 : 8;
		plugin_entry *p = realloc(reg->plugins, cap * sizeof *p);
		if (!p) {
			dlclose(h);
			return TERN_E_NOMEM;
		}
		reg->plugins = p;
		reg->cap_plugins = cap;
	}
	char *dup = strdup(path);
	if (!dup) {
		dlclose(h);
		return TERN_E_NOMEM;
	}
	reg->plugins[reg->n_plugins++] = (plugin_entry){ h, d, dup };
	tern_log(reg->ctx, TERN_LOG_DEBUG, "plugin '%s' %s loaded from %s", d->name, d->version, path);
	return TERN_OK;
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Scan one directory for *.so; also its immediate subdirectories and their
 * .libs folders, which is where libtool leaves uninstalled modules. */
static int scan_dir(tern_registry *reg, const char *dir, int depth)
{
	DIR *d = opendir(dir);
	if (!d)
		return TERN_OK;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = TERN_OK;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' && strcmp(e->d_name, ".libs") != 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			char **nn = realloc(names, cap * sizeof *nn);
			if (!nn) {
				rc = TERN_E_NOMEM;
				break;
			}
			names = nn;
		}
		if (!(names[n] = strdup(e->d_name))) {
			rc = TERN_E_NOMEM;
			break;
		}
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof *names, cmp_str); /* deterministic order */
	for (size_t i = 0; i < n && rc == TERN_OK; i++) {
		char path[4096];
		if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path)
			continue;
		struct stat st;
		if (stat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			if (depth < 2)
				rc = scan_dir(reg, path, depth + 1);
		} else if (S_ISREG(st.st_mode) && has_suffix(names[i], ".so")) {
			rc = add_plugin(reg, path);
		}
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}

static int add_dir(tern_registry *reg, const char *dir, size_t len)
{
	if (len == 0 || reg->n_dirs == MAX_DIRS)
		return TERN_OK;
	char *s = strndup(dir, len);
	if (!s)
		return TERN_E_NOMEM;
	reg->dirs[reg->n_dirs++] = s;
	return TERN_OK;
}

static int add_path_list(tern_registry *reg, const char *list)
{
	while (list && *list) {
		const char *colon = strchr(list, ':');
		size_t len = colon ? (size_t)(colon - list) : strlen(list);
		int rc = add_dir(reg, list, len);
		if (rc)
			return rc;
		list = colon ? colon + 1 : NULL;
	}
	return TERN_OK;
}

int tern_registry_new(tern_ctx *ctx, const char *search_path, tern_registry **out)
{
	*out = NULL;
	tern_registry *reg = calloc(1, sizeof *reg);
	if (!reg)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory creating the plugin registry");
	reg->ctx = ctx;
	int rc;
	if (search_path) {
		rc = add_path_list(reg, search_path);
	} else {
		rc = add_path_list(reg, getenv("TERN_PLUGIN_PATH"));
		if (!rc)
			rc = add_dir(reg, TERN_BUILD_PLUGINDIR, strlen(TERN_BUILD_PLUGINDIR));
		if (!rc)
			rc = add_dir(reg, TERN_PLUGINDIR, strlen(TERN_PLUGINDIR));
	}
	for (size_t i = 0; i < reg->n_dirs && rc == TERN_OK; i++)
		rc = scan_dir(reg, reg->dirs[i], 0);
	if (rc) {
		tern_registry_free(reg);
		return tern_error(ctx, rc, "out of memory while scanning for plugins");
	}
	*out = reg;
	return TERN_OK;
}

void tern_registry_free(tern_registry *reg)
{
	if (!reg)
		return;
	for (size_t i = 0; i < reg->n_plugins; i++) {
		dlclose(reg->plugins[i].handle);
		free(reg->plugins[i].path);
	}
	for (size_t i = 0; i < reg->n_refused; i++) {
		free(reg->refused[i].path);
		free(reg->refused[i].reason);
	}
	for (size_t i = 0; i < reg->n_dirs; i++)
		free(reg->dirs[i]);
	free(reg->plugins);
	free(reg->refused);
	free(reg);
}

size_t tern_registry_count(const tern_registry *reg)
{
	return reg->n_plugins;
}

const tern_plugin_desc *tern_registry_plugin(const tern_registry *reg, size_t i, const char **path)
{
	if (i >= reg->n_plugins)
		return NULL;
	if (path)
		*path = reg->plugins[i].path;
	return reg->plugins[i].desc;
}

size_t tern_registry_n_refused(const tern_registry *reg)
{
	return reg->n_refused;
}

const char *tern_registry_refused(const tern_registry *reg, size_t i, const char **path, int *status)
{
	if (i >= reg->n_refused)
		return NULL;
	if (path)
		*path = reg->refused[i].path;
	if (status)
		*status = reg->refused[i].status;
	return reg->refused[i].reason;
}

size_t tern_registry_n_dirs(const tern_registry *reg)
{
	return reg->n_dirs;
}

const char *tern_registry_dir(const tern_registry *reg, size_t i)
{
	return i < reg->n_dirs ? reg->dirs[i] : NULL;
}

const tern_plugin_desc *tern_registry_find_arch(const tern_registry *reg, const char *arch)
{
	if (!arch)
		return NULL;
	for (size_t i = 0; i < reg->n_plugins; i++)
		for (const char *const *a = reg->plugins[i].desc->architectures; *a; a++)
			if (strcmp(*a, arch) == 0)
				return reg->plugins[i].desc;
	return NULL;
}

const void *tern_registry_component(const tern_registry *reg, const char *interface, uint32_t version,
				    const tern_plugin_desc **provider)
{
	for (size_t i = 0; i < reg->n_plugins; i++) {
		const tern_plugin_desc *d = reg->plugins[i].desc;
		for (size_t c = 0; c < d->n_components; c++) {
			if (strcmp(d->components[c].interface, interface) != 0 ||
			    d->components[c].version != version)
				continue;
			const void *iface = d->ops->component(interface, version);
			if (iface) {
				if (provider)
					*provider = d;
				return iface;
			}
		}
	}
	tern_error(reg->ctx, TERN_E_NOT_FOUND, "no plugin provides component '%s' version %u",
		   interface, version);
	return NULL;
}

static tern_host make_host(tern_ctx *ctx, const tern_registry *reg)
{
	tern_host h;
	memset(&h, 0, sizeof h);
	h.struct_size = sizeof h;
	h.abi_major = TERN_PLUGIN_ABI_MAJOR;
	h.abi_minor = TERN_PLUGIN_ABI_MINOR;
	h.ctx = ctx;
	h.registry = reg;
	return h;
}

int tern_model_load(tern_ctx *ctx, const tern_registry *reg, const char *path, tern_model **out)
{
	*out = NULL;
	tern_file *f = NULL;
	int rc = tern_file_open_ex(ctx, path, TERN_FILE_LOAD, &f);
	if (rc)
		return rc;
	const char *arch = tern_file_architecture(f);
	if (!arch || !*arch) {
		tern_file_close(f);
		return tern_error(ctx, TERN_E_FORMAT, "%s: the file names no architecture", path);
	}
	const tern_plugin_desc *d = tern_registry_find_arch(reg, arch);
	if (!d) {
		/* arch points into f: format the message before closing it */
		rc = tern_error(ctx, TERN_E_NOT_FOUND,
				"%s: no plugin implements architecture '%s' (see `tern plugins`)", path, arch);
		tern_file_close(f);
		return rc;
	}
	tern_model *m = calloc(1, sizeof *m);
	if (!m) {
		tern_file_close(f);
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	}
	tern_host h = make_host(ctx, reg);
	rc = d->ops->load(&h, f, &m->impl);
	if (rc) {
		if (!*tern_ctx_errmsg(ctx))
			tern_error(ctx, rc, "plugin '%s' failed to load %s", d->name, path);
		free(m);
		tern_file_close(f);
		return rc;
	}
	m->reg = reg;
	m->desc = d;
	m->file = f;
	*out = m;
	return TERN_OK;
}

void tern_model_free(tern_model *m)
{
	if (!m)
		return;
	m->desc->ops->free(m->impl);
	tern_file_close(m->file);
	free(m);
}

const tern_plugin_desc *tern_model_plugin(const tern_model *m)
{
	return m->desc;
}

const tern_file *tern_model_file(const tern_model *m)
{
	return m->file;
}

void *tern_model_impl(const tern_model *m)
{
	return m->impl;
}

int tern_classify(tern_ctx *ctx, tern_model *m, const tern_image *img, int k, tern_class *out,
		  int *n_out)
{
	*n_out = 0;
	if (!(m->desc->tasks & TERN_TASK_CLASSIFY))
		return tern_error(ctx, TERN_E_UNSUPPORTED, "plugin '%s' does not classify images",
				  m->desc->name);
	if (k < 1 || !img || !out)
		return tern_error(ctx, TERN_E_INVALID, "classify: need an image and k >= 1");
	tern_host h = make_host(ctx, m->reg);
	return m->desc->ops->classify(&h, m->impl, img, k, out, n_out);
}

/* ---- conversion ------------------------------------------------------------ */

tern_convert_opts tern_convert_default_opts(void)
{
	tern_convert_opts o;
	memset(&o, 0, sizeof o);
	o.struct_size = sizeof o;
	o.ternary_type = TERN_DTYPE_T2;
	o.float_type = TERN_DTYPE_COUNT;
	o.head_type = TERN_DTYPE_COUNT;
	return o;
}

/* The caller's options over the defaults (a caller built against an older
 * minor passes a smaller struct), then checked. */
static int convert_opts(tern_ctx *ctx, const tern_convert_opts *in, tern_convert_opts *o)
{
	*o = tern_convert_default_opts();
	if (in) {
		size_t n = in->struct_size < sizeof *o ? in->struct_size : sizeof *o;
		if (n < sizeof o->struct_size)
			return tern_error(ctx, TERN_E_INVALID, "convert: options without struct_size");
		memcpy((char *)o + sizeof o->struct_size, (const char *)in + sizeof in->struct_size,
		       n - sizeof o->struct_size);
		o->struct_size = sizeof *o;
	}
	tern_dtype t = o->ternary_type, f = o->float_type, h = o->head_type;
	if (t != TERN_DTYPE_T2 && t != TERN_DTYPE_T3)
		return tern_error(ctx, TERN_E_INVALID, "convert: ternary type must be t2 or t3");
	if (f != TERN_DTYPE_F32 && f != TERN_DTYPE_F16 && f != TERN_DTYPE_BF16 &&
	    f != TERN_DTYPE_COUNT)
		return tern_error(ctx, TERN_E_INVALID,
				  "convert: float type must be f32, f16, bf16 or keep");
	if (h != TERN_DTYPE_I8 && h != TERN_DTYPE_I4 && h != TERN_DTYPE_F32 &&
	    h != TERN_DTYPE_F16 && h != TERN_DTYPE_BF16 && h != TERN_DTYPE_COUNT)
		return tern_error(ctx, TERN_E_INVALID,
				  "convert: head type must be i8, i4, f32, f16, bf16 or as the floats");
	if (o->head_residual && h != TERN_DTYPE_I4)
		return tern_error(ctx, TERN_E_INVALID, "convert: a residual head needs head type i4");
	return TERN_OK;
}

static bool can_convert(const tern_plugin_desc *d)
{
	return HAS_FIELD(d->ops, tern_plugin_ops, convert) && d->ops->convert;
}

typedef struct convert_job {
	tern_ctx *ctx;
	const char *src_path, *dst_path;
	const tern_file *src;
	const tern_convert_opts *opts;
	tern_host host;
	tern_writer *w;
} convert_job;

/* One plugin's attempt on a fresh writer. */
static int try_plugin(convert_job *j, const tern_plugin_desc *d)
{
	tern_writer_free(j->w);
	j->w = NULL;
	int rc = tern_writer_new(j->ctx, j->dst_path, &j->w);
	if (rc != TERN_OK)
		return rc;
	tern_ctx_clear_error(j->ctx);
	tern_convert_opts o10;
	const tern_convert_opts *opts = j->opts;
	/* Plugins before ABI 1.2 cannot see head_residual: they would write
	 * a plain 4-bit head without a word. */
	if (d->abi_minor < 2 && opts->head_residual)
		return TERN_E_UNSUPPORTED;
	if (d->abi_minor == 0) {
		/* ABI 1.0 plugins were built when TERN_DTYPE_COUNT was 7 (now
		 * TERN_DTYPE_I4) and know no I4: pass "keep" as they spell it,
		 * and do not ask them for I4 (they decline, as if unsupported). */
		if (opts->head_type == TERN_DTYPE_I4)
			return TERN_E_UNSUPPORTED;
		o10 = *opts;
		if (o10.float_type == TERN_DTYPE_COUNT)
			o10.float_type = TERN_DTYPE_COUNT_ABI_1_0;
		if (o10.head_type == TERN_DTYPE_COUNT)
			o10.head_type = TERN_DTYPE_COUNT_ABI_1_0;
		opts = &o10;
	}
	rc = d->ops->convert(&j->host, j->src_path, j->src, opts, j->w);
	if (rc != TERN_OK && rc != TERN_E_UNSUPPORTED && !*tern_ctx_errmsg(j->ctx))
		tern_error(j->ctx, rc, "%s: plugin '%s' failed to convert it (%s)", j->src_path,
			   d->name, tern_status_str(rc));
	if (rc > 0)
		rc = tern_error(j->ctx, TERN_E_PLUGIN, "%s: plugin '%s' returned status %d",
				j->src_path, d->name, rc);
	return rc;
}

typedef struct write_progress {
	tern_progress_fn fn;
	void *user;
} write_progress;

static int on_write(void *user, uint64_t done, uint64_t total)
{
	write_progress *p = user;
	return p->fn(p->user, "write", (int64_t)done, (int64_t)total);
}

int tern_convert(tern_ctx *ctx, const tern_registry *reg, const char *src_path,
		 const char *dst_path, const tern_convert_opts *opts, tern_progress_fn progress,
		 void *progress_user, const char **by)
{
	if (by)
		*by = NULL;
	if (!src_path || !dst_path || !*dst_path)
		return tern_error(ctx, TERN_E_INVALID, "convert: need a source and an output path");
	tern_convert_opts o;
	int rc = convert_opts(ctx, opts, &o);
	if (rc != TERN_OK)
		return rc;
	tern_file *src = NULL;
	int open_rc = tern_file_open(ctx, src_path, &src);
	char open_msg[TERN_ERRMSG_MAX] = "";
	if (open_rc != TERN_OK) {
		/* Not a format the host reads: a plugin may still know it. */
		if (open_rc != TERN_E_FORMAT && open_rc != TERN_E_UNSUPPORTED)
			return open_rc;
		snprintf(open_msg, sizeof open_msg, "%s", tern_ctx_errmsg(ctx));
	}
	convert_job j = { ctx, src_path, dst_path, src, &o, make_host(ctx, reg), NULL };
	j.host.progress = progress;
	j.host.progress_user = progress_user;
	const tern_plugin_desc *first =
		src && reg ? tern_registry_find_arch(reg, tern_file_architecture(src)) : NULL;
	const tern_plugin_desc *winner = NULL;
	rc = TERN_E_UNSUPPORTED;
	if (first && can_convert(first)) {
		rc = try_plugin(&j, first);
		winner = first;
	}
	for (size_t i = 0; reg && i < reg->n_plugins && rc == TERN_E_UNSUPPORTED; i++) {
		const tern_plugin_desc *d = reg->plugins[i].desc;
		if (d != first && can_convert(d)) {
			rc = try_plugin(&j, d);
			winner = d;
		}
	}
	tern_gguf_conv *generic = NULL;
	if (rc == TERN_E_UNSUPPORTED && src && tern_file_format_of(src) == TERN_FORMAT_GGUF) {
		winner = NULL;
		tern_writer_free(j.w);
		j.w = NULL;
		rc = tern_writer_new(ctx, dst_path, &j.w);
		if (rc == TERN_OK)
			rc = tern_gguf_conv_new(ctx, src, &o, j.w, &generic);
	} else if (rc == TERN_E_UNSUPPORTED && !src) {
		rc = tern_error(ctx, open_rc, "%s (and no plugin converts it)", open_msg);
	} else if (rc == TERN_E_UNSUPPORTED) {
		rc = tern_error(ctx, TERN_E_UNSUPPORTED,
				"%s: no plugin converts this %s input of architecture '%s' (see "
				"`tern plugins`)",
				src_path, tern_file_format_name(src), tern_file_architecture(src));
	}
	write_progress wp = { progress, progress_user };
	if (rc == TERN_OK && progress)
		rc = tern_writer_set_progress(j.w, on_write, &wp);
	if (rc == TERN_OK)
		rc = tern_writer_finish(j.w);
	if (rc == TERN_OK && by)
		*by = winner ? winner->name : "gguf";
	tern_writer_free(j.w);
	tern_gguf_conv_free(generic);
	tern_file_close(src);
	return rc;
}
