/*
 * conv.c: a plugin with a convert op, for the `tern convert` tests
 * (tests/test_cli.c). It implements architecture "test-conv" and
 * converts (1) any input the host opened whose architecture is
 * "test-conv", copying its tensors, and (2) its own text format, which
 * the host cannot read: a first line "TESTCONV <what>", where <what> is
 * "ok" (one F32 tensor [2][3] = 1..6), "fail" (a tensor whose bytes
 * cannot be produced, so finish fails), "sigint" (raises SIGINT while
 * the file is being written) or "error" (the op itself fails).
 * Everything else it declines with TERN_E_UNSUPPORTED.
 *
 * Built twice: with -DOLD_OPS it pretends to predate the convert op (its
 * ops struct_size stops before the field) while the field holds an op
 * that fails loudly, so a host that reads past struct_size is caught.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/plugin.h"

static int load(const tern_host *host, const tern_file *file, void **model)
{
	(void)host;
	(void)file;
	*model = malloc(1);
	return *model ? TERN_OK : TERN_E_NOMEM;
}

static void model_free(void *model)
{
	free(model);
}

#if defined(ABI_1_0)
/* Built as for plugin ABI 1.0: reports the options it was handed. */
static int convert(const tern_host *host, const char *src_path, const tern_file *src,
		   const tern_convert_opts *opts, tern_writer *w)
{
	(void)w;
	char line[64] = "";
	FILE *fp = src ? NULL : fopen(src_path, "rb");
	if (!fp)
		return TERN_E_UNSUPPORTED;
	if (!fgets(line, sizeof line, fp))
		line[0] = '\0';
	fclose(fp);
	if (strncmp(line, "TESTCONV10", 10) != 0)
		return TERN_E_UNSUPPORTED;
	return tern_error(host->ctx, TERN_E_FORMAT, "test-conv-10 got float %d head %d",
			  (int)opts->float_type, (int)opts->head_type);
}
#define NAME "test-conv-10"
#define OPS_SIZE sizeof(tern_plugin_ops)
#define ABI_MINOR 0
#elif defined(OLD_OPS)
static int convert(const tern_host *host, const char *src_path, const tern_file *src,
		   const tern_convert_opts *opts, tern_writer *w)
{
	(void)src;
	(void)opts;
	(void)w;
	return tern_error(host->ctx, TERN_E_INTERNAL,
			  "%s: the host called a convert op beyond the ops' struct_size", src_path);
}
#define NAME "test-conv-old"
#define OPS_SIZE offsetof(tern_plugin_ops, convert)
#else
static const float values[6] = { 1, 2, 3, 4, 5, 6 };

static int fill_fail(void *user, const tern_tensor *desc, void *dst)
{
	(void)user;
	(void)desc;
	(void)dst;
	return TERN_E_IO;
}

static int fill_sigint(void *user, const tern_tensor *desc, void *dst)
{
	(void)user;
	memcpy(dst, values, desc->nbytes);
	raise(SIGINT);
	return TERN_OK;
}

static int own_format(const tern_host *host, const char *src_path, tern_writer *w)
{
	char line[64] = "";
	FILE *fp = fopen(src_path, "rb");
	if (!fp)
		return TERN_E_UNSUPPORTED;
	if (!fgets(line, sizeof line, fp))
		line[0] = '\0';
	fclose(fp);
	if (strncmp(line, "TESTCONV ", 9) != 0)
		return TERN_E_UNSUPPORTED;
	const char *what = line + 9;
	if (strncmp(what, "error", 5) == 0)
		return tern_error(host->ctx, TERN_E_FORMAT, "%s: test-conv refuses this file",
				  src_path);
	tern_tensor t = { "w", TERN_DTYPE_F32, 2, { 2, 3 }, { 0 }, (void *)values,
			  sizeof values };
	int rc = tern_writer_set_architecture(w, "test-conv");
	if (rc == TERN_OK)
		rc = tern_writer_set_json(w, "metadata", "{\"converted_by\":\"test-conv\"}");
	if (rc == TERN_OK)
		rc = tern_writer_add_tensor(w, &t);
	if (rc != TERN_OK || strncmp(what, "ok", 2) == 0)
		return rc;
	t.name = "late";
	if (strncmp(what, "fail", 4) == 0)
		return tern_writer_add_tensor_fn(w, &t, fill_fail, NULL);
	if (strncmp(what, "sigint", 6) == 0) {
		rc = tern_writer_add_tensor_fn(w, &t, fill_sigint, NULL);
		t.name = "after";
		return rc == TERN_OK ? tern_writer_add_tensor(w, &t) : rc;
	}
	return TERN_E_UNSUPPORTED;
}

static int convert(const tern_host *host, const char *src_path, const tern_file *src,
		   const tern_convert_opts *opts, tern_writer *w)
{
	(void)opts;
	if (!src)
		return own_format(host, src_path, w);
	if (strcmp(tern_file_architecture(src), "test-conv") != 0)
		return TERN_E_UNSUPPORTED;
	int rc = tern_writer_set_architecture(w, "test-conv");
	if (rc == TERN_OK)
		rc = tern_writer_set_json(w, "metadata", "{\"converted_by\":\"test-conv\"}");
	for (size_t i = 0; i < tern_file_n_tensors(src) && rc == TERN_OK; i++)
		rc = tern_writer_add_tensor_ref(w, tern_file_tensor(src, i));
	return rc;
}
#define NAME "test-conv"
#define OPS_SIZE sizeof(tern_plugin_ops)
#endif

#ifndef ABI_MINOR
#define ABI_MINOR TERN_PLUGIN_ABI_MINOR
#endif

static const tern_plugin_ops ops = {
	.struct_size = OPS_SIZE, .load = load, .free = model_free, .convert = convert,
};
static const char *const archs[] = { NAME, NULL };
static const tern_plugin_desc desc = {
	.struct_size = sizeof desc,
	.abi_major = TERN_PLUGIN_ABI_MAJOR,
	.abi_minor = ABI_MINOR,
	.name = NAME,
	.version = "0.1",
	.description = "convert test plugin",
	.architectures = archs,
	.ops = &ops,
};

TERN_PLUGIN_EXPORT const tern_plugin_desc *tern_plugin_entry(void);
const tern_plugin_desc *tern_plugin_entry(void)
{
	return &desc;
}
