/*
 * test_ops.c: the float32 ops of ops.h against straightforward references
 * written here in double precision (norms, softmax, activations, RoPE as an
 * explicit rotation, patch embedding as a direct convolution, timestep
 * embedding from its formula, vector helpers, top-k against a full sort),
 * with edge cases: n = 1, odd sizes, huge magnitudes, zero rows, fully
 * masked rows, bad arguments.
 *
 * Tolerances are in units of U = 2^-24, the unit roundoff of float: each
 * says how many float roundings (or which input rounding) the op performs
 * between the inputs and the output.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "tern/ops.h"
#include "testutil.h"

#define U (1.0 / 16777216.0)
#define NMAX 4096

static float xa[NMAX], xb[NMAX], xc[NMAX], xd[NMAX];
static double rd[NMAX];

static void fill(tu_rng *r, float *x, int64_t n, float amp, float offset)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = offset + amp * tu_normal(r);
}

static void assert_close(const char *what, int64_t i, double got, double want, double tol)
{
	cr_assert(fabs(got - want) <= tol, "%s[%lld]: got %.9g, want %.9g (|diff| %.3g > tol %.3g)",
		  what, (long long)i, got, want, fabs(got - want), tol);
}

static const int64_t SIZES[] = { 1, 2, 3, 7, 15, 16, 17, 31, 64, 100, 1000, 2560, 4093 };
#define NSIZES ((int)(sizeof SIZES / sizeof SIZES[0]))

/* ---- RMSNorm ------------------------------------------------------- */

static void ref_rmsnorm(const float *x, const float *w, int64_t n, double eps, double *y)
{
	double ss = 0;
	for (int64_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	double r = 1.0 / sqrt(ss / n + eps);
	for (int64_t i = 0; i < n; i++)
		y[i] = x[i] * r * (w ? w[i] : 1.0);
}

/* Output = x * r * w: the mean, the eps sum, sqrt, the reciprocal and two
 * products each round once: 8 U relative is a safe bound. */
Test(ops, rmsnorm_matches_double_reference_with_and_without_weight)
{
	tu_rng r = tu_rng_new(1);
	for (int s = 0; s < NSIZES; s++) {
		int64_t n = SIZES[s];
		fill(&r, xa, n, 3.0f, 0.5f);
		fill(&r, xb, n, 1.0f, 1.0f);
		for (int wflag = 0; wflag < 2; wflag++) {
			const float *w = wflag ? xb : NULL;
			ref_rmsnorm(xa, w, n, 1e-6, rd);
			tern_rmsnorm(xa, w, n, 1e-6f, xc);
			for (int64_t i = 0; i < n; i++)
				assert_close("rmsnorm", i, xc[i], rd[i], 8 * U * fabs(rd[i]));
		}
	}
}

Test(ops, rmsnorm_in_place_equals_out_of_place)
{
	tu_rng r = tu_rng_new(2);
	fill(&r, xa, 333, 2.0f, 0.0f);
	fill(&r, xb, 333, 1.0f, 0.0f);
	tern_rmsnorm(xa, xb, 333, 1e-5f, xc);
	tern_rmsnorm(xa, xb, 333, 1e-5f, xa);
	cr_assert(memcmp(xa, xc, 333 * sizeof(float)) == 0);
}

Test(ops, rmsnorm_all_zero_row_stays_finite_and_zero)
{
	memset(xa, 0, 100 * sizeof(float));
	tern_rmsnorm(xa, NULL, 100, 1e-6f, xc);
	for (int i = 0; i < 100; i++)
		cr_assert(xc[i] == 0.0f && isfinite(xc[i]));
}

/* 1e19^2 * 64 overflows a float accumulator (max ~3.4e38); the mean itself
 * (1e38) still fits, so a double sum must give finite, exact-to-8U output. */
Test(ops, rmsnorm_huge_values_do_not_overflow)
{
	for (int i = 0; i < 64; i++)
		xa[i] = (i % 2 ? -1e19f : 1e19f) * (1.0f + (float)i / 64.0f);
	ref_rmsnorm(xa, NULL, 64, 0.0, rd);
	tern_rmsnorm(xa, NULL, 64, 0.0f, xc);
	for (int i = 0; i < 64; i++) {
		cr_assert(isfinite(xc[i]));
		assert_close("rmsnorm huge", i, xc[i], rd[i], 8 * U * fabs(rd[i]));
	}
}

Test(ops, rmsnorm_of_one_element_is_its_sign)
{
	xa[0] = -42.0f;
	tern_rmsnorm(xa, NULL, 1, 0.0f, xc);
	cr_assert_float_eq(xc[0], -1.0f, 1e-7);
}

/* ---- LayerNorm ----------------------------------------------------- */

static void ref_layernorm(const float *x, const float *w, const float *b, int64_t n, double eps,
			  double *y, double *mag)
{
	double m = 0, v = 0;
	for (int64_t i = 0; i < n; i++)
		m += x[i];
	m /= n;
	for (int64_t i = 0; i < n; i++)
		v += (x[i] - m) * (x[i] - m);
	v /= n; /* biased, as PyTorch's LayerNorm */
	double r = 1.0 / sqrt(v + eps);
	for (int64_t i = 0; i < n; i++) {
		double a = (x[i] - m) * r * (w ? w[i] : 1.0);
		y[i] = a + (b ? b[i] : 0.0);
		mag[i] = fabs(a) + (b ? fabs(b[i]) : 0.0);
	}
}

static double mag[NMAX];

/* The normalized value takes about 8 roundings like RMSNorm; the bias add
 * one more relative to |a| + |b|, which is what `mag` holds. */
Test(ops, layernorm_matches_double_reference_in_all_affine_variants)
{
	tu_rng r = tu_rng_new(3);
	for (int s = 0; s < NSIZES; s++) {
		int64_t n = SIZES[s];
		fill(&r, xa, n, 2.0f, -0.7f);
		fill(&r, xb, n, 1.0f, 1.0f);
		fill(&r, xd, n, 0.5f, 0.0f);
		for (int v = 0; v < 4; v++) {
			const float *w = (v & 1) ? xb : NULL, *b = (v & 2) ? xd : NULL;
			ref_layernorm(xa, w, b, n, 1e-5, rd, mag);
			tern_layernorm(xa, w, b, n, 1e-5f, xc);
			for (int64_t i = 0; i < n; i++)
				assert_close("layernorm", i, xc[i], rd[i], 10 * U * mag[i]);
		}
	}
}

Test(ops, layernorm_uses_biased_variance)
{
	const float x[2] = { 1.0f, 3.0f }; /* mean 2, biased var 1, unbiased 2 */
	float y[2];
	tern_layernorm(x, NULL, NULL, 2, 0.0f, y);
	cr_assert_float_eq(y[0], -1.0f, 1e-7);
	cr_assert_float_eq(y[1], 1.0f, 1e-7);
}

/* Values near 1e4 with unit spread: float ulp(1e4) ~ 1e-3, so an op that
 * rounded the mean or a one-pass variance to float would be off by ~1e-3
 * relative; the bound here is still 10 U. */
Test(ops, layernorm_is_accurate_with_a_large_offset)
{
	tu_rng r = tu_rng_new(4);
	fill(&r, xa, 768, 1.0f, 1e4f);
	ref_layernorm(xa, NULL, NULL, 768, 1e-6, rd, mag);
	tern_layernorm(xa, NULL, NULL, 768, 1e-6f, xa);
	for (int i = 0; i < 768; i++)
		assert_close("layernorm offset", i, xa[i], rd[i], 10 * U * mag[i] + 1e-7);
}

Test(ops, layernorm_constant_row_gives_bias)
{
	for (int i = 0; i < 9; i++) {
		xa[i] = 5.0f;
		xd[i] = (float)i;
	}
	tern_layernorm(xa, NULL, xd, 9, 1e-5f, xc);
	for (int i = 0; i < 9; i++)
		cr_assert(xc[i] == (float)i);
}

/* ---- softmax ------------------------------------------------------- */

static void ref_softmax(const float *x, int64_t n, double *y)
{
	double m = -INFINITY, s = 0;
	for (int64_t i = 0; i < n; i++)
		m = fmax(m, x[i]);
	for (int64_t i = 0; i < n; i++)
		s += y[i] = exp((double)x[i] - m);
	for (int64_t i = 0; i < n; i++)
		y[i] /= s;
}

/* x - max rounds once in float (abs error |x - max| U, which exp turns
 * into that much relative error), expf and the final scale a few U. The
 * 1e-44 absolute term covers results in float's subnormal range. */
static void check_softmax(const float *x, const float *got, int64_t n)
{
	ref_softmax(x, n, rd);
	float m = -INFINITY;
	for (int64_t i = 0; i < n; i++)
		m = fmaxf(m, x[i]);
	double sum = 0;
	for (int64_t i = 0; i < n; i++) {
		double tol = (6 * U + fabs((double)x[i] - m) * U) * rd[i] + 1e-44;
		cr_assert(isfinite(got[i]));
		assert_close("softmax", i, got[i], rd[i], tol);
		sum += got[i];
	}
	cr_assert(fabs(sum - 1.0) <= (n + 8) * U, "sum %.9g", sum);
}

Test(ops, softmax_matches_double_reference)
{
	tu_rng r = tu_rng_new(5);
	for (int s = 0; s < NSIZES; s++) {
		int64_t n = SIZES[s];
		fill(&r, xa, n, 4.0f, 1.0f);
		memcpy(xc, xa, n * sizeof(float));
		tern_softmax(xc, n);
		check_softmax(xa, xc, n);
	}
}

Test(ops, softmax_of_huge_values_has_no_nan)
{
	tu_rng r = tu_rng_new(6);
	for (int i = 0; i < 257; i++)
		xa[i] = 1e4f * tu_float(&r);
	xa[100] = 1e4f;
	xa[200] = -1e4f;
	memcpy(xc, xa, 257 * sizeof(float));
	tern_softmax(xc, 257);
	check_softmax(xa, xc, 257);
	cr_assert(xc[100] > 0.5f);
}

Test(ops, softmax_edge_cases)
{
	float one = 123.0f;
	tern_softmax(&one, 1);
	cr_assert(one == 1.0f);

	float masked[4] = { -INFINITY, 0.0f, -INFINITY, 0.0f };
	tern_softmax(masked, 4);
	cr_assert(masked[0] == 0.0f && masked[2] == 0.0f);
	cr_assert(masked[1] == 0.5f && masked[3] == 0.5f);

	float all[3] = { -INFINITY, -INFINITY, -INFINITY };
	tern_softmax(all, 3);
	for (int i = 0; i < 3; i++)
		cr_assert_float_eq(all[i], 1.0f / 3.0f, 1e-7);
}

/* ---- activations --------------------------------------------------- */

/* A grid through [-10, 10] plus signed zeros and a few far values. */
static int64_t act_inputs(float *x)
{
	int64_t n = 0;
	for (int i = -2000; i <= 2000; i += 3)
		x[n++] = (float)i / 200.0f + 0.001f;
	x[n++] = 0.0f;
	x[n++] = -0.0f;
	x[n++] = 1e-20f;
	x[n++] = -1e-20f;
	return n;
}

Test(ops, relu2_is_exact)
{
	int64_t n = act_inputs(xa);
	xa[n++] = -1e30f;
	xa[n++] = 1e15f;
	memcpy(xc, xa, n * sizeof(float));
	tern_relu2(xc, n);
	for (int64_t i = 0; i < n; i++) {
		double v = xa[i] > 0 ? xa[i] : 0.0;
		cr_assert(xc[i] == (float)(v * v), "relu2(%g) = %g", xa[i], xc[i]);
	}
}

/* expf, the add and the divide: 4 U relative. */
Test(ops, silu_matches_double_formula)
{
	int64_t n = act_inputs(xa);
	xa[n++] = -200.0f; /* expf(200) = inf: the result must be -0, not NaN */
	xa[n++] = 200.0f;
	memcpy(xc, xa, n * sizeof(float));
	tern_silu(xc, n);
	for (int64_t i = 0; i < n; i++) {
		double x = xa[i], want = x / (1.0 + exp(-x));
		assert_close("silu", i, xc[i], want, 4 * U * fabs(want) + 1e-40);
	}
}

/* The argument x/sqrt2 rounds (2 U relative) and erfc amplifies a relative
 * argument error by 2z^2 in its tail (d ln erfc/dz ~ -2z); plus ~4 U for
 * erfcf and the products. */
Test(ops, gelu_erf_matches_double_erf)
{
	int64_t n = act_inputs(xa);
	memcpy(xc, xa, n * sizeof(float));
	tern_gelu_erf(xc, n);
	for (int64_t i = 0; i < n; i++) {
		double x = xa[i], z = x / sqrt(2.0);
		/* erfc(-z) = 1 + erf(z), without the cancellation in the tail */
		double want = x < -3 ? 0.5 * x * erfc(-z) : 0.5 * x * (1.0 + erf(z));
		double tol = (6 + 4 * z * z) * U * fabs(want) + 1e-40;
		assert_close("gelu_erf", i, xc[i], want, tol);
	}
}

/* The inner polynomial u rounds in ~6 steps (constants included); exp(-2u)
 * turns that into |2u| * 6 U relative; then expf, the add and the divide. */
Test(ops, gelu_tanh_matches_its_formula)
{
	int64_t n = act_inputs(xa);
	memcpy(xc, xa, n * sizeof(float));
	tern_gelu_tanh(xc, n);
	for (int64_t i = 0; i < n; i++) {
		double x = xa[i];
		double u = sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
		/* 0.5 x (1 + tanh u) rewritten where 1 + tanh u would cancel */
		double want = u < -2 ? x / (1.0 + exp(-2.0 * u)) : 0.5 * x * (1.0 + tanh(u));
		double tol = (8 + 12 * fabs(u)) * U * fabs(want) + 1e-40;
		assert_close("gelu_tanh", i, xc[i], want, tol);
	}
}

Test(ops, gelu_known_values)
{
	float v[3] = { 1.0f, 0.0f, -1.0f };
	tern_gelu_erf(v, 3);
	cr_assert_float_eq(v[0], 0.8413447460685429f, 1e-6);
	cr_assert(v[1] == 0.0f);
	cr_assert_float_eq(v[2], -0.15865525393145707f, 1e-6);
	float t[1] = { 1.0f };
	tern_gelu_tanh(t, 1);
	cr_assert_float_eq(t[0], 0.8411919906082768f, 1e-6);
}

/* ---- RoPE ---------------------------------------------------------- */

/* Pair i's partner indices for a mode. */
static void rope_pair(tern_rope_mode mode, int64_t rot, int64_t i, int64_t *a, int64_t *b)
{
	if (mode == TERN_ROPE_ADJACENT) {
		*a = 2 * i;
		*b = 2 * i + 1;
	} else {
		*a = i;
		*b = i + rot / 2;
	}
}

/* Reference: build the rot x rot rotation matrix explicitly (double angles
 * pos * base^(-2i/rot)) and multiply. The op computes angles in float the
 * way llama.cpp does, theta_i = pos * s^i by i float multiplies with
 * s = powf(base, -2/rot): each multiply rounds (U) and carries powf's error
 * (2 U), and the rounded exponent -2/rot costs up to ln(base) U over all i,
 * so theta_i is off by (3i + 8) U relative (ln 5e5 < 8), which rotates the
 * pair by that much; plus 4 U for cosf/sinf and the rotation itself. */
static void check_rope(int64_t n_heads, int64_t hd, int64_t rot, int64_t pos, float base,
		       tern_rope_mode mode, tu_rng *r)
{
	static double R[128][128];
	int64_t n = n_heads * hd;
	fill(r, xa, n, 1.0f, 0.0f);
	memcpy(xc, xa, n * sizeof(float));
	cr_assert(tern_rope(xc, n_heads, hd, rot, pos, base, mode) == TERN_OK);

	for (int64_t i = 0; i < rot; i++)
		for (int64_t j = 0; j < rot; j++)
			R[i][j] = 0;
	for (int64_t i = 0; i < rot / 2; i++) {
		double th = (double)pos * pow(base, -2.0 * (double)i / (double)rot);
		int64_t a, b;
		rope_pair(mode, rot, i, &a, &b);
		R[a][a] = cos(th);
		R[a][b] = -sin(th);
		R[b][a] = sin(th);
		R[b][b] = cos(th);
	}
	for (int64_t h = 0; h < n_heads; h++) {
		const float *x = xa + h * hd;
		const float *y = xc + h * hd;
		for (int64_t i = 0; i < rot / 2; i++) {
			int64_t a, b;
			rope_pair(mode, rot, i, &a, &b);
			double th = (double)pos * pow(base, -2.0 * (double)i / (double)rot);
			double norm = hypot(x[a], x[b]);
			double tol = norm * (th * (double)(3 * i + 8) * U + 4 * U);
			for (int e = 0; e < 2; e++) {
				int64_t row = e ? b : a;
				double want = 0;
				for (int64_t j = 0; j < rot; j++)
					want += R[row][j] * x[j];
				assert_close("rope", h * hd + row, y[row], want, tol);
			}
		}
		for (int64_t j = rot; j < hd; j++)
			cr_assert(y[j] == x[j], "dim %lld past rot_dim changed", (long long)j);
	}
}

Test(ops, rope_matches_explicit_rotation_matrix_in_both_pairings)
{
	tu_rng r = tu_rng_new(7);
	const int64_t pos[] = { 0, 1, 7, 123, 4095 };
	for (int m = 0; m < 2; m++)
		for (int p = 0; p < 5; p++) {
			check_rope(3, 64, 64, pos[p], 10000.0f, (tern_rope_mode)m, &r);
			check_rope(2, 128, 128, pos[p], 500000.0f, (tern_rope_mode)m, &r);
			check_rope(1, 2, 2, pos[p], 10000.0f, (tern_rope_mode)m, &r);
		}
}

Test(ops, rope_partial_rotary_dims_leave_the_rest_untouched)
{
	tu_rng r = tu_rng_new(8);
	for (int m = 0; m < 2; m++) {
		check_rope(4, 64, 32, 57, 10000.0f, (tern_rope_mode)m, &r);
		check_rope(3, 7, 2, 300, 10000.0f, (tern_rope_mode)m, &r);
		check_rope(2, 80, 20, 1000, 10000.0f, (tern_rope_mode)m, &r);
	}
}

/* The two modes are one rotation under a permutation of dims: NeoX on x
 * equals adjacent on x interleaved, bit for bit (same angles, same ops). */
Test(ops, rope_neox_is_adjacent_under_interleaving)
{
	tu_rng r = tu_rng_new(9);
	const int64_t hd = 96, rot = 64, nh = 3;
	fill(&r, xa, nh * hd, 1.0f, 0.0f);
	for (int64_t h = 0; h < nh; h++)
		for (int64_t j = 0; j < hd; j++) {
			int64_t src = j;
			if (j < rot)
				src = (j % 2) ? j / 2 + rot / 2 : j / 2;
			xb[h * hd + j] = xa[h * hd + src];
		}
	memcpy(xc, xa, nh * hd * sizeof(float));
	cr_assert(tern_rope(xc, nh, hd, rot, 321, 10000.0f, TERN_ROPE_NEOX) == TERN_OK);
	cr_assert(tern_rope(xb, nh, hd, rot, 321, 10000.0f, TERN_ROPE_ADJACENT) == TERN_OK);
	for (int64_t h = 0; h < nh; h++)
		for (int64_t j = 0; j < hd; j++) {
			int64_t src = j;
			if (j < rot)
				src = (j % 2) ? j / 2 + rot / 2 : j / 2;
			cr_assert(xb[h * hd + j] == xc[h * hd + src]);
		}
}

Test(ops, rope_single_pair_turns_by_pos_radians)
{
	float v[2] = { 1.0f, 0.0f };
	cr_assert(tern_rope(v, 1, 2, 2, 1, 10000.0f, TERN_ROPE_ADJACENT) == TERN_OK);
	cr_assert(v[0] == cosf(1.0f) && v[1] == sinf(1.0f));
}

Test(ops, rope_rejects_bad_arguments)
{
	float v[8] = { 0 };
	cr_assert(tern_rope(v, 1, 8, 3, 0, 1e4f, TERN_ROPE_ADJACENT) == TERN_E_INVALID);
	cr_assert(tern_rope(v, 1, 8, 10, 0, 1e4f, TERN_ROPE_ADJACENT) == TERN_E_INVALID);
	cr_assert(tern_rope(v, 1, 8, 0, 0, 1e4f, TERN_ROPE_ADJACENT) == TERN_E_INVALID);
	cr_assert(tern_rope(v, 1, 8, 8, -1, 1e4f, TERN_ROPE_ADJACENT) == TERN_E_INVALID);
	cr_assert(tern_rope(v, 1, 8, 8, 0, 0.0f, TERN_ROPE_NEOX) == TERN_E_INVALID);
	cr_assert(tern_rope(v, 1, 8, 8, 0, 1e4f, (tern_rope_mode)5) == TERN_E_INVALID);
	cr_assert(tern_rope(NULL, 1, 8, 8, 0, 1e4f, TERN_ROPE_NEOX) == TERN_E_INVALID);
	cr_assert(tern_rope(NULL, 0, 8, 8, 0, 1e4f, TERN_ROPE_NEOX) == TERN_OK);
}

/* ---- patch embedding ----------------------------------------------- */

Test(ops, im2col_gathers_patches_in_c_ky_kx_order)
{
	const int64_t C = 3, H = 6, W = 9, P = 3, gw = W / P, K = C * P * P;
	for (int64_t i = 0; i < C * H * W; i++)
		xa[i] = (float)i;
	cr_assert(tern_im2col_patches(xa, C, H, W, P, xc) == TERN_OK);
	for (int64_t py = 0; py < H / P; py++)
		for (int64_t px = 0; px < gw; px++)
			for (int64_t c = 0; c < C; c++)
				for (int64_t ky = 0; ky < P; ky++)
					for (int64_t kx = 0; kx < P; kx++) {
						float want = xa[(c * H + py * P + ky) * W + px * P + kx];
						float got = xc[(py * gw + px) * K + (c * P + ky) * P + kx];
						cr_assert(got == want);
					}
}

/* Reference: the strided convolution written as a direct loop in double.
 * The op sums K products in float: the standard bound (K + 2) U times the
 * sum of |w x| and |b|. */
static void check_patch_embed(int64_t C, int64_t H, int64_t W, int64_t P, int64_t D, bool bias,
			      tu_rng *r)
{
	const int64_t K = C * P * P, gh = H / P, gw = W / P;
	static float img[4096], w[8192], b[64], out[4096], cols[4096];
	fill(r, img, C * H * W, 1.0f, 0.0f);
	fill(r, w, D * K, 0.2f, 0.0f);
	fill(r, b, D, 1.0f, 0.0f);
	cr_assert(tern_patch_embed(img, C, H, W, P, w, bias ? b : NULL, D, out, cols) == TERN_OK);
	for (int64_t oy = 0; oy < gh; oy++)
		for (int64_t ox = 0; ox < gw; ox++)
			for (int64_t d = 0; d < D; d++) {
				double acc = bias ? b[d] : 0.0, abs = bias ? fabs(b[d]) : 0.0;
				for (int64_t c = 0; c < C; c++)
					for (int64_t ky = 0; ky < P; ky++)
						for (int64_t kx = 0; kx < P; kx++) {
							double t = (double)w[((d * C + c) * P + ky) * P + kx] *
								   img[(c * H + oy * P + ky) * W + ox * P + kx];
							acc += t;
							abs += fabs(t);
						}
				assert_close("patch_embed", (oy * gw + ox) * D + d,
					     out[(oy * gw + ox) * D + d], acc, (K + 2) * U * abs);
			}
}

Test(ops, patch_embed_matches_direct_convolution)
{
	tu_rng r = tu_rng_new(10);
	check_patch_embed(3, 8, 12, 4, 5, true, &r);
	check_patch_embed(3, 8, 12, 4, 5, false, &r);
	check_patch_embed(2, 5, 3, 1, 7, true, &r);   /* 1x1 patches */
	check_patch_embed(3, 16, 16, 16, 9, true, &r); /* one patch */
	check_patch_embed(1, 10, 15, 5, 1, true, &r);  /* D = 1, odd grid */
}

Test(ops, patch_embed_rejects_bad_shapes)
{
	float buf[64] = { 0 };
	cr_assert(tern_patch_embed(buf, 1, 6, 8, 4, buf, NULL, 2, buf, buf) == TERN_E_INVALID);
	cr_assert(tern_patch_embed(buf, 1, 8, 8, 4, buf, NULL, 0, buf, buf) == TERN_E_INVALID);
	cr_assert(tern_patch_embed(buf, 0, 8, 8, 4, buf, NULL, 2, buf, buf) == TERN_E_INVALID);
	cr_assert(tern_patch_embed(buf, 1, 8, 8, 0, buf, NULL, 2, buf, buf) == TERN_E_INVALID);
	cr_assert(tern_patch_embed(buf, 1, 8, 8, 4, NULL, NULL, 2, buf, buf) == TERN_E_INVALID);
	cr_assert(tern_patch_embed(buf, 1, 8, 8, 4, buf, NULL, 2, buf, NULL) == TERN_E_INVALID);
	cr_assert(tern_im2col_patches(buf, 1, 8, 7, 4, buf) == TERN_E_INVALID);
	cr_assert(tern_im2col_patches(NULL, 1, 8, 8, 4, buf) == TERN_E_INVALID);
	cr_assert(tern_im2col_patches(buf, INT64_MAX / 2, 4, 4, 4, buf) == TERN_E_OVERFLOW);
}

/* ---- DiT pieces ---------------------------------------------------- */

/* Three products and sums each round once: 3 U of the term magnitudes. */
Test(ops, modulate_and_gate_add_match_formula)
{
	tu_rng r = tu_rng_new(11);
	const int64_t n = 77;
	fill(&r, xa, n, 2.0f, 0.0f);
	fill(&r, xb, n, 0.5f, 0.0f);
	fill(&r, xd, n, 1.0f, 0.0f);
	tern_modulate(xa, xd, xb, n, xc);
	for (int64_t i = 0; i < n; i++) {
		double t = (double)xa[i] * (1.0 + xb[i]);
		assert_close("modulate", i, xc[i], t + xd[i], 3 * U * (fabs(t) + fabs(xd[i])));
	}
	memcpy(xc, xa, n * sizeof(float));
	tern_modulate(xc, xd, xb, n, xc);
	for (int64_t i = 0; i < n; i++)
		cr_assert(xc[i] == xa[i] * (1.0f + xb[i]) + xd[i]);

	memcpy(xc, xa, n * sizeof(float));
	tern_gate_add(xc, xb, xd, n);
	for (int64_t i = 0; i < n; i++) {
		double t = (double)xb[i] * xd[i];
		assert_close("gate_add", i, xc[i], xa[i] + t, 2 * U * (fabs(t) + fabs(xa[i])));
	}
}

/* The frequencies are computed in float as PyTorch does: the exponent
 * -ln(P) i / half (|.| <= ln P ~ 9.2) takes 3 roundings, so f has up to
 * 9.2 * 3U + 2U (expf) relative error, t f one more U: the angle is off by
 * that much per unit of t f; cosf/sinf add ~2U. */
Test(ops, timestep_embedding_matches_formula_cos_first)
{
	const float ts[] = { 0.0f, 1.0f, 37.5f, 999.0f };
	const int64_t dims[] = { 1, 2, 7, 64, 256 };
	for (int a = 0; a < 4; a++)
		for (int b = 0; b < 5; b++) {
			int64_t dim = dims[b], half = dim / 2;
			for (int64_t i = 0; i < dim; i++)
				xc[i] = NAN;
			tern_timestep_embedding(ts[a], dim, 10000.0f, xc);
			for (int64_t i = 0; i < half; i++) {
				double f = exp(-log(10000.0) * (double)i / (double)half);
				double arg = ts[a] * f;
				double tol = arg * (9.2 * 3 + 3) * U + 4 * U;
				assert_close("temb cos", i, xc[i], cos(arg), tol);
				assert_close("temb sin", half + i, xc[half + i], sin(arg), tol);
			}
			if (dim % 2)
				cr_assert(xc[dim - 1] == 0.0f);
		}
}

Test(ops, timestep_embedding_at_zero_is_ones_then_zeros)
{
	tern_timestep_embedding(0.0f, 10, 10000.0f, xc);
	for (int i = 0; i < 5; i++)
		cr_assert(xc[i] == 1.0f && xc[5 + i] == 0.0f);
}

/* ---- vector helpers ------------------------------------------------ */

/* add, mul and scale round once: double arithmetic rounded to float gives
 * the identical result (53 >= 2*24 + 2 bits), so they compare exactly. */
Test(ops, vec_add_mul_scale_are_correctly_rounded)
{
	tu_rng r = tu_rng_new(12);
	for (int s = 0; s < NSIZES; s++) {
		int64_t n = SIZES[s];
		fill(&r, xa, n, 3.0f, 0.0f);
		fill(&r, xb, n, 3.0f, 0.0f);
		memcpy(xc, xa, n * sizeof(float));
		tern_vec_add(xc, xb, n);
		for (int64_t i = 0; i < n; i++)
			cr_assert(xc[i] == (float)((double)xa[i] + xb[i]));
		memcpy(xc, xa, n * sizeof(float));
		tern_vec_mul(xc, xb, n);
		for (int64_t i = 0; i < n; i++)
			cr_assert(xc[i] == (float)((double)xa[i] * xb[i]));
		memcpy(xc, xa, n * sizeof(float));
		tern_vec_scale(xc, 0.37f, n);
		for (int64_t i = 0; i < n; i++)
			cr_assert(xc[i] == (float)((double)xa[i] * 0.37f));
	}
}

/* Float dot of n terms: the standard bound (n + 1) U sum |a b|. */
Test(ops, vec_dot_matches_double_dot)
{
	tu_rng r = tu_rng_new(13);
	cr_assert(tern_vec_dot(xa, xb, 0) == 0.0f);
	for (int s = 0; s < NSIZES; s++) {
		int64_t n = SIZES[s];
		fill(&r, xa, n, 1.0f, 0.3f);
		fill(&r, xb, n, 1.0f, -0.1f);
		double want = 0, abs = 0;
		for (int64_t i = 0; i < n; i++) {
			want += (double)xa[i] * xb[i];
			abs += fabs((double)xa[i] * xb[i]);
		}
		assert_close("dot", n, tern_vec_dot(xa, xb, n), want, (n + 1) * U * abs);
	}
}

Test(ops, zero_length_calls_touch_nothing)
{
	xc[0] = 7.0f;
	tern_rmsnorm(xa, NULL, 0, 1e-6f, xc);
	tern_layernorm(xa, NULL, NULL, 0, 1e-6f, xc);
	tern_softmax(xc, 0);
	tern_silu(xc, 0);
	tern_timestep_embedding(1.0f, 0, 10000.0f, xc);
	cr_assert(xc[0] == 7.0f);
}

/* ---- top-k ---------------------------------------------------------------- */

typedef struct { float v; int32_t id; } vid;

static int by_rank(const void *a, const void *b)
{
	const vid *x = a, *y = b;

	if (x->v != y->v)
		return x->v > y->v ? -1 : 1;
	return (x->id > y->id) - (x->id < y->id);
}

/* Against a full sort, on sizes around the 16-wide blocks, with ties
 * (values rounded to quarters), infinities, and values rising through
 * the array so that many blocks hold a newcomer. */
Test(ops, top_k_equals_the_head_of_a_full_sort)
{
	static const int64_t ns[] = { 1, 2, 15, 16, 17, 31, 33, 100, 1000, 4099 };
	tu_rng r = tu_rng_new(77);
	for (size_t c = 0; c < sizeof ns / sizeof ns[0]; c++) {
		const int64_t n = ns[c];
		float *v = malloc(sizeof *v * (size_t)n);
		vid *ref = malloc(sizeof *ref * (size_t)n);
		int32_t *idx = malloc(sizeof *idx * (size_t)n);
		for (int kind = 0; kind < 3; kind++) {
			for (int64_t i = 0; i < n; i++) {
				float x = roundf(tu_normal(&r) * 6.0f) / 4.0f;
				if (kind == 1)
					x += (float)i / 8.0f; /* rising: newcomers everywhere */
				if (kind == 2 && tu_int(&r, 0, 9) == 0)
					x = tu_int(&r, 0, 1) ? INFINITY : -INFINITY;
				v[i] = x;
				ref[i] = (vid){ x, (int32_t)i };
			}
			qsort(ref, (size_t)n, sizeof *ref, by_rank);
			const int64_t ks[] = { 1, 2, 3, 16, 17, 40, n / 2, n - 1, n };
			for (size_t q = 0; q < sizeof ks / sizeof ks[0]; q++) {
				const int64_t k = ks[q];
				if (k < 1 || k > n)
					continue;
				memset(idx, 0xff, sizeof *idx * (size_t)n);
				cr_assert_eq(tern_top_k(v, n, k, idx), TERN_OK);
				for (int64_t j = 0; j < k; j++)
					cr_assert_eq(idx[j], ref[j].id,
						     "n %lld kind %d k %lld: place %lld is %d, not %d",
						     (long long)n, kind, (long long)k, (long long)j,
						     (int)idx[j], (int)ref[j].id);
				for (int64_t j = k; j < n; j++)
					cr_assert_eq(idx[j], -1, "wrote past idx[k]");
			}
		}
		free(v);
		free(ref);
		free(idx);
	}
}

Test(ops, top_k_rejects_bad_sizes)
{
	float v[4] = { 1, 2, 3, 4 };
	int32_t idx[4];

	cr_assert_eq(tern_top_k(v, 4, 0, idx), TERN_E_INVALID);
	cr_assert_eq(tern_top_k(v, 4, 5, idx), TERN_E_INVALID);
	cr_assert_eq(tern_top_k(v, 0, 0, idx), TERN_E_INVALID);
	cr_assert_eq(tern_top_k(NULL, 4, 1, idx), TERN_E_INVALID);
	cr_assert_eq(tern_top_k(v, 4, 1, NULL), TERN_E_INVALID);
	cr_assert_eq(tern_top_k(v, (int64_t)INT32_MAX + 1, 1, idx), TERN_E_INVALID);
}
