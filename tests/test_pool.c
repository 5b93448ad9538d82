/*
 * test_pool.c: the persistent thread pool and range splitting.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "tern/tern.h"

typedef struct {
	atomic_int calls;
	int seen[16];
	int nth;
	int64_t n;
	int64_t *owner; /* [n]: how often each index was covered */
} run_state;

static void mark(void *arg, int ith, int nth)
{
	run_state *s = arg;
	atomic_fetch_add(&s->calls, 1);
	s->seen[ith] += 1;
	s->nth = nth;
	int64_t b, e;
	tern_split_range(s->n, 1, ith, nth, &b, &e);
	for (int64_t i = b; i < e; i++)
		s->owner[i] += 1;
}

Test(pool, every_slot_runs_once_per_run)
{
	for (int n = 1; n <= 4; n++) {
		tern_pool *pool;
		cr_assert_eq(tern_pool_new(n, &pool), TERN_OK);
		cr_assert_eq(tern_pool_size(pool), n);
		int64_t owner[1000] = { 0 };
		run_state s = { .n = 1000, .owner = owner };
		const int runs = 500;
		for (int r = 0; r < runs; r++)
			tern_pool_run(pool, mark, &s);
		cr_assert_eq(atomic_load(&s.calls), runs * n);
		cr_assert_eq(s.nth, n);
		for (int i = 0; i < n; i++)
			cr_assert_eq(s.seen[i], runs, "slot %d ran %d times", i, s.seen[i]);
		/* the split covers every index exactly once per run */
		for (int i = 0; i < 1000; i++)
			cr_assert_eq(owner[i], runs);
		tern_pool_free(pool);
	}
}

static void slow(void *arg, int ith, int nth)
{
	(void)nth;
	atomic_int *sum = arg;
	/* long enough that workers go to sleep between runs in the next test */
	atomic_fetch_add(sum, ith + 1);
}

Test(pool, workers_wake_after_sleeping)
{
	tern_pool *pool;
	cr_assert_eq(tern_pool_new(3, &pool), TERN_OK);
	atomic_int sum = 0;
	for (int r = 0; r < 3; r++) {
		struct timespec ts = { 0, 20 * 1000 * 1000 }; /* 20 ms: past the spin phase */
		nanosleep(&ts, NULL);
		tern_pool_run(pool, slow, &sum);
	}
	cr_assert_eq(atomic_load(&sum), 3 * (1 + 2 + 3));
	tern_pool_free(pool);
}

/* Two different task bodies in alternation on a pool with 4x more threads
 * than this machine likely has cores, slots sleeping at random: late
 * workers must neither lose a slot, run one twice, nor run a slot of one
 * run with the other run's body. */
typedef struct {
	atomic_int count[8];
	int tag;
	unsigned seed;
} stress_state;

static void stress_fn(void *arg, int ith, int nth)
{
	stress_state *s = arg;
	cr_assert_eq(nth, 8);
	atomic_fetch_add(&s->count[ith], s->tag);
	unsigned r = (s->seed + (unsigned)ith * 2654435761u) >> 20;
	if (r % 5 == 0) {
		struct timespec ts = { 0, (long)(r % 50) * 1000 }; /* 0-49 us */
		nanosleep(&ts, NULL);
	}
}

Test(pool, late_threads_leave_their_slots_to_others)
{
	tern_pool *pool;
	cr_assert_eq(tern_pool_new(8, &pool), TERN_OK);
	stress_state a = { .tag = 1 }, b = { .tag = 1000 };
	const int runs = 2000;
	for (int r = 0; r < runs; r++) {
		stress_state *s = r % 2 ? &b : &a;
		s->seed = (unsigned)r * 747796405u + 1u;
		tern_pool_run(pool, stress_fn, s);
	}
	for (int i = 0; i < 8; i++) {
		cr_assert_eq(atomic_load(&a.count[i]), runs / 2, "slot %d: %d", i, atomic_load(&a.count[i]));
		cr_assert_eq(atomic_load(&b.count[i]), 1000 * (runs / 2));
	}
	tern_pool_free(pool);
}

Test(pool, rejects_bad_sizes_and_free_accepts_null)
{
	tern_pool *pool = (tern_pool *)1;
	cr_assert_eq(tern_pool_new(0, &pool), TERN_E_INVALID);
	cr_assert_null(pool);
	cr_assert_eq(tern_pool_new(5000, &pool), TERN_E_INVALID);
	tern_pool_free(NULL);
}

Test(pool, split_range_is_aligned_and_complete)
{
	for (int64_t n = 0; n < 300; n += 7)
		for (int64_t align = 1; align <= 64; align *= 4)
			for (int nth = 1; nth <= 5; nth++) {
				int64_t prev = 0;
				for (int ith = 0; ith < nth; ith++) {
					int64_t b, e;
					tern_split_range(n, align, ith, nth, &b, &e);
					cr_assert_eq(b, prev);
					cr_assert_leq(b, e);
					if (e < n)
						cr_assert_eq(e % align, 0);
					prev = e;
				}
				cr_assert_eq(prev, n);
			}
}
