/* Hydra 1.3 override grammar (hydra/grammar/Override{Lexer,Parser}.g4).
 *
 * The lexer mirrors the ANTLR lexer: two modes (key, then value after the
 * first '='), longest match, the first rule wins a tie. The parser is a
 * recursive descent over the token array that reports errors with the texts
 * ANTLR's default error strategy produces for the common cases, and the
 * visitor part builds an intermediate element tree that still knows which
 * strings were quoted (Hydra prints quoted strings back with their quotes).
 * Function calls (casts, choice, range, glob, sort, shuffle, interval, tag)
 * follow hydra/_internal/grammar/grammar_functions.py. */
#define _POSIX_C_SOURCE 200809L
#include "config/override.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/mem.h"
#include "core/pyfmt.h"
#include "core/strbuf.h"

#define SEE_DOCS "See https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details"

/* ------------------------------------------------------------------------ */
/* Tokens: numbered as ANTLR numbers them, because expected-token sets are
 * printed in type order. */

typedef enum tok_type {
  T_EOF = 0,
  T_EQUAL, T_TILDE, T_PLUS, T_AT, T_COLON, T_SLASH, T_KEY_SPECIAL, T_DOT_PATH,
  T_POPEN, T_COMMA, T_PCLOSE, T_BRACKET_OPEN, T_BRACKET_CLOSE, T_BRACE_OPEN,
  T_BRACE_CLOSE, T_FLOAT, T_INT, T_BOOL, T_NULL, T_UNQUOTED_CHAR, T_ID, T_ESC,
  T_WS, T_QUOTED_VALUE, T_INTERPOLATION,
  T_COUNT,
  T_LEXERR = T_COUNT /* where the lexer failed: ends the token array instead of EOF */
} tok_type;

static const char *const TOKEN_NAMES[T_COUNT] = {
  "<EOF>", "EQUAL", "'~'", "'+'", "'@'", "':'", "'/'", "KEY_SPECIAL", "DOT_PATH",
  "POPEN", "COMMA", "PCLOSE", "BRACKET_OPEN", "BRACKET_CLOSE", "BRACE_OPEN",
  "BRACE_CLOSE", "FLOAT", "INT", "BOOL", "NULL", "UNQUOTED_CHAR", "ID", "ESC",
  "WS", "QUOTED_VALUE", "INTERPOLATION",
};

typedef uint32_t tok_set; /* bit per tok_type */
#define BIT(t) ((tok_set)1u << (t))

/* Tokens that can start an element (primitive, list, dict, function). */
#define ELEMENT_START                                                                  \
  (BIT(T_COLON) | BIT(T_BRACKET_OPEN) | BIT(T_BRACE_OPEN) | BIT(T_FLOAT) | BIT(T_INT) | \
   BIT(T_BOOL) | BIT(T_NULL) | BIT(T_UNQUOTED_CHAR) | BIT(T_ID) | BIT(T_ESC) |         \
   BIT(T_WS) | BIT(T_QUOTED_VALUE) | BIT(T_INTERPOLATION))
#define PRIMITIVE_PART                                                                 \
  (BIT(T_ID) | BIT(T_NULL) | BIT(T_INT) | BIT(T_FLOAT) | BIT(T_BOOL) |                 \
   BIT(T_INTERPOLATION) | BIT(T_UNQUOTED_CHAR) | BIT(T_COLON) | BIT(T_ESC) | BIT(T_WS))
#define DICT_KEY_PART (PRIMITIVE_PART & ~(BIT(T_COLON) | BIT(T_INTERPOLATION)))

typedef struct token {
  tok_type type;
  size_t start, len; /* byte span in the argument */
} token;

/* ------------------------------------------------------------------------ */
/* Lexer rules: each returns the length it matches at s (0 = no match). */

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static size_t ws_len(const char *s) { size_t n = 0; while (s[n] == ' ' || s[n] == '\t') n++; return n; }

/* INT_UNSIGNED: '0' | [1-9] ('_'? DIGIT)* */
static size_t m_int_unsigned(const char *s) {
  if (s[0] == '0') return 1;
  if (!is_digit(s[0])) return 0;
  size_t n = 1;
  for (;;) {
    if (is_digit(s[n])) n++;
    else if (s[n] == '_' && is_digit(s[n + 1])) n += 2;
    else return n;
  }
}

/* DIGIT ('_'? DIGIT)* */
static size_t m_digits(const char *s) {
  if (!is_digit(s[0])) return 0;
  size_t n = 1;
  for (;;) {
    if (is_digit(s[n])) n++;
    else if (s[n] == '_' && is_digit(s[n + 1])) n += 2;
    else return n;
  }
}

/* POINT_FLOAT: INT_UNSIGNED '.' | INT_UNSIGNED? '.' DIGITS */
static size_t m_point_float(const char *s) {
  size_t iu = m_int_unsigned(s);
  if (s[iu] != '.') return 0;
  size_t d = m_digits(s + iu + 1);
  if (iu == 0 && d == 0) return 0;
  return iu + 1 + d;
}

/* EXPONENT_FLOAT: (INT_UNSIGNED | POINT_FLOAT) [eE] [+-]? DIGITS */
static size_t m_exponent_float(const char *s) {
  size_t m = m_point_float(s);
  if (!m) m = m_int_unsigned(s);
  if (!m || (s[m] != 'e' && s[m] != 'E')) return 0;
  size_t n = m + 1;
  if (s[n] == '+' || s[n] == '-') n++;
  size_t d = m_digits(s + n);
  return d ? n + d : 0;
}

static size_t m_word_ci(const char *s, const char *word) {
  size_t n = strlen(word);
  return strncasecmp(s, word, n) == 0 ? n : 0;
}

static size_t m_float(const char *s) {
  size_t sign = (s[0] == '+' || s[0] == '-') ? 1 : 0;
  const char *b = s + sign;
  size_t best = m_exponent_float(b);
  size_t pf = m_point_float(b);
  if (pf > best) best = pf;
  if (!best) best = m_word_ci(b, "inf");
  if (!best) best = m_word_ci(b, "nan");
  return best ? sign + best : 0;
}

static size_t m_int(const char *s) {
  size_t sign = (s[0] == '+' || s[0] == '-') ? 1 : 0;
  size_t n = m_int_unsigned(s + sign);
  return n ? sign + n : 0;
}

static size_t m_bool(const char *s) {
  size_t n = m_word_ci(s, "true");
  return n ? n : m_word_ci(s, "false");
}

/* ID: (CHAR|'_') (CHAR|DIGIT|'_'|'-')*; KEY_SPECIAL also allows '$'. */
static size_t m_ident(const char *s, bool dollar) {
  if (!(is_alpha(s[0]) || s[0] == '_' || (dollar && s[0] == '$'))) return 0;
  size_t n = 1;
  while (is_alpha(s[n]) || is_digit(s[n]) || s[n] == '_' || s[n] == '-' || (dollar && s[n] == '$')) n++;
  return n;
}
static size_t m_id(const char *s) { return m_ident(s, false); }
static size_t m_key_special(const char *s) { return m_ident(s, true); }

/* DOT_PATH: (KEY_SPECIAL | INT_UNSIGNED) ('.' (KEY_SPECIAL | INT_UNSIGNED))+ */
static size_t m_dot_segment(const char *s) {
  size_t n = m_key_special(s);
  return n ? n : m_int_unsigned(s);
}
static size_t m_dot_path(const char *s) {
  size_t n = m_dot_segment(s);
  if (!n) return 0;
  size_t dots = 0;
  for (;;) {
    size_t seg = s[n] == '.' ? m_dot_segment(s + n + 1) : 0;
    if (!seg) break;
    n += 1 + seg;
    dots++;
  }
  return dots ? n : 0;
}

/* WS? c WS? with optional blanks on either side. */
static size_t m_punct(const char *s, char c, bool ws_before, bool ws_after) {
  size_t n = ws_before ? ws_len(s) : 0;
  if (s[n] != c) return 0;
  n++;
  return ws_after ? n + ws_len(s + n) : n;
}

static size_t m_unquoted_char(const char *s) { return s[0] && strchr("/-\\+.$%*@?|", s[0]) ? 1 : 0; }

static size_t m_esc(const char *s) {
  size_t n = 0;
  while (s[n] == '\\' && s[n + 1] && strchr("\\()[]{}:=, \t", s[n + 1])) n += 2;
  return n;
}

/* A quoted value ends at the first matching quote preceded by an even
 * number of backslashes (the lexer rule's non-greedy loop). */
static size_t m_quoted(const char *s) {
  char q = s[0];
  if (q != '\'' && q != '"') return 0;
  size_t backslashes = 0;
  for (size_t n = 1; s[n]; n++) {
    if (s[n] == q && backslashes % 2 == 0) return n + 1;
    backslashes = s[n] == '\\' ? backslashes + 1 : 0;
  }
  return 0;
}

/* INTERPOLATION: '${' ~('}')+ '}' (no nesting: the first '}' closes it). */
static size_t m_interpolation(const char *s) {
  if (s[0] != '$' || s[1] != '{' || s[2] == '}' || !s[2]) return 0;
  const char *close = strchr(s + 2, '}');
  return close ? (size_t)(close - s) + 1 : 0;
}

typedef size_t (*lex_rule)(const char *);
typedef struct rule_entry { tok_type type; lex_rule match; } rule_entry;

static size_t m_equal_key(const char *s) { return m_punct(s, '=', false, true); }
static size_t m_tilde(const char *s) { return s[0] == '~'; }
static size_t m_plus(const char *s) { return s[0] == '+'; }
static size_t m_at(const char *s) { return s[0] == '@'; }
static size_t m_colon_key(const char *s) { return s[0] == ':'; }
static size_t m_slash(const char *s) { return s[0] == '/'; }
static size_t m_popen(const char *s) { return m_punct(s, '(', true, true); }
static size_t m_comma(const char *s) { return m_punct(s, ',', true, true); }
static size_t m_pclose(const char *s) { return m_punct(s, ')', true, false); }
static size_t m_bracket_open(const char *s) { return m_punct(s, '[', false, true); }
static size_t m_bracket_close(const char *s) { return m_punct(s, ']', true, false); }
static size_t m_brace_open(const char *s) { return m_punct(s, '{', false, true); }
static size_t m_brace_close(const char *s) { return m_punct(s, '}', true, false); }
static size_t m_colon_value(const char *s) { return m_punct(s, ':', true, true); }
static size_t m_equal_value(const char *s) { return m_punct(s, '=', true, true); }
static size_t m_ws(const char *s) { return ws_len(s); }
static size_t m_null(const char *s) { return m_word_ci(s, "null"); }

static const rule_entry KEY_RULES[] = {
  {T_EQUAL, m_equal_key}, {T_TILDE, m_tilde}, {T_PLUS, m_plus}, {T_AT, m_at},
  {T_COLON, m_colon_key}, {T_SLASH, m_slash}, {T_ID, m_id},
  {T_KEY_SPECIAL, m_key_special}, {T_DOT_PATH, m_dot_path},
};

static const rule_entry VALUE_RULES[] = {
  {T_POPEN, m_popen}, {T_COMMA, m_comma}, {T_PCLOSE, m_pclose},
  {T_BRACKET_OPEN, m_bracket_open}, {T_BRACKET_CLOSE, m_bracket_close},
  {T_BRACE_OPEN, m_brace_open}, {T_BRACE_CLOSE, m_brace_close},
  {T_COLON, m_colon_value}, {T_EQUAL, m_equal_value}, {T_FLOAT, m_float},
  {T_INT, m_int}, {T_BOOL, m_bool}, {T_NULL, m_null},
  {T_UNQUOTED_CHAR, m_unquoted_char}, {T_ID, m_id}, {T_ESC, m_esc}, {T_WS, m_ws},
  {T_QUOTED_VALUE, m_quoted}, {T_INTERPOLATION, m_interpolation},
};

static bool longest_match(const char *s, const rule_entry *rules, size_t n_rules, token *t) {
  size_t best = 0;
  for (size_t r = 0; r < n_rules; r++) {
    size_t len = rules[r].match(s);
    if (len > best) {
      best = len;
      t->type = rules[r].type;
    }
  }
  t->len = best;
  return best > 0;
}

/* Code points before byte offset `at` (ANTLR counts characters, not bytes). */
static size_t char_column(const char *s, size_t at) {
  size_t col = 0;
  for (size_t k = 0; k < at; k++)
    if (((unsigned char)s[k] & 0xC0) != 0x80) col++;
  return col;
}

/* Tokens up to the end, or up to a character no rule matches: ANTLR lexes
 * on demand, so such an error only surfaces if the parser reads that far. */
static token *lex_all(const char *arg, size_t *n_out) {
  token *toks = NULL;
  size_t n = 0, cap = 0, pos = 0;
  bool value_mode = false;
  tok_type end = T_EOF;
  while (arg[pos]) {
    token t = {T_EOF, pos, 0};
    bool ok = value_mode ? longest_match(arg + pos, VALUE_RULES, sizeof VALUE_RULES / sizeof *VALUE_RULES, &t)
                         : longest_match(arg + pos, KEY_RULES, sizeof KEY_RULES / sizeof *KEY_RULES, &t);
    if (!ok) {
      end = T_LEXERR;
      break;
    }
    if (t.type == T_EQUAL) value_mode = true;
    qs_grow((void **)&toks, &cap, n + 1, sizeof *toks);
    toks[n++] = t;
    pos += t.len;
  }
  qs_grow((void **)&toks, &cap, n + 1, sizeof *toks);
  toks[n] = (token){end, pos, 0};
  *n_out = n + 1;
  return toks;
}

static bool fail_lexer(const char *arg, size_t at, qs_error *err) {
  const char *prefix = "LexerNoViableAltException: ";
  return qs_fail(err, QS_EXIT_USAGE, "%s%s\n%*s\n%s", prefix, arg, (int)(strlen(prefix) + char_column(arg, at) + 1),
                 "^", SEE_DOCS);
}

/* ------------------------------------------------------------------------ */
/* Parsed elements: the visitor's output, before conversion to qs_node. */

typedef enum pel_kind {
  P_NULL, P_BOOL, P_INT, P_FLOAT, P_STR, P_QSTR, P_LIST, P_DICT,
  P_CHOICE, P_RANGE, P_GLOB, P_INTERVAL,
} pel_kind;

typedef struct pel pel;
struct pel {
  pel_kind kind;
  bool b;
  int64_t i;
  double f;
  char *s;
  char quote;        /* P_QSTR: the quote character used */
  pel **items;       /* LIST/DICT values, CHOICE elements, RANGE start/stop/step,
                        INTERVAL start/end, GLOB include patterns */
  pel **keys;        /* DICT keys, GLOB exclude patterns */
  size_t n, n_keys;
  bool simple_form;  /* CHOICE written as a,b,c */
  bool shuffle;      /* CHOICE/RANGE to be shuffled when expanded */
};

static pel *pel_new(pel_kind kind) {
  pel *e = qs_calloc(1, sizeof *e);
  e->kind = kind;
  return e;
}

static pel *pel_str(const char *s, size_t len) {
  pel *e = pel_new(P_STR);
  e->s = qs_strndup(s, len);
  return e;
}

static void pel_free(pel *e) {
  if (!e) return;
  for (size_t k = 0; k < e->n; k++) pel_free(e->items[k]);
  for (size_t k = 0; k < e->n_keys; k++) pel_free(e->keys[k]);
  free(e->items);
  free(e->keys);
  free(e->s);
  free(e);
}

static void pel_push(pel ***arr, size_t *n, pel *item) {
  *arr = qs_realloc(*arr, (*n + 1) * sizeof **arr);
  (*arr)[(*n)++] = item;
}

static pel *pel_copy(const pel *e) {
  pel *c = pel_new(e->kind);
  c->b = e->b;
  c->i = e->i;
  c->f = e->f;
  c->s = e->s ? qs_strdup(e->s) : NULL;
  c->quote = e->quote;
  c->simple_form = e->simple_form;
  c->shuffle = e->shuffle;
  for (size_t k = 0; k < e->n; k++) pel_push(&c->items, &c->n, pel_copy(e->items[k]));
  for (size_t k = 0; k < e->n_keys; k++) pel_push(&c->keys, &c->n_keys, pel_copy(e->keys[k]));
  return c;
}

static bool pel_is_sweep(const pel *e) { return e->kind >= P_CHOICE; }
static bool pel_is_str(const pel *e) { return e->kind == P_STR || e->kind == P_QSTR; }
/* Python's isinstance(x, int) is true for bools too. */
static bool pel_is_number(const pel *e) { return e->kind == P_INT || e->kind == P_FLOAT || e->kind == P_BOOL; }

/* The Python type name, for TypeError texts. */
static const char *pel_type_name(const pel *e) {
  switch (e->kind) {
  case P_NULL: return "NoneType";
  case P_BOOL: return "bool";
  case P_INT: return "int";
  case P_FLOAT: return "float";
  case P_STR: return "str";
  case P_QSTR: return "QuotedString";
  case P_LIST: return "list";
  case P_DICT: return "dict";
  case P_CHOICE: return "ChoiceSweep";
  case P_RANGE: return "RangeSweep";
  case P_GLOB: return "Glob";
  case P_INTERVAL: return "IntervalSweep";
  }
  return "?";
}

/* ------------------------------------------------------------------------ */
/* Parser state and ANTLR-style error reports. */

/* Parsing runs twice: a syntax pass that only checks the grammar (Hydra's
 * parser reports every grammar error before its visitor evaluates anything),
 * then an evaluating pass that builds the elements and calls functions. */
typedef struct parser {
  const char *arg;
  token *toks;
  size_t n_toks, pos;
  qs_error *err;
  bool failed;
  bool evaluate;
  bool lexer_error_read; /* the parser looked at the token the lexer failed on */
} parser;

static const token *la(parser *p, size_t k) {
  size_t at = p->pos + k - 1;
  const token *t = &p->toks[at < p->n_toks ? at : p->n_toks - 1];
  if (t->type == T_LEXERR && !p->failed) p->lexer_error_read = true;
  return t;
}
static tok_type la_type(parser *p, size_t k) { return la(p, k)->type; }

/* getTokenErrorDisplay: the text in quotes with \n \r \t escaped. */
static void append_display(qs_strbuf *b, const char *s, size_t len) {
  for (size_t k = 0; k < len; k++) {
    if (s[k] == '\n') qs_sb_append(b, "\\n");
    else if (s[k] == '\r') qs_sb_append(b, "\\r");
    else if (s[k] == '\t') qs_sb_append(b, "\\t");
    else qs_sb_putc(b, s[k]);
  }
}

static void append_token_display(qs_strbuf *b, parser *p, const token *t) {
  qs_sb_putc(b, '\'');
  if (t->type == T_EOF) qs_sb_append(b, "<EOF>");
  else append_display(b, p->arg + t->start, t->len);
  qs_sb_putc(b, '\'');
}

static void append_set(qs_strbuf *b, tok_set set) {
  int count = 0;
  for (int t = 0; t < T_COUNT; t++) count += (set & BIT(t)) != 0;
  if (count != 1) qs_sb_putc(b, '{');
  const char *sep = "";
  for (int t = 0; t < T_COUNT; t++) {
    if (!(set & BIT(t))) continue;
    qs_sb_printf(b, "%s%s", sep, TOKEN_NAMES[t]);
    sep = ", ";
  }
  if (count != 1) qs_sb_putc(b, '}');
}

/* Hydra prefixes "Error parsing override" only when ANTLR reported the error
 * without a RecognitionException (extraneous/missing token). */
static bool fail_msg(parser *p, bool prefixed, const char *msg) {
  if (p->failed) return false;
  p->failed = true;
  if (prefixed)
    return qs_fail(p->err, QS_EXIT_USAGE, "Error parsing override '%s'\n%s\n%s", p->arg, msg, SEE_DOCS);
  return qs_fail(p->err, QS_EXIT_USAGE, "%s\n%s", msg, SEE_DOCS);
}

static bool fail_fmt(parser *p, bool prefixed, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail_fmt(parser *p, bool prefixed, const char *fmt, ...) {
  char msg[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return fail_msg(p, prefixed, msg);
}

/* recoverInline/sync: extraneous token when the one after it fits, else a
 * mismatch (or a missing token when the current one fits after it). */
static bool fail_expecting(parser *p, tok_set expected, tok_set after_expected) {
  qs_strbuf b = {0};
  bool prefixed = true;
  if (expected & BIT(la_type(p, 2))) {
    qs_sb_append(&b, "extraneous input ");
    append_token_display(&b, p, la(p, 1));
    qs_sb_append(&b, " expecting ");
    append_set(&b, expected);
  } else if (after_expected & BIT(la_type(p, 1))) {
    qs_sb_append(&b, "missing ");
    append_set(&b, expected);
    qs_sb_append(&b, " at ");
    append_token_display(&b, p, la(p, 1));
  } else {
    prefixed = false;
    qs_sb_append(&b, "mismatched input ");
    append_token_display(&b, p, la(p, 1));
    qs_sb_append(&b, " expecting ");
    append_set(&b, expected);
  }
  fail_msg(p, prefixed, qs_sb_str(&b));
  qs_sb_free(&b);
  return false;
}

/* A bad token where a container's (COMMA element)* loop decides whether to
 * go on: ANTLR's sync reports a mismatch on entering the loop (after the
 * first item) and an unwanted token on looping back (after later items). */
static bool fail_separator(parser *p, tok_type close, size_t items) {
  tok_set set = BIT(T_COMMA) | BIT(close);
  if (items < 2) return fail_expecting(p, set, 0);
  qs_strbuf b = {0};
  qs_sb_append(&b, "extraneous input ");
  append_token_display(&b, p, la(p, 1));
  qs_sb_append(&b, " expecting ");
  append_set(&b, set);
  fail_msg(p, true, qs_sb_str(&b));
  qs_sb_free(&b);
  return false;
}

static bool fail_no_viable(parser *p, size_t start_tok) {
  /* ANTLR prints the text of the tokens involved, which makes the token
   * stream lex the whole input: a lexer error anywhere wins. */
  if (p->toks[p->n_toks - 1].type == T_LEXERR && !p->failed) {
    p->lexer_error_read = true;
    p->failed = true;
    return false;
  }
  const token *off = la(p, 1);
  size_t from = p->toks[start_tok].start;
  size_t to = off->type == T_EOF ? off->start : off->start + off->len;
  qs_strbuf b = {0};
  qs_sb_append(&b, "no viable alternative at input '");
  append_display(&b, p->arg + from, to - from);
  qs_sb_putc(&b, '\'');
  fail_msg(p, false, qs_sb_str(&b));
  qs_sb_free(&b);
  return false;
}

static bool accept(parser *p, tok_type t) {
  if (la_type(p, 1) != t) return false;
  p->pos++;
  return true;
}

/* ------------------------------------------------------------------------ */
/* Primitives. */

/* Quoted text: a run of backslashes before the quote character is halved
 * and, when odd, escapes the quote (Hydra's _unescape_quoted_string). */
static pel *quoted_value(const char *text, size_t len) {
  char q = text[0];
  qs_strbuf b = {0};
  qs_sb_append(&b, "");
  size_t k = 1, end = len - 1; /* content is text[1..end) and text[end] is the closing quote */
  while (k < end) {
    size_t run = 0;
    while (k + run <= end && text[k + run] == '\\') run++;
    if (run && text[k + run] == q) {
      for (size_t r = 0; r < run / 2; r++) qs_sb_putc(&b, '\\');
      if (run % 2) qs_sb_putc(&b, q);
      k += run + (run % 2 ? 1 : 0);
    } else if (run) {
      qs_sb_append_n(&b, text + k, run);
      k += run;
    } else {
      qs_sb_putc(&b, text[k++]);
    }
  }
  pel *e = pel_new(P_QSTR);
  e->s = qs_sb_take(&b);
  e->quote = q;
  return e;
}

static void unescape_into(qs_strbuf *b, const char *s, size_t len) {
  for (size_t k = 1; k < len; k += 2) qs_sb_putc(b, s[k]);
}

static pel *number_token(parser *p, const token *t) {
  char *clean = qs_malloc(t->len + 1);
  size_t n = 0;
  for (size_t k = 0; k < t->len; k++)
    if (p->arg[t->start + k] != '_') clean[n++] = p->arg[t->start + k];
  clean[n] = '\0';
  pel *e = NULL;
  errno = 0;
  if (t->type == T_INT) {
    long long v = strtoll(clean, NULL, 10);
    if (errno == ERANGE)
      fail_fmt(p, true, "integer %.*s does not fit in 64 bits", (int)t->len, p->arg + t->start);
    else {
      e = pel_new(P_INT);
      e->i = v;
    }
  } else {
    e = pel_new(P_FLOAT);
    e->f = strtod(clean, NULL); /* accepts inf/nan in any case, like float() */
  }
  free(clean);
  return e;
}

/* One token alone is typed by its kind; several are one string, with
 * escapes undone and blank tokens at either end dropped. */
static pel *make_primitive(parser *p, size_t first, size_t last) {
  if (!p->evaluate) return pel_new(P_NULL);
  if (p->toks[first].type == T_WS) {
    if (last - first == 1) {
      fail_msg(p, true, "Trying to parse a primitive that is all whitespaces");
      return NULL;
    }
    first++;
  }
  if (p->toks[last - 1].type == T_WS) last--;
  const token *t = &p->toks[first];
  const char *text = p->arg + t->start;
  if (last - first > 1) {
    qs_strbuf b = {0};
    for (size_t k = first; k < last; k++) {
      const token *tk = &p->toks[k];
      if (tk->type == T_ESC) unescape_into(&b, p->arg + tk->start, tk->len);
      else qs_sb_append_n(&b, p->arg + tk->start, tk->len);
    }
    pel *e = pel_new(P_STR);
    e->s = qs_sb_take(&b);
    return e;
  }
  switch (t->type) {
  case T_QUOTED_VALUE: return quoted_value(text, t->len);
  case T_INT:
  case T_FLOAT: return number_token(p, t);
  case T_NULL: return pel_new(P_NULL);
  case T_BOOL: {
    pel *e = pel_new(P_BOOL);
    e->b = (text[0] == 't' || text[0] == 'T');
    return e;
  }
  case T_ESC: {
    qs_strbuf b = {0};
    unescape_into(&b, text, t->len);
    pel *e = pel_new(P_STR);
    e->s = qs_sb_take(&b);
    return e;
  }
  default: return pel_str(text, t->len);
  }
}

/* ------------------------------------------------------------------------ */
/* Grammar rules. */

static pel *parse_element(parser *p);
static pel *call_function(parser *p, const char *name, pel **args, size_t n_args, char **kw_names,
                          pel **kw_values, size_t n_kw, size_t text_from, size_t text_to);

static pel *parse_primitive(parser *p) {
  size_t first = p->pos;
  if (accept(p, T_QUOTED_VALUE)) return make_primitive(p, first, p->pos);
  while (PRIMITIVE_PART & BIT(la_type(p, 1))) p->pos++;
  return make_primitive(p, first, p->pos);
}

static pel *parse_list(parser *p) {
  p->pos++; /* '[' */
  pel *list = pel_new(P_LIST);
  if (accept(p, T_BRACKET_CLOSE)) return list;
  if (!(ELEMENT_START & BIT(la_type(p, 1)))) {
    pel_free(list);
    fail_expecting(p, ELEMENT_START | BIT(T_BRACKET_CLOSE), 0);
    return NULL;
  }
  for (;;) {
    pel *item = parse_element(p);
    if (!item) break;
    pel_push(&list->items, &list->n, item);
    if (accept(p, T_BRACKET_CLOSE)) return list;
    if (!accept(p, T_COMMA)) {
      fail_separator(p, T_BRACKET_CLOSE, list->n);
      break;
    }
  }
  pel_free(list);
  return NULL;
}

static pel *parse_dict_key(parser *p) {
  size_t first = p->pos;
  while (DICT_KEY_PART & BIT(la_type(p, 1))) p->pos++;
  if (p->pos == first) {
    fail_expecting(p, DICT_KEY_PART, 0);
    return NULL;
  }
  return make_primitive(p, first, p->pos);
}

static pel *parse_dict(parser *p) {
  p->pos++; /* '{' */
  pel *dict = pel_new(P_DICT);
  if (accept(p, T_BRACE_CLOSE)) return dict;
  if (!(DICT_KEY_PART & BIT(la_type(p, 1)))) {
    pel_free(dict);
    fail_expecting(p, DICT_KEY_PART | BIT(T_BRACE_CLOSE), 0);
    return NULL;
  }
  for (;;) {
    pel *key = parse_dict_key(p);
    if (!key) break;
    if (!accept(p, T_COLON)) {
      pel_free(key);
      fail_expecting(p, BIT(T_COLON), ELEMENT_START);
      break;
    }
    pel *val = parse_element(p);
    if (!val) {
      pel_free(key);
      break;
    }
    pel_push(&dict->keys, &dict->n_keys, key);
    pel_push(&dict->items, &dict->n, val);
    if (accept(p, T_BRACE_CLOSE)) return dict;
    if (!accept(p, T_COMMA)) {
      fail_separator(p, T_BRACE_CLOSE, dict->n);
      break;
    }
  }
  pel_free(dict);
  return NULL;
}

typedef struct call_args {
  pel **args;
  size_t n_args;
  char **kw_names;
  pel **kw_values;
  size_t n_kw;
} call_args;

static void call_args_free(call_args *a) {
  for (size_t k = 0; k < a->n_args; k++) pel_free(a->args[k]);
  for (size_t k = 0; k < a->n_kw; k++) {
    free(a->kw_names[k]);
    pel_free(a->kw_values[k]);
  }
  free(a->args);
  free(a->kw_names);
  free(a->kw_values);
}

/* One argument: "name=element" or "element". */
static bool parse_argument(parser *p, call_args *a) {
  /* ANTLR predicts "name=" versus an element from two tokens, in the
   * context of the call: an ID followed by something that can neither
   * continue it nor end the argument has no viable alternative. */
  const tok_set after_id = BIT(T_EQUAL) | BIT(T_POPEN) | BIT(T_COMMA) | BIT(T_PCLOSE) | PRIMITIVE_PART;
  if (la_type(p, 1) == T_ID && !(after_id & BIT(la_type(p, 2)))) {
    size_t start = p->pos++;
    return fail_no_viable(p, start);
  }
  if (la_type(p, 1) == T_ID && la_type(p, 2) == T_EQUAL) {
    const token *name = la(p, 1);
    p->pos += 2;
    pel *v = parse_element(p);
    if (!v) return false;
    a->kw_names = qs_realloc(a->kw_names, (a->n_kw + 1) * sizeof *a->kw_names);
    a->kw_names[a->n_kw] = qs_strndup(p->arg + name->start, name->len);
    pel_push(&a->kw_values, &a->n_kw, v);
    return true;
  }
  /* checked before the argument is evaluated, as Hydra's visitor does */
  if (a->n_kw && p->evaluate) return fail_msg(p, true, "positional argument follows keyword argument");
  pel *v = parse_element(p);
  if (!v) return false;
  pel_push(&a->args, &a->n_args, v);
  return true;
}

static pel *parse_function(parser *p) {
  const token *name_tok = la(p, 1);
  size_t text_from = name_tok->start;
  char *name = qs_strndup(p->arg + name_tok->start, name_tok->len);
  p->pos += 2; /* ID POPEN */
  call_args a = {0};
  bool ok = true;
  if (!accept(p, T_PCLOSE)) {
    if (!(ELEMENT_START & BIT(la_type(p, 1)))) ok = fail_expecting(p, ELEMENT_START | BIT(T_PCLOSE), 0);
    while (ok) {
      if (!(ok = parse_argument(p, &a))) break;
      if (accept(p, T_PCLOSE)) break;
      if (!accept(p, T_COMMA)) {
        ok = fail_separator(p, T_PCLOSE, a.n_args + a.n_kw);
        break;
      }
    }
  }
  pel *res = NULL;
  if (ok && !p->evaluate) {
    res = pel_new(P_NULL);
  } else if (ok) {
    const token *close = &p->toks[p->pos - 1];
    res = call_function(p, name, a.args, a.n_args, a.kw_names, a.kw_values, a.n_kw, text_from,
                        close->start + close->len);
  }
  call_args_free(&a);
  free(name);
  return res;
}

static pel *parse_element(parser *p) {
  if (p->failed) return NULL;
  switch (la_type(p, 1)) {
  case T_BRACKET_OPEN: return parse_list(p);
  case T_BRACE_OPEN: return parse_dict(p);
  case T_ID:
    if (la_type(p, 2) == T_POPEN) return parse_function(p);
    return parse_primitive(p);
  default:
    if ((ELEMENT_START & BIT(la_type(p, 1))) == 0) {
      fail_expecting(p, ELEMENT_START, 0);
      return NULL;
    }
    return parse_primitive(p);
  }
}

/* Errors inside the first element surface during ANTLR's prediction of
 * element-vs-sweep, which reports them as "no viable alternative" over the
 * text read so far. */
static pel *parse_first_element(parser *p) {
  size_t start = p->pos;
  qs_error *saved = p->err;
  qs_error scratch;
  p->err = &scratch;
  pel *e = parse_element(p);
  p->err = saved;
  if (e) return e;
  if (p->evaluate) {
    qs_fail(p->err, scratch.status, "%s", scratch.msg);
    return NULL;
  }
  p->failed = false;
  fail_no_viable(p, start);
  return NULL;
}

static bool sweep_nested_check(parser *p, const pel *e, bool top) {
  if (!p->evaluate) return true;
  if (!top && pel_is_sweep(e)) {
    fail_msg(p, true, "sweeps cannot be nested inside lists, dicts or other sweeps");
    return false;
  }
  bool in_container = e->kind == P_LIST || e->kind == P_DICT || e->kind == P_CHOICE;
  for (size_t k = 0; k < e->n && in_container; k++)
    if (!sweep_nested_check(p, e->items[k], false)) return false;
  return true;
}

/* value: element | element (COMMA element)+ */
static pel *parse_value(parser *p) {
  pel *first = parse_first_element(p);
  if (!first) return NULL;
  if (la_type(p, 1) != T_COMMA) return first;
  pel *sweep = pel_new(P_CHOICE);
  sweep->simple_form = true;
  pel_push(&sweep->items, &sweep->n, first);
  while (accept(p, T_COMMA)) {
    pel *e = parse_element(p);
    if (!e) {
      pel_free(sweep);
      return NULL;
    }
    pel_push(&sweep->items, &sweep->n, e);
  }
  return sweep;
}

/* ------------------------------------------------------------------------ */
/* Functions. */

typedef struct fn_ctx {
  parser *p;
  const char *text; /* the call as written, for messages */
  int text_len;
} fn_ctx;

static pel *fn_fail(fn_ctx *c, const char *exc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static pel *fn_fail(fn_ctx *c, const char *exc, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fail_fmt(c->p, true, "%s while evaluating '%.*s': %s", exc, c->text_len, c->text, msg);
  return NULL;
}

/* A parameter of a registered function: name and the type check Hydra's
 * Functions.eval applies (is_type_matching on the annotation). */
typedef bool (*type_check)(const pel *);
typedef struct param {
  const char *name;
  type_check check;
  const char *type_text; /* the annotation as Hydra prints it */
  bool required;
} param;

static bool any_type(const pel *e) { (void)e; return true; }
static bool is_number(const pel *e) { return pel_is_number(e); }
static bool is_opt_number(const pel *e) { return e->kind == P_NULL || pel_is_number(e); }
static bool is_bool(const pel *e) { return e->kind == P_BOOL; }
static bool is_str_or_list(const pel *e) { return pel_is_str(e) || e->kind == P_LIST; }
static bool is_opt_str_or_list(const pel *e) { return e->kind == P_NULL || is_str_or_list(e); }
static bool is_opt_list(const pel *e) { return e->kind == P_NULL || e->kind == P_LIST; }
static bool is_choice_arg(const pel *e) {
  return !(e->kind == P_NULL || e->kind == P_RANGE || e->kind == P_GLOB || e->kind == P_INTERVAL);
}
static bool is_sort_arg(const pel *e) { return is_choice_arg(e) || e->kind == P_RANGE; }
static bool is_opt_sweep(const pel *e) { return e->kind == P_NULL || e->kind == P_CHOICE || e->kind == P_RANGE; }
static bool is_tag_arg(const pel *e) { return pel_is_str(e) || pel_is_sweep(e); }
static bool is_opt_sweep_any(const pel *e) { return e->kind == P_NULL || pel_is_sweep(e); }

struct bound;
typedef struct signature {
  const char *name;
  param varargs;       /* .name NULL when the function takes no *args */
  param params[4];     /* positional-or-keyword, then keyword-only after varargs */
  size_t n_params;
  pel *(*call)(fn_ctx *, const struct bound *);
} signature;

/* Bound arguments: varargs plus one slot per named parameter. */
typedef struct bound {
  pel **var;
  size_t n_var;
  pel *slot[4];
} bound;

static bool kw_index(char **kw_names, size_t n_kw, const char *name, size_t *at) {
  for (size_t k = 0; k < n_kw; k++)
    if (strcmp(kw_names[k], name) == 0) {
      *at = k;
      return true;
    }
  return false;
}

/* inspect.Signature.bind, in its order of checks, then Hydra's type checks. */
static bool bind_arguments(fn_ctx *c, const signature *sig, pel **args, size_t n_args, char **kw_names,
                           pel **kw_values, size_t n_kw, bound *b) {
  memset(b, 0, sizeof *b);
  bool *used = qs_calloc(n_kw ? n_kw : 1, sizeof *used);
  bool ok = true;
  size_t at;
  if (sig->varargs.name) {
    b->var = args;
    b->n_var = n_args;
  } else {
    for (size_t k = 0; k < n_args && ok; k++) {
      if (k >= sig->n_params) ok = fn_fail(c, "TypeError", "too many positional arguments");
      else if (kw_index(kw_names, n_kw, sig->params[k].name, &at))
        ok = fn_fail(c, "TypeError", "multiple values for argument '%s'", sig->params[k].name);
      else b->slot[k] = args[k];
    }
  }
  for (size_t j = 0; j < sig->n_params && ok; j++) {
    if (b->slot[j]) continue;
    if (kw_index(kw_names, n_kw, sig->params[j].name, &at)) {
      b->slot[j] = kw_values[at];
      used[at] = true;
    } else if (sig->params[j].required) {
      ok = fn_fail(c, "TypeError", "missing a required argument: '%s'", sig->params[j].name);
    }
  }
  for (size_t k = 0; k < n_kw && ok; k++)
    if (!used[k]) ok = fn_fail(c, "TypeError", "got an unexpected keyword argument '%s'", kw_names[k]);
  free(used);
  for (size_t k = 0; k < b->n_var && ok; k++)
    if (!sig->varargs.check(b->var[k]))
      ok = fn_fail(c, "TypeError", "mismatch type argument %s[%zu]: %s is incompatible with %s", sig->varargs.name, k,
                   pel_type_name(b->var[k]), sig->varargs.type_text);
  for (size_t j = 0; j < sig->n_params && ok; j++)
    if (b->slot[j] && !sig->params[j].check(b->slot[j]))
      ok = fn_fail(c, "TypeError", "mismatch type argument %s: %s is incompatible with %s", sig->params[j].name,
                   pel_type_name(b->slot[j]), sig->params[j].type_text);
  return ok;
}

/* --- casts ---------------------------------------------------------------- */

typedef enum cast_kind { CAST_INT, CAST_FLOAT, CAST_STR, CAST_BOOL } cast_kind;

static pel *cast_value(fn_ctx *c, cast_kind kind, const pel *v);

static pel *cast_children(fn_ctx *c, cast_kind kind, const pel *v) {
  pel *out = pel_new(v->kind);
  out->simple_form = v->simple_form;
  for (size_t k = 0; k < v->n; k++) {
    pel *item = cast_value(c, kind, v->items[k]);
    if (!item) {
      pel_free(out);
      return NULL;
    }
    pel_push(&out->items, &out->n, item);
  }
  for (size_t k = 0; k < v->n_keys; k++) pel_push(&out->keys, &out->n_keys, pel_copy(v->keys[k]));
  return out;
}

/* Python's repr() of a str, for the messages of int() and float(). */
static char *py_str_repr(const char *s) {
  char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
  qs_strbuf b = {0};
  qs_sb_putc(&b, q);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '\\' || *c == (unsigned char)q) qs_sb_printf(&b, "\\%c", *c);
    else if (*c == '\n') qs_sb_append(&b, "\\n");
    else if (*c == '\r') qs_sb_append(&b, "\\r");
    else if (*c == '\t') qs_sb_append(&b, "\\t");
    else if (*c < 0x20 || *c == 0x7f) qs_sb_printf(&b, "\\x%02x", *c);
    else qs_sb_putc(&b, (char)*c);
  }
  qs_sb_putc(&b, q);
  return qs_sb_take(&b);
}

/* Python's int(str): optional blanks and sign, digits with single '_'. */
static pel *cast_str_to_int(fn_ctx *c, const char *s) {
  const char *b = s + strspn(s, " \t\n\r\f\v");
  size_t len = strlen(b);
  while (len && strchr(" \t\n\r\f\v", b[len - 1])) len--;
  size_t sign = (len && (b[0] == '+' || b[0] == '-')) ? 1 : 0;
  bool ok = len > sign && is_digit(b[sign]) && is_digit(b[len - 1]);
  char *clean = qs_malloc(len + 1);
  size_t n = 0;
  for (size_t k = 0; k < len && ok; k++) {
    if (b[k] == '_') ok = k > sign && is_digit(b[k - 1]) && is_digit(b[k + 1]);
    else if (k >= sign && !is_digit(b[k])) ok = false;
    else clean[n++] = b[k];
  }
  clean[n] = '\0';
  errno = 0;
  long long v = ok ? strtoll(clean, NULL, 10) : 0;
  free(clean);
  if (!ok) {
    char *r = py_str_repr(s);
    fn_fail(c, "ValueError", "invalid literal for int() with base 10: %s", r);
    free(r);
    return NULL;
  }
  if (errno == ERANGE) return fn_fail(c, "OverflowError", "integer %s does not fit in 64 bits", s);
  pel *e = pel_new(P_INT);
  e->i = v;
  return e;
}

/* Python's float(str): decimal or exponent form with '_' between digits,
 * inf/infinity/nan in any case, optional sign and surrounding blanks. */
static pel *cast_str_to_float(fn_ctx *c, const char *s) {
  const char *b = s + strspn(s, " \t\n\r\f\v");
  size_t len = strlen(b);
  while (len && strchr(" \t\n\r\f\v", b[len - 1])) len--;
  char *body = qs_strndup(b, len);
  const char *u = body + ((body[0] == '+' || body[0] == '-') ? 1 : 0);
  bool special = strcasecmp(u, "inf") == 0 || strcasecmp(u, "infinity") == 0 || strcasecmp(u, "nan") == 0;
  size_t m = special ? strlen(u) : m_float(u);
  if (!special && m == 0) m = m_int_unsigned(u) ? strspn(u, "0123456789_") : 0;
  bool ok = len > 0 && u[m] == '\0' && m > 0;
  char *clean = qs_malloc(len + 1);
  size_t n = 0;
  for (size_t k = 0; k < len; k++)
    if (body[k] != '_') clean[n++] = body[k];
  clean[n] = '\0';
  pel *e = NULL;
  if (ok) {
    e = pel_new(P_FLOAT);
    e->f = strtod(clean, NULL);
  } else {
    char *r = py_str_repr(s);
    fn_fail(c, "ValueError", "could not convert string to float: %s", r);
    free(r);
  }
  free(clean);
  free(body);
  return e;
}

static pel *cast_scalar(fn_ctx *c, cast_kind kind, const pel *v) {
  pel *e;
  char buf[40];
  switch (kind) {
  case CAST_INT:
    if (pel_is_str(v)) return cast_str_to_int(c, v->s);
    if (v->kind == P_FLOAT) {
      if (isnan(v->f)) return fn_fail(c, "ValueError", "cannot convert float NaN to integer");
      if (isinf(v->f)) return fn_fail(c, "OverflowError", "cannot convert float infinity to integer");
      if (fabs(v->f) >= 9.2233720368547758e18) return fn_fail(c, "OverflowError", "%g does not fit in 64 bits", v->f);
    }
    e = pel_new(P_INT);
    e->i = v->kind == P_FLOAT ? (int64_t)v->f : v->kind == P_BOOL ? v->b : v->i;
    return e;
  case CAST_FLOAT:
    if (pel_is_str(v)) return cast_str_to_float(c, v->s);
    e = pel_new(P_FLOAT);
    e->f = v->kind == P_FLOAT ? v->f : v->kind == P_BOOL ? v->b : (double)v->i;
    return e;
  case CAST_STR:
    if (pel_is_str(v)) return pel_str(v->s, strlen(v->s));
    if (v->kind == P_BOOL) return pel_str(v->b ? "true" : "false", v->b ? 4 : 5);
    if (v->kind == P_FLOAT) qs_py_float_repr(v->f, buf, sizeof buf);
    else snprintf(buf, sizeof buf, "%" PRId64, v->i);
    return pel_str(buf, strlen(buf));
  case CAST_BOOL:
    e = pel_new(P_BOOL);
    if (pel_is_str(v)) {
      if (strcasecmp(v->s, "true") != 0 && strcasecmp(v->s, "false") != 0) {
        pel_free(e);
        return fn_fail(c, "ValueError", "Cannot cast '%s' to bool", v->s);
      }
      e->b = strcasecmp(v->s, "true") == 0;
    } else {
      e->b = v->kind == P_FLOAT ? v->f != 0 : v->kind == P_BOOL ? v->b : v->i != 0;
    }
    return e;
  }
  return NULL;
}

static pel *cast_value(fn_ctx *c, cast_kind kind, const pel *v) {
  switch (v->kind) {
  case P_LIST:
  case P_DICT:
  case P_CHOICE: return cast_children(c, kind, v);
  case P_RANGE:
    if (kind != CAST_INT && kind != CAST_FLOAT)
      return fn_fail(c, "ValueError", "Range can only be cast to int or float");
    return cast_children(c, kind, v);
  case P_INTERVAL:
    if (kind == CAST_STR || kind == CAST_BOOL)
      return fn_fail(c, "ValueError", "Intervals cannot be cast to %s", kind == CAST_STR ? "str" : "bool");
    return cast_children(c, kind, v);
  case P_GLOB:
  case P_NULL: return fn_fail(c, "AssertionError", "%s", "");
  default: return cast_scalar(c, kind, v);
  }
}

static pel *simple_choice_of(pel **args, size_t n) {
  pel *ch = pel_new(P_CHOICE);
  ch->simple_form = true;
  for (size_t k = 0; k < n; k++) pel_push(&ch->items, &ch->n, pel_copy(args[k]));
  return ch;
}

static pel *fn_cast(fn_ctx *c, cast_kind kind, const bound *b) {
  const pel *value = b->slot[0];
  if (b->n_var && value) return fn_fail(c, "TypeError", "cannot use both position and named arguments");
  if (!b->n_var && !value) return fn_fail(c, "TypeError", "No positional args or value specified");
  if (value) return cast_value(c, kind, value);
  if (b->n_var == 1) return cast_value(c, kind, b->var[0]);
  pel *choice = simple_choice_of(b->var, b->n_var);
  pel *res = cast_value(c, kind, choice);
  pel_free(choice);
  return res;
}

/* --- sweeps ----------------------------------------------------------------- */

static pel *fn_int(fn_ctx *c, const bound *b) { return fn_cast(c, CAST_INT, b); }
static pel *fn_float(fn_ctx *c, const bound *b) { return fn_cast(c, CAST_FLOAT, b); }
static pel *fn_str(fn_ctx *c, const bound *b) { return fn_cast(c, CAST_STR, b); }
static pel *fn_bool(fn_ctx *c, const bound *b) { return fn_cast(c, CAST_BOOL, b); }

static pel *fn_choice(fn_ctx *c, const bound *b) {
  if (b->n_var == 0) return fn_fail(c, "ValueError", "empty choice is not legal");
  if (b->n_var == 1 && b->var[0]->kind == P_CHOICE) {
    if (!b->var[0]->simple_form) return fn_fail(c, "ValueError", "nesting choices is not supported");
    pel *ch = pel_copy(b->var[0]);
    ch->simple_form = false;
    return ch;
  }
  pel *ch = simple_choice_of(b->var, b->n_var);
  ch->simple_form = false;
  return ch;
}

static pel *fn_range(fn_ctx *c, const bound *b) {
  (void)c;
  pel *r = pel_new(P_RANGE);
  const pel *start = b->slot[0], *stop = b->slot[1], *step = b->slot[2];
  if (!stop || stop->kind == P_NULL) {
    pel *zero = pel_new(P_INT);
    pel_push(&r->items, &r->n, zero);
    pel_push(&r->items, &r->n, pel_copy(start));
  } else {
    pel_push(&r->items, &r->n, pel_copy(start));
    pel_push(&r->items, &r->n, pel_copy(stop));
  }
  if (step) {
    pel_push(&r->items, &r->n, pel_copy(step));
  } else {
    pel *one = pel_new(P_INT);
    one->i = 1;
    pel_push(&r->items, &r->n, one);
  }
  return r;
}

static double pel_as_double(const pel *e) {
  return e->kind == P_FLOAT ? e->f : e->kind == P_BOOL ? (double)e->b : (double)e->i;
}

static pel *float_pel(double v) {
  pel *e = pel_new(P_FLOAT);
  e->f = v;
  return e;
}

static pel *fn_interval(fn_ctx *c, const bound *b) {
  (void)c;
  pel *r = pel_new(P_INTERVAL);
  pel_push(&r->items, &r->n, float_pel(pel_as_double(b->slot[0])));
  pel_push(&r->items, &r->n, float_pel(pel_as_double(b->slot[1])));
  return r;
}

static pel *fn_tag(fn_ctx *c, const bound *b) {
  if (b->slot[0] && b->slot[0]->kind != P_NULL) {
    if (!pel_is_sweep(b->slot[0])) return fn_fail(c, "ValueError", "Last argument to tag() must be a choice(), range() or interval(), got %s", pel_type_name(b->slot[0]));
    return pel_copy(b->slot[0]);
  }
  if (b->n_var < 1) return fn_fail(c, "ValueError", "Not enough arguments to tag, must take at least a sweep");
  const pel *last = b->var[b->n_var - 1];
  if (!pel_is_sweep(last)) return fn_fail(c, "ValueError", "Last argument to tag() must be a choice(), range() or interval(), got NoneType");
  for (size_t k = 0; k + 1 < b->n_var; k++)
    if (!pel_is_str(b->var[k])) return fn_fail(c, "ValueError", "tag arguments type must be string, got %s", pel_type_name(b->var[k]));
  return pel_copy(last);
}

/* Python ordering for sort(): numbers (bools included) among themselves,
 * strings among themselves; anything else raises TypeError. */
static bool py_less(fn_ctx *c, const pel *a, const pel *b, bool *ok) {
  if (pel_is_number(a) && pel_is_number(b)) {
    if (a->kind != P_FLOAT && b->kind != P_FLOAT) {
      int64_t x = a->kind == P_BOOL ? a->b : a->i, y = b->kind == P_BOOL ? b->b : b->i;
      return x < y;
    }
    return pel_as_double(a) < pel_as_double(b);
  }
  if (pel_is_str(a) && pel_is_str(b)) return strcmp(a->s, b->s) < 0;
  const char *ta = pel_is_str(a) ? "str" : pel_type_name(a), *tb = pel_is_str(b) ? "str" : pel_type_name(b);
  fn_fail(c, "TypeError", "'<' not supported between instances of '%s' and '%s'", ta, tb);
  *ok = false;
  return false;
}

static void reverse_items(pel **items, size_t n) {
  for (size_t k = 0; k < n / 2; k++) {
    pel *t = items[k];
    items[k] = items[n - 1 - k];
    items[n - 1 - k] = t;
  }
}

/* CPython's list.sort for short lists: the leading run (reversed when
 * strictly descending), then binary insertion; reverse=True reverses
 * before and after so the sort stays stable. The same comparisons in the
 * same order, so a failing comparison names the same types as Python. */
static bool sort_items(fn_ctx *c, pel **items, size_t n, bool reverse) {
  bool ok = true;
  if (reverse) reverse_items(items, n);
  size_t run = n < 2 ? n : 2;
  if (n >= 2) {
    bool descending = py_less(c, items[1], items[0], &ok);
    while (ok && run < n && py_less(c, items[run], items[run - 1], &ok) == descending) run++;
    if (ok && descending) reverse_items(items, run);
  }
  for (size_t k = run; k < n && ok; k++) {
    pel *pivot = items[k];
    size_t lo = 0, hi = k;
    while (lo < hi && ok) {
      size_t mid = lo + (hi - lo) / 2;
      if (py_less(c, pivot, items[mid], &ok)) hi = mid;
      else lo = mid + 1;
    }
    memmove(items + lo + 1, items + lo, (k - lo) * sizeof *items);
    items[lo] = pivot;
  }
  if (ok && reverse) reverse_items(items, n);
  return ok;
}

/* sort(range): flip the range to run the other way (grammar_functions._sort_sweep). */
static pel *sort_range(const pel *r, bool reverse) {
  pel *out = pel_copy(r);
  double start = pel_as_double(r->items[0]), stop = pel_as_double(r->items[1]);
  bool flip = reverse ? start < stop : start > stop;
  if (!flip) return out;
  bool all_int = r->items[0]->kind != P_FLOAT && r->items[1]->kind != P_FLOAT && r->items[2]->kind != P_FLOAT;
  for (size_t k = 0; k < 3; k++) pel_free(out->items[k]);
  if (all_int) {
    int64_t s0 = r->items[0]->kind == P_BOOL ? r->items[0]->b : r->items[0]->i;
    int64_t s1 = r->items[1]->kind == P_BOOL ? r->items[1]->b : r->items[1]->i;
    int64_t st = r->items[2]->kind == P_BOOL ? r->items[2]->b : r->items[2]->i;
    int64_t a = st < 0 ? -st : st;
    int64_t v[3] = {reverse ? s1 - a : s1 + a, reverse ? s0 - a : s0 + a, -st};
    for (size_t k = 0; k < 3; k++) {
      out->items[k] = pel_new(P_INT);
      out->items[k]->i = v[k];
    }
  } else {
    double st = pel_as_double(r->items[2]), a = fabs(st);
    out->items[0] = float_pel(reverse ? stop - a : stop + a);
    out->items[1] = float_pel(reverse ? start - a : start + a);
    out->items[2] = float_pel(-st);
  }
  return out;
}

static pel *sort_sweep(fn_ctx *c, const pel *sweep, bool reverse) {
  if (sweep->kind == P_RANGE) return sort_range(sweep, reverse);
  pel *out = pel_copy(sweep);
  if (!sort_items(c, out->items, out->n, reverse)) {
    pel_free(out);
    return NULL;
  }
  return out;
}

static pel *fn_sort(fn_ctx *c, const bound *b) {
  bool reverse = b->slot[2] && b->slot[2]->b;
  const pel *list = b->slot[1], *sweep = b->slot[0];
  if (list && list->kind == P_LIST) {
    pel *out = pel_copy(list);
    if (!sort_items(c, out->items, out->n, reverse)) {
      pel_free(out);
      return NULL;
    }
    return out;
  }
  if (sweep && sweep->kind != P_NULL) return sort_sweep(c, sweep, reverse);
  if (b->n_var == 1) {
    const pel *arg = b->var[0];
    if (arg->kind == P_CHOICE || arg->kind == P_RANGE || arg->kind == P_LIST) return sort_sweep(c, arg, reverse);
    return pel_copy(arg);
  }
  for (size_t k = 0; k < b->n_var; k++)
    if (!(pel_is_number(b->var[k]) || pel_is_str(b->var[k])))
      return fn_fail(c, "TypeError", "Invalid arguments: %zu arguments, not all primitive", b->n_var);
  if (b->n_var == 0) return fn_fail(c, "ValueError", "empty sort input");
  pel *choice = simple_choice_of(b->var, b->n_var);
  pel *res = sort_sweep(c, choice, reverse);
  pel_free(choice);
  return res;
}

/* Deterministic shuffle (Hydra uses Python's unseeded random.shuffle, so
 * any order is valid; a fixed xorshift seed keeps runs reproducible). */
static void shuffle_items(pel **items, size_t n) {
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (size_t k = n; k > 1; k--) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    size_t j = (size_t)(state % k);
    pel *t = items[k - 1];
    items[k - 1] = items[j];
    items[j] = t;
  }
}

static pel *fn_shuffle(fn_ctx *c, const bound *b) {
  (void)c;
  const pel *list = b->slot[1], *sweep = b->slot[0];
  const pel *arg = list && list->kind != P_NULL ? list : sweep && sweep->kind != P_NULL ? sweep : NULL;
  if (!arg && b->n_var == 1) arg = b->var[0];
  if (arg) {
    if (arg->kind == P_CHOICE || arg->kind == P_RANGE) {
      pel *out = pel_copy(arg);
      out->shuffle = true;
      return out;
    }
    if (arg->kind == P_LIST) {
      pel *out = pel_copy(arg);
      shuffle_items(out->items, out->n);
      return out;
    }
    pel *out = pel_new(P_LIST);
    pel_push(&out->items, &out->n, pel_copy(arg));
    return out;
  }
  pel *ch = simple_choice_of(b->var, b->n_var);
  ch->shuffle = true;
  return ch;
}

static void glob_patterns(const pel *arg, pel ***out, size_t *n) {
  if (!arg || arg->kind == P_NULL) return;
  if (arg->kind == P_LIST) {
    for (size_t k = 0; k < arg->n; k++) pel_push(out, n, pel_copy(arg->items[k]));
  } else {
    pel_push(out, n, pel_copy(arg));
  }
}

static pel *fn_glob(fn_ctx *c, const bound *b) {
  pel *g = pel_new(P_GLOB);
  glob_patterns(b->slot[0], &g->items, &g->n);
  glob_patterns(b->slot[1], &g->keys, &g->n_keys);
  for (size_t k = 0; k < g->n; k++)
    if (!pel_is_str(g->items[k])) {
      pel_free(g);
      return fn_fail(c, "TypeError", "glob patterns must be strings");
    }
  for (size_t k = 0; k < g->n_keys; k++)
    if (!pel_is_str(g->keys[k])) {
      pel_free(g);
      return fn_fail(c, "TypeError", "glob patterns must be strings");
    }
  return g;
}

#define CAST_TYPE "Union[str, int, float, bool, List[Any], Dict[str, Any], QuotedString, NoneType, Sweep]"
#define SORT_ARG_TYPE "Union[str, int, bool, float, list, dict, ChoiceSweep, RangeSweep]"

/* Hydra's registered functions, sorted by name (the order its error lists them in). */
static const signature SIGNATURES[] = {
  {"bool", {"args", any_type, CAST_TYPE, false}, {{"value", any_type, CAST_TYPE, false}}, 1, fn_bool},
  {"choice", {"args", is_choice_arg, "Union[str, int, float, bool, Dict[Any, Any], List[Any], ChoiceSweep]", false},
   {{0}}, 0, fn_choice},
  {"float", {"args", any_type, CAST_TYPE, false}, {{"value", any_type, CAST_TYPE, false}}, 1, fn_float},
  {"glob", {0}, {{"include", is_str_or_list, "Union[List[str], str]", true},
                 {"exclude", is_opt_str_or_list, "Optional[Union[str, List[str]]]", false}}, 2, fn_glob},
  {"int", {"args", any_type, CAST_TYPE, false}, {{"value", any_type, CAST_TYPE, false}}, 1, fn_int},
  {"interval", {0}, {{"start", is_number, "Union[int, float]", true}, {"end", is_number, "Union[int, float]", true}},
   2, fn_interval},
  {"range", {0}, {{"start", is_number, "Union[int, float]", true},
                  {"stop", is_opt_number, "Optional[Union[int, float]]", false},
                  {"step", is_number, "Union[int, float]", false}}, 3, fn_range},
  {"shuffle", {"args", is_sort_arg, SORT_ARG_TYPE, false},
   {{"sweep", is_opt_sweep, "Optional[Union[ChoiceSweep, RangeSweep]]", false},
    {"list", is_opt_list, "Optional[List[Any]]", false}}, 2, fn_shuffle},
  {"sort", {"args", is_sort_arg, SORT_ARG_TYPE, false},
   {{"sweep", is_opt_sweep, "Optional[Union[ChoiceSweep, RangeSweep]]", false},
    {"list", is_opt_list, "Optional[List[Any]]", false},
    {"reverse", is_bool, "bool", false}}, 3, fn_sort},
  {"str", {"args", any_type, CAST_TYPE, false}, {{"value", any_type, CAST_TYPE, false}}, 1, fn_str},
  {"tag", {"args", is_tag_arg, "Union[str, Sweep]", false}, {{"sweep", is_opt_sweep_any, "Optional[Sweep]", false}},
   1, fn_tag},
};
#define N_SIGNATURES (sizeof SIGNATURES / sizeof *SIGNATURES)

/* Function arguments are unquoted before the call (Functions.eval). */
static void unquote_args(pel **args, size_t n) {
  for (size_t k = 0; k < n; k++)
    if (args[k]->kind == P_QSTR) args[k]->kind = P_STR;
}

static pel *call_function(parser *p, const char *name, pel **args, size_t n_args, char **kw_names,
                          pel **kw_values, size_t n_kw, size_t text_from, size_t text_to) {
  fn_ctx c = {p, p->arg + text_from, (int)(text_to - text_from)};
  const signature *sig = NULL;
  for (size_t k = 0; k < N_SIGNATURES; k++)
    if (strcmp(SIGNATURES[k].name, name) == 0) sig = &SIGNATURES[k];
  if (!sig) {
    qs_strbuf names = {0};
    for (size_t k = 0; k < N_SIGNATURES; k++) qs_sb_printf(&names, "%s%s", k ? "," : "", SIGNATURES[k].name);
    fn_fail(&c, "HydraException", "Unknown function '%s'\nAvailable: %s\n", name, qs_sb_str(&names));
    qs_sb_free(&names);
    return NULL;
  }
  unquote_args(args, n_args);
  unquote_args(kw_values, n_kw);
  bound b;
  if (!bind_arguments(&c, sig, args, n_args, kw_names, kw_values, n_kw, &b)) return NULL;
  return sig->call(&c, &b);
}

/* ------------------------------------------------------------------------ */
/* Key: [+|++|~] (package | ID (/ ID)+) (@ package)? */

#define PACKAGE_TOKENS (BIT(T_ID) | BIT(T_KEY_SPECIAL) | BIT(T_DOT_PATH))

static bool parse_key(parser *p, qs_override *out) {
  size_t from = la(p, 1)->start;
  /* what may follow the key in this override: "~key" may end there */
  tok_set after_key = BIT(T_EQUAL) | (out->type == QS_OV_DEL ? BIT(T_EOF) : 0);
  if (la_type(p, 1) == T_ID && la_type(p, 2) == T_SLASH) {
    p->pos++;
    while (accept(p, T_SLASH))
      if (!accept(p, T_ID)) return fail_expecting(p, BIT(T_ID), BIT(T_SLASH) | BIT(T_AT) | after_key);
  } else if (PACKAGE_TOKENS & BIT(la_type(p, 1))) {
    p->pos++;
  }
  size_t to = p->pos ? p->toks[p->pos - 1].start + p->toks[p->pos - 1].len : 0;
  if (to < from) to = from;
  out->key = qs_strndup(p->arg + from, to - from);
  if (accept(p, T_AT)) {
    if (!((PACKAGE_TOKENS | BIT(T_AT) | BIT(T_EQUAL) | BIT(T_EOF)) & BIT(la_type(p, 1)))) return fail_no_viable(p, p->pos);
    const token *t = la(p, 1);
    if (PACKAGE_TOKENS & BIT(t->type)) {
      p->pos++;
      out->package = qs_strndup(p->arg + t->start, t->len);
    } else {
      out->package = qs_strdup("");
    }
  }
  return true;
}

static bool parse_prefix_and_key(parser *p, qs_override *out) {
  out->type = QS_OV_CHANGE;
  const tok_set start = PACKAGE_TOKENS | BIT(T_EQUAL) | BIT(T_TILDE) | BIT(T_PLUS) | BIT(T_AT);
  if (!(start & BIT(la_type(p, 1)))) return fail_expecting(p, start, 0);
  if (accept(p, T_TILDE)) {
    out->type = QS_OV_DEL;
  } else if (accept(p, T_PLUS)) {
    out->type = accept(p, T_PLUS) ? QS_OV_FORCE_ADD : QS_OV_ADD;
    if (out->type == QS_OV_ADD && !((PACKAGE_TOKENS | BIT(T_AT) | BIT(T_EQUAL) | BIT(T_PLUS)) & BIT(la_type(p, 1))))
      return fail_expecting(p, BIT(T_EQUAL) | BIT(T_PLUS) | BIT(T_AT) | BIT(T_KEY_SPECIAL) | BIT(T_DOT_PATH) | BIT(T_ID), 0);
  }
  if (!((PACKAGE_TOKENS | BIT(T_AT) | BIT(T_EQUAL) | BIT(T_EOF)) & BIT(la_type(p, 1)))) {
    size_t at = p->pos;
    return fail_no_viable(p, at);
  }
  return parse_key(p, out);
}

/* ------------------------------------------------------------------------ */
/* Expansion of a parsed value into qs_override fields. */

static qs_node *pel_to_node(const pel *e);

static char *dict_key_text(const pel *k) {
  char buf[40];
  switch (k->kind) {
  case P_NULL: return qs_strdup("null");
  case P_BOOL: return qs_strdup(k->b ? "true" : "false");
  case P_INT: snprintf(buf, sizeof buf, "%" PRId64, k->i); return qs_strdup(buf);
  case P_FLOAT: return qs_strdup(qs_py_float_repr(k->f, buf, sizeof buf));
  default: return qs_strdup(k->s ? k->s : "");
  }
}

static qs_node *pel_to_node(const pel *e) {
  switch (e->kind) {
  case P_NULL: return qs_node_null();
  case P_BOOL: return qs_node_bool(e->b);
  case P_INT: return qs_node_int(e->i);
  case P_FLOAT: return qs_node_float(e->f);
  case P_STR:
  case P_QSTR: return qs_node_str(e->s);
  case P_LIST: {
    qs_node *l = qs_node_list();
    for (size_t k = 0; k < e->n; k++) qs_list_append(l, pel_to_node(e->items[k]));
    return l;
  }
  case P_DICT: {
    qs_node *m = qs_node_map();
    for (size_t k = 0; k < e->n; k++) {
      char *key = dict_key_text(e->keys[k]);
      qs_map_set(m, key, pel_to_node(e->items[k]));
      free(key);
    }
    return m;
  }
  default: return qs_node_null(); /* sweeps never reach a node (checked at parse) */
  }
}

/* escape_special_characters(): a backslash before \ ( ) [ ] { } : = , space tab. */
static void append_escaped(qs_strbuf *b, const char *s) {
  for (; *s; s++) {
    if (strchr("\\()[]{}:=, \t", *s)) qs_sb_putc(b, '\\');
    qs_sb_putc(b, *s);
  }
}

/* QuotedString.with_quotes(): the quote escaped, and backslashes doubled
 * where they precede a quote or the end (so the text reparses the same). */
static void append_with_quotes(qs_strbuf *b, const char *s, char q) {
  qs_sb_putc(b, q);
  size_t n = strlen(s);
  for (size_t k = 0; k < n;) {
    size_t run = 0;
    while (s[k + run] == '\\') run++;
    if (run) {
      bool before_quote = k + run == n || s[k + run] == q;
      for (size_t r = 0; r < (before_quote ? 2 * run : run); r++) qs_sb_putc(b, '\\');
      k += run;
      continue;
    }
    if (s[k] == q) qs_sb_putc(b, '\\');
    qs_sb_putc(b, s[k++]);
  }
  qs_sb_putc(b, q);
}

static void append_number_text(qs_strbuf *b, const qs_node *n) {
  char buf[40];
  if (n->kind == QS_FLOAT) qs_sb_append(b, qs_py_float_repr(n->f, buf, sizeof buf));
  else if (n->kind == QS_INT) qs_sb_printf(b, "%" PRId64, n->i);
  else qs_sb_append(b, n->b ? "True" : "False"); /* Python str(bool) */
}

/* Prints key k (key) or item k of a container into b. */
typedef void (*text_child)(qs_strbuf *b, const void *container, size_t k, bool key);

/* "[i0,i1,…]", or with dict "{k0:i0,k1:i1,…}", as Hydra writes a list or
 * dict element: no spaces. */
static void append_container_text(qs_strbuf *b, bool dict, size_t n, text_child child, const void *container) {
  qs_sb_putc(b, dict ? '{' : '[');
  for (size_t k = 0; k < n; k++) {
    if (k) qs_sb_putc(b, ',');
    if (dict) {
      child(b, container, k, true);
      qs_sb_putc(b, ':');
    }
    child(b, container, k, false);
  }
  qs_sb_putc(b, dict ? '}' : ']');
}

static void append_pel_text(qs_strbuf *b, const pel *e);

static void pel_child_text(qs_strbuf *b, const void *container, size_t k, bool key) {
  const pel *e = container;
  append_pel_text(b, key ? e->keys[k] : e->items[k]);
}

/* Override._get_value_element_as_str over the parsed element. */
static void append_pel_text(qs_strbuf *b, const pel *e) {
  switch (e->kind) {
  case P_QSTR: append_with_quotes(b, e->s, e->quote); return;
  case P_LIST:
  case P_DICT: append_container_text(b, e->kind == P_DICT, e->n, pel_child_text, e); return;
  default: {
    qs_node *n = pel_to_node(e);
    char *t = qs_override_element_text(n);
    qs_sb_append(b, t);
    free(t);
    qs_node_free(n);
  }
  }
}

static char *pel_text(const pel *e) {
  qs_strbuf b = {0};
  append_pel_text(&b, e);
  return qs_sb_take(&b);
}

static void add_value(qs_override *out, pel *e) {
  size_t n = out->n_values;
  if ((n & (n - 1)) == 0) { /* capacity doubles at powers of two: long ranges stay linear */
    size_t cap = n ? 2 * n : 1;
    out->values = qs_realloc(out->values, cap * sizeof *out->values);
    out->value_texts = qs_realloc(out->value_texts, cap * sizeof *out->value_texts);
  }
  out->values[out->n_values] = pel_to_node(e);
  out->value_texts[out->n_values] = pel_text(e);
  out->n_values++;
  pel_free(e);
}

/* Python's decimal.Decimal under the default context (28 significant digits,
 * round half even): Hydra's FloatRange starts from the exact binary values of
 * start, stop and step and adds the step in this arithmetic, so plain double
 * (or __float128) accumulation does not give the same elements. */
typedef struct decnum {
  bool neg;
  char *digits; /* coefficient in decimal, no leading zeros ("0" for zero) */
  long exp;     /* value = digits * 10^exp */
} decnum;

#define DEC_PRECISION 28
#define RANGE_MAX_VALUES 100000

static decnum dec_from_double(double v) {
  char buf[1200]; /* glibc prints the exact expansion; a double has <= 767 significant digits */
  snprintf(buf, sizeof buf, "%.1100e", fabs(v));
  char *e = strchr(buf, 'e');
  long exp10 = strtol(e + 1, NULL, 10);
  decnum d = {signbit(v) != 0, qs_malloc((size_t)(e - buf) + 1), 0};
  size_t n = 0;
  for (const char *c = buf; c < e; c++)
    if (*c != '.') d.digits[n++] = *c;
  while (n > 1 && d.digits[n - 1] == '0') n--;
  d.digits[n] = '\0';
  d.exp = exp10 - (long)(n - 1);
  if (strcmp(d.digits, "0") == 0) d.exp = 0;
  return d;
}

/* |a| vs |b| for coefficients already aligned to the same exponent. */
static int cmp_magnitude(const char *a, const char *b) {
  size_t la_ = strlen(a), lb = strlen(b);
  if (la_ != lb) return la_ < lb ? -1 : 1;
  int c = strcmp(a, b);
  return (c > 0) - (c < 0);
}

/* The coefficient scaled to `exp` (zero stays "0": coefficients never carry
 * leading zeros, so magnitudes compare by length first). */
static char *aligned_digits(const decnum *d, long exp) {
  size_t n = strlen(d->digits), pad = strcmp(d->digits, "0") == 0 ? 0 : (size_t)(d->exp - exp);
  char *s = qs_malloc(n + pad + 1);
  memcpy(s, d->digits, n);
  memset(s + n, '0', pad);
  s[n + pad] = '\0';
  return s;
}

static char *strip_leading_zeros(char *s) {
  size_t z = 0;
  while (s[z] == '0' && s[z + 1]) z++;
  memmove(s, s + z, strlen(s + z) + 1);
  return s;
}

/* Exact a + b (sign from b_neg, so a - b is dec_add(a, b, !b.neg)). */
static decnum dec_add(const decnum *a, const decnum *b, bool b_neg) {
  long exp = a->exp < b->exp ? a->exp : b->exp;
  char *x = aligned_digits(a, exp), *y = aligned_digits(b, exp);
  bool x_neg = a->neg;
  if (a->neg != b_neg && cmp_magnitude(x, y) < 0) { /* subtract the smaller magnitude */
    char *t = x; x = y; y = t;
    x_neg = b_neg;
  }
  size_t nx = strlen(x), ny = strlen(y), n = (nx > ny ? nx : ny) + 1;
  char *r = qs_malloc(n + 1);
  r[n] = '\0';
  int carry = 0;
  for (size_t k = 0; k < n; k++) {
    int dx = k < nx ? x[nx - 1 - k] - '0' : 0, dy = k < ny ? y[ny - 1 - k] - '0' : 0;
    int v = a->neg == b_neg ? dx + dy + carry : dx - dy + carry;
    carry = v < 0 ? -1 : v / 10;
    r[n - 1 - k] = (char)('0' + (v + 10) % 10);
  }
  free(x);
  free(y);
  strip_leading_zeros(r);
  decnum d = {x_neg && strcmp(r, "0") != 0, r, exp};
  return d;
}

/* Rounds to DEC_PRECISION significant digits, half to even. */
static void dec_round(decnum *d) {
  size_t n = strlen(d->digits);
  if (n <= DEC_PRECISION) return;
  size_t drop = n - DEC_PRECISION;
  char first = d->digits[DEC_PRECISION];
  bool rest_nonzero = strspn(d->digits + DEC_PRECISION + 1, "0") != drop - 1;
  bool odd = (d->digits[DEC_PRECISION - 1] - '0') % 2 == 1;
  bool up = first > '5' || (first == '5' && (rest_nonzero || odd));
  d->digits[DEC_PRECISION] = '\0';
  d->exp += (long)drop;
  if (!up) return;
  long k = DEC_PRECISION - 1;
  while (k >= 0 && d->digits[k] == '9') d->digits[k--] = '0';
  if (k >= 0) {
    d->digits[k]++;
  } else { /* 99..9 rounded up to 10^28: keep 28 digits */
    d->digits[0] = '1';
    d->exp++;
  }
}

static int dec_sign(const decnum *d) { return strcmp(d->digits, "0") == 0 ? 0 : d->neg ? -1 : 1; }

static int dec_cmp(const decnum *a, const decnum *b) {
  decnum diff = dec_add(a, b, !b->neg);
  int s = dec_sign(&diff);
  free(diff.digits);
  return s;
}

/* float(Decimal): the correctly rounded double (glibc's strtod is exact). */
static double dec_to_double(const decnum *d) {
  size_t n = strlen(d->digits);
  char *text = qs_malloc(n + 32);
  snprintf(text, n + 32, "%s%se%ld", d->neg ? "-" : "", d->digits, d->exp);
  double v = strtod(text, NULL);
  free(text);
  return v;
}

static bool expand_float_range(parser *p, double start, double stop, double step, qs_override *out) {
  char b1[40], b2[40], b3[40];
  if (step == 0 || !isfinite(start) || !isfinite(stop) || !isfinite(step))
    return fail_fmt(p, true, "Invalid range values (start:%s, stop:%s, step:%s)", qs_py_float_repr(start, b1, sizeof b1),
                    qs_py_float_repr(stop, b2, sizeof b2), qs_py_float_repr(step, b3, sizeof b3));
  decnum cur = dec_from_double(start), end = dec_from_double(stop), inc = dec_from_double(step);
  bool ok = true;
  while (ok && dec_cmp(&cur, &end) == (step > 0 ? -1 : 1)) {
    if (out->n_values == RANGE_MAX_VALUES) {
      ok = fail_fmt(p, true, "range() yields more than %d values", RANGE_MAX_VALUES);
      break;
    }
    add_value(out, float_pel(dec_to_double(&cur)));
    decnum next = dec_add(&cur, &inc, inc.neg);
    dec_round(&next);
    free(cur.digits);
    cur = next;
  }
  free(cur.digits);
  free(end.digits);
  free(inc.digits);
  return ok;
}

static int64_t pel_as_int(const pel *e) { return e->kind == P_BOOL ? e->b : e->i; }

/* Python range() over ints, or Hydra's FloatRange when any bound is a float. */
static bool expand_range(parser *p, const pel *r, qs_override *out) {
  const pel *a = r->items[0], *z = r->items[1], *s = r->items[2];
  if (a->kind == P_FLOAT || z->kind == P_FLOAT || s->kind == P_FLOAT)
    return expand_float_range(p, pel_as_double(a), pel_as_double(z), pel_as_double(s), out);
  int64_t start = pel_as_int(a), stop = pel_as_int(z), step = pel_as_int(s);
  if (step == 0) return fail_msg(p, true, "range() arg 3 must not be zero");
  for (int64_t v = start; step > 0 ? v < stop : v > stop; v += step) {
    if (out->n_values == RANGE_MAX_VALUES) return fail_fmt(p, true, "range() yields more than %d values", RANGE_MAX_VALUES);
    pel *e = pel_new(P_INT);
    e->i = v;
    add_value(out, e);
    if ((step > 0 && v > INT64_MAX - step) || (step < 0 && v < INT64_MIN - step)) break;
  }
  return true;
}

static void copy_patterns(pel **src, size_t n, char ***dst, size_t *n_dst) {
  *dst = qs_calloc(n ? n : 1, sizeof **dst);
  for (size_t k = 0; k < n; k++) (*dst)[k] = qs_strdup(src[k]->s);
  *n_dst = n;
}

static bool expand_value(parser *p, pel *v, qs_override *out) {
  switch (v->kind) {
  case P_CHOICE: {
    out->sweep = v->simple_form ? QS_SWEEP_LIST : QS_SWEEP_CHOICE;
    pel **items = qs_calloc(v->n ? v->n : 1, sizeof *items);
    for (size_t k = 0; k < v->n; k++) items[k] = pel_copy(v->items[k]);
    if (v->shuffle) shuffle_items(items, v->n);
    for (size_t k = 0; k < v->n; k++) add_value(out, items[k]);
    free(items);
    return true;
  }
  case P_RANGE: {
    out->sweep = QS_SWEEP_RANGE;
    if (!expand_range(p, v, out)) return false;
    if (v->shuffle) {
      /* shuffle the expanded elements and their texts together */
      pel **order = qs_calloc(out->n_values ? out->n_values : 1, sizeof *order);
      for (size_t k = 0; k < out->n_values; k++) {
        order[k] = pel_new(P_INT);
        order[k]->i = (int64_t)k;
      }
      shuffle_items(order, out->n_values);
      qs_node **vals = qs_calloc(out->n_values ? out->n_values : 1, sizeof *vals);
      char **texts = qs_calloc(out->n_values ? out->n_values : 1, sizeof *texts);
      for (size_t k = 0; k < out->n_values; k++) {
        vals[k] = out->values[order[k]->i];
        texts[k] = out->value_texts[order[k]->i];
        pel_free(order[k]);
      }
      memcpy(out->values, vals, out->n_values * sizeof *vals);
      memcpy(out->value_texts, texts, out->n_values * sizeof *texts);
      free(vals);
      free(texts);
      free(order);
    }
    return true;
  }
  case P_GLOB:
    out->sweep = QS_SWEEP_GLOB;
    copy_patterns(v->items, v->n, &out->glob_include, &out->n_include);
    copy_patterns(v->keys, v->n_keys, &out->glob_exclude, &out->n_exclude);
    return true;
  case P_INTERVAL:
    out->sweep = QS_SWEEP_INTERVAL;
    add_value(out, pel_copy(v->items[0]));
    add_value(out, pel_copy(v->items[1]));
    return true;
  default:
    out->sweep = QS_SWEEP_NONE;
    out->value = pel_to_node(v);
    out->value_text = pel_text(v);
    return true;
  }
}

/* ------------------------------------------------------------------------ */
/* Public API. */

static bool starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static bool parse_override_tokens(parser *p, qs_override *out) {
  if (!parse_prefix_and_key(p, out)) return false;
  if (out->type == QS_OV_DEL && la_type(p, 1) == T_EOF) return true;
  if (out->type == QS_OV_DEL && la_type(p, 1) != T_EQUAL) return fail_expecting(p, BIT(T_EQUAL) | BIT(T_EOF), 0);
  if (!accept(p, T_EQUAL)) return fail_expecting(p, BIT(T_EQUAL), BIT(T_EOF) | ELEMENT_START);
  out->has_value = true;
  if (la_type(p, 1) == T_EOF) {
    out->sweep = QS_SWEEP_NONE;
    out->value = qs_node_str("");
    out->value_text = qs_strdup("");
    return true;
  }
  if (!(ELEMENT_START & BIT(la_type(p, 1)))) return fail_expecting(p, BIT(T_EOF) | ELEMENT_START, 0);
  pel *v = parse_value(p);
  if (!v) return false;
  bool ok = sweep_nested_check(p, v, true);
  if (ok && la_type(p, 1) != T_EOF) ok = fail_expecting(p, BIT(T_EOF), 0);
  if (ok && p->evaluate) ok = expand_value(p, v, out);
  pel_free(v);
  return ok;
}

/* The grammar alone: on failure err holds ANTLR's message, or the lexer's
 * when the parser read up to the character the lexer could not match. */
static bool check_syntax(const char *arg, token *toks, size_t n_toks, qs_error *err) {
  parser p = {.arg = arg, .toks = toks, .n_toks = n_toks, .err = err};
  qs_override scratch = {0};
  bool ok = parse_override_tokens(&p, &scratch);
  qs_override_free(&scratch);
  if (p.lexer_error_read) return fail_lexer(arg, toks[n_toks - 1].start, err);
  return ok;
}

bool qs_override_parse(const char *arg, qs_override *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  size_t n_toks;
  token *toks = lex_all(arg, &n_toks);
  bool ok = check_syntax(arg, toks, n_toks, err);
  if (ok) {
    parser p = {.arg = arg, .toks = toks, .n_toks = n_toks, .err = err, .evaluate = true};
    out->input = qs_strdup(arg);
    ok = parse_override_tokens(&p, out);
  }
  free(toks);
  if (!ok) {
    qs_override_free(out);
    return false;
  }
  out->is_hydra = strcmp(out->key, "hydra") == 0 || starts_with(out->key, "hydra.") || starts_with(out->key, "hydra/");
  return true;
}

void qs_override_free(qs_override *ov) {
  if (!ov) return;
  free(ov->key);
  free(ov->package);
  free(ov->input);
  qs_node_free(ov->value);
  free(ov->value_text);
  for (size_t k = 0; k < ov->n_values; k++) {
    qs_node_free(ov->values[k]);
    free(ov->value_texts[k]);
  }
  free(ov->values);
  free(ov->value_texts);
  for (size_t k = 0; k < ov->n_include; k++) free(ov->glob_include[k]);
  for (size_t k = 0; k < ov->n_exclude; k++) free(ov->glob_exclude[k]);
  free(ov->glob_include);
  free(ov->glob_exclude);
  memset(ov, 0, sizeof *ov);
}

char *qs_override_key_element(const qs_override *ov) {
  static const char *const PREFIX[] = {[QS_OV_CHANGE] = "", [QS_OV_ADD] = "+", [QS_OV_FORCE_ADD] = "++", [QS_OV_DEL] = "~"};
  qs_strbuf b = {0};
  qs_sb_append(&b, PREFIX[ov->type]);
  qs_sb_append(&b, ov->key);
  if (ov->package) qs_sb_printf(&b, "@%s", ov->package);
  return qs_sb_take(&b);
}

static void append_node_text(qs_strbuf *b, const qs_node *n);

static void node_child_text(qs_strbuf *b, const void *container, size_t k, bool key) {
  const qs_node *n = container;
  if (key) append_escaped(b, n->keys[k]);
  else append_node_text(b, n->items[k]);
}

static void append_node_text(qs_strbuf *b, const qs_node *n) {
  switch (n->kind) {
  case QS_NULL: qs_sb_append(b, "null"); return;
  case QS_STR: append_escaped(b, n->s); return;
  case QS_LIST:
  case QS_MAP: append_container_text(b, n->kind == QS_MAP, n->n, node_child_text, n); return;
  default: append_number_text(b, n);
  }
}

char *qs_override_element_text(const qs_node *element) {
  qs_strbuf b = {0};
  append_node_text(&b, element);
  return qs_sb_take(&b);
}
