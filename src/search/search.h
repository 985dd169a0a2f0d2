/* Budgeted recipe search (spec quant-and-scoring.md §4.5-4.6): monotone score
 * fix, bit budget, and the exact multiple-choice knapsack with its Pareto front.
 *
 * Each group picks one choice (a format, or NONE) with cost numel*bits/16; the
 * search minimizes the summed score subject to summed cost <= budget. Weights
 * are the integers w = 2*numel*bits (= 32*cost), divided by their gcd. One DP
 * table over every reachable cost answers any budget (re-solve without
 * rescoring) and yields the whole Pareto front. */
#ifndef QSENS_SEARCH_SEARCH_H
#define QSENS_SEARCH_SEARCH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

/* ---- Monotone fix and choice order (§4.5) ---------------------------------- */

typedef enum qs_monotone_rule {
  QS_MONOTONE_HEAD, /* score'_k = min(score_k, score'_{k-1}) (ModelOpt HEAD, default) */
  QS_MONOTONE_V037, /* score'_k = min(score_k, score_{k-1}) (ModelOpt 0.37: raw previous) */
} qs_monotone_rule;

/* Indices of n choices sorted by cost bits ascending (most compressed first,
 * NONE = 16 last); equal bits keep their configured order. */
void qs_choice_order(const double *bits, int n, int *order);

/* Monotone fix of scores given in choice order; fixed may alias raw. */
void qs_monotone_fix(const double *raw, double *fixed, int n, qs_monotone_rule rule);

/* ---- Knapsack (§4.6) -------------------------------------------------------- */

typedef struct qs_search_group {
  const char *name;     /* "<handle>.quant_recipe", for messages */
  long long numel;      /* Σ numel of the members = cost of NONE */
  int nchoices;         /* 1..255, in choice order (NONE last) */
  const double *bits;   /* cost bits per choice; 2*bits must be an integer (4, 4.5, 8, 16) */
  const double *scores; /* monotone-fixed scores per choice (NONE 0), finite */
} qs_search_group;

typedef struct qs_search qs_search; /* the solved DP table */

/* Builds the DP table. extra_none_numel: weights outside the search that stay
 * unquantized (e.g. a vision tower) but count in the budget denominator and
 * in the spent budget (§6.7, reproduces the Hydra-era b'). Groups are copied.
 * Fails (status 1) on a malformed group (no or over 255 choices, non-finite
 * score, bits not a positive multiple of 0.5), naming it, or when the table
 * (groups x reachable costs bytes) would exceed max_table_bytes (0: 4 GiB). */
bool qs_search_build(const qs_search_group *groups, size_t ngroups, long long extra_none_numel,
                     size_t max_table_bytes, qs_search **out, qs_error *err);
void qs_search_free(qs_search *s);

/* Σ numel over all groups plus extra_none_numel: the effective-bits denominator. */
long long qs_search_total_numel(const qs_search *s);

/* Effective bits of the cheapest selection (every group at its cheapest choice). */
double qs_search_min_bits(const qs_search *s);

typedef struct qs_search_result {
  bool is_satisfied;     /* an optimal selection within the budget exists */
  int *choice;           /* [ngroups] chosen index per group; -1 when not satisfied */
  size_t ngroups;
  double budget;         /* B = b/16 * total numel (cost units) */
  double score;          /* best.score: Σ chosen scores, added in group order */
  double cost;           /* Σ chosen costs + extra_none_numel, added in group order */
  double effective_bits; /* 16 * cost / total numel (achieved) */
} qs_search_result;

/* Optimal selection for requested effective bits b: minimum Σ score within
 * B = b/16 * total; ties go to the lowest total cost, then group by group to
 * the earliest (most compressed) choice. An unreachable budget fills res with
 * is_satisfied = false and no choices, and fails (status 2) with a message
 * giving the smallest reachable effective bits: never a silent fallback. */
bool qs_search_solve(const qs_search *s, double effective_bits, qs_search_result *res,
                     qs_error *err);
void qs_search_result_free(qs_search_result *res);

/* Pareto front: for every reachable total cost whose minimal score is lower
 * than at any smaller cost, in ascending cost; score is what qs_search_solve
 * reports at exactly that budget. Strictly increasing cost/bits, strictly
 * decreasing score; the first point is the cheapest selection. */
typedef struct qs_pareto {
  size_t n;
  double *cost;           /* cost units incl. extra_none_numel */
  double *effective_bits; /* 16 * cost / total numel */
  double *score;
} qs_pareto;

void qs_search_front(const qs_search *s, qs_pareto *front);
void qs_pareto_free(qs_pareto *front);

#endif
