/* The configuration tree: an ordered, OmegaConf-like value.
 *
 * Scalars keep their YAML/CLI type. Strings that hold "${...}" are
 * interpolations and stay unresolved in the tree (see interp.h); the string
 * "???" is a missing mandatory value. Maps keep keys in first-insertion
 * order, which is the order every dump prints. A node owns its children. */
#ifndef QSENS_CONFIG_NODE_H
#define QSENS_CONFIG_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum qs_node_kind {
  QS_NULL,
  QS_BOOL,
  QS_INT,
  QS_FLOAT,
  QS_STR,
  QS_MAP,
  QS_LIST,
} qs_node_kind;

typedef struct qs_node qs_node;
struct qs_node {
  qs_node_kind kind;
  bool b;           /* QS_BOOL */
  int64_t i;        /* QS_INT */
  double f;         /* QS_FLOAT */
  char *s;          /* QS_STR */
  size_t n, cap;    /* QS_MAP / QS_LIST: number of children */
  char **keys;      /* QS_MAP: keys[k] names items[k] */
  qs_node **items;  /* QS_MAP / QS_LIST children */
};

qs_node *qs_node_null(void);
qs_node *qs_node_bool(bool v);
qs_node *qs_node_int(int64_t v);
qs_node *qs_node_float(double v);
qs_node *qs_node_str(const char *v);
qs_node *qs_node_map(void);
qs_node *qs_node_list(void);

void qs_node_free(qs_node *n);
qs_node *qs_node_copy(const qs_node *n);
bool qs_node_equal(const qs_node *a, const qs_node *b);

bool qs_node_is_missing(const qs_node *n); /* the string "???" */
bool qs_node_is_interp(const qs_node *n);  /* a string containing an unescaped "${" */

/* Maps. set takes ownership of val; an existing key is replaced in place
 * (keeping its position), a new key is appended. */
qs_node *qs_map_get(const qs_node *map, const char *key);
void qs_map_set(qs_node *map, const char *key, qs_node *val);
bool qs_map_del(qs_node *map, const char *key);

/* Lists. append takes ownership. */
void qs_list_append(qs_node *list, qs_node *val);

/* Dotted paths "a.b.c" (list indices as numeric segments, "a.0.b").
 * get returns NULL when any segment is absent. The empty path is the root. */
qs_node *qs_node_get_path(const qs_node *root, const char *path);

/* Deep merge of src into dst (OmegaConf.merge): mappings merge recursively,
 * everything else is replaced by a copy of src's value; keys keep the
 * position where they were first inserted. */
void qs_node_merge(qs_node *dst, const qs_node *src);

#endif
