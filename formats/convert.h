/*
 * convert.h (private): the generic GGUF -> .tern conversion that
 * tern_convert falls back on when no plugin converts a GGUF file
 * (docs/FORMAT.md, "Converted GGUF files"). It describes the output on a
 * writer; the tensors are produced at tern_writer_finish, one at a time,
 * so the conversion state must live until then.
 */
#ifndef TERN_FORMATS_CONVERT_H
#define TERN_FORMATS_CONVERT_H

#include "tern/file.h"
#include "tern/plugin.h"

typedef struct tern_gguf_conv tern_gguf_conv;

/* Set the architecture (general.architecture), the header ("gguf": every
 * key/value verbatim; "metadata": where it came from) and the tensors of
 * w from the GGUF file src, as opts asks (all fields valid: tern_convert
 * checks them). src, opts' values and *out must outlive
 * tern_writer_finish(w); the caller frees *out with tern_gguf_conv_free
 * afterwards (also on failure, when *out may be partly set up). */
int tern_gguf_conv_new(tern_ctx *ctx, const tern_file *src, const tern_convert_opts *opts,
		       tern_writer *w, tern_gguf_conv **out);

/* Accepts NULL. */
void tern_gguf_conv_free(tern_gguf_conv *c);

#endif
