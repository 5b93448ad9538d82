/*
 * make_model.c: writes an "example-linear" model that tells red, green and
 * blue images apart: class c weighs its own channel +1 and the others -1.
 * Usage: make_model OUT.tern
 */
#include <stdio.h>
#include <stdlib.h>

#include <tern/file.h>

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s OUT.tern\n", argv[0]);
		return 2;
	}
	enum { SIDE = 4, IN = 3 * SIDE * SIDE, N = 3 };
	tern_ctx *ctx;
	if (tern_ctx_new(NULL, &ctx))
		return 1;
	float w[N * IN];
	for (int c = 0; c < N; c++)
		for (int i = 0; i < IN; i++)
			w[c * IN + i] = i / (SIDE * SIDE) == c ? 0.5f : -0.5f;
	tern_qparams qp = { TERN_SCALE_ROW, 0, TERN_DTYPE_F32 };
	tern_tensor *weight = NULL, *bias = NULL;
	int rc = tern_tensor_new(ctx, TERN_DTYPE_T2, &qp, 2, (int64_t[]){ N, IN }, &weight);
	if (!rc)
		rc = tern_pack_ternary_exact(ctx, w, weight);
	tern_qparams none = { TERN_SCALE_NONE, 0, TERN_DTYPE_F32 };
	if (!rc)
		rc = tern_tensor_new(ctx, TERN_DTYPE_F32, &none, 1, (int64_t[]){ N }, &bias);
	tern_writer *wr = NULL;
	if (!rc) {
		weight->name = "weight";
		bias->name = "bias"; /* zero bias */
		rc = tern_writer_new(ctx, argv[1], &wr);
	}
	if (!rc)
		rc = tern_writer_set_architecture(wr, "example-linear");
	if (!rc)
		rc = tern_writer_set_json(wr, "side", "4");
	if (!rc)
		rc = tern_writer_set_json(wr, "labels", "[\"red\", \"green\", \"blue\"]");
	if (!rc)
		rc = tern_writer_add_tensor(wr, weight);
	if (!rc)
		rc = tern_writer_add_tensor(wr, bias);
	if (!rc)
		rc = tern_writer_finish(wr);
	if (rc)
		fprintf(stderr, "make_model: %s: %s\n", tern_status_str(rc), tern_ctx_errmsg(ctx));
	tern_writer_free(wr);
	tern_tensor_free(weight);
	tern_tensor_free(bias);
	tern_ctx_free(ctx);
	return rc ? 1 : 0;
}
