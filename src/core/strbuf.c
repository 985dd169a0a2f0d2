#include "core/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

static void reserve(qs_strbuf *b, size_t extra) {
  qs_grow((void **)&b->s, &b->cap, b->len + extra + 1, 1);
}

void qs_sb_append_n(qs_strbuf *b, const char *s, size_t n) {
  reserve(b, n);
  memcpy(b->s + b->len, s, n);
  b->len += n;
  b->s[b->len] = '\0';
}

void qs_sb_append(qs_strbuf *b, const char *s) { qs_sb_append_n(b, s, strlen(s)); }

void qs_sb_putc(qs_strbuf *b, char c) { qs_sb_append_n(b, &c, 1); }

void qs_sb_printf(qs_strbuf *b, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n > 0) {
    reserve(b, (size_t)n);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap2);
    b->len += (size_t)n;
  }
  va_end(ap2);
}

const char *qs_sb_str(const qs_strbuf *b) { return b->s ? b->s : ""; }

char *qs_sb_take(qs_strbuf *b) {
  char *s = b->s ? b->s : qs_strdup("");
  b->s = NULL;
  b->len = b->cap = 0;
  return s;
}

void qs_sb_clear(qs_strbuf *b) {
  b->len = 0;
  if (b->s) b->s[0] = '\0';
}

void qs_sb_free(qs_strbuf *b) {
  free(b->s);
  b->s = NULL;
  b->len = b->cap = 0;
}
