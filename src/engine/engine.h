/* The sensitivity engine: one pass = calibration and gradient scoring of
 * several cells ((W,A) pair × dataset size) that share a model and a dataset
 * (spec quant-and-scoring.md §3, §4; DESIGN.md §3).
 *
 * A pass runs
 *   1. calibration: the unquantized model forward-only over the calibration
 *      batches of its largest size, recording every searched Linear's input
 *      amax; each size gets the snapshot taken after its own (prefix) batches;
 *   2. scoring: forward and activation-gradient backward over the score
 *      batches; for every searched Linear, while its X and G = dL/dY are at
 *      hand, Y = X·Wᵀ is formed once and every cell whose size includes the
 *      batch adds Σ clamp(G·Δ, ±1e10)² with Δ = FQ_a(X)·FQ_w(W)ᵀ − Y: W is
 *      the model's own weight, quantized into one scratch per weight
 *      quantizer, X quantized with its size's static amax or dynamically.
 *      Cells that quantize a Linear's W and X identically (weight-only and
 *      dynamic pairs at every size; static pairs whose sizes end calibration
 *      with the same amax) share one score computation per visit. Scores
 *      are summed on the backend and downloaded once per step.
 * A cell's result equals running the pass with that cell alone, bit for bit:
 * the unquantized X and G do not depend on the cells, and every reduction
 * has a fixed order.
 *
 * Steps: the model normalizes the loss per logical batch (batch_size
 * samples, the existing flow's), so each logical batch is one loss group;
 * step_tokens lets consecutive logical batches share one model run (a step)
 * while its tokens stay within the budget. Steps never straddle the end of
 * a size's calibration or score batches, and dynamic amax are taken per
 * logical batch, so grouping changes results only by fp32 rounding (GEMM
 * shapes). Steps also stay within blocks [2^k, 2^(k+1)) of logical
 * batches, so that the bit-for-bit equality above holds with step_tokens
 * too whenever the pass's other sizes end their calibration and scoring at
 * powers of two (the standard 16/128/512 samples of 8, 16 score batches):
 * the cell is then stepped exactly as when alone.
 *
 * Pads: the padded reference flow runs left-padded rows whose pad positions
 * attend to nothing (the model's convention: a fully masked attention row
 * outputs 0), so every pad position holds the same hidden state, whatever
 * its position. With packed batches and calib_pad_policy=include the engine
 * computes that one pad row (the batch options' pad_id alone, with the
 * attention output zeroed) and lets its Linear inputs enter every static
 * amax and every dynamic amax, as the pads of every padded batch would.
 * With dataset.padding=max_length the pads are rows of the batches (their
 * G is 0 except at the pad-context target), so they enter every amax and
 * score as in the reference flow; calib_pad_policy=exclude is then refused.
 *
 * A packed batch must be one logical batch of batch_size samples (the loss
 * normalization above); padded batches always are. */
#ifndef QSENS_ENGINE_ENGINE_H
#define QSENS_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "backend/backend.h"
#include "core/error.h"
#include "model/lm.h"
#include "report/results.h"

/* text/batch.h types, by tag only: callers of the engine need not include
 * the text module's headers. */
struct qs_token_seq;
struct qs_batch_opts;

typedef enum qs_name_style {
  QS_NAMES_HF,   /* model.language_model.layers.N.*, lm_head */
  QS_NAMES_SEED, /* language_model.layers.N.* */
} qs_name_style;

typedef enum qs_act_amax_mode {
  QS_ACT_AMAX_PAIR_DEFAULT, /* dynamic for W4A8_MXFP4_FP8_CFG, static otherwise */
  QS_ACT_AMAX_STATIC,
  QS_ACT_AMAX_DYNAMIC,
} qs_act_amax_mode;

/* dataset.calib_pad_policy: whether activation amax sees the pad positions
 * the padded reference flow runs through every Linear (§7.2). */
typedef enum qs_calib_pad_policy {
  QS_CALIB_PADS_INCLUDE, /* as the padded flow: static and dynamic amax include a pad row */
  QS_CALIB_PADS_EXCLUDE, /* real tokens only */
} qs_calib_pad_policy;

typedef struct qs_engine_options {
  qs_delta_mode precision;      /* autoquant.delta_precision */
  qs_calib_pad_policy calib_pad_policy;
  qs_mx_rule mx_rule;           /* mx_scale_rule */
  int nvfp4_w4a8_block;         /* weight block of wnvfp4_afp8: 16 (ModelOpt) or 32 */
  double nvfp4_effective_bits;  /* 4.0 or 4.5 */
  bool include_lm_head;         /* score the head (its own copy of a tied weight) */
  qs_name_style name_style;
  const char *const *disabled_layers; /* fnmatch globs on module names: NONE-only Linears */
  size_t n_disabled_layers;
  long lm_chunk_tokens;         /* logits rows alive at once; <= 0: the model's default */
  long step_tokens;             /* tokens per step (0: one logical batch per step) */
  /* parallel.mode=layers: this rank scores only the decoder layers l with
   * l % layer_slices == layer_slice (the lm_head counts as layer L); the
   * other Linears keep raw score 0, so a SUM over the ranks' cells gives the
   * full scores exactly. layer_slices <= 1: score every Linear. */
  int layer_slice, layer_slices;
  FILE *progress;               /* one line per step, counting logical batches; NULL: silent (ranks other than 0) */
  const char *progress_label;   /* prefix of progress lines, e.g. "pass 1/3"; NULL: none */
} qs_engine_options;

/* autoquant defaults: accurate, pads included, nv_ceil, block 16, 4.0 bits,
 * no lm_head, hf names. */
qs_engine_options qs_engine_options_default(void);

/* One cell of a pass. out is a qs_cell_new() cell; the engine sets its pair
 * (qs_cell_set_pair: scheme, format, act_amax), adds its Linears and fills
 * the run record, raw scores, amax, token counts, baseline loss and timings.
 * Model id, dataset block, provenance and a seed-style scheme are the
 * caller's. */
typedef struct qs_engine_cell {
  const char *pair;         /* "wint8_aint8" */
  qs_act_amax_mode act_amax;
  size_t n_samples;         /* the first n_samples of the pass's samples */
  qs_cell *out;
} qs_engine_cell;

/* The pass's samples (tokenized, in file order) and batch layout. */
typedef struct qs_engine_data {
  const struct qs_token_seq *seqs;
  size_t n_seqs;                       /* at least every cell's n_samples */
  const struct qs_batch_opts *batch;   /* text/batch.h options (packed or padded) */
} qs_engine_data;

/* Runs one pass over lm on be. Fails (status 2) on a bad pair name, an
 * unsupported layout (calib_pad_policy=exclude with padded batches), a disabled_layers glob that splits a group, a
 * Linear width that is not a whole number of a format's blocks; (status 1) on
 * a non-finite loss, gradient or score, naming the Linear, the pair and the
 * batch. */
bool qs_engine_run_pass(qs_backend *be, const qs_lm *lm, const qs_engine_data *data, qs_engine_cell *cells,
                        size_t ncells, const qs_engine_options *opts, qs_error *err);

/* Module name of a Linear in a naming style into buf ("lm_head" for the head). */
void qs_engine_linear_name(qs_name_style style, int layer, qs_linear_kind kind, char *buf, size_t size);

#endif
