/*
 * tern.c: the `tern` command-line tool's entry point: the table of
 * subcommands, `tern help [CMD]`, `tern --version`, and the flag-parsing
 * and message helpers declared in cli.h. A new subcommand is one file
 * plus one row in `commands` below. Uses only the public API.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/cli.h"
#include "tern/matmul.h"
#include "tern/tern.h"

static const cli_command commands[] = {
	{ "bench", cmd_bench, "measure kernel speed against this machine's limits",
	  cmd_bench_help },
	{ "plugins", cmd_plugins, "list plugins found and files refused", cmd_plugins_help },
	{ "classify", cmd_classify, "classify images with a model", cmd_classify_help },
	{ "generate", cmd_generate, "generate text from a prompt with a language model",
	  cmd_generate_help },
	{ "chat", cmd_chat, "chat with a language model", cmd_chat_help },
	{ "perplexity", cmd_perplexity, "perplexity of a language model on a text",
	  cmd_perplexity_help },
	{ "tokenize", cmd_tokenize, "token ids of a text (model or tokenizer file)",
	  cmd_tokenize_help },
	{ "inspect", cmd_inspect, "describe a model file: metadata, tokenizer, tensors",
	  cmd_inspect_help },
	{ "convert", cmd_convert, "convert GGUF, safetensors or HF checkpoints to .tern",
	  cmd_convert_help },
	{ "eval", cmd_eval, "measure a model on a data set (eval classify)", cmd_eval_help },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

/* ---- messages ---------------------------------------------------------- */

void cli_error(const char *fmt, ...)
{
	va_list ap;

	fputs("tern: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_ctx_new(int n_threads, tern_ctx **ctx)
{
	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = n_threads;
	int rc = tern_ctx_new(&p, ctx);
	if (rc) {
		cli_error("cannot create a context: %s", tern_status_str(rc));
		return CLI_FAIL;
	}
	return CLI_OK;
}

int cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("tern: ", stderr);
	if (cmd)
		fprintf(stderr, "%s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'tern help%s%s'.\n", cmd ? " " : "", cmd ? cmd : "");
	return CLI_USAGE;
}

/* ---- flag parsing ------------------------------------------------------ */

bool cli_is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

int cli_flag_value(const char *cmd, int argc, char **argv, int *i, const char *shortf,
		   const char *longf, const char **value)
{
	const char *arg = argv[*i];
	const char *name = NULL;

	if (shortf && strcmp(arg, shortf) == 0) {
		name = shortf;
	} else if (longf && strcmp(arg, longf) == 0) {
		name = longf;
	} else if (longf) {
		size_t n = strlen(longf);

		if (strncmp(arg, longf, n) == 0 && arg[n] == '=') {
			*value = arg + n + 1;
			return 1;
		}
	}
	if (!name)
		return 0;
	if (*i + 1 >= argc) {
		cli_usage(cmd, "option '%s' needs a value", name);
		return -1;
	}
	*i += 1;
	*value = argv[*i];
	return 1;
}

int cli_parse_int(const char *cmd, const char *flag, const char *text, long lo, long hi,
		  long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (end == text || *end != '\0') {
		return cli_usage(cmd, "%s: '%s' is not a whole number", flag, text);
	}
	if (errno == ERANGE || v < lo || v > hi) {
		return cli_usage(cmd, "%s: %s is out of range (%ld..%ld)", flag, text, lo, hi);
	}
	*out = v;
	return CLI_OK;
}

int cli_parse_double(const char *cmd, const char *flag, const char *text, double lo, double hi,
		     double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (end == text || *end != '\0' || !isfinite(v)) {
		return cli_usage(cmd, "%s: '%s' is not a number", flag, text);
	}
	if (errno == ERANGE || v < lo || v > hi) {
		return cli_usage(cmd, "%s: %s is out of range (%g..%g)", flag, text, lo, hi);
	}
	*out = v;
	return CLI_OK;
}

/* One dimension of a shape: digits only (strtoll would take signs and
 * spaces), then the given terminator. */
static int parse_dim(const char *s, char stop, int64_t max, int64_t *out, const char **rest)
{
	int64_t v = 0;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (*p - '0');
		if (v > max)
			return -1;
	}
	if (*p != stop || v < 1)
		return -1;
	*out = v;
	*rest = p;
	return 0;
}

int cli_parse_shape(const char *cmd, const char *flag, const char *text, int64_t max,
		    int64_t *rows, int64_t *cols)
{
	const char *rest;

	if (parse_dim(text, 'x', max, rows, &rest) != 0 ||
	    parse_dim(rest + 1, '\0', max, cols, &rest) != 0)
		return cli_usage(cmd, "%s: '%s' is not a shape ROWSxCOLS with each in 1..%lld",
				 flag, text, (long long)max);
	return CLI_OK;
}

/* ---- help and version -------------------------------------------------- */

static const cli_command *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void print_overview(FILE *f)
{
	fputs("Usage: tern COMMAND [ARGS...]\n"
	      "       tern help [COMMAND]\n"
	      "       tern --version\n"
	      "\n"
	      "Runs ternary neural networks on CPUs.\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fputs("\n'tern help COMMAND' describes one command. Exit status: 0 on success, 1 when\n"
	      "the work fails, 2 for a bad command line.\n",
	      f);
}

static int print_version(void)
{
	printf("tern %s\nkernels:", tern_version());
	for (int p = 0; p < TERN_KERNEL_COUNT; p++)
		if (tern_kernel_available((tern_kernel_path)p))
			printf(" %s", tern_kernel_path_name((tern_kernel_path)p));
	printf(" (default %s)\n", tern_kernel_path_name(tern_kernel_detect()));
	return CLI_OK;
}

static int cmd_help(int argc, char **argv)
{
	const cli_command *c;

	if (argc < 2 || cli_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
		print_overview(stdout);
		return CLI_OK;
	}
	if (argc > 2)
		return cli_usage("help", "expected one command name, got %d", argc - 1);
	c = find_command(argv[1]);
	if (!c)
		return cli_usage(NULL, "unknown command '%s'", argv[1]);
	fputs(c->help, stdout);
	return CLI_OK;
}

static int finish(int status)
{
	/* A full disk or closed pipe shows up only when stdout is flushed;
	 * scripts reading our output must not mistake it for success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		cli_error("writing output: %s", strerror(errno));
		return status == CLI_OK ? CLI_FAIL : status;
	}
	return status;
}

int main(int argc, char **argv)
{
	const cli_command *c;
	const char *name;

	if (argc < 2) {
		print_overview(stderr);
		return CLI_USAGE;
	}
	name = argv[1];
	if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0 ||
	    strcmp(name, "version") == 0)
		return finish(print_version());
	if (cli_is_help(name) || strcmp(name, "help") == 0)
		return finish(cmd_help(argc - 1, argv + 1));
	if (name[0] == '-')
		return cli_usage(NULL, "unknown option '%s'", name);
	c = find_command(name);
	if (!c)
		return cli_usage(NULL, "unknown command '%s'", name);
	if (argc == 3 && cli_is_help(argv[2])) {
		fputs(c->help, stdout);
		return finish(CLI_OK);
	}
	return finish(c->run(argc - 1, argv + 1));
}
