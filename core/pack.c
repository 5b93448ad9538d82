/*
 * pack.c: conversion of one row of ternary values {-1,0,1} to and from the
 * T2 (2-bit) and T3 (base-3, 5 trits per byte) packed layouts, and of 4-bit
 * values [-8,7] to and from I4, all described in include/tern/tensor.h. These are the plain reference routines; the
 * kernels read the packed bytes directly and never call them per token.
 */
#include "core/pack.h"

/* Weights per row after padding, and the group geometry: a row is full
 * groups of 64 bytes, then possibly one half group of 32 bytes. */
#define T2_ALIGN 128
#define T3_ALIGN 160
#define T2_PER_BYTE 4
#define T3_PER_BYTE 5

static int64_t round_up(int64_t n, int64_t a)
{
	return (n + a - 1) / a * a;
}

/* Weight index of code p in byte `byte` of a row whose codes come
 * `per_byte` to a byte, for a padded row of `padded` weights. */
static int64_t code_index(int64_t byte, int p, int per_byte, int64_t padded)
{
	int64_t full_bytes = padded / (64 * per_byte) * 64;
	int64_t g = byte < full_bytes ? 64 : 32;
	int64_t group_start_byte = byte < full_bytes ? byte / 64 * 64 : full_bytes;
	int64_t m = byte - group_start_byte;
	return group_start_byte * per_byte + p * g + m;
}

static int8_t value_at(const int8_t *w, int64_t n, int64_t j)
{
	return j < n ? w[j] : 0;
}

void tern_t2_pack_row(const int8_t *w, int64_t n, uint8_t *dst)
{
	int64_t padded = round_up(n, T2_ALIGN);
	int64_t nbytes = padded / T2_PER_BYTE;
	for (int64_t i = 0; i < nbytes; i++) {
		unsigned b = 0;
		for (int p = 0; p < T2_PER_BYTE; p++) {
			int v = value_at(w, n, code_index(i, p, T2_PER_BYTE, padded));
			b |= (unsigned)(v + 1) << (2 * p);
		}
		dst[i] = (uint8_t)b;
	}
}

void tern_t2_unpack_row(const uint8_t *src, int64_t n, int8_t *w)
{
	int64_t padded = round_up(n, T2_ALIGN);
	int64_t nbytes = padded / T2_PER_BYTE;
	for (int64_t i = 0; i < nbytes; i++) {
		for (int p = 0; p < T2_PER_BYTE; p++) {
			int64_t j = code_index(i, p, T2_PER_BYTE, padded);
			if (j < n)
				w[j] = (int8_t)(((src[i] >> (2 * p)) & 3) - 1);
		}
	}
}

int tern_t2_row_valid(const uint8_t *src, int64_t n)
{
	int64_t nbytes = round_up(n, T2_ALIGN) / T2_PER_BYTE;
	for (int64_t i = 0; i < nbytes; i++) {
		unsigned b = src[i];
		/* A code is 3 exactly when both of its bits are set. */
		if ((b & (b >> 1) & 0x55u) != 0)
			return 0;
	}
	return 1;
}

uint8_t tern_t3_encode(const uint8_t t[5])
{
	unsigned v = t[0] * 81u + t[1] * 27u + t[2] * 9u + t[3] * 3u + t[4];
	/* ceil(v * 256 / 243): the byte then decodes by multiply-and-shift. */
	return (uint8_t)((v * 256u + 242u) / 243u);
}

void tern_t3_decode(uint8_t b, uint8_t t[5])
{
	unsigned q = b;
	for (int p = 0; p < 5; p++) {
		t[p] = (uint8_t)(((q & 0xffu) * 3u) >> 8);
		q = (q & 0xffu) * 3u;
	}
}

void tern_t3_pack_row(const int8_t *w, int64_t n, uint8_t *dst)
{
	int64_t padded = round_up(n, T3_ALIGN);
	int64_t nbytes = padded / T3_PER_BYTE;
	for (int64_t i = 0; i < nbytes; i++) {
		uint8_t t[5];
		for (int p = 0; p < T3_PER_BYTE; p++)
			t[p] = (uint8_t)(value_at(w, n, code_index(i, p, T3_PER_BYTE, padded)) + 1);
		dst[i] = tern_t3_encode(t);
	}
}

void tern_t3_unpack_row(const uint8_t *src, int64_t n, int8_t *w)
{
	int64_t padded = round_up(n, T3_ALIGN);
	int64_t nbytes = padded / T3_PER_BYTE;
	for (int64_t i = 0; i < nbytes; i++) {
		uint8_t t[5];
		tern_t3_decode(src[i], t);
		for (int p = 0; p < T3_PER_BYTE; p++) {
			int64_t j = code_index(i, p, T3_PER_BYTE, padded);
			if (j < n)
				w[j] = (int8_t)(t[p] - 1);
		}
	}
}

/* I4: groups of 64 bytes, weight m in the low nibble of byte m and weight
 * 64 + m in its high nibble; the nibble is q + 8. */
#define I4_ALIGN 128

static unsigned i4_nibble(const int8_t *q, int64_t n, int64_t j)
{
	int v = j < n ? q[j] : 0;
	v = v < -8 ? -8 : v > 7 ? 7 : v;
	return (unsigned)(v + 8);
}

void tern_i4_pack_row(const int8_t *q, int64_t n, uint8_t *dst)
{
	int64_t padded = round_up(n, I4_ALIGN);
	for (int64_t g = 0; g < padded; g += I4_ALIGN)
		for (int64_t m = 0; m < 64; m++)
			dst[g / 2 + m] = (uint8_t)(i4_nibble(q, n, g + m) |
						   i4_nibble(q, n, g + 64 + m) << 4);
}

void tern_i4_unpack_row(const uint8_t *src, int64_t n, int8_t *q)
{
	for (int64_t j = 0; j < n; j++) {
		int64_t g = j / I4_ALIGN * I4_ALIGN, m = j - g;
		uint8_t b = src[g / 2 + m % 64];
		q[j] = (int8_t)((m < 64 ? b & 15 : b >> 4) - 8);
	}
}
