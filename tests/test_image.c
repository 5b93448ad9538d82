/*
 * test_image.c: image decoding, PNG writing, resizing and normalization.
 *
 * Decoding is checked on the fixtures of tests/data/images (their pixels
 * follow formulas repeated here from make_images.py), on every truncation
 * of each fixture, on seeded garbage and corrupted copies, and on headers
 * that claim absurd sizes. PNG writing is checked by decoding the result
 * and by reading its tEXt chunks back with libpng directly. Resizing is
 * compared with an independent double-precision version of PyTorch's
 * interpolate(align_corners=False, antialias=False), written here as a
 * direct 2-D sum of the kernel over the source pixels, and with values
 * worked out by hand; normalization with its formula.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tern/image.h"
#include "testutil.h"

#define U_F (1.0 / 16777216.0) /* float unit roundoff */

static tern_ctx *ctx;

static void setup(void)
{
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
}

static void teardown(void)
{
	tern_ctx_free(ctx);
}

TestSuite(image, .init = setup, .fini = teardown);

/* ---- helpers -------------------------------------------------------- */

static uint8_t *read_fixture(const char *name, size_t *len)
{
	char rel[256];
	snprintf(rel, sizeof rel, "tests/data/images/%s", name);
	const char *path = tu_srcpath(rel);
	FILE *f = fopen(path, "rb");
	cr_assert(f, "cannot open fixture %s: %s", path, strerror(errno));
	uint8_t *buf = malloc(1 << 16);
	cr_assert(buf);
	*len = fread(buf, 1, 1 << 16, f);
	fclose(f);
	cr_assert(*len > 0);
	return buf;
}

static const char *fixture_path(const char *name)
{
	char rel[256];
	snprintf(rel, sizeof rel, "tests/data/images/%s", name);
	return tu_srcpath(rel);
}

/* A scratch directory per test, removed with its contents at the end. */
static char tmpdir[64];

static void make_tmpdir(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/tern-img-XXXXXX");
	cr_assert(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
}

static int count_entries(const char *dir, const char *containing)
{
	DIR *d = opendir(dir);
	cr_assert(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && (!containing || strstr(e->d_name, containing)))
			n++;
	closedir(d);
	return n;
}

static void remove_tmpdir(void)
{
	DIR *d = opendir(tmpdir);
	if (!d)
		return;
	struct dirent *e;
	char p[512];
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
		if (remove(p) != 0)
			rmdir(p);
	}
	closedir(d);
	rmdir(tmpdir);
}

static uint32_t crc32_of(const uint8_t *p, size_t n)
{
	uint32_t c = 0xFFFFFFFFu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
	}
	return ~c;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* PNG signature + IHDR claiming w x h RGB + an empty IDAT + IEND. */
static size_t png_header_only(uint8_t *out, uint32_t w, uint32_t h)
{
	static const uint8_t sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };
	memcpy(out, sig, 8);
	uint8_t *c = out + 8;
	put_be32(c, 13);
	memcpy(c + 4, "IHDR", 4);
	put_be32(c + 8, w);
	put_be32(c + 12, h);
	c[16] = 8; /* bit depth */
	c[17] = 2; /* RGB */
	c[18] = c[19] = c[20] = 0;
	put_be32(c + 21, crc32_of(c + 4, 17));
	c += 25;
	put_be32(c, 0);
	memcpy(c + 4, "IDAT", 4);
	put_be32(c + 8, crc32_of(c + 4, 4));
	c += 12;
	put_be32(c, 0);
	memcpy(c + 4, "IEND", 4);
	put_be32(c + 8, crc32_of(c + 4, 4));
	c += 12;
	return (size_t)(c - out);
}

/* ---- fixtures: formulas from make_images.py -------------------------- */

static void bmp_pixel(int x, int y, uint8_t p[3])
{
	p[0] = (uint8_t)(40 * x + 10);
	p[1] = (uint8_t)(90 * y + 20);
	p[2] = (uint8_t)(200 - 30 * x - 40 * y);
}

static void jpeg_pixel(int x, int y, uint8_t p[3])
{
	static const uint8_t flat[3][3] = { { 200, 30, 40 }, { 20, 180, 60 }, { 30, 50, 210 } };
	int q = (x / 8) + 2 * (y / 8);
	if (q < 3) {
		memcpy(p, flat[q], 3);
		return;
	}
	p[0] = p[1] = p[2] = (uint8_t)(64 + 16 * (x - 8));
}

Test(image, decodes_bmp_exactly_including_row_padding)
{
	tern_image *img = NULL;
	cr_assert_eq(tern_image_load(ctx, fixture_path("rgb_5x3.bmp"), &img), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_eq(img->w, 5);
	cr_assert_eq(img->h, 3);
	for (int y = 0; y < 3; y++)
		for (int x = 0; x < 5; x++) {
			uint8_t want[3];
			bmp_pixel(x, y, want);
			cr_assert_arr_eq(img->data + 3 * (y * 5 + x), want, 3, "pixel (%d,%d)", x, y);
		}
	tern_image_free(img);
}

Test(image, decodes_grey_png_by_replicating_the_grey_level)
{
	tern_image *img = NULL;
	cr_assert_eq(tern_image_load(ctx, fixture_path("grey_4x3.png"), &img), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_eq(img->w, 4);
	cr_assert_eq(img->h, 3);
	for (int y = 0; y < 3; y++)
		for (int x = 0; x < 4; x++)
			for (int c = 0; c < 3; c++)
				cr_assert_eq(img->data[3 * (y * 4 + x) + c], 20 * x + 70 * y + 5,
					     "pixel (%d,%d) channel %d", x, y, c);
	tern_image_free(img);
}

Test(image, decodes_rgba_png_by_dropping_alpha_without_compositing)
{
	tern_image *img = NULL;
	cr_assert_eq(tern_image_load(ctx, fixture_path("rgba_4x3.png"), &img), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_eq(img->w, 4);
	cr_assert_eq(img->h, 3);
	for (int y = 0; y < 3; y++)
		for (int x = 0; x < 4; x++) {
			const uint8_t want[3] = { (uint8_t)(60 * x + 7), (uint8_t)(80 * y + 11),
						  (uint8_t)(255 - 50 * x - 30 * y) };
			cr_assert_arr_eq(img->data + 3 * (y * 4 + x), want, 3, "pixel (%d,%d)", x, y);
		}
	tern_image_free(img);
}

/* The fixture is a baseline JPEG with unit quantization tables, so its only
 * losses are the encoder's rounding of YCbCr (+-0.5 per component, up to
 * about 1.3 in RGB after the inverse transform), the rounding of the DCT
 * coefficients (+-0.5 each, at most 0.5 per pixel after the orthonormal
 * inverse), and stb's fixed-point IDCT and colour conversion (+-1 each).
 * 4 levels bounds their sum; the flat quadrants come out much closer. */
Test(image, decodes_jpeg_within_its_rounding_errors)
{
	size_t len;
	uint8_t *buf = read_fixture("blocks_16x16.jpg", &len);
	tern_image *img = NULL;
	cr_assert_eq(tern_image_decode(ctx, buf, len, &img), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(img->w, 16);
	cr_assert_eq(img->h, 16);
	int worst = 0;
	for (int y = 0; y < 16; y++)
		for (int x = 0; x < 16; x++) {
			uint8_t want[3];
			jpeg_pixel(x, y, want);
			for (int c = 0; c < 3; c++) {
				int d = abs((int)img->data[3 * (y * 16 + x) + c] - want[c]);
				worst = d > worst ? d : worst;
				cr_assert(d <= 4, "pixel (%d,%d) channel %d: got %d, want %d", x, y, c,
					  img->data[3 * (y * 16 + x) + c], want[c]);
			}
		}
	cr_log_info("JPEG fixture: worst channel error %d levels", worst);
	tern_image_free(img);
	free(buf);
}

/* ---- damaged input ---------------------------------------------------- */

static void expect_format_error_on_every_truncation(const char *name)
{
	size_t len;
	uint8_t *buf = read_fixture(name, &len);
	tern_image *img = NULL;
	cr_assert_eq(tern_image_decode(ctx, buf, len, &img), TERN_OK, "%s whole: %s", name,
		     tern_ctx_errmsg(ctx));
	tern_image_free(img);
	for (size_t n = 0; n < len; n++) {
		/* A copy of exactly n bytes, so ASan sees any read past its end. */
		uint8_t *cut = malloc(n ? n : 1);
		cr_assert(cut);
		memcpy(cut, buf, n);
		img = (tern_image *)&img; /* must be reset to NULL on failure */
		int rc = tern_image_decode(ctx, cut, n, &img);
		cr_assert_eq(rc, TERN_E_FORMAT, "%s cut to %zu of %zu bytes: got %d (%s)", name, n,
			     len, rc, tern_ctx_errmsg(ctx));
		cr_assert_null(img);
		cr_assert(strlen(tern_ctx_errmsg(ctx)) > 0);
		free(cut);
	}
	free(buf);
}

Test(image, every_truncated_png_is_a_format_error)
{
	expect_format_error_on_every_truncation("grey_4x3.png");
	expect_format_error_on_every_truncation("rgba_4x3.png");
}

Test(image, every_truncated_jpeg_is_a_format_error)
{
	expect_format_error_on_every_truncation("blocks_16x16.jpg");
}

Test(image, every_truncated_bmp_is_a_format_error)
{
	expect_format_error_on_every_truncation("rgb_5x3.bmp");
}

Test(image, truncation_messages_name_the_format)
{
	size_t len;
	uint8_t *buf = read_fixture("blocks_16x16.jpg", &len);
	tern_image *img = NULL;
	cr_assert_eq(tern_image_decode(ctx, buf, len - 40, &img), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "truncated JPEG"), "%s", tern_ctx_errmsg(ctx));
	free(buf);
	buf = read_fixture("grey_4x3.png", &len);
	cr_assert_eq(tern_image_decode(ctx, buf, len - 3, &img), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "truncated PNG"), "%s", tern_ctx_errmsg(ctx));
	free(buf);
}

Test(image, empty_and_null_input_are_rejected)
{
	tern_image *img = NULL;
	uint8_t b = 0;
	cr_assert_eq(tern_image_decode(ctx, &b, 0, &img), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "empty"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_image_decode(ctx, NULL, 0, &img), TERN_E_FORMAT);
	cr_assert_eq(tern_image_decode(ctx, NULL, 10, &img), TERN_E_INVALID);
	cr_assert_eq(tern_image_decode(ctx, &b, 1, NULL), TERN_E_INVALID);
	cr_assert_eq(tern_image_decode(NULL, &b, 1, &img), TERN_E_FORMAT);
	cr_assert_null(img);
}

/* Random bytes starting with anything but a known magic are rejected;
 * the first byte is kept off the magics (and TGA's plausible headers,
 * which have no magic) so the expected code is certain. */
Test(image, seeded_garbage_is_a_format_error)
{
	tu_rng r = tu_rng_new(7);
	uint8_t buf[512];
	for (int t = 0; t < 1000; t++) {
		size_t n = (size_t)tu_int(&r, 1, sizeof buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)tu_next(&r);
		buf[0] = (uint8_t)('a' + t % 20); /* no format starts with a-t */
		if (n > 2)
			buf[2] = 0x7F; /* TGA image type 127 does not exist */
		tern_image *img = NULL;
		int rc = tern_image_decode(ctx, buf, n, &img);
		cr_assert_eq(rc, TERN_E_FORMAT, "garbage #%d (%zu bytes): got %d", t, n, rc);
		cr_assert_null(img);
	}
	cr_assert(strstr(tern_ctx_errmsg(ctx), "not a recognised image"), "%s",
		  tern_ctx_errmsg(ctx));
}

/* Corrupting bytes of valid files must never crash or read out of bounds
 * (ASan watches); the result is an image or a format error, nothing else. */
Test(image, corrupted_fixtures_decode_or_fail_cleanly)
{
	static const char *const names[] = { "grey_4x3.png", "rgba_4x3.png", "blocks_16x16.jpg",
					      "rgb_5x3.bmp" };
	tu_rng r = tu_rng_new(11);
	int failures = 0, successes = 0;
	for (int f = 0; f < 4; f++) {
		size_t len;
		uint8_t *orig = read_fixture(names[f], &len);
		uint8_t *buf = malloc(len);
		cr_assert(buf);
		for (int t = 0; t < 400; t++) {
			memcpy(buf, orig, len);
			int flips = (int)tu_int(&r, 1, 4);
			for (int k = 0; k < flips; k++)
				buf[tu_int(&r, 0, (int64_t)len - 1)] ^= (uint8_t)tu_int(&r, 1, 255);
			tern_image *img = NULL;
			int rc = tern_image_decode(ctx, buf, len, &img);
			cr_assert(rc == TERN_OK || rc == TERN_E_FORMAT || rc == TERN_E_OVERFLOW,
				  "%s damaged #%d: got %d (%s)", names[f], t, rc,
				  tern_ctx_errmsg(ctx));
			if (rc == TERN_OK) {
				cr_assert(img && img->w > 0 && img->h > 0 &&
					  img->w <= TERN_IMAGE_MAX_DIM && img->h <= TERN_IMAGE_MAX_DIM);
				successes++;
			} else {
				cr_assert_null(img);
				failures++;
			}
			tern_image_free(img);
		}
		free(buf);
		free(orig);
	}
	cr_log_info("corrupted fixtures: %d decoded, %d rejected", successes, failures);
}

Test(image, png_header_claiming_100000_squared_is_an_overflow_error)
{
	uint8_t buf[128];
	size_t n = png_header_only(buf, 100000, 100000);
	tern_image *img = NULL;
	cr_assert_eq(tern_image_decode(ctx, buf, n, &img), TERN_E_OVERFLOW, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_null(img);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "100000x100000"), "%s", tern_ctx_errmsg(ctx));
	/* Just past the limit on one side only. */
	n = png_header_only(buf, TERN_IMAGE_MAX_DIM + 1, 1);
	cr_assert_eq(tern_image_decode(ctx, buf, n, &img), TERN_E_OVERFLOW, "%s",
		     tern_ctx_errmsg(ctx));
	/* Zero width is not an overflow but a corrupt header. */
	n = png_header_only(buf, 0, 5);
	cr_assert_eq(tern_image_decode(ctx, buf, n, &img), TERN_E_FORMAT, "%s",
		     tern_ctx_errmsg(ctx));
}

Test(image, bmp_header_claiming_huge_width_is_an_overflow_error)
{
	size_t len;
	uint8_t *buf = read_fixture("rgb_5x3.bmp", &len);
	const uint32_t w = 100000;
	buf[18] = (uint8_t)w;
	buf[19] = (uint8_t)(w >> 8);
	buf[20] = (uint8_t)(w >> 16);
	buf[21] = (uint8_t)(w >> 24);
	tern_image *img = NULL;
	cr_assert_eq(tern_image_decode(ctx, buf, len, &img), TERN_E_OVERFLOW, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_null(img);
	free(buf);
}

Test(image, jpeg_frame_header_claiming_40000_squared_is_an_overflow_error)
{
	size_t len;
	uint8_t *buf = read_fixture("blocks_16x16.jpg", &len);
	size_t sof = 0;
	for (size_t i = 2; i + 1 < len && !sof; i++)
		if (buf[i] == 0xFF && buf[i + 1] == 0xC0)
			sof = i;
	cr_assert(sof, "no SOF0 marker in the fixture");
	/* FF C0, length (2), precision (1), height (2), width (2) */
	buf[sof + 5] = buf[sof + 7] = 40000 >> 8;
	buf[sof + 6] = buf[sof + 8] = 40000 & 0xFF;
	tern_image *img = NULL;
	cr_assert_eq(tern_image_decode(ctx, buf, len, &img), TERN_E_OVERFLOW, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert(strstr(tern_ctx_errmsg(ctx), "40000x40000"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_null(img);
	free(buf);
}

/* The Debian stb decodes 16-bit PNM in the wrong byte order (and, asked
 * for RGB from 16-bit grey, overruns its buffer): tern refuses it. */
Test(image, sixteen_bit_pnm_is_unsupported_not_misread)
{
	static const uint8_t pgm[] = "P5\n2 1\n65535\n\x12\x34\xAB\xCD";
	tern_image *img = NULL;
	cr_assert_eq(tern_image_decode(ctx, pgm, sizeof pgm - 1, &img), TERN_E_UNSUPPORTED, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_null(img);
	static const uint8_t pgm8[] = "P5\n2 1\n255\n\x12\xAB";
	cr_assert_eq(tern_image_decode(ctx, pgm8, sizeof pgm8 - 1, &img), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	const uint8_t want[6] = { 0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB };
	cr_assert_arr_eq(img->data, want, 6);
	tern_image_free(img);
}

Test(image, load_reports_missing_files_and_directories_as_io_errors)
{
	tern_image *img = NULL;
	cr_assert_eq(tern_image_load(ctx, "/nonexistent/tern/x.png", &img), TERN_E_IO);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "/nonexistent/tern/x.png"), "%s",
		  tern_ctx_errmsg(ctx));
	cr_assert(strstr(tern_ctx_errmsg(ctx), "No such file"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_image_load(ctx, "/tmp", &img), TERN_E_IO);
	cr_assert_eq(tern_image_load(ctx, NULL, &img), TERN_E_INVALID);
	cr_assert_null(img);
}

Test(image, load_prefixes_decoder_errors_with_the_path)
{
	make_tmpdir();
	char path[256];
	snprintf(path, sizeof path, "%s/bad.png", tmpdir);
	FILE *f = fopen(path, "wb");
	cr_assert(f);
	fputs("\x89PNG\r\n\x1a\n garbage", f);
	fclose(f);
	tern_image *img = NULL;
	int rc = tern_image_load(ctx, path, &img);
	cr_assert_eq(rc, TERN_E_FORMAT, "%s", tern_ctx_errmsg(ctx));
	cr_assert(strstr(tern_ctx_errmsg(ctx), path) == tern_ctx_errmsg(ctx), "%s",
		  tern_ctx_errmsg(ctx));
	cr_assert(strstr(tern_ctx_errmsg(ctx), "PNG"), "%s", tern_ctx_errmsg(ctx));
	remove_tmpdir();
}

/* ---- PNG writing -------------------------------------------------------- */

/* Reads the tEXt chunks of a PNG with libpng, independently of tern. */
static int read_png_text(const char *path, char keys[][80], char values[][256], int max)
{
	FILE *f = fopen(path, "rb");
	cr_assert(f);
	png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
	png_infop info = png_create_info_struct(png);
	cr_assert(png && info);
	if (setjmp(png_jmpbuf(png)))
		cr_assert_fail("libpng failed to read %s", path);
	png_init_io(png, f);
	png_read_info(png, info);
	cr_assert_eq(png_get_bit_depth(png, info), 8);
	cr_assert_eq(png_get_color_type(png, info), PNG_COLOR_TYPE_RGB);
	png_textp text = NULL;
	int n = 0;
	png_get_text(png, info, &text, &n);
	for (int i = 0; i < n && i < max; i++) {
		cr_assert_eq(text[i].compression, PNG_TEXT_COMPRESSION_NONE);
		snprintf(keys[i], 80, "%s", text[i].key);
		snprintf(values[i], 256, "%s", text[i].text);
	}
	png_destroy_read_struct(&png, &info, NULL);
	fclose(f);
	return n;
}

Test(image, png_round_trip_keeps_pixels_and_text)
{
	make_tmpdir();
	tern_image *img = NULL;
	cr_assert_eq(tern_image_new(ctx, 37, 23, &img), TERN_OK);
	tu_rng r = tu_rng_new(3);
	for (size_t i = 0; i < 37 * 23 * 3; i++)
		img->data[i] = (uint8_t)tu_next(&r);
	char path[256];
	snprintf(path, sizeof path, "%s/out.png", tmpdir);
	const char *keys[] = { "prompt", "Software", "seed" };
	const char *values[] = { "a red circle\non a blue square", "tern 0.1.0", "" };
	cr_assert_eq(tern_image_save_png(ctx, img, path, keys, values, 3), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_eq(count_entries(tmpdir, NULL), 1, "a temporary file was left behind");

	/* The mode open(O_CREAT, 0666) would give, not mkstemp's 0600. The
	 * suite's tests run one per process, so reading the umask is safe. */
	mode_t mask = umask(022);
	umask(mask);
	struct stat st;
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0666 & ~mask, "mode %o, umask %o",
		     (unsigned)(st.st_mode & 0777), (unsigned)mask);

	tern_image *back = NULL;
	cr_assert_eq(tern_image_load(ctx, path, &back), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(back->w, 37);
	cr_assert_eq(back->h, 23);
	cr_assert_arr_eq(back->data, img->data, 37 * 23 * 3);

	char k[4][80], v[4][256];
	cr_assert_eq(read_png_text(path, k, v, 4), 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_str_eq(k[i], keys[i]);
		cr_assert_str_eq(v[i], values[i]);
	}
	tern_image_free(back);
	tern_image_free(img);
	remove_tmpdir();
}

Test(image, png_write_replaces_an_existing_file)
{
	make_tmpdir();
	char path[256];
	snprintf(path, sizeof path, "%s/x.png", tmpdir);
	FILE *f = fopen(path, "wb");
	cr_assert(f);
	fputs("old", f);
	fclose(f);
	tern_image *img = NULL;
	cr_assert_eq(tern_image_new(ctx, 1, 1, &img), TERN_OK);
	img->data[0] = 9;
	cr_assert_eq(tern_image_save_png(ctx, img, path, NULL, NULL, 0), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	tern_image *back = NULL;
	cr_assert_eq(tern_image_load(ctx, path, &back), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(back->data[0], 9);
	cr_assert_eq(back->data[1], 0);
	cr_assert_eq(count_entries(tmpdir, NULL), 1);
	tern_image_free(back);
	tern_image_free(img);
	remove_tmpdir();
}

Test(image, png_write_rejects_bad_keywords_and_writes_nothing)
{
	make_tmpdir();
	char path[256];
	snprintf(path, sizeof path, "%s/k.png", tmpdir);
	tern_image *img = NULL;
	cr_assert_eq(tern_image_new(ctx, 2, 2, &img), TERN_OK);
	char long_key[81];
	memset(long_key, 'k', 80);
	long_key[80] = '\0';
	const char *bad[] = { "", long_key, " lead", "trail ", "two  spaces", "tab\there",
			      "del\x7f" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const char *val = "v";
		int rc = tern_image_save_png(ctx, img, path, &bad[i], &val, 1);
		cr_assert_eq(rc, TERN_E_INVALID, "keyword #%zu accepted", i);
	}
	/* 79 characters is the longest allowed. */
	long_key[79] = '\0';
	const char *k79 = long_key, *val = "ok";
	cr_assert_eq(tern_image_save_png(ctx, img, path, &k79, &val, 1), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_image_save_png(ctx, img, path, NULL, NULL, 1), TERN_E_INVALID);
	cr_assert_eq(tern_image_save_png(ctx, img, path, NULL, NULL, -1), TERN_E_INVALID);
	cr_assert_eq(count_entries(tmpdir, NULL), 1);
	tern_image_free(img);
	remove_tmpdir();
}

Test(image, png_write_failures_are_io_errors_and_leave_no_temporary)
{
	make_tmpdir();
	tern_image *img = NULL;
	cr_assert_eq(tern_image_new(ctx, 3, 3, &img), TERN_OK);
	/* The directory of the target does not exist: mkstemp fails. */
	char path[256];
	snprintf(path, sizeof path, "%s/missing/x.png", tmpdir);
	cr_assert_eq(tern_image_save_png(ctx, img, path, NULL, NULL, 0), TERN_E_IO);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "missing/x.png"), "%s", tern_ctx_errmsg(ctx));
	/* The target is a non-empty directory: encoding succeeds, rename fails,
	 * and the temporary must be removed. */
	snprintf(path, sizeof path, "%s/dir", tmpdir);
	cr_assert_eq(mkdir(path, 0700), 0);
	char inner[300];
	snprintf(inner, sizeof inner, "%s/keep", path);
	FILE *f = fopen(inner, "wb");
	cr_assert(f);
	fclose(f);
	cr_assert_eq(tern_image_save_png(ctx, img, path, NULL, NULL, 0), TERN_E_IO);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "rename"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(count_entries(tmpdir, ".tmp."), 0, "a temporary file was left behind");
	remove(inner);
	tern_image_free(img);
	remove_tmpdir();
}

Test(image, image_new_checks_its_size)
{
	tern_image *img = NULL;
	cr_assert_eq(tern_image_new(ctx, 0, 5, &img), TERN_E_INVALID);
	cr_assert_eq(tern_image_new(ctx, 5, -1, &img), TERN_E_INVALID);
	cr_assert_eq(tern_image_new(ctx, TERN_IMAGE_MAX_DIM + 1, 1, &img), TERN_E_OVERFLOW);
	cr_assert_null(img);
	cr_assert_eq(tern_image_new(ctx, 4, 2, &img), TERN_OK);
	for (int i = 0; i < 4 * 2 * 3; i++)
		cr_assert_eq(img->data[i], 0);
	tern_image_free(img);
	tern_image_free(NULL);
}

/* ---- resize -------------------------------------------------------------- */

/* PyTorch's source coordinate for output index i (align_corners=False). */
static double ref_coord(int64_t i, int64_t in, int64_t out)
{
	return (i + 0.5) * (double)in / (double)out - 0.5;
}

static double ref_cubic(double d)
{
	const double a = -0.75;
	d = fabs(d);
	if (d <= 1)
		return ((a + 2) * d - (a + 3)) * d * d + 1;
	if (d < 2)
		return a * d * d * d - 5 * a * d * d + 8 * a * d - 4 * a;
	return 0;
}

static int64_t ref_clamp(int64_t i, int64_t n)
{
	return i < 0 ? 0 : i >= n ? n - 1 : i;
}

/* Weights of the source samples for output index i along one axis, as a
 * dense row over the n source pixels (taps beyond the border are folded
 * onto the edge pixel, which is what clamping the index means). */
static void ref_axis(int64_t i, int64_t n, int64_t out, int bicubic, double *w)
{
	for (int64_t k = 0; k < n; k++)
		w[k] = 0;
	double s = ref_coord(i, n, out);
	if (bicubic) {
		int64_t f = (int64_t)floor(s);
		for (int64_t k = f - 1; k <= f + 2; k++)
			w[ref_clamp(k, n)] += ref_cubic(s - (double)k);
	} else {
		if (s < 0)
			s = 0;
		int64_t f = (int64_t)floor(s);
		for (int64_t k = f; k <= f + 1; k++)
			w[ref_clamp(k, n)] += fmax(0.0, 1.0 - fabs(s - (double)k));
	}
}

static void ref_resize(const float *src, int64_t C, int64_t sh, int64_t sw, double *dst,
		       int64_t dh, int64_t dw, int bicubic)
{
	double *wy = malloc(sizeof(double) * (size_t)sh);
	double *wx = malloc(sizeof(double) * (size_t)sw);
	cr_assert(wy && wx);
	for (int64_t c = 0; c < C; c++)
		for (int64_t y = 0; y < dh; y++) {
			ref_axis(y, sh, dh, bicubic, wy);
			for (int64_t x = 0; x < dw; x++) {
				ref_axis(x, sw, dw, bicubic, wx);
				double acc = 0;
				for (int64_t i = 0; i < sh; i++)
					for (int64_t j = 0; j < sw; j++)
						acc += wy[i] * wx[j] * src[(c * sh + i) * sw + j];
				dst[(c * dh + y) * dw + x] = acc;
			}
		}
	free(wy);
	free(wx);
}

/* Each output is at most 16 float products summed in float, with weights
 * rounded to float: about 20 roundings of terms bounded by max|src| times
 * the kernel's absolute weight sum (< 1.6 for a = -0.75). Inputs are in
 * [-1, 1), so 4e-6 absolute (~70 U) is a loose but meaningful bound. */
Test(image, resize_matches_double_reference_on_random_shapes)
{
	tu_rng r = tu_rng_new(5);
	double worst = 0;
	for (int t = 0; t < 60; t++) {
		int64_t C = tu_int(&r, 1, 3), sh = tu_int(&r, 1, 19), sw = tu_int(&r, 1, 19);
		int64_t dh = tu_int(&r, 1, 41), dw = tu_int(&r, 1, 41);
		int bicubic = t % 2;
		float *src = malloc(sizeof(float) * (size_t)(C * sh * sw));
		float *dst = malloc(sizeof(float) * (size_t)(C * dh * dw));
		double *want = malloc(sizeof(double) * (size_t)(C * dh * dw));
		cr_assert(src && dst && want);
		for (int64_t i = 0; i < C * sh * sw; i++)
			src[i] = tu_float(&r);
		cr_assert_eq(tern_resize(src, C, sh, sw, dst, dh, dw,
					 bicubic ? TERN_RESIZE_BICUBIC : TERN_RESIZE_BILINEAR),
			     TERN_OK);
		ref_resize(src, C, sh, sw, want, dh, dw, bicubic);
		for (int64_t i = 0; i < C * dh * dw; i++) {
			double d = fabs(dst[i] - want[i]);
			worst = fmax(worst, d);
			cr_assert(d <= 4e-6,
				  "%s %lldx%lld -> %lldx%lld, element %lld: got %.9g want %.9g",
				  bicubic ? "bicubic" : "bilinear", (long long)sh, (long long)sw,
				  (long long)dh, (long long)dw, (long long)i, dst[i], want[i]);
		}
		free(src);
		free(dst);
		free(want);
	}
	cr_log_info("resize vs double reference: worst |diff| %.3g", worst);
}

/* Values worked out by hand from the definitions (all exact in binary):
 * bilinear 2 -> 4 gives a, a + (b-a)/4, a + 3(b-a)/4, b; 4 -> 2 samples
 * the midpoints 0.5 and 2.5; bicubic [0, 1] -> 4 gives, at coordinates
 * -0.25 and 0.25, W(1.25) = -27/256 and W(0.75) + W(1.75) = 58/256. */
Test(image, resize_matches_hand_computed_values)
{
	const float sq[4] = { 0, 1, 2, 3 };
	const float want_sq[16] = { 0.0f, 0.25f, 0.75f, 1.0f, 0.5f, 0.75f, 1.25f, 1.5f,
				    1.5f, 1.75f, 2.25f, 2.5f, 2.0f, 2.25f, 2.75f, 3.0f };
	float out[16];
	cr_assert_eq(tern_resize(sq, 1, 2, 2, out, 4, 4, TERN_RESIZE_BILINEAR), TERN_OK);
	for (int i = 0; i < 16; i++)
		cr_assert_float_eq(out[i], want_sq[i], 1e-6, "bilinear 2x2->4x4 [%d]", i);

	const float ramp[4] = { 0, 1, 2, 3 };
	cr_assert_eq(tern_resize(ramp, 1, 1, 4, out, 1, 2, TERN_RESIZE_BILINEAR), TERN_OK);
	cr_assert_float_eq(out[0], 0.5f, 1e-6);
	cr_assert_float_eq(out[1], 2.5f, 1e-6);

	const float step[2] = { 0, 1 };
	const float want_cubic[4] = { -27.0f / 256, 58.0f / 256, 198.0f / 256, 283.0f / 256 };
	cr_assert_eq(tern_resize(step, 1, 1, 2, out, 1, 4, TERN_RESIZE_BICUBIC), TERN_OK);
	for (int i = 0; i < 4; i++)
		cr_assert_float_eq(out[i], want_cubic[i], 1e-6, "bicubic [0,1]->4 [%d]", i);
	/* A constant stays constant: the taps sum to one. */
	const float flat[9] = { 5, 5, 5, 5, 5, 5, 5, 5, 5 };
	float big[49];
	cr_assert_eq(tern_resize(flat, 1, 3, 3, big, 7, 7, TERN_RESIZE_BICUBIC), TERN_OK);
	for (int i = 0; i < 49; i++)
		cr_assert_float_eq(big[i], 5.0f, 1e-5);
}

Test(image, resize_to_the_same_size_returns_the_input)
{
	tu_rng r = tu_rng_new(9);
	float src[2 * 5 * 7], dst[2 * 5 * 7];
	for (int i = 0; i < 70; i++)
		src[i] = tu_normal(&r);
	for (int m = 0; m < 2; m++) {
		memset(dst, 0, sizeof dst);
		cr_assert_eq(tern_resize(src, 2, 5, 7, dst, 5, 7, (tern_resize_mode)m), TERN_OK);
		cr_assert_arr_eq(dst, src, sizeof src);
	}
}

Test(image, resize_rejects_bad_arguments)
{
	float a[4] = { 0 }, b[4];
	cr_assert_eq(tern_resize(NULL, 1, 2, 2, b, 2, 2, TERN_RESIZE_BILINEAR), TERN_E_INVALID);
	cr_assert_eq(tern_resize(a, 1, 2, 2, NULL, 2, 2, TERN_RESIZE_BILINEAR), TERN_E_INVALID);
	cr_assert_eq(tern_resize(a, 0, 2, 2, b, 2, 2, TERN_RESIZE_BILINEAR), TERN_E_INVALID);
	cr_assert_eq(tern_resize(a, 1, 2, -2, b, 2, 2, TERN_RESIZE_BILINEAR), TERN_E_INVALID);
	cr_assert_eq(tern_resize(a, 1, 2, 2, b, 0, 2, TERN_RESIZE_BILINEAR), TERN_E_INVALID);
	cr_assert_eq(tern_resize(a, 1, 2, 2, b, 1, 1, (tern_resize_mode)7), TERN_E_INVALID);
	cr_assert_eq(tern_resize(a, INT64_MAX / 2, 4, 4, b, 1, 1, TERN_RESIZE_BILINEAR),
		     TERN_E_OVERFLOW);
}

/* ---- normalization --------------------------------------------------------- */

/* The float path rounds v/255, the subtraction and the division once each:
 * 3 U relative to outputs of magnitude < 1/0.2 = 5, so 5e-6 absolute is
 * safe (about 2 U of the largest output would already be 1.2e-6). */
Test(image, to_planar_matches_the_formula)
{
	tern_image *img = NULL;
	cr_assert_eq(tern_image_new(ctx, 13, 7, &img), TERN_OK);
	tu_rng r = tu_rng_new(13);
	for (int i = 0; i < 13 * 7 * 3; i++)
		img->data[i] = (uint8_t)tu_next(&r);
	img->data[0] = 0;
	img->data[1] = 255;
	const float mean[3] = { 0.485f, 0.456f, 0.406f }, std[3] = { 0.229f, 0.224f, 0.225f };
	float out[3 * 13 * 7];
	cr_assert_eq(tern_image_to_planar(img, 0, mean, std, out), TERN_OK);
	for (int c = 0; c < 3; c++)
		for (int i = 0; i < 13 * 7; i++) {
			double want = (img->data[3 * i + c] / 255.0 - mean[c]) / std[c];
			cr_assert(fabs(out[c * 91 + i] - want) <= 5e-6, "c %d i %d: %.9g vs %.9g", c,
				  i, out[c * 91 + i], want);
		}
	/* NULL mean and std: plain v/255. */
	cr_assert_eq(tern_image_to_planar(img, 0, NULL, NULL, out), TERN_OK);
	for (int c = 0; c < 3; c++)
		for (int i = 0; i < 13 * 7; i++)
			cr_assert(fabs(out[c * 91 + i] - img->data[3 * i + c] / 255.0) <= 1e-7);
	/* Grey: 601 luma, unrounded; 4 roundings of values <= 5. */
	const float gm = 0.5f, gs = 0.25f;
	cr_assert_eq(tern_image_to_planar(img, 1, &gm, &gs, out), TERN_OK);
	for (int i = 0; i < 13 * 7; i++) {
		const uint8_t *p = img->data + 3 * i;
		double y = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
		double want = (y / 255.0 - gm) / gs;
		cr_assert(fabs(out[i] - want) <= 5e-6, "grey %d: %.9g vs %.9g", i, out[i], want);
	}
	const float zero[3] = { 1, 0, 1 };
	cr_assert_eq(tern_image_to_planar(img, 0, mean, zero, out), TERN_E_INVALID);
	cr_assert_eq(tern_image_to_planar(NULL, 0, mean, std, out), TERN_E_INVALID);
	tern_image_free(img);
}

/* (x - m) / s is two float roundings: 2 U relative to the output. */
Test(image, normalize_channels_matches_the_formula)
{
	tu_rng r = tu_rng_new(17);
	enum { C = 4, HW = 37 };
	float x[C * HW], orig[C * HW];
	const float mean[C] = { 0.5f, -1.25f, 3.0f, 0.0f }, std[C] = { 0.25f, 2.0f, 0.3f, 1.5f };
	for (int i = 0; i < C * HW; i++)
		orig[i] = x[i] = 4.0f * tu_normal(&r);
	tern_normalize_channels(x, C, HW, mean, std);
	for (int c = 0; c < C; c++)
		for (int i = 0; i < HW; i++) {
			double want = ((double)orig[c * HW + i] - mean[c]) / std[c];
			cr_assert(fabs(x[c * HW + i] - want) <= 2.5 * fabs(want) * U_F + 1e-30,
				  "c %d i %d: %.9g vs %.9g", c, i, x[c * HW + i], want);
		}
	memcpy(x, orig, sizeof x);
	tern_normalize_channels(x, C, HW, NULL, NULL);
	cr_assert_arr_eq(x, orig, sizeof x);
}
