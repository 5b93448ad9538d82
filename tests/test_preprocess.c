/*
 * test_preprocess.c: plugins/vision/preprocess.c (compiled in) against
 * independent computations written here: bilinear and bicubic resizing
 * with PyTorch's interpolate semantics (align_corners=False, no
 * antialias, bicubic a = -0.75 with clamped taps), torchvision's center
 * crop offset, grey luma, scale, mean and std; the "preprocess" header's
 * validation; and clear errors for corrupt or truncated image files.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugins/vision/vit.h"
#include "tern/file.h"
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

TestSuite(preprocess, .init = setup, .fini = teardown);

static tern_image *rand_image(int w, int h, unsigned seed, bool grey)
{
	tern_image *img;
	cr_assert_eq(tern_image_new(ctx, w, h, &img), TERN_OK);
	tu_rng r = tu_rng_new(seed);
	for (int i = 0; i < w * h; i++)
		for (int c = 0; c < 3; c++)
			img->data[3 * i + c] = grey && c ? img->data[3 * i] : (uint8_t)tu_int(&r, 0, 255);
	return img;
}

/* The source coordinate and taps of PyTorch's align_corners=False. */
static double src_coord(int dst, int in, int out)
{
	return (dst + 0.5) * ((double)in / out) - 0.5;
}

static double cubic(double x)
{
	const double a = -0.75;
	x = fabs(x);
	if (x <= 1)
		return ((a + 2) * x - (a + 3)) * x * x + 1;
	if (x < 2)
		return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
	return 0;
}

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* One channel plane [h][w] of pixel values resized to [oh][ow]. */
static void ref_resize(const double *src, int w, int h, double *dst, int ow, int oh, bool bicubic)
{
	for (int y = 0; y < oh; y++)
		for (int x = 0; x < ow; x++) {
			double sy = src_coord(y, h, oh), sx = src_coord(x, w, ow), v = 0;
			if (!bicubic) {
				sy = sy < 0 ? 0 : sy;
				sx = sx < 0 ? 0 : sx;
				int y0 = (int)sy, x0 = (int)sx;
				int y1 = y0 + 1 < h ? y0 + 1 : h - 1, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
				double ly = sy - y0, lx = sx - x0;
				v = (1 - ly) * ((1 - lx) * src[y0 * w + x0] + lx * src[y0 * w + x1]) +
				    ly * ((1 - lx) * src[y1 * w + x0] + lx * src[y1 * w + x1]);
			} else {
				int fy = (int)floor(sy), fx = (int)floor(sx);
				double ty = sy - fy, tx = sx - fx;
				for (int i = -1; i <= 2; i++)
					for (int j = -1; j <= 2; j++)
						v += cubic(i - ty) * cubic(j - tx) *
						     src[clampi(fy + i, 0, h - 1) * w + clampi(fx + j, 0, w - 1)];
			}
			dst[y * ow + x] = v;
		}
}

/* The whole pipeline, plainly, into out [C][crop][crop]. */
static void ref_preprocess(const tern_image *img, const vit_preprocess *pp, int C, double *out)
{
	const int W = img->w, H = img->h, R = (int)pp->resize_size, S = (int)pp->crop_size;
	double *plane = malloc((size_t)W * H * sizeof *plane), *sized = malloc((size_t)R * R * sizeof *sized);
	/* torchvision: int(round((R - S) / 2.0)), Python rounding half to even */
	const int off = (int)nearbyint((R - S) / 2.0);
	for (int c = 0; c < C; c++) {
		for (int i = 0; i < W * H; i++) {
			const uint8_t *p = img->data + 3 * i;
			plane[i] = C == 3 ? p[c] : 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
		}
		if (W == R && H == R)
			memcpy(sized, plane, (size_t)R * R * sizeof *sized);
		else
			ref_resize(plane, W, H, sized, R, R, pp->resize == TERN_RESIZE_BICUBIC);
		for (int y = 0; y < S; y++)
			for (int x = 0; x < S; x++)
				out[(c * S + y) * S + x] =
					(sized[(y + off) * R + x + off] * pp->scale - pp->mean[c]) / pp->std[c];
	}
	free(plane);
	free(sized);
}

static void check_pipeline(int w, int h, int C, int resize, int R, int S, unsigned seed)
{
	vit_preprocess pp = { .grayscale = C == 1, .resize = resize, .resize_size = R,
			      .crop_size = S, .scale = 1.0f / 255.0f,
			      .mean = { 0.485f, 0.456f, 0.406f }, .std = { 0.229f, 0.224f, 0.225f } };
	tern_image *img = rand_image(w, h, seed, false);
	float *got = malloc((size_t)C * S * S * sizeof *got);
	double *want = malloc((size_t)C * S * S * sizeof *want);
	cr_assert_eq(vit_preprocess_image(ctx, &pp, C, img, got), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	ref_preprocess(img, &pp, C, want);
	/* float vs double interpolation of 0..255 values, then /0.22: a few
	 * float ulps of 255 scaled by 1/(255*0.22) */
	for (int i = 0; i < C * S * S; i++)
		cr_assert_leq(fabs(got[i] - want[i]), 2e-5 * fmax(1.0, fabs(want[i])),
			      "%dx%d -> %d crop %d (%s): value %d: got %.7g want %.7g", w, h, R, S,
			      resize == TERN_RESIZE_BICUBIC ? "bicubic" : "bilinear", i, got[i], want[i]);
	free(got);
	free(want);
	tern_image_free(img);
}

Test(preprocess, bilinear_downscale_and_center_crop_rgb)
{
	check_pipeline(37, 29, 3, TERN_RESIZE_BILINEAR, 20, 16, 1);
}

Test(preprocess, bilinear_upscale_grey_odd_margin)
{
	/* margin 3: torchvision's offset is round(1.5) = 2, not floor 1 */
	check_pipeline(9, 12, 1, TERN_RESIZE_BILINEAR, 17, 14, 2);
}

Test(preprocess, bicubic_rgb_upscale_and_downscale)
{
	check_pipeline(10, 14, 3, TERN_RESIZE_BICUBIC, 24, 24, 3);
	check_pipeline(50, 41, 3, TERN_RESIZE_BICUBIC, 16, 12, 4);
}

Test(preprocess, same_size_is_exact_and_grey_pixels_keep_their_value)
{
	/* no resize: (v * scale - mean) / std computed in float exactly as FORMAT.md says */
	vit_preprocess pp = { .grayscale = true, .resize = VIT_RESIZE_NONE, .resize_size = 6,
			      .crop_size = 4, .scale = 1.0f / 255.0f, .mean = { 0.5f }, .std = { 0.25f } };
	tern_image *img = rand_image(6, 6, 9, true);
	float got[16];
	cr_assert_eq(vit_preprocess_image(ctx, &pp, 1, img, got), TERN_OK);
	for (int y = 0; y < 4; y++)
		for (int x = 0; x < 4; x++) {
			float v = img->data[3 * ((y + 1) * 6 + x + 1)];
			cr_assert_eq(got[y * 4 + x], (v * pp.scale - 0.5f) / 0.25f, "(%d,%d)", x, y);
		}
	/* "resize": "none" refuses another size, naming both */
	tern_image *other = rand_image(7, 6, 1, true);
	cr_assert_eq(vit_preprocess_image(ctx, &pp, 1, other, got), TERN_E_INVALID);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "6x6") && strstr(tern_ctx_errmsg(ctx), "7x6"), "%s",
		  tern_ctx_errmsg(ctx));
	tern_image_free(other);
	tern_image_free(img);
}

Test(preprocess, colour_to_grey_is_luma)
{
	vit_preprocess pp = { .grayscale = true, .resize = VIT_RESIZE_NONE, .resize_size = 1,
			      .crop_size = 1, .scale = 1.0f, .mean = { 0 }, .std = { 1 } };
	tern_image *img;
	cr_assert_eq(tern_image_new(ctx, 1, 1, &img), TERN_OK);
	img->data[0] = 200, img->data[1] = 100, img->data[2] = 10;
	float got;
	cr_assert_eq(vit_preprocess_image(ctx, &pp, 1, img, &got), TERN_OK);
	cr_assert_float_eq(got, 0.299 * 200 + 0.587 * 100 + 0.114 * 10, 1e-4);
	tern_image_free(img);
}

/* ---- the header --------------------------------------------------------------- */

static int parse(const char *json, int channels, vit_preprocess *out)
{
	tern_meta *m;
	cr_assert_eq(tern_meta_from_json(ctx, json, strlen(json), &m), TERN_OK);
	vit_hparams hp = { .channels = channels, .image_size = 4 };
	int rc = vit_preprocess_parse(ctx, m, &hp, out);
	tern_meta_free(m);
	return rc;
}

Test(preprocess, header_parsed_and_checked)
{
	vit_preprocess pp;
	cr_assert_eq(parse("{\"grayscale\": false, \"resize\": \"bicubic\", \"resize_size\": 5, "
			   "\"crop_size\": 4, \"scale\": 0.5, \"mean\": [1, 2, 3], \"std\": [4, 5, 6]}",
			   3, &pp),
		     TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(pp.resize, TERN_RESIZE_BICUBIC);
	cr_assert_eq(pp.resize_size, 5);
	cr_assert_float_eq(pp.std[2], 6.0f, 0.0f);
	static const struct {
		const char *json, *needle;
	} bad[] = {
		{ "{\"grayscale\": false, \"resize\": \"area\", \"resize_size\": 4, \"crop_size\": 4, "
		  "\"scale\": 1, \"mean\": [0, 0, 0], \"std\": [1, 1, 1]}",
		  "preprocess.resize must be one of" },
		{ "{\"grayscale\": false, \"resize\": \"none\", \"resize_size\": 3, \"crop_size\": 4, "
		  "\"scale\": 1, \"mean\": [0, 0, 0], \"std\": [1, 1, 1]}",
		  "crop_size 4 exceeds resize_size 3" },
		{ "{\"grayscale\": false, \"resize\": \"none\", \"resize_size\": 4, \"crop_size\": 4, "
		  "\"scale\": 1, \"mean\": [0, 0], \"std\": [1, 1, 1]}",
		  "preprocess.mean must be an array of 3 numbers" },
		{ "{\"grayscale\": false, \"resize\": \"none\", \"resize_size\": 4, \"crop_size\": 4, "
		  "\"scale\": 1, \"mean\": [0, 0, 0], \"std\": [1, 0, 1]}",
		  "preprocess.std[1] must be a finite number > 0" },
		{ "{\"grayscale\": true, \"resize\": \"none\", \"resize_size\": 4, \"crop_size\": 4, "
		  "\"scale\": 1, \"mean\": [0, 0, 0], \"std\": [1, 1, 1]}",
		  "grayscale is true but hparams.channels is 3" },
		{ "{\"grayscale\": false, \"resize\": \"none\", \"resize_size\": 6, \"crop_size\": 5, "
		  "\"scale\": 1, \"mean\": [0, 0, 0], \"std\": [1, 1, 1]}",
		  "crop_size 5 differs from hparams.image_size 4" },
		{ "{\"grayscale\": false, \"resize\": \"none\", \"resize_size\": 4, \"crop_size\": 4, "
		  "\"mean\": [0, 0, 0], \"std\": [1, 1, 1]}",
		  "preprocess.scale is missing" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cr_assert_eq(parse(bad[i].json, 3, &pp), TERN_E_FORMAT, "case %zu", i);
		cr_assert(strstr(tern_ctx_errmsg(ctx), bad[i].needle), "case %zu: '%s' lacks '%s'", i,
			  tern_ctx_errmsg(ctx), bad[i].needle);
	}
}

/* ---- bad image files ------------------------------------------------------------ */

Test(preprocess, truncated_and_corrupt_png_give_format_errors)
{
	char path[256];
	snprintf(path, sizeof path, "/tmp/tern_test_pre_%d.png", (int)getpid());
	tern_image *img = rand_image(16, 16, 5, false), *back = NULL;
	cr_assert_eq(tern_image_save_png(ctx, img, path, NULL, NULL, 0), TERN_OK);
	FILE *f = fopen(path, "rb");
	unsigned char buf[4096];
	size_t n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	cr_assert_gt(n, 100);
	/* cut in half */
	f = fopen(path, "wb");
	fwrite(buf, 1, n / 2, f);
	fclose(f);
	cr_assert_eq(tern_image_load(ctx, path, &back), TERN_E_FORMAT);
	cr_assert_null(back);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "truncated"), "%s", tern_ctx_errmsg(ctx));
	/* garbage in the middle (compressed data or a chunk header) */
	memset(buf + n / 2, 0xA5, 32);
	f = fopen(path, "wb");
	fwrite(buf, 1, n, f);
	fclose(f);
	int rc = tern_image_load(ctx, path, &back);
	cr_assert_eq(rc, TERN_E_FORMAT, "rc %d: %s", rc, tern_ctx_errmsg(ctx));
	cr_assert_neq(tern_ctx_errmsg(ctx)[0], '\0');
	unlink(path);
	tern_image_free(img);
}
