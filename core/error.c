/*
 * error.c: status strings, error messages and logging on a context.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

const char *tern_status_str(int status)
{
	switch (status) {
	case TERN_OK: return "success";
	case TERN_E_INVALID: return "invalid argument";
	case TERN_E_NOMEM: return "out of memory";
	case TERN_E_IO: return "input/output error";
	case TERN_E_FORMAT: return "corrupt or malformed data";
	case TERN_E_OVERFLOW: return "size overflow";
	case TERN_E_UNSUPPORTED: return "unsupported";
	case TERN_E_PLUGIN: return "plugin error";
	case TERN_E_ABI: return "plugin ABI mismatch";
	case TERN_E_NOT_FOUND: return "not found";
	case TERN_E_CANCELLED: return "cancelled";
	case TERN_E_INTERNAL: return "internal error";
	default: return "unknown status";
	}
}

int tern_error(tern_ctx *ctx, int status, const char *fmt, ...)
{
	if (!ctx)
		return status;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
	va_end(ap);
	tern_log(ctx, TERN_LOG_DEBUG, "error %d (%s): %s", status, tern_status_str(status),
		 ctx->errmsg);
	return status;
}

const char *tern_ctx_errmsg(const tern_ctx *ctx)
{
	return ctx ? ctx->errmsg : "";
}

void tern_ctx_clear_error(tern_ctx *ctx)
{
	if (ctx)
		ctx->errmsg[0] = '\0';
}

void tern_log(tern_ctx *ctx, int level, const char *fmt, ...)
{
	if (!ctx || !ctx->params.log || level > ctx->params.log_level)
		return;
	char buf[TERN_ERRMSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	ctx->params.log(ctx->params.log_user, level, buf);
}
