/* Interpolation: every form of the spec (§6) and OmegaConf's error texts,
 * on trees built in code. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "config/interp.h"
#include "config/node.h"

static qs_node *example(void) {
  qs_node *root = qs_node_map();
  qs_node *qp = qs_node_map();
  qs_map_set(qp, "name", qs_node_str("wfp8_afp8"));
  qs_map_set(qp, "bits", qs_node_int(8));
  qs_map_set(qp, "label", qs_node_str("${.name}/${.bits}"));
  qs_map_set(qp, "up", qs_node_str("${..seed}"));
  qs_map_set(root, "quant_pair", qp);
  qs_node *list = qs_node_list();
  qs_list_append(list, qs_node_int(1));
  qs_list_append(list, qs_node_int(2));
  qs_map_set(root, "sizes", list);
  qs_map_set(root, "seed", qs_node_int(0));
  qs_map_set(root, "flag", qs_node_bool(true));
  qs_map_set(root, "nothing", qs_node_null());
  qs_map_set(root, "tiny", qs_node_float(1e-5));
  qs_map_set(root, "mandatory", qs_node_str("???"));
  qs_map_set(root, "key_name", qs_node_str("QSENS_TEST_VAR"));
  return root;
}

static void set(qs_node *root, const char *key, const char *text) { qs_map_set(root, key, qs_node_str(text)); }

/* Reads `key` after setting it to `text`; returns the resolved node. */
static qs_node *read_as(qs_node *root, const char *text) {
  set(root, "x", text);
  qs_node *out = NULL;
  qs_error err = {0};
  if (!qs_interp_select(root, "x", &out, &err)) fprintf(stderr, "unexpected error: %s\n", err.msg);
  return out;
}

static void check_str_value(qs_node *root, const char *text, const char *want) {
  qs_node *v = read_as(root, text);
  CHECK(v && v->kind == QS_STR);
  if (v && v->kind == QS_STR) CHECK_STR(v->s, want);
  if (v && v->kind != QS_STR) fprintf(stderr, "  for %s\n", text);
  qs_node_free(v);
}

static void check_error(qs_node *root, const char *text, const char *want) {
  set(root, "x", text);
  qs_node *out = NULL;
  qs_error err = {0};
  CHECK(!qs_interp_select(root, "x", &out, &err));
  CHECK_STR(err.msg, want);
  qs_node_free(out);
}

static void forms(void) {
  qs_node *root = example();
  qs_node *v = read_as(root, "${quant_pair.bits}");
  CHECK(v && v->kind == QS_INT && v->i == 8); /* a whole interpolation keeps the type */
  qs_node_free(v);
  v = read_as(root, "${sizes[1]}");
  CHECK(v && v->kind == QS_INT && v->i == 2);
  qs_node_free(v);
  v = read_as(root, "${quant_pair}");
  CHECK(v && v->kind == QS_MAP && v->n == 4);
  if (v && v->kind == QS_MAP) CHECK_STR(qs_map_get(v, "label")->s, "wfp8_afp8/8"); /* relative, resolved in place */
  qs_node_free(v);
  check_str_value(root, "${quant_pair.label}", "wfp8_afp8/8");
  v = read_as(root, "${quant_pair.up}");
  CHECK(v && v->kind == QS_INT && v->i == 0);
  qs_node_free(v);
  check_str_value(root, "a${seed}b", "a0b");
  /* Mixed text embeds Python's str(). */
  check_str_value(root, "${flag}-${nothing}-${tiny}-${sizes}", "True-None-1e-05-[1, 2]");
  check_str_value(root, "\\${seed}", "${seed}");
  check_str_value(root, "\\\\${seed}", "\\0");
  qs_node_free(root);
}

static void resolvers(void) {
  qs_node *root = example();
  unsetenv("QSENS_TEST_VAR");
  check_str_value(root, "${oc.env:QSENS_TEST_VAR,8}", "8");
  check_str_value(root, "${oc.env:QSENS_TEST_VAR,/tmp}", "/tmp");
  check_str_value(root, "${oc.env:QSENS_TEST_VAR,true}", "True");
  qs_node *v = read_as(root, "${oc.env:QSENS_TEST_VAR,null}");
  CHECK(v && v->kind == QS_NULL);
  qs_node_free(v);
  check_error(root, "${oc.env:QSENS_TEST_VAR}",
              "KeyError raised while resolving interpolation: \"Environment variable 'QSENS_TEST_VAR' not found\"\n"
              "    full_key: x\n    object_type=dict");
  setenv("QSENS_TEST_VAR", "42", 1);
  check_str_value(root, "${oc.env:QSENS_TEST_VAR}", "42"); /* always a string */
  /* Nested interpolation inside resolver arguments. */
  check_str_value(root, "${oc.env:${key_name},none}", "42");
  check_str_value(root, "${oc.env:'${key_name}'}", "42");

  struct timespec ts = qs_interp_now();
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  char want[64];
  strftime(want, sizeof want, "%Y-%m-%d %H:%M:%S", &tm);
  check_str_value(root, "${now:%Y-%m-%d %H:%M:%S}", want);
  /* One instant per process for every format. */
  struct timespec again = qs_interp_now();
  CHECK(again.tv_sec == ts.tv_sec && again.tv_nsec == ts.tv_nsec);
  /* An instant set from outside (rank 0's) replaces it. */
  struct timespec fixed = {.tv_sec = 1795000000};
  qs_interp_set_now(fixed);
  localtime_r(&fixed.tv_sec, &tm);
  strftime(want, sizeof want, "%Y%m%d-%H%M%S", &tm);
  check_str_value(root, "${now:%Y%m%d-%H%M%S}", want);

  qs_node *hydra = qs_node_map();
  qs_node *job = qs_node_map();
  qs_map_set(job, "num", qs_node_int(4));
  qs_map_set(job, "name", qs_node_str("qsens"));
  qs_map_set(hydra, "job", job);
  qs_map_set(hydra, "subdir", qs_node_str("${hydra.job.num}"));
  set(root, "x", "${hydra:job.num}-${hydra:subdir}");
  qs_node *out = NULL;
  qs_error err = {0};
  CHECK(qs_interp_select_in(root, hydra, "x", &out, &err));
  if (out) CHECK_STR(out->s, "4-4");
  qs_node_free(out);
  set(root, "x", "${hydra:job.num}");
  CHECK(qs_interp_select_in(root, hydra, "x", &out, &err) && out && out->kind == QS_INT && out->i == 4);
  qs_node_free(out);
  qs_node_free(hydra);
  qs_node_free(root);
}

static void errors(void) {
  qs_node *root = example();
  check_error(root, "${nope.y}", "Interpolation key 'nope.y' not found\n    full_key: x\n    object_type=dict");
  check_error(root, "${x}", "Recursive interpolation detected\n    full_key: x\n    object_type=dict");
  set(root, "a", "${b}");
  set(root, "b", "${a}");
  check_error(root, "${a}", "Recursive interpolation detected\n    full_key: b\n    object_type=dict");
  qs_node *out = NULL;
  qs_error err = {0};
  CHECK(!qs_interp_select(root, "mandatory", &out, &err));
  CHECK_STR(err.msg, "Missing mandatory value: mandatory\n    full_key: mandatory\n    object_type=dict");
  check_error(root, "${nope:1}", "Unsupported interpolation type nope\n    full_key: x\n    object_type=dict");
  /* Absent paths are not errors for select. */
  CHECK(qs_interp_select(root, "no.such.key", &out, &err) && out == NULL);
  /* Whole-config resolution keeps "???" and fails on the first bad value. */
  qs_map_del(root, "a");
  qs_map_del(root, "b");
  set(root, "x", "${seed}");
  qs_node *all = NULL;
  CHECK(qs_interp_resolve(root, NULL, &all, &err));
  CHECK(all && qs_node_is_missing(qs_map_get(all, "mandatory")));
  CHECK(all && qs_map_get(all, "x")->kind == QS_INT);
  qs_node_free(all);
  /* OmegaConf.resolve names no key; a relative key loses its dots. */
  set(root, "x", "${.missing_key}");
  CHECK(!qs_interp_resolve(root, NULL, &all, &err));
  CHECK_STR(err.msg, "Interpolation key 'missing_key' not found");
  CHECK(qs_interp_resolve_at(root, NULL, "quant_pair", &all, &err) && all && all->kind == QS_MAP);
  if (all) CHECK(qs_map_get(all, "up")->kind == QS_INT && qs_map_get(all, "up")->i == 0);
  qs_node_free(all);
  qs_node_free(root);
}

int main(void) {
  forms();
  resolvers();
  errors();
  return check_summary("test_config_interp");
}
