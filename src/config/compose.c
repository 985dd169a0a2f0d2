#define _POSIX_C_SOURCE 200809L
#include "config/compose.h"

#include <stdlib.h>
#include <string.h>

#include "config/interp.h"
#include "config/pystr.h"
#include "core/mem.h"
#include "core/strbuf.h"

/* content placed under a dotted package ("a.b" -> {a: {b: content}}). */
static qs_node *embed_at_package(const qs_node *content, const char *package) {
  qs_node *node = qs_node_copy(content);
  if (!*package) return node;
  char *pkg = qs_strdup(package);
  for (char *dot = strrchr(pkg, '.');; dot = strrchr(pkg, '.')) {
    qs_node *wrap = qs_node_map();
    qs_map_set(wrap, dot ? dot + 1 : pkg, node);
    node = wrap;
    if (!dot) break;
    *dot = '\0';
  }
  free(pkg);
  return node;
}

bool qs_compose(qs_repo *repo, const qs_defaults *defaults, const qs_node *hydra_base, qs_node **cfg,
                qs_error *err) {
  qs_node *root = qs_node_map();
  qs_map_set(root, "hydra", qs_node_copy(hydra_base));
  for (size_t k = 0; k < defaults->n_entries; k++) {
    const qs_config_file *file;
    if (!qs_repo_load(repo, defaults->entries[k].config_path, &file, err)) {
      qs_node_free(root);
      return false;
    }
    if (!file) continue;
    qs_node *placed = embed_at_package(file->content, defaults->entries[k].package);
    qs_node_merge(root, placed);
    qs_node_free(placed);
  }
  for (size_t k = 0; k < defaults->n_config_overrides; k++)
    if (!qs_apply_config_override(root, defaults->config_overrides[k], err)) {
      qs_node_free(root);
      return false;
    }
  *cfg = root;
  return true;
}

/* ---- path walking with struct-mode checks ---- */

typedef struct path {
  char **seg;
  size_t n;
} path;

static path split_path(const char *key) {
  path p = {0};
  char *copy = qs_strdup(key);
  size_t cap = 0;
  for (char *s = copy;;) {
    char *dot = strchr(s, '.');
    if (dot) *dot = '\0';
    qs_grow((void **)&p.seg, &cap, p.n + 1, sizeof *p.seg);
    p.seg[p.n++] = qs_strdup(s);
    if (!dot) break;
    s = dot + 1;
  }
  free(copy);
  return p;
}

static void path_free(path *p) {
  for (size_t k = 0; k < p->n; k++) free(p->seg[k]);
  free(p->seg);
}

/* "a.b" of the first n segments. */
static char *path_prefix(const path *p, size_t n) {
  qs_strbuf b = {0};
  for (size_t k = 0; k < n; k++) qs_sb_printf(&b, "%s%s", k ? "." : "", p->seg[k]);
  return qs_sb_take(&b);
}

static bool list_index(const qs_node *list, const char *seg, size_t *idx) {
  char *end;
  long long v = strtoll(seg, &end, 10);
  if (*seg == '\0' || *end != '\0' || v < 0 || (size_t)v >= list->n) return false;
  *idx = (size_t)v;
  return true;
}

static qs_node *child(const qs_node *n, const char *seg) {
  size_t idx;
  if (n->kind == QS_MAP) return qs_map_get(n, seg);
  if (n->kind == QS_LIST && list_index(n, seg, &idx)) return n->items[idx];
  return NULL;
}

/* Replaces (or, in a map, adds) a child; takes ownership of val. */
static bool set_child(qs_node *n, const char *seg, qs_node *val) {
  size_t idx;
  if (n->kind == QS_MAP) {
    qs_map_set(n, seg, val);
    return true;
  }
  if (n->kind == QS_LIST && list_index(n, seg, &idx)) {
    qs_node_free(n->items[idx]);
    n->items[idx] = val;
    return true;
  }
  qs_node_free(val);
  return false;
}

/* The dataclasses of Hydra's schema behind the hydra node: OmegaConf words
 * their errors by class; fields declared with a class also name it as the
 * reference type. */
static const struct hydra_schema {
  const char *path, *type;
  bool declared;
} hydra_schema[] = {
    {"hydra", "HydraConf", false},
    {"hydra.run", "RunDir", true},
    {"hydra.sweep", "SweepDir", true},
    {"hydra.sweeper", "BasicSweeperConf", false},
    {"hydra.overrides", "OverridesConf", true},
    {"hydra.job", "JobConf", true},
    {"hydra.job.config", "JobConfig", true},
    {"hydra.job.config.override_dirname", "OverrideDirname", true},
    {"hydra.runtime", "RuntimeConf", true},
};

static bool not_in_struct(const char *key, const char *full_key, qs_strbuf *why) {
  size_t parent_len = strlen(full_key) - strlen(key) - (strlen(full_key) > strlen(key) ? 1 : 0);
  for (size_t k = 0; k < sizeof hydra_schema / sizeof *hydra_schema; k++) {
    const struct hydra_schema *h = &hydra_schema[k];
    if (strlen(h->path) != parent_len || strncmp(h->path, full_key, parent_len) != 0) continue;
    qs_sb_printf(why, "Key '%s' not in '%s'\n    full_key: %s\n", key, h->type, full_key);
    if (h->declared) qs_sb_printf(why, "    reference_type=%s\n", h->type);
    qs_sb_printf(why, "    object_type=%s", h->type);
    return false;
  }
  qs_sb_printf(why, "Key '%s' is not in struct\n    full_key: %s\n    object_type=dict", key, full_key);
  return false;
}

/* Every key of src must already exist in dst (struct mode), recursively. */
static bool check_struct_merge(const qs_node *dst, const qs_node *src, const char *at, qs_strbuf *why) {
  if (dst->kind != QS_MAP || src->kind != QS_MAP) return true;
  for (size_t k = 0; k < src->n; k++) {
    qs_strbuf full = {0};
    qs_sb_printf(&full, "%s%s%s", at, *at ? "." : "", src->keys[k]);
    const qs_node *d = qs_map_get(dst, src->keys[k]);
    bool ok = d ? check_struct_merge(d, src->items[k], qs_sb_str(&full), why)
                : not_in_struct(src->keys[k], qs_sb_str(&full), why);
    qs_sb_free(&full);
    if (!ok) return false;
  }
  return true;
}

/* OmegaConf.update(cfg, key, value, merge=True, force_add). On a struct
 * violation, why holds OmegaConf's message and false is returned. */
static bool update(qs_node *cfg, const path *p, const qs_node *value, bool force_add, qs_strbuf *why) {
  qs_node *node = cfg;
  for (size_t k = 0; k + 1 < p->n; k++) {
    qs_node *next = child(node, p->seg[k]);
    if (!next || (next->kind != QS_MAP && next->kind != QS_LIST)) {
      if (!next && !force_add && node->kind == QS_MAP) {
        char *full = path_prefix(p, k + 1);
        not_in_struct(p->seg[k], full, why);
        free(full);
        return false;
      }
      if (!set_child(node, p->seg[k], qs_node_map())) {
        qs_sb_printf(why, "Invalid index '%s'", p->seg[k]);
        return false;
      }
      next = child(node, p->seg[k]);
    }
    node = next;
  }
  const char *last = p->seg[p->n - 1];
  qs_node *existing = child(node, last);
  char *full = path_prefix(p, p->n);
  bool ok = true;
  if (existing && (value->kind == QS_MAP || value->kind == QS_LIST) &&
      (existing->kind == QS_MAP || existing->kind == QS_LIST)) {
    ok = force_add || check_struct_merge(existing, value, full, why);
    if (ok) qs_node_merge(existing, value);
  } else if (!existing && !force_add && node->kind == QS_MAP) {
    ok = not_in_struct(last, full, why);
  } else if (!set_child(node, last, qs_node_copy(value))) {
    qs_sb_printf(why, "Invalid index '%s'", last);
    ok = false;
  }
  free(full);
  return ok;
}

/* OmegaConf.select(cfg, key) with interpolations resolved; NULL for an
 * absent, null or "???" value. A resolution failure counts as a value. */
static qs_node *select_value(const qs_node *cfg, const char *key) {
  const qs_node *raw = qs_node_get_path(cfg, key);
  if (!raw || raw->kind == QS_NULL || qs_node_is_missing(raw)) return NULL;
  qs_node *resolved = NULL;
  qs_error ignored;
  if (!qs_interp_select(cfg, key, &resolved, &ignored)) return qs_node_copy(raw);
  if (resolved->kind == QS_NULL) {
    qs_node_free(resolved);
    return NULL;
  }
  return resolved;
}

static bool delete_key(qs_node *cfg, const qs_override *ov, qs_error *err) {
  qs_node *current = select_value(cfg, ov->key);
  if (!current)
    return qs_fail(err, QS_EXIT_USAGE, "Could not delete from config. '%s' does not exist.", ov->key);
  /* "~key=null" deletes whatever the value is, like "~key". */
  const qs_node *want = ov->has_value && ov->value->kind != QS_NULL ? ov->value : NULL;
  if (want && !qs_node_equal(want, current)) {
    char *have_s = qs_pystr(current), *want_s = qs_pystr(want);
    qs_fail(err, QS_EXIT_USAGE, "Could not delete from config. The value of '%s' is %s and not %s.", ov->key,
            have_s, want_s);
    free(have_s);
    free(want_s);
    qs_node_free(current);
    return false;
  }
  qs_node_free(current);
  char *parent_key = qs_strdup(ov->key);
  char *dot = strrchr(parent_key, '.');
  const char *last = dot ? dot + 1 : parent_key;
  if (dot) *dot = '\0';
  qs_node *parent = dot ? qs_node_get_path(cfg, parent_key) : cfg;
  size_t idx;
  if (parent->kind == QS_MAP) {
    qs_map_del(parent, last);
  } else if (parent->kind == QS_LIST && list_index(parent, last, &idx)) {
    qs_node_free(parent->items[idx]);
    memmove(parent->items + idx, parent->items + idx + 1, (parent->n - idx - 1) * sizeof *parent->items);
    parent->n--;
  }
  free(parent_key);
  return true;
}

static bool add_key(qs_node *cfg, const qs_override *ov, const path *p, qs_strbuf *why, qs_error *err) {
  qs_node *current = select_value(cfg, ov->key);
  bool container = ov->value->kind == QS_MAP || ov->value->kind == QS_LIST;
  if (current && !container) {
    qs_node_free(current);
    return qs_fail(err, QS_EXIT_USAGE,
                   "Could not append to config. An item is already at '%s'.\n"
                   "Either remove + prefix: '%s'\n"
                   "Or add a second + to add or override '%s': '+%s'\n",
                   ov->key, ov->input + 1, ov->key, ov->input);
  }
  qs_node_free(current);
  if (update(cfg, p, ov->value, true, why)) return true;
  return qs_fail(err, QS_EXIT_USAGE, "Error merging override %s\n%s", ov->input, qs_sb_str(why));
}

/* Hydra nodes that only configure Python machinery (logging, plugins, help
 * texts) are left out of qsens's hydra node; overrides under them are kept
 * as given so that command lines written for Hydra still compose. */
static bool under_python_only_node(const char *key) {
  static const char *const nodes[] = {"launcher", "help", "hydra_help", "hydra_logging", "job_logging", "env",
                                      "callbacks"};
  if (strncmp(key, "hydra.", 6) != 0) return false;
  for (size_t k = 0; k < sizeof nodes / sizeof *nodes; k++) {
    size_t len = strlen(nodes[k]);
    if (strncmp(key + 6, nodes[k], len) == 0 && (key[6 + len] == '\0' || key[6 + len] == '.')) return true;
  }
  return false;
}

bool qs_apply_config_override(qs_node *cfg, const qs_override *ov, qs_error *err) {
  if (ov->package)
    return qs_fail(err, QS_EXIT_USAGE,
                   "Override %s looks like a config group override, but config group '%s' does not exist.",
                   ov->input, ov->key);
  if (ov->type == QS_OV_DEL) return delete_key(cfg, ov, err);
  path p = split_path(ov->key);
  qs_strbuf why = {0};
  bool ok;
  if (ov->type == QS_OV_ADD) {
    ok = add_key(cfg, ov, &p, &why, err);
  } else if (ov->type == QS_OV_FORCE_ADD || under_python_only_node(ov->key)) {
    ok = update(cfg, &p, ov->value, true, &why) ||
         qs_fail(err, QS_EXIT_USAGE, "Error merging override %s\n%s", ov->input, qs_sb_str(&why));
  } else {
    ok = update(cfg, &p, ov->value, false, &why) ||
         qs_fail(err, QS_EXIT_USAGE, "Could not override '%s'.\nTo append to your config use +%s\n%s", ov->key,
                 ov->input, qs_sb_str(&why));
  }
  qs_sb_free(&why);
  path_free(&p);
  return ok;
}
