/*
 * stb_wrap.h (private): the only door to the copy of stb_image compiled
 * inside core/stb_image_impl.c. stb's own symbols are static there, so
 * nothing named stbi_* leaves libtern; image.c calls these instead.
 */
#ifndef TERN_CORE_STB_WRAP_H
#define TERN_CORE_STB_WRAP_H

#include <stddef.h>
#include <stdint.h>

/* Read only the header of an image in buf[0..len): returns 1 and sets
 * *w, *h and *comp (channels in the file) if stb recognises it, 0 if not
 * (stb then tries every format in turn, so it has no useful reason to
 * give). Allocates nothing proportional to the image size. Sides above
 * TERN_IMAGE_MAX_DIM fail here for the formats whose stb reader checks. */
int tern_stb_info(const uint8_t *buf, int len, int *w, int *h, int *comp);

/* 1 if the image in buf[0..len) has 16-bit samples, else 0. */
int tern_stb_is_16_bit(const uint8_t *buf, int len);

/* Decode buf[0..len) to 8-bit interleaved RGB, [*h][*w][3]. Returns pixels
 * allocated with malloc (the caller frees them with free()), or NULL with
 * *reason set to stb's static description of the failure. */
uint8_t *tern_stb_load_rgb(const uint8_t *buf, int len, int *w, int *h, const char **reason);

#endif
