/* Config -> engine settings. The quant_pair file names formats; the format
 * registry (quant/format.h) is the source of truth for the numerics, the
 * ModelOpt config name and the display string written into artifacts. The
 * file's name and display_name must agree with the registry (a mismatch
 * would publish artifacts under a name that means something else);
 * modelopt_config is descriptive (recorded in qsens_run.json, listed by
 * `qsens formats`), because some pairs have a newer ModelOpt preset than
 * the custom config the artifacts name (wnvfp4_afp16). */
#define _POSIX_C_SOURCE 200809L
#include "app/job_settings.h"

#include <stdlib.h>
#include <string.h>

#include "app/cfg_get.h"
#include "config/yaml.h"
#include "core/mem.h"

/* Keys that may differ between the jobs of one pass: the pair, the dataset
 * size (sizes are prefix subsets of one sample stream) and the search. */
static const char *const PER_CELL_KEYS[] = {
    "quant_pair", "scheme", "output_layout", "dataset.size", "dataset.captions_path", "dataset.max_calib_samples",
    "autoquant.effective_bits", "autoquant.monotone_rule", "autoquant.extra_none_numel",
    "autoquant.report_style",
};

static void delete_path(qs_node *root, const char *path) {
  const char *dot = strrchr(path, '.');
  if (!dot) {
    qs_map_del(root, path);
    return;
  }
  char parent[128];
  snprintf(parent, sizeof parent, "%.*s", (int)(dot - path), path);
  qs_node *map = qs_node_get_path(root, parent);
  if (map && map->kind == QS_MAP) qs_map_del(map, dot + 1);
}

static char *pass_key_of(const qs_node *cfg) {
  qs_node *rest = qs_node_copy(cfg);
  for (size_t i = 0; i < sizeof PER_CELL_KEYS / sizeof PER_CELL_KEYS[0]; i++) delete_path(rest, PER_CELL_KEYS[i]);
  char *key = qs_yaml_dump(rest);
  qs_node_free(rest);
  return key;
}

static bool positive(const char *key, int64_t v, qs_error *err) {
  return v > 0 || qs_fail(err, QS_EXIT_USAGE, "config key '%s' must be positive (it is %lld)", key, (long long)v);
}

/* An optional count: null gives 0, anything else must be a positive integer. */
static bool opt_positive(const qs_node *cfg, const char *key, int64_t *out, qs_error *err) {
  const qs_node *n = qs_node_get_path(cfg, key);
  if (n && n->kind == QS_NULL) {
    *out = 0;
    return true;
  }
  return qs_cfg_int(cfg, key, out, err) && positive(key, *out, err);
}

/* Samples of the job: dataset.max_calib_samples, else dataset.sizes[size]. */
static bool read_dataset(const qs_node *cfg, qs_job_settings *s, qs_error *err) {
  static const char *const formats[] = {"txt", "jsonl", "coco", NULL};
  static const qs_caption_format format_values[] = {QS_CAPTIONS_TXT, QS_CAPTIONS_JSONL, QS_CAPTIONS_COCO};
  int64_t cap, count;
  int format;
  if (!qs_cfg_str(cfg, "dataset.name", false, &s->dataset_name, err) ||
      !qs_cfg_str(cfg, "dataset.size", false, &s->dataset_size, err) ||
      !qs_cfg_str(cfg, "dataset.root", false, &s->dataset_root, err) ||
      !qs_cfg_str(cfg, "dataset.captions_path", false, &s->captions_path, err) ||
      !qs_cfg_str(cfg, "dataset.text_field", true, &s->text_field, err) ||
      !qs_cfg_choice(cfg, "dataset.format", formats, &format, err) ||
      !opt_positive(cfg, "dataset.max_calib_samples", &cap, err))
    return false;
  char key[256];
  snprintf(key, sizeof key, "dataset.sizes.%s", s->dataset_size);
  if (!cap && !qs_node_get_path(cfg, key))
    return qs_fail(err, QS_EXIT_USAGE, "dataset.size '%s' is not one of the sizes listed in dataset.sizes",
                   s->dataset_size);
  if (cap) count = cap;
  else if (!qs_cfg_int(cfg, key, &count, err) || !positive(key, count, err)) return false;
  s->captions_format = format_values[format];
  s->max_calib_samples = cap ? cap : -1;
  s->n_samples = (size_t)count;
  return true;
}

static bool read_batching(const qs_node *cfg, int64_t score_size, qs_batch_opts *b, qs_error *err) {
  static const char *const paddings[] = {"packed", "max_length", NULL};
  int64_t batch_size, seq_len, budget, calib_steps, score_steps;
  int padding;
  if (!qs_cfg_int(cfg, "dataset.batch_size", &batch_size, err) || !positive("dataset.batch_size", batch_size, err) ||
      !qs_cfg_int(cfg, "dataset.calib_seq_len", &seq_len, err) ||
      !positive("dataset.calib_seq_len", seq_len, err) ||
      !opt_positive(cfg, "dataset.token_budget", &budget, err) ||
      !qs_cfg_choice(cfg, "dataset.padding", paddings, &padding, err) ||
      !opt_positive(cfg, "autoquant.num_calib_steps", &calib_steps, err) ||
      !opt_positive(cfg, "autoquant.num_score_steps", &score_steps, err))
    return false;
  *b = qs_batch_opts_default();
  /* max_length: the existing flow's left-padded rows, pad-context target included (spec §7.7). */
  b->padding = padding == 1 ? QS_PADDING_MAX_LENGTH : QS_PADDING_PACKED;
  b->batch_size = (size_t)batch_size;
  b->max_length = (size_t)seq_len;
  b->max_tokens = (size_t)budget;
  b->calib_batches = (size_t)calib_steps;
  /* num_score_steps fixes the score batches; score_size / batch_size does otherwise (ModelOpt). */
  b->score_size = (size_t)(score_steps > 0 ? score_steps * batch_size : score_size);
  return true;
}

static bool read_pair(const qs_node *cfg, qs_job_settings *s, qs_error *err) {
  static const char *const amax_modes[] = {"static", "dynamic", NULL};
  const char *name, *weight, *act, *display;
  int amax;
  if (!qs_cfg_str(cfg, "quant_pair.name", false, &name, err) ||
      !qs_cfg_str(cfg, "quant_pair.weight_format", false, &weight, err) ||
      !qs_cfg_str(cfg, "quant_pair.act_format", false, &act, err) ||
      !qs_cfg_str(cfg, "quant_pair.modelopt_config", true, &s->modelopt_config, err) ||
      !qs_cfg_str(cfg, "quant_pair.display_name", true, &display, err) ||
      !qs_cfg_choice(cfg, "quant_pair.act_amax", amax_modes, &amax, err))
    return false;
  const qs_qformat *known;
  if (!qs_qformat_lookup(weight, "config key 'quant_pair.weight_format'", &known, err) ||
      !qs_qformat_lookup(act, "config key 'quant_pair.act_format'", &known, err))
    return false;
  if (!qs_qpair_make(weight, act, &s->pair, err)) return qs_fail_context(err, "quant_pair '%s': ", name);
  if (strcmp(name, s->pair.name) != 0)
    return qs_fail(err, QS_EXIT_USAGE,
                   "config key 'quant_pair.name': '%s' does not match its formats (%s x %s is '%s')", name, weight,
                   act, s->pair.name);
  const char *registry_display = s->pair.preset ? s->pair.config_name : "CUSTOM_0";
  if (display && strcmp(display, registry_display) != 0)
    return qs_fail(err, QS_EXIT_USAGE, "config key 'quant_pair.display_name': '%s', but pair %s displays as '%s'",
                   display, name, registry_display);
  s->act_amax = amax == 0 ? QS_ACT_AMAX_STATIC : QS_ACT_AMAX_DYNAMIC;
  return true;
}

static bool read_autoquant(const qs_node *cfg, qs_job_settings *s, qs_error *err) {
  static const char *const methods[] = {"gradient", NULL};
  static const char *const precisions[] = {"accurate", "modelopt", NULL};
  static const char *const monotone[] = {"head", "v037", NULL};
  static const char *const names[] = {"hf", "seed", NULL};
  static const char *const mx_rules[] = {"nv_ceil", "ocp_floor", NULL};
  static const char *const report_styles[] = {"head", "committed", NULL};
  qs_engine_options *o = &s->engine;
  int method, precision, rule, style, mx, report_style;
  int64_t block, extra, score_size;
  if (!qs_cfg_choice(cfg, "autoquant.method", methods, &method, err) ||
      !qs_cfg_number(cfg, "autoquant.effective_bits", &s->effective_bits, err) ||
      !qs_cfg_int(cfg, "autoquant.score_size", &score_size, err) ||
      !positive("autoquant.score_size", score_size, err) ||
      !qs_cfg_str_list(cfg, "autoquant.disabled_layers", (const char ***)&o->disabled_layers, &o->n_disabled_layers,
                       err) ||
      !qs_cfg_bool(cfg, "autoquant.include_lm_head", &o->include_lm_head, err) ||
      !qs_cfg_choice(cfg, "autoquant.delta_precision", precisions, &precision, err) ||
      !qs_cfg_choice(cfg, "autoquant.monotone_rule", monotone, &rule, err) ||
      !qs_cfg_choice(cfg, "autoquant.report_style", report_styles, &report_style, err) ||
      !qs_cfg_choice(cfg, "autoquant.name_style", names, &style, err) ||
      !qs_cfg_choice(cfg, "autoquant.mx_scale_rule", mx_rules, &mx, err) ||
      !qs_cfg_number(cfg, "autoquant.nvfp4_effective_bits", &o->nvfp4_effective_bits, err) ||
      !qs_cfg_int(cfg, "autoquant.nvfp4_w4a8_block", &block, err) ||
      !qs_cfg_int(cfg, "autoquant.extra_none_numel", &extra, err))
    return false;
  if (!(s->effective_bits > 0.0 && s->effective_bits <= 16.0))
    return qs_fail(err, QS_EXIT_USAGE, "config key 'autoquant.effective_bits' must be in (0, 16] (it is %g)",
                   s->effective_bits);
  if (o->nvfp4_effective_bits != 4.0 && o->nvfp4_effective_bits != 4.5)
    return qs_fail(err, QS_EXIT_USAGE, "config key 'autoquant.nvfp4_effective_bits' must be 4.0 or 4.5 (it is %g)",
                   o->nvfp4_effective_bits);
  if (block != 16 && block != 32)
    return qs_fail(err, QS_EXIT_USAGE, "config key 'autoquant.nvfp4_w4a8_block' must be 16 or 32 (it is %lld)",
                   (long long)block);
  if (extra < 0) return qs_fail(err, QS_EXIT_USAGE, "config key 'autoquant.extra_none_numel' must not be negative");
  o->precision = precision == 0 ? QS_DELTA_ACCURATE : QS_DELTA_MODELOPT;
  s->monotone_rule = rule == 0 ? QS_MONOTONE_HEAD : QS_MONOTONE_V037;
  s->report_style = report_style == 0 ? QS_REPORT_HEAD : QS_REPORT_COMMITTED;
  o->name_style = style == 0 ? QS_NAMES_HF : QS_NAMES_SEED;
  o->mx_rule = mx == 0 ? QS_MX_NV_CEIL : QS_MX_OCP_FLOOR;
  o->nvfp4_w4a8_block = (int)block;
  s->extra_none_numel = extra;
  s->score_size = score_size;
  return true;
}

static bool read_runtime(const qs_node *cfg, qs_job_settings *s, qs_error *err) {
  static const char *const backends[] = {"auto", "cpu", "cuda", "cpu_bf16", NULL};
  static const char *const pad_policies[] = {"include", "exclude", NULL};
  static const char *const modes[] = {"auto", "grid", "data", "layers", NULL};
  int backend, policy, mode;
  int64_t threads, token_budget;
  if (!qs_cfg_choice(cfg, "backend.name", backends, &backend, err) ||
      !opt_positive(cfg, "backend.threads", &threads, err) ||
      !opt_positive(cfg, "backend.token_budget", &token_budget, err) ||
      !qs_cfg_choice(cfg, "dataset.calib_pad_policy", pad_policies, &policy, err) ||
      !qs_cfg_choice(cfg, "parallel.mode", modes, &mode, err) ||
      !qs_cfg_str(cfg, "output_layout.artifact_dir", false, &s->artifact_dir, err))
    return false;
  if (threads > 4096)
    return qs_fail(err, QS_EXIT_USAGE, "config key 'backend.threads' must be null or in [1, 4096] (it is %lld)",
                   (long long)threads);
  /* A step of more than 2^31 tokens would not fit any device (the model's
   * packed batches count tokens in int32). */
  if (token_budget > 0x7fffffff)
    return qs_fail(err, QS_EXIT_USAGE,
                   "config key 'backend.token_budget' must be null or in [1, 2147483647] (it is %lld)",
                   (long long)token_budget);
  s->backend = (qs_backend_choice)backend;
  s->threads = (int)threads;
  s->token_budget = (long)token_budget;
  s->engine.calib_pad_policy = policy == 0 ? QS_CALIB_PADS_INCLUDE : QS_CALIB_PADS_EXCLUDE;
  s->parallel_mode = modes[mode];
  return true;
}

bool qs_job_settings_load(const qs_hydra_job *job, qs_job_settings *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  out->engine = qs_engine_options_default();
  if (!qs_hydra_job_resolved(job, &out->cfg, err)) return false;
  const qs_node *cfg = out->cfg;
  bool ok = qs_cfg_str(cfg, "model.name", false, &out->model_name, err) &&
            qs_cfg_str(cfg, "scheme", false, &out->scheme, err) &&
            qs_cfg_str(cfg, "model.path", false, &out->model_path, err) && read_dataset(cfg, out, err) &&
            read_pair(cfg, out, err) && read_autoquant(cfg, out, err) &&
            read_batching(cfg, out->score_size, &out->batch, err) && read_runtime(cfg, out, err);
  if (ok) out->pass_key = pass_key_of(cfg);
  else qs_job_settings_free(out);
  return ok;
}

void qs_job_settings_free(qs_job_settings *s) {
  free((void *)s->engine.disabled_layers);
  free(s->pass_key);
  qs_node_free(s->cfg);
  memset(s, 0, sizeof *s);
}
