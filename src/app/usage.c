#include <stdarg.h>
#include <stdio.h>

#include "app/commands.h"
#include "core/error.h"

int qs_cmd_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "qsens %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see qsens %s --help)\n", cmd);
  va_end(ap);
  return QS_EXIT_USAGE;
}
