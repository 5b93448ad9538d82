/*
 * generate.h: text generation in libtern: the token sampler, language
 * models seen through their plugin's "lm" component (tern_lm), sessions
 * (one sequence's KV cache) and tern_generate, which turns a prompt into
 * a stream of tokens.
 *
 * Thread safety: a loaded tern_model and a tern_lm made from it are
 * read-only and may be shared by any number of threads; each thread
 * passes its own tern_ctx and uses its own sessions, samplers and
 * detokenizer streams (tern_generate makes its own for each call). Two
 * threads running tern_generate greedily on one model get the same text.
 */
#ifndef TERN_GENERATE_H
#define TERN_GENERATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/lm.h"
#include "tern/plugin.h"
#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sampling ------------------------------------------------------------ */

/* How the next token is drawn from the logits. The steps run in this
 * order: repetition penalty on the logits of tokens among the last
 * repeat_last_n accepted ones (a positive logit is divided by the
 * penalty, a negative one multiplied, once per distinct token); then, if
 * temperature <= 0, the most probable token (greedy; ties go to the
 * lowest id); else top-k (the k largest logits), softmax, top-p (the
 * smallest set of most probable tokens whose probabilities sum to at
 * least top_p), min-p (drop tokens less probable than min_p times the
 * most probable one), then softmax(logit / temperature) over what is left
 * and one draw from the seeded generator. Candidates are ordered by logit,
 * ties by id, so results never depend on sort details. */
typedef struct tern_sampler_params {
	size_t struct_size;     /* sizeof(tern_sampler_params) */
	float temperature;      /* <= 0: greedy (default 0.8) */
	int32_t top_k;          /* <= 0: off (default 40) */
	float top_p;            /* >= 1: off (default 0.95) */
	float min_p;            /* <= 0: off (default 0.05) */
	float repeat_penalty;   /* 1: off (default 1.0) */
	int32_t repeat_last_n;  /* window of the penalty, tokens (default 64) */
	uint64_t seed;          /* the generator's seed (default 0x5eed) */
} tern_sampler_params;

/* The defaults above. */
TERN_API tern_sampler_params tern_sampler_default_params(void);

typedef struct tern_sampler tern_sampler;

/* A sampler over n_vocab logits; params NULL means defaults. All memory
 * is allocated here: sampling allocates nothing. Caller frees with
 * tern_sampler_free (accepts NULL). */
TERN_API int tern_sampler_new(tern_ctx *ctx, const tern_sampler_params *params, int32_t n_vocab,
			      tern_sampler **out);
TERN_API void tern_sampler_free(tern_sampler *s);

/* Forget the accepted tokens and restart the generator from the seed. */
TERN_API void tern_sampler_reset(tern_sampler *s);

/* Record a token (prompt or generated) for the repetition penalty. */
TERN_API void tern_sampler_accept(tern_sampler *s, int32_t id);

/* Draw a token from logits[n_vocab] (only read) into *id. Does not
 * accept it: call tern_sampler_accept with what is kept. TERN_E_INVALID
 * when the logits hold a NaN or nothing is left to draw from. */
TERN_API int tern_sampler_sample(tern_sampler *s, tern_ctx *ctx, const float *logits,
				 int32_t *id);

/* The generator itself (xoshiro256**, seeded through splitmix64), for
 * tests and tools that need the same stream: a uniform double in [0, 1). */
TERN_API double tern_sampler_uniform(tern_sampler *s);

/* ---- language models ---------------------------------------------------- */

/* A language model through its plugin's "lm" component. */
typedef struct tern_lm tern_lm;

/* The lm of a loaded model (borrowed: free the tern_lm before the
 * model). TERN_E_UNSUPPORTED when the model's plugin offers no "lm".
 * Caller frees with tern_lm_free. */
TERN_API int tern_lm_from_model(tern_ctx *ctx, tern_model *model, tern_lm **out);
/* A tokenizer alone, read from a tokenizer file by the first plugin of
 * reg that offers "lm" with load_tokenizer. reg must outlive *out. */
TERN_API int tern_lm_load_tokenizer(tern_ctx *ctx, const tern_registry *reg, const char *path,
				    tern_lm **out);
/* Accepts NULL. */
TERN_API void tern_lm_free(tern_lm *lm);

/* The interface table and the plugin's object, to call the component
 * directly (both owned by the plugin). */
TERN_API const tern_lm_iface *tern_lm_iface_of(const tern_lm *lm);
TERN_API void *tern_lm_handle(const tern_lm *lm);

TERN_API int32_t tern_lm_n_vocab(const tern_lm *lm);
TERN_API int32_t tern_lm_n_ctx(const tern_lm *lm);
/* enum tern_lm_special; -1 when absent. */
TERN_API int32_t tern_lm_special(const tern_lm *lm, int which);
TERN_API bool tern_lm_is_eog(const tern_lm *lm, int32_t id);
TERN_API bool tern_lm_wants_bos(const tern_lm *lm);
TERN_API int64_t tern_lm_weight_bytes_per_token(const tern_lm *lm);

/* Tokenize text into a new array *ids (free() it) of *n_ids ids; flags
 * are enum tern_lm_tok_flags. */
TERN_API int tern_lm_tokenize(tern_ctx *ctx, const tern_lm *lm, const char *text, size_t len,
			      unsigned flags, int32_t **ids, size_t *n_ids);
/* Decode ids into a new NUL-terminated string *text (free() it). */
TERN_API int tern_lm_detokenize(tern_ctx *ctx, const tern_lm *lm, const int32_t *ids, size_t n,
				char **text, size_t *len);
/* Render a conversation in the model's chat format into a new string
 * (free() it); see tern_lm_iface.chat_format. */
TERN_API int tern_lm_chat_format(tern_ctx *ctx, const tern_lm *lm, const tern_chat_msg *msgs,
				 size_t n, bool add_assistant, char **text);

/* ---- sessions ----------------------------------------------------------- */

/* One sequence: the KV cache and the tokens it holds. Generating again
 * on a session reuses the cached positions its new prompt shares with
 * what is cached (a chat re-sends the whole conversation and pays only
 * for the new turn). One thread at a time. */
typedef struct tern_session tern_session;

/* A session of n_ctx positions (0: the model's context length) on lm
 * (borrowed). Allocates everything generation needs: the decode loop
 * then allocates nothing per token. Caller frees with tern_session_free
 * (accepts NULL). */
TERN_API int tern_session_new(tern_ctx *ctx, const tern_lm *lm, int32_t n_ctx,
			      tern_session **out);
/* The same with the KV cache held as kv_type: TERN_DTYPE_F32 (as
 * tern_session_new) or TERN_DTYPE_F16, half the memory and half the bytes
 * attention reads per token deep in a context, keys and values rounded to
 * f16 (as llama.cpp's default cache). TERN_E_UNSUPPORTED, with a message,
 * when the model's plugin does not keep that type. */
TERN_API int tern_session_new_kv(tern_ctx *ctx, const tern_lm *lm, int32_t n_ctx,
				 tern_dtype kv_type, tern_session **out);
TERN_API void tern_session_free(tern_session *s);
TERN_API int32_t tern_session_n_ctx(const tern_session *s);
/* Positions in the cache. */
TERN_API int32_t tern_session_pos(const tern_session *s);
/* Bytes of KV cache one position holds (keys and values of every layer,
 * in the session's cache type): a decode step at position p reads p + 1
 * times this besides the weights (tern_lm_weight_bytes_per_token). 0 when
 * the model's plugin does not say. */
TERN_API int64_t tern_session_kv_bytes_per_position(const tern_session *s);
/* Forget everything. */
TERN_API void tern_session_reset(tern_session *s);
/* Forget positions pos.. and keep the first pos (0 <= pos <=
 * tern_session_pos; else TERN_E_INVALID, nothing changed). */
TERN_API int tern_session_truncate(tern_ctx *ctx, tern_session *s, int32_t pos);
/* Append ids to the sequence (see tern_lm_iface.eval; logits is enum
 * tern_lm_logits). */
TERN_API int tern_session_eval(tern_ctx *ctx, tern_session *s, const int32_t *ids, int32_t n,
			       int logits, float *out);

/* ---- generation --------------------------------------------------------- */

/* Called for every generated token with the text it completes (maybe
 * empty: bytes of an unfinished UTF-8 character, or text that might be
 * the start of a stop string, are held back and come with a later call;
 * id is then -1 for text released at the end). Return nonzero to stop:
 * tern_generate then returns TERN_E_CANCELLED. */
typedef int (*tern_token_fn)(void *user, int32_t id, const char *text, size_t len);

/* Called once after the prompt is evaluated with the logits of every
 * prompt position, [n][n_vocab] (row i predicts token i + 1), when
 * tern_generate_params.prompt_logits is set. Nonzero cancels. */
typedef int (*tern_logits_fn)(void *user, const float *logits, int32_t n, int32_t n_vocab);

/* Why generation ended. */
enum tern_stop_reason {
	TERN_STOP_LENGTH = 0, /* n_predict tokens were generated */
	TERN_STOP_EOG = 1,    /* the model produced an end-of-generation token */
	TERN_STOP_STRING = 2, /* the text reached a stop string (not emitted) */
	TERN_STOP_CONTEXT = 3,/* n_predict < 0 and the context is full */
};

typedef struct tern_generate_stats {
	int32_t n_prompt;      /* prompt tokens (BOS included) */
	int32_t n_reused;      /* of those, found already in the session's cache */
	int32_t n_generated;   /* tokens sampled (an EOG token included) */
	double prefill_s;      /* seconds evaluating the prompt */
	double decode_s;       /* seconds from the first sampled token to the end */
	int stop;              /* enum tern_stop_reason */
} tern_generate_stats;

typedef struct tern_generate_params {
	size_t struct_size;        /* sizeof(tern_generate_params) */
	const char *prompt;        /* UTF-8 text (NULL = empty) */
	/* Exact prompt ids instead of text (nothing added, not even BOS). */
	const int32_t *prompt_ids;
	size_t n_prompt_ids;
	int add_bos;               /* -1: as the tokenizer says (default); 0, 1 */
	bool parse_special;        /* "<|eot_id|>" in the prompt is that token (default true) */
	int32_t n_predict;         /* tokens to generate; < 0: until EOG or full (default 128) */
	int32_t n_ctx;             /* tern_generate's session size; 0: the model's (default) */
	tern_sampler_params sampling;
	const char *const *stop;   /* stop strings (NULL: none) */
	size_t n_stop;
	tern_logits_fn prompt_logits; /* NULL: not wanted (default) */
	void *prompt_logits_user;
	tern_generate_stats *stats;   /* out, may be NULL */
	/* Appended later: a struct_size that ends before a field leaves it
	 * at its default. */
	tern_dtype kv_type;        /* tern_generate's KV cache: TERN_DTYPE_F32 (default) or
	                              TERN_DTYPE_F16 (tern_session_new_kv) */
} tern_generate_params;

/* The defaults above. */
TERN_API tern_generate_params tern_generate_default_params(void);

/* Generate from model with a fresh session of params->n_ctx positions:
 * tokenize the prompt (BOS as the tokenizer wants it), evaluate it in
 * batches, then sample one token at a time until n_predict tokens, an
 * end-of-generation token or a stop string; cb (may be NULL) receives
 * each token as it comes. TERN_E_INVALID with a message when the prompt
 * is invalid UTF-8, empty (no ids at all), or when the prompt plus
 * n_predict tokens exceed the context. */
TERN_API int tern_generate(tern_ctx *ctx, tern_model *model, const tern_generate_params *params,
			   tern_token_fn cb, void *user);

/* The same on an existing session: positions the new prompt shares with
 * the cached sequence are kept, the rest of the cache is replaced.
 * params->n_ctx is ignored (the session has its size). */
TERN_API int tern_session_generate(tern_ctx *ctx, tern_session *s,
				   const tern_generate_params *params, tern_token_fn cb,
				   void *user);

#ifdef __cplusplus
}
#endif
#endif
