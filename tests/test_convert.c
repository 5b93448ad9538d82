/*
 * test_convert.c: conversion to .tern through the library (tern_convert
 * with no plugins, so the generic GGUF path), checked against the
 * reference files: every ternary tensor of the TQ2_0, TQ1_0 and I2_S
 * tiny models, converted to T2 and to T3, must decode to exactly the F32
 * file's values, every other tensor must keep its bytes, and the GGUF
 * key/values must survive under "gguf". Also: float casts and the int8
 * head, cancellation leaving no output and no temporary file, the
 * writer's progress hook, where tensors come from (tern_file_tensor_source)
 * and Hugging Face directories opened as tern_files. Plugin dispatch is
 * tested through the CLI (test_cli.c), whose binary exports libtern to
 * plugins.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tern/file.h"
#include "tern/plugin.h"
#include "tern/tensor.h"
#include "testutil.h"

static tern_ctx *ctx;
static char dir[256];

static void setup(void)
{
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	snprintf(dir, sizeof dir, "/tmp/test_convert.%ld", (long)getpid());
	mkdir(dir, 0700);
}

static void teardown(void)
{
	tern_ctx_free(ctx);
	rmdir(dir);
}

TestSuite(convert, .init = setup, .fini = teardown);

/* A path in the test's directory; rotating buffers. */
static const char *tmp_path(const char *name)
{
	static char buf[4][512];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
	return buf[k];
}

static bool exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static char *shared(const char *rel)
{
	return strdup(tu_shared_path(rel));
}

/* Every tensor of the reference F32 file against the converted file:
 * ternary ones must decode (codes times scales) to exactly the F32
 * values; the others must be byte-identical. Returns the number of
 * ternary tensors seen. */
static int expect_same_weights(const tern_file *conv, tern_dtype ternary)
{
	char *ref_path = shared("llama.cpp/tiny-f32.gguf");
	tern_file *ref;
	cr_assert_eq(tern_file_open(ctx, ref_path, &ref), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	free(ref_path);
	cr_assert_eq(tern_file_n_tensors(conv), tern_file_n_tensors(ref));
	int n_ternary = 0;
	for (size_t i = 0; i < tern_file_n_tensors(ref); i++) {
		const tern_tensor *r = tern_file_tensor(ref, i);
		const tern_tensor *c = tern_file_find(conv, r->name);
		cr_assert_not_null(c, "tensor %s missing", r->name);
		cr_assert_eq(c->n_dims, r->n_dims, "%s", r->name);
		for (int d = 0; d < r->n_dims; d++)
			cr_assert_eq(c->shape[d], r->shape[d], "%s dim %d", r->name, d);
		if (!tern_type_traits_of(c->dtype)->ternary) {
			cr_expect_eq(c->dtype, r->dtype, "%s", r->name);
			cr_expect_eq(c->nbytes, r->nbytes, "%s", r->name);
			cr_expect_eq(memcmp(c->data, r->data, r->nbytes), 0, "%s bytes differ",
				     r->name);
			continue;
		}
		n_ternary++;
		cr_expect_eq(c->dtype, ternary, "%s is %s", r->name, tern_dtype_name(c->dtype));
		int64_t rows = tern_tensor_rows(c), cols = tern_tensor_cols(c);
		float *row = malloc((size_t)cols * sizeof *row);
		cr_assert_not_null(row);
		for (int64_t y = 0; y < rows; y++) {
			tern_tensor_row_to_float(c, y, row);
			const float *want = (const float *)r->data + y * cols;
			for (int64_t x = 0; x < cols; x++)
				if (row[x] != want[x])
					cr_assert_fail("%s[%lld][%lld] = %g, F32 file has %g", r->name,
						       (long long)y, (long long)x, row[x], want[x]);
		}
		free(row);
	}
	tern_file_close(ref);
	return n_ternary;
}

static void convert_exactly(const char *rel, tern_dtype ternary)
{
	char *src = shared(rel);
	const char *out = tmp_path("out.tern");
	tern_convert_opts o = tern_convert_default_opts();
	o.ternary_type = ternary;
	const char *by = NULL;
	cr_assert_eq(tern_convert(ctx, NULL, src, out, &o, NULL, NULL, &by), TERN_OK, "%s: %s",
		     rel, tern_ctx_errmsg(ctx));
	cr_expect_str_eq(by, "gguf");
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, out, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_expect_eq(tern_file_format_of(f), TERN_FORMAT_TERN);
	cr_expect_str_eq(tern_file_architecture(f), "bitnet");
	const tern_meta *m = tern_file_meta(f);
	/* Key/values verbatim, dotted keys literal, arrays whole. */
	cr_expect_eq(tern_meta_get_int(m, "gguf.bitnet.block_count", 0), 4);
	/* An f32 value keeps its exact float value through the JSON header. */
	cr_expect_eq(tern_meta_get_double(m, "gguf.bitnet.attention.layer_norm_rms_epsilon", 0),
		     (double)1e-5f);
	cr_expect_eq(tern_meta_count(tern_meta_get(m, "gguf.tokenizer.ggml.tokens")), 512);
	cr_expect_str_eq(tern_meta_get_string(m, "gguf.tokenizer.ggml.tokens.1", ""), "<s>");
	cr_expect_str_eq(tern_meta_get_string(m, "metadata.source_format", ""), "gguf");
	/* 4 layers x 7 linear matrices. */
	cr_expect_eq(expect_same_weights(f, ternary), 28, "%s", rel);
	tern_file_close(f);
	unlink(out);
	free(src);
}

Test(convert, tq2_0_to_t2_and_t3_decodes_to_the_f32_weights)
{
	convert_exactly("llama.cpp/tiny-tq2_0.gguf", TERN_DTYPE_T2);
	convert_exactly("llama.cpp/tiny-tq2_0.gguf", TERN_DTYPE_T3);
}

Test(convert, tq1_0_to_t2_and_t3_decodes_to_the_f32_weights)
{
	convert_exactly("llama.cpp/tiny-tq1_0.gguf", TERN_DTYPE_T2);
	convert_exactly("llama.cpp/tiny-tq1_0.gguf", TERN_DTYPE_T3);
}

Test(convert, i2_s_to_t2_and_t3_decodes_to_the_f32_weights)
{
	convert_exactly("bitnet.cpp/tiny-i2_s.gguf", TERN_DTYPE_T2);
	convert_exactly("bitnet.cpp/tiny-i2_s.gguf", TERN_DTYPE_T3);
}

Test(convert, float_cast_and_int8_head_follow_the_options)
{
	char *src_path = shared("llama.cpp/tiny-f32.gguf");
	const char *out = tmp_path("cast.tern");
	tern_convert_opts o = tern_convert_default_opts();
	o.float_type = TERN_DTYPE_BF16;
	o.head_type = TERN_DTYPE_I8;
	cr_assert_eq(tern_convert(ctx, NULL, src_path, out, &o, NULL, NULL, NULL), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	tern_file *src, *f;
	cr_assert_eq(tern_file_open(ctx, src_path, &src), TERN_OK);
	cr_assert_eq(tern_file_open(ctx, out, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	/* Norms (1-D) keep F32. */
	const tern_tensor *norm = tern_file_find(f, "output_norm.weight");
	cr_assert_not_null(norm);
	cr_expect_eq(norm->dtype, TERN_DTYPE_F32);
	/* A float matrix is cast to BF16, rounded to nearest even. */
	const tern_tensor *q = tern_file_find(f, "blk.0.attn_q.weight");
	const tern_tensor *q0 = tern_file_find(src, "blk.0.attn_q.weight");
	cr_assert_eq(q->dtype, TERN_DTYPE_BF16);
	for (int64_t i = 0; i < 256 * 256; i++)
		cr_assert_eq(((const uint16_t *)q->data)[i],
			     tern_f32_to_bf16(((const float *)q0->data)[i]), "element %lld",
			     (long long)i);
	/* The embedding is int8 per row: |x - q s| <= s/2 with s = absmax/127
	 * (round to nearest), plus float rounding of q*s: 1e-6 relative. */
	const tern_tensor *e = tern_file_find(f, "token_embd.weight");
	const tern_tensor *e0 = tern_file_find(src, "token_embd.weight");
	cr_assert_eq(e->dtype, TERN_DTYPE_I8);
	cr_assert_eq(e->q.kind, TERN_SCALE_ROW);
	float row[256];
	for (int64_t y = 0; y < 512; y++) {
		const float *want = (const float *)e0->data + y * 256;
		float amax = 0;
		for (int x = 0; x < 256; x++)
			amax = fabsf(want[x]) > amax ? fabsf(want[x]) : amax;
		float s = amax / 127;
		cr_assert_float_eq(tern_tensor_scale_at(e, y, 0), s, 1e-6f * s + 1e-30f);
		tern_tensor_row_to_float(e, y, row);
		for (int x = 0; x < 256; x++)
			cr_assert(fabsf(row[x] - want[x]) <= 0.5f * s * (1 + 1e-5f) + 1e-6f * amax,
				  "row %lld col %d: %g vs %g", (long long)y, x, row[x], want[x]);
	}
	tern_file_close(f);
	tern_file_close(src);
	unlink(out);
	free(src_path);
}

static int cancel_midway(void *user, const char *stage, int64_t done, int64_t total)
{
	int *calls = user;
	(*calls)++;
	cr_assert_str_eq(stage, "write");
	return done > total / 2;
}

Test(convert, cancelling_leaves_neither_output_nor_temporary)
{
	char *src = shared("llama.cpp/tiny-tq2_0.gguf");
	const char *out = tmp_path("cancel.tern"), *tmp = tmp_path("cancel.tern.tmp");
	int calls = 0;
	cr_assert_eq(tern_convert(ctx, NULL, src, out, NULL, cancel_midway, &calls, NULL),
		     TERN_E_CANCELLED);
	cr_expect_gt(calls, 2);
	cr_expect(!exists(out) && !exists(tmp), "output or temporary file left behind");
	/* An existing OUT is left as it was. */
	FILE *fp = fopen(out, "w");
	cr_assert_not_null(fp);
	fputs("old", fp);
	fclose(fp);
	cr_assert_eq(tern_convert(ctx, NULL, src, out, NULL, cancel_midway, &calls, NULL),
		     TERN_E_CANCELLED);
	char buf[8] = "";
	fp = fopen(out, "r");
	cr_assert_not_null(fp);
	cr_expect_eq(fread(buf, 1, sizeof buf - 1, fp), 3);
	fclose(fp);
	cr_expect_str_eq(buf, "old");
	cr_expect(!exists(tmp));
	unlink(out);
	/* A failure to write is the same: no output directory, nothing left. */
	cr_expect_eq(tern_convert(ctx, NULL, src, tmp_path("nodir/x.tern"), NULL, NULL, NULL, NULL),
		     TERN_E_IO);
	free(src);
}

Test(convert, refuses_bad_options_and_unknown_inputs_with_reasons)
{
	char *src = shared("llama.cpp/tiny-tq2_0.gguf");
	tern_convert_opts o = tern_convert_default_opts();
	o.ternary_type = TERN_DTYPE_F16;
	cr_expect_eq(tern_convert(ctx, NULL, src, tmp_path("x.tern"), &o, NULL, NULL, NULL),
		     TERN_E_INVALID);
	cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), "t2 or t3"));
	o = tern_convert_default_opts();
	o.head_type = TERN_DTYPE_T2;
	cr_expect_eq(tern_convert(ctx, NULL, src, tmp_path("x.tern"), &o, NULL, NULL, NULL),
		     TERN_E_INVALID);
	free(src);
	const char *junk = tmp_path("junk.bin");
	FILE *fp = fopen(junk, "w");
	cr_assert_not_null(fp);
	fputs("not a model at all", fp);
	fclose(fp);
	cr_expect_eq(tern_convert(ctx, NULL, junk, tmp_path("x.tern"), NULL, NULL, NULL, NULL),
		     TERN_E_FORMAT);
	cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), "no plugin converts it"), "%s",
			   tern_ctx_errmsg(ctx));
	cr_expect(!exists(tmp_path("x.tern")));
	unlink(junk);
}

/* ---- where tensors come from ------------------------------------------------ */

Test(convert, tensor_source_names_the_stored_gguf_type)
{
	static const struct {
		const char *file, *type;
		size_t bytes; /* of blk.0.attn_q.weight, 256 x 256 */
	} cases[] = {
		{ "llama.cpp/tiny-tq1_0.gguf", "tq1_0", 256 * 54 },
		{ "llama.cpp/tiny-tq2_0.gguf", "tq2_0", 256 * 66 },
		{ "bitnet.cpp/tiny-i2_s.gguf", "i2_s", 256 * 256 / 4 + 32 },
		{ "llama.cpp/tiny-f32.gguf", "f32", 256 * 256 * 4 },
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		tern_file *f;
		cr_assert_eq(tern_file_open(ctx, tu_shared_path(cases[k].file), &f), TERN_OK);
		size_t i = 0;
		while (strcmp(tern_file_tensor(f, i)->name, "blk.0.attn_q.weight") != 0)
			i++;
		const char *type;
		const void *data;
		size_t n;
		cr_assert_eq(tern_file_tensor_source(f, i, &type, &data, &n), TERN_OK);
		cr_expect_str_eq(type, cases[k].type);
		cr_expect_eq(n, cases[k].bytes, "%s: %zu bytes", cases[k].file, n);
		cr_expect_not_null(data);
		cr_expect_eq(tern_file_tensor_source(f, tern_file_n_tensors(f), &type, NULL, NULL),
			     TERN_E_INVALID);
		tern_file_close(f);
	}
}

/* ---- the writer's progress hook --------------------------------------------- */

typedef struct seen {
	uint64_t last, total;
	int calls;
	bool monotonic;
} seen;

static int record(void *user, uint64_t done, uint64_t total)
{
	seen *s = user;
	s->monotonic = s->monotonic && done >= s->last && done <= total &&
		       (s->calls == 0 || total == s->total);
	s->last = done;
	s->total = total;
	s->calls++;
	return 0;
}

Test(convert, writer_progress_counts_every_byte_of_the_file)
{
	const char *out = tmp_path("prog.tern");
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, out, &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "x"), TERN_OK);
	static float v[3000];
	for (int i = 0; i < 3; i++) {
		char name[16];
		snprintf(name, sizeof name, "t%d", i);
		tern_tensor t = { name, TERN_DTYPE_F32, 1, { 1000 - 300 * i }, { 0 }, v,
				  (size_t)(1000 - 300 * i) * 4 };
		cr_assert_eq(tern_writer_add_tensor_ref(w, &t), TERN_OK);
	}
	seen s = { 0, 0, 0, true };
	cr_assert_eq(tern_writer_set_progress(w, record, &s), TERN_OK);
	cr_assert_eq(tern_writer_finish(w), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_writer_free(w);
	struct stat st;
	cr_assert_eq(stat(out, &st), 0);
	cr_expect(s.monotonic);
	cr_expect_geq(s.calls, 4, "start and one per tensor: %d", s.calls);
	cr_expect_eq(s.last, (uint64_t)st.st_size);
	cr_expect_eq(s.total, (uint64_t)st.st_size);
	unlink(out);
}

/* ---- Hugging Face directories as tern_files ------------------------------------ */

static char hf[512];

static void put(const char *name, const void *data, size_t len)
{
	char p[600];
	snprintf(p, sizeof p, "%s/%s", hf, name);
	FILE *fp = fopen(p, "wb");
	cr_assert_not_null(fp);
	cr_assert_eq(fwrite(data, 1, len, fp), len);
	fclose(fp);
}

/* A safetensors file holding one F32 tensor [2][2]. */
static size_t put_shard(const char *file, const char *name, float base)
{
	char hdr[200];
	snprintf(hdr, sizeof hdr,
		 "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", name);
	while (strlen(hdr) % 8)
		strcat(hdr, " ");
	uint64_t hl = strlen(hdr);
	uint8_t img[256];
	memcpy(img, &hl, 8);
	memcpy(img + 8, hdr, hl);
	float v[4] = { base, base + 1, base + 2, base + 3 };
	memcpy(img + 8 + hl, v, sizeof v);
	put(file, img, 8 + hl + sizeof v);
	return 8 + hl + sizeof v;
}

static void hf_remove(void)
{
	static const char *const names[] = { "config.json", "a.safetensors", "b.safetensors",
					      "model.safetensors.index.json" };
	char p[600];
	for (size_t i = 0; i < 4; i++) {
		snprintf(p, sizeof p, "%s/%s", hf, names[i]);
		unlink(p);
	}
	rmdir(hf);
}

Test(convert, hf_directory_opens_as_a_file_with_every_shard)
{
	snprintf(hf, sizeof hf, "%s/hf", dir);
	cr_assert_eq(mkdir(hf, 0700), 0);
	/* No config.json: not a checkpoint. */
	tern_file *f;
	cr_expect_eq(tern_file_open(ctx, hf, &f), TERN_E_UNSUPPORTED);
	cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), "without config.json"));
	static const char cfg[] = "{\"architectures\":[\"TinyForCausalLM\"],"
				  "\"model_type\":\"tiny\",\"hidden_size\":2}";
	put("config.json", cfg, strlen(cfg));
	size_t bytes = put_shard("a.safetensors", "x.weight", 1);
	bytes += put_shard("b.safetensors", "y.weight", 10);
	static const char index[] = "{\"metadata\":{},\"weight_map\":{\"y.weight\":\"b.safetensors\","
				    "\"x.weight\":\"a.safetensors\"}}";
	put("model.safetensors.index.json", index, strlen(index));
	cr_assert_eq(tern_file_open(ctx, hf, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_expect_eq(tern_file_format_of(f), TERN_FORMAT_HF);
	cr_expect_str_eq(tern_file_format_name(f), "huggingface");
	cr_expect_eq(tern_file_version(f), 0);
	cr_expect_str_eq(tern_file_architecture(f), "TinyForCausalLM");
	cr_expect_eq(tern_file_size(f), bytes);
	cr_expect_eq(tern_meta_get_int(tern_file_meta(f), "config.hidden_size", 0), 2);
	cr_expect_str_eq(tern_meta_get_string(tern_file_meta(f), "shards.0", ""), "b.safetensors");
	cr_assert_eq(tern_file_n_tensors(f), 2);
	cr_expect_str_eq(tern_file_tensor(f, 0)->name, "y.weight");
	const tern_tensor *x = tern_file_find(f, "x.weight");
	cr_assert_not_null(x);
	cr_expect_eq(x->dtype, TERN_DTYPE_F32);
	cr_expect(x->n_dims == 2 && x->shape[0] == 2 && x->shape[1] == 2);
	cr_expect_eq(((const float *)x->data)[3], 4.0f);
	cr_expect_eq(((const float *)tern_file_find(f, "y.weight")->data)[0], 10.0f);
	const char *type;
	cr_expect_eq(tern_file_tensor_source(f, 1, &type, NULL, NULL), TERN_OK);
	cr_expect_str_eq(type, "f32");
	tern_file_close(f);
	/* Nobody converts it without plugins: the message says what it is. */
	cr_expect_eq(tern_convert(ctx, NULL, hf, tmp_path("hf.tern"), NULL, NULL, NULL, NULL),
		     TERN_E_UNSUPPORTED);
	cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), "huggingface input of architecture "
							"'TinyForCausalLM'"),
			   "%s", tern_ctx_errmsg(ctx));
	/* Without "architectures" the model_type names it. */
	static const char cfg2[] = "{\"model_type\":\"tiny\"}";
	put("config.json", cfg2, strlen(cfg2));
	cr_assert_eq(tern_file_open(ctx, hf, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_expect_str_eq(tern_file_architecture(f), "tiny");
	tern_file_close(f);
	hf_remove();
}

/* ---- the generated GGUF seed: every value type, Q8_0, strings ------------------- */

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	cr_assert_not_null(fp, "%s", path);
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	uint8_t *buf = malloc((size_t)n);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

Test(convert, gguf_values_stay_verbatim_and_q8_0_becomes_exact_f32)
{
	const char *seed = tu_srcpath("fuzz/corpus/gguf/valid.gguf");
	const char *out = tmp_path("seed.tern");
	cr_assert_eq(tern_convert(ctx, NULL, seed, out, NULL, NULL, NULL, NULL), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, out, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_meta *g = tern_meta_get(tern_file_meta(f), "gguf");
	uint64_t u;
	cr_expect_eq(tern_meta_as_uint(tern_meta_get(g, "t.u64"), &u), TERN_OK);
	cr_expect_eq(u, 1ull << 63);
	cr_expect_eq(tern_meta_get_int(g, "t.i64", 0), -4611686018427387904ll);
	cr_expect_eq(tern_meta_get_double(g, "t.f32", 0), 0.25);
	cr_expect_str_eq(tern_meta_get_string(g, "t.string", ""), "h\xc3\xa9llo");
	cr_expect_str_eq(tern_meta_get_string(g, "t.nested.0.1", ""), "bc");
	cr_expect(tern_meta_get_bool(g, "t.bool", false));
	/* Q8_0 is d * q = 0.5 (i - 16), exactly, as F32 (it is 1-D: no cast). */
	const tern_tensor *q8 = tern_file_find(f, "q8");
	cr_assert_not_null(q8);
	cr_assert_eq(q8->dtype, TERN_DTYPE_F32);
	for (int i = 0; i < 32; i++)
		cr_expect_eq(((const float *)q8->data)[i], 0.5f * (float)(i - 16));
	cr_expect_eq(tern_file_find(f, "f16")->dtype, TERN_DTYPE_F16);
	cr_expect_eq(tern_file_find(f, "tq2")->dtype, TERN_DTYPE_T2);
	tern_file_close(f);
	unlink(out);

	/* A value string that is not UTF-8 cannot go into a JSON header. */
	size_t len;
	uint8_t *buf = slurp(seed, &len);
	uint8_t *p = memmem(buf, len, "h\xc3\xa9llo", 6);
	cr_assert_not_null(p);
	p[1] = 0xff;
	const char *bad = tmp_path("bad.gguf");
	FILE *fp = fopen(bad, "wb");
	cr_assert_not_null(fp);
	cr_assert_eq(fwrite(buf, 1, len, fp), len);
	fclose(fp);
	free(buf);
	cr_expect_eq(tern_convert(ctx, NULL, bad, out, NULL, NULL, NULL, NULL), TERN_E_UNSUPPORTED);
	cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), "'t.string'"), "%s", tern_ctx_errmsg(ctx));
	cr_expect(!exists(out));
	unlink(bad);
}
