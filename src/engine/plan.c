#include "engine/plan.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

static size_t find_pass(const qs_pass_list *list, const qs_plan_job *jobs, const char *key) {
  for (size_t p = 0; p < list->count; p++)
    if (strcmp(jobs[list->passes[p].jobs[0]].pass_key, key) == 0) return p;
  return list->count;
}

void qs_plan_passes(const qs_plan_job *jobs, size_t njobs, qs_pass_list *out) {
  memset(out, 0, sizeof *out);
  out->passes = qs_calloc(njobs ? njobs : 1, sizeof *out->passes);
  for (size_t j = 0; j < njobs; j++) {
    size_t p = find_pass(out, jobs, jobs[j].pass_key);
    if (p == out->count) {
      out->count++;
      out->passes[p].jobs = qs_calloc(njobs, sizeof(size_t));
    }
    qs_pass *pass = &out->passes[p];
    pass->jobs[pass->njobs++] = j;
    if (jobs[j].n_samples > pass->max_samples) pass->max_samples = jobs[j].n_samples;
  }
  for (size_t p = 0; p < out->count; p++)
    out->passes[p].cost = (double)out->passes[p].max_samples * (3.0 + (double)out->passes[p].njobs);
}

void qs_pass_list_free(qs_pass_list *list) {
  for (size_t p = 0; p < list->count; p++) free(list->passes[p].jobs);
  free(list->passes);
  memset(list, 0, sizeof *list);
}

void qs_plan_assign_ranks(const qs_pass_list *list, int nranks, int *owner) {
  size_t n = list->count;
  size_t *order = qs_malloc((n ? n : 1) * sizeof *order);
  for (size_t i = 0; i < n; i++) order[i] = i;
  /* Insertion sort by descending cost keeps equal costs in pass order. */
  for (size_t i = 1; i < n; i++)
    for (size_t k = i; k > 0 && list->passes[order[k]].cost > list->passes[order[k - 1]].cost; k--) {
      size_t t = order[k];
      order[k] = order[k - 1];
      order[k - 1] = t;
    }
  double *load = qs_calloc((size_t)nranks, sizeof *load);
  for (size_t i = 0; i < n; i++) {
    int best = 0;
    for (int r = 1; r < nranks; r++)
      if (load[r] < load[best]) best = r;
    owner[order[i]] = best;
    load[best] += list->passes[order[i]].cost;
  }
  free(load);
  free(order);
}
