/* --cfg/--help/--info outputs and error texts compared byte for byte with
 * what real Hydra 1.3 printed for the same trees and arguments
 * (golden/cases.txt; golden/make_golden.py regenerates the files). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/hydra.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"

#define GOLDEN QSENS_SOURCE_DIR "/tests/config/golden"
#define TREES QSENS_SOURCE_DIR "/tests/config/trees"

static char *read_text(const char *path) {
  char *data = NULL;
  size_t len;
  qs_error err;
  return qs_read_file(path, &data, &len, &err) ? data : qs_strdup("");
}

static char *read_stream(FILE *f) {
  qs_strbuf b = {0};
  char chunk[4096];
  size_t n;
  rewind(f);
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) qs_sb_append_n(&b, chunk, n);
  qs_sb_append(&b, "");
  return qs_sb_take(&b);
}

/* text with every occurrence of `from` replaced by `to`. */
static char *replace_all(const char *text, const char *from, const char *to) {
  qs_strbuf b = {0};
  size_t n = strlen(from);
  for (const char *p = text; *p;) {
    if (strncmp(p, from, n) == 0) {
      qs_sb_append(&b, to);
      p += n;
    } else {
      qs_sb_putc(&b, *p++);
    }
  }
  qs_sb_append(&b, "");
  return qs_sb_take(&b);
}

/* Hydra pads its --info tables to the longest cell, and the longest cell is
 * the absolute config path, which differs between the machine that made the
 * golden files and this one. Compare tables with the padding taken out:
 * blanks before a '|' dropped, rule lines of '-' shortened to one dash. */
static char *without_table_padding(const char *text) {
  qs_strbuf b = {0};
  for (const char *line = text; *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) + 1 : strlen(line);
    bool rule = len > 1 && strspn(line, "-") == len - (end ? 1 : 0);
    if (rule) {
      qs_sb_append(&b, end ? "-\n" : "-");
    } else if (line[0] == '|') {
      for (size_t i = 0; i < len; i++) {
        size_t blanks = strspn(line + i, " ");
        if (blanks > 1 && line[i + blanks] == '|') i += blanks - 1;
        qs_sb_putc(&b, line[i]);
      }
    } else {
      qs_sb_append_n(&b, line, len);
    }
    line += len;
  }
  qs_sb_append(&b, "");
  return qs_sb_take(&b);
}

static void run_case(const char *name, const char *tree, char *args) {
  char *argv[64] = {"qsens"};
  int argc = 1;
  for (char *tok = strtok(args, " "); tok && argc < 63; tok = strtok(NULL, " ")) argv[argc++] = tok;
  char conf[1024];
  snprintf(conf, sizeof conf, "%s/%s", TREES, tree);
  char *conf_abs = qs_abspath(conf);
  const char *dirs[] = {conf_abs};
  qs_hydra_options opts = {.app_name = "qsens", .conf_dirs = dirs, .n_conf_dirs = 1, .prints = true};
  FILE *out = tmpfile(), *warn = tmpfile();
  qs_hydra_plan plan;
  qs_error err = {0};
  bool ok = qs_hydra_prepare(argc, argv, &opts, &plan, out, warn, &err);

  char path[1024];
  snprintf(path, sizeof path, "%s/%s.out", GOLDEN, name);
  char *want_out_raw = read_text(path);
  snprintf(path, sizeof path, "%s/%s.status", GOLDEN, name);
  char *status = read_text(path);
  snprintf(path, sizeof path, "%s/%s.err", GOLDEN, name);
  char *want_err_raw = read_text(path);
  char *want_subst = replace_all(want_out_raw, "<CONF>", conf_abs);
  char *want_out = without_table_padding(want_subst);
  char *want_err = replace_all(want_err_raw, "<CONF>", conf_abs);
  char *got_raw = read_stream(out);
  char *got_out = without_table_padding(got_raw);
  char *warnings = read_stream(warn);
  /* stderr: the warnings, then the error message and its newline. */
  qs_strbuf got_err = {0};
  qs_sb_append(&got_err, warnings);
  if (!ok) qs_sb_printf(&got_err, "%s\n", err.msg);
  qs_sb_append(&got_err, "");

  bool expect_ok = strcmp(status, "ok\n") == 0;
  if (ok != expect_ok) fprintf(stderr, "case %s: prepare returned %d\n", name, ok);
  CHECK(ok == expect_ok);
  if (!ok) CHECK(err.status != 0);
  if (ok) CHECK(plan.done);
  if (strcmp(got_out, want_out) != 0) fprintf(stderr, "case %s: stdout differs\n", name);
  CHECK_STR(got_out, want_out);
  if (strcmp(qs_sb_str(&got_err), want_err) != 0) fprintf(stderr, "case %s: stderr differs\n", name);
  CHECK_STR(qs_sb_str(&got_err), want_err);

  if (ok) qs_hydra_plan_free(&plan);
  qs_sb_free(&got_err);
  free(got_out);
  free(got_raw);
  free(want_subst);
  free(warnings);
  free(status);
  free(want_out);
  free(want_err);
  free(want_out_raw);
  free(want_err_raw);
  free(conf_abs);
  fclose(out);
  fclose(warn);
}

int main(void) {
  unsetenv("SCRATCH");
  char *cases = read_text(GOLDEN "/cases.txt");
  int n = 0;
  for (char *line = cases, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    if (line[0] == '#' || !line[0]) continue;
    char *name = line, *tree = strchr(name, '|');
    if (!tree) continue;
    *tree++ = '\0';
    char *args = strchr(tree, '|');
    if (!args) continue;
    *args++ = '\0';
    run_case(name, tree, args);
    n++;
  }
  CHECK(n >= 45);
  free(cases);
  return check_summary("test_config_golden");
}
