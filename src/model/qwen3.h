/* The Qwen3(-VL) language model on a backend: forward over a packed batch,
 * the next-token loss, and the backward for activation gradients only
 * (G = dL/dY of every Linear; no weight gradients).
 * Spec: shared specs/qwen3-vl-lm.md §3 (forward), §5 (loss), §6 (packed
 * batches), §7 (backward), §8 (memory).
 *
 * Precision is the backend's: on the CPU backend, bf16 weights with fp32
 * activations and math (the spec's reference-precision mode).
 *
 * Memory: by default the forward keeps only each decoder layer's input and
 * the backward recomputes one layer at a time (which also provides every
 * Linear input X again); keep_activations keeps every layer's activations
 * instead (no recompute, ~10x the activation memory). */
#ifndef QSENS_MODEL_QWEN3_H
#define QSENS_MODEL_QWEN3_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "core/error.h"
#include "model/lm.h"

/* Label value of a token that is not a target (as in HF). */
#define QS_IGNORE_LABEL (-100)

/* A packed batch: B sequences concatenated into T tokens (host memory).
 * A padded batch is the same with every sequence a left-padded row and
 * attention_mask set (spec §6: HF's padded layout, positions as HF makes
 * them from the mask). */
typedef struct qs_qwen3_batch {
  long index;                /* batch number, used in messages */
  int n_seqs;                /* B */
  const int32_t *cu_seqlens; /* [B+1]: 0 = cu[0] <= cu[1] <= ... <= cu[B] = T */
  const int32_t *ids;        /* [T] token ids */
  /* [T] HF-style labels (unshifted): token t of a sequence is the target of
   * token t-1 of the same sequence unless labels[t] == QS_IGNORE_LABEL; the
   * first token of a sequence is never a target. NULL: every next token
   * that is real (all of them without attention_mask). */
  const int32_t *labels;
  /* [T] RoPE positions; NULL: 0..n-1 within every sequence. */
  const int32_t *positions;
  /* [T] 1 real, 0 pad; NULL: all real. Only left padding: within a sequence
   * every pad comes before every real token (anything else fails naming the
   * sequence and batch). Pads are never attended as keys; a pad query
   * attends to nothing (its attention output is 0). */
  const uint8_t *attention_mask;
  /* Loss groups: several logical batches in one step. L = Σ_g L_g with L_g
   * the mean loss over group g's valid targets, so every G of a group equals
   * that of running the group alone. group_seq [n_groups+1]: group g is
   * sequences [group_seq[g], group_seq[g+1]) (0 = first <= ... <= last = B).
   * NULL: one group of all B sequences (n_groups is then ignored). */
  int n_groups;
  const int32_t *group_seq;
} qs_qwen3_batch;

static inline long qs_batch_tokens(const qs_qwen3_batch *b) { return b->n_seqs > 0 ? b->cu_seqlens[b->n_seqs] : 0; }

typedef struct qs_qwen3_options {
  bool keep_activations; /* false: recompute each layer in the backward */
  long lm_chunk_tokens;  /* rows of logits alive at once; <= 0: QS_QWEN3_DEFAULT_LM_CHUNK */
} qs_qwen3_options;

/* Rows of logits alive at once when qs_qwen3_options.lm_chunk_tokens is not set. */
#define QS_QWEN3_DEFAULT_LM_CHUNK 4096

/* Where a visited Linear sits. For the lm_head, X and Y/G are visited per
 * chunk of tokens starting at batch row row_begin (chunks never straddle two
 * loss groups); for every other Linear row_begin is 0 and the tensors cover
 * the whole batch. */
typedef struct qs_linear_site {
  int layer; /* -1 for the lm_head */
  qs_linear_kind kind;
  long batch;
  long row_begin;
} qs_linear_site;

/* Callbacks over Linears; any may be NULL. Returning false stops the run
 * with that error.
 *   forward: after each Linear of the forward pass with its input X [rows,
 *     in] and output Y [rows, out], in module order (q, k, v, o, gate, up,
 *     down per layer, then lm_head). Y may be modified in place (the forward
 *     continues with it) only in a forward-only run: a backward would
 *     recompute the unmodified layer.
 *   backward: for each Linear with X and G = dL/dY [rows, out], top to
 *     bottom: lm_head (per chunk), then per layer from the last: down, gate,
 *     up, o, q, k, v.
 * The lm_head is visited only when include_lm_head is set. Tensors are
 * backend memory valid during the call only. */
typedef struct qs_qwen3_visitor {
  bool (*forward)(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y, qs_error *err);
  bool (*backward)(void *ctx, const qs_linear_site *site, const qs_tensor *x, const qs_tensor *g, qs_error *err);
  bool include_lm_head;
  void *ctx;
} qs_qwen3_visitor;

typedef struct qs_qwen3_result {
  double loss_sum; /* Σ over all valid targets of the batch of -log p(target) */
  long n_valid;    /* N, valid targets in the whole batch (all groups) */
  /* Mean of the group losses L_g (groups without a valid target count as 0);
   * with one group: loss_sum / N, 0 when N == 0. */
  double loss;
  int n_groups; /* groups of the run (1 without group_seq) */
  /* [n_groups] mean loss of each group (0 when it has no valid target);
   * model memory valid until the next run. */
  const double *group_loss;
} qs_qwen3_result;

typedef struct qs_qwen3 qs_qwen3;

/* Imports lm's weights into the backend (no copy on the CPU). lm must stay
 * alive and unchanged while the model lives. */
bool qs_qwen3_create(qs_backend *be, const qs_lm *lm, const qs_qwen3_options *opts, qs_qwen3 **out,
                     qs_error *err);
void qs_qwen3_destroy(qs_qwen3 *m);

/* Forward and loss; with backward, also the activation-gradient backward
 * (skipped when the batch has no valid target: the loss is then 0 and no
 * backward callback runs). A non-finite loss or gradient fails naming the
 * Linear or layer and the batch. */
bool qs_qwen3_run(qs_qwen3 *m, const qs_qwen3_batch *batch, bool backward, const qs_qwen3_visitor *visitor,
                  qs_qwen3_result *result, qs_error *err);

/* "layers.3.self_attn.q_proj", "layers.0.mlp.down_proj", "lm_head" into buf. */
void qs_qwen3_linear_path(int layer, qs_linear_kind kind, char *buf, size_t size);

/* The backend weight [out, in] the model runs a Linear with (layer -1 or
 * kind QS_LIN_LM_HEAD: the head, which is the embedding table when tied), so
 * callers need no copy of their own; valid while the model lives. NULL for a
 * layer out of range. */
const qs_tensor *qs_qwen3_linear_weight(const qs_qwen3 *m, int layer, qs_linear_kind kind);

#endif
