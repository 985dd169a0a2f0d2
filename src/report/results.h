/* Results of one scored cell: one (W,A) pair x one dataset size (spec
 * quant-and-scoring.md §4.4-4.6, §6; DESIGN.md §4).
 *
 * The engine creates a cell with qs_cell_new(), fills the descriptive fields
 * and, for every searched Linear, its raw score per candidate format and its
 * amax; qs_cell_finish() then builds the groups (§4.4), applies the monotone
 * fix (§4.5), computes costs and runs the exact search and Pareto front
 * (§4.6). Every artifact writer (artifacts.h, h5.h) reads only this struct,
 * and qs_cell_load_state() rebuilds it from a state file, so reports can be
 * regenerated and budgets re-solved without the model.
 *
 * Plain C: arrays with counts, strings owned by the cell (qs_strdup'd),
 * everything freed by qs_cell_free(). "Unset" is NULL for strings, -1 for
 * counts and NAN for measured values, as noted per field. */
#ifndef QSENS_REPORT_RESULTS_H
#define QSENS_REPORT_RESULTS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "quant/format.h"
#include "search/search.h"

/* One candidate recipe of the cell (never NONE; NONE is implicit and last). */
typedef struct qs_cell_format {
  char *config_name; /* ModelOpt config name for scheme.quant_formats ("INT8_DEFAULT_CFG") */
  char *display;     /* §2 display string, "CUSTOM_0(effective-bits: 4.0)" */
  double bits;       /* cost bits (qs_qpair_cost_bits) */
} qs_cell_format;

/* §6.2 `dataset` block; NULL strings and negative ints are dropped on output. */
typedef struct qs_cell_dataset {
  bool present; /* false: no `dataset` key anywhere (seed-style output) */
  char *name, *size, *root, *captions_path;
  long long max_calib_samples, num_calib_samples, calib_seq_len, batch_size, num_calib_batches;
} qs_cell_dataset;

/* §6.5 `run` block (minus amax, which lives per Linear). */
typedef struct qs_cell_run {
  char *precision_mode;       /* "accurate" | "modelopt" */
  char *grad_dtype;           /* "bfloat16" | "float32" */
  char *mx_scale_rule;        /* MXFP4 shared exponent: "nv_ceil" | "ocp_floor" */
  double nvfp4_effective_bits; /* 4.0 or 4.5 */
  long long nvfp4_w4a8_block; /* NVFP4 block size in W4A8 (16 or 32; default 16) */
  char *act_amax;             /* "static" | "dynamic" | "none" */
  bool include_lm_head;
  char *name_style;           /* "hf" | "seed" */
  long long batch_size, seq_len;
  char *padding_side;         /* "left" */
  long long num_calib_steps, num_score_steps;
  char *captions_path, *captions_md5;
} qs_cell_run;

/* Markdown layout of layer-sensitivity-report.md (spec §6.3). */
typedef enum qs_report_style {
  QS_REPORT_HEAD,      /* Summary, Dataset, Quantization, Layer Sensitivity Table, Composed Config */
  QS_REPORT_COMMITTED, /* the published seed layout (mdutils) */
} qs_report_style;

/* Wall-clock seconds per phase (NAN: not measured; the state file does not keep them). */
typedef struct qs_cell_timings {
  double load_s, calibrate_s, score_s, search_s, total_s;
} qs_cell_timings;

/* Where a result came from (HDF5 attributes; tool_version also in run). */
typedef struct qs_cell_provenance {
  char *tool_version;        /* QSENS_VERSION */
  char *git_commit;          /* QSENS_GIT_COMMIT */
  char *checkpoint_checksum; /* e.g. "sha256:<hex>" of the safetensors index or files; NULL if unknown */
  char *data_checksum;       /* md5 of the captions file actually read; NULL if unknown */
} qs_cell_provenance;

/* One searched Linear, in module order (per layer q,k,v,o,gate,up,down; then lm_head). */
typedef struct qs_cell_linear {
  char *name;          /* HF module name, "model.language_model.layers.6.mlp.gate_proj" */
  int layer;           /* decoder layer index; -1 for lm_head */
  char *kind;          /* last name component: "q_proj" ... "down_proj", "lm_head" */
  long long numel;     /* weight elements */
  double *raw_scores;  /* [cell->nformats] Σ(G·Δ)² per candidate format (fp64 sums) */
  double *input_amax;  /* [cell->nformats] static input amax per candidate's activation
                          format; NAN when that activation is unquantized or dynamic */
  double weight_amax;  /* max |W| (per-tensor amax; max over channels for per-channel);
                          NAN when the weight format keeps no amax (MXFP4) */
  bool none_only;      /* offered only NONE (kept in the budget denominator, not
                          quantized); its raw scores are ignored. All members of a
                          group must agree. */
} qs_cell_linear;

/* One search group (§4.4): its choices are the candidate formats then NONE. */
typedef struct qs_cell_group {
  char *handle;           /* first member's name; the JSON key is handle + ".quant_recipe" */
  size_t nmembers;
  size_t *members;        /* indices into cell->linears */
  long long numel;        /* Σ member numel = cost of NONE */
  size_t nchoices;        /* cell->nformats + 1, or 1 for a NONE-only group */
  char **formats;         /* [nchoices] display strings in choice order, NONE last */
  double *bits;           /* [nchoices] cost bits, NONE 16 */
  double *raw_scores;     /* [nchoices] Σ member raw scores (fp64), NONE 0 */
  double *scores;         /* [nchoices] monotone-fixed (§4.5), NONE 0 */
  double *costs;          /* [nchoices] numel*bits/16 */
  int chosen;             /* index into the choices, -1 when the search failed */
} qs_cell_group;

typedef struct qs_cell_searchres {
  double requested_bits; /* b */
  double effective_bits; /* achieved */
  double best_score;     /* Σ chosen monotone scores */
  bool is_satisfied;
  double cost_denominator; /* Σ group numel + extra_none_numel */
  qs_pareto front;         /* whole Pareto front (cost, effective bits, score) */
} qs_cell_searchres;

typedef struct qs_cell {
  /* ---- identity (filled by the engine) ---- */
  char *pair;            /* "wint8_aint8" */
  char *weight_format;   /* registry names of the pair's formats ("int8", "fp8"); NULL if unknown */
  char *act_format;      /* "none" for weight-only pairs */
  char *scheme;          /* "<pair>_autoquant_lm" (seed: "int8_autoquant_lm_default") */
  char *model_id;        /* model dir as passed */
  char *coverage_mode;   /* "lm_only" (seed "lm_default") */
  long long score_size;  /* auto_quantize_score_size (128) */
  qs_monotone_rule monotone_rule;
  long long extra_none_numel; /* unsearched weights counted in the denominator (§6.7) */
  size_t nformats;             /* candidate formats (usually 1 per pair) */
  qs_cell_format *formats;
  qs_cell_dataset dataset;
  qs_cell_run run;
  qs_report_style report_style; /* kept in the state so `qsens report` rebuilds the same bytes */

  /* ---- measurements (filled by the engine) ---- */
  size_t nlinears;
  qs_cell_linear *linears;
  size_t nsamples;
  int *sample_tokens;     /* real tokens per calibration sample, in file order */
  double baseline_loss;   /* unquantized mean loss over the score batches; NAN if unknown */
  qs_cell_timings timings;
  char *config_yaml;      /* resolved config (.hydra/config.yaml text); NULL if unknown.
                             The HEAD layout publishes it as composed-config.yaml, which
                             `qsens report` reads back (the state stays free of run paths). */
  qs_cell_provenance provenance;

  /* ---- derived by qs_cell_finish / qs_cell_solve ---- */
  size_t ngroups;
  qs_cell_group *groups;  /* group order (§4.4) */
  qs_cell_searchres search;
} qs_cell;

/* Empty cell: strings NULL, counts 0, measured values NAN, score_size 128,
 * coverage "lm_only", monotone rule HEAD, report style HEAD. */
qs_cell *qs_cell_new(void);
void qs_cell_free(qs_cell *cell);

/* Fills the cell's identity from a (W,A) pair: pair and format names, scheme
 * "<pair>_autoquant_lm", act_amax mode (dynamic_act_amax overrides the
 * pair's default), and the pair as the candidate format: its config name,
 * display string (custom configs as CUSTOM_<custom_index>) and cost bits.
 * Call once, before qs_cell_add_linear. */
void qs_cell_set_pair(qs_cell *cell, const qs_qpair *pair, int custom_index, bool dynamic_act_amax);

/* Adds a candidate format (copied). Call before qs_cell_add_linear. */
void qs_cell_add_format(qs_cell *cell, const char *config_name, const char *display, double bits);

/* Appends a Linear (name copied, layer and kind parsed from the name) with
 * raw scores and input amax arrays of nformats entries set to 0 and NAN, and
 * weight_amax NAN; returns it for the engine to fill. */
qs_cell_linear *qs_cell_add_linear(qs_cell *cell, const char *name, long long numel);

/* Sets a string field: frees the old value, copies s (NULL allowed). */
void qs_cell_set_str(char **field, const char *s);

/* Builds the groups from the Linears (q,k,v | o | gate,up | down | lm_head),
 * sums raw scores, applies the monotone fix, computes costs, and solves for
 * requested effective bits b (qs_cell_solve). A Linear whose name fits no
 * group, or a group missing members, fails naming it. Infeasible budgets fail
 * with status 2 and leave is_satisfied false. */
bool qs_cell_finish(qs_cell *cell, double effective_bits, qs_error *err);

/* Re-runs the knapsack on the stored (monotone) group scores and costs at a new
 * budget; replaces search and the chosen choices. Scores never change. On
 * failure (infeasible: status 2) the cell keeps its previous selection. */
bool qs_cell_solve(qs_cell *cell, double effective_bits, qs_error *err);

/* Suffix of a group's key in ModelOpt's search state. */
#define QS_RECIPE_SUFFIX ".quant_recipe"

/* "<handle>.quant_recipe" (caller frees). */
char *qs_group_recipe_name(const qs_cell_group *g);

/* Max of a group's non-NONE monotone scores (0 for a NONE-only group): the
 * manifest's `importance` and the report's sort key. */
double qs_group_importance(const qs_cell_group *g);

/* Indices of the groups sorted by importance, stable; ascending (ranking) or
 * descending (report tables). order has ngroups entries. */
void qs_cell_group_order(const qs_cell *cell, bool descending, size_t *order);

/* Config value of a report style ("head" | "committed") and back; false for
 * an unknown name. */
const char *qs_report_style_name(qs_report_style style);
bool qs_report_style_parse(const char *name, qs_report_style *out);

#endif
