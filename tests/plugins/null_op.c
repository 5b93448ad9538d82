/* null_op.c: a plugin that offers classification but has no classify op. */
#include "tern/plugin.h"

static void nop(void *m) { (void)m; }
static int load(const tern_host *h, const tern_file *f, void **m) { (void)h; (void)f; *m = NULL; return 0; }
static const tern_plugin_ops ops = { .struct_size = sizeof ops, .load = load, .free = nop };
static const char *const archs[] = { "test-null-op", NULL };
static const tern_plugin_desc desc = {
	.struct_size = sizeof desc, .abi_major = TERN_PLUGIN_ABI_MAJOR, .abi_minor = TERN_PLUGIN_ABI_MINOR,
	.name = "test-null-op", .version = "1", .architectures = archs, .tasks = TERN_TASK_CLASSIFY,
	.ops = &ops,
};
TERN_PLUGIN_EXPORT const tern_plugin_desc *tern_plugin_entry(void);
const tern_plugin_desc *tern_plugin_entry(void) { return &desc; }
