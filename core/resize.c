/*
 * resize.c: the float side of image preprocessing: bilinear and bicubic
 * resizing of planar channels with PyTorch's interpolate() semantics
 * (align_corners=False, no antialias), RGB to planar float conversion and
 * per-channel normalization.
 *
 * Resizing is separable: for each output row the (2 or 4) source rows are
 * blended into one row buffer, which is then sampled at the output
 * columns. Tap indices and weights for both axes are computed once.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "tern/image.h"

/* PyTorch's bicubic constant (PIL uses -0.5). */
#define CUBIC_A (-0.75)

/* Up to 4 clamped source taps and their weights for one output index. */
typedef struct {
	int64_t idx[4];
	float wt[4];
} taps;

/* Source coordinate of output index i: pixel centres line up, so output
 * i covers source [(i) * in/out, (i + 1) * in/out). */
static double source_coord(int64_t i, int64_t in, int64_t out)
{
	return ((double)i + 0.5) * ((double)in / (double)out) - 0.5;
}

static int64_t clamp_index(int64_t i, int64_t n)
{
	return i < 0 ? 0 : (i >= n ? n - 1 : i);
}

static void linear_taps(taps *t, int64_t out, int64_t in)
{
	for (int64_t i = 0; i < out; i++) {
		double s = source_coord(i, in, out);
		if (s < 0) /* PyTorch clamps linear modes at the left edge */
			s = 0;
		int64_t i0 = (int64_t)s;
		if (i0 > in - 1)
			i0 = in - 1;
		double l = s - (double)i0;
		t[i].idx[0] = i0;
		t[i].idx[1] = clamp_index(i0 + 1, in);
		t[i].wt[0] = (float)(1.0 - l);
		t[i].wt[1] = (float)l;
	}
}

/* Keys' cubic convolution kernel for |x| <= 1 and 1 < |x| < 2. */
static double cubic_near(double x)
{
	return ((CUBIC_A + 2) * x - (CUBIC_A + 3)) * x * x + 1;
}

static double cubic_far(double x)
{
	return ((CUBIC_A * x - 5 * CUBIC_A) * x + 8 * CUBIC_A) * x - 4 * CUBIC_A;
}

static void cubic_taps(taps *t, int64_t out, int64_t in)
{
	for (int64_t i = 0; i < out; i++) {
		double s = source_coord(i, in, out);
		double f = floor(s); /* s may be negative near the left edge */
		int64_t base = (int64_t)f;
		double d = s - f;
		t[i].wt[0] = (float)cubic_far(d + 1);
		t[i].wt[1] = (float)cubic_near(d);
		t[i].wt[2] = (float)cubic_near(1 - d);
		t[i].wt[3] = (float)cubic_far(2 - d);
		for (int k = 0; k < 4; k++)
			t[i].idx[k] = clamp_index(base - 1 + k, in);
	}
}

int tern_resize(const float *src, int64_t C, int64_t sh, int64_t sw, float *dst, int64_t dh,
		int64_t dw, tern_resize_mode mode)
{
	if (!src || !dst || C <= 0 || sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0)
		return TERN_E_INVALID;
	if (mode != TERN_RESIZE_BILINEAR && mode != TERN_RESIZE_BICUBIC)
		return TERN_E_INVALID;
	size_t splane, dplane, bytes;
	if (tern_size_mul((size_t)sh, (size_t)sw, &splane) ||
	    tern_size_mul((size_t)dh, (size_t)dw, &dplane) ||
	    tern_size_mul(splane, (size_t)C, &bytes) || tern_size_mul(bytes, sizeof(float), &bytes) ||
	    tern_size_mul(dplane, (size_t)C, &bytes) || tern_size_mul(bytes, sizeof(float), &bytes))
		return TERN_E_OVERFLOW;
	if (sh == dh && sw == dw) {
		/* Both modes reproduce the input exactly here; skip the arithmetic. */
		memmove(dst, src, (size_t)C * splane * sizeof(float));
		return TERN_OK;
	}

	size_t ntaps, tbytes, rbytes;
	if (tern_size_add((size_t)dh, (size_t)dw, &ntaps) ||
	    tern_size_mul(ntaps, sizeof(taps), &tbytes) ||
	    tern_size_mul((size_t)sw, sizeof(float), &rbytes) ||
	    tern_size_add(tbytes, rbytes, &bytes))
		return TERN_E_OVERFLOW;
	taps *ty = malloc(bytes);
	if (!ty)
		return TERN_E_NOMEM;
	taps *tx = ty + dh;
	float *row = (float *)(tx + dw); /* [sw]: source rows blended for one output row */
	const int nt = mode == TERN_RESIZE_BICUBIC ? 4 : 2;
	if (mode == TERN_RESIZE_BICUBIC) {
		cubic_taps(ty, dh, sh);
		cubic_taps(tx, dw, sw);
	} else {
		linear_taps(ty, dh, sh);
		linear_taps(tx, dw, sw);
	}

	for (int64_t c = 0; c < C; c++) {
		const float *sp = src + (size_t)c * splane; /* [sh][sw] */
		float *dp = dst + (size_t)c * dplane;       /* [dh][dw] */
		for (int64_t y = 0; y < dh; y++) {
			const taps *t = &ty[y];
			const float *r0 = sp + (size_t)t->idx[0] * (size_t)sw;
			for (int64_t x = 0; x < sw; x++)
				row[x] = t->wt[0] * r0[x];
			for (int k = 1; k < nt; k++) {
				const float *rk = sp + (size_t)t->idx[k] * (size_t)sw;
				const float wk = t->wt[k];
				for (int64_t x = 0; x < sw; x++)
					row[x] += wk * rk[x];
			}
			float *o = dp + (size_t)y * (size_t)dw;
			for (int64_t x = 0; x < dw; x++) {
				const taps *u = &tx[x];
				float acc = u->wt[0] * row[u->idx[0]];
				for (int k = 1; k < nt; k++)
					acc += u->wt[k] * row[u->idx[k]];
				o[x] = acc;
			}
		}
	}
	free(ty);
	return TERN_OK;
}

int tern_image_to_planar(const tern_image *img, int grey, const float *mean, const float *std,
			 float *out)
{
	if (!img || !img->data || !out || img->w <= 0 || img->h <= 0)
		return TERN_E_INVALID;
	const int nc = grey ? 1 : 3;
	for (int c = 0; c < nc; c++)
		if (std && std[c] == 0.0f)
			return TERN_E_INVALID;
	const size_t hw = (size_t)img->w * (size_t)img->h;
	const uint8_t *px = img->data; /* [h][w][3] */
	if (grey) {
		const float m = mean ? mean[0] : 0.0f, s = std ? std[0] : 1.0f;
		for (size_t i = 0; i < hw; i++) {
			float y = 0.299f * px[3 * i] + 0.587f * px[3 * i + 1] +
				  0.114f * px[3 * i + 2];
			out[i] = (y / 255.0f - m) / s;
		}
		return TERN_OK;
	}
	/* Only 256 inputs per channel: tabulate the exact formula once. */
	float lut[3][256];
	for (int c = 0; c < 3; c++) {
		const float m = mean ? mean[c] : 0.0f, s = std ? std[c] : 1.0f;
		for (int v = 0; v < 256; v++)
			lut[c][v] = ((float)v / 255.0f - m) / s;
	}
	for (int c = 0; c < 3; c++) {
		float *o = out + (size_t)c * hw; /* [h][w] */
		for (size_t i = 0; i < hw; i++)
			o[i] = lut[c][px[3 * i + (size_t)c]];
	}
	return TERN_OK;
}

void tern_normalize_channels(float *x, int64_t C, int64_t hw, const float *mean,
			     const float *std)
{
	if (!x || C <= 0 || hw <= 0)
		return;
	for (int64_t c = 0; c < C; c++) {
		const float m = mean ? mean[c] : 0.0f, s = std ? std[c] : 1.0f;
		float *p = x + (size_t)c * (size_t)hw; /* [hw] */
		for (int64_t i = 0; i < hw; i++)
			p[i] = (p[i] - m) / s;
	}
}
