/*
 * sample.c: the token sampler of generate.h: repetition penalty, greedy,
 * top-k, top-p, min-p and temperature over one row of logits, drawing
 * from a seeded xoshiro256** generator so a seed gives the same tokens on
 * every machine. Every buffer is sized for the vocabulary when the
 * sampler is made; a draw allocates nothing.
 *
 * Candidates are kept in a total order (logit descending, then id
 * ascending) so ties break the same way whatever the selection does.
 * top-k and top-p need only the head of that order. top-k takes it in
 * one pass (tern_top_k: a heap of k, skipping 16 logits at a time that
 * cannot enter it); without top-k, a quickselect moves the best m to the
 * front and only those are sorted, m doubling until the top-p mass is
 * covered. Greedy reads the logits twice and copies nothing. Over a 128k
 * vocabulary a default draw takes about 70 us and a greedy one 40 (a
 * quickselect over all 128k took 1.3 ms).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/vecf.h"
#include "tern/generate.h"
#include "tern/ops.h"

/* Candidates sorted first when looking for the top-p set. */
#define FIRST_HEAD 256

typedef struct cand {
	float logit;
	int32_t id;
} cand;

struct tern_sampler {
	tern_sampler_params p;
	int32_t n_vocab;
	uint64_t rng[4];
	cand *c;            /* [n_vocab] working candidates */
	float *work;        /* [n_vocab] logits after the penalty */
	int32_t *ring;      /* [repeat_last_n] last accepted ids */
	int32_t ring_len, ring_head;
	uint8_t *seen;      /* [n_vocab] marks while applying the penalty */
	int32_t *top;       /* [min(top_k, n_vocab)] top-k's ids */
};

tern_sampler_params tern_sampler_default_params(void)
{
	tern_sampler_params p;

	memset(&p, 0, sizeof p);
	p.struct_size = sizeof p;
	p.temperature = 0.8f;
	p.top_k = 40;
	p.top_p = 0.95f;
	p.min_p = 0.05f;
	p.repeat_penalty = 1.0f;
	p.repeat_last_n = 64;
	p.seed = 0x5eed;
	return p;
}

/* ---- the generator -------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
	uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return r;
}

double tern_sampler_uniform(tern_sampler *s)
{
	return (double)(xoshiro_next(s->rng) >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- lifetime ------------------------------------------------------------- */

void tern_sampler_reset(tern_sampler *s)
{
	uint64_t x = s->p.seed;

	for (int i = 0; i < 4; i++)
		s->rng[i] = splitmix64(&x);
	s->ring_len = 0;
	s->ring_head = 0;
}

int tern_sampler_new(tern_ctx *ctx, const tern_sampler_params *params, int32_t n_vocab,
		     tern_sampler **out)
{
	tern_sampler_params p = tern_sampler_default_params();
	tern_sampler *s;
	size_t nc, nw, nr;

	*out = NULL;
	if (params) {
		if (params->struct_size < sizeof p)
			return tern_error(ctx, TERN_E_INVALID,
					  "sampler: params struct_size %zu, expected %zu",
					  params->struct_size, sizeof p);
		p = *params;
		p.struct_size = sizeof p;
	}
	if (n_vocab < 1)
		return tern_error(ctx, TERN_E_INVALID, "sampler: vocabulary of %d tokens",
				  (int)n_vocab);
	if (isnan(p.temperature) || isnan(p.top_p) || isnan(p.min_p) || !(p.repeat_penalty > 0) ||
	    !isfinite(p.repeat_penalty) || p.min_p > 1)
		return tern_error(ctx, TERN_E_INVALID,
				  "sampler: bad parameters (temperature %g, top_p %g, min_p %g, "
				  "repeat_penalty %g)",
				  (double)p.temperature, (double)p.top_p, (double)p.min_p,
				  (double)p.repeat_penalty);
	if (p.repeat_last_n < 0)
		p.repeat_last_n = 0;
	s = calloc(1, sizeof *s);
	if (!s || tern_size_mul((size_t)n_vocab, sizeof *s->c, &nc) ||
	    tern_size_mul((size_t)n_vocab, sizeof *s->work, &nw) ||
	    tern_size_mul((size_t)p.repeat_last_n + 1, sizeof *s->ring, &nr)) {
		free(s);
		return tern_error(ctx, TERN_E_NOMEM, "sampler: out of memory");
	}
	s->p = p;
	s->n_vocab = n_vocab;
	s->c = malloc(nc);
	s->work = malloc(nw);
	s->ring = malloc(nr);
	s->seen = calloc((size_t)n_vocab, 1);
	s->top = malloc(sizeof *s->top * (size_t)(p.top_k > 0 && p.top_k < n_vocab ? p.top_k : 1));
	if (!s->c || !s->work || !s->ring || !s->seen || !s->top) {
		tern_sampler_free(s);
		return tern_error(ctx, TERN_E_NOMEM, "sampler: out of memory for %d tokens",
				  (int)n_vocab);
	}
	tern_sampler_reset(s);
	*out = s;
	return TERN_OK;
}

void tern_sampler_free(tern_sampler *s)
{
	if (!s)
		return;
	free(s->c);
	free(s->work);
	free(s->ring);
	free(s->seen);
	free(s->top);
	free(s);
}

void tern_sampler_accept(tern_sampler *s, int32_t id)
{
	int32_t n = s->p.repeat_last_n;

	if (n == 0 || id < 0 || id >= s->n_vocab)
		return;
	s->ring[s->ring_head] = id;
	s->ring_head = (s->ring_head + 1) % n;
	if (s->ring_len < n)
		s->ring_len++;
}

/* ---- the candidate order -------------------------------------------------- */

/* a before b in the order: larger logit first, then smaller id. */
static int better(const cand *a, const cand *b)
{
	return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void swap(cand *a, cand *b)
{
	cand t = *a;

	*a = *b;
	*b = t;
}

/* Rearranges c[0..n) so its m best (in the order) come first, in no
 * particular order. Quickselect with a median-of-three pivot; the order
 * is total (ids differ), so equal logits cannot degrade the partition. */
static void select_head(cand *c, int64_t n, int64_t m)
{
	int64_t lo = 0, hi = n - 1;

	if (m <= 0 || m >= n)
		return;
	while (hi > lo) {
		int64_t mid = lo + (hi - lo) / 2, i, j;
		cand pivot;

		if (better(&c[hi], &c[lo]))
			swap(&c[hi], &c[lo]);
		if (better(&c[mid], &c[lo]))
			swap(&c[mid], &c[lo]);
		if (better(&c[hi], &c[mid]))
			swap(&c[hi], &c[mid]);
		pivot = c[mid];
		i = lo;
		j = hi;
		while (i <= j) {
			while (better(&c[i], &pivot))
				i++;
			while (better(&pivot, &c[j]))
				j--;
			if (i <= j) {
				swap(&c[i], &c[j]);
				i++;
				j--;
			}
		}
		/* [lo, j] are all no worse than the pivot, [i, hi] no better. */
		if (m - 1 <= j)
			hi = j;
		else if (m - 1 >= i)
			lo = i;
		else
			return;
	}
}

static int cmp_cand(const void *a, const void *b)
{
	return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

/* Puts the best m of c[0..n) first, sorted. */
static void sort_head(cand *c, int64_t n, int64_t m)
{
	if (m > n)
		m = n;
	select_head(c, n, m);
	qsort(c, (size_t)m, sizeof *c, cmp_cand);
}

/* ---- one pass over the logits --------------------------------------------- */

/* A vocabulary's worth of logits is scanned 16 at a time (VF_PARTS vf4
 * per block); a 128k vocabulary is half a megabyte a token. */

static bool any_lane(vi4 m)
{
	return (m[0] | m[1] | m[2] | m[3]) != 0;
}

/* The largest logit, how many are not -inf, and whether one is NaN. */
typedef struct scan {
	float max;
	int64_t live;
	bool nan;
} scan;

static scan scan_logits(const float *w, int32_t n)
{
	const vf4 ninf = VF_SPLAT(-INFINITY);
	vf4 mx[VF_PARTS];
	vi4 dead = { 0, 0, 0, 0 }, bad = { 0, 0, 0, 0 };
	scan r = { -INFINITY, 0, false };
	int32_t i = 0;

	for (int p = 0; p < VF_PARTS; p++)
		mx[p] = ninf;
	for (; i + VF_LANES <= n; i += VF_LANES) {
		for (int p = 0; p < VF_PARTS; p++) {
			vf4 x;
			VF_LOAD(x, w + i + 4 * p);
			vi4 gt = x > mx[p];
			bad |= x != x;
			dead -= x == ninf; /* a true lane is -1 */
			mx[p] = (vf4)(((vi4)x & gt) | ((vi4)mx[p] & ~gt));
		}
	}
	r.live = i - (int64_t)dead[0] - dead[1] - dead[2] - dead[3];
	r.nan = any_lane(bad);
	for (int p = 0; p < VF_PARTS; p++)
		for (int l = 0; l < 4; l++)
			if (mx[p][l] > r.max)
				r.max = mx[p][l];
	for (; i < n; i++) {
		r.nan |= isnan(w[i]);
		r.live += w[i] != -INFINITY;
		if (w[i] > r.max)
			r.max = w[i];
	}
	return r;
}

/* The first id whose logit is v (which w holds). */
static int32_t first_equal(const float *w, int32_t n, float v)
{
	const vf4 t = VF_SPLAT(v);
	int32_t i = 0;

	for (; i + VF_LANES <= n; i += VF_LANES) {
		vi4 hit = { 0, 0, 0, 0 };
		for (int p = 0; p < VF_PARTS; p++) {
			vf4 x;
			VF_LOAD(x, w + i + 4 * p);
			hit |= x == t;
		}
		if (any_lane(hit))
			break;
	}
	for (; i < n; i++)
		if (w[i] == v)
			return i;
	return -1;
}

/* ---- one draw ------------------------------------------------------------- */

static int32_t first_nan(const float *w, int32_t n)
{
	for (int32_t i = 0; i < n; i++)
		if (isnan(w[i]))
			return i;
	return -1;
}

static void apply_penalty(tern_sampler *s, float *w)
{
	float pen = s->p.repeat_penalty;

	if (pen == 1.0f || s->ring_len == 0)
		return;
	for (int32_t i = 0; i < s->ring_len; i++) {
		int32_t id = s->ring[i];

		if (s->seen[id])
			continue;
		s->seen[id] = 1;
		w[id] = w[id] > 0 ? w[id] / pen : w[id] * pen;
	}
	for (int32_t i = 0; i < s->ring_len; i++)
		s->seen[s->ring[i]] = 0;
}

int tern_sampler_sample(tern_sampler *s, tern_ctx *ctx, const float *logits, int32_t *out)
{
	const tern_sampler_params *p = &s->p;
	const float *w = logits;
	cand *c = s->c;
	int64_t n = 0, n_head;
	bool sorted = false;
	double sum, cut, u, acc;
	float max_logit;
	scan sc;

	*out = -1;
	/* The penalty works on a copy; without one the logits are read as
	 * they are. */
	if (p->repeat_penalty != 1.0f && s->ring_len > 0) {
		memcpy(s->work, logits, (size_t)s->n_vocab * sizeof *s->work);
		apply_penalty(s, s->work);
		w = s->work;
	}
	sc = scan_logits(w, s->n_vocab);
	if (sc.nan)
		return tern_error(ctx, TERN_E_INVALID, "sampler: logit %d is NaN",
				  (int)first_nan(w, s->n_vocab));
	if (sc.live == 0)
		return tern_error(ctx, TERN_E_INVALID, "sampler: every logit is -inf");
	max_logit = sc.max;
	/* Greedy needs only the argmax: no candidate list. */
	if (!(p->temperature > 0) || sc.live == 1) {
		*out = first_equal(w, s->n_vocab, max_logit);
		return TERN_OK;
	}

	if (p->top_k > 0 && p->top_k < sc.live) {
		/* The k best are all live, since more than k are. */
		if (tern_top_k(w, s->n_vocab, p->top_k, s->top))
			return tern_error(ctx, TERN_E_INTERNAL, "sampler: top-k of %d",
					  (int)p->top_k);
		for (int32_t j = 0; j < p->top_k; j++)
			c[j] = (cand){ w[s->top[j]], s->top[j] };
		n = p->top_k;
		sorted = true;
	} else {
		for (int32_t i = 0; i < s->n_vocab; i++)
			if (w[i] != -INFINITY)
				c[n++] = (cand){ w[i], i };
	}
	/* Softmax over the survivors: c[i].logit becomes exp(l - max). The
	 * max is c's best, which top-k kept. */
	sum = 0;
	for (int64_t i = 0; i < n; i++) {
		double e = exp((double)c[i].logit - (double)max_logit);

		sum += e;
	}
	if (p->top_p < 1.0f) {
		double target = (double)p->top_p * sum;
		int64_t keep = n;

		/* Sort a growing head until its mass reaches top_p. */
		for (n_head = sorted ? n : (FIRST_HEAD < n ? FIRST_HEAD : n);;) {
			if (!sorted)
				sort_head(c, n, n_head);
			acc = 0;
			keep = -1;
			for (int64_t i = 0; i < n_head; i++) {
				acc += exp((double)c[i].logit - (double)max_logit);
				if (acc >= target) {
					keep = i + 1;
					break;
				}
			}
			if (keep > 0 || n_head >= n)
				break;
			n_head = n_head * 2 < n ? n_head * 2 : n;
			sorted = false;
		}
		if (keep < 0)
			keep = n; /* rounding: the whole mass fell short of target */
		n = keep;
		sorted = true;
	}
	if (p->min_p > 0) {
		/* exp(l - max) >= min_p  <=>  l >= max + log(min_p). */
		double floor_l = (double)max_logit + log((double)p->min_p);
		int64_t k = 0;

		for (int64_t i = 0; i < n; i++)
			if ((double)c[i].logit >= floor_l)
				c[k++] = c[i];
		n = k; /* the best always survives */
	}

	/* Temperature, then one draw over the survivors in their order. */
	sum = 0;
	for (int64_t i = 0; i < n; i++) {
		double e = exp(((double)c[i].logit - (double)max_logit) / (double)p->temperature);

		c[i].logit = (float)e;
		sum += e;
	}
	u = tern_sampler_uniform(s);
	cut = u * sum;
	acc = 0;
	for (int64_t i = 0; i < n; i++) {
		acc += (double)c[i].logit;
		if (cut < acc) {
			*out = c[i].id;
			return TERN_OK;
		}
	}
	*out = c[n - 1].id; /* u * sum rounded up to the total */
	return TERN_OK;
}
