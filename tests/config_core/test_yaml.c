/* YAML loading (hydra-compat §10.1: PyYAML SafeLoader typing as OmegaConf
 * configures it) and dumping (§10.2: OmegaConf.to_yaml text). Expected
 * values come from PyYAML 6 / OmegaConf 2.3. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "config/pystr.h"
#include "config/yaml.h"
#include "core/fsutil.h"

static qs_node *load(const char *text, qs_error *err) {
  qs_node *n = NULL;
  char *pkg = NULL;
  if (!qs_yaml_load_string(text, strlen(text), "conf/x.yaml", &n, &pkg, err)) return NULL;
  free(pkg);
  return n;
}

/* "k: <plain>" loads to the value whose Python repr is `repr`. */
static void expect_plain(const char *plain, const char *repr) {
  char text[256];
  snprintf(text, sizeof text, "k: %s\n", plain);
  qs_error err;
  qs_node *n = load(text, &err);
  CHECK(n != NULL);
  if (!n) {
    fprintf(stderr, "  %s: %s\n", plain, err.msg);
    return;
  }
  char *r = qs_pyrepr(qs_map_get(n, "k"));
  CHECK_STR(r, repr);
  free(r);
  qs_node_free(n);
}

static void test_typing_table(void) {
  /* §10.1 rows */
  const char *bools[] = {"yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE"};
  for (size_t k = 0; k < sizeof bools / sizeof *bools; k++) expect_plain(bools[k], "True");
  const char *falses[] = {"no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE"};
  for (size_t k = 0; k < sizeof falses / sizeof *falses; k++) expect_plain(falses[k], "False");
  expect_plain("yEs", "'yEs'");
  expect_plain("0123", "83");
  expect_plain("0x1F", "31");
  expect_plain("0b101", "5");
  expect_plain("1:30", "90");
  expect_plain("1e3", "1000.0");
  expect_plain(".5", "0.5");
  expect_plain("1_000", "1000");
  expect_plain("~", "None");
  expect_plain("null", "None");
  expect_plain("", "None");
  expect_plain("2024-01-01", "'2024-01-01'");
  expect_plain("y", "'y'");
  expect_plain("n", "'n'");
  /* more of the YAML 1.1 resolvers */
  expect_plain("-0x1F", "-31");
  expect_plain("+0b11", "3");
  expect_plain("0o17", "'0o17'");
  expect_plain("09", "'09'");
  expect_plain("00", "0");
  expect_plain("-1:30:00", "-5400");
  expect_plain("1:30.5", "90.5");
  expect_plain("1:60", "'1:60'");
  expect_plain("1.", "1.0");
  expect_plain("1.0e+16", "1e+16");
  expect_plain("1e-05", "1e-05");
  expect_plain("1.0e5", "100000.0");
  expect_plain("1_000.5", "1000.5");
  expect_plain(".inf", "inf");
  expect_plain("-.Inf", "-inf");
  expect_plain(".NaN", "nan");
  expect_plain("inf", "'inf'");
  expect_plain("Null", "None");
  expect_plain("nULL", "'nULL'");
  expect_plain("2001-12-14 21:59:43.10 -5", "'2001-12-14 21:59:43.10 -5'");
  expect_plain("${a.b}", "'${a.b}'");
  expect_plain("'0123'", "'0123'");
  expect_plain("\"yes\"", "'yes'");
  expect_plain("!!str 1", "'1'");
  expect_plain("!!float 1", "1.0");
  expect_plain("[1, a, {b: no}]", "[1, 'a', {'b': False}]");
}

static void expect_dump(const char *yaml_text, const char *want) {
  qs_error err;
  qs_node *n = load(yaml_text, &err);
  CHECK(n != NULL);
  if (!n) {
    fprintf(stderr, "  %s\n", err.msg);
    return;
  }
  char *d = qs_yaml_dump(n);
  CHECK_STR(d, want);
  /* the dump loads back to the same tree */
  qs_node *again = load(d, &err);
  CHECK(again && qs_node_equal(n, again));
  qs_node_free(again);
  free(d);
  qs_node_free(n);
}

/* A string value dumps as `want` (OmegaConf quoting, §10.2). */
static void expect_str_dump(const char *value, const char *want) {
  qs_node *m = qs_node_map();
  qs_map_set(m, "k", qs_node_str(value));
  char *d = qs_yaml_dump(m);
  char expected[256];
  snprintf(expected, sizeof expected, "k: %s\n", want);
  CHECK_STR(d, expected);
  qs_error err;
  qs_node *again = load(d, &err);
  CHECK(again && qs_node_equal(m, again));
  qs_node_free(again);
  free(d);
  qs_node_free(m);
}

static void test_dump_quoting(void) {
  const char *quoted[][2] = {
    {"0123", "'0123'"}, {"20261126", "'20261126'"}, {"1e3", "'1e3'"}, {"inf", "'inf'"}, {"nan", "'nan'"},
    {"1_000", "'1_000'"}, {"1.5", "'1.5'"}, {"", "''"}, {"null", "'null'"}, {"~", "'~'"}, {"2024-01-01", "'2024-01-01'"},
    {"1:30", "'1:30'"}, {"0x1F", "'0x1F'"}, {"=", "'='"}, {"yes", "'yes'"}, {"y", "'y'"}, {"N", "'N'"},
    {"true", "'true'"}, {"Off", "'Off'"}, {" lead", "' lead'"}, {"trail ", "'trail '"}, {"#x", "'#x'"},
    {",x", "',x'"}, {"[x", "'[x'"}, {"{x", "'{x'"}, {"&x", "'&x'"}, {"*x", "'*x'"}, {"!x", "'!x'"}, {"|x", "'|x'"},
    {">x", "'>x'"}, {"'x", "'''x'"}, {"\"x", "'\"x'"}, {"%x", "'%x'"}, {"@x", "'@x'"}, {"`x", "'`x'"},
    {"- x", "'- x'"}, {"? x", "'? x'"}, {": x", "': x'"}, {"-", "'-'"}, {"?", "'?'"}, {":", "':'"},
    {"x: y", "'x: y'"}, {"x #y", "'x #y'"}, {"---", "'---'"}, {"<<", "'<<'"}, {"a'b: c", "'a''b: c'"},
    {"Infinity", "'Infinity'"}, {" 12", "' 12'"}, {"-1", "'-1'"},
  };
  for (size_t k = 0; k < sizeof quoted / sizeof *quoted; k++) expect_str_dump(quoted[k][0], quoted[k][1]);
  const char *plain[] = {"hello, world", "it's", "${a.b}", "?" "??", "a=b", "-x", "x:y", "x#y", "a  b",
                         "http://host:8080/x", "/path/to/file.yaml", "50%", "caf\xc3\xa9", "1 2", "+", "_1", "Infinityx",
                         "True_", "0o17"};
  for (size_t k = 0; k < sizeof plain / sizeof *plain; k++) expect_str_dump(plain[k], plain[k]);
  /* not printable: double quotes with escapes */
  expect_str_dump("a\tb", "\"a\\tb\"");
  expect_str_dump("line\nbreak", "\"line\\nbreak\"");
  expect_str_dump("x\x01y", "\"x\\x01y\"");
}

static void test_dump_layout(void) {
  expect_dump("a: 1\nb: 2.5\nc: true\nd: null\n", "a: 1\nb: 2.5\nc: true\nd: null\n");
  expect_dump("f: [a, b]\n", "f:\n- a\n- b\n");
  expect_dump("f: []\ng: {}\n", "f: []\ng: {}\n");
  expect_dump("f: [{a: 1, b: {c: 2}, d: [1, [2, 3]]}]\ng: {h: []}\n",
              "f:\n- a: 1\n  b:\n    c: 2\n  d:\n  - 1\n  - - 2\n    - 3\ng:\n  h: []\n");
  expect_dump("l: [[1, 2], [3]]\n", "l:\n- - 1\n  - 2\n- - 3\n");
  expect_dump("m: {n: [{x: {y: 1}}]}\n", "m:\n  'n':\n  - x:\n      'y': 1\n");
  expect_dump("x: [1.0e-05, 1.0e+16, .inf, -.inf, 0.1, -0.0, 1e300]\n",
              "x:\n- 1.0e-05\n- 1.0e+16\n- .inf\n- -.inf\n- 0.1\n- -0.0\n- 1.0e+300\n");
  qs_node *nan = qs_node_map(); /* nan != nan, so no reload check */
  qs_map_set(nan, "x", qs_node_float(NAN));
  char *d = qs_yaml_dump(nan);
  CHECK_STR(d, "x: .nan\n");
  free(d);
  qs_node_free(nan);
  expect_dump("'true': 1\n'1': 2\nyes_key: 3\n", "'true': 1\n'1': 2\nyes_key: 3\n");
  expect_dump("", "{}\n");
}

static void expect_load_error(const char *text, const char *want) {
  qs_error err;
  qs_node *n = load(text, &err);
  CHECK(n == NULL);
  qs_node_free(n);
  if (!n) {
    CHECK_INT(err.status, QS_EXIT_USAGE);
    CHECK_STR(err.msg, want);
  }
}

static void test_anchors_merges_duplicates(void) {
  expect_dump("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n  z: 4\n",
              "base:\n  x: 1\n  'y': 2\nderived:\n  x: 1\n  'y': 3\n  z: 4\n");
  /* several merged maps: earlier ones win, later ones' keys come first */
  expect_dump("a: &a {p: 1, q: 1}\nb: &b {q: 2, r: 2}\nc:\n  <<: [*a, *b]\n  s: 3\n",
              "a:\n  p: 1\n  q: 1\nb:\n  q: 2\n  r: 2\nc:\n  q: 1\n  r: 2\n  p: 1\n  s: 3\n");
  expect_dump("x: &v 5\ny: *v\nz: [*v, *v]\n", "x: 5\n'y': 5\nz:\n- 5\n- 5\n");
  expect_load_error("a: 1\nb: 2\na: 3\n", "while constructing a mapping\n  in \"conf/x.yaml\", line 1, column 1\n"
                                         "found duplicate key a\n  in \"conf/x.yaml\", line 3, column 1");
  expect_load_error("top:\n  b: 1\n  b: 2\n", "while constructing a mapping\n  in \"conf/x.yaml\", line 2, column 3\n"
                                             "found duplicate key b\n  in \"conf/x.yaml\", line 3, column 3");
  expect_load_error("x: *nope\n", "found undefined alias 'nope'\n  in \"conf/x.yaml\", line 1, column 4");
  expect_load_error("a: 1\n<<: 2\n", "while constructing a mapping\n  in \"conf/x.yaml\", line 1, column 1\n"
                                    "expected a mapping or list of mappings for merging\n  in \"conf/x.yaml\", line 2, column 1");
}

static void test_errors(void) {
  expect_load_error("- 1\n- 2\n", "conf/x.yaml: the top level of a config file must be a mapping");
  expect_load_error("a: 1\n---\nb: 2\n", "expected a single document in the stream\n  in \"conf/x.yaml\", line 1, "
                                         "column 1\nbut found another document\n  in \"conf/x.yaml\", line 2, column 1");
  expect_load_error("a: !foo 1\n", "could not determine a constructor for the tag '!foo'\n  in \"conf/x.yaml\", line "
                                   "1, column 4");
  expect_load_error("a: =\n", "could not determine a constructor for the tag 'tag:yaml.org,2002:value'\n  in "
                              "\"conf/x.yaml\", line 1, column 4");
  /* libyaml's own wording for syntax errors, placed the same way */
  qs_error err;
  qs_node *n = load("a: [1, 2\n", &err);
  CHECK(n == NULL);
  CHECK(strstr(err.msg, "while parsing a flow sequence\n  in \"conf/x.yaml\", line 1, column 4\n") == err.msg);
  n = load("a: b: c\n", &err);
  CHECK(n == NULL);
  CHECK(strstr(err.msg, "line 1, column 5") != NULL);
  CHECK(!qs_yaml_load_file("/nonexistent/dir/c.yaml", &n, NULL, &err));
  CHECK(strstr(err.msg, "/nonexistent/dir/c.yaml") != NULL);
}

static void expect_header(const char *text, const char *want) {
  qs_error err;
  qs_node *n = NULL;
  char *pkg = NULL;
  CHECK(qs_yaml_load_string(text, strlen(text), "h.yaml", &n, &pkg, &err));
  if (want) CHECK_STR(pkg, want);
  else CHECK(pkg == NULL);
  free(pkg);
  qs_node_free(n);
}

static void test_package_header(void) {
  expect_header("# @package _global_\na: 1\n", "_global_");
  expect_header("\n\n# @package foo.bar\n# @other x\nb: 2\n", "foo.bar");
  expect_header("#@package  tight\nd: 1\n", "tight");
  expect_header("# hello\n# @package ignored\nc: 3\n", NULL); /* a plain comment ends the header */
  expect_header("a: 1  # @package no\n", NULL);
  expect_header("", NULL);
  qs_error err;
  qs_node *n = NULL;
  char *pkg = NULL;
  const char *bad = "# @package a b\nx: 1\n";
  CHECK(!qs_yaml_load_string(bad, strlen(bad), "h.yaml", &n, &pkg, &err));
  CHECK_STR(err.msg, "h.yaml: Too many components in '@package a b'");
}

static void test_file_roundtrip(void) {
  char dir[] = "/tmp/qsens_yaml_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char *path = qs_path_join(dir, "c.yaml");
  const char *text = "# @package sub\nseed: 0\nrun_name: ${quant_pair.name}-${dataset.size}\n";
  qs_error err;
  CHECK(qs_write_file_atomic(path, text, strlen(text), &err));
  qs_node *n = NULL;
  char *pkg = NULL;
  CHECK(qs_yaml_load_file(path, &n, &pkg, &err));
  CHECK_STR(pkg, "sub");
  char *d = n ? qs_yaml_dump(n) : NULL;
  CHECK_STR(d, "seed: 0\nrun_name: ${quant_pair.name}-${dataset.size}\n");
  free(d);
  free(pkg);
  qs_node_free(n);
  unlink(path);
  rmdir(dir);
  free(path);
}

int main(void) {
  test_typing_table();
  test_dump_quoting();
  test_dump_layout();
  test_anchors_merges_duplicates();
  test_errors();
  test_package_header();
  test_file_roundtrip();
  return check_summary("test_yaml");
}
