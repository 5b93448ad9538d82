/*
 * format.h (private): what a format reader implements and the builder it
 * fills. file.c maps the file, detects the format by magic and calls the
 * reader's open function with the whole mapping; the reader validates and
 * describes what it found through a tern_file_builder (metadata, tensors,
 * owned memory for converted data). On failure the reader just returns the
 * status from tern_error(); file.c throws the partly built file away, so a
 * reader never frees what it already handed to the builder.
 */
#ifndef TERN_FORMATS_FORMAT_H
#define TERN_FORMATS_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/file.h"
#include "tern/tensor.h"
#include "tern/tern.h"

typedef struct tern_file_builder tern_file_builder;

/* A format's reader. map/size is the whole file, read-only; it stays
 * mapped for the file's life, so tensors may point into it. */
typedef int (*tern_format_open_fn)(tern_ctx *ctx, const uint8_t *map, size_t size,
				   tern_file_builder *b);

int tern_tern_open(tern_ctx *ctx, const uint8_t *map, size_t size, tern_file_builder *b);
int tern_gguf_open(tern_ctx *ctx, const uint8_t *map, size_t size, tern_file_builder *b);
int tern_safetensors_open(tern_ctx *ctx, const uint8_t *map, size_t size,
			  tern_file_builder *b);

/* ---- the builder -------------------------------------------------------- */

/* The file's display name for messages ("model.gguf" or "<memory>"). */
const char *tern_fb_path(const tern_file_builder *b);

/* Format version written in the file. */
void tern_fb_set_version(tern_file_builder *b, uint32_t version);

/* The architecture name (copied). Also keep it in the metadata if the
 * format stores it there; this is what tern_file_architecture returns. */
int tern_fb_set_architecture(tern_file_builder *b, const char *arch);

/* The root metadata object, owned by the builder: add values with
 * tern_meta_set (which takes ownership of each value). */
tern_meta *tern_fb_meta(tern_file_builder *b);
/* Replace the root by `root` (an OBJECT); takes ownership in every case. */
int tern_fb_set_meta(tern_file_builder *b, tern_meta *root);

/* Memory freed when the file closes: 64-byte aligned, zeroed. NULL (with
 * an error recorded on ctx) on failure or overflow. For converted tensors. */
void *tern_fb_alloc(tern_file_builder *b, size_t bytes);

/* Add a tensor. The name (len bytes, not necessarily NUL-terminated) is
 * copied; it must be non-empty valid UTF-8 without NUL and unique in the
 * file. shape/qp are validated (tern_tensor_bytes) and nbytes must equal
 * the computed size. data must point into the mapping (the range is
 * checked: [data, data+nbytes) inside [map, map+size)) or into memory from
 * tern_fb_alloc; it is not copied. qp may be NULL for float dtypes. Each
 * failure returns TERN_E_FORMAT / TERN_E_OVERFLOW with a message naming
 * the tensor. */
int tern_fb_add_tensor(tern_file_builder *b, const char *name, size_t name_len,
		       tern_dtype dtype, int n_dims, const int64_t *shape,
		       const tern_qparams *qp, const void *data, size_t nbytes);

/* Add a tensor made by tern_tensor_new / tern_foreign_import: takes
 * ownership of t in every case (freed on failure); the name is copied
 * from name/len (t->name is ignored). Same checks as tern_fb_add_tensor. */
int tern_fb_adopt_tensor(tern_file_builder *b, const char *name, size_t name_len,
			 tern_tensor *t);

/* Record how the tensor added last is stored in the file when the reader
 * served it converted: type is a static lower-case name ("tq2_0"),
 * data/nbytes the stored bytes inside the mapping (tern_file_tensor_source
 * returns them). Without this call a tensor's source is itself. */
void tern_fb_set_source(tern_file_builder *b, const char *type, const void *data,
			size_t nbytes);

/* ---- shared validation helpers ----------------------------------------- */

/* True if s[0..len) is well-formed UTF-8 (no overlongs, surrogates or
 * code points above U+10FFFF). */
bool tern_utf8_valid(const char *s, size_t len);
/* Offset of the first byte that makes s[0..len) ill-formed, or len. */
size_t tern_utf8_check(const char *s, size_t len);

/* One tensor's byte range inside a data section, for overlap checks. */
typedef struct tern_extent {
	const char *name; /* for messages */
	uint64_t offset;
	uint64_t nbytes;
} tern_extent;

/* Check extents lie inside [0, limit) and do not overlap each other.
 * Sorts `ext` in place by offset. `what` names the container for the
 * message ("data section"). TERN_E_FORMAT naming the tensor(s) on failure. */
int tern_extents_check(tern_ctx *ctx, const char *path, tern_extent *ext, size_t n,
		       uint64_t limit, const char *what);

/* Little-endian reads from an unaligned pointer (hosts are little-endian:
 * configure refuses others). */
static inline uint32_t tern_rd_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t tern_rd_u64(const uint8_t *p)
{
	return (uint64_t)tern_rd_u32(p) | (uint64_t)tern_rd_u32(p + 4) << 32;
}

/* ---- meta internals shared by the readers ------------------------------- */

/* Convert a json-c value (passed as void* so json-c stays out of this
 * header) into a new tern_meta tree owned by the caller. */
int tern_meta_from_jsonc(tern_ctx *ctx, const void *jobj, tern_meta **out);

/* Remove key from object obj and return its value, now owned by the
 * caller; NULL if absent. */
tern_meta *tern_meta_take(tern_meta *obj, const char *key);

#endif
