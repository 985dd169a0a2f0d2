/* Learns a byte-level BPE vocabulary from a list of texts, with the Qwen3
 * pre-tokenization (NFC, the Qwen3 split regex, byte map), and writes it as a
 * `tokenizer.json` of the same structure as Qwen3's, so qs_tokenizer_load and
 * the Hugging Face `tokenizers` package both read it. Used to build the small
 * vocabulary of the embedded demo model.
 *
 * Training is deterministic: the most frequent adjacent pair is merged first;
 * equal counts go to the pair with the smaller (left id, right id). Counts are
 * over pieces weighted by how often each piece occurs; within a piece, merges
 * apply left to right, as encoding does. */
#ifndef QSENS_TEXT_BPE_TRAIN_H
#define QSENS_TEXT_BPE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct qs_bpe_merge {
  int32_t left, right; /* ids of the adjacent pair */
  int32_t result;      /* id of the token they make */
} qs_bpe_merge;

/* Byte-level tokens: ids 0–255 are the single bytes in the order of their
 * byte-level code points (as in GPT-2 and Qwen: '!' is 0, 'Ġ' is 220); each
 * merge makes the next new id, or reuses the id of a token already spelled the
 * same way (two different pairs can join to the same bytes). */
typedef struct qs_bpe_vocab {
  size_t n_tokens;
  char **spellings;      /* byte-level spelling of each token (UTF-8, e.g. "Ġthe") */
  size_t n_merges;       /* merge i has rank i */
  qs_bpe_merge *merges;
} qs_bpe_vocab;

typedef struct qs_bpe_options {
  size_t vocab_size;       /* learned tokens wanted, bytes included (>= 256) */
  int64_t min_pair_count;  /* stop early when the best pair occurs fewer times (>= 1) */
} qs_bpe_options;

/* Added tokens written after the learned vocabulary, in this order;
 * the first is the padding token. */
#define QS_BPE_ADDED_TOKENS {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
enum { QS_BPE_N_ADDED_TOKENS = 3 };

/* texts[i] has lens[i] bytes (lens NULL: NUL-terminated). Texts must be valid UTF-8. */
bool qs_bpe_train(const char *const *texts, const size_t *lens, size_t n_texts,
                  const qs_bpe_options *opt, qs_bpe_vocab *out, qs_error *err);

/* The tokenizer.json text (caller frees), NULL only when out of memory. */
char *qs_bpe_tokenizer_json(const qs_bpe_vocab *v);
/* Writes it atomically to path. */
bool qs_bpe_write_tokenizer_json(const qs_bpe_vocab *v, const char *path, qs_error *err);

void qs_bpe_vocab_free(qs_bpe_vocab *v);

#endif
