/* Streaming JSON text with exactly Python's json.dumps(obj, indent=2) layout
 * (spec quant-and-scoring.md §6.1): two-space indent, ": " and "," separators,
 * ensure_ascii escaping, floats as Python repr, empty containers as {} / [],
 * no trailing newline. jansson's dumper prints floats differently, so the
 * artifacts use this instead. */
#ifndef QSENS_REPORT_JSON_WRITER_H
#define QSENS_REPORT_JSON_WRITER_H

#include <stdbool.h>

#include "core/strbuf.h"

enum { QS_JW_MAX_DEPTH = 32 };

typedef struct qs_jw {
  qs_strbuf out;
  int depth;
  bool has_items[QS_JW_MAX_DEPTH]; /* per open container: something written yet */
  bool after_key;                  /* a key was written; its value comes next */
} qs_jw;

void qs_jw_begin_object(qs_jw *w);
void qs_jw_end_object(qs_jw *w);
void qs_jw_begin_array(qs_jw *w);
void qs_jw_end_array(qs_jw *w);
void qs_jw_key(qs_jw *w, const char *key);
void qs_jw_string(qs_jw *w, const char *s); /* NULL writes null */
void qs_jw_float(qs_jw *w, double v);       /* repr; NaN/Infinity as Python writes them */
void qs_jw_int(qs_jw *w, long long v);
void qs_jw_bool(qs_jw *w, bool v);
void qs_jw_null(qs_jw *w);

/* Appends s as a JSON string literal with ensure_ascii escaping; bytes that
 * are not valid UTF-8 become \ufffd. */
void qs_json_quote(qs_strbuf *out, const char *s);

#endif
