/* Writes a synthetic cell's artifacts and sensitivity.h5 in each report
 * style, then runs oracle_check.py (python3 json + h5py) over them. Exit 77 when python3 or
 * its packages are unavailable. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "report/artifacts.h"
#include "report/h5.h"
#include "synthetic_cell.h"

/* Writes the cell's artifacts in one report style and runs the oracle on them. */
static int check_style(qs_report_style style, const char *oracle) {
  char dir[] = "report-oracle-XXXXXX";
  if (!mkdtemp(dir)) return 1;
  qs_cell *cell = synth_cell_finished(9.0);
  cell->report_style = style;
  qs_error err = {0};
  char h5[64], cmd[1024];
  snprintf(h5, sizeof h5, "%s/sensitivity.h5", dir);
  const qs_cell *cells[] = {cell};
  const char *ids[] = {"0"};
  if (!qs_write_cell_artifacts(cell, dir, &err) || !qs_h5_write_runs(h5, cells, ids, 1, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  qs_cell_free(cell);
  printf("report style %s:\n", qs_report_style_name(style));
  fflush(stdout);
  snprintf(cmd, sizeof cmd, "python3 '%s' '%s' '%s'", oracle, dir, h5);
  int status = system(cmd);
  int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  if (rc == 0 && !getenv("QSENS_KEEP_TEST_FILES")) {
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  }
  return rc;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_report_oracle ORACLE_SCRIPT\n");
    return 2;
  }
  if (system("python3 -c 'import json' 2>/dev/null") != 0) {
    printf("skipped: python3 not available\n");
    return 77;
  }
  int rc = 0;
  for (int style = QS_REPORT_HEAD; style <= QS_REPORT_COMMITTED && rc == 0; style++)
    rc = check_style((qs_report_style)style, argv[1]);
  return rc;
}
