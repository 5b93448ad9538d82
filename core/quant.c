/*
 * quant.c: turning floats into the quantized forms the kernels consume:
 * ternarization of weight matrices (absmean per BitNet b1.58, median per
 * "BitNet b1.58 Reloaded"; per tensor, row or block), exact packing of
 * values that are already ternary, and the 4-bit (I4) quantizer with its
 * small search over block scales. (The int8 quantization of activation
 * rows, tern_quantize_row_i8, lives with the scalar kernels, whose
 * reference it is: core/kernels_scalar.c.)
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/pack.h"
#include "tern/tensor.h"

/* ---- spans of a quantized matrix ----------------------------------------- */

/* A scale span is (part of) a row: [c0, c1) of row r. The number of spans
 * per row and their bounds follow the tensor's scale kind. */
typedef struct span_geom {
	int64_t rows, cols;
	tern_qparams q;
	int64_t per_row;   /* scales per row (BLOCK), 1 (ROW) */
	size_t nscales;
} span_geom;

static int span_geom_of(tern_ctx *ctx, const tern_tensor *t, const char *what, span_geom *g)
{
	if (!t || !t->data)
		return tern_error(ctx, TERN_E_INVALID, "%s: NULL tensor or tensor without data", what);
	const tern_type_traits *tr = tern_type_traits_of(t->dtype);
	if (!tr || !tr->ternary)
		return tern_error(ctx, TERN_E_INVALID, "%s: destination dtype must be t2 or t3, not %s",
				  what, tern_dtype_name(t->dtype));
	if (t->q.kind == TERN_SCALE_NONE)
		return tern_error(ctx, TERN_E_INVALID, "%s: ternary tensor needs a scale kind", what);
	size_t need;
	int rc = tern_tensor_bytes(ctx, t, &need);
	if (rc != TERN_OK)
		return rc;
	if (t->nbytes < need)
		return tern_error(ctx, TERN_E_INVALID, "%s: tensor holds %zu bytes, its shape needs %zu",
				  what, t->nbytes, need);
	g->rows = tern_tensor_rows(t);
	g->cols = tern_tensor_cols(t);
	g->q = t->q;
	rc = tern_scale_count(t->dtype, &t->q, g->rows, g->cols, &g->nscales);
	if (rc != TERN_OK)
		return tern_error(ctx, rc, "%s: scale count overflows", what);
	if (t->q.kind == TERN_SCALE_BLOCK)
		g->per_row = (int64_t)(g->nscales / (size_t)g->rows);
	else
		g->per_row = 1;
	return TERN_OK;
}

/* Bounds of span s of a row, clipped to the logical columns (a block that
 * lies wholly in the row padding is empty). */
static void span_bounds(const span_geom *g, int64_t s, int64_t *c0, int64_t *c1)
{
	if (g->q.kind != TERN_SCALE_BLOCK) {
		*c0 = 0;
		*c1 = g->cols;
		return;
	}
	int64_t b = g->q.block;
	*c0 = TERN_MIN(s * b, g->cols);
	*c1 = TERN_MIN((s + 1) * b, g->cols);
}

static size_t span_index(const span_geom *g, int64_t r, int64_t s)
{
	switch (g->q.kind) {
	case TERN_SCALE_TENSOR: return 0;
	case TERN_SCALE_ROW: return (size_t)r;
	default: return (size_t)(r * g->per_row + s);
	}
}

static void store_scales(tern_tensor *t, const span_geom *g, const float *s)
{
	uint8_t *dst = (uint8_t *)tern_tensor_scales(t);
	if (g->q.scale_type == TERN_DTYPE_F16) {
		for (size_t i = 0; i < g->nscales; i++) {
			uint16_t h = tern_f32_to_f16(s[i]);
			memcpy(dst + 2 * i, &h, 2);
		}
	} else {
		memcpy(dst, s, g->nscales * sizeof(float));
	}
}

/* Packs every row as w = clamp(round(x / scale), -1, 1) with its span's
 * scale (codes of a zero-scale span are 0). */
static int pack_rows(tern_ctx *ctx, const float *src, tern_tensor *t, const span_geom *g,
		     const float *scales)
{
	const tern_type_traits *tr = tern_type_traits_of(t->dtype);
	size_t rb = tern_row_bytes(t->dtype, g->cols);
	int8_t *w = tern_alloc((size_t)g->cols);
	if (!w)
		return tern_error(ctx, TERN_E_NOMEM, "cannot allocate a row of %lld codes",
				  (long long)g->cols);
	uint8_t *codes = t->data;
	for (int64_t r = 0; r < g->rows; r++) {
		const float *x = src + r * g->cols;
		for (int64_t s = 0; s < g->per_row; s++) {
			int64_t c0, c1;
			span_bounds(g, s, &c0, &c1);
			float sc = scales[span_index(g, r, s)];
			for (int64_t c = c0; c < c1; c++) {
				if (sc == 0.0f) {
					w[c] = 0;
					continue;
				}
				float v = nearbyintf(x[c] / sc);
				w[c] = (int8_t)(v > 1.0f ? 1 : v < -1.0f ? -1 : (int)v);
			}
		}
		tr->row_from_i8(w, codes + (size_t)r * rb, g->cols);
	}
	tern_free(w);
	return TERN_OK;
}

static int check_finite(tern_ctx *ctx, const float *src, int64_t rows, int64_t cols,
			const char *what)
{
	for (int64_t r = 0; r < rows; r++)
		for (int64_t c = 0; c < cols; c++)
			if (!isfinite(src[r * cols + c]))
				return tern_error(ctx, TERN_E_INVALID,
						  "%s: value at row %lld, column %lld is not finite",
						  what, (long long)r, (long long)c);
	return TERN_OK;
}

/* ---- ternarization ------------------------------------------------------- */

/* k-th smallest of a[0..n) (0-based), reordering a: Hoare's selection
 * with a median-of-three pivot, O(n) on average. */
static float select_kth(float *a, size_t n, size_t k)
{
	size_t lo = 0, hi = n - 1;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		float x = a[lo], y = a[mid], z = a[hi];
		float pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
		size_t i = lo, j = hi;
		for (;;) {
			while (a[i] < pivot)
				i++;
			while (a[j] > pivot)
				j--;
			if (i >= j)
				break;
			float t = a[i];
			a[i] = a[j];
			a[j] = t;
			i++;
			j--;
		}
		if (k <= j)
			hi = j;
		else
			lo = j + 1;
	}
	return a[k];
}

/* The lower median (element (n-1)/2 of the sorted values), as torch.median
 * defines it. */
static float abs_median(const float *x, size_t n, float *tmp)
{
	for (size_t i = 0; i < n; i++)
		tmp[i] = fabsf(x[i]);
	return select_kth(tmp, n, (n - 1) / 2);
}

int tern_ternarize(tern_ctx *ctx, const float *src, tern_ternarize_method method,
		   tern_tensor *dst)
{
	span_geom g;
	int rc = span_geom_of(ctx, dst, "ternarize", &g);
	if (rc != TERN_OK)
		return rc;
	if (!src)
		return tern_error(ctx, TERN_E_INVALID, "ternarize: NULL source");
	if (method != TERN_TERNARIZE_ABSMEAN && method != TERN_TERNARIZE_MEDIAN)
		return tern_error(ctx, TERN_E_INVALID, "ternarize: unknown method %d", (int)method);
	rc = check_finite(ctx, src, g.rows, g.cols, "ternarize");
	if (rc != TERN_OK)
		return rc;

	float *scales = calloc(g.nscales, sizeof *scales);
	if (!scales)
		return tern_error(ctx, TERN_E_NOMEM, "ternarize: cannot allocate %zu scales", g.nscales);
	float *tmp = NULL;
	size_t n_all, tmp_bytes;
	if (tern_size_mul((size_t)g.rows, (size_t)g.cols, &n_all) != TERN_OK ||
	    tern_size_mul(n_all, sizeof(float), &tmp_bytes) != TERN_OK) {
		free(scales);
		return tern_error(ctx, TERN_E_OVERFLOW, "ternarize: %lld x %lld floats overflow",
				  (long long)g.rows, (long long)g.cols);
	}
	if (method == TERN_TERNARIZE_MEDIAN) {
		size_t span_max = g.q.kind == TERN_SCALE_TENSOR ? n_all : (size_t)g.cols;
		tmp = malloc(span_max * sizeof *tmp);
		if (!tmp) {
			free(scales);
			return tern_error(ctx, TERN_E_NOMEM, "ternarize: cannot allocate %zu floats",
					  span_max);
		}
	}

	if (g.q.kind == TERN_SCALE_TENSOR) {
		if (method == TERN_TERNARIZE_MEDIAN) {
			scales[0] = abs_median(src, n_all, tmp);
		} else {
			double sum = 0.0;
			for (size_t i = 0; i < n_all; i++)
				sum += fabs((double)src[i]);
			scales[0] = (float)(sum / (double)n_all);
		}
	} else {
		for (int64_t r = 0; r < g.rows; r++) {
			const float *x = src + r * g.cols;
			for (int64_t s = 0; s < g.per_row; s++) {
				int64_t c0, c1;
				span_bounds(&g, s, &c0, &c1);
				float sc = 0.0f;
				if (c1 > c0 && method == TERN_TERNARIZE_MEDIAN) {
					sc = abs_median(x + c0, (size_t)(c1 - c0), tmp);
				} else if (c1 > c0) {
					double sum = 0.0;
					for (int64_t c = c0; c < c1; c++)
						sum += fabs((double)x[c]);
					sc = (float)(sum / (double)(c1 - c0));
				}
				scales[span_index(&g, r, s)] = sc;
			}
		}
	}
	free(tmp);

	if (g.q.scale_type == TERN_DTYPE_F16) {
		for (size_t i = 0; i < g.nscales; i++) {
			if (!isfinite(tern_f16_to_f32(tern_f32_to_f16(scales[i])))) {
				float bad = scales[i];
				free(scales);
				return tern_error(ctx, TERN_E_INVALID,
						  "ternarize: scale %g does not fit in f16", bad);
			}
		}
	}
	rc = pack_rows(ctx, src, dst, &g, scales);
	if (rc == TERN_OK)
		store_scales(dst, &g, scales);
	free(scales);
	return rc;
}

/* ---- exact packing ------------------------------------------------------- */

int tern_pack_ternary_exact(tern_ctx *ctx, const float *src, tern_tensor *dst)
{
	span_geom g;
	int rc = span_geom_of(ctx, dst, "pack ternary", &g);
	if (rc != TERN_OK)
		return rc;
	if (!src)
		return tern_error(ctx, TERN_E_INVALID, "pack ternary: NULL source");
	rc = check_finite(ctx, src, g.rows, g.cols, "pack ternary");
	if (rc != TERN_OK)
		return rc;
	float *scales = calloc(g.nscales, sizeof *scales);
	if (!scales)
		return tern_error(ctx, TERN_E_NOMEM, "pack ternary: cannot allocate %zu scales",
				  g.nscales);

	/* The span's scale is its largest magnitude; every value must then be
	 * 0 or exactly +-scale. */
	for (int64_t r = 0; r < g.rows; r++)
		for (int64_t s = 0; s < g.per_row; s++) {
			int64_t c0, c1;
			span_bounds(&g, s, &c0, &c1);
			float *sc = &scales[span_index(&g, r, s)];
			for (int64_t c = c0; c < c1; c++)
				*sc = fmaxf(*sc, fabsf(src[r * g.cols + c]));
		}
	for (int64_t r = 0; r < g.rows; r++)
		for (int64_t s = 0; s < g.per_row; s++) {
			int64_t c0, c1;
			span_bounds(&g, s, &c0, &c1);
			float sc = scales[span_index(&g, r, s)];
			for (int64_t c = c0; c < c1; c++) {
				float a = fabsf(src[r * g.cols + c]);
				if (a != 0.0f && a != sc) {
					free(scales);
					return tern_error(ctx, TERN_E_INVALID,
							  "pack ternary: value %g at row %lld, column %lld is "
							  "neither 0 nor +-%g (its span's scale)",
							  src[r * g.cols + c], (long long)r, (long long)c,
							  sc);
				}
			}
		}
	if (g.q.scale_type == TERN_DTYPE_F16) {
		for (size_t i = 0; i < g.nscales; i++)
			if (tern_f16_to_f32(tern_f32_to_f16(scales[i])) != scales[i]) {
				float bad = scales[i];
				free(scales);
				return tern_error(ctx, TERN_E_INVALID,
						  "pack ternary: scale %g is not exactly representable in f16",
						  bad);
			}
	}
	/* Dividing by the span's own scale gives exactly -1, 0 or 1 here. */
	rc = pack_rows(ctx, src, dst, &g, scales);
	if (rc == TERN_OK)
		store_scales(dst, &g, scales);
	free(scales);
	return rc;
}

/* ---- 4-bit weights --------------------------------------------------------- */

#define I4_BLOCK 128
#define I4_QMAX 7
/* Candidate scales m * (50 - i) / 350: m / 7 shrunk by 2% per step. A
 * slightly smaller scale than absmax / 7 usually wins: it clips the one
 * largest value a little and resolves all the others more finely. */
#define I4_CANDIDATES 11

static float i4_scale_rounded(double d, tern_dtype scale_type)
{
	float f = (float)d;
	return scale_type == TERN_DTYPE_F16 ? tern_f16_to_f32(tern_f32_to_f16(f)) : f;
}

/* Codes of x [len] under scale d (q = 0 when d is 0) and their squared
 * error; q must hold len values. */
static double i4_try(const float *x, int64_t len, float d, int8_t *q)
{
	double err = 0.0;
	for (int64_t i = 0; i < len; i++) {
		double v = 0.0;
		if (d != 0.0f) {
			v = nearbyint((double)x[i] / (double)d);
			v = v < -I4_QMAX ? -I4_QMAX : v > I4_QMAX ? I4_QMAX : v;
		}
		q[i] = (int8_t)v;
		double e = (double)x[i] - v * (double)d;
		err += e * e;
	}
	return err;
}

int tern_quantize_row_i4(const float *x, int64_t n, tern_dtype scale_type, uint8_t *codes,
			 void *scales)
{
	if (n < 0 || !x || !codes || !scales ||
	    (scale_type != TERN_DTYPE_F32 && scale_type != TERN_DTYPE_F16))
		return TERN_E_INVALID;
	int8_t best[I4_BLOCK], cand[I4_BLOCK];
	int64_t nblk = (n + I4_BLOCK - 1) / I4_BLOCK;
	for (int64_t b = 0; b < nblk; b++) {
		const float *xb = x + b * I4_BLOCK;
		int64_t len = TERN_MIN(I4_BLOCK, n - b * I4_BLOCK);
		float m = 0.0f;
		for (int64_t i = 0; i < len; i++) {
			if (!isfinite(xb[i]))
				return TERN_E_INVALID;
			m = fmaxf(m, fabsf(xb[i]));
		}
		float dbest = 0.0f;
		memset(best, 0, sizeof best);
		if (m > 0.0f) {
			double ebest = INFINITY;
			for (int i = 0; i < I4_CANDIDATES; i++) {
				float d = i4_scale_rounded((double)m * (50 - i) / 350.0, scale_type);
				if (!isfinite(d))
					return TERN_E_INVALID;
				double e = i4_try(xb, len, d, cand);
				if (e < ebest) {
					ebest = e;
					dbest = d;
					memcpy(best, cand, (size_t)len);
				}
			}
		}
		tern_i4_pack_row(best, len, codes + b * (I4_BLOCK / 2));
		if (scale_type == TERN_DTYPE_F16) {
			uint16_t h = tern_f32_to_f16(dbest);
			memcpy((uint8_t *)scales + 2 * b, &h, 2);
		} else {
			memcpy((uint8_t *)scales + 4 * b, &dbest, 4);
		}
	}
	return TERN_OK;
}

int tern_quantize_row_i4_residual(const float *x, int64_t n, tern_dtype scale_type,
				  uint8_t *codes, void *scales, float *work)
{
	if (!work)
		return TERN_E_INVALID;
	int rc = tern_quantize_row_i4(x, n, scale_type, codes, scales);
	if (rc != TERN_OK)
		return rc;
	int8_t q[I4_BLOCK];
	const int64_t nblk = (n + I4_BLOCK - 1) / I4_BLOCK;
	for (int64_t b = 0; b < nblk; b++) {
		const int64_t len = TERN_MIN(I4_BLOCK, n - b * I4_BLOCK);
		float d;
		if (scale_type == TERN_DTYPE_F16) {
			uint16_t h;
			memcpy(&h, (const uint8_t *)scales + 2 * b, 2);
			d = tern_f16_to_f32(h);
		} else {
			memcpy(&d, (const uint8_t *)scales + 4 * b, 4);
		}
		tern_i4_unpack_row(codes + b * (I4_BLOCK / 2), len, q);
		for (int64_t i = 0; i < len; i++)
			work[b * I4_BLOCK + i] = x[b * I4_BLOCK + i] - (float)q[i] * d;
	}
	return tern_quantize_row_i4(work, n, scale_type, codes, scales);
}

int tern_quantize_i4(tern_ctx *ctx, const float *src, tern_tensor *dst)
{
	if (!src || !dst || !dst->data)
		return tern_error(ctx, TERN_E_INVALID, "quantize i4: NULL source or destination");
	if (dst->dtype != TERN_DTYPE_I4)
		return tern_error(ctx, TERN_E_INVALID, "quantize i4: destination dtype is %s",
				  tern_dtype_name(dst->dtype));
	size_t need;
	int rc = tern_tensor_bytes(ctx, dst, &need);
	if (rc != TERN_OK)
		return rc;
	if (dst->nbytes < need)
		return tern_error(ctx, TERN_E_INVALID,
				  "quantize i4: tensor holds %zu bytes, its shape needs %zu",
				  dst->nbytes, need);
	int64_t rows = tern_tensor_rows(dst), cols = tern_tensor_cols(dst);
	size_t rb = tern_row_bytes(TERN_DTYPE_I4, cols);
	size_t sb = (size_t)(tern_row_padded(TERN_DTYPE_I4, cols) / I4_BLOCK) *
		    (dst->q.scale_type == TERN_DTYPE_F16 ? 2 : 4);
	uint8_t *scales = (uint8_t *)dst->data + (size_t)rows * rb;
	for (int64_t r = 0; r < rows; r++) {
		rc = tern_quantize_row_i4(src + (size_t)r * (size_t)cols, cols, dst->q.scale_type,
					  (uint8_t *)dst->data + (size_t)r * rb,
					  scales + (size_t)r * sb);
		if (rc != TERN_OK)
			return tern_error(ctx, rc,
					  "quantize i4: row %lld holds a non-finite value or one whose "
					  "scale overflows %s",
					  (long long)r, tern_dtype_name(dst->q.scale_type));
	}
	return TERN_OK;
}
