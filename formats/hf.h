/*
 * hf.h (private): Hugging Face checkpoint directories, as `tern convert`
 * imports them: config.json, the tokenizer files (recorded by path; the
 * tokenizers themselves are read elsewhere) and the weights, either one
 * model.safetensors or shards listed by model.safetensors.index.json. Each
 * shard is opened as a tern_file (mapped and validated), so tensors stay in
 * place. A tern_hf is used by one thread at a time and is read-only once
 * opened.
 */
#ifndef TERN_FORMATS_HF_H
#define TERN_FORMATS_HF_H

#include <stddef.h>

#include "tern/file.h"
#include "tern/tensor.h"
#include "tern/tern.h"

typedef struct tern_hf tern_hf;

/* Open the checkpoint in directory `dir`. config.json must exist and hold
 * a JSON object; the weights must be model.safetensors or the shards of
 * model.safetensors.index.json (whose "weight_map" must name plain file
 * names in dir, and every tensor it lists must be in its shard). Tensor
 * names must be unique across shards. Caller closes with tern_hf_close. */
int tern_hf_open(tern_ctx *ctx, const char *dir, tern_hf **out);

/* Close the shards and free everything. Accepts NULL. */
void tern_hf_close(tern_hf *h);

/* The metadata object, owned by h:
 *   "format": "huggingface",
 *   "config": config.json's content,
 *   "tokenizer": {"json": path, "model": path, "config": path} for the
 *                tokenizer.json / tokenizer.model / tokenizer_config.json
 *                files that exist (paths are dir + "/" + name),
 *   "shards": [file names, in the order tensors are listed]. */
const tern_meta *tern_hf_meta(const tern_hf *h);

/* config.json's "architectures"[0], else its "model_type", else "".
 * Owned by h. */
const char *tern_hf_architecture(const tern_hf *h);

/* Bytes of all shards together. */
size_t tern_hf_bytes(const tern_hf *h);

/* Tensors of all shards (shard order, then file order); NULL if out of
 * range or absent. Owned by h (by its shards). */
size_t tern_hf_n_tensors(const tern_hf *h);
const tern_tensor *tern_hf_tensor(const tern_hf *h, size_t i);
const tern_tensor *tern_hf_find(const tern_hf *h, const char *name);

#endif
