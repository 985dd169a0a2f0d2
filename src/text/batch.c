/* Packed and padded batch layouts (see batch.h). */
#include "text/batch.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

bool qs_token_seqs_from_samples(const qs_sample_list *list, qs_token_seq **out, qs_error *err) {
  *out = NULL;
  for (size_t i = 0; i < list->count; i++)
    if (!list->items[i].ids) return qs_fail(err, QS_EXIT_RUNTIME, "sample %zu is not tokenized", i);
  *out = qs_malloc((list->count ? list->count : 1) * sizeof **out);
  for (size_t i = 0; i < list->count; i++) (*out)[i] = (qs_token_seq){list->items[i].ids, list->items[i].n_ids};
  return true;
}

qs_batch_opts qs_batch_opts_default(void) {
  return (qs_batch_opts){
      .padding = QS_PADDING_PACKED,
      .batch_size = 8,
      .max_length = 512,
      .max_tokens = 0,
      .max_seqs = 0,
      .pad_id = QS_PAD_TOKEN_ID,
      .pad_context_target = true,
      .score_size = 128,
      .calib_batches = 0,
  };
}

size_t qs_score_batch_count(size_t score_size, size_t batch_size, size_t n_logical) {
  size_t steps = batch_size ? score_size / batch_size : 0;
  if (steps < 1) steps = 1;
  return steps < n_logical ? steps : n_logical;
}

/* Tokens of a sequence after truncation to max_length (its start is kept). */
static size_t kept_len(const qs_token_seq *s, const qs_batch_opts *o) {
  return o->max_length && s->len > o->max_length ? o->max_length : s->len;
}

/* Valid targets a sequence contributes: one per token but the last, plus,
 * in a padded row with at least one pad, the first real token predicted from
 * the last pad. */
static size_t seq_targets(size_t len, const qs_batch_opts *o) {
  bool pad_context = o->padding == QS_PADDING_MAX_LENGTH && len < o->max_length && o->pad_context_target;
  return len - 1 + (pad_context ? 1 : 0);
}

static bool validate(const qs_token_seq *seqs, size_t n, const qs_batch_opts *o, qs_error *err) {
  if (o->batch_size == 0) return qs_fail(err, QS_EXIT_USAGE, "batch size must be at least 1");
  if (o->padding == QS_PADDING_MAX_LENGTH && o->max_length == 0)
    return qs_fail(err, QS_EXIT_USAGE, "padding=max_length needs a max_length of at least 1");
  for (size_t i = 0; i < n; i++) {
    if (seqs[i].len == 0) return qs_fail(err, QS_EXIT_RUNTIME, "sequence %zu is empty (no tokens)", i);
    if (o->padding == QS_PADDING_PACKED && o->max_tokens && kept_len(&seqs[i], o) > o->max_tokens)
      return qs_fail(err, QS_EXIT_USAGE, "sequence %zu has %zu tokens, more than the per-batch token budget (%zu)", i,
                     kept_len(&seqs[i], o), o->max_tokens);
  }
  return true;
}

/* Where the batch starting at `start` ends (exclusive): at the end of its
 * role segment, after max_seqs sequences, before the token budget overflows;
 * padded batches are exactly the logical batches. */
static size_t batch_end(const qs_token_seq *seqs, size_t start, size_t segment_end, const qs_batch_opts *o) {
  if (o->padding == QS_PADDING_MAX_LENGTH) {
    size_t end = (start / o->batch_size + 1) * o->batch_size;
    return end < segment_end ? end : segment_end;
  }
  size_t max_seqs = o->max_seqs ? o->max_seqs : o->batch_size, tokens = 0, end = start;
  while (end < segment_end && end - start < max_seqs) {
    size_t len = kept_len(&seqs[end], o);
    if (o->max_tokens && tokens + len > o->max_tokens) break;
    tokens += len;
    end++;
  }
  return end;
}

static void alloc_batch(qs_batch *b, size_t n_seqs, size_t n_tokens, bool padded) {
  b->n_seqs = n_seqs;
  b->n_tokens = n_tokens;
  b->cu_seqlens = qs_malloc((n_seqs + 1) * sizeof *b->cu_seqlens);
  b->input_ids = qs_malloc((n_tokens ? n_tokens : 1) * sizeof *b->input_ids);
  b->positions = qs_malloc((n_tokens ? n_tokens : 1) * sizeof *b->positions);
  b->targets = qs_malloc((n_tokens ? n_tokens : 1) * sizeof *b->targets);
  b->attention_mask = padded ? qs_malloc(n_tokens ? n_tokens : 1) : NULL;
  b->loss_count = qs_malloc(n_seqs * sizeof *b->loss_count);
}

static void fill_packed(qs_batch *b, const qs_token_seq *seqs, const qs_batch_opts *o) {
  size_t t = 0;
  for (size_t s = 0; s < b->n_seqs; s++) {
    const qs_token_seq *seq = &seqs[b->first_seq + s];
    size_t len = kept_len(seq, o);
    b->cu_seqlens[s] = (int32_t)t;
    for (size_t i = 0; i < len; i++, t++) {
      b->input_ids[t] = seq->ids[i];
      b->positions[t] = (int32_t)i;
      b->targets[t] = i + 1 < len ? seq->ids[i + 1] : QS_IGNORE_INDEX;
    }
    b->n_targets += len - 1;
  }
  b->cu_seqlens[b->n_seqs] = (int32_t)t;
}

/* One left-padded row of HF's padding="max_length" batch. */
static void fill_padded_row(qs_batch *b, size_t row, const qs_token_seq *seq, const qs_batch_opts *o) {
  size_t S = o->max_length, len = kept_len(seq, o), pads = S - len, base = row * S;
  b->cu_seqlens[row] = (int32_t)base;
  for (size_t c = 0; c < S; c++) {
    bool real = c >= pads;
    b->input_ids[base + c] = real ? seq->ids[c - pads] : o->pad_id;
    b->attention_mask[base + c] = real;
    b->positions[base + c] = real ? (int32_t)(c - pads) : 1; /* cumsum(mask) - 1, pads filled with 1 */
    b->targets[base + c] = c + 1 < S && c + 1 >= pads ? seq->ids[c + 1 - pads] : QS_IGNORE_INDEX;
  }
  if (pads && !o->pad_context_target) b->targets[base + pads - 1] = QS_IGNORE_INDEX;
  b->n_targets += seq_targets(len, o);
}

static void fill_padded(qs_batch *b, const qs_token_seq *seqs, const qs_batch_opts *o) {
  b->row_len = o->max_length;
  for (size_t r = 0; r < b->n_seqs; r++) fill_padded_row(b, r, &seqs[b->first_seq + r], o);
  b->cu_seqlens[b->n_seqs] = (int32_t)b->n_tokens;
}

/* Valid-target count of every logical batch: the denominator of its loss. */
static uint32_t *logical_target_counts(const qs_token_seq *seqs, size_t n, size_t n_logical, const qs_batch_opts *o) {
  uint32_t *counts = qs_calloc(n_logical ? n_logical : 1, sizeof *counts);
  for (size_t i = 0; i < n; i++) counts[i / o->batch_size] += (uint32_t)seq_targets(kept_len(&seqs[i], o), o);
  return counts;
}

static bool add_batch(qs_batch_plan *plan, size_t *cap, const qs_token_seq *seqs, size_t start, size_t end,
                      const uint32_t *logical_counts, const qs_batch_opts *o, qs_error *err) {
  bool padded = o->padding == QS_PADDING_MAX_LENGTH;
  size_t n_tokens = 0;
  for (size_t i = start; i < end; i++) n_tokens += padded ? o->max_length : kept_len(&seqs[i], o);
  if (n_tokens > INT32_MAX)
    return qs_fail(err, QS_EXIT_USAGE,
                   "a batch of sequences %zu..%zu holds %zu tokens, over 2^31-1; lower the batch size", start, end - 1,
                   n_tokens);
  qs_grow((void **)&plan->batches, cap, plan->count + 1, sizeof *plan->batches);
  qs_batch *b = &plan->batches[plan->count++];
  memset(b, 0, sizeof *b);
  alloc_batch(b, end - start, n_tokens, padded);
  b->first_seq = start;
  b->first_logical = start / o->batch_size;
  b->calib = b->first_logical < plan->n_calib;
  b->score = b->first_logical < plan->n_score;
  for (size_t s = 0; s < b->n_seqs; s++) b->loss_count[s] = logical_counts[(start + s) / o->batch_size];
  if (padded)
    fill_padded(b, seqs, o);
  else
    fill_packed(b, seqs, o);
  return true;
}

bool qs_batch_plan_build(const qs_token_seq *seqs, size_t n, const qs_batch_opts *o, qs_batch_plan *plan,
                         qs_error *err) {
  memset(plan, 0, sizeof *plan);
  if (!validate(seqs, n, o, err)) return false;
  plan->n_logical = (n + o->batch_size - 1) / o->batch_size;
  plan->n_score = qs_score_batch_count(o->score_size, o->batch_size, plan->n_logical);
  plan->n_calib = o->calib_batches && o->calib_batches < plan->n_logical ? o->calib_batches : plan->n_logical;
  /* Role segments in sequence indices: [0, first) is in both sets (or the
   * one that reaches further), [first, last) in one only. */
  size_t lo = plan->n_score < plan->n_calib ? plan->n_score : plan->n_calib;
  size_t hi = plan->n_score < plan->n_calib ? plan->n_calib : plan->n_score;
  size_t first = lo * o->batch_size < n ? lo * o->batch_size : n;
  size_t last = hi * o->batch_size < n ? hi * o->batch_size : n;
  uint32_t *logical_counts = logical_target_counts(seqs, n, plan->n_logical, o);
  size_t cap = 0;
  bool ok = true;
  for (size_t start = 0; ok && start < last;) {
    size_t end = batch_end(seqs, start, start < first ? first : last, o);
    ok = add_batch(plan, &cap, seqs, start, end, logical_counts, o, err);
    start = end;
  }
  free(logical_counts);
  if (!ok) qs_batch_plan_free(plan);
  return ok;
}

void qs_batch_plan_free(qs_batch_plan *plan) {
  if (!plan) return;
  for (size_t i = 0; i < plan->count; i++) {
    qs_batch *b = &plan->batches[i];
    free(b->cu_seqlens);
    free(b->input_ids);
    free(b->positions);
    free(b->targets);
    free(b->attention_mask);
    free(b->loss_count);
  }
  free(plan->batches);
  memset(plan, 0, sizeof *plan);
}
