/*
 * cmd_classify.c: `tern classify -m MODEL IMAGE... [--top K]`: the most
 * probable classes of each image, from any plugin that classifies.
 */
#include <stdio.h>
#include <stdlib.h>

#include "apps/cli.h"
#include "tern/plugin.h"

const char cmd_classify_help[] =
	"usage: tern classify -m MODEL [--top K] [-t THREADS] IMAGE...\n"
	"\n"
	"Prints the K most probable classes of each image (PNG, JPEG, BMP, GIF,\n"
	"TGA, PNM, ...) as `IMAGE<TAB>rank<TAB>label<TAB>probability` (the class\n"
	"number when the model has no labels). Images are preprocessed as the\n"
	"model says (resize, crop, normalization).\n"
	"\n"
	"  -m, --model MODEL    model file (its architecture picks the plugin)\n"
	"  -k, --top K          classes per image (default 1)\n"
	"  -t, --threads N      threads (default: all cores)\n";

int cmd_classify(int argc, char **argv)
{
	const char *model = NULL, *v;
	long top = 1, threads = 0;
	int n_images = 0;
	const char **images = calloc((size_t)argc, sizeof *images);
	if (!images) {
		cli_error("out of memory");
		return CLI_FAIL;
	}
	int bad = 0;
	for (int i = 1; i < argc && !bad; i++) {
		int r;
		if (cli_is_help(argv[i])) {
			fputs(cmd_classify_help, stdout);
			free(images);
			return CLI_OK;
		}
		if ((r = cli_flag_value("classify", argc, argv, &i, "-m", "--model", &model)) != 0)
			bad = r < 0;
		else if ((r = cli_flag_value("classify", argc, argv, &i, "-k", "--top", &v)) != 0)
			bad = r < 0 || cli_parse_int("classify", "--top", v, 1, 1000, &top);
		else if ((r = cli_flag_value("classify", argc, argv, &i, "-t", "--threads", &v)) != 0)
			bad = r < 0 || cli_parse_int("classify", "--threads", v, 0, CLI_MAX_THREADS, &threads);
		else if (argv[i][0] == '-' && argv[i][1])
			bad = cli_usage("classify", "unknown flag '%s'", argv[i]);
		else
			images[n_images++] = argv[i];
	}
	if (bad) {
		free(images);
		return CLI_USAGE;
	}
	if (!model || !n_images) {
		free(images);
		return cli_usage("classify", !model ? "-m MODEL is required" : "no image given");
	}

	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = (int)threads;
	tern_ctx *ctx = NULL;
	tern_registry *reg = NULL;
	tern_model *m = NULL;
	tern_class *cls = calloc((size_t)top, sizeof *cls);
	int status = CLI_FAIL;
	int rc = cls ? tern_ctx_new(&p, &ctx) : TERN_E_NOMEM;
	if (!rc)
		rc = tern_registry_new(ctx, NULL, &reg);
	if (!rc)
		rc = tern_model_load(ctx, reg, model, &m);
	if (rc) {
		cli_error("%s: %s", model, ctx && *tern_ctx_errmsg(ctx) ? tern_ctx_errmsg(ctx) : tern_status_str(rc));
		goto out;
	}
	status = CLI_OK;
	for (int i = 0; i < n_images; i++) {
		tern_image *img = NULL;
		int n = 0;
		rc = tern_image_load(ctx, images[i], &img);
		if (!rc)
			rc = tern_classify(ctx, m, img, (int)top, cls, &n);
		tern_image_free(img);
		if (rc) {
			cli_error("%s: %s", images[i], tern_ctx_errmsg(ctx));
			status = CLI_FAIL;
			continue;
		}
		for (int k = 0; k < n; k++) {
			/* a model without labels names classes by number */
			if (cls[k].label)
				printf("%s\t%d\t%s\t%.6f\n", images[i], k + 1, cls[k].label,
				       (double)cls[k].prob);
			else
				printf("%s\t%d\t%d\t%.6f\n", images[i], k + 1, cls[k].index,
				       (double)cls[k].prob);
		}
	}
out:
	tern_model_free(m);
	tern_registry_free(reg);
	tern_ctx_free(ctx);
	free(cls);
	free(images);
	return status;
}
