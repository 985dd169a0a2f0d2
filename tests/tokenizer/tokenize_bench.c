/* Measures tokenizer load time and encode throughput (MB/s of UTF-8 input)
 * on a JSONL corpus. A benchmark, not a test: it asserts nothing.
 * Usage: tokenize_bench TOKENIZER_JSON CORPUS_JSONL [ROUNDS] */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "corpus_reader.h"
#include "text/tokenizer.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: tokenize_bench TOKENIZER_JSON CORPUS_JSONL [ROUNDS]\n");
    return QS_EXIT_USAGE;
  }
  int rounds = argc == 4 ? atoi(argv[3]) : 20;
  if (rounds < 1) {
    fprintf(stderr, "tokenize_bench: ROUNDS must be a positive integer, not '%s'\n", argv[3]);
    return QS_EXIT_USAGE;
  }
  qs_error err = {0};
  qs_tokenizer *tok;
  corpus c;
  double t0 = now_s();
  if (!qs_tokenizer_load(argv[1], &tok, &err)) {
    fprintf(stderr, "tokenize_bench: %s\n", err.msg);
    return err.status;
  }
  double load_s = now_s() - t0;
  if (!corpus_read(argv[2], &c, &err)) {
    fprintf(stderr, "tokenize_bench: %s\n", err.msg);
    return err.status;
  }
  size_t bytes = 0;
  for (size_t i = 0; i < c.count; i++) bytes += c.lens[i];
  double mb = (double)bytes * rounds / 1e6;
  qs_token_ids ids = {0};
  size_t tokens = 0, refused = 0;
  t0 = now_s();
  for (int r = 0; r < rounds; r++)
    for (size_t i = 0; i < c.count; i++) {
      ids.len = 0;
      if (qs_tokenizer_encode(tok, c.texts[i], c.lens[i], &ids, &err)) tokens += ids.len;
      else refused++;
    }
  double one_s = now_s() - t0;
  size_t *offsets = malloc((c.count + 1) * sizeof *offsets);
  t0 = now_s();
  for (int r = 0; r < rounds; r++) {
    ids.len = 0;
    if (!qs_tokenizer_encode_batch(tok, (const char *const *)c.texts, c.lens, c.count, &ids, offsets, &err))
      fprintf(stderr, "tokenize_bench: %s\n", err.msg);
  }
  double batch_s = now_s() - t0;
  free(offsets);
  printf("load: %.3f s (%zu ids)\n", load_s, qs_tokenizer_vocab_size(tok));
  printf("corpus: %zu texts, %.3f MB, %zu tokens per round, %zu refused\n", c.count, (double)bytes / 1e6,
         tokens / (size_t)rounds, refused / (size_t)rounds);
  printf("encode, one call per text: %.1f MB/s (%.2f Mtok/s)\n", mb / one_s, (double)tokens / 1e6 / one_s);
  printf("encode, one batch call:    %.1f MB/s (%.2f Mtok/s)\n", mb / batch_s, (double)tokens / 1e6 / batch_s);
  qs_token_ids_free(&ids);
  corpus_free(&c);
  qs_tokenizer_free(tok);
  return 0;
}
