/*
 * test_cli.c: runs the built `tern` binary (from TERN_BUILDDIR, else the
 * current directory) as a user or script would: exit statuses and
 * messages for bad command lines, help and version output, and the JSON
 * of `tern bench kernels`, parsed with json-c and checked for the
 * documented keys, sane values and internal consistency.
 */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

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
