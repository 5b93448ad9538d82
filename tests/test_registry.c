/*
 * test_registry.c: plugin discovery and every refusal the loader makes
 * (not a shared object, no entry symbol, wrong ABI major, NULL required op,
 * duplicate name), architecture and component lookup, model loading.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/file.h"
#include "tern/plugin.h"

static char tmpdir[256];

static const char *plugin_dir(void)
{
	static char buf[4096];
	const char *b = getenv("TERN_BUILDDIR");
	snprintf(buf, sizeof buf, "%s/tests/plugins", b ? b : ".");
	return buf;
}

static void make_tmp(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/tern-registry-XXXXXX");
	cr_assert_not_null(mkdtemp(tmpdir));
	char path[512];
	snprintf(path, sizeof path, "%s/fake.so", tmpdir);
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs("this is not an ELF file\n", f);
	fclose(f);
}

static void rm_tmp(void)
{
	char path[512];
	snprintf(path, sizeof path, "%s/fake.so", tmpdir);
	unlink(path);
	snprintf(path, sizeof path, "%s/model.tern", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

static const char *reason_for(const tern_registry *reg, const char *file, int *status)
{
	for (size_t i = 0; i < tern_registry_n_refused(reg); i++) {
		const char *path;
		const char *why = tern_registry_refused(reg, i, &path, status);
		const char *base = strrchr(path, '/');
		if (base && strcmp(base + 1, file) == 0)
			return why;
	}
	return NULL;
}

static tern_registry *open_reg(tern_ctx **ctx)
{
	cr_assert_eq(tern_ctx_new(NULL, ctx), TERN_OK);
	char path[4600];
	snprintf(path, sizeof path, "%s:%s", tmpdir, plugin_dir());
	tern_registry *reg;
	cr_assert_eq(tern_registry_new(*ctx, path, &reg), TERN_OK);
	return reg;
}

TestSuite(registry, .init = make_tmp, .fini = rm_tmp);

Test(registry, refuses_each_bad_plugin_with_its_reason)
{
	tern_ctx *ctx;
	tern_registry *reg = open_reg(&ctx);
	int st;
	const char *why = reason_for(reg, "fake.so", &st);
	cr_assert_not_null(why, "a text file named .so is refused");
	cr_assert_eq(st, TERN_E_PLUGIN);
	cr_assert_not_null(strstr(why, "dlopen"), "%s", why);

	why = reason_for(reg, "no_entry.so", &st);
	cr_assert_not_null(why);
	cr_assert_not_null(strstr(why, "tern_plugin_entry"), "%s", why);

	why = reason_for(reg, "bad_abi.so", &st);
	cr_assert_not_null(why);
	cr_assert_eq(st, TERN_E_ABI);
	char want[64];
	snprintf(want, sizeof want, "plugin ABI %d.0, host ABI %d.%d", TERN_PLUGIN_ABI_MAJOR + 1,
		 TERN_PLUGIN_ABI_MAJOR, TERN_PLUGIN_ABI_MINOR);
	cr_assert_not_null(strstr(why, want), "%s", why);

	why = reason_for(reg, "null_op.so", &st);
	cr_assert_not_null(why);
	cr_assert_not_null(strstr(why, "classify"), "%s", why);

	/* dup.so sorts before good.so, so good.so is the duplicate */
	why = reason_for(reg, "good.so", &st);
	cr_assert_not_null(why);
	cr_assert_not_null(strstr(why, "duplicate plugin name 'test-good'"), "%s", why);

	cr_assert_eq(tern_registry_count(reg), 1, "only one valid plugin remains");
	const char *path;
	const tern_plugin_desc *d = tern_registry_plugin(reg, 0, &path);
	cr_assert_str_eq(d->name, "test-good");
	cr_assert_str_eq(d->version, "1.2.3");
	cr_assert_not_null(strstr(path, "dup.so"));
	cr_assert_eq(tern_registry_n_dirs(reg), 2);
	tern_registry_free(reg);
	tern_ctx_free(ctx);
}

Test(registry, finds_architecture_and_component)
{
	tern_ctx *ctx;
	tern_registry *reg = open_reg(&ctx);
	cr_assert_not_null(tern_registry_find_arch(reg, "test-good"));
	cr_assert_null(tern_registry_find_arch(reg, "test-bad-abi"));
	cr_assert_null(tern_registry_find_arch(reg, "nope"));
	const tern_plugin_desc *prov = NULL;
	typedef struct {
		size_t struct_size;
		int (*answer)(void);
	} test_iface;
	const test_iface *it = tern_registry_component(reg, "test-iface", 2, &prov);
	cr_assert_not_null(it);
	cr_assert_eq(it->answer(), 42);
	cr_assert_str_eq(prov->name, "test-good");
	cr_assert_null(tern_registry_component(reg, "test-iface", 3, NULL));
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "version 3"));
	tern_registry_free(reg);
	tern_ctx_free(ctx);
}

static void write_model(tern_ctx *ctx, const char *arch, char *path, size_t len)
{
	snprintf(path, len, "%s/model.tern", tmpdir);
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, path, &w), TERN_OK);
	if (arch)
		cr_assert_eq(tern_writer_set_architecture(w, arch), TERN_OK);
	cr_assert_eq(tern_writer_finish(w), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_writer_free(w);
}

Test(registry, model_load_picks_the_plugin_by_architecture)
{
	tern_ctx *ctx;
	tern_registry *reg = open_reg(&ctx);
	char path[512];
	write_model(ctx, "test-good", path, sizeof path);
	tern_model *m;
	cr_assert_eq(tern_model_load(ctx, reg, path, &m), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_str_eq(tern_model_plugin(m)->name, "test-good");
	cr_assert_str_eq(tern_file_architecture(tern_model_file(m)), "test-good");
	tern_image img = { 1, 1, (uint8_t[]){ 0, 0, 0 } };
	tern_class cls[1];
	int n;
	cr_assert_eq(tern_classify(ctx, m, &img, 1, cls, &n), TERN_E_UNSUPPORTED);
	tern_model_free(m);

	write_model(ctx, "unknown-arch", path, sizeof path);
	cr_assert_eq(tern_model_load(ctx, reg, path, &m), TERN_E_NOT_FOUND);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "unknown-arch"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_null(m);
	tern_model_free(NULL);
	tern_registry_free(reg);
	tern_ctx_free(ctx);
}

Test(registry, empty_search_path_finds_nothing)
{
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	tern_registry *reg;
	cr_assert_eq(tern_registry_new(ctx, "/nonexistent-dir", &reg), TERN_OK);
	cr_assert_eq(tern_registry_count(reg), 0);
	cr_assert_eq(tern_registry_n_refused(reg), 0);
	tern_registry_free(reg);
	tern_ctx_free(ctx);
}
