/*
 * dtype.c: the element types. One traits row per dtype (name, padding,
 * group geometry, row conversions), the size arithmetic of packed matrices
 * and their scales, tensor allocation and dequantization.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "core/pack.h"
#include "tern/tensor.h"

static void f32_to_float(const void *src, float *dst, int64_t n)
{
	memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_float(const float *src, void *dst, int64_t n)
{
	memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_to_float(const void *src, float *dst, int64_t n)
{
	const uint8_t *s = src;
	for (int64_t i = 0; i < n; i++) {
		uint16_t h;
		memcpy(&h, s + 2 * i, 2);
		dst[i] = tern_f16_to_f32(h);
	}
}

static void f16_from_float(const float *src, void *dst, int64_t n)
{
	uint8_t *d = dst;
	for (int64_t i = 0; i < n; i++) {
		uint16_t h = tern_f32_to_f16(src[i]);
		memcpy(d + 2 * i, &h, 2);
	}
}

static void bf16_to_float(const void *src, float *dst, int64_t n)
{
	const uint8_t *s = src;
	for (int64_t i = 0; i < n; i++) {
		uint16_t h;
		memcpy(&h, s + 2 * i, 2);
		dst[i] = tern_bf16_to_f32(h);
	}
}

static void bf16_from_float(const float *src, void *dst, int64_t n)
{
	uint8_t *d = dst;
	for (int64_t i = 0; i < n; i++) {
		uint16_t h = tern_f32_to_bf16(src[i]);
		memcpy(d + 2 * i, &h, 2);
	}
}

/* Round to nearest, ties to even, saturating to [lo, hi]; NaN becomes 0. */
static double round_clamp(float v, double lo, double hi)
{
	if (v != v)
		return 0.0;
	double r = nearbyint((double)v);
	return r < lo ? lo : r > hi ? hi : r;
}

static void i32_to_float(const void *src, float *dst, int64_t n)
{
	const uint8_t *s = src;
	for (int64_t i = 0; i < n; i++) {
		int32_t v;
		memcpy(&v, s + 4 * i, 4);
		dst[i] = (float)v;
	}
}

static void i32_from_float(const float *src, void *dst, int64_t n)
{
	uint8_t *d = dst;
	for (int64_t i = 0; i < n; i++) {
		int32_t v = (int32_t)round_clamp(src[i], (double)INT32_MIN, (double)INT32_MAX);
		memcpy(d + 4 * i, &v, 4);
	}
}

#define I8_ALIGN 32

static int64_t round_up(int64_t n, int64_t a)
{
	return (n + a - 1) / a * a;
}

static void i8_to_float(const void *src, float *dst, int64_t n)
{
	const int8_t *s = src;
	for (int64_t i = 0; i < n; i++)
		dst[i] = (float)s[i];
}

static void i8_from_float(const float *src, void *dst, int64_t n)
{
	int8_t *d = dst;
	int64_t padded = round_up(n, I8_ALIGN);
	for (int64_t i = 0; i < n; i++)
		d[i] = (int8_t)round_clamp(src[i], -128.0, 127.0);
	memset(d + n, 0, (size_t)(padded - n));
}

static void i8_to_i8(const void *src, int8_t *dst, int64_t n)
{
	memcpy(dst, src, (size_t)n);
}

static void i8_from_i8(const int8_t *src, void *dst, int64_t n)
{
	int64_t padded = round_up(n, I8_ALIGN);
	memcpy(dst, src, (size_t)n);
	memset((int8_t *)dst + n, 0, (size_t)(padded - n));
}

/* Packed rows (T2, T3, I4) are converted one 64-byte SIMD group at a time
 * through a small stack buffer: the layout is local to each group (a
 * trailing partial chunk pads exactly as the row's tail does), so pack.c's
 * whole-row routines produce the row's bytes group by group without
 * allocating. */
#define TERN_GROUP_MAX 320

static void packed_to_float(const void *src, float *dst, int64_t n, int64_t group,
			    void (*unpack)(const uint8_t *, int64_t, int8_t *))
{
	int8_t buf[TERN_GROUP_MAX];
	const uint8_t *s = src;
	for (int64_t g0 = 0; g0 < n; g0 += group) {
		int64_t len = TERN_MIN(group, n - g0);
		unpack(s + g0 / group * 64, len, buf);
		for (int64_t i = 0; i < len; i++)
			dst[g0 + i] = (float)buf[i];
	}
}

static void packed_from_float(const float *src, void *dst, int64_t n, int64_t group, double lo,
			      double hi, void (*pack)(const int8_t *, int64_t, uint8_t *))
{
	int8_t buf[TERN_GROUP_MAX];
	uint8_t *d = dst;
	for (int64_t g0 = 0; g0 < n; g0 += group) {
		int64_t len = TERN_MIN(group, n - g0);
		for (int64_t i = 0; i < len; i++)
			buf[i] = (int8_t)round_clamp(src[g0 + i], lo, hi);
		pack(buf, len, d + g0 / group * 64);
	}
}

static void t2_to_float(const void *src, float *dst, int64_t n)
{
	packed_to_float(src, dst, n, 256, tern_t2_unpack_row);
}

static void t2_from_float(const float *src, void *dst, int64_t n)
{
	packed_from_float(src, dst, n, 256, -1.0, 1.0, tern_t2_pack_row);
}

static void t3_to_float(const void *src, float *dst, int64_t n)
{
	packed_to_float(src, dst, n, 320, tern_t3_unpack_row);
}

static void t3_from_float(const float *src, void *dst, int64_t n)
{
	packed_from_float(src, dst, n, 320, -1.0, 1.0, tern_t3_pack_row);
}

static void t2_to_i8(const void *src, int8_t *dst, int64_t n)
{
	tern_t2_unpack_row(src, n, dst);
}

static void t2_from_i8(const int8_t *src, void *dst, int64_t n)
{
	tern_t2_pack_row(src, n, dst);
}

static void t3_to_i8(const void *src, int8_t *dst, int64_t n)
{
	tern_t3_unpack_row(src, n, dst);
}

static void t3_from_i8(const int8_t *src, void *dst, int64_t n)
{
	tern_t3_pack_row(src, n, dst);
}

/* I4 rows convert one 128-weight group at a time, like the ternary ones. */
#define I4_GROUP 128

static void i4_to_i8(const void *src, int8_t *dst, int64_t n)
{
	tern_i4_unpack_row(src, n, dst);
}

static void i4_from_i8(const int8_t *src, void *dst, int64_t n)
{
	tern_i4_pack_row(src, n, dst);
}

static void i4_to_float(const void *src, float *dst, int64_t n)
{
	packed_to_float(src, dst, n, I4_GROUP, tern_i4_unpack_row);
}

static void i4_from_float(const float *src, void *dst, int64_t n)
{
	packed_from_float(src, dst, n, I4_GROUP, -8.0, 7.0, tern_i4_pack_row);
}

/* ---- the traits table ---------------------------------------------------- */

static const tern_type_traits traits[TERN_DTYPE_COUNT] = {
	[TERN_DTYPE_F32] = { "f32", false, false, 1, 1, 4, f32_to_float, f32_from_float, NULL, NULL },
	[TERN_DTYPE_F16] = { "f16", false, false, 1, 1, 2, f16_to_float, f16_from_float, NULL, NULL },
	[TERN_DTYPE_BF16] = { "bf16", false, false, 1, 1, 2, bf16_to_float, bf16_from_float, NULL,
			      NULL },
	[TERN_DTYPE_I8] = { "i8", true, false, I8_ALIGN, 1, 1, i8_to_float, i8_from_float, i8_to_i8,
			    i8_from_i8 },
	[TERN_DTYPE_I32] = { "i32", false, false, 1, 1, 4, i32_to_float, i32_from_float, NULL, NULL },
	[TERN_DTYPE_T2] = { "t2", true, true, 128, 256, 64, t2_to_float, t2_from_float, t2_to_i8,
			    t2_from_i8 },
	[TERN_DTYPE_T3] = { "t3", true, true, 160, 320, 64, t3_to_float, t3_from_float, t3_to_i8,
			    t3_from_i8 },
	[TERN_DTYPE_I4] = { "i4", true, false, I4_GROUP, I4_GROUP, 64, i4_to_float, i4_from_float,
			    i4_to_i8, i4_from_i8 },
};

const tern_type_traits *tern_type_traits_of(tern_dtype dtype)
{
	if ((int)dtype < 0 || dtype >= TERN_DTYPE_COUNT)
		return NULL;
	return &traits[dtype];
}

tern_dtype tern_dtype_from_name(const char *name)
{
	if (!name)
		return TERN_DTYPE_COUNT;
	for (int i = 0; i < TERN_DTYPE_COUNT; i++)
		if (strcmp(name, traits[i].name) == 0)
			return (tern_dtype)i;
	return TERN_DTYPE_COUNT;
}

const char *tern_dtype_name(tern_dtype dtype)
{
	const tern_type_traits *t = tern_type_traits_of(dtype);
	return t ? t->name : "(invalid dtype)";
}

/* ---- sizes --------------------------------------------------------------- */

int64_t tern_row_padded(tern_dtype dtype, int64_t cols)
{
	const tern_type_traits *t = tern_type_traits_of(dtype);
	if (!t || cols < 0 || cols > INT64_MAX - (int64_t)t->row_align)
		return -1;
	return round_up(cols, t->row_align);
}

static int row_bytes_checked(tern_dtype dtype, int64_t cols, size_t *out)
{
	const tern_type_traits *t = tern_type_traits_of(dtype);
	int64_t padded = tern_row_padded(dtype, cols);
	if (!t || padded < 0)
		return TERN_E_INVALID;
	if ((uint64_t)padded > SIZE_MAX)
		return TERN_E_OVERFLOW;
	/* Packed (T2, T3, I4): group_bytes bytes per `group` weights; padded
	 * rows are whole half groups (whole groups for I4), so the division is
	 * exact. */
	if (t->group > 1) {
		*out = (size_t)padded / t->group * t->group_bytes +
		       (size_t)padded % t->group / (t->group / 2) * (t->group_bytes / 2);
		return TERN_OK;
	}
	return tern_size_mul((size_t)padded, t->group_bytes, out);
}

size_t tern_row_bytes(tern_dtype dtype, int64_t cols)
{
	size_t n;
	return row_bytes_checked(dtype, cols, &n) == TERN_OK ? n : 0;
}

int tern_qparams_check(tern_ctx *ctx, tern_dtype dtype, const tern_qparams *qp)
{
	const tern_type_traits *t = tern_type_traits_of(dtype);
	if (!t)
		return tern_error(ctx, TERN_E_INVALID, "invalid dtype %d", (int)dtype);
	tern_scale_kind kind = qp ? qp->kind : TERN_SCALE_NONE;
	/* I4's kernels apply one scale per 64-byte group, so that is the only
	 * kind it has. */
	if (dtype == TERN_DTYPE_I4 && (kind != TERN_SCALE_BLOCK || qp->block != 128))
		return tern_error(ctx, TERN_E_INVALID, "dtype i4 needs block scales of 128 weights");
	if (kind == TERN_SCALE_NONE) {
		if (t->ternary)
			return tern_error(ctx, TERN_E_INVALID, "dtype %s needs scales (kind tensor, row or block)",
					  t->name);
		if (qp && qp->block != 0)
			return tern_error(ctx, TERN_E_INVALID, "block size %u given without block scales",
					  qp->block);
		return TERN_OK;
	}
	if (!t->quantized)
		return tern_error(ctx, TERN_E_INVALID, "dtype %s does not take scales", t->name);
	if (kind != TERN_SCALE_TENSOR && kind != TERN_SCALE_ROW && kind != TERN_SCALE_BLOCK)
		return tern_error(ctx, TERN_E_INVALID, "unknown scale kind %d", (int)kind);
	if (kind == TERN_SCALE_BLOCK && qp->block != 128 && qp->block != 256)
		return tern_error(ctx, TERN_E_INVALID, "scale block must be 128 or 256 weights, not %u",
				  qp->block);
	if (kind != TERN_SCALE_BLOCK && qp->block != 0)
		return tern_error(ctx, TERN_E_INVALID, "block size %u given without block scales",
				  qp->block);
	if (qp->scale_type != TERN_DTYPE_F32 && qp->scale_type != TERN_DTYPE_F16)
		return tern_error(ctx, TERN_E_INVALID, "scale type must be f32 or f16, not %s",
				  tern_dtype_name(qp->scale_type));
	return TERN_OK;
}

int tern_scale_count(tern_dtype dtype, const tern_qparams *qp, int64_t rows, int64_t cols,
		     size_t *out)
{
	if (rows < 0 || cols < 0)
		return TERN_E_INVALID;
	int rc = tern_qparams_check(NULL, dtype, qp);
	if (rc != TERN_OK)
		return rc;
	if (!qp || qp->kind == TERN_SCALE_NONE) {
		*out = 0;
		return TERN_OK;
	}
	if ((uint64_t)rows > SIZE_MAX)
		return TERN_E_OVERFLOW;
	switch (qp->kind) {
	case TERN_SCALE_TENSOR:
		*out = 1;
		return TERN_OK;
	case TERN_SCALE_ROW:
		*out = (size_t)rows;
		return TERN_OK;
	default: {
		int64_t padded = tern_row_padded(dtype, cols);
		if (padded < 0)
			return TERN_E_OVERFLOW;
		int64_t per_row = (padded + qp->block - 1) / qp->block;
		return tern_size_mul((size_t)rows, (size_t)per_row, out);
	}
	}
}

static size_t scale_size(const tern_qparams *qp)
{
	return qp->scale_type == TERN_DTYPE_F16 ? 2 : 4;
}

int tern_matrix_bytes(tern_dtype dtype, const tern_qparams *qp, int64_t rows, int64_t cols,
		      size_t *out)
{
	size_t rb, codes, ns, sb;
	if (rows < 0 || cols < 0)
		return TERN_E_INVALID;
	int rc = tern_scale_count(dtype, qp, rows, cols, &ns);
	if (rc != TERN_OK)
		return rc;
	rc = row_bytes_checked(dtype, cols, &rb);
	if (rc != TERN_OK)
		return rc;
	if ((uint64_t)rows > SIZE_MAX || tern_size_mul((size_t)rows, rb, &codes) != TERN_OK)
		return TERN_E_OVERFLOW;
	if (ns == 0) {
		*out = codes;
		return TERN_OK;
	}
	if (tern_size_mul(ns, scale_size(qp), &sb) != TERN_OK ||
	    tern_size_add(codes, sb, out) != TERN_OK)
		return TERN_E_OVERFLOW;
	return TERN_OK;
}

/* ---- tensors ------------------------------------------------------------- */

int64_t tern_tensor_rows(const tern_tensor *t)
{
	int64_t r = 1;
	for (int i = 0; i + 1 < t->n_dims; i++)
		r *= t->shape[i];
	return r;
}

int64_t tern_tensor_cols(const tern_tensor *t)
{
	return t->n_dims > 0 ? t->shape[t->n_dims - 1] : 0;
}

static int shape_check(tern_ctx *ctx, tern_dtype dtype, int n_dims, const int64_t *shape,
		       int64_t *rows)
{
	if (!tern_type_traits_of(dtype))
		return tern_error(ctx, TERN_E_INVALID, "invalid dtype %d", (int)dtype);
	if (n_dims < 1 || n_dims > TERN_MAX_DIMS)
		return tern_error(ctx, TERN_E_INVALID, "tensor has %d dims (1..%d allowed)", n_dims,
				  TERN_MAX_DIMS);
	int64_t r = 1;
	for (int i = 0; i < n_dims; i++) {
		if (shape[i] <= 0)
			return tern_error(ctx, TERN_E_INVALID, "tensor dim %d is %lld (must be > 0)", i,
					  (long long)shape[i]);
		if (i + 1 < n_dims && __builtin_mul_overflow(r, shape[i], &r))
			return tern_error(ctx, TERN_E_OVERFLOW, "tensor row count overflows");
	}
	*rows = r;
	return TERN_OK;
}

int tern_tensor_bytes(tern_ctx *ctx, const tern_tensor *t, size_t *out)
{
	int64_t rows = 0;
	if (!t)
		return tern_error(ctx, TERN_E_INVALID, "NULL tensor");
	int rc = shape_check(ctx, t->dtype, t->n_dims, t->shape, &rows);
	if (rc != TERN_OK)
		return rc;
	rc = tern_qparams_check(ctx, t->dtype, &t->q);
	if (rc != TERN_OK)
		return rc;
	int64_t cols = t->shape[t->n_dims - 1];
	rc = tern_matrix_bytes(t->dtype, &t->q, rows, cols, out);
	if (rc != TERN_OK)
		return tern_error(ctx, rc, "size of a %lld x %lld %s tensor does not fit in memory",
				  (long long)rows, (long long)cols, tern_dtype_name(t->dtype));
	return TERN_OK;
}

const void *tern_tensor_scales(const tern_tensor *t)
{
	const tern_type_traits *tr = tern_type_traits_of(t->dtype);
	if (!tr || !tr->quantized || t->q.kind == TERN_SCALE_NONE || !t->data)
		return NULL;
	size_t rb = tern_row_bytes(t->dtype, tern_tensor_cols(t));
	return (const uint8_t *)t->data + (size_t)tern_tensor_rows(t) * rb;
}

static float scale_load(const tern_tensor *t, const uint8_t *s, size_t i)
{
	if (t->q.scale_type == TERN_DTYPE_F16) {
		uint16_t h;
		memcpy(&h, s + 2 * i, 2);
		return tern_f16_to_f32(h);
	}
	float f;
	memcpy(&f, s + 4 * i, 4);
	return f;
}

float tern_tensor_scale_at(const tern_tensor *t, int64_t row, int64_t col)
{
	const uint8_t *s = tern_tensor_scales(t);
	if (!s)
		return 1.0f;
	switch (t->q.kind) {
	case TERN_SCALE_TENSOR:
		return scale_load(t, s, 0);
	case TERN_SCALE_ROW:
		return scale_load(t, s, (size_t)row);
	default: {
		int64_t padded = tern_row_padded(t->dtype, tern_tensor_cols(t));
		int64_t per_row = (padded + t->q.block - 1) / t->q.block;
		return scale_load(t, s, (size_t)(row * per_row + col / t->q.block));
	}
	}
}

void tern_tensor_row_to_float(const tern_tensor *t, int64_t row, float *dst)
{
	const tern_type_traits *tr = tern_type_traits_of(t->dtype);
	int64_t cols = tern_tensor_cols(t);
	const uint8_t *src = (const uint8_t *)t->data + (size_t)row * tern_row_bytes(t->dtype, cols);
	tr->row_to_float(src, dst, cols);
	if (!tr->quantized || t->q.kind == TERN_SCALE_NONE)
		return;
	/* The scale is constant over a block (or the whole row), so apply it
	 * span by span rather than looking it up per element. */
	int64_t span = t->q.kind == TERN_SCALE_BLOCK ? (int64_t)t->q.block : cols;
	for (int64_t c0 = 0; c0 < cols; c0 += span) {
		float s = tern_tensor_scale_at(t, row, c0);
		int64_t c1 = TERN_MIN(cols, c0 + span);
		for (int64_t c = c0; c < c1; c++)
			dst[c] *= s;
	}
}

int tern_tensor_new(tern_ctx *ctx, tern_dtype dtype, const tern_qparams *qp, int n_dims,
		    const int64_t *shape, tern_tensor **out)
{
	if (!out)
		return tern_error(ctx, TERN_E_INVALID, "tensor_new: NULL out");
	*out = NULL;
	if (!shape)
		return tern_error(ctx, TERN_E_INVALID, "tensor_new: NULL shape");
	tern_tensor tmp;
	memset(&tmp, 0, sizeof tmp);
	tmp.dtype = dtype;
	tmp.n_dims = n_dims;
	if (n_dims >= 1 && n_dims <= TERN_MAX_DIMS)
		memcpy(tmp.shape, shape, (size_t)n_dims * sizeof *shape);
	if (qp)
		tmp.q = *qp;
	size_t bytes;
	int rc = tern_tensor_bytes(ctx, &tmp, &bytes);
	if (rc != TERN_OK)
		return rc;
	tern_tensor *t = calloc(1, sizeof *t);
	void *data = tern_alloc(bytes);
	if (!t || !data) {
		free(t);
		tern_free(data);
		return tern_error(ctx, TERN_E_NOMEM, "cannot allocate a %zu-byte %s tensor", bytes,
				  tern_dtype_name(dtype));
	}
	memset(data, 0, bytes);
	*t = tmp;
	t->data = data;
	t->nbytes = bytes;
	*out = t;
	return TERN_OK;
}

void tern_tensor_free(tern_tensor *t)
{
	if (!t)
		return;
	tern_free(t->data);
	free(t);
}
