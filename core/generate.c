/*
 * generate.c: text generation in libtern (generate.h). A tern_lm pairs a
 * plugin's "lm" component table with the plugin's model object; a
 * session adds one sequence's KV cache and every buffer the decode loop
 * needs; tern_session_generate runs prompt -> tokens -> batched prefill
 * -> sample/eval loop, streaming text through the caller's callback and
 * holding back text that may begin a stop string.
 *
 * Core never knows a model family: everything model-specific (tokenizer,
 * chat format, forward pass) is behind the component table.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"
#include "tern/generate.h"

struct tern_lm {
	const tern_lm_iface *ops;
	void *h;            /* the plugin's lm object */
	bool owned;         /* made by load_tokenizer: free it with ours */
};

struct tern_session {
	const tern_lm *lm;
	tern_lm_session *ls;
	int32_t n_ctx, n_vocab;
	int32_t *tokens;    /* [n_ctx] the ids whose keys/values are cached */
	int32_t n_tokens;
	float *logits;      /* [n_vocab] the last position's */
	tern_lm_detok *detok; /* NULL when the lm has no tokenizer */
	char *pending;      /* text held back while it may start a stop string */
	size_t pending_len, pending_cap;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- tern_lm ---------------------------------------------------------------- */

/* The fields tern relies on; later ones are checked where used. */
static bool iface_ok(const tern_lm_iface *t)
{
	return t && t->struct_size >= offsetof(tern_lm_iface, eval) + sizeof t->eval && t->free &&
	       t->n_vocab && t->n_ctx && t->special && t->is_eog && t->wants_bos &&
	       t->tokenize && t->detok_new && t->detok_free && t->detok_push && t->detok_flush &&
	       t->chat_format && t->session_new && t->session_free && t->session_pos &&
	       t->session_n_ctx && t->session_truncate && t->eval;
}

static const tern_lm_iface *lm_iface_of_plugin(const tern_plugin_desc *d)
{
	const tern_lm_iface *t;

	for (size_t i = 0; i < d->n_components; i++) {
		if (strcmp(d->components[i].interface, TERN_LM_INTERFACE) != 0 ||
		    d->components[i].version != TERN_LM_VERSION)
			continue;
		t = d->ops->component(TERN_LM_INTERFACE, TERN_LM_VERSION);
		return iface_ok(t) ? t : NULL;
	}
	return NULL;
}

int tern_lm_from_model(tern_ctx *ctx, tern_model *model, tern_lm **out)
{
	const tern_plugin_desc *d;
	const tern_lm_iface *t;
	tern_lm *lm;

	*out = NULL;
	if (!model)
		return tern_error(ctx, TERN_E_INVALID, "generate: no model");
	d = tern_model_plugin(model);
	t = lm_iface_of_plugin(d);
	if (!t)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "plugin '%s' offers no usable \"lm\" component version %d: it does "
				  "not generate text",
				  d->name, TERN_LM_VERSION);
	lm = calloc(1, sizeof *lm);
	if (!lm)
		return tern_error(ctx, TERN_E_NOMEM, "out of memory");
	lm->ops = t;
	lm->h = tern_model_impl(model);
	*out = lm;
	return TERN_OK;
}

int tern_lm_load_tokenizer(tern_ctx *ctx, const tern_registry *reg, const char *path,
			   tern_lm **out)
{
	tern_host host;
	int rc = TERN_E_NOT_FOUND;

	*out = NULL;
	memset(&host, 0, sizeof host);
	host.struct_size = sizeof host;
	host.abi_major = TERN_PLUGIN_ABI_MAJOR;
	host.abi_minor = TERN_PLUGIN_ABI_MINOR;
	host.ctx = ctx;
	host.registry = reg;
	for (size_t i = 0; i < tern_registry_count(reg); i++) {
		const tern_lm_iface *t = lm_iface_of_plugin(tern_registry_plugin(reg, i, NULL));
		void *h;
		tern_lm *lm;

		if (!t || !TERN_LM_HAS(t, load_tokenizer))
			continue;
		rc = t->load_tokenizer(&host, path, &h);
		if (rc)
			continue;
		lm = calloc(1, sizeof *lm);
		if (!lm) {
			t->free(h);
			return tern_error(ctx, TERN_E_NOMEM, "out of memory");
		}
		lm->ops = t;
		lm->h = h;
		lm->owned = true;
		*out = lm;
		return TERN_OK;
	}
	if (rc == TERN_E_NOT_FOUND)
		return tern_error(ctx, rc, "%s: no plugin reads tokenizer files", path);
	return rc;
}

void tern_lm_free(tern_lm *lm)
{
	if (!lm)
		return;
	if (lm->owned)
		lm->ops->free(lm->h);
	free(lm);
}

const tern_lm_iface *tern_lm_iface_of(const tern_lm *lm)
{
	return lm->ops;
}

void *tern_lm_handle(const tern_lm *lm)
{
	return lm->h;
}

int32_t tern_lm_n_vocab(const tern_lm *lm)
{
	return lm->ops->n_vocab(lm->h);
}

int32_t tern_lm_n_ctx(const tern_lm *lm)
{
	return lm->ops->n_ctx(lm->h);
}

int32_t tern_lm_special(const tern_lm *lm, int which)
{
	return lm->ops->special(lm->h, which);
}

bool tern_lm_is_eog(const tern_lm *lm, int32_t id)
{
	return lm->ops->is_eog(lm->h, id);
}

bool tern_lm_wants_bos(const tern_lm *lm)
{
	return lm->ops->wants_bos(lm->h);
}

int64_t tern_lm_weight_bytes_per_token(const tern_lm *lm)
{
	return TERN_LM_HAS(lm->ops, weight_bytes_per_token)
		       ? lm->ops->weight_bytes_per_token(lm->h)
		       : 0;
}

int tern_lm_tokenize(tern_ctx *ctx, const tern_lm *lm, const char *text, size_t len,
		     unsigned flags, int32_t **ids, size_t *n_ids)
{
	size_t n = 0, bytes;
	int32_t *buf;
	int rc;

	*ids = NULL;
	*n_ids = 0;
	rc = lm->ops->tokenize(lm->h, ctx, text, len, flags, NULL, 0, &n);
	if (rc && rc != TERN_E_OVERFLOW)
		return rc;
	if (tern_size_mul(n + 1, sizeof *buf, &bytes))
		return tern_error(ctx, TERN_E_OVERFLOW, "tokenize: %zu tokens", n);
	buf = malloc(bytes);
	if (!buf)
		return tern_error(ctx, TERN_E_NOMEM, "tokenize: out of memory for %zu tokens", n);
	if (n > 0) {
		rc = lm->ops->tokenize(lm->h, ctx, text, len, flags, buf, n, &n);
		if (rc) {
			free(buf);
			return rc;
		}
	}
	*ids = buf;
	*n_ids = n;
	return TERN_OK;
}

/* Appends len bytes to a growing string. */
static int str_put(tern_ctx *ctx, char **s, size_t *len, size_t *cap, const char *t, size_t n)
{
	if (n > SIZE_MAX - *len - 1)
		return tern_error(ctx, TERN_E_OVERFLOW, "text too long");
	if (*len + n + 1 > *cap) {
		size_t c = *cap ? *cap : 64;
		char *p;

		while (c < *len + n + 1)
			c = c > SIZE_MAX / 2 ? *len + n + 1 : c * 2;
		p = realloc(*s, c);
		if (!p)
			return tern_error(ctx, TERN_E_NOMEM, "out of memory for text");
		*s = p;
		*cap = c;
	}
	memcpy(*s + *len, t, n);
	*len += n;
	(*s)[*len] = '\0';
	return TERN_OK;
}

int tern_lm_detokenize(tern_ctx *ctx, const tern_lm *lm, const int32_t *ids, size_t n,
		       char **text, size_t *len)
{
	tern_lm_detok *d;
	char *s = NULL;
	size_t l = 0, cap = 0, pl;
	const char *piece;
	int rc;

	*text = NULL;
	*len = 0;
	rc = lm->ops->detok_new(lm->h, ctx, &d);
	if (rc)
		return rc;
	rc = str_put(ctx, &s, &l, &cap, "", 0);
	for (size_t i = 0; i < n && rc == TERN_OK; i++) {
		rc = lm->ops->detok_push(d, ctx, ids[i], &piece, &pl);
		if (rc == TERN_OK)
			rc = str_put(ctx, &s, &l, &cap, piece, pl);
	}
	if (rc == TERN_OK) {
		lm->ops->detok_flush(d, &piece, &pl);
		rc = str_put(ctx, &s, &l, &cap, piece, pl);
	}
	lm->ops->detok_free(d);
	if (rc) {
		free(s);
		return rc;
	}
	*text = s;
	*len = l;
	return TERN_OK;
}

int tern_lm_chat_format(tern_ctx *ctx, const tern_lm *lm, const tern_chat_msg *msgs, size_t n,
			bool add_assistant, char **text)
{
	size_t len = 0;
	char *buf;
	int rc;

	*text = NULL;
	rc = lm->ops->chat_format(lm->h, ctx, msgs, n, add_assistant, NULL, 0, &len);
	if (rc && rc != TERN_E_OVERFLOW)
		return rc;
	if (len == SIZE_MAX)
		return tern_error(ctx, TERN_E_OVERFLOW, "chat: text too long");
	buf = malloc(len + 1);
	if (!buf)
		return tern_error(ctx, TERN_E_NOMEM, "chat: out of memory");
	rc = lm->ops->chat_format(lm->h, ctx, msgs, n, add_assistant, buf, len + 1, &len);
	if (rc) {
		free(buf);
		return rc ? rc : TERN_E_INTERNAL;
	}
	*text = buf;
	return TERN_OK;
}

/* ---- sessions --------------------------------------------------------------- */

int tern_session_new(tern_ctx *ctx, const tern_lm *lm, int32_t n_ctx, tern_session **out)
{
	return tern_session_new_kv(ctx, lm, n_ctx, TERN_DTYPE_F32, out);
}

int tern_session_new_kv(tern_ctx *ctx, const tern_lm *lm, int32_t n_ctx, tern_dtype kv_type,
			tern_session **out)
{
	tern_session *s;
	int rc;

	*out = NULL;
	if (n_ctx < 0)
		return tern_error(ctx, TERN_E_INVALID, "session: context of %d positions", (int)n_ctx);
	const bool kv_opt = TERN_LM_HAS(lm->ops, session_new_kv);
	if (kv_type != TERN_DTYPE_F32 && !kv_opt)
		return tern_error(ctx, TERN_E_UNSUPPORTED,
				  "session: this model's plugin keeps only an f32 KV cache");
	s = calloc(1, sizeof *s);
	if (!s)
		return tern_error(ctx, TERN_E_NOMEM, "session: out of memory");
	s->lm = lm;
	s->n_vocab = tern_lm_n_vocab(lm);
	rc = kv_opt ? lm->ops->session_new_kv(lm->h, ctx, n_ctx, 0, kv_type, &s->ls)
		    : lm->ops->session_new(lm->h, ctx, n_ctx, 0, &s->ls);
	if (rc) {
		free(s);
		return rc;
	}
	s->n_ctx = lm->ops->session_n_ctx(s->ls);
	s->tokens = malloc(sizeof *s->tokens * (size_t)(s->n_ctx > 0 ? s->n_ctx : 1));
	s->logits = malloc(sizeof *s->logits * (size_t)(s->n_vocab > 0 ? s->n_vocab : 1));
	s->pending_cap = 256;
	s->pending = malloc(s->pending_cap);
	if (!s->tokens || !s->logits || !s->pending) {
		tern_session_free(s);
		return tern_error(ctx, TERN_E_NOMEM, "session: out of memory");
	}
	/* A model without a tokenizer still runs on token ids. */
	if (lm->ops->detok_new(lm->h, ctx, &s->detok) != TERN_OK) {
		s->detok = NULL;
		tern_ctx_clear_error(ctx);
	}
	*out = s;
	return TERN_OK;
}

void tern_session_free(tern_session *s)
{
	if (!s)
		return;
	if (s->detok)
		s->lm->ops->detok_free(s->detok);
	s->lm->ops->session_free(s->ls);
	free(s->tokens);
	free(s->logits);
	free(s->pending);
	free(s);
}

int32_t tern_session_n_ctx(const tern_session *s)
{
	return s->n_ctx;
}

int32_t tern_session_pos(const tern_session *s)
{
	return s->n_tokens;
}

int64_t tern_session_kv_bytes_per_position(const tern_session *s)
{
	return TERN_LM_HAS(s->lm->ops, session_kv_bytes_per_position)
		       ? s->lm->ops->session_kv_bytes_per_position(s->ls)
		       : 0;
}

void tern_session_reset(tern_session *s)
{
	s->lm->ops->session_truncate(s->ls, 0);
	s->n_tokens = 0;
}

int tern_session_truncate(tern_ctx *ctx, tern_session *s, int32_t pos)
{
	if (pos < 0 || pos > s->n_tokens)
		return tern_error(ctx, TERN_E_INVALID,
				  "session: cannot keep %d positions of the %d cached", (int)pos,
				  (int)s->n_tokens);
	int rc = s->lm->ops->session_truncate(s->ls, pos);
	if (rc)
		return rc;
	s->n_tokens = pos;
	return TERN_OK;
}

int tern_session_eval(tern_ctx *ctx, tern_session *s, const int32_t *ids, int32_t n, int logits,
		      float *out)
{
	int rc;

	if (n < 1 || n > s->n_ctx - s->n_tokens)
		return tern_error(ctx, TERN_E_INVALID,
				  "%d tokens do not fit: %d of the context's %d positions are used",
				  (int)n, (int)s->n_tokens, (int)s->n_ctx);
	rc = s->lm->ops->eval(s->ls, ctx, ids, n, logits, out);
	if (rc)
		return rc;
	memcpy(s->tokens + s->n_tokens, ids, (size_t)n * sizeof *ids);
	s->n_tokens += n;
	return TERN_OK;
}

/* ---- generation ------------------------------------------------------------- */

tern_generate_params tern_generate_default_params(void)
{
	tern_generate_params p;

	memset(&p, 0, sizeof p);
	p.struct_size = sizeof p;
	p.add_bos = -1;
	p.parse_special = true;
	p.n_predict = 128;
	p.sampling = tern_sampler_default_params();
	return p;
}

static int read_params(tern_ctx *ctx, const tern_generate_params *in, tern_generate_params *p)
{
	*p = tern_generate_default_params();
	if (!in)
		return TERN_OK;
	/* Fields from kv_type on were appended: an older caller's smaller
	 * struct leaves them at their defaults. */
	const size_t first = offsetof(tern_generate_params, kv_type);
	if (in->struct_size < first)
		return tern_error(ctx, TERN_E_INVALID,
				  "generate: params struct_size %zu, expected at least %zu",
				  in->struct_size, first);
	memcpy(p, in, in->struct_size < sizeof *p ? in->struct_size : sizeof *p);
	p->struct_size = sizeof *p;
	if (p->n_stop && !p->stop)
		return tern_error(ctx, TERN_E_INVALID, "generate: %zu stop strings but no list",
				  p->n_stop);
	for (size_t i = 0; i < p->n_stop; i++)
		if (!p->stop[i] || !p->stop[i][0])
			return tern_error(ctx, TERN_E_INVALID, "generate: stop string %zu is empty", i);
	return TERN_OK;
}

/* The prompt's ids into a new array (free() it). */
static int prompt_ids(tern_ctx *ctx, const tern_lm *lm, const tern_generate_params *p,
		      int32_t **ids, size_t *n)
{
	unsigned flags = 0;
	int32_t n_vocab = tern_lm_n_vocab(lm);
	int rc;

	if (p->prompt_ids) {
		*ids = malloc(sizeof **ids * (p->n_prompt_ids ? p->n_prompt_ids : 1));
		if (!*ids)
			return tern_error(ctx, TERN_E_NOMEM, "generate: out of memory");
		memcpy(*ids, p->prompt_ids, sizeof **ids * p->n_prompt_ids);
		*n = p->n_prompt_ids;
	} else {
		const char *text = p->prompt ? p->prompt : "";

		if (p->add_bos > 0 || (p->add_bos < 0 && tern_lm_wants_bos(lm)))
			flags |= TERN_LM_ADD_BOS;
		if (p->parse_special)
			flags |= TERN_LM_PARSE_SPECIAL;
		rc = tern_lm_tokenize(ctx, lm, text, strlen(text), flags, ids, n);
		if (rc)
			return rc;
	}
	if (*n == 0) {
		free(*ids);
		*ids = NULL;
		return tern_error(ctx, TERN_E_INVALID,
				  "generate: the prompt gives no tokens (and the model has no BOS to "
				  "start from)");
	}
	for (size_t i = 0; i < *n; i++) {
		if ((*ids)[i] < 0 || (*ids)[i] >= n_vocab) {
			rc = tern_error(ctx, TERN_E_INVALID,
					"generate: prompt token %zu is id %d, outside the vocabulary "
					"0..%d",
					i, (int)(*ids)[i], (int)n_vocab - 1);
			free(*ids);
			*ids = NULL;
			return rc;
		}
	}
	return TERN_OK;
}

static int check_fits(tern_ctx *ctx, size_t n_prompt, int32_t n_predict, int32_t n_ctx)
{
	if (n_prompt > (size_t)n_ctx)
		return tern_error(ctx, TERN_E_INVALID,
				  "the prompt is %zu tokens, longer than the context of %d positions",
				  n_prompt, (int)n_ctx);
	if (n_predict > 0 && n_prompt + (size_t)n_predict > (size_t)n_ctx)
		return tern_error(ctx, TERN_E_INVALID,
				  "the prompt (%zu tokens) and %d tokens to generate exceed the "
				  "context of %d positions",
				  n_prompt, (int)n_predict, (int)n_ctx);
	return TERN_OK;
}

static int pending_put(tern_ctx *ctx, tern_session *s, const char *t, size_t n)
{
	if (s->pending_len + n + 1 > s->pending_cap) {
		size_t cap = s->pending_cap;
		char *p;

		while (cap < s->pending_len + n + 1)
			cap *= 2;
		p = realloc(s->pending, cap);
		if (!p)
			return tern_error(ctx, TERN_E_NOMEM, "generate: out of memory");
		s->pending = p;
		s->pending_cap = cap;
	}
	memcpy(s->pending + s->pending_len, t, n);
	s->pending_len += n;
	return TERN_OK;
}

/* Where the first stop string starts in the pending text (or -1), and
 * how many trailing bytes may still become one (*hold). */
static int64_t find_stop(const tern_session *s, const tern_generate_params *p, size_t *hold)
{
	const char *t = s->pending;
	size_t n = s->pending_len;
	int64_t first = -1;

	*hold = 0;
	for (size_t k = 0; k < p->n_stop; k++) {
		const char *stop = p->stop[k];
		size_t m = strlen(stop);

		for (size_t i = 0; i + m <= n; i++) {
			if (memcmp(t + i, stop, m) == 0) {
				if (first < 0 || (int64_t)i < first)
					first = (int64_t)i;
				break;
			}
		}
		/* The longest proper prefix of stop that ends the text. */
		for (size_t h = m - 1 < n ? m - 1 : n; h > *hold; h--) {
			if (memcmp(t + n - h, stop, h) == 0) {
				*hold = h;
				break;
			}
		}
	}
	return first;
}

/* Runs the decode loop after the prompt's logits are in s->logits. */
static int decode(tern_ctx *ctx, tern_session *s, const tern_generate_params *p,
		  tern_sampler *smp, tern_token_fn cb, void *user, tern_generate_stats *st)
{
	const tern_lm_iface *ops = s->lm->ops;
	int rc;

	s->pending_len = 0;
	for (int32_t i = 0; p->n_predict < 0 || i < p->n_predict; i++) {
		int32_t id;
		const char *text = "";
		size_t len = 0, emit, hold = 0;
		int64_t at = -1;
		bool eog;

		rc = tern_sampler_sample(smp, ctx, s->logits, &id);
		if (rc)
			return rc;
		tern_sampler_accept(smp, id);
		st->n_generated++;
		eog = tern_lm_is_eog(s->lm, id);
		if (s->detok) {
			if (eog)
				ops->detok_flush(s->detok, &text, &len);
			else if ((rc = ops->detok_push(s->detok, ctx, id, &text, &len)) != TERN_OK)
				return rc;
		}
		if ((rc = pending_put(ctx, s, text, len)) != TERN_OK)
			return rc;
		if (p->n_stop)
			at = find_stop(s, p, &hold);
		if (eog)
			hold = 0;
		emit = at >= 0 ? (size_t)at : s->pending_len - hold;
		if (cb && cb(user, id, s->pending, emit))
			return tern_error(ctx, TERN_E_CANCELLED, "generation cancelled by the caller");
		memmove(s->pending, s->pending + emit, s->pending_len - emit);
		s->pending_len -= emit;
		if (at >= 0) {
			s->pending_len = 0;
			st->stop = TERN_STOP_STRING;
			return TERN_OK;
		}
		if (eog) {
			st->stop = TERN_STOP_EOG;
			return TERN_OK;
		}
		if (p->n_predict >= 0 && i + 1 == p->n_predict)
			break;
		if (s->n_tokens == s->n_ctx) {
			st->stop = TERN_STOP_CONTEXT;
			return TERN_OK;
		}
		rc = tern_session_eval(ctx, s, &id, 1, TERN_LM_LOGITS_LAST, s->logits);
		if (rc)
			return rc;
	}
	st->stop = TERN_STOP_LENGTH;
	return TERN_OK;
}

/* Releases what the detokenizer and the stop-string check still hold. */
static int finish_text(tern_ctx *ctx, tern_session *s, const tern_generate_params *p,
		       tern_token_fn cb, void *user, tern_generate_stats *st)
{
	const char *text = "";
	size_t len = 0, hold;
	int64_t at = -1;
	int rc;

	if (s->detok) {
		s->lm->ops->detok_flush(s->detok, &text, &len);
		if ((rc = pending_put(ctx, s, text, len)) != TERN_OK)
			return rc;
	}
	if (p->n_stop && st->stop != TERN_STOP_STRING) {
		at = find_stop(s, p, &hold);
		if (at >= 0) {
			s->pending_len = (size_t)at;
			st->stop = TERN_STOP_STRING;
		}
	}
	if (cb && s->pending_len && cb(user, -1, s->pending, s->pending_len))
		rc = tern_error(ctx, TERN_E_CANCELLED, "generation cancelled by the caller");
	else
		rc = TERN_OK;
	s->pending_len = 0;
	return rc;
}

/* Generation on a session from prompt ids already checked. */
static int generate_ids(tern_ctx *ctx, tern_session *s, const int32_t *ids, size_t n,
			const tern_generate_params *p, tern_token_fn cb, void *user)
{
	tern_generate_stats st;
	tern_sampler *smp = NULL;
	float *all = NULL;
	size_t keep = 0;
	double t0;
	int rc;

	memset(&st, 0, sizeof st);
	st.n_prompt = (int32_t)n;
	rc = check_fits(ctx, n, p->n_predict, s->n_ctx);
	if (rc)
		goto out;
	rc = tern_sampler_new(ctx, &p->sampling, s->n_vocab, &smp);
	if (rc)
		goto out;
	/* Reuse the cached positions the prompt shares, but evaluate at
	 * least its last token: its logits start the generation. */
	if (!p->prompt_logits) {
		while (keep < n && keep < (size_t)s->n_tokens && s->tokens[keep] == ids[keep])
			keep++;
		if (keep == n)
			keep--;
	} else {
		size_t bytes;

		if (tern_size_mul(n, (size_t)s->n_vocab, &bytes) ||
		    tern_size_mul(bytes, sizeof *all, &bytes)) {
			rc = tern_error(ctx, TERN_E_OVERFLOW, "generate: prompt logits too large");
			goto out;
		}
		all = malloc(bytes);
		if (!all) {
			rc = tern_error(ctx, TERN_E_NOMEM,
					"generate: out of memory for the logits of %zu positions", n);
			goto out;
		}
	}
	rc = tern_session_truncate(ctx, s, (int32_t)keep);
	if (rc)
		goto out;
	st.n_reused = (int32_t)keep;
	if (s->detok) {
		const char *t;
		size_t l;

		/* The continuation follows the prompt's last token: pushing it
		 * keeps, e.g., SentencePiece's space before the first generated
		 * word (only the text's very first piece loses it). After BOS
		 * alone the text starts afresh, as llama2.c prints it; so it
		 * does when the token gave no text (it may hold part of a
		 * character, which must not leak into the output). */
		s->lm->ops->detok_flush(s->detok, &t, &l);
		if (ids[n - 1] != tern_lm_special(s->lm, TERN_LM_BOS)) {
			if (s->lm->ops->detok_push(s->detok, ctx, ids[n - 1], &t, &l) != TERN_OK) {
				tern_ctx_clear_error(ctx);
				l = 0;
			}
			if (l == 0)
				s->lm->ops->detok_flush(s->detok, &t, &l);
		}
	}
	for (size_t i = 0; i < n; i++)
		tern_sampler_accept(smp, ids[i]);

	t0 = now_s();
	if (all) {
		rc = tern_session_eval(ctx, s, ids, (int32_t)n, TERN_LM_LOGITS_ALL, all);
		if (rc == TERN_OK)
			memcpy(s->logits, all + (n - 1) * (size_t)s->n_vocab,
			       sizeof *all * (size_t)s->n_vocab);
	} else {
		rc = tern_session_eval(ctx, s, ids + keep, (int32_t)(n - keep), TERN_LM_LOGITS_LAST,
				       s->logits);
	}
	st.prefill_s = now_s() - t0;
	if (rc)
		goto out;
	if (all && p->prompt_logits(p->prompt_logits_user, all, (int32_t)n, s->n_vocab)) {
		rc = tern_error(ctx, TERN_E_CANCELLED, "generation cancelled by the caller");
		goto out;
	}
	free(all);
	all = NULL;

	t0 = now_s();
	rc = p->n_predict == 0 ? TERN_OK : decode(ctx, s, p, smp, cb, user, &st);
	if (rc == TERN_OK)
		rc = finish_text(ctx, s, p, cb, user, &st);
	st.decode_s = now_s() - t0;
out:
	free(all);
	tern_sampler_free(smp);
	if (p->stats)
		*p->stats = st;
	return rc;
}

int tern_session_generate(tern_ctx *ctx, tern_session *s, const tern_generate_params *params,
			  tern_token_fn cb, void *user)
{
	tern_generate_params p;
	int32_t *ids = NULL;
	size_t n = 0;
	int rc = read_params(ctx, params, &p);

	if (rc == TERN_OK)
		rc = prompt_ids(ctx, s->lm, &p, &ids, &n);
	if (rc == TERN_OK)
		rc = generate_ids(ctx, s, ids, n, &p, cb, user);
	free(ids);
	return rc;
}

int tern_generate(tern_ctx *ctx, tern_model *model, const tern_generate_params *params,
		  tern_token_fn cb, void *user)
{
	tern_generate_params p;
	tern_lm *lm = NULL;
	tern_session *s = NULL;
	int32_t *ids = NULL;
	size_t n = 0;
	int32_t n_ctx;
	int rc = read_params(ctx, params, &p);

	if (rc == TERN_OK && p.stats)
		memset(p.stats, 0, sizeof *p.stats);
	if (rc == TERN_OK)
		rc = tern_lm_from_model(ctx, model, &lm);
	if (rc == TERN_OK)
		rc = prompt_ids(ctx, lm, &p, &ids, &n);
	if (rc)
		goto out;
	n_ctx = p.n_ctx > 0 ? p.n_ctx : tern_lm_n_ctx(lm);
	if (p.n_ctx < 0 || n_ctx > tern_lm_n_ctx(lm)) {
		rc = tern_error(ctx, TERN_E_INVALID,
				"a context of %d positions: the model supports 1..%d",
				(int)p.n_ctx, (int)tern_lm_n_ctx(lm));
		goto out;
	}
	rc = check_fits(ctx, n, p.n_predict, n_ctx);
	if (rc)
		goto out;
	/* Size the cache for this run when its length is known: the model's
	 * full context can be far larger than a short generation needs. */
	if (p.n_ctx == 0 && p.n_predict >= 0 && (int64_t)n + p.n_predict + 1 < n_ctx)
		n_ctx = (int32_t)n + p.n_predict + 1;
	rc = tern_session_new_kv(ctx, lm, n_ctx, p.kv_type, &s);
	if (rc == TERN_OK)
		rc = generate_ids(ctx, s, ids, n, &p, cb, user);
out:
	free(ids);
	tern_session_free(s);
	tern_lm_free(lm);
	return rc;
}
