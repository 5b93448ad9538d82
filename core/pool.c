/*
 * pool.c: the persistent thread pool. Workers spin briefly on a generation
 * counter between runs (so back-to-back kernels dispatch in well under a
 * microsecond), then sleep on a condition variable. A run allocates
 * nothing and the caller takes part.
 *
 * A run has n slots (the `ith` its task sees), and every thread, caller
 * included, claims slots until none is left: normally each thread runs one,
 * but a thread that is not running when the run starts (descheduled because
 * the machine has more runnable threads than cores, or still waking from
 * its sleep) leaves its slot to the others instead of making them wait a
 * scheduler time slice for it. Measured on the 2-core machine beside two
 * busy training processes, `tern eval classify -t 2` on the bundled ViT:
 * 16 images/s with one fixed slot per thread, 337 with claimed slots.
 *
 * Every wait polls with the CPU's pause hint first and then yields the
 * core (sched_yield) between polls, for the same reason.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/internal.h"

/* About 0.2 ms of polling before a worker goes to sleep; the first
 * TERN_POOL_PAUSES polls of any wait only pause, later ones yield. */
#define TERN_POOL_SPIN 20000
#define TERN_POOL_PAUSES 2000

struct tern_pool {
	int n;
	pthread_t *threads; /* [n - 1] */
	tern_pool_fn fn;
	void *arg;
	atomic_uint_fast64_t gen;
	/* (generation << 16) | next unclaimed slot of the current run */
	atomic_uint_fast64_t claim;
	atomic_int done; /* slots of the current run finished */
	atomic_int sleepers;
	atomic_int stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

#define SLOT_BITS 16
#define SLOT_MASK ((UINT64_C(1) << SLOT_BITS) - 1)

/* Claim and run slots of run `gen` until none is left or a later run has
 * started. fn and arg are read after a successful claim: the caller does
 * not change them before every slot of the run is done. */
static void run_slots(tern_pool *pool, uint_fast64_t gen)
{
	uint_fast64_t c = atomic_load(&pool->claim);
	for (;;) {
		if ((c >> SLOT_BITS) != gen || (int)(c & SLOT_MASK) >= pool->n)
			return;
		if (!atomic_compare_exchange_weak(&pool->claim, &c, c + 1))
			continue; /* c now holds the current value */
		pool->fn(pool->arg, (int)(c & SLOT_MASK), pool->n);
		atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
		c = atomic_load(&pool->claim);
	}
}

static void *worker_main(void *p)
{
	tern_pool *pool = p;
	uint_fast64_t seen = 0;
	for (;;) {
		int spins = 0;
		while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop)) {
			if (++spins < TERN_POOL_SPIN) {
				if (spins < TERN_POOL_PAUSES)
					cpu_relax();
				else
					sched_yield();
				continue;
			}
			pthread_mutex_lock(&pool->mu);
			atomic_fetch_add(&pool->sleepers, 1);
			while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop))
				pthread_cond_wait(&pool->cv, &pool->mu);
			atomic_fetch_sub(&pool->sleepers, 1);
			pthread_mutex_unlock(&pool->mu);
		}
		if (atomic_load(&pool->stop))
			return NULL;
		seen = atomic_load(&pool->gen);
		run_slots(pool, seen);
	}
}

static void wake_all(tern_pool *pool)
{
	if (atomic_load(&pool->sleepers) > 0) {
		pthread_mutex_lock(&pool->mu);
		pthread_cond_broadcast(&pool->cv);
		pthread_mutex_unlock(&pool->mu);
	}
}

int tern_pool_new(int n, tern_pool **out)
{
	*out = NULL;
	if (n < 1 || n > 1024)
		return TERN_E_INVALID;
	tern_pool *pool = calloc(1, sizeof *pool);
	if (!pool)
		return TERN_E_NOMEM;
	pool->n = n;
	pthread_mutex_init(&pool->mu, NULL);
	pthread_cond_init(&pool->cv, NULL);
	if (n > 1) {
		pool->threads = calloc((size_t)n - 1, sizeof *pool->threads);
		if (!pool->threads) {
			pool->n = 1;
			tern_pool_free(pool);
			return TERN_E_NOMEM;
		}
	}
	for (int i = 1; i < n; i++) {
		if (pthread_create(&pool->threads[i - 1], NULL, worker_main, pool) != 0) {
			pool->n = i; /* join only the threads that started */
			tern_pool_free(pool);
			return TERN_E_NOMEM;
		}
	}
	*out = pool;
	return TERN_OK;
}

void tern_pool_free(tern_pool *pool)
{
	if (!pool)
		return;
	atomic_store(&pool->stop, 1);
	pthread_mutex_lock(&pool->mu);
	pthread_cond_broadcast(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	for (int i = 1; i < pool->n; i++)
		pthread_join(pool->threads[i - 1], NULL);
	pthread_mutex_destroy(&pool->mu);
	pthread_cond_destroy(&pool->cv);
	free(pool->threads);
	free(pool);
}

int tern_pool_size(const tern_pool *pool)
{
	return pool->n;
}

void tern_pool_run(tern_pool *pool, tern_pool_fn fn, void *arg)
{
	if (pool->n == 1) {
		fn(arg, 0, 1);
		return;
	}
	pool->fn = fn;
	pool->arg = arg;
	atomic_store(&pool->done, 0);
	uint_fast64_t gen = atomic_load(&pool->gen) + 1;
	atomic_store(&pool->claim, gen << SLOT_BITS);
	atomic_store(&pool->gen, gen);
	wake_all(pool);
	run_slots(pool, gen);
	for (int spins = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < pool->n; spins++) {
		if (spins < TERN_POOL_PAUSES)
			cpu_relax();
		else
			sched_yield();
	}
}

void tern_split_range(int64_t n, int64_t align, int ith, int nth, int64_t *begin, int64_t *end)
{
	if (align < 1)
		align = 1;
	int64_t units = (n + align - 1) / align;
	int64_t u0 = units * ith / nth, u1 = units * (ith + 1) / nth;
	*begin = TERN_MIN(n, u0 * align);
	*end = TERN_MIN(n, u1 * align);
}
