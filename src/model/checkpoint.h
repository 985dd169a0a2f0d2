/* Hugging Face checkpoints of Qwen3-VL (dense) and plain Qwen3 text models:
 * config.json and safetensors (single file or index + shards) into a qs_lm.
 * Spec: shared specs/qwen3-vl-lm.md §1 (config), §2 (tensors, shards, validation).
 *
 * BF16 tensors are used in place from the mmap'd files when 2-byte aligned;
 * F32/F16 tensors are converted to bf16 (round to nearest even, one warning
 * per file). Every failure is one line naming the file and the key or tensor,
 * with status QS_EXIT_RUNTIME. */
#ifndef QSENS_MODEL_CHECKPOINT_H
#define QSENS_MODEL_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "model/lm.h"

/* Receives each warning (one line, no trailing newline). */
typedef void (*qs_warn_fn)(void *ctx, const char *message);

/* A qs_warn_fn printing "qsens: warning: <message>\n" to the FILE* ctx. */
void qs_warn_to_stream(void *file, const char *message);

/* Tensor-name prefixes of the two supported layouts. */
#define QS_PREFIX_QWEN3_VL "model.language_model."
#define QS_PREFIX_QWEN3 "model."

/* What config.json says, beyond the LM hyper-parameters. */
typedef struct qs_hf_config {
  qs_lm_config lm;    /* lm.tied is left false: it also depends on the tensors (§1.3) */
  int tie_top;        /* top-level tie_word_embeddings: -1 absent, 0 false, 1 true */
  int tie_text;       /* text_config's flag (same as tie_top for plain qwen3) */
  bool vision_language; /* model_type qwen3_vl (else plain qwen3) */
  const char *prefix; /* QS_PREFIX_QWEN3_VL or QS_PREFIX_QWEN3 */
} qs_hf_config;

/* Reads and validates config.json (§1). `warn` may be NULL. */
bool qs_hf_config_read(const char *path, qs_hf_config *out, qs_warn_fn warn, void *warn_ctx, qs_error *err);

/* Loads dir/config.json and the weights in dir; on success `out` must be
 * released with qs_lm_release (it owns the mappings and converted buffers). */
bool qs_checkpoint_load(const char *dir, qs_lm *out, qs_warn_fn warn, void *warn_ctx, qs_error *err);

/* ---- the LM's tensors (shared by the loader and the model writer) -------- */

typedef enum qs_lm_role {
  QS_ROLE_EMBED,
  QS_ROLE_Q, QS_ROLE_K, QS_ROLE_V, QS_ROLE_O, QS_ROLE_Q_NORM, QS_ROLE_K_NORM,
  QS_ROLE_GATE, QS_ROLE_UP, QS_ROLE_DOWN,
  QS_ROLE_INPUT_NORM, QS_ROLE_POST_NORM,
  QS_ROLE_FINAL_NORM,
  QS_ROLE_LM_HEAD,
} qs_lm_role;

typedef struct qs_lm_tensor {
  char name[96];
  qs_lm_role role;
  int layer;          /* -1 outside the decoder layers */
  int ndim;           /* 1 or 2 */
  uint64_t shape[2];  /* [out, in] or [n] */
} qs_lm_tensor;

/* The LM tensors in Hugging Face state-dict order: embed_tokens; per layer
 * q, k, v, o, q_norm, k_norm, gate, up, down, input_layernorm,
 * post_attention_layernorm; norm; then lm_head.weight when with_lm_head.
 * Writes up to `cap` entries to `out` (may be NULL) and returns the count. */
size_t qs_lm_tensor_list(const qs_lm_config *cfg, const char *prefix, bool with_lm_head, qs_lm_tensor *out,
                         size_t cap);

/* Where a tensor's data pointer lives in a qs_lm (layer array allocated). */
const qs_bf16 **qs_lm_slot(qs_lm *lm, const qs_lm_tensor *t);

#endif
