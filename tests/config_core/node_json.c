#include "node_json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pyfmt.h"

json_t *node_json(const qs_node *n) {
  char buf[64], r[40];
  switch (n->kind) {
  case QS_NULL: return json_string("n");
  case QS_BOOL: return json_string(n->b ? "b:true" : "b:false");
  case QS_INT: snprintf(buf, sizeof buf, "i:%" PRId64, n->i); return json_string(buf);
  case QS_FLOAT: snprintf(buf, sizeof buf, "f:%s", qs_py_float_repr(n->f, r, sizeof r)); return json_string(buf);
  case QS_STR: {
    char *s = malloc(strlen(n->s) + 3);
    sprintf(s, "s:%s", n->s);
    json_t *j = json_string(s);
    free(s);
    return j;
  }
  case QS_LIST: {
    json_t *a = json_array();
    for (size_t k = 0; k < n->n; k++) json_array_append_new(a, node_json(n->items[k]));
    return a;
  }
  case QS_MAP: {
    json_t *m = json_array();
    for (size_t k = 0; k < n->n; k++) json_array_append_new(m, json_pack("[so]", n->keys[k], node_json(n->items[k])));
    return json_pack("{so}", "map", m);
  }
  }
  return json_null();
}
