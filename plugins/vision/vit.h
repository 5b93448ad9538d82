/*
 * vit.h (private to plugins/vision): the ternary ViT, as docs/FORMAT.md
 * ("Architecture vit") lays it out: what a model is (vit_hparams,
 * vit_preprocess), what it owns (vit_model: pointers into the file's
 * mapping) and what it computes with (the context's scratch slots 1..4,
 * sized once per model and image size, so nothing is allocated per image
 * once warm).
 *
 * A loaded vit_model is read-only: several threads may run it, each with
 * its own context.
 */
#ifndef TERN_PLUGINS_VISION_VIT_H
#define TERN_PLUGINS_VISION_VIT_H

#include <stdbool.h>
#include <stdint.h>

#include "tern/file.h"
#include "tern/image.h"
#include "tern/tensor.h"
#include "tern/tern.h"

typedef enum vit_pool { VIT_POOL_CLS = 0, VIT_POOL_MEAN = 1, VIT_POOL_NONE = 2 } vit_pool;

/* "resize": "none" in the preprocess header. */
#define VIT_RESIZE_NONE (-1)

typedef struct vit_hparams {
	int64_t image_size, channels, patch, dim, depth, heads, mlp_dim, n_classes;
	vit_pool pool;
	bool sincos;         /* fixed 2-D sin-cos position embedding, else learned */
	bool gelu_tanh;      /* tanh approximation, else erf */
	bool patch_ternary;  /* patch_embed.weight is t2 and runs as a BitLinear */
	bool final_norm;
	float eps;
	/* derived */
	int64_t grid;        /* image_size / patch */
	int64_t n_patches;   /* grid * grid */
	int64_t n_tokens;    /* n_patches (+ 1 with a class token) */
	int64_t head_dim;    /* dim / heads */
	int64_t patch_len;   /* channels * patch * patch */
} vit_hparams;

typedef struct vit_preprocess {
	bool grayscale;
	int resize;            /* tern_resize_mode or VIT_RESIZE_NONE */
	int64_t resize_size, crop_size;
	float scale;
	float mean[3], std[3]; /* [channels] */
} vit_preprocess;

typedef struct vit_block {
	const float *ln1_w, *ln1_b;          /* [dim] */
	const tern_tensor *wq, *wk, *wv, *wo; /* [dim][dim] t2 */
	const float *bq, *bk, *bv, *bo;       /* [dim] or NULL */
	const float *ln2_w, *ln2_b;          /* [dim] */
	const tern_tensor *fc1;              /* [mlp_dim][dim] t2 */
	const float *b1;                     /* [mlp_dim] */
	const tern_tensor *fc2;              /* [dim][mlp_dim] t2 */
	const float *b2;                     /* [dim] */
} vit_block;

typedef struct vit_model {
	vit_hparams hp;
	vit_preprocess pp;
	const tern_tensor *patch_w; /* [dim][patch_len] f32 or t2 */
	const float *patch_b;       /* [dim] */
	const float *cls;           /* [dim] or NULL */
	const float *pos;           /* [n_tokens][dim]: the file's, or pos_owned */
	float *pos_owned;           /* sin-cos table (tern_alloc) or NULL */
	vit_block *blocks;          /* [depth] */
	const float *norm_w, *norm_b;  /* [dim] or NULL */
	const tern_tensor *head_w;  /* [n_classes][dim] f32 or NULL */
	const float *head_b;        /* [n_classes] or NULL */
	const char **labels;        /* [n_classes] strings owned by the file, or NULL */
} vit_model;

/* Time spent in forward passes, for the benchmark (seconds, accumulated). */
typedef struct vit_stats {
	double ternary_gemm; /* tern_matmul_q of the t2 weights (not the activation quantization) */
	double total;
	/* the same in CPU time of the process (all threads): on a busy
	 * machine the share of work is better read from these */
	double ternary_gemm_cpu, total_cpu;
} vit_stats;

/* Load and validate a vit from file: hparams/preprocess under meta_path
 * ("" = root), tensor names prefixed by prefix. Every tensor's presence,
 * dtype and shape is checked; failures are TERN_E_FORMAT naming the key
 * or tensor. Caller frees *out with vit_model_free; file must outlive it. */
int vit_model_load(tern_ctx *ctx, const tern_file *file, const char *meta_path,
		   const char *prefix, vit_model **out);
void vit_model_free(vit_model *m);

/* Parse and check a "preprocess" object against hp (channels, image_size). */
int vit_preprocess_parse(tern_ctx *ctx, const tern_meta *pre, const vit_hparams *hp,
			 vit_preprocess *out);

/* Turn img into the network input x [channels][crop][crop] (caller-owned):
 * planar floats of the raw pixel values, resize, center crop, then
 * scale, mean and std. Working memory comes from scratch slot 4. */
int vit_preprocess_image(tern_ctx *ctx, const vit_preprocess *pp, int64_t channels,
			 const tern_image *img, float *x);

/* The fixed 2-D sin-cos table of docs/FORMAT.md: out [grid*grid][dim]. */
void vit_sincos_table(int64_t grid, int64_t dim, float *out);

/* Forward pass from a preprocessed input x [channels][image_size][image_size].
 * tokens_out: if not NULL, every token after the final norm
 * [n_tokens][dim]. logits_out: if not NULL (and n_classes > 0),
 * [n_classes]. stats: if not NULL, timings are added to it. Uses scratch
 * slots 1..3 (slot 0 is the kernels'). */
int vit_forward(tern_ctx *ctx, const vit_model *m, const float *x, float *tokens_out,
		float *logits_out, vit_stats *stats);

/* Import a Hugging Face SigLIP vision tower (BitVLA) into w: siglip.c.
 * src may be NULL (then src_path is read as a directory holding
 * config.json and model.safetensors, or a .safetensors file with
 * config.json beside it). ternary_type: T2 or T3 for the linears.
 * TERN_E_UNSUPPORTED if it is not SigLIP. */
int vit_convert_siglip(tern_ctx *ctx, const char *src_path, const tern_file *src,
		       tern_dtype ternary_type, tern_writer *w);

#endif
