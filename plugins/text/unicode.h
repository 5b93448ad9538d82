/*
 * unicode.h: the UTF-8 and Unicode facts the text plugin's tokenizers
 * need: strict UTF-8 decoding (for validating input and for holding back
 * incomplete characters while streaming) and the classes of the Llama-3
 * pre-tokenizer regex (\p{L}, \p{N}, \s). The class tables are generated
 * from the Unicode Character Database (TEXT_UNICODE_VERSION) by
 * tools/gen_unicode_tables.py. Private to the plugin; all functions are
 * reentrant.
 */
#ifndef TERN_TEXT_UNICODE_H
#define TERN_TEXT_UNICODE_H

#include <stddef.h>
#include <stdint.h>

/* Class bits returned by text_uc_class. */
enum {
	TEXT_UC_LETTER = 1, /* general category L* */
	TEXT_UC_NUMBER = 2, /* general category N* */
	TEXT_UC_SPACE = 4,  /* White_Space property */
};

/* The Unicode version the class tables come from ("15.0.0"). */
const char *text_unicode_version(void);

/* Class bits of code point cp (0 for none or out of range). */
unsigned text_uc_class(uint32_t cp);

/* Result of text_utf8_next besides a positive length. */
enum {
	TEXT_UTF8_INVALID = 0,     /* s[0] cannot start a well-formed sequence */
	TEXT_UTF8_INCOMPLETE = -1, /* a valid prefix cut short by the end of s */
};

/* Decode one character from s[0..n), n >= 1: returns its length (1..4)
 * and sets *cp, or TEXT_UTF8_INVALID (overlong forms, surrogates, values
 * above U+10FFFF and stray continuation bytes are invalid) or
 * TEXT_UTF8_INCOMPLETE. */
int text_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);

/* Offset of the first byte of s[0..n) that is not part of well-formed
 * UTF-8 (a truncated final sequence counts as malformed), or n. */
size_t text_utf8_check(const char *s, size_t n);

/* Encode cp (<= U+10FFFF, not a surrogate) into out; returns the length
 * (1..4), or 0 for a value that has no encoding. */
int text_utf8_put(uint32_t cp, char out[4]);

#endif
