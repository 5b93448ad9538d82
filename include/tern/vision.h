/*
 * vision.h: the "image-encoder" component interface (version 1), which a
 * vision plugin publishes through the registry so that captioning and VLA
 * plugins can turn images into token embeddings without linking to it.
 *
 * A consumer asks the registry for the interface, loads an encoder from
 * a file it already holds (its own model file, whose image tower sits
 * under a metadata key and a tensor-name prefix), and encodes images:
 *
 *   const tern_image_encoder *ie = tern_registry_component(reg,
 *           TERN_IMAGE_ENCODER_INTERFACE, TERN_IMAGE_ENCODER_VERSION, NULL);
 *   void *enc;
 *   ie->load(host, file, "vision", "vision.", &enc);
 *   tern_image_encoder_info info;  info.struct_size = sizeof info;
 *   ie->info(enc, &info);
 *   float *emb = malloc(info.n_tokens * info.dim * sizeof *emb);
 *   ie->encode(host, enc, img, emb);
 *   ie->free(enc);
 *
 * Thread safety: an encoder is read-only after load; several threads may
 * encode with one encoder, each passing its own context in the host.
 */
#ifndef TERN_VISION_H
#define TERN_VISION_H

#include <stddef.h>
#include <stdint.h>

#include "tern/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERN_IMAGE_ENCODER_INTERFACE "image-encoder"
#define TERN_IMAGE_ENCODER_VERSION 1

/* What an encoder expects and produces. */
typedef struct tern_image_encoder_info {
	size_t struct_size;  /* set by the caller: sizeof(tern_image_encoder_info) */
	int64_t image_size;  /* square side the network sees, after preprocessing */
	int64_t channels;    /* 1 (grey) or 3 (RGB) */
	int64_t n_tokens;    /* rows of the output (patches, + 1 with a class token) */
	int64_t dim;         /* columns of the output */
	int64_t patch_size;
	int has_cls;         /* 1 if row 0 is a class token */
} tern_image_encoder_info;

typedef struct tern_image_encoder {
	size_t struct_size;
	/* Load an encoder from an opened file: hyper-parameters under
	 * `meta_path` ("" = the root: "hparams", "preprocess"), tensor names
	 * prefixed by `tensor_prefix` ("" for a plain vit file). The file
	 * must outlive the encoder. Free *enc with this table's free. */
	int (*load)(const tern_host *host, const tern_file *file, const char *meta_path,
		    const char *tensor_prefix, void **enc);
	/* Free an encoder; accepts NULL. */
	void (*free)(void *enc);
	/* Fill *out (the caller sets out->struct_size). */
	int (*info)(const void *enc, tern_image_encoder_info *out);
	/* Preprocess img as the model's config says (resize, crop, normalize)
	 * and write the token embeddings, after the final norm, into out
	 * [n_tokens][dim] (caller-owned). */
	int (*encode)(const tern_host *host, void *enc, const tern_image *img, float *out);
	/* Same from an already preprocessed planar image
	 * x [channels][image_size][image_size]. */
	int (*encode_planar)(const tern_host *host, void *enc, const float *x, float *out);
} tern_image_encoder;

#ifdef __cplusplus
}
#endif
#endif
