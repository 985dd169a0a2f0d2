/* Growable NUL-terminated string. */
#ifndef QSENS_CORE_STRBUF_H
#define QSENS_CORE_STRBUF_H

#include <stddef.h>

typedef struct qs_strbuf {
  char *s;    /* always NUL-terminated once anything was appended; NULL when empty and new */
  size_t len;
  size_t cap;
} qs_strbuf;

void qs_sb_append(qs_strbuf *b, const char *s);
void qs_sb_append_n(qs_strbuf *b, const char *s, size_t n);
void qs_sb_putc(qs_strbuf *b, char c);
void qs_sb_printf(qs_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *qs_sb_str(const qs_strbuf *b); /* "" when empty */
char *qs_sb_take(qs_strbuf *b);            /* hands the string to the caller, resets b */
void qs_sb_clear(qs_strbuf *b);            /* keeps capacity */
void qs_sb_free(qs_strbuf *b);

#endif
