/*
 * tokenizer_impl.h: what the tokenizer sources share behind tokenizer.h:
 * the vocabulary struct, its building helpers, the hash maps, the growing
 * id vector and the symbol/bigram merge loop that both BPE and
 * SentencePiece run. Only tokenizer*.c include it.
 */
#ifndef TERN_TEXT_TOKENIZER_IMPL_H
#define TERN_TEXT_TOKENIZER_IMPL_H

#include "plugins/text/tokenizer.h"

/* Vocabularies above this are refused: ids are int32 and string offsets
 * uint32. */
#define TOK_MAX_VOCAB (1 << 24)

struct text_tokenizer {
	text_tok_kind kind;
	int32_t n_vocab;
	/* Vocabulary strings, the lookup keys: token i is text[off[i]] with
	 * len[i] bytes (NUL-terminated in the arena). */
	char *text;
	uint32_t *off, *len;
	uint32_t text_fill, text_cap; /* arena use while loading */
	/* What each token decodes to, when it differs from text (SentencePiece);
	 * NULL means piece == text. */
	char *piece;
	uint32_t *poff, *plen;
	float *score;   /* [n_vocab], SentencePiece merge priority */
	uint8_t *type;  /* [n_vocab], text_token_type */
	/* text -> id, open addressing over a power-of-two table of ids (-1 empty). */
	int32_t *map;
	uint32_t map_mask;
	/* BPE merge ranks: either the rank of a pair is the id of its
	 * concatenation (tiktoken), or pairs of ids map to a merge rank and the
	 * merged id (GGUF/tokenizer.json merges lists). */
	bool rank_is_id;
	uint64_t *pair_key;   /* (left << 32 | right) + 1, 0 = empty */
	int32_t *pair_rank, *pair_id;
	uint32_t pair_mask;
	int32_t byte_tok[256]; /* the token of each single byte, -1 if none */
	int32_t bos, eos, eot, unk;
	bool add_bos;
	bool add_space_prefix;   /* SentencePiece dummy prefix */
	char space[4];           /* SentencePiece space marker ("\u2581" or " ") */
	uint32_t space_len;
	/* Tokens matched whole in the text, longest first. */
	int32_t *special;
	uint32_t n_special;
	uint32_t max_piece;      /* longest decoded piece, for the stream buffer */
};

/* A growing array of ids. */
typedef struct tok_vec {
	int32_t *v;
	size_t n, cap;
} tok_vec;

int tok_vec_push(tok_vec *v, tern_ctx *ctx, int32_t id);

/* Symbols of the merge loop: contiguous spans of the text being encoded,
 * linked in order; n == 0 marks a symbol merged into its left neighbour. */
typedef struct tok_sym {
	int32_t prev, next;
	uint32_t start, n;
	int32_t id;          /* token of the span, -1 when unknown */
} tok_sym;

typedef struct tok_bigram {
	double prio;         /* lower merges first; ties: leftmost first */
	int32_t left, right;
	uint32_t size;       /* left.n + right.n when queued: stale if changed */
	int32_t id;          /* token of the merged span */
} tok_bigram;

/* Scratch of one encode call, reused across words. */
typedef struct tok_work {
	tok_sym *sym;
	size_t sym_cap;
	tok_bigram *heap;
	size_t heap_n, heap_cap;
	char *buf;
	size_t buf_cap;
	uint32_t *cps;       /* code points of a fragment (pre-tokenizer) */
	uint32_t *cpo;       /* their byte offsets, plus the end */
	size_t cp_cap;
} tok_work;

void tok_work_free(tok_work *w);
int tok_work_syms(tok_work *w, tern_ctx *ctx, size_t n);
int tok_work_buf(tok_work *w, tern_ctx *ctx, size_t n);

/* Decide whether symbols l and r (adjacent, over s) may merge: return
 * true and set *prio and *id if so. */
typedef bool (*tok_pair_fn)(const text_tokenizer *tok, const char *s, const tok_sym *l,
			    const tok_sym *r, double *prio, int32_t *id);

/* Run the merge loop over w->sym[0..n) (linked 0..n-1): repeatedly merge
 * the queued pair of lowest priority (leftmost on ties) until none is left. */
int tok_merge(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w, const char *s, size_t n,
	      tok_pair_fn pair);

/* ---- building a vocabulary (loaders) ---------------------------------- */

/* Allocate a tokenizer of n tokens with a string arena of text_bytes
 * (the NULs are added here), all types NORMAL, no specials. */
int tok_new(tern_ctx *ctx, text_tok_kind kind, size_t n, size_t text_bytes,
	    text_tokenizer **out);
/* Copy token i's string (called once per i, in any order; the arena is
 * filled in call order, so the total must not exceed text_bytes). */
int tok_set_text(text_tokenizer *t, tern_ctx *ctx, int32_t i, const char *s, size_t len);
/* Build the text -> id map. A string that appears twice keeps its first
 * id; *dup (may be NULL) receives the id of the first repeat or -1. */
int tok_build_map(text_tokenizer *t, tern_ctx *ctx, int32_t *dup);
/* After texts, types and map: the byte tokens, the special list, the
 * decoded pieces of SentencePiece vocabularies and max_piece. */
int tok_finish(text_tokenizer *t, tern_ctx *ctx);

uint64_t tok_hash(const char *s, size_t len);

/* BPE pieces of the pair map (tokenizer_bpe.c). */
int tok_bpe_add_merge(text_tokenizer *t, tern_ctx *ctx, int32_t left, int32_t right,
		      int32_t rank, int32_t result);
int tok_bpe_alloc_merges(text_tokenizer *t, tern_ctx *ctx, size_t n_merges);
/* GPT-2's byte <-> printable code point mapping used by "gpt2" vocabularies:
 * decode s (GPT-2 code points) into raw bytes in out (at most len bytes);
 * returns the byte count, or -1 if s holds a code point outside the map. */
long tok_gpt2_decode(const char *s, size_t len, char *out);

/* Encoders of one raw fragment (no special tokens inside). */
int tok_bpe_encode(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w, const char *s,
		   size_t n, tok_vec *out);
int tok_spm_encode(const text_tokenizer *tok, tern_ctx *ctx, tok_work *w, const char *s,
		   size_t n, bool prefix, tok_vec *out);

/* Vocabulary-specific parts of text_tok_from_meta (model already read). */
int tok_bpe_from_meta(tern_ctx *ctx, const tern_meta *meta, text_tokenizer **out);
int tok_spm_from_meta(tern_ctx *ctx, const tern_meta *meta, text_tokenizer **out);
/* The optional special ids and flags of GGUF metadata, for both kinds. */
void tok_meta_specials(text_tokenizer *t, const tern_meta *meta);

/* Whole file into memory (free()); TERN_E_IO with the path on failure. */
int tok_read_file(tern_ctx *ctx, const char *path, char **data, size_t *size);

#endif
