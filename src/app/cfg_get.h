/* Typed reads of a resolved job config. Each failure names the key and what
 * was expected, with status QS_EXIT_USAGE (a config mistake). */
#ifndef QSENS_APP_CFG_GET_H
#define QSENS_APP_CFG_GET_H

#include <stdbool.h>
#include <stdint.h>

#include "config/node.h"
#include "core/error.h"

/* A string value; NULL (and true) when the key holds null and allow_null is set. */
bool qs_cfg_str(const qs_node *cfg, const char *path, bool allow_null, const char **out, qs_error *err);
bool qs_cfg_int(const qs_node *cfg, const char *path, int64_t *out, qs_error *err);
/* A mapping or null (*out NULL) value. */
bool qs_cfg_map(const qs_node *cfg, const char *path, const qs_node **out, qs_error *err);

#endif
