/*
 * tokenizer.c: the parts of the text plugin's tokenizers that do not
 * depend on the vocabulary kind: building the vocabulary and its hash
 * map, the bigram merge loop, special-token splitting, the encode entry
 * points, decoding and the streaming detokenizer, and the GGUF metadata
 * dispatcher. The kind-specific parts live in tokenizer_bpe.c,
 * tokenizer_spm.c and tokenizer_l2c.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plugins/text/tokenizer_impl.h"
#include "plugins/text/unicode.h"

/* ---- small helpers ---------------------------------------------------- */

uint64_t tok_hash(const char *s, size_t len)
{
	/* FNV-1a: token strings are short, so a byte loop is as fast as
	 * anything wider and distributes well for an open-addressing table. */
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h ^ (h >> 29);
}

int tok_vec_push(tok_vec *v, tern_ctx *ctx, int32_t id)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 64, bytes;
		if (tern_size_mul(cap, sizeof *v->v, &bytes))
			return tern_error(ctx, TERN_E_OVERFLOW, "tokenizer: too many tokens");
		int32_t *p = realloc(v->v, bytes);
		if (!p)
			return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory (%zu ids)", cap);
		v->v = p;
		v->cap = cap;
	}
	v->v[v->n++] = id;
	return TERN_OK;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, tern_ctx *ctx)
{
	if (need <= *cap)
		return TERN_OK;
	size_t n = *cap ? *cap : 64, bytes;
	while (n < need)
		if (tern_size_mul(n, 2, &n))
			return tern_error(ctx, TERN_E_OVERFLOW, "tokenizer: text too long");
	if (tern_size_mul(n, elem, &bytes))
		return tern_error(ctx, TERN_E_OVERFLOW, "tokenizer: text too long");
	void *q = realloc(*p, bytes);
	if (!q)
		return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory (%zu bytes)", bytes);
	*p = q;
	*cap = n;
	return TERN_OK;
}

int tok_work_syms(tok_work *w, tern_ctx *ctx, size_t n)
{
	return grow((void **)&w->sym, &w->sym_cap, n, sizeof *w->sym, ctx);
}

int tok_work_buf(tok_work *w, tern_ctx *ctx, size_t n)
{
	return grow((void **)&w->buf, &w->buf_cap, n, 1, ctx);
}

void tok_work_free(tok_work *w)
{
	free(w->sym);
	free(w->heap);
	free(w->buf);
	free(w->cps);
	free(w->cpo);
	memset(w, 0, sizeof *w);
}

int tok_read_file(tern_ctx *ctx, const char *path, char **data, size_t *size)
{
	*data = NULL;
	*size = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return tern_error(ctx, TERN_E_IO, "%s: cannot open: %s", path, strerror(errno));
	/* Size it once so a large vocabulary is read in one call; the loop
	 * still copes with files that grow or report no size (pipes). */
	size_t cap = 0, n = 0, want = 65536;
	struct stat st;
	if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size < SIZE_MAX - 1)
		want = (size_t)st.st_size + 1;
	char *buf = NULL;
	int rc = grow((void **)&buf, &cap, want, 1, ctx);
	while (!rc) {
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
		if (n == cap)
			rc = grow((void **)&buf, &cap, cap + 1, 1, ctx);
	}
	if (!rc && ferror(f))
		rc = tern_error(ctx, TERN_E_IO, "%s: read error", path);
	fclose(f);
	if (rc) {
		free(buf);
		return rc;
	}
	*data = buf;
	*size = n;
	return TERN_OK;
}

/* ---- building --------------------------------------------------------- */

int tok_new(tern_ctx *ctx, text_tok_kind kind, size_t n, size_t text_bytes,
	    text_tokenizer **out)
{
	*out = NULL;
	if (n == 0 || n > TOK_MAX_VOCAB)
		return tern_error(ctx, TERN_E_FORMAT, "tokenizer: vocabulary of %zu tokens (1..%d)", n,
				  TOK_MAX_VOCAB);
	size_t arena;
	if (tern_size_add(text_bytes, n, &arena) || arena > UINT32_MAX)
		return tern_error(ctx, TERN_E_OVERFLOW, "tokenizer: %zu bytes of token text", text_bytes);
	text_tokenizer *t = calloc(1, sizeof *t);
	if (!t)
		return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory");
	t->kind = kind;
	t->n_vocab = (int32_t)n;
	t->text = malloc(arena);
	t->off = calloc(n, sizeof *t->off);
	t->len = calloc(n, sizeof *t->len);
	t->type = malloc(n);
	t->score = calloc(n, sizeof *t->score);
	if (!t->text || !t->off || !t->len || !t->type || !t->score) {
		text_tok_free(t);
		return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory (%zu tokens)", n);
	}
	memset(t->type, TEXT_TOKEN_NORMAL, n);
	t->bos = t->eos = t->eot = t->unk = -1;
	for (size_t i = 0; i < n; i++)
		t->off[i] = UINT32_MAX; /* not set yet */
	t->text_cap = (uint32_t)arena;
	*out = t;
	return TERN_OK;
}

int tok_set_text(text_tokenizer *t, tern_ctx *ctx, int32_t i, const char *s, size_t len)
{
	uint32_t pos = t->text_fill;
	if (i < 0 || i >= t->n_vocab || t->off[i] != UINT32_MAX)
		return tern_error(ctx, TERN_E_INTERNAL, "tokenizer: token %d set twice", (int)i);
	if (len >= t->text_cap - pos)
		return tern_error(ctx, TERN_E_INTERNAL, "tokenizer: token text arena too small");
	memcpy(t->text + pos, s, len);
	t->text[pos + len] = 0;
	t->off[i] = pos;
	t->len[i] = (uint32_t)len;
	t->text_fill = pos + (uint32_t)len + 1;
	return TERN_OK;
}

int tok_build_map(text_tokenizer *t, tern_ctx *ctx, int32_t *dup)
{
	if (dup)
		*dup = -1;
	for (int32_t i = 0; i < t->n_vocab; i++)
		if (t->off[i] == UINT32_MAX)
			return tern_error(ctx, TERN_E_FORMAT, "tokenizer: token %d has no text", (int)i);
	size_t cap = 16;
	while (cap < (size_t)t->n_vocab * 2)
		cap *= 2;
	t->map = malloc(cap * sizeof *t->map);
	if (!t->map)
		return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory (hash map)");
	memset(t->map, 0xff, cap * sizeof *t->map);
	t->map_mask = (uint32_t)(cap - 1);
	for (int32_t i = 0; i < t->n_vocab; i++) {
		const char *s = t->text + t->off[i];
		uint32_t h = (uint32_t)tok_hash(s, t->len[i]) & t->map_mask;
		for (;; h = (h + 1) & t->map_mask) {
			int32_t j = t->map[h];
			if (j < 0) {
				t->map[h] = i;
				break;
			}
			if (t->len[j] == t->len[i] && memcmp(t->text + t->off[j], s, t->len[i]) == 0) {
				if (dup && *dup < 0)
					*dup = i;
				break;
			}
		}
	}
	return TERN_OK;
}

int32_t text_tok_find(const text_tokenizer *t, const char *s, size_t len)
{
	uint32_t h = (uint32_t)tok_hash(s, len) & t->map_mask;
	for (;; h = (h + 1) & t->map_mask) {
		int32_t j = t->map[h];
		if (j < 0)
			return -1;
		if (t->len[j] == len && memcmp(t->text + t->off[j], s, len) == 0)
			return j;
	}
}

/* Longer specials first, so the longest spelled token wins; then by id. */
static bool special_before(const text_tokenizer *t, int32_t x, int32_t y)
{
	if (t->len[x] != t->len[y])
		return t->len[x] > t->len[y];
	return x < y;
}

/* An insertion sort: qsort has no context argument in C11, and the list
 * holds at most a few thousand ids, sorted once at load. */
static void sort_specials(text_tokenizer *t)
{
	for (uint32_t i = 1; i < t->n_special; i++) {
		int32_t x = t->special[i];
		uint32_t j = i;
		while (j > 0 && special_before(t, x, t->special[j - 1])) {
			t->special[j] = t->special[j - 1];
			j--;
		}
		t->special[j] = x;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* The byte a "<0xXX>" piece stands for, or -1. */
static int byte_piece(const char *s, size_t len)
{
	if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
		return -1;
	int hi = hexval(s[3]), lo = hexval(s[4]);
	return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

int tok_finish(text_tokenizer *t, tern_ctx *ctx)
{
	size_t n = (size_t)t->n_vocab;
	for (int b = 0; b < 256; b++) {
		char s[8];
		if (t->kind == TEXT_TOK_BPE) {
			s[0] = (char)b;
			t->byte_tok[b] = text_tok_find(t, s, 1);
		} else {
			snprintf(s, sizeof s, "<0x%02X>", b);
			t->byte_tok[b] = text_tok_find(t, s, 6);
		}
	}
	uint32_t ns = 0;
	for (size_t i = 0; i < n; i++) {
		int ty = t->type[i];
		if ((ty == TEXT_TOKEN_CONTROL || ty == TEXT_TOKEN_UNKNOWN ||
		     ty == TEXT_TOKEN_USER_DEFINED) && t->len[i] > 0)
			ns++;
	}
	if (ns) {
		t->special = malloc(ns * sizeof *t->special);
		if (!t->special)
			return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory");
		for (size_t i = 0; i < n; i++) {
			int ty = t->type[i];
			if ((ty == TEXT_TOKEN_CONTROL || ty == TEXT_TOKEN_UNKNOWN ||
			     ty == TEXT_TOKEN_USER_DEFINED) && t->len[i] > 0)
				t->special[t->n_special++] = (int32_t)i;
		}
		sort_specials(t);
	}
	if (t->kind == TEXT_TOK_SPM) {
		/* Pieces never grow: U+2581 shrinks to ' ' and "<0xXX>" to a byte. */
		size_t arena = 0;
		for (size_t i = 0; i < n; i++)
			arena += t->len[i] + 1;
		t->piece = malloc(arena);
		t->poff = malloc(n * sizeof *t->poff);
		t->plen = malloc(n * sizeof *t->plen);
		if (!t->piece || !t->poff || !t->plen)
			return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory");
		uint32_t pos = 0;
		for (size_t i = 0; i < n; i++) {
			const char *s = t->text + t->off[i];
			uint32_t len = t->len[i], k = 0;
			char *d = t->piece + pos;
			int byte = t->type[i] == TEXT_TOKEN_BYTE ? byte_piece(s, len) : -1;
			if (byte >= 0) {
				d[k++] = (char)byte;
			} else {
				for (uint32_t j = 0; j < len;) {
					if (len - j >= t->space_len &&
					    memcmp(s + j, t->space, t->space_len) == 0) {
						d[k++] = ' ';
						j += t->space_len;
					} else {
						d[k++] = s[j++];
					}
				}
			}
			d[k] = 0;
			t->poff[i] = pos;
			t->plen[i] = k;
			pos += k + 1;
		}
	}
	t->max_piece = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t l = t->plen ? t->plen[i] : t->len[i];
		if (l > t->max_piece)
			t->max_piece = l;
	}
	return TERN_OK;
}

void text_tok_free(text_tokenizer *t)
{
	if (!t)
		return;
	free(t->text);
	free(t->off);
	free(t->len);
	free(t->piece);
	free(t->poff);
	free(t->plen);
	free(t->score);
	free(t->type);
	free(t->map);
	free(t->pair_key);
	free(t->pair_rank);
	free(t->pair_id);
	free(t->special);
	free(t);
}

/* ---- properties ------------------------------------------------------- */

text_tok_kind text_tok_kind_of(const text_tokenizer *t)
{
	return t->kind;
}

int32_t text_tok_n_vocab(const text_tokenizer *t)
{
	return t->n_vocab;
}

int32_t text_tok_bos(const text_tokenizer *t)
{
	return t->bos;
}

int32_t text_tok_eos(const text_tokenizer *t)
{
	return t->eos;
}

int32_t text_tok_eot(const text_tokenizer *t)
{
	return t->eot;
}

bool text_tok_wants_bos(const text_tokenizer *t)
{
	return t->add_bos && t->bos >= 0;
}

bool text_tok_is_eog(const text_tokenizer *t, int32_t id)
{
	return id >= 0 && (id == t->eos || id == t->eot);
}

int text_tok_type(const text_tokenizer *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab ? t->type[id] : 0;
}

const char *text_tok_text(const text_tokenizer *t, int32_t id, size_t *len)
{
	if (id < 0 || id >= t->n_vocab)
		return NULL;
	if (len)
		*len = t->len[id];
	return t->text + t->off[id];
}

/* ---- the merge loop --------------------------------------------------- */

static bool bigram_before(const tok_bigram *a, const tok_bigram *b)
{
	return a->prio < b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(tok_work *w, tern_ctx *ctx, const tok_bigram *b)
{
	int rc = grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof *w->heap, ctx);
	if (rc)
		return rc;
	size_t i = w->heap_n++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!bigram_before(b, &w->heap[p]))
			break;
		w->heap[i] = w->heap[p];
		i = p;
	}
	w->heap[i] = *b;
	return TERN_OK;
}

static tok_bigram heap_pop(tok_work *w)
{
	tok_bigram top = w->heap[0], last = w->heap[--w->heap_n];
	size_t i = 0, n = w->heap_n;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && bigram_before(&w->heap[c + 1], &w->heap[c]))
			c++;
		if (!bigram_before(&w->heap[c], &last))
			break;
		w->heap[i] = w->heap[c];
		i = c;
	}
	if (n)
		w->heap[i] = last;
	return top;
}

static int try_pair(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w, const char *s,
		    int32_t l, int32_t r, tok_pair_fn pair)
{
	if (l < 0 || r < 0)
		return TERN_OK;
	tok_bigram b;
	if (!pair(tok, s, &w->sym[l], &w->sym[r], &b.prio, &b.id))
		return TERN_OK;
	b.left = l;
	b.right = r;
	b.size = w->sym[l].n + w->sym[r].n;
	return heap_push(w, ctx, &b);
}

int tok_merge(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w, const char *s, size_t n,
	      tok_pair_fn pair)
{
	w->heap_n = 0;
	for (size_t i = 1; i < n; i++) {
		int rc = try_pair(tok, ctx, w, s, (int32_t)i - 1, (int32_t)i, pair);
		if (rc)
			return rc;
	}
	while (w->heap_n) {
		tok_bigram b = heap_pop(w);
		tok_sym *l = &w->sym[b.left], *r = &w->sym[b.right];
		if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
			continue;
		l->n += r->n;
		l->id = b.id;
		r->n = 0;
		l->next = r->next;
		if (r->next >= 0)
			w->sym[r->next].prev = b.left;
		int rc = try_pair(tok, ctx, w, s, l->prev, b.left, pair);
		if (!rc)
			rc = try_pair(tok, ctx, w, s, b.left, l->next, pair);
		if (rc)
			return rc;
	}
	return TERN_OK;
}

/* ---- encoding --------------------------------------------------------- */

static int encode_fragment(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w,
			   const char *s, size_t n, bool *prev_special, tok_vec *out)
{
	if (n == 0)
		return TERN_OK;
	int rc;
	if (tok->kind == TEXT_TOK_BPE)
		rc = tok_bpe_encode(tok, ctx, w, s, n, out);
	else
		rc = tok_spm_encode(tok, ctx, w, s, n, tok->add_space_prefix && *prev_special, out);
	*prev_special = false;
	return rc;
}

/* The longest special token spelled at s[0..n), or -1. */
static int32_t match_special(const text_tokenizer *tok, const char *s, size_t n, bool all)
{
	for (uint32_t k = 0; k < tok->n_special; k++) {
		int32_t id = tok->special[k];
		uint32_t len = tok->len[id];
		if (!all && tok->type[id] != TEXT_TOKEN_USER_DEFINED)
			continue;
		if (len <= n && memcmp(s, tok->text + tok->off[id], len) == 0)
			return id;
	}
	return -1;
}

static int encode_vec(const text_tokenizer *tok, tern_ctx *ctx, const char *text, size_t len,
		      int flags, tok_vec *out)
{
	if (!tok || (!text && len))
		return tern_error(ctx, TERN_E_INVALID, "tokenizer: NULL argument");
	size_t bad = text_utf8_check(text, len);
	if (bad < len)
		return tern_error(ctx, TERN_E_INVALID,
				  "tokenizer: invalid UTF-8 at byte offset %zu (byte 0x%02X)", bad,
				  (unsigned)(unsigned char)text[bad]);
	int rc = TERN_OK;
	if ((flags & TEXT_TOK_ADD_BOS) && tok->bos >= 0)
		rc = tok_vec_push(out, ctx, tok->bos);
	bool all = (flags & TEXT_TOK_PARSE_SPECIAL) != 0, prev_special = true;
	/* First bytes of the specials that may match, to skip most positions
	 * with one test. */
	uint8_t first[256] = { 0 };
	bool any = false;
	for (uint32_t k = 0; k < tok->n_special; k++) {
		int32_t id = tok->special[k];
		if (all || tok->type[id] == TEXT_TOKEN_USER_DEFINED) {
			first[(unsigned char)tok->text[tok->off[id]]] = 1;
			any = true;
		}
	}
	tok_work w = { 0 };
	size_t start = 0;
	for (size_t i = 0; any && !rc && i < len;) {
		int32_t id = first[(unsigned char)text[i]] ? match_special(tok, text + i, len - i, all)
							   : -1;
		if (id < 0) {
			i++;
			continue;
		}
		rc = encode_fragment(tok, ctx, &w, text + start, i - start, &prev_special, out);
		if (!rc)
			rc = tok_vec_push(out, ctx, id);
		prev_special = true;
		i += tok->len[id];
		start = i;
	}
	if (!rc)
		rc = encode_fragment(tok, ctx, &w, text + start, len - start, &prev_special, out);
	tok_work_free(&w);
	return rc;
}

int text_tok_encode(const text_tokenizer *tok, tern_ctx *ctx, const char *text, size_t len,
		    int flags, int32_t *ids, size_t cap, size_t *n_ids)
{
	tok_vec v = { 0 };
	*n_ids = 0;
	int rc = encode_vec(tok, ctx, text, len, flags, &v);
	if (!rc) {
		*n_ids = v.n;
		if (v.n > cap)
			rc = tern_error(ctx, TERN_E_OVERFLOW,
					"tokenizer: the text needs %zu ids, the buffer holds %zu", v.n,
					cap);
		else if (v.n)
			memcpy(ids, v.v, v.n * sizeof *ids);
	}
	free(v.v);
	return rc;
}

int text_tok_encode_alloc(const text_tokenizer *tok, tern_ctx *ctx, const char *text,
			  size_t len, int flags, int32_t **ids, size_t *n_ids)
{
	tok_vec v = { 0 };
	*ids = NULL;
	*n_ids = 0;
	int rc = encode_vec(tok, ctx, text, len, flags, &v);
	if (!rc && !v.v && !(v.v = malloc(sizeof *v.v)))
		rc = tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory");
	if (rc) {
		free(v.v);
		return rc;
	}
	*ids = v.v;
	*n_ids = v.n;
	return TERN_OK;
}

/* ---- decoding --------------------------------------------------------- */

const char *text_tok_piece(const text_tokenizer *t, int32_t id, int flags, size_t *len)
{
	*len = 0;
	if (id < 0 || id >= t->n_vocab)
		return "";
	int ty = t->type[id];
	if ((ty == TEXT_TOKEN_CONTROL || ty == TEXT_TOKEN_UNKNOWN) &&
	    !(flags & TEXT_TOK_RENDER_SPECIAL))
		return "";
	if (t->plen) {
		*len = t->plen[id];
		return t->piece + t->poff[id];
	}
	*len = t->len[id];
	return t->text + t->off[id];
}

struct text_detok {
	const text_tokenizer *tok;
	int flags;
	bool at_start;       /* nothing emitted yet: a first space is the dummy prefix */
	unsigned char hold[4];
	size_t n_hold;
	unsigned char *in;   /* held bytes + the current piece */
	char *out;           /* max 3 output bytes per input byte */
	size_t in_cap;
};

int text_detok_new(tern_ctx *ctx, const text_tokenizer *tok, int flags, text_detok **out)
{
	*out = NULL;
	text_detok *d = calloc(1, sizeof *d);
	if (!d)
		return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory");
	d->tok = tok;
	d->flags = flags;
	d->in_cap = (size_t)tok->max_piece + 4;
	d->in = malloc(d->in_cap);
	d->out = malloc(d->in_cap * 3 + 1);
	if (!d->in || !d->out) {
		text_detok_free(d);
		return tern_error(ctx, TERN_E_NOMEM, "tokenizer: out of memory");
	}
	text_detok_reset(d);
	*out = d;
	return TERN_OK;
}

void text_detok_free(text_detok *d)
{
	if (!d)
		return;
	free(d->in);
	free(d->out);
	free(d);
}

void text_detok_reset(text_detok *d)
{
	d->at_start = true;
	d->n_hold = 0;
}

static size_t put_replacement(char *o)
{
	memcpy(o, "\xEF\xBF\xBD", 3);
	return 3;
}

int text_detok_push(text_detok *d, tern_ctx *ctx, int32_t id, const char **out, size_t *len)
{
	const text_tokenizer *t = d->tok;
	*out = d->out;
	*len = 0;
	d->out[0] = 0;
	if (id < 0 || id >= t->n_vocab)
		return tern_error(ctx, TERN_E_INVALID, "tokenizer: id %ld outside the vocabulary of %ld",
				  (long)id, (long)t->n_vocab);
	if (id == t->bos)
		d->at_start = true;
	size_t plen;
	const char *p = text_tok_piece(t, id, d->flags, &plen);
	if (plen == 0)
		return TERN_OK;
	/* SentencePiece: the marker may also arrive as byte tokens (when the
	 * vocabulary lacks a piece for it), so it is mapped back to a space per
	 * character here, and the dummy prefix is dropped as the first
	 * character of the text, whichever tokens carried it. */
	bool spm = t->kind == TEXT_TOK_SPM;
	bool marker = spm && t->space_len == 3;
	bool strip = spm && t->add_space_prefix;
	memcpy(d->in, d->hold, d->n_hold);
	memcpy(d->in + d->n_hold, p, plen);
	size_t n = d->n_hold + plen, i = 0, k = 0;
	d->n_hold = 0;
	while (i < n) {
		uint32_t cp;
		int r = text_utf8_next(d->in + i, n - i, &cp);
		if (r > 0) {
			const char *c = (const char *)d->in + i;
			size_t cl = (size_t)r;
			i += cl;
			if (marker && cp == 0x2581) {
				c = " ";
				cl = 1;
			}
			bool first = d->at_start;
			d->at_start = false;
			if (first && strip && c[0] == ' ')
				continue;
			memcpy(d->out + k, c, cl);
			k += cl;
		} else if (r == TEXT_UTF8_INCOMPLETE) {
			d->n_hold = n - i;
			memcpy(d->hold, d->in + i, d->n_hold);
			break;
		} else {
			k += put_replacement(d->out + k);
			d->at_start = false;
			i++;
		}
	}
	d->out[k] = 0;
	*len = k;
	return TERN_OK;
}

void text_detok_flush(text_detok *d, const char **out, size_t *len)
{
	size_t k = 0;
	if (d->n_hold)
		k = put_replacement(d->out);
	d->out[k] = 0;
	*out = d->out;
	*len = k;
	text_detok_reset(d);
}

int text_tok_decode(const text_tokenizer *tok, tern_ctx *ctx, const int32_t *ids, size_t n,
		    int flags, char **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	text_detok *d;
	int rc = text_detok_new(ctx, tok, flags, &d);
	if (rc)
		return rc;
	char *buf = NULL;
	size_t used = 0, cap = 0;
	for (size_t i = 0; i <= n && !rc; i++) {
		const char *s;
		size_t sl;
		if (i < n)
			rc = text_detok_push(d, ctx, ids[i], &s, &sl);
		else
			text_detok_flush(d, &s, &sl);
		if (!rc)
			rc = grow((void **)&buf, &cap, used + sl + 1, 1, ctx);
		if (!rc) {
			memcpy(buf + used, s, sl);
			used += sl;
			buf[used] = 0;
		}
	}
	text_detok_free(d);
	if (rc) {
		free(buf);
		return rc;
	}
	*out = buf;
	*len = used;
	return TERN_OK;
}

/* ---- GGUF metadata ---------------------------------------------------- */

void tok_meta_specials(text_tokenizer *t, const tern_meta *meta)
{
	static const char *const keys[] = { "tokenizer.ggml.bos_token_id",
					    "tokenizer.ggml.eos_token_id",
					    "tokenizer.ggml.eot_token_id",
					    "tokenizer.ggml.unknown_token_id" };
	int32_t *dst[] = { &t->bos, &t->eos, &t->eot, &t->unk };
	for (int k = 0; k < 4; k++) {
		int64_t v = tern_meta_get_int(meta, keys[k], -2);
		if (v >= 0 && v < t->n_vocab)
			*dst[k] = (int32_t)v;
		else if (v != -2)
			*dst[k] = -1;
	}
	t->add_bos = tern_meta_get_bool(meta, "tokenizer.ggml.add_bos_token", t->add_bos);
	t->add_space_prefix =
		tern_meta_get_bool(meta, "tokenizer.ggml.add_space_prefix", t->add_space_prefix);
}

int text_tok_from_meta(tern_ctx *ctx, const tern_meta *meta, text_tokenizer **out)
{
	*out = NULL;
	const char *model = tern_meta_get_string(meta, "tokenizer.ggml.model", NULL);
	if (!model)
		return tern_error(ctx, TERN_E_NOT_FOUND,
				  "tokenizer: metadata has no string 'tokenizer.ggml.model'");
	if (strcmp(model, "llama") == 0)
		return tok_spm_from_meta(ctx, meta, out);
	if (strcmp(model, "gpt2") == 0)
		return tok_bpe_from_meta(ctx, meta, out);
	return tern_error(ctx, TERN_E_UNSUPPORTED,
			  "tokenizer: tokenizer.ggml.model '%s' is not supported (llama, gpt2)",
			  model);
}

/* ---- tokenizers inside model files ------------------------------------- */

/* A tokenizer file embedded as the bytes of an i8 tensor (the text
 * plugin's converters write these). */
static int from_tensor(tern_ctx *ctx, const tern_file *file, const tern_meta *desc,
		       text_tokenizer **out)
{
	const char *path = tern_file_path(file);
	const char *format = tern_meta_get_string(desc, "format", "");
	const char *name = tern_meta_get_string(desc, "tensor", "");
	int64_t size = tern_meta_get_int(desc, "size", -1);
	const tern_tensor *t = tern_file_find(file, name);
	if (!t)
		return tern_error(ctx, TERN_E_FORMAT, "%s: tokenizer tensor '%s' is missing", path,
				  name);
	if (t->dtype != TERN_DTYPE_I8 || t->q.kind != TERN_SCALE_NONE || t->n_dims != 1 ||
	    size < 0 || size > t->shape[0] || (uint64_t)size > t->nbytes)
		return tern_error(ctx, TERN_E_FORMAT,
				  "%s: tokenizer tensor '%s' must be a plain i8 vector of at least "
				  "'size' (%lld) bytes",
				  path, name, (long long)size);
	char what[512];
	snprintf(what, sizeof what, "%s: tokenizer '%s'", path, name);
	if (strcmp(format, "llama2c") == 0)
		return text_tok_load_l2c_memory(ctx, what, t->data, (size_t)size, out);
	if (strcmp(format, "spm") == 0)
		return text_tok_load_spm_model_memory(ctx, what, t->data, (size_t)size, out);
	if (strcmp(format, "hf-json") == 0)
		return text_tok_load_hf_json_memory(ctx, what, t->data, (size_t)size, out);
	return tern_error(ctx, TERN_E_UNSUPPORTED,
			  "%s: tokenizer format '%s' is not one of llama2c, spm, hf-json", path,
			  format);
}

int text_tok_from_file(tern_ctx *ctx, const tern_file *file, text_tokenizer **out)
{
	*out = NULL;
	const tern_meta *root = tern_file_meta(file);
	if (tern_file_format_of(file) == TERN_FORMAT_GGUF)
		return text_tok_from_meta(ctx, root, out);
	const tern_meta *tok = tern_meta_get(root, "tokenizer");
	if (tern_meta_type_of(tok) == TERN_META_OBJECT) {
		if (tern_meta_get(tok, "tensor"))
			return from_tensor(ctx, file, tok, out);
		return text_tok_from_meta(ctx, tok, out);
	}
	const tern_meta *gguf = tern_meta_get(root, "gguf");
	if (tern_meta_type_of(gguf) == TERN_META_OBJECT &&
	    tern_meta_get(gguf, "tokenizer.ggml.model"))
		return text_tok_from_meta(ctx, gguf, out);
	return tern_error(ctx, TERN_E_NOT_FOUND, "%s: the model file holds no tokenizer",
			  tern_file_path(file));
}
