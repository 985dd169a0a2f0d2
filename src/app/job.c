/* A job validates its inputs for real (the checkpoint is opened and checked
 * tensor by tensor, the captions are read) and records what it found. The
 * sensitivity engine is not wired into jobs yet, so a job says so plainly
 * and writes no results. */
#define _POSIX_C_SOURCE 200809L
#include "app/job.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app/cfg_get.h"
#include "core/fsutil.h"
#include "core/logfmt.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "model/checkpoint.h"
#include "model/init_model.h"
#include "text/captions.h"

#define RECORD_FILE "qsens_run.json"

/* ---- logging into the outcome -------------------------------------------- */

static void job_log(qs_strbuf *log, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void job_log(qs_strbuf *log, const char *level, const char *fmt, ...) {
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

static void log_warning(void *ctx, const char *message) { job_log(ctx, "WARNING", "%s", message); }

static void iso_now(char *buf, size_t size) {
  time_t t = time(NULL);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(buf, size, "%Y-%m-%dT%H:%M:%S%z", &tm);
}

/* ---- inputs ---------------------------------------------------------------- */

static bool checkpoint_present(const char *dir) {
  char *config = qs_path_join(dir, "config.json");
  bool present = qs_is_file(config);
  free(config);
  return present;
}

/* Number of samples the job reads: dataset.max_calib_samples, else sizes[size]. */
static bool dataset_sample_count(const qs_node *cfg, int64_t *count, qs_error *err) {
  const qs_node *cap = qs_node_get_path(cfg, "dataset.max_calib_samples");
  if (cap && cap->kind != QS_NULL) return qs_cfg_int(cfg, "dataset.max_calib_samples", count, err);
  const char *size;
  if (!qs_cfg_str(cfg, "dataset.size", false, &size, err)) return false;
  char key[256];
  snprintf(key, sizeof key, "dataset.sizes.%s", size);
  if (!qs_node_get_path(cfg, key))
    return qs_fail(err, QS_EXIT_USAGE, "dataset.size '%s' is not one of the sizes listed in dataset.sizes", size);
  return qs_cfg_int(cfg, key, count, err);
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

/* ---- running ------------------------------------------------------------------ */

static json_t *overrides_json(const qs_hydra_job *job) {
  json_t *list = json_array();
  for (size_t i = 0; i < job->n_overrides; i++) json_array_append_new(list, json_string(job->overrides[i]));
  return list;
}

static bool check_model(const qs_node *cfg, qs_strbuf *log, json_t *record, qs_error *err) {
  const char *path, *name;
  if (!qs_cfg_str(cfg, "model.path", false, &path, err) || !qs_cfg_str(cfg, "model.name", false, &name, err))
    return false;
  if (!qs_is_dir(path)) return qs_fail(err, QS_EXIT_RUNTIME, "model.path '%s' is not a directory", path);
  qs_lm lm;
  if (!qs_checkpoint_load(path, &lm, log_warning, log, err)) return false;
  const qs_lm_config *c = &lm.cfg;
  job_log(log, "INFO",
          "model %s: %s: %d layers, hidden %d, intermediate %d, heads %d/%d (head_dim %d), vocab %d, %s head",
          name, path, c->layers, c->hidden, c->intermediate, c->heads, c->kv_heads, c->head_dim, c->vocab,
          c->tied ? "tied" : "untied");
  json_object_set_new(record, "model",
                      json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:b}", "name", name, "path", path,
                                "layers", c->layers, "hidden", c->hidden, "intermediate", c->intermediate, "heads",
                                c->heads, "kv_heads", c->kv_heads, "head_dim", c->head_dim, "vocab", c->vocab,
                                "tied", c->tied));
  qs_lm_release(&lm);
  return true;
}

static bool check_dataset(const qs_node *cfg, qs_strbuf *log, json_t *record, qs_error *err) {
  const char *path, *name, *size;
  int64_t count;
  if (!qs_cfg_str(cfg, "dataset.captions_path", false, &path, err) ||
      !qs_cfg_str(cfg, "dataset.name", false, &name, err) || !qs_cfg_str(cfg, "dataset.size", false, &size, err) ||
      !dataset_sample_count(cfg, &count, err))
    return false;
  if (count <= 0) return qs_fail(err, QS_EXIT_USAGE, "dataset %s size %s has no samples", name, size);
  qs_caption_source src = {.path = path, .format = QS_CAPTIONS_AUTO, .limit = (size_t)count};
  qs_sample_list samples = {0};
  if (!qs_captions_load(&src, &samples, err)) return false;
  job_log(log, "INFO", "dataset %s (%s): %zu samples from %s", name, size, samples.count, path);
  json_object_set_new(record, "dataset", json_pack("{s:s, s:s, s:s, s:I}", "name", name, "size", size,
                                                   "captions_path", path, "samples", (json_int_t)samples.count));
  qs_sample_list_free(&samples);
  return true;
}

void qs_job_run(const qs_dist *d, const qs_hydra_job *job, qs_job_outcome *out) {
  qs_strbuf log = {0};
  qs_error err = {0};
  char started[40], finished[40];
  iso_now(started, sizeof started);
  json_t *record = json_pack("{s:s, s:s, s:{s:i, s:o}, s:i, s:s, s:s}", "tool", "qsens " QSENS_VERSION,
                             "git_commit", QSENS_GIT_COMMIT, "job", "num", job->num, "overrides",
                             overrides_json(job), "rank", d->rank, "host", d->host, "started", started);
  qs_node *cfg = NULL;
  out->ok = qs_hydra_job_resolved(job, &cfg, &err) && check_model(cfg, &log, record, &err) &&
            check_dataset(cfg, &log, record, &err);
  qs_node_free(cfg);
  if (out->ok)
    job_log(&log, "INFO", "scoring is not available yet: inputs validated, no results written");
  iso_now(finished, sizeof finished);
  json_object_set_new(record, "finished", json_string(finished));
  json_object_set_new(record, "status", json_string(out->ok ? "inputs-validated" : "failed"));
  json_object_set_new(record, "scoring", json_string("not available yet"));
  if (!out->ok) json_object_set_new(record, "error", json_string(err.msg));
  out->record = json_dumps(record, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(record);
  out->log = qs_sb_take(&log);
  if (!out->ok) {
    qs_strbuf msg = {0};
    qs_sb_printf(&msg, "%s (rank %d on %s)", err.msg, d->rank, d->host);
    out->error = qs_sb_take(&msg);
  }
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
    int ok = o->ok;
    MPI_Send(&ok, 1, MPI_INT, 0, 1, MPI_COMM_WORLD);
    send_text(o->log, 2);
    send_text(o->record, 3);
    send_text(o->error, 4);
  } else if (d->rank == 0) {
    int ok;
    MPI_Recv(&ok, 1, MPI_INT, owner, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    o->ok = ok;
    o->log = recv_text(owner, 2);
    o->record = recv_text(owner, 3);
    o->error = recv_text(owner, 4);
  }
}

static bool append_file(const char *path, const char *text, qs_error *err) {
  FILE *f = fopen(path, "a");
  if (!f) return qs_fail(err, QS_EXIT_RUNTIME, "cannot append to '%s'", path);
  fputs(text, f);
  return fclose(f) == 0 || qs_fail(err, QS_EXIT_RUNTIME, "cannot write '%s'", path);
}

bool qs_job_outcome_publish(const qs_dist *d, const qs_hydra_plan *plan, const qs_hydra_job *job, int owner,
                            const qs_job_outcome *o) {
  const char *log = o->log ? o->log : "";
  fputs(log, stdout);
  if (plan->multirun && d->size > 1) printf("qsens: job #%d ran on rank %d\n", job->num, owner);
  fflush(stdout);
  qs_error err = {0};
  char *log_path = qs_hydra_log_path(job);
  char *record_path = qs_path_join(job->output_dir, RECORD_FILE);
  bool written = append_file(log_path, log, &err) &&
                 qs_write_file_atomic(record_path, o->record, strlen(o->record), &err);
  if (!written) fprintf(stderr, "qsens: error: %s\n", err.msg);
  if (!o->ok) {
    if (plan->multirun) fprintf(stderr, "qsens: error: job #%d: %s\n", job->num, o->error);
    else fprintf(stderr, "qsens: error: %s\n", o->error);
  }
  free(log_path);
  free(record_path);
  return o->ok && written;
}

void qs_job_outcome_free(qs_job_outcome *o) {
  free(o->log);
  free(o->record);
  free(o->error);
  memset(o, 0, sizeof *o);
}
