#define _POSIX_C_SOURCE 200809L
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

bool qs_fail(qs_error *err, int status, const char *fmt, ...) {
  if (!err) return false;
  err->status = status;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  return false;
}

bool qs_fail_context(qs_error *err, const char *fmt, ...) {
  if (!err) return false;
  char prefix[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  size_t plen = strnlen(prefix, sizeof err->msg - 1);
  size_t keep = strnlen(err->msg, sizeof err->msg - 1);
  if (plen + keep > sizeof err->msg - 1) keep = sizeof err->msg - 1 - plen;
  memmove(err->msg + plen, err->msg, keep);
  memcpy(err->msg, prefix, plen);
  err->msg[plen + keep] = '\0';
  return false;
}

void qs_error_clear(qs_error *err) {
  if (!err) return;
  err->status = QS_EXIT_OK;
  err->msg[0] = '\0';
}
