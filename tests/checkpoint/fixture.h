/* Tiny Hugging Face checkpoints for the loader tests, written with the
 * project's safetensors writer, plus helpers that break them on disk. */
#ifndef QSENS_TESTS_CHECKPOINT_FIXTURE_H
#define QSENS_TESTS_CHECKPOINT_FIXTURE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/strbuf.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"

typedef enum fx_layout {
  FX_LAYOUT_A,     /* qwen3_vl, rope_theta + rope_scaling (transformers 4.57) */
  FX_LAYOUT_B,     /* qwen3_vl, rope_parameters (transformers 5.x) */
  FX_LAYOUT_QWEN3, /* plain qwen3 text model, model.layers.* */
} fx_layout;

typedef struct fx_options {
  fx_layout layout;
  int tie_top, tie_text;  /* -1 absent, 0 false, 1 true */
  bool lm_head;           /* write lm_head.weight */
  bool lm_head_differs;   /* its values differ from embed_tokens (else a copy) */
  int shards;             /* 0: single model.safetensors; n: n shards + index */
  qs_st_dtype dtype;      /* BF16, F32 or F16 for every LM tensor */
  bool visual;            /* add model.visual.* tensors */
} fx_options;

/* The default: layout A, both flags true, no lm_head, one BF16 file. */
fx_options fx_defaults(void);

/* Hyper-parameters of the fixture model (D 8, I 16, L 2, H 2, Hkv 1, hd 4, V 16). */
qs_lm_config fx_lm_config(void);

/* config.json for the options (caller owns; edit it before fx_write). */
json_t *fx_config(const fx_options *o);

/* Writes config.json (fx_config(o) when config is NULL; consumed) and weights to dir. */
void fx_write(const char *dir, const fx_options *o, json_t *config);

/* Value of element e of the fixture tensor numbered i (qs_lm_tensor_list
 * order); exactly representable in BF16, F16 and F32. lm_head's differ when asked. */
float fx_value(size_t tensor_index, uint64_t element);

/* Rewrites the header of a safetensors file: mutate() edits the parsed JSON,
 * the payload is kept and `extra` zero bytes appended to it. The new header
 * has an odd length, so BF16 data is no longer 2-byte aligned. */
void fx_edit_header(const char *path, void (*mutate)(json_t *header, void *ctx), void *ctx, size_t extra);

/* Rewrites a JSON file (config.json, index) through mutate(). */
void fx_edit_json(const char *path, void (*mutate)(json_t *root, void *ctx), void *ctx);

/* Overwrites bytes of a file at `offset`. */
void fx_patch(const char *path, long offset, const void *bytes, size_t n);

/* Collects warnings, one per line. */
void fx_collect_warning(void *strbuf, const char *message);

/* Loads dir; returns the error status (0 on success) and fills msg/warnings. */
int fx_load(const char *dir, qs_lm *lm, qs_error *err, qs_strbuf *warnings);

/* rm -rf of a fixture folder (only plain files one level deep). */
void fx_clear_dir(const char *dir);

#endif
