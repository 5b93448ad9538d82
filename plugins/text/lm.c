/*
 * lm.c: the text plugin's "lm" component (include/tern/lm.h): the BitNet
 * decoder of model.c, the tokenizer the model file carries, and the chat
 * format, behind the interface table the host's tern_generate and other
 * plugins call. A session is a text_state; the detokenizer stream is the
 * tokenizer's text_detok.
 *
 * Chat formats. GGUF files carry a Jinja template tern does not run; the
 * format is recognised from it (or, without one, from the vocabulary):
 *  - bitnet: "System: s<|eot_id|>User: u<|eot_id|>Assistant: a<|eot_id|>"
 *    (BitNet b1.58 2B4T), chosen when the vocabulary has <|eot_id|> and
 *    the template, if any, does not use Llama 3's headers;
 *  - llama3: "<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>";
 *  - plain, for base models without an end-of-turn token: the bitnet
 *    layout with a newline in place of <|eot_id|>.
 * Contents are trimmed of surrounding white space, as llama.cpp does.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugins/text/lm.h"
#include "plugins/text/model.h"
#include "plugins/text/tokenizer.h"

enum chat_kind { CHAT_PLAIN = 0, CHAT_BITNET = 1, CHAT_LLAMA3 = 2 };

typedef struct text_lm {
	text_model *model;      /* NULL for a tokenizer alone */
	text_tokenizer *tok;    /* NULL when the file has none (see tok_why) */
	char tok_why[512];      /* why there is no tokenizer */
	enum chat_kind chat;
} text_lm;

struct tern_lm_session {
	const text_lm *lm;
	text_state *st;
};

/* ---- building ------------------------------------------------------------ */

static enum chat_kind chat_kind_of(const text_tokenizer *tok, const char *tmpl)
{
	if (tmpl && strstr(tmpl, "<|start_header_id|>"))
		return CHAT_LLAMA3;
	if (tok && text_tok_eot(tok) >= 0)
		return CHAT_BITNET;
	return CHAT_PLAIN;
}

/* The tokenizer a model file carries (text_tok_from_file: GGUF keys, or
 * the tokenizer a .tern header names). */
static int tok_from_file(tern_ctx *ctx, const tern_file *file, text_tokenizer **out)
{
	return text_tok_from_file(ctx, file, out);
}

void text_lm_free(void *p)
{
	text_lm *lm = p;

	if (!lm)
		return;
	text_model_free(lm->model);
	text_tok_free(lm->tok);
	free(lm);
}

int text_lm_load(const tern_host *host, const tern_file *file, void **out)
{
	tern_ctx *ctx = host->ctx;
	text_lm *lm = calloc(1, sizeof *lm);
	int rc;

	*out = NULL;
	if (!lm)
		return tern_error(ctx, TERN_E_NOMEM, "text: out of memory");
	rc = text_model_load(ctx, file, &lm->model);
	if (rc) {
		free(lm);
		return rc;
	}
	rc = tok_from_file(ctx, file, &lm->tok);
	if (rc && rc != TERN_E_NOT_FOUND && rc != TERN_E_UNSUPPORTED) {
		text_lm_free(lm);
		return rc;
	}
	if (rc) {
		/* Token ids still work (tern generate --prompt-ids); text gets
		 * this reason when it asks for the tokenizer. */
		snprintf(lm->tok_why, sizeof lm->tok_why, "%s", tern_ctx_errmsg(ctx));
		tern_ctx_clear_error(ctx);
		lm->tok = NULL;
	} else if (text_tok_n_vocab(lm->tok) > lm->model->cfg.n_vocab) {
		rc = tern_error(ctx, TERN_E_FORMAT,
				"text: the tokenizer has %d tokens, the model only %lld",
				(int)text_tok_n_vocab(lm->tok), (long long)lm->model->cfg.n_vocab);
		text_lm_free(lm);
		return rc;
	}
	lm->chat = chat_kind_of(lm->tok,
				tern_meta_get_string(tern_file_meta(file), "tokenizer.chat_template",
						     NULL));
	*out = lm;
	return TERN_OK;
}

/* ---- tokenizer files ------------------------------------------------------ */

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Whether data starts with a tiktoken line: base64, one space, digits. */
static bool looks_tiktoken(const unsigned char *d, size_t n)
{
	size_t i = 0, b64 = 0, digits = 0;

	while (i < n && (isalnum(d[i]) || d[i] == '+' || d[i] == '/' || d[i] == '='))
		i++, b64++;
	if (b64 == 0 || i >= n || d[i] != ' ')
		return false;
	for (i++; i < n && isdigit(d[i]); i++)
		digits++;
	return digits > 0 && (i == n || d[i] == '\n' || d[i] == '\r');
}

static size_t count_lines(FILE *fp)
{
	size_t n = 0;
	int c, last = '\n';

	while ((c = getc(fp)) != EOF) {
		if (c == '\n')
			n++;
		last = c;
	}
	return n + (last != '\n');
}

static int load_tokenizer_file(tern_ctx *ctx, const char *path, text_tokenizer **tok)
{
	unsigned char head[64];
	size_t n, i = 0;
	FILE *fp = fopen(path, "rb");

	if (!fp)
		return tern_error(ctx, TERN_E_IO, "%s: cannot open the tokenizer file", path);
	n = fread(head, 1, sizeof head, fp);
	if (n >= 4 && (memcmp(head, "GGUF", 4) == 0 || memcmp(head, "TERN", 4) == 0)) {
		tern_file *f;
		int rc;

		fclose(fp);
		rc = tern_file_open(ctx, path, &f);
		if (rc)
			return rc;
		rc = tok_from_file(ctx, f, tok);
		tern_file_close(f);
		return rc;
	}
	while (i < n && isspace(head[i]))
		i++;
	if (i < n && head[i] == '{') {
		fclose(fp);
		return text_tok_load_hf_json(ctx, path, tok);
	}
	if (looks_tiktoken(head, n)) {
		size_t lines;

		rewind(fp);
		lines = count_lines(fp);
		fclose(fp);
		/* Llama 3's vocabulary: its 256 special tokens follow the file's. */
		if (lines == 128000)
			return text_tok_load_llama3(ctx, path, tok);
		return text_tok_load_tiktoken(ctx, path, NULL, 0, tok);
	}
	fclose(fp);
	/* A SentencePiece model is protobuf: field 1 (pieces), wire type 2. */
	if (!has_suffix(path, ".bin") && n > 0 && head[0] == 0x0a)
		return text_tok_load_spm_model(ctx, path, tok);
	return text_tok_load_l2c(ctx, path, tok);
}

static int lm_load_tokenizer(const tern_host *host, const char *path, void **out)
{
	text_lm *lm = calloc(1, sizeof *lm);
	int rc;

	*out = NULL;
	if (!lm)
		return tern_error(host->ctx, TERN_E_NOMEM, "text: out of memory");
	rc = load_tokenizer_file(host->ctx, path, &lm->tok);
	if (rc) {
		free(lm);
		return rc;
	}
	lm->chat = chat_kind_of(lm->tok, NULL);
	*out = lm;
	return TERN_OK;
}

/* ---- properties ----------------------------------------------------------- */

static int32_t lm_n_vocab(const void *p)
{
	const text_lm *lm = p;

	if (lm->model)
		return (int32_t)lm->model->cfg.n_vocab;
	return lm->tok ? text_tok_n_vocab(lm->tok) : 0;
}

static int32_t lm_n_ctx(const void *p)
{
	const text_lm *lm = p;

	return lm->model ? (int32_t)lm->model->cfg.n_ctx : 0;
}

static int32_t lm_n_embd(const void *p)
{
	const text_lm *lm = p;

	return lm->model ? (int32_t)lm->model->cfg.n_embd : 0;
}

static int32_t lm_special(const void *p, int which)
{
	const text_lm *lm = p;

	if (!lm->tok)
		return -1;
	switch (which) {
	case TERN_LM_BOS:
		return text_tok_bos(lm->tok);
	case TERN_LM_EOS:
		return text_tok_eos(lm->tok);
	case TERN_LM_EOT:
		return text_tok_eot(lm->tok);
	default:
		return -1;
	}
}

static bool lm_is_eog(const void *p, int32_t id)
{
	const text_lm *lm = p;

	return lm->tok && text_tok_is_eog(lm->tok, id);
}

static bool lm_wants_bos(const void *p)
{
	const text_lm *lm = p;

	return lm->tok && text_tok_wants_bos(lm->tok);
}

static int64_t tensor_bytes(const tern_tensor *t)
{
	return t ? (int64_t)t->nbytes : 0;
}

static int64_t lm_weight_bytes(const void *p)
{
	const text_lm *lm = p;
	const text_model *m = lm->model;
	const text_config *c;
	int64_t b = 0;

	if (!m)
		return 0;
	c = &m->cfg;
	for (int64_t l = 0; l < c->n_layers; l++) {
		const text_layer *L = &m->w.layers[l];

		b += tensor_bytes(L->wq) + tensor_bytes(L->wk) + tensor_bytes(L->wv) +
		     tensor_bytes(L->wo) + tensor_bytes(L->w_gate) + tensor_bytes(L->w_up) +
		     tensor_bytes(L->w_down);
		b += (int64_t)sizeof(float) * (2 * c->n_embd + c->n_heads * c->head_dim + c->n_ff);
	}
	b += tensor_bytes(m->w.output) + (int64_t)sizeof(float) * c->n_embd;
	b += tensor_bytes(m->w.tok_embd) / (c->n_vocab > 0 ? c->n_vocab : 1);
	/* A residual head: its embedding row, and the rows refined on a
	 * typical step (the first round of text_forward's refinement, 64). */
	if (m->w.output_res)
		b += tensor_bytes(m->w.output_res) / (c->n_vocab > 0 ? c->n_vocab : 1) *
		     (1 + (c->n_vocab < 64 ? c->n_vocab : 64));
	return b;
}

/* ---- text ------------------------------------------------------------------ */

static int need_tok(const text_lm *lm, tern_ctx *ctx)
{
	if (lm->tok)
		return TERN_OK;
	return tern_error(ctx, TERN_E_UNSUPPORTED, "the model file carries no usable tokenizer (%s)",
			  lm->tok_why[0] ? lm->tok_why : "none found");
}

static int lm_tokenize(const void *p, tern_ctx *ctx, const char *text, size_t len, unsigned flags,
		       int32_t *ids, size_t cap, size_t *n_ids)
{
	const text_lm *lm = p;
	int f = 0, rc = need_tok(lm, ctx);

	*n_ids = 0;
	if (rc)
		return rc;
	if (flags & TERN_LM_ADD_BOS)
		f |= TEXT_TOK_ADD_BOS;
	if (flags & TERN_LM_PARSE_SPECIAL)
		f |= TEXT_TOK_PARSE_SPECIAL;
	return text_tok_encode(lm->tok, ctx, text, len, f, ids, cap, n_ids);
}

static const char *lm_token_text(const void *p, int32_t id, size_t *len)
{
	const text_lm *lm = p;

	*len = 0;
	if (!lm->tok || id < 0 || id >= text_tok_n_vocab(lm->tok))
		return NULL;
	return text_tok_piece(lm->tok, id, TEXT_TOK_RENDER_SPECIAL, len);
}

static int lm_detok_new(const void *p, tern_ctx *ctx, tern_lm_detok **out)
{
	const text_lm *lm = p;
	text_detok *d;
	int rc = need_tok(lm, ctx);

	*out = NULL;
	if (rc)
		return rc;
	rc = text_detok_new(ctx, lm->tok, 0, &d);
	if (rc == TERN_OK)
		*out = (tern_lm_detok *)d;
	return rc;
}

static void lm_detok_free(tern_lm_detok *d)
{
	text_detok_free((text_detok *)d);
}

static int lm_detok_push(tern_lm_detok *d, tern_ctx *ctx, int32_t id, const char **text,
			 size_t *len)
{
	return text_detok_push((text_detok *)d, ctx, id, text, len);
}

static void lm_detok_flush(tern_lm_detok *d, const char **text, size_t *len)
{
	text_detok_flush((text_detok *)d, text, len);
}

/* Appends to a caller's buffer, counting what does not fit. */
typedef struct sink {
	char *buf;
	size_t cap, len;
} sink;

static void put(sink *s, const char *text, size_t n)
{
	if (s->len < s->cap) {
		size_t room = s->cap - s->len;

		memcpy(s->buf + s->len, text, n < room ? n : room);
	}
	s->len += n;
}

static void puts_(sink *s, const char *text)
{
	put(s, text, strlen(text));
}

/* content without leading and trailing white space. */
static void put_trimmed(sink *s, const char *content)
{
	const char *b = content, *e = content + strlen(content);

	while (b < e && isspace((unsigned char)*b))
		b++;
	while (e > b && isspace((unsigned char)e[-1]))
		e--;
	put(s, b, (size_t)(e - b));
}

static const char *role_title(const char *role)
{
	if (strcmp(role, "system") == 0)
		return "System: ";
	if (strcmp(role, "user") == 0)
		return "User: ";
	if (strcmp(role, "assistant") == 0)
		return "Assistant: ";
	return NULL;
}

static int lm_chat_format(const void *p, tern_ctx *ctx, const tern_chat_msg *msgs, size_t n,
			  bool add_assistant, char *buf, size_t cap, size_t *len)
{
	const text_lm *lm = p;
	sink s = { buf, cap, 0 };
	const char *end = lm->chat == CHAT_PLAIN ? "\n" : "<|eot_id|>";

	*len = 0;
	for (size_t i = 0; i < n; i++) {
		const char *title = msgs[i].role ? role_title(msgs[i].role) : NULL;

		if (!title || !msgs[i].content)
			return tern_error(ctx, TERN_E_INVALID,
					  "chat: message %zu: role must be system, user or assistant "
					  "and content set",
					  i);
		if (lm->chat == CHAT_LLAMA3) {
			puts_(&s, "<|start_header_id|>");
			puts_(&s, msgs[i].role);
			puts_(&s, "<|end_header_id|>\n\n");
		} else {
			puts_(&s, title);
		}
		put_trimmed(&s, msgs[i].content);
		puts_(&s, end);
	}
	if (add_assistant)
		puts_(&s, lm->chat == CHAT_LLAMA3 ? "<|start_header_id|>assistant<|end_header_id|>\n\n"
						  : "Assistant: ");
	*len = s.len;
	if (s.len >= cap)
		return TERN_E_OVERFLOW;
	buf[s.len] = '\0';
	return TERN_OK;
}

/* ---- sessions ---------------------------------------------------------------- */

static int lm_session_new_kv(const void *p, tern_ctx *ctx, int32_t n_ctx, int32_t n_batch,
			     tern_dtype kv_type, tern_lm_session **out)
{
	const text_lm *lm = p;
	tern_lm_session *s;
	int rc;

	*out = NULL;
	if (!lm->model)
		return tern_error(ctx, TERN_E_UNSUPPORTED, "text: a tokenizer alone cannot run");
	if (n_ctx < 0 || n_batch < 0)
		return tern_error(ctx, TERN_E_INVALID, "text: session of %d positions, batch %d",
				  (int)n_ctx, (int)n_batch);
	s = calloc(1, sizeof *s);
	if (!s)
		return tern_error(ctx, TERN_E_NOMEM, "text: out of memory");
	s->lm = lm;
	rc = text_state_new_kv(ctx, lm->model, n_ctx, n_batch, kv_type, &s->st);
	if (rc) {
		free(s);
		return rc;
	}
	*out = s;
	return TERN_OK;
}

static int lm_session_new(const void *p, tern_ctx *ctx, int32_t n_ctx, int32_t n_batch,
			  tern_lm_session **out)
{
	return lm_session_new_kv(p, ctx, n_ctx, n_batch, TERN_DTYPE_F32, out);
}

static void lm_session_free(tern_lm_session *s)
{
	if (!s)
		return;
	text_state_free(s->st);
	free(s);
}

static int32_t lm_session_pos(const tern_lm_session *s)
{
	return (int32_t)s->st->pos;
}

static int32_t lm_session_n_ctx(const tern_lm_session *s)
{
	return (int32_t)s->st->n_ctx;
}

static int64_t lm_session_kv_bytes(const tern_lm_session *s)
{
	const text_config *c = &s->lm->model->cfg;
	const int64_t elem = s->st->kv_type == TERN_DTYPE_F16 ? 2 : 4;
	return c->n_layers * 2 * c->n_kv_heads * c->head_dim * elem;
}

static int lm_session_truncate(tern_lm_session *s, int32_t pos)
{
	if (pos < 0 || pos > s->st->pos)
		return TERN_E_INVALID;
	/* The cache rows past pos are simply overwritten later. */
	s->st->pos = pos;
	return TERN_OK;
}

static int lm_eval(tern_lm_session *s, tern_ctx *ctx, const int32_t *ids, int32_t n, int logits,
		   float *out)
{
	if (n < 1 || !ids)
		return tern_error(ctx, TERN_E_INVALID, "text: eval of %d tokens", (int)n);
	if (logits != TERN_LM_LOGITS_NONE && !out)
		return tern_error(ctx, TERN_E_INVALID, "text: eval: logits wanted, no buffer");
	return text_forward(ctx, s->lm->model, s->st, ids, n,
			    logits == TERN_LM_LOGITS_NONE ? NULL : out,
			    logits == TERN_LM_LOGITS_ALL);
}

static int lm_embed(const void *p, tern_ctx *ctx, const int32_t *ids, int32_t n, float *out)
{
	const text_lm *lm = p;
	const text_model *m = lm->model;

	if (!m)
		return tern_error(ctx, TERN_E_UNSUPPORTED, "text: a tokenizer alone has no embeddings");
	for (int32_t i = 0; i < n; i++)
		if (ids[i] < 0 || ids[i] >= m->cfg.n_vocab)
			return tern_error(ctx, TERN_E_INVALID, "text: token id %d out of range 0..%lld",
					  (int)ids[i], (long long)m->cfg.n_vocab - 1);
	float *tmp = malloc(sizeof(float) * (size_t)m->cfg.n_embd);
	if (!tmp)
		return tern_error(ctx, TERN_E_NOMEM, "text: out of memory");
	for (int32_t i = 0; i < n; i++)
		text_embed(m, ids[i], out + (size_t)i * (size_t)m->cfg.n_embd, tmp);
	free(tmp);
	return TERN_OK;
}

const tern_lm_iface text_lm_iface = {
	.struct_size = sizeof(tern_lm_iface),
	.load = text_lm_load,
	.load_tokenizer = lm_load_tokenizer,
	.free = text_lm_free,
	.n_vocab = lm_n_vocab,
	.n_ctx = lm_n_ctx,
	.n_embd = lm_n_embd,
	.special = lm_special,
	.is_eog = lm_is_eog,
	.wants_bos = lm_wants_bos,
	.weight_bytes_per_token = lm_weight_bytes,
	.tokenize = lm_tokenize,
	.token_text = lm_token_text,
	.detok_new = lm_detok_new,
	.detok_free = lm_detok_free,
	.detok_push = lm_detok_push,
	.detok_flush = lm_detok_flush,
	.chat_format = lm_chat_format,
	.session_new = lm_session_new,
	.session_free = lm_session_free,
	.session_pos = lm_session_pos,
	.session_n_ctx = lm_session_n_ctx,
	.session_truncate = lm_session_truncate,
	.eval = lm_eval,
	/* Needs a forward entry taking embeddings from model.c. */
	.eval_embd = NULL,
	.embed = lm_embed,
	.session_new_kv = lm_session_new_kv,
	.session_kv_bytes_per_position = lm_session_kv_bytes,
};
