/* The search at Qwen3-VL-4B scale: the spec's group sizes and budget numbers
 * (§4.4, §6.7), and a 145-group instance with the full capacity of 392,800
 * table steps, checked against an independent capacity-form DP. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "core/pyfmt.h"
#include "search/search.h"

#define LAYERS 36
#define NG (LAYERS * 4 + 1)

/* §4.4 NONE costs per layer: q(+k,v), o, gate(+up), down; then lm_head. */
static const long long SIZES[4] = {15728640, 10485760, 49807360, 24903680};
static const long long LM_HEAD = 388956160;
static const long long VISION = 412614656; /* Hydra-era NONE-only vision groups */

static uint32_t rng_state = 1234567u;
static double random_score(void) {
  rng_state = rng_state * 1664525u + 1013904223u;
  return (double)(rng_state >> 8) / 16777216.0 * 60.0;
}

typedef struct model {
  int n;
  qs_search_group g[NG];
  double bits[NG][4], scores[NG][4];
} model;

/* 144 LM groups (+ lm_head) with the given cost bits per choice (NONE last). */
static void make_model(model *m, bool lm_head, const double *bits, int nch) {
  m->n = LAYERS * 4 + (lm_head ? 1 : 0);
  for (int i = 0; i < m->n; i++) {
    for (int r = 0; r < nch; r++) {
      m->bits[i][r] = bits[r];
      m->scores[i][r] = r == nch - 1 ? 0.0 : random_score();
    }
    qs_monotone_fix(m->scores[i], m->scores[i], nch, QS_MONOTONE_HEAD);
    m->g[i] = (qs_search_group){NULL, i < LAYERS * 4 ? SIZES[i % 4] : LM_HEAD, nch, m->bits[i], m->scores[i]};
  }
}

static void spec_numbers(void) {
  model m;
  qs_error err;
  qs_search *s;
  qs_search_result res;
  char buf[40];
  const double int8[] = {8, 16};
  make_model(&m, false, int8, 2);
  CHECK(qs_search_build(m.g, (size_t)m.n, 0, 0, &s, &err));
  CHECK_INT(qs_search_total_numel(s), 3633315840LL);
  CHECK(qs_search_solve(s, 8.0, &res, &err));
  CHECK_STR(qs_py_float_repr(res.effective_bits, buf, sizeof buf), "8.0");
  int all8 = 1;
  double sum = 0;
  for (int i = 0; i < m.n; i++) all8 &= res.choice[i] == 0, sum += m.scores[i][0];
  CHECK(all8 && res.score == sum);
  qs_search_result_free(&res);
  CHECK(qs_search_solve(s, 16.0, &res, &err) && res.score == 0.0 && res.effective_bits == 16.0);
  qs_search_result_free(&res);
  qs_search_free(s);
  /* Hydra-era sweep: lm_head searched, vision NONE-only in the denominator; the
   * all-8-bit selection reports 8.744307014821711 under b' = 8.74530701482171. */
  make_model(&m, true, int8, 2);
  CHECK(qs_search_build(m.g, (size_t)m.n, VISION, 0, &s, &err));
  CHECK_INT(qs_search_total_numel(s), 4434886656LL);
  CHECK_STR(qs_py_float_repr(qs_search_min_bits(s), buf, sizeof buf), "8.744307014821711");
  CHECK(qs_search_solve(s, 8.74530701482171, &res, &err));
  CHECK_STR(qs_py_float_repr(res.effective_bits, buf, sizeof buf), "8.744307014821711");
  qs_search_result_free(&res);
  CHECK(!qs_search_solve(s, 8.7443, &res, &err)); /* just below: infeasible, not a fallback */
  CHECK(strstr(err.msg, "8.744307014821711") != NULL);
  qs_search_result_free(&res);
  qs_search_free(s);
}

/* Minimal score within every capacity c <= cap, by the textbook "at most c"
 * DP over groups in forward order (no reconstruction, no offsets), on the same
 * integer weights. Returns f[0..cap]; the caller frees it. */
static double *capacity_dp(const model *m, long long unit, long long cap) {
  double *f = malloc((size_t)(cap + 1) * sizeof *f), *g = malloc((size_t)(cap + 1) * sizeof *g);
  for (long long c = 0; c <= cap; c++) f[c] = 0;
  for (int i = 0; i < m->n; i++) {
    for (long long c = 0; c <= cap; c++) {
      double best = INFINITY;
      for (int r = 0; r < m->g[i].nchoices; r++) {
        long long w = (long long)(2 * m->g[i].numel * m->bits[i][r]) / unit;
        if (w <= c && f[c - w] + m->scores[i][r] < best) best = f[c - w] + m->scores[i][r];
      }
      g[c] = best;
    }
    double *t = f;
    f = g;
    g = t;
  }
  free(g);
  return f;
}

static double seconds(struct timespec a, struct timespec b) {
  return (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
}

static void full_scale(void) {
  model m;
  qs_error err;
  qs_search *s;
  /* NVFP4 at 4.5 bits, INT8, NONE: the gcd of 2*numel*bits is 327,680 and the
   * all-NONE cost is 392,800 steps. */
  const double bits[] = {4.5, 8, 16};
  make_model(&m, true, bits, 3);
  struct timespec t0, t1, t2;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK(qs_search_build(m.g, (size_t)m.n, 0, 0, &s, &err));
  clock_gettime(CLOCK_MONOTONIC, &t1);
  qs_pareto f;
  qs_search_front(s, &f);
  clock_gettime(CLOCK_MONOTONIC, &t2);
  printf("145 groups, 392,800 steps: build %.3f s, Pareto front (%zu points) %.3f s\n",
         seconds(t0, t1), f.n, seconds(t1, t2));
  const long long unit = 327680;
  double *at_most = capacity_dp(&m, unit, 392800);
  CHECK(at_most[392800] == 0.0 && isinf(at_most[392800 * 9 / 32 - 1]));
  const double budgets[] = {4.5, 5.0, 6.0, 7.25, 9.0, 12.0, 15.9};
  for (int k = 0; k < 7; k++) {
    qs_search_result res;
    CHECK(qs_search_solve(s, budgets[k], &res, &err));
    long long cap = (long long)floor(32.0 * res.budget / (double)unit + 1e-9);
    double want = at_most[cap];
    /* different summation orders of up to 145 terms: 1e-12 relative */
    CHECK_REL(res.score, want, 1e-12, 1e-300);
    CHECK(res.effective_bits <= budgets[k]);
    /* the front's best point within this budget has the same score */
    size_t p = 0;
    while (p + 1 < f.n && f.effective_bits[p + 1] <= res.effective_bits) p++;
    CHECK(f.score[p] == res.score && f.effective_bits[p] == res.effective_bits);
    qs_search_result_free(&res);
  }
  free(at_most);
  int monotone = 1;
  for (size_t p = 1; p < f.n; p++) monotone &= f.cost[p] > f.cost[p - 1] && f.score[p] < f.score[p - 1];
  CHECK(monotone);
  CHECK(f.effective_bits[0] == 4.5 && f.score[f.n - 1] == 0.0);
  qs_pareto_free(&f);
  qs_search_free(s);
}

int main(void) {
  spec_numbers();
  full_scale();
  return check_summary("test_search_4b");
}
