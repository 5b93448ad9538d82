/*
 * test_sample.c: the token sampler (core/sample.c) against probabilities
 * computed here independently, in double precision with a plain sort:
 * greedy and its tie rule, the exact sets top-k, top-p and min-p keep,
 * draw frequencies against the softmax they should follow (a chi-square
 * bound), the repetition penalty and its window, and reproducibility of
 * seeded streams. The vectorized scans are checked on vocabularies of
 * many 16-wide blocks plus a tail: greedy's first maximum, NaN and -inf
 * anywhere, and top-k's one-pass heap, whose draws must equal, seed for
 * seed, those of the quickselect path on the k best alone.
 *
 * Frequency tests draw 1e5 tokens (2e4 over large vocabularies): the
 * chi-square statistic of k categories has mean k-1 and standard
 * deviation sqrt(2(k-1)); the bound mean + 6 sd fails by chance with
 * probability far below 1e-6.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tern/generate.h"
#include "testutil.h"

#define DRAWS 100000

static tern_ctx *ctx;

static void setup(void)
{
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
}

static void teardown(void)
{
	tern_ctx_free(ctx);
}

TestSuite(sample, .init = setup, .fini = teardown);

static tern_sampler_params plain(float temp)
{
	tern_sampler_params p = tern_sampler_default_params();

	p.temperature = temp;
	p.top_k = 0;
	p.top_p = 1.0f;
	p.min_p = 0.0f;
	p.repeat_penalty = 1.0f;
	p.seed = 1234;
	return p;
}

static tern_sampler *make(const tern_sampler_params *p, int32_t n)
{
	tern_sampler *s;

	cr_assert_eq(tern_sampler_new(ctx, p, n, &s), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	return s;
}

/* expect[i] = softmax(logits / temp) restricted to keep[] (1 = kept). */
static void softmax_ref(const float *logits, const int *keep, int n, double temp, double *expect)
{
	double mx = -INFINITY, sum = 0;

	for (int i = 0; i < n; i++)
		if (keep[i] && logits[i] > mx)
			mx = logits[i];
	for (int i = 0; i < n; i++) {
		expect[i] = keep[i] ? exp(((double)logits[i] - mx) / temp) : 0;
		sum += expect[i];
	}
	for (int i = 0; i < n; i++)
		expect[i] /= sum;
}

/* Draws `draws` tokens; fails if one falls outside expect's support,
 * then checks the chi-square bound. Tokens expected fewer than 5 times
 * share one category, as the chi-square approximation needs. */
static void check_freq_n(tern_sampler *s, const float *logits, const double *expect, int n,
			 int draws)
{
	long *count = calloc((size_t)n, sizeof *count);
	double chi2 = 0, rest_e = 0, rest_o = 0;
	int k = 0;

	for (int d = 0; d < draws; d++) {
		int32_t id;

		cr_assert_eq(tern_sampler_sample(s, ctx, logits, &id), TERN_OK);
		cr_assert(id >= 0 && id < n);
		cr_assert(expect[id] > 0, "drew %d, which should have been filtered", (int)id);
		count[id]++;
	}
	for (int i = 0; i < n; i++) {
		double e = expect[i] * draws;

		if (expect[i] <= 0)
			continue;
		if (e < 5) {
			rest_e += e;
			rest_o += (double)count[i];
			continue;
		}
		chi2 += ((double)count[i] - e) * ((double)count[i] - e) / e;
		k++;
	}
	if (rest_e > 0) {
		chi2 += (rest_o - rest_e) * (rest_o - rest_e) / rest_e;
		k++;
	}
	double df = k - 1;
	cr_expect(chi2 <= df + 6 * sqrt(2 * (df > 1 ? df : 1)), "chi2 %.1f with %d categories",
		  chi2, k);
	free(count);
}

static void check_freq(tern_sampler *s, const float *logits, const double *expect, int n)
{
	check_freq_n(s, logits, expect, n, DRAWS);
}

static void random_logits(float *l, int n, uint64_t seed, float scale)
{
	tu_rng r = tu_rng_new(seed);

	for (int i = 0; i < n; i++)
		l[i] = tu_normal(&r) * scale;
}

typedef struct { double p; int id; } pid;

static int by_prob(const void *a, const void *b)
{
	const pid *x = a, *y = b;

	if (x->p != y->p)
		return x->p > y->p ? -1 : 1;
	return x->id - y->id;
}

Test(sample, greedy_takes_the_largest_logit_and_the_lowest_id_on_ties)
{
	float l[6] = { 0.5f, 3.0f, -1.0f, 3.0f, 2.9f, -INFINITY };
	tern_sampler_params p = plain(0);
	tern_sampler *s = make(&p, 6);
	int32_t id;

	for (int i = 0; i < 10; i++) {
		cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
		cr_assert_eq(id, 1);
	}
	l[1] = 2.0f;
	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
	cr_assert_eq(id, 3);
	tern_sampler_free(s);
}

Test(sample, temperature_one_follows_the_softmax)
{
	enum { N = 12 };
	float l[N];
	int keep[N];
	double expect[N];
	tern_sampler_params p = plain(1.0f);
	tern_sampler *s = make(&p, N);

	random_logits(l, N, 7, 1.5f);
	for (int i = 0; i < N; i++)
		keep[i] = 1;
	softmax_ref(l, keep, N, 1.0, expect);
	check_freq(s, l, expect, N);
	tern_sampler_free(s);
}

Test(sample, temperature_scales_the_logits)
{
	enum { N = 10 };
	float l[N];
	int keep[N];
	double expect[N];
	tern_sampler_params p = plain(0.5f);
	tern_sampler *s = make(&p, N);

	random_logits(l, N, 8, 1.0f);
	for (int i = 0; i < N; i++)
		keep[i] = 1;
	softmax_ref(l, keep, N, 0.5, expect);
	check_freq(s, l, expect, N);
	tern_sampler_free(s);
}

Test(sample, top_k_keeps_exactly_the_k_largest)
{
	enum { N = 500, K = 7 };
	float l[N];
	int keep[N] = { 0 };
	double expect[N];
	pid order[N];
	tern_sampler_params p = plain(1.0f);

	random_logits(l, N, 9, 1.0f);
	for (int i = 0; i < N; i++)
		order[i] = (pid){ l[i], i };
	qsort(order, N, sizeof *order, by_prob);
	for (int i = 0; i < K; i++)
		keep[order[i].id] = 1;
	softmax_ref(l, keep, N, 1.0, expect);
	p.top_k = K;
	tern_sampler *s = make(&p, N);
	check_freq(s, l, expect, N);
	tern_sampler_free(s);
}

/* The top-p set, computed independently: sort the probabilities, keep
 * the shortest head whose sum reaches top_p. */
static void top_p_ref(const float *l, int n, double top_p, int *keep)
{
	double *pr = malloc(sizeof *pr * (size_t)n), acc = 0;
	pid *order = malloc(sizeof *order * (size_t)n);

	for (int i = 0; i < n; i++)
		keep[i] = 1;
	softmax_ref(l, keep, n, 1.0, pr);
	for (int i = 0; i < n; i++) {
		order[i] = (pid){ pr[i], i };
		keep[i] = 0;
	}
	qsort(order, (size_t)n, sizeof *order, by_prob);
	for (int i = 0; i < n && acc < top_p; i++) {
		keep[order[i].id] = 1;
		acc += order[i].p;
	}
	free(pr);
	free(order);
}

Test(sample, top_p_keeps_the_exact_nucleus_small_and_large)
{
	/* 0.9 of N(0,1) logits over 1000 tokens needs several hundred
	 * tokens: beyond the first sorted head, so the head must grow. */
	static const struct { int n; float scale; double top_p; } cases[] = {
		{ 1000, 1.0f, 0.9 }, { 1000, 4.0f, 0.5 }, { 50, 2.0f, 0.95 },
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		int n = cases[c].n, kept = 0;
		float *l = malloc(sizeof *l * (size_t)n);
		int *keep = malloc(sizeof *keep * (size_t)n);
		double *expect = malloc(sizeof *expect * (size_t)n);
		tern_sampler_params p = plain(1.0f);

		random_logits(l, n, 10 + c, cases[c].scale);
		top_p_ref(l, n, cases[c].top_p, keep);
		for (int i = 0; i < n; i++)
			kept += keep[i];
		if (c == 0)
			cr_assert_gt(kept, 256, "case 0 should need a large nucleus, got %d", kept);
		softmax_ref(l, keep, n, 1.0, expect);
		p.top_p = (float)cases[c].top_p;
		tern_sampler *s = make(&p, n);
		check_freq_n(s, l, expect, n, n > 100 ? DRAWS / 5 : DRAWS);
		tern_sampler_free(s);
		free(l);
		free(keep);
		free(expect);
	}
}

Test(sample, min_p_drops_tokens_below_the_fraction_of_the_best)
{
	enum { N = 64 };
	float l[N];
	int keep[N];
	double expect[N], mx = -INFINITY;
	tern_sampler_params p = plain(0.7f);

	random_logits(l, N, 11, 2.0f);
	for (int i = 0; i < N; i++)
		mx = fmax(mx, l[i]);
	/* p_i / p_max = exp(l_i - l_max) >= 0.1 */
	for (int i = 0; i < N; i++)
		keep[i] = exp((double)l[i] - mx) >= 0.1;
	softmax_ref(l, keep, N, 0.7, expect);
	p.min_p = 0.1f;
	tern_sampler *s = make(&p, N);
	check_freq(s, l, expect, N);
	tern_sampler_free(s);
}

Test(sample, repetition_penalty_divides_positive_and_multiplies_negative_logits)
{
	enum { N = 5 };
	float l[N] = { 2.0f, 1.5f, -0.5f, 0.3f, -1.0f };
	float pen[N] = { 1.0f, 1.5f, -1.0f, 0.3f, -1.0f }; /* 0 and 2 penalized by 2 */
	int keep[N] = { 1, 1, 1, 1, 1 };
	double expect[N];
	tern_sampler_params p = plain(1.0f);
	int32_t id;

	p.repeat_penalty = 2.0f;
	p.repeat_last_n = 3;
	tern_sampler *s = make(&p, N);
	/* Token 0 twice: the penalty applies once per distinct token. */
	tern_sampler_accept(s, 0);
	tern_sampler_accept(s, 2);
	tern_sampler_accept(s, 0);
	softmax_ref(pen, keep, N, 1.0, expect);
	check_freq(s, l, expect, N);
	tern_sampler_free(s);

	p.temperature = 0;
	s = make(&p, N);
	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
	cr_assert_eq(id, 0);
	tern_sampler_accept(s, 0);
	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
	cr_assert_eq(id, 1, "0 penalized to 1.0 < 1.5");
	/* Three other tokens push 0 out of the window of 3. */
	tern_sampler_accept(s, 3);
	tern_sampler_accept(s, 4);
	tern_sampler_accept(s, 3);
	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
	cr_assert_eq(id, 0);
	tern_sampler_free(s);
}

/* Logits over a vocabulary of many 16-wide blocks plus a tail, rounded
 * to quarters so ties are everywhere, with some -inf. */
static void tied_logits(float *l, int n, uint64_t seed)
{
	tu_rng r = tu_rng_new(seed);

	for (int i = 0; i < n; i++) {
		bool dead = tu_int(&r, 0, 19) == 0;

		l[i] = dead ? -INFINITY : roundf(tu_normal(&r) * 8.0f) / 4.0f;
	}
}

Test(sample, greedy_scans_every_block_and_the_tail_for_the_first_maximum)
{
	enum { N = 16 * 60 + 7 };
	static float l[N];
	tern_sampler_params p = plain(0);
	tern_sampler *s = make(&p, N);
	/* The first maximum in a block's last lane, in a later block, in
	 * the tail, and at id 0; each time a copy sits further on. */
	static const int at[] = { 16 * 7 + 15, 16 * 59 + 3, N - 2, 0 };
	int32_t id;

	for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
		tied_logits(l, N, 40 + k);
		l[at[k]] = 100.0f;
		l[N - 1] = 100.0f;
		l[at[k] + 1] = 100.0f;
		cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
		cr_assert_eq(id, at[k], "case %zu: got %d", k, (int)id);
	}
	/* Everything -inf but one id, in a block: greedy or not, that id. */
	for (int i = 0; i < N; i++)
		l[i] = -INFINITY;
	l[16 * 30 + 9] = -1e30f;
	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
	cr_assert_eq(id, 16 * 30 + 9);
	tern_sampler_free(s);
	p = plain(1.0f);
	p.top_k = 5;
	s = make(&p, N);
	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
	cr_assert_eq(id, 16 * 30 + 9);
	/* Every logit -inf is an error whatever the block it would be in. */
	l[16 * 30 + 9] = -INFINITY;
	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_E_INVALID);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "every logit is -inf"));
	/* A NaN inside a block is found and named. */
	tied_logits(l, N, 44);
	l[16 * 21 + 6] = NAN;
	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_E_INVALID);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "logit 342 is NaN"), "%s",
			   tern_ctx_errmsg(ctx));
	tern_sampler_free(s);
}

Test(sample, top_k_breaks_ties_toward_the_lowest_ids_across_blocks)
{
	enum { N = 16 * 10 + 3, K = 6, T = 3000 };
	float l[N];
	int count[N] = { 0 };
	/* All tied but two larger ones inside blocks, with tied ids after
	 * them in the block and in the tail: the k best are those two and
	 * ids 0..3. */
	for (int i = 0; i < N; i++)
		l[i] = 0.5f;
	l[16 * 5 + 2] = 2.0f;
	l[16 * 8 + 7] = 3.0f;
	tern_sampler_params p = plain(100.0f);
	p.top_k = K;
	tern_sampler *s = make(&p, N);
	for (int t = 0; t < T; t++) {
		int32_t id;

		cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_OK);
		cr_assert(id < 4 || id == 16 * 5 + 2 || id == 16 * 8 + 7, "drew %d", (int)id);
		count[id]++;
	}
	for (int i = 0; i < 4; i++)
		cr_assert_gt(count[i], 0);
	tern_sampler_free(s);
}

/* top-k's single pass against the other path through the sampler: the
 * same draws, seed for seed, as top-k off on logits where everything but
 * the k best (by logit, then lowest id; computed here with a full sort)
 * is -inf. Ties straddle the k-th place from k = 16 on. */
Test(sample, top_k_draws_equal_those_of_the_k_best_alone)
{
	enum { N = 16 * 200 + 11, T = 3000 };
	static float l[N], masked[N];
	static pid order[N];
	static const int ks[] = { 1, 2, 16, 37, 40, 41, 500, 499 };

	for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
		int k = ks[c], live = 0;

		tied_logits(l, N, 50 + c);
		for (int i = 0; i < N; i++)
			if (l[i] != -INFINITY)
				order[live++] = (pid){ l[i], i };
		qsort(order, (size_t)live, sizeof *order, by_prob);
		cr_assert_lt(k, live);
		if (k >= 16)
			cr_assert_eq(order[k - 1].p, order[k].p, "case %zu: no tie at the k-th place",
				     c);
		for (int i = 0; i < N; i++)
			masked[i] = -INFINITY;
		for (int i = 0; i < k; i++)
			masked[order[i].id] = l[order[i].id];

		/* top_p below 1 makes the other path sort its survivors as
		 * top-k does; 0.9999 and a high temperature keep the tied k-th
		 * candidates in play, 0.9 with min_p cuts through the k. */
		tern_sampler_params p = plain(c % 2 ? 0.7f : 1.5f);
		p.top_p = c % 2 ? 0.9f : 0.9999f;
		p.min_p = c % 2 ? 0.01f : 0.0f;
		p.top_k = k;
		tern_sampler *a = make(&p, N);
		p.top_k = 0;
		tern_sampler *b = make(&p, N);
		for (int t = 0; t < T; t++) {
			int32_t x, y;

			cr_assert_eq(tern_sampler_sample(a, ctx, l, &x), TERN_OK);
			cr_assert_eq(tern_sampler_sample(b, ctx, masked, &y), TERN_OK);
			cr_assert_eq(x, y, "case %zu (k %d), draw %d: %d vs %d", c, k, t, (int)x,
				     (int)y);
		}
		tern_sampler_free(a);
		tern_sampler_free(b);
	}
}

Test(sample, same_seed_same_tokens_and_reset_restarts)
{
	enum { N = 300, T = 200 };
	float l[N];
	int32_t a[T], b[T], c[T];
	tern_sampler_params p = tern_sampler_default_params();

	random_logits(l, N, 12, 1.0f);
	p.seed = 99;
	tern_sampler *s1 = make(&p, N), *s2 = make(&p, N);
	p.seed = 100;
	tern_sampler *s3 = make(&p, N);
	int same = 0;
	for (int i = 0; i < T; i++) {
		cr_assert_eq(tern_sampler_sample(s1, ctx, l, &a[i]), TERN_OK);
		cr_assert_eq(tern_sampler_sample(s2, ctx, l, &b[i]), TERN_OK);
		cr_assert_eq(tern_sampler_sample(s3, ctx, l, &c[i]), TERN_OK);
		cr_assert_eq(a[i], b[i], "step %d", i);
		same += a[i] == c[i];
	}
	cr_expect_lt(same, T, "another seed gave the same %d tokens", T);
	tern_sampler_reset(s1);
	for (int i = 0; i < T; i++) {
		int32_t id;

		cr_assert_eq(tern_sampler_sample(s1, ctx, l, &id), TERN_OK);
		cr_assert_eq(id, a[i], "after reset, step %d", i);
	}
	tern_sampler_free(s1);
	tern_sampler_free(s2);
	tern_sampler_free(s3);
}

Test(sample, the_generator_is_uniform_and_fixed_by_the_seed)
{
	tern_sampler_params p = plain(1.0f);
	tern_sampler *s = make(&p, 2);
	double sum = 0, sum2 = 0, first;

	first = tern_sampler_uniform(s);
	tern_sampler_reset(s);
	cr_assert_eq(tern_sampler_uniform(s), first);
	for (int i = 0; i < DRAWS; i++) {
		double u = tern_sampler_uniform(s);

		cr_assert(u >= 0 && u < 1);
		sum += u;
		sum2 += u * u;
	}
	/* Mean 1/2 (sd of the mean 0.29/sqrt(1e5) = 9e-4), variance 1/12. */
	cr_expect(fabs(sum / DRAWS - 0.5) < 0.006, "mean %f", sum / DRAWS);
	cr_expect(fabs(sum2 / DRAWS - sum * sum / DRAWS / DRAWS - 1.0 / 12) < 0.003);
	tern_sampler_free(s);
}

Test(sample, bad_logits_and_parameters_are_errors)
{
	float l[3] = { 0.0f, NAN, 1.0f };
	float none[3] = { -INFINITY, -INFINITY, -INFINITY };
	tern_sampler_params p = plain(1.0f);
	tern_sampler *s = make(&p, 3);
	int32_t id;

	cr_assert_eq(tern_sampler_sample(s, ctx, l, &id), TERN_E_INVALID);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "NaN"));
	cr_assert_eq(tern_sampler_sample(s, ctx, none, &id), TERN_E_INVALID);
	tern_sampler_free(s);
	p.repeat_penalty = 0;
	cr_assert_eq(tern_sampler_new(ctx, &p, 3, &s), TERN_E_INVALID);
	cr_assert_eq(tern_sampler_new(ctx, NULL, 0, &s), TERN_E_INVALID);
}
