/*
 * convert_ak42.c: converts a bitllama2.c "ak42" checkpoint and its llama2.c
 * tokenizer.bin into a .tern file with the text plugin's converter
 * (plugins/text/convert.c), without the plugin registry. `make
 * bundled-model` uses it to regenerate models/bitllama2c-3M.tern; `tern
 * convert MODEL.bin -o OUT.tern` does the same through the plugin.
 *
 * usage: convert_ak42 MODEL.bin TOKENIZER.bin OUT.tern
 */
#include <stdio.h>

#include "plugins/text/convert.h"

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s MODEL.bin TOKENIZER.bin OUT.tern\n", argv[0]);
		return 2;
	}
	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = 1;
	tern_ctx *ctx;
	if (tern_ctx_new(&p, &ctx) != TERN_OK) {
		fprintf(stderr, "%s: cannot create a context\n", argv[0]);
		return 1;
	}
	tern_writer *w = NULL;
	int rc = tern_writer_new(ctx, argv[3], &w);
	if (rc == TERN_OK)
		rc = text_convert_ak42(ctx, argv[1], argv[2], NULL, w);
	if (rc == TERN_OK)
		rc = tern_writer_finish(w);
	if (rc != TERN_OK)
		fprintf(stderr, "%s: %s (%s)\n", argv[0], tern_ctx_errmsg(ctx), tern_status_str(rc));
	tern_writer_free(w);
	tern_ctx_free(ctx);
	return rc == TERN_OK ? 0 : 1;
}
