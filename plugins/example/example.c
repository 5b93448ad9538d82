/*
 * example.c: a complete tern plugin, small enough to read in one sitting,
 * built against the installed SDK (see Makefile and docs/PLUGINS.md).
 *
 * Architecture "example-linear": an image classifier with one ternary
 * layer. The image is resized to side x side, turned into planar RGB in
 * [0, 1], and the logits are W x + b with W a T2 matrix
 * [n_classes][3 * side * side] and b f32 [n_classes]. Labels come from the
 * metadata key "labels" (an array of strings), the side from "side".
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <tern/matmul.h>
#include <tern/ops.h>
#include <tern/plugin.h>

typedef struct example_model {
	int64_t side;              /* input image side after resizing */
	int64_t n_classes;
	const tern_tensor *weight; /* [n_classes][3 * side * side], T2, in the file's mmap */
	const float *bias;         /* [n_classes] */
	const char **labels;       /* [n_classes], strings owned by the file's metadata */
} example_model;

static void example_free(void *p)
{
	example_model *m = p;
	if (!m)
		return;
	free(m->labels);
	free(m);
}

static int example_load(const tern_host *host, const tern_file *file, void **out)
{
	tern_ctx *ctx = host->ctx;
	const tern_meta *meta = tern_file_meta(file);
	int64_t side = tern_meta_get_int(meta, "side", 0);
	if (side < 1 || side > 256)
		return tern_error(ctx, TERN_E_FORMAT, "example-linear: metadata 'side' must be 1..256");
	const tern_tensor *w = tern_file_find(file, "weight");
	const tern_tensor *b = tern_file_find(file, "bias");
	if (!w || !b)
		return tern_error(ctx, TERN_E_FORMAT, "example-linear: tensors 'weight' and 'bias' are required");
	int64_t n = tern_tensor_rows(w);
	if (w->dtype != TERN_DTYPE_T2 || tern_tensor_cols(w) != 3 * side * side)
		return tern_error(ctx, TERN_E_FORMAT, "example-linear: 'weight' must be t2 [n][3*side*side]");
	if (b->dtype != TERN_DTYPE_F32 || b->n_dims != 1 || b->shape[0] != n)
		return tern_error(ctx, TERN_E_FORMAT, "example-linear: 'bias' must be f32 [%lld]", (long long)n);
	const tern_meta *labels = tern_meta_get(meta, "labels");
	if (!labels || tern_meta_count(labels) != (size_t)n)
		return tern_error(ctx, TERN_E_FORMAT, "example-linear: need %lld 'labels'", (long long)n);

	example_model *m = calloc(1, sizeof *m);
	if (!m || !(m->labels = calloc((size_t)n, sizeof *m->labels))) {
		free(m);
		return tern_error(ctx, TERN_E_NOMEM, "example-linear: out of memory");
	}
	for (int64_t i = 0; i < n; i++) {
		m->labels[i] = tern_meta_as_string(tern_meta_item(labels, (size_t)i), NULL);
		if (!m->labels[i]) {
			example_free(m);
			return tern_error(ctx, TERN_E_FORMAT, "example-linear: label %lld is not a string", (long long)i);
		}
	}
	m->side = side;
	m->n_classes = n;
	m->weight = w;
	m->bias = b->data;
	*out = m;
	return TERN_OK;
}

static int example_classify(const tern_host *host, void *p, const tern_image *img, int k,
			    tern_class *out, int *n_out)
{
	example_model *m = p;
	tern_ctx *ctx = host->ctx;
	int64_t hw = (int64_t)img->w * img->h, in = 3 * m->side * m->side;
	/* slot 0 belongs to tern_matmul, which runs below; slots 1..7 are ours */
	float *planar = tern_ctx_scratch(ctx, 1, (size_t)(3 * hw + in + m->n_classes) * sizeof(float));
	if (!planar)
		return TERN_E_NOMEM;
	float *x = planar + 3 * hw, *logits = x + in;
	const float mean[3] = { 0, 0, 0 }, std[3] = { 1, 1, 1 };
	int rc = tern_image_to_planar(img, 0, mean, std, planar);
	if (!rc)
		rc = tern_resize(planar, 3, img->h, img->w, x, m->side, m->side, TERN_RESIZE_BILINEAR);
	if (!rc)
		rc = tern_matmul(ctx, m->weight, x, 1, in, logits, m->n_classes);
	if (rc)
		return rc;
	tern_vec_add(logits, m->bias, m->n_classes);
	tern_softmax(logits, m->n_classes);
	int n = k < m->n_classes ? k : (int)m->n_classes;
	for (int i = 0; i < n; i++) {
		int best = -1;
		for (int c = 0; c < m->n_classes; c++) {
			int taken = 0;
			for (int j = 0; j < i; j++)
				taken |= out[j].index == c;
			if (!taken && (best < 0 || logits[c] > logits[best]))
				best = c;
		}
		out[i] = (tern_class){ best, logits[best], m->labels[best] };
	}
	*n_out = n;
	return TERN_OK;
}

static const tern_plugin_ops ops = {
	.struct_size = sizeof ops,
	.load = example_load,
	.free = example_free,
	.classify = example_classify,
};

static const char *const architectures[] = { "example-linear", NULL };

static const tern_plugin_desc desc = {
	.struct_size = sizeof desc,
	.abi_major = TERN_PLUGIN_ABI_MAJOR,
	.abi_minor = TERN_PLUGIN_ABI_MINOR,
	.name = "example",
	.version = "1.0.0",
	.description = "example: a one-layer ternary image classifier",
	.architectures = architectures,
	.tasks = TERN_TASK_CLASSIFY,
	.flags = TERN_PLUGIN_FLAG_SHARED_MODEL,
	.ops = &ops,
};

TERN_PLUGIN_EXPORT const tern_plugin_desc *tern_plugin_entry(void);

const tern_plugin_desc *tern_plugin_entry(void)
{
	return &desc;
}
