/*
 * tokenizer_bpe.c: byte-level BPE as Llama 3 uses it. Text is first cut
 * into words by the Llama-3 pre-tokenizer regex, implemented here as a
 * hand-written matcher over code points; a word that is itself a token
 * is emitted whole, the others are merged pair by pair, lowest rank
 * first. The vocabulary comes from a tiktoken file (the rank of a pair is
 * the id of its concatenation), a Hugging Face tokenizer.json or GGUF
 * "gpt2" metadata (both with an explicit merges list, whose tokens are
 * spelled in GPT-2's byte-to-printable-character mapping).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/text/tokenizer_impl.h"
#include "plugins/text/unicode.h"

/* ---- GPT-2 byte mapping ----------------------------------------------- */

/* Bytes that GPT-2 spells as themselves; the others (controls, space,
 * DEL, the C1 range, NBSP and the soft hyphen) become U+0100 upwards in
 * byte order. */
static bool gpt2_direct(unsigned b)
{
	return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

long tok_gpt2_decode(const char *s, size_t len, char *out)
{
	int16_t inv[256 + 68];
	for (size_t i = 0; i < sizeof inv / sizeof inv[0]; i++)
		inv[i] = -1;
	unsigned next = 256;
	for (unsigned b = 0; b < 256; b++)
		inv[gpt2_direct(b) ? b : next++] = (int16_t)b;
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	long k = 0;
	while (i < len) {
		uint32_t cp;
		int r = text_utf8_next(u + i, len - i, &cp);
		if (r <= 0 || cp >= sizeof inv / sizeof inv[0] || inv[cp] < 0)
			return -1;
		out[k++] = (char)inv[cp];
		i += (size_t)r;
	}
	return k;
}

/* ---- merges ----------------------------------------------------------- */

int tok_bpe_alloc_merges(text_tokenizer *t, tern_ctx *ctx, size_t n_merges)
{
	size_t cap = 16;
	while (cap < n_merges * 2)
		if (tern_size_mul(cap, 2, &cap) || cap > (size_t)1 << 30)
			return tern_error(ctx, TERN_E_OVERFLOW, "tokenizer: %zu merges", n_merges);
	t->pair_key = calloc(cap, sizeof *t->pair_key);
	t->pair_rank = malloc(cap * sizeof *t->pair_rank);
	t->pair_id = malloc(cap * sizeof *t->pair_id);
	if (!t->pair_key || !t->pair_rank || !t->pair_id)
		return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory (%zu merges)", n_merges);
	t->pair_mask = (uint32_t)(cap - 1);
	return TERN_OK;
}

static uint32_t pair_slot(uint64_t key, uint32_t mask)
{
	key *= 0x9E3779B97F4A7C15ull;
	return (uint32_t)(key >> 32) & mask;
}

int tok_bpe_add_merge(text_tokenizer *t, tern_ctx *ctx, int32_t left, int32_t right,
		      int32_t rank, int32_t result)
{
	(void)ctx;
	uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
	for (uint32_t h = pair_slot(key, t->pair_mask);; h = (h + 1) & t->pair_mask) {
		if (t->pair_key[h] == key)
			return TERN_OK; /* a repeated merge keeps its first (best) rank */
		if (t->pair_key[h] == 0) {
			t->pair_key[h] = key;
			t->pair_rank[h] = rank;
			t->pair_id[h] = result;
			return TERN_OK;
		}
	}
}

static bool pair_by_id(const text_tokenizer *tok, const char *s, const tok_sym *l,
		       const tok_sym *r, double *prio, int32_t *id)
{
	int32_t x = text_tok_find(tok, s + l->start, l->n + r->n);
	if (x < 0)
		return false;
	*prio = x;
	*id = x;
	return true;
}

static bool pair_by_merge(const text_tokenizer *tok, const char *s, const tok_sym *l,
			  const tok_sym *r, double *prio, int32_t *id)
{
	(void)s;
	if (l->id < 0 || r->id < 0)
		return false;
	uint64_t key = ((uint64_t)(uint32_t)l->id << 32 | (uint32_t)r->id) + 1;
	for (uint32_t h = pair_slot(key, tok->pair_mask);; h = (h + 1) & tok->pair_mask) {
		if (tok->pair_key[h] == 0)
			return false;
		if (tok->pair_key[h] == key) {
			*prio = tok->pair_rank[h];
			*id = tok->pair_id[h];
			return true;
		}
	}
}

/* ---- encoding --------------------------------------------------------- */

static int emit_bytes(const text_tokenizer *tok, tern_ctx *ctx, const char *s, size_t n,
		      tok_vec *out)
{
	for (size_t i = 0; i < n; i++) {
		unsigned b = (unsigned char)s[i];
		int32_t id = tok->byte_tok[b] >= 0 ? tok->byte_tok[b] : tok->unk;
		if (id < 0)
			return tern_error(ctx, TERN_E_FORMAT,
					  "tokenizer: byte 0x%02X has no token and there is no <unk>",
					  b);
		int rc = tok_vec_push(out, ctx, id);
		if (rc)
			return rc;
	}
	return TERN_OK;
}

/* One pre-tokenized word s[0..n). */
static int bpe_word(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w, const char *s,
		    size_t n, tok_vec *out)
{
	int32_t whole = text_tok_find(tok, s, n);
	if (whole >= 0 && tok->type[whole] != TEXT_TOKEN_CONTROL)
		return tok_vec_push(out, ctx, whole);
	int rc = tok_work_syms(w, ctx, n);
	if (rc)
		return rc;
	for (size_t i = 0; i < n; i++) {
		tok_sym *y = &w->sym[i];
		y->prev = (int32_t)i - 1;
		y->next = i + 1 < n ? (int32_t)i + 1 : -1;
		y->start = (uint32_t)i;
		y->n = 1;
		y->id = tok->byte_tok[(unsigned char)s[i]];
	}
	rc = tok_merge(tok, ctx, w, s, n, tok->rank_is_id ? pair_by_id : pair_by_merge);
	for (int32_t i = 0; !rc && i >= 0; i = w->sym[i].next) {
		const tok_sym *y = &w->sym[i];
		int32_t id = y->id >= 0 ? y->id : text_tok_find(tok, s + y->start, y->n);
		rc = id >= 0 ? tok_vec_push(out, ctx, id) : emit_bytes(tok, ctx, s + y->start, y->n, out);
	}
	return rc;
}

static bool is_rn(uint32_t c)
{
	return c == '\r' || c == '\n';
}

static uint32_t ascii_lower(uint32_t c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Length in code points of the Llama-3 regex match at cp[pos..n):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * tried left to right as a backtracking engine would. */
static size_t llama3_match(const uint32_t *cp, const uint8_t *cl, size_t pos, size_t n)
{
	enum { L = TEXT_UC_LETTER, N = TEXT_UC_NUMBER, S = TEXT_UC_SPACE };
	uint32_t c = cp[pos];
	if (c == '\'' && pos + 1 < n) {
		uint32_t a = ascii_lower(cp[pos + 1]);
		if (a == 's' || a == 't' || a == 'm' || a == 'd')
			return 2;
		if (pos + 2 < n) {
			uint32_t b = ascii_lower(cp[pos + 2]);
			if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
				return 3;
		}
	}
	if ((cl[pos] & L) ||
	    (!is_rn(c) && !(cl[pos] & N) && pos + 1 < n && (cl[pos + 1] & L))) {
		size_t e = pos + 1;
		while (e < n && (cl[e] & L))
			e++;
		return e - pos;
	}
	if (cl[pos] & N) {
		size_t e = pos + 1;
		while (e < n && e < pos + 3 && (cl[e] & N))
			e++;
		return e - pos;
	}
	size_t q = c == ' ' ? pos + 1 : pos;
	if (q < n && !(cl[q] & (S | L | N))) {
		size_t e = q + 1;
		while (e < n && !(cl[e] & (S | L | N)))
			e++;
		while (e < n && is_rn(cp[e]))
			e++;
		return e - pos;
	}
	/* Only whitespace is left here: every code point is space, letter,
	 * number or "other", and the alternatives above took the rest. */
	size_t run = 0, last_rn = 0;
	while (pos + run < n && (cl[pos + run] & S)) {
		if (is_rn(cp[pos + run]))
			last_rn = run + 1;
		run++;
	}
	if (last_rn)
		return last_rn; /* \s*[\r\n]+ */
	if (run > 1 && pos + run < n)
		return run - 1; /* \s+(?!\S): leave the last space to the next word */
	return run ? run : 1;
}

int tok_bpe_encode(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w, const char *s,
		   size_t n, tok_vec *out)
{
	/* Code points, their offsets (plus the end) and classes, decoded once. */
	size_t need = n + 1;
	if (n >= INT32_MAX)
		return tern_error(ctx, TERN_E_OVERFLOW, "tokenizer: a fragment of %zu bytes is too long",
				  n);
	if (need > w->cp_cap) {
		uint32_t *a = realloc(w->cps, need * sizeof *a);
		if (a)
			w->cps = a;
		uint32_t *b = realloc(w->cpo, need * sizeof *b);
		if (b)
			w->cpo = b;
		if (!a || !b)
			return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory");
		w->cp_cap = need;
	}
	int rc = tok_work_buf(w, ctx, need);
	if (rc)
		return rc;
	uint8_t *cl = (uint8_t *)w->buf;
	const unsigned char *u = (const unsigned char *)s;
	size_t m = 0;
	for (size_t i = 0; i < n; m++) {
		uint32_t cp;
		int r = text_utf8_next(u + i, n - i, &cp);
		if (r <= 0)
			return tern_error(ctx, TERN_E_INVALID, "tokenizer: invalid UTF-8 at byte offset %zu",
					  i);
		w->cps[m] = cp;
		w->cpo[m] = (uint32_t)i;
		cl[m] = (uint8_t)text_uc_class(cp);
		i += (size_t)r;
	}
	w->cpo[m] = (uint32_t)n;
	/* The word loop reuses w->sym, so the offsets must survive: they live
	 * in w->cpo, which bpe_word does not touch. */
	for (size_t pos = 0; pos < m && !rc;) {
		size_t len = llama3_match(w->cps, cl, pos, m);
		size_t b0 = w->cpo[pos], b1 = w->cpo[pos + len];
		rc = bpe_word(tok, ctx, w, s + b0, b1 - b0, out);
		pos += len;
	}
	return rc;
}

/* ---- tiktoken --------------------------------------------------------- */

/* Strict padded base64 through a 256-entry table (-1 invalid, -2 '='):
 * returns the decoded length or -1. */
static long b64_decode(const int8_t *val, const char *s, size_t n, char *out)
{
	if (n == 0 || n % 4)
		return -1;
	long k = 0;
	for (size_t i = 0; i < n; i += 4) {
		const unsigned char *u = (const unsigned char *)s + i;
		int a = val[u[0]], b = val[u[1]], c = val[u[2]], d = val[u[3]];
		int pad = 0;
		if (i + 4 == n && d == -2) {
			pad = c == -2 ? 2 : 1;
			d = 0;
			if (pad == 2)
				c = 0;
		}
		if ((a | b | c | d) < 0)
			return -1;
		uint32_t x = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		out[k++] = (char)(x >> 16);
		if (pad < 2)
			out[k++] = (char)(x >> 8);
		if (pad < 1)
			out[k++] = (char)x;
	}
	return k;
}

static void b64_table(int8_t val[256])
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	memset(val, -1, 256);
	for (int i = 0; i < 64; i++)
		val[(unsigned char)alphabet[i]] = (int8_t)i;
	val['='] = -2;
}

typedef struct tt_line {
	uint32_t off, len;   /* decoded bytes in the scratch arena */
	uint32_t line;       /* 1-based; 0 = rank not seen yet */
} tt_line;

int text_tok_load_tiktoken_memory(tern_ctx *ctx, const char *name, const char *data,
				  size_t size, const char *const *special, size_t n_special,
				  text_tokenizer **out)
{
	*out = NULL;
	if (!name)
		name = "<memory>";
	if (!data && size)
		return tern_error(ctx, TERN_E_INVALID, "%s: NULL data", name);
	if (size > UINT32_MAX)
		return tern_error(ctx, TERN_E_OVERFLOW, "%s: %zu bytes is too large for a tiktoken file",
				  name, size);
	size_t n_lines = 1;
	for (const char *q = data, *end = data + size; (q = memchr(q, '\n', (size_t)(end - q)));
	     q++)
		n_lines++;
	int8_t b64[256];
	b64_table(b64);
	/* Decoded tokens are shorter than their base64, so size bytes hold them. */
	char *bytes = malloc(size + 1);
	tt_line *by_rank = calloc(n_lines, sizeof *by_rank);
	text_tokenizer *t = NULL;
	int rc = TERN_OK;
	if (!bytes || !by_rank) {
		rc = tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", name);
		goto done;
	}
	size_t n_tok = 0, used = 0, line = 0, total = 0;
	for (size_t i = 0; i < size;) {
		line++;
		const char *p = data + i, *nl = memchr(p, '\n', size - i);
		size_t len = nl ? (size_t)(nl - p) : size - i;
		i += len + (nl != NULL);
		if (len && p[len - 1] == '\r')
			len--;
		if (len == 0)
			continue;
		const char *sp = memchr(p, ' ', len);
		if (!sp) {
			rc = tern_error(ctx, TERN_E_FORMAT,
					"%s: line %zu: expected 'base64 rank', found no space", name, line);
			goto done;
		}
		long nb = b64_decode(b64, p, (size_t)(sp - p), bytes + used);
		if (nb <= 0) {
			rc = tern_error(ctx, TERN_E_FORMAT, "%s: line %zu: invalid base64 token '%.*s'",
					name, line, (int)(sp - p > 40 ? 40 : sp - p), p);
			goto done;
		}
		const char *r = sp + 1, *end = p + len;
		unsigned long long rank = 0;
		if (r == end) {
			rc = tern_error(ctx, TERN_E_FORMAT, "%s: line %zu: missing rank", name, line);
			goto done;
		}
		for (; r < end; r++) {
			if (*r < '0' || *r > '9' || rank > n_lines) {
				rc = tern_error(ctx, TERN_E_FORMAT,
						"%s: line %zu: rank '%.*s' is not a number below %zu",
						name, line, (int)(end - sp - 1 > 20 ? 20 : end - sp - 1),
						sp + 1, n_lines);
				goto done;
			}
			rank = rank * 10 + (unsigned)(*r - '0');
		}
		if (rank >= n_lines) {
			rc = tern_error(ctx, TERN_E_FORMAT,
					"%s: line %zu: rank %llu out of range (the file has at most %zu "
					"tokens)",
					name, line, rank, n_lines);
			goto done;
		}
		if (by_rank[rank].line) {
			rc = tern_error(ctx, TERN_E_FORMAT, "%s: line %zu: rank %llu repeats line %lu",
					name, line, rank, (unsigned long)by_rank[rank].line);
			goto done;
		}
		by_rank[rank] = (tt_line){ (uint32_t)used, (uint32_t)nb, (uint32_t)line };
		used += (size_t)nb;
		n_tok++;
	}
	for (size_t k = 0; k < n_tok; k++) {
		if (!by_rank[k].line) {
			rc = tern_error(ctx, TERN_E_FORMAT,
					"%s: ranks are not 0..%zu: rank %zu is missing", name, n_tok - 1,
					k);
			goto done;
		}
	}
	total = used;
	for (size_t k = 0; k < n_special; k++) {
		if (!special[k] || !special[k][0]) {
			rc = tern_error(ctx, TERN_E_INVALID, "%s: special token %zu is empty", name, k);
			goto done;
		}
		if (tern_size_add(total, strlen(special[k]), &total)) {
			rc = tern_error(ctx, TERN_E_OVERFLOW, "%s: special tokens too long", name);
			goto done;
		}
	}
	if (n_tok == 0) {
		rc = tern_error(ctx, TERN_E_FORMAT, "%s: no tokens", name);
		goto done;
	}
	rc = tok_new(ctx, TEXT_TOK_BPE, n_tok + n_special, total, &t);
	for (size_t k = 0; !rc && k < n_tok; k++)
		rc = tok_set_text(t, ctx, (int32_t)k, bytes + by_rank[k].off, by_rank[k].len);
	for (size_t k = 0; !rc && k < n_special; k++) {
		int32_t id = (int32_t)(n_tok + k);
		rc = tok_set_text(t, ctx, id, special[k], strlen(special[k]));
		t->type[id] = TEXT_TOKEN_CONTROL;
	}
	int32_t dup = -1;
	if (!rc)
		rc = tok_build_map(t, ctx, &dup);
	if (!rc && dup >= 0) {
		if ((size_t)dup < n_tok)
			rc = tern_error(ctx, TERN_E_FORMAT,
					"%s: line %lu: token %ld repeats the bytes of an earlier token",
					name, (unsigned long)by_rank[dup].line, (long)dup);
		else
			rc = tern_error(ctx, TERN_E_INVALID,
					"%s: special token '%s' repeats an earlier token", name,
					special[(size_t)dup - n_tok]);
	}
	if (!rc) {
		t->rank_is_id = true;
		rc = tok_finish(t, ctx);
	}
done:
	free(bytes);
	free(by_rank);
	if (rc) {
		text_tok_free(t);
		return rc;
	}
	*out = t;
	return TERN_OK;
}

int text_tok_load_tiktoken(tern_ctx *ctx, const char *path, const char *const *special,
			   size_t n_special, text_tokenizer **out)
{
	char *data;
	size_t size;
	*out = NULL;
	int rc = tok_read_file(ctx, path, &data, &size);
	if (rc)
		return rc;
	rc = text_tok_load_tiktoken_memory(ctx, path, data, size, special, n_special, out);
	free(data);
	return rc;
}

int text_tok_load_llama3(tern_ctx *ctx, const char *path, text_tokenizer **out)
{
	/* Llama 3's 256 special tokens: ten named ones interleaved with the
	 * reserved ones, which are numbered in id order. */
	enum { N_SPECIAL = 256 };
	char names[N_SPECIAL][40];
	const char *ptr[N_SPECIAL];
	static const struct {
		int slot;
		const char *name;
	} named[] = { { 0, "<|begin_of_text|>" }, { 1, "<|end_of_text|>" },
		      { 6, "<|start_header_id|>" }, { 7, "<|end_header_id|>" },
		      { 9, "<|eot_id|>" } };
	int reserved = 0;
	for (int i = 0; i < N_SPECIAL; i++) {
		const char *fixed = NULL;
		for (size_t k = 0; k < sizeof named / sizeof named[0]; k++)
			if (named[k].slot == i)
				fixed = named[k].name;
		if (fixed)
			snprintf(names[i], sizeof names[i], "%s", fixed);
		else
			snprintf(names[i], sizeof names[i], "<|reserved_special_token_%d|>", reserved++);
		ptr[i] = names[i];
	}
	int rc = text_tok_load_tiktoken(ctx, path, ptr, N_SPECIAL, out);
	if (rc)
		return rc;
	text_tokenizer *t = *out;
	int32_t base = t->n_vocab - N_SPECIAL;
	t->bos = base;
	t->eos = base + 1;
	t->eot = base + 9;
	t->add_bos = true;
	return TERN_OK;
}

/* ---- vocabularies with a merges list (GGUF gpt2, tokenizer.json) ------ */

/* Resolve merge k, "a b" (or a and b apart when sep is NULL), GPT-2
 * spelled, into the pair map. */
static int add_merge_text(text_tokenizer *t, tern_ctx *ctx, const char *what, size_t k,
			  const char *a, size_t na, const char *b, size_t nb, char *scratch)
{
	long la = tok_gpt2_decode(a, na, scratch);
	long lb = la < 0 ? -1 : tok_gpt2_decode(b, nb, scratch + la);
	if (la <= 0 || lb <= 0)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: merge %zu ('%.*s' '%.*s') is not GPT-2 byte-level text", what, k,
				  (int)na, a, (int)nb, b);
	int32_t l = text_tok_find(t, scratch, (size_t)la);
	int32_t r = text_tok_find(t, scratch + la, (size_t)lb);
	if (l < 0 || r < 0)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: merge %zu ('%.*s' '%.*s') names a token not in the vocabulary",
				  what, k, (int)na, a, (int)nb, b);
	int32_t res = text_tok_find(t, scratch, (size_t)(la + lb));
	return tok_bpe_add_merge(t, ctx, l, r, (int32_t)k, res);
}

static int add_merges(text_tokenizer *t, tern_ctx *ctx, const char *what, const tern_meta *m)
{
	size_t n = tern_meta_count(m);
	int rc = tok_bpe_alloc_merges(t, ctx, n ? n : 1);
	if (rc)
		return rc;
	if (n > INT32_MAX)
		return tern_error(ctx, TERN_E_OVERFLOW, "%s: %zu merges", what, n);
	char *scratch = NULL;
	size_t cap = 0;
	for (size_t k = 0; k < n && !rc; k++) {
		const tern_meta *it = tern_meta_item(m, k);
		const char *a, *b;
		size_t na, nb;
		if (tern_meta_type_of(it) == TERN_META_ARRAY && tern_meta_count(it) == 2) {
			a = tern_meta_as_string(tern_meta_item(it, 0), &na);
			b = tern_meta_as_string(tern_meta_item(it, 1), &nb);
		} else {
			size_t len;
			a = tern_meta_as_string(it, &len);
			const char *sp = a ? memchr(a, ' ', len) : NULL;
			b = sp ? sp + 1 : NULL;
			na = sp ? (size_t)(sp - a) : 0;
			nb = sp ? len - na - 1 : 0;
		}
		if (!a || !b) {
			rc = tern_error(ctx, TERN_E_FORMAT,
					"%s: merge %zu is not \"left right\" or [left, right]", what, k);
			break;
		}
		if (na + nb + 1 > cap) {
			cap = na + nb + 1;
			char *s = realloc(scratch, cap);
			if (!s) {
				rc = tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", what);
				break;
			}
			scratch = s;
		}
		rc = add_merge_text(t, ctx, what, k, a, na, b, nb, scratch);
	}
	free(scratch);
	return rc;
}

/* Store token i, GPT-2 decoding normal tokens; special ones stay raw. */
static int set_gpt2_text(text_tokenizer *t, tern_ctx *ctx, const char *what, int32_t i,
			 const char *s, size_t len, char *scratch)
{
	int ty = t->type[i];
	long n = tok_gpt2_decode(s, len, scratch);
	if (n < 0 || len == 0) {
		if (ty == TEXT_TOKEN_NORMAL || ty == TEXT_TOKEN_BYTE)
			return tern_error(ctx, TERN_E_FORMAT,
					  "%s: token %ld ('%.*s') is not GPT-2 byte-level text", what,
					  (long)i, (int)(len > 40 ? 40 : len), s);
		return tok_set_text(t, ctx, i, s, len);
	}
	if (ty != TEXT_TOKEN_NORMAL && ty != TEXT_TOKEN_BYTE)
		return tok_set_text(t, ctx, i, s, len);
	return tok_set_text(t, ctx, i, scratch, (size_t)n);
}

int tok_bpe_from_meta(tern_ctx *ctx, const tern_meta *meta, text_tokenizer **out)
{
	const char *what = "GGUF tokenizer";
	*out = NULL;
	/* Only the Llama-3 pre-tokenizer is implemented; a file that names
	 * none is taken to be Llama 3, the one byte-level BPE BitNet uses. */
	const char *pre = tern_meta_get_string(meta, "tokenizer.ggml.pre", "llama-bpe");
	if (strcmp(pre, "llama-bpe") != 0 && strcmp(pre, "llama3") != 0 &&
	    strcmp(pre, "llama-v3") != 0)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: pre-tokenizer '%s' is not supported (llama-bpe)", what, pre);
	const tern_meta *toks = tern_meta_get(meta, "tokenizer.ggml.tokens");
	const tern_meta *types = tern_meta_get(meta, "tokenizer.ggml.token_type");
	const tern_meta *merges = tern_meta_get(meta, "tokenizer.ggml.merges");
	size_t n = tern_meta_count(toks);
	if (tern_meta_type_of(toks) != TERN_META_ARRAY || n == 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: tokenizer.ggml.tokens is not a string array",
				  what);
	if (tern_meta_type_of(merges) != TERN_META_ARRAY)
		return tern_error(ctx, TERN_E_FORMAT, "%s: tokenizer.ggml.merges is missing", what);
	if (types && tern_meta_count(types) != n)
		return tern_error(ctx, TERN_E_FORMAT, "%s: %zu token types for %zu tokens", what,
				  tern_meta_count(types), n);
	size_t total = 0, maxlen = 0;
	for (size_t i = 0; i < n; i++) {
		size_t len;
		if (!tern_meta_as_string(tern_meta_item(toks, i), &len))
			return tern_error(ctx, TERN_E_FORMAT, "%s: token %zu is not a string", what, i);
		total += len;
		maxlen = len > maxlen ? len : maxlen;
	}
	text_tokenizer *t;
	int rc = tok_new(ctx, TEXT_TOK_BPE, n, total, &t);
	if (rc)
		return rc;
	char *scratch = malloc(maxlen + 1);
	if (!scratch)
		rc = tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", what);
	for (size_t i = 0; !rc && i < n; i++) {
		int64_t ty = TEXT_TOKEN_NORMAL;
		if (types && (tern_meta_as_int(tern_meta_item(types, i), &ty) || ty < 1 || ty > 6)) {
			rc = tern_error(ctx, TERN_E_FORMAT, "%s: token %zu has an invalid type", what, i);
			break;
		}
		t->type[i] = (uint8_t)ty;
		size_t len;
		const char *s = tern_meta_as_string(tern_meta_item(toks, i), &len);
		rc = set_gpt2_text(t, ctx, what, (int32_t)i, s, len, scratch);
	}
	free(scratch);
	if (!rc)
		rc = tok_build_map(t, ctx, NULL);
	if (!rc)
		rc = add_merges(t, ctx, what, merges);
	if (!rc) {
		t->add_bos = true;
		tok_meta_specials(t, meta);
		rc = tok_finish(t, ctx);
	}
	if (rc) {
		text_tok_free(t);
		return rc;
	}
	*out = t;
	return TERN_OK;
}

/* ---- tokenizer.json --------------------------------------------------- */

static int hf_build(tern_ctx *ctx, const char *path, const tern_meta *root, text_tokenizer **out)
{
	const tern_meta *model = tern_meta_get(root, "model");
	const char *type = tern_meta_get_string(model, "type", "");
	if (strcmp(type, "BPE") != 0)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: model type '%s' is not supported (byte-level BPE only)", path,
				  type);
	const tern_meta *vocab = tern_meta_get(model, "vocab");
	const tern_meta *merges = tern_meta_get(model, "merges");
	const tern_meta *added = tern_meta_get(root, "added_tokens");
	if (tern_meta_type_of(vocab) != TERN_META_OBJECT || tern_meta_type_of(merges) != TERN_META_ARRAY)
		return tern_error(ctx, TERN_E_FORMAT, "%s: model.vocab or model.merges is missing", path);
	size_t nv = tern_meta_count(vocab), na = tern_meta_count(added);
	int64_t max_id = -1;
	size_t total = 0, maxlen = 0;
	for (size_t pass = 0; pass < 2; pass++) {
		size_t cnt = pass ? na : nv;
		for (size_t i = 0; i < cnt; i++) {
			const tern_meta *it = pass ? tern_meta_item(added, i) : NULL;
			int64_t id;
			const char *s = pass ? tern_meta_get_string(it, "content", NULL)
					     : tern_meta_key(vocab, i);
			if (!s || tern_meta_as_int(pass ? tern_meta_get(it, "id") : tern_meta_item(vocab, i),
						   &id) ||
			    id < 0 || id >= TOK_MAX_VOCAB)
				return tern_error(ctx, TERN_E_FORMAT, "%s: %s entry %zu has no valid id",
						  path, pass ? "added_tokens" : "model.vocab", i);
			max_id = id > max_id ? id : max_id;
			size_t len = strlen(s);
			total += len;
			maxlen = len > maxlen ? len : maxlen;
		}
	}
	if (max_id < 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: empty vocabulary", path);
	text_tokenizer *t;
	int rc = tok_new(ctx, TEXT_TOK_BPE, (size_t)max_id + 1, total, &t);
	if (rc)
		return rc;
	char *scratch = malloc(maxlen + 1);
	if (!scratch)
		rc = tern_error(ctx, TERN_E_NOMEM, "%s: out of memory", path);
	/* Added tokens first, so their types are known when their text is set;
	 * an added token that repeats a vocab entry keeps the added type. */
	for (size_t i = 0; !rc && i < na; i++) {
		const tern_meta *it = tern_meta_item(added, i);
		int32_t id = (int32_t)tern_meta_get_int(it, "id", 0);
		const char *s = tern_meta_get_string(it, "content", "");
		if (t->off[id] != UINT32_MAX)
			continue;
		t->type[id] = tern_meta_get_bool(it, "special", true) ? TEXT_TOKEN_CONTROL
								    : TEXT_TOKEN_USER_DEFINED;
		rc = tok_set_text(t, ctx, id, s, strlen(s));
	}
	for (size_t i = 0; !rc && i < nv; i++) {
		int32_t id = (int32_t)tern_meta_get_int(tern_meta_item(vocab, i), "", 0);
		if (t->off[id] != UINT32_MAX) {
			if (t->type[id] == TEXT_TOKEN_NORMAL)
				rc = tern_error(ctx, TERN_E_FORMAT, "%s: id %ld appears twice in model.vocab",
						path, (long)id);
			continue;
		}
		const char *s = tern_meta_key(vocab, i);
		rc = set_gpt2_text(t, ctx, path, id, s, strlen(s), scratch);
	}
	free(scratch);
	if (!rc)
		rc = tok_build_map(t, ctx, NULL);
	if (!rc)
		rc = add_merges(t, ctx, path, merges);
	if (!rc) {
		static const char *const bos[] = { "<|begin_of_text|>", "<s>" };
		static const char *const eos[] = { "<|end_of_text|>", "</s>" };
		for (int k = 1; k >= 0; k--) {
			int32_t b = text_tok_find(t, bos[k], strlen(bos[k]));
			int32_t e = text_tok_find(t, eos[k], strlen(eos[k]));
			if (b >= 0)
				t->bos = b;
			if (e >= 0)
				t->eos = e;
		}
		t->eot = text_tok_find(t, "<|eot_id|>", 10);
		t->add_bos = t->bos >= 0;
		rc = tok_finish(t, ctx);
	}
	if (rc) {
		text_tok_free(t);
		return rc;
	}
	*out = t;
	return TERN_OK;
}

int text_tok_load_hf_json_memory(tern_ctx *ctx, const char *name, const char *data, size_t size,
				 text_tokenizer **out)
{
	*out = NULL;
	tern_meta *root = NULL;
	int rc = tern_meta_from_json(ctx, data, size, &root);
	if (rc)
		return rc;
	rc = hf_build(ctx, name ? name : "<memory>", root, out);
	tern_meta_free(root);
	return rc;
}

int text_tok_load_hf_json(tern_ctx *ctx, const char *path, text_tokenizer **out)
{
	char *data;
	size_t size;
	*out = NULL;
	int rc = tok_read_file(ctx, path, &data, &size);
	if (rc)
		return rc;
	rc = text_tok_load_hf_json_memory(ctx, path, data, size, out);
	free(data);
	return rc;
}
