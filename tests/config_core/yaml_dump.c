/* Loads each YAML file named on the command line and prints, per file, a
 * line of canonical JSON of the loaded values (as override_dump.c encodes
 * them) or {"error": ...}, then the dump between "--- dump" and "--- end".
 * yaml_oracle.py compares this with OmegaConf.load / OmegaConf.to_yaml. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config/yaml.h"
#include "core/pyfmt.h"

static json_t *encode(const qs_node *n) {
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
    for (size_t k = 0; k < n->n; k++) json_array_append_new(a, encode(n->items[k]));
    return a;
  }
  case QS_MAP: {
    json_t *m = json_array();
    for (size_t k = 0; k < n->n; k++) json_array_append_new(m, json_pack("[so]", n->keys[k], encode(n->items[k])));
    return json_pack("{so}", "map", m);
  }
  }
  return json_null();
}

int main(int argc, char **argv) {
  for (int a = 1; a < argc; a++) {
    qs_node *root;
    char *pkg;
    qs_error err;
    json_t *j;
    char *dump = NULL;
    if (qs_yaml_load_file(argv[a], &root, &pkg, &err)) {
      j = json_pack("{soso}", "value", encode(root), "package", pkg ? json_string(pkg) : json_null());
      dump = qs_yaml_dump(root);
      qs_node_free(root);
      free(pkg);
    } else {
      j = json_pack("{ss}", "error", err.msg);
    }
    char *line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    printf("%s\n--- dump\n%s--- end\n", line, dump ? dump : "");
    free(line);
    free(dump);
    json_decref(j);
  }
  return 0;
}
