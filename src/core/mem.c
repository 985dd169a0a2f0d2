#include "core/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *check(void *p, size_t n) {
  if (!p && n) {
    fprintf(stderr, "qsens: error: out of host memory allocating %zu bytes\n", n);
    exit(1);
  }
  return p;
}

void *qs_malloc(size_t n) { return check(malloc(n ? n : 1), n); }
void *qs_calloc(size_t count, size_t size) { return check(calloc(count ? count : 1, size ? size : 1), count * size); }
void *qs_realloc(void *p, size_t n) { return check(realloc(p, n ? n : 1), n); }

char *qs_strndup(const char *s, size_t n) {
  char *d = qs_malloc(n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *qs_strdup(const char *s) { return qs_strndup(s, strlen(s)); }

void qs_grow(void **items, size_t *cap, size_t need, size_t elem_size) {
  if (need <= *cap) return;
  size_t c = *cap ? *cap : 8;
  while (c < need) c *= 2;
  *items = qs_realloc(*items, c * elem_size);
  *cap = c;
}
