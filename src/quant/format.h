/* Number-format registry and (W,A) pairs (spec quant-and-scoring.md §1, §2).
 *
 * Formats are named as the config's quant_pair files name them: "none"
 * (alias "fp16", "bf16"), "fp8", "int8", "int4", "mxfp4" (alias "fp4": FP4
 * means MXFP4 in this project), "nvfp4". A pair names a weight and an
 * activation format; it knows its ModelOpt config name, whether that is a
 * preset (displayed by name) or a custom config (displayed CUSTOM_<i>), its
 * default activation-amax mode and its cost bits. */
#ifndef QSENS_QUANT_FORMAT_H
#define QSENS_QUANT_FORMAT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

typedef enum qs_qkind {
  QS_QK_NONE,  /* unquantized (bf16) */
  QS_QK_FP8,   /* E4M3, per-tensor scale */
  QS_QK_INT,   /* INTb, symmetric, rint */
  QS_QK_MXFP4, /* E2M1 elements, E8M0 block scale from each call's data */
  QS_QK_NVFP4, /* E2M1 elements, E4M3 block scale under a per-tensor amax */
} qs_qkind;

/* Where one amax (scale) applies along a [rows, cols] tensor. */
typedef enum qs_qgran {
  QS_GRAN_NONE,    /* no amax: unquantized, or MXFP4 (scales from the data) */
  QS_GRAN_TENSOR,  /* one for the whole tensor */
  QS_GRAN_CHANNEL, /* one per row (output channel of a weight) */
  QS_GRAN_BLOCK,   /* one per block of `block` elements along cols */
} qs_qgran;

typedef struct qs_qformat {
  const char *name;  /* registry key */
  const char *label; /* upper-case name used in config names ("MXFP4") */
  qs_qkind kind;
  int bits;          /* element bits; 16 for none */
  int block;         /* elements per block scale along K (MXFP4 32, NVFP4 16, INT4 weight 128) */
  qs_qgran weight_amax, act_amax; /* granularity of the static amax of each role */
} qs_qformat;

/* Registered format by name or alias; NULL when unknown. */
const qs_qformat *qs_qformat_find(const char *name);

/* Like qs_qformat_find, but an unknown name is a usage error that lists the
 * known names; `what` names the setting in the message (e.g. "quant_pair.weight"). */
bool qs_qformat_lookup(const char *name, const char *what, const qs_qformat **out, qs_error *err);

/* Number of block-scaled elements per block for this role: fmt->block for MXFP4
 * and NVFP4 in both roles and INT4 weights; 0 when the role has no blocks. */
int qs_qformat_role_block(const qs_qformat *fmt, bool weight);

typedef struct qs_qpair {
  const qs_qformat *weight;
  const qs_qformat *act;
  char name[32];         /* "wint8_aint8", "wfp4_afp16" */
  char config_name[48];  /* "INT8_DEFAULT_CFG", custom "INT8_WEIGHT_FP8_ACT_CFG" */
  bool preset;           /* ModelOpt preset: displayed by config_name, else CUSTOM_<i> */
  bool dynamic_act_amax; /* default act_amax: dynamic only for W4A8_MXFP4_FP8_CFG */
} qs_qpair;

/* Pair from its format names (weight must be quantized). */
bool qs_qpair_make(const char *weight, const char *act, qs_qpair *out, qs_error *err);

/* Pair from its name "w<weight>_a<act>" ("wfp4_afp8", "wnvfp4_anvfp4"). */
bool qs_qpair_parse(const char *pair_name, qs_qpair *out, qs_error *err);

/* Cost bits = min(weight bits, activation bits), 16 for an unquantized side.
 * NVFP4 counts nvfp4_effective_bits (4.0 or 4.5), except the W4A8_NVFP4_FP8_CFG
 * preset, which ModelOpt reports as 4.0 in every version. */
double qs_qpair_cost_bits(const qs_qpair *pair, double nvfp4_effective_bits);

/* "<name>(effective-bits: <bits as Python float>)", e.g.
 * "INT8_DEFAULT_CFG(effective-bits: 8.0)", "NONE(effective-bits: 16.0)". */
void qs_recipe_display(const char *name, double bits, char *buf, size_t size);

/* Display string of a pair that sits at position custom_index of the searched
 * format list: presets by name, custom configs as CUSTOM_<custom_index>. */
void qs_qpair_display(const qs_qpair *pair, int custom_index, double nvfp4_effective_bits,
                      char *buf, size_t size);

#endif
