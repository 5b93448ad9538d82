/*
 * cmd_convert.c: `tern convert IN OUT.tern`: import a GGUF file, a
 * safetensors file, a Hugging Face directory or a plugin's own format into
 * a .tern file through tern_convert (the plugins decide how; GGUF has a
 * generic fallback). A progress bar goes to stderr when it is a terminal
 * (or with --progress). Ctrl-C (SIGINT) or SIGTERM cancels through the
 * progress callback, so the library removes its temporary file and OUT
 * never appears half written.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "apps/cli.h"
#include "tern/matmul.h"
#include "tern/plugin.h"

const char cmd_convert_help[] =
	"usage: tern convert IN OUT.tern [--type t2|t3] [--float f32|f16|bf16|keep]\n"
	"                    [--head i4r|i8|i4|f32|f16|bf16] [--progress] [--quiet]\n"
	"                    [--plugin-path DIRS]\n"
	"\n"
	"Converts IN (a GGUF file, a safetensors file, a Hugging Face checkpoint\n"
	"directory, or a format a plugin reads) into the .tern file OUT. The plugin\n"
	"implementing IN's architecture converts it; if none does, every other\n"
	"plugin with a converter is asked; a GGUF nobody claims gets the generic\n"
	"conversion (all key/values kept under \"gguf\", tensors by name).\n"
	"OUT is written to OUT.tmp and renamed at the end: a failed or interrupted\n"
	"conversion leaves no OUT and no OUT.tmp.\n"
	"\n"
	"  --type T           ternary packing: t2 (2 bits, the default: the fastest\n"
	"                     to decode on every kernel path) or t3 (1.6 bits: a\n"
	"                     20% smaller file, decoded with more arithmetic per\n"
	"                     byte; faster only where memory is slow for the\n"
	"                     cores); both run everywhere\n"
	"  --float T          float matrices: f32, f16, bf16, or keep (default;\n"
	"                     GGUF Q8_0 becomes f32). 1-D tensors keep their type\n"
	"  --head T           token embedding and output head: i4r (4-bit codes\n"
	"                     plus a 4-bit residual: the head reads 4 bits per\n"
	"                     weight and refines its best candidates to about\n"
	"                     int8 precision), i8 (per-row int8), i4 (4-bit, f16\n"
	"                     scale per 128 weights), f32, f16 or bf16. Default:\n"
	"                     i4r for BitNet checkpoints from Hugging Face (2B4T,\n"
	"                     1bitLLM) unless --float is given, else as --float\n"
	"  --progress         draw the progress bar even if stderr is not a terminal\n"
	"  -q, --quiet        no progress bar and no summary line\n"
	"  --plugin-path DIRS search only these colon-separated plugin directories\n"
	"\n"
	"Exit status: 0 done, 1 failed, 2 bad command line, 130 interrupted.\n";

/* Set by SIGINT/SIGTERM, read by the progress callback. */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

typedef struct bar {
	bool draw;
	bool drawn;
	int last_pct;
	const char *last_stage;
} bar;

static int on_progress(void *user, const char *stage, int64_t done, int64_t total)
{
	bar *b = user;
	if (interrupted)
		return 1;
	if (!b->draw || total <= 0)
		return 0;
	int pct = (int)(done * 100 / total);
	if (pct == b->last_pct && stage == b->last_stage)
		return 0;
	b->last_pct = pct;
	b->last_stage = stage;
	char cells[41];
	int fill = pct * 40 / 100;
	for (int i = 0; i < 40; i++)
		cells[i] = i < fill ? '#' : ' ';
	cells[40] = '\0';
	if (strcmp(stage, "write") == 0)
		fprintf(stderr, "\rtern convert: [%s] %3d%% %.1f/%.1f MB", cells, pct,
			(double)done / 1e6, (double)total / 1e6);
	else
		fprintf(stderr, "\rtern convert: %-8.8s [%s] %3d%%", stage, cells, pct);
	b->drawn = true;
	return 0;
}

static int parse_dtype(const char *flag, const char *v, const char *const *names,
		       const tern_dtype *types, size_t n, tern_dtype *out)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v, names[i]) == 0) {
			*out = types[i];
			return CLI_OK;
		}
	return cli_usage("convert", "%s: unknown type '%s'", flag, v);
}

int cmd_convert(int argc, char **argv)
{
	static const char *const tnames[] = { "t2", "t3" };
	static const tern_dtype ttypes[] = { TERN_DTYPE_T2, TERN_DTYPE_T3 };
	static const char *const fnames[] = { "f32", "f16", "bf16", "keep" };
	static const tern_dtype ftypes[] = { TERN_DTYPE_F32, TERN_DTYPE_F16, TERN_DTYPE_BF16,
					     TERN_DTYPE_COUNT };
	static const char *const hnames[] = { "i8", "i4", "f32", "f16", "bf16", "i4r" };
	static const tern_dtype htypes[] = { TERN_DTYPE_I8,  TERN_DTYPE_I4,   TERN_DTYPE_F32,
					     TERN_DTYPE_F16, TERN_DTYPE_BF16, TERN_DTYPE_I4 };
	tern_convert_opts opts = tern_convert_default_opts();
	const char *in = NULL, *out = NULL, *plugin_path = NULL, *v;
	bool force_bar = false, quiet = false, type_given = false;
	for (int i = 1; i < argc; i++) {
		int r, rc = CLI_OK;
		if (cli_is_help(argv[i])) {
			fputs(cmd_convert_help, stdout);
			return CLI_OK;
		}
		if ((r = cli_flag_value("convert", argc, argv, &i, NULL, "--type", &v)) != 0) {
			if (r > 0)
				rc = parse_dtype("--type", v, tnames, ttypes, 2, &opts.ternary_type);
			type_given = true;
		} else if ((r = cli_flag_value("convert", argc, argv, &i, NULL, "--float", &v)) != 0) {
			if (r > 0)
				rc = parse_dtype("--float", v, fnames, ftypes, 4, &opts.float_type);
		} else if ((r = cli_flag_value("convert", argc, argv, &i, NULL, "--head", &v)) != 0) {
			if (r > 0)
				rc = parse_dtype("--head", v, hnames, htypes, 6, &opts.head_type);
			opts.head_residual = r > 0 && strcmp(v, "i4r") == 0;
		} else if ((r = cli_flag_value("convert", argc, argv, &i, NULL, "--plugin-path",
					       &plugin_path)) != 0) {
		} else if (strcmp(argv[i], "--progress") == 0) {
			force_bar = true;
		} else if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0) {
			quiet = true;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return cli_usage("convert", "unknown option '%s'", argv[i]);
		} else if (!in) {
			in = argv[i];
		} else if (!out) {
			out = argv[i];
		} else {
			return cli_usage("convert", "unexpected argument '%s'", argv[i]);
		}
		if (r < 0)
			return CLI_USAGE;
		if (rc != CLI_OK)
			return rc;
	}
	if (!in || !out)
		return cli_usage("convert", "need an input and an output file");

	tern_ctx *ctx;
	if (cli_ctx_new(0, &ctx) != CLI_OK)
		return CLI_FAIL;
	tern_registry *reg;
	int rc = tern_registry_new(ctx, plugin_path, &reg);
	if (rc) {
		cli_error("%s", tern_ctx_errmsg(ctx));
		tern_ctx_free(ctx);
		return CLI_FAIL;
	}
	struct sigaction sa, old_int, old_term;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	bar b = { !quiet && (force_bar || isatty(STDERR_FILENO)), false, -1, NULL };
	const char *by = NULL;
	rc = tern_convert(ctx, reg, in, out, &opts, on_progress, &b, &by);
	if (b.drawn)
		fputc('\n', stderr);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	int status = CLI_OK;
	if (rc == TERN_E_CANCELLED) {
		cli_error("%s: interrupted; %s was not written", in, out);
		status = 128 + SIGINT;
	} else if (rc) {
		cli_error("%s", tern_ctx_errmsg(ctx));
		status = CLI_FAIL;
	} else if (!quiet) {
		if (strcmp(by, "gguf") == 0)
			printf("%s: converted from %s by the generic GGUF conversion", out, in);
		else
			printf("%s: converted from %s by plugin '%s'", out, in, by);
		printf(" (ternary packing %s%s)\n", tern_dtype_name(opts.ternary_type),
		       type_given ? "" : ", the default");
	}
	tern_registry_free(reg);
	tern_ctx_free(ctx);
	return status;
}
