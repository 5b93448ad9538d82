/*
 * plugin.c: the text plugin's descriptor, the one symbol the module
 * exports. It claims the BitNet decoder architectures, loads a model as
 * a text_lm (decoder + tokenizer, lm.c), offers the "lm" component,
 * version 1, through which the host generates text (TERN_TASK_GENERATE)
 * and other plugins drive the decoder, and converts foreign checkpoints
 * (convert.h) for `tern convert`.
 */
#include <string.h>

#include "plugins/text/convert.h"
#include "plugins/text/lm.h"
#include "tern/plugin.h"

static const void *text_component(const char *interface, uint32_t version)
{
	if (strcmp(interface, TERN_LM_INTERFACE) == 0 && version == TERN_LM_VERSION)
		return &text_lm_iface;
	return NULL;
}

static const tern_plugin_ops ops = {
	.struct_size = sizeof ops,
	.load = text_lm_load,
	.free = text_lm_free,
	.component = text_component,
	.convert = text_convert,
};

/* llama.cpp's "bitnet"; bitnet.cpp names BitNet b1.58 2B4T "bitnet-b1.58"
 * (and, in an earlier release, "bitnet-25"); "bitllama2c" is what
 * text_convert makes of bitllama2.c's ak42 checkpoints. */
static const char *const architectures[] = { "bitnet", "bitnet-b1.58", "bitnet-25",
					     "bitllama2c", NULL };

static const tern_component_desc components[] = {
	{ TERN_LM_INTERFACE, TERN_LM_VERSION },
};

static const tern_plugin_desc desc = {
	.struct_size = sizeof desc,
	.abi_major = TERN_PLUGIN_ABI_MAJOR,
	.abi_minor = TERN_PLUGIN_ABI_MINOR,
	.name = "text",
	.version = "0.1.0",
	.description = "text: BitNet b1.58 language models",
	.architectures = architectures,
	.components = components,
	.n_components = sizeof components / sizeof components[0],
	.tasks = TERN_TASK_GENERATE,
	.flags = TERN_PLUGIN_FLAG_SHARED_MODEL,
	.ops = &ops,
};

TERN_PLUGIN_EXPORT const tern_plugin_desc *tern_plugin_entry(void);

const tern_plugin_desc *tern_plugin_entry(void)
{
	return &desc;
}
