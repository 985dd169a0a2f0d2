/* One pass of a sweep on the rank that owns it: the jobs that share model,
 * captions and every engine setting are scored by one calibration and one
 * forward/backward (engine/engine.h), then each job's cell is finished
 * (search at its own budget) and packed into its outcome for rank 0. */
#ifndef QSENS_APP_PASS_RUN_H
#define QSENS_APP_PASS_RUN_H

#include "app/job.h"
#include "app/job_settings.h"
#include "dist/dist.h"
#include "engine/plan.h"

/* How the ranks share a pass. parallel.mode=layers: every rank runs the
 * pass scoring only its slice of the decoder layers (engine layer_slice) and
 * the raw scores are summed at rank 0, which alone fills outcomes; every
 * Linear is scored by exactly one rank, so the sum equals a lone run bit for
 * bit. slices <= 1: this rank runs the pass alone. */
typedef struct qs_pass_share {
  int slice, slices;
} qs_pass_share;

/* Runs pass (its jobs index plan->jobs and settings) and fills outs[j] for
 * every job j of the pass (rank 0 only when shared). label prefixes rank
 * 0's progress lines. */
void qs_pass_run(const qs_dist *d, const qs_hydra_plan *plan, const qs_job_settings *settings, const qs_pass *pass,
                 const qs_pass_share *share, const char *label, qs_job_outcome *outs);

#endif
