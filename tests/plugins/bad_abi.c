/* bad_abi.c: a plugin built for a future ABI major; must be refused. */
#include "tern/plugin.h"

static void nop(void *m) { (void)m; }
static int load(const tern_host *h, const tern_file *f, void **m) { (void)h; (void)f; *m = NULL; return 0; }
static const tern_plugin_ops ops = { .struct_size = sizeof ops, .load = load, .free = nop };
static const char *const archs[] = { "test-bad-abi", NULL };
static const tern_plugin_desc desc = {
	.struct_size = sizeof desc, .abi_major = TERN_PLUGIN_ABI_MAJOR + 1, .abi_minor = 0,
	.name = "test-bad-abi", .version = "1", .architectures = archs, .ops = &ops,
};
TERN_PLUGIN_EXPORT const tern_plugin_desc *tern_plugin_entry(void);
const tern_plugin_desc *tern_plugin_entry(void) { return &desc; }
