/*
 * stb_image_impl.c: the one translation unit that compiles stb_image (from
 * Debian's libstb-dev) into libtern. Every stb function is static here and
 * reached only through the wrappers of core/stb_wrap.h, so the library
 * exports no stbi_* symbol and cannot clash with an application that links
 * its own copy. stb is built without stdio (tern reads files itself), with
 * tern's dimension limit, and with its asserts compiled out because the
 * library must never abort on hostile input.
 */
#include <stdlib.h>

#include "core/stb_wrap.h"
#include "tern/image.h"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_NO_STDIO
#define STBI_ASSERT(x) ((void)0)
#define STBI_MAX_DIMENSIONS TERN_IMAGE_MAX_DIM
/* image.c releases decoded pixels with free(), so pin stb to malloc. */
#define STBI_MALLOC(sz) malloc(sz)
#define STBI_REALLOC(p, sz) realloc(p, sz)
#define STBI_FREE(p) free(p)

/* stb is third-party code: its warnings are its own, silenced only here.
 * -Wunused-function stays off to the end of this file because gcc reports
 * stb's declared-but-never-defined statics at the end of the unit, after
 * any pop; the wrappers below are all used. */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

int tern_stb_info(const uint8_t *buf, int len, int *w, int *h, int *comp)
{
	return stbi_info_from_memory(buf, len, w, h, comp);
}

int tern_stb_is_16_bit(const uint8_t *buf, int len)
{
	return stbi_is_16_bit_from_memory(buf, len);
}

/* stb is asked for the file's own channel count and tern expands to RGB
 * here: the Debian stb converts 16-bit PNM channels with its 8-bit
 * converter and then reads past the buffer it made, a path that asking for
 * native channels never takes. The conversions match stb's: grey is
 * replicated, alpha dropped without compositing. */
uint8_t *tern_stb_load_rgb(const uint8_t *buf, int len, int *w, int *h, const char **reason)
{
	int comp = 0;
	/* stb keeps its failure reason in a thread-local static (C11 builds)
	 * and never clears it: clear it first and read it at once, so a stale
	 * reason from an earlier call is never reported. */
	stbi__g_failure_reason = NULL;
	uint8_t *px = stbi_load_from_memory(buf, len, w, h, &comp, 0);
	*reason = px ? NULL : stbi_failure_reason();
	if (!px || comp == 3)
		return px;
	if (comp < 1 || comp > 4) {
		free(px);
		*reason = "unexpected channel count";
		return NULL;
	}
	size_t n = (size_t)*w * (size_t)*h; /* bounded by the caller's size checks */
	uint8_t *rgb = malloc(n * 3);
	if (!rgb) {
		free(px);
		*reason = "outofmem";
		return NULL;
	}
	const size_t step = (size_t)comp;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *s = px + i * step;
		uint8_t *d = rgb + i * 3;
		if (comp <= 2) {
			d[0] = d[1] = d[2] = s[0];
		} else {
			d[0] = s[0];
			d[1] = s[1];
			d[2] = s[2];
		}
	}
	free(px);
	return rgb;
}
