/* Learns a byte-level BPE vocabulary from texts (JSONL with a "text" field, or
 * .txt with one text per line) and writes it as tokenizer.json; used by the
 * oracle test, and to build the demo model's tokenizer from its captions.
 * Usage: bpe_train_json TEXTS VOCAB_SIZE OUT_TOKENIZER_JSON */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>

#include "corpus_reader.h"
#include "text/bpe_train.h"

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: bpe_train_json TEXTS VOCAB_SIZE OUT_TOKENIZER_JSON\n");
    return QS_EXIT_USAGE;
  }
  char *end;
  long vocab_size = strtol(argv[2], &end, 10);
  if (*end || vocab_size < 256) {
    fprintf(stderr, "bpe_train_json: VOCAB_SIZE must be an integer >= 256, not '%s'\n", argv[2]);
    return QS_EXIT_USAGE;
  }
  qs_error err = {0};
  corpus c;
  qs_bpe_vocab v;
  qs_bpe_options opt = {.vocab_size = (size_t)vocab_size, .min_pair_count = 2};
  bool ok = corpus_read(argv[1], &c, &err);
  if (ok) {
    ok = qs_bpe_train((const char *const *)c.texts, c.lens, c.count, &opt, &v, &err) &&
         qs_bpe_write_tokenizer_json(&v, argv[3], &err);
    if (ok) {
      printf("%zu tokens (%zu merges) learned from %zu texts\n", v.n_tokens, v.n_merges, c.count);
      qs_bpe_vocab_free(&v);
    }
    corpus_free(&c);
  }
  if (!ok) fprintf(stderr, "bpe_train_json: %s\n", err.msg);
  return ok ? 0 : err.status;
}
