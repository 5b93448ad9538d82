/*
 * vecf.h: the float vector type of the loops in ops.c, attention.c and
 * matmul.c's one-token finishing (GCC/clang vector extensions). Those files
 * are built for the baseline ISA, whose vectors hold 4 floats on x86-64
 * (SSE2) and AArch64 (NEON), so a block of VF_LANES = 16 floats is four vf4
 * and every operation below is one native instruction. Each lane does
 * exactly the float operation of the scalar loop it replaces, in the same
 * order. The plain-C loops this replaced left gcc -O2 half-vectorized code
 * that bounced each block through the stack, several times slower. Loads
 * and stores go through memcpy: no alignment or aliasing is assumed.
 * Macros, not inline functions, as passing vectors by value draws gcc's ABI
 * notes (-Wpsabi) on some targets.
 */
#ifndef TERN_CORE_VECF_H
#define TERN_CORE_VECF_H

#include <stdint.h>
#include <string.h>

#define VF_LANES 16 /* floats per block: VF_PARTS vf4 */
#define VF_PARTS 4
typedef float vf4 __attribute__((vector_size(16)));
typedef int32_t vi4 __attribute__((vector_size(16)));

#define VF_LOAD(v, p) memcpy(&(v), (p), sizeof(vf4))
#define VF_STORE(p, v) memcpy((p), &(v), sizeof(vf4))
#define VF_SPLAT(s) ((vf4){ (s), (s), (s), (s) })
/* max(v, 0) as the scalar `v > 0 ? v : 0`: NaN and -0 give +0. */
#define VF_RELU(v) ((vf4)((vi4)(v) & ((v) > VF_SPLAT(0.0f))))

#endif
