/*
 * tokenizer_l2c.c: llama2.c's tokenizer.bin, a SentencePiece vocabulary
 * exported with its U+2581 markers already turned into spaces: i32
 * max_token_length, then per token f32 score, i32 byte length and the
 * bytes, little-endian, up to the end of the file. The encoder is the
 * SentencePiece one with ' ' as the space marker, which is exactly
 * llama2.c's dummy prefix plus best-score pair merging.
 */
#include <string.h>
#include <stdlib.h>

#include "plugins/text/tokenizer_impl.h"

static int32_t rd_i32(const unsigned char *p)
{
	uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		     (uint32_t)p[3] << 24;
	int32_t v;
	memcpy(&v, &u, 4);
	return v;
}

/* Walk the entries; with t NULL only count them and their bytes. */
static int walk(tern_ctx *ctx, const char *name, const unsigned char *d, size_t size,
		text_tokenizer *t, size_t *n_tok, size_t *total)
{
	int32_t maxlen = rd_i32(d);
	size_t pos = 4, n = 0, sum = 0;
	while (pos < size) {
		if (size - pos < 8)
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: token %zu at byte offset %zu: header cut short (%zu of 8 "
					  "bytes)",
					  name, n, pos, size - pos);
		int32_t len = rd_i32(d + pos + 4);
		if (len <= 0 || len > maxlen)
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: token %zu at byte offset %zu: length %ld outside 1..%ld "
					  "(max_token_length)",
					  name, n, pos, (long)len, (long)maxlen);
		if ((size_t)len > size - pos - 8)
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: token %zu at byte offset %zu: %ld bytes run past the end "
					  "of the file (%zu bytes)",
					  name, n, pos, (long)len, size);
		if (t) {
			uint32_t u = (uint32_t)rd_i32(d + pos);
			memcpy(&t->score[n], &u, 4);
			int rc = tok_set_text(t, ctx, (int32_t)n, (const char *)d + pos + 8, (size_t)len);
			if (rc)
				return rc;
		}
		sum += (size_t)len;
		pos += 8 + (size_t)len;
		n++;
	}
	*n_tok = n;
	*total = sum;
	return TERN_OK;
}

int text_tok_load_l2c_memory(tern_ctx *ctx, const char *name, const void *data, size_t size,
			     text_tokenizer **out)
{
	*out = NULL;
	if (!name)
		name = "<memory>";
	const unsigned char *d = data;
	if (size < 4)
		return tern_error(ctx, TERN_E_FORMAT, "%s: %zu bytes, too short for a tokenizer.bin",
				  name, size);
	int32_t maxlen = rd_i32(d);
	if (maxlen <= 0 || maxlen > 1 << 20)
		return tern_error(ctx, TERN_E_FORMAT, "%s: max_token_length %ld is not in 1..%d", name,
				  (long)maxlen, 1 << 20);
	size_t n, total;
	int rc = walk(ctx, name, d, size, NULL, &n, &total);
	if (rc)
		return rc;
	if (n < 3)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: %zu tokens; llama2.c needs at least <unk>, BOS and EOS", name, n);
	text_tokenizer *t;
	if ((rc = tok_new(ctx, TEXT_TOK_SPM, n, total, &t)))
		return rc;
	rc = walk(ctx, name, d, size, t, &n, &total);
	if (!rc)
		rc = tok_build_map(t, ctx, NULL);
	if (!rc) {
		memcpy(t->space, " ", 1);
		t->space_len = 1;
		t->add_space_prefix = true;
		t->add_bos = true;
		t->unk = 0;
		t->bos = 1;
		t->eos = 2;
		t->type[0] = TEXT_TOKEN_UNKNOWN;
		t->type[1] = t->type[2] = TEXT_TOKEN_CONTROL;
		for (size_t i = 3; i < n; i++) {
			const char *s = t->text + t->off[i];
			if (t->len[i] == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>')
				t->type[i] = TEXT_TOKEN_BYTE;
		}
		rc = tok_finish(t, ctx);
	}
	if (rc) {
		text_tok_free(t);
		return rc;
	}
	*out = t;
	return TERN_OK;
}

int text_tok_load_l2c(tern_ctx *ctx, const char *path, text_tokenizer **out)
{
	char *data;
	size_t size;
	*out = NULL;
	int rc = tok_read_file(ctx, path, &data, &size);
	if (rc)
		return rc;
	rc = text_tok_load_l2c_memory(ctx, path, data, size, out);
	free(data);
	return rc;
}
