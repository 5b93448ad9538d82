/*
 * image.c: tern_image objects, decoding (stb_image through core/stb_wrap.h)
 * and PNG writing (libpng). Decoding never lets stb allocate for a size it
 * has not checked: the header is read first and the dimensions are bounded
 * before any pixel buffer exists. stb quietly fills a truncated JPEG or BMP
 * with zeros and stops reading a PNG at IEND's header, so those three get
 * a structural check of their own first: a cut-off download is an error,
 * not a half-grey image.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"
#include "core/stb_wrap.h"
#include "tern/image.h"

/* errno text without strerror's shared buffer. */
static const char *errno_text(int err, char *buf, size_t n)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
	return strerror_r(err, buf, n);
#else
	if (strerror_r(err, buf, n) != 0)
		snprintf(buf, n, "error %d", err);
	return buf;
#endif
}

static int check_dims(tern_ctx *ctx, int w, int h, const char *what)
{
	size_t bytes;
	if (w <= 0 || h <= 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s has an empty size (%dx%d)", what, w, h);
	if (w > TERN_IMAGE_MAX_DIM || h > TERN_IMAGE_MAX_DIM)
		return tern_error(ctx, TERN_E_OVERFLOW,
				  "%s is %dx%d; tern accepts at most %d pixels per side", what, w,
				  h, TERN_IMAGE_MAX_DIM);
	if (tern_size_mul((size_t)w, (size_t)h, &bytes) || tern_size_mul(bytes, 3, &bytes))
		return tern_error(ctx, TERN_E_OVERFLOW, "%s of %dx%d RGB pixels overflows size_t",
				  what, w, h);
	return TERN_OK;
}

int tern_image_new(tern_ctx *ctx, int w, int h, tern_image **out)
{
	if (!out)
		return tern_error(ctx, TERN_E_INVALID, "tern_image_new: out is NULL");
	*out = NULL;
	if (w <= 0 || h <= 0)
		return tern_error(ctx, TERN_E_INVALID, "tern_image_new: size %dx%d is not positive",
				  w, h);
	int rc = check_dims(ctx, w, h, "new image");
	if (rc)
		return rc;
	tern_image *img = malloc(sizeof *img);
	uint8_t *data = calloc((size_t)w * (size_t)h, 3);
	if (!img || !data) {
		free(img);
		free(data);
		return tern_error(ctx, TERN_E_NOMEM, "out of memory for a %dx%d image", w, h);
	}
	img->w = w;
	img->h = h;
	img->data = data;
	*out = img;
	return TERN_OK;
}

void tern_image_free(tern_image *img)
{
	if (!img)
		return;
	free(img->data);
	free(img);
}

/* ---- decoding ------------------------------------------------------- */

typedef enum {
	FMT_UNKNOWN,
	FMT_PNG,
	FMT_JPEG,
	FMT_BMP,
	FMT_GIF,
	FMT_PSD,
	FMT_HDR,
	FMT_PIC,
	FMT_PNM,
} img_format;

static const char *format_name(img_format f)
{
	static const char *const names[] = { "image", "PNG", "JPEG", "BMP", "GIF",
					     "PSD", "HDR", "PIC", "PNM" };
	return names[f];
}

/* Names the format from its magic bytes, for messages and for the extra
 * checks below. TGA has no magic and stays FMT_UNKNOWN. */
static img_format sniff(const uint8_t *b, size_t n)
{
	if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8))
		return FMT_PNG;
	if (n >= 2 && b[0] == 0xFF && b[1] == 0xD8)
		return FMT_JPEG;
	if (n >= 2 && b[0] == 'B' && b[1] == 'M')
		return FMT_BMP;
	if (n >= 4 && !memcmp(b, "GIF8", 4))
		return FMT_GIF;
	if (n >= 4 && !memcmp(b, "8BPS", 4))
		return FMT_PSD;
	if (n >= 2 && b[0] == '#' && b[1] == '?')
		return FMT_HDR;
	if (n >= 4 && !memcmp(b, "\x53\x80\xF6\x34", 4))
		return FMT_PIC;
	if (n >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6'))
		return FMT_PNM;
	return FMT_UNKNOWN;
}

static unsigned be16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Every chunk up to IEND must be whole. stb stops reading at IEND without
 * looking at its CRC, so this is what makes a cut in the last bytes an
 * error; CRCs themselves are not checked (stb does not either). */
static int check_png(tern_ctx *ctx, const uint8_t *b, size_t n)
{
	size_t i = 8;
	while (n - i >= 8) {
		uint32_t len = be32(b + i);
		if (len > 0x7FFFFFFFu)
			return tern_error(ctx, TERN_E_FORMAT,
					  "corrupt PNG: chunk at byte %zu claims %u bytes", i, len);
		if ((size_t)len + 12 > n - i)
			return tern_error(ctx, TERN_E_FORMAT,
					  "truncated PNG: the %.4s chunk at byte %zu needs %u bytes, "
					  "%zu remain",
					  (const char *)(b + i + 4), i, len + 12, n - i);
		if (!memcmp(b + i + 4, "IEND", 4))
			return TERN_OK;
		i += (size_t)len + 12;
	}
	return tern_error(ctx, TERN_E_FORMAT, "truncated PNG: %zu bytes end before the IEND chunk",
			  n);
}

/* The tables of one DHT segment body p[0..n). The stb_image in Debian
 * (2022-09) builds a table before it checks the code counts, so a table
 * declaring more than 256 codes writes past its arrays: refuse it here. */
static int check_dht(tern_ctx *ctx, const uint8_t *p, size_t n, size_t at)
{
	size_t i = 0;
	while (i < n) {
		if (n - i < 17)
			return tern_error(ctx, TERN_E_FORMAT,
					  "corrupt JPEG: short Huffman table at byte %zu", at);
		unsigned cls = p[i] >> 4, id = p[i] & 15;
		size_t codes = 0;
		for (int k = 1; k <= 16; k++)
			codes += p[i + (size_t)k];
		if (cls > 1 || id > 3 || codes > 256 || codes > n - i - 17)
			return tern_error(ctx, TERN_E_FORMAT,
					  "corrupt JPEG: bad Huffman table (class %u, id %u, %zu "
					  "codes) at byte %zu",
					  cls, id, codes, at);
		i += 17 + codes;
	}
	return TERN_OK;
}

/* Walks the JPEG marker segments and entropy-coded scans up to the EOI
 * marker. stb's decoder reads zeros past the end of its input and returns
 * success on a file cut inside a scan; this walk is what makes truncation
 * an error. Inside a scan, 0xFF is followed only by 0x00 (a stuffed byte),
 * RSTn or fill bytes, so the first other marker ends the scan. */
static int check_jpeg(tern_ctx *ctx, const uint8_t *b, size_t n)
{
	size_t i = 2;
	int rc;
	for (;;) {
		while (i < n && b[i] == 0xFF && i + 1 < n && b[i + 1] == 0xFF)
			i++; /* fill bytes before a marker */
		if (i + 2 > n)
			break;
		if (b[i] != 0xFF)
			return tern_error(ctx, TERN_E_FORMAT,
					  "corrupt JPEG: expected a marker at byte %zu", i);
		unsigned m = b[i + 1];
		i += 2;
		if (m == 0xD9)
			return TERN_OK;
		if (m == 0x01 || (m >= 0xD0 && m <= 0xD8))
			continue; /* standalone markers */
		if (i + 2 > n)
			break;
		size_t seg = be16(b + i);
		if (seg < 2)
			return tern_error(ctx, TERN_E_FORMAT,
					  "corrupt JPEG: segment 0xFF%02X at byte %zu has length %zu",
					  m, i - 2, seg);
		if (seg > n - i)
			break;
		/* SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the size. */
		if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC && seg >= 7) {
			unsigned jh = be16(b + i + 3), jw = be16(b + i + 5);
			if (jw > TERN_IMAGE_MAX_DIM || jh > TERN_IMAGE_MAX_DIM)
				return tern_error(ctx, TERN_E_OVERFLOW,
						  "JPEG is %ux%u; tern accepts at most %d pixels per "
						  "side",
						  jw, jh, TERN_IMAGE_MAX_DIM);
		}
		if (m == 0xC4 && (rc = check_dht(ctx, b + i + 2, seg - 2, i - 2)))
			return rc;
		i += seg;
		if (m != 0xDA)
			continue;
		/* entropy-coded data of the scan just opened */
		for (;;) {
			while (i < n && b[i] != 0xFF)
				i++;
			if (i + 1 >= n)
				goto truncated;
			unsigned c = b[i + 1];
			if (c == 0x00 || c == 0xFF || (c >= 0xD0 && c <= 0xD7)) {
				i += c == 0xFF ? 1 : 2;
				continue;
			}
			break; /* a real marker: the scan ended */
		}
	}
truncated:
	return tern_error(ctx, TERN_E_FORMAT,
			  "truncated JPEG: %zu bytes end before the end-of-image marker", n);
}

/* stb's BMP reader also reads past the end as zeros; for the uncompressed
 * layouts the pixel array's size is known from the header, so demand it. */
static int check_bmp(tern_ctx *ctx, const uint8_t *b, size_t n, int w, int h)
{
	if (n < 30)
		return tern_error(ctx, TERN_E_FORMAT, "truncated BMP header (%zu bytes)", n);
	uint32_t off = le32(b + 10);
	uint32_t hsz = le32(b + 14);
	unsigned bpp = hsz == 12 ? (unsigned)b[24] | (unsigned)b[25] << 8
				 : (unsigned)b[28] | (unsigned)b[29] << 8;
	uint32_t compression = hsz >= 40 && n >= 34 ? le32(b + 30) : 0;
	/* 0 = BI_RGB, 3 = BI_BITFIELDS: rows of bpp bits padded to 4 bytes. */
	if (compression != 0 && compression != 3)
		return TERN_OK;
	uint64_t stride = (((uint64_t)w * bpp + 31) / 32) * 4;
	uint64_t need = (uint64_t)off + stride * (uint64_t)h;
	if (need > n)
		return tern_error(ctx, TERN_E_FORMAT,
				  "truncated BMP: %dx%d at %u bits per pixel needs %llu bytes, "
				  "the data has %zu",
				  w, h, bpp, (unsigned long long)need, n);
	return TERN_OK;
}

int tern_image_decode(tern_ctx *ctx, const void *buf, size_t len, tern_image **out)
{
	if (!out)
		return tern_error(ctx, TERN_E_INVALID, "tern_image_decode: out is NULL");
	*out = NULL;
	if (!buf && len)
		return tern_error(ctx, TERN_E_INVALID, "tern_image_decode: buf is NULL");
	if (len == 0)
		return tern_error(ctx, TERN_E_FORMAT, "empty image data (0 bytes)");
	if (len > INT_MAX)
		return tern_error(ctx, TERN_E_OVERFLOW,
				  "image data of %zu bytes is larger than the decoder's limit of %d",
				  len, INT_MAX);
	const uint8_t *b = buf;
	img_format fmt = sniff(b, len);
	const char *name = format_name(fmt);
	int rc;
	/* PNG and JPEG sizes are read here, before stb: stb's own limit check
	 * would only fail with "unknown image type" after trying every format,
	 * and an absurd size deserves to be called one. */
	if (fmt == FMT_PNG && len >= 24 && !memcmp(b + 12, "IHDR", 4)) {
		uint32_t pw = be32(b + 16), ph = be32(b + 20);
		if (pw > TERN_IMAGE_MAX_DIM || ph > TERN_IMAGE_MAX_DIM)
			return tern_error(ctx, TERN_E_OVERFLOW,
					  "PNG is %ux%u; tern accepts at most %d pixels per side", pw,
					  ph, TERN_IMAGE_MAX_DIM);
	}
	if (fmt == FMT_JPEG && (rc = check_jpeg(ctx, b, len)))
		return rc;
	int w = 0, h = 0, comp = 0;
	if (!tern_stb_info(b, (int)len, &w, &h, &comp)) {
		if (fmt == FMT_UNKNOWN)
			return tern_error(ctx, TERN_E_FORMAT,
					  "not a recognised image (expected PNG, JPEG, BMP, GIF, "
					  "TGA, PSD, HDR, PIC or PNM)");
		return tern_error(ctx, TERN_E_FORMAT, "corrupt or truncated %s header", name);
	}
	if ((rc = check_dims(ctx, w, h, name)))
		return rc;
	if (fmt == FMT_PNG && (rc = check_png(ctx, b, len)))
		return rc;
	if (fmt == FMT_BMP && (rc = check_bmp(ctx, b, len, w, h)))
		return rc;
	/* This stb reads 16-bit PNM samples in host (little-endian) order while
	 * the format is big-endian: the pixels would be silently wrong. */
	if (fmt == FMT_PNM && tern_stb_is_16_bit(b, (int)len))
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "16-bit PNM (maxval above 255) is not supported; convert it to "
				  "8 bits or PNG");

	tern_image *img = malloc(sizeof *img);
	if (!img)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory for an image header");
	const char *reason = NULL;
	int dw = 0, dh = 0;
	uint8_t *px = tern_stb_load_rgb(b, (int)len, &dw, &dh, &reason);
	if (!px) {
		free(img);
		if (reason && !strcmp(reason, "outofmem"))
			return tern_error(ctx, TERN_E_NOMEM, "out of memory decoding a %dx%d %s",
					  w, h, name);
		return tern_error(ctx, TERN_E_FORMAT, "corrupt or truncated %s data (%s)", name,
				  reason ? reason : "no detail");
	}
	if (dw != w || dh != h) {
		free(px);
		free(img);
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s header says %dx%d but its pixels decode as %dx%d", name, w, h,
				  dw, dh);
	}
	img->w = w;
	img->h = h;
	img->data = px;
	*out = img;
	return TERN_OK;
}

int tern_image_load(tern_ctx *ctx, const char *path, tern_image **out)
{
	if (!out)
		return tern_error(ctx, TERN_E_INVALID, "tern_image_load: out is NULL");
	*out = NULL;
	if (!path)
		return tern_error(ctx, TERN_E_INVALID, "tern_image_load: path is NULL");
	char eb[128];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tern_error(ctx, TERN_E_IO, "cannot open image '%s': %s", path,
				  errno_text(errno, eb, sizeof eb));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return tern_error(ctx, TERN_E_IO, "cannot stat image '%s': %s", path,
				  errno_text(e, eb, sizeof eb));
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return tern_error(ctx, TERN_E_IO, "image path '%s' is a directory", path);
	}
	const size_t limit = TERN_IMAGE_MAX_FILE_BYTES;
	if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > limit) {
		close(fd);
		return tern_error(ctx, TERN_E_OVERFLOW,
				  "image file '%s' is %lld bytes; the limit is %zu", path,
				  (long long)st.st_size, limit);
	}
	/* Read to end of file rather than trusting st_size: pipes have none and
	 * a regular file may change under us. One byte past the limit tells
	 * "too large" from "exactly the limit". */
	size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 65536;
	size_t n = 0;
	uint8_t *data = malloc(cap);
	int rc = TERN_OK;
	while (data) {
		if (n == cap) {
			if (cap > limit) {
				rc = tern_error(ctx, TERN_E_OVERFLOW,
						"image file '%s' is larger than the limit of %zu bytes",
						path, limit);
				break;
			}
			size_t ncap = TERN_MIN(cap * 2, limit + 1);
			uint8_t *nd = realloc(data, ncap);
			if (!nd) {
				rc = tern_error(ctx, TERN_E_NOMEM, "out of memory reading '%s'", path);
				break;
			}
			data = nd;
			cap = ncap;
		}
		ssize_t r = read(fd, data + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			rc = tern_error(ctx, TERN_E_IO, "cannot read image '%s': %s", path,
					errno_text(errno, eb, sizeof eb));
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (!data)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory reading '%s'", path);
	if (rc == TERN_OK && n > limit)
		rc = tern_error(ctx, TERN_E_OVERFLOW,
				"image file '%s' is larger than the limit of %zu bytes", path, limit);
	if (rc == TERN_OK) {
		rc = tern_image_decode(ctx, data, n, out);
		if (rc && ctx) {
			/* Prefix the file name to the decoder's message. */
			char msg[TERN_ERRMSG_MAX];
			snprintf(msg, sizeof msg, "%s", tern_ctx_errmsg(ctx));
			tern_error(ctx, rc, "%s: %s", path, msg);
		}
	}
	free(data);
	return rc;
}

/* ---- PNG writing ---------------------------------------------------- */

/* The PNG keyword rules (PNG spec 11.3.4.2): 1..79 Latin-1 printable
 * characters, no leading, trailing or doubled spaces. libpng would only
 * warn and drop a bad keyword; tern refuses it instead. */
static int check_keyword(tern_ctx *ctx, const char *key)
{
	size_t n = strlen(key);
	if (n < 1 || n > 79)
		return tern_error(ctx, TERN_E_INVALID,
				  "PNG text keyword '%.20s' has %zu characters; 1 to 79 are allowed",
				  key, n);
	if (key[0] == ' ' || key[n - 1] == ' ')
		return tern_error(ctx, TERN_E_INVALID,
				  "PNG text keyword '%s' starts or ends with a space", key);
	for (size_t i = 0; i < n; i++) {
		unsigned c = (unsigned char)key[i];
		if (c < 32 || (c > 126 && c < 161))
			return tern_error(ctx, TERN_E_INVALID,
					  "PNG text keyword '%s' has a non-printable byte 0x%02X", key,
					  c);
		if (c == ' ' && key[i + 1] == ' ')
			return tern_error(ctx, TERN_E_INVALID,
					  "PNG text keyword '%s' has consecutive spaces", key);
	}
	return TERN_OK;
}

struct png_failure {
	char msg[256];
};

static void png_on_error(png_structp png, png_const_charp msg)
{
	struct png_failure *f = png_get_error_ptr(png);
	snprintf(f->msg, sizeof f->msg, "%s", msg ? msg : "unknown libpng error");
	png_longjmp(png, 1);
}

/* The library never prints; libpng's default warning handler would. */
static void png_on_warning(png_structp png, png_const_charp msg)
{
	(void)png;
	(void)msg;
}

/* Encode img into fp. Everything libpng may longjmp over is set up before
 * setjmp and never modified after it, and the locals are volatile anyway
 * so no compiler may keep a stale copy in a register. */
static int png_encode(tern_ctx *ctx, FILE *fp, const tern_image *img, png_text *text,
		      int n_text, const char *path)
{
	struct png_failure fail = { "" };
	png_structp volatile png =
		png_create_write_struct(PNG_LIBPNG_VER_STRING, &fail, png_on_error, png_on_warning);
	if (!png)
		return tern_error(ctx, TERN_E_NOMEM, "cannot create a libpng writer");
	png_infop volatile info = png_create_info_struct(png);
	if (!info) {
		png_structp p = png;
		png_destroy_write_struct(&p, NULL);
		return tern_error(ctx, TERN_E_NOMEM, "cannot create a libpng info struct");
	}
	if (setjmp(png_jmpbuf(png))) {
		png_structp p = png;
		png_infop i = info;
		png_destroy_write_struct(&p, &i);
		return tern_error(ctx, TERN_E_IO, "writing PNG '%s' failed: %s", path, fail.msg);
	}
	png_init_io(png, fp);
	png_set_IHDR(png, info, (png_uint_32)img->w, (png_uint_32)img->h, 8, PNG_COLOR_TYPE_RGB,
		     PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (n_text > 0)
		png_set_text(png, info, text, n_text);
	png_write_info(png, info);
	const size_t stride = (size_t)img->w * 3;
	for (int y = 0; y < img->h; y++)
		png_write_row(png, img->data + (size_t)y * stride);
	png_write_end(png, info);
	png_structp p = png;
	png_infop i = info;
	png_destroy_write_struct(&p, &i);
	return TERN_OK;
}

/* Permission bits for the new file: what open(O_CREAT, 0666) would have
 * given, i.e. 0666 minus the umask. umask() cannot be read without setting
 * it (a race with other threads), so read it from /proc where there is one. */
static mode_t new_file_mode(void)
{
	mode_t mask = 022;
	FILE *f = fopen("/proc/self/status", "re");
	if (f) {
		char line[256];
		unsigned m;
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "Umask: %o", &m) == 1) {
				mask = (mode_t)(m & 0777);
				break;
			}
		fclose(f);
	}
	return 0666 & ~mask;
}

int tern_image_save_png(tern_ctx *ctx, const tern_image *img, const char *path,
			const char *const *keys, const char *const *values, int n_text)
{
	if (!img || !img->data || !path)
		return tern_error(ctx, TERN_E_INVALID, "tern_image_save_png: NULL argument");
	if (img->w <= 0 || img->h <= 0 || img->w > TERN_IMAGE_MAX_DIM ||
	    img->h > TERN_IMAGE_MAX_DIM)
		return tern_error(ctx, TERN_E_INVALID,
				  "tern_image_save_png: image size %dx%d is outside 1..%d", img->w,
				  img->h, TERN_IMAGE_MAX_DIM);
	if (n_text < 0 || (n_text > 0 && (!keys || !values)))
		return tern_error(ctx, TERN_E_INVALID,
				  "tern_image_save_png: %d text pairs with NULL keys or values",
				  n_text);
	for (int i = 0; i < n_text; i++) {
		if (!keys[i] || !values[i])
			return tern_error(ctx, TERN_E_INVALID,
					  "tern_image_save_png: text pair %d is NULL", i);
		int rc = check_keyword(ctx, keys[i]);
		if (rc)
			return rc;
	}

	png_text *text = NULL;
	if (n_text > 0) {
		text = calloc((size_t)n_text, sizeof *text);
		if (!text)
			return tern_error(ctx, TERN_E_NOMEM, "out of memory for PNG text");
		for (int i = 0; i < n_text; i++) {
			text[i].compression = PNG_TEXT_COMPRESSION_NONE;
			/* libpng copies these and never writes through them. */
			text[i].key = (png_charp)(uintptr_t)keys[i];
			text[i].text = (png_charp)(uintptr_t)values[i];
			text[i].text_length = strlen(values[i]);
		}
	}

	static const char suffix[] = ".tmp.XXXXXX";
	size_t plen = strlen(path);
	char *tmp = malloc(plen + sizeof suffix);
	if (!tmp) {
		free(text);
		return tern_error(ctx, TERN_E_NOMEM, "out of memory for a file name");
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, suffix, sizeof suffix);

	char eb[128];
	int rc = TERN_OK;
	FILE *fp = NULL;
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = tern_error(ctx, TERN_E_IO, "cannot create a temporary file beside '%s': %s",
				path, errno_text(errno, eb, sizeof eb));
		free(tmp);
		free(text);
		return rc;
	}
	/* mkstemp makes the file 0600; an image should get the usual mode. */
	if (fchmod(fd, new_file_mode()) != 0) {
		rc = tern_error(ctx, TERN_E_IO, "cannot set the mode of '%s': %s", tmp,
				errno_text(errno, eb, sizeof eb));
		close(fd);
		goto fail;
	}
	fp = fdopen(fd, "wb");
	if (!fp) {
		rc = tern_error(ctx, TERN_E_IO, "cannot open a stream on '%s': %s", tmp,
				errno_text(errno, eb, sizeof eb));
		close(fd);
		goto fail;
	}
	rc = png_encode(ctx, fp, img, text, n_text, path);
	if (rc == TERN_OK && (fflush(fp) != 0 || ferror(fp)))
		rc = tern_error(ctx, TERN_E_IO, "writing PNG '%s' failed: %s", path,
				errno_text(errno, eb, sizeof eb));
	if (fclose(fp) != 0 && rc == TERN_OK)
		rc = tern_error(ctx, TERN_E_IO, "closing PNG '%s' failed: %s", path,
				errno_text(errno, eb, sizeof eb));
	if (rc)
		goto fail;
	if (rename(tmp, path) != 0) {
		rc = tern_error(ctx, TERN_E_IO, "cannot rename '%s' to '%s': %s", tmp, path,
				errno_text(errno, eb, sizeof eb));
		goto fail;
	}
	free(tmp);
	free(text);
	return TERN_OK;
fail:
	unlink(tmp);
	free(tmp);
	free(text);
	return rc;
}
