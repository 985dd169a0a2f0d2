/* qs_hydra_prepare: Hydra's _run_hydra / _run_app / run / multirun flow,
 * stopping before any job runs. */
#define _POSIX_C_SOURCE 200809L
#include "config/hydra.h"

#include <stdlib.h>
#include <string.h>

#include "config/cli_args.h"
#include "config/hydra_node.h"
#include "config/interp.h"
#include "config/pystr.h"
#include "config/session.h"
#include "config/show.h"
#include "config/sweep.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"

#define FULL_ERROR_HINT "\n\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."

/* Errors Hydra raises as plain Python ValueErrors: it prints them after a
 * traceback, without the hint line. */
static bool is_value_error(const char *msg) {
  static const char *const prefixes[] = {"Config group override must be", "Config group override deletion value",
                                         "Unsupported item value in defaults", "Unsupported type in defaults",
                                         "_self_@PACKAGE is not supported", "Invalid defaults list in"};
  for (size_t k = 0; k < sizeof prefixes / sizeof *prefixes; k++)
    if (strncmp(msg, prefixes[k], strlen(prefixes[k])) == 0) return true;
  return false;
}

/* Hydra reports composition errors with a closing hint line. */
static bool with_hint(bool ok, qs_error *err) {
  if (!ok && err && !is_value_error(err->msg)) {
    size_t used = strlen(err->msg);
    snprintf(err->msg + used, sizeof err->msg - used, "%s", FULL_ERROR_HINT);
  }
  return ok;
}

typedef struct strv {
  char **v;
  size_t n, cap;
} strv;

static void strv_push(strv *s, const char *text) {
  qs_grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v);
  s->v[s->n++] = qs_strdup(text);
}

static void strv_free(strv *s) {
  for (size_t k = 0; k < s->n; k++) free(s->v[k]);
  free(s->v);
  memset(s, 0, sizeof *s);
}

/* The strings of a list node (hydra.overrides.*). */
static void strv_from_list(strv *s, const qs_node *list) {
  for (size_t k = 0; list && list->kind == QS_LIST && k < list->n; k++)
    if (list->items[k]->kind == QS_STR) strv_push(s, list->items[k]->s);
}

static const char *primary_dir(const qs_cli_args *a, const qs_hydra_options *opts) {
  if (a->config_path) return a->config_path;
  for (size_t k = 0; k < opts->n_conf_dirs; k++)
    if (qs_is_dir(opts->conf_dirs[k])) return opts->conf_dirs[k];
  return opts->n_conf_dirs ? opts->conf_dirs[0] : "conf";
}

/* Resolved text of a hydra setting; NULL when null or absent. */
static bool hydra_text(const qs_node *cfg, const char *path, char **out, qs_error *err) {
  qs_node *v = NULL;
  *out = NULL;
  if (!qs_interp_select(cfg, path, &v, err)) return false;
  if (v && v->kind != QS_NULL) *out = v->kind == QS_STR ? qs_strdup(v->s) : qs_pystr(v);
  qs_node_free(v);
  return true;
}

static void set_hydra_value(qs_node *cfg, const char *parent, const char *key, qs_node *val) {
  qs_node *node = qs_node_get_path(cfg, parent);
  if (node && node->kind == QS_MAP) qs_map_set(node, key, val);
  else qs_node_free(val);
}

/* hydra.mode as the config sets it (Hydra's get_mode): NULL when unset
 * or when the config does not compose. */
static char *configured_mode(qs_session *s, const qs_cli_args *a) {
  qs_node *cfg;
  qs_error ignored;
  char *mode = NULL;
  if (qs_session_compose(s, a->overrides, a->n_overrides, true, false, &cfg, NULL, &ignored)) {
    if (!hydra_text(cfg, "hydra.mode", &mode, &ignored)) mode = NULL;
    qs_node_free(cfg);
  }
  return mode;
}

/* Decides RUN or MULTIRUN (spec table: flag vs hydra.mode) and appends
 * the hydra.mode override Hydra adds when the flag decides. */
static bool decide_mode(qs_session *s, const qs_cli_args *a, strv *args) {
  char *mode = configured_mode(s, a);
  bool multirun;
  for (size_t k = 0; k < a->n_overrides; k++) strv_push(args, a->overrides[k]);
  if (!mode) {
    multirun = a->multirun;
    strv_push(args, multirun ? "hydra.mode=MULTIRUN" : "hydra.mode=RUN");
  } else if (a->multirun && strcmp(mode, "RUN") == 0) {
    if (s->err_out)
      fputs("UserWarning: \n\tRunning Hydra app with --multirun, overriding with `hydra.mode=MULTIRUN`.\n", s->err_out);
    multirun = true;
    strv_push(args, "hydra.mode=MULTIRUN");
  } else {
    multirun = strcmp(mode, "MULTIRUN") == 0;
  }
  free(mode);
  return multirun;
}

static void job_init(qs_hydra_job *job, int num, const strv *overrides, qs_node *cfg) {
  job->num = num;
  job->config = cfg;
  job->overrides = qs_calloc(overrides->n ? overrides->n : 1, sizeof *job->overrides);
  for (size_t k = 0; k < overrides->n; k++) job->overrides[k] = qs_strdup(overrides->v[k]);
  job->n_overrides = overrides->n;
  qs_node *chdir = NULL;
  qs_error ignored;
  if (qs_interp_select(cfg, "hydra.job.chdir", &chdir, &ignored) && chdir)
    job->chdir = chdir->kind == QS_BOOL && chdir->b;
  qs_node_free(chdir);
}

/* Sets the job's output directory (absolute) into the plan and into
 * hydra.runtime.output_dir. subdir_key is NULL for a single run. */
static bool place_job(qs_hydra_job *job, const char *dir_key, const char *subdir_key, qs_error *err) {
  char *dir = NULL, *subdir = NULL;
  bool ok = hydra_text(job->config, dir_key, &dir, err) && (!subdir_key || hydra_text(job->config, subdir_key, &subdir, err));
  if (!ok) {
    free(dir);
    return false;
  }
  char *joined = subdir ? qs_path_join(dir ? dir : "", subdir) : qs_strdup(dir ? dir : "");
  job->output_dir = qs_abspath(joined);
  set_hydra_value(job->config, "hydra.runtime", "output_dir", qs_node_str(job->output_dir));
  free(dir);
  free(subdir);
  free(joined);
  return true;
}

static void set_default_mode(qs_node *cfg, const char *mode) {
  const qs_node *current = qs_node_get_path(cfg, "hydra.mode");
  if (!current || current->kind == QS_NULL) set_hydra_value(cfg, "hydra", "mode", qs_node_str(mode));
}

static void single_batch(qs_hydra_plan *plan, size_t max_batch) {
  size_t step = max_batch ? max_batch : (plan->n_jobs ? plan->n_jobs : 1);
  plan->batch_starts = qs_calloc(plan->n_jobs / step + 2, sizeof *plan->batch_starts);
  for (size_t start = 0; start < plan->n_jobs; start += step) plan->batch_starts[plan->n_batches++] = start;
  plan->batch_starts[plan->n_batches] = plan->n_jobs;
}

static bool plan_run(qs_session *s, const strv *args, qs_hydra_plan *plan, qs_error *err) {
  qs_node *cfg;
  if (!qs_session_compose(s, args->v, args->n, false, true, &cfg, NULL, err)) return false;
  set_default_mode(cfg, "RUN");
  strv task = {0};
  strv_from_list(&task, qs_node_get_path(cfg, "hydra.overrides.task"));
  plan->jobs = qs_calloc(1, sizeof *plan->jobs);
  plan->n_jobs = 1;
  job_init(&plan->jobs[0], 0, &task, cfg);
  strv_free(&task);
  single_batch(plan, 0);
  return place_job(&plan->jobs[0], "hydra.run.dir", NULL, err);
}

/* "key=value" texts of hydra.sweeper.params, in file order. */
static bool sweeper_params(const qs_node *master, strv *out, qs_error *err) {
  qs_node *params = NULL;
  if (!qs_interp_select(master, "hydra.sweeper.params", &params, err)) return false;
  for (size_t k = 0; params && params->kind == QS_MAP && k < params->n; k++) {
    const qs_node *v = params->items[k];
    char *text = v->kind == QS_STR ? qs_strdup(v->s) : qs_pystr(v);
    qs_strbuf line = {0};
    qs_sb_printf(&line, "%s=%s", params->keys[k], text);
    strv_push(out, qs_sb_str(&line));
    qs_sb_free(&line);
    free(text);
  }
  qs_node_free(params);
  return true;
}

static bool expand_sweep(qs_session *s, const qs_node *master, qs_sweep *sweep, qs_error *err) {
  strv args = {0};
  bool ok = sweeper_params(master, &args, err);
  strv_from_list(&args, qs_node_get_path(master, "hydra.overrides.task"));
  qs_override *ovs = NULL;
  ok = ok && qs_parse_overrides(args.v, args.n, &ovs, err);
  ok = ok && qs_sweep_expand(ovs, args.n, &s->repo, sweep, err);
  if (ovs) qs_overrides_free(ovs, args.n);
  strv_free(&args);
  return ok;
}

static bool compose_sweep_job(qs_session *s, const strv *hydra_ovs, const qs_sweep_job *sj, int num,
                              qs_hydra_job *job, qs_error *err) {
  strv args = {0}, task = {0};
  for (size_t k = 0; k < hydra_ovs->n; k++) strv_push(&args, hydra_ovs->v[k]);
  for (size_t k = 0; k < sj->n_overrides; k++) {
    strv_push(&args, sj->overrides[k]);
    strv_push(&task, sj->overrides[k]);
  }
  qs_node *cfg;
  bool ok = qs_session_compose(s, args.v, args.n, false, true, &cfg, NULL, err);
  if (ok) {
    char id[32];
    snprintf(id, sizeof id, "%d", num);
    set_hydra_value(cfg, "hydra.job", "id", qs_node_str(id));
    set_hydra_value(cfg, "hydra.job", "num", qs_node_int(num));
    job_init(job, num, &task, cfg);
    ok = place_job(job, "hydra.sweep.dir", "hydra.sweep.subdir", err);
  }
  strv_free(&args);
  strv_free(&task);
  return ok;
}

static size_t max_batch_size(const qs_node *master) {
  qs_node *v = NULL;
  qs_error ignored;
  size_t size = 0;
  if (qs_interp_select(master, "hydra.sweeper.max_batch_size", &v, &ignored) && v && v->kind == QS_INT && v->i > 0)
    size = (size_t)v->i;
  qs_node_free(v);
  return size;
}

static bool plan_multirun(qs_session *s, const strv *args, qs_hydra_plan *plan, qs_error *err) {
  if (!qs_session_compose(s, args->v, args->n, true, true, &plan->master, NULL, err)) return false;
  set_default_mode(plan->master, "MULTIRUN");
  char *sweep_dir = NULL;
  qs_sweep sweep = {0};
  bool ok = hydra_text(plan->master, "hydra.sweep.dir", &sweep_dir, err) && expand_sweep(s, plan->master, &sweep, err);
  if (ok) {
    plan->sweep_dir = qs_abspath(sweep_dir ? sweep_dir : "");
    /* Hydra saves multirun.yaml before it composes the first job. */
    ok = !s->writer || qs_hydra_write_sweep_files(plan, err);
  }
  if (ok) {
    strv hydra_ovs = {0};
    strv_from_list(&hydra_ovs, qs_node_get_path(plan->master, "hydra.overrides.hydra"));
    plan->jobs = qs_calloc(sweep.n_jobs ? sweep.n_jobs : 1, sizeof *plan->jobs);
    for (size_t j = 0; ok && j < sweep.n_jobs; j++) {
      ok = compose_sweep_job(s, &hydra_ovs, &sweep.jobs[j], (int)j, &plan->jobs[j], err);
      if (plan->jobs[j].config) plan->n_jobs = j + 1;
    }
    strv_free(&hydra_ovs);
    single_batch(plan, max_batch_size(plan->master));
  }
  free(sweep_dir);
  qs_sweep_free(&sweep);
  return ok;
}

static bool only_one_command(const qs_cli_args *a, qs_error *err) {
  int commands = a->run + a->multirun + (a->cfg != NULL) + (a->info != NULL);
  if (commands <= 1) return true;
  return qs_fail(err, QS_EXIT_USAGE,
                 "Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified");
}

/* Everything after the flags were parsed; the session is ready. */
static bool dispatch(qs_session *s, const qs_cli_args *a, qs_hydra_plan *plan, FILE *out, qs_error *err) {
  plan->done = true;
  if (a->help) return with_hint(qs_show_help(s, a, out, err), err);
  if (a->resolve && !a->cfg)
    return qs_fail(err, QS_EXIT_USAGE, "The --resolve flag can only be used in conjunction with --cfg or --help");
  if (a->hydra_help) return qs_show_hydra_help(s, out);
  if (!only_one_command(a, err)) return false;
  if (a->cfg) {
    /* "package '<p>' not found" (the only runtime failure) Hydra writes
     * itself, without the hint. */
    bool ok = qs_show_cfg(s, a, out, err);
    return ok || err->status == QS_EXIT_RUNTIME ? ok : with_hint(ok, err);
  }
  /* Hydra runs --info outside its error reporter: a failure shows as a
   * traceback, without the hint line. */
  if (a->info) return qs_show_info(s, a, out, err);
  plan->done = false;
  strv args = {0};
  plan->multirun = decide_mode(s, a, &args);
  bool ok = plan->multirun ? plan_multirun(s, &args, plan, err) : plan_run(s, &args, plan, err);
  strv_free(&args);
  return with_hint(ok, err);
}

bool qs_hydra_prepare(int argc, char **argv, const qs_hydra_options *opts, qs_hydra_plan *plan, FILE *out,
                      FILE *err_out, qs_error *err) {
  memset(plan, 0, sizeof *plan);
  plan->app_name = qs_strdup(opts->app_name);
  if (!opts->prints) out = err_out = NULL;
  qs_cli_args a;
  if (!qs_cli_parse(argc, argv, opts->app_name, &a, err)) {
    qs_hydra_plan_free(plan);
    return false;
  }
  if (a.version) {
    if (out) fprintf(out, "Hydra %s\n", QS_HYDRA_VERSION);
    plan->done = true;
    qs_cli_args_free(&a);
    return true;
  }
  qs_session s = {.config_name = a.config_name ? a.config_name : "config", .app_name = opts->app_name,
                  .err_out = err_out, .writer = opts->prints};
  bool ok = with_hint(qs_repo_init(&s.repo, primary_dir(&a, opts), a.config_dir, err), err) &&
            dispatch(&s, &a, plan, out, err);
  qs_session_free(&s);
  qs_cli_args_free(&a);
  if (!ok) qs_hydra_plan_free(plan);
  return ok;
}

void qs_hydra_plan_free(qs_hydra_plan *plan) {
  for (size_t j = 0; j < plan->n_jobs; j++) {
    qs_hydra_job *job = &plan->jobs[j];
    for (size_t k = 0; k < job->n_overrides; k++) free(job->overrides[k]);
    free(job->overrides);
    qs_node_free(job->config);
    free(job->output_dir);
  }
  free(plan->jobs);
  free(plan->batch_starts);
  qs_node_free(plan->master);
  free(plan->sweep_dir);
  free(plan->app_name);
  memset(plan, 0, sizeof *plan);
}
