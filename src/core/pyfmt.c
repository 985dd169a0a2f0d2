#include "core/pyfmt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shortest %.{p}e text whose value reads back as v. */
static int shortest_digits(double v, char *digits, int *exp10) {
  char tmp[40];
  for (int p = 0; p <= 16; p++) {
    snprintf(tmp, sizeof tmp, "%.*e", p, v);
    if (strtod(tmp, NULL) == v) break;
  }
  /* tmp = "[-]d.ddde[+-]xx" */
  const char *s = tmp[0] == '-' ? tmp + 1 : tmp;
  int n = 0;
  for (; *s && *s != 'e'; s++)
    if (*s != '.') digits[n++] = *s;
  while (n > 1 && digits[n - 1] == '0') n--; /* "1.0e+16" -> "1" */
  digits[n] = '\0';
  *exp10 = atoi(s + 1);
  return n;
}

char *qs_py_float_repr(double v, char *buf, size_t size) {
  if (isnan(v)) { snprintf(buf, size, "nan"); return buf; }
  if (isinf(v)) { snprintf(buf, size, v < 0 ? "-inf" : "inf"); return buf; }
  const char *sign = signbit(v) ? "-" : "";
  if (v == 0) { snprintf(buf, size, "%s0.0", sign); return buf; }
  char d[24];
  int e;
  int n = shortest_digits(v, d, &e);
  char body[48];
  if (e < -4 || e >= 16) {
    /* d[0] '.' rest 'e' sign exp (at least 2 digits) */
    if (n == 1) snprintf(body, sizeof body, "%ce%c%02d", d[0], e < 0 ? '-' : '+', abs(e));
    else snprintf(body, sizeof body, "%c.%se%c%02d", d[0], d + 1, e < 0 ? '-' : '+', abs(e));
  } else if (e < 0) {
    int zeros = -e - 1;
    snprintf(body, sizeof body, "0.%.*s%s", zeros, "0000", d);
  } else if (e + 1 >= n) {
    snprintf(body, sizeof body, "%s%.*s.0", d, e + 1 - n, "0000000000000000");
  } else {
    snprintf(body, sizeof body, "%.*s.%s", e + 1, d, d + e + 1);
  }
  snprintf(buf, size, "%s%s", sign, body);
  return buf;
}
