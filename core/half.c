/*
 * half.c: exact conversions between f32 and the two 16-bit float formats
 * (IEEE binary16 and bfloat16), rounding to nearest even. Kept apart and
 * free of dependencies so kernels can be built and tested alone.
 */
#include <string.h>

#include "tern/tensor.h"

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

float tern_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = (h >> 10) & 0x1fu;
	uint32_t m = h & 0x3ffu;
	if (e == 0x1f)
		return bits_f32(sign | 0x7f800000u | (m << 13)); /* inf, NaN (payload kept) */
	if (e != 0)
		return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
	if (m == 0)
		return bits_f32(sign);
	/* Subnormal: shift the leading one into the implicit bit. */
	uint32_t ex = 113;
	while (!(m & 0x400u)) {
		m <<= 1;
		ex--;
	}
	return bits_f32(sign | (ex << 23) | ((m & 0x3ffu) << 13));
}

uint16_t tern_f32_to_f16(float f)
{
	uint32_t x = f32_bits(f);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
	x &= 0x7fffffffu;
	if (x > 0x7f800000u) {
		/* NaN: keep the top payload bits, and make sure it stays a NaN. */
		uint16_t m = (uint16_t)((x >> 13) & 0x3ffu);
		return (uint16_t)(sign | 0x7c00u | (m ? m : 0x200u));
	}
	if (x >= 0x477ff000u) /* >= 65520 rounds to infinity (and inf itself) */
		return (uint16_t)(sign | 0x7c00u);
	if (x >= 0x38800000u) { /* normal in f16: >= 2^-14 */
		uint32_t h = ((((x >> 23) - 112u) << 10) | ((x >> 13) & 0x3ffu));
		uint32_t rest = x & 0x1fffu;
		if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
			h++; /* a carry into the exponent is the right answer */
		return (uint16_t)(sign | h);
	}
	if (x <= 0x33000000u) /* <= 2^-25: ties to even give zero */
		return sign;
	uint32_t e = x >> 23;
	uint32_t m = (x & 0x7fffffu) | 0x800000u;
	uint32_t shift = 126u - e; /* 14..24 */
	uint32_t h = m >> shift;
	uint32_t rest = m & ((1u << shift) - 1u);
	uint32_t half = 1u << (shift - 1u);
	if (rest > half || (rest == half && (h & 1u)))
		h++;
	return (uint16_t)(sign | h);
}

float tern_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

uint16_t tern_f32_to_bf16(float f)
{
	uint32_t x = f32_bits(f);
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40u); /* NaN: stay NaN after truncation */
	x += 0x7fffu + ((x >> 16) & 1u);
	return (uint16_t)(x >> 16);
}

/* ---- row conversions ----------------------------------------------------- */

