/*
 * internal.h (private): what core files share but the public API does not
 * show: the context layout and small helpers.
 */
#ifndef TERN_CORE_INTERNAL_H
#define TERN_CORE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/kernels.h"
#include "tern/tern.h"

#define TERN_ERRMSG_MAX 1024
#define TERN_SCRATCH_SLOTS 8

struct tern_ctx {
	tern_ctx_params params;
	tern_pool *pool;
	const tern_kernels *kernels; /* never NULL once created */
	void *scratch[TERN_SCRATCH_SLOTS];
	size_t scratch_size[TERN_SCRATCH_SLOTS];
	char errmsg[TERN_ERRMSG_MAX];
};

#define TERN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TERN_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Kernel table of a context (scalar for a NULL context). */
const tern_kernels *tern_ctx_kernels_of(const tern_ctx *ctx);

/* The plugin's object behind a loaded model (what its load op made),
 * for core code that drives a plugin's components (generate.c). */
struct tern_model;
void *tern_model_impl(const struct tern_model *m);

#endif
