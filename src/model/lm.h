/* The Qwen3(-VL) language model as the engine sees it: hyper-parameters and
 * bf16 weights (row-major [out, in], head-major q/k/v rows), wherever they
 * live (an mmap'd checkpoint, converted buffers, or a generated model).
 * Spec: shared specs/qwen3-vl-lm.md §1–2. */
#ifndef QSENS_MODEL_LM_H
#define QSENS_MODEL_LM_H

#include <stdbool.h>
#include <stddef.h>

#include "core/bf16.h"

typedef struct qs_lm_config {
  int hidden;         /* D */
  int intermediate;   /* I */
  int layers;         /* L */
  int heads;          /* H */
  int kv_heads;       /* Hkv, H % Hkv == 0 */
  int head_dim;       /* hd, read from config.json, never derived */
  int vocab;          /* V */
  double rms_eps;
  double rope_theta;
  bool tied;          /* lm_head is embed_tokens */
  long max_positions; /* informational */
} qs_lm_config;

/* The Linears of one decoder layer, plus the head, in the spec's module order. */
typedef enum qs_linear_kind {
  QS_LIN_Q, QS_LIN_K, QS_LIN_V, QS_LIN_O, QS_LIN_GATE, QS_LIN_UP, QS_LIN_DOWN,
  QS_LIN_LM_HEAD,
  QS_LIN_COUNT
} qs_linear_kind;

typedef struct qs_lm_layer {
  const qs_bf16 *input_norm;  /* [D] */
  const qs_bf16 *q, *k, *v;   /* [H*hd, D], [Hkv*hd, D], [Hkv*hd, D] */
  const qs_bf16 *q_norm, *k_norm; /* [hd] */
  const qs_bf16 *o;           /* [D, H*hd] */
  const qs_bf16 *post_norm;   /* [D] */
  const qs_bf16 *gate, *up;   /* [I, D] */
  const qs_bf16 *down;        /* [D, I] */
} qs_lm_layer;

typedef struct qs_lm {
  qs_lm_config cfg;
  const qs_bf16 *embed;       /* [V, D] */
  qs_lm_layer *layer;         /* [L] */
  const qs_bf16 *final_norm;  /* [D] */
  const qs_bf16 *lm_head;     /* [V, D]; == embed when tied */
  void *storage;              /* owned by whoever built the model (loader) */
  void (*release)(struct qs_lm *); /* frees storage and layer; NULL when nothing to free */
} qs_lm;

/* "q_proj", "k_proj", ..., "down_proj", "lm_head" */
const char *qs_linear_name(qs_linear_kind kind);

/* Weight of a Linear and its shape [out, in]; layer is ignored for the head. */
const qs_bf16 *qs_lm_linear_weight(const qs_lm *lm, int layer, qs_linear_kind kind, int *out, int *in);

void qs_lm_release(qs_lm *lm);

#endif
