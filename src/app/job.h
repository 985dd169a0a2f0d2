/* One job of a Hydra run or sweep: what it does, and how its outcome
 * travels from the rank that ran it to rank 0, which prints and writes. */
#ifndef QSENS_APP_JOB_H
#define QSENS_APP_JOB_H

#include <stdbool.h>
#include <stdio.h>

#include "config/hydra.h"
#include "core/error.h"
#include "dist/dist.h"

typedef struct qs_job_outcome {
  bool ok;
  char *log;    /* log lines (Hydra's job-log format), each ending in '\n' */
  char *record; /* the run record, JSON */
  char *error;  /* one line when !ok */
} qs_job_outcome;

/* Rank 0, before any job runs: generates what the configs say may be
 * generated and is missing (the demo checkpoint: model.init_preset; the
 * caption subset files: dataset.build), once per distinct path. */
bool qs_job_prepare_inputs(const qs_hydra_plan *plan, FILE *out, qs_error *err);

/* Runs one job on this rank. */
void qs_job_run(const qs_dist *d, const qs_hydra_job *job, qs_job_outcome *out);

/* Moves the outcome of a job from its owner rank to rank 0 (a no-op when
 * the owner is rank 0). Every rank calls it for every job, in job order. */
void qs_job_outcome_share(const qs_dist *d, int owner, qs_job_outcome *o);

/* Rank 0: prints the job's log and its verdict, appends the log to the job's
 * log file and writes the run record. Returns whether the job succeeded. */
bool qs_job_outcome_publish(const qs_dist *d, const qs_hydra_plan *plan, const qs_hydra_job *job, int owner,
                            const qs_job_outcome *o);

void qs_job_outcome_free(qs_job_outcome *o);

#endif
