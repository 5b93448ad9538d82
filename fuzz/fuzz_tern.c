/*
 * fuzz_tern.c: libFuzzer target for the .tern reader. Opens the input from
 * memory and, when it is accepted, touches every tensor byte and walks the
 * metadata, so a reader that accepts a lie (a size or offset that points
 * outside the input) shows up under AddressSanitizer. .ci/fuzz builds and
 * runs it; fuzz/corpus/tern holds the seeds.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tern/file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t walk(const tern_meta *m, int depth)
{
	size_t n = 1;
	if (depth > 100)
		return n;
	for (size_t i = 0; i < tern_meta_count(m); i++) {
		const char *k = tern_meta_key(m, i);
		if (k)
			n += strlen(k);
		n += walk(tern_meta_item(m, i), depth + 1);
	}
	size_t len;
	if (tern_meta_as_string(m, &len))
		n += len;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static tern_ctx *ctx;
	if (!ctx) {
		tern_ctx_params p = tern_ctx_default_params();
		p.n_threads = 1;
		if (tern_ctx_new(&p, &ctx) != TERN_OK)
			return 0;
	}
	/* The detector would send other magics to the GGUF and safetensors
	 * readers; keep this target on .tern by forcing the magic. */
	if (size < 4 || memcmp(data, "TERN", 4) != 0)
		return 0;
	tern_file *f;
	if (tern_file_open_memory(ctx, data, size, &f) != TERN_OK)
		return 0;
	volatile uint8_t sink = 0;
	for (size_t i = 0; i < tern_file_n_tensors(f); i++) {
		const tern_tensor *t = tern_file_tensor(f, i);
		const uint8_t *p = t->data;
		for (size_t k = 0; k < t->nbytes; k++)
			sink ^= p[k];
		if (tern_file_find(f, t->name) != t)
			__builtin_trap();
	}
	sink ^= (uint8_t)walk(tern_file_meta(f), 0);
	sink ^= (uint8_t)strlen(tern_file_architecture(f));
	tern_file_close(f);
	(void)sink;
	return 0;
}
