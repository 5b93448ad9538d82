/*
 * test_tokenizer.c: the text plugin's tokenizers against llama.cpp's
 * tokenizer tests (the 46 strings of ggml-vocab-llama-bpe/-spm with the
 * ids llama.cpp produced, in ../shared/testdata), the Llama-3 examples of
 * its README, llama2.c's tokenizer.bin (ids from an independent Python
 * transcription of llama2.c's encode loop), the SentencePiece protobuf of
 * the same vocabulary, small hand-made tokenizer.json / GGUF-style
 * vocabularies, the streaming detokenizer and the error paths. Every
 * comparison is exact: tokenization has no tolerance.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plugins/text/tokenizer.h"
#include "plugins/text/unicode.h"
#include "tern/file.h"
#include "testutil.h"

static tern_ctx *ctx;

static void setup(void)
{
	cr_assert_eq(tern_ctx_new(NULL, &ctx), TERN_OK);
}

static void teardown(void)
{
	tern_ctx_free(ctx);
}

TestSuite(tokenizer, .init = setup, .fini = teardown);

/* ---- helpers ---------------------------------------------------------- */

static char *slurp(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	cr_assert(f, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	cr_assert(buf);
	cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	buf[n] = 0;
	*size = (size_t)n;
	return buf;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static text_tokenizer *llama3(void)
{
	text_tokenizer *tok;
	int rc = text_tok_load_llama3(ctx, tu_shared_path("llama3/tokenizer.model"), &tok);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	return tok;
}

static text_tokenizer *llama2_gguf(void)
{
	tern_file *f;
	int rc = tern_file_open(ctx, tu_shared_path("llama.cpp/ggml-vocab-llama-spm.gguf"), &f);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	text_tokenizer *tok;
	rc = text_tok_from_meta(ctx, tern_file_meta(f), &tok);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_file_close(f); /* the tokenizer copies what it needs */
	return tok;
}

static text_tokenizer *l2c(void)
{
	text_tokenizer *tok;
	int rc = text_tok_load_l2c(ctx, tu_shared_path("bitllama2c/tokenizer.bin"), &tok);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	return tok;
}

static void expect_ids(const text_tokenizer *tok, const char *s, size_t len, int flags,
		       const int32_t *want, size_t n_want, const char *what)
{
	int32_t *ids;
	size_t n;
	int rc = text_tok_encode_alloc(tok, ctx, s, len, flags, &ids, &n);
	cr_assert_eq(rc, TERN_OK, "%s: %s", what, tern_ctx_errmsg(ctx));
	cr_assert_eq(n, n_want, "%s: %zu ids, want %zu", what, n, n_want);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(ids[i], want[i], "%s: id %zu is %d, want %d", what, i, (int)ids[i],
			     (int)want[i]);
	free(ids);
}

static void expect_roundtrip(const text_tokenizer *tok, const char *s, size_t len,
			     const char *what)
{
	int32_t *ids;
	size_t n, dl;
	char *back;
	cr_assert_eq(text_tok_encode_alloc(tok, ctx, s, len, 0, &ids, &n), TERN_OK);
	cr_assert_eq(text_tok_decode(tok, ctx, ids, n, 0, &back, &dl), TERN_OK);
	cr_assert(dl == len && memcmp(back, s, len) == 0, "%s: decode(encode(s)) = '%s'", what,
		  back);
	free(back);
	free(ids);
}

/* Run llama.cpp's tokenizer test pair name.inp / name.out through tok:
 * every string must give exactly the listed ids and decode back. */
static void check_vocab_test(const text_tokenizer *tok, const char *name)
{
	char path[256];
	size_t isz, osz;
	snprintf(path, sizeof path, "llama.cpp/%s.inp", name);
	char *inp = slurp(tu_shared_path(path), &isz);
	snprintf(path, sizeof path, "llama.cpp/%s.out", name);
	char *out = slurp(tu_shared_path(path), &osz);
	static const char sep[] = "\n__ggml_vocab_test__\n";
	char *p = inp, *o = out;
	int count = 0;
	for (char *q; (q = strstr(p, sep)); p = q + strlen(sep)) {
		char *eol = strchr(o, '\n');
		cr_assert(eol, "%s: .out has fewer lines than .inp", name);
		*eol = 0;
		int32_t want[512];
		size_t nw = 0;
		for (char *e = o; *e;) {
			char *end;
			long v = strtol(e, &end, 10);
			if (end == e)
				break;
			cr_assert(nw < 512);
			want[nw++] = (int32_t)v;
			e = end;
		}
		char what[64];
		snprintf(what, sizeof what, "%s string %d", name, count);
		expect_ids(tok, p, (size_t)(q - p), 0, want, nw, what);
		expect_roundtrip(tok, p, (size_t)(q - p), what);
		o = eol + 1;
		count++;
	}
	cr_assert_eq(count, 46, "%s: %d strings", name, count);
	cr_assert_eq(*o, 0, "%s: .out has more lines than .inp", name);
	free(inp);
	free(out);
}

/* ---- Llama 3 (tiktoken) ----------------------------------------------- */

Test(tokenizer, llama3_tiktoken_loads_fast_with_256_special_tokens)
{
	double t0 = now_ms();
	text_tokenizer *tok = llama3();
	double ms = now_ms() - t0;
	cr_log_info("llama3 tiktoken load: %.1f ms", ms);
	/* The issue asks for well under 100 ms; the bound is loose because
	 * sanitizer builds run several times slower. */
	cr_expect_lt(ms, 1000.0);
	cr_assert_eq(text_tok_n_vocab(tok), 128256);
	cr_assert_eq(text_tok_kind_of(tok), TEXT_TOK_BPE);
	cr_assert_eq(text_tok_bos(tok), 128000);
	cr_assert_eq(text_tok_eos(tok), 128001);
	cr_assert_eq(text_tok_eot(tok), 128009);
	cr_assert(text_tok_is_eog(tok, 128009) && text_tok_is_eog(tok, 128001));
	cr_assert(!text_tok_is_eog(tok, 128000));
	static const struct {
		int32_t id;
		const char *text;
	} names[] = { { 128002, "<|reserved_special_token_0|>" },
		      { 128005, "<|reserved_special_token_3|>" },
		      { 128006, "<|start_header_id|>" },
		      { 128007, "<|end_header_id|>" },
		      { 128008, "<|reserved_special_token_4|>" },
		      { 128010, "<|reserved_special_token_5|>" },
		      { 128255, "<|reserved_special_token_250|>" } };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		size_t len;
		const char *s = text_tok_text(tok, names[i].id, &len);
		cr_assert_str_eq(s, names[i].text);
		cr_assert_eq(text_tok_find(tok, names[i].text, strlen(names[i].text)), names[i].id);
		cr_assert_eq(text_tok_type(tok, names[i].id), TEXT_TOKEN_CONTROL);
	}
	text_tok_free(tok);
}

Test(tokenizer, llama3_matches_llama_cpp_on_all_46_strings)
{
	text_tokenizer *tok = llama3();
	check_vocab_test(tok, "ggml-vocab-llama-bpe.gguf");
	text_tok_free(tok);
}

Test(tokenizer, llama3_readme_examples)
{
	text_tokenizer *tok = llama3();
	static const struct {
		const char *s;
		int32_t ids[3];
		size_t n;
	} ex[] = { { "Hello world", { 9906, 1917 }, 2 },
		   { " Hello world", { 22691, 1917 }, 2 },
		   { " ", { 220 }, 1 },
		   { "\n\n", { 271 }, 1 },
		   { "333333333", { 8765, 8765, 8765 }, 3 } };
	for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++) {
		expect_ids(tok, ex[i].s, strlen(ex[i].s), 0, ex[i].ids, ex[i].n, ex[i].s);
		expect_roundtrip(tok, ex[i].s, strlen(ex[i].s), ex[i].s);
	}
	int32_t bos[] = { 128000, 9906, 1917 };
	expect_ids(tok, "Hello world", 11, TEXT_TOK_ADD_BOS, bos, 3, "with BOS");
	cr_assert(text_tok_wants_bos(tok));
	text_tok_free(tok);
}

Test(tokenizer, llama3_special_tokens_are_parsed_only_when_asked)
{
	text_tokenizer *tok = llama3();
	const char *s = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
	int32_t *ids;
	size_t n;
	cr_assert_eq(text_tok_encode_alloc(tok, ctx, s, strlen(s), TEXT_TOK_PARSE_SPECIAL, &ids, &n),
		     TERN_OK);
	/* 882 "user", 271 "\n\n", 13347 "Hi": the plain ids of those words. */
	int32_t want[] = { 128006, 882, 128007, 271, 13347, 128009 };
	cr_assert_eq(n, 6);
	for (size_t i = 0; i < n; i++) {
		size_t wl;
		const char *w = text_tok_text(tok, want[i], &wl);
		cr_assert_eq(ids[i], want[i], "id %zu: %d, want %d (%s)", i, ids[i], want[i], w);
	}
	/* The same text without parsing never yields a special id, and the
	 * specials decode to nothing unless rendering is asked for. */
	free(ids);
	cr_assert_eq(text_tok_encode_alloc(tok, ctx, s, strlen(s), 0, &ids, &n), TERN_OK);
	for (size_t i = 0; i < n; i++)
		cr_assert_lt(ids[i], 128000);
	free(ids);
	char *out;
	size_t len;
	cr_assert_eq(text_tok_decode(tok, ctx, want, 6, 0, &out, &len), TERN_OK);
	cr_assert_str_eq(out, "user\n\nHi");
	free(out);
	cr_assert_eq(text_tok_decode(tok, ctx, want, 6, TEXT_TOK_RENDER_SPECIAL, &out, &len),
		     TERN_OK);
	cr_assert_str_eq(out, s);
	free(out);
	text_tok_free(tok);
}

Test(tokenizer, llama3_encodes_a_long_text_quickly)
{
	text_tokenizer *tok = llama3();
	size_t isz;
	char *inp = slurp(tu_shared_path("llama.cpp/ggml-vocab-llama-bpe.gguf.inp"), &isz);
	/* 200 copies of the test strings (~390 KB of mixed scripts). */
	size_t total = isz * 200;
	char *big = malloc(total);
	cr_assert(big);
	for (int i = 0; i < 200; i++)
		memcpy(big + (size_t)i * isz, inp, isz);
	double t0 = now_ms();
	int32_t *ids;
	size_t n;
	cr_assert_eq(text_tok_encode_alloc(tok, ctx, big, total, 0, &ids, &n), TERN_OK);
	double ms = now_ms() - t0;
	cr_log_info("llama3 encode: %zu bytes -> %zu ids in %.1f ms (%.1f MB/s)", total, n, ms,
		    total / 1e3 / (ms > 0 ? ms : 1e-3));
	cr_expect_lt(ms, 3000.0);
	char *back;
	size_t bl;
	cr_assert_eq(text_tok_decode(tok, ctx, ids, n, 0, &back, &bl), TERN_OK);
	cr_assert(bl == total && memcmp(back, big, total) == 0);
	free(back);
	free(ids);
	free(big);
	free(inp);
	text_tok_free(tok);
}

/* ---- Llama 2 (SentencePiece from GGUF) -------------------------------- */

Test(tokenizer, llama2_gguf_matches_llama_cpp_on_all_46_strings)
{
	text_tokenizer *tok = llama2_gguf();
	cr_assert_eq(text_tok_n_vocab(tok), 32000);
	cr_assert_eq(text_tok_kind_of(tok), TEXT_TOK_SPM);
	cr_assert_eq(text_tok_bos(tok), 1);
	cr_assert_eq(text_tok_eos(tok), 2);
	check_vocab_test(tok, "ggml-vocab-llama-spm.gguf");
	text_tok_free(tok);
}

Test(tokenizer, llama2_bos_and_special_parsing)
{
	text_tokenizer *tok = llama2_gguf();
	int32_t want[] = { 1, 15043, 3186 };
	expect_ids(tok, "Hello world", 11, TEXT_TOK_ADD_BOS, want, 3, "BOS");
	/* After a parsed special token the next fragment gets the leading
	 * space again, as llama.cpp does. */
	int32_t want2[] = { 15043, 2, 15043 };
	expect_ids(tok, "Hello</s>Hello", 14, TEXT_TOK_PARSE_SPECIAL, want2, 3, "parse </s>");
	text_tok_free(tok);
}

/* ---- llama2.c tokenizer.bin and the SentencePiece protobuf ------------ */

static const struct {
	const char *s;
	int32_t ids[9];
	size_t n;
} l2c_cases[] = {
	{ "Once upon a time", { 403, 407, 261, 378 }, 4 },
	{ "Lily and Tom were friends.", { 317, 269, 274, 287, 382, 276, 374, 419, 426 }, 9 },
	{ "Hello  world\n", { 346, 306, 414, 410, 263, 304, 341, 13 }, 8 },
	/* é is a piece; the llama falls back to its four UTF-8 bytes. */
	{ "\xC3\xA9\xF0\x9F\xA6\x99x", { 410, 485, 243, 162, 169, 156, 444 }, 7 },
	{ "", { 0 }, 0 },
};

Test(tokenizer, l2c_tokenizer_bin_encodes_like_llama2_c)
{
	text_tokenizer *tok = l2c();
	cr_assert_eq(text_tok_n_vocab(tok), 512);
	size_t len;
	cr_assert_str_eq(text_tok_text(tok, 1, &len), "\n<s>\n");
	cr_assert_eq(text_tok_type(tok, 3), TEXT_TOKEN_BYTE);
	for (size_t i = 0; i < sizeof l2c_cases / sizeof l2c_cases[0]; i++) {
		const char *s = l2c_cases[i].s;
		expect_ids(tok, s, strlen(s), 0, l2c_cases[i].ids, l2c_cases[i].n, s);
		expect_roundtrip(tok, s, strlen(s), s);
	}
	int32_t bos[] = { 1, 403 };
	expect_ids(tok, "Once", 4, TEXT_TOK_ADD_BOS, bos, 2, "BOS");
	text_tok_free(tok);
}

Test(tokenizer, spm_protobuf_model_agrees_with_tokenizer_bin)
{
	text_tokenizer *tok;
	int rc = text_tok_load_spm_model(ctx, tu_shared_path("bitllama2c/tokenizer.model"), &tok);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_tok_n_vocab(tok), 512);
	cr_assert_eq(text_tok_bos(tok), 1);
	cr_assert_eq(text_tok_eos(tok), 2);
	size_t len;
	cr_assert_str_eq(text_tok_text(tok, 403, &len), "\xE2\x96\x81Once");
	for (size_t i = 0; i < sizeof l2c_cases / sizeof l2c_cases[0]; i++) {
		const char *s = l2c_cases[i].s;
		expect_ids(tok, s, strlen(s), 0, l2c_cases[i].ids, l2c_cases[i].n, s);
		expect_roundtrip(tok, s, strlen(s), s);
	}
	text_tok_free(tok);
}

/* ---- streaming -------------------------------------------------------- */

Test(tokenizer, stream_holds_back_a_character_split_over_byte_tokens)
{
	text_tokenizer *tok = l2c();
	/* BOS, " ", "é", then the llama's four byte tokens, then "x". */
	int32_t ids[] = { 1, 410, 485, 243, 162, 169, 156, 444 };
	static const char *const want[] = { "", "", "\xC3\xA9", "", "", "", "\xF0\x9F\xA6\x99", "x" };
	text_detok *d;
	cr_assert_eq(text_detok_new(ctx, tok, 0, &d), TERN_OK);
	for (size_t i = 0; i < 8; i++) {
		const char *s;
		size_t n;
		cr_assert_eq(text_detok_push(d, ctx, ids[i], &s, &n), TERN_OK);
		cr_assert_eq(n, strlen(want[i]), "push %zu gave %zu bytes", i, n);
		cr_assert_str_eq(s, want[i], "push %zu", i);
	}
	/* A character cut off by the end of the text becomes U+FFFD, and a
	 * byte that cannot start a character is replaced at once. */
	const char *s;
	size_t n;
	cr_assert_eq(text_detok_push(d, ctx, 243, &s, &n), TERN_OK);
	cr_assert_eq(n, 0);
	text_detok_flush(d, &s, &n);
	cr_assert_str_eq(s, "\xEF\xBF\xBD");
	cr_assert_eq(text_detok_push(d, ctx, 3 + 0xFF, &s, &n), TERN_OK);
	cr_assert_str_eq(s, "\xEF\xBF\xBD");
	cr_assert_eq(text_detok_push(d, ctx, 512, &s, &n), TERN_E_INVALID);
	text_detok_free(d);
	text_tok_free(tok);
}

Test(tokenizer, stream_of_llama3_emoji_equals_the_whole_decode)
{
	text_tokenizer *tok = llama3();
	const char *text = " this is \xF0\x9F\xA6\x99.cpp \xF0\x9F\x98\x81 \xE1\x9E\x80\xE1\x9E\xB6";
	int32_t *ids;
	size_t n;
	cr_assert_eq(text_tok_encode_alloc(tok, ctx, text, strlen(text), 0, &ids, &n), TERN_OK);
	text_detok *d;
	cr_assert_eq(text_detok_new(ctx, tok, 0, &d), TERN_OK);
	char acc[256] = "";
	size_t used = 0;
	int held = 0;
	for (size_t i = 0; i <= n; i++) {
		const char *s;
		size_t sl;
		if (i < n)
			cr_assert_eq(text_detok_push(d, ctx, ids[i], &s, &sl), TERN_OK);
		else
			text_detok_flush(d, &s, &sl);
		/* Every output is complete UTF-8 on its own. */
		cr_assert_eq(text_utf8_check(s, sl), sl, "push %zu split a character", i);
		size_t plen;
		text_tok_piece(tok, i < n ? ids[i] : 0, 0, &plen);
		held += i < n && sl != plen;
		memcpy(acc + used, s, sl);
		used += sl;
	}
	acc[used] = 0;
	cr_assert_str_eq(acc, text);
	cr_assert_gt(held, 0, "the text should split some character over two tokens");
	text_detok_free(d);
	free(ids);
	text_tok_free(tok);
}

/* ---- errors ----------------------------------------------------------- */

Test(tokenizer, invalid_utf8_is_rejected_with_its_offset)
{
	text_tokenizer *tok = l2c();
	static const struct {
		const char *s;
		size_t off;
	} bad[] = { { "abc\xFFz", 3 },         /* never valid */
		    { "ab\xC0\xAF", 2 },         /* overlong '/' */
		    { "a\xED\xA0\x80", 1 },      /* a surrogate */
		    { "\xF4\x90\x80\x80", 0 },   /* above U+10FFFF */
		    { "xyz\xE2\x96", 3 },        /* cut short */
		    { "\x80", 0 } };             /* stray continuation */
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		size_t n = 99;
		int32_t ids[16];
		int rc = text_tok_encode(tok, ctx, bad[i].s, strlen(bad[i].s), 0, ids, 16, &n);
		cr_assert_eq(rc, TERN_E_INVALID, "case %zu", i);
		char want[64];
		snprintf(want, sizeof want, "byte offset %zu", bad[i].off);
		cr_assert(strstr(tern_ctx_errmsg(ctx), want), "case %zu: '%s'", i,
			  tern_ctx_errmsg(ctx));
		cr_assert_eq(n, 0);
	}
	text_tok_free(tok);
}

Test(tokenizer, a_small_buffer_reports_the_size_needed)
{
	text_tokenizer *tok = l2c();
	size_t n;
	int32_t ids[4];
	const char *s = "Lily and Tom were friends.";
	cr_assert_eq(text_tok_encode(tok, ctx, s, strlen(s), 0, NULL, 0, &n), TERN_E_OVERFLOW);
	cr_assert_eq(n, 9);
	cr_assert_eq(text_tok_encode(tok, ctx, s, strlen(s), 0, ids, 4, &n), TERN_E_OVERFLOW);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "needs 9 ids"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_tok_encode(tok, ctx, "Once", 4, 0, ids, 4, &n), TERN_OK);
	cr_assert(n == 1 && ids[0] == 403);
	text_tok_free(tok);
}

Test(tokenizer, broken_tokenizer_bin_entries_give_clear_errors)
{
	size_t size;
	char *data = slurp(tu_shared_path("bitllama2c/tokenizer.bin"), &size);
	text_tokenizer *tok = NULL;
	/* Cut in the middle of an entry's bytes, then of an entry's header. */
	cr_assert_eq(text_tok_load_l2c_memory(ctx, "cut.bin", data, size - 2, &tok), TERN_E_FORMAT);
	cr_assert_null(tok);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "token 511") &&
		  strstr(tern_ctx_errmsg(ctx), "past the end"), "%s", tern_ctx_errmsg(ctx));
	/* The last entry is score(4) len(4) 3 bytes: cut 5 bytes into it. */
	cr_assert_eq(text_tok_load_l2c_memory(ctx, "cut.bin", data, size - 6 - 3 + 2, &tok),
		     TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "header cut short"), "%s", tern_ctx_errmsg(ctx));
	/* A length above max_token_length in the first entry (offset 8). */
	char *bad = malloc(size);
	memcpy(bad, data, size);
	bad[8] = 100;
	cr_assert_eq(text_tok_load_l2c_memory(ctx, "len.bin", bad, size, &tok), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "token 0 at byte offset 4: length 100"), "%s",
		  tern_ctx_errmsg(ctx));
	/* A negative max_token_length. */
	memcpy(bad, data, size);
	bad[3] = (char)0x80;
	cr_assert_eq(text_tok_load_l2c_memory(ctx, "max.bin", bad, size, &tok), TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "max_token_length"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_tok_load_l2c(ctx, "/nonexistent/tokenizer.bin", &tok), TERN_E_IO);
	free(bad);
	free(data);
}

Test(tokenizer, broken_tiktoken_lines_give_clear_errors)
{
	static const struct {
		const char *text, *msg;
	} cases[] = {
		{ "YQ== 0\nYg== 1\nYWI= 2\n", NULL },
		{ "YQ== 0\nYg==1\n", "line 2: expected 'base64 rank'" },
		{ "YQ== 0\nY!== 1\n", "line 2: invalid base64 token 'Y!=='" },
		{ "YQ== 0\nYg== x1\n", "line 2: rank 'x1' is not a number" },
		{ "YQ== 0\nYg== 0\n", "line 2: rank 0 repeats line 1" },
		{ "YQ== 0\nYg== 7\n", "line 2: rank 7 out of range" },
		{ "YQ== 0\nYQ== 1\n", "line 2: token 1 repeats the bytes" },
		{ "YQ== 0\n\nYg== 2\n", "rank 1 is missing" },
		{ "YQ== 0\nYg== \n", "line 2: missing rank" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		text_tokenizer *tok = NULL;
		int rc = text_tok_load_tiktoken_memory(ctx, "t.tiktoken", cases[i].text,
						       strlen(cases[i].text), NULL, 0, &tok);
		if (!cases[i].msg) {
			cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
			int32_t want[] = { 2, 1, 0 };
			expect_ids(tok, "abba", 4, 0, want, 3, "tiny tiktoken");
			text_tok_free(tok);
			continue;
		}
		cr_assert_eq(rc, TERN_E_FORMAT, "case %zu", i);
		cr_assert_null(tok);
		cr_assert(strstr(tern_ctx_errmsg(ctx), cases[i].msg), "case %zu: '%s'", i,
			  tern_ctx_errmsg(ctx));
	}
}

Test(tokenizer, broken_spm_protobuf_gives_clear_errors)
{
	size_t size;
	char *data = slurp(tu_shared_path("bitllama2c/tokenizer.model"), &size);
	text_tokenizer *tok = NULL;
	cr_assert_eq(text_tok_load_spm_model_memory(ctx, "cut.model", data, size / 2, &tok),
		     TERN_E_FORMAT);
	cr_assert_null(tok);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "cut.model: byte offset") &&
		  strstr(tern_ctx_errmsg(ctx), "past the end"), "%s", tern_ctx_errmsg(ctx));
	free(data);
}

/* ---- hand-made merges vocabularies ------------------------------------ */

/* GPT-2's spelling of byte b as UTF-8. */
static size_t gpt2_char(unsigned b, char *out)
{
	unsigned cp = b;
	if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) {
		unsigned k = 0;
		for (unsigned c = 0; c < b; c++)
			k += !((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174);
		cp = 256 + k;
	}
	return (size_t)text_utf8_put(cp, out);
}

/* 256 byte tokens, then "he" 256, "ll" 257, "hell" 258, "hello" 259,
 * " w" 260 (spelled "Ġw"), and the special "<|end|>" 261. */
static const char *const merges[] = { "h e", "l l", "he ll", "hell o", "\xC4\xA0 w" };

Test(tokenizer, gguf_gpt2_metadata_merges_by_rank)
{
	tern_meta *root = tern_meta_new_object(), *toks = tern_meta_new_array();
	tern_meta *types = tern_meta_new_array(), *mer = tern_meta_new_array();
	for (unsigned b = 0; b < 256; b++) {
		char s[4];
		size_t n = gpt2_char(b, s);
		tern_meta_append(toks, tern_meta_new_string(s, n));
		tern_meta_append(types, tern_meta_new_int(TEXT_TOKEN_NORMAL));
	}
	static const char *const extra[] = { "he", "ll", "hell", "hello", "\xC4\xA0w", "<|end|>" };
	for (int i = 0; i < 6; i++) {
		tern_meta_append(toks, tern_meta_new_string(extra[i], strlen(extra[i])));
		tern_meta_append(types, tern_meta_new_int(i == 5 ? TEXT_TOKEN_CONTROL
							      : TEXT_TOKEN_NORMAL));
	}
	for (int i = 0; i < 5; i++)
		tern_meta_append(mer, tern_meta_new_string(merges[i], strlen(merges[i])));
	tern_meta_set(root, "tokenizer.ggml.model", tern_meta_new_string("gpt2", 4));
	tern_meta_set(root, "tokenizer.ggml.tokens", toks);
	tern_meta_set(root, "tokenizer.ggml.token_type", types);
	tern_meta_set(root, "tokenizer.ggml.merges", mer);
	tern_meta_set(root, "tokenizer.ggml.eos_token_id", tern_meta_new_int(261));
	text_tokenizer *tok;
	int rc = text_tok_from_meta(ctx, root, &tok);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	int32_t want[] = { 259, 260, 'o', 'r', 'l', 'd', 261 };
	expect_ids(tok, "hello world<|end|>", 18, TEXT_TOK_PARSE_SPECIAL, want, 7, "gpt2 meta");
	/* "hel": "he" (rank 0) and no more; in the word " lll" (a space is
	 * byte token 32) the leftmost "l l" merges first. */
	int32_t want2[] = { 256, 'l', 32, 257, 'l' };
	expect_ids(tok, "hel lll", 7, 0, want2, 5, "hel");
	cr_assert_eq(text_tok_eos(tok), 261);
	text_tok_free(tok);
	/* A merge naming a missing token is a broken entry. */
	tern_meta_append((tern_meta *)tern_meta_get(root, "tokenizer.ggml.merges"),
			 tern_meta_new_string("x yz", 4));
	rc = text_tok_from_meta(ctx, root, &tok);
	cr_assert_eq(rc, TERN_E_FORMAT);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "merge 5 ('x' 'yz') names a token not in the vocabulary"),
		  "%s", tern_ctx_errmsg(ctx));
	tern_meta_free(root);
}

Test(tokenizer, hf_tokenizer_json_loads_a_byte_level_bpe)
{
	char path[] = "/tmp/tern-tok-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	FILE *f = fdopen(fd, "w");
	fprintf(f, "{\"added_tokens\":[{\"id\":261,\"content\":\"<|end|>\",\"special\":true}],"
		   "\"model\":{\"type\":\"BPE\",\"vocab\":{");
	for (unsigned b = 0; b < 256; b++) {
		char s[4];
		size_t n = gpt2_char(b, s);
		if (b == '"' || b == '\\')
			fprintf(f, "\"\\%c\":%u,", (char)b, b);
		else
			fprintf(f, "\"%.*s\":%u,", (int)n, s, b);
	}
	fprintf(f, "\"he\":256,\"ll\":257,\"hell\":258,\"hello\":259,\"\xC4\xA0w\":260},"
		   "\"merges\":[\"h e\",[\"l\",\"l\"],\"he ll\",\"hell o\",\"\xC4\xA0 w\"]}}");
	fclose(f);
	text_tokenizer *tok;
	int rc = text_tok_load_hf_json(ctx, path, &tok);
	unlink(path);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	cr_assert_eq(text_tok_n_vocab(tok), 262);
	int32_t want[] = { 259, 260, 'o', 'r', 'l', 'd', 261 };
	expect_ids(tok, "hello world<|end|>", 18, TEXT_TOK_PARSE_SPECIAL, want, 7, "tokenizer.json");
	expect_roundtrip(tok, "hello world \"\\\x01", 15, "tokenizer.json");
	text_tok_free(tok);
}

Test(tokenizer, unicode_classes_follow_the_ucd)
{
	cr_assert_str_eq(text_unicode_version(), "15.0.0");
	cr_assert_eq(text_uc_class('a'), TEXT_UC_LETTER);
	cr_assert_eq(text_uc_class(0xBD), TEXT_UC_NUMBER);      /* ½ is No */
	cr_assert_eq(text_uc_class(0x0661), TEXT_UC_NUMBER);    /* Arabic-Indic one */
	cr_assert_eq(text_uc_class(0x3000), TEXT_UC_SPACE);     /* ideographic space */
	cr_assert_eq(text_uc_class(0x85), TEXT_UC_SPACE);
	cr_assert_eq(text_uc_class(0x4E00), TEXT_UC_LETTER);    /* CJK, from a First/Last range */
	cr_assert_eq(text_uc_class(0xAC01), TEXT_UC_LETTER);    /* Hangul syllable, a range */
	cr_assert_eq(text_uc_class(0x1F999), 0);                /* the llama is a symbol */
	cr_assert_eq(text_uc_class(0x17B6), 0);                 /* Khmer vowel sign: Mc */
	cr_assert_eq(text_uc_class(0x200B), 0);                 /* ZWSP is not White_Space */
}

/* A random code point from a mix of scripts, digits, spaces and emoji.
 * U+2581 is left out: SentencePiece spells the space with it, so a text
 * holding it decodes to a space (llama.cpp behaves the same). */
static uint32_t random_cp(tu_rng *r)
{
	static const uint32_t pool[] = { ' ', ' ', '\n', '\t', '\r', '\'', 's', 'A', 'z', '0', '7',
					 '.', '!', '<', '|', 0xA0, 0xE9, 0xBD, 0x3B1, 0x416,
					 0x5D0, 0x627, 0x661, 0x915, 0x17B6, 0x3000, 0x4E2D,
					 0xAC00, 0x1F999, 0x1F600, 0x200D, 0xFE0F, 0x10348 };
	if (tu_int(r, 0, 3) == 0)
		return (uint32_t)tu_int(r, 32, 126);
	return pool[tu_int(r, 0, sizeof pool / sizeof pool[0] - 1)];
}

Test(tokenizer, random_texts_decode_back_exactly)
{
	text_tokenizer *toks[3] = { llama3(), llama2_gguf(), l2c() };
	tu_rng r = tu_rng_new(42);
	for (int k = 0; k < 300; k++) {
		char s[200];
		size_t n = 0;
		int len = (int)tu_int(&r, 1, 40);
		for (int i = 0; i < len; i++)
			n += (size_t)text_utf8_put(random_cp(&r), s + n);
		char what[32];
		snprintf(what, sizeof what, "random text %d", k);
		for (int t = 0; t < 3; t++)
			expect_roundtrip(toks[t], s, n, what);
	}
	for (int t = 0; t < 3; t++)
		text_tok_free(toks[t]);
}

Test(tokenizer, tiny_gguf_model_vocabulary_loads)
{
	tern_file *f;
	int rc = tern_file_open(ctx, tu_shared_path("llama.cpp/tiny-f32.gguf"), &f);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	text_tokenizer *tok;
	rc = text_tok_from_meta(ctx, tern_file_meta(f), &tok);
	cr_assert_eq(rc, TERN_OK, "%s", tern_ctx_errmsg(ctx));
	tern_file_close(f);
	cr_assert_eq(text_tok_n_vocab(tok), 512);
	cr_assert_eq(text_tok_bos(tok), 1);
	cr_assert_eq(text_tok_eos(tok), 2);
	expect_roundtrip(tok, "Hello, w\xC3\xB6rld!", 14, "tiny vocabulary");
	text_tok_free(tok);
}

Test(tokenizer, vocabularies_of_other_kinds_are_refused_by_name)
{
	tern_meta *root = tern_meta_new_object();
	text_tokenizer *tok = NULL;
	cr_assert_eq(text_tok_from_meta(ctx, root, &tok), TERN_E_NOT_FOUND);
	tern_meta_set(root, "tokenizer.ggml.model", tern_meta_new_string("bert", 4));
	cr_assert_eq(text_tok_from_meta(ctx, root, &tok), TERN_E_UNSUPPORTED);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "'bert'"), "%s", tern_ctx_errmsg(ctx));
	tern_meta_set(root, "tokenizer.ggml.model", tern_meta_new_string("gpt2", 4));
	tern_meta_set(root, "tokenizer.ggml.pre", tern_meta_new_string("qwen2", 5));
	cr_assert_eq(text_tok_from_meta(ctx, root, &tok), TERN_E_UNSUPPORTED);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "pre-tokenizer 'qwen2'"), "%s", tern_ctx_errmsg(ctx));
	cr_assert_null(tok);
	tern_meta_free(root);

	char path[] = "/tmp/tern-tok-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	const char *json = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}";
	cr_assert_eq(write(fd, json, strlen(json)), (ssize_t)strlen(json));
	close(fd);
	int rc = text_tok_load_hf_json(ctx, path, &tok);
	unlink(path);
	cr_assert_eq(rc, TERN_E_UNSUPPORTED);
	cr_assert(strstr(tern_ctx_errmsg(ctx), "model type 'Unigram'"), "%s", tern_ctx_errmsg(ctx));
}
