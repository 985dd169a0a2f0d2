#include "config/pystr.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/pyfmt.h"
#include "core/strbuf.h"

/* Python 3 str.__repr__: single quotes unless the text has a single quote
 * and no double quote; backslash escapes for the quote, the backslash,
 * \n \r \t and other ASCII control characters (non-ASCII text is printable
 * and kept as is). */
static void append_str_repr(qs_strbuf *b, const char *s) {
  bool has_single = false, has_double = false;
  for (const char *c = s; *c; c++) {
    has_single |= *c == '\'';
    has_double |= *c == '"';
  }
  char q = has_single && !has_double ? '"' : '\'';
  qs_sb_putc(b, q);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == q || *c == '\\') qs_sb_printf(b, "\\%c", *c);
    else if (*c == '\n') qs_sb_append(b, "\\n");
    else if (*c == '\r') qs_sb_append(b, "\\r");
    else if (*c == '\t') qs_sb_append(b, "\\t");
    else if (*c < 0x20 || *c == 0x7f) qs_sb_printf(b, "\\x%02x", *c);
    else qs_sb_putc(b, (char)*c);
  }
  qs_sb_putc(b, q);
}

static void append_py(qs_strbuf *b, const qs_node *n, bool repr) {
  char buf[40];
  switch (n->kind) {
  case QS_NULL: qs_sb_append(b, "None"); return;
  case QS_BOOL: qs_sb_append(b, n->b ? "True" : "False"); return;
  case QS_INT: qs_sb_printf(b, "%" PRId64, n->i); return;
  case QS_FLOAT: qs_sb_append(b, qs_py_float_repr(n->f, buf, sizeof buf)); return;
  case QS_STR:
    if (repr) append_str_repr(b, n->s);
    else qs_sb_append(b, n->s);
    return;
  case QS_LIST:
    qs_sb_putc(b, '[');
    for (size_t k = 0; k < n->n; k++) {
      if (k) qs_sb_append(b, ", ");
      append_py(b, n->items[k], true);
    }
    qs_sb_putc(b, ']');
    return;
  case QS_MAP:
    qs_sb_putc(b, '{');
    for (size_t k = 0; k < n->n; k++) {
      if (k) qs_sb_append(b, ", ");
      append_str_repr(b, n->keys[k]);
      qs_sb_append(b, ": ");
      append_py(b, n->items[k], true);
    }
    qs_sb_putc(b, '}');
    return;
  }
}

char *qs_pystr(const qs_node *n) {
  qs_strbuf b = {0};
  qs_sb_append(&b, "");
  append_py(&b, n, false);
  return qs_sb_take(&b);
}

char *qs_pyrepr(const qs_node *n) {
  qs_strbuf b = {0};
  qs_sb_append(&b, "");
  append_py(&b, n, true);
  return qs_sb_take(&b);
}
