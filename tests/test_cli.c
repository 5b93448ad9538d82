/*
 * test_cli.c: runs the built `tern` binary (from TERN_BUILDDIR, else the
 * current directory) as a user or script would: exit statuses and
 * messages for bad command lines, help and version output, and the JSON
 * of `tern bench kernels`, parsed with json-c and checked for the
 * documented keys, sane values and internal consistency; `tern inspect
 * --json` against the facts of the reference GGUFs; `tern convert` with
 * the test plugins in tests/convplugins (dispatch, failures, Ctrl-C).
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tern/matmul.h"
#include "tern/tensor.h"
#include "tern/tern.h"

/* Output of one run of the binary, and its exit status (-1 if it did
 * not exit normally). */
typedef struct cli_run {
	char *out;
	size_t len;
	int status;
} cli_run;

static cli_run run_tern(const char *args)
{
	const char *dir = getenv("TERN_BUILDDIR");
	char cmd[4096];
	cli_run r = { NULL, 0, -1 };
	size_t cap = 4096;
	FILE *p;
	int st;

	snprintf(cmd, sizeof cmd, "'%s/apps/tern' %s", dir ? dir : ".", args);
	p = popen(cmd, "r");
	cr_assert_not_null(p, "popen(%s)", cmd);
	r.out = malloc(cap);
	cr_assert_not_null(r.out);
	for (;;) {
		size_t n = fread(r.out + r.len, 1, cap - r.len - 1, p);

		r.len += n;
		if (n == 0)
			break;
		if (cap - r.len < 2) {
			cap *= 2;
			r.out = realloc(r.out, cap);
			cr_assert_not_null(r.out);
		}
	}
	r.out[r.len] = '\0';
	st = pclose(p);
	if (st != -1 && WIFEXITED(st))
		r.status = WEXITSTATUS(st);
	return r;
}

Test(cli, unknown_command_exits_2_and_names_it)
{
	cli_run r = run_tern("frobnicate 2>&1");

	cr_expect_eq(r.status, 2, "exit status %d", r.status);
	cr_expect_not_null(strstr(r.out, "unknown command 'frobnicate'"), "output: %s", r.out);
	cr_expect_not_null(strstr(r.out, "tern help"), "no hint in: %s", r.out);
	free(r.out);
}

Test(cli, unknown_option_exits_2)
{
	cli_run r = run_tern("--frobnicate 2>&1");

	cr_expect_eq(r.status, 2);
	cr_expect_not_null(strstr(r.out, "unknown option '--frobnicate'"), "output: %s", r.out);
	free(r.out);
	r = run_tern("bench kernels --frobnicate 2>&1");
	cr_expect_eq(r.status, 2);
	cr_expect_not_null(strstr(r.out, "unknown option '--frobnicate'"), "output: %s", r.out);
	free(r.out);
}

Test(cli, no_arguments_prints_usage_and_exits_2)
{
	cli_run r = run_tern("2>&1");

	cr_expect_eq(r.status, 2);
	cr_expect_not_null(strstr(r.out, "Usage: tern"), "output: %s", r.out);
	free(r.out);
}

Test(cli, bad_flag_values_exit_2_with_reason)
{
	static const struct {
		const char *args, *says;
	} cases[] = {
		{ "bench kernels --threads -3 2>&1", "out of range" },
		{ "bench kernels -t 4x 2>&1", "not a whole number" },
		{ "bench kernels --threads 2>&1", "needs a value" },
		{ "bench kernels --min-time=nan 2>&1", "not a number" },
		{ "bench kernels --shapes 64x 2>&1", "not a shape" },
		{ "bench kernels --shapes 0x64 2>&1", "not a shape" },
		{ "bench kernels --kernels sse9 2>&1", "unknown kernel path 'sse9'" },
		{ "bench kernels --dtypes q4 2>&1", "unknown weight dtype 'q4'" },
		{ "bench nothing 2>&1", "unknown benchmark 'nothing'" },
		{ "bench 2>&1", "missing what to benchmark" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cli_run r = run_tern(cases[i].args);

		cr_expect_eq(r.status, 2, "%s: exit status %d", cases[i].args, r.status);
		cr_expect_not_null(strstr(r.out, cases[i].says), "%s: output: %s", cases[i].args,
				   r.out);
		free(r.out);
	}
}

Test(cli, version_reports_library_version_and_kernels)
{
	cli_run r = run_tern("--version");
	char want[64];

	snprintf(want, sizeof want, "tern %s\n", tern_version());
	cr_expect_eq(r.status, 0);
	cr_expect_eq(strncmp(r.out, want, strlen(want)), 0, "output: %s", r.out);
	cr_expect_not_null(strstr(r.out, "kernels: scalar"), "output: %s", r.out);
	free(r.out);
}

Test(cli, help_lists_commands_and_describes_one)
{
	cli_run r = run_tern("help");

	cr_expect_eq(r.status, 0);
	cr_expect_not_null(strstr(r.out, "bench"), "output: %s", r.out);
	free(r.out);
	r = run_tern("help bench");
	cr_expect_eq(r.status, 0);
	cr_expect_not_null(strstr(r.out, "tern bench kernels"), "output: %s", r.out);
	cr_expect_not_null(strstr(r.out, "--json"), "output: %s", r.out);
	free(r.out);
	r = run_tern("bench --help");
	cr_expect_eq(r.status, 0);
	cr_expect_not_null(strstr(r.out, "--min-time"), "output: %s", r.out);
	free(r.out);
	r = run_tern("help nosuch 2>&1");
	cr_expect_eq(r.status, 2);
	cr_expect_not_null(strstr(r.out, "unknown command 'nosuch'"), "output: %s", r.out);
	free(r.out);
}

/* A number member (json-c reads "25" as an int and "2.5" as a double). */
static double num(json_object *o, const char *key)
{
	json_object *v;

	cr_assert(json_object_object_get_ex(o, key, &v), "missing key \"%s\"", key);
	cr_assert(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int),
		  "\"%s\" is not a number", key);
	return json_object_get_double(v);
}

static const char *str(json_object *o, const char *key)
{
	json_object *v;

	cr_assert(json_object_object_get_ex(o, key, &v), "missing key \"%s\"", key);
	cr_assert(json_object_is_type(v, json_type_string), "\"%s\" is not a string", key);
	return json_object_get_string(v);
}

/* Relative closeness: the JSON numbers carry 6 significant digits, so two
 * values derived from each other agree to about 1e-5; 1e-4 leaves room. */
static void expect_rel(double got, double want, const char *what)
{
	cr_expect(fabs(got - want) <= 1e-4 * fabs(want), "%s: %g, expected %g", what, got, want);
}

Test(cli, bench_json_has_documented_keys_and_sane_values, .timeout = 120)
{
	cli_run r = run_tern("bench kernels --json --quick --threads 1 --kernels scalar "
			     "--shapes 640x2560 --dtypes t2 --tokens 16 2>/dev/null");
	static const char *keys[] = { "kernel", "dtype", "op", "rows", "cols", "tokens",
				      "seconds", "gbs", "gmacs", "pct_bandwidth", "pct_peak" };
	tern_qparams qp = { TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32 };
	json_tokener *tok = json_tokener_new();
	json_object *root, *results;
	double bw, peak;
	size_t wbytes, end;
	bool seen_gemv = false, seen_gemm = false;

	cr_assert_eq(r.status, 0, "exit status %d, output: %s", r.status, r.out);
	root = json_tokener_parse_ex(tok, r.out, (int)r.len);
	cr_assert_not_null(root, "stdout is not JSON: %s", r.out);
	end = json_tokener_get_parse_end(tok);
	cr_expect_eq(strspn(r.out + end, " \n"), r.len - end, "stdout has more than one object");
	json_tokener_free(tok);

	cr_expect_eq(json_object_object_length(root), 4);
	bw = num(root, "bandwidth_gbs");
	peak = num(root, "mac_peak_gmacs");
	cr_expect_gt(bw, 0.0);
	cr_expect_gt(peak, 0.0);
	cr_expect_eq(num(root, "threads"), 1.0);
	cr_assert(json_object_object_get_ex(root, "results", &results));
	cr_assert(json_object_is_type(results, json_type_array));
	cr_assert_eq(json_object_array_length(results), 2, "one GEMV and one GEMM expected");

	cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_T2, &qp, 640, 2560, &wbytes), 0);
	for (size_t i = 0; i < 2; i++) {
		json_object *x = json_object_array_get_idx(results, i);
		bool gemm = strcmp(str(x, "op"), "gemm") == 0;
		double secs = num(x, "seconds"), gbs = num(x, "gbs"), gmacs = num(x, "gmacs");
		double tokens = num(x, "tokens");

		cr_expect_eq(json_object_object_length(x), (int)(sizeof keys / sizeof keys[0]));
		for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
			cr_expect(json_object_object_get_ex(x, keys[k], NULL), "missing %s", keys[k]);
		cr_expect_str_eq(str(x, "kernel"), "scalar");
		cr_expect_str_eq(str(x, "dtype"), "t2");
		cr_expect(gemm || strcmp(str(x, "op"), "gemv") == 0, "op %s", str(x, "op"));
		seen_gemm |= gemm;
		seen_gemv |= !gemm;
		cr_expect_eq(num(x, "rows"), 640.0);
		cr_expect_eq(num(x, "cols"), 2560.0);
		cr_expect_eq(tokens, gemm ? 16.0 : 1.0);
		cr_expect_gt(secs, 0.0);
		cr_expect_gt(gbs, 0.0);
		cr_expect_gt(gmacs, 0.0);
		/* bytes and MACs are fixed by the shape: rates times time give them back. */
		expect_rel(gbs * secs * 1e9, (double)wbytes, "weight bytes");
		expect_rel(gmacs * secs * 1e9, 640.0 * 2560.0 * tokens, "MACs");
		expect_rel(num(x, "pct_bandwidth"), gbs / bw * 100.0, "pct_bandwidth");
		expect_rel(num(x, "pct_peak"), gmacs / peak * 100.0, "pct_peak");
		cr_expect(num(x, "pct_bandwidth") > 0.0 && num(x, "pct_bandwidth") <= 1000.0);
		cr_expect(num(x, "pct_peak") > 0.0 && num(x, "pct_peak") <= 1000.0);
	}
	cr_expect(seen_gemv && seen_gemm);
	json_object_put(root);
	free(r.out);
}

Test(cli, bench_table_has_one_row_per_case, .timeout = 120)
{
	cli_run r = run_tern("bench kernels --quick --quiet --threads 1 --kernels scalar "
			     "--shapes 640x2560,128x320 --dtypes t3 --tokens 8 2>&1");

	cr_assert_eq(r.status, 0, "exit status %d, output: %s", r.status, r.out);
	cr_expect_not_null(strstr(r.out, "bandwidth"), "output: %s", r.out);
	cr_expect_not_null(strstr(r.out, "640x2560      t3    scalar"), "output: %s", r.out);
	cr_expect_not_null(strstr(r.out, "128x320       t3    scalar"), "output: %s", r.out);
	cr_expect_null(strstr(r.out, "tern bench: ["), "--quiet still printed progress: %s",
		       r.out);
	free(r.out);
}

/* ---- tern inspect ------------------------------------------------------- */

/* Parse one JSON object from a run's stdout (nothing else may follow). */
static json_object *parse_json(const cli_run *r)
{
	json_tokener *tok = json_tokener_new();
	json_object *root = json_tokener_parse_ex(tok, r->out, (int)r->len);
	cr_assert_not_null(root, "stdout is not JSON: %.2000s", r->out);
	size_t end = json_tokener_get_parse_end(tok);
	cr_expect_eq(strspn(r->out + end, " \n"), r->len - end, "stdout has more than one object");
	json_tokener_free(tok);
	return root;
}

static json_object *member(json_object *o, const char *key)
{
	json_object *v;
	cr_assert(json_object_object_get_ex(o, key, &v), "missing key \"%s\"", key);
	return v;
}

static cli_run run_fmt(const char *fmt, ...) TERN_PRINTF(1, 2);
static cli_run run_fmt(const char *fmt, ...)
{
	char args[3000];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	return run_tern(args);
}

static const char *shared_file(const char *rel)
{
	static char buf[4][1024];
	static int k;
	const char *s = getenv("TERN_SHARED");
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", s ? s : "../shared/testdata", rel);
	return buf[k];
}

/* The tiny model of shared/testdata/README.md: n_vocab 512, n_embd 256,
 * 4 layers, 4 KV heads of 32, n_ff 768. Its tern (row-major) shape by
 * tensor name, and whether it is one of the 7 linear (ternary) matrices. */
static bool tiny_shape(const char *name, int64_t *rows, int64_t *cols, bool *linear)
{
	static const struct {
		const char *suffix;
		int64_t rows, cols; /* cols 0: 1-D */
		bool linear;
	} t[] = {
		{ "attn_q.weight", 256, 256, true },	{ "attn_k.weight", 128, 256, true },
		{ "attn_v.weight", 128, 256, true },	{ "attn_output.weight", 256, 256, true },
		{ "ffn_gate.weight", 768, 256, true },	{ "ffn_up.weight", 768, 256, true },
		{ "ffn_down.weight", 256, 768, true },	{ "attn_norm.weight", 256, 0, false },
		{ "ffn_norm.weight", 256, 0, false },	{ "attn_sub_norm.weight", 256, 0, false },
		{ "ffn_sub_norm.weight", 768, 0, false },
	};
	if (strcmp(name, "token_embd.weight") == 0) {
		*rows = 512, *cols = 256, *linear = false;
		return true;
	}
	if (strcmp(name, "output_norm.weight") == 0) {
		*rows = 256, *cols = 0, *linear = false;
		return true;
	}
	const char *dot = strncmp(name, "blk.", 4) == 0 ? strchr(name + 4, '.') : NULL;
	for (size_t i = 0; dot && i < sizeof t / sizeof t[0]; i++)
		if (strcmp(dot + 1, t[i].suffix) == 0) {
			*rows = t[i].rows, *cols = t[i].cols, *linear = t[i].linear;
			return true;
		}
	return false;
}

/* Stored bytes of n weights in a GGUF type (ggml's block sizes). */
static uint64_t gguf_bytes(const char *type, uint64_t n)
{
	if (strcmp(type, "tq2_0") == 0)
		return n / 256 * 66;
	if (strcmp(type, "tq1_0") == 0)
		return n / 256 * 54;
	if (strcmp(type, "i2_s") == 0)
		return n / 4 + 32;
	return n * 4; /* f32 */
}

static void expect_tiny_model(const char *file, const char *linear_type)
{
	cli_run r = run_fmt("inspect --json '%s'", shared_file(file));
	cr_assert_eq(r.status, 0, "%s: exit %d: %s", file, r.status, r.out);
	json_object *root = parse_json(&r);
	cr_expect_str_eq(str(root, "format"), "gguf");
	cr_expect_eq(num(root, "version"), 3.0);
	cr_expect_str_eq(str(root, "architecture"), "bitnet");
	cr_expect_eq(num(member(root, "hparams"), "bitnet.block_count"), 4.0);
	cr_expect_eq(num(member(root, "hparams"), "bitnet.embedding_length"), 256.0);
	json_object *tok = member(root, "tokenizer");
	cr_expect_eq(num(tok, "n_tokens"), 512.0);
	cr_expect_eq(num(tok, "bos_id"), 1.0);
	cr_expect_eq(num(tok, "eos_id"), 2.0);
	json_object *tensors = member(root, "tensors");
	cr_assert_eq(json_object_array_length(tensors), 46, "%s", file);
	uint64_t params = 0, bytes = 0, tparams = 0, tbytes = 0;
	for (size_t i = 0; i < 46; i++) {
		json_object *t = json_object_array_get_idx(tensors, i);
		const char *name = str(t, "name");
		int64_t rows, cols;
		bool linear;
		cr_assert(tiny_shape(name, &rows, &cols, &linear), "%s: unexpected tensor %s", file,
			  name);
		json_object *shape = member(t, "shape");
		cr_assert_eq(json_object_array_length(shape), cols ? 2u : 1u, "%s", name);
		cr_expect_eq(json_object_get_int64(json_object_array_get_idx(shape, 0)), rows, "%s",
			     name);
		if (cols)
			cr_expect_eq(json_object_get_int64(json_object_array_get_idx(shape, 1)), cols,
				     "%s", name);
		uint64_t n = (uint64_t)rows * (uint64_t)(cols ? cols : 1);
		const char *type = linear ? linear_type : "f32";
		cr_expect_str_eq(str(t, "dtype"), type, "%s", name);
		cr_expect_eq(num(t, "params"), (double)n, "%s", name);
		cr_expect_eq(num(t, "bytes"), (double)gguf_bytes(type, n), "%s", name);
		params += n;
		bytes += gguf_bytes(type, n);
		if (linear && strcmp(linear_type, "f32") != 0) {
			tparams += n;
			tbytes += gguf_bytes(type, n);
		}
	}
	json_object *tot = member(root, "totals");
	cr_expect_eq(num(tot, "tensors"), 46.0);
	cr_expect_eq(num(tot, "params"), (double)params);
	cr_expect_eq(num(tot, "bytes"), (double)bytes);
	/* Printed with 17 significant digits: equal to 1e-12 relative. */
	cr_expect(fabs(num(tot, "bits_per_weight") - 8.0 * bytes / params) <=
		  1e-12 * 8.0 * bytes / params);
	cr_expect_eq(num(tot, "ternary_tensors"), tparams ? 28.0 : 0.0);
	cr_expect_eq(num(tot, "ternary_params"), (double)tparams);
	if (tparams)
		cr_expect(fabs(num(tot, "ternary_bits_per_weight") - 8.0 * tbytes / tparams) <=
			  1e-12 * 8.0 * tbytes / tparams);
	json_object_put(root);
	free(r.out);
}

Test(cli, inspect_json_shows_the_tiny_models_46_tensors_with_types_and_shapes)
{
	expect_tiny_model("llama.cpp/tiny-f32.gguf", "f32");
	expect_tiny_model("llama.cpp/tiny-tq2_0.gguf", "tq2_0");
	expect_tiny_model("llama.cpp/tiny-tq1_0.gguf", "tq1_0");
	expect_tiny_model("bitnet.cpp/tiny-i2_s.gguf", "i2_s");
}

Test(cli, inspect_summarizes_the_32000_token_vocabulary)
{
	const char *file = shared_file("llama.cpp/ggml-vocab-llama-spm.gguf");
	cli_run r = run_fmt("inspect --json '%s'", file);
	cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
	/* Summarized, not dumped: the 700 kB of vocabulary is not in the output. */
	cr_expect_lt(r.len, 4000, "%zu bytes of JSON", r.len);
	json_object *root = parse_json(&r);
	json_object *tok = member(root, "tokenizer");
	cr_expect_str_eq(str(tok, "kind"), "llama");
	cr_expect_eq(num(tok, "n_tokens"), 32000.0);
	cr_expect_eq(num(tok, "bos_id"), 1.0);
	cr_expect_eq(num(tok, "eos_id"), 2.0);
	json_object *first = member(tok, "first_tokens");
	cr_assert_geq(json_object_array_length(first), 3);
	cr_expect_str_eq(json_object_get_string(json_object_array_get_idx(first, 0)), "<unk>");
	cr_expect_str_eq(json_object_get_string(json_object_array_get_idx(first, 1)), "<s>");
	cr_expect_str_eq(json_object_get_string(json_object_array_get_idx(first, 2)), "</s>");
	cr_expect_eq(json_object_array_length(member(root, "tensors")), 0);
	cr_expect_eq(num(member(root, "totals"), "tensors"), 0.0);
	cr_expect_eq(num(member(root, "hparams"), "llama.vocab_size"), 32000.0);
	json_object_put(root);
	free(r.out);
	r = run_fmt("inspect '%s'", file);
	cr_expect_eq(r.status, 0);
	cr_expect_not_null(strstr(r.out, "llama, 32000 tokens, BOS 1, EOS 2"), "%s", r.out);
	cr_expect_not_null(strstr(r.out, "tensors: 0"), "%s", r.out);
	free(r.out);
}

Test(cli, inspect_errors_name_the_file)
{
	cli_run r = run_tern("inspect /nonexistent/model.gguf 2>&1");
	cr_expect_eq(r.status, 1);
	cr_expect_not_null(strstr(r.out, "/nonexistent/model.gguf"), "%s", r.out);
	free(r.out);
	r = run_tern("inspect 2>&1");
	cr_expect_eq(r.status, 2);
	cr_expect_not_null(strstr(r.out, "missing FILE"), "%s", r.out);
	free(r.out);
}

/* ---- tern convert ---------------------------------------------------------- */

/* A scratch directory for one test, and paths in it. */
static char scratch[256];

static const char *in_scratch(const char *name)
{
	static char buf[4][512];
	static int k;
	k = (k + 1) % 4;
	if (!scratch[0]) {
		snprintf(scratch, sizeof scratch, "/tmp/test_cli.%ld", (long)getpid());
		mkdir(scratch, 0700);
	}
	snprintf(buf[k], sizeof buf[k], "%s/%s", scratch, name);
	return buf[k];
}

/* Remove the (emptied) scratch directory. */
static void scratch_done(void)
{
	if (scratch[0])
		rmdir(scratch);
}

static bool file_exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static void put_text_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	cr_assert_not_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static const char *conv_plugins(void)
{
	static char buf[1024];
	const char *b = getenv("TERN_BUILDDIR");
	snprintf(buf, sizeof buf, "%s/tests/convplugins", b ? b : ".");
	return buf;
}

Test(cli, convert_gguf_without_a_claiming_plugin_is_generic_and_exact_in_t3)
{
	const char *out = in_scratch("generic.tern");
	/* test-conv declines architecture bitnet; test-conv-old's op lies past
	 * its ops struct_size and must never be called. */
	cli_run r = run_fmt("convert '%s' '%s' --type t3 --plugin-path '%s' 2>&1",
			    shared_file("llama.cpp/tiny-tq2_0.gguf"), out, conv_plugins());
	cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
	cr_expect_not_null(strstr(r.out, "by the generic GGUF conversion"), "%s", r.out);
	cr_expect_null(strstr(r.out, "tern convert: ["), "progress bar without a tty: %s", r.out);
	free(r.out);
	r = run_fmt("inspect --json '%s'", out);
	cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
	json_object *root = parse_json(&r);
	cr_expect_str_eq(str(root, "format"), "tern");
	cr_expect_str_eq(str(root, "architecture"), "bitnet");
	/* hparams come from the "gguf" object's bitnet.* keys. */
	cr_expect_eq(num(member(root, "hparams"), "bitnet.block_count"), 4.0);
	cr_expect_eq(num(member(root, "tokenizer"), "n_tokens"), 512.0);
	json_object *tensors = member(root, "tensors");
	cr_assert_eq(json_object_array_length(tensors), 46);
	uint64_t tbytes = 0, tparams = 0;
	for (size_t i = 0; i < 46; i++) {
		json_object *t = json_object_array_get_idx(tensors, i);
		int64_t rows, cols;
		bool linear;
		cr_assert(tiny_shape(str(t, "name"), &rows, &cols, &linear));
		cr_expect_str_eq(str(t, "dtype"), linear ? "t3" : "f32", "%s", str(t, "name"));
		if (!linear)
			continue;
		/* T3 with TQ2_0's block-256 f16 scales. */
		tern_qparams qp = { TERN_SCALE_BLOCK, 256, TERN_DTYPE_F16 };
		size_t want;
		cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_T3, &qp, rows, cols, &want), TERN_OK);
		cr_expect_eq(num(t, "bytes"), (double)want, "%s", str(t, "name"));
		tbytes += want;
		tparams += (uint64_t)(rows * cols);
	}
	cr_expect(fabs(num(member(root, "totals"), "ternary_bits_per_weight") -
		       8.0 * tbytes / tparams) < 1e-12 * 8.0 * tbytes / tparams);
	json_object_put(root);
	free(r.out);
	unlink(out);
	scratch_done();
}

Test(cli, convert_packs_ternary_as_t2_unless_told)
{
	/* Without --type: t2 on every CPU (the file does not depend on the
	 * machine that converted it); --type t3 is honoured. */
	const char *want = "t2", *other = "t3";
	const char *out = in_scratch("default.tern");
	for (int given = 0; given < 2; given++) {
		cli_run r = given ? run_fmt("convert '%s' '%s' --type %s --plugin-path '%s'",
					    shared_file("llama.cpp/tiny-tq2_0.gguf"), out, other,
					    conv_plugins())
				  : run_fmt("convert '%s' '%s' --plugin-path '%s'",
					    shared_file("llama.cpp/tiny-tq2_0.gguf"), out,
					    conv_plugins());
		cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
		char says[64];
		snprintf(says, sizeof says, "(ternary packing %s%s)", given ? other : want,
			 given ? "" : ", the default");
		cr_expect_not_null(strstr(r.out, says), "%s", r.out);
		free(r.out);
		r = run_fmt("inspect --json '%s'", out);
		cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
		json_object *root = parse_json(&r);
		json_object *tensors = member(root, "tensors");
		size_t ternary = 0;
		for (size_t i = 0; i < json_object_array_length(tensors); i++) {
			json_object *t = json_object_array_get_idx(tensors, i);
			int64_t rows, cols;
			bool linear;
			cr_assert(tiny_shape(str(t, "name"), &rows, &cols, &linear));
			if (!linear)
				continue;
			cr_expect_str_eq(str(t, "dtype"), given ? other : want, "%s",
					 str(t, "name"));
			ternary++;
		}
		cr_expect_eq(ternary, 28);
		json_object_put(root);
		free(r.out);
		unlink(out);
	}
	scratch_done();
}

Test(cli, convert_hands_abi_1_0_plugins_the_options_as_they_spell_them)
{
	const char *src = in_scratch("v10.txt"), *out = in_scratch("v10.tern");
	put_text_file(src, "TESTCONV10\n");
	/* TERN_DTYPE_COUNT was 7 in ABI 1.0 (it is 8 since I4 took 7). */
	cli_run r = run_fmt("convert '%s' '%s' --plugin-path '%s' 2>&1", src, out, conv_plugins());
	cr_expect_neq(r.status, 0);
	cr_expect_not_null(strstr(r.out, "test-conv-10 got float 7 head 7"), "%s", r.out);
	free(r.out);
	/* An i4 head is never asked of a plugin that cannot know the dtype,
	 * nor an i4 head with its residual (ABI 1.2). */
	static const char *const heads[2] = { "i4", "i4r" };
	for (int h = 0; h < 2; h++) {
		r = run_fmt("convert '%s' '%s' --head %s --plugin-path '%s' 2>&1", src, out, heads[h],
			    conv_plugins());
		cr_expect_neq(r.status, 0, "--head %s", heads[h]);
		cr_expect_not_null(strstr(r.out, "no plugin converts it"), "%s", r.out);
		cr_expect_null(strstr(r.out, "test-conv-10 got"), "%s", r.out);
		free(r.out);
	}
	cr_expect_neq(access(out, F_OK), 0, "%s left behind", out);
	scratch_done();
}

Test(cli, convert_dispatches_to_the_plugin_that_converts)
{
	const char *src = in_scratch("own.txt"), *out = in_scratch("own.tern");
	const char *again = in_scratch("again.tern");
	put_text_file(src, "TESTCONV ok\n");
	/* The host cannot read it: every plugin with a convert op is asked. */
	cli_run r = run_fmt("convert '%s' '%s' --plugin-path '%s' 2>&1", src, out, conv_plugins());
	cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
	cr_expect_not_null(strstr(r.out, "by plugin 'test-conv'"), "%s", r.out);
	free(r.out);
	r = run_fmt("inspect --json '%s'", out);
	cr_assert_eq(r.status, 0, "exit %d: %s", r.status, r.out);
	json_object *root = parse_json(&r);
	cr_expect_str_eq(str(root, "architecture"), "test-conv");
	cr_expect_str_eq(str(member(root, "metadata"), "converted_by"), "test-conv");
	json_object *t = json_object_array_get_idx(member(root, "tensors"), 0);
	cr_assert_not_null(t);
	cr_expect_str_eq(str(t, "name"), "w");
	cr_expect_eq(num(t, "params"), 6.0);
	json_object_put(root);
	free(r.out);
	/* A file the host reads whose architecture a plugin implements goes
	 * to that plugin first. */
	r = run_fmt("convert '%s' '%s' --plugin-path '%s' 2>&1", out, again, conv_plugins());
	cr_expect_eq(r.status, 0, "exit %d: %s", r.status, r.out);
	cr_expect_not_null(strstr(r.out, "by plugin 'test-conv'"), "%s", r.out);
	free(r.out);
	/* Without plugins nobody knows the text format. */
	r = run_fmt("convert '%s' '%s' --plugin-path /nonexistent 2>&1", src, in_scratch("x.tern"));
	cr_expect_eq(r.status, 1);
	cr_expect_not_null(strstr(r.out, "no plugin converts it"), "%s", r.out);
	free(r.out);
	unlink(src);
	unlink(out);
	unlink(again);
	scratch_done();
}

Test(cli, failed_or_interrupted_conversion_leaves_no_output_and_no_temporary)
{
	static const struct {
		const char *what, *says;
		int status;
	} cases[] = {
		{ "fail", "producing tensor 'late' failed", 1 },
		{ "sigint", "interrupted", 130 },
		{ "error", "test-conv refuses this file", 1 },
	};
	const char *src = in_scratch("bad.txt"), *out = in_scratch("bad.tern");
	const char *tmp = in_scratch("bad.tern.tmp");
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char text[64];
		snprintf(text, sizeof text, "TESTCONV %s\n", cases[i].what);
		put_text_file(src, text);
		cli_run r = run_fmt("convert '%s' '%s' --plugin-path '%s' 2>&1", src, out,
				    conv_plugins());
		cr_expect_eq(r.status, cases[i].status, "%s: exit %d: %s", cases[i].what, r.status,
			     r.out);
		cr_expect_not_null(strstr(r.out, cases[i].says), "%s: %s", cases[i].what, r.out);
		cr_expect(!file_exists(out), "%s: output left behind", cases[i].what);
		cr_expect(!file_exists(tmp), "%s: temporary file left behind", cases[i].what);
		free(r.out);
	}
	unlink(src);
	scratch_done();
}

Test(cli, convert_bad_command_lines_exit_2)
{
	static const struct {
		const char *args, *says;
	} cases[] = {
		{ "convert a.gguf b.tern --type t4 2>&1", "unknown type 't4'" },
		{ "convert a.gguf b.tern --float f8 2>&1", "unknown type 'f8'" },
		{ "convert a.gguf b.tern --head 2>&1", "needs a value" },
		{ "convert a.gguf 2>&1", "need an input and an output" },
		{ "convert a b c 2>&1", "unexpected argument 'c'" },
		{ "convert a b --frob 2>&1", "unknown option '--frob'" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cli_run r = run_tern(cases[i].args);
		cr_expect_eq(r.status, 2, "%s: exit %d", cases[i].args, r.status);
		cr_expect_not_null(strstr(r.out, cases[i].says), "%s: %s", cases[i].args, r.out);
		free(r.out);
	}
}
