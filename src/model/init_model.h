/* Writes a synthetic Qwen3-VL checkpoint in the Hugging Face layout: config.json
 * (transformers 4.57 layout A: rope_theta + rope_scaling, tie flags at the top
 * level and in text_config, a tiny vision_config), safetensors with
 * model.language_model.* names (+ lm_head.weight when untied), sharded with
 * model.safetensors.index.json when the weights exceed the shard size.
 *
 * Weights are deterministic: element e of tensor number i (position in
 * qs_lm_tensor_list order, lm_head last when untied) is a function of
 * (seed, i, e) alone, so any element can be recomputed without the file and
 * generation runs in parallel while streaming to disk (the model is never
 * held in memory). Each value is mean + std·x, x uniform on [-√3, √3)
 * (unit variance), rounded to bf16 (nearest even):
 *   norms (input, post-attention, q/k, final)  mean 1, std 0.3
 *   embed_tokens, lm_head                      std 1/√D   (logits O(1) for unit-RMS inputs)
 *   q, k, v, gate, up (fan-in D)               std 1/√D   (outputs O(1) for unit-RMS inputs)
 *   o_proj (fan-in H·hd), down_proj (fan-in I) std 1/√(fan_in · 2L)
 * The residual branches each add variance ≈ 1/(2L), so after all 2L of them the
 * residual stream stays O(1) at any depth. */
#ifndef QSENS_MODEL_INIT_MODEL_H
#define QSENS_MODEL_INIT_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "model/checkpoint.h"
#include "model/lm.h"

/* Hugging Face's default max_shard_size ("5GB"). */
#define QS_INIT_MODEL_SHARD_BYTES 5000000000ull

typedef struct qs_init_model_options {
  const char *preset;        /* demo, qwen3_vl_2b, qwen3_vl_4b, qwen3_vl_8b, qwen3_vl_32b */
  uint64_t seed;
  uint64_t max_shard_bytes;  /* 0: QS_INIT_MODEL_SHARD_BYTES */
  int vocab;                 /* 0: the preset's vocabulary size */
  const char *tokenizer;     /* tokenizer.json to copy into the folder, or NULL */
  const char *captions;      /* demo only: captions (one per line) to train a byte-level BPE
                                tokenizer on; writes tokenizer.json and sets the vocabulary
                                to its size. NULL: no training */
} qs_init_model_options;

/* Learned tokens (bytes included) wanted from the demo captions; the three
 * added tokens follow, so a large enough caption set gives a vocabulary of 2048. */
#define QS_INIT_MODEL_DEMO_TOKENS 2045

/* Hyper-parameters of a preset (tied set as §1.4 says); false for an unknown name. */
bool qs_init_model_preset(const char *name, qs_lm_config *cfg);

/* Comma-separated preset names, for messages and --help. */
const char *qs_init_model_preset_names(void);

/* Writes config.json, the safetensors file(s) (and index) and, when asked,
 * tokenizer.json (copied, or trained from the captions) into `dir` (created if needed; a checkpoint previously
 * written there is replaced). Each file appears atomically; config.json is
 * written last, so an interrupted run leaves no loadable checkpoint. */
bool qs_init_model_write(const char *dir, const qs_init_model_options *opt, qs_error *err);

/* The generated value of element `element` of tensor `t`, number `tensor_index`. */
qs_bf16 qs_init_model_value(const qs_lm_config *cfg, uint64_t seed, const qs_lm_tensor *t, size_t tensor_index,
                            uint64_t element);

#endif
