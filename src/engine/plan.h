/* The sweep planner: jobs (one (W,A) pair at one dataset size each) become
 * cells, and cells that share the model and the dataset become one pass,
 * which runs a single calibration and a single forward/backward for all of
 * them (DESIGN.md §3 "Fused grid"). Which rank runs which pass (grid mode)
 * is the application's choice; qs_plan_assign_ranks offers a balanced one. */
#ifndef QSENS_ENGINE_PLAN_H
#define QSENS_ENGINE_PLAN_H

#include <stddef.h>

/* One job of the sweep. pass_key identifies everything that shapes the
 * unquantized activations and gradients (model, checkpoint, captions file,
 * tokenization, batching, precision): jobs with equal keys share a pass. */
typedef struct qs_plan_job {
  const char *pass_key;
  size_t n_samples; /* samples of the job's dataset size (a prefix of the pass's samples) */
} qs_plan_job;

typedef struct qs_pass {
  size_t *jobs;       /* job indices, in job order */
  size_t njobs;
  size_t max_samples; /* samples the pass reads: the largest size among its cells */
  /* Relative cost: samples × (forward + backward + recompute + one candidate
   * GEMM per cell), the FLOP model of DESIGN.md §5 per token. */
  double cost;
} qs_pass;

typedef struct qs_pass_list {
  qs_pass *passes; /* in order of each pass's first job */
  size_t count;
} qs_pass_list;

void qs_plan_passes(const qs_plan_job *jobs, size_t njobs, qs_pass_list *out);
void qs_pass_list_free(qs_pass_list *list);

/* owner[p] = rank of pass p among nranks (>= 1): longest pass first onto the
 * least-loaded rank, ties to the lower rank and the earlier pass, so every
 * rank computes the same assignment. */
void qs_plan_assign_ranks(const qs_pass_list *list, int nranks, int *owner);

#endif
