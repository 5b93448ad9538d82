/*
 * pack.h (private): packing one row of ternary values into the T2 and T3
 * layouts described in include/tern/tensor.h, and back; the same for I4.
 * Values are int8 in {-1, 0, 1} (in [-8, 7] for I4); rows hold n logical
 * values and are padded with zero weights up to tern_row_padded(). dst
 * must hold tern_row_bytes() bytes.
 */
#ifndef TERN_CORE_PACK_H
#define TERN_CORE_PACK_H

#include <stdint.h>

void tern_t2_pack_row(const int8_t *w, int64_t n, uint8_t *dst);
void tern_t2_unpack_row(const uint8_t *src, int64_t n, int8_t *w);
void tern_t3_pack_row(const int8_t *w, int64_t n, uint8_t *dst);
void tern_t3_unpack_row(const uint8_t *src, int64_t n, int8_t *w);

/* I4: values are int8 in [-8, 7] (pack saturates others); the pad is
 * written as q = 0. */
void tern_i4_pack_row(const int8_t *q, int64_t n, uint8_t *dst);
void tern_i4_unpack_row(const uint8_t *src, int64_t n, int8_t *q);

/* Encode/decode one T3 byte (5 trits t[0..4], each 0..2). */
uint8_t tern_t3_encode(const uint8_t t[5]);
void tern_t3_decode(uint8_t b, uint8_t t[5]);

/* Nonzero if every 2-bit code of a packed T2 row is valid (not 3). */
int tern_t2_row_valid(const uint8_t *src, int64_t n);

#endif
