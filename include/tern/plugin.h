/*
 * plugin.h: the plugin ABI (what a model plugin exports) and the registry
 * (how the host finds, checks and uses plugins).
 *
 * A plugin is a shared object that exports exactly one symbol,
 * `tern_plugin_entry`, a function returning a pointer to a constant
 * tern_plugin_desc. The host refuses a plugin whose ABI major differs from
 * TERN_PLUGIN_ABI_MAJOR or whose minor is newer than the host's. Structs
 * begin with struct_size so later minors can append fields; a plugin built
 * against an older minor simply has a smaller struct, and the host reads
 * only the fields that fit.
 *
 * Thread safety: a registry is built once and then only read; lookups may
 * run concurrently. A loaded model may be shared by threads when its
 * plugin says so (TERN_PLUGIN_FLAG_SHARED_MODEL); each thread passes its
 * own tern_ctx to the task calls. docs/PLUGINS.md is the guide.
 */
#ifndef TERN_PLUGIN_H
#define TERN_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/file.h"
#include "tern/image.h"
#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERN_PLUGIN_ABI_MAJOR 1
/* 1.1: dtype I4 (TERN_DTYPE_COUNT moved from 7 to 8). The host hands an
 * ABI 1.0 plugin's convert op TERN_DTYPE_COUNT_ABI_1_0 where the options
 * say TERN_DTYPE_COUNT, and never asks it for I4. */
/* 1.2: tern_convert_opts.head_residual. The host never asks a plugin
 * older than 1.2 for a residual head (it declines, as if unsupported). */
#define TERN_PLUGIN_ABI_MINOR 2
#define TERN_DTYPE_COUNT_ABI_1_0 ((tern_dtype)7)
#define TERN_PLUGIN_ENTRY_SYMBOL "tern_plugin_entry"

#if defined(__GNUC__)
#define TERN_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define TERN_PLUGIN_EXPORT
#endif

/* Tasks a plugin can offer (bit mask). Each needs its op in tern_plugin_ops. */
enum tern_task {
	TERN_TASK_CLASSIFY = 1u << 0,
	TERN_TASK_GENERATE = 1u << 1,
	TERN_TASK_CAPTION = 1u << 2,
	TERN_TASK_IMAGINE = 1u << 3,
	TERN_TASK_ACT = 1u << 4,
};

enum tern_plugin_flags {
	TERN_PLUGIN_FLAG_SHARED_MODEL = 1u << 0, /* a model may serve several threads */
};

typedef struct tern_registry tern_registry;

/* Services the host hands to every plugin call. */
typedef struct tern_host {
	size_t struct_size;
	uint32_t abi_major, abi_minor;   /* the host's ABI version */
	tern_ctx *ctx;                   /* errors (tern_error), logging (tern_log),
	                                    threads and scratch for this call */
	const tern_registry *registry;   /* for tern_registry_component() */
	/* Progress of long work; returns nonzero if the caller wants to cancel
	 * (the plugin then stops and returns TERN_E_CANCELLED). May be NULL. */
	int (*progress)(void *user, const char *stage, int64_t done, int64_t total);
	void *progress_user;
} tern_host;

/* A component interface the plugin provides (e.g. "lm", "image-encoder"),
 * each versioned on its own. */
typedef struct tern_component_desc {
	const char *interface;
	uint32_t version;
} tern_component_desc;

/* One class of a classification result. */
typedef struct tern_class {
	int index;
	float prob;
	const char *label;   /* owned by the model; valid while it is loaded */
} tern_class;

/* What `tern convert` (tern_convert) asks of a conversion. Start from
 * tern_convert_default_opts(); the host always passes every field set.
 * A plugin may ignore fields it cannot honour, but should then say so
 * with tern_log (TERN_LOG_WARN). Fields are only ever appended: check
 * opts->struct_size before reading one newer than the header you built
 * against. */
typedef struct tern_convert_opts {
	size_t struct_size;
	/* Packing of ternary matrices: TERN_DTYPE_T2 (default) or T3. */
	tern_dtype ternary_type;
	/* Float matrices that stay float (embeddings, heads): F32, F16 or
	 * BF16; TERN_DTYPE_COUNT (default) = keep the source's type, with
	 * formats tern has no dtype for (GGUF Q8_0) becoming F32. 1-D tensors
	 * (norms, biases) keep their type. */
	tern_dtype float_type;
	/* Output head and token embedding: TERN_DTYPE_I8 quantizes them per
	 * row (absmax, f32 row scales), TERN_DTYPE_I4 to 4 bits with f16
	 * scales per 128 weights (tern_quantize_row_i4), a float dtype casts
	 * them;
	 * TERN_DTYPE_COUNT (default) = the converter's choice: as float_type,
	 * except that the text plugin makes BitNet checkpoints from Hugging
	 * Face int8 when float_type is COUNT too (docs/FORMAT.md). */
	tern_dtype head_type;
	/* ABI 1.2. With head_type TERN_DTYPE_I4 only: also write each such
	 * matrix's residual, the float matrix minus its dequantized 4-bit
	 * codes, quantized again with tern_quantize_row_i4, as the tensor
	 * "<base>.residual" beside "<base>.weight" (docs/FORMAT.md, "Residual
	 * heads"). A reader adds the two; the text plugin's output head reads
	 * the residual only for its best candidates. Default false. */
	bool head_residual;
} tern_convert_opts;

/* The defaults above, struct_size set. */
TERN_API tern_convert_opts tern_convert_default_opts(void);

typedef struct tern_plugin_ops {
	size_t struct_size;
	/* Required. Build a model from an opened file (the file outlives the
	 * model: the host closes it after free). *model is the plugin's. */
	int (*load)(const tern_host *host, const tern_file *file, void **model);
	/* Required. Free what load made; accepts NULL. */
	void (*free)(void *model);
	/* Required if the descriptor lists components: the interface table of
	 * `interface` at `version` (a const static struct of the plugin's, its
	 * first field a size_t struct_size), or NULL. */
	const void *(*component)(const char *interface, uint32_t version);
	/* TERN_TASK_CLASSIFY: the k most probable classes of img into out[k]
	 * (sorted by probability), *n_out = how many were written. */
	int (*classify)(const tern_host *host, void *model, const tern_image *img, int k,
			tern_class *out, int *n_out);
	/* Optional (read only when ops->struct_size covers it): import a
	 * foreign checkpoint for tern_convert / `tern convert`. src is the
	 * input opened by the host (GGUF, safetensors, .tern, or a Hugging
	 * Face directory), or NULL when the host's readers do not recognise
	 * src_path (a plugin may read its own formats from the path). The op
	 * sets the architecture, metadata and tensors of w, a fresh writer of
	 * its own for this attempt; it must not call tern_writer_finish or
	 * tern_writer_free (the host does). Tensors added by reference or by
	 * fill function may point into src, which stays open until finish.
	 * Return TERN_E_UNSUPPORTED, with no message needed, when the input is
	 * not something this plugin converts: the host then asks the next
	 * plugin. Long work reports through host->progress (stage "convert")
	 * and stops with TERN_E_CANCELLED when it says so. */
	int (*convert)(const tern_host *host, const char *src_path, const tern_file *src,
		       const tern_convert_opts *opts, tern_writer *w);
} tern_plugin_ops;

typedef struct tern_plugin_desc {
	size_t struct_size;
	uint32_t abi_major, abi_minor;   /* TERN_PLUGIN_ABI_MAJOR/MINOR it was built with */
	const char *name;                /* unique, [a-z0-9_-]+ */
	const char *version;             /* the plugin's own version string */
	const char *description;
	const char *const *architectures;/* NULL-terminated; matched to the file's architecture */
	const tern_component_desc *components;
	size_t n_components;
	uint32_t tasks;                  /* enum tern_task bits */
	uint32_t flags;                  /* enum tern_plugin_flags bits */
	const tern_plugin_ops *ops;
} tern_plugin_desc;

/* The one symbol a plugin exports. */
typedef const tern_plugin_desc *(*tern_plugin_entry_fn)(void);

/* ---- the registry (host side) ----------------------------------------- */

/* Scan for plugins: the directories in search_path (colon-separated) if
 * not NULL, else TERN_PLUGIN_PATH, then the build tree, then the installed
 * plugin directory. Every *.so found is checked; refusals are recorded,
 * not fatal. The registry keeps ctx for messages; caller frees with
 * tern_registry_free (which unloads the plugins: free models first). */
TERN_API int tern_registry_new(tern_ctx *ctx, const char *search_path, tern_registry **out);
TERN_API void tern_registry_free(tern_registry *reg);

/* Loaded plugins, in discovery order. */
TERN_API size_t tern_registry_count(const tern_registry *reg);
TERN_API const tern_plugin_desc *tern_registry_plugin(const tern_registry *reg, size_t i,
						      const char **path);

/* Files that were refused: path, status and reason (owned by reg). */
TERN_API size_t tern_registry_n_refused(const tern_registry *reg);
TERN_API const char *tern_registry_refused(const tern_registry *reg, size_t i, const char **path,
					   int *status);

/* The directories searched, in order (owned by reg). */
TERN_API size_t tern_registry_n_dirs(const tern_registry *reg);
TERN_API const char *tern_registry_dir(const tern_registry *reg, size_t i);

/* The plugin implementing an architecture, or NULL. */
TERN_API const tern_plugin_desc *tern_registry_find_arch(const tern_registry *reg,
							 const char *arch);
/* A component interface table from whichever plugin provides `interface`
 * with exactly `version`; NULL if none (the host message says why). */
TERN_API const void *tern_registry_component(const tern_registry *reg, const char *interface,
					     uint32_t version, const tern_plugin_desc **provider);

/* ---- models -------------------------------------------------------------- */

typedef struct tern_model tern_model;

/* Open a model file, pick the plugin for its architecture and load it.
 * The file is read into memory (tern_file_open_ex with TERN_FILE_LOAD),
 * not mapped lazily. Caller frees with tern_model_free; the registry must
 * outlive it. */
TERN_API int tern_model_load(tern_ctx *ctx, const tern_registry *reg, const char *path,
			     tern_model **out);
TERN_API void tern_model_free(tern_model *m);
TERN_API const tern_plugin_desc *tern_model_plugin(const tern_model *m);
TERN_API const tern_file *tern_model_file(const tern_model *m);

/* ---- conversion --------------------------------------------------------- */

/* Progress of long host work (stage names "convert" and "write"); a
 * nonzero return cancels with TERN_E_CANCELLED. */
typedef int (*tern_progress_fn)(void *user, const char *stage, int64_t done, int64_t total);

/* Convert src_path (a GGUF, safetensors or .tern file, a Hugging Face
 * directory, or a file only a plugin understands) into the .tern file
 * dst_path. The plugin whose architectures list the source's
 * architecture is asked first; if there is none or it answers
 * TERN_E_UNSUPPORTED, every other plugin with a convert op is asked in
 * registry order; if none converts a GGUF source, the generic GGUF
 * conversion applies (docs/FORMAT.md "Converted GGUF files"). Each
 * attempt gets a fresh writer; the winner's is finished into
 * "<dst_path>.tmp" and renamed, so on any failure or cancellation
 * dst_path is untouched and no temporary file remains. reg may be NULL
 * (generic conversion only); opts NULL means the defaults; progress may
 * be NULL. *by (may be NULL) is set to the converting plugin's name, or
 * "gguf" for the generic conversion; owned by reg (static for "gguf"). */
TERN_API int tern_convert(tern_ctx *ctx, const tern_registry *reg, const char *src_path,
			  const char *dst_path, const tern_convert_opts *opts,
			  tern_progress_fn progress, void *progress_user, const char **by);

/* Classify an image with a model whose plugin offers TERN_TASK_CLASSIFY. */
TERN_API int tern_classify(tern_ctx *ctx, tern_model *m, const tern_image *img, int k,
			   tern_class *out, int *n_out);

#ifdef __cplusplus
}
#endif
#endif
