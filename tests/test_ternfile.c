/*
 * test_ternfile.c: the .tern container and the model-file API: round trips
 * of every dtype and scale layout, metadata trees, the writer's checks and
 * its three data sources, and the malformed corpus in tests/data/malformed
 * (MANIFEST.* lists each file's expected status and message).
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/format.h"
#include "tern/file.h"
#include "tern/tensor.h"
#include "testutil.h"

static tern_ctx *ctx;
static char dir[256];

static void setup(void)
{
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	snprintf(dir, sizeof dir, "/tmp/test_ternfile.%ld", (long)getpid());
	mkdir(dir, 0700);
}

static void teardown(void)
{
	tern_ctx_free(ctx);
	rmdir(dir);
}

TestSuite(ternfile, .init = setup, .fini = teardown);

/* A path in the test's directory; four rotating buffers so a test can
 * hold a few at once. */
static const char *tmp_path(const char *name)
{
	static char buf[4][512];
	static int next;
	char *b = buf[next++ % 4];
	snprintf(b, sizeof buf[0], "%s/%s", dir, name);
	return b;
}

/* ---- round trips ------------------------------------------------------------ */

typedef struct rt_case {
	tern_dtype dtype;
	tern_scale_kind kind;
	uint32_t block;
	tern_dtype scale_type;
	int n_dims;
	int64_t shape[TERN_MAX_DIMS];
} rt_case;

/* A tensor of the case's layout with random content that is valid for its
 * dtype, plus the int8 codes (quantized) it was built from, for an
 * independent check after reading back. */
static tern_tensor *make_tensor(const rt_case *c, tu_rng *rng, int8_t **codes_out)
{
	tern_qparams qp = { c->kind, c->block, c->scale_type };
	tern_tensor *t;
	cr_assert_eq(tern_tensor_new(ctx, c->dtype, &qp, c->n_dims, c->shape, &t), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	const tern_type_traits *tr = tern_type_traits_of(c->dtype);
	int64_t rows = tern_tensor_rows(t), cols = tern_tensor_cols(t);
	size_t rb = tern_row_bytes(c->dtype, cols);
	int8_t *codes = calloc((size_t)(rows * cols), 1);
	float *row = calloc((size_t)cols, sizeof *row);
	for (int64_t r = 0; r < rows; r++) {
		uint8_t *dst = (uint8_t *)t->data + (size_t)r * rb;
		if (tr->row_from_i8) {
			for (int64_t k = 0; k < cols; k++)
				codes[r * cols + k] = tr->ternary ? (int8_t)tu_int(rng, -1, 1)
						      : c->dtype == TERN_DTYPE_I4 ? (int8_t)tu_int(rng, -8, 7)
										  : (int8_t)tu_int(rng, -128, 127);
			tr->row_from_i8(codes + r * cols, dst, cols);
		} else {
			for (int64_t k = 0; k < cols; k++)
				row[k] = c->dtype == TERN_DTYPE_I32 ? (float)tu_int(rng, -1000, 1000)
								    : tu_normal(rng);
			tr->row_from_float(row, dst, cols);
		}
	}
	size_t ns;
	cr_assert_eq(tern_scale_count(c->dtype, &qp, rows, cols, &ns), TERN_OK);
	uint8_t *sc = (uint8_t *)t->data + (size_t)rows * rb;
	for (size_t i = 0; i < ns; i++) {
		float s = 0.01f + (float)tu_int(rng, 1, 1000) / 256.0f;
		if (c->scale_type == TERN_DTYPE_F16) {
			uint16_t h = tern_f32_to_f16(s);
			memcpy(sc + 2 * i, &h, 2);
		} else {
			memcpy(sc + 4 * i, &s, 4);
		}
	}
	free(row);
	*codes_out = codes;
	return t;
}

static const rt_case rt_cases[] = {
	{ TERN_DTYPE_F32, TERN_SCALE_NONE, 0, 0, 2, { 3, 5 } },
	{ TERN_DTYPE_F32, TERN_SCALE_NONE, 0, 0, 1, { 1 } },
	{ TERN_DTYPE_F16, TERN_SCALE_NONE, 0, 0, 1, { 7 } },
	{ TERN_DTYPE_BF16, TERN_SCALE_NONE, 0, 0, 3, { 2, 3, 4 } },
	{ TERN_DTYPE_I32, TERN_SCALE_NONE, 0, 0, 4, { 2, 1, 3, 5 } },
	{ TERN_DTYPE_I8, TERN_SCALE_NONE, 0, 0, 2, { 3, 33 } },
	{ TERN_DTYPE_I8, TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32, 2, { 4, 70 } },
	{ TERN_DTYPE_I8, TERN_SCALE_ROW, 0, TERN_DTYPE_F16, 2, { 5, 129 } },
	{ TERN_DTYPE_I8, TERN_SCALE_BLOCK, 128, TERN_DTYPE_F32, 2, { 2, 300 } },
	{ TERN_DTYPE_T2, TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32, 2, { 3, 300 } },
	{ TERN_DTYPE_T2, TERN_SCALE_TENSOR, 0, TERN_DTYPE_F16, 2, { 1, 1 } },
	{ TERN_DTYPE_T2, TERN_SCALE_ROW, 0, TERN_DTYPE_F32, 3, { 2, 2, 129 } },
	{ TERN_DTYPE_T2, TERN_SCALE_ROW, 0, TERN_DTYPE_F16, 2, { 7, 256 } },
	{ TERN_DTYPE_T2, TERN_SCALE_BLOCK, 128, TERN_DTYPE_F32, 2, { 3, 385 } },
	{ TERN_DTYPE_T2, TERN_SCALE_BLOCK, 256, TERN_DTYPE_F16, 2, { 2, 640 } },
	{ TERN_DTYPE_T3, TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32, 2, { 3, 300 } },
	{ TERN_DTYPE_T3, TERN_SCALE_TENSOR, 0, TERN_DTYPE_F16, 1, { 161 } },
	{ TERN_DTYPE_T3, TERN_SCALE_ROW, 0, TERN_DTYPE_F32, 2, { 4, 320 } },
	{ TERN_DTYPE_T3, TERN_SCALE_ROW, 0, TERN_DTYPE_F16, 4, { 2, 1, 2, 500 } },
	{ TERN_DTYPE_T3, TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16, 2, { 3, 481 } },
	{ TERN_DTYPE_T3, TERN_SCALE_BLOCK, 256, TERN_DTYPE_F32, 2, { 2, 1000 } },
	{ TERN_DTYPE_I4, TERN_SCALE_BLOCK, 128, TERN_DTYPE_F32, 2, { 3, 300 } },
	{ TERN_DTYPE_I4, TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16, 3, { 2, 1, 128 } },
	{ TERN_DTYPE_I4, TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16, 1, { 1 } },
};
#define N_RT (sizeof rt_cases / sizeof rt_cases[0])

Test(ternfile, every_dtype_and_scale_layout_round_trips_byte_exact)
{
	tu_rng rng = tu_rng_new(11);
	tern_tensor *src[N_RT];
	int8_t *codes[N_RT];
	char names[N_RT][32];
	const char *path = tmp_path("rt.tern");
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, path, &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "test-arch"), TERN_OK);
	for (size_t i = 0; i < N_RT; i++) {
		src[i] = make_tensor(&rt_cases[i], &rng, &codes[i]);
		snprintf(names[i], sizeof names[i], "t%zu.%s", i, tern_dtype_name(rt_cases[i].dtype));
		src[i]->name = names[i];
		cr_assert_eq(tern_writer_add_tensor(w, src[i]), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	}
	cr_assert_eq(tern_writer_finish(w), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_writer_free(w);
	cr_assert_eq(access(tmp_path("rt.tern.tmp"), F_OK), -1, "temporary file left behind");

	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, path, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_str_eq(tern_file_format_name(f), "tern");
	cr_assert_eq(tern_file_format_of(f), TERN_FORMAT_TERN);
	cr_assert_eq(tern_file_version(f), 1);
	cr_assert_str_eq(tern_file_architecture(f), "test-arch");
	cr_assert_eq(tern_file_n_tensors(f), N_RT);
	cr_assert_null(tern_file_tensor(f, N_RT));
	for (size_t i = 0; i < N_RT; i++) {
		const tern_tensor *t = tern_file_tensor(f, i);
		const rt_case *c = &rt_cases[i];
		cr_assert_str_eq(t->name, names[i]);
		cr_assert_eq(tern_file_find(f, names[i]), t);
		cr_assert_eq(t->dtype, c->dtype);
		cr_assert_eq(t->n_dims, c->n_dims);
		for (int d = 0; d < c->n_dims; d++)
			cr_assert_eq(t->shape[d], c->shape[d]);
		cr_assert_eq(t->q.kind, c->kind, "case %zu", i);
		cr_assert_eq(t->q.block, c->block);
		if (c->kind != TERN_SCALE_NONE)
			cr_assert_eq(t->q.scale_type, c->scale_type);
		cr_assert_eq((uintptr_t)t->data % 64, 0, "tensor %s not 64-byte aligned", t->name);
		cr_assert_eq(t->nbytes, src[i]->nbytes);
		cr_assert_eq(memcmp(t->data, src[i]->data, t->nbytes), 0, "case %zu data differs", i);
		/* Independently of the bytes: the codes decode to what was
		 * packed and the scales read back exactly (they are stored, not
		 * recomputed). */
		const tern_type_traits *tr = tern_type_traits_of(c->dtype);
		int64_t rows = tern_tensor_rows(t), cols = tern_tensor_cols(t);
		if (tr->row_to_i8) {
			int8_t *got = calloc((size_t)cols, 1);
			size_t rb = tern_row_bytes(c->dtype, cols);
			for (int64_t r = 0; r < rows; r++) {
				tr->row_to_i8((const uint8_t *)t->data + (size_t)r * rb, got, cols);
				cr_assert_eq(memcmp(got, codes[i] + r * cols, (size_t)cols), 0,
					     "case %zu row %lld codes differ", i, (long long)r);
				if (c->kind != TERN_SCALE_NONE)
					cr_assert_eq(tern_tensor_scale_at(t, r, cols - 1),
						     tern_tensor_scale_at(src[i], r, cols - 1));
			}
			free(got);
		}
	}
	tern_file_close(f);
	for (size_t i = 0; i < N_RT; i++) {
		src[i]->name = NULL;
		tern_tensor_free(src[i]);
		free(codes[i]);
	}
	unlink(path);
}

Test(ternfile, file_layout_matches_the_documented_bytes)
{
	const char *path = tmp_path("layout.tern");
	int64_t shape[2] = { 2, 3 };
	tern_tensor *t;
	cr_assert_eq(tern_tensor_new(ctx, TERN_DTYPE_F32, NULL, 2, shape, &t), TERN_OK);
	t->name = "w";
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, path, &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "a"), TERN_OK);
	cr_assert_eq(tern_writer_add_tensor(w, t), TERN_OK);
	cr_assert_eq(tern_writer_add_tensor_ref(w, &(tern_tensor){ .name = "v", .dtype = TERN_DTYPE_F32,
								   .n_dims = 1, .shape = { 1 },
								   .data = t->data, .nbytes = 4 }),
		     TERN_OK);
	cr_assert_eq(tern_writer_finish(w), TERN_OK);
	tern_writer_free(w);
	t->name = NULL;
	tern_tensor_free(t);

	FILE *fp = fopen(path, "rb");
	cr_assert_not_null(fp);
	uint8_t buf[4096];
	size_t n = fread(buf, 1, sizeof buf, fp);
	fclose(fp);
	cr_assert_eq(memcmp(buf, "TERN", 4), 0);
	cr_assert_eq(tern_rd_u32(buf + 4), 1);
	uint64_t hlen = tern_rd_u64(buf + 8);
	uint64_t data_start = (16 + hlen + 63) / 64 * 64;
	/* Two tensors: 24 bytes at 0, 4 bytes at 64, padded to 128. */
	cr_assert_eq(n, data_start + 128);
	cr_assert_eq(buf[16], '{');
	cr_assert_eq(buf[16 + hlen - 1], '}');
	for (uint64_t i = 16 + hlen; i < data_start; i++)
		cr_assert_eq(buf[i], 0);
	char *hdr = strndup((const char *)buf + 16, hlen);
	cr_assert_not_null(strstr(hdr, "\"architecture\":\"a\""), "%s", hdr);
	cr_assert_not_null(strstr(hdr, "\"offset\":64"), "%s", hdr);
	free(hdr);
	unlink(path);
}

/* ---- metadata ----------------------------------------------------------------- */

Test(ternfile, header_metadata_round_trips_with_types_kept)
{
	const char *path = tmp_path("meta.tern");
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, path, &w), TERN_OK);
	cr_assert_eq(tern_writer_set_json(w, NULL,
					  "{\"architecture\":\"bitnet-b1.58\",\"hparams\":{\"n_layers\":30,"
					  "\"rope_theta\":500000.0,\"eps\":1e-05,\"tied\":false},"
					  "\"tokenizer\":{\"type\":\"bpe\",\"merges\":[\"a b\",\"\\u00e9 x\"]}}"),
		     TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_meta *big = tern_meta_new_uint(18446744073709551615ull);
	cr_assert_eq(tern_writer_set_meta(w, "hparams.seed", big), TERN_OK);
	tern_meta_free(big);
	tern_meta *s = tern_meta_new_string("MIT \"quoted\"\n\ttab/slash", 23);
	cr_assert_eq(tern_writer_set_meta(w, "metadata.license", s), TERN_OK);
	tern_meta_free(s);
	cr_assert_eq(tern_writer_set_json(w, "metadata.training", "{\"steps\":-3,\"lr\":0.5,\"x\":null}"),
		     TERN_OK);
	cr_assert_eq(tern_writer_finish(w), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_writer_free(w);

	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, path, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_file_n_tensors(f), 0);
	cr_assert_str_eq(tern_file_architecture(f), "bitnet-b1.58");
	const tern_meta *m = tern_file_meta(f);
	cr_assert_null(tern_meta_get(m, "tensors"), "the tensor table is not metadata");
	cr_assert_eq(tern_meta_get_int(m, "hparams.n_layers", -1), 30);
	cr_assert_eq(tern_meta_type_of(tern_meta_get(m, "hparams.rope_theta")), TERN_META_DOUBLE);
	cr_assert_eq(tern_meta_get_double(m, "hparams.rope_theta", 0), 500000.0);
	cr_assert_eq(tern_meta_get_double(m, "hparams.eps", 0), 1e-05);
	cr_assert_eq(tern_meta_get_bool(m, "hparams.tied", true), false);
	uint64_t u;
	cr_assert_eq(tern_meta_type_of(tern_meta_get(m, "hparams.seed")), TERN_META_UINT);
	cr_assert_eq(tern_meta_as_uint(tern_meta_get(m, "hparams.seed"), &u), TERN_OK);
	cr_assert_eq(u, 18446744073709551615ull);
	int64_t iv;
	cr_assert_eq(tern_meta_as_int(tern_meta_get(m, "hparams.seed"), &iv), TERN_E_INVALID);
	size_t len;
	const char *lic = tern_meta_as_string(tern_meta_get(m, "metadata.license"), &len);
	cr_assert_eq(len, 23);
	cr_assert_eq(memcmp(lic, "MIT \"quoted\"\n\ttab/slash", 23), 0);
	cr_assert_str_eq(tern_meta_get_string(m, "tokenizer.merges.1", ""), "\xc3\xa9 x");
	cr_assert_eq(tern_meta_get_int(m, "metadata.training.steps", 0), -3);
	cr_assert_eq(tern_meta_type_of(tern_meta_get(m, "metadata.training.x")), TERN_META_NULL);
	cr_assert_not_null(tern_meta_get(m, "metadata.training.x"));
	cr_assert_null(tern_meta_get(m, "tokenizer.merges.2"));
	cr_assert_eq(tern_meta_count(tern_meta_get(m, "tokenizer.merges")), 2);
	/* Keys in insertion order: architecture first, then the caller's. */
	cr_assert_str_eq(tern_meta_key(m, 0), "architecture");
	cr_assert_str_eq(tern_meta_key(m, 1), "hparams");
	tern_file_close(f);
	unlink(path);
}

Test(ternfile, meta_path_lookup_prefers_longest_literal_key)
{
	const char *text = "{\"llama.block_count\":30,\"llama\":{\"block_count\":1,"
			   "\"x\":{\"y\":2}},\"a.b\":{\"c\":3},\"arr\":[[5,6]]}";
	tern_meta *root;
	cr_assert_eq(tern_meta_from_json(ctx, text, strlen(text), &root), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_meta_get_int(root, "llama.block_count", 0), 30);
	cr_assert_eq(tern_meta_get_int(root, "llama.x.y", 0), 2);
	cr_assert_eq(tern_meta_get_int(root, "a.b.c", 0), 3);
	cr_assert_eq(tern_meta_get_int(root, "arr.0.1", 0), 6);
	cr_assert_null(tern_meta_get(root, "arr.0.2"));
	cr_assert_null(tern_meta_get(root, "arr.x"));
	cr_assert_null(tern_meta_get(root, "llama.nope"));
	cr_assert_eq(tern_meta_get(root, ""), root);
	tern_meta_free(root);
}

Test(ternfile, meta_large_objects_find_every_key_after_edits)
{
	tern_meta *o = tern_meta_new_object();
	char key[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof key, "tok%d", i);
		cr_assert_eq(tern_meta_set(o, key, tern_meta_new_int(i)), TERN_OK);
	}
	cr_assert_eq(tern_meta_set(o, "tok17", tern_meta_new_int(-17)), TERN_OK);
	cr_assert_eq(tern_meta_count(o), 5000, "replacing a key must not add one");
	tern_meta *v = tern_meta_take(o, "tok100");
	cr_assert_eq(tern_meta_get_int(v, "", 0), 100);
	tern_meta_free(v);
	cr_assert_eq(tern_meta_count(o), 4999);
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof key, "tok%d", i);
		if (i == 100)
			cr_assert_null(tern_meta_get(o, key));
		else
			cr_assert_eq(tern_meta_get_int(o, key, INT64_MIN), i == 17 ? -17 : i, "%s", key);
	}
	cr_assert_str_eq(tern_meta_key(o, 100), "tok101", "order kept after a removal");
	tern_meta *c;
	cr_assert_eq(tern_meta_copy(o, &c), TERN_OK);
	char *j1, *j2;
	cr_assert_eq(tern_meta_to_json(ctx, o, false, &j1), TERN_OK);
	cr_assert_eq(tern_meta_to_json(ctx, c, false, &j2), TERN_OK);
	cr_assert_str_eq(j1, j2);
	tern_free(j1);
	tern_free(j2);
	tern_meta_free(c);
	tern_meta_free(o);
}

Test(ternfile, meta_json_round_trips_doubles_exactly_and_rejects_bad_text)
{
	const char *text = "{\"pi\":3.141592653589793,\"third\":0.3333333333333333,\"two\":2.0,"
			   "\"neg\":-9223372036854775808,\"s\":\"\\u0001\\\\\"}";
	tern_meta *m, *back;
	cr_assert_eq(tern_meta_from_json(ctx, text, strlen(text), &m), TERN_OK);
	char *json;
	cr_assert_eq(tern_meta_to_json(ctx, m, true, &json), TERN_OK);
	cr_assert_eq(tern_meta_from_json(ctx, json, strlen(json), &back), TERN_OK, "%s", json);
	cr_assert_eq(tern_meta_get_double(back, "pi", 0), 3.141592653589793);
	cr_assert_eq(tern_meta_get_double(back, "third", 0), 1.0 / 3.0);
	cr_assert_eq(tern_meta_type_of(tern_meta_get(back, "two")), TERN_META_DOUBLE);
	cr_assert_eq(tern_meta_get_int(back, "neg", 0), INT64_MIN);
	cr_assert_str_eq(tern_meta_get_string(back, "s", ""), "\x01\\");
	tern_free(json);
	tern_meta_free(back);
	tern_meta_free(m);

	cr_assert_eq(tern_meta_from_json(ctx, "{\"a\":1} x", 9, &m), TERN_E_FORMAT);
	cr_assert_null(m);
	cr_assert_eq(tern_meta_from_json(ctx, "{\"a\":", 5, &m), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "ends early"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_meta_from_json(ctx, "{\"a\":\0}", 7, &m), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "NUL byte at offset 5"));
}

Test(ternfile, utf8_check_finds_the_first_bad_byte)
{
	cr_assert(tern_utf8_valid("h\xc3\xa9llo \xf0\x9f\x98\x80", 11));
	cr_assert_eq(tern_utf8_check("ab\xc0\xaf", 4), 2, "overlong");
	cr_assert_eq(tern_utf8_check("ab\xed\xa0\x80", 5), 2, "surrogate");
	cr_assert_eq(tern_utf8_check("\xf4\x90\x80\x80", 4), 0, "above U+10FFFF");
	cr_assert_eq(tern_utf8_check("x\xe2\x82", 3), 1, "truncated sequence");
	cr_assert_eq(tern_utf8_check("x\x80", 2), 1, "lone continuation");
}

/* ---- writer ------------------------------------------------------------------------ */

static int fill_ramp(void *user, const tern_tensor *desc, void *dst)
{
	int *calls = user;
	(*calls)++;
	float *f = dst;
	for (size_t i = 0; i < desc->nbytes / 4; i++)
		f[i] = (float)i * 0.5f;
	return TERN_OK;
}

static int fill_fail(void *user, const tern_tensor *desc, void *dst)
{
	(void)user;
	(void)desc;
	(void)dst;
	return TERN_E_CANCELLED;
}

Test(ternfile, streamed_tensors_are_produced_at_finish)
{
	const char *path = tmp_path("stream.tern");
	tern_writer *w;
	int calls = 0;
	cr_assert_eq(tern_writer_new(ctx, path, &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "s"), TERN_OK);
	tern_tensor d = { .name = "ramp", .dtype = TERN_DTYPE_F32, .n_dims = 2, .shape = { 10, 13 } };
	cr_assert_eq(tern_writer_add_tensor_fn(w, &d, fill_ramp, &calls), TERN_OK);
	d.name = "ramp2";
	d.shape[0] = 3;
	cr_assert_eq(tern_writer_add_tensor_fn(w, &d, fill_ramp, &calls), TERN_OK);
	cr_assert_eq(calls, 0);
	cr_assert_eq(tern_writer_finish(w), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(calls, 2);
	cr_assert_eq(tern_writer_finish(w), TERN_E_INVALID, "a writer finishes once");
	tern_writer_free(w);

	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, path, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_tensor *t = tern_file_find(f, "ramp");
	cr_assert_not_null(t);
	cr_assert_eq(t->nbytes, 130 * 4);
	cr_assert_eq(((const float *)t->data)[129], 64.5f);
	cr_assert_eq(tern_file_find(f, "ramp2")->nbytes, 39 * 4);
	cr_assert_null(tern_file_find(f, "ramp3"));
	tern_file_close(f);
	unlink(path);
}

Test(ternfile, failed_finish_leaves_no_file)
{
	const char *path = tmp_path("fail.tern");
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, path, &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "s"), TERN_OK);
	tern_tensor d = { .name = "x", .dtype = TERN_DTYPE_F16, .n_dims = 1, .shape = { 8 } };
	cr_assert_eq(tern_writer_add_tensor_fn(w, &d, fill_fail, NULL), TERN_OK);
	cr_assert_eq(tern_writer_finish(w), TERN_E_CANCELLED);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "'x'"));
	tern_writer_free(w);
	cr_assert_eq(access(path, F_OK), -1);
	cr_assert_eq(access(tmp_path("fail.tern.tmp"), F_OK), -1);
}

Test(ternfile, writer_refuses_inconsistent_input)
{
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, tmp_path("never.tern"), &w), TERN_OK);
	float data[6] = { 0 };
	tern_tensor t = { .name = "a", .dtype = TERN_DTYPE_F32, .n_dims = 2, .shape = { 2, 3 },
			  .data = data, .nbytes = 24 };
	cr_assert_eq(tern_writer_add_tensor(w, &t), TERN_OK);
	cr_assert_eq(tern_writer_add_tensor(w, &t), TERN_E_INVALID);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "duplicate tensor name 'a'"));
	t.name = "b";
	t.nbytes = 20;
	cr_assert_eq(tern_writer_add_tensor(w, &t), TERN_E_INVALID);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "need 24"), "%s", tern_ctx_errmsg(ctx));
	t.nbytes = 24;
	t.dtype = TERN_DTYPE_T2;
	cr_assert_eq(tern_writer_add_tensor(w, &t), TERN_E_INVALID, "t2 without scales");
	t.name = "bad\xff";
	t.dtype = TERN_DTYPE_F32;
	cr_assert_eq(tern_writer_add_tensor(w, &t), TERN_E_INVALID);
	tern_meta *v = tern_meta_new_int(1);
	cr_assert_eq(tern_writer_set_meta(w, "tensors", v), TERN_E_INVALID);
	cr_assert_eq(tern_writer_set_meta(w, "architecture", v), TERN_E_INVALID);
	cr_assert_eq(tern_writer_set_meta(w, "x.y", v), TERN_OK);
	cr_assert_eq(tern_writer_set_meta(w, "x.y.z", v), TERN_E_INVALID, "x.y is not an object");
	tern_meta_free(v);
	cr_assert_eq(tern_writer_set_json(w, NULL, "[1]"), TERN_E_INVALID);
	cr_assert_eq(tern_writer_set_json(w, NULL, "{\"tensors\":[]}"), TERN_E_INVALID);
	cr_assert_eq(tern_writer_set_json(w, "k", "{oops"), TERN_E_FORMAT);
	cr_assert_eq(tern_writer_finish(w), TERN_E_INVALID, "no architecture");
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "architecture"));
	tern_writer_free(w);
	cr_assert_eq(access(tmp_path("never.tern"), F_OK), -1);
	tern_writer_free(NULL);
	tern_file_close(NULL);
	tern_meta_free(NULL);
}

/* ---- opening ------------------------------------------------------------------------ */

static uint8_t *slurp(const char *path, size_t *n)
{
	FILE *fp = fopen(path, "rb");
	cr_assert_not_null(fp, "cannot open %s", path);
	fseek(fp, 0, SEEK_END);
	long len = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	uint8_t *b = malloc((size_t)len + 1);
	*n = fread(b, 1, (size_t)len, fp);
	fclose(fp);
	return b;
}

Test(ternfile, memory_and_file_opens_agree)
{
	const char *path = tu_srcpath("fuzz/corpus/tern/valid.tern");
	tern_file *a, *b;
	cr_assert_eq(tern_file_open(ctx, path, &a), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	size_t n;
	uint8_t *buf = slurp(path, &n);
	cr_assert_eq(tern_file_open_memory(ctx, buf, n, &b), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_str_eq(tern_file_path(b), "<memory>");
	cr_assert_eq(tern_file_size(b), n);
	cr_assert_eq(tern_file_size(a), n);
	cr_assert_eq(tern_file_n_tensors(a), 3);
	cr_assert_eq(tern_file_n_tensors(b), 3);
	for (size_t i = 0; i < 3; i++) {
		const tern_tensor *x = tern_file_tensor(a, i), *y = tern_file_tensor(b, i);
		cr_assert_str_eq(x->name, y->name);
		cr_assert_eq(x->nbytes, y->nbytes);
		cr_assert_eq(memcmp(x->data, y->data, x->nbytes), 0);
		cr_assert_eq((const uint8_t *)y->data - buf, (const uint8_t *)x->data -
			     (const uint8_t *)tern_file_tensor(a, 0)->data +
			     ((const uint8_t *)tern_file_tensor(b, 0)->data - buf));
	}
	/* The generator wrote floats 0,1,2,... into the f32 tensor. */
	const float *e = tern_file_find(a, "tok_embd.weight")->data;
	cr_assert_eq(e[5], 5.0f);
	cr_assert_eq(tern_meta_get_int(tern_file_meta(a), "hparams.n_embd", 0), 3);
	tern_file_close(a);
	tern_file_close(b);
	free(buf);
}

Test(ternfile, loaded_and_mapped_opens_agree)
{
	const char *path = tu_srcpath("fuzz/corpus/tern/valid.tern");
	tern_file *a, *b;
	cr_assert_eq(tern_file_open(ctx, path, &a), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_file_open_ex(ctx, path, TERN_FILE_LOAD, &b), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_file_size(a), tern_file_size(b));
	cr_assert_eq(tern_file_n_tensors(a), tern_file_n_tensors(b));
	for (size_t i = 0; i < tern_file_n_tensors(a); i++) {
		const tern_tensor *x = tern_file_tensor(a, i), *y = tern_file_tensor(b, i);
		cr_assert_str_eq(x->name, y->name);
		cr_assert_eq(x->nbytes, y->nbytes);
		cr_assert_neq(x->data, y->data);
		cr_assert_eq(memcmp(x->data, y->data, x->nbytes), 0);
		/* .tern data stays 64-byte aligned in the loaded copy */
		cr_assert_eq((uintptr_t)y->data % 64, 0);
	}
	tern_file_close(a);
	tern_file_close(b);

	tern_file *f = (tern_file *)1;
	cr_assert_eq(tern_file_open_ex(ctx, path, 1u << 7, &f), TERN_E_INVALID);
	cr_assert_null(f);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "flags"));
	cr_assert_eq(tern_file_open_ex(ctx, tmp_path("does-not-exist"), TERN_FILE_LOAD, &f),
		     TERN_E_IO);
	cr_assert_null(f);
}

Test(ternfile, a_directory_or_missing_path_is_refused_with_a_reason)
{
	tern_file *f = (tern_file *)1;
	cr_assert_eq(tern_file_open(ctx, dir, &f), TERN_E_UNSUPPORTED);
	cr_assert_null(f);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "directory"));
	cr_assert_eq(tern_file_open(ctx, tmp_path("does-not-exist"), &f), TERN_E_IO);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "does-not-exist"));
	cr_assert_eq(tern_file_open_memory(ctx, "xy", 2, &f), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "too short"));
}

/* ---- the malformed corpus ---------------------------------------------------------------- */

static int status_of(const char *name)
{
	static const struct {
		const char *name;
		int status;
	} map[] = {
		{ "TERN_E_INVALID", TERN_E_INVALID },	    { "TERN_E_NOMEM", TERN_E_NOMEM },
		{ "TERN_E_IO", TERN_E_IO },		    { "TERN_E_FORMAT", TERN_E_FORMAT },
		{ "TERN_E_OVERFLOW", TERN_E_OVERFLOW },	    { "TERN_E_UNSUPPORTED", TERN_E_UNSUPPORTED },
		{ "TERN_E_NOT_FOUND", TERN_E_NOT_FOUND },
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (strcmp(map[i].name, name) == 0)
			return map[i].status;
	cr_assert_fail("unknown status %s in a manifest", name);
	return 0;
}

/* Runs every line of one manifest; returns the number of files checked. */
static int run_manifest(const char *manifest)
{
	char mpath[4096];
	snprintf(mpath, sizeof mpath, "%s", tu_srcpath(manifest));
	FILE *fp = fopen(mpath, "r");
	if (!fp)
		return 0;
	char line[1024];
	int n = 0;
	while (fgets(line, sizeof line, fp)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#')
			continue;
		char *file = strtok(line, "\t");
		char *status = strtok(NULL, "\t");
		char *phrase = strtok(NULL, "");
		cr_assert(file && status && phrase, "bad manifest line in %s", manifest);
		char rel[1200];
		snprintf(rel, sizeof rel, "tests/data/malformed/%s", file);
		char path[4096];
		snprintf(path, sizeof path, "%s", tu_srcpath(rel));
		int want = status_of(status);
		tern_file *f = (tern_file *)1;
		tern_ctx_clear_error(ctx);
		int rc = tern_file_open(ctx, path, &f);
		cr_expect_eq(rc, want, "%s: got %d (%s), expected %s", file, rc, tern_ctx_errmsg(ctx),
			     status);
		cr_expect_null(f, "%s: no file on failure", file);
		cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), phrase), "%s: message \"%s\" lacks \"%s\"",
				   file, tern_ctx_errmsg(ctx), phrase);
		cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), file), "%s: message names no file",
				   file);
		/* The same bytes from memory fail the same way (the path differs). */
		size_t len;
		uint8_t *buf = slurp(path, &len);
		rc = tern_file_open_memory(ctx, buf, len, &f);
		cr_expect_eq(rc, want, "%s from memory: got %d (%s)", file, rc, tern_ctx_errmsg(ctx));
		free(buf);
		n++;
	}
	fclose(fp);
	return n;
}

Test(ternfile, every_malformed_file_fails_with_its_own_message)
{
	int n = run_manifest("tests/data/malformed/MANIFEST.tern");
	cr_assert_geq(n, 25, "only %d .tern files in the malformed corpus", n);
	n += run_manifest("tests/data/malformed/MANIFEST.gguf");
	n += run_manifest("tests/data/malformed/MANIFEST.safetensors");
	cr_assert_geq(n, 40, "the malformed corpus has %d files", n);
}

Test(ternfile, fuzz_seeds_open_cleanly)
{
	static const char *const seeds[] = { "valid.tern", "no_tensors.tern", "t2_block_f16.tern" };
	for (size_t i = 0; i < 3; i++) {
		char rel[256];
		snprintf(rel, sizeof rel, "fuzz/corpus/tern/%s", seeds[i]);
		tern_file *f;
		cr_assert_eq(tern_file_open(ctx, tu_srcpath(rel), &f), TERN_OK, "%s: %s", seeds[i],
			     tern_ctx_errmsg(ctx));
		tern_file_close(f);
	}
}

/* ---- I4 ---------------------------------------------------------------------- */

/* A file holding one 3 x 300 I4 tensor with f16 block scales; returns its
 * bytes (caller frees) and size. */
static uint8_t *i4_file(const char *path, size_t *n)
{
	tu_rng rng = tu_rng_new(31);
	rt_case c = { TERN_DTYPE_I4, TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16, 2, { 3, 300 } };
	int8_t *codes;
	tern_tensor *t = make_tensor(&c, &rng, &codes);
	t->name = "head";
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, path, &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "a"), TERN_OK);
	cr_assert_eq(tern_writer_add_tensor(w, t), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_writer_finish(w), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_writer_free(w);
	t->name = NULL;
	tern_tensor_free(t);
	free(codes);
	return slurp(path, n);
}

/* Replaces the first `from` in the header by `to` (same length) and opens
 * the result from memory: the status, with the message in ctx. */
static int open_patched(const uint8_t *buf, size_t n, const char *from, const char *to)
{
	uint8_t *b = malloc(n);
	memcpy(b, buf, n);
	cr_assert_eq(strlen(from), strlen(to));
	uint8_t *hit = memmem(b, n, from, strlen(from));
	cr_assert_not_null(hit, "header has no %s", from);
	memcpy(hit, to, strlen(to));
	tern_file *f = NULL;
	int rc = tern_file_open_memory(ctx, b, n, &f);
	tern_file_close(f);
	free(b);
	return rc;
}

Test(ternfile, i4_header_states_its_packing_and_bad_i4_data_is_refused_clearly)
{
	const char *path = tmp_path("i4.tern");
	size_t n;
	uint8_t *buf = i4_file(path, &n);
	char *hdr = strndup((const char *)buf + 16, (size_t)tern_rd_u64(buf + 8));
	cr_assert_not_null(strstr(hdr, "\"dtype\":\"i4\""), "%s", hdr);
	cr_assert_not_null(strstr(hdr, "\"packing\":{\"group\":128,\"group_bytes\":64,"
				       "\"codes_per_byte\":2,\"row_align\":128}"),
			   "%s", hdr);
	/* 3 rows x 3 groups x 64 bytes of codes, then 9 f16 scales. */
	cr_assert_not_null(strstr(hdr, "\"nbytes\":594"), "%s", hdr);
	free(hdr);

	tern_file *f;
	cr_assert_eq(tern_file_open_memory(ctx, buf, n, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_file_close(f);

	cr_assert_eq(open_patched(buf, n, "\"codes_per_byte\":2", "\"codes_per_byte\":4"),
		     TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "codes_per_byte"), "%s",
			   tern_ctx_errmsg(ctx));
	cr_assert_eq(open_patched(buf, n, "\"block\":128", "\"block\":256"), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "i4 needs block scales of 128"), "%s",
			   tern_ctx_errmsg(ctx));
	cr_assert_eq(open_patched(buf, n, "\"nbytes\":594", "\"nbytes\":593"), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "594"), "%s", tern_ctx_errmsg(ctx));

	/* A file cut inside the tensor's data. */
	tern_file *g = NULL;
	cr_assert_neq(tern_file_open_memory(ctx, buf, n - 100, &g), TERN_OK);
	cr_assert_null(g);
	cr_assert(strlen(tern_ctx_errmsg(ctx)) > 0);
	free(buf);
	unlink(path);
}
