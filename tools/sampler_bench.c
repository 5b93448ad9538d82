/*
 * sampler_bench.c: the sampler benchmark of docs/BENCHMARKS.md (not a
 * test). It times tern_sampler_sample on one row of N(0, 3) logits over a
 * vocabulary (default 128256, Llama 3's), for greedy and for the default
 * parameters (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), with
 * and without a repetition penalty, and prints microseconds per draw and
 * a hash of the drawn ids (equal hashes: equal draws).
 *
 *   tools/sampler_bench [-v VOCAB] [-n DRAWS]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/generate.h"
#include "tern/tern.h"

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static double unit(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return ((double)((rng * 2685821657736338717ull) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

int main(int argc, char **argv)
{
	long vocab = 128256, draws = 500;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-v") == 0 && i + 1 < argc)
			vocab = strtol(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
			draws = strtol(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "usage: sampler_bench [-v VOCAB] [-n DRAWS]\n");
			return 2;
		}
	}
	if (vocab < 1 || vocab > INT32_MAX || draws < 1) {
		fprintf(stderr, "sampler_bench: bad -v or -n\n");
		return 2;
	}
	float *logits = malloc(sizeof *logits * (size_t)vocab);
	tern_ctx *ctx = NULL;
	if (!logits || tern_ctx_new(NULL, &ctx) != TERN_OK) {
		fprintf(stderr, "sampler_bench: out of memory\n");
		return 1;
	}
	for (long i = 0; i < vocab; i++)
		logits[i] = (float)(3.0 * sqrt(-2.0 * log(unit())) * cos(6.283185307179586 * unit()));

	printf("vocabulary %ld, %ld draws each\n", vocab, draws);
	for (int c = 0; c < 4; c++) {
		tern_sampler_params p = tern_sampler_default_params();
		tern_sampler *s;
		uint64_t hash = 0;

		if (c % 2 == 0)
			p.temperature = 0;
		if (c >= 2)
			p.repeat_penalty = 1.1f;
		if (tern_sampler_new(ctx, &p, (int32_t)vocab, &s) != TERN_OK) {
			fprintf(stderr, "sampler_bench: %s\n", tern_ctx_errmsg(ctx));
			return 1;
		}
		double t0 = 0;
		/* 64 warm-up draws fill the penalty window. */
		for (long d = 0; d < draws + 64; d++) {
			int32_t id;

			if (d == 64)
				t0 = now();
			if (tern_sampler_sample(s, ctx, logits, &id) != TERN_OK) {
				fprintf(stderr, "sampler_bench: %s\n", tern_ctx_errmsg(ctx));
				return 1;
			}
			tern_sampler_accept(s, id);
			hash = hash * 1000003u + (uint64_t)id;
		}
		printf("%-8s %-13s %8.1f us/draw  (ids hash %016llx)\n",
		       c % 2 ? "default" : "greedy", c >= 2 ? "penalty 1.1" : "no penalty",
		       (now() - t0) / (double)draws * 1e6, (unsigned long long)hash);
		tern_sampler_free(s);
	}
	tern_ctx_free(ctx);
	free(logits);
	return 0;
}
