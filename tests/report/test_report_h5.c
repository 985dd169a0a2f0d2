/* sensitivity.h5: layout read back with h5dump (chunking, filters, types),
 * and the per-job merge. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/strbuf.h"
#include "report/h5.h"
#include "synthetic_cell.h"

/* stdout of a shell command, or NULL when it fails. */
static char *run_command(const char *cmd) {
  FILE *p = popen(cmd, "r");
  if (!p) return NULL;
  qs_strbuf out = {0};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) qs_sb_append_n(&out, buf, n);
  int rc = pclose(p);
  if (rc != 0) {
    qs_sb_free(&out);
    return NULL;
  }
  return qs_sb_take(&out);
}

static void check_contains(const char *text, const char *needle) {
  check_count_++;
  if (!text || !strstr(text, needle)) {
    check_failures_++;
    fprintf(stderr, "h5dump output lacks [%s]\n", needle);
  }
}

static void test_layout(const char *path) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "h5dump -p -H -d /runs/0/group_scores '%s' 2>&1", path);
  char *h = run_command(cmd);
  check_contains(h, "DATATYPE  H5T_IEEE_F64LE");
  check_contains(h, "DATASPACE  SIMPLE { ( 145, 2 ) / ( H5S_UNLIMITED, 2 ) }");
  check_contains(h, "CHUNKED ( 145, 2 )");
  check_contains(h, "PREPROCESSING SHUFFLE");
  check_contains(h, "COMPRESSION DEFLATE { LEVEL 4 }");
  free(h);
  snprintf(cmd, sizeof cmd, "h5dump -H -d /runs/0/linears '%s' 2>&1", path);
  h = run_command(cmd);
  check_contains(h, "H5T_STRING {\n         STRSIZE 160;\n         STRPAD H5T_STR_NULLTERM;\n"
                    "         CSET H5T_CSET_UTF8;");
  check_contains(h, "H5T_STD_I64LE \"numel\";");
  check_contains(h, "DATASPACE  SIMPLE { ( 253 ) / ( H5S_UNLIMITED ) }");
  free(h);
  snprintf(cmd, sizeof cmd, "h5dump -a /runs/0/config_yaml '%s' 2>&1", path);
  h = run_command(cmd);
  check_contains(h, "STRSIZE H5T_VARIABLE;");
  check_contains(h, "(0): \"quant_pair: wint8_aint8\n");
  free(h);
  snprintf(cmd, sizeof cmd, "h5dump -d /runs/0/sample_tokens '%s' 2>&1", path);
  h = run_command(cmd);
  check_contains(h, "(0): 10, 13, 16, 19, 22");
  free(h);
}

static void test_merge(const char *a, const char *b, const char *merged) {
  qs_error err = {0};
  const char *ins[] = {a, b};
  CHECK(qs_h5_merge(merged, ins, 2, &err));
  char cmd[512];
  snprintf(cmd, sizeof cmd, "h5ls '%s/runs' 2>&1", merged);
  char *ls = run_command(cmd);
  check_contains(ls, "0                        Group");
  check_contains(ls, "1                        Group");
  check_contains(ls, "quant_pair=wfp8_afp8     Group");
  free(ls);
  snprintf(cmd, sizeof cmd, "h5dump -p -H -d /runs/1/group_scores '%s' 2>&1", merged);
  ls = run_command(cmd);
  check_contains(ls, "COMPRESSION DEFLATE { LEVEL 4 }"); /* filters survive H5Ocopy */
  free(ls);
  const char *dup[] = {a, a};
  CHECK(!qs_h5_merge(merged, dup, 2, &err));
  CHECK(strstr(err.msg, "run '0' of ") && strstr(err.msg, "already in the merged file"));
  const char *missing[] = {"no-such.h5"};
  CHECK(!qs_h5_merge(merged, missing, 1, &err));
  CHECK_STR(err.msg, "cannot open HDF5 file no-such.h5");
  /* A failed merge leaves the earlier merged file in place, readable. */
  snprintf(cmd, sizeof cmd, "h5ls '%s/runs' 2>&1", merged);
  ls = run_command(cmd);
  check_contains(ls, "quant_pair=wfp8_afp8");
  free(ls);
}

int main(void) {
  char dir[] = "report-h5-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  char a[64], b[64], merged[64];
  snprintf(a, sizeof a, "%s/a.h5", dir);
  snprintf(b, sizeof b, "%s/b.h5", dir);
  snprintf(merged, sizeof merged, "%s/sensitivity.h5", dir);
  qs_cell *cell = synth_cell_finished(9.0);
  const qs_cell *cells[] = {cell, cell};
  const char *ids_a[] = {"0", "quant_pair=wfp8_afp8"}, *ids_b[] = {"1"};
  qs_error err = {0};
  CHECK(qs_h5_write_runs(a, cells, ids_a, 2, &err));
  CHECK(qs_h5_write_runs(b, cells, ids_b, 1, &err));
  const char *bad_id[] = {"a/b"};
  CHECK(!qs_h5_write_runs(b, cells, bad_id, 1, &err));
  CHECK_STR(err.msg, "HDF5 run id 'a/b' must be non-empty without '/'");
  test_layout(a);
  test_merge(a, b, merged);
  qs_cell_free(cell);
  int rc = check_summary("test_report_h5");
  if (rc == 0 && !getenv("QSENS_KEEP_TEST_FILES")) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  }
  return rc;
}
