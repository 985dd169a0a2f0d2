#define _POSIX_C_SOURCE 200809L
#include "config/sweep.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/strbuf.h"

/* One entry of the ordered map: a key element and its "key=value" texts. */
typedef struct axis {
  char *key;
  char **texts;
  size_t n, cap;
} axis;

static void axis_add(axis *a, const char *key, const char *value) {
  qs_strbuf b = {0};
  qs_sb_append(&b, key);
  if (value) qs_sb_printf(&b, "=%s", value);
  qs_grow((void **)&a->texts, &a->cap, a->n + 1, sizeof *a->texts);
  a->texts[a->n++] = qs_sb_take(&b);
}

static void axis_clear(axis *a) {
  for (size_t k = 0; k < a->n; k++) free(a->texts[k]);
  free(a->texts);
  a->texts = NULL;
  a->n = a->cap = 0;
}

static bool matches_any(const char *name, char **patterns, size_t n) {
  for (size_t k = 0; k < n; k++)
    if (fnmatch(patterns[k], name, 0) == 0) return true;
  return false;
}

static void add_element(axis *a, const char *key, const qs_node *v) {
  char *text = qs_override_element_text(v);
  axis_add(a, key, text);
  free(text);
}

static const char *sweep_type_name(qs_sweep_kind kind) {
  switch (kind) {
  case QS_SWEEP_INTERVAL: return "INTERVAL_SWEEP";
  case QS_SWEEP_GLOB: return "GLOB_CHOICE_SWEEP";
  case QS_SWEEP_RANGE: return "RANGE_SWEEP";
  case QS_SWEEP_CHOICE: return "CHOICE_SWEEP";
  case QS_SWEEP_LIST: return "SIMPLE_CHOICE_SWEEP";
  case QS_SWEEP_NONE: break;
  }
  return "ELEMENT";
}

/* Fills a (emptied) with the texts of one override. */
static bool fill_axis(axis *a, const qs_override *ov, const qs_repo *repo, qs_error *err) {
  switch (ov->sweep) {
  case QS_SWEEP_NONE:
    if (ov->has_value) {
      axis_add(a, a->key, ov->value_text);
    } else {
      /* Hydra writes "~key" back as "~key=null". */
      qs_node *null = qs_node_null();
      add_element(a, a->key, null);
      qs_node_free(null);
    }
    return true;
  case QS_SWEEP_LIST:
  case QS_SWEEP_CHOICE:
  case QS_SWEEP_RANGE:
    /* The texts as typed: Hydra keeps quoted elements quoted ("a,b", 'c d'). */
    for (size_t k = 0; k < ov->n_values; k++) axis_add(a, a->key, ov->value_texts[k]);
    return true;
  case QS_SWEEP_GLOB: {
    size_t n;
    char **options = qs_repo_options(repo, ov->key, &n);
    for (size_t k = 0; k < n; k++)
      if (matches_any(options[k], ov->glob_include, ov->n_include) &&
          !matches_any(options[k], ov->glob_exclude, ov->n_exclude))
        axis_add(a, a->key, options[k]);
    qs_strv_free(options, n);
    return true;
  }
  case QS_SWEEP_INTERVAL: break;
  }
  return qs_fail(err, QS_EXIT_USAGE, "BasicSweeper does not support sweep type : %s", sweep_type_name(ov->sweep));
}

static void product(const axis *axes, size_t n_axes, qs_sweep *out) {
  size_t total = 1;
  for (size_t k = 0; k < n_axes; k++) total *= axes[k].n;
  out->jobs = qs_calloc(total ? total : 1, sizeof *out->jobs);
  out->n_jobs = total;
  for (size_t j = 0; j < total; j++) {
    qs_sweep_job *job = &out->jobs[j];
    job->overrides = qs_calloc(n_axes ? n_axes : 1, sizeof *job->overrides);
    job->n_overrides = n_axes;
    /* Mixed-radix digits of j, the last axis least significant. */
    size_t rest = j;
    for (size_t k = n_axes; k-- > 0;) {
      job->overrides[k] = qs_strdup(axes[k].texts[rest % axes[k].n]);
      rest /= axes[k].n;
    }
  }
}

bool qs_sweep_expand(const qs_override *ovs, size_t n_ovs, const qs_repo *repo, qs_sweep *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  axis *axes = qs_calloc(n_ovs ? n_ovs : 1, sizeof *axes);
  size_t n_axes = 0;
  bool ok = true;
  for (size_t k = 0; ok && k < n_ovs; k++) {
    char *key = qs_override_key_element(&ovs[k]);
    size_t slot = 0;
    while (slot < n_axes && strcmp(axes[slot].key, key) != 0) slot++;
    if (slot == n_axes) axes[n_axes++].key = key;
    else free(key);
    /* A repeated key replaces the values but keeps its first position. */
    axis_clear(&axes[slot]);
    ok = fill_axis(&axes[slot], &ovs[k], repo, err);
  }
  if (ok) product(axes, n_axes, out);
  for (size_t k = 0; k < n_axes; k++) {
    axis_clear(&axes[k]);
    free(axes[k].key);
  }
  free(axes);
  return ok;
}

void qs_sweep_free(qs_sweep *s) {
  for (size_t j = 0; j < s->n_jobs; j++) {
    for (size_t k = 0; k < s->jobs[j].n_overrides; k++) free(s->jobs[j].overrides[k]);
    free(s->jobs[j].overrides);
  }
  free(s->jobs);
  memset(s, 0, sizeof *s);
}

bool qs_sweep_validate(const qs_override *ovs, size_t n_ovs, bool multirun, qs_error *err) {
  for (size_t k = 0; k < n_ovs; k++) {
    const qs_override *ov = &ovs[k];
    if (ov->sweep == QS_SWEEP_NONE) continue;
    if (multirun && ov->is_hydra)
      return qs_fail(err, QS_EXIT_USAGE, "Sweeping over Hydra's configuration is not supported : '%s'", ov->input);
    if (multirun) continue;
    if (ov->sweep == QS_SWEEP_LIST)
      return qs_fail(err, QS_EXIT_USAGE,
                     "Ambiguous value for argument '%s'\n"
                     "1. To use it as a list, use key=[value1,value2]\n"
                     "2. To use it as string, quote the value: key=\\'value1,value2\\'\n"
                     "3. To sweep over it, add --multirun to your command line",
                     ov->input);
    return qs_fail(err, QS_EXIT_USAGE, "Sweep parameters '%s' requires --multirun", ov->input);
  }
  return true;
}
