/* What a Hydra run leaves on disk and prints before its jobs run. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/hydra.h"
#include "config/interp.h"
#include "config/yaml.h"
#include "core/fsutil.h"
#include "core/logfmt.h"
#include "core/mem.h"
#include "core/strbuf.h"

static bool write_yaml(const char *dir, const char *name, const qs_node *node, qs_error *err) {
  char *path = qs_path_join(dir, name);
  char *text = qs_yaml_dump(node);
  bool ok = qs_write_file_atomic(path, text, strlen(text), err);
  free(text);
  free(path);
  return ok;
}

bool qs_hydra_write_sweep_files(const qs_hydra_plan *plan, qs_error *err) {
  if (!plan->multirun || !plan->master) return true;
  return qs_mkdirs(plan->sweep_dir, err) && write_yaml(plan->sweep_dir, "multirun.yaml", plan->master, err);
}

static void log_prefix(FILE *out) {
  char prefix[96];
  fprintf(out, "%s ", qs_log_prefix(prefix, sizeof prefix, "HYDRA"));
}

void qs_hydra_log_launch(const qs_hydra_plan *plan, size_t batch, FILE *out) {
  if (batch >= plan->n_batches) return;
  log_prefix(out);
  fprintf(out, "Launching %zu jobs locally\n", plan->batch_starts[batch + 1] - plan->batch_starts[batch]);
  fflush(out);
}

void qs_hydra_log_job(const qs_hydra_job *job, FILE *out) {
  log_prefix(out);
  fprintf(out, "\t#%d : ", job->num);
  bool first = true;
  for (size_t k = 0; k < job->n_overrides; k++) {
    if (strncmp(job->overrides[k], "hydra.", 6) == 0) continue;
    fprintf(out, "%s%s", first ? "" : " ", job->overrides[k]);
    first = false;
  }
  fputc('\n', out);
  fflush(out);
}

qs_node *qs_hydra_job_config(const qs_hydra_job *job) {
  qs_node *cfg = qs_node_copy(job->config);
  qs_map_del(cfg, "hydra");
  return cfg;
}

/* Resolved text of a hydra setting; NULL when null, absent or unresolvable. */
static char *hydra_setting(const qs_hydra_job *job, const char *path) {
  qs_node *v = NULL;
  qs_error ignored;
  char *text = NULL;
  if (qs_interp_select(job->config, path, &v, &ignored) && v && v->kind == QS_STR) text = qs_strdup(v->s);
  qs_node_free(v);
  return text;
}

/* Only Hydra's default job logging writes a log file. */
static bool logs_to_file(const qs_hydra_job *job) {
  const qs_node *choices = qs_node_get_path(job->config, "hydra.runtime.choices");
  const qs_node *choice = qs_map_get(choices, "hydra/job_logging");
  return !choice || (choice->kind == QS_STR && strcmp(choice->s, "default") == 0);
}

char *qs_hydra_log_path(const qs_hydra_job *job) {
  char *name = hydra_setting(job, "hydra.job.name");
  qs_strbuf file = {0};
  qs_sb_printf(&file, "%s.log", name ? name : "qsens");
  char *path = qs_path_join(job->output_dir, qs_sb_str(&file));
  qs_sb_free(&file);
  free(name);
  return path;
}

static bool write_hydra_files(const qs_hydra_job *job, const char *subdir, qs_error *err) {
  char *dir = qs_path_join(job->output_dir, subdir);
  qs_node *task = qs_hydra_job_config(job);
  qs_node *hydra = qs_node_map();
  qs_map_set(hydra, "hydra", qs_node_copy(qs_map_get(job->config, "hydra")));
  const qs_node *overrides = qs_node_get_path(job->config, "hydra.overrides.task");
  qs_node *empty = qs_node_list();
  bool ok = qs_mkdirs(dir, err) && write_yaml(dir, "config.yaml", task, err) &&
            write_yaml(dir, "hydra.yaml", hydra, err) &&
            write_yaml(dir, "overrides.yaml", overrides ? overrides : empty, err);
  qs_node_free(empty);
  qs_node_free(hydra);
  qs_node_free(task);
  free(dir);
  return ok;
}

bool qs_hydra_write_job_files(const qs_hydra_job *job, qs_error *err) {
  if (!qs_mkdirs(job->output_dir, err)) return false;
  char *subdir = hydra_setting(job, "hydra.output_subdir");
  bool ok = !subdir || write_hydra_files(job, subdir, err);
  free(subdir);
  if (!ok) return false;
  /* Hydra's file handler creates the job log as soon as logging starts. */
  if (!logs_to_file(job)) return true;
  char *log = qs_hydra_log_path(job);
  FILE *f = fopen(log, "a");
  if (f) fclose(f);
  else ok = qs_fail(err, QS_EXIT_RUNTIME, "cannot create '%s'", log);
  free(log);
  return ok;
}

bool qs_hydra_job_resolved(const qs_hydra_job *job, qs_node **out, qs_error *err) {
  qs_node *task = qs_hydra_job_config(job);
  bool ok = qs_interp_resolve(task, qs_map_get(job->config, "hydra"), out, err);
  qs_node_free(task);
  return ok;
}

bool qs_hydra_job_select(const qs_hydra_job *job, const char *path, qs_node **out, qs_error *err) {
  qs_node *task = qs_hydra_job_config(job);
  bool ok = qs_interp_select_in(task, qs_map_get(job->config, "hydra"), path, out, err);
  qs_node_free(task);
  return ok;
}
