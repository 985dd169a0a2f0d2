/* Log-line prefixes in the format of Hydra's Python logging:
 * "[2026-11-26 21:58:54,510][HYDRA]" (local time, milliseconds). */
#ifndef QSENS_CORE_LOGFMT_H
#define QSENS_CORE_LOGFMT_H

#include <stddef.h>

/* Writes "[<now>][<logger>]" into buf (at least 64 bytes) and returns buf. */
char *qs_log_prefix(char *buf, size_t size, const char *logger);

#endif
