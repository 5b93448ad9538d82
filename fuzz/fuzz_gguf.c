/*
 * fuzz_gguf.c: libFuzzer target for the GGUF reader: open the input from
 * memory and, when it opens, touch what a caller would (every tensor
 * byte, each tensor's first and last row, the metadata as JSON), so a
 * reader that accepts a size or offset pointing outside the input shows up
 * under AddressSanitizer. Seeds: fuzz/corpus/gguf
 * (written by tools/make_malformed_gguf.py).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/file.h"
#include "tern/tensor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static tern_ctx *ctx;
	if (!ctx) {
		tern_ctx_params cp = tern_ctx_default_params();
		cp.n_threads = 1;
		if (tern_ctx_new(&cp, &ctx) != TERN_OK)
			return 0;
	}
	/* An exact-size copy so any read past the input is caught. */
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	/* Keep the target on the GGUF reader: the detector would send other
	 * magics elsewhere. */
	if (size >= 4)
		memcpy(buf, "GGUF", 4);
	volatile uint8_t sink = 0;
	tern_file *f;
	if (tern_file_open_memory(ctx, buf, size, &f) == TERN_OK) {
		for (size_t i = 0; i < tern_file_n_tensors(f); i++) {
			const tern_tensor *t = tern_file_tensor(f, i);
			/* Every byte the reader vouches for must be readable. */
			const uint8_t *p = t->data;
			for (size_t k = 0; k < t->nbytes; k++)
				sink ^= p[k];
			if (tern_file_find(f, t->name) != t)
				__builtin_trap();
			int64_t rows = tern_tensor_rows(t), cols = tern_tensor_cols(t);
			float *row = malloc((size_t)cols * sizeof *row);
			if (row) {
				tern_tensor_row_to_float(t, 0, row);
				tern_tensor_row_to_float(t, rows - 1, row);
				free(row);
			}
		}
		char *json;
		if (tern_meta_to_json(ctx, tern_file_meta(f), false, &json) == TERN_OK)
			tern_free(json);
		tern_file_close(f);
	}
	free(buf);
	(void)sink;
	return 0;
}
