/* qsens report DIR
 * Regenerates the manifest, reports and chart of a run dir (or of every job
 * dir of a sweep dir) from the stored state files; no model or data needed. */
#include <stdio.h>
#include <string.h>

#include "app/commands.h"
#include "core/error.h"
#include "report/rebuild.h"

int qs_cmd_report(int argc, char **argv);

static const char report_usage[] =
    "usage: qsens report DIR\n"
    "\n"
    "Rewrites <scheme>_quant_manifest.json, layer-sensitivity-report.{md,json} and\n"
    "layer-sensitivity-top.svg from <scheme>_autoquant_state.json, in DIR or in each\n"
    "job folder of a sweep DIR. The results are byte-identical to the run's own.\n";

int qs_cmd_report(int argc, char **argv) {
  if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    fputs(report_usage, stdout);
    return QS_EXIT_OK;
  }
  if (argc != 2) return qs_cmd_usage_error("report", "expected one run or sweep directory");
  qs_error err = {0};
  size_t n = 0;
  if (!qs_rebuild_reports(argv[1], &n, &err)) {
    fprintf(stderr, "qsens report: %s\n", err.msg);
    return err.status ? err.status : QS_EXIT_RUNTIME;
  }
  printf("qsens report: rewrote the reports of %zu run%s under %s\n", n, n == 1 ? "" : "s", argv[1]);
  return QS_EXIT_OK;
}
