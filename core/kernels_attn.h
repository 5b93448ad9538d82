/*
 * kernels_attn.h: the attention kernel (tern_attn_fn) of the AVX2 and
 * AVX-512 tables, written once over vector macros that the including file
 * defines: VEC (floats per vector), VT, MASKT, TAILMASK(n), ZERO(),
 * LOAD(p), MLOAD(m, p), STORE(p, x), MSTORE(m, p, x), FMA(a, b, c),
 * SET1(x), HSUM(x), HSUM8(a, scale, out), SOFTMAX(s, n), KVLOAD(f16,
 * base, off), KVMLOAD(f16, m, n, base, off), KINLINE, and ATT_QH (query
 * heads per pass over a block: 2 where 32 vector registers hold two
 * heads' accumulators, else 1). Included once per file; defines the
 * static attn_simd and undefines the macros.
 */
#ifndef TERN_CORE_KERNELS_ATTN_H
#define TERN_CORE_KERNELS_ATTN_H

/* ---- attention ----------------------------------------------------------
 * The query heads of one kv head (tern_attn_fn): the scores of ATT_KB keys
 * at a time, each key with its own FMA accumulator over the VEC-wide
 * slices (a masked slice for a tail; a full block's 8 sums come out of one
 * transposing reduction, HSUM8), then the softmax (SOFTMAX: the file's
 * own exp; rows whose maximum is not finite go to tern_softmax), then the weighted sum of the
 * values held in up to ATT_OB accumulators (ATT_OB * VEC floats of out).
 * Blocks of keys and of values are the outer loops and heads the inner
 * ones, so each block comes from memory once for the whole group. With
 * ATT_QH 2, two heads share each key and value vector loaded (and, for
 * an f16 cache, converted): each accumulator still sees the same
 * operations in the same order, so the results are those of one head at a
 * time, bit for bit. Keys are prefetched ATT_PFK blocks ahead and values
 * ATT_PFV rows ahead (a row's worth for each row the first head reads):
 * rows may lie kvs elements apart (a cache that interleaves kv heads), a
 * pattern the hardware prefetchers follow poorly, and even contiguous
 * rows (the text plugin's cache since 2026-12-03) gain from the values'.
 * Measured on the Zen 5 VM, one thread, 30 layers x 5 kv heads of 4 query
 * heads x 1500 positions from memory: 17.5-19.3 -> 14.7-16.5 ms (one head
 * at a time, no prefetch -> pairs and key prefetch); from cache the pairs
 * alone gain about 20%. Per position and kv head, ns (f32 / f16 cache):
 * interleaved rows 50-52 / 32-38, contiguous 46-48 / 23-30, contiguous
 * with value prefetch 39-44 / 20-27; from L2 25 / 21. */
#define ATT_KB 8
#define ATT_OB 8
#define ATT_VB 32
#define ATT_PFK 2
#define ATT_PFV 16

/* Prefetches elements [off, off + n) of base (f32 or f16). The address
 * may lie past the cache's end (prefetches never fault): it is formed as
 * an integer. */
KINLINE void prefetch_row(const void *base, int64_t off, int64_t n, const int F16)
{
	const size_t esz = F16 ? 2 : 4;
	const uintptr_t a = (uintptr_t)base + (size_t)off * esz;
	for (size_t b = 0; b < (size_t)n * esz; b += 64)
		_mm_prefetch((const char *)(a + b), _MM_HINT_T0);
}

/* The body, with keys and values read as f32 or (F16) as f16. KV offsets
 * are in elements. */
KINLINE void attn_body(const float *q, int64_t G, const void *k, const void *v, const int F16,
		       int64_t kvs, int64_t nk, int64_t hd, float scale, float *s, float *out)
{
	const int64_t full = hd / VEC * VEC;
	const MASKT tm = TAILMASK(hd - full);
	/* Scores: key blocks outer, so a block's rows are read once from
	 * memory and from L1 for the group's other heads. */
	for (int64_t j = 0; j < nk; j += ATT_KB) {
		const int64_t kb = nk - j < ATT_KB ? nk - j : ATT_KB;
		const int64_t kj = j * kvs;
		if (j + (ATT_PFK + 1) * ATT_KB <= nk)
			for (int r = 0; r < ATT_KB; r++)
				prefetch_row(k, kj + (ATT_PFK * ATT_KB + r) * kvs, hd, F16);
		int64_t g = 0;
#if ATT_QH == 2
		if (kb == ATT_KB)
			for (; g + 2 <= G; g += 2) {
				const float *q0 = q + g * hd, *q1 = q0 + hd;
				VT a0[ATT_KB], a1[ATT_KB];
#pragma GCC unroll 8
				for (int r = 0; r < ATT_KB; r++)
					a0[r] = a1[r] = ZERO();
				for (int64_t i = 0; i < full; i += VEC) {
					const VT x0 = LOAD(q0 + i), x1 = LOAD(q1 + i);
#pragma GCC unroll 8
					for (int r = 0; r < ATT_KB; r++) {
						const VT kv = KVLOAD(F16, k, kj + r * kvs + i);
						a0[r] = FMA(x0, kv, a0[r]);
						a1[r] = FMA(x1, kv, a1[r]);
					}
				}
				if (full < hd) {
					const VT x0 = MLOAD(tm, q0 + full), x1 = MLOAD(tm, q1 + full);
#pragma GCC unroll 8
					for (int r = 0; r < ATT_KB; r++) {
						const VT kv =
							KVMLOAD(F16, tm, hd - full, k, kj + r * kvs + full);
						a0[r] = FMA(x0, kv, a0[r]);
						a1[r] = FMA(x1, kv, a1[r]);
					}
				}
				HSUM8(a0, scale, s + g * nk + j);
				HSUM8(a1, scale, s + (g + 1) * nk + j);
			}
#endif
		for (; g < G; g++) {
			const float *qg = q + g * hd;
			VT acc[ATT_KB];
#pragma GCC unroll 8
			for (int r = 0; r < ATT_KB; r++)
				acc[r] = ZERO();
			if (kb == ATT_KB) {
				for (int64_t i = 0; i < full; i += VEC) {
					const VT qv = LOAD(qg + i);
#pragma GCC unroll 8
					for (int r = 0; r < ATT_KB; r++) {
						const VT kv = KVLOAD(F16, k, kj + r * kvs + i);
						acc[r] = FMA(qv, kv, acc[r]);
					}
				}
				if (full < hd) {
					const VT qv = MLOAD(tm, qg + full);
#pragma GCC unroll 8
					for (int r = 0; r < ATT_KB; r++)
						acc[r] = FMA(qv,
							     KVMLOAD(F16, tm, hd - full, k,
								     kj + r * kvs + full),
							     acc[r]);
				}
				HSUM8(acc, scale, s + g * nk + j);
			} else {
				for (int64_t r = 0; r < kb; r++) {
					const int64_t kr = kj + r * kvs;
					for (int64_t i = 0; i < full; i += VEC) {
						const VT kv = KVLOAD(F16, k, kr + i);
						acc[r] = FMA(LOAD(qg + i), kv, acc[r]);
					}
					if (full < hd) {
						const VT qt = MLOAD(tm, qg + full);
						const VT kt = KVMLOAD(F16, tm, hd - full, k, kr + full);
						acc[r] = FMA(qt, kt, acc[r]);
					}
					s[g * nk + j + r] = HSUM(acc[r]) * scale;
				}
			}
		}
	}
	for (int64_t g = 0; g < G; g++)
		SOFTMAX(s + g * nk, nk);
	/* Weighted sums: per chunk of up to ATT_OB vectors of out, blocks of
	 * ATT_VB values outer (read once, then from L1 for the other heads),
	 * each head's chunk in registers across the block. */
	for (int64_t c0 = 0; c0 < hd; c0 += ATT_OB * VEC) {
		const int64_t cw = hd - c0 < ATT_OB * VEC ? hd - c0 : ATT_OB * VEC;
		const int64_t nv = (cw + VEC - 1) / VEC;
		const int64_t ct = cw - (nv - 1) * VEC; /* floats in the last vector */
		const MASKT cm = TAILMASK(ct);
		for (int64_t j0 = 0; j0 < nk; j0 += ATT_VB) {
			const int64_t j1 = nk - j0 < ATT_VB ? nk : j0 + ATT_VB;
			int64_t g = 0;
#if ATT_QH == 2
			if (nv == ATT_OB && cw == ATT_OB * VEC)
				for (; g + 2 <= G; g += 2) {
					float *o0p = out + g * hd + c0, *o1p = o0p + hd;
					const float *s0 = s + g * nk, *s1 = s0 + nk;
					VT o0[ATT_OB], o1[ATT_OB];
#pragma GCC unroll 8
					for (int u = 0; u < ATT_OB; u++) {
						o0[u] = j0 > 0 ? LOAD(o0p + u * VEC) : ZERO();
						o1[u] = j0 > 0 ? LOAD(o1p + u * VEC) : ZERO();
					}
					for (int64_t jj = j0; jj < j1; jj++) {
						const VT p0 = SET1(s0[jj]), p1 = SET1(s1[jj]);
						const int64_t vj = jj * kvs + c0;
						if (g == 0)
							prefetch_row(v, vj + ATT_PFV * kvs, cw, F16);
#pragma GCC unroll 8
						for (int u = 0; u < ATT_OB; u++) {
							const VT vv = KVLOAD(F16, v, vj + u * VEC);
							o0[u] = FMA(p0, vv, o0[u]);
							o1[u] = FMA(p1, vv, o1[u]);
						}
					}
#pragma GCC unroll 8
					for (int u = 0; u < ATT_OB; u++) {
						STORE(o0p + u * VEC, o0[u]);
						STORE(o1p + u * VEC, o1[u]);
					}
				}
#endif
			for (; g < G; g++) {
				float *og = out + g * hd + c0;
				const float *sg = s + g * nk;
				VT o[ATT_OB];
#pragma GCC unroll 8
				for (int u = 0; u < ATT_OB; u++)
					o[u] = ZERO();
				if (j0 > 0) {
					for (int64_t u = 0; u + 1 < nv; u++)
						o[u] = LOAD(og + u * VEC);
					o[nv - 1] = MLOAD(cm, og + (nv - 1) * VEC);
				}
				if (nv == ATT_OB && cw == ATT_OB * VEC) {
					for (int64_t jj = j0; jj < j1; jj++) {
						const VT pj = SET1(sg[jj]);
						const int64_t vj = jj * kvs + c0;
						if (g == 0)
							prefetch_row(v, vj + ATT_PFV * kvs, cw, F16);
#pragma GCC unroll 8
						for (int u = 0; u < ATT_OB; u++) {
							const VT vv = KVLOAD(F16, v, vj + u * VEC);
							o[u] = FMA(pj, vv, o[u]);
						}
					}
				} else {
					for (int64_t jj = j0; jj < j1; jj++) {
						const VT pj = SET1(sg[jj]);
						const int64_t vj = jj * kvs + c0;
						if (g == 0)
							prefetch_row(v, vj + ATT_PFV * kvs, cw, F16);
						for (int64_t u = 0; u + 1 < nv; u++) {
							const VT vv = KVLOAD(F16, v, vj + u * VEC);
							o[u] = FMA(pj, vv, o[u]);
						}
						o[nv - 1] = FMA(pj,
								KVMLOAD(F16, cm, ct, v,
									vj + (nv - 1) * VEC),
								o[nv - 1]);
					}
				}
				for (int64_t u = 0; u + 1 < nv; u++)
					STORE(og + u * VEC, o[u]);
				MSTORE(cm, og + (nv - 1) * VEC, o[nv - 1]);
			}
		}
	}
}

static void attn_simd(const float *q, int64_t G, const void *k, const void *v, bool kv_f16,
		      int64_t kvs, int64_t nk, int64_t hd, float scale, float *s, float *out)
{
	if (kv_f16)
		attn_body(q, G, k, v, 1, kvs, nk, hd, scale, s, out);
	else
		attn_body(q, G, k, v, 0, kvs, nk, hd, scale, s, out);
}
#undef ATT_KB
#undef ATT_OB
#undef ATT_VB
#undef ATT_PFK
#undef ATT_PFV

/* The macros were the including file's arguments to this one. */
#undef VEC
#undef VT
#undef MASKT
#undef TAILMASK
#undef ZERO
#undef LOAD
#undef MLOAD
#undef KVLOAD
#undef KVMLOAD
#undef STORE
#undef MSTORE
#undef FMA
#undef SET1
#undef HSUM
#undef HSUM8
#undef SOFTMAX
#undef ATT_QH

#endif
