/*
 * vit_bench.c: the ViT benchmark of docs/BENCHMARKS.md (not a test). It
 * writes a ViT-B/16-shaped model with random ternary weights (224x224,
 * patch 16, dim 768, depth 12, 12 heads, MLP 3072, class token, 1000
 * classes: 86.6M parameters) to a temporary .tern file, loads it with the
 * vision plugin's code (compiled in, so the forward pass can time its
 * ternary GEMMs), and reports images/s and the share of time spent in
 * the ternary GEMM (tern_matmul_q) for each thread count asked for.
 *
 *   tools/vit_bench [-t 1,2] [-n IMAGES] [--small] [--keep MODEL.tern]
 *
 * --small runs a 28x28 grey, patch 4, dim 128, depth 6 model instead
 * (the shape of a Fashion-MNIST classifier) for a quick look; --keep
 * leaves the model file at the given path (for `tern eval classify`).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plugins/vision/vit.h"
#include "tern/file.h"

typedef struct vshape {
	int S, C, P, D, depth, heads, M, classes;
} vshape;

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float frand(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return (float)((rng * 2685821657736338717ull) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

static int add_f32(tern_ctx *ctx, tern_writer *w, const char *name, int64_t rows, int64_t cols,
		   float mul, float add)
{
	tern_tensor t = { .name = name, .dtype = TERN_DTYPE_F32, .n_dims = cols ? 2 : 1,
			  .shape = { rows, cols } };
	size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
	float *v = malloc(n * sizeof *v);
	if (!v)
		return TERN_E_NOMEM;
	for (size_t i = 0; i < n; i++)
		v[i] = add + mul * frand();
	t.data = v;
	int rc = tern_tensor_bytes(ctx, &t, &t.nbytes);
	if (!rc)
		rc = tern_writer_add_tensor(w, &t);
	free(v);
	return rc;
}

static int add_t2(tern_ctx *ctx, tern_writer *w, const char *name, int64_t rows, int64_t cols)
{
	tern_qparams qp = { TERN_SCALE_TENSOR, 0, TERN_DTYPE_F32 };
	int64_t dims[2] = { rows, cols };
	tern_tensor *t;
	float *v = malloc((size_t)(rows * cols) * sizeof *v);
	int rc = v ? tern_tensor_new(ctx, TERN_DTYPE_T2, &qp, 2, dims, &t) : TERN_E_NOMEM;
	if (rc) {
		free(v);
		return rc;
	}
	for (int64_t i = 0; i < rows * cols; i++)
		v[i] = 0.02f * frand();
	rc = tern_ternarize(ctx, v, TERN_TERNARIZE_ABSMEAN, t);
	t->name = name;
	if (!rc)
		rc = tern_writer_add_tensor(w, t);
	t->name = NULL;
	tern_tensor_free(t);
	free(v);
	return rc;
}

static int write_model(tern_ctx *ctx, const vshape *s, const char *path)
{
	tern_writer *w;
	char buf[1024], name[64];
	int rc = tern_writer_new(ctx, path, &w);
	if (rc)
		return rc;
	snprintf(buf, sizeof buf,
		 "{\"image_size\": %d, \"channels\": %d, \"patch_size\": %d, \"dim\": %d, "
		 "\"depth\": %d, \"heads\": %d, \"mlp_dim\": %d, \"n_classes\": %d, \"pool\": \"cls\", "
		 "\"pos_embed\": \"learned\", \"gelu\": \"erf\", \"norm_eps\": 1e-6, "
		 "\"patch_ternary\": false, \"final_norm\": true}",
		 s->S, s->C, s->P, s->D, s->depth, s->heads, s->M, s->classes);
	rc = tern_writer_set_architecture(w, "vit");
	if (!rc)
		rc = tern_writer_set_json(w, "hparams", buf);
	snprintf(buf, sizeof buf,
		 "{\"grayscale\": %s, \"resize\": \"bilinear\", \"resize_size\": %d, "
		 "\"crop_size\": %d, \"scale\": 0.00392156862745098, \"mean\": %s, \"std\": %s}",
		 s->C == 1 ? "true" : "false", s->S, s->S, s->C == 1 ? "[0.5]" : "[0.5, 0.5, 0.5]",
		 s->C == 1 ? "[0.5]" : "[0.5, 0.5, 0.5]");
	if (!rc)
		rc = tern_writer_set_json(w, "preprocess", buf);
	if (!rc)
		rc = tern_writer_set_json(w, "metadata.source", "\"tools/vit_bench: random weights\"");
	const int64_t D = s->D, T = (int64_t)(s->S / s->P) * (s->S / s->P) + 1;
	if (!rc)
		rc = add_f32(ctx, w, "patch_embed.weight", D, (int64_t)s->C * s->P * s->P, 0.05f, 0);
	if (!rc)
		rc = add_f32(ctx, w, "patch_embed.bias", D, 0, 0.01f, 0);
	if (!rc)
		rc = add_f32(ctx, w, "cls_token", D, 0, 0.1f, 0);
	if (!rc)
		rc = add_f32(ctx, w, "pos_embed", T, D, 0.1f, 0);
	static const char *const lin[4] = { "q", "k", "v", "o" };
	for (int i = 0; !rc && i < s->depth; i++) {
#define NAME(...) (snprintf(name, sizeof name, __VA_ARGS__), name)
		rc = add_f32(ctx, w, NAME("blk.%d.norm1.weight", i), D, 0, 0.05f, 1);
		if (!rc)
			rc = add_f32(ctx, w, NAME("blk.%d.norm1.bias", i), D, 0, 0.05f, 0);
		for (int j = 0; j < 4 && !rc; j++) {
			rc = add_t2(ctx, w, NAME("blk.%d.attn.%s.weight", i, lin[j]), D, D);
			if (!rc)
				rc = add_f32(ctx, w, NAME("blk.%d.attn.%s.bias", i, lin[j]), D, 0, 0.01f, 0);
		}
		if (!rc)
			rc = add_f32(ctx, w, NAME("blk.%d.norm2.weight", i), D, 0, 0.05f, 1);
		if (!rc)
			rc = add_f32(ctx, w, NAME("blk.%d.norm2.bias", i), D, 0, 0.05f, 0);
		if (!rc)
			rc = add_t2(ctx, w, NAME("blk.%d.mlp.fc1.weight", i), s->M, D);
		if (!rc)
			rc = add_f32(ctx, w, NAME("blk.%d.mlp.fc1.bias", i), s->M, 0, 0.01f, 0);
		if (!rc)
			rc = add_t2(ctx, w, NAME("blk.%d.mlp.fc2.weight", i), D, s->M);
		if (!rc)
			rc = add_f32(ctx, w, NAME("blk.%d.mlp.fc2.bias", i), D, 0, 0.01f, 0);
#undef NAME
	}
	if (!rc)
		rc = add_f32(ctx, w, "norm.weight", D, 0, 0.05f, 1);
	if (!rc)
		rc = add_f32(ctx, w, "norm.bias", D, 0, 0.05f, 0);
	if (!rc)
		rc = add_f32(ctx, w, "head.weight", s->classes, D, 0.05f, 0);
	if (!rc)
		rc = add_f32(ctx, w, "head.bias", s->classes, 0, 0.01f, 0);
	if (!rc)
		rc = tern_writer_finish(w);
	tern_writer_free(w);
	return rc;
}

static double params_of(const vshape *s)
{
	double D = s->D, T = (double)(s->S / s->P) * (s->S / s->P) + 1;
	double blk = 4 * (D * D + D) + 2 * D * s->M + s->M + D + 4 * D;
	return D * (s->C * s->P * s->P + 1) + D + T * D + s->depth * blk + 2 * D +
	       (double)s->classes * (D + 1);
}

int main(int argc, char **argv)
{
	vshape vitb = { 224, 3, 16, 768, 12, 12, 3072, 1000 };
	vshape small = { 28, 1, 4, 128, 6, 4, 512, 10 };
	const vshape *s = &vitb;
	const char *threads = "1,2", *keep = NULL;
	int n_img = 5;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
			threads = argv[++i];
		else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			n_img = atoi(argv[++i]);
		else if (strcmp(argv[i], "--small") == 0)
			s = &small;
		else if (strcmp(argv[i], "--keep") == 0 && i + 1 < argc)
			keep = argv[++i];
		else {
			fprintf(stderr, "usage: %s [-t 1,2] [-n IMAGES] [--small] [--keep MODEL.tern]\n",
				argv[0]);
			return 2;
		}
	}
	if (n_img < 1)
		n_img = 1;
	char path[256];
	if (keep)
		snprintf(path, sizeof path, "%s", keep);
	else
		snprintf(path, sizeof path, "/tmp/tern_vit_bench_%d.tern", (int)getpid());
	tern_ctx *ctx;
	if (tern_ctx_new(NULL, &ctx))
		return 1;
	int rc = write_model(ctx, s, path);
	tern_file *f = NULL;
	vit_model *m = NULL;
	if (!rc)
		rc = tern_file_open(ctx, path, &f);
	if (!rc)
		rc = vit_model_load(ctx, f, "", "", &m);
	if (!keep)
		unlink(path); /* the mapping stays valid */
	if (rc) {
		fprintf(stderr, "vit_bench: %s\n", tern_ctx_errmsg(ctx));
		tern_ctx_free(ctx);
		return 1;
	}
	tern_ctx_free(ctx);
	printf("model: %dx%d, patch %d, dim %d, depth %d, heads %d, mlp %d, %d classes, "
	       "%.1fM parameters, %lld tokens\n",
	       s->S, s->S, s->P, s->D, s->depth, s->heads, s->M, s->classes, params_of(s) / 1e6,
	       (long long)m->hp.n_tokens);
	size_t in = (size_t)s->C * s->S * s->S;
	float *x = malloc(in * sizeof *x), *logits = malloc((size_t)s->classes * sizeof *logits);
	for (size_t i = 0; i < in; i++)
		x[i] = frand();
	for (const char *p = threads; *p;) {
		int nt = atoi(p);
		tern_ctx_params cp = tern_ctx_default_params();
		cp.n_threads = nt;
		if (tern_ctx_new(&cp, &ctx) == TERN_OK) {
			vit_stats warm = { 0 }, st = { 0 };
			rc = vit_forward(ctx, m, x, NULL, logits, &warm); /* sizes the scratch */
			for (int i = 0; !rc && i < n_img; i++)
				rc = vit_forward(ctx, m, x, NULL, logits, &st);
			if (rc)
				fprintf(stderr, "vit_bench: %s\n", tern_ctx_errmsg(ctx));
			else
				printf("threads %d (%s kernels): %.2f images/s (%.1f ms/image), ternary "
				       "GEMM %.1f%% of the time; CPU time %.1f ms/image, ternary GEMM "
				       "%.1f%% of it\n",
				       tern_ctx_threads(ctx), tern_ctx_kernel(ctx), n_img / st.total,
				       1e3 * st.total / n_img, 100.0 * st.ternary_gemm / st.total,
				       1e3 * st.total_cpu / n_img,
				       100.0 * st.ternary_gemm_cpu / st.total_cpu);
			tern_ctx_free(ctx);
		}
		p = strchr(p, ',');
		if (!p)
			break;
		p++;
	}
	free(x);
	free(logits);
	vit_model_free(m);
	tern_file_close(f);
	return rc ? 1 : 0;
}
