/*
 * plugin.c: the text plugin's descriptor, the one symbol the module
 * exports. It claims the BitNet decoder architectures and, for now, only
 * loads and frees models (model.h): the generation task and the "lm"
 * component arrive with the ABI additions that carry them.
 */
#include "plugins/text/model.h"
#include "tern/plugin.h"

static int text_load(const tern_host *host, const tern_file *file, void **out)
{
	text_model *m;
	int rc = text_model_load(host->ctx, file, &m);
	if (rc == TERN_OK)
		*out = m;
	return rc;
}

static void text_free(void *model)
{
	text_model_free(model);
}

static const tern_plugin_ops ops = {
	.struct_size = sizeof ops,
	.load = text_load,
	.free = text_free,
};

/* llama.cpp's "bitnet"; bitnet.cpp names BitNet b1.58 2B4T "bitnet-b1.58"
 * (and, in an earlier release, "bitnet-25"). */
static const char *const architectures[] = { "bitnet", "bitnet-b1.58", "bitnet-25", NULL };

static const tern_plugin_desc desc = {
	.struct_size = sizeof desc,
	.abi_major = TERN_PLUGIN_ABI_MAJOR,
	.abi_minor = TERN_PLUGIN_ABI_MINOR,
	.name = "text",
	.version = "0.1.0",
	.description = "text: BitNet b1.58 language models",
	.architectures = architectures,
	.flags = TERN_PLUGIN_FLAG_SHARED_MODEL,
	.ops = &ops,
};

TERN_PLUGIN_EXPORT const tern_plugin_desc *tern_plugin_entry(void);

const tern_plugin_desc *tern_plugin_entry(void)
{
	return &desc;
}
