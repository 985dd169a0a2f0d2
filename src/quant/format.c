#define _POSIX_C_SOURCE 200809L
#include "quant/format.h"

#include <stdio.h>
#include <string.h>

#include "core/pyfmt.h"

static const qs_qformat FORMATS[] = {
    {"none", "NONE", QS_QK_NONE, 16, 0, QS_GRAN_NONE, QS_GRAN_NONE},
    {"fp8", "FP8", QS_QK_FP8, 8, 0, QS_GRAN_TENSOR, QS_GRAN_TENSOR},
    {"int8", "INT8", QS_QK_INT, 8, 0, QS_GRAN_CHANNEL, QS_GRAN_TENSOR},
    /* INT4 activations: num_bits 4, axis None = per tensor (§2). */
    {"int4", "INT4", QS_QK_INT, 4, 128, QS_GRAN_BLOCK, QS_GRAN_TENSOR},
    {"mxfp4", "MXFP4", QS_QK_MXFP4, 4, 32, QS_GRAN_NONE, QS_GRAN_NONE},
    {"nvfp4", "NVFP4", QS_QK_NVFP4, 4, 16, QS_GRAN_TENSOR, QS_GRAN_TENSOR},
};
enum { NFORMATS = sizeof FORMATS / sizeof FORMATS[0] };

static const struct {
  const char *alias, *name;
} ALIASES[] = {{"fp16", "none"}, {"bf16", "none"}, {"fp4", "mxfp4"}};

const qs_qformat *qs_qformat_find(const char *name) {
  if (!name) return NULL;
  for (size_t i = 0; i < sizeof ALIASES / sizeof ALIASES[0]; i++)
    if (strcmp(name, ALIASES[i].alias) == 0) name = ALIASES[i].name;
  for (int i = 0; i < NFORMATS; i++)
    if (strcmp(name, FORMATS[i].name) == 0) return &FORMATS[i];
  return NULL;
}

bool qs_qformat_lookup(const char *name, const char *what, const qs_qformat **out, qs_error *err) {
  *out = qs_qformat_find(name);
  if (*out) return true;
  return qs_fail(err, QS_EXIT_USAGE,
                 "%s: unknown number format '%s' (known: none, fp16, bf16, fp8, int8, int4, "
                 "mxfp4, fp4, nvfp4)",
                 what, name ? name : "(null)");
}

int qs_qformat_role_block(const qs_qformat *fmt, bool weight) {
  if (fmt->kind == QS_QK_MXFP4 || fmt->kind == QS_QK_NVFP4) return fmt->block;
  qs_qgran gran = weight ? fmt->weight_amax : fmt->act_amax;
  return gran == QS_GRAN_BLOCK ? fmt->block : 0;
}

/* ModelOpt presets by (weight, act) format; every other pair is a custom config. */
static const struct {
  const char *weight, *act, *config;
} PRESETS[] = {
    {"mxfp4", "fp8", "W4A8_MXFP4_FP8_CFG"},
    {"fp8", "fp8", "FP8_DEFAULT_CFG"},
    {"int8", "none", "INT8_WEIGHT_ONLY_CFG"},
    {"int8", "int8", "INT8_DEFAULT_CFG"},
    {"nvfp4", "fp8", "W4A8_NVFP4_FP8_CFG"},
    {"nvfp4", "nvfp4", "NVFP4_DEFAULT_CFG"},
    {"int4", "none", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"},
};

static const char *preset_config(const qs_qformat *w, const qs_qformat *a) {
  for (size_t i = 0; i < sizeof PRESETS / sizeof PRESETS[0]; i++)
    if (strcmp(PRESETS[i].weight, w->name) == 0 && strcmp(PRESETS[i].act, a->name) == 0)
      return PRESETS[i].config;
  return NULL;
}

/* Pair names use "fp4" for MXFP4 and "fp16" for an unquantized activation. */
static const char *pair_token(const qs_qformat *f) {
  if (f->kind == QS_QK_NONE) return "fp16";
  if (f->kind == QS_QK_MXFP4) return "fp4";
  return f->name;
}

bool qs_qpair_make(const char *weight, const char *act, qs_qpair *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  if (!qs_qformat_lookup(weight, "quant_pair weight", &out->weight, err)) return false;
  if (!qs_qformat_lookup(act, "quant_pair activation", &out->act, err)) return false;
  if (out->weight->kind == QS_QK_NONE)
    return qs_fail(err, QS_EXIT_USAGE,
                   "quant_pair weight: '%s' leaves weights unquantized; a pair must quantize "
                   "the weight",
                   weight);
  snprintf(out->name, sizeof out->name, "w%s_a%s", pair_token(out->weight), pair_token(out->act));
  const char *preset = preset_config(out->weight, out->act);
  out->preset = preset != NULL;
  if (preset) {
    snprintf(out->config_name, sizeof out->config_name, "%s", preset);
  } else if (out->act->kind == QS_QK_NONE) {
    snprintf(out->config_name, sizeof out->config_name, "%s_WEIGHT_ONLY_CFG", out->weight->label);
  } else {
    snprintf(out->config_name, sizeof out->config_name, "%s_WEIGHT_%s_ACT_CFG", out->weight->label,
             out->act->label);
  }
  /* W4A8_MXFP4_FP8_CFG has algorithm None: its FP8 input amax is never calibrated. */
  out->dynamic_act_amax = out->weight->kind == QS_QK_MXFP4 && out->act->kind == QS_QK_FP8;
  return true;
}

bool qs_qpair_parse(const char *pair_name, qs_qpair *out, qs_error *err) {
  const char *sep = pair_name ? strstr(pair_name, "_a") : NULL;
  char weight[16];
  size_t wlen = sep ? (size_t)(sep - pair_name) : 0;
  if (!sep || pair_name[0] != 'w' || wlen < 2 || wlen > sizeof weight || sep[2] == '\0')
    return qs_fail(err, QS_EXIT_USAGE,
                   "quant_pair: '%s' is not a pair name of the form w<format>_a<format> "
                   "(e.g. wint8_aint8, wfp4_afp16)",
                   pair_name ? pair_name : "(null)");
  memcpy(weight, pair_name + 1, wlen - 1);
  weight[wlen - 1] = '\0';
  if (!qs_qpair_make(weight, sep + 2, out, err))
    return qs_fail_context(err, "quant_pair '%s': ", pair_name);
  return true;
}

static double side_bits(const qs_qformat *f, double nvfp4_effective_bits) {
  return f->kind == QS_QK_NVFP4 ? nvfp4_effective_bits : (double)f->bits;
}

double qs_qpair_cost_bits(const qs_qpair *pair, double nvfp4_effective_bits) {
  if (pair->weight->kind == QS_QK_NVFP4 && pair->act->kind == QS_QK_FP8) return 4.0;
  double w = side_bits(pair->weight, nvfp4_effective_bits);
  double a = side_bits(pair->act, nvfp4_effective_bits);
  return w < a ? w : a;
}

void qs_recipe_display(const char *name, double bits, char *buf, size_t size) {
  char num[40];
  snprintf(buf, size, "%s(effective-bits: %s)", name, qs_py_float_repr(bits, num, sizeof num));
}

void qs_qpair_display(const qs_qpair *pair, int custom_index, double nvfp4_effective_bits,
                      char *buf, size_t size) {
  char custom[24];
  snprintf(custom, sizeof custom, "CUSTOM_%d", custom_index);
  qs_recipe_display(pair->preset ? pair->config_name : custom,
                    qs_qpair_cost_bits(pair, nvfp4_effective_bits), buf, size);
}
