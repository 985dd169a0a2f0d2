/* qsens solve DIR autoquant.effective_bits=B
 * Re-solves the stored candidate scores at a new bit budget (spec
 * quant-and-scoring.md §4.6) and rewrites best, manifest and reports. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "core/error.h"
#include "report/rebuild.h"

int qs_cmd_solve(int argc, char **argv);

#define BITS_KEY "autoquant.effective_bits="

static const char solve_usage[] =
    "usage: qsens solve DIR autoquant.effective_bits=B\n"
    "\n"
    "Reruns the exact budgeted search on the scores stored in\n"
    "<scheme>_autoquant_state.json (DIR, or each job folder of a sweep DIR) for B\n"
    "effective bits, then rewrites the state's best selection, the manifest and the\n"
    "reports. Scores and costs never change; an unreachable budget rewrites nothing.\n";

/* B from "autoquant.effective_bits=B": a finite positive number. */
static bool parse_bits(const char *arg, double *bits) {
  if (strncmp(arg, BITS_KEY, strlen(BITS_KEY)) != 0) return false;
  const char *v = arg + strlen(BITS_KEY);
  char *end;
  *bits = strtod(v, &end);
  return end != v && *end == '\0' && isfinite(*bits) && *bits > 0.0;
}

int qs_cmd_solve(int argc, char **argv) {
  if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    fputs(solve_usage, stdout);
    return QS_EXIT_OK;
  }
  if (argc != 3) return qs_cmd_usage_error("solve", "expected DIR and autoquant.effective_bits=B");
  double bits;
  if (!parse_bits(argv[2], &bits)) {
    char msg[600];
    snprintf(msg, sizeof msg, "'%.500s' is not autoquant.effective_bits=<positive number>", argv[2]);
    return qs_cmd_usage_error("solve", "%s", msg);
  }
  qs_error err = {0};
  size_t n = 0;
  if (!qs_resolve_budget(argv[1], bits, &n, &err)) {
    fprintf(stderr, "qsens solve: %s\n", err.msg);
    return err.status ? err.status : QS_EXIT_RUNTIME;
  }
  printf("qsens solve: re-solved %zu run%s under %s at %s bits\n", n, n == 1 ? "" : "s", argv[1],
         argv[2] + strlen(BITS_KEY));
  return QS_EXIT_OK;
}
