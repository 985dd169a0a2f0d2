/* The config tree: maps keep first-insertion order, paths reach into lists,
 * merge follows OmegaConf.merge. */
#include <stdlib.h>

#include "check.h"
#include "config/node.h"
#include "config/pystr.h"
#include "config/yaml.h"

/* '???' quoted; spelled with escapes because a question-mark pair before a
 * quote is a C trigraph */
#define MISSING "'?\?\?'"

/* Builds a tree from YAML text (flow style keeps the tests short). */
static qs_node *yaml(const char *text) {
  qs_node *n = NULL;
  qs_error err;
  if (!qs_yaml_parse_value(text, strlen(text), "<test>", &n, &err)) {
    fprintf(stderr, "bad test YAML: %s\n", err.msg);
    exit(1);
  }
  return n;
}

static void expect_repr(const qs_node *n, const char *want) {
  char *r = qs_pyrepr(n);
  CHECK_STR(r, want);
  free(r);
}

static void test_map_order_and_replace(void) {
  qs_node *m = qs_node_map();
  qs_map_set(m, "b", qs_node_int(1));
  qs_map_set(m, "a", qs_node_int(2));
  qs_map_set(m, "b", qs_node_str("x")); /* replaced in place */
  expect_repr(m, "{'b': 'x', 'a': 2}");
  CHECK(qs_map_del(m, "b"));
  CHECK(!qs_map_del(m, "b"));
  qs_map_set(m, "b", qs_node_null()); /* re-added: goes last */
  expect_repr(m, "{'a': 2, 'b': None}");
  CHECK(qs_map_get(m, "zz") == NULL);
  CHECK(qs_map_get(NULL, "a") == NULL);
  qs_node_free(m);
}

static void test_paths(void) {
  qs_node *root = yaml("{a: {b: [10, {c: x}], '0': zero}, l: [[1, 2]]}");
  CHECK(qs_node_get_path(root, "") == root);
  CHECK_INT(qs_node_get_path(root, "a.b.0")->i, 10);
  CHECK_STR(qs_node_get_path(root, "a.b.1.c")->s, "x");
  CHECK_INT(qs_node_get_path(root, "l.0.1")->i, 2);
  CHECK_STR(qs_node_get_path(root, "a.0")->s, "zero"); /* numeric key of a map */
  CHECK(qs_node_get_path(root, "a.b.2") == NULL);
  CHECK(qs_node_get_path(root, "a.b.x") == NULL);
  CHECK(qs_node_get_path(root, "a.nope.c") == NULL);
  CHECK(qs_node_get_path(root, "a.b.0.deeper") == NULL);
  CHECK(qs_node_get_path(root, "a..b") == NULL);
  qs_node_free(root);
}

static void test_equal_copy(void) {
  qs_node *a = yaml("{x: [1, 2.5, null, true, s], y: {z: 1}}");
  qs_node *b = qs_node_copy(a);
  CHECK(qs_node_equal(a, b));
  qs_map_set(qs_map_get(b, "y"), "z", qs_node_float(1.0));
  CHECK(!qs_node_equal(a, b)); /* int 1 and float 1.0 are different nodes */
  qs_node *c = yaml("{y: {z: 1}, x: [1, 2.5, null, true, s]}");
  CHECK(qs_node_equal(a, c)); /* dict equality ignores order */
  qs_node *nan1 = qs_node_float(NAN), *nan2 = qs_node_float(NAN);
  CHECK(!qs_node_equal(nan1, nan2));
  qs_node_free(a);
  qs_node_free(b);
  qs_node_free(c);
  qs_node_free(nan1);
  qs_node_free(nan2);
}

static void test_predicates(void) {
  qs_node *n = qs_node_str("???");
  CHECK(qs_node_is_missing(n));
  qs_node_free(n);
  n = qs_node_str("x${a.b}");
  CHECK(qs_node_is_interp(n));
  qs_node_free(n);
  n = qs_node_str("\\${a.b}");
  CHECK(!qs_node_is_interp(n));
  qs_node_free(n);
  n = qs_node_str("\\${a} ${b}");
  CHECK(qs_node_is_interp(n));
  qs_node_free(n);
  n = qs_node_int(3);
  CHECK(!qs_node_is_interp(n) && !qs_node_is_missing(n));
  qs_node_free(n);
}

static void expect_merge(const char *dst, const char *src, const char *want) {
  qs_node *d = yaml(dst), *s = yaml(src);
  qs_node_merge(d, s);
  expect_repr(d, want);
  qs_node_free(d);
  qs_node_free(s);
}

static void test_merge(void) {
  /* mappings merge recursively, keys keep their first position */
  expect_merge("{a: 1, b: {c: 1, d: 2}}", "{b: {d: 3, e: 4}, f: 5}", "{'a': 1, 'b': {'c': 1, 'd': 3, 'e': 4}, 'f': 5}");
  /* lists are replaced, not merged */
  expect_merge("{l: [1, 2, 3]}", "{l: [9]}", "{'l': [9]}");
  /* scalars replace containers and containers replace scalars */
  expect_merge("{a: {x: 1}}", "{a: 2}", "{'a': 2}");
  expect_merge("{a: 2}", "{a: {x: 1}}", "{'a': {'x': 1}}");
  expect_merge("{a: null}", "{a: {x: 1}}", "{'a': {'x': 1}}");
  expect_merge("{a: {x: 1}}", "{a: null}", "{'a': None}");
  /* a missing value in the source keeps the destination's value */
  expect_merge("{a: 1, b: {c: 2}}", "{a: " MISSING ", b: " MISSING ", n: " MISSING "}",
               "{'a': 1, 'b': {'c': 2}, 'n': " MISSING "}");
  expect_merge("{a: " MISSING "}", "{a: 3}", "{'a': 3}");
  /* interpolations are values like any other */
  expect_merge("{a: 1}", "{a: '${b}'}", "{'a': '${b}'}");
  /* the source is copied: changing it afterwards does not touch the result */
  qs_node *d = yaml("{a: {b: 1}}"), *s = yaml("{a: {c: [1]}}");
  qs_node_merge(d, s);
  qs_list_append(qs_node_get_path(s, "a.c"), qs_node_int(2));
  expect_repr(d, "{'a': {'b': 1, 'c': [1]}}");
  qs_node_free(d);
  qs_node_free(s);
  /* top-level non-map: replaced in place */
  d = qs_node_int(1);
  s = yaml("[1, 2]");
  qs_node_merge(d, s);
  expect_repr(d, "[1, 2]");
  qs_node_free(d);
  qs_node_free(s);
}

static void test_pystr(void) {
  qs_node *n = yaml("{a: [1, 2], b: x, c: true, d: null, e: 1.0e-05, f: \"it's\", g: 'q\"x''y', h: .inf, i: \"t\\tab\"}");
  char *s = qs_pystr(n);
  CHECK_STR(s, "{'a': [1, 2], 'b': 'x', 'c': True, 'd': None, 'e': 1e-05, 'f': \"it's\", 'g': 'q\"x\\'y', "
               "'h': inf, 'i': 't\\tab'}");
  free(s);
  const char *scalars[][2] = {{"true", "True"}, {"null", "None"}, {"1.0e-05", "1e-05"}, {"hello", "hello"},
                              {"1.0e+16", "1e+16"}, {"3", "3"}, {"[]", "[]"}, {"{}", "{}"}, {"-.inf", "-inf"},
                              {"'a b'", "a b"}, {"[a, 'it''s']", "['a', \"it's\"]"}};
  for (size_t k = 0; k < sizeof scalars / sizeof *scalars; k++) {
    qs_node *v = yaml(scalars[k][0]);
    char *t = qs_pystr(v);
    CHECK_STR(t, scalars[k][1]);
    free(t);
    qs_node_free(v);
  }
  qs_node_free(n);
}

int main(void) {
  test_map_order_and_replace();
  test_paths();
  test_equal_copy();
  test_predicates();
  test_merge();
  test_pystr();
  return check_summary("test_node");
}
