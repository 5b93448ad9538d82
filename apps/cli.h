/*
 * cli.h: what the `tern` subcommands share: the command signature, exit
 * statuses, and small helpers for messages and flag parsing, so every
 * subcommand reports errors and validates numbers the same way. A
 * subcommand lives in its own file, declares its entry point and help
 * text below, and adds one row to the table in apps/tern.c.
 */
#ifndef TERN_APPS_CLI_H
#define TERN_APPS_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "tern/tensor.h"
#include "tern/tern.h"

/* Exit statuses every subcommand uses. */
enum {
	CLI_OK = 0,    /* success */
	CLI_FAIL = 1,  /* the work failed (I/O, bad model, library error) */
	CLI_USAGE = 2, /* bad command line: unknown command or flag, bad value */
};

/* A subcommand: argv[0] is the subcommand's name ("bench"); returns an
 * exit status above. Help text is printed by `tern help NAME`, by
 * `tern NAME --help`, and by the command itself where it sees -h. */
typedef int (*cli_cmd_fn)(int argc, char **argv);

typedef struct cli_command {
	const char *name;
	cli_cmd_fn run;
	const char *summary; /* one line for `tern help` */
	const char *help;    /* full usage text for `tern help NAME` */
} cli_command;

/* ---- subcommands (one file each) -------------------------------------- */
int cmd_bench(int argc, char **argv);
extern const char cmd_bench_help[];
int cmd_plugins(int argc, char **argv);
extern const char cmd_plugins_help[];
int cmd_classify(int argc, char **argv);
extern const char cmd_classify_help[];
int cmd_generate(int argc, char **argv);
extern const char cmd_generate_help[];
int cmd_chat(int argc, char **argv);
extern const char cmd_chat_help[];
int cmd_perplexity(int argc, char **argv);
extern const char cmd_perplexity_help[];
int cmd_tokenize(int argc, char **argv);
extern const char cmd_tokenize_help[];
/* `tern bench model` (cmd_generate.c), reached through cmd_bench. */
int cmd_bench_model(int argc, char **argv);
extern const char cmd_bench_model_help[];
/* The streaming read bandwidth with ctx's threads, measured as
 * `tern bench kernels` does (bench.c); reports its own errors. */
int bench_bandwidth(tern_ctx *ctx, double *gbs);
/* The same probe, its 1 GiB buffer kept between measurements (each reads
 * it at least 8 times and for at least min_s seconds, best run counts). */
typedef struct bench_probe bench_probe;
int bench_probe_open(tern_ctx *ctx, bench_probe **out);
int bench_probe_measure(bench_probe *p, double min_s, double *gbs);
void bench_probe_close(bench_probe *p);
int cmd_inspect(int argc, char **argv);
extern const char cmd_inspect_help[];
int cmd_convert(int argc, char **argv);
extern const char cmd_convert_help[];
int cmd_eval(int argc, char **argv);
extern const char cmd_eval_help[];

/* ---- messages ---------------------------------------------------------- */

/* "tern: <message>\n" on stderr. */
void cli_error(const char *fmt, ...) TERN_PRINTF(1, 2);

/* A library context with n_threads threads (0: one per core). On failure
 * reports it on stderr and returns CLI_FAIL, else CLI_OK. */
int cli_ctx_new(int n_threads, tern_ctx **ctx);

/* Reports a command-line mistake on stderr, adds "Try 'tern help CMD'."
 * and returns CLI_USAGE, so parsers write `return cli_usage("bench", ...)`. */
int cli_usage(const char *cmd, const char *fmt, ...) TERN_PRINTF(2, 3);

/* ---- flag parsing ------------------------------------------------------ */

/* Whether arg is -h or --help. */
bool cli_is_help(const char *arg);

/*
 * Matches argv[*i] against a flag that takes a value, spelled `shortf`
 * ("-t", may be NULL) or `longf` ("--threads"), in any of the forms
 * `-t N`, `--threads N` and `--threads=N`. Returns 1 and sets *value
 * (pointing into argv) on a match, advancing *i past a separate value;
 * 0 if argv[*i] is a different flag; -1 after reporting a missing value
 * as a usage error of command `cmd` (the caller returns CLI_USAGE).
 */
int cli_flag_value(const char *cmd, int argc, char **argv, int *i, const char *shortf,
		   const char *longf, const char **value);

/* The parsers below report a bad value as a usage error of command `cmd`
 * ("tern: CMD: FLAG: ...", then a hint) and return CLI_USAGE; CLI_OK and
 * *out set otherwise. */

/* A whole decimal integer in [lo, hi]. */
int cli_parse_int(const char *cmd, const char *flag, const char *text, long lo, long hi,
		  long *out);

/* A finite decimal number in [lo, hi]. */
int cli_parse_double(const char *cmd, const char *flag, const char *text, double lo, double hi,
		     double *out);

/* "ROWSxCOLS" with each dimension in [1, max]. */
int cli_parse_shape(const char *cmd, const char *flag, const char *text, int64_t max,
		    int64_t *rows, int64_t *cols);

/* -t/--threads: the most threads a context may be asked for. 0 means
 * all cores. */
#define CLI_MAX_THREADS 1024

#endif
