/* Reads texts for the tokenizer test drivers: a JSONL file (one
 * {"text": "..."} object per line; texts may hold NUL characters, so lengths
 * are kept) or, for a name ending in ".txt", one text per non-empty line. */
#ifndef QSENS_TESTS_TOKENIZER_CORPUS_READER_H
#define QSENS_TESTS_TOKENIZER_CORPUS_READER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

typedef struct corpus {
  char **texts;
  size_t *lens;
  size_t count;
} corpus;

bool corpus_read(const char *path, corpus *out, qs_error *err);
void corpus_free(corpus *c);

#endif
