/* Jobs around the engine: the demo inputs generated before anything runs,
 * the job log, and the trip of each job's outcome (log, run record, scored
 * cell) from the rank that ran it to rank 0, which writes the artifacts. */
#define _POSIX_C_SOURCE 200809L
#include "app/job.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "app/cfg_get.h"
#include "core/fsutil.h"
#include "core/logfmt.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "model/init_model.h"
#include "report/artifacts.h"
#include "report/state.h"
#include "text/captions.h"

#define RECORD_FILE "qsens_run.json"

/* ---- logging into the outcome -------------------------------------------- */

void qs_job_log(qs_strbuf *log, const char *level, const char *fmt, ...) {
  char prefix[96];
  qs_sb_printf(log, "%s[%s] - ", qs_log_prefix(prefix, sizeof prefix, "qsens"), level);
  va_list ap;
  va_start(ap, fmt);
  char line[4096];
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  qs_sb_append(log, line);
  qs_sb_putc(log, '\n');
}

/* ---- inputs ---------------------------------------------------------------- */

static bool checkpoint_present(const char *dir) {
  char *config = qs_path_join(dir, "config.json");
  bool present = qs_is_file(config);
  free(config);
  return present;
}

static bool generate_model(const qs_node *cfg, const char *path, const char *preset, FILE *out, qs_error *err) {
  int64_t seed;
  const qs_node *build;
  const char *captions = NULL;
  if (!qs_cfg_int(cfg, "seed", &seed, err) || !qs_cfg_map(cfg, "dataset.build", &build, err)) return false;
  if (build && !qs_cfg_str(build, "source", false, &captions, err)) return false;
  fprintf(out, "qsens: generating the %s checkpoint in %s (model.init_preset)\n", preset, path);
  fflush(out);
  qs_init_model_options opt = {.preset = preset, .seed = (uint64_t)seed, .captions = captions};
  return qs_init_model_write(path, &opt, err);
}

static bool build_captions(const qs_node *cfg, const qs_node *build, FILE *out, qs_error *err) {
  const char *source, *root;
  int64_t seed, k;
  const qs_node *sizes;
  if (!qs_cfg_str(build, "source", false, &source, err) || !qs_cfg_int(build, "seed", &seed, err) ||
      !qs_cfg_int(build, "k", &k, err) || !qs_cfg_str(cfg, "dataset.root", false, &root, err) ||
      !qs_cfg_map(cfg, "dataset.sizes", &sizes, err))
    return false;
  size_t n_sizes = sizes ? sizes->n : 0;
  qs_subset_size *sz = qs_calloc(n_sizes, sizeof *sz);
  bool ok = true;
  for (size_t i = 0; ok && i < n_sizes; i++) {
    sz[i].name = sizes->keys[i];
    if (sizes->items[i]->kind != QS_INT || sizes->items[i]->i < 0)
      ok = qs_fail(err, QS_EXIT_USAGE, "config key 'dataset.sizes.%s' must be a non-negative integer", sz[i].name);
    else
      sz[i].count = (size_t)sizes->items[i]->i;
  }
  if (ok) {
    fprintf(out, "qsens: building the caption subsets in %s from %s (dataset.build)\n", root, source);
    fflush(out);
    qs_subset_opts o = {.annotation_files = &source, .n_annotation_files = 1, .out_dir = root, .seed = seed,
                        .k = (size_t)(k < 0 ? 0 : k), .sizes = sz, .n_sizes = n_sizes};
    ok = qs_captions_build_subset(&o, NULL, err);
  }
  free(sz);
  return ok;
}

static bool prepare_job_inputs(const qs_hydra_job *job, FILE *out, qs_error *err) {
  qs_node *cfg = NULL;
  if (!qs_hydra_job_resolved(job, &cfg, err)) return false;
  const char *path, *preset, *captions;
  const qs_node *build;
  bool ok = qs_cfg_str(cfg, "model.path", false, &path, err) &&
            qs_cfg_str(cfg, "model.init_preset", true, &preset, err) &&
            qs_cfg_str(cfg, "dataset.captions_path", false, &captions, err) &&
            qs_cfg_map(cfg, "dataset.build", &build, err);
  if (ok && preset && !checkpoint_present(path)) ok = generate_model(cfg, path, preset, out, err);
  if (ok && build && !qs_is_file(captions)) ok = build_captions(cfg, build, out, err);
  qs_node_free(cfg);
  return ok;
}

bool qs_job_prepare_inputs(const qs_hydra_plan *plan, FILE *out, qs_error *err) {
  for (size_t j = 0; j < plan->n_jobs; j++)
    if (!prepare_job_inputs(&plan->jobs[j], out, err)) {
      if (plan->multirun) qs_fail_context(err, "job #%d: ", plan->jobs[j].num);
      return false;
    }
  return true;
}

/* ---- collecting ---------------------------------------------------------------- */

static void send_text(const char *s, int tag) {
  int len = s ? (int)strlen(s) + 1 : 0;
  MPI_Send(&len, 1, MPI_INT, 0, tag, MPI_COMM_WORLD);
  if (len) MPI_Send(s, len, MPI_CHAR, 0, tag, MPI_COMM_WORLD);
}

static char *recv_text(int from, int tag) {
  int len;
  MPI_Recv(&len, 1, MPI_INT, from, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  if (!len) return NULL;
  char *s = qs_malloc((size_t)len);
  MPI_Recv(s, len, MPI_CHAR, from, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return s;
}

void qs_job_outcome_share(const qs_dist *d, int owner, qs_job_outcome *o) {
  if (owner == 0) return;
  if (d->rank == owner) {
    int head[4] = {o->ok, o->status, o->pass_log_len, o->pass_head};
    MPI_Send(head, 4, MPI_INT, 0, 1, MPI_COMM_WORLD);
    send_text(o->log, 2);
    send_text(o->record, 3);
    send_text(o->error, 4);
    send_text(o->state, 5);
    send_text(o->measurements, 6);
  } else if (d->rank == 0) {
    int head[4];
    MPI_Recv(head, 4, MPI_INT, owner, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    o->ok = head[0];
    o->status = head[1];
    o->pass_log_len = head[2];
    o->pass_head = head[3];
    o->log = recv_text(owner, 2);
    o->record = recv_text(owner, 3);
    o->error = recv_text(owner, 4);
    o->state = recv_text(owner, 5);
    o->measurements = recv_text(owner, 6);
  }
}

/* ---- publishing ------------------------------------------------------------------ */

static bool append_file(const char *path, const char *text, qs_error *err) {
  FILE *f = fopen(path, "a");
  if (!f) return qs_fail(err, QS_EXIT_RUNTIME, "cannot append to '%s'", path);
  fputs(text, f);
  return fclose(f) == 0 || qs_fail(err, QS_EXIT_RUNTIME, "cannot write '%s'", path);
}

static double measured(json_t *v) { return json_is_number(v) ? json_number_value(v) : NAN; }

static void set_measured_str(char **field, json_t *obj, const char *key) {
  qs_cell_set_str(field, json_string_value(json_object_get(obj, key)));
}

/* Puts back what the state file does not keep (pass_run.c writes it). */
static bool apply_measurements(qs_cell *cell, const char *text, qs_error *err) {
  json_error_t jerr;
  json_t *m = json_loads(text, 0, &jerr);
  json_t *tokens = json_object_get(m, "sample_tokens");
  if (!json_is_array(tokens)) {
    json_decref(m);
    return qs_fail(err, QS_EXIT_RUNTIME, "malformed measurements of a scored cell (%s)", jerr.text);
  }
  cell->nsamples = json_array_size(tokens);
  free(cell->sample_tokens);
  cell->sample_tokens = qs_calloc(cell->nsamples ? cell->nsamples : 1, sizeof *cell->sample_tokens);
  for (size_t i = 0; i < cell->nsamples; i++)
    cell->sample_tokens[i] = (int)json_integer_value(json_array_get(tokens, i));
  cell->baseline_loss = measured(json_object_get(m, "baseline_loss"));
  json_t *t = json_object_get(m, "timings");
  cell->timings = (qs_cell_timings){measured(json_object_get(t, "load_s")), measured(json_object_get(t, "calibrate_s")),
                                    measured(json_object_get(t, "score_s")), measured(json_object_get(t, "search_s")),
                                    measured(json_object_get(t, "total_s"))};
  set_measured_str(&cell->provenance.git_commit, m, "git_commit");
  set_measured_str(&cell->provenance.checkpoint_checksum, m, "checkpoint_checksum");
  set_measured_str(&cell->provenance.data_checksum, m, "data_checksum");
  set_measured_str(&cell->config_yaml, m, "config_yaml");
  json_decref(m);
  return true;
}

/* Writes the state, rebuilds the cell from it (the path `qsens report` and
 * `qsens solve` take, so a cell scored on any rank gives the same bytes) and
 * writes the reports. The search is rerun on the stored scores (same
 * result) because the state does not keep the Pareto front. */
static bool write_cell(const char *dir, const char *scheme, const qs_job_outcome *o, qs_cell **cell, qs_error *err) {
  char *path = qs_cell_file(dir, scheme, QS_STATE_SUFFIX);
  bool ok = qs_mkdirs(dir, err) && qs_write_file_atomic(path, o->state, strlen(o->state), err) &&
            qs_cell_load_state(path, cell, err) && apply_measurements(*cell, o->measurements, err) &&
            qs_cell_solve(*cell, (*cell)->search.requested_bits, err) && qs_write_reports(*cell, dir, err);
  free(path);
  return ok;
}

static void log_summary(qs_strbuf *log, const qs_cell *cell, const char *dir) {
  const qs_cell_searchres *r = &cell->search;
  size_t *order = qs_calloc(cell->ngroups ? cell->ngroups : 1, sizeof *order);
  qs_cell_group_order(cell, true, order);
  const qs_cell_group *top = cell->ngroups ? &cell->groups[order[0]] : NULL;
  qs_job_log(log, "INFO", "%s (%s): effective bits %.4f of %g, best score %.6e, top group %s (%.3e); results in %s",
             cell->scheme, cell->dataset.size ? cell->dataset.size : "-", r->effective_bits, r->requested_bits,
             r->best_score, top ? top->handle : "-", top ? qs_group_importance(top) : 0.0, dir);
  free(order);
}

bool qs_job_outcome_publish(const qs_dist *d, const qs_hydra_plan *plan, const qs_hydra_job *job,
                            const qs_job_target *target, int owner, const qs_job_outcome *o, qs_cell **cell) {
  qs_error err = {0};
  qs_strbuf log = {0};
  qs_sb_append(&log, o->log ? o->log : "");
  *cell = NULL;
  bool written = !o->ok || write_cell(target->artifact_dir, target->scheme, o, cell, &err);
  if (o->ok && written) log_summary(&log, *cell, target->artifact_dir);
  /* The job log file gets every line; the terminal gets a pass's shared lines once. */
  fputs(qs_sb_str(&log) + (o->pass_head ? 0 : o->pass_log_len), stdout);
  if (plan->multirun && d->size > 1) printf("qsens: job #%d ran on rank %d\n", job->num, owner);
  fflush(stdout);
  char *log_path = qs_hydra_log_path(job);
  char *record_path = qs_path_join(job->output_dir, RECORD_FILE);
  if (written)
    written = append_file(log_path, qs_sb_str(&log), &err) &&
              qs_write_file_atomic(record_path, o->record, strlen(o->record), &err);
  if (!written && plan->multirun) fprintf(stderr, "qsens: error: job #%d: %s\n", job->num, err.msg);
  else if (!written) fprintf(stderr, "qsens: error: %s\n", err.msg);
  if (!o->ok) {
    if (plan->multirun) fprintf(stderr, "qsens: error: job #%d: %s\n", job->num, o->error);
    else fprintf(stderr, "qsens: error: %s\n", o->error);
  }
  free(log_path);
  free(record_path);
  qs_sb_free(&log);
  if (!written) {
    qs_cell_free(*cell);
    *cell = NULL;
  }
  return o->ok && written;
}

void qs_job_outcome_free(qs_job_outcome *o) {
  free(o->log);
  free(o->record);
  free(o->error);
  free(o->state);
  free(o->measurements);
  memset(o, 0, sizeof *o);
}
