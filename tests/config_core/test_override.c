/* Override grammar: forms, the CLI typing table (hydra-compat §4.2), sweeps,
 * ranges, functions, element texts and every kind of grammar error. Expected
 * values and messages were taken from Hydra 1.3's own parser. */
#include <stdlib.h>

#include "check.h"
#include "config/override.h"
#include "config/pystr.h"
#include "core/strbuf.h"

#define DOCS "\nSee https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details"

/* The parsed value in Python repr form: the type shows (1000 vs 1000.0 vs '1000'). */
static void expect_value(const char *arg, const char *repr, const char *text) {
  qs_override ov;
  qs_error err;
  bool ok = qs_override_parse(arg, &ov, &err);
  CHECK(ok);
  if (!ok) {
    fprintf(stderr, "  %s: %s\n", arg, err.msg);
    return;
  }
  CHECK_INT(ov.sweep, QS_SWEEP_NONE);
  char *r = qs_pyrepr(ov.value);
  CHECK_STR(r, repr);
  if (text) CHECK_STR(ov.value_text, text);
  free(r);
  qs_override_free(&ov);
}

static void expect_key(const char *arg, qs_override_type type, const char *key, const char *package,
                       const char *key_element, bool has_value, bool is_hydra) {
  qs_override ov;
  qs_error err;
  bool ok = qs_override_parse(arg, &ov, &err);
  CHECK(ok);
  if (!ok) return;
  CHECK_INT(ov.type, type);
  CHECK_STR(ov.key, key);
  if (package) CHECK_STR(ov.package, package);
  else CHECK(ov.package == NULL);
  char *el = qs_override_key_element(&ov);
  CHECK_STR(el, key_element);
  free(el);
  CHECK_INT(ov.has_value, has_value);
  CHECK_INT(ov.is_hydra, is_hydra);
  CHECK_STR(ov.input, arg);
  qs_override_free(&ov);
}

/* values: Python repr of the list of elements; texts: the job texts joined by spaces. */
static void expect_sweep(const char *arg, qs_sweep_kind kind, const char *values, const char *texts) {
  qs_override ov;
  qs_error err;
  bool ok = qs_override_parse(arg, &ov, &err);
  CHECK(ok);
  if (!ok) {
    fprintf(stderr, "  %s: %s\n", arg, err.msg);
    return;
  }
  CHECK_INT(ov.sweep, kind);
  qs_node *list = qs_node_list();
  qs_strbuf t = {0};
  qs_sb_append(&t, "");
  for (size_t k = 0; k < ov.n_values; k++) {
    qs_list_append(list, qs_node_copy(ov.values[k]));
    if (k) qs_sb_putc(&t, ' ');
    qs_sb_append(&t, ov.value_texts[k]);
  }
  char *r = qs_pyrepr(list);
  CHECK_STR(r, values);
  if (texts) CHECK_STR(qs_sb_str(&t), texts);
  free(r);
  qs_sb_free(&t);
  qs_node_free(list);
  qs_override_free(&ov);
}

static void expect_error(const char *arg, const char *msg) {
  qs_override ov;
  qs_error err;
  bool ok = qs_override_parse(arg, &ov, &err);
  CHECK(!ok);
  if (ok) {
    fprintf(stderr, "  %s parsed but should not\n", arg);
    qs_override_free(&ov);
    return;
  }
  CHECK_INT(err.status, QS_EXIT_USAGE);
  CHECK_STR(err.msg, msg);
}

static void test_forms(void) {
  expect_key("a.b=1", QS_OV_CHANGE, "a.b", NULL, "a.b", true, false);
  expect_key("+a.b=1", QS_OV_ADD, "a.b", NULL, "+a.b", true, false);
  expect_key("++new.x.y=[1]", QS_OV_FORCE_ADD, "new.x.y", NULL, "++new.x.y", true, false);
  expect_key("~a.b", QS_OV_DEL, "a.b", NULL, "~a.b", false, false);
  expect_key("~a.b=1", QS_OV_DEL, "a.b", NULL, "~a.b", true, false);
  expect_key("a.0.b=1", QS_OV_CHANGE, "a.0.b", NULL, "a.0.b", true, false);
  expect_key("$x-y=1", QS_OV_CHANGE, "$x-y", NULL, "$x-y", true, false);
  expect_key("server/db=mysql", QS_OV_CHANGE, "server/db", NULL, "server/db", true, false);
  expect_key("quant_pair@admin=x", QS_OV_CHANGE, "quant_pair", "admin", "quant_pair@admin", true, false);
  expect_key("a/b@pkg.sub=x", QS_OV_CHANGE, "a/b", "pkg.sub", "a/b@pkg.sub", true, false);
  expect_key("g@=x", QS_OV_CHANGE, "g", "", "g@", true, false);
  expect_key("hydra.run.dir=x", QS_OV_CHANGE, "hydra.run.dir", NULL, "hydra.run.dir", true, true);
  expect_key("hydra/launcher=basic", QS_OV_CHANGE, "hydra/launcher", NULL, "hydra/launcher", true, true);
  expect_key("hydra_x=1", QS_OV_CHANGE, "hydra_x", NULL, "hydra_x", true, false);
  expect_value("seed=", "''", "");
  expect_value("a=   ", "''", "");
  expect_value("+a=", "''", "");
}

/* hydra-compat §4.2, every row of the observed typing table, and more. */
static void test_typing(void) {
  expect_value("t.a=1_000", "1000", "1000");
  expect_value("t.a=1e-3", "0.001", "0.001");
  expect_value("t.a=1e16", "1e+16", "1e+16");
  expect_value("t.a=0.00001", "1e-05", "1e-05");
  expect_value("t.a=TRUE", "True", "True");
  expect_value("t.a=null", "None", "null");
  expect_value("t.a=inf", "inf", "inf");
  expect_value("t.a=NaN", "nan", "nan");
  expect_value("t.a=-.5", "-0.5", "-0.5");
  expect_value("t.a=[a,b]", "['a', 'b']", "[a,b]");
  expect_value("t.a=[1,\"2\",null]", "[1, '2', None]", "[1,\"2\",null]");
  expect_value("t.a=  padded  ", "'padded'", "padded");
  expect_value("t.a=yes", "'yes'", "yes");
  expect_value("t.a=off", "'off'", "off");
  expect_value("t.a=0123", "'0123'", "0123");
  expect_value("t.a=0x1F", "'0x1F'", "0x1F");
  expect_value("t.a=1:30", "'1:30'", "1\\:30");
  expect_value("t.a=1.5.0", "'1.5.0'", "1.5.0");
  expect_value("t.a=2024-01-01", "'2024-01-01'", "2024-01-01");
  expect_value("t.a=hello world", "'hello world'", "hello\\ world");
  expect_value("t.a=\"hello, world\"", "'hello, world'", "\"hello, world\"");
  expect_value("t.a={a:1,b:2}", "{'a': 1, 'b': 2}", "{a:1,b:2}");
  expect_value("t.a=a\\,b", "'a,b'", "a\\,b");
  expect_value("t.a='it\\'s'", "\"it's\"", "'it\\'s'");
  /* more primitives */
  expect_value("a=-1", "-1", "-1");
  expect_value("a=+1", "1", "1");
  expect_value("a=1.", "1.0", "1.0");
  expect_value("a=.5e3", "500.0", "500.0");
  expect_value("a=1e3_0", "1e+30", "1e+30");
  expect_value("a=-Inf", "-inf", "-inf");
  expect_value("a=fAlSe", "False", "False");
  expect_value("a=NULL", "None", "null");
  expect_value("a=nulls", "'nulls'", "nulls");
  expect_value("a=true1", "'true1'", "true1");
  expect_value("a=1_", "'1_'", "1_");
  expect_value("a=inf_x", "'inf_x'", "inf_x");
  expect_value("a=${a.b}", "'${a.b}'", "$\\{a.b\\}"); /* Hydra escapes the braces when writing it back */
  expect_value("a=${oc.env:X,def}", "'${oc.env:X,def}'", "$\\{oc.env\\:X\\,def\\}");
  expect_value("a=x${a}y z", "'x${a}y z'", "x$\\{a\\}y\\ z");
  expect_value("a=???", "'?\?\?'", "???"); /* escaped: a question-mark pair before ' is a trigraph */
  expect_value("a=/path/to/file.txt", "'/path/to/file.txt'", "/path/to/file.txt");
  expect_value("a=a\tb", "'a\\tb'", "a\\\tb");
  expect_value("a=\\\\", "'\\\\'", "\\\\");
  expect_value("a=\\ ", "' '", "\\ ");
  expect_value("a=\\(x\\)", "'(x)'", "\\(x\\)");
  expect_value("a=\"x\\\"y\"", "'x\"y'", "\"x\\\"y\"");
  expect_value("a='x\\\\'", "'x\\\\'", "'x\\\\'");
  expect_value("a=\"\"", "''", "\"\"");
  expect_value("a=[]", "[]", "[]");
  expect_value("a={}", "{}", "{}");
  expect_value("a=[[1,2],[3]]", "[[1, 2], [3]]", "[[1,2],[3]]");
  expect_value("a={a:{b:{c:1}}}", "{'a': {'b': {'c': 1}}}", "{a:{b:{c:1}}}");
  expect_value("a={ a : 1 , b : [x] }", "{'a': 1, 'b': ['x']}", "{a:1,b:[x]}");
  expect_value("a={a b:1}", "{'a b': 1}", "{a\\ b:1}");
  expect_value("a={1:2}", "{'1': 2}", "{1:2}");
  expect_value("a=9223372036854775807", "9223372036854775807", NULL);
}

static void test_sweeps(void) {
  expect_sweep("quant_pair=wfp4_afp16,wfp8_afp8", QS_SWEEP_LIST, "['wfp4_afp16', 'wfp8_afp8']",
               "wfp4_afp16 wfp8_afp8");
  expect_sweep("a=1,null,true,1.5,x", QS_SWEEP_LIST, "[1, None, True, 1.5, 'x']", "1 null True 1.5 x");
  expect_sweep("k=\"a,b\",\"c,d\"", QS_SWEEP_LIST, "['a,b', 'c,d']", "\"a,b\" \"c,d\"");
  expect_sweep("k=[a,b],[c,d]", QS_SWEEP_LIST, "[['a', 'b'], ['c', 'd']]", "[a,b] [c,d]");
  expect_sweep("a=x, y ,z", QS_SWEEP_LIST, "['x', 'y', 'z']", "x y z");
  expect_sweep("a=a\\,b,c", QS_SWEEP_LIST, "['a,b', 'c']", "a\\,b c");
  expect_sweep("a=choice(a,b)", QS_SWEEP_CHOICE, "['a', 'b']", "a b");
  expect_sweep("a=choice(\"a,b\",c)", QS_SWEEP_CHOICE, "['a,b', 'c']", "a\\,b c");
  expect_sweep("seed=range(0,3)", QS_SWEEP_RANGE, "[0, 1, 2]", "0 1 2");
  expect_sweep("a=range(3)", QS_SWEEP_RANGE, "[0, 1, 2]", "0 1 2");
  expect_sweep("a=range(10,0,-3)", QS_SWEEP_RANGE, "[10, 7, 4, 1]", "10 7 4 1");
  expect_sweep("a=range(3,1)", QS_SWEEP_RANGE, "[]", "");
  expect_sweep("a=range(start=1,stop=4)", QS_SWEEP_RANGE, "[1, 2, 3]", "1 2 3");
  expect_sweep("a=sort(3,1,2,reverse=true)", QS_SWEEP_LIST, "[3, 2, 1]", "3 2 1");
  expect_sweep("a=sort(b,a,c)", QS_SWEEP_LIST, "['a', 'b', 'c']", "a b c");
  expect_sweep("a=sort(range(1,4),reverse=true)", QS_SWEEP_RANGE, "[3, 2, 1]", "3 2 1");
  expect_sweep("a=sort(range(5,1,-1))", QS_SWEEP_RANGE, "[2, 3, 4, 5]", "2 3 4 5");
  expect_sweep("a=int(choice(1.5,2.5))", QS_SWEEP_CHOICE, "[1, 2]", "1 2");
  expect_sweep("a=float(range(0,3))", QS_SWEEP_RANGE, "[0.0, 1.0, 2.0]", "0.0 1.0 2.0");
  expect_sweep("a=str(1,2)", QS_SWEEP_LIST, "['1', '2']", "1 2");
  expect_sweep("a=tag(t1,choice(1,2))", QS_SWEEP_CHOICE, "[1, 2]", "1 2");
  expect_sweep("a=interval(1,2)", QS_SWEEP_INTERVAL, "[1.0, 2.0]", NULL);
  /* shuffle keeps the elements (the order is fixed but unspecified) */
  qs_override ov;
  qs_error err;
  CHECK(qs_override_parse("a=shuffle(1,2,3,4)", &ov, &err));
  CHECK_INT(ov.sweep, QS_SWEEP_LIST);
  CHECK_INT(ov.n_values, 4);
  int64_t sum = 0;
  for (size_t k = 0; k < ov.n_values; k++) sum += ov.values[k]->i;
  CHECK_INT(sum, 10);
  qs_override_free(&ov);
  CHECK(qs_override_parse("g=glob([a*,b*],exclude=*afp8)", &ov, &err));
  CHECK_INT(ov.sweep, QS_SWEEP_GLOB);
  CHECK_INT(ov.n_include, 2);
  CHECK_STR(ov.glob_include[1], "b*");
  CHECK_INT(ov.n_exclude, 1);
  CHECK_STR(ov.glob_exclude[0], "*afp8");
  qs_override_free(&ov);
}

/* Hydra's FloatRange: Decimal steps (28 digits) from the binary values. */
static void test_float_ranges(void) {
  expect_sweep("a=range(0,1,0.25)", QS_SWEEP_RANGE, "[0.0, 0.25, 0.5, 0.75]", NULL);
  expect_sweep("a=range(0,10,3.3)", QS_SWEEP_RANGE, "[0.0, 3.3, 6.6, 9.9]", NULL);
  expect_sweep("a=range(0,1,0.1)", QS_SWEEP_RANGE,
               "[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7000000000000001, 0.8, 0.9]",
               "0.0 0.1 0.2 0.3 0.4 0.5 0.6 0.7000000000000001 0.8 0.9");
  expect_sweep("a=range(1,0,-0.1)", QS_SWEEP_RANGE,
               "[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.39999999999999997, 0.3, 0.19999999999999996, 0.09999999999999995]",
               NULL);
  expect_sweep("a=range(0,2.5,0.3)", QS_SWEEP_RANGE, "[0.0, 0.3, 0.6, 0.8999999999999999, 1.2, 1.5, 1.8, 2.1, 2.4]",
               NULL);
  expect_sweep("a=range(0.5,3)", QS_SWEEP_RANGE, "[0.5, 1.5, 2.5]", NULL);
  expect_sweep("a=sort(range(0,1,0.25),reverse=true)", QS_SWEEP_RANGE, "[0.75, 0.5, 0.25, 0.0]", NULL);
}

static void test_element_text(void) {
  qs_node *n = qs_node_str("a,b c");
  char *t = qs_override_element_text(n);
  CHECK_STR(t, "a\\,b\\ c");
  free(t);
  qs_node_free(n);
  n = qs_node_bool(true);
  t = qs_override_element_text(n);
  CHECK_STR(t, "True");
  free(t);
  qs_node_free(n);
  n = qs_node_float(1e-5);
  t = qs_override_element_text(n);
  CHECK_STR(t, "1e-05");
  free(t);
  qs_node_free(n);
  n = qs_node_map();
  qs_map_set(n, "k:x", qs_node_list());
  qs_list_append(qs_map_get(n, "k:x"), qs_node_null());
  qs_list_append(qs_map_get(n, "k:x"), qs_node_int(2));
  t = qs_override_element_text(n);
  CHECK_STR(t, "{k\\:x:[null,2]}");
  free(t);
  qs_node_free(n);
}

static void test_errors(void) {
  /* lexer */
  expect_error("a b=1", "LexerNoViableAltException: a b=1\n                            ^" DOCS);
  expect_error("a=\"x", "LexerNoViableAltException: a=\"x\n                             ^" DOCS);
  expect_error("a=#", "LexerNoViableAltException: a=#\n                             ^" DOCS);
  expect_error("1a=1", "LexerNoViableAltException: 1a=1\n                           ^" DOCS);
  /* mismatched / extraneous / missing / no viable alternative */
  expect_error("+t.ab=a=b", "mismatched input '=' expecting <EOF>" DOCS);
  expect_error("a", "Error parsing override 'a'\nmissing EQUAL at '<EOF>'" DOCS);
  expect_error("a/=1", "Error parsing override 'a/=1'\nmissing ID at '='" DOCS);
  expect_error("a=b)", "Error parsing override 'a=b)'\nextraneous input ')' expecting <EOF>" DOCS);
  expect_error("a=]", "Error parsing override 'a=]'\nextraneous input ']' expecting {<EOF>, ':', BRACKET_OPEN, "
                      "BRACE_OPEN, FLOAT, INT, BOOL, NULL, UNQUOTED_CHAR, ID, ESC, WS, QUOTED_VALUE, INTERPOLATION}" DOCS);
  expect_error("/a=1", "Error parsing override '/a=1'\nextraneous input '/' expecting {EQUAL, '~', '+', '@', "
                       "KEY_SPECIAL, DOT_PATH, ID}" DOCS);
  expect_error("+", "mismatched input '<EOF>' expecting {EQUAL, '+', '@', KEY_SPECIAL, DOT_PATH, ID}" DOCS);
  expect_error("a=[1,]", "no viable alternative at input '[1,]'" DOCS);
  expect_error("a=x(", "no viable alternative at input 'x('" DOCS);
  expect_error("a={a}", "no viable alternative at input '{a}'" DOCS);
  expect_error("~~a", "no viable alternative at input '~'" DOCS);
  expect_error("a=${x", "mismatched input '{' expecting <EOF>" DOCS);
  expect_error("a=b,", "mismatched input '<EOF>' expecting {':', BRACKET_OPEN, BRACE_OPEN, FLOAT, INT, BOOL, NULL, "
                       "UNQUOTED_CHAR, ID, ESC, WS, QUOTED_VALUE, INTERPOLATION}" DOCS);
  expect_error("a=1,[1", "mismatched input '<EOF>' expecting {COMMA, BRACKET_CLOSE}" DOCS);
  expect_error("a=[b],[c,d", "Error parsing override 'a=[b],[c,d'\nextraneous input '<EOF>' expecting {COMMA, "
                             "BRACKET_CLOSE}" DOCS);
  expect_error("a=1,{a}", "mismatched input '}' expecting ':'" DOCS);
  expect_error("a/b.c=1", "mismatched input 'b.c' expecting ID" DOCS);
  expect_error("~a@b~", "Error parsing override '~a@b~'\nextraneous input '~' expecting {<EOF>, EQUAL}" DOCS);
  expect_error("a=http://x.y/z?q=1", "mismatched input '=' expecting <EOF>" DOCS);
  expect_error("a=${oc.env:X,${y}}", "Error parsing override 'a=${oc.env:X,${y}}'\nextraneous input '}' expecting <EOF>" DOCS);
  /* function evaluation */
  expect_error("a=foo(1)", "Error parsing override 'a=foo(1)'\nHydraException while evaluating 'foo(1)': Unknown "
                           "function 'foo'\nAvailable: bool,choice,float,glob,int,interval,range,shuffle,sort,str,tag\n" DOCS);
  expect_error("a=range(1,2,3,4)", "Error parsing override 'a=range(1,2,3,4)'\nTypeError while evaluating "
                                   "'range(1,2,3,4)': too many positional arguments" DOCS);
  expect_error("a=range(foo=1)", "Error parsing override 'a=range(foo=1)'\nTypeError while evaluating "
                                 "'range(foo=1)': missing a required argument: 'start'" DOCS);
  expect_error("a=range(1,start=1)", "Error parsing override 'a=range(1,start=1)'\nTypeError while evaluating "
                                     "'range(1,start=1)': multiple values for argument 'start'" DOCS);
  expect_error("a=choice(a=1)", "Error parsing override 'a=choice(a=1)'\nTypeError while evaluating "
                                "'choice(a=1)': got an unexpected keyword argument 'a'" DOCS);
  expect_error("a=choice()", "Error parsing override 'a=choice()'\nValueError while evaluating 'choice()': empty "
                             "choice is not legal" DOCS);
  expect_error("a=choice(x=1,2)", "Error parsing override 'a=choice(x=1,2)'\npositional argument follows keyword "
                                  "argument" DOCS);
  expect_error("a=range(x)", "Error parsing override 'a=range(x)'\nTypeError while evaluating 'range(x)': mismatch "
                             "type argument start: str is incompatible with Union[int, float]" DOCS);
  expect_error("a=choice(null)", "Error parsing override 'a=choice(null)'\nTypeError while evaluating "
                                 "'choice(null)': mismatch type argument args[0]: NoneType is incompatible with "
                                 "Union[str, int, float, bool, Dict[Any, Any], List[Any], ChoiceSweep]" DOCS);
  expect_error("a=int(x)", "Error parsing override 'a=int(x)'\nValueError while evaluating 'int(x)': invalid "
                           "literal for int() with base 10: 'x'" DOCS);
  expect_error("a=int(inf)", "Error parsing override 'a=int(inf)'\nOverflowError while evaluating 'int(inf)': "
                             "cannot convert float infinity to integer" DOCS);
  expect_error("a=bool(abc)", "Error parsing override 'a=bool(abc)'\nValueError while evaluating 'bool(abc)': "
                              "Cannot cast 'abc' to bool" DOCS);
  expect_error("a=str(range(1,3))", "Error parsing override 'a=str(range(1,3))'\nValueError while evaluating "
                                    "'str(range(1,3))': Range can only be cast to int or float" DOCS);
  expect_error("a=sort(a,1)", "Error parsing override 'a=sort(a,1)'\nTypeError while evaluating 'sort(a,1)': '<' "
                              "not supported between instances of 'int' and 'str'" DOCS);
  expect_error("a=choice(choice(1,2))", "Error parsing override 'a=choice(choice(1,2))'\nValueError while "
                                        "evaluating 'choice(choice(1,2))': nesting choices is not supported" DOCS);
  expect_error("a=int()", "Error parsing override 'a=int()'\nTypeError while evaluating 'int()': No positional args "
                          "or value specified" DOCS);
  /* a grammar error later in the text wins over evaluating an earlier call */
  expect_error("a=bool1(0).0", "Error parsing override 'a=bool1(0).0'\nextraneous input '.0' expecting <EOF>" DOCS);
  /* qsens limits (Hydra accepts these): 64-bit ints, sweeps nested in containers */
  expect_error("a=99999999999999999999", "Error parsing override 'a=99999999999999999999'\ninteger "
                                         "99999999999999999999 does not fit in 64 bits" DOCS);
  expect_error("a=[choice(1,2)]", "Error parsing override 'a=[choice(1,2)]'\nsweeps cannot be nested inside lists, "
                                  "dicts or other sweeps" DOCS);
  expect_error("a=range(0,1,0)", "Error parsing override 'a=range(0,1,0)'\nrange() arg 3 must not be zero" DOCS);
}

int main(void) {
  test_forms();
  test_typing();
  test_sweeps();
  test_float_ranges();
  test_element_text();
  test_errors();
  return check_summary("test_override");
}
