/*
 * ops.c: the float32 element-wise and per-row operations every model family
 * uses between linear layers: norms, softmax, activations, RoPE, patch
 * embedding, DiT modulation and timestep embedding, vector helpers. Plain C
 * written so the compiler can vectorize the inner loops; nothing allocates.
 */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "core/vecf.h"
#include "tern/ops.h"

/* Loops run in blocks of LANES with a scalar tail, and reductions keep
 * LANES independent accumulators: gcc -O2 (its "very cheap" vectorizer
 * model) only vectorizes loops that need no epilogue or alias check, and
 * no compiler may reorder a float reduction without -ffast-math. The
 * pragma makes gcc unroll the block before vectorizing; clang honours it
 * too. The hot loops of a language model's decode step (norms, the FFN
 * activation, residual adds, attention's dot) are written with vecf.h's
 * vectors instead, lane for lane the same arithmetic: each block loads
 * whole vectors before it stores, so y == x (in place) stays valid. */
#define LANES 16
_Static_assert(LANES == 16, "the unroll pragmas and the dot fold assume 16 lanes");
_Static_assert(LANES == VF_LANES, "the vf4 loops keep the LANES accumulators");

static const float SQRT1_2F = 0.70710678118654752440f;
static const float SQRT_2_OVER_PI_F = 0.79788456080286535588f;

/* sum of x[i]^2 in double: llama.cpp keeps this sum in double too. */
static double sum_sq(const float *x, int64_t n)
{
	typedef double vd2 __attribute__((vector_size(16)));
	typedef float vf2 __attribute__((vector_size(8)));
	vd2 va[LANES / 2] = { 0 };
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 8
		for (int j = 0; j < LANES / 2; j++) {
			vf2 v;
			memcpy(&v, x + i + 2 * j, sizeof v);
			vd2 d = __builtin_convertvector(v, vd2);
			va[j] += d * d;
		}
	double acc[LANES];
	memcpy(acc, va, sizeof acc);
	double s = 0;
	for (; i < n; i++)
		s += (double)x[i] * (double)x[i];
	for (int j = 0; j < LANES; j++)
		s += acc[j];
	return s;
}

static double sum_d(const float *x, int64_t n)
{
	double acc[LANES] = { 0 };
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 16
		for (int j = 0; j < LANES; j++)
			acc[j] += (double)x[i + j];
	double s = 0;
	for (; i < n; i++)
		s += (double)x[i];
	for (int j = 0; j < LANES; j++)
		s += acc[j];
	return s;
}

/* sum of (x[i] - m)^2 in double: the two-pass variance, which does not
 * cancel catastrophically when the mean is large against the spread. */
static double sum_sq_dev(const float *x, int64_t n, double m)
{
	double acc[LANES] = { 0 };
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 16
		for (int j = 0; j < LANES; j++) {
			double d = (double)x[i + j] - m;
			acc[j] += d * d;
		}
	double s = 0;
	for (; i < n; i++) {
		double d = (double)x[i] - m;
		s += d * d;
	}
	for (int j = 0; j < LANES; j++)
		s += acc[j];
	return s;
}

void tern_rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y)
{
	if (n <= 0)
		return;
	/* Same rounding steps as llama.cpp: float mean, then 1/sqrtf. */
	const float mean = (float)(sum_sq(x, n) / (double)n);
	const float r = 1.0f / sqrtf(mean + eps);
	int64_t i = 0;
	if (w) {
		const vf4 vr = VF_SPLAT(r);
		for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 4
			for (int p = 0; p < VF_PARTS; p++) {
				vf4 v, vw;
				VF_LOAD(v, x + i + 4 * p);
				VF_LOAD(vw, w + i + 4 * p);
				v = v * vr * vw;
				VF_STORE(y + i + 4 * p, v);
			}
		for (; i < n; i++)
			y[i] = x[i] * r * w[i];
	} else {
		if (y != x)
			memmove(y, x, (size_t)n * sizeof(float));
		tern_vec_scale(y, r, n);
	}
}

void tern_layernorm(const float *x, const float *w, const float *b, int64_t n, float eps, float *y)
{
	if (n <= 0)
		return;
	const double mean = sum_d(x, n) / (double)n;
	const float var = (float)(sum_sq_dev(x, n, mean) / (double)n);
	const float r = 1.0f / sqrtf(var + eps);
	for (int64_t i = 0; i < n; i++) {
		/* Deviation in double, rounded once: a float mean would lose the
		 * low bits of rows with a large offset (ulp(1e4) ~ 1e-3). */
		float v = (float)((double)x[i] - mean) * r;
		if (w)
			v *= w[i];
		if (b)
			v += b[i];
		y[i] = v;
	}
}

static float max_f(const float *x, int64_t n)
{
	float acc[LANES];
	int64_t i = 0;
	for (int j = 0; j < LANES; j++)
		acc[j] = -INFINITY;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 16
		for (int j = 0; j < LANES; j++)
			acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
	float m = -INFINITY;
	for (; i < n; i++)
		m = x[i] > m ? x[i] : m;
	for (int j = 0; j < LANES; j++)
		m = acc[j] > m ? acc[j] : m;
	return m;
}

void tern_softmax(float *x, int64_t n)
{
	if (n <= 0)
		return;
	const float m = max_f(x, n);
	if (m == -INFINITY) {
		const float u = 1.0f / (float)n;
		for (int64_t i = 0; i < n; i++)
			x[i] = u;
		return;
	}
	double sum = 0;
	for (int64_t i = 0; i < n; i++) {
		x[i] = expf(x[i] - m);
		sum += (double)x[i];
	}
	/* sum >= 1 here: the max element contributes exp(0). */
	const float inv = (float)(1.0 / sum);
	for (int64_t i = 0; i < n; i++)
		x[i] *= inv;
}

void tern_silu(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = x[i] / (1.0f + expf(-x[i]));
}

void tern_relu2(float *x, int64_t n)
{
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 4
		for (int p = 0; p < VF_PARTS; p++) {
			vf4 v;
			VF_LOAD(v, x + i + 4 * p);
			v = VF_RELU(v);
			v = v * v;
			VF_STORE(x + i + 4 * p, v);
		}
	for (; i < n; i++) {
		const float v = x[i] > 0.0f ? x[i] : 0.0f;
		x[i] = v * v;
	}
}

/* 1 + erf(z) = erfc(-z): erfc keeps full relative accuracy in the negative
 * tail, where 1 + erff(z) would cancel to a few significant bits. */
void tern_gelu_erf(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = 0.5f * x[i] * erfcf(-x[i] * SQRT1_2F);
}

/* 0.5 x (1 + tanh u) = x / (1 + exp(-2u)): the same function without the
 * cancellation of 1 + tanh u for negative u. */
void tern_gelu_tanh(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++) {
		const float v = x[i];
		const float u = SQRT_2_OVER_PI_F * (v + 0.044715f * v * v * v);
		x[i] = v / (1.0f + expf(-2.0f * u));
	}
}

/* Pairs handled per batch of cos/sin values: enough to cover any real head
 * size in one batch while staying on the stack. */
#define ROPE_BATCH 128

int tern_rope(float *x, int64_t n_heads, int64_t head_dim, int64_t rot_dim, int64_t pos,
	      float base, tern_rope_mode mode)
{
	if (n_heads < 0 || head_dim <= 0 || rot_dim <= 0 || rot_dim > head_dim || rot_dim % 2 ||
	    pos < 0 || !(base > 0.0f) || !isfinite(base))
		return tern_error(NULL, TERN_E_INVALID,
				  "rope: bad shape (n_heads %lld, head_dim %lld, rot_dim %lld, "
				  "pos %lld, base %g)",
				  (long long)n_heads, (long long)head_dim, (long long)rot_dim,
				  (long long)pos, (double)base);
	if (mode != TERN_ROPE_ADJACENT && mode != TERN_ROPE_NEOX)
		return tern_error(NULL, TERN_E_INVALID, "rope: unknown mode %d", (int)mode);
	int64_t total;
	if (__builtin_mul_overflow(n_heads, head_dim, &total))
		return tern_error(NULL, TERN_E_OVERFLOW, "rope: n_heads * head_dim overflows");
	if (n_heads == 0)
		return TERN_OK;
	if (!x)
		return tern_error(NULL, TERN_E_INVALID, "rope: NULL input");

	const int64_t half = rot_dim / 2;
	/* llama.cpp's angle recurrence, float for float: theta_0 = pos and
	 * theta_{i+1} = theta_i * base^(-2/rot_dim). */
	const float theta_scale = powf(base, -2.0f / (float)rot_dim);
	float theta = (float)pos;
	float cs[ROPE_BATCH], sn[ROPE_BATCH];

	for (int64_t i0 = 0; i0 < half; i0 += ROPE_BATCH) {
		const int64_t m = TERN_MIN(ROPE_BATCH, half - i0);
		for (int64_t j = 0; j < m; j++) {
			cs[j] = cosf(theta);
			sn[j] = sinf(theta);
			theta *= theta_scale;
		}
		for (int64_t h = 0; h < n_heads; h++) {
			float *xh = x + h * head_dim;
			if (mode == TERN_ROPE_ADJACENT) {
				float *p = xh + 2 * i0;
				for (int64_t j = 0; j < m; j++) {
					const float a = p[2 * j], b = p[2 * j + 1];
					p[2 * j] = a * cs[j] - b * sn[j];
					p[2 * j + 1] = a * sn[j] + b * cs[j];
				}
			} else {
				float *p0 = xh + i0, *p1 = xh + i0 + half;
				for (int64_t j = 0; j < m; j++) {
					const float a = p0[j], b = p1[j];
					p0[j] = a * cs[j] - b * sn[j];
					p1[j] = a * sn[j] + b * cs[j];
				}
			}
		}
	}
	return TERN_OK;
}

/* Shared checks of the patch functions; sets the grid and patch length. */
static int patch_check(const char *who, const float *img, int64_t C, int64_t H, int64_t W,
		       int64_t patch, int64_t *gh, int64_t *gw, int64_t *klen)
{
	if (!img)
		return tern_error(NULL, TERN_E_INVALID, "%s: NULL image", who);
	if (C <= 0 || H <= 0 || W <= 0 || patch <= 0)
		return tern_error(NULL, TERN_E_INVALID,
				  "%s: sizes must be positive (C %lld, H %lld, W %lld, patch %lld)",
				  who, (long long)C, (long long)H, (long long)W, (long long)patch);
	if (H % patch || W % patch)
		return tern_error(NULL, TERN_E_INVALID,
				  "%s: image %lldx%lld is not a multiple of patch %lld", who,
				  (long long)H, (long long)W, (long long)patch);
	int64_t pp, k, plane, all, n;
	if (__builtin_mul_overflow(patch, patch, &pp) || __builtin_mul_overflow(C, pp, &k) ||
	    __builtin_mul_overflow(H, W, &plane) || __builtin_mul_overflow(C, plane, &all) ||
	    __builtin_mul_overflow((H / patch) * (W / patch), k, &n))
		return tern_error(NULL, TERN_E_OVERFLOW, "%s: image size overflows", who);
	*gh = H / patch;
	*gw = W / patch;
	*klen = k;
	return TERN_OK;
}

/* im2col of patch row py: cols [gw][C*p*p], (c, ky, kx) order. */
static void im2col_row(const float *img, int64_t C, int64_t H, int64_t W, int64_t p, int64_t py,
		       int64_t gw, float *cols)
{
	const int64_t klen = C * p * p;
	for (int64_t px = 0; px < gw; px++) {
		float *dst = cols + px * klen;
		for (int64_t c = 0; c < C; c++)
			for (int64_t ky = 0; ky < p; ky++) {
				const float *src = img + (c * H + py * p + ky) * W + px * p;
				memcpy(dst + (c * p + ky) * p, src, (size_t)p * sizeof(float));
			}
	}
}

int tern_im2col_patches(const float *img, int64_t C, int64_t H, int64_t W, int64_t patch,
			float *patches)
{
	int64_t gh, gw, klen;
	int rc = patch_check("im2col", img, C, H, W, patch, &gh, &gw, &klen);
	if (rc)
		return rc;
	if (!patches)
		return tern_error(NULL, TERN_E_INVALID, "im2col: NULL output");
	for (int64_t py = 0; py < gh; py++)
		im2col_row(img, C, H, W, patch, py, gw, patches + py * gw * klen);
	return TERN_OK;
}

int tern_patch_embed(const float *img, int64_t C, int64_t H, int64_t W, int64_t patch,
		     const float *w, const float *b, int64_t D, float *out, float *cols)
{
	int64_t gh, gw, klen, nout, nw;
	int rc = patch_check("patch_embed", img, C, H, W, patch, &gh, &gw, &klen);
	if (rc)
		return rc;
	if (!w || !out || !cols)
		return tern_error(NULL, TERN_E_INVALID, "patch_embed: NULL buffer");
	if (D <= 0)
		return tern_error(NULL, TERN_E_INVALID, "patch_embed: D must be positive (%lld)",
				  (long long)D);
	if (__builtin_mul_overflow(gh * gw, D, &nout) || __builtin_mul_overflow(D, klen, &nw))
		return tern_error(NULL, TERN_E_OVERFLOW, "patch_embed: output size overflows");
	for (int64_t py = 0; py < gh; py++) {
		im2col_row(img, C, H, W, patch, py, gw, cols);
		float *orow = out + py * gw * D;
		/* Output feature outermost: one weight row serves the whole row
		 * of patches while it sits in L1. */
		for (int64_t d = 0; d < D; d++) {
			const float *wd = w + d * klen;
			const float bd = b ? b[d] : 0.0f;
			for (int64_t px = 0; px < gw; px++)
				orow[px * D + d] = tern_vec_dot(wd, cols + px * klen, klen) + bd;
		}
	}
	return TERN_OK;
}

void tern_modulate(const float *x, const float *shift, const float *scale, int64_t n, float *y)
{
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES) {
		float t[LANES];
#pragma GCC unroll 16
		for (int j = 0; j < LANES; j++)
			t[j] = x[i + j] * (1.0f + scale[i + j]) + shift[i + j];
		memcpy(y + i, t, sizeof t);
	}
	for (; i < n; i++)
		y[i] = x[i] * (1.0f + scale[i]) + shift[i];
}

void tern_gate_add(float *x, const float *gate, const float *y, int64_t n)
{
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES) {
		float t[LANES];
#pragma GCC unroll 16
		for (int j = 0; j < LANES; j++)
			t[j] = x[i + j] + gate[i + j] * y[i + j];
		memcpy(x + i, t, sizeof t);
	}
	for (; i < n; i++)
		x[i] += gate[i] * y[i];
}

/* Float32 step for step like the PyTorch reference (DiT's
 * TimestepEmbedder), so a trained model sees the features it was trained
 * on. */
void tern_timestep_embedding(float t, int64_t dim, float max_period, float *out)
{
	if (dim <= 0)
		return;
	const int64_t half = dim / 2;
	const float neg_log = (float)-log((double)max_period);
	for (int64_t i = 0; i < half; i++) {
		const float f = expf(neg_log * (float)i / (float)half);
		const float a = t * f;
		out[i] = cosf(a);
		out[half + i] = sinf(a);
	}
	if (dim % 2)
		out[dim - 1] = 0.0f;
}

void tern_vec_add(float *y, const float *x, int64_t n)
{
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 4
		for (int p = 0; p < VF_PARTS; p++) {
			vf4 a, b;
			VF_LOAD(a, y + i + 4 * p);
			VF_LOAD(b, x + i + 4 * p);
			a += b;
			VF_STORE(y + i + 4 * p, a);
		}
	for (; i < n; i++)
		y[i] += x[i];
}

void tern_vec_mul(float *y, const float *x, int64_t n)
{
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 4
		for (int p = 0; p < VF_PARTS; p++) {
			vf4 a, b;
			VF_LOAD(a, y + i + 4 * p);
			VF_LOAD(b, x + i + 4 * p);
			a *= b;
			VF_STORE(y + i + 4 * p, a);
		}
	for (; i < n; i++)
		y[i] *= x[i];
}

void tern_vec_scale(float *y, float s, int64_t n)
{
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 16
		for (int j = 0; j < LANES; j++)
			y[i + j] *= s;
	for (; i < n; i++)
		y[i] *= s;
}

float tern_vec_dot(const float *a, const float *b, int64_t n)
{
	vf4 va[VF_PARTS] = { 0 };
	int64_t i = 0;
	for (; i + LANES <= n; i += LANES)
#pragma GCC unroll 4
		for (int p = 0; p < VF_PARTS; p++) {
			vf4 u, v;
			VF_LOAD(u, a + i + 4 * p);
			VF_LOAD(v, b + i + 4 * p);
			va[p] += u * v;
		}
	float tail = 0.0f;
	for (; i < n; i++)
		tail += a[i] * b[i];
	/* Pairwise fold of lane j = va[j / 4][j % 4], written out so it stays
	 * in registers. */
	float acc[LANES];
	memcpy(acc, va, sizeof acc);
#pragma GCC unroll 8
	for (int j = 0; j < 8; j++)
		acc[j] += acc[j + 8];
#pragma GCC unroll 4
	for (int j = 0; j < 4; j++)
		acc[j] += acc[j + 4];
	return ((acc[0] + acc[2]) + (acc[1] + acc[3])) + tail;
}

/* ---- top-k ---------------------------------------------------------------- */

/* Does id a rank below id b: a smaller value, or the same and a larger id? */
static bool ranks_below(const float *v, int32_t a, int32_t b)
{
	return v[a] < v[b] || (v[a] == v[b] && a > b);
}

/* Restores h[0..m), a heap with the lowest-ranked id on top, below i. */
static void top_k_down(const float *v, int32_t *h, int64_t m, int64_t i)
{
	for (;;) {
		int64_t c = 2 * i + 1;
		if (c >= m)
			return;
		if (c + 1 < m && ranks_below(v, h[c + 1], h[c]))
			c++;
		if (!ranks_below(v, h[c], h[i]))
			return;
		int32_t t = h[c];
		h[c] = h[i];
		h[i] = t;
		i = c;
	}
}

int tern_top_k(const float *v, int64_t n, int64_t k, int32_t *idx)
{
	if (!v || !idx || k < 1 || k > n || n > INT32_MAX)
		return TERN_E_INVALID;
	for (int64_t i = 0; i < k; i++)
		idx[i] = (int32_t)i;
	for (int64_t i = k / 2; i-- > 0;)
		top_k_down(v, idx, k, i);
	/* Later ids rank below equal values already held, so only a strictly
	 * larger value gets in. */
	int64_t i = k;
	while (i < n) {
		int64_t end = n;
		if (i + LANES <= n) {
			const vf4 t = VF_SPLAT(v[idx[0]]);
			vi4 hit = { 0, 0, 0, 0 };
#pragma GCC unroll 4
			for (int p = 0; p < VF_PARTS; p++) {
				vf4 x;
				VF_LOAD(x, v + i + 4 * p);
				hit |= x > t;
			}
			if (!(hit[0] | hit[1] | hit[2] | hit[3])) {
				i += LANES;
				continue;
			}
			end = i + LANES;
		}
		for (; i < end; i++) {
			if (v[i] > v[idx[0]]) {
				idx[0] = (int32_t)i;
				top_k_down(v, idx, k, 0);
			}
		}
	}
	/* Heapsort: the lowest-ranked left goes to the end each time. */
	for (int64_t m = k; m > 1; m--) {
		int32_t t = idx[0];
		idx[0] = idx[m - 1];
		idx[m - 1] = t;
		top_k_down(v, idx, m - 1, 0);
	}
	return TERN_OK;
}
