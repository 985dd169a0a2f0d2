/* Loads each YAML file named on the command line and prints, per file, a
 * line of canonical JSON of the loaded values (as override_dump.c encodes
 * them) or {"error": ...}, then the dump between "--- dump" and "--- end".
 * yaml_oracle.py compares this with OmegaConf.load / OmegaConf.to_yaml. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config/yaml.h"
#include "node_json.h"

int main(int argc, char **argv) {
  for (int a = 1; a < argc; a++) {
    qs_node *root;
    char *pkg;
    qs_error err;
    json_t *j;
    char *dump = NULL;
    if (qs_yaml_load_file(argv[a], &root, &pkg, &err)) {
      j = json_pack("{soso}", "value", node_json(root), "package", pkg ? json_string(pkg) : json_null());
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
