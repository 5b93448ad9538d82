/*
 * file.h: model files of any supported format (.tern, GGUF, safetensors)
 * behind one API: open, list and find tensors, read metadata as a small
 * typed tree (tern_meta), and write native .tern files (tern_writer).
 *
 * An opened file is read-only and may be shared between threads once
 * opened (no call on it mutates it). Tensor data points either into the
 * file's read-only mapping or into memory the file owns (converted
 * tensors); either way it lives until tern_file_close and must not be
 * written. A tern_meta tree built by the caller is used by one thread at
 * a time.
 */
#ifndef TERN_FILE_H
#define TERN_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/tensor.h"
#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- metadata tree ---------------------------------------------------- */

/* A JSON-like value. Integers keep their signedness (GGUF has both);
 * objects keep insertion order; strings are UTF-8 with a length (they may
 * hold NUL bytes when the source format allows it). */
typedef enum tern_meta_type {
	TERN_META_NULL = 0,
	TERN_META_BOOL = 1,
	TERN_META_INT = 2,    /* int64_t */
	TERN_META_UINT = 3,   /* uint64_t */
	TERN_META_DOUBLE = 4,
	TERN_META_STRING = 5,
	TERN_META_ARRAY = 6,
	TERN_META_OBJECT = 7,
} tern_meta_type;

typedef struct tern_meta tern_meta;

/* Constructors: each returns a new value owned by the caller (free with
 * tern_meta_free, or hand it to a container that takes ownership), or
 * NULL when out of memory. tern_meta_new_string copies len bytes. */
TERN_API tern_meta *tern_meta_new_null(void);
TERN_API tern_meta *tern_meta_new_bool(bool v);
TERN_API tern_meta *tern_meta_new_int(int64_t v);
TERN_API tern_meta *tern_meta_new_uint(uint64_t v);
TERN_API tern_meta *tern_meta_new_double(double v);
TERN_API tern_meta *tern_meta_new_string(const char *s, size_t len);
TERN_API tern_meta *tern_meta_new_array(void);
TERN_API tern_meta *tern_meta_new_object(void);

/* Free a value and everything under it. Only for values the caller owns
 * (never one returned by a getter). Accepts NULL. */
TERN_API void tern_meta_free(tern_meta *m);

/* Deep copy; *out is owned by the caller. */
TERN_API int tern_meta_copy(const tern_meta *m, tern_meta **out);

/* Append `item` to array `arr`. Takes ownership of item in every case
 * (it is freed if the call fails). */
TERN_API int tern_meta_append(tern_meta *arr, tern_meta *item);

/* Set key (copied; a literal key, dots included) of object `obj` to
 * `value`, replacing an existing value of that key in place. Takes
 * ownership of value in every case (freed if the call fails). */
TERN_API int tern_meta_set(tern_meta *obj, const char *key, tern_meta *value);

/* Set a dotted path ("hparams.n_layers") under obj, creating missing
 * intermediate objects; fails if an intermediate exists and is not an
 * object. Takes ownership of value in every case. */
TERN_API int tern_meta_set_path(tern_meta *obj, const char *path, tern_meta *value);

/* Parse JSON text (len bytes, need not be NUL-terminated) into a new tree
 * owned by the caller. Integers that fit int64 become INT, larger positive
 * ones UINT. TERN_E_FORMAT with the position on a syntax error. */
TERN_API int tern_meta_from_json(tern_ctx *ctx, const char *text, size_t len, tern_meta **out);

/* Serialize to JSON; *out is a NUL-terminated string the caller frees
 * with tern_free. `pretty` indents with two spaces. */
TERN_API int tern_meta_to_json(tern_ctx *ctx, const tern_meta *m, bool pretty, char **out);

/* Type of a value; TERN_META_NULL for a NULL pointer too. */
TERN_API tern_meta_type tern_meta_type_of(const tern_meta *m);

/* Look up a dotted path: object keys and decimal array indices separated
 * by '.' ("hparams.n_layers", "tokenizer.merges.0"). Object keys that
 * themselves contain dots (GGUF's "llama.block_count") match too: at each
 * level the longest literal key that matches is tried first. An empty
 * path returns m. Returns a pointer owned by the tree, or NULL if absent. */
TERN_API const tern_meta *tern_meta_get(const tern_meta *m, const char *path);

/* Typed reads of one value. Return TERN_OK, or TERN_E_INVALID when the
 * value is absent or of another type / out of range: as_int accepts INT,
 * UINT <= INT64_MAX and integral DOUBLE; as_uint accepts INT >= 0, UINT
 * and integral DOUBLE; as_double accepts any number; as_bool only BOOL. */
TERN_API int tern_meta_as_bool(const tern_meta *m, bool *out);
TERN_API int tern_meta_as_int(const tern_meta *m, int64_t *out);
TERN_API int tern_meta_as_uint(const tern_meta *m, uint64_t *out);
TERN_API int tern_meta_as_double(const tern_meta *m, double *out);
/* The string of a STRING value (NUL-terminated, owned by the tree), or
 * NULL for another type. len may be NULL. */
TERN_API const char *tern_meta_as_string(const tern_meta *m, size_t *len);

/* Convenience: the value at path converted as above, or def when absent
 * or not convertible. The string is owned by the tree. */
TERN_API int64_t tern_meta_get_int(const tern_meta *m, const char *path, int64_t def);
TERN_API double tern_meta_get_double(const tern_meta *m, const char *path, double def);
TERN_API bool tern_meta_get_bool(const tern_meta *m, const char *path, bool def);
TERN_API const char *tern_meta_get_string(const tern_meta *m, const char *path,
					  const char *def);

/* Iteration: the number of items of an array or entries of an object (0
 * for other types); item i (the value, for objects); key i of an object
 * (NULL for other types or i out of range). Pointers are owned by the
 * tree and valid until it changes. Objects iterate in insertion order. */
TERN_API size_t tern_meta_count(const tern_meta *m);
TERN_API const tern_meta *tern_meta_item(const tern_meta *m, size_t i);
TERN_API const char *tern_meta_key(const tern_meta *m, size_t i);

/* ---- opened model files ----------------------------------------------- */

typedef enum tern_file_format {
	TERN_FORMAT_TERN = 0,
	TERN_FORMAT_GGUF = 1,
	TERN_FORMAT_SAFETENSORS = 2,
	TERN_FORMAT_HF = 3, /* a Hugging Face checkpoint directory */
	TERN_FORMAT_COUNT
} tern_file_format;

typedef struct tern_file tern_file;

/* Open a model file, detecting the format from its first bytes ("TERN",
 * "GGUF", or a safetensors u64 header length followed by '{'), map it
 * read-only and validate it completely: every tensor has a known dtype,
 * a consistent shape and size, and lies inside the file. A directory
 * holding config.json opens as a Hugging Face checkpoint
 * (TERN_FORMAT_HF: the tensors of all its safetensors shards, metadata
 * as docs/FORMAT.md "Hugging Face checkpoint directories" says); any other
 * directory is TERN_E_UNSUPPORTED. On failure *out is NULL and ctx holds a
 * message naming the file, the tensor and what is wrong. Caller closes
 * with tern_file_close. */
TERN_API int tern_file_open(tern_ctx *ctx, const char *path, tern_file **out);

/* Flags of tern_file_open_ex. */
enum {
	/* Read the whole file into private memory (2 MiB aligned, on
	 * transparent huge pages where the kernel has them) instead of
	 * mapping it lazily. For running a model: its weights are streamed
	 * once per token, and a 4 KiB-page file mapping costs a TLB walk
	 * every 4 KiB (decode measured 1.7x slower here, docs/BENCHMARKS.md).
	 * Opening takes as long as reading the file, and the memory is
	 * committed rather than reclaimable page cache. */
	TERN_FILE_LOAD = 1u << 0,
};

/* tern_file_open with flags (0 or TERN_FILE_LOAD; others are
 * TERN_E_INVALID). A directory ignores TERN_FILE_LOAD (its shards are
 * mapped). Same ownership as tern_file_open. */
TERN_API int tern_file_open_ex(tern_ctx *ctx, const char *path, unsigned flags,
			       tern_file **out);

/* Same from memory: data (size bytes) is borrowed, not copied, and must
 * stay valid and unchanged until tern_file_close. Tensor data is 64-byte
 * aligned for .tern only if data is. */
TERN_API int tern_file_open_memory(tern_ctx *ctx, const void *data, size_t size,
				   tern_file **out);

/* Unmap and free everything the file owns, tensors included. Accepts NULL. */
TERN_API void tern_file_close(tern_file *f);

TERN_API tern_file_format tern_file_format_of(const tern_file *f);
/* "tern", "gguf", "safetensors" or "huggingface". Static storage. */
TERN_API const char *tern_file_format_name(const tern_file *f);
/* The format version stored in the file (.tern 1, GGUF 2 or 3; 0 for
 * safetensors and Hugging Face directories, which have none). */
TERN_API uint32_t tern_file_version(const tern_file *f);
/* The path given to tern_file_open ("<memory>" for open_memory). Owned by f. */
TERN_API const char *tern_file_path(const tern_file *f);
/* Bytes of the file (or memory buffer; for a directory, of its shards). */
TERN_API size_t tern_file_size(const tern_file *f);

/* The architecture the file names ("bitnet-b1.58", ...), or "" if it
 * names none (safetensors without metadata). Owned by f. */
TERN_API const char *tern_file_architecture(const tern_file *f);

/* Tensors, in file order. tern_file_tensor returns NULL if i is out of
 * range; tern_file_find NULL if no tensor has that exact name. Owned by f. */
TERN_API size_t tern_file_n_tensors(const tern_file *f);
TERN_API const tern_tensor *tern_file_tensor(const tern_file *f, size_t i);
TERN_API const tern_tensor *tern_file_find(const tern_file *f, const char *name);

/* How tensor i is stored in the file itself. Readers serve some foreign
 * types converted (GGUF Q8_0 as F32, TQ1_0 as T3, TQ2_0 and I2_S as T2);
 * this gives the stored form: *type the lower-case type name as the
 * source calls it ("q8_0", "tq1_0", "tq2_0", "i2_s"; for tensors served
 * as stored, the tern dtype name), *data its bytes in the file's mapping
 * and *nbytes their count. Any out-pointer may be NULL. Pointers are
 * owned by f. TERN_E_INVALID if i is out of range. */
TERN_API int tern_file_tensor_source(const tern_file *f, size_t i, const char **type,
				     const void **data, size_t *nbytes);

/* The root metadata object (never NULL; owned by f). For .tern it is the
 * JSON header without the tensor table ("architecture", "hparams",
 * "tokenizer", "metadata", ...); for GGUF the key/value pairs under their
 * GGUF keys ("general.architecture", ...); for safetensors the
 * "__metadata__" strings. */
TERN_API const tern_meta *tern_file_meta(const tern_file *f);

/* ---- writing .tern files ---------------------------------------------- */

typedef struct tern_writer tern_writer;

/* Start a .tern file at path. Nothing is written until tern_writer_finish.
 * Caller frees with tern_writer_free. */
TERN_API int tern_writer_new(tern_ctx *ctx, const char *path, tern_writer **out);

/* Free the writer and the tensor data it copied. Never touches the
 * output file (finish already removed a failed temporary). Accepts NULL. */
TERN_API void tern_writer_free(tern_writer *w);

/* The architecture name written to the header (required before finish). */
TERN_API int tern_writer_set_architecture(tern_writer *w, const char *arch);

/* Set header key `path` (dotted: "hparams.n_layers", "metadata.license")
 * to a copy of value. The top-level keys "tensors" and "architecture"
 * (use set_architecture) are reserved. value stays the caller's. */
TERN_API int tern_writer_set_meta(tern_writer *w, const char *path, const tern_meta *value);

/* Same from JSON text (NUL-terminated). With path NULL the text must be an
 * object whose keys are merged into the header's top level (a string
 * "architecture" there sets the architecture; "tensors" is refused). */
TERN_API int tern_writer_set_json(tern_writer *w, const char *path, const char *json);

/* Add a tensor, copying t->data (t->nbytes bytes, which must equal
 * tern_tensor_bytes) and t->name now; t stays the caller's. */
TERN_API int tern_writer_add_tensor(tern_writer *w, const tern_tensor *t);

/* Add a tensor whose data is borrowed: t->data must stay valid until
 * tern_writer_finish returns. The name is copied. */
TERN_API int tern_writer_add_tensor_ref(tern_writer *w, const tern_tensor *t);

/* Streaming: add a tensor described by desc (desc->data is ignored) whose
 * bytes are produced at finish time by fill(user, desc, dst), writing
 * exactly desc->nbytes bytes into dst (a writer-owned buffer, reused
 * between tensors, so memory stays at the largest tensor). fill returns
 * TERN_OK or a negative status, which aborts finish. user is borrowed
 * until finish. */
typedef int (*tern_writer_fill_fn)(void *user, const tern_tensor *desc, void *dst);
TERN_API int tern_writer_add_tensor_fn(tern_writer *w, const tern_tensor *desc,
				       tern_writer_fill_fn fill, void *user);

/* Progress of tern_writer_finish: fn(user, done, total) is called with
 * the bytes written so far and the final file size, once before the
 * first byte, then at least after every tensor (large tensors in chunks
 * of at most 16 MiB). A nonzero return cancels: finish removes the
 * temporary file and returns TERN_E_CANCELLED. fn NULL removes the hook;
 * user is borrowed until finish returns. */
typedef int (*tern_writer_progress_fn)(void *user, uint64_t done, uint64_t total);
TERN_API int tern_writer_set_progress(tern_writer *w, tern_writer_progress_fn fn, void *user);

/* Write everything to "<path>.tmp" and rename it onto path, so readers
 * never see a partial file. On failure or cancellation the temporary file
 * is removed and path is left as it was. The writer is spent afterwards
 * either way (only tern_writer_free). */
TERN_API int tern_writer_finish(tern_writer *w);

#ifdef __cplusplus
}
#endif
#endif
