/* The pass's packed batches in a form the run code can hand to the model
 * (internal to the engine), built from text/batch.h's plan in batches.c:
 * the one place that turns caption batches into model batches. */
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
  long tokens;
} eng_batch;

typedef struct eng_batches {
  eng_batch *items; /* in logical order */
  size_t count;
  size_t batch_size, score_size, calib_limit; /* calib_limit: 0 = every logical batch */
  size_t max_length;
  int32_t pad_id;        /* the pad token of the padded reference flow */
  size_t *sample_tokens; /* [n_seqs] tokens of every sample after truncation */
} eng_batches;

/* Logical batches a dataset size of n_samples calibrates on and scores. */
typedef struct eng_size_steps {
  size_t n_calib, n_score;
} eng_size_steps;

/* Packs the first n samples. Padded layouts and packed batches that are not
 * exactly one logical batch fail with status 2. */
bool eng_batches_build(const struct qs_token_seq *seqs, size_t n, const struct qs_batch_opts *opts,
                       eng_batches *out, qs_error *err);
void eng_batches_free(eng_batches *b);

eng_size_steps eng_size_steps_for(const eng_batches *b, size_t n_samples);

#endif
