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
/* A number (integer or float). */
bool qs_cfg_number(const qs_node *cfg, const char *path, double *out, qs_error *err);
bool qs_cfg_bool(const qs_node *cfg, const char *path, bool *out, qs_error *err);
/* A string that is one of the NULL-terminated choices; *index is its position.
 * Anything else fails listing the choices. */
bool qs_cfg_choice(const qs_node *cfg, const char *path, const char *const *choices, int *index, qs_error *err);
/* A list of strings or null (*n 0); *out (caller frees the array) points into cfg. */
bool qs_cfg_str_list(const qs_node *cfg, const char *path, const char ***out, size_t *n, qs_error *err);
/* A mapping or null (*out NULL) value. */
bool qs_cfg_map(const qs_node *cfg, const char *path, const qs_node **out, qs_error *err);

#endif
