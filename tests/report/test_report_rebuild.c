/* State round trip, `qsens report` regeneration, `qsens solve` re-solving,
 * bad state files (missing, corrupt, randomly mutated). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "report/artifacts.h"
#include "report/rebuild.h"
#include "report/state.h"
#include "synthetic_cell.h"

int qs_cmd_report(int argc, char **argv);
int qs_cmd_solve(int argc, char **argv);

#define SCHEME "wint8_aint8_autoquant_lm"

/* composed-config.yaml is last: the committed layout does not write it. */
static const char *const artifact_names[] = {
    SCHEME "_autoquant_state.json", SCHEME "_quant_manifest.json", "layer-sensitivity-report.md",
    "layer-sensitivity-report.json", "layer-sensitivity-top.svg", "composed-config.yaml"};
enum { NARTIFACTS = 6 };

static char *slurp(const char *dir, const char *name) {
  char *path = qs_path_join(dir, name), *text = NULL;
  size_t len;
  qs_error err = {0};
  if (!qs_read_file(path, &text, &len, &err)) text = NULL;
  free(path);
  return text;
}

/* The artifacts of a report style: all of them for HEAD, all but
 * composed-config.yaml for the committed layout. */
static int artifact_count(qs_report_style style) {
  return style == QS_REPORT_HEAD ? NARTIFACTS : NARTIFACTS - 1;
}

static void check_same_files_style(const char *dir_a, const char *dir_b, qs_report_style style) {
  for (int i = 0; i < artifact_count(style); i++) {
    char *a = slurp(dir_a, artifact_names[i]), *b = slurp(dir_b, artifact_names[i]);
    check_count_++;
    if (!a || !b || strcmp(a, b) != 0) {
      check_failures_++;
      fprintf(stderr, "%s differs between %s and %s\n", artifact_names[i], dir_a, dir_b);
    }
    free(a);
    free(b);
  }
}

static void check_same_files(const char *dir_a, const char *dir_b) {
  check_same_files_style(dir_a, dir_b, QS_REPORT_HEAD);
}

static void write_cell(const qs_cell *cell, const char *dir) {
  qs_error err = {0};
  CHECK(qs_write_cell_artifacts(cell, dir, &err));
}

/* Loading a state and rendering it again gives the same bytes. */
static void test_round_trip(const char *dir) {
  char *path = qs_cell_file(dir, SCHEME, QS_STATE_SUFFIX);
  qs_cell *cell = NULL;
  qs_error err = {0};
  CHECK(qs_cell_load_state(path, &cell, &err));
  if (cell) {
    char *again = qs_render_state(cell), *orig = slurp(dir, artifact_names[0]);
    CHECK(orig && strcmp(again, orig) == 0);
    CHECK_INT(cell->nlinears, 253);
    CHECK(cell->linears[0].input_amax[0] == 1.5 && cell->linears[0].weight_amax == 0.0625);
    free(again);
    free(orig);
    qs_cell_free(cell);
  }
  free(path);
}

static void expect_load_error(const char *path, const char *needle);

/* Reports rebuilt from the state equal the originals (also after deleting
 * them), in the style the state records. */
static void test_report_regeneration(const char *dir, const char *copy, qs_report_style style) {
  qs_cell *cell = synth_cell_finished(9.0);
  cell->report_style = style;
  write_cell(cell, copy);
  qs_cell_free(cell);
  /* composed-config.yaml stays: it is the rebuild's source of the config text. */
  for (int i = 1; i < NARTIFACTS - 1; i++) {
    char *p = qs_path_join(dir, artifact_names[i]);
    unlink(p);
    free(p);
  }
  char *argv[] = {"report", (char *)dir, NULL};
  CHECK_INT(qs_cmd_report(2, argv), 0);
  check_same_files_style(dir, copy, style);
  char *md = slurp(dir, "layer-sensitivity-report.md"), *composed = slurp(dir, "composed-config.yaml");
  bool head = style == QS_REPORT_HEAD;
  CHECK(md && (strstr(md, "\n## Summary\n") != NULL) == head);
  CHECK(md && (strstr(md, "\n## Per-layer sensitivity table\n") != NULL) == !head);
  if (head)
    CHECK_STR(composed, "quant_pair: wint8_aint8\ndataset:\n  size: medium\n");
  else
    CHECK(composed == NULL);
  free(md);
  free(composed);
}

/* A state that predates report_style was rendered in the committed layout and
 * rebuilds so; an unknown style names the key. */
static void test_style_key(const char *dir, const char *scratch) {
  char *text = slurp(dir, artifact_names[0]);
  const char *key = text ? strstr(text, ",\n  \"report_style\": \"head\"") : NULL;
  CHECK(key != NULL);
  if (!key) {
    free(text);
    return;
  }
  char *path = qs_cell_file(scratch, SCHEME, QS_STATE_SUFFIX);
  qs_error err = {0};
  qs_strbuf edited = {0};
  qs_sb_append_n(&edited, text, (size_t)(key - text));
  qs_sb_append(&edited, key + strlen(",\n  \"report_style\": \"head\""));
  CHECK(qs_write_file_atomic(path, edited.s, edited.len, &err));
  qs_cell *cell = NULL;
  CHECK(qs_cell_load_state(path, &cell, &err));
  CHECK(cell && cell->report_style == QS_REPORT_COMMITTED);
  qs_cell_free(cell);
  qs_sb_clear(&edited);
  qs_sb_append_n(&edited, text, (size_t)(key - text));
  qs_sb_append(&edited, ",\n  \"report_style\": \"fancy\"");
  qs_sb_append(&edited, key + strlen(",\n  \"report_style\": \"head\""));
  CHECK(qs_write_file_atomic(path, edited.s, edited.len, &err));
  expect_load_error(path, "key 'report_style' must be \"head\" or \"committed\"");
  unlink(path);
  free(path);
  qs_sb_free(&edited);
  free(text);
}

/* solve at a new budget equals a fresh finish at that budget; an infeasible
 * budget changes nothing. */
static void test_solve(const char *dir, const char *fresh) {
  char *argv[] = {"solve", (char *)dir, "autoquant.effective_bits=10.5", NULL};
  CHECK_INT(qs_cmd_solve(3, argv), 0);
  qs_cell *cell = synth_cell_finished(10.5);
  write_cell(cell, fresh);
  qs_cell_free(cell);
  check_same_files(dir, fresh);
  char *before = slurp(dir, artifact_names[0]);
  char *bad[] = {"solve", (char *)dir, "autoquant.effective_bits=3", NULL};
  CHECK_INT(qs_cmd_solve(3, bad), QS_EXIT_USAGE);
  char *after = slurp(dir, artifact_names[0]);
  CHECK(before && after && strcmp(before, after) == 0);
  free(before);
  free(after);
  char *typo[] = {"solve", (char *)dir, "autoquant.effective_bit=6", NULL};
  CHECK_INT(qs_cmd_solve(3, typo), QS_EXIT_USAGE);
  char *nan_bits[] = {"solve", (char *)dir, "autoquant.effective_bits=nan", NULL};
  CHECK_INT(qs_cmd_solve(3, nan_bits), QS_EXIT_USAGE);
}

/* A sweep dir: every job folder is handled. */
static void test_sweep_dir(const char *sweep) {
  char *a = qs_path_join(sweep, "0"), *b = qs_path_join(sweep, "1");
  qs_cell *cell = synth_cell_finished(9.0);
  write_cell(cell, a);
  write_cell(cell, b);
  qs_cell_free(cell);
  qs_error err = {0};
  size_t n = 0;
  CHECK(qs_rebuild_reports(sweep, &n, &err));
  CHECK_INT(n, 2);
  CHECK(qs_resolve_budget(sweep, 12.0, &n, &err));
  CHECK_INT(n, 2);
  check_same_files(a, b);
  free(a);
  free(b);
}

static void expect_load_error(const char *path, const char *needle) {
  qs_cell *cell = NULL;
  qs_error err = {0};
  CHECK(!qs_cell_load_state(path, &cell, &err));
  CHECK(cell == NULL);
  CHECK_INT(err.status, QS_EXIT_RUNTIME);
  CHECK(strchr(err.msg, '\n') == NULL);
  check_count_++;
  if (!strstr(err.msg, needle)) {
    check_failures_++;
    fprintf(stderr, "message [%s] lacks [%s]\n", err.msg, needle);
  }
}

/* Missing and corrupt states: one clear line naming the file, exit 1. */
static void test_bad_states(const char *dir, const char *scratch) {
  char *argv[] = {"report", (char *)scratch, NULL};
  CHECK_INT(qs_cmd_report(2, argv), QS_EXIT_RUNTIME); /* empty folder: no state file */
  char *missing[] = {"report", "no-such-dir", NULL};
  CHECK_INT(qs_cmd_report(2, missing), QS_EXIT_RUNTIME);
  char *text = slurp(dir, artifact_names[0]);
  qs_error err = {0};
  char *other = qs_cell_file(scratch, "wfp8_afp8_autoquant_lm", QS_STATE_SUFFIX);
  CHECK(qs_write_file_atomic(other, text, strlen(text), &err));
  char *path = qs_cell_file(scratch, SCHEME, QS_STATE_SUFFIX);
  CHECK(qs_write_file_atomic(path, text, strlen(text), &err));
  size_t nfound = 0;
  CHECK(!qs_rebuild_reports(scratch, &nfound, &err)); /* which state is meant is ambiguous */
  CHECK(strstr(err.msg, " holds two state files: ") != NULL);
  unlink(other);
  free(other);
  CHECK(qs_write_file_atomic(path, text, strlen(text) / 2, &err));
  expect_load_error(path, "not valid JSON");
  CHECK_INT(qs_cmd_report(2, argv), QS_EXIT_RUNTIME);
  const char *no_best = strstr(text, "  \"best\": {");
  qs_strbuf edited = {0};
  qs_sb_append_n(&edited, text, (size_t)(no_best - text));
  qs_sb_append(&edited, "  \"bets\": {");
  qs_sb_append(&edited, no_best + strlen("  \"best\": {"));
  CHECK(qs_write_file_atomic(path, edited.s, edited.len, &err));
  expect_load_error(path, "key 'best' is missing");
  qs_sb_free(&edited);

  /* Deterministic mutation loop: each run flips, deletes or duplicates bytes;
   * a load either succeeds or fails with one line naming the file. */
  unsigned long long rng = 7;
  size_t len = strlen(text);
  char *buf = qs_malloc(len + 64);
  for (int iter = 0; iter < 300; iter++) {
    memcpy(buf, text, len + 1);
    size_t n = len;
    for (int k = 0; k < 1 + iter % 4; k++) {
      rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
      size_t at = (size_t)(rng >> 33) % n;
      static const char junk[] = "\"{}[],:0-.e9tn\\\x80 ";
      switch ((rng >> 20) % 3) {
      case 0: buf[at] = junk[(rng >> 40) % (sizeof junk - 1)]; break;
      case 1: memmove(buf + at, buf + at + 1, n - at), n--; break;
      default: n = at + 1; buf[n] = '\0'; break; /* truncation */
      }
    }
    FILE *f = fopen(path, "wb"); /* plain write: fsync per iteration would dominate */
    CHECK(f && fwrite(buf, 1, n, f) == n && fclose(f) == 0);
    qs_cell *cell = NULL;
    qs_error lerr = {0};
    if (qs_cell_load_state(path, &cell, &lerr)) {
      char *again = qs_render_state(cell); /* whatever loaded must render */
      CHECK(again != NULL);
      free(again);
      qs_cell_free(cell);
    } else {
      CHECK(strncmp(lerr.msg, path, strlen(path)) == 0 && strchr(lerr.msg, '\n') == NULL);
    }
  }
  free(buf);
  unlink(path);
  free(path);
  free(text);
}

/* Two candidate formats given out of choice order: groups list the 4-bit one
 * first, the monotone fix applies, and the state round-trips (per-format
 * input amax keys included). */
static void test_two_formats(const char *dir) {
  static const char *const kinds[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                      "mlp.down_proj"};
  qs_cell *cell = qs_cell_new();
  qs_cell_set_str(&cell->pair, "wint8_aint8");
  qs_cell_set_str(&cell->scheme, SCHEME);
  qs_cell_set_str(&cell->model_id, "tiny");
  qs_cell_add_format(cell, "INT8_DEFAULT_CFG", "INT8_DEFAULT_CFG(effective-bits: 8.0)", 8.0);
  qs_cell_add_format(cell, "MXFP4_WEIGHT_ONLY_CFG", "CUSTOM_1(effective-bits: 4.0)", 4.0);
  char name[96];
  for (int k = 0; k < 7; k++) {
    snprintf(name, sizeof name, "model.language_model.layers.0.%s", kinds[k]);
    qs_cell_linear *lin = qs_cell_add_linear(cell, name, 64);
    lin->raw_scores[0] = 3.0 + k; /* the 8-bit format scores worse than the 4-bit one */
    lin->raw_scores[1] = 1.0;
    lin->input_amax[0] = 2.0, lin->input_amax[1] = 0.5 * k;
  }
  qs_error err = {0};
  CHECK(qs_cell_finish(cell, 4.0, &err)); /* only the 4-bit choice everywhere fits */
  const qs_cell_group *q = &cell->groups[0];
  CHECK_STR(q->formats[0], "CUSTOM_1(effective-bits: 4.0)");
  CHECK_STR(q->formats[1], "INT8_DEFAULT_CFG(effective-bits: 8.0)");
  CHECK(q->raw_scores[0] == 3.0 && q->raw_scores[1] == 12.0 && q->scores[1] == 3.0);
  CHECK_INT(q->chosen, 0);
  write_cell(cell, dir);
  char *md = slurp(dir, "layer-sensitivity-report.md");
  CHECK(md && strstr(md, "|model.language_model.layers.0.mlp.gate_proj|4.0, 8.0|2.000e+00, "
                         "2.000e+00|3.200e+01, 6.400e+01|\n"));
  char *state_text = slurp(dir, artifact_names[0]);
  CHECK(state_text && strstr(state_text, "\"model.language_model.layers.0.self_attn.k_proj"
                                         ".input_quantizer[1]\": 0.5,\n"));
  char *path = qs_cell_file(dir, SCHEME, QS_STATE_SUFFIX);
  qs_cell *loaded = NULL;
  CHECK(qs_cell_load_state(path, &loaded, &err));
  if (loaded) {
    char *again = qs_render_state(loaded), *md2 = qs_render_report_md(loaded);
    CHECK(state_text && strcmp(again, state_text) == 0);
    CHECK(md && strcmp(md2, md) == 0);
    free(again), free(md2);
    qs_cell_free(loaded);
  }
  free(path), free(md), free(state_text);
  qs_cell_free(cell);
}

int main(void) {
  char root[] = "report-rebuild-XXXXXX";
  if (!mkdtemp(root)) return 1;
  char *run = qs_path_join(root, "run"), *copy = qs_path_join(root, "copy");
  char *fresh = qs_path_join(root, "fresh"), *sweep = qs_path_join(root, "sweep");
  char *scratch = qs_path_join(root, "scratch"), *two = qs_path_join(root, "two");
  char *committed = qs_path_join(root, "committed"), *committed_copy = qs_path_join(root, "committed-copy");
  qs_error err = {0};
  CHECK(qs_mkdirs(scratch, &err));
  qs_cell *cell = synth_cell_finished(9.0);
  write_cell(cell, run);
  qs_cell_free(cell);
  test_round_trip(run);
  test_report_regeneration(run, copy, QS_REPORT_HEAD);
  cell = synth_cell_finished(9.0);
  cell->report_style = QS_REPORT_COMMITTED;
  write_cell(cell, committed);
  qs_cell_free(cell);
  test_report_regeneration(committed, committed_copy, QS_REPORT_COMMITTED);
  test_solve(run, fresh);
  test_sweep_dir(sweep);
  test_bad_states(run, scratch);
  test_style_key(run, scratch);
  test_two_formats(two);
  free(run), free(copy), free(fresh), free(sweep), free(scratch), free(two);
  free(committed), free(committed_copy);
  int rc = check_summary("test_report_rebuild");
  if (rc == 0 && !getenv("QSENS_KEEP_TEST_FILES")) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
  }
  return rc;
}
