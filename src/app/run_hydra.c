/* The Hydra application: compose every job of the command line, write the
 * Hydra output files, generate missing demo inputs, run the jobs (a sweep's
 * jobs are split over MPI ranks: job j runs on rank j mod size), and collect
 * each job's record and log at rank 0, which alone prints and writes. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "app/job.h"
#include "config/hydra.h"
#include "core/fsutil.h"
#include "core/mem.h"

static bool dry_run_requested(void) {
  const char *v = getenv("QSENS_DRY_RUN");
  return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0);
}

/* The conf/ tree: the working directory's, the installed one, the source tree's. */
static void default_conf_dirs(char *dirs[3]) {
  dirs[0] = qs_strdup("conf");
  char *exe = qs_exe_dir();
  dirs[1] = exe ? qs_path_join(exe, "../share/qsens/conf") : qs_strdup(QSENS_INSTALL_DATADIR "/conf");
  free(exe);
  dirs[2] = qs_strdup(QSENS_SOURCE_DIR "/conf");
}

static void print_banner(const qs_dist *d, const qs_hydra_plan *plan) {
  printf("qsens %s (commit %s): %zu job%s on %d MPI rank%s\n", QSENS_VERSION, QSENS_GIT_COMMIT, plan->n_jobs,
         plan->n_jobs == 1 ? "" : "s", d->size, d->size == 1 ? "" : "s");
  fflush(stdout);
}

/* Rank 0: multirun.yaml, the launch lines and every job's .hydra/ files. */
static bool write_hydra_outputs(const qs_hydra_plan *plan, qs_error *err) {
  if (plan->multirun && !qs_hydra_write_sweep_files(plan, err)) return false;
  for (size_t b = 0; b < plan->n_batches; b++) {
    if (plan->multirun) qs_hydra_log_launch(plan, b, stdout);
    for (size_t j = plan->batch_starts[b]; j < plan->batch_starts[b + 1]; j++) {
      if (plan->multirun) qs_hydra_log_job(&plan->jobs[j], stdout);
      if (!qs_hydra_write_job_files(&plan->jobs[j], err)) return false;
    }
  }
  fflush(stdout);
  return true;
}

/* Every rank runs its share of the jobs; rank 0 receives every outcome in
 * job order, prints and stores it. Returns the number of failed jobs. */
static int run_jobs(const qs_dist *d, const qs_hydra_plan *plan) {
  qs_job_outcome *mine = qs_calloc(plan->n_jobs, sizeof *mine);
  for (size_t j = (size_t)d->rank; j < plan->n_jobs; j += (size_t)d->size)
    qs_job_run(d, &plan->jobs[j], &mine[j]);
  int failed = 0;
  for (size_t j = 0; j < plan->n_jobs; j++) {
    int owner = (int)(j % (size_t)d->size);
    qs_job_outcome *o = &mine[j];
    qs_job_outcome_share(d, owner, o);
    if (qs_dist_is_root(d)) failed += !qs_job_outcome_publish(d, plan, &plan->jobs[j], owner, o);
    qs_job_outcome_free(o);
  }
  free(mine);
  return failed;
}

int qs_run_hydra(const qs_dist *d, int argc, char **argv) {
  char *dirs[3];
  default_conf_dirs(dirs);
  qs_hydra_options opts = {
      .app_name = "qsens", .conf_dirs = (const char *const *)dirs, .n_conf_dirs = 3, .prints = qs_dist_is_root(d)};
  qs_hydra_plan plan = {0};
  qs_error err = {0};
  int status = QS_EXIT_OK;
  /* Composition is deterministic, so every rank reaches the same verdict. */
  if (!qs_hydra_prepare(argc, argv, &opts, &plan, stdout, stderr, &err)) {
    if (qs_dist_is_root(d)) fprintf(stderr, "%s\n", err.msg);
    status = err.status ? err.status : QS_EXIT_USAGE;
  } else if (!plan.done) {
    bool dry = dry_run_requested();
    bool ok = true;
    if (qs_dist_is_root(d)) {
      if (!dry) print_banner(d, &plan);
      ok = write_hydra_outputs(&plan, &err) && (dry || qs_job_prepare_inputs(&plan, stdout, &err));
      if (!ok) fprintf(stderr, "qsens: error: %s\n", err.msg);
    }
    if (!qs_dist_all(d, ok)) {
      status = ok ? QS_EXIT_RUNTIME : (err.status ? err.status : QS_EXIT_RUNTIME);
    } else if (!dry) {
      int failed = run_jobs(d, &plan);
      if (qs_dist_is_root(d) && failed)
        fprintf(stderr, "qsens: error: %d of %zu job%s failed\n", failed, plan.n_jobs, plan.n_jobs == 1 ? "" : "s");
      status = failed ? QS_EXIT_RUNTIME : QS_EXIT_OK;
    }
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  qs_hydra_plan_free(&plan);
  for (int i = 0; i < 3; i++) free(dirs[i]);
  return status;
}
