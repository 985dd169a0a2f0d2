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

static int32_t *copy_i32(const int32_t *src, size_t n) {
  int32_t *dst = qs_malloc((n ? n : 1) * sizeof *dst);
  memcpy(dst, src, n * sizeof *dst);
  return dst;
}

static void copy_batch(const qs_batch *src, eng_batch *dst) {
  dst->logical = src->first_logical;
  dst->n_seqs = (int)src->n_seqs;
  dst->tokens = (long)src->n_tokens;
  dst->cu_seqlens = copy_i32(src->cu_seqlens, src->n_seqs + 1);
  dst->ids = copy_i32(src->input_ids, src->n_tokens);
  dst->labels = qs_malloc((src->n_tokens ? src->n_tokens : 1) * sizeof(int32_t));
  labels_from_targets(src, dst->labels);
  if (!src->attention_mask) return;
  dst->positions = copy_i32(src->positions, src->n_tokens);
  dst->attention_mask = qs_malloc(src->n_tokens ? src->n_tokens : 1);
  memcpy(dst->attention_mask, src->attention_mask, src->n_tokens);
}

bool eng_batches_build(const struct qs_token_seq *seqs, size_t n, const struct qs_batch_opts *opts,
                       eng_batches *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  qs_batch_plan plan;
  if (!qs_batch_plan_build(seqs, n, opts, &plan, err)) return false;
  out->batch_size = opts->batch_size;
  out->score_size = opts->score_size;
  out->calib_limit = opts->calib_batches;
  out->max_length = opts->max_length;
  out->pad_id = opts->pad_id;
  out->padded = opts->padding == QS_PADDING_MAX_LENGTH;
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
    free(b->items[i].positions);
    free(b->items[i].attention_mask);
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

static bool is_cut(size_t logical, const size_t *cuts, size_t ncuts) {
  for (size_t i = 0; i < ncuts; i++)
    if (cuts[i] == logical) return true;
  return false;
}

/* The smallest power of two above first: steps stay within [2^k, 2^(k+1)). */
static size_t aligned_end(size_t first) {
  size_t end = 1;
  while (end <= first) end *= 2;
  return end;
}

size_t eng_step_end(const eng_batches *b, size_t first, size_t limit, const size_t *cuts, size_t ncuts,
                    long step_tokens) {
  size_t end = first + 1, block_end = aligned_end(first);
  long tokens = b->items[first].tokens;
  while (end < limit && end < block_end && !is_cut(end, cuts, ncuts) && tokens + b->items[end].tokens <= step_tokens)
    tokens += b->items[end++].tokens;
  return end;
}

/* Appends n values of src at dst + at, or nothing when src is NULL. */
static void append_i32(int32_t *dst, size_t at, const int32_t *src, size_t n) {
  if (src) memcpy(dst + at, src, n * sizeof *dst);
}

void eng_step_build(const eng_batches *b, size_t first, size_t end, eng_step *s) {
  memset(s, 0, sizeof *s);
  s->first = first;
  s->count = end - first;
  for (size_t i = first; i < end; i++) {
    s->n_seqs += b->items[i].n_seqs;
    s->tokens += b->items[i].tokens;
  }
  size_t t_all = s->tokens ? (size_t)s->tokens : 1;
  s->cu_seqlens = qs_malloc(((size_t)s->n_seqs + 1) * sizeof(int32_t));
  s->ids = qs_malloc(t_all * sizeof(int32_t));
  s->labels = qs_malloc(t_all * sizeof(int32_t));
  s->positions = b->padded ? qs_malloc(t_all * sizeof(int32_t)) : NULL;
  s->attention_mask = b->padded ? qs_malloc(t_all) : NULL;
  s->group_seq = qs_malloc((s->count + 1) * sizeof(int32_t));
  s->group_rows = qs_malloc((s->count + 1) * sizeof(long));
  size_t seq = 0, row = 0;
  for (size_t g = 0; g < s->count; g++) {
    const eng_batch *src = &b->items[first + g];
    s->group_seq[g] = (int32_t)seq;
    s->group_rows[g] = (long)row;
    for (int k = 0; k < src->n_seqs; k++) s->cu_seqlens[seq + (size_t)k] = (int32_t)row + src->cu_seqlens[k];
    size_t n = (size_t)src->tokens;
    append_i32(s->ids, row, src->ids, n);
    append_i32(s->labels, row, src->labels, n);
    if (b->padded) {
      append_i32(s->positions, row, src->positions, n);
      memcpy(s->attention_mask + row, src->attention_mask, n);
    }
    seq += (size_t)src->n_seqs;
    row += n;
  }
  s->cu_seqlens[seq] = (int32_t)row;
  s->group_seq[s->count] = (int32_t)seq;
  s->group_rows[s->count] = (long)row;
}

void eng_step_free(eng_step *s) {
  free(s->cu_seqlens);
  free(s->ids);
  free(s->labels);
  free(s->positions);
  free(s->attention_mask);
  free(s->group_seq);
  free(s->group_rows);
  memset(s, 0, sizeof *s);
}
