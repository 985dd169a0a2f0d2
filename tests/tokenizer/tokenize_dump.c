/* Prints the token ids of every text of a corpus, one line per text (ids
 * separated by spaces; "ERROR <message>" when a text is refused), for
 * comparison with the reference implementation by oracle_tokenizer.py.
 * With --decode, prints instead the decoding of those ids as a JSON string
 * (null when the bytes are not valid UTF-8).
 * Usage: tokenize_dump [--decode] TOKENIZER_JSON CORPUS */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "corpus_reader.h"
#include "text/tokenizer.h"

static void print_ids(const qs_token_ids *ids) {
  for (size_t k = 0; k < ids->len; k++) printf(k ? " %d" : "%d", (int)ids->ids[k]);
  printf("\n");
}

static void print_decoded(const qs_tokenizer *tok, const qs_token_ids *ids) {
  qs_strbuf text = {0};
  qs_error err = {0};
  if (!qs_tokenizer_decode(tok, ids->ids, ids->len, &text, &err)) {
    printf("ERROR %s\n", err.msg);
    return;
  }
  json_t *s = json_stringn(qs_sb_str(&text), text.len);
  char *dump = s ? json_dumps(s, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
  printf("%s\n", dump ? dump : "null");
  free(dump);
  json_decref(s);
  qs_sb_free(&text);
}

int main(int argc, char **argv) {
  bool decode = argc == 4 && strcmp(argv[1], "--decode") == 0;
  if (argc != 3 && !decode) {
    fprintf(stderr, "usage: tokenize_dump [--decode] TOKENIZER_JSON CORPUS\n");
    return QS_EXIT_USAGE;
  }
  const char *tokenizer_path = argv[argc - 2], *corpus_path = argv[argc - 1];
  qs_error err = {0};
  qs_tokenizer *tok;
  corpus c;
  if (!qs_tokenizer_load(tokenizer_path, &tok, &err) || !corpus_read(corpus_path, &c, &err)) {
    fprintf(stderr, "tokenize_dump: %s\n", err.msg);
    return err.status;
  }
  qs_token_ids ids = {0};
  for (size_t i = 0; i < c.count; i++) {
    ids.len = 0;
    if (!qs_tokenizer_encode(tok, c.texts[i], c.lens[i], &ids, &err)) printf("ERROR %s\n", err.msg);
    else if (decode) print_decoded(tok, &ids);
    else print_ids(&ids);
  }
  qs_token_ids_free(&ids);
  corpus_free(&c);
  qs_tokenizer_free(tok);
  return 0;
}
