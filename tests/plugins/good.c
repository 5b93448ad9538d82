/*
 * good.c: a minimal valid plugin for the registry tests. It implements the
 * architecture "test-good" and provides the component "test-iface" v2.
 */
#include <stdlib.h>

#include "tern/plugin.h"

#ifndef PLUGIN_NAME
#define PLUGIN_NAME "test-good"
#endif

typedef struct test_iface {
	size_t struct_size;
	int (*answer)(void);
} test_iface;

static int answer(void)
{
	return 42;
}

static const test_iface iface = { sizeof iface, answer };

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

static const void *component(const char *interface, uint32_t version)
{
	(void)interface;
	return version == 2 ? &iface : NULL;
}

static const tern_plugin_ops ops = {
	.struct_size = sizeof ops, .load = load, .free = model_free, .component = component,
};
static const char *const archs[] = { "test-good", NULL };
static const tern_component_desc comps[] = { { "test-iface", 2 } };
static const tern_plugin_desc desc = {
	.struct_size = sizeof desc,
	.abi_major = TERN_PLUGIN_ABI_MAJOR,
	.abi_minor = TERN_PLUGIN_ABI_MINOR,
	.name = PLUGIN_NAME,
	.version = "1.2.3",
	.description = "registry test plugin",
	.architectures = archs,
	.components = comps,
	.n_components = 1,
	.ops = &ops,
};

TERN_PLUGIN_EXPORT const tern_plugin_desc *tern_plugin_entry(void);
const tern_plugin_desc *tern_plugin_entry(void)
{
	return &desc;
}
