/*
 * tokenizer_spm.c: SentencePiece BPE encoding as llama.cpp does it, and
 * the loaders of SentencePiece vocabularies (GGUF "llama" metadata and
 * the protobuf tokenizer.model). Spaces become the marker U+2581, one is
 * prepended, the text is split into characters, and adjacent symbols
 * whose concatenation is a piece merge, highest piece score first
 * (leftmost on ties). Characters no piece covers fall back to their
 * <0xXX> byte pieces.
 */
#include <stdlib.h>
#include <string.h>

#include "plugins/text/tokenizer_impl.h"
#include "plugins/text/unicode.h"

static bool pair_by_score(const text_tokenizer *tok, const char *s, const tok_sym *l,
			  const tok_sym *r, double *prio, int32_t *id)
{
	int32_t x = text_tok_find(tok, s + l->start, l->n + r->n);
	if (x < 0)
		return false;
	*prio = -(double)tok->score[x];
	*id = x;
	return true;
}

int tok_spm_encode(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w, const char *s,
		   size_t n, bool prefix, tok_vec *out)
{
	/* Escaped text: every ' ' becomes the marker, which may be longer. */
	size_t spaces = prefix, cap;
	for (size_t i = 0; i < n; i++)
		spaces += s[i] == ' ';
	if (tern_size_mul(spaces, tok->space_len, &cap) || tern_size_add(cap, n, &cap))
		return tern_error(ctx, TERN_E_OVERFLOW, "tokenizer: text too long");
	if (cap >= INT32_MAX)
		return tern_error(ctx, TERN_E_OVERFLOW, "tokenizer: a fragment of %zu bytes is too long",
				  n);
	int rc = tok_work_buf(w, ctx, cap + 1);
	if (!rc)
		rc = tok_work_syms(w, ctx, cap);
	if (rc)
		return rc;
	char *e = w->buf;
	size_t m = 0;
	if (prefix) {
		memcpy(e, tok->space, tok->space_len);
		m = tok->space_len;
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] == ' ') {
			memcpy(e + m, tok->space, tok->space_len);
			m += tok->space_len;
		} else {
			e[m++] = s[i];
		}
	}
	/* One symbol per character; the text was validated as UTF-8. */
	size_t ns = 0;
	for (size_t i = 0; i < m; ns++) {
		uint32_t cp;
		int r = text_utf8_next((const unsigned char *)e + i, m - i, &cp);
		if (r <= 0)
			return tern_error(ctx, TERN_E_INVALID, "tokenizer: invalid UTF-8 at byte offset %zu",
					  i);
		tok_sym *y = &w->sym[ns];
		y->prev = (int32_t)ns - 1;
		y->next = (int32_t)ns + 1;
		y->start = (uint32_t)i;
		y->n = (uint32_t)r;
		y->id = -1;
		i += (size_t)r;
	}
	if (ns == 0)
		return TERN_OK;
	w->sym[ns - 1].next = -1;
	rc = tok_merge(tok, ctx, w, e, ns, pair_by_score);
	for (int32_t i = 0; !rc && i >= 0; i = w->sym[i].next) {
		const tok_sym *y = &w->sym[i];
		int32_t id = y->id >= 0 ? y->id : text_tok_find(tok, e + y->start, y->n);
		if (id >= 0) {
			rc = tok_vec_push(out, ctx, id);
			continue;
		}
		for (uint32_t k = 0; !rc && k < y->n; k++) {
			unsigned b = (unsigned char)e[y->start + k];
			id = tok->byte_tok[b] >= 0 ? tok->byte_tok[b] : tok->unk;
			if (id < 0)
				rc = tern_error(ctx, TERN_E_FORMAT,
						"tokenizer: byte 0x%02X has no piece and there is no <unk>",
						b);
			else
				rc = tok_vec_push(out, ctx, id);
		}
	}
	return rc;
}

static void spm_defaults(text_tokenizer *t, const char *marker)
{
	size_t l = strlen(marker);
	memcpy(t->space, marker, l);
	t->space_len = (uint32_t)l;
	t->add_space_prefix = true;
	t->add_bos = true;
}

int tok_spm_from_meta(tern_ctx *ctx, const tern_meta *meta, text_tokenizer **out)
{
	const char *what = "GGUF tokenizer";
	*out = NULL;
	const tern_meta *toks = tern_meta_get(meta, "tokenizer.ggml.tokens");
	const tern_meta *scores = tern_meta_get(meta, "tokenizer.ggml.scores");
	const tern_meta *types = tern_meta_get(meta, "tokenizer.ggml.token_type");
	size_t n = tern_meta_count(toks);
	if (tern_meta_type_of(toks) != TERN_META_ARRAY || n == 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: tokenizer.ggml.tokens is not a string array",
				  what);
	if (scores && tern_meta_count(scores) != n)
		return tern_error(ctx, TERN_E_FORMAT, "%s: %zu scores for %zu tokens", what,
				  tern_meta_count(scores), n);
	if (types && tern_meta_count(types) != n)
		return tern_error(ctx, TERN_E_FORMAT, "%s: %zu token types for %zu tokens", what,
				  tern_meta_count(types), n);
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		size_t len;
		if (!tern_meta_as_string(tern_meta_item(toks, i), &len))
			return tern_error(ctx, TERN_E_FORMAT, "%s: token %zu is not a string", what, i);
		total += len;
	}
	text_tokenizer *t;
	int rc = tok_new(ctx, TEXT_TOK_SPM, n, total, &t);
	if (rc)
		return rc;
	spm_defaults(t, "\xE2\x96\x81");
	for (size_t i = 0; !rc && i < n; i++) {
		size_t len;
		const char *s = tern_meta_as_string(tern_meta_item(toks, i), &len);
		double sc = 0;
		int64_t ty = TEXT_TOKEN_NORMAL;
		if (scores && tern_meta_as_double(tern_meta_item(scores, i), &sc))
			rc = tern_error(ctx, TERN_E_FORMAT, "%s: score %zu is not a number", what, i);
		else if (types && (tern_meta_as_int(tern_meta_item(types, i), &ty) || ty < 1 || ty > 6))
			rc = tern_error(ctx, TERN_E_FORMAT, "%s: token %zu has an invalid type", what, i);
		else
			rc = tok_set_text(t, ctx, (int32_t)i, s, len);
		t->score[i] = (float)sc;
		t->type[i] = (uint8_t)ty;
	}
	if (!rc)
		rc = tok_build_map(t, ctx, NULL);
	if (!rc) {
		t->unk = 0;
		t->bos = n > 1 ? 1 : -1;
		t->eos = n > 2 ? 2 : -1;
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

/* ---- the protobuf tokenizer.model ------------------------------------- */

/* A bounded reader over one protobuf message. */
typedef struct pb {
	const unsigned char *p, *end, *base;
	const char *name;
	tern_ctx *ctx;
} pb;

static int pb_fail(pb *b, const char *what)
{
	return tern_error(b->ctx, TERN_E_FORMAT, "%s: byte offset %ld: %s", b->name,
			  (long)(b->p - b->base), what);
}

static int pb_varint(pb *b, uint64_t *v)
{
	uint64_t x = 0;
	for (int shift = 0; shift < 64; shift += 7) {
		if (b->p >= b->end)
			return pb_fail(b, "varint runs past the end");
		unsigned c = *b->p++;
		x |= (uint64_t)(c & 0x7F) << shift;
		if (!(c & 0x80)) {
			*v = x;
			return TERN_OK;
		}
	}
	return pb_fail(b, "varint longer than 10 bytes");
}

/* Read a field header; wire types 3/4 (groups) are refused. */
static int pb_key(pb *b, uint32_t *field, int *wire)
{
	uint64_t k;
	int rc = pb_varint(b, &k);
	if (rc)
		return rc;
	*field = (uint32_t)(k >> 3);
	*wire = (int)(k & 7);
	if (*wire != 0 && *wire != 1 && *wire != 2 && *wire != 5)
		return pb_fail(b, "unsupported protobuf wire type");
	return TERN_OK;
}

/* A length-delimited payload as a sub-reader. */
static int pb_len(pb *b, pb *sub)
{
	uint64_t n;
	int rc = pb_varint(b, &n);
	if (rc)
		return rc;
	if (n > (uint64_t)(b->end - b->p))
		return pb_fail(b, "length-delimited field runs past the end");
	*sub = *b;
	sub->end = b->p + n;
	b->p += n;
	return TERN_OK;
}

static int pb_skip(pb *b, int wire)
{
	uint64_t v;
	pb sub;
	switch (wire) {
	case 0:
		return pb_varint(b, &v);
	case 1:
	case 5: {
		size_t n = wire == 1 ? 8 : 4;
		if ((size_t)(b->end - b->p) < n)
			return pb_fail(b, "fixed-size field runs past the end");
		b->p += n;
		return TERN_OK;
	}
	default:
		return pb_len(b, &sub);
	}
}

typedef struct spm_piece {
	const char *s;
	size_t len;
	float score;
	int type;
} spm_piece;

static int pb_piece(pb *b, spm_piece *out)
{
	out->s = NULL;
	out->len = 0;
	out->score = 0;
	out->type = TEXT_TOKEN_NORMAL;
	while (b->p < b->end) {
		uint32_t f;
		int wire, rc = pb_key(b, &f, &wire);
		if (rc)
			return rc;
		if (f == 1 && wire == 2) {
			pb s;
			if ((rc = pb_len(b, &s)))
				return rc;
			out->s = (const char *)s.p;
			out->len = (size_t)(s.end - s.p);
		} else if (f == 2 && wire == 5) {
			if (b->end - b->p < 4)
				return pb_fail(b, "score runs past the end");
			uint32_t u = (uint32_t)b->p[0] | (uint32_t)b->p[1] << 8 |
				     (uint32_t)b->p[2] << 16 | (uint32_t)b->p[3] << 24;
			memcpy(&out->score, &u, 4);
			b->p += 4;
		} else if (f == 3 && wire == 0) {
			uint64_t v;
			if ((rc = pb_varint(b, &v)))
				return rc;
			if (v < 1 || v > 6)
				return pb_fail(b, "piece type is not 1..6");
			out->type = (int)v;
		} else if ((rc = pb_skip(b, wire))) {
			return rc;
		}
	}
	if (!out->s || out->len == 0)
		return pb_fail(b, "piece without text");
	return TERN_OK;
}

typedef struct spm_spec {
	int64_t model_type, unk, bos, eos;
	bool add_dummy_prefix;
} spm_spec;

/* The TrainerSpec (ids, model type) and NormalizerSpec (dummy prefix)
 * fields the encoder needs; everything else is skipped. */
static int pb_spec(pb *b, bool trainer, spm_spec *sp)
{
	while (b->p < b->end) {
		uint32_t f;
		int wire, rc = pb_key(b, &f, &wire);
		if (rc)
			return rc;
		if (wire != 0) {
			if ((rc = pb_skip(b, wire)))
				return rc;
			continue;
		}
		uint64_t v;
		if ((rc = pb_varint(b, &v)))
			return rc;
		int64_t iv = (int64_t)v; /* int32 fields are sign-extended varints */
		if (trainer) {
			if (f == 3)
				sp->model_type = iv;
			else if (f == 40)
				sp->unk = iv;
			else if (f == 41)
				sp->bos = iv;
			else if (f == 42)
				sp->eos = iv;
		} else if (f == 3) {
			sp->add_dummy_prefix = v != 0;
		}
	}
	return TERN_OK;
}

int text_tok_load_spm_model_memory(tern_ctx *ctx, const char *name, const void *data,
				   size_t size, text_tokenizer **out)
{
	*out = NULL;
	if (!name)
		name = "<memory>";
	pb b = { data, (const unsigned char *)data + size, data, name, ctx };
	spm_spec sp = { 1, 0, 1, 2, true }; /* the proto defaults */
	size_t n = 0, total = 0;
	int rc = TERN_OK;
	/* Pass 1: count pieces, read the specs, check every piece parses. */
	while (!rc && b.p < b.end) {
		uint32_t f;
		int wire;
		pb sub;
		if ((rc = pb_key(&b, &f, &wire)))
			break;
		if (wire != 2) {
			rc = pb_skip(&b, wire);
			continue;
		}
		if ((rc = pb_len(&b, &sub)))
			break;
		if (f == 1) {
			spm_piece pc;
			if (!(rc = pb_piece(&sub, &pc))) {
				n++;
				total += pc.len;
			}
		} else if (f == 2 || f == 3) {
			rc = pb_spec(&sub, f == 2, &sp);
		}
	}
	if (rc)
		return rc;
	if (n == 0)
		return tern_error(ctx, TERN_E_FORMAT, "%s: no pieces (not a SentencePiece model?)",
				  name);
	if (sp.model_type != 2)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "%s: SentencePiece model type %lld is not supported (BPE = 2)", name,
				  (long long)sp.model_type);
	text_tokenizer *t;
	if ((rc = tok_new(ctx, TEXT_TOK_SPM, n, total, &t)))
		return rc;
	spm_defaults(t, "\xE2\x96\x81");
	b.p = b.base;
	size_t i = 0;
	while (!rc && b.p < b.end) {
		uint32_t f;
		int wire;
		pb sub;
		if ((rc = pb_key(&b, &f, &wire)))
			break;
		if (wire != 2) {
			rc = pb_skip(&b, wire);
			continue;
		}
		if ((rc = pb_len(&b, &sub)) || f != 1)
			continue;
		spm_piece pc;
		if (!(rc = pb_piece(&sub, &pc))) {
			t->score[i] = pc.score;
			t->type[i] = (uint8_t)pc.type;
			rc = tok_set_text(t, ctx, (int32_t)i, pc.s, pc.len);
			i++;
		}
	}
	if (!rc)
		rc = tok_build_map(t, ctx, NULL);
	if (!rc) {
		int64_t ids[3] = { sp.unk, sp.bos, sp.eos };
		int32_t *dst[3] = { &t->unk, &t->bos, &t->eos };
		for (int k = 0; k < 3; k++)
			*dst[k] = ids[k] >= 0 && ids[k] < (int64_t)n ? (int32_t)ids[k] : -1;
		t->add_space_prefix = sp.add_dummy_prefix;
		rc = tok_finish(t, ctx);
	}
	if (rc) {
		text_tok_free(t);
		return rc;
	}
	*out = t;
	return TERN_OK;
}

int text_tok_load_spm_model(tern_ctx *ctx, const char *path, text_tokenizer **out)
{
	char *data;
	size_t size;
	*out = NULL;
	int rc = tok_read_file(ctx, path, &data, &size);
	if (rc)
		return rc;
	rc = text_tok_load_spm_model_memory(ctx, path, data, size, out);
	free(data);
	return rc;
}
