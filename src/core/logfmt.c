#define _POSIX_C_SOURCE 200809L
#include "core/logfmt.h"

#include <stdio.h>
#include <time.h>

char *qs_log_prefix(char *buf, size_t size, const char *logger) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
  snprintf(buf, size, "[%s,%03ld][%s]", stamp, ts.tv_nsec / 1000000L, logger);
  return buf;
}
