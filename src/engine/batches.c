#include "engine/batches.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "text/batch.h"

/* The model's labels are unshifted: labels[t + 1] is what token t predicts,
 * within a sequence; the plan's targets[t] is that same class. */
static void labels_from_targets(const qs_batch *src, int32_t *labels) {
  for (size_t s = 0; s < src->n_seqs; s++) {
    size_t begin = (size_t)src->cu_seqlens[s], end = (size_t)src->cu_seqlens[s + 1];
    if (begin < end) labels[begin] = QS_IGNORE_INDEX;
    for (size_t t = begin; t + 1 < end; t++) labels[t + 1] = src->targets[t];
  }
}

static bool check_one_logical(const qs_batch *src, size_t index, size_t batch_size, qs_error *err) {
  size_t last = (src->first_seq + src->n_seqs - 1) / batch_size;
  /* Starts a logical batch, ends in it, and carries all its targets (a
   * logical batch split over several packed batches would have fewer). */
  bool whole = src->first_seq % batch_size == 0 && last == src->first_logical && src->n_targets == src->loss_count[0];
  if (whole) return true;
  return qs_fail(err, QS_EXIT_USAGE,
                 "packed batch %zu (samples %zu..%zu) is not exactly one logical batch of %zu samples: the loss "
                 "is normalized per logical batch, so a packed batch must hold exactly one (a dataset.token_budget "
                 "that fits batch_size samples, at most batch_size sequences per packed batch)",
                 index, src->first_seq, src->first_seq + src->n_seqs - 1, batch_size);
}

static void copy_batch(const qs_batch *src, eng_batch *dst) {
  dst->logical = src->first_logical;
  dst->n_seqs = (int)src->n_seqs;
  dst->tokens = (long)src->n_tokens;
  dst->cu_seqlens = qs_malloc((src->n_seqs + 1) * sizeof(int32_t));
  memcpy(dst->cu_seqlens, src->cu_seqlens, (src->n_seqs + 1) * sizeof(int32_t));
  size_t bytes = (src->n_tokens ? src->n_tokens : 1) * sizeof(int32_t);
  dst->ids = qs_malloc(bytes);
  memcpy(dst->ids, src->input_ids, src->n_tokens * sizeof(int32_t));
  dst->labels = qs_malloc(bytes);
  labels_from_targets(src, dst->labels);
}

bool eng_batches_build(const struct qs_token_seq *seqs, size_t n, const struct qs_batch_opts *opts,
                       eng_batches *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  if (opts->padding != QS_PADDING_PACKED)
    return qs_fail(err, QS_EXIT_USAGE,
                   "dataset.padding=max_length is not supported by the scoring engine: the model runs packed "
                   "batches only (use dataset.padding=packed)");
  qs_batch_plan plan;
  if (!qs_batch_plan_build(seqs, n, opts, &plan, err)) return false;
  out->batch_size = opts->batch_size;
  out->score_size = opts->score_size;
  out->calib_limit = opts->calib_batches;
  out->max_length = opts->max_length;
  out->pad_id = opts->pad_id;
  out->items = qs_calloc(plan.count ? plan.count : 1, sizeof *out->items);
  bool ok = true;
  for (size_t i = 0; ok && i < plan.count; i++) {
    ok = check_one_logical(&plan.batches[i], i, opts->batch_size, err);
    if (ok) copy_batch(&plan.batches[i], &out->items[out->count++]);
  }
  out->sample_tokens = qs_malloc((n ? n : 1) * sizeof(size_t));
  for (size_t i = 0; i < n; i++)
    out->sample_tokens[i] = opts->max_length && seqs[i].len > opts->max_length ? opts->max_length : seqs[i].len;
  qs_batch_plan_free(&plan);
  if (!ok) eng_batches_free(out);
  return ok;
}

void eng_batches_free(eng_batches *b) {
  for (size_t i = 0; i < b->count; i++) {
    free(b->items[i].cu_seqlens);
    free(b->items[i].ids);
    free(b->items[i].labels);
  }
  free(b->items);
  free(b->sample_tokens);
  memset(b, 0, sizeof *b);
}

eng_size_steps eng_size_steps_for(const eng_batches *b, size_t n_samples) {
  size_t n_logical = (n_samples + b->batch_size - 1) / b->batch_size;
  eng_size_steps s;
  s.n_calib = b->calib_limit && b->calib_limit < n_logical ? b->calib_limit : n_logical;
  s.n_score = qs_score_batch_count(b->score_size, b->batch_size, n_logical);
  return s;
}
