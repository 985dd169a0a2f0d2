#include "app/cfg_get.h"

#include <string.h>

#include "core/mem.h"
#include "core/strbuf.h"

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

bool qs_cfg_number(const qs_node *cfg, const char *path, double *out, qs_error *err) {
  const qs_node *n = qs_node_get_path(cfg, path);
  if (n && n->kind == QS_INT) *out = (double)n->i;
  else if (n && n->kind == QS_FLOAT) *out = n->f;
  else return wrong(path, "a number", n, err);
  return true;
}

bool qs_cfg_bool(const qs_node *cfg, const char *path, bool *out, qs_error *err) {
  const qs_node *n = qs_node_get_path(cfg, path);
  if (!n || n->kind != QS_BOOL) return wrong(path, "true or false", n, err);
  *out = n->b;
  return true;
}

bool qs_cfg_choice(const qs_node *cfg, const char *path, const char *const *choices, int *index, qs_error *err) {
  const char *s = NULL;
  if (!qs_cfg_str(cfg, path, false, &s, err)) return false;
  qs_strbuf known = {0};
  for (int i = 0; choices[i]; i++) {
    if (strcmp(s, choices[i]) == 0) {
      *index = i;
      qs_sb_free(&known);
      return true;
    }
    qs_sb_printf(&known, "%s%s", i ? ", " : "", choices[i]);
  }
  qs_fail(err, QS_EXIT_USAGE, "config key '%s': '%s' is not one of: %s", path, s, qs_sb_str(&known));
  qs_sb_free(&known);
  return false;
}

bool qs_cfg_str_list(const qs_node *cfg, const char *path, const char ***out, size_t *n, qs_error *err) {
  const qs_node *list = qs_node_get_path(cfg, path);
  *out = NULL;
  *n = 0;
  if (list && list->kind == QS_NULL) return true;
  if (!list || list->kind != QS_LIST) return wrong(path, "a list of strings or null", list, err);
  for (size_t i = 0; i < list->n; i++)
    if (list->items[i]->kind != QS_STR) return wrong(path, "a list of strings or null", list, err);
  *out = qs_calloc(list->n ? list->n : 1, sizeof **out);
  for (size_t i = 0; i < list->n; i++) (*out)[i] = list->items[i]->s;
  *n = list->n;
  return true;
}
