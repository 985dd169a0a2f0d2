/* Sweep expansion, job numbering, output directories and the files of
 * .hydra/ and multirun.yaml (spec examples C, D and E), through the public
 * API, with a temporary current directory. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "config/hydra.h"
#include "config/interp.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"

static char *g_conf; /* absolute example tree */
static char *g_cwd;  /* the temporary directory the test runs in */

static bool prepare(qs_hydra_plan *plan, qs_error *err, const char *args) {
  char *copy = qs_strdup(args);
  char *argv[32] = {"qsens"};
  int argc = 1;
  for (char *tok = strtok(copy, " "); tok && argc < 31; tok = strtok(NULL, " ")) argv[argc++] = tok;
  const char *dirs[] = {g_conf};
  qs_hydra_options opts = {.app_name = "qsens", .conf_dirs = dirs, .n_conf_dirs = 1, .prints = true};
  FILE *sink = tmpfile();
  memset(err, 0, sizeof *err);
  bool ok = qs_hydra_prepare(argc, argv, &opts, plan, sink, sink, err);
  fclose(sink);
  free(copy);
  return ok;
}

/* The overrides of job j joined by one space, as the "#j :" line lists them. */
static char *job_line(const qs_hydra_job *job) {
  qs_strbuf b = {0};
  for (size_t k = 0; k < job->n_overrides; k++) qs_sb_printf(&b, "%s%s", k ? " " : "", job->overrides[k]);
  qs_sb_append(&b, "");
  return qs_sb_take(&b);
}

static void check_jobs(const qs_hydra_plan *plan, const char *const *want, size_t n) {
  CHECK_INT(plan->n_jobs, n);
  for (size_t j = 0; j < n && j < plan->n_jobs; j++) {
    char *line = job_line(&plan->jobs[j]);
    CHECK_STR(line, want[j]);
    CHECK_INT(plan->jobs[j].num, j);
    free(line);
  }
}

static char *file_text(const char *dir, const char *name) {
  char *path = qs_path_join(dir, name);
  char *data = NULL;
  size_t len;
  qs_error err;
  if (!qs_read_file(path, &data, &len, &err)) data = qs_strdup("(missing)");
  free(path);
  return data;
}

static bool contains(const char *text, const char *part) {
  bool found = strstr(text, part) != NULL;
  if (!found) fprintf(stderr, "expected to find:\n%s\nin:\n%s\n", part, text);
  return found;
}

static char *now_text(const char *fmt) {
  struct timespec ts = qs_interp_now();
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  char buf[64];
  strftime(buf, sizeof buf, fmt, &tm);
  return qs_strdup(buf);
}

static const char example_a_medium[] =
    "quant_pair:\n  name: wfp8_afp8\n  weight_bits: 8\n  act_bits: 8\n"
    "dataset:\n  size: medium\n  rows: 1024\n"
    "seed: 0\nworld_size: 2\nrun_name: ${quant_pair.name}-${dataset.size}\n"
    "scratch: ${oc.env:SCRATCH,/tmp}\nstarted: ${now:%Y%m%d}\n";

static void example_c(void) {
  qs_hydra_plan plan;
  qs_error err;
  CHECK(prepare(&plan, &err, "-m quant_pair=wfp4_afp16,wfp8_afp8 dataset.size=small,medium,large"));
  static const char *const want[] = {
      "quant_pair=wfp4_afp16 dataset.size=small", "quant_pair=wfp4_afp16 dataset.size=medium",
      "quant_pair=wfp4_afp16 dataset.size=large", "quant_pair=wfp8_afp8 dataset.size=small",
      "quant_pair=wfp8_afp8 dataset.size=medium", "quant_pair=wfp8_afp8 dataset.size=large"};
  CHECK(plan.multirun && !plan.done);
  check_jobs(&plan, want, 6);
  CHECK_INT(plan.n_batches, 1);

  char *day = now_text("%Y-%m-%d"), *clock = now_text("%H-%M-%S");
  qs_strbuf sweep_dir = {0}, job_dir = {0};
  qs_sb_printf(&sweep_dir, "%s/multirun/%s/%s", g_cwd, day, clock);
  qs_sb_printf(&job_dir, "%s/4", qs_sb_str(&sweep_dir));
  CHECK_STR(plan.sweep_dir, qs_sb_str(&sweep_dir));
  CHECK_STR(plan.jobs[4].output_dir, qs_sb_str(&job_dir));

  CHECK(qs_hydra_write_sweep_files(&plan, &err));
  CHECK(qs_hydra_write_job_files(&plan.jobs[4], &err));
  char *hydra_dir = qs_path_join(plan.jobs[4].output_dir, ".hydra");
  char *overrides = file_text(hydra_dir, "overrides.yaml");
  CHECK_STR(overrides, "- quant_pair=wfp8_afp8\n- dataset.size=medium\n");
  char *config = file_text(hydra_dir, "config.yaml");
  CHECK_STR(config, example_a_medium);
  char *hydra = file_text(hydra_dir, "hydra.yaml");
  CHECK(strncmp(hydra, "hydra:\n  run:\n    dir: outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}\n", 62) == 0);
  CHECK(contains(hydra, "  mode: MULTIRUN\n  searchpath: []\n  output_subdir: .hydra\n  overrides:\n"
                        "    hydra:\n    - hydra.mode=MULTIRUN\n    task:\n    - quant_pair=wfp8_afp8\n"
                        "    - dataset.size=medium\n  job:\n    name: qsens\n    chdir: null\n"
                        "    override_dirname: dataset.size=medium,quant_pair=wfp8_afp8\n    id: '4'\n"
                        "    num: 4\n    config_name: config\n    env_set: {}\n    env_copy: []\n"));
  CHECK(contains(hydra, "    version: 1.3.2\n    version_base: '1.3'\n"));
  qs_strbuf line = {0};
  qs_sb_printf(&line, "    output_dir: %s\n    choices:\n      dataset: synthetic\n      quant_pair: wfp8_afp8\n"
                      "      hydra/env: default\n", qs_sb_str(&job_dir));
  CHECK(contains(hydra, qs_sb_str(&line)));
  CHECK(contains(hydra, "  verbose: false\n"));

  char *multirun = file_text(plan.sweep_dir, "multirun.yaml");
  CHECK(strncmp(multirun, "hydra:\n", 7) == 0);
  CHECK(contains(multirun, "    task:\n    - quant_pair=wfp4_afp16,wfp8_afp8\n    - dataset.size=small,medium,large\n"));
  CHECK(contains(multirun, "    override_dirname: dataset.size=small,medium,large,quant_pair=wfp4_afp16,wfp8_afp8\n"
                           "    id: ???\n    num: ???\n"));
  CHECK(contains(multirun, "    output_dir: ???\n"));
  CHECK(contains(multirun, "\nquant_pair:\n  name: wfp8_afp8\n"));

  char *log = qs_hydra_log_path(&plan.jobs[4]);
  CHECK(qs_is_file(log));
  qs_strbuf want_log = {0};
  qs_sb_printf(&want_log, "%s/qsens.log", qs_sb_str(&job_dir));
  CHECK_STR(log, qs_sb_str(&want_log));

  /* The launch lines: "[YYYY-mm-dd HH:MM:SS,mmm][HYDRA] ..." */
  FILE *f = tmpfile();
  qs_hydra_log_launch(&plan, 0, f);
  qs_hydra_log_job(&plan.jobs[4], f);
  rewind(f);
  char l1[256] = "", l2[256] = "";
  CHECK(fgets(l1, sizeof l1, f) && fgets(l2, sizeof l2, f));
  fclose(f);
  CHECK(l1[0] == '[' && l1[11] == ' ' && l1[20] == ',' && l1[24] == ']');
  CHECK_STR(l1 + 24, "][HYDRA] Launching 6 jobs locally\n");
  CHECK_STR(l2 + 24, "][HYDRA] \t#4 : quant_pair=wfp8_afp8 dataset.size=medium\n");

  free(log);
  qs_sb_free(&want_log);
  qs_sb_free(&line);
  free(multirun);
  free(hydra);
  free(config);
  free(overrides);
  free(hydra_dir);
  qs_sb_free(&sweep_dir);
  qs_sb_free(&job_dir);
  free(day);
  free(clock);
  qs_hydra_plan_free(&plan);
}

static void example_d(void) {
  qs_hydra_plan plan;
  qs_error err;
  CHECK(prepare(&plan, &err, "-m seed=range(0,3) world_size=choice(1,2)"));
  static const char *const want[] = {"seed=0 world_size=1", "seed=0 world_size=2", "seed=1 world_size=1",
                                     "seed=1 world_size=2", "seed=2 world_size=1", "seed=2 world_size=2"};
  check_jobs(&plan, want, 6);
  qs_hydra_plan_free(&plan);

  CHECK(prepare(&plan, &err, "-m quant_pair=glob(*,exclude=*afp8) seed=5 dataset.size=small,large"));
  static const char *const want_glob[] = {"quant_pair=wfp4_afp16 seed=5 dataset.size=small",
                                          "quant_pair=wfp4_afp16 seed=5 dataset.size=large"};
  check_jobs(&plan, want_glob, 2);
  /* Each job is composed with its own choice. */
  qs_node *v = NULL;
  CHECK(qs_hydra_job_select(&plan.jobs[1], "quant_pair.weight_bits", &v, &err) && v && v->kind == QS_INT);
  if (v) CHECK_INT(v->i, 4);
  qs_node_free(v);
  CHECK(qs_hydra_job_select(&plan.jobs[1], "run_name", &v, &err) && v && v->kind == QS_STR);
  if (v) CHECK_STR(v->s, "wfp4_afp16-large");
  qs_node_free(v);
  qs_hydra_plan_free(&plan);
}

static void sweep_rules(void) {
  qs_hydra_plan plan;
  qs_error err;
  /* A repeated key replaces the values but keeps its first position. */
  CHECK(prepare(&plan, &err, "-m dataset.size=small seed=1 dataset.size=large,medium"));
  static const char *const want[] = {"dataset.size=large seed=1", "dataset.size=medium seed=1"};
  check_jobs(&plan, want, 2);
  qs_hydra_plan_free(&plan);

  CHECK(prepare(&plan, &err, "-m seed=1,2,3 hydra.sweeper.max_batch_size=2"));
  CHECK_INT(plan.n_batches, 2);
  CHECK_INT(plan.batch_starts[0], 0);
  CHECK_INT(plan.batch_starts[1], 2);
  CHECK_INT(plan.batch_starts[2], 3);
  qs_hydra_plan_free(&plan);

  CHECK(prepare(&plan, &err, "-m dataset.size=large seed=1 hydra.sweep.dir=sw "
                             "hydra.sweep.subdir=${hydra.job.override_dirname}"));
  CHECK_INT(plan.n_jobs, 1);
  qs_strbuf dir = {0};
  qs_sb_printf(&dir, "%s/sw/dataset.size=large,seed=1", g_cwd);
  CHECK_STR(plan.jobs[0].output_dir, qs_sb_str(&dir));
  qs_sb_free(&dir);
  qs_hydra_plan_free(&plan);

  /* hydra.mode from the command line without -m still sweeps, and no
   * hydra.mode override is appended. */
  CHECK(prepare(&plan, &err, "seed=1,2 hydra.mode=MULTIRUN"));
  CHECK(plan.multirun);
  CHECK_INT(plan.n_jobs, 2);
  qs_node *hydra_ovs = qs_node_get_path(plan.jobs[0].config, "hydra.overrides.hydra");
  CHECK(hydra_ovs && hydra_ovs->n == 1);
  qs_hydra_plan_free(&plan);

  CHECK(!prepare(&plan, &err, "-m hydra.run.dir=a,b"));
  CHECK(strncmp(err.msg, "Sweeping over Hydra's configuration is not supported : 'hydra.run.dir=a,b'", 74) == 0);
  CHECK(!prepare(&plan, &err, "-m seed=interval(0,1)"));
  CHECK(strncmp(err.msg, "BasicSweeper does not support sweep type : ", 43) == 0);
  /* Every job is composed before any runs: the bad option fails the plan. */
  CHECK(!prepare(&plan, &err, "-m quant_pair=wfp4_afp16,int4 hydra.sweep.dir=bad_sweep"));
  CHECK(strncmp(err.msg, "In 'config': Could not find 'quant_pair/int4'", 45) == 0);
  /* ... but, as with Hydra, after multirun.yaml was saved. */
  char *saved = qs_path_join(g_cwd, "bad_sweep/multirun.yaml");
  CHECK(qs_is_file(saved));
  free(saved);
}

static void example_e(void) {
  qs_hydra_plan plan;
  qs_error err;
  CHECK(prepare(&plan, &err, "seed=3 hydra.run.dir=runs/r1"));
  CHECK(!plan.multirun && !plan.done);
  CHECK_INT(plan.n_jobs, 1);
  qs_strbuf dir = {0};
  qs_sb_printf(&dir, "%s/runs/r1", g_cwd);
  CHECK_STR(plan.jobs[0].output_dir, qs_sb_str(&dir));
  CHECK(qs_hydra_write_job_files(&plan.jobs[0], &err));
  char *hydra_dir = qs_path_join(plan.jobs[0].output_dir, ".hydra");
  char *overrides = file_text(hydra_dir, "overrides.yaml");
  CHECK_STR(overrides, "- seed=3\n");
  char *hydra = file_text(hydra_dir, "hydra.yaml");
  CHECK(contains(hydra, "  run:\n    dir: runs/r1\n"));
  CHECK(contains(hydra, "  mode: RUN\n"));
  CHECK(contains(hydra, "    hydra:\n    - hydra.run.dir=runs/r1\n    - hydra.mode=RUN\n    task:\n    - seed=3\n"));
  CHECK(contains(hydra, "    override_dirname: seed=3\n    id: ???\n    num: ???\n"));
  qs_strbuf cwd_line = {0};
  qs_sb_printf(&cwd_line, "    cwd: %s\n", g_cwd);
  CHECK(contains(hydra, qs_sb_str(&cwd_line)));
  char *log = qs_path_join(qs_sb_str(&dir), "qsens.log");
  CHECK(qs_is_file(log));
  qs_node *resolved = NULL;
  CHECK(qs_hydra_job_resolved(&plan.jobs[0], &resolved, &err));
  CHECK(resolved && qs_map_get(resolved, "hydra") == NULL);
  qs_node *seed = qs_map_get(resolved, "seed");
  CHECK(seed && seed->kind == QS_INT && seed->i == 3);
  qs_node_free(resolved);
  free(log);
  qs_sb_free(&cwd_line);
  free(hydra);
  free(overrides);
  free(hydra_dir);
  qs_sb_free(&dir);
  qs_hydra_plan_free(&plan);

  /* hydra.output_subdir=null writes no .hydra folder. */
  CHECK(prepare(&plan, &err, "hydra.run.dir=runs/r2 hydra.output_subdir=null"));
  CHECK(qs_hydra_write_job_files(&plan.jobs[0], &err));
  char *r2 = qs_path_join(g_cwd, "runs/r2/.hydra");
  CHECK(!qs_is_dir(r2));
  free(r2);
  qs_hydra_plan_free(&plan);

  CHECK(!prepare(&plan, &err, "--resolve"));
  CHECK_STR(err.msg, "The --resolve flag can only be used in conjunction with --cfg or --help");
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* rm -r of the temporary directory the test worked in. */
static void remove_tree(const char *dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int main(void) {
  unsetenv("SCRATCH");
  g_conf = qs_abspath(QSENS_SOURCE_DIR "/tests/config/trees/example");
  char tmpl[] = "/tmp/qsens_outputs_XXXXXX";
  if (!mkdtemp(tmpl) || chdir(tmpl) != 0) return 1;
  g_cwd = qs_abspath(".");
  example_c();
  example_d();
  sweep_rules();
  example_e();
  if (chdir("/") == 0) remove_tree(g_cwd);
  free(g_cwd);
  free(g_conf);
  return check_summary("test_config_outputs");
}
