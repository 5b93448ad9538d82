/*
 * plugin.c: the vision plugin's descriptor and entry points: architecture
 * "vit" (vit.c), the classify task, the "image-encoder" component
 * (include/tern/vision.h) and `tern convert` of Hugging Face SigLIP vision
 * towers (siglip.c). Models are read-only after load, so one model may
 * serve several threads.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/vision/vit.h"
#include "tern/ops.h"
#include "tern/plugin.h"
#include "tern/vision.h"

/* Per call: the preprocessed image and the logits (slots 1, 2 and 4 are
 * the forward pass's and preprocessing's). */
#define SLOT_CALL 3

static int vision_load(const tern_host *host, const tern_file *file, void **out)
{
	vit_model *m;
	int rc = vit_model_load(host->ctx, file, "", "", &m);
	if (rc == TERN_OK)
		*out = m;
	return rc;
}

static void vision_free(void *model)
{
	vit_model_free(model);
}

/* The preprocessed input [channels][S][S] followed by `extra` floats. */
static float *call_buffer(tern_ctx *ctx, const vit_model *m, int64_t extra)
{
	const vit_hparams *hp = &m->hp;
	size_t n;
	if (tern_size_mul((size_t)hp->channels, (size_t)(hp->image_size * hp->image_size), &n) ||
	    tern_size_add(n, (size_t)extra, &n) || tern_size_mul(n, sizeof(float), &n)) {
		tern_error(ctx, TERN_E_OVERFLOW, "vit: input too large");
		return NULL;
	}
	return tern_ctx_scratch(ctx, SLOT_CALL, n);
}

static int vision_classify(const tern_host *host, void *model, const tern_image *img, int k,
			   tern_class *out, int *n_out)
{
	const vit_model *m = model;
	tern_ctx *ctx = host->ctx;
	const int64_t C = m->hp.n_classes, in = m->hp.channels * m->hp.image_size * m->hp.image_size;
	*n_out = 0;
	if (!C)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "vit: this model is an image encoder (n_classes 0): it has no classes");
	if (k < 1)
		return tern_error(ctx, TERN_E_INVALID, "vit: classify: k must be >= 1 (got %d)", k);
	float *x = call_buffer(ctx, m, C);
	if (!x)
		return TERN_E_NOMEM;
	float *probs = x + in;
	int rc = vit_preprocess_image(ctx, &m->pp, m->hp.channels, img, x);
	if (!rc)
		rc = vit_forward(ctx, m, x, NULL, probs, NULL);
	if (rc)
		return rc;
	tern_softmax(probs, C);
	const int n = k < C ? k : (int)C;
	/* selection of the n best, ties to the lower index */
	for (int i = 0; i < n; i++) {
		int64_t best = -1;
		for (int64_t c = 0; c < C; c++) {
			bool taken = false;
			for (int j = 0; j < i && !taken; j++)
				taken = out[j].index == c;
			if (!taken && (best < 0 || probs[c] > probs[best]))
				best = c;
		}
		out[i] = (tern_class){ (int)best, probs[best], m->labels ? m->labels[best] : NULL };
	}
	*n_out = n;
	return TERN_OK;
}

/* ---- the image-encoder component ----------------------------------------- */

static int enc_load(const tern_host *host, const tern_file *file, const char *meta_path,
		    const char *prefix, void **out)
{
	vit_model *m;
	int rc = vit_model_load(host->ctx, file, meta_path, prefix, &m);
	if (rc == TERN_OK)
		*out = m;
	return rc;
}

static int enc_info(const void *enc, tern_image_encoder_info *out)
{
	const vit_model *m = enc;
	if (!m || !out || out->struct_size < sizeof *out)
		return TERN_E_INVALID;
	out->image_size = m->hp.image_size;
	out->channels = m->hp.channels;
	out->n_tokens = m->hp.n_tokens;
	out->dim = m->hp.dim;
	out->patch_size = m->hp.patch;
	out->has_cls = m->cls != NULL;
	return TERN_OK;
}

static int enc_encode_planar(const tern_host *host, void *enc, const float *x, float *out)
{
	if (!enc || !x || !out)
		return tern_error(host->ctx, TERN_E_INVALID, "image-encoder: NULL argument");
	return vit_forward(host->ctx, enc, x, out, NULL, NULL);
}

static int enc_encode(const tern_host *host, void *enc, const tern_image *img, float *out)
{
	const vit_model *m = enc;
	if (!enc || !img || !out)
		return tern_error(host->ctx, TERN_E_INVALID, "image-encoder: NULL argument");
	float *x = call_buffer(host->ctx, m, 0);
	if (!x)
		return TERN_E_NOMEM;
	int rc = vit_preprocess_image(host->ctx, &m->pp, m->hp.channels, img, x);
	return rc ? rc : vit_forward(host->ctx, m, x, out, NULL, NULL);
}

static const tern_image_encoder image_encoder_v1 = {
	.struct_size = sizeof image_encoder_v1,
	.load = enc_load,
	.free = vision_free,
	.info = enc_info,
	.encode = enc_encode,
	.encode_planar = enc_encode_planar,
};

static const void *vision_component(const char *interface, uint32_t version)
{
	if (interface && strcmp(interface, TERN_IMAGE_ENCODER_INTERFACE) == 0 &&
	    version == TERN_IMAGE_ENCODER_VERSION)
		return &image_encoder_v1;
	return NULL;
}

static int vision_convert(const tern_host *host, const char *src_path, const tern_file *src,
			  const tern_convert_opts *opts, tern_writer *w)
{
	/* the ternary packing is honoured; floats are always written f32,
	 * which is what the vit loader takes */
	tern_dtype tt = TERN_DTYPE_T2;
	if (opts && opts->struct_size >= offsetof(tern_convert_opts, ternary_type) + sizeof(tern_dtype) &&
	    opts->ternary_type == TERN_DTYPE_T3)
		tt = TERN_DTYPE_T3;
	return vit_convert_siglip(host->ctx, src_path, src, tt, w);
}

static const tern_plugin_ops ops = {
	.struct_size = sizeof ops,
	.load = vision_load,
	.free = vision_free,
	.component = vision_component,
	.classify = vision_classify,
	.convert = vision_convert,
};

static const char *const architectures[] = { "vit", NULL };

static const tern_component_desc components[] = {
	{ TERN_IMAGE_ENCODER_INTERFACE, TERN_IMAGE_ENCODER_VERSION },
};

static const tern_plugin_desc desc = {
	.struct_size = sizeof desc,
	.abi_major = TERN_PLUGIN_ABI_MAJOR,
	.abi_minor = TERN_PLUGIN_ABI_MINOR,
	.name = "vision",
	.version = "0.1.0",
	.description = "vision: ternary ViTs (classification, image encoder, SigLIP import)",
	.architectures = architectures,
	.components = components,
	.n_components = sizeof components / sizeof components[0],
	.tasks = TERN_TASK_CLASSIFY,
	.flags = TERN_PLUGIN_FLAG_SHARED_MODEL,
	.ops = &ops,
};

TERN_PLUGIN_EXPORT const tern_plugin_desc *tern_plugin_entry(void);

const tern_plugin_desc *tern_plugin_entry(void)
{
	return &desc;
}
