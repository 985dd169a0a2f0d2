/* Python json.dumps(indent=2, ensure_ascii=True) layout. */
#include "report/json_writer.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "core/pyfmt.h"

/* Separator and indentation before a value or key at the current depth. */
static void begin_item(qs_jw *w) {
  if (w->after_key) {
    w->after_key = false;
    return;
  }
  if (w->depth == 0) return;
  if (w->has_items[w->depth - 1]) qs_sb_putc(&w->out, ',');
  w->has_items[w->depth - 1] = true;
  qs_sb_putc(&w->out, '\n');
  for (int i = 0; i < w->depth; i++) qs_sb_append(&w->out, "  ");
}

static void open_container(qs_jw *w, char c) {
  begin_item(w);
  qs_sb_putc(&w->out, c);
  w->has_items[w->depth++] = false;
}

static void close_container(qs_jw *w, char c) {
  bool had = w->has_items[--w->depth];
  if (had) {
    qs_sb_putc(&w->out, '\n');
    for (int i = 0; i < w->depth; i++) qs_sb_append(&w->out, "  ");
  }
  qs_sb_putc(&w->out, c);
}

void qs_jw_begin_object(qs_jw *w) { open_container(w, '{'); }
void qs_jw_end_object(qs_jw *w) { close_container(w, '}'); }
void qs_jw_begin_array(qs_jw *w) { open_container(w, '['); }
void qs_jw_end_array(qs_jw *w) { close_container(w, ']'); }

void qs_jw_key(qs_jw *w, const char *key) {
  begin_item(w);
  qs_json_quote(&w->out, key);
  qs_sb_append(&w->out, ": ");
  w->after_key = true;
}

void qs_jw_string(qs_jw *w, const char *s) {
  if (!s) {
    qs_jw_null(w);
    return;
  }
  begin_item(w);
  qs_json_quote(&w->out, s);
}

void qs_jw_float(qs_jw *w, double v) {
  begin_item(w);
  if (isnan(v)) {
    qs_sb_append(&w->out, "NaN");
  } else if (isinf(v)) {
    qs_sb_append(&w->out, v > 0 ? "Infinity" : "-Infinity");
  } else {
    char buf[40];
    qs_sb_append(&w->out, qs_py_float_repr(v, buf, sizeof buf));
  }
}

void qs_jw_int(qs_jw *w, long long v) {
  begin_item(w);
  qs_sb_printf(&w->out, "%lld", v);
}

void qs_jw_bool(qs_jw *w, bool v) {
  begin_item(w);
  qs_sb_append(&w->out, v ? "true" : "false");
}

void qs_jw_null(qs_jw *w) {
  begin_item(w);
  qs_sb_append(&w->out, "null");
}

/* Decodes one UTF-8 sequence at s; returns its length (1 with U+FFFD when invalid). */
static int utf8_decode(const unsigned char *s, uint32_t *cp) {
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  int len = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3
                            : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
  if (len == 1) {
    *cp = s[0];
    return 1;
  }
  *cp = 0xFFFD;
  if (len == 0) return 1;
  uint32_t v = s[0] & (0x7F >> len);
  for (int i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 1;
    v = (v << 6) | (s[i] & 0x3F);
  }
  if (v < min_cp[len] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 1;
  *cp = v;
  return len;
}

static void put_escaped_cp(qs_strbuf *out, uint32_t cp) {
  switch (cp) {
  case '"': qs_sb_append(out, "\\\""); return;
  case '\\': qs_sb_append(out, "\\\\"); return;
  case '\n': qs_sb_append(out, "\\n"); return;
  case '\r': qs_sb_append(out, "\\r"); return;
  case '\t': qs_sb_append(out, "\\t"); return;
  case '\b': qs_sb_append(out, "\\b"); return;
  case '\f': qs_sb_append(out, "\\f"); return;
  default: break;
  }
  if (cp >= 0x20 && cp <= 0x7E) {
    qs_sb_putc(out, (char)cp);
  } else if (cp < 0x10000) {
    qs_sb_printf(out, "\\u%04x", (unsigned)cp);
  } else { /* UTF-16 surrogate pair, as Python writes astral characters */
    uint32_t v = cp - 0x10000;
    qs_sb_printf(out, "\\u%04x\\u%04x", (unsigned)(0xD800 | (v >> 10)), (unsigned)(0xDC00 | (v & 0x3FF)));
  }
}

void qs_json_quote(qs_strbuf *out, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  qs_sb_putc(out, '"');
  while (*p) {
    uint32_t cp;
    p += utf8_decode(p, &cp);
    put_escaped_cp(out, cp);
  }
  qs_sb_putc(out, '"');
}
