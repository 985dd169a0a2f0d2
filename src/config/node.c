#include "config/node.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

static qs_node *node_new(qs_node_kind kind) {
  qs_node *n = qs_calloc(1, sizeof *n);
  n->kind = kind;
  return n;
}

qs_node *qs_node_null(void) { return node_new(QS_NULL); }

qs_node *qs_node_bool(bool v) {
  qs_node *n = node_new(QS_BOOL);
  n->b = v;
  return n;
}

qs_node *qs_node_int(int64_t v) {
  qs_node *n = node_new(QS_INT);
  n->i = v;
  return n;
}

qs_node *qs_node_float(double v) {
  qs_node *n = node_new(QS_FLOAT);
  n->f = v;
  return n;
}

qs_node *qs_node_str(const char *v) {
  qs_node *n = node_new(QS_STR);
  n->s = qs_strdup(v);
  return n;
}

qs_node *qs_node_map(void) { return node_new(QS_MAP); }
qs_node *qs_node_list(void) { return node_new(QS_LIST); }

/* Frees what n owns but not n itself, so a node can be overwritten in place. */
static void node_clear(qs_node *n) {
  for (size_t k = 0; k < n->n; k++) {
    if (n->keys) free(n->keys[k]);
    qs_node_free(n->items[k]);
  }
  free(n->keys);
  free(n->items);
  free(n->s);
  memset(n, 0, sizeof *n);
}

void qs_node_free(qs_node *n) {
  if (!n) return;
  node_clear(n);
  free(n);
}

qs_node *qs_node_copy(const qs_node *n) {
  if (!n) return NULL;
  qs_node *c = node_new(n->kind);
  c->b = n->b;
  c->i = n->i;
  c->f = n->f;
  if (n->s) c->s = qs_strdup(n->s);
  for (size_t k = 0; k < n->n; k++) {
    if (n->kind == QS_MAP) qs_map_set(c, n->keys[k], qs_node_copy(n->items[k]));
    else qs_list_append(c, qs_node_copy(n->items[k]));
  }
  return c;
}

bool qs_node_equal(const qs_node *a, const qs_node *b) {
  if (!a || !b) return a == b;
  if (a->kind != b->kind) return false;
  switch (a->kind) {
  case QS_NULL: return true;
  case QS_BOOL: return a->b == b->b;
  case QS_INT: return a->i == b->i;
  case QS_FLOAT: return a->f == b->f; /* nan != nan, as in Python */
  case QS_STR: return strcmp(a->s, b->s) == 0;
  case QS_MAP:
    /* dict equality in Python ignores key order */
    if (a->n != b->n) return false;
    for (size_t k = 0; k < a->n; k++)
      if (!qs_node_equal(a->items[k], qs_map_get(b, a->keys[k]))) return false;
    return true;
  case QS_LIST:
    if (a->n != b->n) return false;
    for (size_t k = 0; k < a->n; k++)
      if (!qs_node_equal(a->items[k], b->items[k])) return false;
    return true;
  }
  return false;
}

bool qs_node_is_missing(const qs_node *n) {
  return n && n->kind == QS_STR && strcmp(n->s, "???") == 0;
}

bool qs_node_is_interp(const qs_node *n) {
  if (!n || n->kind != QS_STR) return false;
  for (const char *p = strstr(n->s, "${"); p; p = strstr(p + 1, "${"))
    if (p == n->s || p[-1] != '\\') return true;
  return false;
}

static size_t map_index(const qs_node *map, const char *key) {
  for (size_t k = 0; k < map->n; k++)
    if (strcmp(map->keys[k], key) == 0) return k;
  return map->n;
}

qs_node *qs_map_get(const qs_node *map, const char *key) {
  if (!map || map->kind != QS_MAP) return NULL;
  size_t k = map_index(map, key);
  return k < map->n ? map->items[k] : NULL;
}

static void append_slot(qs_node *container, qs_node *val) {
  size_t cap = container->cap;
  qs_grow((void **)&container->items, &cap, container->n + 1, sizeof *container->items);
  if (container->kind == QS_MAP) {
    size_t key_cap = container->cap;
    qs_grow((void **)&container->keys, &key_cap, container->n + 1, sizeof *container->keys);
  }
  container->cap = cap;
  container->items[container->n++] = val;
}

void qs_map_set(qs_node *map, const char *key, qs_node *val) {
  size_t k = map_index(map, key);
  if (k < map->n) {
    qs_node_free(map->items[k]);
    map->items[k] = val;
    return;
  }
  append_slot(map, val);
  map->keys[k] = qs_strdup(key);
}

bool qs_map_del(qs_node *map, const char *key) {
  if (!map || map->kind != QS_MAP) return false;
  size_t k = map_index(map, key);
  if (k == map->n) return false;
  free(map->keys[k]);
  qs_node_free(map->items[k]);
  memmove(map->keys + k, map->keys + k + 1, (map->n - k - 1) * sizeof *map->keys);
  memmove(map->items + k, map->items + k + 1, (map->n - k - 1) * sizeof *map->items);
  map->n--;
  return true;
}

void qs_list_append(qs_node *list, qs_node *val) { append_slot(list, val); }

/* A list index segment: digits only (OmegaConf paths use "a.0.b"). */
static bool parse_index(const char *seg, size_t len, size_t *idx) {
  if (len == 0 || len > 18) return false;
  size_t v = 0;
  for (size_t k = 0; k < len; k++) {
    if (seg[k] < '0' || seg[k] > '9') return false;
    v = v * 10 + (size_t)(seg[k] - '0');
  }
  *idx = v;
  return true;
}

static qs_node *child_by_segment(const qs_node *n, const char *seg, size_t len) {
  if (n->kind == QS_MAP) {
    for (size_t k = 0; k < n->n; k++)
      if (strlen(n->keys[k]) == len && memcmp(n->keys[k], seg, len) == 0) return n->items[k];
    return NULL;
  }
  size_t idx;
  if (n->kind == QS_LIST && parse_index(seg, len, &idx) && idx < n->n) return n->items[idx];
  return NULL;
}

qs_node *qs_node_get_path(const qs_node *root, const char *path) {
  const qs_node *cur = root;
  if (!cur || !path || !*path) return (qs_node *)cur;
  const char *seg = path;
  while (cur) {
    const char *dot = strchr(seg, '.');
    size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
    cur = child_by_segment(cur, seg, len);
    if (!dot) break;
    seg = dot + 1;
  }
  return (qs_node *)cur;
}

/* dst takes over a copy of src's value, in place (pointers to dst stay valid). */
static void replace_with_copy(qs_node *dst, const qs_node *src) {
  qs_node *c = qs_node_copy(src);
  node_clear(dst);
  *dst = *c;
  free(c);
}

static void merge_maps(qs_node *dst, const qs_node *src) {
  for (size_t k = 0; k < src->n; k++) {
    const qs_node *sv = src->items[k];
    qs_node *dv = qs_map_get(dst, src->keys[k]);
    if (dv) qs_node_merge(dv, sv);
    else qs_map_set(dst, src->keys[k], qs_node_copy(sv));
  }
}

void qs_node_merge(qs_node *dst, const qs_node *src) {
  /* OmegaConf keeps the destination's value when the source is "???". */
  if (qs_node_is_missing(src)) return;
  if (dst->kind == QS_MAP && src->kind == QS_MAP) merge_maps(dst, src);
  else replace_with_copy(dst, src);
}
