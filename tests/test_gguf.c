/*
 * test_gguf.c: the GGUF reader against llama.cpp's and bitnet.cpp's files
 * in ../shared/testdata (the F32, TQ1_0, TQ2_0 and I2_S tiny models hold
 * the same weights; the Llama-2 vocabulary), against files built here byte
 * by byte (every value type, alignment, type 36), and against the malformed
 * corpus (tests/data/malformed/MANIFEST.gguf). Weight comparisons are exact:
 * the ternary files' scales are fp16-representable, so dequantized values
 * equal the F32 file's bit for bit.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/file.h"
#include "tern/tensor.h"
#include "testutil.h"

static tern_ctx *ctx;

static void setup(void)
{
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
}

static void teardown(void)
{
	tern_ctx_free(ctx);
}

TestSuite(gguf, .init = setup, .fini = teardown);

/* <rel> in the shared reference data ($TERN_SHARED, else ../shared/testdata). */
static const char *shared(const char *rel)
{
	return tu_shared_path(rel);
}

/* Outside a checkout with ../shared (a release tarball) the reference
 * files are absent: skip, saying so, rather than fail. */
static void need_shared(void)
{
	FILE *fp = fopen(shared("llama.cpp/tiny-f32.gguf"), "rb");
	if (!fp)
		cr_skip_test("no reference data at %s", shared(""));
	fclose(fp);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	cr_assert_not_null(fp, "cannot open %s", path);
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	uint8_t *buf = malloc((size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	return buf;
}

static tern_file *open_ok(const char *path)
{
	tern_file *f;
	int rc = tern_file_open(ctx, path, &f);
	cr_assert_eq(rc, TERN_OK, "%s: %s", path, tern_ctx_errmsg(ctx));
	return f;
}

/* ---- a tiny GGUF writer for hand-made files ----------------------------------------- */

typedef struct gbuf {
	uint8_t b[4096];
	size_t n;
} gbuf;

static void put(gbuf *g, const void *p, size_t n)
{
	cr_assert_leq(g->n + n, sizeof g->b);
	memcpy(g->b + g->n, p, n);
	g->n += n;
}
static void put32(gbuf *g, uint32_t v) { put(g, &v, 4); }
static void put64(gbuf *g, uint64_t v) { put(g, &v, 8); }
static void putstr(gbuf *g, const char *s)
{
	put64(g, strlen(s));
	put(g, s, strlen(s));
}
static void pad(gbuf *g, size_t align)
{
	while (g->n % align)
		g->b[g->n++] = 0;
}
static void header(gbuf *g, uint32_t version, uint64_t nt, uint64_t nkv)
{
	g->n = 0;
	put(g, "GGUF", 4);
	put32(g, version);
	put64(g, nt);
	put64(g, nkv);
}
static void kv_str(gbuf *g, const char *k, const char *v)
{
	putstr(g, k);
	put32(g, 8);
	putstr(g, v);
}
static void tensor1(gbuf *g, const char *name, uint64_t ne0, uint32_t type, uint64_t off)
{
	putstr(g, name);
	put32(g, 1);
	put64(g, ne0);
	put32(g, type);
	put64(g, off);
}

/* ---- llama.cpp's files ---------------------------------------------------------------- */

Test(gguf, tiny_f32_metadata_holds_the_hyperparameters)
{
	need_shared();
	tern_file *f = open_ok(shared("llama.cpp/tiny-f32.gguf"));
	const tern_meta *m = tern_file_meta(f);
	cr_expect_str_eq(tern_file_format_name(f), "gguf");
	cr_expect_eq(tern_file_version(f), 3);
	cr_expect_str_eq(tern_file_architecture(f), "bitnet");
	cr_expect_str_eq(tern_meta_get_string(m, "general.architecture", ""), "bitnet");
	cr_expect_eq(tern_meta_get_int(m, "bitnet.embedding_length", 0), 256);
	cr_expect_eq(tern_meta_get_int(m, "bitnet.block_count", 0), 4);
	cr_expect_eq(tern_meta_get_int(m, "bitnet.attention.head_count", 0), 8);
	cr_expect_eq(tern_meta_get_int(m, "bitnet.attention.head_count_kv", 0), 4);
	cr_expect_eq(tern_meta_get_int(m, "bitnet.feed_forward_length", 0), 768);
	cr_expect_eq(tern_meta_get_int(m, "bitnet.context_length", 0), 1024);
	cr_expect_eq(tern_meta_get_double(m, "bitnet.rope.freq_base", 0), 500000.0);
	/* Stored as f32: the value is 1e-5 rounded to float, exactly. */
	cr_expect_eq(tern_meta_get_double(m, "bitnet.attention.layer_norm_rms_epsilon", 0),
		     (double)1e-5f);
	/* GGUF's u32 stays unsigned, i32 signed. */
	cr_expect_eq(tern_meta_type_of(tern_meta_get(m, "bitnet.block_count")), TERN_META_UINT);
	cr_expect_eq(tern_meta_get_bool(m, "tokenizer.ggml.add_bos_token", false), true);
	cr_expect_eq(tern_meta_get_int(m, "tokenizer.ggml.bos_token_id", -1), 1);
	const tern_meta *tok = tern_meta_get(m, "tokenizer.ggml.tokens");
	cr_expect_eq(tern_meta_count(tok), 512);
	cr_expect_str_eq(tern_meta_get_string(tok, "2", ""), "</s>");
	cr_expect_eq(tern_file_n_tensors(f), 46);
	tern_file_close(f);
}

Test(gguf, f32_tensors_are_used_in_place_with_reversed_shapes)
{
	need_shared();
	const char *path = shared("llama.cpp/tiny-f32.gguf");
	size_t len;
	uint8_t *buf = slurp(path, &len);
	tern_file *f;
	cr_assert_eq(tern_file_open_memory(ctx, buf, len, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	/* The header ends at byte 14582; data starts at the next multiple of
	 * 32. ggml ne = (256, 128) for attn_k is tern's [128][256]. */
	const size_t data_start = 14592;
	const tern_tensor *t = tern_file_find(f, "blk.0.attn_k.weight");
	cr_assert_not_null(t);
	cr_expect_eq(t->dtype, TERN_DTYPE_F32);
	cr_expect_eq(t->n_dims, 2);
	cr_expect_eq(t->shape[0], 128);
	cr_expect_eq(t->shape[1], 256);
	cr_expect_eq((const uint8_t *)t->data, buf + data_start + 788480);
	cr_expect_eq(t->nbytes, 128 * 256 * 4);
	t = tern_file_find(f, "token_embd.weight");
	cr_expect_eq((const uint8_t *)t->data, buf + data_start);
	cr_expect_eq(t->shape[0], 512);
	t = tern_file_find(f, "blk.3.ffn_sub_norm.weight");
	cr_assert_not_null(t);
	cr_expect_eq(t->n_dims, 1);
	cr_expect_eq(t->shape[0], 768);
	tern_file_close(f);
	free(buf);
}

/* Every tensor of `other` equals the F32 file's tensor of that name,
 * value for value after dequantization; returns how many were ternary. */
static int compare_to_f32(const char *other, tern_dtype tern_dt)
{
	char other_path[4096];
	snprintf(other_path, sizeof other_path, "%s", other); /* shared() reuses its buffer */
	tern_file *f = open_ok(other_path);
	tern_file *ref = open_ok(shared("llama.cpp/tiny-f32.gguf"));
	cr_assert_eq(tern_file_n_tensors(f), tern_file_n_tensors(ref));
	int n_ternary = 0;
	float *a = malloc(4096 * sizeof(float)), *b = malloc(4096 * sizeof(float));
	for (size_t i = 0; i < tern_file_n_tensors(f); i++) {
		const tern_tensor *t = tern_file_tensor(f, i);
		const tern_tensor *r = tern_file_find(ref, t->name);
		cr_assert_not_null(r, "%s: no %s in the F32 file", other_path, t->name);
		cr_assert_eq(t->n_dims, r->n_dims, "%s", t->name);
		for (int d = 0; d < t->n_dims; d++)
			cr_assert_eq(t->shape[d], r->shape[d], "%s dim %d", t->name, d);
		if (t->dtype != TERN_DTYPE_F32) {
			cr_assert_eq(t->dtype, tern_dt, "%s is %s", t->name, tern_dtype_name(t->dtype));
			n_ternary++;
		}
		int64_t rows = tern_tensor_rows(t), cols = tern_tensor_cols(t);
		cr_assert_leq(cols, 4096);
		for (int64_t row = 0; row < rows; row++) {
			tern_tensor_row_to_float(t, row, a);
			tern_tensor_row_to_float(r, row, b);
			for (int64_t c = 0; c < cols; c++)
				if (a[c] != b[c])
					cr_assert_fail("%s %s [%lld][%lld]: %g != %g", other_path, t->name,
						       (long long)row, (long long)c, a[c], b[c]);
		}
	}
	free(a);
	free(b);
	tern_file_close(f);
	tern_file_close(ref);
	return n_ternary;
}

Test(gguf, tq1_0_weights_equal_the_f32_file_exactly)
{
	need_shared();
	int n = compare_to_f32(shared("llama.cpp/tiny-tq1_0.gguf"), TERN_DTYPE_T3);
	cr_expect_eq(n, 28, "%d ternary tensors", n);
}

Test(gguf, tq2_0_weights_equal_the_f32_file_exactly)
{
	need_shared();
	int n = compare_to_f32(shared("llama.cpp/tiny-tq2_0.gguf"), TERN_DTYPE_T2);
	cr_expect_eq(n, 28, "%d ternary tensors", n);
}

Test(gguf, i2_s_weights_equal_the_f32_file_exactly)
{
	need_shared();
	int n = compare_to_f32(shared("bitnet.cpp/tiny-i2_s.gguf"), TERN_DTYPE_T2);
	cr_expect_eq(n, 28, "%d ternary tensors", n);
}

Test(gguf, vocabulary_file_reads_32000_tokens_scores_and_types)
{
	need_shared();
	tern_file *f = open_ok(shared("llama.cpp/ggml-vocab-llama-spm.gguf"));
	const tern_meta *m = tern_file_meta(f);
	cr_expect_eq(tern_file_n_tensors(f), 0);
	cr_expect_str_eq(tern_file_architecture(f), "llama");
	const tern_meta *tok = tern_meta_get(m, "tokenizer.ggml.tokens");
	const tern_meta *sc = tern_meta_get(m, "tokenizer.ggml.scores");
	const tern_meta *ty = tern_meta_get(m, "tokenizer.ggml.token_type");
	cr_assert_eq(tern_meta_count(tok), 32000);
	cr_assert_eq(tern_meta_count(sc), 32000);
	cr_assert_eq(tern_meta_count(ty), 32000);
	/* Values read from the file with an independent script. */
	static const struct {
		int id;
		const char *text;
		double score;
		int type;
	} known[] = {
		{ 0, "<unk>", 0.0, 2 },
		{ 1, "<s>", 0.0, 3 },
		{ 2, "</s>", 0.0, 3 },
		{ 13, "<0x0A>", 0.0, 6 },
		{ 260, "\xe2\x96\x81t", -1.0, 1 },
		{ 1000, "ied", -741.0, 1 },
		{ 15043, "\xe2\x96\x81Hello", -14784.0, 1 },
		{ 29871, "\xe2\x96\x81", -1e9, 1 },
		{ 31999, "\xe7\xbb\x99", -31740.0, 1 },
	};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
		int id = known[i].id;
		cr_expect_str_eq(tern_meta_as_string(tern_meta_item(tok, (size_t)id), NULL),
				 known[i].text, "token %d", id);
		double s;
		cr_assert_eq(tern_meta_as_double(tern_meta_item(sc, (size_t)id), &s), TERN_OK);
		cr_expect_eq(s, known[i].score, "score of %d: %g", id, s);
		int64_t t;
		cr_assert_eq(tern_meta_as_int(tern_meta_item(ty, (size_t)id), &t), TERN_OK);
		cr_expect_eq(t, known[i].type, "type of %d", id);
	}
	cr_expect_eq(tern_meta_get_int(m, "tokenizer.ggml.bos_token_id", -1), 1);
	cr_expect_eq(tern_meta_get_int(m, "tokenizer.ggml.eos_token_id", -1), 2);
	cr_expect_eq(tern_meta_get_int(m, "tokenizer.ggml.unknown_token_id", -1), 0);
	cr_expect_str_eq(tern_meta_get_string(m, "tokenizer.ggml.model", ""), "llama");
	tern_file_close(f);
}

/* ---- the generated seed: every value type and tensor type ------------------------------ */

Test(gguf, every_value_type_and_nested_arrays_are_read)
{
	tern_file *f = open_ok(tu_srcpath("fuzz/corpus/gguf/valid.gguf"));
	const tern_meta *m = tern_file_meta(f);
	static const struct {
		const char *key;
		tern_meta_type type;
		double value;
	} nums[] = {
		{ "t.u8", TERN_META_UINT, 200 },         { "t.i8", TERN_META_INT, -100 },
		{ "t.u16", TERN_META_UINT, 60000 },      { "t.i16", TERN_META_INT, -30000 },
		{ "t.u32", TERN_META_UINT, 4000000000.0 }, { "t.i32", TERN_META_INT, -2000000000 },
		{ "t.f32", TERN_META_DOUBLE, 0.25 },     { "t.f64", TERN_META_DOUBLE, -1.5 },
		{ "t.i64", TERN_META_INT, -4611686018427387904.0 },
	};
	for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
		const tern_meta *v = tern_meta_get(m, nums[i].key);
		cr_expect_eq(tern_meta_type_of(v), nums[i].type, "%s", nums[i].key);
		cr_expect_eq(tern_meta_get_double(m, nums[i].key, 0), nums[i].value, "%s",
			     nums[i].key);
	}
	uint64_t u;
	cr_expect_eq(tern_meta_as_uint(tern_meta_get(m, "t.u64"), &u), TERN_OK);
	cr_expect_eq(u, 1ull << 63);
	cr_expect_eq(tern_meta_type_of(tern_meta_get(m, "t.bool")), TERN_META_BOOL);
	cr_expect(tern_meta_get_bool(m, "t.bool", false));
	cr_expect_str_eq(tern_meta_get_string(m, "t.string", ""), "h\xc3\xa9llo");
	const tern_meta *arr = tern_meta_get(m, "t.array");
	cr_expect_eq(tern_meta_count(arr), 3);
	cr_expect_eq(tern_meta_get_int(arr, "1", 0), -2);
	const tern_meta *nest = tern_meta_get(m, "t.nested");
	cr_assert_eq(tern_meta_count(nest), 2);
	cr_expect_str_eq(tern_meta_get_string(nest, "0.1", ""), "bc");
	cr_expect_eq(tern_meta_type_of(tern_meta_item(nest, 1)), TERN_META_ARRAY);
	cr_expect_eq(tern_meta_count(tern_meta_item(nest, 1)), 0);
	cr_expect_eq(tern_meta_get_int(m, "general.alignment", 0), 64);
	tern_file_close(f);
}

Test(gguf, f16_bf16_q8_0_and_tq2_0_tensors_decode_to_their_values)
{
	tern_file *f = open_ok(tu_srcpath("fuzz/corpus/gguf/valid.gguf"));
	float v[256];
	const tern_tensor *t = tern_file_find(f, "f16");
	cr_assert_eq(t->dtype, TERN_DTYPE_F16);
	tern_tensor_row_to_float(t, 0, v);
	cr_expect(v[0] == 1 && v[1] == -2 && v[2] == 0.5f && v[3] == 3);
	t = tern_file_find(f, "bf16");
	cr_assert_eq(t->dtype, TERN_DTYPE_BF16);
	tern_tensor_row_to_float(t, 0, v);
	cr_expect(v[0] == 1 && v[1] == -2);
	/* Q8_0 becomes F32: d * q with d = 0.5 and q = -16..15. */
	t = tern_file_find(f, "q8");
	cr_assert_eq(t->dtype, TERN_DTYPE_F32);
	cr_assert_eq(t->shape[0], 32);
	for (int i = 0; i < 32; i++)
		cr_expect_eq(((const float *)t->data)[i], 0.5f * (float)(i - 16));
	/* TQ2_0 byte j of 64 holds weights 128(j/32) + j%32 + 32p at bits 2p;
	 * the seed's bytes are (j & 0xAA): code 2 (+1) where bit 2p+1 is set,
	 * else code 0 (-1); d = 0.5. */
	t = tern_file_find(f, "tq2");
	cr_assert_eq(t->dtype, TERN_DTYPE_T2);
	tern_tensor_row_to_float(t, 0, v);
	for (int j = 0; j < 64; j++)
		for (int p = 0; p < 4; p++) {
			int w = 128 * (j / 32) + j % 32 + 32 * p;
			float want = (j >> (2 * p + 1)) & 1 ? 0.5f : -0.5f;
			cr_expect_eq(v[w], want, "weight %d", w);
		}
	tern_file_close(f);
}

Test(gguf, version_2_reads_like_version_3)
{
	size_t len;
	uint8_t *buf = slurp(tu_srcpath("fuzz/corpus/gguf/valid.gguf"), &len);
	buf[4] = 2;
	tern_file *f;
	cr_assert_eq(tern_file_open_memory(ctx, buf, len, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_expect_eq(tern_file_version(f), 2);
	cr_expect_eq(tern_file_n_tensors(f), 5);
	tern_file_close(f);
	free(buf);
}

Test(gguf, every_truncation_of_a_valid_file_fails_cleanly)
{
	size_t len;
	uint8_t *buf = slurp(tu_srcpath("fuzz/corpus/gguf/valid.gguf"), &len);
	/* The seed ends with 62 bytes of padding after its last tensor: any
	 * shorter prefix lacks data the file declares. */
	for (size_t n = 1; n < len - 62; n++) {
		/* A fresh copy of exactly n bytes, so ASan sees any overread. */
		uint8_t *cut = malloc(n);
		memcpy(cut, buf, n);
		tern_file *f;
		int rc = tern_file_open_memory(ctx, cut, n, &f);
		cr_assert_lt(rc, 0, "a %zu-byte prefix of %zu opened", n, len);
		cr_assert_null(f);
		free(cut);
	}
	free(buf);
}

Test(gguf, unaligned_float_tensors_are_copied_to_aligned_memory)
{
	/* general.alignment 1 lets an F32 tensor start at an odd offset. */
	gbuf g;
	header(&g, 3, 1, 1);
	putstr(&g, "general.alignment");
	put32(&g, 4);
	put32(&g, 1);
	tensor1(&g, "w", 2, 0, 1);
	uint8_t data[9] = { 0 };
	float vals[2] = { 1.5f, -7.0f };
	memcpy(data + 1, vals, sizeof vals);
	put(&g, data, sizeof data);
	uint8_t *buf = tern_alloc(g.n);
	memcpy(buf, g.b, g.n);
	tern_file *f;
	cr_assert_eq(tern_file_open_memory(ctx, buf, g.n, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_tensor *t = tern_file_find(f, "w");
	cr_expect_eq((uintptr_t)t->data % sizeof(float), 0);
	cr_expect_eq(((const float *)t->data)[0], 1.5f);
	cr_expect_eq(((const float *)t->data)[1], -7.0f);
	tern_file_close(f);
	tern_free(buf);
}

/* One I2_S-sized tensor of 128 weights (32 code bytes + 32-byte scale tail)
 * followed by `room` - 64 spare bytes, under architecture `arch`. */
static int open_type36(const char *arch, size_t room, tern_file **f, uint8_t **mem)
{
	gbuf g;
	header(&g, 3, 1, 1);
	kv_str(&g, "general.architecture", arch);
	tensor1(&g, "w", 128, 36, 0);
	pad(&g, 32);
	uint8_t data[128];
	memset(data, 0x55, 32);   /* code 1 everywhere: all weights 0 ... */
	data[0] = 0x95;           /* ... except weight 0 (code 2: +1) */
	memset(data + 32, 0, sizeof data - 32);
	float scale = 0.75f;
	memcpy(data + 32, &scale, 4);
	put(&g, data, room);
	*mem = malloc(g.n);
	memcpy(*mem, g.b, g.n);
	return tern_file_open_memory(ctx, *mem, g.n, f);
}

Test(gguf, type_36_is_i2_s_when_the_sizes_or_the_architecture_say_so)
{
	tern_file *f;
	uint8_t *mem;
	/* 64 bytes of room: too small for IQ4_NL_4_4's 72, so I2_S. */
	cr_assert_eq(open_type36("llama", 64, &f, &mem), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_tensor *t = tern_file_find(f, "w");
	cr_assert_eq(t->dtype, TERN_DTYPE_T2);
	float v[128];
	tern_tensor_row_to_float(t, 0, v);
	cr_expect_eq(v[0], 0.75f);
	for (int i = 1; i < 128; i++)
		cr_expect_eq(v[i], 0.0f, "weight %d", i);
	tern_file_close(f);
	free(mem);
	/* 96 bytes of room would fit IQ4_NL_4_4: refused unless BitNet. */
	cr_expect_eq(open_type36("llama", 96, &f, &mem), TERN_E_UNSUPPORTED);
	cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), "IQ4_NL_4_4"), "%s", tern_ctx_errmsg(ctx));
	free(mem);
	cr_expect_eq(open_type36("bitnet", 96, &f, &mem), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_file_close(f);
	free(mem);
}

/* ---- the malformed corpus ------------------------------------------------------------------ */

static int status_of(const char *name)
{
	static const struct {
		const char *name;
		int status;
	} map[] = {
		{ "TERN_E_FORMAT", TERN_E_FORMAT },
		{ "TERN_E_OVERFLOW", TERN_E_OVERFLOW },
		{ "TERN_E_UNSUPPORTED", TERN_E_UNSUPPORTED },
		{ "TERN_E_NOMEM", TERN_E_NOMEM },
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (strcmp(map[i].name, name) == 0)
			return map[i].status;
	cr_assert_fail("unknown status %s", name);
	return 0;
}

Test(gguf, each_malformed_file_fails_with_its_own_message)
{
	char mpath[4096];
	snprintf(mpath, sizeof mpath, "%s", tu_srcpath("tests/data/malformed/MANIFEST.gguf"));
	FILE *fp = fopen(mpath, "r");
	cr_assert_not_null(fp, "%s", mpath);
	char line[1024];
	int n = 0;
	while (fgets(line, sizeof line, fp)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!line[0] || line[0] == '#')
			continue;
		char *file = strtok(line, "\t");
		char *status = strtok(NULL, "\t");
		char *phrase = strtok(NULL, "");
		cr_assert(file && status && phrase);
		char rel[1200];
		snprintf(rel, sizeof rel, "tests/data/malformed/%s", file);
		tern_file *f = (tern_file *)1;
		int rc = tern_file_open(ctx, tu_srcpath(rel), &f);
		cr_expect_eq(rc, status_of(status), "%s: got %d (%s), expected %s", file, rc,
			     tern_ctx_errmsg(ctx), status);
		cr_expect_null(f);
		cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), phrase),
				   "%s: message \"%s\" lacks \"%s\"", file, tern_ctx_errmsg(ctx), phrase);
		n++;
	}
	fclose(fp);
	cr_expect_geq(n, 15, "only %d malformed GGUF files", n);
}
