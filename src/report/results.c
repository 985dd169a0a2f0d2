/* Cell construction, grouping (§4.4), monotone fix, costs and search (§4.5-4.6). */
#include "report/results.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

#define NONE_DISPLAY "NONE(effective-bits: 16.0)"

qs_cell *qs_cell_new(void) {
  qs_cell *cell = qs_calloc(1, sizeof *cell);
  cell->score_size = 128;
  cell->coverage_mode = qs_strdup("lm_only");
  cell->monotone_rule = QS_MONOTONE_HEAD;
  cell->report_style = QS_REPORT_HEAD;
  cell->dataset.max_calib_samples = cell->dataset.num_calib_samples = -1;
  cell->dataset.calib_seq_len = cell->dataset.batch_size = cell->dataset.num_calib_batches = -1;
  cell->run.nvfp4_effective_bits = 4.0;
  cell->run.nvfp4_w4a8_block = 16;
  cell->run.batch_size = cell->run.seq_len = -1;
  cell->run.num_calib_steps = cell->run.num_score_steps = -1;
  cell->baseline_loss = NAN;
  cell->timings = (qs_cell_timings){NAN, NAN, NAN, NAN, NAN};
  cell->search.requested_bits = cell->search.effective_bits = NAN;
  cell->search.best_score = NAN;
  return cell;
}

void qs_cell_set_str(char **field, const char *s) {
  free(*field);
  *field = s ? qs_strdup(s) : NULL;
}

static void free_groups(qs_cell *cell) {
  for (size_t i = 0; i < cell->ngroups; i++) {
    qs_cell_group *g = &cell->groups[i];
    free(g->handle);
    free(g->members);
    for (size_t k = 0; k < g->nchoices; k++) free(g->formats[k]);
    free(g->formats);
    free(g->bits);
    free(g->raw_scores);
    free(g->scores);
    free(g->costs);
  }
  free(cell->groups);
  cell->groups = NULL;
  cell->ngroups = 0;
  qs_pareto_free(&cell->search.front);
  memset(&cell->search.front, 0, sizeof cell->search.front);
}

void qs_cell_free(qs_cell *cell) {
  if (!cell) return;
  free_groups(cell);
  free(cell->pair);
  free(cell->weight_format);
  free(cell->act_format);
  free(cell->scheme);
  free(cell->model_id);
  free(cell->coverage_mode);
  for (size_t i = 0; i < cell->nformats; i++) {
    free(cell->formats[i].config_name);
    free(cell->formats[i].display);
  }
  free(cell->formats);
  qs_cell_dataset *d = &cell->dataset;
  free(d->name), free(d->size), free(d->root), free(d->captions_path);
  qs_cell_run *r = &cell->run;
  free(r->precision_mode), free(r->grad_dtype), free(r->mx_scale_rule);
  free(r->act_amax), free(r->name_style), free(r->padding_side);
  free(r->captions_path), free(r->captions_md5);
  for (size_t i = 0; i < cell->nlinears; i++) {
    free(cell->linears[i].name);
    free(cell->linears[i].kind);
    free(cell->linears[i].raw_scores);
    free(cell->linears[i].input_amax);
  }
  free(cell->linears);
  free(cell->sample_tokens);
  free(cell->config_yaml);
  qs_cell_provenance *p = &cell->provenance;
  free(p->tool_version), free(p->git_commit), free(p->checkpoint_checksum), free(p->data_checksum);
  free(cell);
}

void qs_cell_add_format(qs_cell *cell, const char *config_name, const char *display, double bits) {
  cell->formats = qs_realloc(cell->formats, (cell->nformats + 1) * sizeof *cell->formats);
  cell->formats[cell->nformats++] =
      (qs_cell_format){qs_strdup(config_name), qs_strdup(display), bits};
}

void qs_cell_set_pair(qs_cell *cell, const qs_qpair *pair, int custom_index, bool dynamic_act_amax) {
  char display[96], scheme[64];
  double bits = qs_qpair_cost_bits(pair, cell->run.nvfp4_effective_bits);
  qs_qpair_display(pair, custom_index, cell->run.nvfp4_effective_bits, display, sizeof display);
  snprintf(scheme, sizeof scheme, "%s_autoquant_lm", pair->name);
  qs_cell_set_str(&cell->pair, pair->name);
  qs_cell_set_str(&cell->scheme, scheme);
  qs_cell_set_str(&cell->weight_format, pair->weight->name);
  qs_cell_set_str(&cell->act_format, pair->act->name);
  qs_cell_set_str(&cell->run.act_amax, pair->act->kind == QS_QK_NONE ? "none"
                                       : dynamic_act_amax            ? "dynamic"
                                                                     : "static");
  qs_cell_add_format(cell, pair->config_name, display, bits);
}

/* Layer index from "...layers.<N>....", -1 when the name has none (lm_head). */
static int layer_of(const char *name) {
  const char *p = strstr(name, "layers.");
  if (!p || (p != name && p[-1] != '.')) return -1;
  p += strlen("layers.");
  if (*p < '0' || *p > '9') return -1;
  return (int)strtol(p, NULL, 10);
}

qs_cell_linear *qs_cell_add_linear(qs_cell *cell, const char *name, long long numel) {
  cell->linears = qs_realloc(cell->linears, (cell->nlinears + 1) * sizeof *cell->linears);
  qs_cell_linear *lin = &cell->linears[cell->nlinears++];
  const char *dot = strrchr(name, '.');
  *lin = (qs_cell_linear){
      .name = qs_strdup(name),
      .layer = layer_of(name),
      .kind = qs_strdup(dot ? dot + 1 : name),
      .numel = numel,
      .raw_scores = qs_calloc(cell->nformats ? cell->nformats : 1, sizeof(double)),
      .input_amax = qs_calloc(cell->nformats ? cell->nformats : 1, sizeof(double)),
      .weight_amax = NAN,
  };
  for (size_t f = 0; f < cell->nformats; f++) lin->input_amax[f] = NAN;
  return lin;
}

/* ---- grouping (§4.4) ------------------------------------------------------ */

/* Group layout: a leader kind opens a group that its followers join, in order. */
static const struct {
  const char *leader;
  const char *followers[2];
} group_kinds[] = {
    {"q_proj", {"k_proj", "v_proj"}},
    {"o_proj", {NULL, NULL}},
    {"gate_proj", {"up_proj", NULL}},
    {"down_proj", {NULL, NULL}},
    {"lm_head", {NULL, NULL}},
};
enum { NGROUP_KINDS = sizeof group_kinds / sizeof group_kinds[0] };

static int leader_index(const char *kind) {
  for (int i = 0; i < NGROUP_KINDS; i++)
    if (strcmp(group_kinds[i].leader, kind) == 0) return i;
  return -1;
}

static int follower_count(int leader) {
  int n = 0;
  while (n < 2 && group_kinds[leader].followers[n]) n++;
  return n;
}

/* Same module path up to the last component, so k_proj joins its own layer's q_proj. */
static bool same_parent(const char *a, const char *b) {
  const char *da = strrchr(a, '.'), *db = strrchr(b, '.');
  size_t la = da ? (size_t)(da - a) : 0, lb = db ? (size_t)(db - b) : 0;
  return la == lb && strncmp(a, b, la) == 0;
}

/* Indices of the candidate formats in choice order (most compressed first). */
static void format_choice_order(const qs_cell *cell, int *order) {
  double *bits = qs_malloc((cell->nformats + 1) * sizeof *bits);
  for (size_t f = 0; f < cell->nformats; f++) bits[f] = cell->formats[f].bits;
  qs_choice_order(bits, (int)cell->nformats, order);
  free(bits);
}

static bool fill_group(qs_cell *cell, qs_cell_group *g, const int *fmt_order, qs_error *err) {
  bool none_only = cell->linears[g->members[0]].none_only;
  for (size_t m = 0; m < g->nmembers; m++) {
    const qs_cell_linear *lin = &cell->linears[g->members[m]];
    if (lin->none_only != none_only)
      return qs_fail(err, QS_EXIT_RUNTIME,
                     "group %s.quant_recipe mixes NONE-only and searched members (%s)", g->handle,
                     lin->name);
    g->numel += lin->numel;
  }
  g->nchoices = none_only ? 1 : cell->nformats + 1;
  g->formats = qs_calloc(g->nchoices, sizeof *g->formats);
  g->bits = qs_calloc(g->nchoices, sizeof *g->bits);
  g->raw_scores = qs_calloc(g->nchoices, sizeof *g->raw_scores);
  g->scores = qs_calloc(g->nchoices, sizeof *g->scores);
  g->costs = qs_calloc(g->nchoices, sizeof *g->costs);
  size_t none = g->nchoices - 1;
  for (size_t k = 0; k < none; k++) {
    const qs_cell_format *fmt = &cell->formats[fmt_order[k]];
    g->formats[k] = qs_strdup(fmt->display);
    g->bits[k] = fmt->bits;
    double sum = 0.0; /* §4.2: group score summed in fp64 over members in module order */
    for (size_t m = 0; m < g->nmembers; m++)
      sum += cell->linears[g->members[m]].raw_scores[fmt_order[k]];
    g->raw_scores[k] = sum;
  }
  g->formats[none] = qs_strdup(NONE_DISPLAY);
  g->bits[none] = 16.0;
  qs_monotone_fix(g->raw_scores, g->scores, (int)g->nchoices, cell->monotone_rule);
  for (size_t k = 0; k < g->nchoices; k++) g->costs[k] = (double)g->numel * g->bits[k] / 16.0;
  g->chosen = -1;
  return true;
}

/* Appends the group led by linear i and returns the index after its members. */
static bool open_group(qs_cell *cell, size_t i, size_t *next, qs_error *err) {
  const qs_cell_linear *lead = &cell->linears[i];
  int kind = leader_index(lead->kind);
  if (kind < 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "Linear %s does not start a search group (§4.4)",
                   lead->name);
  int nf = follower_count(kind);
  qs_cell_group *g = &cell->groups[cell->ngroups++];
  g->handle = qs_strdup(lead->name);
  g->members = qs_malloc((size_t)(nf + 1) * sizeof *g->members);
  g->members[g->nmembers++] = i;
  for (int f = 0; f < nf; f++) {
    size_t j = i + 1 + (size_t)f;
    if (j >= cell->nlinears || strcmp(cell->linears[j].kind, group_kinds[kind].followers[f]) != 0 ||
        !same_parent(lead->name, cell->linears[j].name))
      return qs_fail(err, QS_EXIT_RUNTIME, "group %s.quant_recipe lacks its %s (expected next)",
                     lead->name, group_kinds[kind].followers[f]);
    g->members[g->nmembers++] = j;
  }
  *next = i + 1 + (size_t)nf;
  return true;
}

static bool build_groups(qs_cell *cell, qs_error *err) {
  free_groups(cell);
  cell->groups = qs_calloc(cell->nlinears ? cell->nlinears : 1, sizeof *cell->groups);
  int *fmt_order = qs_malloc((cell->nformats + 1) * sizeof *fmt_order);
  format_choice_order(cell, fmt_order);
  bool ok = true;
  for (size_t i = 0; ok && i < cell->nlinears;) {
    ok = open_group(cell, i, &i, err) &&
         fill_group(cell, &cell->groups[cell->ngroups - 1], fmt_order, err);
  }
  free(fmt_order);
  if (ok && cell->ngroups == 0) ok = qs_fail(err, QS_EXIT_RUNTIME, "no Linear to search");
  return ok;
}

bool qs_cell_finish(qs_cell *cell, double effective_bits, qs_error *err) {
  return build_groups(cell, err) && qs_cell_solve(cell, effective_bits, err);
}

/* ---- search (§4.5-4.6) ---------------------------------------------------- */

bool qs_cell_solve(qs_cell *cell, double effective_bits, qs_error *err) {
  qs_search_group *sg = qs_calloc(cell->ngroups, sizeof *sg);
  char **names = qs_calloc(cell->ngroups, sizeof *names);
  for (size_t i = 0; i < cell->ngroups; i++) {
    const qs_cell_group *g = &cell->groups[i];
    names[i] = qs_group_recipe_name(g);
    sg[i] = (qs_search_group){names[i], g->numel, (int)g->nchoices, g->bits, g->scores};
  }
  qs_search *s = NULL;
  qs_search_result res = {0};
  bool ok = qs_search_build(sg, cell->ngroups, cell->extra_none_numel, 0, &s, err) &&
            qs_search_solve(s, effective_bits, &res, err);
  if (ok) {
    qs_pareto_free(&cell->search.front);
    qs_search_front(s, &cell->search.front);
    cell->search.requested_bits = effective_bits;
    cell->search.effective_bits = res.effective_bits;
    cell->search.best_score = res.score;
    cell->search.is_satisfied = res.is_satisfied;
    cell->search.cost_denominator = (double)qs_search_total_numel(s);
    for (size_t i = 0; i < cell->ngroups; i++) cell->groups[i].chosen = res.choice[i];
  }
  qs_search_result_free(&res);
  qs_search_free(s);
  for (size_t i = 0; i < cell->ngroups; i++) free(names[i]);
  free(names);
  free(sg);
  return ok;
}

char *qs_group_recipe_name(const qs_cell_group *g) {
  char *name = qs_malloc(strlen(g->handle) + sizeof QS_RECIPE_SUFFIX);
  strcpy(name, g->handle);
  return strcat(name, QS_RECIPE_SUFFIX);
}

double qs_group_importance(const qs_cell_group *g) {
  double best = 0.0;
  for (size_t k = 0; k + 1 < g->nchoices; k++)
    if (k == 0 || g->scores[k] > best) best = g->scores[k];
  return best;
}

/* Stable insertion sort by importance: ties keep group order (Python's sort is
 * stable, §7.11). Group counts are in the hundreds, so O(n²) is immaterial. */
void qs_cell_group_order(const qs_cell *cell, bool descending, size_t *order) {
  for (size_t i = 0; i < cell->ngroups; i++) {
    double key = qs_group_importance(&cell->groups[i]);
    size_t j = i;
    while (j > 0) {
      double prev = qs_group_importance(&cell->groups[order[j - 1]]);
      if (descending ? !(key > prev) : !(key < prev)) break;
      order[j] = order[j - 1];
      j--;
    }
    order[j] = i;
  }
}

static const char *const report_style_names[] = {[QS_REPORT_HEAD] = "head", [QS_REPORT_COMMITTED] = "committed"};

const char *qs_report_style_name(qs_report_style style) { return report_style_names[style]; }

bool qs_report_style_parse(const char *name, qs_report_style *out) {
  for (int s = QS_REPORT_HEAD; s <= QS_REPORT_COMMITTED; s++) {
    if (name && strcmp(name, report_style_names[s]) == 0) {
      *out = (qs_report_style)s;
      return true;
    }
  }
  return false;
}
