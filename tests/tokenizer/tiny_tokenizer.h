/* A small byte-level BPE tokenizer.json built in memory for tests that must
 * not depend on the Qwen3 files: the 256 byte symbols (ids 0–255 in
 * code-point order), the merges below, and these added tokens:
 *   TINY_ID_X "<x>", TINY_ID_XY "<x>y" (raw; "<x>" is its prefix, so matching must be longest-first), TINY_ID_S_ACUTE "ś"
 *   ("normalized": true, so it also matches "s" + U+0301), TINY_ID_EOT
 *   "<|endoftext|>". */
#ifndef QSENS_TESTS_TOKENIZER_TINY_TOKENIZER_H
#define QSENS_TESTS_TOKENIZER_TINY_TOKENIZER_H

#include <jansson.h>
#include <stdbool.h>

/* Merges in rank order; merge i makes id 256 + i. */
#define TINY_MERGES {{"b", "c"}, {"a", "b"}, {"a", "bc"}, {"a", "a"}, {"Ġ", "a"}, {"Ġa", "a"}}
enum {
  TINY_N_MERGES = 6,
  TINY_ID_BC = 256, TINY_ID_AB, TINY_ID_ABC, TINY_ID_AA, TINY_ID_SPACE_A, TINY_ID_SPACE_AA,
  TINY_ID_X = 262, TINY_ID_XY, TINY_ID_S_ACUTE, TINY_ID_EOT,
};

/* The tokenizer as a JSON tree; merges as ["a","b"] pairs or "a b" strings. */
json_t *tiny_tokenizer(bool merges_as_strings);

/* Id of the one-byte token of byte b. */
int tiny_byte_id(unsigned char b);

#endif
