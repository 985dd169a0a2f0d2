/* The Hydra application: compose every job of the command line, read each
 * job's settings, write the Hydra output files, generate missing demo
 * inputs, group the jobs into passes (fused cells) and spread the passes
 * over MPI ranks, then collect each job's cell, record and log at rank 0,
 * which alone prints and writes (per-job artifacts, sensitivity.h5). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/commands.h"
#include "app/job.h"
#include "app/job_settings.h"
#include "app/pass_run.h"
#include "config/hydra.h"
#include "config/interp.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "engine/plan.h"
#include "report/h5.h"

#define H5_FILE "sensitivity.h5"

static bool dry_run_requested(void) {
  const char *v = getenv("QSENS_DRY_RUN");
  return v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0);
}

void qs_default_conf_dirs(char *dirs[QS_N_CONF_DIRS]) {
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

/* Every rank reads every job's settings (deterministic, so all agree);
 * a bad value fails the whole command before anything runs. */
static bool load_settings(const qs_hydra_plan *plan, qs_job_settings **out, qs_error *err) {
  qs_job_settings *settings = qs_calloc(plan->n_jobs, sizeof *settings);
  for (size_t j = 0; j < plan->n_jobs; j++) {
    if (qs_job_settings_load(&plan->jobs[j], &settings[j], err)) continue;
    if (plan->multirun) qs_fail_context(err, "job #%d: ", plan->jobs[j].num);
    for (size_t k = 0; k < j; k++) qs_job_settings_free(&settings[k]);
    free(settings);
    return false;
  }
  *out = settings;
  return true;
}

static void free_settings(qs_job_settings *settings, size_t n) {
  for (size_t j = 0; j < n; j++) qs_job_settings_free(&settings[j]);
  free(settings);
}

/* parallel.mode=layers on several ranks (the first job's mode decides for
 * the whole command); grid otherwise: auto picks grid for now. */
static bool layers_mode(const qs_dist *d, const qs_job_settings *settings) {
  return d->size > 1 && strcmp(settings[0].parallel_mode, "layers") == 0;
}

/* Jobs that differ only in pair and dataset size share a pass; grid mode
 * gives whole passes to ranks, layers mode runs each on every rank with
 * rank 0 reporting (owner[j]: the rank that reports job j). */
static void plan_passes(const qs_dist *d, const qs_hydra_plan *plan, const qs_job_settings *settings,
                        qs_pass_list *passes, int *owner) {
  qs_plan_job *jobs = qs_calloc(plan->n_jobs, sizeof *jobs);
  for (size_t j = 0; j < plan->n_jobs; j++) jobs[j] = (qs_plan_job){settings[j].pass_key, settings[j].n_samples};
  qs_plan_passes(jobs, plan->n_jobs, passes);
  free(jobs);
  int *pass_owner = qs_calloc(passes->count, sizeof *pass_owner);
  if (!layers_mode(d, settings)) qs_plan_assign_ranks(passes, d->size, pass_owner);
  for (size_t p = 0; p < passes->count; p++)
    for (size_t k = 0; k < passes->passes[p].njobs; k++) owner[passes->passes[p].jobs[k]] = pass_owner[p];
  free(pass_owner);
}

static void print_pass_plan(const qs_dist *d, const qs_hydra_plan *plan, const qs_job_settings *settings,
                            const qs_pass_list *passes) {
  printf("qsens: %zu job%s in %zu pass%s (the cells of a pass share one calibration and forward/backward)\n",
         plan->n_jobs, plan->n_jobs == 1 ? "" : "s", passes->count, passes->count == 1 ? "" : "es");
  const char *mode = settings[0].parallel_mode;
  if (layers_mode(d, settings))
    printf("qsens: parallel.mode=layers: every rank runs every pass, scoring 1/%d of the layers\n", d->size);
  else if (d->size > 1 && strcmp(mode, "data") == 0)
    printf("qsens: parallel.mode=data is not available yet: running grid (whole passes per rank)\n");
  if (!layers_mode(d, settings) && d->size > (int)passes->count)
    printf("qsens: %d of %d ranks have no pass to run\n", d->size - (int)passes->count, d->size);
  fflush(stdout);
}

/* Rank 0: sensitivity.h5 with every scored cell, in the sweep dir (or the
 * single run's output dir), run ids = job numbers. */
static bool write_h5(const qs_hydra_plan *plan, qs_cell **cells, qs_error *err) {
  const qs_cell **scored = qs_calloc(plan->n_jobs, sizeof *scored);
  char **ids = qs_calloc(plan->n_jobs, sizeof *ids);
  size_t n = 0;
  for (size_t j = 0; j < plan->n_jobs; j++) {
    if (!cells[j]) continue;
    qs_strbuf id = {0};
    qs_sb_printf(&id, "%d", plan->jobs[j].num);
    ids[n] = qs_sb_take(&id);
    scored[n++] = cells[j];
  }
  char *path = qs_path_join(plan->multirun ? plan->sweep_dir : plan->jobs[0].output_dir, H5_FILE);
  bool ok = n == 0 || qs_h5_write_runs(path, scored, (const char *const *)ids, n, err);
  if (ok && n) printf("qsens: %zu run%s in %s\n", n, n == 1 ? "" : "s", path);
  for (size_t i = 0; i < n; i++) free(ids[i]);
  free(ids);
  free(scored);
  free(path);
  return ok;
}

/* Every rank runs the passes it owns; rank 0 then receives every outcome in
 * job order, writes and prints it. Returns the exit status of the first
 * failed job (0 when all succeeded). */
static int run_jobs(const qs_dist *d, const qs_hydra_plan *plan, const qs_job_settings *settings) {
  qs_pass_list passes;
  int *owner = qs_calloc(plan->n_jobs, sizeof *owner);
  plan_passes(d, plan, settings, &passes, owner);
  if (qs_dist_is_root(d)) print_pass_plan(d, plan, settings, &passes);
  qs_job_outcome *outs = qs_calloc(plan->n_jobs, sizeof *outs);
  qs_pass_share share = {0, 1};
  if (layers_mode(d, settings)) share = (qs_pass_share){d->rank, d->size};
  for (size_t p = 0; p < passes.count; p++) {
    if (share.slices == 1 && owner[passes.passes[p].jobs[0]] != d->rank) continue;
    char label[64];
    snprintf(label, sizeof label, "pass %zu/%zu", p + 1, passes.count);
    qs_pass_run(d, plan, settings, &passes.passes[p], &share, label, outs);
  }
  int status = QS_EXIT_OK, failed = 0;
  qs_cell **cells = qs_calloc(plan->n_jobs, sizeof *cells);
  for (size_t j = 0; j < plan->n_jobs; j++) {
    qs_job_outcome *o = &outs[j];
    qs_job_outcome_share(d, owner[j], o);
    qs_job_target target = {settings[j].artifact_dir, settings[j].scheme};
    if (qs_dist_is_root(d) && !qs_job_outcome_publish(d, plan, &plan->jobs[j], &target, owner[j], o, &cells[j])) {
      failed++;
      if (!status) status = o->ok ? QS_EXIT_RUNTIME : o->status;
    }
    qs_job_outcome_free(o);
  }
  qs_error err = {0};
  if (qs_dist_is_root(d)) {
    if (!write_h5(plan, cells, &err)) {
      fprintf(stderr, "qsens: error: %s\n", err.msg);
      if (!status) status = QS_EXIT_RUNTIME;
    }
    if (failed && plan->multirun)
      fprintf(stderr, "qsens: error: %d of %zu job%s failed\n", failed, plan->n_jobs, plan->n_jobs == 1 ? "" : "s");
  }
  for (size_t j = 0; j < plan->n_jobs; j++) qs_cell_free(cells[j]);
  free(cells);
  free(outs);
  free(owner);
  qs_pass_list_free(&passes);
  return status;
}

/* ${now:...} must read the same instant on every rank (output directories,
 * run names): rank 0's is the one. */
static void share_instant(void) {
  struct timespec now = qs_interp_now();
  long long parts[2] = {(long long)now.tv_sec, (long long)now.tv_nsec};
  MPI_Bcast(parts, 2, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  now.tv_sec = (time_t)parts[0];
  now.tv_nsec = (long)parts[1];
  qs_interp_set_now(now);
}

int qs_run_hydra(const qs_dist *d, int argc, char **argv) {
  char *dirs[QS_N_CONF_DIRS];
  qs_default_conf_dirs(dirs);
  qs_hydra_options opts = {.app_name = "qsens",
                           .conf_dirs = (const char *const *)dirs,
                           .n_conf_dirs = QS_N_CONF_DIRS,
                           .prints = qs_dist_is_root(d)};
  qs_hydra_plan plan = {0};
  qs_job_settings *settings = NULL;
  qs_error err = {0};
  int status = QS_EXIT_OK;
  share_instant();
  /* Composition is deterministic, so every rank reaches the same verdict. */
  if (!qs_hydra_prepare(argc, argv, &opts, &plan, stdout, stderr, &err)) {
    if (qs_dist_is_root(d)) fprintf(stderr, "%s\n", err.msg);
    status = err.status ? err.status : QS_EXIT_USAGE;
  } else if (!plan.done) {
    bool dry = dry_run_requested();
    bool ok = dry || load_settings(&plan, &settings, &err);
    if (qs_dist_is_root(d)) {
      if (ok && !dry) print_banner(d, &plan);
      ok = ok && write_hydra_outputs(&plan, &err) && (dry || qs_job_prepare_inputs(&plan, stdout, &err));
      if (!ok) fprintf(stderr, "qsens: error: %s\n", err.msg);
    }
    if (!qs_dist_all(d, ok)) {
      status = ok ? QS_EXIT_RUNTIME : (err.status ? err.status : QS_EXIT_RUNTIME);
    } else if (!dry) {
      status = run_jobs(d, &plan, settings);
    }
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (settings) free_settings(settings, plan.n_jobs);
  qs_hydra_plan_free(&plan);
  for (int i = 0; i < QS_N_CONF_DIRS; i++) free(dirs[i]);
  return status;
}
