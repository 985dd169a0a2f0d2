/* The Hydra-compatible front end of qsens: command line -> composed jobs.
 *
 * Typical use by the application (only rank 0 prints and writes; under MPI,
 * give every rank rank 0's instant first with qs_interp_set_now() so that
 * ${now:...} output directories agree):
 *
 *   qs_hydra_plan plan;
 *   if (!qs_hydra_prepare(argc, argv, &opts, &plan, stdout, stderr, &err)) -> print err.msg, exit err.status
 *   if (plan.done) -> exit 0 (a print-only flag such as --cfg or --help was handled)
 *   if (plan.multirun) qs_hydra_write_sweep_files(&plan, &err);   (already written by prepare; harmless)
 *   for each batch b: qs_hydra_log_launch(&plan, b, stdout);
 *     for each job j of the batch: qs_hydra_log_job(&plan.jobs[j], stdout);
 *       qs_hydra_write_job_files(&plan.jobs[j], &err); run it; log to qs_hydra_log_path(job)
 *   qs_hydra_plan_free(&plan);
 *
 * Every job is composed by qs_hydra_prepare, so every configuration error
 * surfaces before anything runs. Error messages (err->msg) are Hydra's text,
 * including the closing "Set the environment variable HYDRA_FULL_ERROR=1 ..."
 * line where Hydra prints it; print them followed by one newline. Job
 * settings the application applies itself: job->chdir (hydra.job.chdir) and
 * hydra.job.env_set (environment variables Hydra sets for the job). */
#ifndef QSENS_CONFIG_HYDRA_H
#define QSENS_CONFIG_HYDRA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/node.h"
#include "core/error.h"

typedef struct qs_hydra_options {
  const char *app_name;           /* "qsens": hydra.job.name, the log file stem, --help header */
  const char *const *conf_dirs;   /* default primary config dirs; the first that exists is used */
  size_t n_conf_dirs;
  bool prints;                    /* false on MPI ranks other than 0: no output, no files */
} qs_hydra_options;

typedef struct qs_hydra_job {
  int num;              /* 0..N-1 in a sweep; 0 for a single run */
  char **overrides;     /* this job's task overrides, as Hydra passes them */
  size_t n_overrides;
  qs_node *config;      /* the composed config including its `hydra` node, unresolved */
  char *output_dir;     /* absolute output directory */
  bool chdir;           /* hydra.job.chdir: the job should run inside output_dir */
} qs_hydra_job;

typedef struct qs_hydra_plan {
  bool done;            /* a print-only flag (--cfg, --help, --info, --version ...) was handled */
  bool multirun;
  qs_hydra_job *jobs;
  size_t n_jobs;
  size_t *batch_starts; /* first job of each batch (hydra.sweeper.max_batch_size), plus n_jobs at the end */
  size_t n_batches;
  qs_node *master;      /* multirun: the sweep's own config (written as multirun.yaml); else NULL */
  char *sweep_dir;      /* multirun: absolute sweep directory; else NULL */
  char *app_name;
} qs_hydra_plan;

/* Parses flags and overrides, composes every job, and handles print-only
 * flags itself (writing to out; warnings such as the missing-_self_ one go
 * to err_out). Like Hydra, a sweep's multirun.yaml is written (when
 * opts->prints) before its jobs are composed, so it exists even when one of
 * them fails. On failure the plan holds nothing to free. */
bool qs_hydra_prepare(int argc, char **argv, const qs_hydra_options *opts, qs_hydra_plan *plan, FILE *out,
                      FILE *err_out, qs_error *err);
void qs_hydra_plan_free(qs_hydra_plan *plan);

/* Creates the sweep directory and writes multirun.yaml (atomically; the
 * same file qs_hydra_prepare already wrote). */
bool qs_hydra_write_sweep_files(const qs_hydra_plan *plan, qs_error *err);

/* "[<ts>][HYDRA] Launching N jobs locally" for batch b, and the
 * "[<ts>][HYDRA] \t#i : overrides" line of one job. */
void qs_hydra_log_launch(const qs_hydra_plan *plan, size_t batch, FILE *out);
void qs_hydra_log_job(const qs_hydra_job *job, FILE *out);

/* Creates the job's output dir and, unless hydra.output_subdir is null, its
 * .hydra/{config,hydra,overrides}.yaml; creates the (empty) job log file
 * unless hydra/job_logging selects a logging without a file (as Hydra). */
bool qs_hydra_write_job_files(const qs_hydra_job *job, qs_error *err);

/* <output_dir>/<job name>.log. Caller frees. */
char *qs_hydra_log_path(const qs_hydra_job *job);

/* The job config without its `hydra` node, unresolved. Caller frees. */
qs_node *qs_hydra_job_config(const qs_hydra_job *job);

/* The job config without `hydra`, every interpolation resolved
 * (${hydra:...} reads the job's hydra node). */
bool qs_hydra_job_resolved(const qs_hydra_job *job, qs_node **out, qs_error *err);

/* One resolved value of the job config by dotted path ("dataset.size");
 * *out is NULL when absent. */
bool qs_hydra_job_select(const qs_hydra_job *job, const char *path, qs_node **out, qs_error *err);

#endif
