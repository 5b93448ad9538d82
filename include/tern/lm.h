/*
 * lm.h: the "lm" component interface, version 1: a causal language model
 * as a plugin offers it to the host and to other plugins (captioning and
 * VLA policies drive a decoder through it). A plugin publishes it by
 * listing { "lm", 1 } in its descriptor's components and returning a
 * const tern_lm_iface from ops.component("lm", 1).
 *
 * Three kinds of objects cross the interface, all opaque and owned by the
 * providing plugin:
 *  - the lm itself (void *): what the provider's load op returned for a
 *    model of one of its architectures, or what iface->load or
 *    iface->load_tokenizer returned. Read-only once built: one lm may
 *    serve many threads at the same time.
 *  - a session (tern_lm_session): one sequence's KV cache and working
 *    memory. One thread at a time; threads each make their own.
 *  - a detokenizer stream (tern_lm_detok): one thread at a time.
 * Every call that can fail takes the caller's tern_ctx (errors, threads,
 * scratch) and returns a tern_status; a thread passes its own context.
 *
 * The table may grow in later minor revisions of version 1: callers
 * check struct_size (TERN_LM_HAS) before reading a field past the ones
 * listed here, and fields documented "may be NULL" are optional.
 */
#ifndef TERN_LM_H
#define TERN_LM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERN_LM_INTERFACE "lm"
#define TERN_LM_VERSION 1

typedef struct tern_lm_session tern_lm_session;
typedef struct tern_lm_detok tern_lm_detok;

/* Which special id tern_lm_iface.special returns. */
enum tern_lm_special {
	TERN_LM_BOS = 0, /* beginning of sequence */
	TERN_LM_EOS = 1, /* end of sequence */
	TERN_LM_EOT = 2, /* end of turn (<|eot_id|>), -1 for most base models */
};

/* Flags of tokenize. */
enum tern_lm_tok_flags {
	TERN_LM_ADD_BOS = 1u << 0,       /* prepend BOS when the vocabulary has one */
	TERN_LM_PARSE_SPECIAL = 1u << 1, /* control tokens spelled in the text
	                                    ("<|eot_id|>") become their ids */
};

/* Which logits eval writes. */
enum tern_lm_logits {
	TERN_LM_LOGITS_NONE = 0, /* none (only fill the cache) */
	TERN_LM_LOGITS_LAST = 1, /* [n_vocab]: the last position's */
	TERN_LM_LOGITS_ALL = 2,  /* [n][n_vocab]: every position's */
};

/* One message of a conversation: role "system", "user" or "assistant". */
typedef struct tern_chat_msg {
	const char *role;
	const char *content;
} tern_chat_msg;

typedef struct tern_lm_iface {
	size_t struct_size;

	/* ---- building and freeing an lm ---- */
	/* Build an lm from an opened model file (which must outlive it); the
	 * same object the provider's load op makes. *lm is freed with free. */
	int (*load)(const tern_host *host, const tern_file *file, void **lm);
	/* An lm that only tokenizes, from a tokenizer file (the formats are
	 * the provider's; the text plugin reads tokenizer.json, tiktoken
	 * files, GGUF vocabularies, SentencePiece tokenizer.model and
	 * llama2.c tokenizer.bin). Its n_ctx is 0 and session_new fails with
	 * TERN_E_UNSUPPORTED. May be NULL. */
	int (*load_tokenizer)(const tern_host *host, const char *path, void **lm);
	/* Free an lm made by load or load_tokenizer. Accepts NULL. */
	void (*free)(void *lm);

	/* ---- properties ---- */
	int32_t (*n_vocab)(const void *lm);
	/* The longest context the model supports (0 for a tokenizer alone). */
	int32_t (*n_ctx)(const void *lm);
	/* Width of the embeddings eval_embd takes. */
	int32_t (*n_embd)(const void *lm);
	/* A special id (enum tern_lm_special), -1 when there is none. */
	int32_t (*special)(const void *lm, int which);
	/* Whether generation ends at id (EOS, end of turn). */
	bool (*is_eog)(const void *lm, int32_t id);
	/* Whether prompts start with BOS for this model. */
	bool (*wants_bos)(const void *lm);
	/* Bytes of weights a decode step reads (every linear layer, the
	 * output head, norms; one embedding row): the numerator of the
	 * bandwidth roofline. */
	int64_t (*weight_bytes_per_token)(const void *lm);

	/* ---- text ---- */
	/* Tokenize text[0..len) (UTF-8) into ids[0..cap); *n_ids is always
	 * the number of ids the text needs, and TERN_E_OVERFLOW says cap was
	 * too small (call with cap 0 to size). Invalid UTF-8 gives
	 * TERN_E_INVALID naming the byte offset. flags: tern_lm_tok_flags. */
	int (*tokenize)(const void *lm, tern_ctx *ctx, const char *text, size_t len,
			unsigned flags, int32_t *ids, size_t cap, size_t *n_ids);
	/* The raw vocabulary bytes of id (possibly part of a UTF-8
	 * character; special tokens spelled out), NULL when out of range.
	 * Owned by lm. For display and debugging. */
	const char *(*token_text)(const void *lm, int32_t id, size_t *len);
	/* A streaming detokenizer: push ids one at a time and receive only
	 * complete UTF-8 characters (a character split across tokens is
	 * held until complete); control tokens print nothing. The text of
	 * all pushes plus the flush equals decoding the ids at once. The
	 * stream borrows lm. */
	int (*detok_new)(const void *lm, tern_ctx *ctx, tern_lm_detok **out);
	void (*detok_free)(tern_lm_detok *d);
	/* *text, *len: the text completed by id (maybe empty), owned by d and
	 * valid until the next call on d. */
	int (*detok_push)(tern_lm_detok *d, tern_ctx *ctx, int32_t id, const char **text,
			  size_t *len);
	/* End of text: held bytes come out (an unfinished character as
	 * U+FFFD) and the stream starts afresh. */
	void (*detok_flush)(tern_lm_detok *d, const char **text, size_t *len);
	/* Render a conversation in the model's chat format into
	 * buf[0..cap) (NUL-terminated), ending with the opening of an
	 * assistant turn when add_assistant. *len is always the length the
	 * text needs (without the NUL); TERN_E_OVERFLOW when cap <= *len.
	 * Special tokens are spelled out: tokenize the result with
	 * TERN_LM_PARSE_SPECIAL. */
	int (*chat_format)(const void *lm, tern_ctx *ctx, const tern_chat_msg *msgs, size_t n,
			   bool add_assistant, char *buf, size_t cap, size_t *len);

	/* ---- running ---- */
	/* A session of up to n_ctx positions (0: the model's n_ctx), taking
	 * at most n_batch tokens per pass of the layers (0: the provider's
	 * default). Free with session_free (accepts NULL). */
	int (*session_new)(const void *lm, tern_ctx *ctx, int32_t n_ctx, int32_t n_batch,
			   tern_lm_session **out);
	void (*session_free)(tern_lm_session *s);
	/* Positions held in the cache, and the session's capacity. */
	int32_t (*session_pos)(const tern_lm_session *s);
	int32_t (*session_n_ctx)(const tern_lm_session *s);
	/* Forget positions pos.. (0 forgets everything); pos beyond the
	 * current position gives TERN_E_INVALID. */
	int (*session_truncate)(tern_lm_session *s, int32_t pos);
	/* Append n tokens at the session's position and advance it; logits
	 * (enum tern_lm_logits) go to out: [n_vocab] or [n][n_vocab], each
	 * row predicting the next token. TERN_E_INVALID, nothing changed,
	 * when the tokens do not fit the session or an id is out of range.
	 * Allocates nothing once the session exists. */
	int (*eval)(tern_lm_session *s, tern_ctx *ctx, const int32_t *ids, int32_t n, int logits,
		    float *out);
	/* Same with embeddings [n][n_embd] in place of token ids (an image
	 * encoder's projected output, or tokens looked up with embed).
	 * May be NULL. */
	int (*eval_embd)(tern_lm_session *s, tern_ctx *ctx, const float *embd, int32_t n,
			 int logits, float *out);
	/* The input embeddings of ids into out[n][n_embd]. May be NULL. */
	int (*embed)(const void *lm, tern_ctx *ctx, const int32_t *ids, int32_t n, float *out);

	/* ---- appended to version 1 later: check with TERN_LM_HAS ---- */
	/* session_new with the KV cache held as kv_type: TERN_DTYPE_F32 (as
	 * session_new) or TERN_DTYPE_F16 (half the memory and the bytes a
	 * step reads at depth; keys and values rounded to f16). A type the
	 * provider does not keep: TERN_E_UNSUPPORTED. May be NULL (f32 only). */
	int (*session_new_kv)(const void *lm, tern_ctx *ctx, int32_t n_ctx, int32_t n_batch,
			      tern_dtype kv_type, tern_lm_session **out);
	/* Bytes of KV cache one position holds in this session (keys and
	 * values of every layer, in its cache type): a decode step at
	 * position p reads p + 1 times this, besides the weights. May be
	 * NULL (unknown). */
	int64_t (*session_kv_bytes_per_position)(const tern_lm_session *s);
} tern_lm_iface;

/* Whether an interface table is large enough to hold `field`. */
#define TERN_LM_HAS(iface, field)                                                           \
	((iface)->struct_size >= offsetof(tern_lm_iface, field) + sizeof((iface)->field) &&  \
	 (iface)->field != NULL)

#ifdef __cplusplus
}
#endif
#endif
