/*
 * tern.h: the public entry point of libtern: status codes, the library
 * context (errors, logging, allocation, threads) and version queries.
 *
 * Thread safety: a tern_ctx is used by one thread at a time. Distinct
 * contexts never share mutable state, so many threads may each use their
 * own. Functions that take no context are reentrant. The library never
 * prints unless a log callback is set, and never exits or aborts.
 */
#ifndef TERN_TERN_H
#define TERN_TERN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TERN_BUILDING) && defined(__GNUC__)
#define TERN_API __attribute__((visibility("default")))
#else
#define TERN_API
#endif

#if defined(__GNUC__)
#define TERN_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TERN_PRINTF(f, a)
#endif

#define TERN_VERSION_MAJOR 0
#define TERN_VERSION_MINOR 1
#define TERN_VERSION_PATCH 0

/* Status codes: TERN_OK is 0, every failure is negative. */
enum tern_status {
	TERN_OK = 0,
	TERN_E_INVALID = -1,     /* bad argument or shape */
	TERN_E_NOMEM = -2,       /* allocation failed */
	TERN_E_IO = -3,          /* open/read/write/mmap failed */
	TERN_E_FORMAT = -4,      /* corrupt or inconsistent file content */
	TERN_E_OVERFLOW = -5,    /* a size computation overflowed or is absurd */
	TERN_E_UNSUPPORTED = -6, /* valid, but not supported (dtype, version) */
	TERN_E_PLUGIN = -7,      /* plugin could not be loaded or used */
	TERN_E_ABI = -8,         /* plugin ABI version mismatch */
	TERN_E_NOT_FOUND = -9,   /* named thing (tensor, plugin, key) absent */
	TERN_E_CANCELLED = -10,  /* the caller's cancel callback said stop */
	TERN_E_INTERNAL = -11,   /* a bug in tern: please report */
};

/* Short constant description of a status code ("corrupt file", ...). */
TERN_API const char *tern_status_str(int status);

/* Library version string, e.g. "0.1.0". Static storage. */
TERN_API const char *tern_version(void);

/* Log levels for the context's log callback. */
enum tern_log_level { TERN_LOG_ERROR = 0, TERN_LOG_WARN = 1, TERN_LOG_INFO = 2, TERN_LOG_DEBUG = 3 };

typedef void (*tern_log_fn)(void *user, int level, const char *msg);

typedef struct tern_ctx tern_ctx;
typedef struct tern_pool tern_pool;

typedef struct tern_ctx_params {
	size_t struct_size;   /* sizeof(tern_ctx_params): lets the struct grow */
	int n_threads;        /* worker threads incl. the caller; 0 = all cores */
	const char *kernel;   /* "scalar", "avx2", "avx512", "neon" or NULL:
	                         NULL reads TERN_KERNEL, else the best the CPU has */
	tern_log_fn log;      /* NULL: silent */
	void *log_user;
	int log_level;        /* messages above this level are dropped */
} tern_ctx_params;

/* Defaults: all cores, automatic kernel choice, silent. */
TERN_API tern_ctx_params tern_ctx_default_params(void);

/* Create a context; *out owns a thread pool and scratch memory.
 * params may be NULL (defaults). Caller frees with tern_ctx_free. */
TERN_API int tern_ctx_new(const tern_ctx_params *params, tern_ctx **out);

/* Free a context and join its threads. Accepts NULL. */
TERN_API void tern_ctx_free(tern_ctx *ctx);

/* The detail message of the last failure on this context ("" if none).
 * Owned by ctx, valid until the next call that fails. */
TERN_API const char *tern_ctx_errmsg(const tern_ctx *ctx);

/* Record a failure: formats the message into ctx (ctx may be NULL) and
 * returns status, so callers write `return tern_error(ctx, TERN_E_FORMAT, ...)`. */
TERN_API int tern_error(tern_ctx *ctx, int status, const char *fmt, ...) TERN_PRINTF(3, 4);

/* Clear the error message. */
TERN_API void tern_ctx_clear_error(tern_ctx *ctx);

/* Send a message to the context's log callback, if any. */
TERN_API void tern_log(tern_ctx *ctx, int level, const char *fmt, ...) TERN_PRINTF(3, 4);

/* The context's thread pool (owned by ctx) and its thread count. */
TERN_API tern_pool *tern_ctx_pool(tern_ctx *ctx);
TERN_API int tern_ctx_threads(const tern_ctx *ctx);

/* Name of the kernel path in use ("avx512", ...). Static storage. */
TERN_API const char *tern_ctx_kernel(const tern_ctx *ctx);

/* Context-owned scratch buffer of at least `bytes`, 64-byte aligned; it
 * grows on demand and is reused (no allocation once warm). `slot` (0..7)
 * picks independent buffers. The pointer is valid until the next call with
 * the same slot or tern_ctx_free. Returns NULL and records an error on
 * failure. */
TERN_API void *tern_ctx_scratch(tern_ctx *ctx, int slot, size_t bytes);

/* 64-byte aligned allocation; free with tern_free. NULL on failure. */
TERN_API void *tern_alloc(size_t bytes);
TERN_API void tern_free(void *p);

/* Overflow-checked size arithmetic: return 0 and set *out on success,
 * TERN_E_OVERFLOW if the result does not fit in size_t. */
TERN_API int tern_size_mul(size_t a, size_t b, size_t *out);
TERN_API int tern_size_add(size_t a, size_t b, size_t *out);

/* ---- thread pool ---------------------------------------------------- */

/* A task body: called once for each slot ith in [0, nth) of a run, nth
 * being the pool's size. Slots run concurrently on the pool's threads, but
 * which thread runs which slot is not fixed: a thread that is late to a
 * run (descheduled, or waking from sleep) leaves its slot to the others,
 * so one thread may run several slots one after the other. A body may keep
 * per-slot state indexed by ith; it must not wait for another slot of the
 * same run. */
typedef void (*tern_pool_fn)(void *arg, int ith, int nth);

/* Create a persistent pool of n threads (the caller counts as one; n >= 1).
 * Caller frees with tern_pool_free. */
TERN_API int tern_pool_new(int n, tern_pool **out);
TERN_API void tern_pool_free(tern_pool *pool);
TERN_API int tern_pool_size(const tern_pool *pool);

/* Run fn for every slot 0..n-1 on the pool's threads (the caller takes
 * part) and wait for all. Not reentrant:
 * one run at a time per pool; fn must not call tern_pool_run. Allocates
 * nothing. */
TERN_API void tern_pool_run(tern_pool *pool, tern_pool_fn fn, void *arg);

/* Split [0, n) into nth near-equal ranges aligned to `align` items and
 * return thread ith's range in [*begin, *end). */
TERN_API void tern_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *begin,
			       int64_t *end);

#ifdef __cplusplus
}
#endif
#endif
