/* Prints the parse of each argument as one line of canonical JSON, the form
 * override_oracle.py also produces from Hydra's own parser:
 *   {"type":..., "key":..., "package":..., "sweep":..., "value":..., "text":...,
 *    "values":[...], "texts":[...], "include":[...], "exclude":[...]}
 * or {"error": "<message>"}. Scalars are tagged so that types compare:
 * "i:5", "f:0.5" (Python repr), "b:true", "n", "s:text"; maps are lists of
 * [key, value] pairs so that their order compares too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config/override.h"
#include "node_json.h"

static json_t *strings(char **s, size_t n) {
  json_t *a = json_array();
  for (size_t k = 0; k < n; k++) json_array_append_new(a, json_string(s[k]));
  return a;
}

static json_t *describe(const qs_override *ov) {
  static const char *const TYPES[] = {"CHANGE", "ADD", "FORCE_ADD", "DEL"};
  static const char *const SWEEPS[] = {"NONE", "LIST", "CHOICE", "RANGE", "GLOB", "INTERVAL"};
  json_t *o = json_object();
  json_object_set_new(o, "type", json_string(TYPES[ov->type]));
  json_object_set_new(o, "key", json_string(ov->key));
  json_object_set_new(o, "package", ov->package ? json_string(ov->package) : json_null());
  char *key_el = qs_override_key_element(ov);
  json_object_set_new(o, "key_element", json_string(key_el));
  free(key_el);
  if (!ov->has_value) return o;
  json_object_set_new(o, "sweep", json_string(SWEEPS[ov->sweep]));
  if (ov->sweep == QS_SWEEP_NONE) {
    json_object_set_new(o, "value", node_json(ov->value));
    json_object_set_new(o, "text", json_string(ov->value_text));
  } else if (ov->sweep == QS_SWEEP_GLOB) {
    json_object_set_new(o, "include", strings(ov->glob_include, ov->n_include));
    json_object_set_new(o, "exclude", strings(ov->glob_exclude, ov->n_exclude));
  } else {
    json_t *vals = json_array();
    for (size_t k = 0; k < ov->n_values; k++) json_array_append_new(vals, node_json(ov->values[k]));
    json_object_set_new(o, "values", vals);
    if (ov->sweep != QS_SWEEP_INTERVAL) json_object_set_new(o, "texts", strings(ov->value_texts, ov->n_values));
  }
  return o;
}

int main(int argc, char **argv) {
  for (int a = 1; a < argc; a++) {
    qs_override ov;
    qs_error err;
    json_t *j = qs_override_parse(argv[a], &ov, &err) ? describe(&ov) : json_pack("{ss}", "error", err.msg);
    char *line = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    puts(line);
    free(line);
    json_decref(j);
    qs_override_free(&ov);
  }
  return 0;
}
