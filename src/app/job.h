/* One job of a Hydra run or sweep: what it does, and how its outcome
 * travels from the rank that ran it to rank 0, which prints and writes. */
#ifndef QSENS_APP_JOB_H
#define QSENS_APP_JOB_H

#include <stdbool.h>
#include <stdio.h>

#include "config/hydra.h"
#include "core/error.h"
#include "core/strbuf.h"
#include "dist/dist.h"
#include "report/results.h"

typedef struct qs_job_outcome {
  bool ok;
  int status;   /* exit status of a failed job (QS_EXIT_USAGE or QS_EXIT_RUNTIME) */
  char *log;    /* log lines (Hydra's job-log format), each ending in '\n' */
  int pass_log_len; /* length of the log's leading lines shared by every job of its pass */
  bool pass_head;   /* first job of its pass: the only one that prints the shared lines */
  char *record; /* the run record, JSON */
  char *error;  /* one line when !ok */
  /* A scored cell travels as its state file text (report/state.h) plus the
   * measurements the state does not keep (JSON: sample tokens, baseline
   * loss, timings, config, provenance); NULL when the job failed. */
  char *state;
  char *measurements;
} qs_job_outcome;

/* Rank 0, before any job runs: generates what the configs say may be
 * generated and is missing (the demo checkpoint: model.init_preset; the
 * caption subset files: dataset.build), once per distinct path. */
bool qs_job_prepare_inputs(const qs_hydra_plan *plan, FILE *out, qs_error *err);

/* Appends one line in Hydra's job-log format ("[<time>][qsens][LEVEL] - ..."). */
void qs_job_log(qs_strbuf *log, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Moves the outcome of a job from its owner rank to rank 0 (a no-op when
 * the owner is rank 0). Every rank calls it for every job, in job order. */
void qs_job_outcome_share(const qs_dist *d, int owner, qs_job_outcome *o);

/* Where a job's artifacts go. */
typedef struct qs_job_target {
  const char *artifact_dir; /* output_layout.artifact_dir */
  const char *scheme;       /* file name stem of the state and manifest */
} qs_job_target;

/* Rank 0: writes a scored job's artifacts (state, manifest, reports, chart)
 * into target->artifact_dir, prints the job's log with a summary line and
 * its verdict, appends the log to the job's log file and writes the run
 * record. *cell receives the written cell (caller frees; NULL when none).
 * Returns whether the job succeeded. */
bool qs_job_outcome_publish(const qs_dist *d, const qs_hydra_plan *plan, const qs_hydra_job *job,
                            const qs_job_target *target, int owner, const qs_job_outcome *o, qs_cell **cell);

void qs_job_outcome_free(qs_job_outcome *o);

#endif
