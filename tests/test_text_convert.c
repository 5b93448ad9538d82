/*
 * test_text_convert.c: the text plugin's importers (plugins/text/convert.c)
 * and the model files they make, compiled in directly with model.c and the
 * tokenizers:
 *  - bitllama2.c: the converted 3M model reproduces the reference runner's
 *    greedy text exactly (../shared/testdata/bitllama2c); a tiny random
 *    ak42 model's logits and norm match an independent scalar forward
 *    written from the format description; broken ak42 files are refused
 *    with messages naming the problem;
 *  - Hugging Face checkpoints written here (safetensors + config.json):
 *    2B4T's packed uint8 layout, float master weights (absmean), 1bitLLM's
 *    names; converted weights are checked code by code and one forward
 *    against an independent double computation;
 *  - loading .tern files whose hyper-parameters sit under "gguf" (the
 *    generic GGUF conversion) and text_tok_from_file on every kind of file.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plugins/text/convert.h"
#include "plugins/text/model.h"
#include "plugins/text/tokenizer.h"
#include "tern/file.h"
#include "tern/plugin.h"
#include "testutil.h"

static tern_ctx *ctx;
static char dir[64];

static void setup(void)
{
	/* One thread: these models are tiny, and a busy machine makes the
	 * pool's waiting cost more than the work. */
	tern_ctx_params p = tern_ctx_default_params();
	p.n_threads = 1;
	cr_assert_eq(tern_ctx_new(&p, &ctx), TERN_OK);
	snprintf(dir, sizeof dir, "/tmp/tern-tc-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
	tern_ctx_free(ctx);
}

TestSuite(text_convert, .init = setup, .fini = teardown);

static const char *tmp(const char *name)
{
	static char buf[4][256];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
	return buf[k];
}

static char *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	cr_assert_not_null(fp, "cannot open %s", path);
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	cr_assert_not_null(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	buf[n] = 0;
	*len = (size_t)n;
	return buf;
}

static void spit(const char *path, const void *data, size_t len)
{
	FILE *fp = fopen(path, "wb");
	cr_assert_not_null(fp, "cannot create %s", path);
	cr_assert_eq(fwrite(data, 1, len, fp), len);
	fclose(fp);
}

typedef struct buf {
	uint8_t *p;
	size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
	if (b->n + n > b->cap) {
		b->cap = (b->n + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		cr_assert_not_null(b->p);
	}
	memcpy(b->p + b->n, d, n);
	b->n += n;
}

static void put_i32(buf *b, int32_t v)
{
	put(b, &v, 4);
}

static void put_f32(buf *b, float v)
{
	put(b, &v, 4);
}

/* Run the convert op on src_path (src NULL: the plugin sniffs the file)
 * with options o (NULL: defaults) into out; returns its status, the
 * writer finished on success. */
static int convert_opts(const char *src_path, const tern_file *src, const tern_convert_opts *o,
			const char *out)
{
	tern_host host = { .struct_size = sizeof host, .ctx = ctx };
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, out, &w), TERN_OK);
	int rc = text_convert(&host, src_path, src, o, w);
	if (rc == TERN_OK)
		rc = tern_writer_finish(w);
	tern_writer_free(w);
	return rc;
}

/* The same with the default options. */
static int convert_to(const char *src_path, const tern_file *src, const char *out)
{
	return convert_opts(src_path, src, NULL, out);
}

static int32_t argmax(const float *x, int64_t n)
{
	int32_t best = 0;
	for (int64_t i = 1; i < n; i++)
		if (x[i] > x[best])
			best = (int32_t)i;
	return best;
}

/* ---- bitllama2.c: the real 3M model ------------------------------------------ */

/* llama2.c's piece printing: after BOS a leading space is dropped, <0xXX>
 * pieces are that byte, single unprintable bytes are skipped. */
static void append_piece(const text_tokenizer *tok, int32_t prev, int32_t id, char *out,
			 size_t *len, size_t cap)
{
	size_t n;
	const char *p = text_tok_text(tok, id, &n);
	cr_assert_not_null(p);
	if (prev == 1 && n > 0 && p[0] == ' ') {
		p++;
		n--;
	}
	char byte[1];
	unsigned v;
	if (n == 6 && sscanf(p, "<0x%02X>", &v) == 1) {
		byte[0] = (char)v;
		p = byte;
		n = 1;
	}
	if (n == 1 && !(((unsigned char)p[0] >= 32 && (unsigned char)p[0] < 127) ||
			(p[0] >= 9 && p[0] <= 13)))
		return;
	cr_assert_lt(*len + n, cap);
	memcpy(out + *len, p, n);
	*len += n;
}

/* Greedy decoding of the .tern at path against the reference text. */
static void check_greedy_3m(const char *out)
{
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, out, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_str_eq(tern_file_architecture(f), "bitllama2c");
	cr_assert_str_eq(tern_meta_get_string(tern_file_meta(f), "metadata.license", ""), "MIT");
	text_model *m;
	text_tokenizer *tok;
	text_state *s;
	cr_assert_eq(text_model_load(ctx, f, &m), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_tok_from_file(ctx, f, &tok), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(m->cfg.n_vocab, 512);
	cr_assert_eq(text_tok_n_vocab(tok), 512);
	cr_assert_eq(text_state_new(ctx, m, 256, 0, &s), TERN_OK);

	/* llama2.c's loop: 256 positions from BOS, stop if BOS comes back. */
	char text[8192];
	size_t len = 0;
	float logits[512];
	int32_t token = 1;
	double min_margin = INFINITY;
	for (int pos = 0; pos < 256; pos++) {
		cr_assert_eq(text_forward(ctx, m, s, &token, 1, logits, false), TERN_OK, "%s",
			     tern_ctx_errmsg(ctx));
		int32_t next = argmax(logits, 512);
		float second = -INFINITY;
		for (int i = 0; i < 512; i++)
			if (i != next && logits[i] > second)
				second = logits[i];
		min_margin = fmin(min_margin, logits[next] - second);
		if (next == 1)
			break;
		append_piece(tok, token, next, text, &len, sizeof text - 2);
		token = next;
	}
	text[len++] = '\n';
	text[len] = 0;
	size_t rlen;
	char *ref = slurp(tu_shared_path("bitllama2c/greedy_3M_empty_256.txt"), &rlen);
	cr_assert_eq(len, rlen, "%zu bytes, reference %zu:\n%s", len, rlen, text);
	cr_assert_eq(memcmp(text, ref, len), 0, "text differs:\n%s", text);
	cr_log_info("bitllama2c 3M: greedy text matches (%zu bytes); smallest top-1 margin %.4g",
		    len, min_margin);
	free(ref);
	text_state_free(s);
	text_tok_free(tok);
	text_model_free(m);
	tern_file_close(f);
}

Test(text_convert, bitllama2c_3m_greedy_text_matches_the_reference_runner, .timeout = 60)
{
	/* The op finds tokenizer.bin beside the model by itself. */
	const char *out = tmp("bit3m.tern");
	cr_assert_eq(convert_to(tu_shared_path("bitllama2c/bit_model_3M.bin"), NULL, out), TERN_OK,
		     "%s", tern_ctx_errmsg(ctx));
	check_greedy_3m(out);
}

/* The bundled copy (make bundled-model) is the same model. */
Test(text_convert, bundled_bitllama2c_model_writes_the_reference_story, .timeout = 60)
{
	check_greedy_3m(tu_srcpath("models/bitllama2c-3M.tern"));
}

/* ---- bitllama2.c: a tiny random model against a scalar forward --------------- */

enum { A_DIM = 32, A_HID = 48, A_L = 2, A_H = 4, A_KVH = 2, A_V = 20, A_SEQ = 16, A_N = 6 };
#define A_HS (A_DIM / A_H)
#define A_KV (A_KVH * A_HS)

typedef struct ak42_model {
	buf file;
	const float *norm, *emb;
	const uint8_t *mat[7][A_L]; /* scale, then codes */
} ak42_model;

static const int a_out[7] = { A_DIM, A_KV, A_KV, A_DIM, A_HID, A_DIM, A_HID };
static const int a_in[7] = { A_DIM, A_DIM, A_DIM, A_DIM, A_DIM, A_HID, A_DIM };

static void ak42_make(ak42_model *m, uint64_t seed)
{
	tu_rng r = tu_rng_new(seed);
	buf *b = &m->file;
	memset(b, 0, sizeof *b);
	put_i32(b, 0x616b3432);
	put_i32(b, 1);
	const int32_t hdr[7] = { A_DIM, A_HID, A_L, A_H, A_KVH, A_V, A_SEQ };
	put(b, hdr, sizeof hdr);
	uint8_t one = 1, zero[256] = { 0 };
	put(b, &one, 1);
	put(b, zero, 256 - b->n);
	for (int i = 0; i < A_DIM; i++)
		put_f32(b, 0.5f + 0.5f * (tu_float(&r) + 1.0f));
	for (int i = 0; i < A_V * A_DIM; i++)
		put_f32(b, tu_normal(&r));
	for (int k = 0; k < 7; k++)
		for (int l = 0; l < A_L; l++) {
			put_f32(b, 0.05f + 0.1f * (tu_float(&r) + 1.0f));
			for (int i = 0; i < a_out[k] * a_in[k] / 4; i++) {
				uint8_t byte = (uint8_t)tu_int(&r, 0, 255);
				put(b, &byte, 1);
			}
		}
	/* Pointers only once the buffer stops moving. */
	size_t off = 256;
	m->norm = (const float *)(b->p + off);
	off += 4 * A_DIM;
	m->emb = (const float *)(b->p + off);
	off += 4 * A_V * A_DIM;
	for (int k = 0; k < 7; k++)
		for (int l = 0; l < A_L; l++) {
			m->mat[k][l] = b->p + off;
			off += 4 + (size_t)(a_out[k] * a_in[k] / 4);
		}
	cr_assert_eq(off, b->n);
}

/* A llama2.c tokenizer.bin of A_V pieces. */
static buf l2c_tokenizer(int n)
{
	buf b = { 0 };
	put_i32(&b, 8);
	for (int i = 0; i < n; i++) {
		char piece[16];
		int len = i == 0 ? snprintf(piece, sizeof piece, "<unk>")
			 : i == 1 ? snprintf(piece, sizeof piece, "<s>")
			 : i == 2 ? snprintf(piece, sizeof piece, "</s>")
				  : snprintf(piece, sizeof piece, " w%d", i);
		put_f32(&b, (float)-i);
		put_i32(&b, len);
		put(&b, piece, (size_t)len);
	}
	return b;
}

/* Weight (o, i) of matrix k, layer l, read straight from the ak42 bytes. */
static float a_w(const ak42_model *m, int k, int l, int o, int i)
{
	const uint8_t *codes = m->mat[k][l] + 4;
	size_t idx = (size_t)o * a_in[k] + i;
	int c = codes[idx / 4] >> (6 - 2 * (idx % 4)) & 3;
	return c == 1 ? 1.0f : c == 3 ? -1.0f : 0.0f;
}

static float a_scale(const ak42_model *m, int k, int l)
{
	float s;
	memcpy(&s, m->mat[k][l], 4);
	return s;
}

/* Parameter-free norm x / rms(x) / n, in double. */
static void a_norm(const float *x, int n, float *y)
{
	double ss = 0;
	for (int i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	double r = 1.0 / sqrt(ss / n) / n;
	for (int i = 0; i < n; i++)
		y[i] = (float)(x[i] * r);
}

/* BitLinear: int8 per token with s = max|x|/127, q = round-half-away(x/s). */
static void a_linear(const ak42_model *m, int k, int l, const float *x, float *y)
{
	float amax = 0;
	for (int i = 0; i < a_in[k]; i++)
		amax = fmaxf(amax, fabsf(x[i]));
	double s = amax / 127.0;
	int q[64];
	for (int i = 0; i < a_in[k]; i++)
		q[i] = (int)round(x[i] / s);
	for (int o = 0; o < a_out[k]; o++) {
		long acc = 0;
		for (int i = 0; i < a_in[k]; i++)
			acc += (long)a_w(m, k, l, o, i) * q[i];
		y[o] = (float)(acc * a_scale(m, k, l) * s);
	}
}

static void a_rope(float *v, int n_heads, int pos)
{
	for (int h = 0; h < n_heads; h++)
		for (int i = 0; i < A_HS; i += 2) {
			double ang = pos / pow(10000.0, (double)i / A_HS);
			double x0 = v[h * A_HS + i], x1 = v[h * A_HS + i + 1];
			v[h * A_HS + i] = (float)(x0 * cos(ang) - x1 * sin(ang));
			v[h * A_HS + i + 1] = (float)(x0 * sin(ang) + x1 * cos(ang));
		}
}

/* The whole forward over tok[A_N], logits [A_N][A_V]; layer 0's first
 * normalized input in norm0 [A_N][A_DIM]. */
static void a_forward(const ak42_model *m, const int32_t *tok, float *logits, float *norm0)
{
	static float x[A_N][A_DIM], q[A_N][A_DIM], k[A_N][A_KV], v[A_N][A_KV];
	float h[A_HID], h2[A_HID], xb[A_DIM], o[A_DIM], sc[A_N];
	for (int t = 0; t < A_N; t++)
		memcpy(x[t], m->emb + tok[t] * A_DIM, sizeof x[t]);
	for (int l = 0; l < A_L; l++) {
		for (int t = 0; t < A_N; t++) {
			a_norm(x[t], A_DIM, xb);
			if (l == 0)
				memcpy(norm0 + t * A_DIM, xb, sizeof xb);
			a_linear(m, 0, l, xb, q[t]);
			a_linear(m, 1, l, xb, k[t]);
			a_linear(m, 2, l, xb, v[t]);
			a_rope(q[t], A_H, t);
			a_rope(k[t], A_KVH, t);
		}
		for (int t = 0; t < A_N; t++) {
			float att[A_DIM];
			for (int hh = 0; hh < A_H; hh++) {
				int kh = hh / (A_H / A_KVH);
				double mx = -INFINITY, sum = 0;
				for (int j = 0; j <= t; j++) {
					double d = 0;
					for (int i = 0; i < A_HS; i++)
						d += (double)q[t][hh * A_HS + i] * k[j][kh * A_HS + i];
					sc[j] = (float)(d / sqrt((double)A_HS));
					mx = fmax(mx, sc[j]);
				}
				double p[A_N];
				for (int j = 0; j <= t; j++)
					sum += (p[j] = exp(sc[j] - mx));
				for (int i = 0; i < A_HS; i++) {
					double a = 0;
					for (int j = 0; j <= t; j++)
						a += p[j] / sum * v[j][kh * A_HS + i];
					att[hh * A_HS + i] = (float)a;
				}
			}
			a_norm(att, A_DIM, att);
			a_linear(m, 3, l, att, o);
			for (int i = 0; i < A_DIM; i++)
				x[t][i] += o[i];
		}
		for (int t = 0; t < A_N; t++) {
			a_norm(x[t], A_DIM, xb);
			a_linear(m, 4, l, xb, h);
			a_linear(m, 6, l, xb, h2);
			for (int i = 0; i < A_HID; i++)
				h[i] = (float)(h[i] / (1.0 + exp(-(double)h[i])) * h2[i]);
			a_norm(h, A_HID, h);
			a_linear(m, 5, l, h, o);
			for (int i = 0; i < A_DIM; i++)
				x[t][i] += o[i];
		}
	}
	for (int t = 0; t < A_N; t++) {
		double ss = 0;
		for (int i = 0; i < A_DIM; i++)
			ss += (double)x[t][i] * x[t][i];
		double r = 1.0 / sqrt(ss / A_DIM + 1e-5);
		for (int i = 0; i < A_DIM; i++)
			xb[i] = (float)(x[t][i] * r * m->norm[i]);
		for (int vv = 0; vv < A_V; vv++) {
			double d = 0;
			for (int i = 0; i < A_DIM; i++)
				d += (double)m->emb[vv * A_DIM + i] * xb[i];
			logits[t * A_V + vv] = (float)d;
		}
	}
}

typedef struct norm_trace {
	float got[A_N * A_DIM];
	int seen;
} norm_trace;

static void keep_norm0(void *user, const char *name, int64_t layer, const float *data, int64_t n,
		       int64_t width)
{
	norm_trace *nt = user;
	if (layer == 0 && strcmp(name, "attn_norm") == 0 && n == A_N && width == A_DIM) {
		memcpy(nt->got, data, sizeof nt->got);
		nt->seen++;
	}
}

/* Write the tiny model and its tokenizer to dir; convert; open. */
static tern_file *tiny_ak42(ak42_model *m, uint64_t seed)
{
	ak42_make(m, seed);
	spit(tmp("tiny.bin"), m->file.p, m->file.n);
	buf tk = l2c_tokenizer(A_V);
	spit(tmp("tokenizer.bin"), tk.p, tk.n);
	free(tk.p);
	cr_assert_eq(convert_to(tmp("tiny.bin"), NULL, tmp("tiny.tern")), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, tmp("tiny.tern"), &f), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	return f;
}

/* Ours follows the runner float for float; the reference uses double for
 * norms, softmax and RoPE, so activations agree to ~1e-6 and int8 codes
 * agree except where a value sits within ~1e-6 of a rounding boundary,
 * which shifts one product by 1/127 of the token's scale. 2e-3 of the
 * largest logit covers a few such flips; a wrong norm (missing 1/n, eps),
 * pairing or code mapping moves logits by O(1). */
Test(text_convert, bitllama2c_tiny_model_matches_a_scalar_forward)
{
	ak42_model m;
	tern_file *f = tiny_ak42(&m, 3);
	/* Converted weights equal the ak42 codes times the scale, exactly. */
	for (int k = 0; k < 7; k++) {
		static const char *const nm[7] = { "attn_q",   "attn_k",   "attn_v", "attn_output",
						   "ffn_gate", "ffn_down", "ffn_up" };
		char name[64];
		snprintf(name, sizeof name, "blk.1.%s.weight", nm[k]);
		const tern_tensor *t = tern_file_find(f, name);
		cr_assert_not_null(t, "%s", name);
		cr_assert_eq(t->dtype, TERN_DTYPE_T2);
		float row[64];
		for (int o = 0; o < a_out[k]; o++) {
			tern_tensor_row_to_float(t, o, row);
			for (int i = 0; i < a_in[k]; i++)
				cr_assert_eq(row[i], a_w(&m, k, 1, o, i) * a_scale(&m, k, 1),
					     "%s [%d][%d]", name, o, i);
		}
	}
	text_model *model;
	text_state *s;
	cr_assert_eq(text_model_load(ctx, f, &model), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(model->cfg.arch, TEXT_ARCH_BITLLAMA2C);
	cr_assert_eq(text_state_new(ctx, model, 0, 0, &s), TERN_OK);
	norm_trace nt = { .seen = 0 };
	s->trace = keep_norm0;
	s->trace_user = &nt;
	const int32_t tok[A_N] = { 1, 7, 19, 3, 3, 12 };
	float ours[A_N * A_V], ref[A_N * A_V], norm0[A_N * A_DIM];
	cr_assert_eq(text_forward(ctx, model, s, tok, A_N, ours, true), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	a_forward(&m, tok, ref, norm0);
	cr_assert_eq(nt.seen, 1);
	double nd = 0, nmax = 0;
	for (int i = 0; i < A_N * A_DIM; i++) {
		nd = fmax(nd, fabs(nt.got[i] - norm0[i]));
		nmax = fmax(nmax, fabs(norm0[i]));
	}
	/* float sums of 32 squares against double: a few ulp. */
	cr_assert_leq(nd / nmax, 1e-6, "parameter-free norm: rel diff %.3g", nd / nmax);
	double diff = 0, scale = 0;
	for (int i = 0; i < A_N * A_V; i++) {
		diff = fmax(diff, fabs(ours[i] - ref[i]));
		scale = fmax(scale, fabs(ref[i]));
	}
	cr_log_info("tiny bitllama2c: norm rel diff %.3g, logits max|diff|/max|ref| %.3g", nd / nmax,
		    diff / scale);
	cr_assert_leq(diff / scale, 2e-3, "logits: max|diff|/max|ref| = %.3g", diff / scale);
	/* Decoding token by token gives the same logits as the batch. */
	text_state_reset(s);
	s->trace = NULL;
	float step[A_V];
	for (int t = 0; t < A_N; t++) {
		cr_assert_eq(text_forward(ctx, model, s, tok + t, 1, step, false), TERN_OK);
		for (int v = 0; v < A_V; v++)
			cr_assert_float_eq(step[v], ours[t * A_V + v], 1e-5f * (float)scale);
	}
	text_state_free(s);
	text_model_free(model);
	tern_file_close(f);
	free(m.file.p);
}

/* ---- bitllama2.c: broken inputs --------------------------------------------- */

static int convert_bytes(const void *data, size_t n)
{
	spit(tmp("bad.bin"), data, n);
	return convert_to(tmp("bad.bin"), NULL, tmp("bad.tern"));
}

Test(text_convert, broken_ak42_files_are_refused_by_name)
{
	ak42_model m;
	ak42_make(&m, 5);
	buf tk = l2c_tokenizer(A_V);
	spit(tmp("tokenizer.bin"), tk.p, tk.n);

	cr_assert_eq(convert_bytes(m.file.p, m.file.n - 1), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "truncated"), "%s", tern_ctx_errmsg(ctx));

	uint8_t *p = malloc(m.file.n + 8);
	memcpy(p, m.file.p, m.file.n);
	memset(p + m.file.n, 0, 8);
	cr_assert_eq(convert_bytes(p, m.file.n + 8), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "8 bytes after"), "%s",
			   tern_ctx_errmsg(ctx));

	int32_t absurd = 0x7fffffff;
	memcpy(p + 8 + 4 * 5, &absurd, 4); /* vocab_size */
	cr_assert_eq(convert_bytes(p, m.file.n), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "vocab_size = 2147483647 is outside"), "%s",
			   tern_ctx_errmsg(ctx));
	memcpy(p, m.file.p, m.file.n);
	int32_t heads = 5;
	memcpy(p + 8 + 4 * 3, &heads, 4);
	cr_assert_eq(convert_bytes(p, m.file.n), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "heads do not divide"), "%s",
			   tern_ctx_errmsg(ctx));
	memcpy(p, m.file.p, m.file.n);
	int32_t version = 2;
	memcpy(p + 4, &version, 4);
	cr_assert_eq(convert_bytes(p, m.file.n), TERN_E_UNSUPPORTED);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "version 2"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(convert_bytes(p, 100), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "shorter than the 256-byte"), "%s",
			   tern_ctx_errmsg(ctx));

	/* Not ak42 at all: the op declines without a message. */
	cr_assert_eq(convert_bytes("GGUFxxxx", 8), TERN_E_UNSUPPORTED);

	/* A tokenizer whose entry runs past the end, or of the wrong size. */
	spit(tmp("tokenizer.bin"), tk.p, tk.n - 2);
	cr_assert_eq(convert_bytes(m.file.p, m.file.n), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "run past the end"), "%s",
			   tern_ctx_errmsg(ctx));
	buf small = l2c_tokenizer(A_V - 1);
	spit(tmp("tokenizer.bin"), small.p, small.n);
	cr_assert_eq(convert_bytes(m.file.p, m.file.n), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "19 tokens, but the model has vocab_size 20"),
			   "%s", tern_ctx_errmsg(ctx));
	unlink(tmp("tokenizer.bin"));
	cr_assert_eq(convert_bytes(m.file.p, m.file.n), TERN_E_NOT_FOUND);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "tokenizer.bin does not exist"), "%s",
			   tern_ctx_errmsg(ctx));
	free(small.p);
	free(p);
	free(tk.p);
	free(m.file.p);
}

/* ---- Hugging Face checkpoints -------------------------------------------------- */

enum { H_E = 64, H_H = 4, H_KVH = 2, H_HD = 16, H_F = 96, H_V = 40, H_L = 2, H_N = 5 };
#define H_QW (H_H * H_HD)
#define H_KW (H_KVH * H_HD)

typedef enum hf_flavor { HF_PACKED, HF_BF16, HF_1BIT } hf_flavor;

/* q, k, v, o, gate, up, down: [out][in]. */
static const int h_out[7] = { H_QW, H_KW, H_KW, H_E, H_F, H_F, H_E };
static const int h_in[7] = { H_E, H_E, H_E, H_QW, H_E, H_E, H_F };
static const char *const h_proj[7] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
				       "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
				       "mlp.down_proj" };
static const char *const h_tern[7] = { "attn_q",   "attn_k", "attn_v",  "attn_output",
				       "ffn_gate", "ffn_up", "ffn_down" };

/* The model as the reference sees it: every value as stored (rounded to
 * bf16/f16), linear weights as their effective ternary * scale. */
typedef struct hf_model {
	hf_flavor flavor;
	bool spoil; /* write a code 3 into byte 5 of layer 1's packed q_proj */
	float emb[H_V * H_E], head[H_V * H_E], norm[H_E];
	float lnorm[H_L][4][H_F];           /* attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm */
	float w[H_L][7][H_F * H_F];         /* effective weights */
	float scale[H_L][7];
} hf_model;

typedef struct st_entry {
	char name[96];
	const char *dtype;
	int n_dims;
	int64_t shape[2];
	buf data;
} st_entry;

typedef struct st_file {
	st_entry e[128];
	int n;
} st_file;

static st_entry *st_add(st_file *f, const char *name, const char *dtype, int64_t rows,
			int64_t cols)
{
	cr_assert_lt(f->n, 128);
	st_entry *e = &f->e[f->n++];
	memset(e, 0, sizeof *e);
	snprintf(e->name, sizeof e->name, "%s", name);
	e->dtype = dtype;
	e->n_dims = rows ? 2 : 1;
	e->shape[0] = rows ? rows : cols;
	e->shape[1] = cols;
	return e;
}

/* Store v as bf16/f16 in e and return the stored value. */
static float st_put_half(st_entry *e, float v)
{
	uint16_t h = strcmp(e->dtype, "BF16") == 0 ? tern_f32_to_bf16(v) : tern_f32_to_f16(v);
	put(&e->data, &h, 2);
	return strcmp(e->dtype, "BF16") == 0 ? tern_bf16_to_f32(h) : tern_f16_to_f32(h);
}

static void st_write(const st_file *f, const char *path)
{
	char hdr[16384];
	size_t n = 0, off = 0;
	n += (size_t)snprintf(hdr + n, sizeof hdr - n, "{");
	for (int i = 0; i < f->n; i++) {
		const st_entry *e = &f->e[i];
		n += (size_t)snprintf(hdr + n, sizeof hdr - n, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld",
				      i ? "," : "", e->name, e->dtype, (long long)e->shape[0]);
		if (e->n_dims == 2)
			n += (size_t)snprintf(hdr + n, sizeof hdr - n, ",%lld", (long long)e->shape[1]);
		n += (size_t)snprintf(hdr + n, sizeof hdr - n, "],\"data_offsets\":[%zu,%zu]}", off,
				      off + e->data.n);
		off += e->data.n;
	}
	n += (size_t)snprintf(hdr + n, sizeof hdr - n, "}");
	cr_assert_lt(n, sizeof hdr - 8);
	while (n % 8)
		hdr[n++] = ' ';
	FILE *fp = fopen(path, "wb");
	cr_assert_not_null(fp);
	uint64_t len = n;
	fwrite(&len, 8, 1, fp);
	fwrite(hdr, 1, n, fp);
	for (int i = 0; i < f->n; i++)
		fwrite(f->e[i].data.p, 1, f->e[i].data.n, fp);
	fclose(fp);
	for (int i = 0; i < f->n; i++)
		free(f->e[i].data.p);
}

/* Absmean ternarization of W [n] in double: the independent check of the
 * converter's codes and scale. */
static void absmean(const float *W, int n, float *eff, float *scale)
{
	double s = 0;
	for (int i = 0; i < n; i++)
		s += fabs((double)W[i]);
	s /= n;
	for (int i = 0; i < n; i++) {
		double q = nearbyint(W[i] / s);
		eff[i] = (float)(q > 1 ? 1 : q < -1 ? -1 : q);
	}
	*scale = (float)s;
	for (int i = 0; i < n; i++)
		eff[i] *= *scale;
}

/* Write a random checkpoint of the flavour into directory d. */
static void hf_make(hf_model *m, hf_flavor flavor, const char *d, uint64_t seed)
{
	tu_rng r = tu_rng_new(seed);
	static st_file f;
	memset(&f, 0, sizeof f);
	m->flavor = flavor;
	const char *half = flavor == HF_1BIT ? "F16" : "BF16";
	st_entry *e = st_add(&f, "model.embed_tokens.weight", half, H_V, H_E);
	for (int i = 0; i < H_V * H_E; i++)
		m->emb[i] = st_put_half(e, tu_normal(&r));
	e = st_add(&f, "model.norm.weight", half, 0, H_E);
	for (int i = 0; i < H_E; i++)
		m->norm[i] = st_put_half(e, 1.0f + 0.5f * tu_float(&r));
	if (flavor == HF_1BIT) {
		e = st_add(&f, "lm_head.weight", half, H_V, H_E);
		for (int i = 0; i < H_V * H_E; i++)
			m->head[i] = st_put_half(e, tu_normal(&r) / 8.0f);
	} else {
		memcpy(m->head, m->emb, sizeof m->head);
	}
	const bool b2 = flavor != HF_1BIT;
	const char *norms[4] = { "input_layernorm",
				 b2 ? "self_attn.attn_sub_norm" : "self_attn.inner_attn_ln",
				 "post_attention_layernorm",
				 b2 ? "mlp.ffn_sub_norm" : "mlp.ffn_layernorm" };
	const int norm_n[4] = { H_E, H_QW, H_E, H_F };
	for (int l = 0; l < H_L; l++) {
		char name[128];
		for (int k = 0; k < 4; k++) {
			snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, norms[k]);
			e = st_add(&f, name, half, 0, norm_n[k]);
			for (int i = 0; i < norm_n[k]; i++)
				m->lnorm[l][k][i] = st_put_half(e, 1.0f + 0.5f * tu_float(&r));
		}
		for (int k = 0; k < 7; k++) {
			const int out = h_out[k], in = h_in[k];
			snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, h_proj[k]);
			if (flavor == HF_PACKED) {
				e = st_add(&f, name, "U8", out / 4, in);
				uint8_t *packed = calloc((size_t)(out / 4 * in), 1);
				float s = tern_bf16_to_f32(tern_f32_to_bf16(0.5f + tu_float(&r) / 4));
				for (int o = 0; o < out; o++)
					for (int i = 0; i < in; i++) {
						int code = (int)tu_int(&r, 0, 2);
						packed[(o % (out / 4)) * in + i] |=
							(uint8_t)(code << (2 * (o / (out / 4))));
						m->w[l][k][o * in + i] = (float)(code - 1) * s;
					}
				if (m->spoil && l == 1 && k == 0)
					packed[5] |= 3 << 4;
				put(&e->data, packed, (size_t)(out / 4 * in));
				free(packed);
				snprintf(name, sizeof name, "model.layers.%d.%s.weight_scale", l,
					 h_proj[k]);
				e = st_add(&f, name, "BF16", 0, 1);
				m->scale[l][k] = st_put_half(e, s);
			} else {
				e = st_add(&f, name, half, out, in);
				float *raw = malloc(sizeof(float) * (size_t)(out * in));
				for (int i = 0; i < out * in; i++)
					raw[i] = st_put_half(e, tu_normal(&r) * 0.05f);
				absmean(raw, out * in, m->w[l][k], &m->scale[l][k]);
				free(raw);
			}
		}
	}
	char path[512];
	mkdir(d, 0755);
	snprintf(path, sizeof path, "%s/model.safetensors", d);
	st_write(&f, path);
	char cfg[1024];
	int n = snprintf(cfg, sizeof cfg,
			 "{\"architectures\":[\"%s\"],\"hidden_size\":%d,\"intermediate_size\":%d,"
			 "\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
			 "\"num_key_value_heads\":%d,\"vocab_size\":%d,"
			 "\"max_position_embeddings\":32,\"rms_norm_eps\":1e-05,"
			 "\"rope_theta\":%s,\"hidden_act\":\"%s\",\"tie_word_embeddings\":%s%s}",
			 b2 ? "BitNetForCausalLM" : "BitnetForCausalLM", H_E, H_F, H_L, H_H, H_KVH,
			 H_V, b2 ? "500000.0" : "10000.0", b2 ? "relu2" : "silu",
			 b2 ? "true" : "false",
			 flavor == HF_PACKED ? ",\"quantization_config\":{\"quant_method\":\"bitnet\","
					       "\"linear_class\":\"autobitlinear\","
					       "\"quantization_mode\":\"offline\"}"
					     : "");
	snprintf(path, sizeof path, "%s/config.json", d);
	spit(path, cfg, (size_t)n);
}

/* ---- the independent forward: double, activations int8 per token ------------ */

static void h_rmsnorm(const double *x, const float *w, int n, double *y)
{
	double ss = 0;
	for (int i = 0; i < n; i++)
		ss += x[i] * x[i];
	double r = 1.0 / sqrt(ss / n + 1e-5);
	for (int i = 0; i < n; i++)
		y[i] = x[i] * r * w[i];
}

/* y = W q / (127 / max|x|), q = round-half-even(x * 127 / max|x|). */
static void h_bitlinear(const float *W, int rows, int cols, const double *x, double *y)
{
	double amax = 0;
	for (int c = 0; c < cols; c++)
		amax = fmax(amax, fabs(x[c]));
	double s = 127.0 / amax, q[H_F];
	for (int c = 0; c < cols; c++)
		q[c] = nearbyint(x[c] * s);
	for (int r = 0; r < rows; r++) {
		double acc = 0;
		for (int c = 0; c < cols; c++)
			acc += (double)W[r * cols + c] * q[c];
		y[r] = acc / s;
	}
}

static void h_rope(double *head, int pos, double base)
{
	for (int i = 0; i < H_HD / 2; i++) {
		double a = pos * pow(base, -2.0 * i / H_HD);
		double x0 = head[i], x1 = head[i + H_HD / 2];
		head[i] = x0 * cos(a) - x1 * sin(a);
		head[i + H_HD / 2] = x0 * sin(a) + x1 * cos(a);
	}
}

static void h_forward(const hf_model *m, const int32_t *tok, double *logits)
{
	static double x[H_N][H_E], q[H_N][H_QW], k[H_N][H_KW], v[H_N][H_KW];
	double h[H_F], att[H_QW], o[H_E], g[H_F], u[H_F], sc[H_N];
	const bool relu2 = m->flavor != HF_1BIT;
	const double base = relu2 ? 500000.0 : 10000.0;
	for (int t = 0; t < H_N; t++)
		for (int i = 0; i < H_E; i++)
			x[t][i] = m->emb[tok[t] * H_E + i];
	for (int l = 0; l < H_L; l++) {
		for (int t = 0; t < H_N; t++) {
			h_rmsnorm(x[t], m->lnorm[l][0], H_E, h);
			h_bitlinear(m->w[l][0], H_QW, H_E, h, q[t]);
			h_bitlinear(m->w[l][1], H_KW, H_E, h, k[t]);
			h_bitlinear(m->w[l][2], H_KW, H_E, h, v[t]);
			for (int hh = 0; hh < H_H; hh++)
				h_rope(q[t] + hh * H_HD, t, base);
			for (int hh = 0; hh < H_KVH; hh++)
				h_rope(k[t] + hh * H_HD, t, base);
		}
		for (int t = 0; t < H_N; t++) {
			for (int hh = 0; hh < H_H; hh++) {
				int kh = hh / (H_H / H_KVH);
				double mx = -INFINITY, sum = 0;
				for (int j = 0; j <= t; j++) {
					double d = 0;
					for (int i = 0; i < H_HD; i++)
						d += q[t][hh * H_HD + i] * k[j][kh * H_HD + i];
					sc[j] = d / sqrt((double)H_HD);
					mx = fmax(mx, sc[j]);
				}
				for (int j = 0; j <= t; j++)
					sum += (sc[j] = exp(sc[j] - mx));
				for (int i = 0; i < H_HD; i++) {
					double a = 0;
					for (int j = 0; j <= t; j++)
						a += sc[j] / sum * v[j][kh * H_HD + i];
					att[hh * H_HD + i] = a;
				}
			}
			h_rmsnorm(att, m->lnorm[l][1], H_QW, att);
			h_bitlinear(m->w[l][3], H_E, H_QW, att, o);
			for (int i = 0; i < H_E; i++)
				x[t][i] += o[i];
		}
		for (int t = 0; t < H_N; t++) {
			h_rmsnorm(x[t], m->lnorm[l][2], H_E, h);
			h_bitlinear(m->w[l][4], H_F, H_E, h, g);
			h_bitlinear(m->w[l][5], H_F, H_E, h, u);
			for (int i = 0; i < H_F; i++) {
				double a = relu2 ? (g[i] > 0 ? g[i] * g[i] : 0) : g[i] / (1 + exp(-g[i]));
				g[i] = a * u[i];
			}
			h_rmsnorm(g, m->lnorm[l][3], H_F, g);
			h_bitlinear(m->w[l][6], H_E, H_F, g, o);
			for (int i = 0; i < H_E; i++)
				x[t][i] += o[i];
		}
	}
	for (int t = 0; t < H_N; t++) {
		h_rmsnorm(x[t], m->norm, H_E, h);
		for (int vv = 0; vv < H_V; vv++) {
			double d = 0;
			for (int i = 0; i < H_E; i++)
				d += (double)m->head[vv * H_E + i] * h[i];
			logits[t * H_V + vv] = d;
		}
	}
}

/* Convert the flavour's checkpoint; check weights and one forward. Weights:
 * packed codes times weight_scale are exact; absmean codes are exact and
 * the scale (a mean of 6144 values) agrees to float rounding. Forward: the
 * reference quantizes activations exactly as tern does, in double, so
 * only float rounding (and the rare int8 code it tips over a half)
 * separates them: 2e-3 of the largest logit. */
/* The logits of the converted model at `path` for tok, all positions. */
static void hf_logits(const char *path, const int32_t *tok, int n, float *out)
{
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, path, &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	text_model *model;
	text_state *s;
	cr_assert_eq(text_model_load(ctx, f, &model), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_state_new(ctx, model, 0, 0, &s), TERN_OK);
	cr_assert_eq(text_forward(ctx, model, s, tok, n, out, true), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	text_state_free(s);
	text_model_free(model);
	tern_file_close(f);
}

/* max |ours - ref| / max |ref| over n logits. */
static double rel_diff(const float *ours, const double *ref, int n)
{
	double diff = 0, scale = 0;
	for (int i = 0; i < n; i++) {
		diff = fmax(diff, fabs(ours[i] - ref[i]));
		scale = fmax(scale, fabs(ref[i]));
	}
	return diff / scale;
}

static void check_hf(hf_flavor flavor)
{
	hf_model *m = calloc(1, sizeof *m);
	const char *d = tmp("hf");
	hf_make(m, flavor, d, 21 + (uint64_t)flavor);
	tern_file *src;
	cr_assert_eq(tern_file_open(ctx, d, &src), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_file_format_of(src), TERN_FORMAT_HF);
	/* A float head for the exact comparison; int8, 4-bit and the default
	 * (4-bit plus residual) below. */
	tern_convert_opts fo = tern_convert_default_opts();
	fo.head_type = TERN_DTYPE_F32;
	cr_assert_eq(convert_opts(d, src, &fo, tmp("hf.tern")), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	fo.head_type = TERN_DTYPE_I8;
	cr_assert_eq(convert_opts(d, src, &fo, tmp("hf-i8.tern")), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	cr_assert_eq(convert_to(d, src, tmp("hf-def.tern")), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_file_close(src);
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, tmp("hf.tern"), &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_str_eq(tern_file_architecture(f), flavor == HF_1BIT ? "bitnet" : "bitnet-b1.58");
	cr_assert_eq(tern_file_find(f, "output.weight") != NULL, flavor == HF_1BIT);
	float row[H_F];
	for (int l = 0; l < H_L; l++)
		for (int k = 0; k < 7; k++) {
			char name[64];
			snprintf(name, sizeof name, "blk.%d.%s.weight", l, h_tern[k]);
			const tern_tensor *t = tern_file_find(f, name);
			cr_assert_not_null(t, "%s", name);
			cr_assert_eq(t->dtype, TERN_DTYPE_T2);
			float s = tern_tensor_scale_at(t, 0, 0);
			cr_assert_float_eq(s, m->scale[l][k], 1e-6f * m->scale[l][k], "%s scale", name);
			for (int o = 0; o < h_out[k]; o++) {
				tern_tensor_row_to_float(t, o, row);
				for (int i = 0; i < h_in[k]; i++) {
					float want = m->w[l][k][o * h_in[k] + i];
					cr_assert_eq(row[i] / s, want / m->scale[l][k], "%s [%d][%d]",
						     name, o, i);
				}
			}
		}
	text_model *model;
	text_state *s;
	cr_assert_eq(text_model_load(ctx, f, &model), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(model->cfg.act, flavor == HF_1BIT ? TEXT_ACT_SILU : TEXT_ACT_RELU2);
	cr_assert_eq(text_state_new(ctx, model, 0, 0, &s), TERN_OK);
	const int32_t tok[H_N] = { 3, 0, 39, 17, 8 };
	float ours[H_N * H_V];
	double ref[H_N * H_V];
	cr_assert_eq(text_forward(ctx, model, s, tok, H_N, ours, true), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	h_forward(m, tok, ref);
	double diff = 0, scale = 0;
	for (int i = 0; i < H_N * H_V; i++) {
		diff = fmax(diff, fabs(ours[i] - ref[i]));
		scale = fmax(scale, fabs(ref[i]));
	}
	cr_log_info("hf flavour %d: logits max|diff|/max|ref| %.3g", (int)flavor, diff / scale);
	cr_assert_leq(diff / scale, 2e-3, "max|diff|/max|ref| = %.3g", diff / scale);

	/* --head i8: int8 embedding/head, one absmax scale per row. Each value is within half a step (max|row| / 254) of the
	 * source. Against the reference run on those dequantized rows, the one
	 * extra error is the head's input, rounded to int8 per token for the
	 * int8 GEMV (up to max|h| / 254 per element): 0.2-0.8 % of the
	 * largest logit on these models, so 2 % bounds it. */
	tern_file *fi;
	cr_assert_eq(tern_file_open(ctx, tmp("hf-i8.tern"), &fi), TERN_OK);
	const tern_tensor *e8 = tern_file_find(fi, "token_embd.weight");
	const tern_tensor *h8 = flavor == HF_1BIT ? tern_file_find(fi, "output.weight") : e8;
	cr_assert_eq(e8->dtype, TERN_DTYPE_I8);
	cr_assert_eq(e8->q.kind, TERN_SCALE_ROW);
	cr_assert_eq(h8->dtype, TERN_DTYPE_I8);
	hf_model *m8 = malloc(sizeof *m8);
	memcpy(m8, m, sizeof *m8);
	for (int v = 0; v < H_V; v++) {
		tern_tensor_row_to_float(e8, v, m8->emb + v * H_E);
		tern_tensor_row_to_float(h8, v, m8->head + v * H_E);
		float amax = 0;
		for (int i = 0; i < H_E; i++)
			amax = fmaxf(amax, fabsf(m->emb[v * H_E + i]));
		for (int i = 0; i < H_E; i++)
			cr_assert_leq(fabsf(m8->emb[v * H_E + i] - m->emb[v * H_E + i]),
				      amax / 254.0f * 1.0001f, "embedding row %d col %d", v, i);
	}
	tern_file_close(fi);
	float ours8[H_N * H_V];
	double ref8[H_N * H_V];
	hf_logits(tmp("hf-i8.tern"), tok, H_N, ours8);
	h_forward(m8, tok, ref8);
	double diff8 = 0, scale8 = 0, moved = 0;
	for (int i = 0; i < H_N * H_V; i++) {
		diff8 = fmax(diff8, fabs(ours8[i] - ref8[i]));
		scale8 = fmax(scale8, fabs(ref8[i]));
		moved = fmax(moved, fabs(ref8[i] - ref[i]));
	}
	cr_log_info("hf flavour %d, int8 head: max|diff|/max|ref| %.3g (int8 moved the "
		    "logits by %.3g of max|ref|)",
		    (int)flavor, diff8 / scale8, moved / scale);
	cr_assert_leq(diff8 / scale8, 0.02, "int8 head: max|diff|/max|ref| = %.3g", diff8 / scale8);
	cr_assert_gt(moved, 0.0, "the head really is int8");

	/* --head i4: 4-bit codes, one scale per 128 weights. The quantizer's
	 * scale s lies in [0.8, 1] x max|block| / 7, so a value is off by at
	 * most s / 2 or, clipped, by max|block| - 7 s: 0.2 max|block| bounds
	 * both. The logits, against the reference on the dequantized rows,
	 * again differ only by the head input's int8 rounding. */
	tern_file *src4;
	char hfdir[512];
	snprintf(hfdir, sizeof hfdir, "%s", tmp("hf")); /* tmp() reuses its buffers */
	cr_assert_eq(tern_file_open(ctx, hfdir, &src4), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_convert_opts o4 = tern_convert_default_opts();
	o4.head_type = TERN_DTYPE_I4;
	int rc4 = convert_opts(hfdir, src4, &o4, tmp("hf-i4.tern"));
	cr_assert_eq(rc4, TERN_OK, "%d %s", rc4, tern_ctx_errmsg(ctx));
	tern_file_close(src4);
	cr_assert_eq(tern_file_open(ctx, tmp("hf-i4.tern"), &fi), TERN_OK);
	const tern_tensor *e4 = tern_file_find(fi, "token_embd.weight");
	const tern_tensor *h4 = flavor == HF_1BIT ? tern_file_find(fi, "output.weight") : e4;
	cr_assert_eq(e4->dtype, TERN_DTYPE_I4);
	cr_assert_eq(e4->q.kind, TERN_SCALE_BLOCK);
	cr_assert_eq(e4->q.block, 128);
	cr_assert_eq(h4->dtype, TERN_DTYPE_I4);
	for (int v = 0; v < H_V; v++) {
		tern_tensor_row_to_float(e4, v, m8->emb + v * H_E);
		tern_tensor_row_to_float(h4, v, m8->head + v * H_E);
		for (int b0 = 0; b0 < H_E; b0 += 128) {
			float amax = 0;
			for (int i = b0; i < H_E && i < b0 + 128; i++)
				amax = fmaxf(amax, fabsf(m->emb[v * H_E + i]));
			for (int i = b0; i < H_E && i < b0 + 128; i++)
				cr_assert_leq(fabsf(m8->emb[v * H_E + i] - m->emb[v * H_E + i]),
					      0.2f * amax * 1.0001f, "i4 embedding row %d col %d", v, i);
		}
	}
	tern_file_close(fi);
	hf_logits(tmp("hf-i4.tern"), tok, H_N, ours8);
	h_forward(m8, tok, ref8);
	const double rel4 = rel_diff(ours8, ref8, H_N * H_V);
	cr_log_info("hf flavour %d, i4 head: max|diff|/max|ref| %.3g", (int)flavor, rel4);
	cr_assert_leq(rel4, 0.02, "i4 head: max|diff|/max|ref| = %.3g", rel4);

	/* The default: 4-bit codes plus the 4-bit residual r = w - hi of each
	 * weight, "<base>.residual" beside "<base>.weight". The residual's
	 * own codes hold r to 0.2 max|r| per block (the bound above; 0.201
	 * leaves room for the f16 rounding of a clipping scale), so
	 * hi + res is at least 5x closer to the source than hi alone. With 40
	 * tokens every row is refined (fewer than 64), so the logits are those
	 * of the summed matrix, checked against the reference on hi + res. */
	float hi[H_E], res[H_E];
	double err4 = 0, err_sum = 0;
	cr_assert_eq(tern_file_open(ctx, tmp("hf-def.tern"), &fi), TERN_OK);
	for (int which = 0; which < (flavor == HF_1BIT ? 2 : 1); which++) {
		const char *wn = which ? "output.weight" : "token_embd.weight";
		const char *rn = which ? "output.residual" : "token_embd.residual";
		const tern_tensor *tw = tern_file_find(fi, wn), *tr = tern_file_find(fi, rn);
		const float *src_rows = which ? m->head : m->emb;
		float *dst_rows = which ? m8->head : m8->emb;
		cr_assert_not_null(tw, "%s", wn);
		cr_assert_not_null(tr, "%s", rn);
		cr_assert_eq(tw->dtype, TERN_DTYPE_I4);
		cr_assert_eq(tr->dtype, TERN_DTYPE_I4);
		cr_assert_eq(tr->q.kind, TERN_SCALE_BLOCK);
		cr_assert_eq(tr->shape[0], H_V);
		cr_assert_eq(tr->shape[1], H_E);
		for (int v = 0; v < H_V; v++) {
			tern_tensor_row_to_float(tw, v, hi);
			tern_tensor_row_to_float(tr, v, res);
			for (int b0 = 0; b0 < H_E; b0 += 128) {
				float rmax = 0;
				for (int i = b0; i < H_E && i < b0 + 128; i++)
					rmax = fmaxf(rmax, fabsf(src_rows[v * H_E + i] - hi[i]));
				for (int i = b0; i < H_E && i < b0 + 128; i++) {
					float r = src_rows[v * H_E + i] - hi[i];
					cr_assert_leq(fabsf(r - res[i]), 0.201f * rmax + 1e-12f,
						      "%s row %d col %d: r %g res %g rmax %g", rn, v, i,
						      r, res[i], rmax);
					err4 = fmax(err4, fabsf(r));
					err_sum = fmax(err_sum, fabsf(r - res[i]));
					dst_rows[v * H_E + i] = hi[i] + res[i];
				}
			}
		}
	}
	if (flavor != HF_1BIT)
		memcpy(m8->head, m8->emb, sizeof m8->head);
	tern_file_close(fi);
	cr_log_info("hf flavour %d, i4r head: max|w - hi| %.3g, max|w - hi - res| %.3g", (int)flavor,
		    err4, err_sum);
	cr_assert_gt(err4, 0.0);
	cr_assert_leq(err_sum, err4 / 5, "the residual leaves %.3g of %.3g", err_sum, err4);
	hf_logits(tmp("hf-def.tern"), tok, H_N, ours8);
	h_forward(m8, tok, ref8);
	const double relr = rel_diff(ours8, ref8, H_N * H_V);
	cr_log_info("hf flavour %d, i4r head: max|diff|/max|ref| %.3g", (int)flavor, relr);
	cr_assert_leq(relr, 0.02, "i4r head: max|diff|/max|ref| = %.3g", relr);
	free(m8);
	text_state_free(s);
	text_model_free(model);
	tern_file_close(f);
	free(m);
}

Test(text_convert, hf_2b4t_packed_weights_unpack_and_run)
{
	check_hf(HF_PACKED);
}

Test(text_convert, hf_2b4t_bf16_master_weights_are_ternarized)
{
	check_hf(HF_BF16);
}

Test(text_convert, hf_1bitllm_names_and_silu)
{
	check_hf(HF_1BIT);
}

/* A broken checkpoint: each file is rewritten from scratch, then spoiled. */
Test(text_convert, broken_hf_checkpoints_are_refused_by_name)
{
	hf_model *m = calloc(1, sizeof *m);
	const char *d = tmp("hf");
	/* A packed code of 3 (no ternary value). */
	m->spoil = true;
	hf_make(m, HF_PACKED, d, 4);
	tern_file *src;
	cr_assert_eq(tern_file_open(ctx, d, &src), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(convert_to(d, src, tmp("bad.tern")), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "'model.layers.1.self_attn.q_proj.weight' "
						       "element 5"),
			   "%s", tern_ctx_errmsg(ctx));
	tern_file_close(src);
	m->spoil = false;
	hf_make(m, HF_PACKED, d, 4);

	/* config.json claiming what the weights do not hold: a larger FFN
	 * (a shape error), a third layer (a missing tensor). */
	static const char *const bad[2][2] = {
		{ "\"intermediate_size\":96", "\"intermediate_size\":128" },
		{ "\"num_hidden_layers\":2", "\"num_hidden_layers\":3" },
	};
	static const char *const want[2] = {
		"tensor 'model.layers.0.mlp.gate_proj.weight' has shape [24][64], expected "
		"[32][64] (packed: rows / 4)",
		"no source tensor for 'blk.2.attn_norm.weight' "
		"(model.layers.2.input_layernorm.weight)",
	};
	char path[512], cfg[2048];
	snprintf(path, sizeof path, "%s/config.json", d);
	size_t n;
	char *orig = slurp(path, &n);
	for (int k = 0; k < 2; k++) {
		char *at = strstr(orig, bad[k][0]);
		cr_assert_not_null(at);
		snprintf(cfg, sizeof cfg, "%.*s%s%s", (int)(at - orig), orig, bad[k][1],
			 at + strlen(bad[k][0]));
		spit(path, cfg, strlen(cfg));
		cr_assert_eq(tern_file_open(ctx, d, &src), TERN_OK, "%s", tern_ctx_errmsg(ctx));
		cr_assert_eq(convert_to(d, src, tmp("bad.tern")), TERN_E_FORMAT);
		cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), want[k]), "%s", tern_ctx_errmsg(ctx));
		tern_file_close(src);
	}
	free(orig);
	free(m);
}

/* ---- .tern files from the generic GGUF conversion; tokenizers of files ------- */

static float *logits_of(tern_file *f, const int32_t *tok, int n)
{
	text_model *m;
	text_state *s;
	cr_assert_eq(text_model_load(ctx, f, &m), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_state_new(ctx, m, 16, 0, &s), TERN_OK);
	float *out = malloc(sizeof(float) * (size_t)n * (size_t)m->cfg.n_vocab);
	cr_assert_eq(text_forward(ctx, m, s, tok, n, out, true), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	text_state_free(s);
	text_model_free(m);
	return out;
}

/* The generic conversion keeps the GGUF keys under "gguf" and the same
 * tensors, so the model and tokenizer read from it are the GGUF's: the
 * logits are bit for bit those of the GGUF itself. */
Test(text_convert, generic_gguf_conversion_loads_with_keys_under_gguf)
{
	const char *gguf = tu_shared_path("llama.cpp/tiny-tq2_0.gguf");
	const char *out = tmp("tiny.tern");
	const char *by = NULL;
	cr_assert_eq(tern_convert(ctx, NULL, gguf, out, NULL, NULL, NULL, &by), TERN_OK, "%s",
		     tern_ctx_errmsg(ctx));
	tern_file *g, *t;
	cr_assert_eq(tern_file_open(ctx, gguf, &g), TERN_OK);
	cr_assert_eq(tern_file_open(ctx, out, &t), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_not_null(tern_meta_get(tern_file_meta(t), "gguf.bitnet.embedding_length"));
	const int32_t tok[4] = { 1, 17, 42, 99 };
	float *a = logits_of(g, tok, 4), *b = logits_of(t, tok, 4);
	cr_assert_eq(memcmp(a, b, sizeof(float) * 4 * 512), 0, "logits differ");
	text_tokenizer *ta, *tb;
	cr_assert_eq(text_tok_from_file(ctx, g, &ta), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_tok_from_file(ctx, t, &tb), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_tok_n_vocab(ta), 512);
	cr_assert_eq(text_tok_n_vocab(tb), 512);
	for (int32_t id = 0; id < 512; id++) {
		size_t la, lb;
		const char *pa = text_tok_text(ta, id, &la), *pb = text_tok_text(tb, id, &lb);
		cr_assert(la == lb && memcmp(pa, pb, la) == 0, "token %d differs", id);
	}
	text_tok_free(ta);
	text_tok_free(tb);
	free(a);
	free(b);
	tern_file_close(g);
	tern_file_close(t);
}

Test(text_convert, files_without_hparams_or_tokenizer_are_refused_by_name)
{
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, tmp("empty.tern"), &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "bitllama2c"), TERN_OK);
	cr_assert_eq(tern_writer_set_json(w, "metadata", "{\"license\":\"MIT\"}"), TERN_OK);
	cr_assert_eq(tern_writer_finish(w), TERN_OK);
	tern_writer_free(w);
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, tmp("empty.tern"), &f), TERN_OK);
	text_model *m;
	cr_assert_eq(text_model_load(ctx, f, &m), TERN_E_FORMAT);
	cr_assert_str_eq(tern_ctx_errmsg(ctx), "bitllama2c: the file has no hyper-parameters (no "
					       "header object 'hparams' or 'gguf')");
	text_tokenizer *tok;
	cr_assert_eq(text_tok_from_file(ctx, f, &tok), TERN_E_NOT_FOUND);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "holds no tokenizer"));
	tern_file_close(f);

	/* hparams present but one missing: the message names its full path. */
	cr_assert_eq(tern_writer_new(ctx, tmp("partial.tern"), &w), TERN_OK);
	cr_assert_eq(tern_writer_set_architecture(w, "bitllama2c"), TERN_OK);
	cr_assert_eq(tern_writer_set_json(w, "hparams", "{\"block_count\":2}"), TERN_OK);
	cr_assert_eq(tern_writer_set_json(w, "tokenizer", "{\"format\":\"llama2c\","
							  "\"tensor\":\"tok\",\"size\":10}"),
		     TERN_OK);
	cr_assert_eq(tern_writer_finish(w), TERN_OK);
	tern_writer_free(w);
	cr_assert_eq(tern_file_open(ctx, tmp("partial.tern"), &f), TERN_OK);
	cr_assert_eq(text_model_load(ctx, f, &m), TERN_E_FORMAT);
	cr_assert_str_eq(tern_ctx_errmsg(ctx),
			 "bitllama2c: metadata 'hparams.embedding_length' is missing");
	cr_assert_eq(text_tok_from_file(ctx, f, &tok), TERN_E_FORMAT);
	cr_assert_not_null(strstr(tern_ctx_errmsg(ctx), "tokenizer tensor 'tok' is missing"), "%s",
			   tern_ctx_errmsg(ctx));
	tern_file_close(f);
}

/* --head i8: the shared embedding/head becomes int8 with one absmax scale
 * per row. Each element is within half a step (max|row| / 254) of the
 * float; the logits move by at most sum|h| * step / 2 per row, a few
 * percent here, and the model still runs through the int8 head. */
Test(text_convert, int8_head_keeps_rows_within_half_a_step)
{
	ak42_model m;
	ak42_make(&m, 9);
	spit(tmp("tiny.bin"), m.file.p, m.file.n);
	buf tk = l2c_tokenizer(A_V);
	spit(tmp("tokenizer.bin"), tk.p, tk.n);
	free(tk.p);
	tern_convert_opts o = tern_convert_default_opts();
	o.head_type = TERN_DTYPE_I8;
	tern_writer *w;
	cr_assert_eq(tern_writer_new(ctx, tmp("i8.tern"), &w), TERN_OK);
	cr_assert_eq(text_convert_ak42(ctx, tmp("tiny.bin"), tmp("tokenizer.bin"), &o, w), TERN_OK,
		     "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(tern_writer_finish(w), TERN_OK);
	tern_writer_free(w);
	tern_file *f;
	cr_assert_eq(tern_file_open(ctx, tmp("i8.tern"), &f), TERN_OK, "%s", tern_ctx_errmsg(ctx));
	const tern_tensor *e = tern_file_find(f, "token_embd.weight");
	cr_assert_eq(e->dtype, TERN_DTYPE_I8);
	cr_assert_eq(e->q.kind, TERN_SCALE_ROW);
	float row[A_DIM];
	for (int v = 0; v < A_V; v++) {
		tern_tensor_row_to_float(e, v, row);
		float amax = 0;
		for (int i = 0; i < A_DIM; i++)
			amax = fmaxf(amax, fabsf(m.emb[v * A_DIM + i]));
		for (int i = 0; i < A_DIM; i++)
			cr_assert_leq(fabsf(row[i] - m.emb[v * A_DIM + i]), amax / 254.0f * 1.0001f,
				      "row %d col %d", v, i);
	}
	const int32_t tok[4] = { 1, 5, 9, 2 };
	float *ours = logits_of(f, tok, 4);
	float ref[A_N * A_V], norm0[A_N * A_DIM];
	const int32_t tok6[A_N] = { 1, 5, 9, 2, 0, 0 };
	a_forward(&m, tok6, ref, norm0);
	double diff = 0, scale = 0;
	for (int i = 0; i < 4 * A_V; i++) {
		diff = fmax(diff, fabs(ours[i] - ref[i]));
		scale = fmax(scale, fabs(ref[i]));
	}
	cr_log_info("int8 head: logits max|diff|/max|ref| %.3g", diff / scale);
	cr_assert_leq(diff / scale, 0.05);
	cr_assert_gt(diff / scale, 1e-5, "the head really is int8");
	free(ours);
	tern_file_close(f);
	free(m.file.p);
}
