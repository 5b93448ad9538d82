/*
 * tokenizer.h: the text plugin's tokenizers, private to the plugin. One
 * opaque text_tokenizer covers the vocabularies BitNet language models
 * ship with:
 *  - byte-level BPE (Llama 3): from a tiktoken file (lines "base64 rank"),
 *    a Hugging Face tokenizer.json, or GGUF metadata ("gpt2" model with
 *    merges); text is split by the Llama-3 pre-tokenizer regex first;
 *  - SentencePiece (Llama 2): from GGUF metadata ("llama" model: pieces,
 *    scores, types) or a SentencePiece tokenizer.model (protobuf); the
 *    encoding is llama.cpp's (space -> U+2581, a leading space, bigram
 *    merges by score, <0xXX> byte fallback);
 *  - llama2.c's tokenizer.bin, the same algorithm over pieces that spell
 *    the space as ' '.
 * Encoding rejects invalid UTF-8; decoding and the streaming detokenizer
 * always produce valid UTF-8 (a stray byte a model emits becomes U+FFFD)
 * and the stream never splits a character between two outputs.
 *
 * Thread safety: a loaded tokenizer is immutable and may be used by many
 * threads at once; a text_detok belongs to one thread. Errors go to the
 * tern_ctx passed in (which may be NULL).
 */
#ifndef TERN_TEXT_TOKENIZER_H
#define TERN_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/file.h"
#include "tern/tern.h"

typedef struct text_tokenizer text_tokenizer;

typedef enum text_tok_kind {
	TEXT_TOK_BPE = 0, /* byte-level BPE with the Llama-3 pre-tokenizer */
	TEXT_TOK_SPM = 1, /* SentencePiece (GGUF, tokenizer.model, tokenizer.bin) */
} text_tok_kind;

/* Token types, numbered as GGUF's tokenizer.ggml.token_type. */
typedef enum text_token_type {
	TEXT_TOKEN_NORMAL = 1,
	TEXT_TOKEN_UNKNOWN = 2,
	TEXT_TOKEN_CONTROL = 3,      /* BOS, EOS, <|eot_id|>, ... */
	TEXT_TOKEN_USER_DEFINED = 4, /* always matched as a whole in the text */
	TEXT_TOKEN_UNUSED = 5,
	TEXT_TOKEN_BYTE = 6,         /* SentencePiece byte fallback <0xXX> */
} text_token_type;

/* Flags of text_tok_encode. */
enum {
	TEXT_TOK_ADD_BOS = 1,       /* prepend BOS (if the vocabulary has one) */
	TEXT_TOK_PARSE_SPECIAL = 2, /* control tokens spelled in the text
	                               ("<|eot_id|>") become their ids */
};

/* Flags of decoding. */
enum {
	TEXT_TOK_RENDER_SPECIAL = 1, /* control/unknown tokens print their text
	                                (by default they print nothing) */
};

/* ---- loading ---------------------------------------------------------- */

/* Each loader returns TERN_OK and a tokenizer the caller frees with
 * text_tok_free, or a negative status with a message naming the file,
 * the entry (line, index or byte offset) and what is wrong: TERN_E_IO
 * when the file cannot be read, TERN_E_FORMAT for a broken entry,
 * TERN_E_UNSUPPORTED for a valid vocabulary of another kind. */

/* tiktoken file: one line per token, "base64(bytes) rank", ranks a
 * permutation of 0..n-1 (rank = id). The n_special strings in special
 * (copied) become CONTROL tokens n..n+n_special-1; no BOS/EOS are set. */
int text_tok_load_tiktoken(tern_ctx *ctx, const char *path, const char *const *special,
			   size_t n_special, text_tokenizer **out);
/* Same from memory (size bytes, copied as needed; name is for messages). */
int text_tok_load_tiktoken_memory(tern_ctx *ctx, const char *name, const char *data,
				  size_t size, const char *const *special, size_t n_special,
				  text_tokenizer **out);

/* The Llama-3 tokenizer of BitNet b1.58 2B4T: a tiktoken file of 128000
 * tokens plus Llama-3's 256 special tokens (128000 <|begin_of_text|> =
 * BOS, 128001 <|end_of_text|> = EOS, 128009 <|eot_id|> = end of turn);
 * BOS is added by default. */
int text_tok_load_llama3(tern_ctx *ctx, const char *path, text_tokenizer **out);

/* Hugging Face tokenizer.json of a byte-level BPE model (model.type
 * "BPE" with vocab and merges, added_tokens as CONTROL tokens). Other
 * model types give TERN_E_UNSUPPORTED. */
int text_tok_load_hf_json(tern_ctx *ctx, const char *path, text_tokenizer **out);
int text_tok_load_hf_json_memory(tern_ctx *ctx, const char *name, const char *data, size_t size,
				 text_tokenizer **out);

/* From GGUF-style metadata (the root of tern_file_meta, or any object
 * holding the same keys): tokenizer.ggml.model "llama" (tokens, scores,
 * token_type) or "gpt2" (tokens, merges, token_type), with the optional
 * bos/eos/unknown/eot token ids, add_bos_token and add_space_prefix. meta
 * is only read. */
int text_tok_from_meta(tern_ctx *ctx, const tern_meta *meta, text_tokenizer **out);

/* SentencePiece model file (the protobuf tokenizer.model): its pieces,
 * scores, types and the special ids of its trainer spec. */
int text_tok_load_spm_model(tern_ctx *ctx, const char *path, text_tokenizer **out);
int text_tok_load_spm_model_memory(tern_ctx *ctx, const char *name, const void *data,
				   size_t size, text_tokenizer **out);

/* llama2.c tokenizer.bin: i32 max_token_length, then per token f32 score,
 * i32 length, the bytes. Ids 0, 1, 2 are <unk>, BOS, EOS; "<0xXX>" pieces
 * are byte tokens. The vocabulary size is the number of entries (the file
 * does not store it), so a truncated entry is an error, not an end. */
int text_tok_load_l2c(tern_ctx *ctx, const char *path, text_tokenizer **out);
int text_tok_load_l2c_memory(tern_ctx *ctx, const char *name, const void *data, size_t size,
			     text_tokenizer **out);

/* The tokenizer of a model file (borrowed, only read): for GGUF its
 * tokenizer.ggml.* keys; for a .tern, the header's "tokenizer" object,
 * either {"format", "tensor", "size"} naming an i8 tensor that holds a
 * tokenizer file's bytes (format "llama2c" = tokenizer.bin, "spm" =
 * SentencePiece tokenizer.model, "hf-json" = tokenizer.json), or GGUF-style
 * tokenizer.ggml.* keys; else the keys under "gguf" (a converted GGUF).
 * TERN_E_NOT_FOUND when the file holds no tokenizer; the loaders' errors
 * otherwise. docs/FORMAT.md, "Text models", has the layout. */
int text_tok_from_file(tern_ctx *ctx, const tern_file *file, text_tokenizer **out);

/* Free a tokenizer. Accepts NULL. */
void text_tok_free(text_tokenizer *tok);

/* ---- properties ------------------------------------------------------- */

text_tok_kind text_tok_kind_of(const text_tokenizer *tok);
int32_t text_tok_n_vocab(const text_tokenizer *tok);
/* Special ids, -1 when the vocabulary has none. */
int32_t text_tok_bos(const text_tokenizer *tok);
int32_t text_tok_eos(const text_tokenizer *tok);
int32_t text_tok_eot(const text_tokenizer *tok);
/* Whether the model expects BOS at the start of a prompt. */
bool text_tok_wants_bos(const text_tokenizer *tok);
/* Whether generation should stop at id (EOS or end of turn). */
bool text_tok_is_eog(const text_tokenizer *tok, int32_t id);
/* Type of id (0 for an id outside the vocabulary). */
int text_tok_type(const text_tokenizer *tok, int32_t id);
/* The vocabulary string of id as stored (raw bytes for BPE, the piece
 * with U+2581 for SentencePiece), NULL if out of range. Owned by tok. */
const char *text_tok_text(const text_tokenizer *tok, int32_t id, size_t *len);
/* The id whose vocabulary string is exactly text[0..len), or -1. */
int32_t text_tok_find(const text_tokenizer *tok, const char *text, size_t len);

/* ---- encoding --------------------------------------------------------- */

/* Tokenize text[0..len) (UTF-8; NUL bytes allowed) into ids[0..cap).
 * *n_ids is always set to the number of ids the text needs; when that
 * exceeds cap, nothing useful is in ids and the call returns
 * TERN_E_OVERFLOW, so callers may size the buffer with a first call
 * (cap 0, ids may be NULL). Invalid UTF-8 gives TERN_E_INVALID with the
 * byte offset in the message. */
int text_tok_encode(const text_tokenizer *tok, tern_ctx *ctx, const char *text, size_t len,
		    int flags, int32_t *ids, size_t cap, size_t *n_ids);

/* Same into a new array *ids (free() it) of *n_ids ids (*ids is a valid
 * allocation even when the text gives no ids). */
int text_tok_encode_alloc(const text_tokenizer *tok, tern_ctx *ctx, const char *text,
			  size_t len, int flags, int32_t **ids, size_t *n_ids);

/* ---- decoding --------------------------------------------------------- */

/* The bytes token id stands for (SentencePiece: U+2581 as ' ', <0xXX> as
 * that byte), possibly an incomplete UTF-8 sequence; "" for control and
 * unknown tokens unless flags has TEXT_TOK_RENDER_SPECIAL, and for ids
 * outside the vocabulary. Owned by tok. */
const char *text_tok_piece(const text_tokenizer *tok, int32_t id, int flags, size_t *len);

/* Decode ids[0..n) into a new NUL-terminated string *out (free() it) of
 * *len bytes: the pieces concatenated, the leading space SentencePiece
 * added removed, malformed UTF-8 replaced by U+FFFD. For valid text,
 * decoding its encoding gives the text back. */
int text_tok_decode(const text_tokenizer *tok, tern_ctx *ctx, const int32_t *ids, size_t n,
		    int flags, char **out, size_t *len);

/* Streaming detokenizer: feed ids one at a time as a model generates them
 * and get back only complete UTF-8 characters; the bytes of a character
 * split across tokens are held until it is complete. The output of all
 * pushes plus the flush equals text_tok_decode of the same ids. */
typedef struct text_detok text_detok;

/* New stream over tok (borrowed: it must outlive the stream). Free with
 * text_detok_free. */
int text_detok_new(tern_ctx *ctx, const text_tokenizer *tok, int flags, text_detok **out);
void text_detok_free(text_detok *d);
/* Forget held bytes and start a new text (the next piece loses its
 * SentencePiece leading space again). */
void text_detok_reset(text_detok *d);
/* Push one id; *out and *len receive the text now complete (possibly empty),
 * owned by d and valid until the next call on d. An id outside the
 * vocabulary gives TERN_E_INVALID. */
int text_detok_push(text_detok *d, tern_ctx *ctx, int32_t id, const char **out, size_t *len);
/* End of the text: held bytes of an unfinished character come out as
 * U+FFFD. Same ownership as push; the stream is then reset. */
void text_detok_flush(text_detok *d, const char **out, size_t *len);

#endif
