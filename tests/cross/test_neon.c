/*
 * test_neon.c: the NEON kernel table checked against the scalar reference
 * table, cross-compiled for AArch64 and run under qemu-user by .ci/neon
 * (plain C, no Criterion: the test links nothing but a few core files).
 * Integer kernels must match the reference bit for bit, and also a naive
 * sum computed here from the unpacked values; float kernels must stay
 * within a rounding bound, and be exact on integer-valued data; I4 (whose
 * kernels apply float scales) stays within a rounding bound of a double
 * sum over the dequantized weights. Prints one
 * line per case and a final "N passed, N failed" line.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/kernels.h"
#include "core/pack.h"
#include "tests/testutil.h"

static int n_pass, n_fail;

static void report(int ok, const char *what, const char *detail)
{
	if (ok)
		n_pass++;
	else
		n_fail++;
	printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", what, detail[0] ? ": " : "", detail);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (!p) {
		fprintf(stderr, "test_neon: out of memory\n");
		exit(2);
	}
	return p;
}

/* ---- ternary ---------------------------------------------------------- */

typedef struct tfam {
	const char *name;
	int64_t align;    /* row padding */
	int per_byte;     /* codes per byte */
	void (*pack)(const int8_t *w, int64_t n, uint8_t *dst);
	tern_tdot_fn ref, neon;
} tfam;

/*
 * One ternary case. Weight rows are stored w_pad bytes apart beyond their
 * packed size and tokens a_pad bytes apart beyond kpad, so strides are
 * exercised. Activations past k are random too: pad weights have code 1,
 * so they must contribute exactly a[j] to the raw sums. `extreme` uses the
 * largest magnitudes (all codes 2, activations -128).
 */
static void tern_case(const tfam *f, tu_rng *rng, int64_t k, int64_t rows, int64_t ntok,
		      int64_t blk_req, int extreme)
{
	const int64_t kpad = (k + f->align - 1) / f->align * f->align;
	const int64_t blk = blk_req ? blk_req : kpad;
	const int64_t nb = (kpad + blk - 1) / blk;
	const size_t row_bytes = (size_t)(kpad / f->per_byte);
	const size_t w_stride = row_bytes + (size_t)tu_int(rng, 0, 3) * 16;
	const size_t a_stride = (size_t)kpad + (size_t)tu_int(rng, 0, 2) * 32;

	int8_t *vals = xcalloc((size_t)(rows * k), 1);
	uint8_t *w = xcalloc((size_t)rows * w_stride, 1);
	int8_t *a = xcalloc((size_t)ntok * a_stride, 1);
	size_t nout = (size_t)(rows * ntok * nb);
	int32_t *o_ref = xcalloc(nout, sizeof(int32_t));
	int32_t *o_neon = xcalloc(nout, sizeof(int32_t));
	int32_t *o_naive = xcalloc(nout, sizeof(int32_t));

	for (int64_t i = 0; i < rows * k; i++)
		vals[i] = extreme ? 1 : (int8_t)tu_int(rng, -1, 1);
	for (int64_t r = 0; r < rows; r++) {
		memset(w + (size_t)r * w_stride, 0xA5, w_stride); /* garbage past the row */
		f->pack(vals + r * k, k, w + (size_t)r * w_stride);
	}
	for (size_t i = 0; i < (size_t)ntok * a_stride; i++)
		a[i] = extreme ? -128 : (int8_t)tu_int(rng, -128, 127);
	for (int64_t r = 0; r < rows; r++)
		for (int64_t t = 0; t < ntok; t++)
			for (int64_t j = 0; j < kpad; j++) {
				int code = j < k ? vals[r * k + j] + 1 : 1;
				o_naive[(r * ntok + t) * nb + j / blk] +=
					code * a[(size_t)t * a_stride + (size_t)j];
			}

	/* Sentinels: every output slot must be written. */
	memset(o_ref, 0x5A, nout * sizeof(int32_t));
	memset(o_neon, 0x5A, nout * sizeof(int32_t));
	f->ref(w, w_stride, rows, a, a_stride, ntok, kpad, blk, o_ref);
	f->neon(w, w_stride, rows, a, a_stride, ntok, kpad, blk, o_neon);

	char what[160], detail[200] = "";
	snprintf(what, sizeof what, "%s k=%lld kpad=%lld blk=%lld rows=%lld tok=%lld%s", f->name,
		 (long long)k, (long long)kpad, (long long)blk, (long long)rows, (long long)ntok,
		 extreme ? " extreme" : "");
	int ok = 1;
	for (size_t i = 0; i < nout && ok; i++) {
		if (o_neon[i] != o_ref[i] || o_neon[i] != o_naive[i]) {
			snprintf(detail, sizeof detail, "out[%zu] neon %d ref %d naive %d", i,
				 (int)o_neon[i], (int)o_ref[i], (int)o_naive[i]);
			ok = 0;
		}
	}
	report(ok, what, detail);
	free(vals);
	free(w);
	free(a);
	free(o_ref);
	free(o_neon);
	free(o_naive);
}

static void tern_cases(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng)
{
	static const int64_t ks[] = { 1, 7, 127, 129, 160, 161, 1152, 4304 };
	static const int64_t blks[] = { 0 /* kpad */, 128, 256 };
	const tfam fams[2] = {
		{ "t2", 128, 4, tern_t2_pack_row, ref->t2_dot, neon->t2_dot },
		{ "t3", 160, 5, tern_t3_pack_row, ref->t3_dot, neon->t3_dot },
	};
	for (int fi = 0; fi < 2; fi++) {
		for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
			for (size_t bi = 0; bi < sizeof blks / sizeof blks[0]; bi++) {
				/* One GEMV and one GEMM per shape; rows odd. */
				int64_t rows = 2 * tu_int(rng, 0, 6) + 1;
				tern_case(&fams[fi], rng, ks[ki], rows, 1, blks[bi], 0);
				tern_case(&fams[fi], rng, ks[ki], rows, tu_int(rng, 2, 9), blks[bi], 0);
			}
		}
		/* Every token count of the tiling (full tiles and each tail). */
		for (int64_t nt = 1; nt <= 9; nt++)
			tern_case(&fams[fi], rng, 1000, 3, nt, 256, 0);
		tern_case(&fams[fi], rng, 4304, 3, 5, 0, 1);
		tern_case(&fams[fi], rng, 4304, 3, 5, 128, 1);
	}
}

/* ---- int8 x int8 ------------------------------------------------------ */

static void i8_case(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng, int64_t k,
		    int64_t rows, int64_t ntok, int extreme)
{
	const size_t w_stride = (size_t)k + (size_t)tu_int(rng, 0, 5);
	const size_t a_stride = (size_t)k + (size_t)tu_int(rng, 0, 5);
	int8_t *w = xcalloc((size_t)rows * w_stride, 1);
	int8_t *a = xcalloc((size_t)ntok * a_stride, 1);
	size_t nout = (size_t)(rows * ntok);
	int32_t *o_ref = xcalloc(nout, sizeof(int32_t));
	int32_t *o_neon = xcalloc(nout, sizeof(int32_t));

	for (size_t i = 0; i < (size_t)rows * w_stride; i++)
		w[i] = extreme ? -128 : (int8_t)tu_int(rng, -128, 127);
	for (size_t i = 0; i < (size_t)ntok * a_stride; i++)
		a[i] = extreme ? -128 : (int8_t)tu_int(rng, -128, 127);
	memset(o_ref, 0x5A, nout * sizeof(int32_t));
	memset(o_neon, 0x5A, nout * sizeof(int32_t));
	ref->i8_dot(w, w_stride, rows, a, a_stride, ntok, k, o_ref);
	neon->i8_dot(w, w_stride, rows, a, a_stride, ntok, k, o_neon);

	char what[160], detail[200] = "";
	snprintf(what, sizeof what, "i8 k=%lld rows=%lld tok=%lld%s", (long long)k,
		 (long long)rows, (long long)ntok, extreme ? " extreme" : "");
	int ok = 1;
	for (int64_t r = 0; r < rows && ok; r++) {
		for (int64_t t = 0; t < ntok && ok; t++) {
			int32_t naive = 0;
			for (int64_t j = 0; j < k; j++)
				naive += (int32_t)w[(size_t)r * w_stride + (size_t)j] *
					 a[(size_t)t * a_stride + (size_t)j];
			size_t i = (size_t)(r * ntok + t);
			if (o_neon[i] != o_ref[i] || o_neon[i] != naive) {
				snprintf(detail, sizeof detail, "out[%zu] neon %d ref %d naive %d",
					 i, (int)o_neon[i], (int)o_ref[i], (int)naive);
				ok = 0;
			}
		}
	}
	report(ok, what, detail);
	free(w);
	free(a);
	free(o_ref);
	free(o_neon);
}

static void i8_cases(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng)
{
	static const int64_t ks[] = { 1, 7, 15, 16, 17, 31, 32, 33, 127, 129, 1152, 4304 };
	for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
		int64_t rows = 2 * tu_int(rng, 0, 6) + 1;
		i8_case(ref, neon, rng, ks[ki], rows, 1, 0);
		i8_case(ref, neon, rng, ks[ki], rows, tu_int(rng, 2, 9), 0);
	}
	i8_case(ref, neon, rng, 4304, 3, 5, 1);
}

/* ---- float weights ---------------------------------------------------- */

enum { WF32, WF16, WBF16 };
static const char *const wt_names[] = { "f32", "f16", "bf16" };

/* Store v in weight type wt at index i of row buffer dst; returns the value
 * actually stored (rounded to that type). */
static float store_w(void *dst, int64_t i, float v, int wt)
{
	if (wt == WF32) {
		((float *)dst)[i] = v;
		return v;
	}
	if (wt == WF16) {
		__fp16 h = (__fp16)v;
		memcpy((uint16_t *)dst + i, &h, sizeof h);
		return (float)h;
	}
	uint32_t bits;
	memcpy(&bits, &v, sizeof bits);
	uint16_t hb = (uint16_t)(bits >> 16); /* truncation: the stored value is exact */
	bits = (uint32_t)hb << 16;
	memcpy((uint16_t *)dst + i, &hb, sizeof hb);
	memcpy(&v, &bits, sizeof v);
	return v;
}

/*
 * With `integers` the data are small integers: every product and partial
 * sum is exact in float (|sum| <= 64 * 4304 < 2^24), so any summation order
 * gives the exact result and the kernels must match it bit for bit. With
 * random floats the two kernels sum in different orders; each is within
 * gamma_k * S of the exact sum (S = sum |w x|, gamma_k ~ k * 2^-24, the
 * standard bound for recursive summation), so they may differ by twice
 * that; (k + 1) * FLT_EPSILON * S is that bound with a factor 2 to spare.
 */
static void f_case(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng, int wt,
		   int64_t k, int64_t rows, int64_t ntok, int integers)
{
	const size_t esize = wt == WF32 ? 4 : 2;
	const int64_t wcols = k + tu_int(rng, 0, 3);
	const size_t w_stride = (size_t)wcols * esize;
	const int64_t ldx = k + tu_int(rng, 0, 3);
	const int64_t ldy = rows + tu_int(rng, 0, 3);
	uint8_t *w = xcalloc((size_t)rows * w_stride, 1);
	float *wv = xcalloc((size_t)(rows * k), sizeof(float));
	float *x = xcalloc((size_t)(ntok * ldx), sizeof(float));
	float *y_ref = xcalloc((size_t)(ntok * ldy), sizeof(float));
	float *y_neon = xcalloc((size_t)(ntok * ldy), sizeof(float));

	for (int64_t r = 0; r < rows; r++)
		for (int64_t j = 0; j < wcols; j++) {
			float v = integers ? (float)tu_int(rng, -8, 8) : tu_normal(rng);
			float s = store_w(w + (size_t)r * w_stride, j, v, wt);
			if (j < k)
				wv[r * k + j] = s;
		}
	for (int64_t i = 0; i < ntok * ldx; i++)
		x[i] = integers ? (float)tu_int(rng, -8, 8) : tu_normal(rng);
	tern_fdot_fn fr = wt == WF32 ? ref->f32_dot : wt == WF16 ? ref->f16_dot : ref->bf16_dot;
	tern_fdot_fn fn = wt == WF32 ? neon->f32_dot : wt == WF16 ? neon->f16_dot : neon->bf16_dot;
	for (int64_t i = 0; i < ntok * ldy; i++)
		y_ref[i] = y_neon[i] = NAN;
	fr(w, w_stride, rows, x, ldx, ntok, k, y_ref, ldy);
	fn(w, w_stride, rows, x, ldx, ntok, k, y_neon, ldy);

	char what[160], detail[200] = "";
	snprintf(what, sizeof what, "%s k=%lld rows=%lld tok=%lld%s", wt_names[wt], (long long)k,
		 (long long)rows, (long long)ntok, integers ? " integers" : "");
	int ok = 1;
	for (int64_t t = 0; t < ntok && ok; t++) {
		for (int64_t r = 0; r < rows && ok; r++) {
			double exact = 0, mag = 0;
			for (int64_t j = 0; j < k; j++) {
				double p = (double)wv[r * k + j] * x[t * ldx + j];
				exact += p;
				mag += fabs(p);
			}
			double tol = integers ? 0.0 : (double)(k + 1) * FLT_EPSILON * mag;
			float yn = y_neon[t * ldy + r], yr = y_ref[t * ldy + r];
			if (!(fabs((double)yn - yr) <= 2 * tol && fabs((double)yn - exact) <= tol)) {
				snprintf(detail, sizeof detail,
					 "y[%lld][%lld] neon %.9g ref %.9g exact %.9g tol %.3g",
					 (long long)t, (long long)r, yn, yr, exact, tol);
				ok = 0;
			}
		}
	}
	/* Padding columns of y (r >= rows) must stay untouched. */
	for (int64_t t = 0; t < ntok && ok; t++)
		for (int64_t r = rows; r < ldy && ok; r++)
			if (!isnan(y_neon[t * ldy + r])) {
				snprintf(detail, sizeof detail, "wrote y[%lld][%lld] past rows",
					 (long long)t, (long long)r);
				ok = 0;
			}
	report(ok, what, detail);
	free(w);
	free(wv);
	free(x);
	free(y_ref);
	free(y_neon);
}

static void f_cases(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng)
{
	static const int64_t ks[] = { 1, 3, 7, 8, 9, 127, 129, 1152, 4304 };
	for (int wt = WF32; wt <= WBF16; wt++) {
		for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
			int64_t rows = 2 * tu_int(rng, 0, 4) + 1;
			f_case(ref, neon, rng, wt, ks[ki], rows, 1, 0);
			f_case(ref, neon, rng, wt, ks[ki], rows, tu_int(rng, 2, 9), 0);
			f_case(ref, neon, rng, wt, ks[ki], rows, tu_int(rng, 1, 9), 1);
		}
	}
}

/* ---- I4 --------------------------------------------------------------- */

/*
 * One I4 case: random bytes (every nibble, pad nibbles included: readers
 * accept any pad), random signed f32 or f16 scales, activations zero past
 * k as quantized rows are. NEON and the reference must both stay within
 * (2 ng + 18) * FLT_EPSILON * sum (|q| + 8) |s a| of the double sum of
 * the dequantized weights times the activations (each sums ng exact group
 * dots in its own order), and within twice that of each other.
 */
static void i4_case(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng, int64_t k,
		    int64_t rows, int64_t ntok, int f16)
{
	const int64_t kpad = (k + 127) / 128 * 128, ng = kpad / 128;
	const size_t ws = (size_t)(kpad / 2) + (size_t)tu_int(rng, 0, 2) * 16;
	const size_t ss = (size_t)ng * (f16 ? 2 : 4) + (size_t)tu_int(rng, 0, 2) * 4;
	const size_t as = (size_t)kpad + (size_t)tu_int(rng, 0, 2) * 32;
	uint8_t *w = xcalloc((size_t)rows * ws, 1);
	uint8_t *s = xcalloc((size_t)rows * ss, 1);
	int8_t *a = xcalloc((size_t)ntok * as, 1);
	int32_t *bsum = xcalloc((size_t)(ntok * ng), sizeof(int32_t));
	float *o_ref = xcalloc((size_t)(rows * ntok), sizeof(float));
	float *o_neon = xcalloc((size_t)(rows * ntok), sizeof(float));
	double *scale = xcalloc((size_t)(rows * ng), sizeof(double));
	for (size_t i = 0; i < (size_t)rows * ws; i++)
		w[i] = (uint8_t)tu_int(rng, 0, 255);
	for (int64_t r = 0; r < rows; r++)
		for (int64_t g = 0; g < ng; g++) {
			float f = (float)(1e-3 * (double)tu_int(rng, -500, 4000));
			if (f16) {
				uint16_t h = tern_f32_to_f16(f);
				memcpy(s + (size_t)r * ss + 2 * (size_t)g, &h, 2);
				scale[r * ng + g] = tern_f16_to_f32(h);
			} else {
				memcpy(s + (size_t)r * ss + 4 * (size_t)g, &f, 4);
				scale[r * ng + g] = f;
			}
		}
	for (int64_t t = 0; t < ntok; t++)
		for (int64_t j = 0; j < k; j++) {
			int8_t v = (int8_t)tu_int(rng, -128, 127);
			a[(size_t)t * as + (size_t)j] = v;
			bsum[t * ng + j / 128] += v;
		}
	for (int64_t i = 0; i < rows * ntok; i++)
		o_ref[i] = o_neon[i] = NAN; /* every output must be written */
	ref->i4_dot(w, ws, s, ss, f16, rows, a, as, bsum, ntok, kpad, o_ref);
	neon->i4_dot(w, ws, s, ss, f16, rows, a, as, bsum, ntok, kpad, o_neon);

	char what[160], detail[200] = "";
	snprintf(what, sizeof what, "i4 k=%lld rows=%lld tok=%lld %s", (long long)k,
		 (long long)rows, (long long)ntok, f16 ? "f16" : "f32");
	int ok = 1;
	for (int64_t r = 0; r < rows && ok; r++)
		for (int64_t t = 0; t < ntok && ok; t++) {
			double sum = 0, mag = 0;
			for (int64_t j = 0; j < kpad; j++) {
				uint8_t b = w[(size_t)r * ws + (size_t)(j / 128 * 64 + j % 64)];
				int q = (j % 128 < 64 ? b & 15 : b >> 4) - 8;
				double sa = scale[r * ng + j / 128] * a[(size_t)t * as + (size_t)j];
				sum += q * sa;
				mag += (fabs((double)q) + 8) * fabs(sa);
			}
			double bound = (double)(2 * ng + 18) * FLT_EPSILON * mag;
			float vn = o_neon[r * ntok + t], vr = o_ref[r * ntok + t];
			if (!(fabs(vn - sum) <= bound && fabs(vr - sum) <= bound &&
			      fabs(vn - vr) <= 2 * bound)) {
				snprintf(detail, sizeof detail,
					 "out[%lld][%lld] neon %.9g ref %.9g double %.9g bound %.3g",
					 (long long)r, (long long)t, vn, vr, sum, bound);
				ok = 0;
			}
		}
	report(ok, what, detail);
	free(w);
	free(s);
	free(a);
	free(bsum);
	free(o_ref);
	free(o_neon);
	free(scale);
}

static void i4_cases(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng)
{
	static const int64_t ks[] = { 1, 7, 127, 128, 129, 255, 300, 1152, 2560, 4304 };
	for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
		for (int f16 = 0; f16 < 2; f16++) {
			int64_t rows = 2 * tu_int(rng, 0, 5) + 1;
			i4_case(ref, neon, rng, ks[ki], rows, 1, f16);
			i4_case(ref, neon, rng, ks[ki], rows, tu_int(rng, 2, 9), f16);
		}
	for (int64_t nt = 1; nt <= 9; nt++)
		i4_case(ref, neon, rng, 1000, 3, nt, (int)(nt & 1));
}

/* ---- attention ---------------------------------------------------------- */

/*
 * One attention head, NEON against a double reference (and the scalar
 * reference against it too): each score errs by at most
 * delta = (hd + 2) U scale sum|q k|, a probability by 2 delta relative,
 * the weighted sum adds (nk + 4) U; the check allows twice the sum, times
 * sum_j p_j |v_j| (as tests/test_attention.c). Keys and values are kvs
 * apart with junk between heads; out lies past a NaN guard.
 */
static void attn_case(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng, int64_t hd,
		      int64_t nk, bool f16)
{
	const double U = FLT_EPSILON / 2;
	const int64_t kvs = hd + tu_int(rng, 0, 5);
	float *q = xcalloc((size_t)hd, sizeof(float));
	float *k = xcalloc((size_t)(nk * kvs), sizeof(float));
	float *v = xcalloc((size_t)(nk * kvs), sizeof(float));
	float *s = xcalloc((size_t)nk, sizeof(float));
	float *out = xcalloc((size_t)hd + 1, sizeof(float));
	double *p = xcalloc((size_t)nk, sizeof(double));
	for (int64_t i = 0; i < hd; i++)
		q[i] = tu_normal(rng);
	uint16_t *kh = xcalloc((size_t)(nk * kvs), sizeof(uint16_t));
	uint16_t *vh = xcalloc((size_t)(nk * kvs), sizeof(uint16_t));
	for (int64_t i = 0; i < nk * kvs; i++) {
		k[i] = tu_normal(rng);
		v[i] = tu_normal(rng);
		/* An f16 cache: the reference takes the rounded values. */
		kh[i] = tern_f32_to_f16(k[i]);
		vh[i] = tern_f32_to_f16(v[i]);
		if (f16) {
			k[i] = tern_f16_to_f32(kh[i]);
			v[i] = tern_f16_to_f32(vh[i]);
		}
	}
	const float scale = 1.0f / sqrtf((float)hd);
	double mx = -INFINITY, sum = 0, dmax = 0;
	for (int64_t j = 0; j < nk; j++) {
		double d = 0, a = 0;
		for (int64_t i = 0; i < hd; i++) {
			d += (double)q[i] * k[j * kvs + i];
			a += fabs((double)q[i] * k[j * kvs + i]);
		}
		p[j] = d * scale;
		dmax = fmax(dmax, (double)(hd + 2) * U * scale * a);
		mx = fmax(mx, p[j]);
	}
	for (int64_t j = 0; j < nk; j++)
		sum += p[j] = exp(p[j] - mx);
	char what[96], detail[200] = "";
	int ok = 1;
	for (int pass = 0; pass < 2 && ok; pass++) {
		const tern_kernels *kt = pass ? neon : ref;
		out[hd] = NAN;
		if (f16)
			kt->attn(q, 1, kh, vh, true, kvs, nk, hd, scale, s, out);
		else
			kt->attn(q, 1, k, v, false, kvs, nk, hd, scale, s, out);
		for (int64_t e = 0; e < hd && ok; e++) {
			double want = 0, mag = 0;
			for (int64_t j = 0; j < nk; j++) {
				want += p[j] / sum * v[j * kvs + e];
				mag += p[j] / sum * fabs((double)v[j * kvs + e]);
			}
			const double tol = 2 * (2 * dmax + (double)(nk + 4) * U) * mag + 1e-30;
			if (!(fabs(out[e] - want) <= tol)) {
				snprintf(detail, sizeof detail,
					 "%s out[%lld] %.9g want %.9g tol %.3g", pass ? "neon" : "scalar",
					 (long long)e, out[e], want, tol);
				ok = 0;
			}
		}
		if (ok && !isnan(out[hd])) {
			snprintf(detail, sizeof detail, "%s wrote past out",
				 pass ? "neon" : "scalar");
			ok = 0;
		}
	}
	snprintf(what, sizeof what, "attn hd=%lld nk=%lld%s", (long long)hd, (long long)nk,
		 f16 ? " f16" : "");
	report(ok, what, detail);
	free(q);
	free(k);
	free(v);
	free(kh);
	free(vh);
	free(s);
	free(out);
	free(p);
}

static void attn_cases(const tern_kernels *ref, const tern_kernels *neon, tu_rng *rng)
{
	static const int64_t hds[] = { 1, 3, 4, 5, 31, 32, 33, 64, 100, 128, 130 };
	static const int64_t nks[] = { 1, 7, 8, 9, 17, 40 };
	for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
		for (size_t n = 0; n < sizeof nks / sizeof nks[0]; n++)
			attn_case(ref, neon, rng, hds[h], nks[n], (h + n) % 3 == 0);
}

int main(void)
{
	const tern_kernels *ref = tern_kernels_scalar();
	const tern_kernels *neon = tern_kernels_neon();
	if (!ref || !neon || neon->path != TERN_KERNEL_NEON) {
		printf("FAIL kernel tables: scalar %p neon %p\n", (const void *)ref,
		       (const void *)neon);
		printf("0 passed, 1 failed\n");
		return 1;
	}
	tu_rng rng = tu_rng_new(20240611);
	tern_cases(ref, neon, &rng);
	i8_cases(ref, neon, &rng);
	f_cases(ref, neon, &rng);
	i4_cases(ref, neon, &rng);
	attn_cases(ref, neon, &rng);
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
