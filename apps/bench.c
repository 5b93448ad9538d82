/*
 * bench.c: `tern bench kernels`: measures what this machine can do at most
 * (streaming read bandwidth, int8 multiply-accumulate peak) and how close
 * each matmul kernel path gets on the BitNet-sized shapes: GEMV (decode) is
 * judged in weight bytes/s against bandwidth, GEMM (prefill) in MAC/s
 * against the peak. Uses only the public API plus its own probes; the
 * probes pick their instruction set at run time like the kernels do.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "apps/cli.h"
#include "tern/matmul.h"
#include "tern/tensor.h"
#include "tern/tern.h"

#if defined(__x86_64__) || defined(__i386__)
#define BENCH_X86 1
#include <immintrin.h>
#elif defined(__aarch64__)
#define BENCH_ARM 1
#include <arm_neon.h>
#endif

const char cmd_bench_help[] =
	"Usage: tern bench kernels [OPTIONS]\n"
	"       tern bench model -m MODEL [OPTIONS]   (see 'tern bench model --help')\n"
	"\n"
	"Measures this machine's streaming read bandwidth and int8 multiply-accumulate\n"
	"peak, then times every kernel path against them. For each weight dtype and\n"
	"shape (ROWSxCOLS = outputs x inputs) it reports a GEMV (one token, the decode\n"
	"case) as weight bytes/s and % of the measured bandwidth, and a GEMM (--tokens\n"
	"tokens, the prefill case) as GMAC/s and % of the measured peak.\n"
	"\n"
	"Default cases: dtypes t2 and t3 (random ternary codes, one f32 scale per\n"
	"tensor) on 2560x2560, 640x2560, 6912x2560, 2560x6912, 1152x1152, 4304x1152\n"
	"and the 128256x2560 output head, plus f16, i8 (one f32 scale per row) and i4\n"
	"(one f16 scale per 128 weights) on the head. GEMM is timed for ternary\n"
	"dtypes and i4 only (so the float and i8 head GEMMs are not measured), and\n"
	"for the scalar path only when --kernels names it: its\n"
	"GEMMs on these shapes take minutes.\n"
	"\n"
	"Options:\n"
	"  -t, --threads N     worker threads, 0 = all cores (default 0)\n"
	"      --json          print one JSON object on stdout\n"
	"      --kernels LIST  kernel paths, comma separated: scalar, avx2, avx512,\n"
	"                      neon (default: every path this machine runs)\n"
	"      --shapes LIST   shapes ROWSxCOLS, comma separated (default above)\n"
	"      --dtypes LIST   weight dtypes, comma separated: t2, t3, i8, i4, f16, bf16,\n"
	"                      f32; each runs on every shape (default above)\n"
	"      --tokens N      GEMM tokens (default 128)\n"
	"      --min-time S    repeat each case for at least S seconds (default 0.2)\n"
	"      --quick         smoke test: small bandwidth buffer, few repeats,\n"
	"                      --min-time 0.01; the numbers are rough\n"
	"  -q, --quiet         no progress lines on stderr\n"
	"  -h, --help          this text\n"
	"\n"
	"Method. Times come from CLOCK_MONOTONIC. Each case runs once to warm up,\n"
	"then repeats until --min-time has passed (at least once); GEMM reports the\n"
	"best (fastest) run, GEMV the mean of the runs, back to back as in decode; a\n"
	"case whose warm-up alone takes longer than max(1 s, --min-time) is not\n"
	"repeated and that run is its time. GEMV cycles through copies of the\n"
	"weights (256 MiB in all) so they stream from memory as in decode, not from\n"
	"cache. Activations are quantized once, outside the timed\n"
	"runs. Bytes are the packed weight bytes (codes + scales); GB/s means 1e9\n"
	"bytes/s. MACs count rows x cols x tokens (padding excluded). Bandwidth: all\n"
	"threads read a 1 GiB buffer with vector loads, best of 8 runs and 1 s. Peak:\n"
	"all threads run independent chains of vpdpbusd (64 MACs each; without\n"
	"AVX-512 VNNI, vpmaddubsw counting 32; on ARM, sdot counting 16), best of 8\n"
	"runs and 0.5 s. Buffers ask for transparent huge pages where the system\n"
	"offers them. On a busy machine the numbers vary; --threads 1 suffers least.\n"
	"\n"
	"Output: an aligned table, or with --json one object:\n"
	"  {\"bandwidth_gbs\", \"mac_peak_gmacs\", \"threads\", \"results\": [{\"kernel\",\n"
	"   \"dtype\", \"op\": \"gemv\"|\"gemm\", \"rows\", \"cols\", \"tokens\", \"seconds\",\n"
	"   \"gbs\", \"gmacs\", \"pct_bandwidth\", \"pct_peak\"}]}\n"
	"gbs, gmacs and both percentages are given for every result. Progress lines go\n"
	"to stderr. Exit status: 0 on success, 1 if a measurement fails, 2 for a bad\n"
	"command line.\n";

#define CMD "bench"
#define MAX_SHAPES 32
#define MAX_DIM ((int64_t)1 << 24)
#define HEAD_ROWS 128256
#define HEAD_COLS 2560
#define MAX_ITERS 100000
#define LONG_RUN_S 1.0
#define REPEATS 8
#define MAX_PROBE_RUNS 200
#define ACT_SLOT_GEMV 1
#define ACT_SLOT_GEMM 2

static const int64_t default_shapes[][2] = {
	{ 2560, 2560 }, { 640, 2560 },  { 6912, 2560 },         { 2560, 6912 },
	{ 1152, 1152 }, { 4304, 1152 }, { HEAD_ROWS, HEAD_COLS },
};

/* Dtypes in the order cases run. */
static const tern_dtype dtype_order[] = { TERN_DTYPE_T2,  TERN_DTYPE_T3,  TERN_DTYPE_I8,
					  TERN_DTYPE_I4,  TERN_DTYPE_F16, TERN_DTYPE_BF16,
					  TERN_DTYPE_F32 };

typedef struct bench_opts {
	int threads;
	bool json, quick, quiet;
	bool scalar_gemm; /* only when asked for: it takes minutes */
	double min_time;
	int64_t tokens;
	bool kernels[TERN_KERNEL_COUNT];
	bool dtypes[TERN_DTYPE_COUNT];
	bool dtypes_given;
	int n_shapes;
	int64_t shapes[MAX_SHAPES][2];
} bench_opts;

typedef struct bench_result {
	tern_kernel_path kernel;
	tern_dtype dtype;
	bool gemm;
	int64_t rows, cols, tokens;
	double seconds;
	double bytes; /* packed weight bytes read once per run */
} bench_result;

typedef struct bench_run {
	const bench_opts *o;
	tern_ctx *ctx;
	/* One buffer for the bandwidth probe and then the weights: paging in
	 * fresh memory is slow on some machines, so it happens once. */
	uint8_t *arena;
	size_t arena_bytes;
	double bandwidth_gbs, peak_gmacs;
	bench_result *res;
	size_t n_res, cap_res;
} bench_run;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

static int lib_fail(tern_ctx *ctx, int rc, const char *what)
{
	const char *msg = ctx ? tern_ctx_errmsg(ctx) : "";

	cli_error("%s: %s: %s", CMD, what, msg[0] ? msg : tern_status_str(rc));
	return CLI_FAIL;
}

/* ---- the arena ---------------------------------------------------------- */

static void *arena_alloc(size_t bytes)
{
#ifdef __linux__
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	/* Huge pages fault in ~5x faster and spare the TLB misses that would
	 * otherwise cap the measured bandwidth; refusal only costs speed. */
	(void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
	return p;
#else
	return tern_alloc(bytes);
#endif
}

static void arena_free(void *p, size_t bytes)
{
	if (!p)
		return;
#ifdef __linux__
	munmap(p, bytes);
#else
	(void)bytes;
	tern_free(p);
#endif
}

/* ---- streaming read bandwidth ------------------------------------------ */

enum probe_isa { ISA_PLAIN, ISA_AVX2, ISA_AVX512, ISA_NEON };

#define BW_CHUNK 4096

#ifdef BENCH_X86
__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint8_t *p, size_t n)
{
	__m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
	uint64_t lanes[8], s = 0;

	for (size_t i = 0; i < n; i += 256) {
		a0 = _mm512_add_epi64(a0, _mm512_load_si512((const void *)(p + i)));
		a1 = _mm512_add_epi64(a1, _mm512_load_si512((const void *)(p + i + 64)));
		a2 = _mm512_add_epi64(a2, _mm512_load_si512((const void *)(p + i + 128)));
		a3 = _mm512_add_epi64(a3, _mm512_load_si512((const void *)(p + i + 192)));
	}
	a0 = _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3));
	_mm512_storeu_si512((void *)lanes, a0);
	for (int i = 0; i < 8; i++)
		s += lanes[i];
	return s;
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n)
{
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
	uint64_t lanes[4], s = 0;

	for (size_t i = 0; i < n; i += 128) {
		a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(p + i)));
		a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
		a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
		a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
	}
	a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
	_mm256_storeu_si256((__m256i *)lanes, a0);
	for (int i = 0; i < 4; i++)
		s += lanes[i];
	return s;
}
#endif

static uint64_t read_plain(const uint8_t *p, size_t n)
{
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;

	for (size_t i = 0; i < n; i += 32) {
		uint64_t v[4];

		memcpy(v, p + i, sizeof v);
		s0 += v[0];
		s1 += v[1];
		s2 += v[2];
		s3 += v[3];
	}
	return s0 + s1 + s2 + s3;
}

typedef struct bw_task {
	const uint8_t *buf;
	int64_t chunks;
	enum probe_isa isa;
	uint64_t *sums; /* one per thread: keeps the reads from being dropped */
} bw_task;

static void bw_fn(void *arg, int ith, int nth)
{
	bw_task *t = arg;
	int64_t b, e;
	const uint8_t *p;
	size_t n;

	tern_split_range(t->chunks, 1, ith, nth, &b, &e);
	p = t->buf + (size_t)b * BW_CHUNK;
	n = (size_t)(e - b) * BW_CHUNK;
	switch (t->isa) {
#ifdef BENCH_X86
	case ISA_AVX512:
		t->sums[ith] = read_avx512(p, n);
		break;
	case ISA_AVX2:
		t->sums[ith] = read_avx2(p, n);
		break;
#endif
	default:
		t->sums[ith] = read_plain(p, n);
		break;
	}
}

static enum probe_isa read_isa(void)
{
#ifdef BENCH_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return ISA_AVX512;
	if (__builtin_cpu_supports("avx2"))
		return ISA_AVX2;
#endif
	return ISA_PLAIN;
}

/* Reads the first `bytes` of the arena (a multiple of BW_CHUNK) at least
 * `runs` times and for at least min_s seconds: on a shared machine the
 * best run needs a quiet moment, and more tries find one. */
static int measure_bandwidth(bench_run *r, size_t bytes, int runs, double min_s, double *gbs)
{
	int nth = tern_ctx_threads(r->ctx);
	bw_task t;
	uint8_t *buf = r->arena;
	uint64_t check = 0;
	double best = INFINITY, start;
	int n_runs;

	t.sums = calloc((size_t)nth, sizeof *t.sums);
	if (!t.sums) {
		cli_error("%s: out of memory", CMD);
		return CLI_FAIL;
	}
	/* Touch every page first so the runs time reads, not page faults. */
	memset(buf, 1, bytes);
	t.buf = buf;
	t.chunks = (int64_t)(bytes / BW_CHUNK);
	t.isa = read_isa();
	start = now_s();
	for (n_runs = 0; n_runs < MAX_PROBE_RUNS && (n_runs < runs || now_s() - start < min_s);
	     n_runs++) {
		double t0 = now_s(), dt;

		tern_pool_run(tern_ctx_pool(r->ctx), bw_fn, &t);
		dt = now_s() - t0;
		if (dt < best)
			best = dt;
		for (int j = 0; j < nth; j++)
			check += t.sums[j];
	}
	free(t.sums);
	/* Every byte is 1, so each 64-bit word is 0x0101..01: a wrong sum
	 * means a thread skipped part of the buffer. */
	if (check != (uint64_t)n_runs * (bytes / 8) * 0x0101010101010101ull) {
		cli_error("%s: bandwidth probe read back a wrong checksum", CMD);
		return CLI_FAIL;
	}
	*gbs = (double)bytes / (best > 1e-9 ? best : 1e-9) / 1e9;
	return CLI_OK;
}

struct bench_probe {
	bench_opts o;
	bench_run r;
};

int bench_probe_open(tern_ctx *ctx, bench_probe **out)
{
	size_t bytes = (size_t)1024 << 20;
	bench_probe *p = calloc(1, sizeof *p);

	*out = NULL;
	if (!p) {
		cli_error("%s: out of memory", CMD);
		return CLI_FAIL;
	}
	p->r.o = &p->o;
	p->r.ctx = ctx;
	p->r.arena_bytes = bytes;
	p->r.arena = arena_alloc(bytes);
	if (!p->r.arena) {
		cli_error("%s: cannot allocate %zu MiB for the bandwidth probe", CMD, bytes >> 20);
		free(p);
		return CLI_FAIL;
	}
	*out = p;
	return CLI_OK;
}

int bench_probe_measure(bench_probe *p, double min_s, double *gbs)
{
	return measure_bandwidth(&p->r, p->r.arena_bytes, REPEATS, min_s, gbs);
}

void bench_probe_close(bench_probe *p)
{
	if (!p)
		return;
	arena_free(p->r.arena, p->r.arena_bytes);
	free(p);
}

int bench_bandwidth(tern_ctx *ctx, double *gbs)
{
	bench_probe *p;
	int st = bench_probe_open(ctx, &p);

	if (st == CLI_OK)
		st = bench_probe_measure(p, 1.0, gbs);
	bench_probe_close(p);
	return st;
}

/* ---- int8 multiply-accumulate peak -------------------------------------- */

#ifdef BENCH_X86
/* 16 independent accumulators: more than vpdpbusd's latency times its
 * issue rate on current cores, so the loop runs at full throughput. */
__attribute__((target("avx512vnni,avx512bw,avx512f"))) static uint64_t mac_vnni(int64_t iters,
									      int seed)
{
	__m512i a = _mm512_set1_epi8((char)(seed | 1)), b = _mm512_set1_epi8(1);
	/* Distinct starting values: identical chains would be merged into one. */
	__m512i c0 = _mm512_set1_epi32(seed), c1 = _mm512_set1_epi32(seed + 1),
		c2 = _mm512_set1_epi32(seed + 2), c3 = _mm512_set1_epi32(seed + 3),
		c4 = _mm512_set1_epi32(seed + 4), c5 = _mm512_set1_epi32(seed + 5),
		c6 = _mm512_set1_epi32(seed + 6), c7 = _mm512_set1_epi32(seed + 7),
		c8 = _mm512_set1_epi32(seed + 8), c9 = _mm512_set1_epi32(seed + 9),
		c10 = _mm512_set1_epi32(seed + 10), c11 = _mm512_set1_epi32(seed + 11),
		c12 = _mm512_set1_epi32(seed + 12), c13 = _mm512_set1_epi32(seed + 13),
		c14 = _mm512_set1_epi32(seed + 14), c15 = _mm512_set1_epi32(seed + 15);
	uint32_t lanes[16];
	uint64_t s = 0;

	for (int64_t i = 0; i < iters; i++) {
		c0 = _mm512_dpbusd_epi32(c0, a, b);
		c1 = _mm512_dpbusd_epi32(c1, a, b);
		c2 = _mm512_dpbusd_epi32(c2, a, b);
		c3 = _mm512_dpbusd_epi32(c3, a, b);
		c4 = _mm512_dpbusd_epi32(c4, a, b);
		c5 = _mm512_dpbusd_epi32(c5, a, b);
		c6 = _mm512_dpbusd_epi32(c6, a, b);
		c7 = _mm512_dpbusd_epi32(c7, a, b);
		c8 = _mm512_dpbusd_epi32(c8, a, b);
		c9 = _mm512_dpbusd_epi32(c9, a, b);
		c10 = _mm512_dpbusd_epi32(c10, a, b);
		c11 = _mm512_dpbusd_epi32(c11, a, b);
		c12 = _mm512_dpbusd_epi32(c12, a, b);
		c13 = _mm512_dpbusd_epi32(c13, a, b);
		c14 = _mm512_dpbusd_epi32(c14, a, b);
		c15 = _mm512_dpbusd_epi32(c15, a, b);
	}
	c0 = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
			      _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
	c8 = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)),
			      _mm512_add_epi32(_mm512_add_epi32(c12, c13),
					       _mm512_add_epi32(c14, c15)));
	_mm512_storeu_si512((void *)lanes, _mm512_add_epi32(c0, c8));
	for (int i = 0; i < 16; i++)
		s += lanes[i];
	return s;
}

/* Without VNNI the kernels multiply with vpmaddubsw; chaining each result
 * into the next one's unsigned input keeps the compiler from hoisting the
 * (otherwise loop-invariant) multiplies. */
__attribute__((target("avx2"))) static uint64_t mac_avx2(int64_t iters, int seed)
{
	__m256i b = _mm256_set1_epi8(1);
	/* Distinct starting values: identical chains would be merged into one. */
	__m256i c0 = _mm256_set1_epi8((char)seed), c1 = _mm256_set1_epi8((char)(seed + 1)),
		c2 = _mm256_set1_epi8((char)(seed + 2)), c3 = _mm256_set1_epi8((char)(seed + 3)),
		c4 = _mm256_set1_epi8((char)(seed + 4)), c5 = _mm256_set1_epi8((char)(seed + 5)),
		c6 = _mm256_set1_epi8((char)(seed + 6)), c7 = _mm256_set1_epi8((char)(seed + 7)),
		c8 = _mm256_set1_epi8((char)(seed + 8)), c9 = _mm256_set1_epi8((char)(seed + 9)),
		c10 = _mm256_set1_epi8((char)(seed + 10)), c11 = _mm256_set1_epi8((char)(seed + 11));
	uint32_t lanes[8];
	uint64_t s = 0;

	for (int64_t i = 0; i < iters; i++) {
		c0 = _mm256_maddubs_epi16(c0, b);
		c1 = _mm256_maddubs_epi16(c1, b);
		c2 = _mm256_maddubs_epi16(c2, b);
		c3 = _mm256_maddubs_epi16(c3, b);
		c4 = _mm256_maddubs_epi16(c4, b);
		c5 = _mm256_maddubs_epi16(c5, b);
		c6 = _mm256_maddubs_epi16(c6, b);
		c7 = _mm256_maddubs_epi16(c7, b);
		c8 = _mm256_maddubs_epi16(c8, b);
		c9 = _mm256_maddubs_epi16(c9, b);
		c10 = _mm256_maddubs_epi16(c10, b);
		c11 = _mm256_maddubs_epi16(c11, b);
	}
	c0 = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(c0, c1), _mm256_add_epi32(c2, c3)),
			      _mm256_add_epi32(_mm256_add_epi32(c4, c5), _mm256_add_epi32(c6, c7)));
	c0 = _mm256_add_epi32(c0, _mm256_add_epi32(_mm256_add_epi32(c8, c9),
						   _mm256_add_epi32(c10, c11)));
	_mm256_storeu_si256((__m256i *)lanes, c0);
	for (int i = 0; i < 8; i++)
		s += lanes[i];
	return s;
}
#endif

#ifdef BENCH_ARM
#ifdef __clang__
#define BENCH_DOTPROD __attribute__((target("dotprod")))
#else
#define BENCH_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
/* Older clang declares vdotq_s32 only when the whole file targets
 * dotprod, so it gets the instruction by name. */
BENCH_DOTPROD static inline int32x4_t sdot(int32x4_t c, int8x16_t a, int8x16_t b)
{
#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD)
	__asm__("sdot %0.4s, %1.16b, %2.16b" : "+w"(c) : "w"(a), "w"(b));
	return c;
#else
	return vdotq_s32(c, a, b);
#endif
}

BENCH_DOTPROD static uint64_t mac_sdot(int64_t iters, int seed)
{
	int8x16_t a = vdupq_n_s8((int8_t)(seed | 1)), b = vdupq_n_s8(1);
	/* Distinct starting values: identical chains would be merged into one. */
	int32x4_t c0 = vdupq_n_s32(seed), c1 = vdupq_n_s32(seed + 1), c2 = vdupq_n_s32(seed + 2),
		  c3 = vdupq_n_s32(seed + 3), c4 = vdupq_n_s32(seed + 4), c5 = vdupq_n_s32(seed + 5),
		  c6 = vdupq_n_s32(seed + 6), c7 = vdupq_n_s32(seed + 7), c8 = vdupq_n_s32(seed + 8),
		  c9 = vdupq_n_s32(seed + 9), c10 = vdupq_n_s32(seed + 10),
		  c11 = vdupq_n_s32(seed + 11);

	for (int64_t i = 0; i < iters; i++) {
		c0 = sdot(c0, a, b);
		c1 = sdot(c1, a, b);
		c2 = sdot(c2, a, b);
		c3 = sdot(c3, a, b);
		c4 = sdot(c4, a, b);
		c5 = sdot(c5, a, b);
		c6 = sdot(c6, a, b);
		c7 = sdot(c7, a, b);
		c8 = sdot(c8, a, b);
		c9 = sdot(c9, a, b);
		c10 = sdot(c10, a, b);
		c11 = sdot(c11, a, b);
	}
	c0 = vaddq_s32(vaddq_s32(vaddq_s32(c0, c1), vaddq_s32(c2, c3)),
		       vaddq_s32(vaddq_s32(c4, c5), vaddq_s32(c6, c7)));
	c0 = vaddq_s32(c0, vaddq_s32(vaddq_s32(c8, c9), vaddq_s32(c10, c11)));
	return (uint64_t)(uint32_t)vaddvq_s32(c0);
}
#endif

/* Plain C: 8 chains of a multiply-add each; the compiler may vectorize
 * them, which is then what this machine's plain integer peak is. */
static uint64_t mac_plain(int64_t iters, int seed)
{
	uint32_t c[8], m = (uint32_t)seed | 1u;
	uint64_t s = 0;

	for (int j = 0; j < 8; j++)
		c[j] = (uint32_t)(j + seed);
	for (int64_t i = 0; i < iters; i++)
		for (int j = 0; j < 8; j++)
			c[j] = c[j] * m + 1u;
	for (int j = 0; j < 8; j++)
		s += c[j];
	return s;
}

typedef struct mac_task {
	enum probe_isa isa;
	int64_t iters;
	uint64_t *sums;
} mac_task;

static void mac_fn(void *arg, int ith, int nth)
{
	mac_task *t = arg;

	(void)nth;
	switch (t->isa) {
#ifdef BENCH_X86
	case ISA_AVX512:
		t->sums[ith] = mac_vnni(t->iters, ith + 2);
		break;
	case ISA_AVX2:
		t->sums[ith] = mac_avx2(t->iters, ith + 2);
		break;
#endif
#ifdef BENCH_ARM
	case ISA_NEON:
		t->sums[ith] = mac_sdot(t->iters, ith + 2);
		break;
#endif
	default:
		t->sums[ith] = mac_plain(t->iters, ith + 2);
		break;
	}
}

/* The probe's ISA and the MACs one loop iteration performs. */
static enum probe_isa mac_isa(double *macs_per_iter, const char **name)
{
#ifdef BENCH_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw")) {
		*macs_per_iter = 16.0 * 64;
		*name = "avx512 vpdpbusd";
		return ISA_AVX512;
	}
	if (__builtin_cpu_supports("avx2")) {
		*macs_per_iter = 12.0 * 32;
		*name = "avx2 vpmaddubsw";
		return ISA_AVX2;
	}
#endif
#ifdef BENCH_ARM
	/* The NEON kernel path needs dotprod, so its availability answers
	 * whether sdot runs here. */
	if (tern_kernel_available(TERN_KERNEL_NEON)) {
		*macs_per_iter = 12.0 * 16;
		*name = "neon sdot";
		return ISA_NEON;
	}
#endif
	*macs_per_iter = 8.0;
	*name = "plain C";
	return ISA_PLAIN;
}

/* Best of at least `runs` runs over at least min_s seconds, as above. */
static int measure_peak(bench_run *r, double target_s, int runs, double min_s, double *gmacs,
			const char **isa_name)
{
	int nth = tern_ctx_threads(r->ctx);
	double per_iter, best = INFINITY, start;
	mac_task t;

	t.sums = calloc((size_t)nth, sizeof *t.sums);
	if (!t.sums) {
		cli_error("%s: out of memory", CMD);
		return CLI_FAIL;
	}
	t.isa = mac_isa(&per_iter, isa_name);
	/* Grow the loop until one run is long enough to time reliably. */
	for (t.iters = 1 << 12;; t.iters *= 2) {
		double t0 = now_s(), dt;

		tern_pool_run(tern_ctx_pool(r->ctx), mac_fn, &t);
		dt = now_s() - t0;
		if (dt >= target_s || t.iters >= ((int64_t)1 << 40))
			break;
	}
	start = now_s();
	for (int n = 0; n < MAX_PROBE_RUNS && (n < runs || now_s() - start < min_s); n++) {
		double t0 = now_s(), dt;

		tern_pool_run(tern_ctx_pool(r->ctx), mac_fn, &t);
		dt = now_s() - t0;
		if (dt < best)
			best = dt;
	}
	free(t.sums);
	*gmacs = per_iter * (double)t.iters * nth / (best > 1e-9 ? best : 1e-9) / 1e9;
	return CLI_OK;
}

/* ---- weights and timing -------------------------------------------------- */

static bool is_ternary(tern_dtype d)
{
	return d == TERN_DTYPE_T2 || d == TERN_DTYPE_T3;
}

static bool is_quantized(tern_dtype d)
{
	return is_ternary(d) || d == TERN_DTYPE_I8 || d == TERN_DTYPE_I4;
}

/* Fills W with random weights: a bank of up to 16 random rows repeated
 * (the kernels' speed does not depend on the values) and fixed scales. */
static int fill_weights(tern_ctx *ctx, tern_tensor *w, uint64_t *rng)
{
	const tern_type_traits *tr = tern_type_traits_of(w->dtype);
	int64_t rows = tern_tensor_rows(w), cols = tern_tensor_cols(w);
	int64_t bank = rows < 16 ? rows : 16;
	size_t rb = tern_row_bytes(w->dtype, cols);
	uint8_t *data = w->data;
	int8_t *qrow = NULL;
	float *frow = NULL;

	if (is_quantized(w->dtype))
		qrow = malloc((size_t)cols);
	else
		frow = malloc((size_t)cols * sizeof *frow);
	if (!qrow && !frow)
		return tern_error(ctx, TERN_E_NOMEM, "no memory for a row of %lld", (long long)cols);
	for (int64_t r = 0; r < bank; r++) {
		for (int64_t j = 0; j < cols; j++) {
			uint64_t v = rng_next(rng) >> 32;

			if (w->dtype == TERN_DTYPE_I8)
				qrow[j] = (int8_t)((int)(v % 255) - 127);
			else if (w->dtype == TERN_DTYPE_I4)
				qrow[j] = (int8_t)((int)(v % 15) - 7);
			else if (qrow)
				qrow[j] = (int8_t)((int)(v % 3) - 1);
			else
				frow[j] = (float)((double)v / 4294967296.0 * 2.0 - 1.0) * 0.05f;
		}
		if (qrow)
			tr->row_from_i8(qrow, data + (size_t)r * rb, cols);
		else
			tr->row_from_float(frow, data + (size_t)r * rb, cols);
	}
	for (int64_t r = bank; r < rows; r++)
		memcpy(data + (size_t)r * rb, data + (size_t)(r % bank) * rb, rb);
	if (is_quantized(w->dtype)) {
		size_t n_scales;
		int rc = tern_scale_count(w->dtype, &w->q, rows, cols, &n_scales);
		/* Writable through data; tern_tensor_scales only says where. */
		uint8_t *sp = data + ((const uint8_t *)tern_tensor_scales(w) - data);
		float s = w->dtype == TERN_DTYPE_I8 ? 0.001f : 0.02f;

		if (rc < 0) {
			free(qrow);
			return tern_error(ctx, rc, "counting scales");
		}
		uint16_t h = tern_f32_to_f16(s);
		const bool f16 = w->q.scale_type == TERN_DTYPE_F16;

		for (size_t i = 0; i < n_scales; i++) {
			if (f16)
				memcpy(sp + i * sizeof h, &h, sizeof h);
			else
				memcpy(sp + i * sizeof s, &s, sizeof s);
		}
	}
	free(qrow);
	free(frow);
	return TERN_OK;
}

/* What one timed case runs: W (one of n_copies identical tensors, used in
 * turn) times either quantized activations or float x. */
typedef struct bench_job {
	tern_ctx *ctx;
	const tern_tensor *w;
	int n_copies;
	const tern_qact *a;
	const float *x;
	int64_t n, ldx;
	float *y;
	int64_t ldy;
} bench_job;

static int job_run(const bench_job *j, int copy)
{
	const tern_tensor *w = &j->w[copy % j->n_copies];

	if (j->a)
		return tern_matmul_q(j->ctx, w, j->a, j->y, j->ldy);
	return tern_matmul(j->ctx, w, j->x, j->n, j->ldx, j->y, j->ldy);
}

/* Times j: the fastest run (GEMM, compute bound), or with `mean` the
 * average of the runs after the warm-up (GEMV: consecutive calls on the
 * copies in turn, as decode issues its matmuls back to back; the fastest
 * single call of a small matrix overstates what a sequence sustains). */
static int job_time(const bench_job *j, double min_time, bool mean, double *out)
{
	double t0 = now_s(), dt, start, best = INFINITY;
	int rc = job_run(j, 0);
	int it;

	if (rc < 0)
		return rc;
	dt = now_s() - t0;
	if (dt >= (min_time > LONG_RUN_S ? min_time : LONG_RUN_S)) {
		*out = dt;
		return TERN_OK;
	}
	start = now_s();
	for (it = 1; it <= MAX_ITERS; it++) {
		t0 = now_s();
		rc = job_run(j, it);
		if (rc < 0)
			return rc;
		dt = now_s() - t0;
		if (dt < best)
			best = dt;
		if (t0 + dt - start >= min_time)
			break;
	}
	if (mean)
		best = (now_s() - start) / (it > MAX_ITERS ? MAX_ITERS : it);
	*out = best < 1e-9 ? 1e-9 : best;
	return TERN_OK;
}

/* ---- results ------------------------------------------------------------ */

static int add_result(bench_run *r, const bench_result *res)
{
	if (r->n_res == r->cap_res) {
		size_t cap = r->cap_res ? r->cap_res * 2 : 64;
		bench_result *p = realloc(r->res, cap * sizeof *p);

		if (!p) {
			cli_error("%s: out of memory", CMD);
			return CLI_FAIL;
		}
		r->res = p;
		r->cap_res = cap;
	}
	r->res[r->n_res++] = *res;
	return CLI_OK;
}

static double res_gbs(const bench_result *x)
{
	return x->bytes / x->seconds / 1e9;
}

static double res_gmacs(const bench_result *x)
{
	return (double)x->rows * (double)x->cols * (double)x->tokens / x->seconds / 1e9;
}

static void print_table_head(const bench_run *r, const char *peak_isa)
{
	printf("tern bench kernels, threads: %d\n", tern_ctx_threads(r->ctx));
	printf("  streaming read bandwidth %10.2f GB/s\n", r->bandwidth_gbs);
	printf("  int8 MAC peak            %10.2f GMAC/s (%s)\n\n", r->peak_gmacs, peak_isa);
	printf("%-13s %-5s %-7s | %10s %8s %6s | %10s %8s %6s\n", "shape", "dtype", "kernel",
	       "GEMV us", "GB/s", "%bw", "GEMM ms", "GMAC/s", "%peak");
	fflush(stdout);
}

static void print_table_row(const bench_run *r, const bench_result *gemv,
			    const bench_result *gemm)
{
	char shape[48];

	snprintf(shape, sizeof shape, "%lldx%lld", (long long)gemv->rows, (long long)gemv->cols);
	printf("%-13s %-5s %-7s | %10.1f %8.2f %6.1f |", shape, tern_dtype_name(gemv->dtype),
	       tern_kernel_path_name(gemv->kernel), gemv->seconds * 1e6, res_gbs(gemv),
	       res_gbs(gemv) / r->bandwidth_gbs * 100.0);
	if (gemm)
		printf(" %10.2f %8.2f %6.1f\n", gemm->seconds * 1e3, res_gmacs(gemm),
		       res_gmacs(gemm) / r->peak_gmacs * 100.0);
	else
		printf(" %10s %8s %6s\n", "-", "-", "-");
	fflush(stdout);
}

static void print_json(const bench_run *r)
{
	printf("{\"bandwidth_gbs\": %.6g, \"mac_peak_gmacs\": %.6g, \"threads\": %d, "
	       "\"results\": [",
	       r->bandwidth_gbs, r->peak_gmacs, tern_ctx_threads(r->ctx));
	for (size_t i = 0; i < r->n_res; i++) {
		const bench_result *x = &r->res[i];

		printf("%s\n  {\"kernel\": \"%s\", \"dtype\": \"%s\", \"op\": \"%s\", "
		       "\"rows\": %lld, \"cols\": %lld, \"tokens\": %lld, \"seconds\": %.6g, "
		       "\"gbs\": %.6g, \"gmacs\": %.6g, \"pct_bandwidth\": %.6g, "
		       "\"pct_peak\": %.6g}",
		       i ? "," : "", tern_kernel_path_name(x->kernel), tern_dtype_name(x->dtype),
		       x->gemm ? "gemm" : "gemv", (long long)x->rows, (long long)x->cols,
		       (long long)x->tokens, x->seconds, res_gbs(x), res_gmacs(x),
		       res_gbs(x) / r->bandwidth_gbs * 100.0, res_gmacs(x) / r->peak_gmacs * 100.0);
	}
	printf("%s]}\n", r->n_res ? "\n" : "");
}

/* ---- one shape and dtype across all kernels ----------------------------- */

typedef struct bench_case {
	int64_t rows, cols;
	tern_dtype dtype;
} bench_case;

static void case_qparams(tern_dtype d, tern_qparams *qp)
{
	qp->kind = is_ternary(d) ? TERN_SCALE_TENSOR
				 : d == TERN_DTYPE_I8 ? TERN_SCALE_ROW : TERN_SCALE_NONE;
	qp->block = 0;
	qp->scale_type = TERN_DTYPE_F32;
	if (d == TERN_DTYPE_I4) /* as tern convert --head i4 writes it */
		*qp = (tern_qparams){ TERN_SCALE_BLOCK, 128, TERN_DTYPE_F16 };
}

/* Bytes of one copy of a case's weights in the arena (64-byte aligned). */
static int case_stride(const bench_case *c, size_t *out)
{
	tern_qparams qp;
	size_t bytes;
	int rc;

	case_qparams(c->dtype, &qp);
	rc = tern_matrix_bytes(c->dtype, &qp, c->rows, c->cols, &bytes);
	if (rc < 0)
		return rc;
	rc = tern_size_add(bytes, 63, &bytes);
	*out = bytes & ~(size_t)63;
	return rc;
}

/* Views of n identical copies of random weights laid out in the arena,
 * about `footprint` bytes in all (at least one copy). */
static int make_copies(bench_run *r, const bench_case *c, size_t footprint, tern_tensor **out,
		       int *n_out)
{
	uint64_t rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(c->rows * 31 + c->cols);
	tern_tensor *w, v;
	size_t stride, bytes, n;
	int rc;

	memset(&v, 0, sizeof v);
	v.dtype = c->dtype;
	v.n_dims = 2;
	v.shape[0] = c->rows;
	v.shape[1] = c->cols;
	case_qparams(c->dtype, &v.q);
	rc = tern_tensor_bytes(r->ctx, &v, &bytes);
	if (rc == TERN_OK)
		rc = case_stride(c, &stride);
	if (rc < 0)
		return lib_fail(r->ctx, rc, "sizing the weights");
	if (stride > r->arena_bytes) {
		cli_error("%s: internal: arena too small for %lldx%lld", CMD, (long long)c->rows,
			  (long long)c->cols);
		return CLI_FAIL;
	}
	n = (footprint + stride - 1) / stride;
	if (n > r->arena_bytes / stride)
		n = r->arena_bytes / stride;
	if (n < 1)
		n = 1;
	w = calloc(n, sizeof *w);
	if (!w) {
		cli_error("%s: out of memory", CMD);
		return CLI_FAIL;
	}
	v.nbytes = bytes;
	for (size_t i = 0; i < n; i++) {
		w[i] = v;
		w[i].data = r->arena + i * stride;
	}
	rc = fill_weights(r->ctx, &w[0], &rng);
	if (rc < 0) {
		free(w);
		return lib_fail(r->ctx, rc, "making the weights");
	}
	for (size_t i = 1; i < n; i++)
		memcpy(w[i].data, w[0].data, bytes);
	*out = w;
	*n_out = (int)n;
	return CLI_OK;
}

static int run_case(bench_run *r, const bench_case *c)
{
	const bench_opts *o = r->o;
	size_t footprint = (size_t)(o->quick ? 16 : 256) << 20;
	int64_t tokens = is_ternary(c->dtype) || c->dtype == TERN_DTYPE_I4 ? o->tokens : 1;
	tern_tensor *w = NULL;
	float *x = NULL, *y = NULL;
	tern_qact a1, an;
	int n_copies = 0, status = CLI_FAIL, rc;
	uint64_t rng = 12345;
	size_t nx, ny;

	if (tern_size_mul((size_t)tokens, (size_t)c->cols, &nx) < 0 ||
	    tern_size_mul(nx, sizeof *x, &nx) < 0 ||
	    tern_size_mul((size_t)tokens, (size_t)c->rows, &ny) < 0 ||
	    tern_size_mul(ny, sizeof *y, &ny) < 0) {
		cli_error("%s: %lldx%lld with %lld tokens is too large", CMD, (long long)c->rows,
			  (long long)c->cols, (long long)tokens);
		return CLI_FAIL;
	}
	status = make_copies(r, c, footprint, &w, &n_copies);
	if (status != CLI_OK)
		return status;
	status = CLI_FAIL;
	x = malloc(nx);
	y = malloc(ny);
	if (!x || !y) {
		cli_error("%s: out of memory for activations", CMD);
		goto out;
	}
	for (size_t i = 0; i < nx / sizeof *x; i++)
		x[i] = (float)((double)(rng_next(&rng) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
	if (is_quantized(c->dtype)) {
		rc = tern_qact_quantize(r->ctx, ACT_SLOT_GEMV, c->dtype, x, 1, c->cols, c->cols,
					TERN_ACTQ_MUL, TERN_ROUND_EVEN, &a1);
		if (rc == TERN_OK && tokens > 1)
			rc = tern_qact_quantize(r->ctx, ACT_SLOT_GEMM, c->dtype, x, tokens, c->cols,
						c->cols, TERN_ACTQ_MUL, TERN_ROUND_EVEN, &an);
		if (rc < 0) {
			lib_fail(r->ctx, rc, "quantizing activations");
			goto out;
		}
	}
	for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
		bench_job j = { .ctx = r->ctx, .w = w, .n_copies = n_copies, .x = x, .n = 1,
				.ldx = c->cols, .y = y, .ldy = c->rows };
		bench_result gemv = { .kernel = (tern_kernel_path)p, .dtype = c->dtype,
				      .rows = c->rows, .cols = c->cols, .tokens = 1,
				      .bytes = (double)w[0].nbytes };
		bench_result gemm = gemv;

		if (!o->kernels[p])
			continue;
		rc = tern_ctx_set_kernel(r->ctx, (tern_kernel_path)p);
		if (rc < 0) {
			lib_fail(r->ctx, rc, "choosing a kernel");
			goto out;
		}
		if (is_quantized(c->dtype))
			j.a = &a1;
		rc = job_time(&j, o->min_time, true, &gemv.seconds);
		if (rc < 0) {
			lib_fail(r->ctx, rc, "GEMV");
			goto out;
		}
		if (add_result(r, &gemv) != CLI_OK)
			goto out;
		if (tokens > 1 && (p != TERN_KERNEL_SCALAR || o->scalar_gemm)) {
			j.a = &an;
			j.n = tokens;
			/* GEMM is compute bound: the copies only matter for GEMV. */
			j.n_copies = 1;
			gemm.gemm = true;
			gemm.tokens = tokens;
			rc = job_time(&j, o->min_time, false, &gemm.seconds);
			if (rc < 0) {
				lib_fail(r->ctx, rc, "GEMM");
				goto out;
			}
			if (add_result(r, &gemm) != CLI_OK)
				goto out;
		}
		if (!o->json)
			print_table_row(r, &gemv, gemm.gemm ? &gemm : NULL);
	}
	status = CLI_OK;
out:
	free(x);
	free(y);
	free(w);
	return status;
}

/* ---- command line ------------------------------------------------------- */

/* Calls item() on each element of a comma-separated list (argv stays
 * untouched: each element is copied into a small buffer). */
static int parse_list(const char *flag, const char *list,
		      int (*item)(bench_opts *, const char *, const char *), bench_opts *o)
{
	char buf[64];
	const char *p = list;

	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		int st;

		if (n == 0 || n >= sizeof buf)
			return cli_usage(CMD, "%s: bad list '%s'", flag, list);
		memcpy(buf, p, n);
		buf[n] = '\0';
		st = item(o, flag, buf);
		if (st != CLI_OK)
			return st;
		if (!comma)
			return CLI_OK;
		p = comma + 1;
	}
}

static int kernel_item(bench_opts *o, const char *flag, const char *name)
{
	for (int p = 0; p < TERN_KERNEL_COUNT; p++) {
		if (strcmp(name, tern_kernel_path_name((tern_kernel_path)p)) != 0)
			continue;
		if (!tern_kernel_available((tern_kernel_path)p)) {
			cli_error("%s: %s: kernel path '%s' is not available on this machine", CMD,
				  flag, name);
			return CLI_FAIL;
		}
		o->kernels[p] = true;
		return CLI_OK;
	}
	return cli_usage(CMD, "%s: unknown kernel path '%s' (scalar, avx2, avx512, neon)", flag,
			 name);
}

static int dtype_item(bench_opts *o, const char *flag, const char *name)
{
	tern_dtype d = tern_dtype_from_name(name);

	if (d == TERN_DTYPE_COUNT || d == TERN_DTYPE_I32)
		return cli_usage(CMD, "%s: unknown weight dtype '%s' (t2, t3, i8, i4, f16, bf16, f32)",
				 flag, name);
	o->dtypes[d] = true;
	o->dtypes_given = true;
	return CLI_OK;
}

static int shape_item(bench_opts *o, const char *flag, const char *text)
{
	if (o->n_shapes == MAX_SHAPES)
		return cli_usage(CMD, "%s: at most %d shapes", flag, MAX_SHAPES);
	if (cli_parse_shape(CMD, flag, text, MAX_DIM, &o->shapes[o->n_shapes][0],
			    &o->shapes[o->n_shapes][1]) != CLI_OK)
		return CLI_USAGE;
	o->n_shapes++;
	return CLI_OK;
}

static int parse_args(int argc, char **argv, bench_opts *o, bool *help)
{
	bool kernels_given = false, min_time_given = false;

	memset(o, 0, sizeof *o);
	o->min_time = 0.2;
	o->tokens = 128;
	*help = false;
	if (argc < 2)
		return cli_usage(CMD, "missing what to benchmark: 'kernels'");
	if (cli_is_help(argv[1])) {
		*help = true;
		return CLI_OK;
	}
	if (strcmp(argv[1], "kernels") != 0)
		return cli_usage(CMD, "unknown benchmark '%s' (known: kernels, model)", argv[1]);
	for (int i = 2; i < argc; i++) {
		const char *v;
		long n;
		int m, st = CLI_OK;

		if (cli_is_help(argv[i])) {
			*help = true;
			return CLI_OK;
		} else if (strcmp(argv[i], "--json") == 0) {
			o->json = true;
		} else if (strcmp(argv[i], "--quick") == 0) {
			o->quick = true;
		} else if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0) {
			o->quiet = true;
		} else if ((m = cli_flag_value(CMD, argc, argv, &i, "-t", "--threads", &v)) != 0) {
			if (m < 0 ||
			    cli_parse_int(CMD, "--threads", v, 0, CLI_MAX_THREADS, &n) != CLI_OK)
				return CLI_USAGE;
			o->threads = (int)n;
		} else if ((m = cli_flag_value(CMD, argc, argv, &i, NULL, "--tokens", &v)) != 0) {
			if (m < 0 || cli_parse_int(CMD, "--tokens", v, 2, 4096, &n) != CLI_OK)
				return CLI_USAGE;
			o->tokens = n;
		} else if ((m = cli_flag_value(CMD, argc, argv, &i, NULL, "--min-time", &v)) != 0) {
			if (m < 0 || cli_parse_double(CMD, "--min-time", v, 0.0, 60.0, &o->min_time) !=
					     CLI_OK)
				return CLI_USAGE;
			min_time_given = true;
		} else if ((m = cli_flag_value(CMD, argc, argv, &i, NULL, "--kernels", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			st = parse_list("--kernels", v, kernel_item, o);
			kernels_given = true;
		} else if ((m = cli_flag_value(CMD, argc, argv, &i, NULL, "--dtypes", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			st = parse_list("--dtypes", v, dtype_item, o);
		} else if ((m = cli_flag_value(CMD, argc, argv, &i, NULL, "--shapes", &v)) != 0) {
			if (m < 0)
				return CLI_USAGE;
			st = parse_list("--shapes", v, shape_item, o);
		} else {
			return cli_usage(CMD, "unknown option '%s'", argv[i]);
		}
		if (st != CLI_OK)
			return st;
	}
	if (o->quick && !min_time_given)
		o->min_time = 0.01;
	o->scalar_gemm = kernels_given && o->kernels[TERN_KERNEL_SCALAR];
	if (!kernels_given)
		for (int p = 0; p < TERN_KERNEL_COUNT; p++)
			o->kernels[p] = tern_kernel_available((tern_kernel_path)p);
	if (o->n_shapes == 0) {
		o->n_shapes = (int)(sizeof default_shapes / sizeof default_shapes[0]);
		memcpy(o->shapes, default_shapes, sizeof default_shapes);
	}
	return CLI_OK;
}

/* The cases to run, in order: every shape with every chosen dtype; by
 * default t2 and t3 everywhere plus f16, i8 and i4 on the output head. */
static int list_cases(const bench_opts *o, bench_case *cases, int max)
{
	int n = 0;

	for (int s = 0; s < o->n_shapes; s++) {
		bool head = o->shapes[s][0] == HEAD_ROWS && o->shapes[s][1] == HEAD_COLS;

		for (size_t k = 0; k < sizeof dtype_order / sizeof dtype_order[0]; k++) {
			tern_dtype d = dtype_order[k];
			bool on = o->dtypes_given ? o->dtypes[d]
						  : is_ternary(d) || (head && (d == TERN_DTYPE_F16 ||
									       d == TERN_DTYPE_I8 ||
									       d == TERN_DTYPE_I4));

			if (on && n < max) {
				cases[n].rows = o->shapes[s][0];
				cases[n].cols = o->shapes[s][1];
				cases[n].dtype = d;
				n++;
			}
		}
	}
	return n;
}

int cmd_bench(int argc, char **argv)
{
	bench_opts o;
	bench_run r;
	bench_case cases[MAX_SHAPES * TERN_DTYPE_COUNT];
	tern_ctx_params cp = tern_ctx_default_params();
	const char *peak_isa = "";
	bool help;
	int st, n_cases;
	double t_start = now_s();
	size_t bw_bytes;

	if (argc >= 2 && strcmp(argv[1], "model") == 0)
		return cmd_bench_model(argc - 1, argv + 1);
	st = parse_args(argc, argv, &o, &help);
	if (st != CLI_OK)
		return st;
	if (help) {
		fputs(cmd_bench_help, stdout);
		return CLI_OK;
	}
	memset(&r, 0, sizeof r);
	r.o = &o;
	bw_bytes = (size_t)(o.quick ? 64 : 1024) << 20;
	cp.n_threads = o.threads;
	/* Each case picks its path; naming one here keeps TERN_KERNEL out. */
	cp.kernel = "scalar";
	st = tern_ctx_new(&cp, &r.ctx);
	if (st < 0)
		return lib_fail(NULL, st, "creating a context");
	n_cases = list_cases(&o, cases, (int)(sizeof cases / sizeof cases[0]));
	r.arena_bytes = bw_bytes;
	for (int i = 0; i < n_cases; i++) {
		size_t stride;

		st = case_stride(&cases[i], &stride);
		if (st < 0) {
			st = lib_fail(NULL, st, "sizing the weights");
			goto out;
		}
		if (stride > r.arena_bytes)
			r.arena_bytes = stride;
	}
	r.arena = arena_alloc(r.arena_bytes);
	if (!r.arena) {
		cli_error("%s: cannot allocate %zu MiB for the buffers", CMD, r.arena_bytes >> 20);
		st = CLI_FAIL;
		goto out;
	}

	if (!o.quiet)
		fprintf(stderr, "tern bench: measuring bandwidth and int8 MAC peak, threads: %d\n",
			tern_ctx_threads(r.ctx));
	st = measure_bandwidth(&r, bw_bytes, o.quick ? 2 : REPEATS, o.quick ? 0.0 : 1.0,
			       &r.bandwidth_gbs);
	if (st == CLI_OK)
		st = measure_peak(&r, o.quick ? 0.005 : 0.03, o.quick ? 2 : REPEATS,
				  o.quick ? 0.0 : 0.5, &r.peak_gmacs, &peak_isa);
	if (st == CLI_OK && !o.json)
		print_table_head(&r, peak_isa);
	for (int i = 0; i < n_cases && st == CLI_OK; i++) {
		if (!o.quiet)
			fprintf(stderr, "tern bench: [%d/%d] %lldx%lld %s (at %.1f s)\n", i + 1,
				n_cases, (long long)cases[i].rows, (long long)cases[i].cols,
				tern_dtype_name(cases[i].dtype), now_s() - t_start);
		st = run_case(&r, &cases[i]);
	}
	if (st == CLI_OK && o.json)
		print_json(&r);
out:
	arena_free(r.arena, r.arena_bytes);
	free(r.res);
	tern_ctx_free(r.ctx);
	return st;
}
