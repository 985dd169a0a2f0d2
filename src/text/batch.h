/* Calibration/score batches built from tokenized samples.
 *
 * Two layouts:
 *  - packed (default): whole sequences back to back, no padding. cu_seqlens
 *    gives each sequence's offset, positions restart at 0 in every sequence,
 *    attention is causal within a sequence (the engine's job) and each
 *    position except a sequence's last has the next token as its target.
 *  - padded (`padding=max_length`, parity with the existing HF flow): every
 *    row is left-padded with pad_id to max_length (longer sequences are
 *    truncated, keeping their start), attention_mask marks real tokens,
 *    positions = cumsum(mask) - 1 with pad slots 1, and a position's target
 *    is the next token when that token is real. The last pad of a row thus
 *    predicts the row's first real token, a target HF counts; it is kept by
 *    default (pad_context_target) to reproduce the existing flow's loss.
 *    Targets are masked by attention_mask, not by pad id (the two differ only
 *    when a caption itself contains <|endoftext|>).
 *
 * Logical batches: consecutive groups of batch_size sequences (the existing
 * flow's DataLoader batches of 8, last one possibly short). The loss of each
 * logical batch is its mean over its own valid targets, so every sequence
 * carries the target count N of its logical batch (loss_count): weighting
 * each target by 1/loss_count gives the same gradients however sequences are
 * packed. The first qs_score_batch_count() logical batches are score batches;
 * calibration uses all of them unless calib_batches limits it. A packed batch
 * never mixes score and non-score sequences, nor calibration and
 * non-calibration ones; sequences in neither set are left out. */
#ifndef QSENS_TEXT_BATCH_H
#define QSENS_TEXT_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "text/captions.h"

#define QS_IGNORE_INDEX (-100)
#define QS_PAD_TOKEN_ID 151643 /* <|endoftext|> in the Qwen2/Qwen3 vocabulary */

typedef enum qs_padding {
  QS_PADDING_PACKED,     /* dataset.padding=none: no pad slots at all */
  QS_PADDING_MAX_LENGTH, /* dataset.padding=max_length: HF left-padded rows */
} qs_padding;

/* A view of one tokenized sample. */
typedef struct qs_token_seq {
  const int32_t *ids;
  size_t len; /* >= 1 */
} qs_token_seq;

typedef struct qs_batch_opts {
  qs_padding padding;
  size_t batch_size;       /* sequences per logical batch (existing flow: 8) */
  size_t max_length;       /* truncation length, and the padded row length; 0 = no truncation (packed only) */
  size_t max_tokens;       /* packed: token budget per batch; 0 = none */
  size_t max_seqs;         /* packed: sequences per batch; 0 = batch_size */
  int32_t pad_id;          /* padded: the pad token */
  bool pad_context_target; /* padded: the last pad predicts the first real token (existing flow) */
  size_t score_size;       /* score batches: min(max(score_size / batch_size, 1), logical batches) */
  size_t calib_batches;    /* logical batches used to calibrate; 0 = all */
} qs_batch_opts;

typedef struct qs_batch {
  size_t n_seqs;           /* B */
  size_t n_tokens;         /* T: sum of lengths (packed) or B * row_len (padded) */
  size_t row_len;          /* padded: max_length; packed: 0 */
  size_t first_seq;        /* index of the first sequence in the input list */
  size_t first_logical;    /* logical batch of the first sequence */
  int32_t *cu_seqlens;     /* [B+1]: slot offset of every sequence (padded: r * row_len), then T */
  int32_t *input_ids;      /* [T] */
  int32_t *positions;      /* [T] */
  int32_t *targets;        /* [T]: token id position t predicts (shifted labels) or QS_IGNORE_INDEX */
  uint8_t *attention_mask; /* [T] padded: 1 real, 0 pad; NULL when packed */
  uint32_t *loss_count;    /* [B]: valid targets of the sequence's logical batch (0: no loss) */
  size_t n_targets;        /* valid targets in this batch */
  bool calib;              /* belongs to the calibration set */
  bool score;              /* belongs to the score set */
} qs_batch;

typedef struct qs_batch_plan {
  qs_batch *batches;
  size_t count;
  size_t n_logical; /* logical batches over all input sequences */
  size_t n_calib;   /* the first n_calib logical batches calibrate */
  size_t n_score;   /* the first n_score logical batches are scored */
} qs_batch_plan;

/* Views of every sample's ids (text samples must be tokenized first); the
 * caller frees *out, the ids stay owned by the list. */
bool qs_token_seqs_from_samples(const qs_sample_list *list, qs_token_seq **out, qs_error *err);

/* Existing-flow settings: packed, batch 8, max_length 512, no token budget,
 * pad 151643 with the pad-context target, score_size 128, all batches calibrate. */
qs_batch_opts qs_batch_opts_default(void);

/* min(max(score_size / batch_size, 1), n_logical) (ModelOpt's score steps). */
size_t qs_score_batch_count(size_t score_size, size_t batch_size, size_t n_logical);

/* Lays out the sequences; a packed sequence over the token budget or an
 * empty one is an error naming it. */
bool qs_batch_plan_build(const qs_token_seq *seqs, size_t n, const qs_batch_opts *opts, qs_batch_plan *plan,
                         qs_error *err);

void qs_batch_plan_free(qs_batch_plan *plan);

#endif
