/* Config -> engine settings (src/app/job_settings.c) on the shipped conf/
 * tree: the defaults, the pass key that decides which jobs fuse, and a
 * deterministic mutation loop that gives every key the engine reads values
 * of the wrong type or range: each must be refused with one line naming the
 * key and status 2, never accepted silently or crashing. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/job_settings.h"
#include "check.h"

static const char *const CONF_DIRS[] = {QSENS_SOURCE_DIR "/conf"};

/* Settings of job j of `qsens <args>` (prints nothing, writes nothing). */
static bool settings_of(int argc, char **argv, size_t j, qs_job_settings *s, qs_error *err) {
  qs_hydra_options opts = {.app_name = "qsens", .conf_dirs = CONF_DIRS, .n_conf_dirs = 1, .prints = false};
  qs_hydra_plan plan;
  FILE *sink = fopen("/dev/null", "w");
  bool ok = qs_hydra_prepare(argc, argv, &opts, &plan, sink, sink, err);
  fclose(sink);
  if (!ok) return false;
  ok = j < plan.n_jobs && qs_job_settings_load(&plan.jobs[j], s, err);
  qs_hydra_plan_free(&plan);
  return ok;
}

static void test_defaults(void) {
  char *argv[] = {"qsens"};
  qs_job_settings s;
  qs_error err = {0};
  CHECK(settings_of(1, argv, 0, &s, &err));
  CHECK_STR(s.pair.name, "wfp8_afp8");
  CHECK_STR(s.scheme, "wfp8_afp8_autoquant_lm");
  CHECK_INT((long long)s.n_samples, 16);
  CHECK_INT((long long)s.batch.batch_size, 8);
  CHECK_INT((long long)s.batch.max_length, 512);
  CHECK_INT((long long)s.batch.score_size, 128);
  CHECK_INT((long long)s.batch.calib_batches, 0);
  CHECK(s.batch.padding == QS_PADDING_PACKED);
  CHECK(s.act_amax == QS_ACT_AMAX_STATIC);
  CHECK(s.effective_bits == 8.0);
  CHECK(s.engine.precision == QS_DELTA_ACCURATE && s.engine.calib_pad_policy == QS_CALIB_PADS_INCLUDE);
  CHECK(s.engine.n_disabled_layers == 1 && strcmp(s.engine.disabled_layers[0], "*lm_head*") == 0);
  CHECK(s.backend == QS_BACKEND_AUTO && s.threads == 0);
  CHECK_INT(s.token_budget, 0); /* null: the pass picks the step size */
  CHECK_STR(s.parallel_mode, "auto");
  qs_job_settings_free(&s);
}

/* num_score_steps overrides score_size / batch_size, as ModelOpt's. */
static void test_score_steps(void) {
  char *argv[] = {"qsens", "autoquant.num_score_steps=3", "dataset.batch_size=4", "quant_pair=wfp4_afp8"};
  qs_job_settings s;
  qs_error err = {0};
  CHECK(settings_of(4, argv, 0, &s, &err));
  CHECK_INT((long long)s.batch.score_size, 12);
  CHECK(s.act_amax == QS_ACT_AMAX_DYNAMIC);
  qs_job_settings_free(&s);
}

/* Jobs fuse when only pair, size or search settings differ. */
static void test_pass_key(void) {
  char *argv[] = {"qsens", "-m", "quant_pair=wint8_aint8,wfp4_afp16", "dataset.size=small,large",
                  "autoquant.effective_bits=6,8"};
  qs_job_settings a, b;
  qs_error err = {0};
  CHECK(settings_of(5, argv, 0, &a, &err) && settings_of(5, argv, 7, &b, &err));
  CHECK_STR(a.pass_key, b.pass_key);
  CHECK(a.n_samples == 16 && b.n_samples == 512);
  qs_job_settings_free(&a);
  qs_job_settings_free(&b);
  char *split[] = {"qsens", "-m", "autoquant.delta_precision=accurate,modelopt"};
  CHECK(settings_of(3, split, 0, &a, &err) && settings_of(3, split, 1, &b, &err));
  CHECK(strcmp(a.pass_key, b.pass_key) != 0);
  qs_job_settings_free(&a);
  qs_job_settings_free(&b);
}

/* backend.token_budget: a positive step size as given, refused when not a
 * positive int32. */
static void test_token_budget(void) {
  char *given[] = {"qsens", "backend.token_budget=8192"};
  qs_job_settings s;
  qs_error err = {0};
  CHECK(settings_of(2, given, 0, &s, &err));
  CHECK_INT(s.token_budget, 8192);
  qs_job_settings_free(&s);
  char *huge[] = {"qsens", "backend.token_budget=4294967296"};
  CHECK(!settings_of(2, huge, 0, &s, &err));
  CHECK_STR(err.msg, "config key 'backend.token_budget' must be null or in [1, 2147483647] (it is 4294967296)");
  CHECK_INT(err.status, QS_EXIT_USAGE);
  char *zero[] = {"qsens", "backend.token_budget=0"};
  err = (qs_error){0};
  CHECK(!settings_of(2, zero, 0, &s, &err));
  CHECK_STR(err.msg, "config key 'backend.token_budget' must be positive (it is 0)");
}

/* Every key the settings read, and values none of them accepts. */
static void test_mutations(void) {
  static const char *const keys[] = {
      "autoquant.effective_bits", "autoquant.score_size", "autoquant.num_calib_steps", "autoquant.num_score_steps",
      "autoquant.disabled_layers", "autoquant.include_lm_head", "autoquant.delta_precision",
      "autoquant.monotone_rule", "autoquant.name_style", "autoquant.mx_scale_rule", "autoquant.nvfp4_effective_bits",
      "autoquant.nvfp4_w4a8_block", "autoquant.extra_none_numel", "autoquant.method", "dataset.batch_size",
      "dataset.calib_seq_len", "dataset.token_budget", "dataset.padding", "dataset.calib_pad_policy",
      "dataset.format", "dataset.max_calib_samples", "dataset.name", "quant_pair.act_amax", "quant_pair.name",
      "quant_pair.weight_format", "quant_pair.act_format", "quant_pair.display_name", "backend.name",
      "backend.threads", "backend.token_budget", "parallel.mode", "model.path", "scheme"};
  static const char *const bad_values[] = {"-7", "{a: 1}", "[1, x]", "oops", "1.5e400", "17", "0", "true"};
  int refused = 0, accepted = 0;
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
    for (size_t v = 0; v < sizeof bad_values / sizeof *bad_values; v++) {
      char override[160];
      snprintf(override, sizeof override, "%s=%s", keys[k], bad_values[v]);
      char *argv[] = {"qsens", override};
      qs_job_settings s;
      qs_error err = {0};
      if (settings_of(2, argv, 0, &s, &err)) {
        accepted++;
        qs_job_settings_free(&s);
        continue;
      }
      refused++;
      CHECK(err.status == QS_EXIT_USAGE);
      CHECK(strchr(err.msg, '\n') == NULL || strstr(err.msg, "HYDRA_FULL_ERROR")); /* Hydra's own messages */
      bool named = strstr(err.msg, keys[k]) != NULL || strstr(err.msg, "HYDRA_FULL_ERROR") != NULL ||
                   strstr(err.msg, bad_values[v]) != NULL;
      if (!named) printf("refusal of %s does not name it: %s\n", override, err.msg);
      CHECK(named);
    }
  /* Only values that fit a key pass (17 samples, threads or tokens, model.path=oops, ...): 16 of them. */
  printf("mutations: refused %d, accepted %d\n", refused, accepted);
  CHECK(refused >= 247 && accepted <= 17);
}

int main(void) {
  test_defaults();
  test_score_steps();
  test_pass_key();
  test_token_budget();
  test_mutations();
  return check_summary("test_job_settings");
}
