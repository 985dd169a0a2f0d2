/* Caption text -> Qwen3 token ids -> packed and padded batches, with the
 * tokenizer's smoke vectors of spec qwen3-vl-lm.md §9 ("Hello world" ->
 * 9707 1879; "12345 numbers" -> 16 17 18 19 20 5109). Skips (77) without the
 * Qwen3 tokenizer.json given as argv[1]. */
#include <stdlib.h>

#include "check.h"
#include "core/fsutil.h"
#include "text/batch.h"
#include "text/tokenizer.h"

#define X QS_IGNORE_INDEX
#define P QS_PAD_TOKEN_ID

static void check_ints(const int32_t *got, const int32_t *expected, size_t n) {
  for (size_t i = 0; i < n; i++) CHECK_INT(got[i], expected[i]);
}

static void check_batches(const qs_sample_list *list) {
  qs_token_seq *seqs;
  qs_error err = {0};
  CHECK(qs_token_seqs_from_samples(list, &seqs, &err));
  qs_batch_opts o = qs_batch_opts_default();
  qs_batch_plan plan;
  CHECK(qs_batch_plan_build(seqs, list->count, &o, &plan, &err));
  static const int32_t ids[] = {9707, 1879, 16, 17, 18, 19, 20, 5109};
  static const int32_t tgt[] = {1879, X, 17, 18, 19, 20, 5109, X};
  static const int32_t cu[] = {0, 2, 8};
  CHECK_INT(plan.count, 1);
  CHECK_INT(plan.batches[0].n_tokens, 8);
  check_ints(plan.batches[0].input_ids, ids, 8);
  check_ints(plan.batches[0].targets, tgt, 8);
  check_ints(plan.batches[0].cu_seqlens, cu, 3);
  CHECK_INT(plan.batches[0].n_targets, 6);
  qs_batch_plan_free(&plan);

  o.padding = QS_PADDING_MAX_LENGTH;
  o.max_length = 7; /* the second caption (6 tokens) gets one pad */
  CHECK(qs_batch_plan_build(seqs, list->count, &o, &plan, &err));
  static const int32_t row1[] = {P, P, P, P, P, 9707, 1879}, row2[] = {P, 16, 17, 18, 19, 20, 5109};
  check_ints(plan.batches[0].input_ids, row1, 7);
  check_ints(plan.batches[0].input_ids + 7, row2, 7);
  CHECK_INT(plan.batches[0].n_targets, 2 + 6); /* each row: its tokens but the last, plus the pad context */
  qs_batch_plan_free(&plan);
  free(seqs);
}

int main(int argc, char **argv) {
  if (argc < 2 || !qs_is_file(argv[1])) {
    printf("skipped: Qwen3 tokenizer.json not found at %s\n", argc > 1 ? argv[1] : "(no path given)");
    return 77;
  }
  qs_tokenizer *tok;
  qs_error err = {0};
  if (!qs_tokenizer_load(argv[1], &tok, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  static const char text[] = "Hello world\n  12345 numbers \n\n";
  qs_caption_source src = {.path = "captions.txt", .limit = 2};
  qs_sample_list list;
  CHECK(qs_captions_parse(&src, text, sizeof text - 1, &list, &err));
  qs_token_seq *seqs;
  CHECK(!qs_token_seqs_from_samples(&list, &seqs, &err));
  CHECK_STR(err.msg, "sample 0 is not tokenized");
  CHECK(qs_sample_list_tokenize(&list, tok, &err));
  CHECK(qs_sample_list_check_ids(&list, qs_tokenizer_vocab_size(tok), &err));
  CHECK_STR(list.items[1].text, "12345 numbers");
  CHECK_INT(list.items[1].n_ids, 6);
  check_batches(&list);
  qs_sample_list_free(&list);
  qs_tokenizer_free(tok);
  return check_summary("test_calib_pipeline");
}
