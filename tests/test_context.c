/*
 * test_context.c: context creation, error messages, logging, scratch
 * memory, kernel selection and the overflow-checked size helpers.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/matmul.h"
#include "tern/tern.h"

static char last_log[256];
static int last_level = -1;

static void capture(void *user, int level, const char *msg)
{
	(void)user;
	last_level = level;
	snprintf(last_log, sizeof last_log, "%s", msg);
}

Test(context, error_message_and_status)
{
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	cr_assert_str_eq(tern_ctx_errmsg(ctx), "");
	int rc = tern_error(ctx, TERN_E_FORMAT, "tensor '%s': offset %d past the end", "w", 42);
	cr_assert_eq(rc, TERN_E_FORMAT);
	cr_assert_str_eq(tern_ctx_errmsg(ctx), "tensor 'w': offset 42 past the end");
	tern_ctx_clear_error(ctx);
	cr_assert_str_eq(tern_ctx_errmsg(ctx), "");
	cr_assert_eq(tern_error(NULL, TERN_E_IO, "ignored"), TERN_E_IO);
	cr_assert_str_eq(tern_ctx_errmsg(NULL), "");
	tern_ctx_free(ctx);
	tern_ctx_free(NULL);
}

Test(context, every_status_has_a_distinct_string)
{
	for (int a = TERN_E_INTERNAL; a <= TERN_OK; a++)
		for (int b = TERN_E_INTERNAL; b < a; b++)
			cr_assert_str_neq(tern_status_str(a), tern_status_str(b));
	cr_assert_str_eq(tern_status_str(12345), "unknown status");
}

Test(context, log_callback_respects_level)
{
	tern_ctx_params p = tern_ctx_default_params();
	p.log = capture;
	p.log_level = TERN_LOG_WARN;
	p.n_threads = 1;
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(&p, &ctx), TERN_OK);
	tern_log(ctx, TERN_LOG_INFO, "dropped %d", 1);
	cr_assert_eq(last_level, -1);
	tern_log(ctx, TERN_LOG_WARN, "kept %d", 2);
	cr_assert_eq(last_level, TERN_LOG_WARN);
	cr_assert_str_eq(last_log, "kept 2");
	tern_ctx_free(ctx);
}

Test(context, params_are_validated)
{
	tern_ctx *ctx = NULL;
	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = -1;
	cr_assert_eq(tern_ctx_new(&p, &ctx), TERN_E_INVALID);
	cr_assert_null(ctx);
	p = tern_ctx_default_params();
	p.kernel = "no-such-path";
	cr_assert_eq(tern_ctx_new(&p, &ctx), TERN_E_UNSUPPORTED);
	p = tern_ctx_default_params();
	p.struct_size = 3;
	cr_assert_eq(tern_ctx_new(&p, &ctx), TERN_E_INVALID);
	p = tern_ctx_default_params();
	p.n_threads = 3;
	p.kernel = "scalar";
	cr_assert_eq(tern_ctx_new(&p, &ctx), TERN_OK);
	cr_assert_eq(tern_ctx_threads(ctx), 3);
	cr_assert_str_eq(tern_ctx_kernel(ctx), "scalar");
	tern_ctx_free(ctx);
}

Test(context, kernel_choice_follows_detection)
{
	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = 1;
	p.kernel = NULL;
	tern_ctx *ctx;
	const char *env = getenv("TERN_KERNEL");
	cr_assert_eq(tern_ctx_new(&p, &ctx), TERN_OK);
	if (!env || !*env)
		cr_assert_eq(tern_ctx_kernel_path(ctx), tern_kernel_detect());
	cr_assert(tern_kernel_available(TERN_KERNEL_SCALAR));
	cr_assert_eq(tern_ctx_set_kernel(ctx, TERN_KERNEL_SCALAR), TERN_OK);
	cr_assert_str_eq(tern_ctx_kernel(ctx), "scalar");
	for (int k = 0; k < TERN_KERNEL_COUNT; k++)
		if (!tern_kernel_available((tern_kernel_path)k))
			cr_assert_eq(tern_ctx_set_kernel(ctx, (tern_kernel_path)k), TERN_E_UNSUPPORTED);
	tern_ctx_free(ctx);
}

Test(context, scratch_grows_and_is_reused)
{
	tern_ctx *ctx;
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
	char *a = tern_ctx_scratch(ctx, 0, 100);
	cr_assert_not_null(a);
	cr_assert_eq((uintptr_t)a % 64, 0);
	memset(a, 1, 100);
	cr_assert_eq(tern_ctx_scratch(ctx, 0, 50), a, "a smaller request reuses the buffer");
	char *b = tern_ctx_scratch(ctx, 0, 10000);
	cr_assert_not_null(b);
	memset(b, 2, 10000);
	cr_assert_null(tern_ctx_scratch(ctx, 99, 10));
	cr_assert_eq(tern_ctx_scratch(ctx, 0, SIZE_MAX), NULL);
	cr_assert_neq(strstr(tern_ctx_errmsg(ctx), "scratch"), NULL);
	tern_ctx_free(ctx);
}

Test(context, size_helpers_detect_overflow)
{
	size_t r;
	cr_assert_eq(tern_size_mul(SIZE_MAX / 2, 2, &r), TERN_OK);
	cr_assert_eq(r, SIZE_MAX - 1);
	cr_assert_eq(tern_size_mul(SIZE_MAX / 2 + 1, 2, &r), TERN_E_OVERFLOW);
	cr_assert_eq(tern_size_add(SIZE_MAX, 1, &r), TERN_E_OVERFLOW);
	cr_assert_eq(tern_size_add(1, 2, &r), TERN_OK);
	cr_assert_eq(r, 3);
	cr_assert_null(tern_alloc(SIZE_MAX));
	cr_assert_null(tern_alloc(SIZE_MAX - (1u << 20)));
	void *p = tern_alloc(0);
	cr_assert_not_null(p);
	tern_free(p);
	/* Small blocks are 64-byte aligned; from 8 MiB on (KV caches) 2 MiB
	 * aligned, so whole huge pages can back them; all writable to the end. */
	static const size_t sizes[] = { 1, 63, 4096, (8u << 20) - 1, 8u << 20, (9u << 20) + 5 };
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		unsigned char *b = tern_alloc(sizes[i]);
		cr_assert_not_null(b);
		cr_expect_eq((uintptr_t)b % (sizes[i] >= (8u << 20) ? (2u << 20) : 64), 0, "%zu",
			     sizes[i]);
		b[0] = 1;
		b[sizes[i] - 1] = 2;
		tern_free(b);
	}
}
