/* Batch layouts checked against hand-computed tables (P = pad id). */
#include "check.h"
#include "text/batch.h"

#define P QS_PAD_TOKEN_ID
#define X QS_IGNORE_INDEX
#define LEN(a) (sizeof(a) / sizeof((a)[0]))

static void check_ints(const int32_t *got, const int32_t *expected, size_t n, const char *what) {
  for (size_t i = 0; i < n; i++) {
    if (got[i] != expected[i]) fprintf(stderr, "%s[%zu]\n", what, i);
    CHECK_INT(got[i], expected[i]);
  }
}

static const int32_t seq_a[] = {10, 11, 12}, seq_b[] = {20, 21}, seq_c[] = {30}, seq_d[] = {40, 41, 42, 43, 44};

static void test_packed_layout(void) {
  qs_token_seq seqs[] = {{seq_a, 3}, {seq_b, 2}, {seq_c, 1}};
  qs_batch_opts o = qs_batch_opts_default();
  qs_batch_plan plan;
  qs_error err = {0};
  CHECK(qs_batch_plan_build(seqs, 3, &o, &plan, &err));
  CHECK_INT(plan.count, 1);
  CHECK_INT(plan.n_logical, 1);
  CHECK_INT(plan.n_score, 1);
  CHECK_INT(plan.n_calib, 1);
  const qs_batch *b = &plan.batches[0];
  static const int32_t cu[] = {0, 3, 5, 6}, ids[] = {10, 11, 12, 20, 21, 30}, pos[] = {0, 1, 2, 0, 1, 0},
                       tgt[] = {11, 12, X, 21, X, X};
  CHECK_INT(b->n_seqs, 3);
  CHECK_INT(b->n_tokens, 6);
  CHECK_INT(b->row_len, 0);
  CHECK(b->attention_mask == NULL);
  check_ints(b->cu_seqlens, cu, LEN(cu), "cu_seqlens");
  check_ints(b->input_ids, ids, LEN(ids), "input_ids");
  check_ints(b->positions, pos, LEN(pos), "positions");
  check_ints(b->targets, tgt, LEN(tgt), "targets");
  CHECK_INT(b->n_targets, 3);
  for (int s = 0; s < 3; s++) CHECK_INT(b->loss_count[s], 3);
  CHECK(b->calib && b->score);
  qs_batch_plan_free(&plan);
}

static void test_packed_truncation(void) {
  qs_token_seq seqs[] = {{seq_d, 5}, {seq_c, 1}};
  qs_batch_opts o = qs_batch_opts_default();
  o.max_length = 2;
  qs_batch_plan plan;
  qs_error err = {0};
  CHECK(qs_batch_plan_build(seqs, 2, &o, &plan, &err));
  static const int32_t ids[] = {40, 41, 30}, tgt[] = {41, X, X};
  CHECK_INT(plan.batches[0].n_tokens, 3);
  check_ints(plan.batches[0].input_ids, ids, LEN(ids), "input_ids");
  check_ints(plan.batches[0].targets, tgt, LEN(tgt), "targets");
  CHECK_INT(plan.batches[0].n_targets, 1);
  qs_batch_plan_free(&plan);
}

/* HF padding="max_length", padding_side="left", max_length=4, truncation. */
static void test_padded_layout(bool pad_context) {
  qs_token_seq seqs[] = {{seq_a, 3}, {seq_b, 2}, {seq_c, 1}, {seq_d, 5}};
  qs_batch_opts o = qs_batch_opts_default();
  o.padding = QS_PADDING_MAX_LENGTH;
  o.max_length = 4;
  o.pad_context_target = pad_context;
  qs_batch_plan plan;
  qs_error err = {0};
  CHECK(qs_batch_plan_build(seqs, 4, &o, &plan, &err));
  CHECK_INT(plan.count, 1);
  const qs_batch *b = &plan.batches[0];
  static const int32_t cu[] = {0, 4, 8, 12, 16};
  static const int32_t ids[] = {P, 10, 11, 12, /**/ P, P, 20, 21, /**/ P, P, P, 30, /**/ 40, 41, 42, 43};
  static const int32_t pos[] = {1, 0, 1, 2, /**/ 1, 1, 0, 1, /**/ 1, 1, 1, 0, /**/ 0, 1, 2, 3};
  static const uint8_t mask[] = {0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1};
  /* The last pad of each row predicts its first real token (existing flow)... */
  static const int32_t tgt_hf[] = {10, 11, 12, X, /**/ X, 20, 21, X, /**/ X, X, 30, X, /**/ 41, 42, 43, X};
  /* ...or does not, as the loss definition has it. */
  static const int32_t tgt_def[] = {X, 11, 12, X, /**/ X, X, 21, X, /**/ X, X, X, X, /**/ 41, 42, 43, X};
  CHECK_INT(b->n_seqs, 4);
  CHECK_INT(b->n_tokens, 16);
  CHECK_INT(b->row_len, 4);
  check_ints(b->cu_seqlens, cu, LEN(cu), "cu_seqlens");
  check_ints(b->input_ids, ids, LEN(ids), "input_ids");
  check_ints(b->positions, pos, LEN(pos), "positions");
  for (size_t i = 0; i < LEN(mask); i++) CHECK_INT(b->attention_mask[i], mask[i]);
  check_ints(b->targets, pad_context ? tgt_hf : tgt_def, 16, "targets");
  CHECK_INT(b->n_targets, pad_context ? 9 : 6);
  for (int s = 0; s < 4; s++) CHECK_INT(b->loss_count[s], pad_context ? 9 : 6);
  qs_batch_plan_free(&plan);
}

static void test_score_batch_count(void) {
  CHECK_INT(qs_score_batch_count(128, 8, 2), 2);   /* small: 16 captions */
  CHECK_INT(qs_score_batch_count(128, 8, 16), 16); /* medium */
  CHECK_INT(qs_score_batch_count(128, 8, 64), 16); /* large */
  CHECK_INT(qs_score_batch_count(4, 8, 10), 1);    /* max(..., 1) */
  CHECK_INT(qs_score_batch_count(128, 8, 0), 0);
}

/* 20 sequences of lengths 1..5 repeating, batch_size 4, score_size 8:
 * 5 logical batches, the first 2 scored. */
static qs_token_seq twenty[20];
static const int32_t tokens[5] = {1, 2, 3, 4, 5};

static void make_twenty(void) {
  for (int i = 0; i < 20; i++) twenty[i] = (qs_token_seq){tokens, (size_t)(i % 5 + 1)};
}

static void test_roles(void) {
  make_twenty();
  qs_batch_opts o = qs_batch_opts_default();
  o.batch_size = 4;
  o.score_size = 8;
  qs_batch_plan plan;
  qs_error err = {0};
  CHECK(qs_batch_plan_build(twenty, 20, &o, &plan, &err));
  CHECK_INT(plan.n_logical, 5);
  CHECK_INT(plan.n_score, 2);
  CHECK_INT(plan.n_calib, 5);
  CHECK_INT(plan.count, 5); /* max_seqs defaults to batch_size */
  /* logical batch 1 = lengths 5,1,2,3: targets 4+0+1+2 = 7 */
  CHECK_INT(plan.batches[1].first_seq, 4);
  CHECK_INT(plan.batches[1].n_targets, 7);
  CHECK_INT(plan.batches[1].loss_count[0], 7);
  CHECK(plan.batches[1].score && !plan.batches[2].score && plan.batches[4].calib);
  qs_batch_plan_free(&plan);

  /* Up to 16 sequences per batch: never across the score boundary (seq 8). */
  o.max_seqs = 16;
  CHECK(qs_batch_plan_build(twenty, 20, &o, &plan, &err));
  CHECK_INT(plan.count, 2);
  CHECK_INT(plan.batches[0].n_seqs, 8);
  CHECK_INT(plan.batches[1].n_seqs, 12);
  CHECK(plan.batches[0].score && !plan.batches[1].score && plan.batches[1].calib);
  /* Per-sequence loss counts follow the logical batches: batch 0 = lengths 1,2,3,4 -> 6. */
  CHECK_INT(plan.batches[0].loss_count[0], 6);
  CHECK_INT(plan.batches[0].loss_count[4], 7);
  CHECK_INT(plan.batches[0].n_targets, 13);
  qs_batch_plan_free(&plan);

  /* Calibrating on one logical batch only: seqs 0..3 do both, 4..7 score only, the rest is unused. */
  o.calib_batches = 1;
  CHECK(qs_batch_plan_build(twenty, 20, &o, &plan, &err));
  CHECK_INT(plan.n_calib, 1);
  CHECK_INT(plan.count, 2);
  CHECK_INT(plan.batches[0].n_seqs, 4);
  CHECK(plan.batches[0].calib && plan.batches[0].score);
  CHECK_INT(plan.batches[1].first_seq, 4);
  CHECK_INT(plan.batches[1].n_seqs, 4);
  CHECK(!plan.batches[1].calib && plan.batches[1].score);
  qs_batch_plan_free(&plan);
}

/* Lengths 3,2,4,1,5 with a 6-token budget pack greedily as [3,2] [4,1] [5]. */
static void test_token_budget(void) {
  static const int32_t t[5] = {7, 8, 9, 10, 11};
  qs_token_seq seqs[] = {{t, 3}, {t, 2}, {t, 4}, {t, 1}, {t, 5}};
  qs_batch_opts o = qs_batch_opts_default();
  o.max_tokens = 6;
  qs_batch_plan plan;
  qs_error err = {0};
  CHECK(qs_batch_plan_build(seqs, 5, &o, &plan, &err));
  CHECK_INT(plan.count, 3);
  CHECK_INT(plan.batches[0].n_tokens, 5);
  CHECK_INT(plan.batches[1].n_tokens, 5);
  CHECK_INT(plan.batches[2].n_tokens, 5);
  CHECK_INT(plan.batches[1].first_seq, 2);
  CHECK_INT(plan.batches[0].n_targets, 3);
  CHECK_INT(plan.batches[1].n_targets, 3);
  CHECK_INT(plan.batches[2].n_targets, 4);
  /* One logical batch of 8: every sequence is normalized by its 10 targets. */
  CHECK_INT(plan.batches[2].loss_count[0], 10);
  CHECK_INT(plan.batches[0].loss_count[1], 10);
  qs_batch_plan_free(&plan);

  o.max_tokens = 4;
  CHECK(!qs_batch_plan_build(seqs, 5, &o, &plan, &err));
  CHECK_STR(err.msg, "sequence 4 has 5 tokens, more than the per-batch token budget (4)");
  CHECK_INT(err.status, QS_EXIT_USAGE);
}

static void test_bad_input(void) {
  qs_token_seq seqs[] = {{seq_a, 3}, {seq_a, 0}};
  qs_batch_opts o = qs_batch_opts_default();
  qs_batch_plan plan;
  qs_error err = {0};
  CHECK(!qs_batch_plan_build(seqs, 2, &o, &plan, &err));
  CHECK_STR(err.msg, "sequence 1 is empty (no tokens)");
  o.batch_size = 0;
  CHECK(!qs_batch_plan_build(seqs, 1, &o, &plan, &err));
  CHECK_STR(err.msg, "batch size must be at least 1");
  o = qs_batch_opts_default();
  o.padding = QS_PADDING_MAX_LENGTH;
  o.max_length = 0;
  CHECK(!qs_batch_plan_build(seqs, 1, &o, &plan, &err));
  CHECK_STR(err.msg, "padding=max_length needs a max_length of at least 1");
  CHECK(plan.count == 0 && plan.batches == NULL);
}

int main(void) {
  test_packed_layout();
  test_packed_truncation();
  test_padded_layout(true);
  test_padded_layout(false);
  test_score_batch_count();
  test_roles();
  test_token_budget();
  test_bad_input();
  return check_summary("test_batch");
}
