/*
 * test_dtype.c: the dtype traits table, size arithmetic, tensors, the
 * half-float conversions and exact round trips of every dtype through its
 * packed layout. Layouts are checked against an independent decoder
 * written from the description in include/tern/tensor.h. All comparisons
 * are exact: every path here is lossless by construction.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tern/tensor.h"
#include "testutil.h"

static const tern_dtype all_types[] = { TERN_DTYPE_F32, TERN_DTYPE_F16, TERN_DTYPE_BF16,
					TERN_DTYPE_I8,  TERN_DTYPE_I32, TERN_DTYPE_T2,
					TERN_DTYPE_T3, TERN_DTYPE_I4 };
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static uint32_t fbits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

static float bitsf(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

Test(dtype, names_round_trip_and_unknown_names_are_rejected)
{
	for (size_t i = 0; i < N_TYPES; i++) {
		const char *n = tern_dtype_name(all_types[i]);
		cr_assert_eq(tern_dtype_from_name(n), all_types[i], "%s", n);
	}
	cr_assert_str_eq(tern_dtype_name(TERN_DTYPE_T3), "t3");
	cr_assert_eq(tern_dtype_from_name("q4_0"), TERN_DTYPE_COUNT);
	cr_assert_eq(tern_dtype_from_name(NULL), TERN_DTYPE_COUNT);
	cr_assert_null(tern_type_traits_of(TERN_DTYPE_COUNT));
	cr_assert_null(tern_type_traits_of((tern_dtype)-1));
}

Test(dtype, traits_rows_are_complete)
{
	for (size_t i = 0; i < N_TYPES; i++) {
		const tern_type_traits *t = tern_type_traits_of(all_types[i]);
		cr_assert_not_null(t);
		cr_assert_not_null(t->row_to_float);
		cr_assert_not_null(t->row_from_float);
		cr_assert(t->row_align >= 1 && t->group >= 1 && t->group_bytes >= 1);
		if (t->quantized) {
			cr_assert_not_null(t->row_to_i8, "%s", t->name);
			cr_assert_not_null(t->row_from_i8, "%s", t->name);
		}
	}
	const tern_type_traits *t2 = tern_type_traits_of(TERN_DTYPE_T2);
	cr_assert(t2->ternary && t2->quantized);
	cr_assert_eq(t2->group, 256);
	cr_assert_eq(t2->group_bytes, 64);
	cr_assert_eq(t2->row_align, 128);
	const tern_type_traits *t3 = tern_type_traits_of(TERN_DTYPE_T3);
	cr_assert_eq(t3->group, 320);
	cr_assert_eq(t3->group_bytes, 64);
	cr_assert_eq(t3->row_align, 160);
	const tern_type_traits *i4 = tern_type_traits_of(TERN_DTYPE_I4);
	cr_assert(!i4->ternary && i4->quantized);
	cr_assert_eq(i4->group, 128);
	cr_assert_eq(i4->group_bytes, 64);
	cr_assert_eq(i4->row_align, 128);
}

Test(dtype, row_sizes_of_real_model_widths)
{
	/* Expected values by hand: T2 pads to 128 and stores 4 per byte, T3
	 * pads to 160 and stores 5 per byte. */
	static const struct { int64_t cols, t2_pad, t2_bytes, t3_pad, t3_bytes; } c[] = {
		{ 1, 128, 32, 160, 32 },       { 128, 128, 32, 160, 32 },
		{ 129, 256, 64, 160, 32 },     { 161, 256, 64, 320, 64 },
		{ 1152, 1152, 288, 1280, 256 }, { 2560, 2560, 640, 2560, 512 },
		{ 3200, 3200, 800, 3200, 640 }, { 4304, 4352, 1088, 4320, 864 },
		{ 6912, 6912, 1728, 7040, 1408 }, { 8640, 8704, 2176, 8640, 1728 },
	};
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		cr_assert_eq(tern_row_padded(TERN_DTYPE_T2, c[i].cols), c[i].t2_pad);
		cr_assert_eq(tern_row_bytes(TERN_DTYPE_T2, c[i].cols), (size_t)c[i].t2_bytes);
		cr_assert_eq(tern_row_padded(TERN_DTYPE_T3, c[i].cols), c[i].t3_pad);
		cr_assert_eq(tern_row_bytes(TERN_DTYPE_T3, c[i].cols), (size_t)c[i].t3_bytes,
			     "cols %lld", (long long)c[i].cols);
	}
	cr_assert_eq(tern_row_bytes(TERN_DTYPE_F16, 4304), 8608);
	cr_assert_eq(tern_row_bytes(TERN_DTYPE_I8, 4304), 4320);
	cr_assert_eq(tern_row_bytes(TERN_DTYPE_I32, 3), 12);
	cr_assert_eq(tern_row_padded(TERN_DTYPE_T2, -1), -1);
	cr_assert_eq(tern_row_padded(TERN_DTYPE_COUNT, 5), -1);
	cr_assert_eq(tern_row_bytes(TERN_DTYPE_T2, INT64_MAX), 0);
}

Test(dtype, scale_counts_and_matrix_bytes)
{
	tern_qparams tq = { TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32 };
	tern_qparams rq = { TERN_SCALE_ROW, 0, TERN_DTYPE_F16 };
	tern_qparams b128 = { TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16 };
	tern_qparams b256 = { TERN_SCALE_BLOCK, 256, TERN_DTYPE_F32 };
	size_t n;
	cr_assert_eq(tern_scale_count(TERN_DTYPE_T2, &tq, 7, 4304, &n), TERN_OK);
	cr_assert_eq(n, 1);
	cr_assert_eq(tern_scale_count(TERN_DTYPE_T2, &rq, 7, 4304, &n), TERN_OK);
	cr_assert_eq(n, 7);
	/* T2 4304 pads to 4352 = 34 blocks of 128 = 17 of 256. */
	cr_assert_eq(tern_scale_count(TERN_DTYPE_T2, &b128, 7, 4304, &n), TERN_OK);
	cr_assert_eq(n, 7 * 34);
	cr_assert_eq(tern_scale_count(TERN_DTYPE_T2, &b256, 7, 4304, &n), TERN_OK);
	cr_assert_eq(n, 7 * 17);
	/* T3 256 pads to 320: two blocks of 256, the second all padding. */
	cr_assert_eq(tern_scale_count(TERN_DTYPE_T3, &b256, 3, 256, &n), TERN_OK);
	cr_assert_eq(n, 6);
	cr_assert_eq(tern_scale_count(TERN_DTYPE_F32, NULL, 3, 256, &n), TERN_OK);
	cr_assert_eq(n, 0);

	cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_T2, &b128, 7, 4304, &n), TERN_OK);
	cr_assert_eq(n, 7 * 1088 + 7 * 34 * 2);
	cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_T3, &tq, 5, 1152, &n), TERN_OK);
	cr_assert_eq(n, 5 * 256 + 4);
	cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_BF16, NULL, 5, 3, &n), TERN_OK);
	cr_assert_eq(n, 30);
	cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_T2, &rq, INT64_MAX / 2, 1 << 20, &n),
		     TERN_E_OVERFLOW);
	cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_F32, NULL, -1, 3, &n), TERN_E_INVALID);
}

Test(dtype, qparams_check_rejects_inconsistent_parameters)
{
	tern_ctx *ctx = NULL;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	tern_qparams none = { TERN_SCALE_NONE, 0, TERN_DTYPE_F32 };
	tern_qparams b64 = { TERN_SCALE_BLOCK, 64, TERN_DTYPE_F32 };
	tern_qparams bf = { TERN_SCALE_ROW, 0, TERN_DTYPE_BF16 };
	tern_qparams rowblk = { TERN_SCALE_ROW, 128, TERN_DTYPE_F32 };
	tern_qparams tens = { TERN_SCALE_TENSOR, 0, TERN_DTYPE_F16 };
	tern_qparams kind9 = { (tern_scale_kind)9, 0, TERN_DTYPE_F16 };
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_T2, &none), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "t2") != NULL, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_T3, NULL), TERN_E_INVALID);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_T2, &b64), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "64") != NULL);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_T2, &bf), TERN_E_INVALID);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_T2, &rowblk), TERN_E_INVALID);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_T2, &kind9), TERN_E_INVALID);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_F32, &tens), TERN_E_INVALID);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_T3, &tens), TERN_OK);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_I8, &none), TERN_OK);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_I8, &tens), TERN_OK);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_F16, NULL), TERN_OK);
	cr_assert_eq(tern_qparams_check(ctx, TERN_DTYPE_COUNT, NULL), TERN_E_INVALID);
	tern_ctx_free(ctx);
}

Test(dtype, tensor_shape_validation)
{
	tern_tensor t;
	memset(&t, 0, sizeof t);
	t.dtype = TERN_DTYPE_F32;
	size_t n;
	t.n_dims = 0;
	cr_assert_eq(tern_tensor_bytes(NULL, &t, &n), TERN_E_INVALID);
	t.n_dims = 5;
	cr_assert_eq(tern_tensor_bytes(NULL, &t, &n), TERN_E_INVALID);
	t.n_dims = 2;
	t.shape[0] = 3;
	t.shape[1] = 0;
	cr_assert_eq(tern_tensor_bytes(NULL, &t, &n), TERN_E_INVALID);
	t.shape[1] = -4;
	cr_assert_eq(tern_tensor_bytes(NULL, &t, &n), TERN_E_INVALID);
	t.n_dims = 4;
	t.shape[0] = INT64_MAX / 2;
	t.shape[1] = 4;
	t.shape[2] = 1;
	t.shape[3] = 1;
	cr_assert_eq(tern_tensor_bytes(NULL, &t, &n), TERN_E_OVERFLOW);
	t.n_dims = 3;
	t.shape[0] = 2;
	t.shape[1] = 3;
	t.shape[2] = 5;
	cr_assert_eq(tern_tensor_bytes(NULL, &t, &n), TERN_OK);
	cr_assert_eq(n, 2 * 3 * 5 * 4);
	cr_assert_eq(tern_tensor_rows(&t), 6);
	cr_assert_eq(tern_tensor_cols(&t), 5);
}

Test(dtype, tensor_new_allocates_zeroed_aligned_data)
{
	tern_qparams q = { TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16 };
	int64_t shape[3] = { 2, 3, 1000 };
	tern_tensor *t = NULL;
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_T3, &q, 3, shape, &t), TERN_OK);
	size_t want;
	cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_T3, &q, 6, 1000, &want), TERN_OK);
	cr_assert_eq(t->nbytes, want);
	cr_assert_eq((uintptr_t)t->data % 64, 0);
	for (size_t i = 0; i < t->nbytes; i++)
		cr_assert_eq(((uint8_t *)t->data)[i], 0);
	/* 1000 pads to 1120 = 224 bytes per row; scales follow 6 rows. */
	cr_assert_eq((const uint8_t *)tern_tensor_scales(t) - (uint8_t *)t->data, 6 * 224);
	tern_tensor_free(t);
	tern_tensor_free(NULL);
	int64_t bad[1] = { 0 };
	t = (tern_tensor *)1;
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_F32, NULL, 1, bad, &t), TERN_E_INVALID);
	cr_assert_null(t);
}

/* ---- half floats ----------------------------------------------------------- */

Test(dtype, f16_every_value_survives_f32_and_back)
{
	for (uint32_t h = 0; h < 65536; h++) {
		float f = tern_f16_to_f32((uint16_t)h);
		cr_assert_eq(tern_f32_to_f16(f), h, "f16 0x%04x -> %a", h, (double)f);
	}
	cr_assert_eq(tern_f16_to_f32(0x3c00), 1.0f);
	cr_assert_eq(tern_f16_to_f32(0x7bff), 65504.0f);
	cr_assert_eq(tern_f16_to_f32(0x0001), 0x1p-24f);
	cr_assert_eq(tern_f16_to_f32(0x0400), 0x1p-14f);
	cr_assert_eq(tern_f16_to_f32(0xc000), -2.0f);
}

/* Independent f32 -> f16: the nearest of all finite f16 values by exact
 * double arithmetic, ties to the even bit pattern, overflow at 65520. */
static uint16_t f16_reference(float f)
{
	static double table[0x7c00];
	static int init;
	if (!init) {
		for (int i = 0; i < 0x7c00; i++) {
			int e = i >> 10, m = i & 0x3ff;
			table[i] = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp(m, -24);
		}
		init = 1;
	}
	double a = fabs((double)f);
	uint16_t sign = signbit(f) ? 0x8000 : 0;
	if (a >= 65520.0)
		return sign | 0x7c00;
	int lo = 0, hi = 0x7bff;
	while (lo < hi) { /* last index with table <= a */
		int mid = (lo + hi + 1) / 2;
		if (table[mid] <= a)
			lo = mid;
		else
			hi = mid - 1;
	}
	int best = lo;
	if (lo < 0x7bff) {
		double dl = a - table[lo], dh = table[lo + 1] - a;
		if (dh < dl || (dh == dl && (lo & 1)))
			best = lo + 1;
	}
	return sign | (uint16_t)best;
}

Test(dtype, f32_to_f16_rounds_to_nearest_even)
{
	tu_rng r = tu_rng_new(1);
	for (int i = 0; i < 200000; i++) {
		float f;
		uint32_t u = (uint32_t)tu_next(&r);
		/* Mostly values within or near f16's range. */
		if (i % 2)
			u = (u & 0x807fffffu) | ((uint32_t)tu_int(&r, 100, 145) << 23);
		f = bitsf(u);
		if (isnan(f))
			continue;
		cr_assert_eq(tern_f32_to_f16(f), f16_reference(f), "%a", (double)f);
	}
	/* Halfway cases, both parities, and the overflow and underflow edges. */
	static const float edge[] = { 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 65504.0f, 65519.99f,
				      65520.0f, 0x1p-25f, 0x1.000002p-25f, 0x1p-24f * 1.5f,
				      0x1p-24f * 2.5f, 0x1.ffcp-15f, 0x1.ffep-15f, INFINITY,
				      -0.0f, 1e-30f, 3.0e38f };
	for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
		cr_assert_eq(tern_f32_to_f16(edge[i]), f16_reference(edge[i]), "%a", (double)edge[i]);
		cr_assert_eq(tern_f32_to_f16(-edge[i]), f16_reference(-edge[i]));
	}
	uint16_t nan = tern_f32_to_f16(NAN);
	cr_assert((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
	/* A NaN whose payload sits only in the low bits must stay a NaN. */
	nan = tern_f32_to_f16(bitsf(0x7f800001u));
	cr_assert((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
#ifdef __FLT16_MAX__
	for (int i = 0; i < 100000; i++) {
		float f = bitsf(((uint32_t)tu_next(&r) & 0x807fffffu) |
				((uint32_t)tu_int(&r, 95, 145) << 23));
		_Float16 h = (_Float16)f;
		uint16_t hb;
		memcpy(&hb, &h, 2);
		cr_assert_eq(tern_f32_to_f16(f), hb, "%a", (double)f);
	}
#endif
}

Test(dtype, bf16_conversion_rounds_to_nearest_even)
{
	tu_rng r = tu_rng_new(2);
	for (int i = 0; i < 200000; i++) {
		float f = bitsf((uint32_t)tu_next(&r));
		if (isnan(f) || isinf(f))
			continue;
		uint16_t h = tern_f32_to_bf16(f);
		/* Independent: the two bf16 neighbours by truncation, compared in
		 * double (exact for these magnitudes). */
		uint32_t lo = fbits(f) & 0xffff0000u;
		double dl = fabs((double)f - (double)bitsf(lo));
		/* Past the largest finite bf16 the next step is 2^128 (inf). */
		double next = (double)bitsf(lo + 0x10000u);
		if (isinf(next))
			next = copysign(ldexp(1.0, 128), next);
		double dh = fabs(next - (double)f);
		uint16_t want = (uint16_t)(lo >> 16);
		if (dh < dl || (dh == dl && (want & 1)))
			want++;
		cr_assert_eq(h, want, "%a", (double)f);
		cr_assert_eq(tern_bf16_to_f32(h), bitsf((uint32_t)h << 16));
	}
	cr_assert_eq(tern_f32_to_bf16(1.0f), 0x3f80);
	cr_assert_eq(tern_f32_to_bf16(INFINITY), 0x7f80);
	cr_assert(isnan(tern_bf16_to_f32(tern_f32_to_bf16(bitsf(0x7f800001u)))));
	for (uint32_t h = 0; h < 65536; h++) {
		float f = tern_bf16_to_f32((uint16_t)h);
		if (!isnan(f))
			cr_assert_eq(tern_f32_to_bf16(f), h);
	}
}

/* ---- layouts --------------------------------------------------------------- */

/* Independent reading of a packed ternary row from the header's rule:
 * groups of G bytes with P codes per byte; code p of byte m of a group is
 * weight (group start + p*G + m). Full groups have G = 64, the last half
 * group G = 32. */
static int ref_weight(tern_dtype dt, const uint8_t *row, int64_t cols, int64_t j)
{
	int P = dt == TERN_DTYPE_T2 ? 4 : 5;
	int64_t padded = tern_row_padded(dt, cols);
	int64_t full = padded / (64 * P) * (64 * P);
	int64_t G = j < full ? 64 : 32;
	int64_t gstart = j < full ? j / (64 * P) * (64 * P) : full;
	int64_t k = j - gstart;
	int64_t p = k / G, m = k % G;
	uint8_t b = row[gstart / P + m];
	if (dt == TERN_DTYPE_T2)
		return ((b >> (2 * p)) & 3) - 1;
	/* Base 3, trit 0 most significant, stored as ceil(v * 256 / 243). */
	for (int v = 0; v < 243; v++)
		if ((v * 256 + 242) / 243 == b) {
			static const int pw[5] = { 81, 27, 9, 3, 1 };
			return v / pw[p] % 3 - 1;
		}
	return 99;
}

static tern_qparams qp_of(int variant, int f16)
{
	tern_qparams q = { TERN_SCALE_TENSOR, 0, f16 ? TERN_DTYPE_F16 : TERN_DTYPE_F32 };
	if (variant == 1)
		q.kind = TERN_SCALE_ROW;
	if (variant >= 2) {
		q.kind = TERN_SCALE_BLOCK;
		q.block = variant == 2 ? 128 : 256;
	}
	return q;
}

/* A random f16-exact positive scale. */
static float random_scale(tu_rng *r)
{
	return tern_f16_to_f32((uint16_t)tu_int(r, 0x1000, 0x5000));
}

static const int64_t odd_cols[] = { 1, 5, 127, 128, 129, 159, 160, 161, 255, 256, 257,
				    319, 320, 321, 500, 1152, 4304 };
#define N_COLS (sizeof odd_cols / sizeof odd_cols[0])

Test(dtype, ternary_values_round_trip_through_every_layout_and_scale_kind)
{
	tu_rng r = tu_rng_new(3);
	tern_dtype dts[2] = { TERN_DTYPE_T2, TERN_DTYPE_T3 };
	for (int di = 0; di < 2; di++)
		for (int variant = 0; variant < 4; variant++)
			for (int f16 = 0; f16 < 2; f16++)
				for (size_t ci = 0; ci < N_COLS; ci++) {
					tern_dtype dt = dts[di];
					int64_t rows = 1 + (int64_t)(ci % 3), cols = odd_cols[ci];
					tern_qparams q = qp_of(variant, f16);
					int64_t shape[2] = { rows, cols };
					tern_tensor *t;
					cr_assert_eq(tern_tensor_new(NULL, dt, &q, 2, shape, &t), TERN_OK);
					size_t ns;
					tern_scale_count(dt, &q, rows, cols, &ns);
					int64_t per_row = variant >= 2 ? (int64_t)(ns / (size_t)rows) : 1;
					float *sc = malloc(ns * sizeof *sc);
					for (size_t i = 0; i < ns; i++)
						sc[i] = random_scale(&r);
					float *x = malloc((size_t)(rows * cols) * sizeof *x);
					int8_t *w = malloc((size_t)(rows * cols));
					for (int64_t i = 0; i < rows; i++)
						for (int64_t c = 0; c < cols; c++) {
							size_t si = variant == 0 ? 0 : variant == 1 ? (size_t)i :
								    (size_t)(i * per_row + c / q.block);
							w[i * cols + c] = (int8_t)tu_int(&r, -1, 1);
							x[i * cols + c] = w[i * cols + c] * sc[si];
						}
					/* Make sure every span's largest magnitude is its scale. */
					for (int64_t i = 0; i < rows; i++)
						for (int64_t c = 0; c < cols; c++) {
							size_t si = variant == 0 ? 0 : variant == 1 ? (size_t)i :
								    (size_t)(i * per_row + c / q.block);
							int first = variant == 0 ? (i == 0 && c == 0) :
								    variant == 1 ? c == 0 : c % q.block == 0;
							if (first) {
								w[i * cols + c] = 1;
								x[i * cols + c] = sc[si];
							}
						}
					cr_assert_eq(tern_pack_ternary_exact(NULL, x, t), TERN_OK);
					size_t rb = tern_row_bytes(dt, cols);
					float *y = malloc((size_t)cols * sizeof *y);
					int8_t *wi = malloc((size_t)cols);
					for (int64_t i = 0; i < rows; i++) {
						const uint8_t *row = (uint8_t *)t->data + (size_t)i * rb;
						tern_tensor_row_to_float(t, i, y);
						tern_type_traits_of(dt)->row_to_i8(row, wi, cols);
						for (int64_t c = 0; c < cols; c++) {
							cr_assert_eq(fbits(y[c]), fbits(x[i * cols + c]),
								     "%s v%d f16 %d %lldx%lld at %lld,%lld",
								     tern_dtype_name(dt), variant, f16,
								     (long long)rows, (long long)cols,
								     (long long)i, (long long)c);
							cr_assert_eq(wi[c], w[i * cols + c]);
							cr_assert_eq(ref_weight(dt, row, cols, c), w[i * cols + c]);
						}
						for (int64_t c = cols; c < tern_row_padded(dt, cols); c++)
							cr_assert_eq(ref_weight(dt, row, cols, c), 0,
								     "pad weight %lld", (long long)c);
					}
					free(sc);
					free(x);
					free(w);
					free(y);
					free(wi);
					tern_tensor_free(t);
				}
}

static void random_row(tu_rng *r, tern_dtype dt, float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		switch (dt) {
		case TERN_DTYPE_F32: x[i] = tu_normal(r) * 100.0f; break;
		case TERN_DTYPE_F16: x[i] = tern_f16_to_f32((uint16_t)tu_int(r, 0, 0xfbff)); break;
		case TERN_DTYPE_BF16: x[i] = tern_bf16_to_f32((uint16_t)tu_int(r, 0, 0x7f7f)); break;
		case TERN_DTYPE_I8: x[i] = (float)tu_int(r, -128, 127); break;
		case TERN_DTYPE_I32: x[i] = (float)tu_int(r, -16777216, 16777216); break;
		case TERN_DTYPE_I4: x[i] = (float)tu_int(r, -8, 7); break;
		default: x[i] = (float)tu_int(r, -1, 1); break;
		}
		if (dt == TERN_DTYPE_F16 && x[i] != x[i])
			x[i] = 0.0f;
	}
}

Test(dtype, every_dtype_row_round_trips_exactly_through_its_traits)
{
	tu_rng r = tu_rng_new(4);
	for (size_t ti = 0; ti < N_TYPES; ti++)
		for (size_t ci = 0; ci < N_COLS; ci++) {
			tern_dtype dt = all_types[ti];
			const tern_type_traits *tr = tern_type_traits_of(dt);
			int64_t n = odd_cols[ci];
			size_t rb = tern_row_bytes(dt, n);
			float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
			uint8_t *buf = malloc(rb);
			memset(buf, 0xa5, rb);
			random_row(&r, dt, x, n);
			tr->row_from_float(x, buf, n);
			tr->row_to_float(buf, y, n);
			for (int64_t i = 0; i < n; i++)
				cr_assert_eq(fbits(y[i]), fbits(x[i]), "%s n %lld at %lld: %g vs %g",
					     tr->name, (long long)n, (long long)i, (double)y[i],
					     (double)x[i]);
			if (tr->row_from_i8) {
				int8_t *q = malloc((size_t)n), *q2 = malloc((size_t)n);
				for (int64_t i = 0; i < n; i++)
					q[i] = (int8_t)x[i];
				memset(buf, 0x5a, rb);
				tr->row_from_i8(q, buf, n);
				tr->row_to_i8(buf, q2, n);
				cr_assert_arr_eq(q, q2, (size_t)n);
				if (dt == TERN_DTYPE_I8)
					for (size_t i = (size_t)n; i < rb; i++)
						cr_assert_eq(buf[i], 0, "i8 pad byte %zu", i);
				free(q);
				free(q2);
			}
			free(x);
			free(y);
			free(buf);
		}
}

Test(dtype, from_float_rounds_and_saturates_integer_types)
{
	const tern_type_traits *i8 = tern_type_traits_of(TERN_DTYPE_I8);
	const tern_type_traits *t2 = tern_type_traits_of(TERN_DTYPE_T2);
	float x[6] = { 2.5f, -2.5f, 300.0f, -300.0f, 0.4f, NAN };
	int8_t want[6] = { 2, -2, 127, -128, 0, 0 };
	int8_t q[32];
	i8->row_from_float(x, q, 6);
	cr_assert_arr_eq(q, want, 6);
	float tx[4] = { 0.5f, 1.5f, -7.0f, -0.6f };
	int8_t tw[4] = { 0, 1, -1, -1 }, back[4];
	uint8_t row[32];
	t2->row_from_float(tx, row, 4);
	t2->row_to_i8(row, back, 4);
	cr_assert_arr_eq(back, tw, 4);
}

Test(dtype, scaled_i8_rows_dequantize_with_their_span_scale)
{
	tu_rng r = tu_rng_new(5);
	for (int variant = 0; variant < 4; variant++)
		for (int f16 = 0; f16 < 2; f16++) {
			tern_qparams q = qp_of(variant, f16);
			int64_t rows = 3, cols = 300, shape[2] = { rows, cols };
			tern_tensor *t;
			cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_I8, &q, 2, shape, &t), TERN_OK);
			size_t ns;
			tern_scale_count(TERN_DTYPE_I8, &q, rows, cols, &ns);
			/* I8 pads 300 to 320: blocks of 128 -> 3, of 256 -> 2. */
			cr_assert_eq(ns, variant == 0 ? 1 : variant == 1 ? 3 : variant == 2 ? 9 : 6);
			uint8_t *s = (uint8_t *)tern_tensor_scales(t);
			float *sc = malloc(ns * sizeof *sc);
			for (size_t i = 0; i < ns; i++) {
				sc[i] = random_scale(&r);
				if (f16) {
					uint16_t h = tern_f32_to_f16(sc[i]);
					memcpy(s + 2 * i, &h, 2);
				} else {
					memcpy(s + 4 * i, &sc[i], 4);
				}
			}
			int8_t *codes = t->data;
			for (int64_t i = 0; i < rows * 320; i++)
				codes[i] = (int8_t)tu_int(&r, -128, 127);
			float y[300];
			for (int64_t i = 0; i < rows; i++) {
				tern_tensor_row_to_float(t, i, y);
				for (int64_t c = 0; c < cols; c++) {
					size_t si = variant == 0 ? 0 : variant == 1 ? (size_t)i :
						    (size_t)(i * (variant == 2 ? 3 : 2) + c / q.block);
					cr_assert_eq(y[c], codes[i * 320 + c] * sc[si]);
					cr_assert_eq(tern_tensor_scale_at(t, i, c), sc[si]);
				}
			}
			free(sc);
			tern_tensor_free(t);
		}
}

Test(dtype, i4_sizes_rounding_and_block_scales)
{
	/* The BitNet-2B4T head: 128256 x 2560 at 4 bits plus one f16 scale
	 * per 128 weights (4.125 bits per weight). */
	tern_qparams q = { TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16 };
	size_t bytes;
	cr_assert_eq(tern_matrix_bytes(TERN_DTYPE_I4, &q, 128256, 2560, &bytes), TERN_OK);
	cr_assert_eq(bytes, (size_t)128256 * 1280 + (size_t)128256 * 20 * 2);
	cr_assert_eq(tern_row_bytes(TERN_DTYPE_I4, 129), 128);
	/* Only block(128) scales. */
	tern_qparams bad[] = { { TERN_SCALE_NONE, 0, TERN_DTYPE_F32 },
			       { TERN_SCALE_ROW, 0, TERN_DTYPE_F32 },
			       { TERN_SCALE_TENSOR, 0, TERN_DTYPE_F16 },
			       { TERN_SCALE_BLOCK, 256, TERN_DTYPE_F16 } };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_eq(tern_qparams_check(NULL, TERN_DTYPE_I4, &bad[i]), TERN_E_INVALID);
	cr_assert_eq(tern_qparams_check(NULL, TERN_DTYPE_I4, NULL), TERN_E_INVALID);
	/* row_from_float: ties to even, saturation, NaN -> 0. */
	const tern_type_traits *i4 = tern_type_traits_of(TERN_DTYPE_I4);
	float x[7] = { 2.5f, -2.5f, 30.0f, -30.0f, 0.4f, NAN, -7.5f };
	int8_t want[7] = { 2, -2, 7, -8, 0, 0, -8 }, back[7];
	uint8_t row[64];
	i4->row_from_float(x, row, 7);
	i4->row_to_i8(row, back, 7);
	cr_assert_arr_eq(back, want, 7);
	/* tern_tensor_row_to_float applies each 128-block's scale. */
	int64_t shape[2] = { 2, 300 };
	tern_tensor *t;
	cr_assert_eq(tern_tensor_new(NULL, TERN_DTYPE_I4, &q, 2, shape, &t), TERN_OK);
	int8_t v[300];
	for (int64_t r = 0; r < 2; r++) {
		for (int64_t c = 0; c < 300; c++)
			v[c] = (int8_t)((c * 7 + r) % 16 - 8);
		i4->row_from_i8(v, (uint8_t *)t->data + r * 192, 300);
	}
	uint8_t *s = (uint8_t *)tern_tensor_scales(t);
	for (int i = 0; i < 6; i++) {
		uint16_t h = tern_f32_to_f16(0.25f * (float)(i + 1));
		memcpy(s + 2 * i, &h, 2);
	}
	float y[300];
	for (int64_t r = 0; r < 2; r++) {
		tern_tensor_row_to_float(t, r, y);
		for (int64_t c = 0; c < 300; c++)
			cr_assert_eq(y[c], (float)((c * 7 + r) % 16 - 8) * 0.25f *
						   (float)(r * 3 + c / 128 + 1));
	}
	tern_tensor_free(t);
}
