/*
 * lm.h (private to the text plugin): the plugin's language model object
 * (decoder + tokenizer + chat format) and its "lm" component table
 * (include/tern/lm.h), implemented in lm.c. plugin.c loads models through
 * text_lm_load, so the object a tern_model holds is a text_lm.
 */
#ifndef TERN_TEXT_LM_H
#define TERN_TEXT_LM_H

#include "tern/lm.h"
#include "tern/plugin.h"

/* The "lm" version 1 table. */
extern const tern_lm_iface text_lm_iface;

/* Decoder and tokenizer from a model file (borrowed; it outlives the lm).
 * A file without a usable tokenizer still loads: tokenizing then fails
 * with the reason, and token ids work. Free with text_lm_free. */
int text_lm_load(const tern_host *host, const tern_file *file, void **out);
/* Accepts NULL. */
void text_lm_free(void *lm);

#endif
