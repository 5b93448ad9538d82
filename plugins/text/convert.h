/*
 * convert.h: the text plugin's importers for `tern convert` (the plugin's
 * convert op, tern_plugin_ops.convert). Private to the plugin; tests
 * compile convert.c directly. What they write is documented in
 * docs/FORMAT.md, "Text models": llama.cpp's tensor names, GGUF-style
 * hyper-parameters under "hparams", the tokenizer file embedded as an i8
 * tensor named by the header's "tokenizer" object, and "metadata" with
 * the source, license and the model's facts.
 *
 * Inputs:
 *  - bitllama2.c "ak42" checkpoints (version 1, shared classifier) with
 *    the llama2.c tokenizer.bin beside them -> architecture "bitllama2c",
 *    T2/T3 weights with one f32 scale per tensor that hold the ak42 codes
 *    exactly;
 *  - Hugging Face directories of BitNet b1.58 models -> "bitnet-b1.58"
 *    (microsoft/bitnet-b1.58-2B-4T: packed uint8 weights with
 *    weight_scale, or its -bf16 master weights) or "bitnet" (1bitLLM
 *    bitnet_b1_58-large / -3B, float weights); float weights are
 *    ternarized with absmean (one scale per tensor) as BitNet b1.58 does.
 */
#ifndef TERN_TEXT_CONVERT_H
#define TERN_TEXT_CONVERT_H

#include "tern/file.h"
#include "tern/plugin.h"

/* The convert op. src NULL: src_path must be an ak42 file (else
 * TERN_E_UNSUPPORTED, no message) with tokenizer.bin in the same
 * directory (TERN_E_NOT_FOUND otherwise). src a Hugging Face directory
 * (TERN_FORMAT_HF) holding a BitNet b1.58 checkpoint: converted; any other
 * src: TERN_E_UNSUPPORTED. opts may be NULL (defaults). Sets the
 * architecture, header and tensors of w; tensors of a Hugging Face
 * conversion are produced at tern_writer_finish from src, which must
 * stay open until then. */
int text_convert(const tern_host *host, const char *src_path, const tern_file *src,
		 const tern_convert_opts *opts, tern_writer *w);

/* The ak42 conversion with explicit paths (tools, tests). */
int text_convert_ak42(tern_ctx *ctx, const char *bin_path, const char *tokenizer_path,
		      const tern_convert_opts *opts, tern_writer *w);

#endif
