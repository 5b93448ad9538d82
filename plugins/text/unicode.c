/*
 * unicode.c: strict UTF-8 decoding and the Unicode class lookup used by
 * the tokenizers. Classes are a binary search over the generated range
 * table, with a small table for ASCII, which dominates real text.
 */
#include "plugins/text/unicode.h"

struct uc_range {
	uint32_t lo, hi;
	uint8_t flags;
};

#include "plugins/text/unicode_data.h"

const char *text_unicode_version(void)
{
	return TEXT_UNICODE_VERSION;
}

unsigned text_uc_class(uint32_t cp)
{
	if (cp < 128) {
		if ((cp | 32) - 'a' < 26)
			return TEXT_UC_LETTER;
		if (cp - '0' < 10)
			return TEXT_UC_NUMBER;
		if (cp == ' ' || cp - 9 < 5)
			return TEXT_UC_SPACE;
		return 0;
	}
	size_t lo = 0, hi = sizeof uc_ranges / sizeof uc_ranges[0];
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cp < uc_ranges[mid].lo)
			hi = mid;
		else if (cp > uc_ranges[mid].hi)
			lo = mid + 1;
		else
			return uc_ranges[mid].flags;
	}
	return 0;
}

int text_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	/* The second byte's allowed range rules out overlong forms,
	 * surrogates and values above U+10FFFF, so a truncated prefix of an
	 * invalid sequence is reported as invalid, never as incomplete. */
	int len;
	uint32_t v;
	unsigned lo2 = 0x80, hi2 = 0xBF;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2, v = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3, v = c & 0x0F;
		if (c == 0xE0)
			lo2 = 0xA0;
		else if (c == 0xED)
			hi2 = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4, v = c & 0x07;
		if (c == 0xF0)
			lo2 = 0x90;
		else if (c == 0xF4)
			hi2 = 0x8F;
	} else {
		return TEXT_UTF8_INVALID;
	}
	for (int i = 1; i < len; i++) {
		if ((size_t)i >= n)
			return TEXT_UTF8_INCOMPLETE;
		unsigned b = s[i];
		if (i == 1 ? (b < lo2 || b > hi2) : (b & 0xC0) != 0x80)
			return TEXT_UTF8_INVALID;
		v = v << 6 | (b & 0x3F);
	}
	*cp = v;
	return len;
}

size_t text_utf8_check(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		uint32_t cp;
		int len = text_utf8_next(u + i, n - i, &cp);
		if (len <= 0)
			return i;
		i += (size_t)len;
	}
	return n;
}

int text_utf8_put(uint32_t cp, char out[4])
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp >= 0xD800 && cp <= 0xDFFF)
		return 0;
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	if (cp > 0x10FFFF)
		return 0;
	out[0] = (char)(0xF0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}
