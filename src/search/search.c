#include "search/search.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/pyfmt.h"

enum { NO_CHOICE = 0xff };

struct qs_search {
  size_t ngroups;
  char **names;
  long long *numel;
  int *nchoices;
  size_t *first;      /* group i's choices are [first[i], first[i] + nchoices[i]) */
  double *bits;       /* per choice */
  double *scores;     /* per choice */
  long long *offset;  /* per choice: weight/unit minus the group's cheapest */
  long long unit;     /* gcd of every w = 2*numel*bits */
  long long base;     /* Σ cheapest weight/unit: DP cost c stands for base + c */
  long long range;    /* Σ (dearest - cheapest) weight/unit */
  long long extra;    /* extra_none_numel */
  long long total;    /* Σ numel + extra */
  unsigned char *choice; /* [ngroups][range + 1]: earliest optimal choice of group i
                            for groups i..n-1 at exact cost c */
  double *best;       /* [range + 1]: minimal score of all groups at exact cost c */
};

/* ---- Monotone fix and choice order ------------------------------------------ */

void qs_choice_order(const double *bits, int n, int *order) {
  for (int i = 0; i < n; i++) {
    int j = i;
    for (; j > 0 && bits[order[j - 1]] > bits[i]; j--) order[j] = order[j - 1];
    order[j] = i;
  }
}

void qs_monotone_fix(const double *raw, double *fixed, int n, qs_monotone_rule rule) {
  double prev_raw = n > 0 ? raw[0] : 0;
  if (n > 0) fixed[0] = raw[0];
  for (int k = 1; k < n; k++) {
    double limit = rule == QS_MONOTONE_HEAD ? fixed[k - 1] : prev_raw;
    prev_raw = raw[k];
    fixed[k] = raw[k] < limit ? raw[k] : limit;
  }
}

/* ---- Building ------------------------------------------------------------------ */

static unsigned long long gcd_u64(unsigned long long a, unsigned long long b) {
  while (b) {
    unsigned long long t = a % b;
    a = b;
    b = t;
  }
  return a;
}

static const char *group_name(const qs_search_group *g, size_t i, char *buf, size_t size) {
  if (g->name) return g->name;
  snprintf(buf, size, "group %zu", i);
  return buf;
}

/* 2*numel*bits as an exact integer, or -1 when bits is not a positive multiple
 * of 0.5 or the product would overflow. */
static long long weight_of(long long numel, double bits) {
  double half_bits = bits * 2.0;
  if (!(half_bits >= 1.0 && half_bits <= 1024.0) || half_bits != floor(half_bits)) return -1;
  long long hb = (long long)half_bits;
  if (numel > LLONG_MAX / hb) return -1;
  return numel * hb;
}

static bool check_group(const qs_search_group *g, size_t i, qs_error *err) {
  char buf[32];
  const char *name = group_name(g, i, buf, sizeof buf);
  if (g->numel <= 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "search group %s: size %lld is not positive", name, g->numel);
  if (g->nchoices < 1 || g->nchoices >= NO_CHOICE)
    return qs_fail(err, QS_EXIT_RUNTIME, "search group %s: %d choices (1 to %d allowed)", name,
                   g->nchoices, NO_CHOICE - 1);
  for (int r = 0; r < g->nchoices; r++) {
    if (weight_of(g->numel, g->bits[r]) < 0)
      return qs_fail(err, QS_EXIT_RUNTIME,
                     "search group %s: choice %d has %g cost bits (a positive multiple of 0.5 "
                     "up to 512 is required)",
                     name, r, g->bits[r]);
    if (!isfinite(g->scores[r]))
      return qs_fail(err, QS_EXIT_RUNTIME, "search group %s: choice %d has a non-finite score (%g)",
                     name, r, g->scores[r]);
  }
  return true;
}

/* Copies the groups and sets unit, offsets, base and range. */
static void copy_groups(qs_search *s, const qs_search_group *groups) {
  size_t nch = 0;
  for (size_t i = 0; i < s->ngroups; i++) nch += (size_t)groups[i].nchoices;
  s->names = qs_calloc(s->ngroups, sizeof *s->names);
  s->numel = qs_malloc(s->ngroups * sizeof *s->numel);
  s->nchoices = qs_malloc(s->ngroups * sizeof *s->nchoices);
  s->first = qs_malloc(s->ngroups * sizeof *s->first);
  s->bits = qs_malloc(nch * sizeof *s->bits);
  s->scores = qs_malloc(nch * sizeof *s->scores);
  s->offset = qs_malloc(nch * sizeof *s->offset);
  unsigned long long g = 0;
  size_t k = 0;
  for (size_t i = 0; i < s->ngroups; i++) {
    const qs_search_group *grp = &groups[i];
    if (grp->name) s->names[i] = qs_strdup(grp->name);
    s->numel[i] = grp->numel;
    s->nchoices[i] = grp->nchoices;
    s->first[i] = k;
    s->total += grp->numel;
    for (int r = 0; r < grp->nchoices; r++, k++) {
      s->bits[k] = grp->bits[r];
      s->scores[k] = grp->scores[r];
      s->offset[k] = weight_of(grp->numel, grp->bits[r]);
      g = gcd_u64(g, (unsigned long long)s->offset[k]);
    }
  }
  s->unit = (long long)g;
  for (size_t i = 0; i < s->ngroups; i++) {
    long long lo = LLONG_MAX, hi = 0;
    for (size_t c = s->first[i]; c < s->first[i] + (size_t)s->nchoices[i]; c++) {
      s->offset[c] /= s->unit;
      lo = s->offset[c] < lo ? s->offset[c] : lo;
      hi = s->offset[c] > hi ? s->offset[c] : hi;
    }
    for (size_t c = s->first[i]; c < s->first[i] + (size_t)s->nchoices[i]; c++) s->offset[c] -= lo;
    s->base += lo;
    s->range += hi - lo;
  }
}

/* Exact-cost DP from the last group to the first, so that reconstruction can
 * walk groups in order and take each group's earliest optimal choice. */
static void run_dp(qs_search *s) {
  size_t width = (size_t)s->range + 1;
  double *cur = qs_malloc(width * sizeof *cur), *next = qs_malloc(width * sizeof *next);
  for (size_t c = 0; c < width; c++) cur[c] = INFINITY;
  cur[0] = 0.0;
  size_t reach = 0; /* largest cost reachable by groups i+1..n-1 */
  for (size_t i = s->ngroups; i-- > 0;) {
    unsigned char *row = s->choice + i * width;
    size_t span = 0;
    for (size_t k = s->first[i]; k < s->first[i] + (size_t)s->nchoices[i]; k++)
      span = (size_t)s->offset[k] > span ? (size_t)s->offset[k] : span;
    for (size_t c = 0; c <= reach + span; c++) next[c] = INFINITY;
    for (int r = 0; r < s->nchoices[i]; r++) {
      size_t k = s->first[i] + (size_t)r, d = (size_t)s->offset[k];
      double score = s->scores[k];
      /* strict < keeps the earliest choice among equal scores */
      for (size_t c = 0; c <= reach; c++) {
        double cand = score + cur[c];
        if (cand < next[c + d]) {
          next[c + d] = cand;
          row[c + d] = (unsigned char)r;
        }
      }
    }
    reach += span;
    double *t = cur;
    cur = next;
    next = t;
  }
  free(next);
  s->best = cur;
}

bool qs_search_build(const qs_search_group *groups, size_t ngroups, long long extra_none_numel,
                     size_t max_table_bytes, qs_search **out, qs_error *err) {
  *out = NULL;
  if (ngroups == 0) return qs_fail(err, QS_EXIT_RUNTIME, "search: no groups to search");
  if (extra_none_numel < 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "search: extra_none_numel %lld is negative", extra_none_numel);
  for (size_t i = 0; i < ngroups; i++)
    if (!check_group(&groups[i], i, err)) return false;
  qs_search *s = qs_calloc(1, sizeof *s);
  s->ngroups = ngroups;
  s->extra = extra_none_numel;
  s->total = extra_none_numel;
  copy_groups(s, groups);
  if (!max_table_bytes) max_table_bytes = (size_t)4 << 30;
  if ((unsigned long long)s->range + 1 > max_table_bytes / ngroups) {
    qs_fail(err, QS_EXIT_RUNTIME,
            "search: the knapsack table needs %zu groups x %lld cost steps, over the %zu-byte "
            "limit (group sizes share too small a common divisor)",
            ngroups, s->range + 1, max_table_bytes);
    qs_search_free(s);
    return false;
  }
  s->choice = qs_malloc(ngroups * ((size_t)s->range + 1));
  memset(s->choice, NO_CHOICE, ngroups * ((size_t)s->range + 1));
  run_dp(s);
  *out = s;
  return true;
}

void qs_search_free(qs_search *s) {
  if (!s) return;
  for (size_t i = 0; i < s->ngroups; i++) free(s->names[i]);
  free(s->names);
  free(s->numel);
  free(s->nchoices);
  free(s->first);
  free(s->bits);
  free(s->scores);
  free(s->offset);
  free(s->choice);
  free(s->best);
  free(s);
}

long long qs_search_total_numel(const qs_search *s) { return s->total; }

/* ModelOpt's formula: (Σ costs / total weight size) * 16. */
static double bits_of_cost(const qs_search *s, double cost) { return cost / (double)s->total * 16.0; }

double qs_search_min_bits(const qs_search *s) {
  return bits_of_cost(s, (double)s->base * (double)s->unit / 32.0 + (double)s->extra);
}

/* ---- Selecting ------------------------------------------------------------------ */

/* Walks the table from DP cost c: each group's earliest optimal choice. Score
 * and cost are then added in group order, as ModelOpt reports them. */
static void select_at(const qs_search *s, size_t c, int *choice, double *score, double *cost) {
  size_t width = (size_t)s->range + 1;
  *score = 0.0;
  *cost = (double)s->extra;
  for (size_t i = 0; i < s->ngroups; i++) {
    int r = s->choice[i * width + c];
    size_t k = s->first[i] + (size_t)r;
    choice[i] = r;
    *score += s->scores[k];
    *cost += (double)s->numel[i] * s->bits[k] / 16.0;
    c -= (size_t)s->offset[k];
  }
}

bool qs_search_solve(const qs_search *s, double effective_bits, qs_search_result *res,
                     qs_error *err) {
  memset(res, 0, sizeof *res);
  res->ngroups = s->ngroups;
  res->choice = qs_malloc(s->ngroups * sizeof *res->choice);
  for (size_t i = 0; i < s->ngroups; i++) res->choice[i] = -1;
  char want[40], least[40];
  if (!isfinite(effective_bits))
    return qs_fail(err, QS_EXIT_USAGE, "effective_bits %s is not a finite number",
                   qs_py_float_repr(effective_bits, want, sizeof want));
  res->budget = effective_bits / 16.0 * (double)s->total;
  /* Capacity in table units over the spent extra weights (§4.6: 32*B/g + 1e-9). */
  double cap = floor((32.0 * res->budget - 32.0 * (double)s->extra) / (double)s->unit + 1e-9);
  if (cap < (double)s->base)
    return qs_fail(err, QS_EXIT_USAGE,
                   "effective_bits %s is infeasible: the most compressed choice of every group "
                   "already needs %s effective bits",
                   qs_py_float_repr(effective_bits, want, sizeof want),
                   qs_py_float_repr(qs_search_min_bits(s), least, sizeof least));
  size_t last = cap - (double)s->base >= (double)s->range ? (size_t)s->range
                                                          : (size_t)(cap - (double)s->base);
  size_t at = 0; /* strict < keeps the lowest cost among equal scores */
  for (size_t c = 1; c <= last; c++)
    if (s->best[c] < s->best[at]) at = c;
  select_at(s, at, res->choice, &res->score, &res->cost);
  res->effective_bits = bits_of_cost(s, res->cost);
  res->is_satisfied = true;
  return true;
}

void qs_search_result_free(qs_search_result *res) {
  free(res->choice);
  res->choice = NULL;
}

/* DP costs whose minimal score beats every smaller cost: the candidate points. */
static size_t count_dp_front(const qs_search *s) {
  size_t n = 0;
  double dp_min = INFINITY;
  for (size_t c = 0; c <= (size_t)s->range; c++)
    if (s->best[c] < dp_min) {
      dp_min = s->best[c];
      n++;
    }
  return n;
}

void qs_search_front(const qs_search *s, qs_pareto *front) {
  size_t most = count_dp_front(s);
  front->n = 0;
  front->cost = qs_malloc(most * sizeof *front->cost);
  front->effective_bits = qs_malloc(most * sizeof *front->effective_bits);
  front->score = qs_malloc(most * sizeof *front->score);
  int *choice = qs_malloc(s->ngroups * sizeof *choice);
  double dp_min = INFINITY;
  for (size_t c = 0; c <= (size_t)s->range; c++) {
    if (!(s->best[c] < dp_min)) continue;
    dp_min = s->best[c];
    double score, cost;
    select_at(s, c, choice, &score, &cost);
    /* reported sums are re-added in group order; keep them strictly decreasing */
    if (front->n && !(score < front->score[front->n - 1])) continue;
    front->cost[front->n] = cost;
    front->effective_bits[front->n] = bits_of_cost(s, cost);
    front->score[front->n] = score;
    front->n++;
  }
  free(choice);
}

void qs_pareto_free(qs_pareto *front) {
  free(front->cost);
  free(front->effective_bits);
  free(front->score);
  memset(front, 0, sizeof *front);
}
