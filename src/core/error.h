/* Error values passed up the call chain.
 *
 * Library code never exits: it fills a qs_error and returns false. Only the
 * application layer (src/app) turns an error into a message and an exit
 * status, so every module stays testable. */
#ifndef QSENS_CORE_ERROR_H
#define QSENS_CORE_ERROR_H

#include <stdbool.h>

enum {
  QS_EXIT_OK = 0,
  QS_EXIT_RUNTIME = 1, /* bad data, I/O, numerical failure */
  QS_EXIT_USAGE = 2,   /* bad command line or configuration */
};

typedef struct qs_error {
  int status;      /* QS_EXIT_* to use when the error reaches main */
  char msg[8192];  /* complete message, may span several lines, no trailing newline */
} qs_error;

/* Sets the error (printf-style) and returns false so callers can write
 * `return qs_fail(err, QS_EXIT_USAGE, "...")`. A NULL err is allowed. */
bool qs_fail(qs_error *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends context ("while loading X: ") to an existing message; returns false. */
bool qs_fail_context(qs_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void qs_error_clear(qs_error *err);

#endif
