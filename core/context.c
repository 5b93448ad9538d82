/*
 * context.c: the library context (threads, kernel choice, scratch memory)
 * and overflow-checked size helpers.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"
#include "tern/matmul.h"

const char *tern_version(void)
{
	return "0.1.0";
}

int tern_size_mul(size_t a, size_t b, size_t *out)
{
	size_t r;
	if (__builtin_mul_overflow(a, b, &r))
		return TERN_E_OVERFLOW;
	*out = r;
	return TERN_OK;
}

int tern_size_add(size_t a, size_t b, size_t *out)
{
	size_t r;
	if (__builtin_add_overflow(a, b, &r))
		return TERN_E_OVERFLOW;
	*out = r;
	return TERN_OK;
}

/* Blocks from this size on (KV caches, large work buffers) are 2 MiB
 * aligned and marked for transparent huge pages, as loaded weights are
 * (formats/file.c): attention streams the whole KV cache every token, and
 * in a VM each TLB miss costs a nested page walk. */
#define HUGE_ALLOC ((size_t)8 << 20)
#define HUGE_PAGE ((size_t)2 << 20)

void *tern_alloc(size_t bytes)
{
	void *p = NULL;
	if (bytes == 0)
		bytes = 1;
	if (bytes > SIZE_MAX - HUGE_PAGE)
		return NULL;
	if (bytes >= HUGE_ALLOC) {
		bytes = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
		if (posix_memalign(&p, HUGE_PAGE, bytes) != 0)
			return NULL;
#ifdef MADV_HUGEPAGE
		madvise(p, bytes, MADV_HUGEPAGE); /* a hint: failure only costs speed */
#endif
		return p;
	}
	bytes = (bytes + 63) & ~(size_t)63;
	if (posix_memalign(&p, 64, bytes) != 0)
		return NULL;
	return p;
}

void tern_free(void *p)
{
	free(p);
}

tern_ctx_params tern_ctx_default_params(void)
{
	tern_ctx_params p;
	memset(&p, 0, sizeof p);
	p.struct_size = sizeof p;
	p.log_level = TERN_LOG_INFO;
	return p;
}

static int default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return 1;
	return n > 256 ? 256 : (int)n;
}

int tern_ctx_new(const tern_ctx_params *params, tern_ctx **out)
{
	*out = NULL;
	tern_ctx_params p = tern_ctx_default_params();
	if (params) {
		if (params->struct_size < offsetof(tern_ctx_params, log_level) + sizeof(int) ||
		    params->struct_size > sizeof p)
			return TERN_E_INVALID;
		memcpy(&p, params, params->struct_size);
		p.struct_size = sizeof p;
	}
	if (p.n_threads < 0 || p.n_threads > 1024)
		return TERN_E_INVALID;
	if (p.n_threads == 0)
		p.n_threads = default_threads();

	tern_ctx *ctx = calloc(1, sizeof *ctx);
	if (!ctx)
		return TERN_E_NOMEM;
	ctx->params = p;
	ctx->kernels = tern_kernels_get(tern_kernel_detect());
	const char *name = p.kernel ? p.kernel : getenv("TERN_KERNEL");
	if (name && *name) {
		tern_kernel_path path = TERN_KERNEL_COUNT;
		for (int i = 0; i < TERN_KERNEL_COUNT; i++)
			if (strcmp(name, tern_kernel_path_name((tern_kernel_path)i)) == 0)
				path = (tern_kernel_path)i;
		if (path == TERN_KERNEL_COUNT || !tern_kernel_available(path)) {
			free(ctx);
			return TERN_E_UNSUPPORTED;
		}
		ctx->kernels = tern_kernels_get(path);
	}
	int rc = tern_pool_new(p.n_threads, &ctx->pool);
	if (rc != TERN_OK) {
		free(ctx);
		return rc;
	}
	*out = ctx;
	return TERN_OK;
}

void tern_ctx_free(tern_ctx *ctx)
{
	if (!ctx)
		return;
	tern_pool_free(ctx->pool);
	for (int i = 0; i < TERN_SCRATCH_SLOTS; i++)
		tern_free(ctx->scratch[i]);
	free(ctx);
}

tern_pool *tern_ctx_pool(tern_ctx *ctx)
{
	return ctx->pool;
}

int tern_ctx_threads(const tern_ctx *ctx)
{
	return tern_pool_size(ctx->pool);
}

const tern_kernels *tern_ctx_kernels_of(const tern_ctx *ctx)
{
	return ctx ? ctx->kernels : tern_kernels_scalar();
}

const char *tern_ctx_kernel(const tern_ctx *ctx)
{
	return tern_kernel_path_name(tern_ctx_kernels_of(ctx)->path);
}

tern_kernel_path tern_ctx_kernel_path(const tern_ctx *ctx)
{
	return tern_ctx_kernels_of(ctx)->path;
}

int tern_ctx_set_kernel(tern_ctx *ctx, tern_kernel_path p)
{
	if (!tern_kernel_available(p))
		return tern_error(ctx, TERN_E_UNSUPPORTED, "kernel path '%s' is not available on this CPU or build",
				  tern_kernel_path_name(p));
	ctx->kernels = tern_kernels_get(p);
	return TERN_OK;
}

void *tern_ctx_scratch(tern_ctx *ctx, int slot, size_t bytes)
{
	if (slot < 0 || slot >= TERN_SCRATCH_SLOTS) {
		tern_error(ctx, TERN_E_INVALID, "scratch slot %d out of range", slot);
		return NULL;
	}
	if (ctx->scratch_size[slot] >= bytes && ctx->scratch[slot])
		return ctx->scratch[slot];
	/* Grow geometrically so a slowly growing request settles quickly. */
	size_t want = bytes;
	if (ctx->scratch_size[slot] < SIZE_MAX / 2 && want < ctx->scratch_size[slot] * 2)
		want = ctx->scratch_size[slot] * 2;
	void *p = tern_alloc(want);
	if (!p) {
		tern_error(ctx, TERN_E_NOMEM, "cannot allocate %zu bytes of scratch", want);
		return NULL;
	}
	tern_free(ctx->scratch[slot]);
	ctx->scratch[slot] = p;
	ctx->scratch_size[slot] = want;
	return p;
}
