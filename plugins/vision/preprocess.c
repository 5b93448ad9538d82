/*
 * preprocess.c: an image as a vit model wants it, per the file's
 * "preprocess" header (docs/FORMAT.md): planar floats of the raw pixel
 * values (0..255; grey is ITU-R 601 luma, exact for grey pixels), a resize
 * to resize_size square (PyTorch interpolate semantics), a center crop to
 * crop_size (torchvision's offset: round half to even of the margin / 2),
 * then x * scale, minus mean, over std per channel.
 */
#include <math.h>
#include <string.h>

#include "plugins/vision/vit.h"

#define SLOT_PRE 4

/* Raw pixel values of img as planar floats [channels][h][w]. */
static void to_planar_raw(const tern_image *img, int64_t channels, float *out)
{
	const size_t hw = (size_t)img->w * (size_t)img->h;
	const uint8_t *p = img->data;
	for (size_t i = 0; i < hw; i++, p += 3) {
		if (channels == 3) {
			out[i] = p[0];
			out[hw + i] = p[1];
			out[2 * hw + i] = p[2];
		} else if (p[0] == p[1] && p[1] == p[2]) {
			out[i] = p[0]; /* the weights sum to 1: a grey pixel is itself */
		} else {
			out[i] = 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
		}
	}
}

int vit_preprocess_image(tern_ctx *ctx, const vit_preprocess *pp, int64_t channels,
			 const tern_image *img, float *x)
{
	if (!img || !img->data || img->w < 1 || img->h < 1 || img->w > TERN_IMAGE_MAX_DIM ||
	    img->h > TERN_IMAGE_MAX_DIM)
		return tern_error(ctx, TERN_E_INVALID, "vit: empty or oversized image");
	const int64_t R = pp->resize_size, S = pp->crop_size;
	const bool same = img->w == R && img->h == R;
	if (pp->resize == VIT_RESIZE_NONE && !same)
		return tern_error(ctx, TERN_E_INVALID,
				  "vit: the model takes %lldx%lld images without resizing; this one "
				  "is %dx%d",
				  (long long)R, (long long)R, img->w, img->h);
	/* raw planar image, then (if needed) the resized one: both in slot 4 */
	size_t raw = (size_t)channels * (size_t)img->w * (size_t)img->h;
	size_t big = same ? 0 : (size_t)channels * (size_t)R * (size_t)R, total;
	if (tern_size_add(raw, big, &total) || tern_size_mul(total, sizeof(float), &total))
		return tern_error(ctx, TERN_E_OVERFLOW, "vit: image too large");
	float *buf = tern_ctx_scratch(ctx, SLOT_PRE, total);
	if (!buf)
		return TERN_E_NOMEM;
	to_planar_raw(img, channels, buf);
	const float *sized = buf;
	if (!same) {
		float *dst = buf + raw;
		int rc = tern_resize(buf, channels, img->h, img->w, dst, R, R,
				     (tern_resize_mode)pp->resize);
		if (rc)
			return tern_error(ctx, rc, "vit: resizing %dx%d to %lldx%lld failed", img->w,
					  img->h, (long long)R, (long long)R);
		sized = dst;
	}
	const int64_t off = (int64_t)nearbyint((double)(R - S) / 2.0);
	for (int64_t c = 0; c < channels; c++) {
		const float mean = pp->mean[c], std = pp->std[c];
		for (int64_t y = 0; y < S; y++) {
			const float *src = sized + (c * R + y + off) * R + off;
			float *dst = x + (c * S + y) * S;
			for (int64_t i = 0; i < S; i++)
				dst[i] = (src[i] * pp->scale - mean) / std;
		}
	}
	return TERN_OK;
}
