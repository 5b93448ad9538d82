/*
 * image.h: decoding images (PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PIC, PNM
 * through a private copy of stb_image), writing PNG through libpng with
 * text metadata, resizing and per-channel normalization.
 */
#ifndef TERN_IMAGE_H
#define TERN_IMAGE_H

#include <stdint.h>

#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An 8-bit interleaved RGB image, [h][w][3]. Owns `data`. */
typedef struct tern_image {
	int w, h;
	uint8_t *data;
} tern_image;

/* Largest width or height accepted by the decoders and tern_image_new. */
#define TERN_IMAGE_MAX_DIM 16384
/* Largest file tern_image_load reads (256 MiB). */
#define TERN_IMAGE_MAX_FILE_BYTES ((size_t)256 << 20)

/* A new black w x h image (1..TERN_IMAGE_MAX_DIM per side); caller frees
 * with tern_image_free. */
TERN_API int tern_image_new(tern_ctx *ctx, int w, int h, tern_image **out);
/* Decode a file / memory buffer into a new RGB image (grey is replicated,
 * alpha is dropped without compositing). Truncated, corrupt or empty data
 * give TERN_E_FORMAT, oversized images or files TERN_E_OVERFLOW, unreadable
 * files TERN_E_IO, 16-bit PNM TERN_E_UNSUPPORTED, each with a message. The buffer stays the caller's;
 * the caller frees *out with tern_image_free. */
TERN_API int tern_image_load(tern_ctx *ctx, const char *path, tern_image **out);
TERN_API int tern_image_decode(tern_ctx *ctx, const void *buf, size_t len, tern_image **out);
/* Free an image and its pixels. Accepts NULL. */
TERN_API void tern_image_free(tern_image *img);

/* Write img as an 8-bit RGB PNG with tEXt chunks keys[i] = values[i]
 * (n_text pairs; keys 1..79 printable Latin-1 chars without leading,
 * trailing or doubled spaces, else TERN_E_INVALID). Written to a temporary
 * file "path.tmp.XXXXXX" beside it and renamed, so a failure never leaves a
 * partial file under `path`; the file gets mode 0666 minus the umask.
 * Nothing is kept from the arguments. */
TERN_API int tern_image_save_png(tern_ctx *ctx, const tern_image *img, const char *path,
				 const char *const *keys, const char *const *values, int n_text);

typedef enum tern_resize_mode { TERN_RESIZE_BILINEAR = 0, TERN_RESIZE_BICUBIC = 1 } tern_resize_mode;

/* Resize planar float channels: src [C][sh][sw] -> dst [C][dh][dw], with
 * pixel-centre alignment (PyTorch's interpolate with align_corners=False,
 * antialias=False: shrinking samples, it does not filter); bicubic uses a = -0.75 (PyTorch) and
 * clamps source taps at the border. The caller owns both buffers; they
 * must not overlap unless the sizes are equal (then dst is a copy).
 * Returns TERN_E_INVALID (NULL, non-positive size, bad mode),
 * TERN_E_OVERFLOW or TERN_E_NOMEM (a small table for the taps). */
TERN_API int tern_resize(const float *src, int64_t C, int64_t sh, int64_t sw, float *dst,
			 int64_t dh, int64_t dw, tern_resize_mode mode);

/* RGB image -> planar float [3][h][w] (or [1][h][w] if grey, using
 * ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B, not rounded), values v/255
 * then (v - mean[c]) / std[c]. mean NULL means 0, std NULL means 1; a zero
 * std gives TERN_E_INVALID. out (caller-owned) must hold channels*w*h
 * floats. */
TERN_API int tern_image_to_planar(const tern_image *img, int grey, const float *mean,
				  const float *std, float *out);
/* Per-channel normalization in place: x[c][i] = (x[c][i] - mean[c]) / std[c]
 * for x [C][hw]; mean NULL means 0, std NULL means 1. */
TERN_API void tern_normalize_channels(float *x, int64_t C, int64_t hw, const float *mean,
				      const float *std);

#ifdef __cplusplus
}
#endif
#endif
