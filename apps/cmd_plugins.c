/*
 * cmd_plugins.c: `tern plugins`: every plugin the registry found, with
 * what it offers, and every file it refused with the reason.
 */
#include <stdio.h>
#include <string.h>

#include "apps/cli.h"
#include "tern/plugin.h"

const char cmd_plugins_help[] =
	"usage: tern plugins [--path DIRS]\n"
	"\n"
	"Lists the plugins found on the search path (TERN_PLUGIN_PATH, then the\n"
	"build tree, then the installed plugin directory) with their version,\n"
	"ABI, architectures, components, tasks and file, then every file that was\n"
	"refused and why.\n"
	"\n"
	"  --path DIRS   search only these colon-separated directories\n";

static void print_tasks(uint32_t tasks)
{
	static const struct {
		uint32_t bit;
		const char *name;
	} names[] = {
		{ TERN_TASK_CLASSIFY, "classify" }, { TERN_TASK_GENERATE, "generate" },
		{ TERN_TASK_CAPTION, "caption" },   { TERN_TASK_IMAGINE, "imagine" },
		{ TERN_TASK_ACT, "act" },
	};
	const char *sep = "";
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (tasks & names[i].bit) {
			printf("%s%s", sep, names[i].name);
			sep = ", ";
		}
	if (!*sep)
		printf("-");
	printf("\n");
}

int cmd_plugins(int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(cmd_plugins_help, stdout);
			return CLI_OK;
		}
		int r = cli_flag_value("plugins", argc, argv, &i, NULL, "--path", &path);
		if (r < 0)
			return CLI_USAGE;
		if (r == 0)
			return cli_usage("plugins", "unknown argument '%s'", argv[i]);
	}
	tern_ctx *ctx;
	if (cli_ctx_new(1, &ctx) != CLI_OK)
		return CLI_FAIL;
	tern_registry *reg;
	int rc = tern_registry_new(ctx, path, &reg);
	if (rc) {
		cli_error("%s", tern_ctx_errmsg(ctx));
		tern_ctx_free(ctx);
		return CLI_FAIL;
	}
	printf("search path:\n");
	for (size_t i = 0; i < tern_registry_n_dirs(reg); i++)
		printf("  %s\n", tern_registry_dir(reg, i));
	printf("\n%zu plugin%s (host ABI %d.%d):\n", tern_registry_count(reg),
	       tern_registry_count(reg) == 1 ? "" : "s", TERN_PLUGIN_ABI_MAJOR, TERN_PLUGIN_ABI_MINOR);
	for (size_t i = 0; i < tern_registry_count(reg); i++) {
		const char *file;
		const tern_plugin_desc *d = tern_registry_plugin(reg, i, &file);
		printf("  %s %s (ABI %u.%u)\n", d->name, d->version, d->abi_major, d->abi_minor);
		if (d->description)
			printf("    %s\n", d->description);
		printf("    architectures: ");
		for (const char *const *a = d->architectures; *a; a++)
			printf("%s%s", *a, a[1] ? ", " : "");
		printf("\n    components:    ");
		for (size_t c = 0; c < d->n_components; c++)
			printf("%s v%u%s", d->components[c].interface, d->components[c].version,
			       c + 1 < d->n_components ? ", " : "");
		printf("%s\n    tasks:         ", d->n_components ? "" : "-");
		print_tasks(d->tasks);
		printf("    file:          %s\n", file);
	}
	size_t nref = tern_registry_n_refused(reg);
	if (nref) {
		printf("\n%zu refused:\n", nref);
		for (size_t i = 0; i < nref; i++) {
			const char *file;
			int status;
			const char *why = tern_registry_refused(reg, i, &file, &status);
			printf("  %s\n    %s: %s\n", file, tern_status_str(status), why);
		}
	}
	tern_registry_free(reg);
	tern_ctx_free(ctx);
	return CLI_OK;
}
