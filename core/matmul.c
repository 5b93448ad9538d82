/*
 * matmul.c: the driver behind tern_matmul. It quantizes activations per
 * token, cuts the output into tiles of rows x tokens, hands the tiles to
 * the pool's threads and turns the kernels' raw int32 sums into floats.
 *
 * Every output is computed by exactly one thread, by the same kernel code
 * and the same float expression whatever the tiling, so results do not
 * depend on the thread count, and ternary results do not depend on the
 * kernel path either (the kernels only produce exact integers). Memory
 * comes from the context's scratch slot 0 (slots 1..7 are the callers'),
 * so nothing is allocated once the buffers are warm.
 */
#include <stdatomic.h>
#include <string.h>

#include "core/internal.h"
#include "core/vecf.h"
#include "tern/matmul.h"
#include "tern/tensor.h"

#define MATMUL_SLOT 0

/* Rows per tile: 64 packed ternary rows of a few thousand weights stay in
 * L2 while blocks of 4 tokens' activations (in L1) stream against them. */
#define TILE_ROWS 64
/* Float weights are 8-16x bigger per row than T2, so GEMM tiles are shorter. */
#define TILE_ROWS_FLOAT 16
/* Upper bound on a thread's raw int32 tile (256 KiB). */
#define TILE_RAW_MAX 65536
/* Below this many multiply-adds a matmul runs on the calling thread: waking
 * the pool would cost more than it saves. */
#define SMALL_WORK 65536
/* Integer sums must fit in int32: |code * q| <= 256 per ternary weight,
 * |w * q| <= 2^14 per int8 weight. */
#define MAX_KPAD_TERNARY (1 << 22)
#define MAX_K_I8 ((1 << 17) - 1)

static size_t align64(size_t n)
{
	return (n + 63) & ~(size_t)63;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
	return (a + b - 1) / b;
}

static int64_t round_up4(int64_t n)
{
	return (n + 3) & ~(int64_t)3;
}

static bool is_quantized_weight(tern_dtype d)
{
	return d == TERN_DTYPE_I8 || d == TERN_DTYPE_T2 || d == TERN_DTYPE_T3 ||
	       d == TERN_DTYPE_I4;
}

static bool is_float_weight(tern_dtype d)
{
	return d == TERN_DTYPE_F32 || d == TERN_DTYPE_F16 || d == TERN_DTYPE_BF16;
}

/* ---- quantized activations --------------------------------------------- */

/* Byte offsets of the parts of a tern_qact laid out in one buffer. */
typedef struct qact_layout {
	size_t scale, sum, csum, total;
} qact_layout;

static int qact_layout_of(int64_t n, int64_t kpad, qact_layout *l)
{
	size_t q, s, c;
	if (tern_size_mul((size_t)n, (size_t)kpad, &q) || tern_size_mul((size_t)n, 4, &s) ||
	    tern_size_mul((size_t)n, (size_t)(kpad / 32) * 4, &c))
		return TERN_E_OVERFLOW;
	/* Each part starts 64-byte aligned; the additions cannot overflow
	 * once the products fit, except near SIZE_MAX, which is checked. */
	if (q > SIZE_MAX / 4 || s > SIZE_MAX / 4 || c > SIZE_MAX / 4)
		return TERN_E_OVERFLOW;
	l->scale = align64(q);
	l->sum = l->scale + align64(s);
	l->csum = l->sum + align64(s);
	l->total = l->csum + align64(c);
	return TERN_OK;
}

static void qact_bind(void *buf, int64_t n, int64_t k, int64_t kpad, const qact_layout *l,
		      tern_qact *a)
{
	char *b = buf;
	a->n = n;
	a->k = k;
	a->kpad = kpad;
	a->q = (int8_t *)b;
	a->scale = (float *)(b + l->scale);
	a->sum = (int32_t *)(b + l->sum);
	a->csum = (int32_t *)(b + l->csum);
}

typedef struct quant_job {
	tern_quant_fn quant_row; /* for TERN_ACTQ_MUL with TERN_ROUND_EVEN */
	const float *x;
	int64_t ldx;
	tern_actq_mode mode;
	tern_round_mode round;
	tern_qact *a;
} quant_job;

static void quant_token(const quant_job *j, int64_t t)
{
	tern_qact *a = j->a;
	int8_t *q = a->q + t * a->kpad;
	int64_t nc = a->kpad / 32;
	if (j->mode == TERN_ACTQ_MUL && j->round == TERN_ROUND_EVEN) {
		j->quant_row(j->x + t * j->ldx, a->k, a->kpad, q, &a->scale[t], a->csum + t * nc,
			     &a->sum[t]);
		return;
	}
	tern_quantize_row_i8(j->x + t * j->ldx, a->k, a->kpad, j->mode, j->round, q, &a->scale[t]);
	tern_quant_row_sums(q, a->kpad, a->csum + t * nc, &a->sum[t]);
}

static void quant_fn(void *arg, int ith, int nth)
{
	const quant_job *j = arg;
	int64_t b, e;
	tern_split_range(j->a->n, 1, ith, nth, &b, &e);
	for (int64_t t = b; t < e; t++)
		quant_token(j, t);
}

static void quant_run(tern_ctx *ctx, const float *x, int64_t ldx, tern_actq_mode mode,
		      tern_round_mode round, tern_qact *a)
{
	quant_job j = { tern_ctx_kernels_of(ctx)->quant_row, x, ldx, mode, round, a };
	if (a->n == 1 || a->n * a->k < SMALL_WORK)
		quant_fn(&j, 0, 1);
	else
		tern_pool_run(tern_ctx_pool(ctx), quant_fn, &j);
}

static int check_act_args(tern_ctx *ctx, const float *x, int64_t n, int64_t k, int64_t ldx)
{
	if (!x)
		return tern_error(ctx, TERN_E_INVALID, "matmul: NULL activations");
	if (n < 1 || k < 1)
		return tern_error(ctx, TERN_E_INVALID, "matmul: %lld tokens of %lld values",
				  (long long)n, (long long)k);
	if (n > 1 && ldx < k)
		return tern_error(ctx, TERN_E_INVALID, "matmul: activation stride %lld < k = %lld",
				  (long long)ldx, (long long)k);
	return TERN_OK;
}

int tern_qact_quantize(tern_ctx *ctx, int slot, tern_dtype wtype, const float *x, int64_t n,
		       int64_t k, int64_t ldx, tern_actq_mode mode, tern_round_mode round,
		       tern_qact *out)
{
	if (!ctx || !out)
		return tern_error(ctx, TERN_E_INVALID, "tern_qact_quantize: NULL context or output");
	if (slot < 1 || slot >= TERN_SCRATCH_SLOTS)
		return tern_error(ctx, TERN_E_INVALID, "tern_qact_quantize: slot %d (1..%d allowed)",
				  slot, TERN_SCRATCH_SLOTS - 1);
	if (!is_quantized_weight(wtype))
		return tern_error(ctx, TERN_E_INVALID,
				  "tern_qact_quantize: weights of dtype %s take float activations",
				  tern_dtype_name(wtype));
	int rc = check_act_args(ctx, x, n, k, ldx);
	if (rc != TERN_OK)
		return rc;
	int64_t kpad = tern_row_padded(wtype, k);
	qact_layout l;
	if (kpad < 0 || qact_layout_of(n, kpad, &l) != TERN_OK)
		return tern_error(ctx, TERN_E_OVERFLOW, "tern_qact_quantize: %lld x %lld is too big",
				  (long long)n, (long long)k);
	void *buf = tern_ctx_scratch(ctx, slot, l.total);
	if (!buf)
		return TERN_E_NOMEM;
	qact_bind(buf, n, k, kpad, &l, out);
	quant_run(ctx, x, ldx, mode, round, out);
	return TERN_OK;
}

/* ---- weights ------------------------------------------------------------ */

/* What the driver needs to know about W, checked once per call. */
typedef struct wview {
	tern_dtype dtype;
	const uint8_t *codes;
	size_t stride;         /* bytes per stored row */
	int64_t rows, cols, kpad;
	int64_t blk, nb;       /* scale block (kpad when not per block), blocks per row */
	int64_t nraw;          /* kernel outputs per row and token: nb (I4: 1 float) */
	tern_scale_kind kind;
	const uint8_t *scales;
	bool f16_scales;
} wview;

static int wview_of(tern_ctx *ctx, const tern_tensor *W, wview *v)
{
	if (!W || !W->data)
		return tern_error(ctx, TERN_E_INVALID, "matmul: NULL weight tensor or data");
	size_t need;
	int rc = tern_tensor_bytes(ctx, W, &need);
	if (rc != TERN_OK)
		return rc;
	if (W->nbytes < need)
		return tern_error(ctx, TERN_E_INVALID,
				  "matmul: tensor '%s' holds %zu bytes, its shape needs %zu",
				  W->name ? W->name : "", W->nbytes, need);
	if (!is_quantized_weight(W->dtype) && !is_float_weight(W->dtype))
		return tern_error(ctx, TERN_E_UNSUPPORTED, "matmul: weights of dtype %s",
				  tern_dtype_name(W->dtype));
	memset(v, 0, sizeof *v);
	v->dtype = W->dtype;
	v->codes = W->data;
	v->rows = tern_tensor_rows(W);
	v->cols = tern_tensor_cols(W);
	v->stride = tern_row_bytes(W->dtype, v->cols);
	v->kpad = tern_row_padded(W->dtype, v->cols);
	v->kind = W->q.kind;
	v->blk = v->kpad;
	v->nb = 1;
	v->nraw = 1;
	if (is_quantized_weight(W->dtype)) {
		if (W->dtype == TERN_DTYPE_I8 && v->cols > MAX_K_I8)
			return tern_error(ctx, TERN_E_UNSUPPORTED,
					  "matmul: int8 rows of %lld values (at most %d)",
					  (long long)v->cols, MAX_K_I8);
		if ((W->dtype == TERN_DTYPE_T2 || W->dtype == TERN_DTYPE_T3) &&
		    v->kpad > MAX_KPAD_TERNARY)
			return tern_error(ctx, TERN_E_UNSUPPORTED,
					  "matmul: ternary rows of %lld weights (at most %d)",
					  (long long)v->kpad, MAX_KPAD_TERNARY);
		if (v->kind == TERN_SCALE_BLOCK) {
			if (W->dtype == TERN_DTYPE_I8)
				return tern_error(ctx, TERN_E_UNSUPPORTED,
						  "matmul: int8 weights with per-block scales");
			v->blk = W->q.block;
			v->nb = ceil_div(v->kpad, v->blk);
			v->nraw = W->dtype == TERN_DTYPE_I4 ? 1 : v->nb;
		}
		v->scales = tern_tensor_scales(W);
		v->f16_scales = W->q.scale_type == TERN_DTYPE_F16;
	}
	return TERN_OK;
}

static float scale_get(const wview *v, size_t i)
{
	if (v->f16_scales) {
		uint16_t h;
		memcpy(&h, v->scales + 2 * i, 2);
		return tern_f16_to_f32(h);
	}
	float f;
	memcpy(&f, v->scales + 4 * i, 4);
	return f;
}

/* ---- tiling ------------------------------------------------------------- */

typedef struct tiling {
	int64_t tr, tt;     /* rows and tokens per tile */
	int64_t nrt, ntt;   /* tiles along rows and tokens */
	int nth;            /* threads that take part */
} tiling;

/* Tiles of up to `tr` rows x `tt_max` tokens. When there are too few row
 * tiles to keep every thread busy, tokens are split as well (if allowed). */
static tiling tiling_of(int64_t rows, int64_t n, int64_t tr, int64_t tt_max, int nth,
			bool split_tokens)
{
	tiling t;
	t.nth = nth;
	if (rows < tr * nth)
		tr = TERN_MAX(4, round_up4(ceil_div(rows, nth)));
	t.tr = tr;
	t.nrt = ceil_div(rows, tr);
	t.tt = TERN_MIN(n, tt_max);
	if (split_tokens && t.nrt < nth && n >= 8) {
		int64_t parts = ceil_div(nth, t.nrt);
		t.tt = TERN_MIN(t.tt, round_up4(ceil_div(n, parts)));
	}
	t.ntt = ceil_div(n, t.tt);
	return t;
}

static void tile_bounds(const tiling *g, int64_t i, int64_t rows, int64_t n, int64_t *r0,
			int64_t *nr, int64_t *t0, int64_t *nt)
{
	int64_t rt = i / g->ntt, tt = i % g->ntt;
	*r0 = rt * g->tr;
	*nr = TERN_MIN(g->tr, rows - *r0);
	*t0 = tt * g->tt;
	*nt = TERN_MIN(g->tt, n - *t0);
}

static void pool_go(tern_ctx *ctx, int nth, tern_pool_fn fn, void *arg)
{
	if (nth == 1)
		fn(arg, 0, 1);
	else
		tern_pool_run(tern_ctx_pool(ctx), fn, arg);
}

static int threads_for(tern_ctx *ctx, int64_t rows, int64_t n, int64_t k)
{
	int64_t work;
	if (!__builtin_mul_overflow(rows, n, &work) && !__builtin_mul_overflow(work, k, &work) &&
	    work < SMALL_WORK)
		return 1;
	return tern_ctx_threads(ctx);
}

/* ---- quantized weights -------------------------------------------------- */

/*
 * Work sharing. Each thread owns a contiguous run of tiles (so its weight
 * reads stay sequential for the prefetchers) and takes them one at a time
 * from an atomic cursor; a thread that finishes early takes tiles from the
 * other threads' cursors. On a machine whose cores run at different speeds
 * from one moment to the next (a VM beside other tenants), nobody waits
 * for the slowest static share. Which thread computes a tile never changes
 * its result.
 */
#define STEAL_MAX 64

typedef struct steal_cursor {
	_Alignas(64) atomic_llong next;
	int64_t end;
} steal_cursor;

/* One weight of a (possibly multi-weight) quantized matmul. */
typedef struct qpart {
	const wview *w;
	const int32_t *bsum;   /* [n][nb] activation sums per scale block */
	tiling g;
	float *y;
	int64_t ldy;
	int32_t *out_raw;      /* tern_matmul_raw_i32: kernels write here */
	int64_t first;         /* index of its first tile among all parts' */
} qpart;

typedef struct qjob {
	const tern_kernels *kern;
	const tern_qact *a;
	int count;
	qpart part[TERN_MATMUL_MANY_MAX];
	int64_t tiles;         /* all parts' tiles */
	int32_t *raw;          /* nth tiles of raw_stride int32 */
	size_t raw_stride;
	steal_cursor *cur;     /* [nth], or NULL for a plain static split */
} qjob;

static void run_kernel(const qjob *j, const qpart *p, int64_t r0, int64_t nr, int64_t t0,
		       int64_t nt, int32_t *out)
{
	const wview *w = p->w;
	const tern_qact *a = j->a;
	const uint8_t *wr = w->codes + (size_t)r0 * w->stride;
	const int8_t *at = a->q + t0 * a->kpad;
	switch (w->dtype) {
	case TERN_DTYPE_T2:
		j->kern->t2_dot(wr, w->stride, nr, at, (size_t)a->kpad, nt, w->kpad, w->blk, out);
		break;
	case TERN_DTYPE_T3:
		j->kern->t3_dot(wr, w->stride, nr, at, (size_t)a->kpad, nt, w->kpad, w->blk, out);
		break;
	case TERN_DTYPE_I4: {
		/* Block scales, one per 64-byte group, nb per row. */
		const size_t ssz = w->f16_scales ? 2 : 4;
		j->kern->i4_dot(wr, w->stride, w->scales + (size_t)r0 * (size_t)w->nb * ssz,
				(size_t)w->nb * ssz, w->f16_scales, nr, at, (size_t)a->kpad,
				p->bsum + t0 * w->nb, nt, w->kpad, (float *)out);
		break;
	}
	default:
		j->kern->i8_dot((const int8_t *)wr, w->stride, nr, at, (size_t)a->kpad, nt, w->cols,
				out);
		break;
	}
}

/* The one-token cases of finish_tile below, where a tile's results are
 * contiguous: y[r] = f[r] * as, and y[r] = (raw[r] - asum) * wt * as, each
 * lane with the scalar loop's operations in its order. Decoding runs about
 * a million rows per token through here; the strided scalar loop took
 * some 4% of a 2B4T-shaped decode step. */
static void finish_run_scaled(const float *f, int64_t n, float as, float *y)
{
	int64_t r = 0;
	for (; r + 4 <= n; r += 4) {
		vf4 v;
		VF_LOAD(v, f + r);
		v *= VF_SPLAT(as);
		VF_STORE(y + r, v);
	}
	for (; r < n; r++)
		y[r] = f[r] * as;
}

static void finish_run_tensor(const int32_t *raw, int64_t n, int32_t asum, float wt, float as,
			      float *y)
{
	const vi4 s = { asum, asum, asum, asum };
	int64_t r = 0;
	for (; r + 4 <= n; r += 4) {
		vi4 x;
		memcpy(&x, raw + r, sizeof x);
		vf4 v = __builtin_convertvector(x - s, vf4) * VF_SPLAT(wt) * VF_SPLAT(as);
		VF_STORE(y + r, v);
	}
	for (; r < n; r++)
		y[r] = (float)(raw[r] - asum) * wt * as;
}

/* Raw sums of a tile ([nr][nt][nb]) to floats: y = (raw - asum) * ws * as,
 * in that order, one block at a time for per-block scales. Tokens are the
 * outer loop so the stores run along rows of y. */
static void finish_tile(const qjob *j, const qpart *p, int64_t r0, int64_t nr, int64_t t0,
			int64_t nt, const int32_t *raw)
{
	const wview *w = p->w;
	const tern_qact *a = j->a;
	const int64_t nb = w->nb;
	const float wt = w->kind == TERN_SCALE_TENSOR ? scale_get(w, 0) : 0.0f;
	if (w->dtype == TERN_DTYPE_I4) {
		/* The kernel applied the weight scales: [nr][nt] floats. */
		const float *f = (const float *)raw;
		if (nt == 1) {
			finish_run_scaled(f, nr, a->scale[t0], p->y + t0 * p->ldy + r0);
			return;
		}
		for (int64_t t = 0; t < nt; t++) {
			const float as = a->scale[t0 + t];
			float *yt = p->y + (t0 + t) * p->ldy + r0;
			for (int64_t r = 0; r < nr; r++)
				yt[r] = f[r * nt + t] * as;
		}
		return;
	}
	for (int64_t t = 0; t < nt; t++) {
		const int64_t tok = t0 + t;
		const float as = a->scale[tok];
		const int32_t asum = w->dtype == TERN_DTYPE_I8 ? 0 : a->sum[tok];
		float *yt = p->y + tok * p->ldy + r0;
		const int32_t *rt = raw + t * nb;
		if (w->kind == TERN_SCALE_BLOCK) {
			const int32_t *bs = p->bsum + tok * nb;
			for (int64_t r = 0; r < nr; r++) {
				const int32_t *rw = rt + r * nt * nb;
				float acc = 0.0f;
				for (int64_t b = 0; b < nb; b++) {
					float s = scale_get(w, (size_t)((r0 + r) * nb + b));
					acc += (float)(rw[b] - bs[b]) * s;
				}
				yt[r] = acc * as;
			}
		} else if (w->kind == TERN_SCALE_ROW) {
			for (int64_t r = 0; r < nr; r++)
				yt[r] = (float)(rt[r * nt] - asum) * scale_get(w, (size_t)(r0 + r)) * as;
		} else if (nt == 1) {
			finish_run_tensor(rt, nr, asum, wt, as, yt);
		} else {
			for (int64_t r = 0; r < nr; r++)
				yt[r] = (float)(rt[r * nt] - asum) * wt * as;
		}
	}
}

/* Tile i of all the parts' tiles, with this thread's raw buffer. */
static void q_tile(const qjob *j, int64_t i, int32_t *raw)
{
	int pi = 0;
	while (pi + 1 < j->count && i >= j->part[pi + 1].first)
		pi++;
	const qpart *p = &j->part[pi];
	int64_t r0, nr, t0, nt;
	tile_bounds(&p->g, i - p->first, p->w->rows, j->a->n, &r0, &nr, &t0, &nt);
	if (p->out_raw) {
		/* Raw mode tiles cover all tokens, so the tile is a
		 * contiguous run of the [rows][n][nb] output. */
		run_kernel(j, p, r0, nr, t0, nt, p->out_raw + r0 * j->a->n * p->w->nb);
	} else {
		run_kernel(j, p, r0, nr, t0, nt, raw);
		finish_tile(j, p, r0, nr, t0, nt, raw);
	}
}

static void qjob_fn(void *arg, int ith, int nth)
{
	const qjob *j = arg;
	int32_t *raw = j->raw ? j->raw + (size_t)ith * j->raw_stride : NULL;
	if (!j->cur) {
		int64_t b, e;
		tern_split_range(j->tiles, 1, ith, nth, &b, &e);
		for (int64_t i = b; i < e; i++)
			q_tile(j, i, raw);
		return;
	}
	for (int v = 0; v < nth; v++) {
		steal_cursor *c = &j->cur[(ith + v) % nth];
		for (;;) {
			int64_t i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
			if (i >= c->end)
				break;
			q_tile(j, i, raw);
		}
	}
}

/* Run j on nth threads, sharing its tiles as described above. */
static void qjob_go(tern_ctx *ctx, int nth, qjob *j)
{
	steal_cursor cur[STEAL_MAX];
	j->cur = NULL;
	if (nth > 1 && nth <= STEAL_MAX) {
		for (int i = 0; i < nth; i++) {
			int64_t b, e;
			tern_split_range(j->tiles, 1, i, nth, &b, &e);
			atomic_init(&cur[i].next, b);
			cur[i].end = e;
		}
		j->cur = cur;
	}
	pool_go(ctx, nth, qjob_fn, j);
}

static int check_qact(tern_ctx *ctx, const wview *w, const tern_qact *a)
{
	if (!a || !a->q || !a->scale || !a->sum || (!a->csum && w->kind == TERN_SCALE_BLOCK))
		return tern_error(ctx, TERN_E_INVALID, "matmul: NULL or incomplete activations");
	if (a->n < 1 || a->k != w->cols || a->kpad != w->kpad)
		return tern_error(ctx, TERN_E_INVALID,
				  "matmul: activations of %lld (padded %lld) values for %s rows of "
				  "%lld (padded %lld)",
				  (long long)a->k, (long long)a->kpad, tern_dtype_name(w->dtype),
				  (long long)w->cols, (long long)w->kpad);
	return TERN_OK;
}

static tiling q_tiling(const wview *w, int64_t n, int nth, bool raw_mode)
{
	if (raw_mode)
		return tiling_of(w->rows, n, TILE_ROWS, n, nth, false);
	int64_t tt_max = TERN_MAX(4, TILE_RAW_MAX / (TILE_ROWS * w->nraw) / 4 * 4);
	return tiling_of(w->rows, n, TILE_ROWS, tt_max, nth, true);
}

/* Slot-0 scratch of a quantized matmul over `count` weights: nth raw
 * tiles of the largest tile, then each part's block sums. */
typedef struct q_scratch {
	size_t raw_stride;                    /* int32 per thread */
	size_t bsum_off[TERN_MATMUL_MANY_MAX]; /* bytes from the start */
	size_t total;
} q_scratch;

static int q_scratch_need(const wview *const *w, const tiling *g, int count, int64_t n, int nth,
			  q_scratch *s)
{
	size_t tile = 0;
	for (int i = 0; i < count; i++)
		tile = TERN_MAX(tile, (size_t)(g[i].tr * g[i].tt * w[i]->nraw));
	s->raw_stride = align64(tile * 4) / 4;
	size_t off;
	if (tern_size_mul(s->raw_stride * 4, (size_t)nth, &off))
		return TERN_E_OVERFLOW;
	for (int i = 0; i < count; i++) {
		size_t bsum_bytes;
		s->bsum_off[i] = off;
		if (tern_size_mul((size_t)n * 4, (size_t)w[i]->nb, &bsum_bytes) ||
		    tern_size_add(off, align64(bsum_bytes), &off))
			return TERN_E_OVERFLOW;
	}
	s->total = off;
	return TERN_OK;
}

/* Activation sums per scale block of w, from the 32-value chunk sums. */
static void block_sums(const wview *w, const tern_qact *a, int32_t *bsum)
{
	int64_t nc = a->kpad / 32, per = w->blk / 32;
	for (int64_t t = 0; t < a->n; t++) {
		for (int64_t b = 0; b < w->nb; b++) {
			int32_t s = 0;
			for (int64_t c = b * per; c < TERN_MIN((b + 1) * per, nc); c++)
				s += a->csum[t * nc + c];
			bsum[t * w->nb + b] = s;
		}
	}
}

/* The threaded part of a quantized matmul over `count` weights, with its
 * scratch (raw tiles, then block sums) at `mem`. */
static void matmul_q_run(tern_ctx *ctx, int count, const wview *const *w, const tern_qact *a,
			 const tiling *g, int nth, void *mem, const q_scratch *s, float *const *y,
			 const int64_t *ldy)
{
	qjob j;
	memset(&j, 0, sizeof j);
	j.kern = tern_ctx_kernels_of(ctx);
	j.a = a;
	j.count = count;
	j.raw = mem;
	j.raw_stride = s->raw_stride;
	for (int i = 0; i < count; i++) {
		qpart *p = &j.part[i];
		p->w = w[i];
		p->g = g[i];
		p->y = y[i];
		p->ldy = ldy[i];
		p->first = j.tiles;
		j.tiles += g[i].nrt * g[i].ntt;
		if (w[i]->kind == TERN_SCALE_BLOCK) {
			int32_t *bsum = (int32_t *)((char *)mem + s->bsum_off[i]);
			block_sums(w[i], a, bsum);
			p->bsum = bsum;
		}
	}
	qjob_go(ctx, nth, &j);
}

static int check_out(tern_ctx *ctx, const float *y, int64_t n, int64_t rows, int64_t ldy)
{
	if (!y)
		return tern_error(ctx, TERN_E_INVALID, "matmul: NULL output");
	if (n > 1 && ldy < rows)
		return tern_error(ctx, TERN_E_INVALID, "matmul: output stride %lld < rows = %lld",
				  (long long)ldy, (long long)rows);
	return TERN_OK;
}

int tern_matmul_q_many(tern_ctx *ctx, int count, const tern_tensor *const *W, const tern_qact *a,
		       float *const *y, const int64_t *ldy)
{
	if (!ctx)
		return tern_error(ctx, TERN_E_INVALID, "tern_matmul_q: NULL context");
	if (count < 1 || count > TERN_MATMUL_MANY_MAX || !W || !y || !ldy)
		return tern_error(ctx, TERN_E_INVALID,
				  "tern_matmul_q_many: %d weights (1..%d, with outputs)", count,
				  TERN_MATMUL_MANY_MAX);
	wview wv[TERN_MATMUL_MANY_MAX];
	const wview *wp[TERN_MATMUL_MANY_MAX];
	tiling g[TERN_MATMUL_MANY_MAX];
	int64_t work = 0;
	for (int i = 0; i < count; i++) {
		int rc = wview_of(ctx, W[i], &wv[i]);
		if (rc != TERN_OK)
			return rc;
		if (!is_quantized_weight(wv[i].dtype))
			return tern_error(ctx, TERN_E_INVALID,
					  "tern_matmul_q: %s weights take float activations "
					  "(tern_matmul)",
					  tern_dtype_name(wv[i].dtype));
		if ((rc = check_qact(ctx, &wv[i], a)) != TERN_OK ||
		    (rc = check_out(ctx, y[i], a->n, wv[i].rows, ldy[i])))
			return rc;
		wp[i] = &wv[i];
		/* Sizes are checked (rows * kpad fits the tensor's bytes), so
		 * the work estimate only saturates. */
		int64_t wk;
		if (__builtin_mul_overflow(wv[i].rows, a->n, &wk) ||
		    __builtin_mul_overflow(wk, wv[i].kpad, &wk) ||
		    __builtin_add_overflow(work, wk, &work))
			work = INT64_MAX;
	}
	int nth = work < SMALL_WORK ? 1 : tern_ctx_threads(ctx);
	for (int i = 0; i < count; i++)
		g[i] = q_tiling(&wv[i], a->n, nth, false);
	q_scratch s;
	if (q_scratch_need(wp, g, count, a->n, nth, &s) != TERN_OK)
		return tern_error(ctx, TERN_E_OVERFLOW, "tern_matmul_q: scratch size overflows");
	void *mem = tern_ctx_scratch(ctx, MATMUL_SLOT, s.total);
	if (!mem)
		return TERN_E_NOMEM;
	matmul_q_run(ctx, count, wp, a, g, nth, mem, &s, y, ldy);
	return TERN_OK;
}

int tern_matmul_q(tern_ctx *ctx, const tern_tensor *W, const tern_qact *a, float *y, int64_t ldy)
{
	return tern_matmul_q_many(ctx, 1, &W, a, &y, &ldy);
}

int tern_matmul_raw_i32(tern_ctx *ctx, const tern_tensor *W, const tern_qact *a, int32_t *out)
{
	if (!ctx || !out)
		return tern_error(ctx, TERN_E_INVALID, "tern_matmul_raw_i32: NULL context or output");
	wview w;
	int rc = wview_of(ctx, W, &w);
	if (rc != TERN_OK)
		return rc;
	if (!is_quantized_weight(w.dtype) || w.dtype == TERN_DTYPE_I4)
		return tern_error(ctx, TERN_E_INVALID,
				  "tern_matmul_raw_i32: %s weights have no integer sums (their kernel "
				  "applies the scales)",
				  tern_dtype_name(w.dtype));
	if ((rc = check_qact(ctx, &w, a)) != TERN_OK)
		return rc;
	qjob j;
	memset(&j, 0, sizeof j);
	j.kern = tern_ctx_kernels_of(ctx);
	j.a = a;
	j.count = 1;
	int nth = threads_for(ctx, w.rows, a->n, w.kpad);
	j.part[0].w = &w;
	j.part[0].g = q_tiling(&w, a->n, nth, true);
	j.part[0].out_raw = out;
	j.tiles = j.part[0].g.nrt * j.part[0].g.ntt;
	qjob_go(ctx, nth, &j);
	return TERN_OK;
}

/* ---- float weights ------------------------------------------------------ */

typedef struct fjob {
	tern_fdot_fn dot;
	const wview *w;
	const float *x;
	int64_t ldx, n;
	float *y;
	int64_t ldy;
	tiling g;
} fjob;

static void fjob_fn(void *arg, int ith, int nth)
{
	const fjob *j = arg;
	int64_t b, e;
	tern_split_range(j->g.nrt * j->g.ntt, 1, ith, nth, &b, &e);
	for (int64_t i = b; i < e; i++) {
		int64_t r0, nr, t0, nt;
		tile_bounds(&j->g, i, j->w->rows, j->n, &r0, &nr, &t0, &nt);
		j->dot(j->w->codes + (size_t)r0 * j->w->stride, j->w->stride, nr, j->x + t0 * j->ldx,
		       j->ldx, nt, j->w->cols, j->y + t0 * j->ldy + r0, j->ldy);
	}
}

static void matmul_float(tern_ctx *ctx, const wview *w, const float *x, int64_t n, int64_t ldx,
			 float *y, int64_t ldy)
{
	const tern_kernels *k = tern_ctx_kernels_of(ctx);
	fjob j;
	j.dot = w->dtype == TERN_DTYPE_F32 ? k->f32_dot
		: w->dtype == TERN_DTYPE_F16 ? k->f16_dot
					     : k->bf16_dot;
	j.w = w;
	j.x = x;
	j.ldx = ldx;
	j.n = n;
	j.y = y;
	j.ldy = ldy;
	int nth = threads_for(ctx, w->rows, n, w->cols);
	j.g = tiling_of(w->rows, n, n > 1 ? TILE_ROWS_FLOAT : TILE_ROWS, n, nth, true);
	pool_go(ctx, nth, fjob_fn, &j);
}

int tern_matmul(tern_ctx *ctx, const tern_tensor *W, const float *x, int64_t n, int64_t ldx,
		float *y, int64_t ldy)
{
	if (!ctx)
		return tern_error(ctx, TERN_E_INVALID, "tern_matmul: NULL context");
	wview w;
	int rc = wview_of(ctx, W, &w);
	if (rc != TERN_OK)
		return rc;
	if ((rc = check_act_args(ctx, x, n, w.cols, ldx)) != TERN_OK ||
	    (rc = check_out(ctx, y, n, w.rows, ldy)) != TERN_OK)
		return rc;
	if (is_float_weight(w.dtype)) {
		matmul_float(ctx, &w, x, n, ldx, y, ldy);
		return TERN_OK;
	}

	/* One slot-0 buffer: the quantized activations, then the raw tiles
	 * and block sums. */
	qact_layout l;
	if (qact_layout_of(n, w.kpad, &l) != TERN_OK)
		return tern_error(ctx, TERN_E_OVERFLOW, "tern_matmul: %lld x %lld activations",
				  (long long)n, (long long)w.cols);
	int nth = threads_for(ctx, w.rows, n, w.kpad);
	tiling g = q_tiling(&w, n, nth, false);
	const wview *wp = &w;
	q_scratch s;
	size_t total;
	if (q_scratch_need(&wp, &g, 1, n, nth, &s) != TERN_OK ||
	    tern_size_add(l.total, s.total, &total) != TERN_OK)
		return tern_error(ctx, TERN_E_OVERFLOW, "tern_matmul: scratch size overflows");
	char *mem = tern_ctx_scratch(ctx, MATMUL_SLOT, total);
	if (!mem)
		return TERN_E_NOMEM;
	tern_qact a;
	qact_bind(mem, n, w.cols, w.kpad, &l, &a);
	quant_run(ctx, x, ldx, TERN_ACTQ_MUL, TERN_ROUND_EVEN, &a);
	matmul_q_run(ctx, 1, &wp, &a, &g, nth, mem + l.total, &s, &y, &ldy);
	return TERN_OK;
}
