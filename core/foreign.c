/*
 * foreign.c: exact conversion between tern's T2/T3 tensors and other
 * projects' ternary layouts: llama.cpp's TQ1_0 and TQ2_0 and bitnet.cpp's
 * x86 I2_S (docs/FORMAT.md gives each byte by byte). Import validates
 * every code so that export reproduces the original bytes.
 */
#include <string.h>

#include "core/internal.h"
#include "core/pack.h"
#include "tern/tensor.h"

#define QK 256          /* weights per TQ1_0 / TQ2_0 block */
#define TQ1_BYTES 54    /* qs[48], qh[4], f16 d */
#define TQ2_BYTES 66    /* qs[64], f16 d */
#define I2S_BLOCK 128   /* weights per I2_S block (32 bytes) */
#define I2S_TAIL 32     /* f32 scale, then padding up to 32 bytes */

static const char *foreign_name(tern_foreign_type ft)
{
	switch (ft) {
	case TERN_FOREIGN_TQ1_0: return "TQ1_0";
	case TERN_FOREIGN_TQ2_0: return "TQ2_0";
	case TERN_FOREIGN_I2_S: return "I2_S";
	default: return "(unknown foreign type)";
	}
}

int tern_foreign_bytes(tern_ctx *ctx, tern_foreign_type ft, int64_t rows, int64_t cols,
		       size_t *out)
{
	if (ft != TERN_FOREIGN_TQ1_0 && ft != TERN_FOREIGN_TQ2_0 && ft != TERN_FOREIGN_I2_S)
		return tern_error(ctx, TERN_E_INVALID, "unknown foreign type %d", (int)ft);
	if (rows <= 0 || cols <= 0)
		return tern_error(ctx, TERN_E_INVALID, "%s: shape %lld x %lld must be positive",
				  foreign_name(ft), (long long)rows, (long long)cols);
	int64_t unit = ft == TERN_FOREIGN_I2_S ? I2S_BLOCK : QK;
	if (cols % unit != 0)
		return tern_error(ctx, TERN_E_INVALID, "%s: row length %lld is not a multiple of %lld",
				  foreign_name(ft), (long long)cols, (long long)unit);
	size_t n, bytes;
	if ((uint64_t)rows > SIZE_MAX || (uint64_t)cols > SIZE_MAX ||
	    tern_size_mul((size_t)rows, (size_t)cols, &n) != TERN_OK)
		return tern_error(ctx, TERN_E_OVERFLOW, "%s: %lld x %lld weights overflow",
				  foreign_name(ft), (long long)rows, (long long)cols);
	int rc;
	if (ft == TERN_FOREIGN_I2_S)
		rc = tern_size_add(n / 4, I2S_TAIL, &bytes);
	else
		rc = tern_size_mul(n / QK, ft == TERN_FOREIGN_TQ1_0 ? TQ1_BYTES : TQ2_BYTES, &bytes);
	if (rc != TERN_OK)
		return tern_error(ctx, TERN_E_OVERFLOW, "%s: byte size overflows", foreign_name(ft));
	*out = bytes;
	return TERN_OK;
}

/* ---- TQ2_0: qs[64]; byte 32h + m holds weights 128h + m + 32p at bits 2p -- */

static int tq2_decode(tern_ctx *ctx, const uint8_t *blk, int8_t *w, int64_t row, int64_t b)
{
	for (int i = 0; i < 64; i++) {
		unsigned v = blk[i];
		for (int p = 0; p < 4; p++) {
			unsigned c = (v >> (2 * p)) & 3u;
			if (c == 3)
				return tern_error(ctx, TERN_E_FORMAT,
						  "TQ2_0: row %lld, block %lld, byte %d holds the invalid "
						  "code 3", (long long)row, (long long)b, i);
			w[i / 32 * 128 + i % 32 + 32 * p] = (int8_t)((int)c - 1);
		}
	}
	return TERN_OK;
}

static void tq2_encode(const int8_t *w, uint8_t *blk)
{
	for (int i = 0; i < 64; i++) {
		unsigned v = 0;
		for (int p = 0; p < 4; p++)
			v |= (unsigned)(w[i / 32 * 128 + i % 32 + 32 * p] + 1) << (2 * p);
		blk[i] = (uint8_t)v;
	}
}

/* ---- TQ1_0: qs[0..32) 5 trits (160 w), qs[32..48) 5 trits (80 w),
 *      qh[4] 4 trits (16 w); trit 0 is the most significant ------------- */

/* Byte index and trit position of weight j of a TQ1_0 block. */
static void tq1_where(int j, int *byte, int *trit)
{
	if (j < 160) {
		*byte = j % 32;
		*trit = j / 32;
	} else if (j < 240) {
		*byte = 32 + (j - 160) % 16;
		*trit = (j - 160) / 16;
	} else {
		*byte = 48 + (j - 240) % 4;
		*trit = (j - 240) / 4;
	}
}

static int tq1_decode(tern_ctx *ctx, const uint8_t *blk, int8_t *w, int64_t row, int64_t b)
{
	for (int i = 0; i < 52; i++) {
		uint8_t t[5];
		tern_t3_decode(blk[i], t);
		/* Only the canonical byte of each trit tuple re-encodes to
		 * itself; anything else would not survive a round trip. */
		if (tern_t3_encode(t) != blk[i] || (i >= 48 && t[4] != 0))
			return tern_error(ctx, TERN_E_FORMAT,
					  "TQ1_0: row %lld, block %lld, byte %d (0x%02x) is not a "
					  "valid base-3 code", (long long)row, (long long)b, i, blk[i]);
	}
	for (int j = 0; j < QK; j++) {
		int byte, trit;
		uint8_t t[5];
		tq1_where(j, &byte, &trit);
		tern_t3_decode(blk[byte], t);
		w[j] = (int8_t)(t[trit] - 1);
	}
	return TERN_OK;
}

static void tq1_encode(const int8_t *w, uint8_t *blk)
{
	uint8_t t[52][5];
	memset(t, 0, sizeof t); /* the unused fifth trit of qh bytes stays 0 */
	for (int j = 0; j < QK; j++) {
		int byte, trit;
		tq1_where(j, &byte, &trit);
		t[byte][trit] = (uint8_t)(w[j] + 1);
	}
	for (int i = 0; i < 52; i++)
		blk[i] = tern_t3_encode(t[i]);
}

/* ---- I2_S (x86): weight j of a 128-block at byte j % 32, bits 6 - 2(j/32) */

static int check_shape(tern_ctx *ctx, tern_foreign_type ft, int64_t rows, int64_t cols,
		       size_t have, size_t *need)
{
	int rc = tern_foreign_bytes(ctx, ft, rows, cols, need);
	if (rc != TERN_OK)
		return rc;
	if (have != *need)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: a %lld x %lld tensor takes %zu bytes, but %zu were given",
				  foreign_name(ft), (long long)rows, (long long)cols, *need, have);
	return TERN_OK;
}

int tern_foreign_import(tern_ctx *ctx, tern_foreign_type ft, const void *src, size_t src_bytes,
			int64_t rows, int64_t cols, tern_dtype dtype, tern_tensor **out)
{
	if (!out)
		return tern_error(ctx, TERN_E_INVALID, "foreign import: NULL out");
	*out = NULL;
	size_t need;
	int rc = check_shape(ctx, ft, rows, cols, src_bytes, &need);
	if (rc != TERN_OK)
		return rc;
	if (!src)
		return tern_error(ctx, TERN_E_INVALID, "%s import: NULL source", foreign_name(ft));
	if (dtype != TERN_DTYPE_T2 && dtype != TERN_DTYPE_T3)
		return tern_error(ctx, TERN_E_INVALID, "%s import: target dtype must be t2 or t3, not %s",
				  foreign_name(ft), tern_dtype_name(dtype));

	tern_qparams qp;
	memset(&qp, 0, sizeof qp);
	if (ft == TERN_FOREIGN_I2_S) {
		qp.kind = TERN_SCALE_TENSOR;
		qp.scale_type = TERN_DTYPE_F32;
	} else {
		qp.kind = TERN_SCALE_BLOCK;
		qp.block = QK;
		qp.scale_type = TERN_DTYPE_F16;
	}
	int64_t shape[2] = { rows, cols };
	tern_tensor *t;
	rc = tern_tensor_new(ctx, dtype, &qp, 2, shape, &t);
	if (rc != TERN_OK)
		return rc;
	int8_t *w = tern_alloc((size_t)cols);
	if (!w) {
		tern_tensor_free(t);
		return tern_error(ctx, TERN_E_NOMEM, "%s import: cannot allocate a row",
				  foreign_name(ft));
	}
	const tern_type_traits *tr = tern_type_traits_of(dtype);
	const uint8_t *s = src;
	size_t rb = tern_row_bytes(dtype, cols);
	uint8_t *scales = (uint8_t *)tern_tensor_scales(t);
	int64_t nb = cols / QK;
	/* Blocks per padded tern row: a T3 row may carry one more (all padding,
	 * scale left at 0) than the foreign row has. */
	int64_t tern_nb = (tern_row_padded(dtype, cols) + QK - 1) / QK;

	for (int64_t r = 0; r < rows && rc == TERN_OK; r++) {
		if (ft == TERN_FOREIGN_I2_S) {
			for (int64_t c = 0; c < cols; c++) {
				size_t i = (size_t)r * (size_t)cols + (size_t)c;
				size_t k = i / I2S_BLOCK, j = i % I2S_BLOCK;
				unsigned code = (s[k * 32 + j % 32] >> (6 - 2 * (j / 32))) & 3u;
				if (code == 3) {
					rc = tern_error(ctx, TERN_E_FORMAT,
							"I2_S: weight %lld of row %lld has the invalid code 3",
							(long long)c, (long long)r);
					break;
				}
				w[c] = (int8_t)((int)code - 1);
			}
		} else {
			size_t bb = ft == TERN_FOREIGN_TQ1_0 ? TQ1_BYTES : TQ2_BYTES;
			for (int64_t b = 0; b < nb && rc == TERN_OK; b++) {
				const uint8_t *blk = s + ((size_t)r * (size_t)nb + (size_t)b) * bb;
				rc = ft == TERN_FOREIGN_TQ1_0 ? tq1_decode(ctx, blk, w + b * QK, r, b)
							      : tq2_decode(ctx, blk, w + b * QK, r, b);
				/* The f16 scale is copied bit for bit. */
				memcpy(scales + 2 * ((size_t)r * (size_t)tern_nb + (size_t)b),
				       blk + bb - 2, 2);
			}
		}
		if (rc == TERN_OK)
			tr->row_from_i8(w, (uint8_t *)t->data + (size_t)r * rb, cols);
	}
	if (rc == TERN_OK && ft == TERN_FOREIGN_I2_S)
		memcpy(scales, s + need - I2S_TAIL, 4);
	tern_free(w);
	if (rc != TERN_OK) {
		tern_tensor_free(t);
		return rc;
	}
	*out = t;
	return TERN_OK;
}

/* The f16 bits of the scale over weights [c0, c0 + n) of a row, if one
 * f16 value covers them all exactly. */
static int uniform_scale(const tern_tensor *t, int64_t row, int64_t c0, int64_t n, float *out)
{
	/* Scales change at most at block boundaries (128 or 256). */
	float s = tern_tensor_scale_at(t, row, c0);
	for (int64_t c = c0 + 128; c < c0 + n; c += 128) {
		float s2 = tern_tensor_scale_at(t, row, c);
		if (memcmp(&s, &s2, sizeof s) != 0)
			return 0;
	}
	*out = s;
	return 1;
}

static int f16_exact(float s, uint16_t *h)
{
	*h = tern_f32_to_f16(s);
	float back = tern_f16_to_f32(*h);
	return memcmp(&back, &s, sizeof s) == 0;
}

int tern_foreign_export(tern_ctx *ctx, tern_foreign_type ft, const tern_tensor *src, void *dst,
			size_t dst_bytes)
{
	if (!src || !src->data || !dst)
		return tern_error(ctx, TERN_E_INVALID, "%s export: NULL tensor, data or destination",
				  foreign_name(ft));
	if (src->dtype != TERN_DTYPE_T2 && src->dtype != TERN_DTYPE_T3)
		return tern_error(ctx, TERN_E_INVALID, "%s export: source dtype must be t2 or t3, not %s",
				  foreign_name(ft), tern_dtype_name(src->dtype));
	size_t have;
	int rc = tern_tensor_bytes(ctx, src, &have);
	if (rc != TERN_OK)
		return rc;
	if (src->nbytes < have)
		return tern_error(ctx, TERN_E_INVALID, "%s export: tensor holds %zu bytes, needs %zu",
				  foreign_name(ft), src->nbytes, have);
	int64_t rows = tern_tensor_rows(src), cols = tern_tensor_cols(src);
	size_t need;
	rc = check_shape(ctx, ft, rows, cols, dst_bytes, &need);
	if (rc != TERN_OK)
		return rc;

	const tern_type_traits *tr = tern_type_traits_of(src->dtype);
	size_t rb = tern_row_bytes(src->dtype, cols);
	uint8_t *d = dst;
	float s0 = tern_tensor_scale_at(src, 0, 0);
	if (ft == TERN_FOREIGN_I2_S) {
		/* One f32 scale for the whole tensor. */
		for (int64_t r = 0; r < rows; r++) {
			float s;
			if (!uniform_scale(src, r, 0, cols, &s) || memcmp(&s, &s0, sizeof s) != 0)
				return tern_error(ctx, TERN_E_UNSUPPORTED,
						  "I2_S export: the tensor's scales differ (row %lld); "
						  "I2_S has one scale per tensor", (long long)r);
		}
	}
	for (int64_t r = 0; r < rows; r++) {
		const uint8_t *row = (const uint8_t *)src->data + (size_t)r * rb;
		if (src->dtype == TERN_DTYPE_T2 && !tern_t2_row_valid(row, cols))
			return tern_error(ctx, TERN_E_FORMAT, "%s export: row %lld holds the invalid code 3",
					  foreign_name(ft), (long long)r);
		if (ft == TERN_FOREIGN_I2_S)
			continue;
		for (int64_t b = 0; b < cols / QK; b++) {
			float s;
			uint16_t h;
			if (!uniform_scale(src, r, b * QK, QK, &s))
				return tern_error(ctx, TERN_E_UNSUPPORTED,
						  "%s export: scales change inside block %lld of row %lld",
						  foreign_name(ft), (long long)b, (long long)r);
			if (!f16_exact(s, &h))
				return tern_error(ctx, TERN_E_UNSUPPORTED,
						  "%s export: scale %g (row %lld, block %lld) is not "
						  "exactly representable in f16", foreign_name(ft), s,
						  (long long)r, (long long)b);
		}
	}

	int8_t *w = tern_alloc((size_t)cols);
	if (!w)
		return tern_error(ctx, TERN_E_NOMEM, "%s export: cannot allocate a row",
				  foreign_name(ft));
	if (ft == TERN_FOREIGN_I2_S)
		memset(d, 0, need);
	for (int64_t r = 0; r < rows; r++) {
		tr->row_to_i8((const uint8_t *)src->data + (size_t)r * rb, w, cols);
		if (ft == TERN_FOREIGN_I2_S) {
			for (int64_t c = 0; c < cols; c++) {
				size_t i = (size_t)r * (size_t)cols + (size_t)c;
				size_t k = i / I2S_BLOCK, j = i % I2S_BLOCK;
				d[k * 32 + j % 32] |= (uint8_t)((unsigned)(w[c] + 1) << (6 - 2 * (j / 32)));
			}
			continue;
		}
		size_t bb = ft == TERN_FOREIGN_TQ1_0 ? TQ1_BYTES : TQ2_BYTES;
		for (int64_t b = 0; b < cols / QK; b++) {
			uint8_t *blk = d + ((size_t)r * (size_t)(cols / QK) + (size_t)b) * bb;
			if (ft == TERN_FOREIGN_TQ1_0)
				tq1_encode(w + b * QK, blk);
			else
				tq2_encode(w + b * QK, blk);
			float s = 0.0f;
			uint16_t h = 0;
			uniform_scale(src, r, b * QK, QK, &s);
			f16_exact(s, &h);
			memcpy(blk + bb - 2, &h, 2);
		}
	}
	if (ft == TERN_FOREIGN_I2_S)
		memcpy(d + need - I2S_TAIL, &s0, 4);
	tern_free(w);
	return TERN_OK;
}
