/* The real Qwen3 tokenizer.json: loads, and gives the spec's smoke vectors
 * (qwen3-vl-lm.md §9). Skipped (77) when the shared file is absent. */
#define _POSIX_C_SOURCE 200809L
#include <string.h>
#include <time.h>

#include "check.h"
#include "core/fsutil.h"
#include "text/tokenizer.h"

static void check_ids(const qs_tokenizer *tok, const char *s, const int32_t *want, size_t n_want) {
  qs_token_ids ids = {0};
  qs_error err = {0};
  CHECK(qs_tokenizer_encode(tok, s, strlen(s), &ids, &err));
  CHECK_INT(ids.len, n_want);
  for (size_t i = 0; i < n_want && i < ids.len; i++) CHECK_INT(ids.ids[i], want[i]);
  qs_strbuf back = {0};
  CHECK(qs_tokenizer_decode(tok, ids.ids, ids.len, &back, &err));
  CHECK_STR(qs_sb_str(&back), s);
  qs_sb_free(&back);
  qs_token_ids_free(&ids);
}

#define EXPECT_IDS(tok, s, ...)                                                  \
  do {                                                                           \
    const int32_t want_[] = {__VA_ARGS__};                                       \
    check_ids(tok, s, want_, sizeof want_ / sizeof want_[0]);                    \
  } while (0)

static bool same_ids(const qs_tokenizer *tok, const char *a, const char *b) {
  qs_token_ids x = {0}, y = {0};
  qs_error err = {0};
  bool same = qs_tokenizer_encode(tok, a, strlen(a), &x, &err) &&
              qs_tokenizer_encode(tok, b, strlen(b), &y, &err) && x.len == y.len && x.len > 0 &&
              memcmp(x.ids, y.ids, x.len * sizeof *x.ids) == 0;
  qs_token_ids_free(&x);
  qs_token_ids_free(&y);
  return same;
}

int main(int argc, char **argv) {
  if (argc != 2 || !qs_is_file(argv[1])) {
    printf("skipped: Qwen3 tokenizer.json not found at %s\n", argc > 1 ? argv[1] : "(no path given)");
    return 77;
  }
  qs_error err = {0};
  qs_tokenizer *tok;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (!qs_tokenizer_load(argv[1], &tok, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("loaded in %.3f s\n", (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
  CHECK_INT(qs_tokenizer_vocab_size(tok), 151669);
  CHECK_INT(qs_tokenizer_token_id(tok, "<|endoftext|>"), 151643);
  CHECK_INT(qs_tokenizer_token_id(tok, "<|im_end|>"), 151645);
  CHECK_INT(qs_tokenizer_token_id(tok, "</think>"), 151668);
  CHECK_INT(qs_tokenizer_token_id(tok, "\xc4\xa0"), 220); /* "Ġ" */
  EXPECT_IDS(tok, "Hello world", 9707, 1879);
  EXPECT_IDS(tok, " Hello world", 21927, 1879);
  EXPECT_IDS(tok, "12345 numbers", 16, 17, 18, 19, 20, 5109);
  EXPECT_IDS(tok, "<|endoftext|>x<think>", 151643, 87, 151667);
  CHECK(same_ids(tok, "Cafe\xcc\x81", "Caf\xc3\xa9"));
  qs_tokenizer_free(tok);
  return check_summary("test_tokenizer_qwen3");
}
