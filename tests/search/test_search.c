/* Exact knapsack search against brute force on random small instances
 * (optimum, tie rules, Pareto front), plus the monotone fix, choice order,
 * infeasibility and malformed input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "search/search.h"

#define MAXG 6
#define MAXC 4

static uint32_t rng_state = 88172645u;
static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

typedef struct instance {
  int n;
  long long numel[MAXG], extra;
  int nch[MAXG];
  double bits[MAXG][MAXC], scores[MAXG][MAXC];
  qs_search_group groups[MAXG];
} instance;

static void random_instance(instance *in, bool integer_scores) {
  static const double bits[] = {4, 4.5, 8, 16};
  static const long long sizes[] = {64, 96, 128, 320, 1024, 33};
  in->n = 1 + (int)(rng() % MAXG);
  in->extra = rng() % 3 == 0 ? (long long)(rng() % 500) : 0;
  for (int g = 0; g < in->n; g++) {
    in->numel[g] = sizes[rng() % 6];
    in->nch[g] = 1 + (int)(rng() % MAXC);
    for (int r = 0; r < in->nch[g]; r++) {
      in->bits[g][r] = r == in->nch[g] - 1 ? 16 : bits[rng() % 4];
      /* integers from a small range make exact ties and zeros common */
      in->scores[g][r] = integer_scores ? (double)(rng() % 4) : (double)rng() / 4294967296.0 * 10.0;
    }
    in->groups[g] = (qs_search_group){NULL, in->numel[g], in->nch[g], in->bits[g], in->scores[g]};
  }
}

static long long gcd_ll(long long a, long long b) { return b ? gcd_ll(b, a % b) : a; }

typedef struct brute {
  bool feasible;
  int choice[MAXG];
  double score;
  long long units; /* Σ 2*numel*bits of the best selection */
} brute;

/* Enumerates every selection: feasible when Σ w/g <= floor((32B - 32 extra)/g + 1e-9);
 * best = lowest score (summed in group order), then lowest Σw, then the
 * lexicographically smallest choice vector (enumeration order). */
static brute brute_force(const instance *in, double b) {
  long long g = 0, total = in->extra;
  for (int i = 0; i < in->n; i++) {
    total += in->numel[i];
    for (int r = 0; r < in->nch[i]; r++) g = gcd_ll(g, (long long)(2 * in->numel[i] * in->bits[i][r]));
  }
  double budget = b / 16.0 * (double)total;
  double cap = floor((32.0 * budget - 32.0 * (double)in->extra) / (double)g + 1e-9);
  brute best = {.feasible = false};
  int idx[MAXG] = {0};
  for (;;) {
    double score = 0;
    long long w = 0;
    for (int i = 0; i < in->n; i++) {
      score += in->scores[i][idx[i]];
      w += (long long)(2 * in->numel[i] * in->bits[i][idx[i]]);
    }
    if ((double)(w / g) <= cap &&
        (!best.feasible || score < best.score || (score == best.score && w < best.units))) {
      best.feasible = true;
      best.score = score;
      best.units = w;
      memcpy(best.choice, idx, sizeof idx);
    }
    int i = in->n - 1;
    while (i >= 0 && ++idx[i] == in->nch[i]) idx[i--] = 0;
    if (i < 0) break;
  }
  return best;
}

/* min score per exact Σw (w = 2*numel*bits), then the strictly improving
 * points in cost order; cost = Σw/32 + extra. */
static int brute_front(const instance *in, double *cost_out, double *score_out) {
  enum { MAXW = 1 << 18 }; /* > 6 groups * 2 * 1024 * 16 */
  static double min_at[MAXW];
  for (int w = 0; w < MAXW; w++) min_at[w] = INFINITY;
  int idx[MAXG] = {0};
  for (;;) {
    double score = 0;
    long long w = 0;
    for (int i = 0; i < in->n; i++) {
      score += in->scores[i][idx[i]];
      w += (long long)(2 * in->numel[i] * in->bits[i][idx[i]]);
    }
    if (score < min_at[w]) min_at[w] = score;
    int i = in->n - 1;
    while (i >= 0 && ++idx[i] == in->nch[i]) idx[i--] = 0;
    if (i < 0) break;
  }
  int n = 0;
  double run = INFINITY;
  for (int w = 0; w < MAXW; w++)
    if (min_at[w] < run) {
      run = min_at[w];
      cost_out[n] = (double)w / 32.0 + (double)in->extra;
      score_out[n++] = run;
    }
  return n;
}

static void against_brute_force(bool integer_scores) {
  int mismatches = 0, infeasible = 0, solved = 0;
  for (int trial = 0; trial < 400; trial++) {
    instance in;
    random_instance(&in, integer_scores);
    qs_search *s;
    qs_error err;
    CHECK(qs_search_build(in.groups, (size_t)in.n, in.extra, 0, &s, &err));
    for (int k = 0; k < 6; k++) {
      double b = 3.0 + (double)(rng() % 1400) / 100.0;
      if (k == 0) b = qs_search_min_bits(s); /* exactly the cheapest selection */
      brute want = brute_force(&in, b);
      qs_search_result res;
      bool ok = qs_search_solve(s, b, &res, &err);
      if (ok != want.feasible || ok != res.is_satisfied) mismatches++;
      if (!ok) {
        infeasible++;
        CHECK_INT(err.status, QS_EXIT_USAGE);
        CHECK(res.choice[0] == -1);
      } else {
        solved++;
        if (integer_scores) { /* exact sums: the very same selection */
          for (int i = 0; i < in.n; i++) mismatches += res.choice[i] != want.choice[i];
          mismatches += res.score != want.score;
        } else { /* real scores: same optimum up to summation order */
          mismatches += fabs(res.score - want.score) > 1e-12 * fabs(want.score) + 1e-300;
        }
        CHECK(res.cost <= res.budget * (1 + 1e-12));
        double cost = (double)in.extra;
        for (int i = 0; i < in.n; i++) cost += (double)in.numel[i] * in.bits[i][res.choice[i]] / 16.0;
        CHECK(cost == res.cost);
      }
      qs_search_result_free(&res);
    }
    if (integer_scores) {
      double bc[4096], bs[4096];
      int nb = brute_front(&in, bc, bs);
      qs_pareto f;
      qs_search_front(s, &f);
      CHECK_INT(f.n, nb);
      for (size_t p = 0; p < f.n && (int)p < nb; p++) {
        mismatches += f.cost[p] != bc[p] || f.score[p] != bs[p];
        if (p) CHECK(f.effective_bits[p] > f.effective_bits[p - 1] && f.score[p] < f.score[p - 1]);
      }
      CHECK(f.effective_bits[0] == qs_search_min_bits(s));
      qs_pareto_free(&f);
    }
    qs_search_free(s);
  }
  CHECK_INT(mismatches, 0);
  CHECK(infeasible > 50 && solved > 500); /* both outcomes really exercised */
}

static void tie_rules(void) {
  qs_error err;
  qs_search *s;
  qs_search_result res;
  /* Equal scores and costs: group by group the earlier choice (A compressed, B NONE). */
  double bits2[] = {4, 16}, sc[] = {1, 0};
  qs_search_group eq[] = {{"A", 1, 2, bits2, sc}, {"B", 1, 2, bits2, sc}};
  CHECK(qs_search_build(eq, 2, 0, 0, &s, &err));
  CHECK(qs_search_solve(s, 10.0, &res, &err)); /* room for one NONE only */
  CHECK(res.choice[0] == 0 && res.choice[1] == 1 && res.score == 1.0);
  qs_search_result_free(&res);
  qs_search_free(s);
  /* Equal scores, different costs: the cheaper selection (A 8-bit, B 4-bit) wins
   * over the lexicographically earlier but dearer one (A 4-bit, B NONE). */
  double ab[] = {4, 8}, as[] = {1, 0}, bb[] = {4, 16}, bs[] = {1, 0};
  qs_search_group cost_tie[] = {{"A", 1, 2, ab, as}, {"B", 1, 2, bb, bs}};
  CHECK(qs_search_build(cost_tie, 2, 0, 0, &s, &err));
  CHECK(qs_search_solve(s, 10.0, &res, &err));
  CHECK(res.choice[0] == 1 && res.choice[1] == 0 && res.score == 1.0);
  CHECK(res.cost == 12.0 / 16.0 && res.effective_bits == 6.0);
  qs_search_result_free(&res);
  /* zero scores everywhere: the cheapest selection, however large the budget */
  qs_search_free(s);
  double zs[] = {0, 0};
  qs_search_group zero[] = {{"A", 4, 2, bits2, zs}, {"B", 4, 2, bits2, zs}};
  CHECK(qs_search_build(zero, 2, 0, 0, &s, &err));
  CHECK(qs_search_solve(s, 16.0, &res, &err));
  CHECK(res.choice[0] == 0 && res.choice[1] == 0 && res.effective_bits == 4.0);
  qs_search_result_free(&res);
  qs_search_free(s);
}

static void infeasible_and_malformed(void) {
  qs_error err;
  qs_search *s;
  qs_search_result res;
  double bits[] = {8, 16}, sc[] = {2.5, 0};
  qs_search_group g[] = {{"model.language_model.layers.0.mlp.down_proj.quant_recipe", 100, 2, bits, sc}};
  CHECK(qs_search_build(g, 1, 0, 0, &s, &err));
  CHECK(!qs_search_solve(s, 7.5, &res, &err));
  CHECK(!res.is_satisfied && res.choice[0] == -1);
  CHECK_INT(err.status, QS_EXIT_USAGE);
  CHECK(strstr(err.msg, "effective_bits 7.5 is infeasible") && strstr(err.msg, "needs 8.0 effective bits"));
  qs_search_result_free(&res);
  CHECK(!qs_search_solve(s, NAN, &res, &err));
  qs_search_result_free(&res);
  CHECK(qs_search_solve(s, 8.0, &res, &err) && res.choice[0] == 0 && res.score == 2.5);
  qs_search_result_free(&res);
  qs_search_free(s);
  /* malformed groups name the group */
  double nan_sc[] = {NAN, 0}, odd_bits[] = {4.3, 16};
  qs_search_group bad[] = {{"g.nan", 100, 2, bits, nan_sc}, {"g.bits", 100, 2, odd_bits, sc},
                           {"g.none", 100, 0, bits, sc},   {"g.size", 0, 2, bits, sc}};
  const char *want[] = {"g.nan", "g.bits", "g.none", "g.size"};
  for (int i = 0; i < 4; i++) {
    CHECK(!qs_search_build(&bad[i], 1, 0, 0, &s, &err));
    CHECK(s == NULL && strstr(err.msg, want[i]) != NULL);
    CHECK_INT(err.status, QS_EXIT_RUNTIME);
  }
  CHECK(!qs_search_build(g, 0, 0, 0, &s, &err));
  /* a table over the byte limit is refused, not attempted */
  CHECK(!qs_search_build(g, 1, 0, 1, &s, &err)); /* needs 2 bytes */
  CHECK(strstr(err.msg, "byte limit") != NULL);
}

static void monotone_and_order(void) {
  double raw[] = {5, 7, 6, 0}, head[4], old[4];
  qs_monotone_fix(raw, head, 4, QS_MONOTONE_HEAD);
  qs_monotone_fix(raw, old, 4, QS_MONOTONE_V037);
  CHECK(head[0] == 5 && head[1] == 5 && head[2] == 5 && head[3] == 0);
  CHECK(old[0] == 5 && old[1] == 5 && old[2] == 6 && old[3] == 0); /* compares with raw 7 */
  double two[] = {3.5, 0}, fixed2[2];
  qs_monotone_fix(two, fixed2, 2, QS_MONOTONE_HEAD); /* one format + NONE: a no-op */
  CHECK(fixed2[0] == 3.5 && fixed2[1] == 0);
  double in_place[] = {1, 4, 2};
  qs_monotone_fix(in_place, in_place, 3, QS_MONOTONE_HEAD);
  CHECK(in_place[1] == 1 && in_place[2] == 1);
  double bits[] = {8, 4, 16, 4.5, 4};
  int order[5];
  qs_choice_order(bits, 5, order);
  CHECK(order[0] == 1 && order[1] == 4 && order[2] == 3 && order[3] == 0 && order[4] == 2);
}

int main(void) {
  against_brute_force(true);
  against_brute_force(false);
  tie_rules();
  infeasible_and_malformed();
  monotone_and_order();
  return check_summary("test_search");
}
