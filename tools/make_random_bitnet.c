/*
 * make_random_bitnet.c: writes a .tern language model shaped like BitNet
 * b1.58 2B4T (architecture "bitnet-b1.58": 30 layers, n_embd 2560, 20
 * heads, 5 KV heads, n_ff 6912, vocabulary 128256, tied embedding) with
 * random ternary weights, for `tern bench model` (docs/BENCHMARKS.md).
 * The numbers it generates are meaningless; the sizes and dtypes are
 * those of a converted 2B4T, so the bytes read per token are real.
 * Tensors are produced while the file is written, so memory stays at one
 * tensor. The defaults are what `tern convert` makes of the Hugging Face
 * checkpoint: ternary matrices as t2 with one f32 scale each, and a 4-bit
 * embedding/head with its 4-bit residual (--head i4r), every row distinct.
 * Not installed; the output is large (0.76 GB; 1.18 GB with --head f16,
 * bitnet.cpp's layout) and belongs under /tmp, not in the repository.
 *
 * usage: make_random_bitnet OUT.tern [--type t2|t3] [--head i4r|i8|i4|f16|bf16|f32]
 *                           [--layers N] [--seed N]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/file.h"
#include "tern/matmul.h"
#include "tern/tensor.h"
#include "tern/tern.h"

#define N_EMBD 2560
#define N_FF 6912
#define N_HEAD 20
#define N_KV 5
#define HEAD_DIM 128
#define N_VOCAB 128256
#define N_CTX 4096
#define BANK 64 /* distinct random rows per tensor, repeated */

typedef struct gen {
	uint64_t seed;
} gen;

static uint64_t next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* Fills dst with desc's bytes: random rows (ternary codes, int8 or small
 * floats), scales that keep activations in a sane range, ones for norms. */
static int fill(void *user, const tern_tensor *desc, void *dst)
{
	gen *g = user;
	const tern_type_traits *tr = tern_type_traits_of(desc->dtype);
	int64_t rows = desc->n_dims == 1 ? 1 : desc->shape[0];
	int64_t cols = desc->n_dims == 1 ? desc->shape[0] : desc->shape[1];
	size_t rb = tern_row_bytes(desc->dtype, cols);
	uint64_t s = g->seed ^ (uint64_t)rows * 0x9e3779b97f4a7c15ull ^ (uint64_t)cols;
	uint8_t *d = dst;
	int8_t *q = malloc((size_t)cols);
	float *f = malloc(sizeof *f * (size_t)cols);

	if (!q || !f) {
		free(q);
		free(f);
		return TERN_E_NOMEM;
	}
	next(&g->seed);
	if (desc->n_dims == 1) {
		for (int64_t j = 0; j < cols; j++)
			f[j] = 1.0f;
		tr->row_from_float(f, d, cols);
	} else {
		/* The embedding/head gets all rows distinct: the head's top
		 * candidates (refined from a residual) must not tie. */
		const bool head = strncmp(desc->name, "token_embd.", 11) == 0;
		int64_t bank = rows < BANK || head ? rows : BANK;

		for (int64_t r = 0; r < bank; r++) {
			for (int64_t j = 0; j < cols; j++) {
				uint64_t v = next(&s) >> 33;

				if (tr->quantized) {
					q[j] = desc->dtype == TERN_DTYPE_I8   ? (int8_t)((int)(v % 255) - 127)
					       : desc->dtype == TERN_DTYPE_I4 ? (int8_t)((int)(v % 15) - 7)
									      : (int8_t)((int)(v % 3) - 1);
				} else {
					f[j] = (float)((double)v / 2147483648.0 * 2.0 - 1.0) * 0.05f;
				}
			}
			if (tr->quantized)
				tr->row_from_i8(q, d + (size_t)r * rb, cols);
			else
				tr->row_from_float(f, d + (size_t)r * rb, cols);
		}
		for (int64_t r = bank; r < rows; r++)
			memcpy(d + (size_t)r * rb, d + (size_t)(r % bank) * rb, rb);
	}
	if (tr->quantized) {
		tern_tensor t = *desc;
		size_t n;

		t.data = dst;
		if (tern_scale_count(desc->dtype, &desc->q, rows, cols, &n) != TERN_OK)
			return TERN_E_INVALID;
		uint8_t *sc = (uint8_t *)dst +
			      ((const uint8_t *)tern_tensor_scales(&t) - (uint8_t *)dst);
		/* 1/sqrt(cols) keeps each output near unit size; the int8 and
		 * 4-bit heads get embedding-sized values (|w| up to ~0.05). */
		/* A residual is a 4-bit head's rounding error: its step is
		 * about 1/14 of the head's. */
		const bool res = strcmp(desc->name, "token_embd.residual") == 0;
		for (size_t i = 0; i < n; i++) {
			float v = desc->dtype == TERN_DTYPE_I8   ? 0.0004f
				  : res				 ? 0.0005f
				  : desc->dtype == TERN_DTYPE_I4 ? 0.007f
								 : 1.0f / sqrtf((float)cols);
			if (desc->q.scale_type == TERN_DTYPE_F16) {
				uint16_t h = tern_f32_to_f16(v);
				memcpy(sc + 2 * i, &h, 2);
			} else {
				memcpy(sc + 4 * i, &v, 4);
			}
		}
	}
	free(q);
	free(f);
	return TERN_OK;
}

static int add(tern_ctx *ctx, tern_writer *w, gen *g, const char *name, tern_dtype dt, int n_dims,
	       int64_t rows, int64_t cols)
{
	tern_tensor t;
	int rc;

	memset(&t, 0, sizeof t);
	t.name = name;
	t.dtype = dt;
	t.n_dims = n_dims;
	t.shape[0] = rows;
	t.shape[1] = cols;
	if (tern_type_traits_of(dt)->quantized) {
		t.q.kind = dt == TERN_DTYPE_I8 ? TERN_SCALE_ROW : TERN_SCALE_TENSOR;
		t.q.scale_type = TERN_DTYPE_F32;
		if (dt == TERN_DTYPE_I4) /* as tern convert --head i4 writes it */
			t.q = (tern_qparams){ TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16 };
	}
	rc = tern_tensor_bytes(ctx, &t, &t.nbytes);
	if (rc == TERN_OK)
		rc = tern_writer_add_tensor_fn(w, &t, fill, g);
	if (rc)
		fprintf(stderr, "make_random_bitnet: %s: %s\n", name, tern_ctx_errmsg(ctx));
	return rc;
}

int main(int argc, char **argv)
{
	const char *out = NULL;
	/* tern convert's default packing (apps/cmd_convert.c). */
	tern_dtype type = TERN_DTYPE_T2, head = TERN_DTYPE_I4;
	bool residual = true;
	long layers = 30;
	gen g = { 12345 };
	tern_ctx *ctx;
	tern_writer *w;
	char hp[512], name[64];
	int rc;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--type") == 0 && i + 1 < argc)
			type = tern_dtype_from_name(argv[++i]);
		else if (strcmp(argv[i], "--head") == 0 && i + 1 < argc) {
			residual = strcmp(argv[++i], "i4r") == 0;
			head = residual ? TERN_DTYPE_I4 : tern_dtype_from_name(argv[i]);
		}
		else if (strcmp(argv[i], "--layers") == 0 && i + 1 < argc)
			layers = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
			g.seed = strtoull(argv[++i], NULL, 10) | 1;
		else if (argv[i][0] != '-' && !out)
			out = argv[i];
		else
			out = NULL, i = argc;
	}
	if (!out || (type != TERN_DTYPE_T2 && type != TERN_DTYPE_T3) || layers < 1 ||
	    layers > 1000 || head == TERN_DTYPE_COUNT || head == TERN_DTYPE_I32 ||
	    tern_type_traits_of(head)->ternary) {
		fputs("usage: make_random_bitnet OUT.tern [--type t2|t3] [--head i4r|i8|i4|f16|bf16|f32]\n"
		      "                          [--layers N] [--seed N]\n",
		      stderr);
		return 2;
	}
	if (tern_ctx_new(NULL, &ctx) || tern_writer_new(ctx, out, &w))
		return 1;
	snprintf(hp, sizeof hp,
		 "{\"block_count\": %ld, \"embedding_length\": %d, \"feed_forward_length\": %d, "
		 "\"attention.head_count\": %d, \"attention.head_count_kv\": %d, "
		 "\"context_length\": %d, \"rope.freq_base\": 500000.0, "
		 "\"attention.layer_norm_rms_epsilon\": 1e-5, "
		 "\"feed_forward_activation\": \"relu2\"}",
		 layers, N_EMBD, N_FF, N_HEAD, N_KV, N_CTX);
	rc = tern_writer_set_architecture(w, "bitnet-b1.58");
	if (rc == TERN_OK)
		rc = tern_writer_set_json(w, "hparams", hp);
	if (rc == TERN_OK)
		rc = tern_writer_set_json(w, "metadata",
					  "{\"source\": \"tools/make_random_bitnet.c: random "
					  "weights shaped like BitNet b1.58 2B4T, for benchmarks\"}");
	if (rc == TERN_OK)
		rc = add(ctx, w, &g, "token_embd.weight", head, 2, N_VOCAB, N_EMBD);
	if (rc == TERN_OK && residual)
		rc = add(ctx, w, &g, "token_embd.residual", TERN_DTYPE_I4, 2, N_VOCAB, N_EMBD);
	if (rc == TERN_OK)
		rc = add(ctx, w, &g, "output_norm.weight", TERN_DTYPE_F32, 1, N_EMBD, 0);
	for (long l = 0; l < layers && rc == TERN_OK; l++) {
		static const struct {
			const char *part;
			int mat;
			int64_t rows, cols;
		} parts[] = {
			{ "attn_norm", 0, N_EMBD, 0 },
			{ "attn_q", 1, N_HEAD * HEAD_DIM, N_EMBD },
			{ "attn_k", 1, N_KV * HEAD_DIM, N_EMBD },
			{ "attn_v", 1, N_KV * HEAD_DIM, N_EMBD },
			{ "attn_sub_norm", 0, N_HEAD * HEAD_DIM, 0 },
			{ "attn_output", 1, N_EMBD, N_HEAD * HEAD_DIM },
			{ "ffn_norm", 0, N_EMBD, 0 },
			{ "ffn_gate", 1, N_FF, N_EMBD },
			{ "ffn_up", 1, N_FF, N_EMBD },
			{ "ffn_sub_norm", 0, N_FF, 0 },
			{ "ffn_down", 1, N_EMBD, N_FF },
		};
		for (size_t p = 0; p < sizeof parts / sizeof parts[0] && rc == TERN_OK; p++) {
			snprintf(name, sizeof name, "blk.%ld.%s.weight", l, parts[p].part);
			rc = add(ctx, w, &g, name, parts[p].mat ? type : TERN_DTYPE_F32,
				 parts[p].mat ? 2 : 1, parts[p].rows, parts[p].cols);
		}
	}
	if (rc == TERN_OK)
		rc = tern_writer_finish(w);
	if (rc)
		fprintf(stderr, "make_random_bitnet: %s: %s\n", out, tern_ctx_errmsg(ctx));
	tern_writer_free(w);
	tern_ctx_free(ctx);
	return rc ? 1 : 0;
}
