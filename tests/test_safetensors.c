/*
 * test_safetensors.c: the safetensors reader on files written here (header
 * JSON + data) with every dtype it reads, shapes it folds, unaligned data
 * and "__metadata__", the malformed corpus
 * (tests/data/malformed/MANIFEST.safetensors), and Hugging Face checkpoint
 * directories (single file and sharded). Values are compared exactly:
 * every test value is representable in its dtype.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/hf.h"
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

TestSuite(safetensors, .init = setup, .fini = teardown);

/* A safetensors image: u64 header length, header, data. Caller frees. */
static uint8_t *make_st(const char *header, const void *data, size_t data_len, size_t *len)
{
	size_t hl = strlen(header);
	*len = 8 + hl + data_len;
	uint8_t *b = malloc(*len);
	cr_assert_not_null(b);
	uint64_t h = hl;
	memcpy(b, &h, 8);
	memcpy(b + 8, header, hl);
	if (data_len)
		memcpy(b + 8 + hl, data, data_len);
	return b;
}

/* Data: F32 [2][2] {1,-2,0.5,3}, BF16 [2] {1,-2}, F16 [3] {0.5,-1,2048},
 * U8 [4] {1,2,254,255}, I8 [2][2] {-128,-1,0,127}. */
static const uint8_t all_data[] = {
	0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00,
	0x40, 0x40,                                   /* f32 [0,16) */
	0x80, 0x3f, 0x00, 0xc0,                       /* bf16 [16,20) */
	0x00, 0x38, 0x00, 0xbc, 0x00, 0x68,           /* f16 [20,26) */
	0x01, 0x02, 0xfe, 0xff,                       /* u8 [26,30) */
	0x80, 0xff, 0x00, 0x7f,                       /* i8 [30,34) */
};
static const char all_header[] =
	"{\"__metadata__\":{\"format\":\"pt\",\"note\":\"x\"},"
	"\"f32\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
	"\"bf16\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[16,20]},"
	"\"f16\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[20,26]},"
	"\"u8\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[26,30]},"
	"\"i8\":{\"dtype\":\"I8\",\"shape\":[2,2],\"data_offsets\":[30,34]}}";

Test(safetensors, every_dtype_reads_its_values)
{
	/* Space-pad the header (as writers do) so the data is 8-byte aligned. */
	char hdr[1024];
	snprintf(hdr, sizeof hdr, "%s", all_header);
	while ((8 + strlen(hdr)) % 8)
		strcat(hdr, " ");
	size_t len;
	uint8_t *b = make_st(hdr, all_data, sizeof all_data, &len);
	tern_file *f;
	cr_assert_eq(tern_file_open_memory(ctx, b, len, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_expect_str_eq(tern_file_format_name(f), "safetensors");
	cr_expect_eq(tern_file_n_tensors(f), 5);
	cr_expect_str_eq(tern_file_tensor(f, 0)->name, "f32"); /* header order */
	float v[4];
	const tern_tensor *t = tern_file_find(f, "f32");
	cr_assert_eq(t->dtype, TERN_DTYPE_F32);
	cr_expect(t->n_dims == 2 && t->shape[0] == 2 && t->shape[1] == 2);
	tern_tensor_row_to_float(t, 1, v);
	cr_expect(v[0] == 0.5f && v[1] == 3.0f);
	t = tern_file_find(f, "bf16");
	cr_assert_eq(t->dtype, TERN_DTYPE_BF16);
	tern_tensor_row_to_float(t, 0, v);
	cr_expect(v[0] == 1.0f && v[1] == -2.0f);
	t = tern_file_find(f, "f16");
	cr_assert_eq(t->dtype, TERN_DTYPE_F16);
	tern_tensor_row_to_float(t, 0, v);
	cr_expect(v[0] == 0.5f && v[1] == -1.0f && v[2] == 2048.0f);
	/* U8 has no tern dtype: widened to I32, values kept. */
	t = tern_file_find(f, "u8");
	cr_assert_eq(t->dtype, TERN_DTYPE_I32);
	const int32_t *u = t->data;
	cr_expect(u[0] == 1 && u[1] == 2 && u[2] == 254 && u[3] == 255);
	t = tern_file_find(f, "i8");
	cr_assert_eq(t->dtype, TERN_DTYPE_I8);
	/* tern pads I8 rows; read them through the row accessor. */
	tern_tensor_row_to_float(t, 0, v);
	cr_expect(v[0] == -128 && v[1] == -1);
	tern_tensor_row_to_float(t, 1, v);
	cr_expect(v[0] == 0 && v[1] == 127);
	/* In place: the tensor points into the buffer (F16 at 8 + header + 20). */
	cr_expect_eq((const uint8_t *)tern_file_find(f, "f16")->data,
		     b + 8 + strlen(hdr) + 20);
	const tern_meta *m = tern_file_meta(f);
	cr_expect_str_eq(tern_meta_get_string(m, "format", ""), "pt");
	cr_expect_str_eq(tern_meta_get_string(m, "note", ""), "x");
	cr_expect_eq(tern_meta_count(m), 2);
	cr_expect_str_eq(tern_file_architecture(f), "");
	tern_file_close(f);
	free(b);
}

Test(safetensors, unaligned_data_is_copied_to_aligned_memory)
{
	/* A header of odd length leaves the F32 data at an odd address. */
	const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} ";
	float vals[2] = { 3.25f, -0.125f };
	size_t len;
	uint8_t *b = make_st(hdr, vals, sizeof vals, &len);
	cr_assert_neq((8 + strlen(hdr)) % 4, 0);
	tern_file *f;
	cr_assert_eq(tern_file_open_memory(ctx, b, len, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_tensor *t = tern_file_find(f, "w");
	cr_expect_eq((uintptr_t)t->data % 4, 0);
	cr_expect(((const float *)t->data)[0] == 3.25f && ((const float *)t->data)[1] == -0.125f);
	tern_file_close(f);
	free(b);
}

Test(safetensors, scalars_and_high_ranks_fold_into_tern_shapes)
{
	const char *hdr = "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
			  "\"r6\":{\"dtype\":\"I8\",\"shape\":[2,1,3,1,1,4],\"data_offsets\":[4,28]}}";
	uint8_t data[28] = { 0x00, 0x00, 0x80, 0x3f };
	size_t len;
	uint8_t *b = make_st(hdr, data, sizeof data, &len);
	tern_file *f;
	cr_assert_eq(tern_file_open_memory(ctx, b, len, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_tensor *t = tern_file_find(f, "s");
	cr_expect(t->n_dims == 1 && t->shape[0] == 1);
	t = tern_file_find(f, "r6");
	/* [2,1,3,1,1,4] keeps its last three dims; the first three fold: 6. */
	cr_expect_eq(t->n_dims, 4);
	cr_expect(t->shape[0] == 6 && t->shape[1] == 1 && t->shape[2] == 1 && t->shape[3] == 4);
	cr_expect_eq(tern_tensor_rows(t), 6);
	cr_expect_eq(tern_tensor_cols(t), 4);
	tern_file_close(f);
	free(b);
}

Test(safetensors, every_truncation_of_a_valid_file_fails_cleanly)
{
	size_t len;
	uint8_t *full = make_st(all_header, all_data, sizeof all_data, &len);
	for (size_t n = 1; n < len; n++) {
		uint8_t *cut = malloc(n);
		memcpy(cut, full, n);
		tern_file *f;
		cr_assert_lt(tern_file_open_memory(ctx, cut, n, &f), 0, "%zu-byte prefix opened", n);
		free(cut);
	}
	free(full);
}

static int status_of(const char *name)
{
	if (strcmp(name, "TERN_E_FORMAT") == 0)
		return TERN_E_FORMAT;
	if (strcmp(name, "TERN_E_OVERFLOW") == 0)
		return TERN_E_OVERFLOW;
	if (strcmp(name, "TERN_E_UNSUPPORTED") == 0)
		return TERN_E_UNSUPPORTED;
	cr_assert_fail("unknown status %s", name);
	return 0;
}

Test(safetensors, each_malformed_file_fails_with_its_own_message)
{
	char mpath[4096];
	snprintf(mpath, sizeof mpath, "%s",
		 tu_srcpath("tests/data/malformed/MANIFEST.safetensors"));
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
	cr_expect_geq(n, 15, "only %d malformed safetensors files", n);
}

/* ---- Hugging Face directories ------------------------------------------------------------ */

static char hfdir[256];

static void put_file(const char *name, const void *data, size_t len)
{
	char p[512];
	snprintf(p, sizeof p, "%s/%s", hfdir, name);
	FILE *fp = fopen(p, "wb");
	cr_assert_not_null(fp, "%s", p);
	cr_assert_eq(fwrite(data, 1, len, fp), len);
	fclose(fp);
}

static void put_text(const char *name, const char *text)
{
	put_file(name, text, strlen(text));
}

/* A shard holding one F32 [2] tensor `name` with values {a, b}. */
static void put_shard(const char *file, const char *name, float a, float b)
{
	char hdr[256];
	snprintf(hdr, sizeof hdr,
		 "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", name);
	while ((8 + strlen(hdr)) % 8)
		strcat(hdr, " ");
	float v[2] = { a, b };
	size_t len;
	uint8_t *img = make_st(hdr, v, sizeof v, &len);
	put_file(file, img, len);
	free(img);
}

static void hf_dir_new(void)
{
	snprintf(hfdir, sizeof hfdir, "/tmp/test_safetensors_hf.%ld", (long)getpid());
	mkdir(hfdir, 0700);
	put_text("config.json", "{\"architectures\":[\"BitNetForCausalLM\"],\"model_type\":\"bitnet\","
				"\"hidden_size\":256,\"rms_norm_eps\":1e-05}");
}

static void hf_dir_remove(void)
{
	static const char *const names[] = { "config.json", "tokenizer.json", "model.safetensors",
					      "model.safetensors.index.json", "a.safetensors",
					      "b.safetensors" };
	char p[512];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", hfdir, names[i]);
		unlink(p);
	}
	rmdir(hfdir);
}

Test(safetensors, hf_directory_with_one_file_reads_config_and_tokenizer_path)
{
	hf_dir_new();
	put_text("tokenizer.json", "{}");
	put_shard("model.safetensors", "w", 1.5f, -2.0f);
	tern_hf *h;
	cr_assert_eq(tern_hf_open(ctx, hfdir, &h), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_meta *m = tern_hf_meta(h);
	cr_expect_str_eq(tern_hf_architecture(h), "BitNetForCausalLM");
	cr_expect_str_eq(tern_meta_get_string(m, "format", ""), "huggingface");
	cr_expect_eq(tern_meta_get_int(m, "config.hidden_size", 0), 256);
	cr_expect_eq(tern_meta_get_double(m, "config.rms_norm_eps", 0), 1e-5);
	char want[512];
	snprintf(want, sizeof want, "%s/tokenizer.json", hfdir);
	cr_expect_str_eq(tern_meta_get_string(m, "tokenizer.json", ""), want);
	cr_expect_null(tern_meta_get(m, "tokenizer.model"));
	cr_expect_eq(tern_hf_n_tensors(h), 1);
	const tern_tensor *t = tern_hf_find(h, "w");
	cr_assert_not_null(t);
	cr_expect(((const float *)t->data)[0] == 1.5f && ((const float *)t->data)[1] == -2.0f);
	tern_hf_close(h);
	hf_dir_remove();
}

Test(safetensors, hf_sharded_directory_serves_every_shard)
{
	hf_dir_new();
	put_shard("a.safetensors", "x", 1, 2);
	put_shard("b.safetensors", "y", 3, 4);
	put_text("model.safetensors.index.json",
		 "{\"metadata\":{\"total_size\":16},"
		 "\"weight_map\":{\"y\":\"b.safetensors\",\"x\":\"a.safetensors\"}}");
	tern_hf *h;
	cr_assert_eq(tern_hf_open(ctx, hfdir, &h), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_expect_eq(tern_hf_n_tensors(h), 2);
	/* Shards in order of first mention in the index. */
	cr_expect_str_eq(tern_hf_tensor(h, 0)->name, "y");
	cr_expect_str_eq(tern_meta_get_string(tern_hf_meta(h), "shards.1", ""), "a.safetensors");
	cr_expect_eq(((const float *)tern_hf_find(h, "x")->data)[1], 2.0f);
	cr_expect_eq(((const float *)tern_hf_find(h, "y")->data)[0], 3.0f);
	cr_expect_null(tern_hf_find(h, "z"));
	tern_hf_close(h);
	hf_dir_remove();
}

Test(safetensors, hf_directory_errors_name_the_problem)
{
	static const struct {
		const char *index; /* NULL: no index, no model.safetensors */
		int status;
		const char *phrase;
	} cases[] = {
		{ NULL, TERN_E_NOT_FOUND, "neither model.safetensors" },
		{ "{\"weight_map\":{\"x\":\"../a.safetensors\"}}", TERN_E_FORMAT,
		  "not a file name in the directory" },
		{ "{\"weight_map\":{\"x\":\"a.safetensors\",\"q\":\"a.safetensors\"}}", TERN_E_FORMAT,
		  "'q' is listed in a.safetensors, which lacks it" },
		{ "{\"weight_map\":{\"x\":\"a.safetensors\",\"x2\":\"b.safetensors\"}}",
		  TERN_E_FORMAT, "is in both a.safetensors and b.safetensors" },
		{ "{\"weight_map\":{\"x\":\"missing.safetensors\"}}", TERN_E_IO, "cannot open" },
		{ "{\"weight_map\":{}}", TERN_E_FORMAT, "is empty" },
		{ "[1]", TERN_E_FORMAT, "not a JSON object" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		hf_dir_new();
		put_shard("a.safetensors", "x", 1, 2);
		put_shard("b.safetensors", "x", 3, 4);
		if (cases[i].index)
			put_text("model.safetensors.index.json", cases[i].index);
		tern_hf *h = (tern_hf *)1;
		int rc = tern_hf_open(ctx, hfdir, &h);
		cr_expect_eq(rc, cases[i].status, "case %zu: %d %s", i, rc, tern_ctx_errmsg(ctx));
		cr_expect_null(h);
		cr_expect_not_null(strstr(tern_ctx_errmsg(ctx), cases[i].phrase),
				   "case %zu: \"%s\" lacks \"%s\"", i, tern_ctx_errmsg(ctx),
				   cases[i].phrase);
		hf_dir_remove();
	}
	/* config.json is required. */
	hf_dir_new();
	char p[512];
	snprintf(p, sizeof p, "%s/config.json", hfdir);
	unlink(p);
	tern_hf *h;
	cr_expect_eq(tern_hf_open(ctx, hfdir, &h), TERN_E_NOT_FOUND);
	hf_dir_remove();
}
