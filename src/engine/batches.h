/* The pass's batches in a form the run code can hand to the model
 * (internal to the engine), built from text/batch.h's plan in batches.c:
 * the one place that turns caption batches into model batches, and that
 * joins consecutive logical batches into the steps the model runs. */
#ifndef QSENS_ENGINE_BATCHES_H
#define QSENS_ENGINE_BATCHES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

struct qs_token_seq;
struct qs_batch_opts;

typedef struct eng_batch {
  size_t logical;      /* the logical batch it is (one packed batch per logical batch) */
  int n_seqs;
  int32_t *cu_seqlens; /* [n_seqs + 1] */
  int32_t *ids;        /* [tokens] */
  int32_t *labels;     /* [tokens] unshifted labels as model/qwen3.h reads them */
  int32_t *positions;  /* [tokens] padded: HF's positions; NULL when packed */
  uint8_t *attention_mask; /* [tokens] padded: 1 real, 0 pad; NULL when packed */
  long tokens;
} eng_batch;

typedef struct eng_batches {
  eng_batch *items; /* in logical order */
  size_t count;
  size_t batch_size, score_size, calib_limit; /* calib_limit: 0 = every logical batch */
  size_t max_length;
  int32_t pad_id;        /* the pad token of the padded reference flow */
  bool padded;           /* dataset.padding=max_length: pads are rows of the batches */
  size_t *sample_tokens; /* [n_seqs] tokens of every sample after truncation */
} eng_batches;

/* Logical batches a dataset size of n_samples calibrates on and scores. */
typedef struct eng_size_steps {
  size_t n_calib, n_score;
} eng_size_steps;

/* Lays out the first n samples, one batch per logical batch (items[i] is
 * logical batch i). A packed batch that is not exactly one logical batch
 * fails with status 2. */
bool eng_batches_build(const struct qs_token_seq *seqs, size_t n, const struct qs_batch_opts *opts,
                       eng_batches *out, qs_error *err);
void eng_batches_free(eng_batches *b);

eng_size_steps eng_size_steps_for(const eng_batches *b, size_t n_samples);

/* One model run: logical batches [first, first + count) back to back, each
 * its own loss group, so the loss stays normalized per logical batch. */
typedef struct eng_step {
  size_t first, count;
  int n_seqs;
  long tokens;
  int32_t *cu_seqlens, *ids, *labels;
  int32_t *positions;      /* NULL when packed */
  uint8_t *attention_mask; /* NULL when packed */
  int32_t *group_seq;      /* [count + 1] first sequence of every group, then n_seqs */
  long *group_rows;        /* [count + 1] first token row of every group, then tokens */
} eng_step;

/* End (exclusive) of the step that starts at logical batch first: the
 * following batches join while the step's tokens stay within step_tokens
 * (<= 0: one batch per step; a batch larger than step_tokens runs alone),
 * never reaching past limit nor across a cut (a logical batch index at
 * which a step must start), nor out of first's block [2^k, 2^(k+1)).
 * The blocks make the steps of a prefix the same whatever else the pass
 * holds: a size whose batch counts are powers of two (16, 128 and 512
 * samples of 8; 16 score batches) is grouped alike alone and fused, so its
 * results stay bit for bit those of its lone run. */
size_t eng_step_end(const eng_batches *b, size_t first, size_t limit, const size_t *cuts, size_t ncuts,
                    long step_tokens);

/* Joins logical batches [first, end) into *s (freed with eng_step_free). */
void eng_step_build(const eng_batches *b, size_t first, size_t end, eng_step *s);
void eng_step_free(eng_step *s);

#endif
