#include "app/cfg_get.h"

static const char *kind_name(const qs_node *n) {
  static const char *const names[] = {"null", "a boolean", "an integer", "a float", "a string", "a mapping", "a list"};
  return n ? names[n->kind] : "absent";
}

static bool wrong(const char *path, const char *want, const qs_node *n, qs_error *err) {
  return qs_fail(err, QS_EXIT_USAGE, "config key '%s' must be %s (it is %s)", path, want, kind_name(n));
}

bool qs_cfg_str(const qs_node *cfg, const char *path, bool allow_null, const char **out, qs_error *err) {
  const qs_node *n = qs_node_get_path(cfg, path);
  if (n && n->kind == QS_STR) {
    *out = n->s;
    return true;
  }
  if (n && n->kind == QS_NULL && allow_null) {
    *out = NULL;
    return true;
  }
  return wrong(path, allow_null ? "a string or null" : "a string", n, err);
}

bool qs_cfg_int(const qs_node *cfg, const char *path, int64_t *out, qs_error *err) {
  const qs_node *n = qs_node_get_path(cfg, path);
  if (!n || n->kind != QS_INT) return wrong(path, "an integer", n, err);
  *out = n->i;
  return true;
}

bool qs_cfg_map(const qs_node *cfg, const char *path, const qs_node **out, qs_error *err) {
  const qs_node *n = qs_node_get_path(cfg, path);
  if (n && (n->kind == QS_MAP || n->kind == QS_NULL)) {
    *out = n->kind == QS_MAP ? n : NULL;
    return true;
  }
  return wrong(path, "a mapping or null", n, err);
}
