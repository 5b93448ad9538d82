/*
 * test_foreign.c: the exact converters from and to llama.cpp's TQ1_0 /
 * TQ2_0 and bitnet.cpp's I2_S. Real files from ../shared/testdata (found
 * through TERN_SRCDIR) are walked with a minimal GGUF reader written here
 * for the test only; every ternary tensor must import, decode to exactly
 * the F32 file's values, and export back byte for byte. Synthetic blocks
 * made by an encoder in this file cover the error paths. All checks are
 * exact.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tern/tensor.h"
#include "testutil.h"

/* ---- a minimal GGUF walker ----------------------------------------------- */

typedef struct gg_tensor {
	char name[96];
	uint32_t n_dims;
	uint64_t ne[4];
	uint32_t type;
	uint64_t offset;
} gg_tensor;

typedef struct gg_file {
	uint8_t *buf;
	size_t size;
	size_t data;     /* start of the data section */
	uint64_t n_tensors;
	gg_tensor *t;
} gg_file;

typedef struct gg_cur {
	const uint8_t *p, *end;
	int bad;
} gg_cur;

static uint64_t gg_u(gg_cur *c, int n)
{
	if (c->bad || (size_t)(c->end - c->p) < (size_t)n) {
		c->bad = 1;
		return 0;
	}
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v |= (uint64_t)c->p[i] << (8 * i);
	c->p += n;
	return v;
}

static void gg_skip(gg_cur *c, uint64_t n)
{
	if (c->bad || (uint64_t)(c->end - c->p) < n) {
		c->bad = 1;
		return;
	}
	c->p += n;
}

/* Sizes of GGUF scalar value types 0..12 (8 = string, 9 = array). */
static const int gg_scalar[13] = { 1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8 };

static void gg_skip_value(gg_cur *c, uint32_t type, uint64_t *alignment, int is_align)
{
	if (type == 8) {
		gg_skip(c, gg_u(c, 8));
	} else if (type == 9) {
		uint32_t at = (uint32_t)gg_u(c, 4);
		uint64_t n = gg_u(c, 8);
		for (uint64_t i = 0; i < n && !c->bad; i++)
			gg_skip_value(c, at, NULL, 0);
	} else if (type < 13) {
		uint64_t v = gg_u(c, gg_scalar[type]);
		if (is_align && alignment)
			*alignment = v;
	} else {
		c->bad = 1;
	}
}

static void gg_load(const char *path, gg_file *g)
{
	memset(g, 0, sizeof *g);
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f, "cannot open %s: the shared test data must sit beside the source "
			   "tree (TERN_SRCDIR/../shared/testdata); `make check` sets TERN_SRCDIR",
			   path);
	fseek(f, 0, SEEK_END);
	g->size = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	g->buf = malloc(g->size);
	cr_assert_eq(fread(g->buf, 1, g->size, f), g->size);
	fclose(f);

	gg_cur c = { g->buf, g->buf + g->size, 0 };
	cr_assert(memcmp(g->buf, "GGUF", 4) == 0, "%s is not GGUF", path);
	gg_skip(&c, 4);
	cr_assert_eq(gg_u(&c, 4), 3, "GGUF version");
	g->n_tensors = gg_u(&c, 8);
	uint64_t n_kv = gg_u(&c, 8), alignment = 32;
	for (uint64_t i = 0; i < n_kv && !c.bad; i++) {
		uint64_t klen = gg_u(&c, 8);
		int is_align = klen == 17 && !c.bad && (size_t)(c.end - c.p) >= 17 &&
			       memcmp(c.p, "general.alignment", 17) == 0;
		gg_skip(&c, klen);
		gg_skip_value(&c, (uint32_t)gg_u(&c, 4), &alignment, is_align);
	}
	g->t = calloc(g->n_tensors, sizeof *g->t);
	for (uint64_t i = 0; i < g->n_tensors && !c.bad; i++) {
		gg_tensor *t = &g->t[i];
		uint64_t nlen = gg_u(&c, 8);
		cr_assert(nlen < sizeof t->name);
		if (!c.bad && (uint64_t)(c.end - c.p) >= nlen)
			memcpy(t->name, c.p, nlen);
		gg_skip(&c, nlen);
		t->n_dims = (uint32_t)gg_u(&c, 4);
		cr_assert(t->n_dims >= 1 && t->n_dims <= 4);
		for (uint32_t d = 0; d < 4; d++)
			t->ne[d] = d < t->n_dims ? gg_u(&c, 8) : 1;
		t->type = (uint32_t)gg_u(&c, 4);
		t->offset = gg_u(&c, 8);
	}
	cr_assert(!c.bad, "%s: truncated GGUF header", path);
	size_t pos = (size_t)(c.p - g->buf);
	g->data = (pos + alignment - 1) / alignment * alignment;
}

static void gg_free(gg_file *g)
{
	free(g->buf);
	free(g->t);
}

static const gg_tensor *gg_find(const gg_file *g, const char *name)
{
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if (strcmp(g->t[i].name, name) == 0)
			return &g->t[i];
	return NULL;
}

static const char *shared_path(const char *rel)
{
	return tu_shared_path(rel);
}

/* ---- real files ---------------------------------------------------------- */

#define GGML_F32 0
#define GGML_TQ1_0 34
#define GGML_TQ2_0 35
#define BITNET_I2_S 36

static void check_file(const char *rel, uint32_t gtype, tern_foreign_type ft)
{
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	gg_file q, f;
	gg_load(shared_path(rel), &q);
	gg_load(shared_path("llama.cpp/tiny-f32.gguf"), &f);
	int found = 0, full_identical = 0;
	for (uint64_t i = 0; i < q.n_tensors; i++) {
		const gg_tensor *t = &q.t[i];
		if (t->type != gtype)
			continue;
		found++;
		int64_t cols = (int64_t)t->ne[0], rows = (int64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
		size_t bytes;
		cr_assert_eq(tern_foreign_bytes(ctx, ft, rows, cols, &bytes), TERN_OK);
		cr_assert_leq(q.data + t->offset + bytes, q.size, "%s out of file", t->name);
		const uint8_t *src = q.buf + q.data + t->offset;

		const gg_tensor *ft32 = gg_find(&f, t->name);
		cr_assert_not_null(ft32, "%s missing from the F32 file", t->name);
		cr_assert_eq(ft32->type, GGML_F32);
		cr_assert(ft32->ne[0] == t->ne[0] && ft32->ne[1] == t->ne[1]);
		const uint8_t *ref = f.buf + f.data + ft32->offset;

		for (int dt = 0; dt < 2; dt++) {
			tern_dtype dtype = dt ? TERN_DTYPE_T3 : TERN_DTYPE_T2;
			tern_tensor *tt;
			cr_assert_eq(tern_foreign_import(ctx, ft, src, bytes, rows, cols, dtype, &tt),
				     TERN_OK, "%s: %s", t->name, tern_ctx_errmsg(ctx));
			float *row = malloc((size_t)cols * sizeof *row);
			for (int64_t r = 0; r < rows; r++) {
				tern_tensor_row_to_float(tt, r, row);
				cr_assert(memcmp(row, ref + (size_t)r * (size_t)cols * 4,
						 (size_t)cols * 4) == 0,
					  "%s (%s): row %lld differs from the F32 file", t->name,
					  tern_dtype_name(dtype), (long long)r);
			}
			free(row);
			uint8_t *back = malloc(bytes);
			memset(back, 0xee, bytes);
			cr_assert_eq(tern_foreign_export(ctx, ft, tt, back, bytes), TERN_OK, "%s: %s",
				     t->name, tern_ctx_errmsg(ctx));
			/* I2_S: the 28 bytes after the scale are padding that
			 * bitnet.cpp leaves uninitialized; tern writes zeros. */
			size_t defined = ft == TERN_FOREIGN_I2_S ? bytes - 28 : bytes;
			cr_assert(memcmp(back, src, defined) == 0, "%s (%s): export differs",
				  t->name, tern_dtype_name(dtype));
			if (ft == TERN_FOREIGN_I2_S)
				for (size_t k = defined; k < bytes; k++)
					cr_assert_eq(back[k], 0);
			if (dt == 0 && memcmp(back, src, bytes) == 0)
				full_identical++;
			free(back);
			tern_tensor_free(tt);
		}
	}
	cr_assert_eq(found, 4 * 7, "%s: expected 28 linear tensors, found %d", rel, found);
	if (ft != TERN_FOREIGN_I2_S)
		cr_assert_eq(full_identical, found);
	gg_free(&q);
	gg_free(&f);
	tern_ctx_free(ctx);
}

Test(foreign, llama_cpp_tq2_0_file_round_trips_byte_identical)
{
	check_file("llama.cpp/tiny-tq2_0.gguf", GGML_TQ2_0, TERN_FOREIGN_TQ2_0);
}

Test(foreign, llama_cpp_tq1_0_file_round_trips_byte_identical)
{
	check_file("llama.cpp/tiny-tq1_0.gguf", GGML_TQ1_0, TERN_FOREIGN_TQ1_0);
}

Test(foreign, bitnet_cpp_i2_s_file_round_trips_byte_identical)
{
	check_file("bitnet.cpp/tiny-i2_s.gguf", BITNET_I2_S, TERN_FOREIGN_I2_S);
}

/* ---- synthetic data from an encoder written from the format facts --------- */

static void enc_tq2(const int8_t *w, uint16_t d, uint8_t *blk)
{
	memset(blk, 0, 66);
	for (int j = 0; j < 256; j++) {
		int half = j / 128, k = j % 128;
		blk[half * 32 + k % 32] |= (uint8_t)((w[j] + 1) << (2 * (k / 32)));
	}
	memcpy(blk + 64, &d, 2);
}

static uint8_t base3_byte(const int *t, int n)
{
	int v = 0;
	for (int i = 0; i < 5; i++)
		v = v * 3 + (i < n ? t[i] : 0);
	return (uint8_t)((v * 256 + 242) / 243);
}

static void enc_tq1(const int8_t *w, uint16_t d, uint8_t *blk)
{
	int t[5];
	for (int m = 0; m < 32; m++) {
		for (int n = 0; n < 5; n++)
			t[n] = w[m + 32 * n] + 1;
		blk[m] = base3_byte(t, 5);
	}
	for (int m = 0; m < 16; m++) {
		for (int n = 0; n < 5; n++)
			t[n] = w[160 + m + 16 * n] + 1;
		blk[32 + m] = base3_byte(t, 5);
	}
	for (int m = 0; m < 4; m++) {
		for (int n = 0; n < 4; n++)
			t[n] = w[240 + m + 4 * n] + 1;
		blk[48 + m] = base3_byte(t, 4);
	}
	memcpy(blk + 52, &d, 2);
}

static void enc_i2s(const int8_t *w, size_t n, float s, uint8_t *out)
{
	memset(out, 0, n / 4 + 32);
	for (size_t i = 0; i < n; i++)
		out[i / 128 * 32 + i % 32] |= (uint8_t)((w[i] + 1) << (6 - 2 * (i % 128 / 32)));
	memcpy(out + n / 4, &s, 4);
}

/* Builds foreign bytes for random weights; returns the weights. */
static int8_t *make_foreign(tern_foreign_type ft, int64_t rows, int64_t cols, tu_rng *r,
			    uint8_t **out, size_t *bytes, uint16_t *dscale)
{
	cr_assert_eq(tern_foreign_bytes(NULL, ft, rows, cols, bytes), TERN_OK);
	size_t n = (size_t)(rows * cols);
	int8_t *w = malloc(n);
	for (size_t i = 0; i < n; i++)
		w[i] = (int8_t)tu_int(r, -1, 1);
	*out = malloc(*bytes);
	if (ft == TERN_FOREIGN_I2_S) {
		enc_i2s(w, n, 0.0625f, *out);
		return w;
	}
	size_t bb = ft == TERN_FOREIGN_TQ1_0 ? 54 : 66;
	for (size_t b = 0; b < n / 256; b++) {
		dscale[b] = (uint16_t)tu_int(r, 0x0001, 0x7bff);
		if (ft == TERN_FOREIGN_TQ1_0)
			enc_tq1(w + 256 * b, dscale[b], *out + b * bb);
		else
			enc_tq2(w + 256 * b, dscale[b], *out + b * bb);
	}
	return w;
}

Test(foreign, synthetic_blocks_decode_to_their_weights_and_scales)
{
	tu_rng r = tu_rng_new(21);
	for (int ft = 0; ft < 3; ft++)
		for (int dt = 0; dt < 2; dt++) {
			int64_t rows = 3, cols = ft == TERN_FOREIGN_I2_S ? 384 : 768;
			uint8_t *src;
			size_t bytes;
			uint16_t d[16];
			int8_t *w = make_foreign((tern_foreign_type)ft, rows, cols, &r, &src, &bytes, d);
			tern_tensor *t;
			tern_dtype dtype = dt ? TERN_DTYPE_T3 : TERN_DTYPE_T2;
			cr_assert_eq(tern_foreign_import(NULL, (tern_foreign_type)ft, src, bytes, rows,
							 cols, dtype, &t), TERN_OK);
			int8_t *wi = malloc((size_t)cols);
			for (int64_t i = 0; i < rows; i++) {
				tern_type_traits_of(dtype)->row_to_i8(
					(uint8_t *)t->data + (size_t)i * tern_row_bytes(dtype, cols), wi, cols);
				cr_assert_arr_eq(wi, w + i * cols, (size_t)cols, "ft %d dt %d row %lld", ft,
						 dt, (long long)i);
				for (int64_t c = 0; c < cols; c++) {
					float s = ft == TERN_FOREIGN_I2_S ? 0.0625f :
						  tern_f16_to_f32(d[(i * cols + c) / 256]);
					cr_assert_eq(tern_tensor_scale_at(t, i, c), s);
				}
			}
			uint8_t *back = malloc(bytes);
			cr_assert_eq(tern_foreign_export(NULL, (tern_foreign_type)ft, t, back, bytes),
				     TERN_OK);
			cr_assert_arr_eq(back, src, bytes);
			free(back);
			free(wi);
			free(w);
			free(src);
			tern_tensor_free(t);
		}
}

Test(foreign, every_base3_byte_decodes_and_reencodes_canonically)
{
	/* 0..242 are the values of 5 trits; each must be accepted once. */
	int8_t w[256];
	uint8_t blk[54];
	for (int v = 0; v < 243; v++) {
		memset(w, 0, sizeof w);
		for (int n = 0; n < 5; n++) {
			static const int pw[5] = { 81, 27, 9, 3, 1 };
			w[32 * n] = (int8_t)(v / pw[n] % 3 - 1);
		}
		enc_tq1(w, 0x3c00, blk);
		tern_tensor *t;
		cr_assert_eq(tern_foreign_import(NULL, TERN_FOREIGN_TQ1_0, blk, 54, 1, 256,
						 TERN_DTYPE_T3, &t), TERN_OK, "v %d", v);
		int8_t wi[256];
		tern_type_traits_of(TERN_DTYPE_T3)->row_to_i8(t->data, wi, 256);
		cr_assert_arr_eq(wi, w, 256, "v %d", v);
		uint8_t back[54];
		cr_assert_eq(tern_foreign_export(NULL, TERN_FOREIGN_TQ1_0, t, back, 54), TERN_OK);
		cr_assert_arr_eq(back, blk, 54);
		tern_tensor_free(t);
	}
}

Test(foreign, import_rejects_malformed_input_with_a_message)
{
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	tu_rng r = tu_rng_new(22);
	uint8_t *src;
	size_t bytes;
	uint16_t d[4];
	tern_tensor *t = NULL;

	int8_t *w = make_foreign(TERN_FOREIGN_TQ2_0, 1, 512, &r, &src, &bytes, d);
	cr_assert_eq(tern_foreign_import(ctx, TERN_FOREIGN_TQ2_0, src, bytes - 1, 1, 512,
					 TERN_DTYPE_T2, &t), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "132") != NULL, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_foreign_import(ctx, TERN_FOREIGN_TQ2_0, src, bytes, 2, 256,
					 TERN_DTYPE_T2, &t), TERN_OK);
	tern_tensor_free(t);
	cr_assert_eq(tern_foreign_import(ctx, TERN_FOREIGN_TQ2_0, src, bytes, 1, 500,
					 TERN_DTYPE_T2, &t), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "multiple of 256") != NULL, "%s",
		  tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_foreign_import(ctx, TERN_FOREIGN_TQ2_0, src, bytes, 1, 512,
					 TERN_DTYPE_I8, &t), TERN_E_INVALID);
	src[66 + 5] |= 0x30; /* code 3 in block 1, byte 5 */
	cr_assert_eq(tern_foreign_import(ctx, TERN_FOREIGN_TQ2_0, src, bytes, 1, 512,
					 TERN_DTYPE_T3, &t), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "block 1, byte 5") != NULL, "%s",
		  tern_ctx_errmsg(ctx));
	cr_assert_null(t);
	free(w);
	free(src);

	w = make_foreign(TERN_FOREIGN_TQ1_0, 1, 256, &r, &src, &bytes, d);
	src[3] = 1; /* not ceil(v * 256 / 243) of any v (v = 0 gives 0, v = 1 gives 2) */
	cr_assert_eq(tern_foreign_import(ctx, TERN_FOREIGN_TQ1_0, src, bytes, 1, 256,
					 TERN_DTYPE_T3, &t), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "byte 3") != NULL, "%s", tern_ctx_errmsg(ctx));
	free(w);
	free(src);
	w = make_foreign(TERN_FOREIGN_TQ1_0, 1, 256, &r, &src, &bytes, d);
	int trits[5] = { 1, 1, 1, 1, 2 }; /* qh bytes hold only four trits */
	src[49] = base3_byte(trits, 5);
	cr_assert_eq(tern_foreign_import(ctx, TERN_FOREIGN_TQ1_0, src, bytes, 1, 256,
					 TERN_DTYPE_T3, &t), TERN_E_FORMAT);
	free(w);
	free(src);

	w = make_foreign(TERN_FOREIGN_I2_S, 2, 128, &r, &src, &bytes, d);
	cr_assert_eq(bytes, 2 * 128 / 4 + 32);
	src[40] = 0xff;
	cr_assert_eq(tern_foreign_import(ctx, TERN_FOREIGN_I2_S, src, bytes, 2, 128,
					 TERN_DTYPE_T2, &t), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "row 1") != NULL, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_foreign_bytes(ctx, TERN_FOREIGN_I2_S, 1, 100, &bytes), TERN_E_INVALID);
	cr_assert_eq(tern_foreign_bytes(ctx, (tern_foreign_type)9, 1, 256, &bytes), TERN_E_INVALID);
	cr_assert_eq(tern_foreign_bytes(ctx, TERN_FOREIGN_TQ2_0, INT64_MAX / 256, 1 << 20, &bytes),
		     TERN_E_OVERFLOW);
	free(w);
	free(src);
	tern_ctx_free(ctx);
}

Test(foreign, export_maps_other_scale_kinds_when_exact_and_refuses_otherwise)
{
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	int64_t shape[2] = { 2, 256 };
	float x[512];
	tu_rng r = tu_rng_new(23);
	for (int i = 0; i < 512; i++)
		x[i] = (float)tu_int(&r, -1, 1) * (i < 256 ? 0.5f : 0.75f);
	x[0] = 0.5f;
	x[256] = 0.75f;
	uint8_t out[2 * 66], out2[2 * 66];
	tern_tensor *row, *blk;

	/* Per-row f32 scales: fine for TQ2_0 (each block has one f16 scale),
	 * not for I2_S (one scale per tensor). */
	tern_qparams rq = { TERN_SCALE_ROW, 0, TERN_DTYPE_F32 };
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_T3, &rq, 2, shape, &row), TERN_OK);
	cr_assert_eq(tern_pack_ternary_exact(NULL, x, row), TERN_OK);
	cr_assert_eq(tern_foreign_export(ctx, TERN_FOREIGN_TQ2_0, row, out, sizeof out), TERN_OK);
	tern_qparams bq = { TERN_SCALE_BLOCK, 256, TERN_DTYPE_F16 };
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_T2, &bq, 2, shape, &blk), TERN_OK);
	cr_assert_eq(tern_pack_ternary_exact(NULL, x, blk), TERN_OK);
	cr_assert_eq(tern_foreign_export(ctx, TERN_FOREIGN_TQ2_0, blk, out2, sizeof out2), TERN_OK);
	cr_assert_arr_eq(out, out2, sizeof out);
	uint8_t i2[2 * 256 / 4 + 32];
	cr_assert_eq(tern_foreign_export(ctx, TERN_FOREIGN_I2_S, row, i2, sizeof i2),
		     TERN_E_UNSUPPORTED);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "one scale per tensor") != NULL, "%s",
		  tern_ctx_errmsg(ctx));
	/* A scale with no exact f16 cannot go to TQ*. */
	for (int i = 256; i < 512; i++)
		x[i] = x[i] != 0.0f ? copysignf(0.1f, x[i]) : 0.0f;
	cr_assert_eq(tern_pack_ternary_exact(NULL, x, row), TERN_OK);
	cr_assert_eq(tern_foreign_export(ctx, TERN_FOREIGN_TQ1_0, row, out, 2 * 54),
		     TERN_E_UNSUPPORTED);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "f16") != NULL, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_foreign_export(ctx, TERN_FOREIGN_TQ2_0, row, out, 10), TERN_E_FORMAT);
	tern_tensor_free(row);
	tern_tensor_free(blk);
	tern_ctx_free(ctx);
}
