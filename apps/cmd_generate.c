/*
 * cmd_generate.c: the language-model commands of `tern`: generate (text
 * from a prompt, streamed), chat (an interactive session in the model's
 * chat format), perplexity (chunked like llama-perplexity), tokenize
 * (ids of a text, from a model or a tokenizer file) and `bench model`
 * (prefill and decode speed like llama-bench's pp/tg, against the
 * bandwidth roofline). All go through generate.h, i.e. the model's
 * plugin's "lm" component.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "apps/cli.h"
#include "tern/generate.h"
#include "tern/plugin.h"

#define MAX_STOPS 16
#define MAX_PROMPT_IDS 1000000

/* ---- shared option handling ------------------------------------------------ */

typedef struct lm_opts {
	const char *model;
	long threads;
	long n_ctx;
	long n_predict;
	tern_sampler_params sp;
	bool seed_given;
	tern_dtype kv_type; /* --kv-type */
} lm_opts;

static void opts_init(lm_opts *o, long n_predict)
{
	memset(o, 0, sizeof *o);
	o->n_predict = n_predict;
	o->sp = tern_sampler_default_params();
	o->kv_type = TERN_DTYPE_F32;
}

/* --kv-type f32|f16. */
static int parse_kv_type(const char *cmd, const char *v, tern_dtype *out)
{
	if (strcmp(v, "f32") == 0)
		*out = TERN_DTYPE_F32;
	else if (strcmp(v, "f16") == 0)
		*out = TERN_DTYPE_F16;
	else
		return cli_usage(cmd, "--kv-type: '%s' is not f32 or f16", v);
	return CLI_OK;
}

#define KV_TYPE_HELP                                                                        \
	"      --kv-type T        KV cache type: f32 (default) or f16 (half the memory and\n" \
	"                         the bytes read per token deep in a context; keys and\n"    \
	"                         values rounded to f16)\n"

/* Matches the flags every LM command shares. 1: consumed; 0: not ours;
 * CLI_USAGE (negative would clash) reported as -1. */
static int common_flag(const char *cmd, int argc, char **argv, int *i, lm_opts *o)
{
	const char *v;
	double d;
	long n;
	int m;

#define VALUE(s, l) ((m = cli_flag_value(cmd, argc, argv, i, s, l, &v)) != 0)
	if (VALUE("-m", "--model")) {
		if (m < 0)
			return -1;
		o->model = v;
	} else if (VALUE("-t", "--threads")) {
		if (m < 0 || cli_parse_int(cmd, "--threads", v, 0, CLI_MAX_THREADS, &o->threads))
			return -1;
	} else if (VALUE("-c", "--ctx")) {
		if (m < 0 || cli_parse_int(cmd, "--ctx", v, 0, INT32_MAX, &o->n_ctx))
			return -1;
	} else if (VALUE(NULL, "--kv-type")) {
		if (m < 0 || parse_kv_type(cmd, v, &o->kv_type))
			return -1;
	} else if (VALUE("-n", "--n-predict")) {
		if (m < 0 || cli_parse_int(cmd, "-n", v, -1, INT32_MAX, &o->n_predict))
			return -1;
	} else if (VALUE(NULL, "--temp")) {
		if (m < 0 || cli_parse_double(cmd, "--temp", v, 0, 100, &d))
			return -1;
		o->sp.temperature = (float)d;
	} else if (VALUE(NULL, "--top-k")) {
		if (m < 0 || cli_parse_int(cmd, "--top-k", v, 0, INT32_MAX, &n))
			return -1;
		o->sp.top_k = (int32_t)n;
	} else if (VALUE(NULL, "--top-p")) {
		if (m < 0 || cli_parse_double(cmd, "--top-p", v, 0, 1, &d))
			return -1;
		o->sp.top_p = (float)d;
	} else if (VALUE(NULL, "--min-p")) {
		if (m < 0 || cli_parse_double(cmd, "--min-p", v, 0, 1, &d))
			return -1;
		o->sp.min_p = (float)d;
	} else if (VALUE(NULL, "--repeat-penalty")) {
		if (m < 0 || cli_parse_double(cmd, "--repeat-penalty", v, 0.01, 100, &d))
			return -1;
		o->sp.repeat_penalty = (float)d;
	} else if (VALUE(NULL, "--repeat-last-n")) {
		if (m < 0 || cli_parse_int(cmd, "--repeat-last-n", v, 0, 1 << 20, &n))
			return -1;
		o->sp.repeat_last_n = (int32_t)n;
	} else if (VALUE("-s", "--seed")) {
		char *end;
		unsigned long long s;

		if (m < 0)
			return -1;
		errno = 0;
		s = strtoull(v, &end, 10);
		if (end == v || *end || errno || v[0] == '-') {
			cli_usage(cmd, "--seed: '%s' is not a whole number >= 0", v);
			return -1;
		}
		o->sp.seed = (uint64_t)s;
		o->seed_given = true;
	} else {
		return 0;
	}
#undef VALUE
	return 1;
}

/* The seed when none was given: differs from run to run, and is printed
 * so a run can be repeated. */
static void pick_seed(lm_opts *o)
{
	struct timespec ts;

	if (o->seed_given)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	o->sp.seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
}

/* A loaded model and what it takes to run it. */
typedef struct lm_run {
	tern_ctx *ctx;
	tern_registry *reg;
	tern_model *model;
	tern_lm *lm;
} lm_run;

static int lib_error(const char *cmd, tern_ctx *ctx, int rc, const char *what)
{
	const char *msg = ctx ? tern_ctx_errmsg(ctx) : "";

	/* Library messages name their file already. */
	if (what && msg && strstr(msg, what))
		what = NULL;
	cli_error("%s: %s%s%s", cmd, what ? what : "", what ? ": " : "",
		  msg && msg[0] ? msg : tern_status_str(rc));
	return CLI_FAIL;
}

static void run_close(lm_run *r)
{
	tern_lm_free(r->lm);
	tern_model_free(r->model);
	tern_registry_free(r->reg);
	tern_ctx_free(r->ctx);
	memset(r, 0, sizeof *r);
}

static int run_open(const char *cmd, const lm_opts *o, lm_run *r)
{
	tern_ctx_params cp = tern_ctx_default_params();
	int rc;

	memset(r, 0, sizeof *r);
	cp.n_threads = (int)o->threads;
	rc = tern_ctx_new(&cp, &r->ctx);
	if (rc)
		return lib_error(cmd, NULL, rc, "creating a context");
	rc = tern_registry_new(r->ctx, NULL, &r->reg);
	if (rc == TERN_OK)
		rc = tern_model_load(r->ctx, r->reg, o->model, &r->model);
	if (rc == TERN_OK)
		rc = tern_lm_from_model(r->ctx, r->model, &r->lm);
	if (rc) {
		lib_error(cmd, r->ctx, rc, o->model);
		run_close(r);
		return CLI_FAIL;
	}
	return CLI_OK;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (!fp)
		return NULL;
	do {
		if (cap - n < 4096) {
			char *p = realloc(buf, cap ? cap * 2 : 65536);

			if (!p) {
				free(buf);
				fclose(fp);
				return NULL;
			}
			buf = p;
			cap = cap ? cap * 2 : 65536;
		}
		got = fread(buf + n, 1, cap - n - 1, fp);
		n += got;
	} while (got > 0);
	if (ferror(fp)) {
		free(buf);
		fclose(fp);
		return NULL;
	}
	fclose(fp);
	buf[n] = '\0';
	*len = n;
	return buf;
}

static void print_speed(const tern_generate_stats *st, uint64_t seed, bool sampled)
{
	double pre = st->prefill_s > 0 ? (st->n_prompt - st->n_reused) / st->prefill_s : 0;
	double dec = st->decode_s > 0 && st->n_generated > 1
			     ? (st->n_generated - 1) / st->decode_s
			     : 0;

	fprintf(stderr,
		"tern: prefill: %d tokens in %.3f s (%.1f tok/s); decode: %d tokens in %.3f s "
		"(%.1f tok/s)",
		(int)(st->n_prompt - st->n_reused), st->prefill_s, pre, (int)st->n_generated,
		st->decode_s, dec);
	if (sampled)
		fprintf(stderr, "; seed %" PRIu64, seed);
	fputc('\n', stderr);
}

/* ---- tern generate ------------------------------------------------------------ */

const char cmd_generate_help[] =
	"usage: tern generate -m MODEL [-p PROMPT | -f FILE | --prompt-ids IDS] [OPTIONS]\n"
	"\n"
	"Generates text from a prompt and streams it to stdout; prefill and decode\n"
	"speed go to stderr.\n"
	"\n"
	"  -m, --model MODEL      model file (its architecture picks the plugin)\n"
	"  -p, --prompt TEXT      the prompt (UTF-8; default empty: start from BOS)\n"
	"  -f, --file FILE        read the prompt from FILE\n"
	"      --prompt-ids IDS   exact token ids, comma separated (nothing added)\n"
	"      --no-bos           do not add BOS to a text prompt\n"
	"      --no-echo          do not print a text prompt before its continuation\n"
	"  -n, --n-predict N      tokens to generate (default 128; -1: until the end\n"
	"                         of text or a full context)\n"
	"  -c, --ctx N            context size in positions (default: the model's)\n"
	KV_TYPE_HELP
	"  -t, --threads N        threads (default: all cores)\n"
	"      --temp T           temperature; 0 = greedy (default 0.8)\n"
	"      --top-k K          keep the K most probable tokens; 0 = off (default 40)\n"
	"      --top-p P          nucleus sampling; 1 = off (default 0.95)\n"
	"      --min-p P          drop tokens below P x the best one; 0 = off (default 0.05)\n"
	"      --repeat-penalty R penalize recent tokens; 1 = off (default 1.0)\n"
	"      --repeat-last-n N  window of the penalty (default 64)\n"
	"  -s, --seed N           random seed (default: from the clock, printed)\n"
	"      --stop TEXT        stop before TEXT (repeatable, up to 16)\n"
	"      --dump-logits FILE write the logits of every prompt position to FILE:\n"
	"                         float32 little-endian [positions][vocabulary]\n"
	"\n"
	"Exit status: 0 on success, 1 on failure (bad model, prompt too long for the\n"
	"context, invalid UTF-8), 2 for a bad command line.\n";

typedef struct gen_out {
	bool any;
	bool last_nl;
} gen_out;

static int on_token(void *user, int32_t id, const char *text, size_t len)
{
	gen_out *g = user;

	(void)id;
	if (len) {
		fwrite(text, 1, len, stdout);
		fflush(stdout);
		g->any = true;
		g->last_nl = text[len - 1] == '\n';
	}
	return 0;
}

typedef struct dump {
	const char *path;
	int status;
} dump;

static int on_logits(void *user, const float *logits, int32_t n, int32_t n_vocab)
{
	dump *d = user;
	FILE *fp = fopen(d->path, "wb");
	size_t count = (size_t)n * (size_t)n_vocab;

	if (!fp || fwrite(logits, sizeof *logits, count, fp) != count || fclose(fp) != 0) {
		cli_error("generate: %s: cannot write the logits: %s", d->path, strerror(errno));
		d->status = CLI_FAIL;
		return 1;
	}
	return 0;
}

static int parse_ids(const char *text, int32_t **ids, size_t *n)
{
	size_t cap = 16;
	const char *p = text;

	*n = 0;
	*ids = malloc(cap * sizeof **ids);
	if (!*ids)
		return cli_usage("generate", "out of memory");
	for (;;) {
		char *end;
		long v;

		errno = 0;
		v = strtol(p, &end, 10);
		if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
			free(*ids);
			*ids = NULL;
			return cli_usage("generate", "--prompt-ids: '%s' is not a list of ids like 1,17,42",
					 text);
		}
		if (*n == cap) {
			int32_t *q = cap < MAX_PROMPT_IDS ? realloc(*ids, 2 * cap * sizeof **ids) : NULL;

			if (!q) {
				free(*ids);
				*ids = NULL;
				return cli_usage("generate", "--prompt-ids: too many ids");
			}
			*ids = q;
			cap *= 2;
		}
		(*ids)[(*n)++] = (int32_t)v;
		if (!*end)
			return CLI_OK;
		p = end + 1;
	}
}

int cmd_generate(int argc, char **argv)
{
	const char *cmd = "generate", *prompt = NULL, *file = NULL, *ids_text = NULL, *v;
	const char *stops[MAX_STOPS];
	size_t n_stops = 0, n_ids = 0, flen;
	int32_t *ids = NULL;
	char *fbuf = NULL;
	bool no_bos = false, echo = true;
	dump d = { NULL, CLI_OK };
	lm_opts o;
	lm_run r;
	gen_out g = { false, true };
	tern_generate_params gp = tern_generate_default_params();
	tern_generate_stats st;
	int status, rc, m;

	opts_init(&o, 128);
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(cmd_generate_help, stdout);
			return CLI_OK;
		}
		if ((m = common_flag(cmd, argc, argv, &i, &o)) != 0) {
			if (m < 0)
				return CLI_USAGE;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, "-p", "--prompt", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			prompt = v;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, "-f", "--file", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			file = v;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, NULL, "--prompt-ids", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			ids_text = v;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, NULL, "--dump-logits", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			d.path = v;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, NULL, "--stop", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			if (n_stops == MAX_STOPS || !v[0])
				return cli_usage(cmd, "--stop: at most %d non-empty strings", MAX_STOPS);
			stops[n_stops++] = v;
		} else if (strcmp(argv[i], "--no-bos") == 0) {
			no_bos = true;
		} else if (strcmp(argv[i], "--no-echo") == 0) {
			echo = false;
		} else {
			return cli_usage(cmd, "unknown option '%s'", argv[i]);
		}
	}
	if (!o.model)
		return cli_usage(cmd, "-m MODEL is required");
	if ((prompt != NULL) + (file != NULL) + (ids_text != NULL) > 1)
		return cli_usage(cmd, "give one of -p, -f and --prompt-ids");
	if (ids_text && parse_ids(ids_text, &ids, &n_ids) != CLI_OK)
		return CLI_USAGE;
	if (file) {
		fbuf = read_file(file, &flen);
		if (!fbuf) {
			cli_error("%s: %s: %s", cmd, file, strerror(errno));
			free(ids);
			return CLI_FAIL;
		}
		if (strlen(fbuf) != flen) {
			cli_error("%s: %s: the prompt holds a NUL byte", cmd, file);
			free(fbuf);
			free(ids);
			return CLI_FAIL;
		}
		prompt = fbuf;
	}
	pick_seed(&o);
	status = run_open(cmd, &o, &r);
	if (status != CLI_OK) {
		free(ids);
		free(fbuf);
		return status;
	}
	gp.prompt = prompt;
	gp.prompt_ids = ids;
	gp.n_prompt_ids = n_ids;
	gp.add_bos = no_bos ? 0 : -1;
	gp.n_predict = (int32_t)o.n_predict;
	gp.n_ctx = (int32_t)o.n_ctx;
	gp.kv_type = o.kv_type;
	gp.sampling = o.sp;
	gp.stop = n_stops ? stops : NULL;
	gp.n_stop = n_stops;
	gp.stats = &st;
	if (d.path) {
		gp.prompt_logits = on_logits;
		gp.prompt_logits_user = &d;
	}
	/* A text prompt is printed first, so the story reads whole. */
	if (echo && prompt && prompt[0]) {
		fputs(prompt, stdout);
		fflush(stdout);
		g.any = true;
		g.last_nl = prompt[strlen(prompt) - 1] == '\n';
	}
	rc = tern_generate(r.ctx, r.model, &gp, on_token, &g);
	if (g.any && !g.last_nl)
		fputc('\n', stdout);
	fflush(stdout);
	if (rc) {
		status = d.status != CLI_OK ? d.status : lib_error(cmd, r.ctx, rc, NULL);
	} else {
		print_speed(&st, o.sp.seed, o.sp.temperature > 0);
	}
	run_close(&r);
	free(ids);
	free(fbuf);
	return status;
}

/* ---- tern chat ------------------------------------------------------------------ */

const char cmd_chat_help[] =
	"usage: tern chat -m MODEL [--system TEXT] [OPTIONS]\n"
	"\n"
	"An interactive conversation: each line read from stdin is a user turn; the\n"
	"model's answer, in its chat format (BitNet b1.58 2B4T: \"System: ...<|eot_id|>\n"
	"User: ...<|eot_id|>Assistant: \"), streams to stdout. The conversation stays\n"
	"in the KV cache, so each turn costs only its new tokens. An empty line is\n"
	"ignored; end of input or a line \"/exit\" ends the chat, \"/reset\" starts a\n"
	"new one. Prompts (\"> \") go to stderr when stdin is a terminal.\n"
	"\n"
	"  -m, --model MODEL      model file\n"
	"      --system TEXT      the system message (default none)\n"
	"  -n, --n-predict N      most tokens per answer (default 512; -1: no limit)\n"
	"  -c, --ctx N            context size (default: the model's)\n"
	KV_TYPE_HELP
	"  -t, --threads N        threads (default: all cores)\n"
	"      --temp, --top-k, --top-p, --min-p, --repeat-penalty, --repeat-last-n,\n"
	"  -s, --seed             sampling, as for 'tern generate'\n"
	"\n"
	"Exit status: 0 at the end of input, 1 on failure (e.g. the context is full),\n"
	"2 for a bad command line.\n";

typedef struct chat_reply {
	char *text;
	size_t len, cap;
	bool failed;
} chat_reply;

static int on_chat_token(void *user, int32_t id, const char *text, size_t len)
{
	chat_reply *c = user;

	(void)id;
	if (!len)
		return 0;
	fwrite(text, 1, len, stdout);
	fflush(stdout);
	if (c->len + len + 1 > c->cap) {
		size_t cap = (c->cap ? c->cap * 2 : 1024) + len;
		char *p = realloc(c->text, cap);

		if (!p) {
			c->failed = true;
			return 1;
		}
		c->text = p;
		c->cap = cap;
	}
	memcpy(c->text + c->len, text, len);
	c->len += len;
	c->text[c->len] = '\0';
	return 0;
}

/* Reads one line (without its newline) into a growing buffer; false at
 * the end of input. */
static bool read_line(char **buf, size_t *cap)
{
	size_t n = 0;
	int c;

	while ((c = getchar()) != EOF && c != '\n') {
		if (n + 2 > *cap) {
			size_t nc = *cap ? *cap * 2 : 256;
			char *p = realloc(*buf, nc);

			if (!p)
				return false;
			*buf = p;
			*cap = nc;
		}
		(*buf)[n++] = (char)c;
	}
	if (c == EOF && n == 0)
		return false;
	if (!*buf) {
		*buf = malloc(1);
		if (!*buf)
			return false;
		*cap = 1;
	}
	(*buf)[n] = '\0';
	if (n && (*buf)[n - 1] == '\r')
		(*buf)[n - 1] = '\0';
	return true;
}

int cmd_chat(int argc, char **argv)
{
	const char *cmd = "chat", *system = NULL, *v;
	lm_opts o;
	lm_run r;
	tern_session *s = NULL;
	tern_chat_msg *msgs = NULL;
	char **owned = NULL;
	size_t n_msgs = 0, cap_msgs = 0, line_cap = 0;
	char *line = NULL;
	bool tty = isatty(0);
	int status, m, rc;

	opts_init(&o, 512);
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(cmd_chat_help, stdout);
			return CLI_OK;
		}
		if ((m = common_flag(cmd, argc, argv, &i, &o)) != 0) {
			if (m < 0)
				return CLI_USAGE;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, NULL, "--system", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			system = v;
		} else {
			return cli_usage(cmd, "unknown option '%s'", argv[i]);
		}
	}
	if (!o.model)
		return cli_usage(cmd, "-m MODEL is required");
	pick_seed(&o);
	status = run_open(cmd, &o, &r);
	if (status != CLI_OK)
		return status;
	rc = tern_session_new_kv(r.ctx, r.lm, (int32_t)o.n_ctx, o.kv_type, &s);
	if (rc) {
		status = lib_error(cmd, r.ctx, rc, "creating the session");
		goto out;
	}
	for (;;) {
		tern_generate_params gp = tern_generate_default_params();
		tern_generate_stats st;
		chat_reply reply = { NULL, 0, 0, false };
		char *text = NULL;
		size_t need = n_msgs + 3;

		if (tty)
			fputs("> ", stderr);
		if (!read_line(&line, &line_cap))
			break;
		if (!line[0])
			continue;
		if (strcmp(line, "/exit") == 0)
			break;
		if (strcmp(line, "/reset") == 0) {
			for (size_t k = 0; k < n_msgs; k++)
				free(owned[k]);
			n_msgs = 0;
			tern_session_reset(s);
			continue;
		}
		if (need > cap_msgs) {
			size_t nc = need * 2;
			tern_chat_msg *nm = realloc(msgs, nc * sizeof *nm);
			char **no;

			if (nm)
				msgs = nm;
			no = nm ? realloc(owned, nc * sizeof *no) : NULL;
			if (!nm || !no) {
				cli_error("%s: out of memory", cmd);
				status = CLI_FAIL;
				goto out;
			}
			owned = no;
			cap_msgs = nc;
		}
		if (n_msgs == 0 && system) {
			owned[n_msgs] = strdup(system);
			msgs[n_msgs].role = "system";
			msgs[n_msgs].content = owned[n_msgs];
			n_msgs++;
		}
		owned[n_msgs] = strdup(line);
		msgs[n_msgs].role = "user";
		msgs[n_msgs].content = owned[n_msgs];
		n_msgs++;
		rc = tern_lm_chat_format(r.ctx, r.lm, msgs, n_msgs, true, &text);
		if (rc) {
			status = lib_error(cmd, r.ctx, rc, "formatting the conversation");
			goto out;
		}
		gp.prompt = text;
		gp.parse_special = true;
		gp.n_predict = (int32_t)o.n_predict;
		gp.sampling = o.sp;
		gp.sampling.seed = o.sp.seed + n_msgs;
		gp.stats = &st;
		/* A base model without an end-of-turn token ends its turn when it
		 * starts writing the user's. */
		{
			static const char *const plain_stops[] = { "\nUser:" };

			if (tern_lm_special(r.lm, TERN_LM_EOT) < 0) {
				gp.stop = plain_stops;
				gp.n_stop = 1;
			}
		}
		{
			/* Answer within what the context has left. */
			int32_t *pids = NULL;
			size_t np = 0;
			int32_t room;

			rc = tern_lm_tokenize(r.ctx, r.lm, text, strlen(text),
					      (tern_lm_wants_bos(r.lm) ? TERN_LM_ADD_BOS : 0) |
						      TERN_LM_PARSE_SPECIAL,
					      &pids, &np);
			free(pids);
			room = rc ? 0 : tern_session_n_ctx(s) - (int32_t)np;
			if (rc == TERN_OK && room < 1)
				rc = tern_error(r.ctx, TERN_E_INVALID,
						"the conversation (%zu tokens) fills the context of "
						"%d: '/reset' starts a new one",
						np, (int)tern_session_n_ctx(s));
			if (rc) {
				free(text);
				status = lib_error(cmd, r.ctx, rc, NULL);
				goto out;
			}
			if (gp.n_predict < 0 || gp.n_predict > room)
				gp.n_predict = room;
		}
		rc = tern_session_generate(r.ctx, s, &gp, on_chat_token, &reply);
		free(text);
		fputc('\n', stdout);
		fflush(stdout);
		if (rc) {
			free(reply.text);
			status = lib_error(cmd, r.ctx, rc, reply.failed ? "out of memory" : NULL);
			goto out;
		}
		if (tty)
			print_speed(&st, gp.sampling.seed, o.sp.temperature > 0);
		owned[n_msgs] = reply.text ? reply.text : strdup("");
		msgs[n_msgs].role = "assistant";
		msgs[n_msgs].content = owned[n_msgs];
		n_msgs++;
	}
out:
	for (size_t k = 0; k < n_msgs; k++)
		free(owned[k]);
	free(owned);
	free(msgs);
	free(line);
	tern_session_free(s);
	run_close(&r);
	return status;
}

/* ---- tern perplexity ------------------------------------------------------------ */

const char cmd_perplexity_help[] =
	"usage: tern perplexity -m MODEL -f TEXT [--ctx N] [--chunks N] [-t THREADS]\n"
	"\n"
	"Perplexity of the model on a text file, computed like llama-perplexity: the\n"
	"text is tokenized once (BOS first when the model wants it) and cut into\n"
	"chunks of N tokens; each chunk starts a fresh context whose first token is\n"
	"replaced by BOS, and only the tokens of its second half are scored (each\n"
	"predicted with at least N/2 tokens of context). The text needs at least\n"
	"2N tokens. Running estimates per chunk go to stderr; the result to stdout:\n"
	"  PPL = X +/- E      (E: standard error from the per-token log-likelihoods)\n"
	"\n"
	"  -m, --model MODEL  model file\n"
	"  -f, --file TEXT    the text (UTF-8)\n"
	"  -c, --ctx N        tokens per chunk (default 512)\n"
	KV_TYPE_HELP
	"      --chunks N     score at most N chunks (default all)\n"
	"  -t, --threads N    threads (default: all cores)\n";

int cmd_perplexity(int argc, char **argv)
{
	const char *cmd = "perplexity", *file = NULL, *v;
	long max_chunks = -1;
	lm_opts o;
	lm_run r;
	tern_session *s = NULL;
	int32_t *ids = NULL, *chunk = NULL, n_vocab, n_ctx, first, bos;
	float *logits = NULL;
	size_t n_ids = 0, len;
	char *text;
	double nll = 0, nll2 = 0;
	int64_t count = 0;
	int status, m, rc;
	long n_chunks;

	opts_init(&o, 0);
	o.n_ctx = 512;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(cmd_perplexity_help, stdout);
			return CLI_OK;
		}
		if ((m = cli_flag_value(cmd, argc, argv, &i, "-f", "--file", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			file = v;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, NULL, "--chunks", &v)) != 0) {
			if (m < 0 || cli_parse_int(cmd, "--chunks", v, 1, INT32_MAX, &max_chunks))
				return CLI_USAGE;
		} else if ((m = common_flag(cmd, argc, argv, &i, &o)) != 0) {
			if (m < 0)
				return CLI_USAGE;
		} else {
			return cli_usage(cmd, "unknown option '%s'", argv[i]);
		}
	}
	if (!o.model || !file)
		return cli_usage(cmd, "-m MODEL and -f TEXT are required");
	if (o.n_ctx < 4)
		return cli_usage(cmd, "--ctx: at least 4 tokens per chunk");
	text = read_file(file, &len);
	if (!text) {
		cli_error("%s: %s: %s", cmd, file, strerror(errno));
		return CLI_FAIL;
	}
	status = run_open(cmd, &o, &r);
	if (status != CLI_OK) {
		free(text);
		return status;
	}
	n_ctx = (int32_t)o.n_ctx;
	n_vocab = tern_lm_n_vocab(r.lm);
	bos = tern_lm_special(r.lm, TERN_LM_BOS);
	rc = tern_lm_tokenize(r.ctx, r.lm, text, len,
			      tern_lm_wants_bos(r.lm) ? TERN_LM_ADD_BOS : 0, &ids, &n_ids);
	if (rc) {
		status = lib_error(cmd, r.ctx, rc, file);
		goto out;
	}
	if (n_ids < 2 * (size_t)n_ctx) {
		cli_error("%s: %s: %zu tokens; a context of %d needs at least %d", cmd, file, n_ids,
			  (int)n_ctx, 2 * (int)n_ctx);
		status = CLI_FAIL;
		goto out;
	}
	n_chunks = (long)(n_ids / (size_t)n_ctx);
	if (max_chunks > 0 && n_chunks > max_chunks)
		n_chunks = max_chunks;
	rc = tern_session_new_kv(r.ctx, r.lm, n_ctx, o.kv_type, &s);
	if (rc) {
		status = lib_error(cmd, r.ctx, rc, "creating the session");
		goto out;
	}
	logits = malloc(sizeof *logits * (size_t)n_ctx * (size_t)n_vocab);
	chunk = malloc(sizeof *chunk * (size_t)n_ctx);
	if (!logits || !chunk) {
		cli_error("%s: out of memory for %d x %d logits", cmd, (int)n_ctx, (int)n_vocab);
		status = CLI_FAIL;
		goto out;
	}
	first = n_ctx / 2;
	fprintf(stderr, "tern: perplexity: %zu tokens, %ld chunks of %d, scoring the last %d of each\n",
		n_ids, n_chunks, (int)n_ctx, (int)(n_ctx - 1 - first));
	for (long c = 0; c < n_chunks; c++) {
		double t0 = now_s();

		memcpy(chunk, ids + (size_t)c * (size_t)n_ctx, sizeof *chunk * (size_t)n_ctx);
		if (bos >= 0 && tern_lm_wants_bos(r.lm))
			chunk[0] = bos;
		tern_session_reset(s);
		rc = tern_session_eval(r.ctx, s, chunk, n_ctx, TERN_LM_LOGITS_ALL, logits);
		if (rc) {
			status = lib_error(cmd, r.ctx, rc, "evaluating");
			goto out;
		}
		for (int32_t j = first; j < n_ctx - 1; j++) {
			const float *row = logits + (size_t)j * (size_t)n_vocab;
			int32_t next = chunk[j + 1];
			double mx = row[0], sum = 0, lp;

			for (int32_t k = 1; k < n_vocab; k++)
				mx = row[k] > mx ? row[k] : mx;
			for (int32_t k = 0; k < n_vocab; k++)
				sum += exp((double)row[k] - mx);
			lp = (double)row[next] - mx - log(sum);
			nll -= lp;
			nll2 += lp * lp;
			count++;
		}
		fprintf(stderr, "[%ld]%.4f (%.2f s)\n", c + 1, exp(nll / (double)count), now_s() - t0);
	}
	{
		double mean = nll / (double)count, var = nll2 / (double)count - mean * mean;
		double err = count > 1 && var > 0 ? sqrt(var / (double)(count - 1)) : 0;
		double ppl = exp(mean);

		printf("PPL = %.4f +/- %.5f\n", ppl, ppl * err);
	}
out:
	free(logits);
	free(chunk);
	free(ids);
	free(text);
	tern_session_free(s);
	run_close(&r);
	return status;
}

/* ---- tern tokenize --------------------------------------------------------------- */

const char cmd_tokenize_help[] =
	"usage: tern tokenize (-m MODEL | --tokenizer FILE) [--no-bos] [--parse-special]\n"
	"                     [-f FILE | TEXT]\n"
	"\n"
	"Prints the token ids of TEXT (or of FILE's contents) on one line, separated\n"
	"by spaces. The tokenizer comes from a model file or from a tokenizer file:\n"
	"Hugging Face tokenizer.json, tiktoken (Llama 3 tokenizer.model), a GGUF\n"
	"vocabulary, SentencePiece tokenizer.model or llama2.c tokenizer.bin.\n"
	"\n"
	"  -m, --model MODEL      take the model's tokenizer\n"
	"      --tokenizer FILE   read a tokenizer file\n"
	"      --no-bos           do not add BOS (default: as the tokenizer says)\n"
	"      --parse-special    spelled control tokens (\"<|eot_id|>\") become their ids\n"
	"  -f, --file FILE        tokenize FILE's contents\n"
	"\n"
	"Exit status: 0 on success, 1 for a tokenizer that cannot be read or text\n"
	"that is not valid UTF-8, 2 for a bad command line.\n";

int cmd_tokenize(int argc, char **argv)
{
	const char *cmd = "tokenize", *tokfile = NULL, *file = NULL, *text = NULL, *v;
	bool no_bos = false, special = false;
	lm_opts o;
	lm_run r;
	char *fbuf = NULL;
	size_t len, n_ids = 0;
	int32_t *ids = NULL;
	unsigned flags = 0;
	int status = CLI_OK, m, rc;

	opts_init(&o, 0);
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(cmd_tokenize_help, stdout);
			return CLI_OK;
		}
		if ((m = cli_flag_value(cmd, argc, argv, &i, "-m", "--model", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			o.model = v;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, NULL, "--tokenizer", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			tokfile = v;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, "-f", "--file", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			file = v;
		} else if (strcmp(argv[i], "--no-bos") == 0) {
			no_bos = true;
		} else if (strcmp(argv[i], "--parse-special") == 0) {
			special = true;
		} else if (strcmp(argv[i], "--") == 0 && i + 1 < argc && !text) {
			text = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return cli_usage(cmd, "unknown option '%s'", argv[i]);
		} else if (text) {
			return cli_usage(cmd, "one TEXT only (quote it)");
		} else {
			text = argv[i];
		}
	}
	if (!o.model == !tokfile)
		return cli_usage(cmd, "give one of -m MODEL and --tokenizer FILE");
	if (!text == !file)
		return cli_usage(cmd, "give one of TEXT and -f FILE");
	if (file) {
		fbuf = read_file(file, &len);
		if (!fbuf) {
			cli_error("%s: %s: %s", cmd, file, strerror(errno));
			return CLI_FAIL;
		}
		text = fbuf;
	} else {
		len = strlen(text);
	}
	o.threads = 1;
	if (o.model) {
		status = run_open(cmd, &o, &r);
		if (status != CLI_OK) {
			free(fbuf);
			return status;
		}
	} else {
		tern_ctx_params cp = tern_ctx_default_params();

		memset(&r, 0, sizeof r);
		cp.n_threads = 1;
		rc = tern_ctx_new(&cp, &r.ctx);
		if (rc == TERN_OK)
			rc = tern_registry_new(r.ctx, NULL, &r.reg);
		if (rc == TERN_OK)
			rc = tern_lm_load_tokenizer(r.ctx, r.reg, tokfile, &r.lm);
		if (rc) {
			status = lib_error(cmd, r.ctx, rc, tokfile);
			goto out;
		}
	}
	if (!no_bos && tern_lm_wants_bos(r.lm))
		flags |= TERN_LM_ADD_BOS;
	if (special)
		flags |= TERN_LM_PARSE_SPECIAL;
	rc = tern_lm_tokenize(r.ctx, r.lm, text, len, flags, &ids, &n_ids);
	if (rc) {
		status = lib_error(cmd, r.ctx, rc, NULL);
		goto out;
	}
	for (size_t i = 0; i < n_ids; i++)
		printf(i ? " %d" : "%d", (int)ids[i]);
	putchar('\n');
out:
	free(ids);
	free(fbuf);
	run_close(&r);
	return status;
}

/* ---- tern bench model ------------------------------------------------------------- */

const char cmd_bench_model_help[] =
	"usage: tern bench model -m MODEL [-t N] [-p 128] [-n 64] [-d 0] [-r 3] [--kv-type T]\n"
	"                        [--bandwidth GBS] [--json]\n"
	"\n"
	"Measures a language model like llama-bench: prefill (pp: one batch of -p\n"
	"tokens on an empty context, or after -d cached tokens) and decode (tg: -n\n"
	"tokens one at a time, each with the output head, likewise), in tokens/s,\n"
	"best of -r runs after one warm-up. Then the bandwidth roofline:\n"
	"bytes_per_token is the weight bytes one decode step reads (every linear\n"
	"layer, the output head, norms, one embedding row), kv_bytes_per_token\n"
	"the KV cache bytes an average step of the decode run reads (a step at\n"
	"position p reads p + 1 positions' keys and values: -d + (-n + 1)/2\n"
	"positions on average; 0 when the model's plugin does not say). The\n"
	"streaming read bandwidth is measured as 'tern bench kernels' does, with\n"
	"the same threads, right before each of -r more decode runs, and each run\n"
	"is set against its own probe: pct = decode tok/s x (bytes_per_token +\n"
	"kv_bytes_per_token) / bandwidth (a shared machine's bandwidth can\n"
	"change between seconds). bandwidth_gbs and pct_roofline are the\n"
	"medians over those pairs, pct_roofline_range their least and greatest;\n"
	"decode_tok_s is the best of all decode runs. --bandwidth skips the probes.\n"
	"peak_rss_bytes is the process's peak resident memory before the bandwidth\n"
	"probe (model, KV cache, buffers). Token ids are a fixed pseudo-random\n"
	"sequence.\n"
	"\n"
	"  -m, --model MODEL  model file\n"
	"  -t, --threads N    threads (default: all cores)\n"
	"  -p N               prefill tokens (default 128)\n"
	"  -n N               decode tokens (default 64)\n"
	"  -d N               depth: prefill and decode after N tokens already in\n"
	"                     the cache, as llama-bench's -d (default 0)\n"
	"  -r N               runs of each (default 3)\n"
	"      --bandwidth G  skip the probe and use G GB/s\n"
	"      --kv-type T    KV cache f32 (default) or f16\n"
	"      --json         one JSON object on stdout: {\"model\", \"threads\",\n"
	"                     \"prefill_tok_s\", \"decode_tok_s\", \"bytes_per_token\",\n"
	"                     \"bandwidth_gbs\", \"pct_roofline\", \"pct_roofline_range\",\n"
	"                     \"peak_rss_bytes\", \"kv_type\", \"depth\",\n"
	"                     \"kv_bytes_per_token\"}\n";

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median of v[0..n) (n >= 1); sorts a copy's worth in place: v is reordered. */
static double median(double *v, long n)
{
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

int cmd_bench_model(int argc, char **argv)
{
	const char *cmd = "bench", *v;
	long n_pp = 128, n_tg = 64, reps = 3, depth = 0;
	double bw = 0, best_pp = INFINITY, best_tg = INFINITY, *pct = NULL, *bws;
	bool json = false, bw_given = false;
	bench_probe *probe = NULL;
	lm_opts o;
	lm_run r;
	tern_session *s = NULL;
	int32_t *ids = NULL, n_vocab;
	float *logits = NULL;
	struct rusage ru;
	int64_t bytes, weight_bytes, kv_bytes;
	long rss;
	int status, m, rc = TERN_OK;

	opts_init(&o, 0);
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(cmd_bench_model_help, stdout);
			return CLI_OK;
		}
		if ((m = cli_flag_value(cmd, argc, argv, &i, "-m", "--model", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			o.model = v;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, "-t", "--threads", &v)) != 0) {
			if (m < 0 || cli_parse_int(cmd, "--threads", v, 0, CLI_MAX_THREADS, &o.threads))
				return CLI_USAGE;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, "-p", NULL, &v)) != 0) {
			if (m < 0 || cli_parse_int(cmd, "-p", v, 1, 1 << 20, &n_pp))
				return CLI_USAGE;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, "-n", NULL, &v)) != 0) {
			if (m < 0 || cli_parse_int(cmd, "-n", v, 1, 1 << 20, &n_tg))
				return CLI_USAGE;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, "-d", NULL, &v)) != 0) {
			if (m < 0 || cli_parse_int(cmd, "-d", v, 0, 1 << 20, &depth))
				return CLI_USAGE;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, "-r", NULL, &v)) != 0) {
			if (m < 0 || cli_parse_int(cmd, "-r", v, 1, 1000, &reps))
				return CLI_USAGE;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, NULL, "--bandwidth", &v)) != 0) {
			if (m < 0 || cli_parse_double(cmd, "--bandwidth", v, 1e-3, 1e6, &bw))
				return CLI_USAGE;
			bw_given = true;
		} else if ((m = cli_flag_value(cmd, argc, argv, &i, NULL, "--kv-type", &v)) != 0) {
			if (m < 0 || parse_kv_type(cmd, v, &o.kv_type))
				return CLI_USAGE;
		} else if (strcmp(argv[i], "--json") == 0) {
			json = true;
		} else {
			return cli_usage(cmd, "unknown option '%s'", argv[i]);
		}
	}
	if (!o.model)
		return cli_usage(cmd, "model: -m MODEL is required");
	status = run_open(cmd, &o, &r);
	if (status != CLI_OK)
		return status;
	n_vocab = tern_lm_n_vocab(r.lm);
	const long span = depth + (n_pp > n_tg ? n_pp : n_tg); /* ids a run reaches */
	if (span + 1 > tern_lm_n_ctx(r.lm)) {
		cli_error("%s: model: -d %ld plus -p %ld / -n %ld exceed the model's context of %d",
			  cmd, depth, n_pp, n_tg, (int)tern_lm_n_ctx(r.lm));
		status = CLI_FAIL;
		goto out;
	}
	ids = malloc(sizeof *ids * (size_t)span);
	logits = malloc(sizeof *logits * (size_t)n_vocab);
	if (!ids || !logits) {
		cli_error("%s: out of memory", cmd);
		status = CLI_FAIL;
		goto out;
	}
	for (long i = 0; i < span; i++)
		ids[i] = (int32_t)(((uint64_t)i * 2654435761u + 7) % (uint64_t)n_vocab);
	rc = tern_session_new_kv(r.ctx, r.lm, (int32_t)span + 1, o.kv_type, &s);
	if (rc)
		goto fail;
	if (!json)
		fprintf(stderr, "tern bench model: %s, %d threads, pp%ld tg%ld at depth %ld, %ld runs\n",
			o.model, tern_ctx_threads(r.ctx), n_pp, n_tg, depth, reps);
	/* Warm-up: page the weights in and size the scratch buffers. */
	rc = tern_session_eval(r.ctx, s, ids, (int32_t)(n_pp < 8 ? n_pp : 8), TERN_LM_LOGITS_LAST,
			       logits);
	if (rc == TERN_OK)
		rc = tern_session_eval(r.ctx, s, ids + 1, 1, TERN_LM_LOGITS_LAST, logits);
	/* The depth: cached once, untimed; every run starts from it. */
	tern_session_reset(s);
	if (rc == TERN_OK && depth > 0)
		rc = tern_session_eval(r.ctx, s, ids, (int32_t)depth, TERN_LM_LOGITS_NONE, NULL);
	const int32_t *run_ids = ids + depth;
	for (long k = 0; k < reps && rc == TERN_OK; k++) {
		double t0;

		rc = tern_session_truncate(r.ctx, s, (int32_t)depth);
		t0 = now_s();
		if (rc == TERN_OK)
			rc = tern_session_eval(r.ctx, s, run_ids, (int32_t)n_pp, TERN_LM_LOGITS_LAST,
					       logits);
		if (now_s() - t0 < best_pp)
			best_pp = now_s() - t0;
		if (rc == TERN_OK)
			rc = tern_session_truncate(r.ctx, s, (int32_t)depth);
		t0 = now_s();
		for (long i = 0; i < n_tg && rc == TERN_OK; i++)
			rc = tern_session_eval(r.ctx, s, run_ids + i, 1, TERN_LM_LOGITS_LAST,
					       logits);
		if (now_s() - t0 < best_tg)
			best_tg = now_s() - t0;
	}
	if (rc)
		goto fail;
	getrusage(RUSAGE_SELF, &ru);
	rss = ru.ru_maxrss;
	weight_bytes = tern_lm_weight_bytes_per_token(r.lm);
	/* A decode run's step i (0-based) is at position depth + i and reads
	 * depth + i + 1 positions of the cache: their mean over the run. */
	kv_bytes = (int64_t)((double)tern_session_kv_bytes_per_position(s) *
			     ((double)depth + (double)(n_tg + 1) / 2.0));
	bytes = weight_bytes + kv_bytes;
	/* The roofline. This machine's bandwidth can change from one second
	 * to the next (a VM beside other tenants), so each of -r more decode
	 * runs comes right after a probe and is set against that probe; the
	 * medians of the pairs are reported, their range too. */
	pct = malloc(sizeof *pct * (size_t)reps * 2);
	if (!pct) {
		cli_error("%s: out of memory", cmd);
		status = CLI_FAIL;
		goto out;
	}
	bws = pct + reps;
	if (bw_given) {
		for (long k = 0; k < reps; k++) {
			bws[k] = bw;
			pct[k] = (double)n_tg / best_tg * (double)bytes / (bw * 1e9) * 100.0;
		}
	} else {
		status = bench_probe_open(r.ctx, &probe);
		for (long k = 0; k < reps && status == CLI_OK && rc == TERN_OK; k++) {
			double t0, dt;

			status = bench_probe_measure(probe, 0.25, &bws[k]);
			if (status != CLI_OK)
				break;
			rc = tern_session_truncate(r.ctx, s, (int32_t)depth);
			t0 = now_s();
			for (long i = 0; i < n_tg && rc == TERN_OK; i++)
				rc = tern_session_eval(r.ctx, s, run_ids + i, 1,
						       TERN_LM_LOGITS_LAST, logits);
			dt = now_s() - t0;
			if (dt < best_tg)
				best_tg = dt;
			pct[k] = (double)n_tg / dt * (double)bytes / (bws[k] * 1e9) * 100.0;
		}
		bench_probe_close(probe);
		if (status != CLI_OK)
			goto out;
		if (rc)
			goto fail;
	}
	{
		double pp = (double)n_pp / best_pp, tg = (double)n_tg / best_tg;
		double pct_lo = pct[0], pct_hi = pct[0];

		for (long k = 1; k < reps; k++) {
			pct_lo = pct[k] < pct_lo ? pct[k] : pct_lo;
			pct_hi = pct[k] > pct_hi ? pct[k] : pct_hi;
		}
		bw = median(bws, reps);
		if (json) {
			printf("{\"model\": ");
			json_string(o.model);
			printf(", \"threads\": %d, \"prefill_tok_s\": %.3f, \"decode_tok_s\": %.3f, "
			       "\"bytes_per_token\": %" PRId64 ", \"bandwidth_gbs\": %.3f, "
			       "\"pct_roofline\": %.2f, \"pct_roofline_range\": [%.2f, %.2f], "
			       "\"peak_rss_bytes\": %lld, \"kv_type\": \"%s\", \"depth\": %ld, "
			       "\"kv_bytes_per_token\": %" PRId64 "}\n",
			       tern_ctx_threads(r.ctx), pp, tg, weight_bytes, bw, median(pct, reps),
			       pct_lo, pct_hi, (long long)rss * 1024, tern_dtype_name(o.kv_type), depth,
			       kv_bytes);
		} else {
			char pp_name[32], tg_name[32];

			snprintf(pp_name, sizeof pp_name, "prefill (pp%ld)", n_pp);
			snprintf(tg_name, sizeof tg_name, "decode (tg%ld)", n_tg);
			printf("model            %s\n", o.model);
			printf("threads          %d\n", tern_ctx_threads(r.ctx));
			printf("%-16s %.2f tok/s\n", pp_name, pp);
			printf("%-16s %.2f tok/s\n", tg_name, tg);
			printf("bytes per token  %.1f MB of weights + %.1f MB of KV cache\n",
			       (double)weight_bytes / 1e6, (double)kv_bytes / 1e6);
			if (bw_given)
				printf("bandwidth        %.2f GB/s (given)\n", bw);
			else
				printf("bandwidth        %.2f GB/s (median of %ld probes)\n", bw, reps);
			printf("roofline         %.1f %% (%.1f tok/s at most; pairs %.1f-%.1f %%)\n",
			       median(pct, reps), bw * 1e9 / (double)bytes, pct_lo, pct_hi);
			printf("peak RSS         %.1f MB\n", (double)rss * 1024 / 1e6);
		}
	}
	goto out;
fail:
	status = lib_error(cmd, r.ctx, rc, "model");
out:
	tern_session_free(s);
	free(ids);
	free(logits);
	free(pct);
	run_close(&r);
	return status;
}
