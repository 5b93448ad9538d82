/*
 * cmd_inspect.c: `tern inspect FILE [--json]`: what a model file holds,
 * whatever its format (.tern, GGUF, safetensors, a Hugging Face
 * directory): format and version, architecture, hyper-parameters, other
 * metadata, a tokenizer summary, the tensor table as stored, totals and
 * effective bits per weight. The report is built once as a tern_meta tree
 * and then printed as JSON or as text, so both always say the same.
 * Long arrays (vocabularies, merges) are summarized by their length.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/cli.h"
#include "tern/file.h"
#include "tern/tensor.h"

const char cmd_inspect_help[] =
	"usage: tern inspect FILE [--json]\n"
	"\n"
	"Describes a model file (.tern, GGUF, safetensors) or a Hugging Face\n"
	"checkpoint directory: format and version, architecture, hyper-parameters,\n"
	"metadata, tokenizer (kind, vocabulary size, BOS/EOS ids, first tokens),\n"
	"every tensor as stored (name, dtype, shape, bytes), totals and effective\n"
	"bits per weight, overall and for the ternary tensors. Arrays longer than\n"
	"8 items are shown by their length. Shapes are row-major (last dimension\n"
	"fastest): the reverse of GGUF's ne[] order.\n"
	"\n"
	"  --json   print one JSON object instead (keys in docs/FORMAT.md,\n"
	"           \"tern inspect --json\")\n";

/* Arrays longer than this are shown as "<n> items". */
#define SHOW_ITEMS 8
/* Tokens shown from the start of a vocabulary. */
#define FIRST_TOKENS 8
/* Strings longer than this are cut in the report. */
#define SHOW_CHARS 200

/* A report tree under construction: every setter takes ownership, and the
 * first failure (out of memory) sticks, checked once at the end. */
typedef struct report {
	int rc;
} report;

static void put(report *r, tern_meta *obj, const char *key, tern_meta *v)
{
	if (!v || tern_meta_set(obj, key, v) != TERN_OK)
		r->rc = TERN_E_NOMEM;
}

static void put_str(report *r, tern_meta *obj, const char *key, const char *s)
{
	put(r, obj, key, tern_meta_new_string(s, strlen(s)));
}

static void append(report *r, tern_meta *arr, tern_meta *v)
{
	if (!v || tern_meta_append(arr, v) != TERN_OK)
		r->rc = TERN_E_NOMEM;
}

/* A copy of v for display: long arrays become "<n> <what>", long strings
 * are cut, objects and short arrays are summarized recursively. */
static tern_meta *summarize(const tern_meta *v, const char *what)
{
	char buf[64];
	size_t n = tern_meta_count(v), len;
	switch (tern_meta_type_of(v)) {
	case TERN_META_ARRAY: {
		if (n > SHOW_ITEMS) {
			snprintf(buf, sizeof buf, "%zu %s", n, what);
			return tern_meta_new_string(buf, strlen(buf));
		}
		tern_meta *a = tern_meta_new_array();
		for (size_t i = 0; a && i < n; i++)
			if (tern_meta_append(a, summarize(tern_meta_item(v, i), "items")) != TERN_OK) {
				tern_meta_free(a);
				return NULL;
			}
		return a;
	}
	case TERN_META_OBJECT: {
		tern_meta *o = tern_meta_new_object();
		for (size_t i = 0; o && i < n; i++)
			if (tern_meta_set(o, tern_meta_key(v, i),
					  summarize(tern_meta_item(v, i), "items")) != TERN_OK) {
				tern_meta_free(o);
				return NULL;
			}
		return o;
	}
	case TERN_META_STRING: {
		const char *s = tern_meta_as_string(v, &len);
		if (len <= SHOW_CHARS)
			return tern_meta_new_string(s, len);
		/* Cut at a character boundary so the report stays UTF-8. */
		size_t cut = SHOW_CHARS;
		while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
			cut--;
		char *t = malloc(cut + 64);
		if (!t)
			return NULL;
		int k = snprintf(t, cut + 64, "%.*s... (%zu bytes)", (int)cut, s, len);
		tern_meta *m = tern_meta_new_string(t, (size_t)k);
		free(t);
		return m;
	}
	default: {
		tern_meta *c = NULL;
		return tern_meta_copy(v, &c) == TERN_OK ? c : NULL;
	}
	}
}

/* ---- tokenizer summaries -------------------------------------------------- */

/* Copy an integer id if present (first item when it is an array, as
 * Hugging Face's eos_token_id may be). */
static void put_id(report *r, tern_meta *tok, const char *key, const tern_meta *v)
{
	if (tern_meta_type_of(v) == TERN_META_ARRAY)
		v = tern_meta_item(v, 0);
	int64_t id;
	if (tern_meta_as_int(v, &id) == TERN_OK)
		put(r, tok, key, tern_meta_new_int(id));
}

/* kind, n_tokens, first tokens (from an array of strings, or of
 * [piece, score] pairs), merges. */
static tern_meta *tokenizer_new(report *r, const char *kind, const tern_meta *tokens)
{
	tern_meta *tok = tern_meta_new_object();
	if (!tok) {
		r->rc = TERN_E_NOMEM;
		return NULL;
	}
	put_str(r, tok, "kind", kind ? kind : "unknown");
	put(r, tok, "n_tokens", tern_meta_new_uint(tern_meta_count(tokens)));
	tern_meta *first = tern_meta_new_array();
	if (tern_meta_type_of(tokens) == TERN_META_ARRAY) {
		for (size_t i = 0; first && i < tern_meta_count(tokens) && i < FIRST_TOKENS; i++) {
			const tern_meta *t = tern_meta_item(tokens, i);
			if (tern_meta_type_of(t) == TERN_META_ARRAY)
				t = tern_meta_item(t, 0);
			append(r, first, summarize(t, "items"));
		}
	} else {
		/* An object piece -> id: the pieces of the first ids. */
		for (int64_t want = 0; first && want < FIRST_TOKENS; want++)
			for (size_t i = 0; i < tern_meta_count(tokens); i++) {
				int64_t id;
				if (tern_meta_as_int(tern_meta_item(tokens, i), &id) == TERN_OK &&
				    id == want) {
					const char *k = tern_meta_key(tokens, i);
					append(r, first, tern_meta_new_string(k, strlen(k)));
					break;
				}
			}
	}
	put(r, tok, "first_tokens", first);
	return tok;
}

/* GGUF's tokenizer.ggml.* keys (kv is a GGUF file's metadata, or the
 * "gguf" object of a converted .tern). */
static tern_meta *tokenizer_gguf(report *r, const tern_meta *kv)
{
	const tern_meta *tokens = tern_meta_get(kv, "tokenizer.ggml.tokens");
	const char *model = tern_meta_get_string(kv, "tokenizer.ggml.model", NULL);
	if (!tokens && !model)
		return NULL;
	tern_meta *tok = tokenizer_new(r, model, tokens);
	if (!tok)
		return NULL;
	put_id(r, tok, "bos_id", tern_meta_get(kv, "tokenizer.ggml.bos_token_id"));
	put_id(r, tok, "eos_id", tern_meta_get(kv, "tokenizer.ggml.eos_token_id"));
	const tern_meta *merges = tern_meta_get(kv, "tokenizer.ggml.merges");
	if (merges)
		put(r, tok, "n_merges", tern_meta_new_uint(tern_meta_count(merges)));
	return tok;
}

/* A .tern header's "tokenizer": conventions are the plugin's, so look for
 * the usual names. */
static tern_meta *tokenizer_tern(report *r, const tern_meta *t)
{
	if (!t)
		return NULL;
	if (tern_meta_type_of(t) != TERN_META_OBJECT) {
		tern_meta *tok = tern_meta_new_object();
		if (!tok) {
			r->rc = TERN_E_NOMEM;
			return NULL;
		}
		put_str(r, tok, "kind", "reference");
		put(r, tok, "value", summarize(t, "items"));
		return tok;
	}
	const char *kind = tern_meta_get_string(t, "type", NULL);
	if (!kind)
		kind = tern_meta_get_string(t, "model", NULL);
	const tern_meta *tokens = tern_meta_get(t, "tokens");
	if (!tokens)
		tokens = tern_meta_get(t, "vocab");
	tern_meta *tok = tokenizer_new(r, kind, tokens);
	if (!tok)
		return NULL;
	static const char *const bos[] = { "bos_id", "bos_token_id", "bos" };
	static const char *const eos[] = { "eos_id", "eos_token_id", "eos" };
	for (size_t i = 0; i < 3; i++) {
		if (!tern_meta_get(tok, "bos_id"))
			put_id(r, tok, "bos_id", tern_meta_get(t, bos[i]));
		if (!tern_meta_get(tok, "eos_id"))
			put_id(r, tok, "eos_id", tern_meta_get(t, eos[i]));
	}
	const tern_meta *merges = tern_meta_get(t, "merges");
	if (merges)
		put(r, tok, "n_merges", tern_meta_new_uint(tern_meta_count(merges)));
	return tok;
}

static tern_meta *read_json_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	size_t cap = 1 << 16, len = 0;
	char *text = malloc(cap);
	while (text) {
		len += fread(text + len, 1, cap - len, fp);
		if (len < cap)
			break;
		char *nt = cap < ((size_t)1 << 30) ? realloc(text, cap * 2) : NULL;
		if (!nt) {
			free(text);
			text = NULL;
			break;
		}
		text = nt;
		cap *= 2;
	}
	fclose(fp);
	if (!text)
		return NULL;
	tern_meta *m = NULL;
	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = 1;
	tern_ctx *ctx;
	if (tern_ctx_new(&p, &ctx) == TERN_OK) {
		if (tern_meta_from_json(ctx, text, len, &m) != TERN_OK)
			m = NULL;
		tern_ctx_free(ctx);
	}
	free(text);
	return m;
}

/* A Hugging Face tokenizer.json, with the ids from config.json. */
static tern_meta *tokenizer_hf(report *r, const tern_meta *meta)
{
	const char *path = tern_meta_get_string(meta, "tokenizer.json", NULL);
	tern_meta *tj = path ? read_json_file(path) : NULL;
	if (!tj)
		return NULL;
	const tern_meta *vocab = tern_meta_get(tj, "model.vocab");
	tern_meta *tok = tokenizer_new(r, tern_meta_get_string(tj, "model.type", NULL), vocab);
	if (tok) {
		/* Added tokens beyond the model's vocabulary count too. */
		uint64_t n = tern_meta_count(vocab);
		const tern_meta *added = tern_meta_get(tj, "added_tokens");
		uint64_t extra = 0;
		for (size_t i = 0; i < tern_meta_count(added); i++) {
			uint64_t id;
			if (tern_meta_as_uint(tern_meta_get(tern_meta_item(added, i), "id"), &id) ==
				    TERN_OK &&
			    id >= n)
				extra++;
		}
		put(r, tok, "n_tokens", tern_meta_new_uint(n + extra));
		put_id(r, tok, "bos_id", tern_meta_get(meta, "config.bos_token_id"));
		put_id(r, tok, "eos_id", tern_meta_get(meta, "config.eos_token_id"));
		const tern_meta *merges = tern_meta_get(tj, "model.merges");
		if (merges)
			put(r, tok, "n_merges", tern_meta_new_uint(tern_meta_count(merges)));
	}
	tern_meta_free(tj);
	return tok;
}

/* ---- the report ------------------------------------------------------------ */

/* Keys of a GGUF key/value object: those starting with prefix (want
 * true) or the others except tokenizer.* (want false), summarized. */
static tern_meta *gguf_keys(const tern_meta *kv, const char *prefix, bool want)
{
	tern_meta *o = tern_meta_new_object();
	size_t pl = strlen(prefix);
	for (size_t i = 0; o && i < tern_meta_count(kv); i++) {
		const char *k = tern_meta_key(kv, i);
		bool match = pl && strncmp(k, prefix, pl) == 0;
		if (match != want || (!want && strncmp(k, "tokenizer.", 10) == 0))
			continue;
		if (tern_meta_set(o, k, summarize(tern_meta_item(kv, i), "items")) != TERN_OK) {
			tern_meta_free(o);
			return NULL;
		}
	}
	return o;
}

static void describe_meta(report *r, tern_meta *rep, const tern_file *f)
{
	const tern_meta *m = tern_file_meta(f);
	char prefix[256];
	snprintf(prefix, sizeof prefix, "%s.", tern_file_architecture(f));
	tern_meta *hp = NULL, *md = NULL, *tok = NULL;
	switch (tern_file_format_of(f)) {
	case TERN_FORMAT_GGUF:
		hp = gguf_keys(m, prefix, true);
		md = gguf_keys(m, prefix, false);
		tok = tokenizer_gguf(r, m);
		break;
	case TERN_FORMAT_TERN: {
		const tern_meta *gg = tern_meta_get(m, "gguf");
		const tern_meta *h = tern_meta_get(m, "hparams");
		hp = h ? summarize(h, "items") : gg ? gguf_keys(gg, prefix, true) : NULL;
		if (!hp)
			hp = tern_meta_new_object();
		md = summarize(tern_meta_get(m, "metadata"), "items");
		if (tern_meta_type_of(md) != TERN_META_OBJECT) {
			tern_meta_free(md);
			md = tern_meta_new_object();
		}
		tok = tokenizer_tern(r, tern_meta_get(m, "tokenizer"));
		if (!tok && gg)
			tok = tokenizer_gguf(r, gg);
		break;
	}
	case TERN_FORMAT_HF: {
		hp = summarize(tern_meta_get(m, "config"), "items");
		md = tern_meta_new_object();
		for (size_t i = 0; md && i < tern_meta_count(m); i++)
			if (strcmp(tern_meta_key(m, i), "config") != 0)
				put(r, md, tern_meta_key(m, i), summarize(tern_meta_item(m, i), "items"));
		tok = tokenizer_hf(r, m);
		break;
	}
	default:
		hp = tern_meta_new_object();
		md = summarize(m, "items");
		break;
	}
	put(r, rep, "hparams", hp);
	put(r, rep, "metadata", md);
	put(r, rep, "tokenizer", tok ? tok : tern_meta_new_null());
}

typedef struct totals {
	uint64_t tensors, params, bytes;
	uint64_t t_tensors, t_params, t_bytes; /* ternary tensors */
} totals;

static tern_meta *describe_tensor(report *r, const tern_file *f, size_t i, totals *tot)
{
	const tern_tensor *t = tern_file_tensor(f, i);
	const char *type = NULL;
	size_t nbytes = 0;
	tern_file_tensor_source(f, i, &type, NULL, &nbytes);
	tern_meta *e = tern_meta_new_object();
	tern_meta *shape = tern_meta_new_array();
	uint64_t n = 1;
	for (int d = 0; d < t->n_dims; d++) {
		append(r, shape, tern_meta_new_int(t->shape[d]));
		n *= (uint64_t)t->shape[d]; /* the reader checked the product fits */
	}
	if (!e) {
		tern_meta_free(shape);
		r->rc = TERN_E_NOMEM;
		return NULL;
	}
	put_str(r, e, "name", t->name);
	put_str(r, e, "dtype", type);
	put_str(r, e, "tern_dtype", tern_dtype_name(t->dtype));
	put(r, e, "shape", shape);
	put(r, e, "params", tern_meta_new_uint(n));
	put(r, e, "bytes", tern_meta_new_uint(nbytes));
	tot->tensors++;
	tot->params += n;
	tot->bytes += nbytes;
	if (tern_type_traits_of(t->dtype)->ternary) {
		tot->t_tensors++;
		tot->t_params += n;
		tot->t_bytes += nbytes;
	}
	return e;
}

static double bpw(uint64_t bytes, uint64_t params)
{
	return params ? 8.0 * (double)bytes / (double)params : 0.0;
}

static tern_meta *build_report(const tern_file *f, int *rc)
{
	report r = { TERN_OK };
	tern_meta *rep = tern_meta_new_object();
	if (!rep) {
		*rc = TERN_E_NOMEM;
		return NULL;
	}
	put_str(&r, rep, "path", tern_file_path(f));
	put_str(&r, rep, "format", tern_file_format_name(f));
	put(&r, rep, "version", tern_meta_new_uint(tern_file_version(f)));
	put(&r, rep, "file_bytes", tern_meta_new_uint(tern_file_size(f)));
	put_str(&r, rep, "architecture", tern_file_architecture(f));
	describe_meta(&r, rep, f);
	totals tot = { 0 };
	tern_meta *table = tern_meta_new_array();
	for (size_t i = 0; table && i < tern_file_n_tensors(f); i++)
		append(&r, table, describe_tensor(&r, f, i, &tot));
	put(&r, rep, "tensors", table);
	tern_meta *t = tern_meta_new_object();
	put(&r, rep, "totals", t);
	if (t) {
		put(&r, t, "tensors", tern_meta_new_uint(tot.tensors));
		put(&r, t, "params", tern_meta_new_uint(tot.params));
		put(&r, t, "bytes", tern_meta_new_uint(tot.bytes));
		put(&r, t, "bits_per_weight", tern_meta_new_double(bpw(tot.bytes, tot.params)));
		put(&r, t, "ternary_tensors", tern_meta_new_uint(tot.t_tensors));
		put(&r, t, "ternary_params", tern_meta_new_uint(tot.t_params));
		put(&r, t, "ternary_bytes", tern_meta_new_uint(tot.t_bytes));
		put(&r, t, "ternary_bits_per_weight",
		    tern_meta_new_double(bpw(tot.t_bytes, tot.t_params)));
	}
	*rc = r.rc;
	if (r.rc != TERN_OK) {
		tern_meta_free(rep);
		return NULL;
	}
	return rep;
}

/* ---- text output --------------------------------------------------------------- */

/* One value as compact JSON (strings quoted). */
static void print_value(tern_ctx *ctx, const tern_meta *v)
{
	char *s = NULL;
	if (tern_meta_to_json(ctx, v, false, &s) == TERN_OK)
		fputs(s, stdout);
	tern_free(s);
}

static void print_object(tern_ctx *ctx, const char *title, const tern_meta *o)
{
	size_t n = tern_meta_count(o);
	printf("%s:%s\n", title, n ? "" : " -");
	for (size_t i = 0; i < n; i++) {
		printf("  %s = ", tern_meta_key(o, i));
		print_value(ctx, tern_meta_item(o, i));
		putchar('\n');
	}
}

/* "3.28 M parameters", "1.36 MB": sep goes between prefix and unit. */
static void print_size(uint64_t v, const char *sep, const char *unit)
{
	if (v >= 1000000000ull)
		printf("%.2f G%s%s", (double)v / 1e9, sep, unit);
	else if (v >= 1000000)
		printf("%.2f M%s%s", (double)v / 1e6, sep, unit);
	else if (v >= 1000)
		printf("%.2f k%s%s", (double)v / 1e3, sep, unit);
	else
		printf("%llu %s", (unsigned long long)v, unit);
}

static void print_report(tern_ctx *ctx, const tern_meta *rep)
{
	printf("file:          %s\n", tern_meta_get_string(rep, "path", ""));
	printf("format:        %s", tern_meta_get_string(rep, "format", ""));
	if (tern_meta_get_int(rep, "version", 0))
		printf(" v%lld", (long long)tern_meta_get_int(rep, "version", 0));
	printf(", %lld bytes\n", (long long)tern_meta_get_int(rep, "file_bytes", 0));
	const char *arch = tern_meta_get_string(rep, "architecture", "");
	printf("architecture:  %s\n\n", *arch ? arch : "(none)");
	print_object(ctx, "hyper-parameters", tern_meta_get(rep, "hparams"));
	putchar('\n');
	print_object(ctx, "metadata", tern_meta_get(rep, "metadata"));
	putchar('\n');
	const tern_meta *tok = tern_meta_get(rep, "tokenizer");
	if (tern_meta_type_of(tok) != TERN_META_OBJECT) {
		printf("tokenizer:     -\n");
	} else {
		printf("tokenizer:     %s, %lld tokens", tern_meta_get_string(tok, "kind", "?"),
		       (long long)tern_meta_get_int(tok, "n_tokens", 0));
		if (tern_meta_get(tok, "bos_id"))
			printf(", BOS %lld", (long long)tern_meta_get_int(tok, "bos_id", 0));
		if (tern_meta_get(tok, "eos_id"))
			printf(", EOS %lld", (long long)tern_meta_get_int(tok, "eos_id", 0));
		if (tern_meta_get(tok, "n_merges"))
			printf(", %lld merges", (long long)tern_meta_get_int(tok, "n_merges", 0));
		const tern_meta *first = tern_meta_get(tok, "first_tokens");
		if (tern_meta_count(first)) {
			printf("\n  first tokens:");
			for (size_t i = 0; i < tern_meta_count(first); i++) {
				putchar(' ');
				print_value(ctx, tern_meta_item(first, i));
			}
		}
		putchar('\n');
	}
	const tern_meta *table = tern_meta_get(rep, "tensors");
	size_t n = tern_meta_count(table), w = 4;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(tern_meta_get_string(tern_meta_item(table, i), "name", ""));
		w = l > w ? l : w;
	}
	w = w > 60 ? 60 : w;
	printf("\ntensors: %zu\n", n);
	if (n)
		printf("  %-*s  %-6s %-4s  %-20s %12s\n", (int)w, "name", "dtype", "as", "shape",
		       "bytes");
	for (size_t i = 0; i < n; i++) {
		const tern_meta *e = tern_meta_item(table, i);
		const tern_meta *shape = tern_meta_get(e, "shape");
		char sh[96] = "";
		size_t used = 0;
		for (size_t d = 0; d < tern_meta_count(shape) && used < sizeof sh; d++)
			used += (size_t)snprintf(sh + used, sizeof sh - used, "%s%lld", d ? " x " : "",
						 (long long)tern_meta_get_int(tern_meta_item(shape, d),
									      "", 0));
		printf("  %-*s  %-6s %-4s  %-20s %12lld\n", (int)w,
		       tern_meta_get_string(e, "name", ""), tern_meta_get_string(e, "dtype", ""),
		       tern_meta_get_string(e, "tern_dtype", ""), sh,
		       (long long)tern_meta_get_int(e, "bytes", 0));
	}
	const tern_meta *t = tern_meta_get(rep, "totals");
	printf("\ntotals:        %lld tensors, ", (long long)tern_meta_get_int(t, "tensors", 0));
	print_size((uint64_t)tern_meta_get_int(t, "params", 0), " ", "parameters");
	printf(", ");
	print_size((uint64_t)tern_meta_get_int(t, "bytes", 0), "", "B");
	printf(", %.3f bits per weight\n", tern_meta_get_double(t, "bits_per_weight", 0));
	if (tern_meta_get_int(t, "ternary_tensors", 0)) {
		printf("ternary:       %lld tensors, ",
		       (long long)tern_meta_get_int(t, "ternary_tensors", 0));
		print_size((uint64_t)tern_meta_get_int(t, "ternary_params", 0), " ", "parameters");
		printf(", %.3f bits per weight\n",
		       tern_meta_get_double(t, "ternary_bits_per_weight", 0));
	}
}

int cmd_inspect(int argc, char **argv)
{
	const char *path = NULL;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(cmd_inspect_help, stdout);
			return CLI_OK;
		}
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else if (argv[i][0] == '-' && argv[i][1])
			return cli_usage("inspect", "unknown option '%s'", argv[i]);
		else if (path)
			return cli_usage("inspect", "expected one FILE, got '%s' too", argv[i]);
		else
			path = argv[i];
	}
	if (!path)
		return cli_usage("inspect", "missing FILE");
	tern_ctx *ctx;
	if (cli_ctx_new(1, &ctx) != CLI_OK)
		return CLI_FAIL;
	tern_file *f;
	int rc = tern_file_open(ctx, path, &f);
	if (rc) {
		cli_error("%s", tern_ctx_errmsg(ctx));
		tern_ctx_free(ctx);
		return CLI_FAIL;
	}
	tern_meta *rep = build_report(f, &rc);
	tern_file_close(f);
	if (rep && json) {
		char *s = NULL;
		rc = tern_meta_to_json(ctx, rep, true, &s);
		if (rc == TERN_OK)
			printf("%s\n", s);
		tern_free(s);
	} else if (rep) {
		print_report(ctx, rep);
	}
	if (rc)
		cli_error("%s: %s", path, tern_status_str(rc));
	tern_meta_free(rep);
	tern_ctx_free(ctx);
	return rc ? CLI_FAIL : CLI_OK;
}
