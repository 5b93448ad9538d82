/*
 * testutil.h: small helpers shared by the Criterion suites: a seeded
 * random generator (tests are reproducible) and tolerance checks.
 */
#ifndef TERN_TESTUTIL_H
#define TERN_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* xorshift64*: deterministic across platforms. */
typedef struct { uint64_t s; } tu_rng;

static inline tu_rng tu_rng_new(uint64_t seed) { tu_rng r = { seed * 2654435761u + 0x9E3779B97F4A7C15ull }; return r; }
static inline uint64_t tu_next(tu_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 2685821657736338717ull;
}
/* Uniform integer in [lo, hi]. */
static inline int64_t tu_int(tu_rng *r, int64_t lo, int64_t hi) { return lo + (int64_t)(tu_next(r) % (uint64_t)(hi - lo + 1)); }
/* Uniform float in [-1, 1). */
static inline float tu_float(tu_rng *r) { return (float)((tu_next(r) >> 40) * (1.0 / 8388608.0) - 1.0); }
/* Standard normal (Box-Muller). */
static inline float tu_normal(tu_rng *r)
{
	double u1 = ((tu_next(r) >> 11) + 1) * (1.0 / 9007199254740993.0);
	double u2 = (tu_next(r) >> 11) * (1.0 / 9007199254740992.0);
	return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Path of a file under the source tree (TERN_SRCDIR set by make check),
 * or under ../shared beside it. Static buffer; not reentrant. */
static inline const char *tu_srcpath(const char *rel)
{
	static char buf[4096];
	const char *top = getenv("TERN_SRCDIR");
	snprintf(buf, sizeof buf, "%s/%s", top ? top : ".", rel);
	return buf;
}

/* Path of a file in the shared reference data (../shared/testdata beside
 * the source tree, or $TERN_SHARED if set, as `make distcheck` needs).
 * Static buffer; not reentrant. */
static inline const char *tu_shared_path(const char *rel)
{
	static char buf[4096];
	const char *shared = getenv("TERN_SHARED");
	const char *top = getenv("TERN_SRCDIR");
	if (shared && *shared)
		snprintf(buf, sizeof buf, "%s/%s", shared, rel);
	else
		snprintf(buf, sizeof buf, "%s/../shared/testdata/%s", top ? top : ".", rel);
	return buf;
}

#endif
