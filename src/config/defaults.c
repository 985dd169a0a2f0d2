/* Mirrors hydra/_internal/defaults_list.py (Hydra 1.3) step by step, so
 * that choices, packages, error texts and their order match Hydra's. The
 * tree is walked from the end of each list, as Hydra does: this decides
 * which entry a "Multiple values" error names and the order of choices. */
#define _POSIX_C_SOURCE 200809L
#include "config/defaults.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/interp.h"
#include "core/mem.h"

#define PUSH(arr, n, cap) (qs_grow((void **)&(arr), &(cap), (n) + 1, sizeof *(arr)), &(arr)[(n)++])

/* Every string and element of one build lives until the build ends. */
typedef struct arena {
  void **ptrs;
  size_t n, cap;
} arena;

static void *ar_keep(arena *a, void *p) {
  *PUSH(a->ptrs, a->n, a->cap) = p;
  return p;
}

static char *ar_strdup(arena *a, const char *s) { return s ? ar_keep(a, qs_strdup(s)) : NULL; }

static char *ar_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ar_printf(arena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int len = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *s = qs_malloc((size_t)len + 1);
  va_start(ap, fmt);
  vsnprintf(s, (size_t)len + 1, fmt, ap);
  va_end(ap);
  return ar_keep(a, s);
}

static void ar_free(arena *a) {
  for (size_t k = 0; k < a->n; k++) free(a->ptrs[k]);
  free(a->ptrs);
}

/* An input default (Hydra's GroupDefault or ConfigDefault). */
typedef struct elem {
  bool is_group;
  char *group;   /* group default: the group as written ("db", "/server/db") */
  char *value;   /* group default: the option, NULL for null or a list of options */
  char **options; /* group default "group: [a, b]": several options, each a config include */
  size_t n_options;
  char *path;    /* config default: the path as written; "_self_" */
  char *package; /* "@pkg" of the entry, NULL when absent */
  char *package_header;
  char *parent_base_dir, *parent_package;
  bool optional, override, deleted, primary, external_append;
} elem;

typedef struct tree {
  elem *node;
  struct tree *parent;
  struct tree **children;
  size_t n_children;
  bool deferred; /* an interpolated entry, expanded after its siblings */
} tree;

typedef struct choice_override {
  char *key, *value, *containing;
  char **options; /* a list of options instead of value */
  size_t n_options;
  bool external, used;
} choice_override;

typedef struct deletion {
  char *key, *name;
  bool used;
} deletion;

typedef struct known_choice {
  char *key, *name;
} known_choice;

typedef struct group_key {
  char *group, *key;
} group_key;

typedef struct ctx {
  arena ar;
  qs_repo *repo;
  bool skip_missing;
  qs_strbuf *warnings;
  qs_error *err;
  choice_override *ovr;
  size_t n_ovr, cap_ovr;
  deletion *del;
  size_t n_del, cap_del;
  elem **append;
  size_t n_append, cap_append;
  known_choice *known;
  size_t n_known, cap_known;
  group_key *group_keys;
  size_t n_group_keys, cap_group_keys;
  const qs_override **config_ovs;
  size_t n_config_ovs, cap_config_ovs;
  qs_default_entry *out;
  size_t n_out, cap_out;
  const char *hydra_choice[16]; /* per hydra_groups entry: the chosen option */
  bool in_interpolated;         /* expanding the subtree of an interpolated entry */
} ctx;

static bool str_eq(const char *a, const char *b) {
  return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static const char *strip_abs(const char *p) { return p[0] == '/' ? p + 1 : p; }

static char *dots_for_slashes(arena *a, const char *s) {
  char *r = ar_strdup(a, s);
  for (char *p = r; *p; p++)
    if (*p == '/') *p = '.';
  return r;
}

/* Folder part of a config path ("a/b/c" -> "a/b", "c" -> ""). */
static char *dir_of(arena *a, const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? ar_keep(a, qs_strndup(path, (size_t)(slash - path))) : ar_strdup(a, "");
}

static char *join_dir(arena *a, const char *base, const char *rel) {
  if (!*base) return ar_strdup(a, rel);
  if (!*rel) return ar_strdup(a, base);
  return ar_printf(a, "%s/%s", base, rel);
}

static bool elem_is_self(const elem *e) { return !e->is_group && strcmp(e->path, "_self_") == 0; }

static char *group_path(ctx *c, const elem *e) {
  if (e->is_group) {
    if (e->group[0] == '/' || !*e->parent_base_dir) return ar_strdup(&c->ar, strip_abs(e->group));
    return ar_printf(&c->ar, "%s/%s", e->parent_base_dir, e->group);
  }
  char *group = dir_of(&c->ar, strip_abs(e->path));
  return e->path[0] == '/' ? group : join_dir(&c->ar, e->parent_base_dir, group);
}

static const char *elem_name(const elem *e) {
  if (e->is_group) return e->value;
  const char *slash = strrchr(e->path, '/');
  return slash ? slash + 1 : e->path;
}

static char *config_path(ctx *c, const elem *e) {
  if (e->is_group) return ar_printf(&c->ar, "%s/%s", group_path(c, e), e->value ? e->value : "None");
  return e->path[0] == '/' ? ar_strdup(&c->ar, e->path + 1)
                           : join_dir(&c->ar, e->parent_base_dir, e->path);
}

static bool elem_is_missing(const elem *e) { return str_eq(elem_name(e), "???"); }

static char *default_package(ctx *c, const elem *e) {
  return dots_for_slashes(&c->ar, group_path(c, e));
}

static const char *get_package(const elem *e, bool default_to_header) {
  return (e->package == NULL && default_to_header) ? e->package_header : e->package;
}

static char *final_package(ctx *c, const elem *e, bool default_to_header) {
  const char *package = get_package(e, default_to_header);
  if (!package) {
    const char *rel = e->is_group ? strip_abs(e->group) : dir_of(&c->ar, strip_abs(e->path));
    package = dots_for_slashes(&c->ar, rel);
  }
  const char *parent = e->parent_package;
  char *joined = !*parent ? ar_strdup(&c->ar, package)
                 : !*package ? ar_strdup(&c->ar, parent)
                 : ar_printf(&c->ar, "%s.%s", parent, package);
  /* "_global_" anywhere resets to the root: keep what follows the last one. */
  char *last = NULL;
  for (char *p = strstr(joined, "_global_"); p; p = strstr(p + 1, "_global_")) last = p;
  if (!last) return joined;
  last += strlen("_global_");
  return *last ? last + 1 : last;
}

static char *override_key(ctx *c, const elem *e) {
  char *final_pkg = final_package(c, e, false);
  char *key = group_path(c, e);
  if (strcmp(default_package(c, e), final_pkg) == 0) return key;
  return ar_printf(&c->ar, "%s@%s", key, *final_pkg ? final_pkg : "_global_");
}

static void update_parent(ctx *c, elem *e, const char *base_dir, const char *package) {
  e->parent_base_dir = ar_strdup(&c->ar, base_dir);
  e->parent_package = ar_strdup(&c->ar, package);
  if (!e->package || !strstr(e->package, "_group_")) return;
  /* "_group_" stands for the entry's own group path, made absolute. */
  const char *group = default_package(c, e);
  qs_strbuf b = {0};
  qs_sb_append(&b, "_global_.");
  for (const char *p = e->package; *p;) {
    if (strncmp(p, "_group_", 7) == 0) {
      qs_sb_append(&b, group);
      p += 7;
    } else {
      qs_sb_putc(&b, *p++);
    }
  }
  e->package = ar_keep(&c->ar, qs_sb_take(&b));
}

/* A package header is always absolute. */
static void set_package_header(ctx *c, elem *e, const char *header) {
  if (!header) return;
  if (strcmp(header, "_global_") == 0 || strncmp(header, "_global_.", 9) == 0)
    e->package_header = ar_strdup(&c->ar, header);
  else if (!*header)
    e->package_header = ar_strdup(&c->ar, "_global_");
  else
    e->package_header = ar_printf(&c->ar, "_global_.%s", header);
}

/* ---- overrides bookkeeping (Hydra's Overrides class) ---- */

static choice_override *find_choice(ctx *c, const char *key) {
  for (size_t k = 0; k < c->n_ovr; k++)
    if (strcmp(c->ovr[k].key, key) == 0) return &c->ovr[k];
  return NULL;
}

static deletion *find_deletion(ctx *c, const char *key) {
  for (size_t k = 0; k < c->n_del; k++)
    if (strcmp(c->del[k].key, key) == 0) return &c->del[k];
  return NULL;
}

static const char *py_type_name(const qs_node *v) {
  if (!v) return "NoneType";
  switch (v->kind) {
  case QS_NULL: return "NoneType";
  case QS_BOOL: return "bool";
  case QS_INT: return "int";
  case QS_FLOAT: return "float";
  case QS_STR: return "str";
  case QS_MAP: return "dict";
  case QS_LIST: return "list";
  }
  return "object";
}

static elem *new_elem(ctx *c) { return ar_keep(&c->ar, qs_calloc(1, sizeof(elem))); }

/* The strings of a list of options (checked by the caller). */
static char **options_of(ctx *c, const qs_node *list) {
  char **v = ar_keep(&c->ar, qs_calloc(list->n + 1, sizeof *v));
  for (size_t k = 0; k < list->n; k++) v[k] = ar_strdup(&c->ar, list->items[k]->s);
  return v;
}

static bool all_strings(const qs_node *list) {
  for (size_t k = 0; k < list->n; k++)
    if (list->items[k]->kind != QS_STR) return false;
  return true;
}

/* Hydra's own config groups (its pkg://hydra.conf source): the default
 * choice and the options it ships, in the order Hydra records the choices. */
static const struct hydra_group {
  const char *group, *choice;
  const char *options[5];
} hydra_groups[] = {
    {"hydra/env", "default", {"default"}},
    {"hydra/callbacks", NULL, {NULL}},
    {"hydra/job_logging", "default", {"default", "disabled", "none", "stdout"}},
    {"hydra/hydra_logging", "default", {"default", "disabled", "hydra_debug", "none"}},
    {"hydra/hydra_help", "default", {"default"}},
    {"hydra/help", "default", {"default"}},
    {"hydra/sweeper", "basic", {"basic"}},
    {"hydra/launcher", "basic", {"basic"}},
    {"hydra/output", "default", {"default"}},
};
#define N_HYDRA_GROUPS (sizeof hydra_groups / sizeof *hydra_groups)

static const struct hydra_group *find_hydra_group(const char *key) {
  for (size_t k = 0; k < N_HYDRA_GROUPS; k++)
    if (strcmp(hydra_groups[k].group, key) == 0) return &hydra_groups[k];
  return NULL;
}

/* hydra/<group>=<option>: only recorded (the groups configure Python
 * logging and plugins). Options are checked after the application's tree,
 * where Hydra walks its own config. */
static bool choose_hydra_option(ctx *c, const struct hydra_group *g, const qs_override *ov) {
  if (ov->type != QS_OV_CHANGE || !ov->has_value || ov->value->kind != QS_STR)
    return qs_fail(c->err, QS_EXIT_USAGE, "Only '%s=<option>' is supported for Hydra's group '%s': '%s'", g->group,
                   g->group, ov->input);
  c->hydra_choice[g - hydra_groups] = ov->value->s;
  return true;
}

static bool check_hydra_choice(ctx *c, const struct hydra_group *g, const char *choice) {
  if (!choice) return true;
  for (size_t k = 0; k < 5 && g->options[k]; k++)
    if (strcmp(g->options[k], choice) == 0) return true;
  qs_strbuf msg = {0};
  qs_sb_printf(&msg, "In 'hydra/config': Could not find '%s/%s'\n", g->group, choice);
  if (g->options[0]) qs_sb_printf(&msg, "\nAvailable options in '%s':", g->group);
  for (size_t k = 0; k < 5 && g->options[k]; k++) qs_sb_printf(&msg, "\n\t%s", g->options[k]);
  qs_sb_append(&msg, "\n");
  qs_repo_describe(c->repo, &msg);
  qs_fail(c->err, QS_EXIT_USAGE, "%s", qs_sb_str(&msg));
  qs_sb_free(&msg);
  return false;
}

static bool classify_override(ctx *c, const qs_override *ov) {
  const qs_node *value = ov->has_value ? ov->value : NULL;
  bool is_group = qs_repo_group_exists(c->repo, ov->key);
  const struct hydra_group *hydra_group = find_hydra_group(ov->key);
  if (hydra_group && !is_group) return choose_hydra_option(c, hydra_group, ov);
  if ((value && value->kind == QS_MAP) || !is_group) {
    *PUSH(c->config_ovs, c->n_config_ovs, c->cap_config_ovs) = ov;
    return true;
  }
  if (ov->type == QS_OV_FORCE_ADD)
    return qs_fail(c->err, QS_EXIT_USAGE, "force-add of config groups is not supported: '%s'", ov->input);
  char *key = ar_keep(&c->ar, qs_override_key_element(ov));
  if (ov->type == QS_OV_DEL) {
    if (value && value->kind != QS_NULL && value->kind != QS_STR)
      return qs_fail(c->err, QS_EXIT_USAGE, "Config group override deletion value must be a string : %s",
                     ov->input);
    deletion *d = PUSH(c->del, c->n_del, c->cap_del);
    d->key = key + 1; /* without the '~' */
    d->name = value && value->kind == QS_STR ? ar_strdup(&c->ar, value->s) : NULL;
    d->used = false;
    return true;
  }
  if (!value || (value->kind != QS_STR && value->kind != QS_LIST))
    return qs_fail(c->err, QS_EXIT_USAGE, "Config group override must be a string or a list. Got %s",
                   py_type_name(value));
  if (value->kind == QS_LIST && !all_strings(value))
    return qs_fail(c->err, QS_EXIT_USAGE, "Config group override list items must be strings: '%s'", ov->input);
  bool is_list = value->kind == QS_LIST;
  if (ov->type == QS_OV_ADD) {
    elem *e = new_elem(c);
    e->is_group = true;
    e->group = ar_strdup(&c->ar, ov->key);
    e->value = is_list ? NULL : ar_strdup(&c->ar, value->s);
    e->options = is_list ? options_of(c, value) : NULL;
    e->n_options = is_list ? value->n : 0;
    e->package = ar_strdup(&c->ar, ov->package);
    if (e->package && strcmp(e->package, "_here_") == 0) e->package[0] = '\0';
    e->external_append = true;
    *PUSH(c->append, c->n_append, c->cap_append) = e;
    return true;
  }
  choice_override *o = find_choice(c, key);
  if (!o) o = PUSH(c->ovr, c->n_ovr, c->cap_ovr);
  *o = (choice_override){.key = key, .external = true};
  if (is_list) {
    o->options = options_of(c, value);
    o->n_options = value->n;
  } else {
    o->value = ar_strdup(&c->ar, value->s);
  }
  return true;
}

static void add_override(ctx *c, const char *containing, const elem *d) {
  char *key = override_key(c, d);
  if (find_choice(c, key)) return;
  *PUSH(c->ovr, c->n_ovr, c->cap_ovr) = (choice_override){.key = key, .value = d->value, .options = d->options,
                                                           .n_options = d->n_options,
                                                           .containing = ar_strdup(&c->ar, containing)};
}

static void apply_choice_override(ctx *c, elem *d) {
  if (!d->is_group) return;
  choice_override *o = find_choice(c, override_key(c, d));
  if (!o) return;
  d->value = o->value;
  d->options = o->options;
  d->n_options = o->n_options;
  o->used = true;
}

static bool set_known_choice(ctx *c, const elem *d) {
  if (!d->is_group) return true;
  char *key = override_key(c, d);
  const char *name = elem_name(d);
  known_choice *prev = NULL;
  for (size_t k = 0; k < c->n_known; k++)
    if (strcmp(c->known[k].key, key) == 0) prev = &c->known[k];
  if (!prev)
    *PUSH(c->known, c->n_known, c->cap_known) = (known_choice){key, ar_strdup(&c->ar, name)};
  else if (!str_eq(prev->name, name))
    return qs_fail(c->err, QS_EXIT_USAGE, "Multiple values for %s. To override a value use 'override %s: %s'",
                   key, key, prev->name ? prev->name : "None");
  *PUSH(c->group_keys, c->n_group_keys, c->cap_group_keys) = (group_key){group_path(c, d), key};
  return true;
}

static bool is_deleted(ctx *c, const elem *d) {
  if (!d->is_group) return false;
  deletion *del = find_deletion(c, override_key(c, d));
  return del && (!del->name || str_eq(del->name, elem_name(d)));
}

static void mark_deleted(ctx *c, elem *d) {
  d->deleted = true;
  find_deletion(c, override_key(c, d))->used = true;
}

static int compare_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Distinct override keys seen for a group, sorted, joined by ", " into
 * list; *single is the key when there is exactly one. Returns the count. */
static size_t keys_of_group(ctx *c, const char *group, qs_strbuf *list, const char **single) {
  const char **seen = qs_calloc(c->n_group_keys + 1, sizeof *seen);
  size_t n = 0;
  for (size_t k = 0; k < c->n_group_keys; k++) {
    if (strcmp(c->group_keys[k].group, group) != 0) continue;
    bool dup = false;
    for (size_t j = 0; j < n; j++) dup |= strcmp(seen[j], c->group_keys[k].key) == 0;
    if (!dup) seen[n++] = c->group_keys[k].key;
  }
  if (n) qsort(seen, n, sizeof *seen, compare_str);
  for (size_t k = 0; k < n; k++) qs_sb_printf(list, "%s%s", k ? ", " : "", seen[k]);
  *single = n == 1 ? seen[0] : NULL;
  free(seen);
  return n;
}

static bool ensure_overrides_used(ctx *c) {
  for (size_t k = 0; k < c->n_ovr; k++) {
    const choice_override *o = &c->ovr[k];
    if (o->used) continue;
    char *group = ar_strdup(&c->ar, o->key);
    char *at = strchr(group, '@');
    if (at) *at = '\0';
    qs_strbuf list = {0}, msg = {0};
    const char *single;
    size_t n = keys_of_group(c, group, &list, &single);
    if (o->containing) qs_sb_printf(&msg, "In '%s': ", o->containing);
    if (n > 1) qs_sb_printf(&msg, "Could not override '%s'.\nDid you mean to override one of %s?", o->key, qs_sb_str(&list));
    else if (n == 1) qs_sb_printf(&msg, "Could not override '%s'.\nDid you mean to override %s?", o->key, single);
    else qs_sb_printf(&msg, "Could not override '%s'. No match in the defaults list.", o->key);
    if (o->external) qs_sb_printf(&msg, "\nTo append to your default list use +%s=%s", o->key, o->value);
    qs_fail(c->err, QS_EXIT_USAGE, "%s", qs_sb_str(&msg));
    qs_sb_free(&list);
    qs_sb_free(&msg);
    return false;
  }
  return true;
}

static bool ensure_deletions_used(ctx *c) {
  for (size_t k = 0; k < c->n_del; k++) {
    const deletion *d = &c->del[k];
    if (d->used) continue;
    if (d->name)
      return qs_fail(c->err, QS_EXIT_USAGE, "Could not delete '%s=%s'. No match in the defaults list", d->key, d->name);
    return qs_fail(c->err, QS_EXIT_USAGE, "Could not delete '%s'. No match in the defaults list", d->key);
  }
  return true;
}

/* ---- reading a file's defaults list ---- */

static bool parse_group_entry(ctx *c, const char *config_path, const char *key, const qs_node *val,
                              elem *e) {
  e->is_group = true;
  char *spec = ar_strdup(&c->ar, key);
  char *at = strchr(spec, '@');
  if (at) {
    *at = '\0';
    char *rename = strchr(at + 1, ':');
    if (rename) *rename = '\0';
    e->package = at + 1;
  }
  /* Leading words are keywords; the last word is the group. */
  char *group = strrchr(spec, ' ');
  group = group ? group + 1 : spec;
  for (char *word = spec; word < group;) {
    char *end = strchr(word, ' ');
    size_t len = (size_t)(end - word);
    if (len == 8 && strncmp(word, "optional", 8) == 0) e->optional = true;
    else if (len == 8 && strncmp(word, "override", 8) == 0) e->override = true;
    else break;
    word = end + 1;
  }
  if (!*group) return qs_fail(c->err, QS_EXIT_USAGE, "In %s: Missing group name in {%s: ...}", config_path, key);
  e->group = group;
  if (val->kind == QS_STR) {
    e->value = ar_strdup(&c->ar, val->s);
  } else if (val->kind == QS_LIST) {
    for (size_t k = 0; k < val->n; k++)
      if (val->items[k]->kind != QS_STR)
        return qs_fail(c->err, QS_EXIT_USAGE,
                       "Unsupported item value in defaults : %s, nested list items must be strings",
                       py_type_name(val->items[k]));
    e->options = options_of(c, val);
    e->n_options = val->n;
  } else if (val->kind != QS_NULL)
    return qs_fail(c->err, QS_EXIT_USAGE,
                   "Unsupported item value in defaults : %s. Supported: string or list", py_type_name(val));
  return true;
}

static bool parse_entry(ctx *c, const char *config_path, const qs_node *item, elem **out) {
  elem *e = new_elem(c);
  if (item->kind == QS_MAP) {
    if (item->n != 1)
      return qs_fail(c->err, QS_EXIT_USAGE, item->n ? "In %s: Too many keys in default item" : "In %s: Missing group name in default item",
                     config_path);
    if (!parse_group_entry(c, config_path, item->keys[0], item->items[0], e)) return false;
  } else if (item->kind == QS_STR) {
    e->path = ar_strdup(&c->ar, item->s);
    char *at = strchr(e->path, '@');
    if (at) {
      *at = '\0';
      char *rename = strchr(at + 1, ':');
      if (rename) *rename = '\0';
      e->package = at + 1;
    }
    if (elem_is_self(e) && e->package) return qs_fail(c->err, QS_EXIT_USAGE, "_self_@PACKAGE is not supported");
  } else {
    return qs_fail(c->err, QS_EXIT_USAGE, "Unsupported type in defaults : %s", py_type_name(item));
  }
  if (e->package && strcmp(e->package, "_here_") == 0) e->package = "";
  for (size_t k = 0; k < e->n_options; k++)
    if (strstr(e->options[k], "${"))
      return qs_fail(c->err, QS_EXIT_USAGE, "In '%s': Defaults List interpolation is not supported in options list items",
                     config_path);
  *out = e;
  return true;
}

static bool has_config_content(const qs_node *content) {
  if (!content || content->kind != QS_MAP) return false;
  for (size_t k = 0; k < content->n; k++)
    if (!qs_node_is_missing(content->items[k])) return true;
  return false;
}

/* Checks _self_ and appends it when absent; returns false on error. */
static bool validate_self(ctx *c, const elem *containing, elem ***list, size_t *n, size_t *cap,
                          bool has_content) {
  bool has_self = false, has_non_override = false;
  for (size_t k = 0; k < *n; k++) {
    const elem *d = (*list)[k];
    if (!d->override) has_non_override = true;
    if (elem_is_self(d)) {
      if (has_self)
        return qs_fail(c->err, QS_EXIT_USAGE, "Duplicate _self_ defined in %s", config_path(c, containing));
      has_self = true;
    }
  }
  if ((!has_self && has_non_override) || *n == 0) {
    if (containing->primary && has_content && has_non_override && c->warnings)
      qs_sb_printf(c->warnings,
                   "UserWarning: In '%s': Defaults list is missing `_self_`. See "
                   "https://hydra.cc/docs/1.2/upgrades/1.0_to_1.1/default_composition_order for more information\n",
                   config_path(c, containing));
    elem *self = new_elem(c);
    self->path = "_self_";
    *PUSH(*list, *n, *cap) = self;
  }
  return true;
}

static bool update_overrides(ctx *c, elem **list, size_t n, const elem *parent) {
  const elem *last_override = NULL;
  for (size_t k = 0; k < n; k++) {
    elem *d = list[k];
    if (elem_is_self(d)) continue;
    update_parent(c, d, group_path(c, parent), final_package(c, parent, true));
    if (last_override && !(d->override || d->external_append)) {
      const char *name = elem_name(d);
      return qs_fail(c->err, QS_EXIT_USAGE,
                     "In %s: Override '%s : %s' is defined before '%s: %s'.\n"
                     "Overrides must be at the end of the defaults list",
                     config_path(c, parent), override_key(c, last_override),
                     elem_name(last_override) ? elem_name(last_override) : "None",
                     override_key(c, d), name ? name : "None");
    }
    if (d->is_group && d->override && c->in_interpolated)
      return qs_fail(c->err, QS_EXIT_USAGE,
                     "%s: Default List Overrides are not allowed in the subtree\n"
                     "of an in interpolated config group (override %s=%s).\n",
                     config_path(c, parent), override_key(c, d), d->value ? d->value : "None");
    if (d->is_group && d->override) {
      last_override = d;
      add_override(c, config_path(c, parent), d);
    }
  }
  return true;
}

static bool config_not_found(ctx *c, const tree *t) {
  const elem *e = t->node;
  qs_strbuf msg = {0};
  if (e->primary) {
    qs_sb_printf(&msg, "Cannot find primary config '%s'. Check that it's in your config search path.\n",
                 config_path(c, e));
  } else {
    if (t->parent) qs_sb_printf(&msg, "In '%s': ", config_path(c, t->parent->node));
    if (e->is_group) {
      qs_sb_printf(&msg, "Could not find '%s'\n", config_path(c, e));
      size_t n;
      char *group = group_path(c, e);
      char **opts = qs_repo_options(c->repo, group, &n);
      if (n) qs_sb_printf(&msg, "\nAvailable options in '%s':", group);
      for (size_t k = 0; k < n; k++) qs_sb_printf(&msg, "\n\t%s", opts[k]);
      qs_strv_free(opts, n);
    } else {
      qs_sb_printf(&msg, "Could not load '%s'.\n", config_path(c, e));
    }
  }
  qs_sb_append(&msg, "\n");
  qs_repo_describe(c->repo, &msg);
  qs_fail(c->err, QS_EXIT_USAGE, "%s", qs_sb_str(&msg));
  qs_sb_free(&msg);
  return false;
}

static bool missing_choice(ctx *c, const elem *e) {
  char *key = override_key(c, e);
  qs_strbuf msg = {0};
  qs_sb_printf(&msg, "You must specify '%s', e.g, %s=<OPTION>\nAvailable options:\n", key, key);
  size_t n;
  char **opts = qs_repo_options(c->repo, group_path(c, e), &n);
  for (size_t k = 0; k < n; k++) qs_sb_printf(&msg, "%s\t%s", k ? "\n" : "", opts[k]);
  qs_strv_free(opts, n);
  qs_fail(c->err, QS_EXIT_USAGE, "%s", qs_sb_str(&msg));
  qs_sb_free(&msg);
  return false;
}

static tree *new_tree(ctx *c, elem *node, tree *parent) {
  tree *t = ar_keep(&c->ar, qs_calloc(1, sizeof(tree)));
  t->node = node;
  t->parent = parent;
  return t;
}

static void add_child(tree *t, tree *child, size_t *cap) {
  *PUSH(t->children, t->n_children, *cap) = child;
}

static bool create_tree(ctx *c, tree *root, bool is_root);

static bool elem_is_interp(const elem *e) {
  const char *text = e->is_group ? e->value : e->path;
  return text && strstr(text, "${") != NULL;
}

/* Resolves an interpolated entry against the group choices known so far
 * (Hydra's interpolation map: choice keys -> options). */
static bool resolve_entry(ctx *c, elem *e) {
  char **text = e->is_group ? &e->value : &e->path;
  qs_node *map = qs_node_map();
  qs_strbuf keys = {0};
  for (size_t k = 0; k < c->n_known; k++) {
    qs_map_set(map, c->known[k].key, c->known[k].name ? qs_node_str(c->known[k].name) : qs_node_null());
    qs_sb_printf(&keys, "%s%s", k ? ", " : "", c->known[k].key);
  }
  qs_map_set(map, "_dummy_", qs_node_str(*text));
  qs_node *value = NULL;
  qs_error ignored;
  bool ok = qs_interp_select(map, "_dummy_", &value, &ignored) && value && value->kind == QS_STR;
  if (ok) *text = ar_strdup(&c->ar, value->s);
  else if (keys.len)
    qs_fail(c->err, QS_EXIT_USAGE, "Error resolving interpolation '%s', possible interpolation keys: %s", *text,
            qs_sb_str(&keys));
  else
    qs_fail(c->err, QS_EXIT_USAGE, "Error resolving interpolation '%s'", *text);
  qs_node_free(value);
  qs_node_free(map);
  qs_sb_free(&keys);
  return ok;
}

/* Expands the interpolated children once their siblings set the choices
 * they refer to. */
static bool expand_deferred(ctx *c, tree **children, size_t n) {
  bool ok = true;
  for (size_t k = 0; ok && k < n; k++) {
    if (!children[k]->deferred) continue;
    ok = resolve_entry(c, children[k]->node);
    bool outer = c->in_interpolated;
    c->in_interpolated = true;
    ok = ok && create_tree(c, children[k], false);
    c->in_interpolated = outer;
  }
  return ok;
}

/* Expands the children of root from its file's defaults list, walking it
 * from the end; children are stored in list order. */
static bool expand_children(ctx *c, tree *root, elem **list, size_t n) {
  elem *parent = root->node;
  tree **rev = NULL;
  size_t n_rev = 0, cap_rev = 0;
  bool ok = true;
  for (size_t k = n; ok && k-- > 0;) {
    elem *d = list[k];
    if (elem_is_self(d)) {
      update_parent(c, d, parent->parent_base_dir, get_package(parent, true));
      *PUSH(rev, n_rev, cap_rev) = new_tree(c, d, root);
      continue;
    }
    if (d->override) continue;
    update_parent(c, d, group_path(c, parent), final_package(c, parent, true));
    apply_choice_override(c, d);
    if (d->options) {
      /* "group: [a, b]": each option is included like a plain config. */
      for (size_t k = d->n_options; ok && k-- > 0;) {
        elem *item = new_elem(c);
        item->path = ar_printf(&c->ar, "%s/%s", d->group, d->options[k]);
        item->package = d->package;
        item->optional = d->optional;
        update_parent(c, item, group_path(c, parent), final_package(c, parent, true));
        tree *child = new_tree(c, item, root);
        ok = create_tree(c, child, false);
        *PUSH(rev, n_rev, cap_rev) = child;
      }
      continue;
    }
    tree *child = new_tree(c, d, root);
    child->deferred = elem_is_interp(d);
    if (!child->deferred) ok = create_tree(c, child, false);
    *PUSH(rev, n_rev, cap_rev) = child;
  }
  ok = ok && expand_deferred(c, rev, n_rev);
  size_t cap = 0;
  for (size_t k = n_rev; ok && k-- > 0;) add_child(root, rev[k], &cap);
  if (root->children) ar_keep(&c->ar, root->children);
  free(rev);
  return ok;
}

static bool create_tree(ctx *c, tree *root, bool is_root) {
  elem *parent = root->node;
  if (is_root) {
    update_parent(c, parent, "", "");
    if (!qs_repo_config_exists(c->repo, config_path(c, parent))) return config_not_found(c, root);
  }
  const qs_config_file *loaded = NULL;
  if (elem_name(parent) && !elem_is_missing(parent)) {
    if (!qs_repo_load(c->repo, config_path(c, parent), &loaded, c->err)) return false;
    if (loaded) set_package_header(c, parent, loaded->package_header);
  }
  if (is_deleted(c, parent)) {
    mark_deleted(c, parent);
    return true;
  }
  if (!set_known_choice(c, parent)) return false;
  if (!elem_name(parent)) return true;
  if (elem_is_missing(parent)) return c->skip_missing ? true : missing_choice(c, parent);
  if (!loaded) {
    if (parent->optional) {
      parent->deleted = true;
      return true;
    }
    return config_not_found(c, root);
  }
  elem **list = NULL;
  size_t n = 0, cap = 0;
  bool ok = true;
  for (size_t k = 0; ok && loaded->defaults && k < loaded->defaults->n; k++)
    ok = parse_entry(c, loaded->config_path, loaded->defaults->items[k], PUSH(list, n, cap));
  if (ok && (n > 0 || (is_root && c->n_append > 0)))
    ok = validate_self(c, parent, &list, &n, &cap, has_config_content(loaded->content));
  for (size_t k = 0; ok && is_root && k < c->n_append; k++) *PUSH(list, n, cap) = c->append[k];
  ok = ok && update_overrides(c, list, n, parent) && expand_children(c, root, list, n);
  free(list);
  return ok;
}

/* ---- flattening ---- */

static void collect(ctx *c, const tree *t, const elem *e) {
  if (e->deleted || elem_is_missing(e) || !elem_name(e)) return;
  qs_default_entry *r = PUSH(c->out, c->n_out, c->cap_out);
  memset(r, 0, sizeof *r);
  if (elem_is_self(e)) {
    r->config_path = qs_strdup(config_path(c, t->node));
    r->parent = qs_strdup(t->parent ? config_path(c, t->parent->node) : "<root>");
    r->package = qs_strdup(final_package(c, t->node, true));
    r->is_self = true;
    r->primary = t->node->primary;
  } else {
    r->config_path = qs_strdup(config_path(c, e));
    r->parent = qs_strdup(t ? config_path(c, t->node) : "<root>");
    r->package = qs_strdup(final_package(c, e, true));
    r->primary = e->primary;
  }
}

static void dfs(ctx *c, const tree *t) {
  if (t->n_children == 0) {
    collect(c, t->parent, t->node);
    return;
  }
  for (size_t k = 0; k < t->n_children; k++) dfs(c, t->children[k]);
}

/* Group keys of the final list must be unique. */
static bool ensure_no_duplicates(ctx *c, const tree *t, qs_strbuf *seen) {
  if (t->n_children == 0) {
    const elem *e = t->node;
    if (!e->is_group || e->deleted || !e->value || elem_is_missing(e)) return true;
    char *key = override_key(c, e);
    char *marked = ar_printf(&c->ar, "\n%s\n", key);
    if (seen->s && strstr(seen->s, marked))
      return qs_fail(c->err, QS_EXIT_USAGE, "%s appears more than once in the final defaults list", key);
    qs_sb_printf(seen, "\n%s\n", key);
    return true;
  }
  for (size_t k = 0; k < t->n_children; k++)
    if (!ensure_no_duplicates(c, t->children[k], seen)) return false;
  return true;
}

/* One line per tree node, as Hydra's _print_defaults_tree_impl writes it. */
static void render_tree(ctx *c, const tree *t, int indent, qs_strbuf *b) {
  const elem *e = t->node;
  for (int k = 0; k < indent; k++) qs_sb_append(b, "  ");
  if (e->is_group) qs_sb_printf(b, "%s: %s", override_key(c, e), e->value ? e->value : "null");
  else qs_sb_append(b, config_path(c, e));
  qs_sb_append(b, t->n_children ? ":\n" : "\n");
  for (size_t k = 0; k < t->n_children; k++) render_tree(c, t->children[k], indent + 1, b);
}

static void ctx_free(ctx *c) {
  ar_free(&c->ar);
  free(c->ovr);
  free(c->del);
  free(c->append);
  free(c->known);
  free(c->group_keys);
}

bool qs_defaults_build(qs_repo *repo, const char *config_name, const qs_override *ovs, size_t n_ovs,
                       bool skip_missing, qs_defaults *out, qs_strbuf *warnings, qs_error *err) {
  memset(out, 0, sizeof *out);
  ctx c = {.repo = repo, .skip_missing = skip_missing, .warnings = warnings, .err = err};
  for (size_t k = 0; k < N_HYDRA_GROUPS; k++) c.hydra_choice[k] = hydra_groups[k].choice;
  bool ok = true;
  for (size_t k = 0; ok && k < n_ovs; k++)
    if (ovs[k].sweep == QS_SWEEP_NONE) ok = classify_override(&c, &ovs[k]);
  elem *primary = new_elem(&c);
  primary->path = ar_strdup(&c.ar, config_name);
  primary->primary = true;
  tree *root = new_tree(&c, primary, NULL);
  qs_strbuf seen = {0};
  ok = ok && create_tree(&c, root, true);
  for (size_t k = 0; ok && k < N_HYDRA_GROUPS; k++) ok = check_hydra_choice(&c, &hydra_groups[k], c.hydra_choice[k]);
  if (ok) dfs(&c, root);
  qs_strbuf tree_text = {0};
  if (ok) render_tree(&c, root, 1, &tree_text);
  out->tree_text = qs_sb_take(&tree_text);
  ok = ok && ensure_no_duplicates(&c, root, &seen) && ensure_overrides_used(&c) && ensure_deletions_used(&c);
  qs_sb_free(&seen);
  out->entries = c.out;
  out->n_entries = c.n_out;
  out->config_overrides = c.config_ovs;
  out->n_config_overrides = c.n_config_ovs;
  out->choices = qs_node_map();
  for (size_t k = 0; k < c.n_known; k++)
    qs_map_set(out->choices, c.known[k].key, c.known[k].name ? qs_node_str(c.known[k].name) : qs_node_null());
  for (size_t k = 0; k < N_HYDRA_GROUPS; k++)
    if (!qs_map_get(out->choices, hydra_groups[k].group))
      qs_map_set(out->choices, hydra_groups[k].group, c.hydra_choice[k] ? qs_node_str(c.hydra_choice[k]) : qs_node_null());
  ctx_free(&c);
  if (!ok) qs_defaults_free(out);
  return ok;
}

void qs_defaults_free(qs_defaults *d) {
  for (size_t k = 0; k < d->n_entries; k++) {
    free(d->entries[k].config_path);
    free(d->entries[k].package);
    free(d->entries[k].parent);
  }
  free(d->entries);
  free(d->config_overrides);
  qs_node_free(d->choices);
  free(d->tree_text);
  memset(d, 0, sizeof *d);
}
