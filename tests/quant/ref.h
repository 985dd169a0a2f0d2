/* Slow, independent reference quantizers for the tests of src/quant.
 *
 * Written differently from fq.h on purpose: grids are enumerated and the
 * nearest value is searched in double, ties go to the even code by code
 * parity, rint is spelled out with floor, powers of two come from ldexp, and
 * bf16 rounding uses core/bf16.h. fp32 steps are double operations cast to
 * float: for + - * / double rounding through binary64 is harmless for binary32
 * (53 >= 2*24 + 2), so each cast equals the fp32 operation of the spec. */
#ifndef QSENS_TESTS_QUANT_REF_H
#define QSENS_TESTS_QUANT_REF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/bf16.h"

static inline float ref_bf16(float f) { return qs_round_bf16(f); }

static inline float ref_signed(double mag, float x) { return (float)(signbit(x) ? -mag : mag); }

/* Nearest value of an ascending grid to a >= 0, ties to the even index;
 * above the last value it saturates. */
static inline double ref_nearest(const double *grid, int n, double a) {
  int best = 0;
  for (int i = 1; i < n; i++) {
    double d = fabs(a - grid[i]), db = fabs(a - grid[best]);
    if (d < db || (d == db && i % 2 == 0)) best = i;
  }
  return grid[best];
}

/* Non-negative E4M3 values, code 0..126 (0x7f is NaN): value order = code order. */
static inline const double *ref_e4m3_grid(void) {
  static double grid[127];
  static int ready;
  if (!ready) {
    for (int code = 0; code < 127; code++) {
      int ex = code >> 3, m = code & 7;
      grid[code] = ex == 0 ? ldexp(m, -9) : ldexp(8 + m, ex - 10);
    }
    ready = 1;
  }
  return grid;
}

static inline float ref_e4m3(float v) {
  if (isnan(v)) return v;
  double a = fabs((double)v);
  double q = a >= 448.0 ? 448.0 : ref_nearest(ref_e4m3_grid(), 127, a);
  return ref_signed(q, v);
}

static const double REF_E2M1[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

static inline double ref_e2m1(double a) {
  if (isnan(a) || a > 6.0) return 6.0;
  return ref_nearest(REF_E2M1, 8, a);
}

static inline float ref_fp8(float x, float amax) {
  float a = amax <= ldexpf(1.0f, -24) ? 1.0f : amax;
  float scale = (float)(448.0 / a);
  float inv = (float)(1.0 / scale);
  float q = ref_e4m3((float)((double)x * scale));
  return ref_bf16((float)((double)q * inv));
}

/* Round half to even, spelled out; a zero result keeps the sign of v, as rint does. */
static inline double ref_rint(double v) {
  double f = floor(v), d = v - f, r;
  if (d > 0.5) r = f + 1;
  else if (d < 0.5) r = f;
  else r = fmod(f, 2.0) == 0 ? f : f + 1;
  return r == 0 ? copysign(0.0, v) : r;
}

static inline float ref_int(float x, float amax, int bits) {
  if (amax < ldexpf(1.0f, -24)) return 0.0f;
  double m = ldexp(1.0, bits - 1) - 1;
  float scale = (float)(m / amax);
  float v = (float)((double)x * scale);
  if (isnan(v)) return v;
  double q = isinf(v) ? copysign(INFINITY, v) : ref_rint(v);
  if (q > m) q = m;
  if (q < -m - 1) q = -m - 1;
  return ref_bf16((float)(q / scale));
}

/* max |x| of a block; any NaN makes it NaN. */
static inline float ref_block_max(const float *x, int n) {
  double m = 0;
  for (int i = 0; i < n; i++) {
    if (isnan(x[i])) return NAN;
    if (fabs(x[i]) > m) m = fabs(x[i]);
  }
  return (float)m;
}

/* MXFP4 shared exponent by searching powers of two in double. */
static inline int ref_mx_exponent(float bmax, int ocp_floor) {
  if (bmax == 0 || isinf(bmax) || isnan(bmax)) return 0;
  int e;
  if (ocp_floor) {
    e = 200;
    while (ldexp(1.0, e) > bmax) e--; /* floor(log2 bmax) */
    e -= 2;
  } else {
    float ratio = (float)(bmax / 6.0);
    e = -200;
    while (ldexp(1.0, e) < ratio) e++; /* ceil(log2 ratio) */
  }
  return e < -127 ? -127 : e > 127 ? 127 : e;
}

static inline void ref_mxfp4_block(const float *x, float *y, int n, int ocp_floor) {
  int e = ref_mx_exponent(ref_block_max(x, n), ocp_floor);
  for (int i = 0; i < n; i++) {
    double a = ldexp(fabs((double)x[i]), -e);
    y[i] = ref_bf16((float)ref_signed(ldexp(ref_e2m1(a), e), x[i]));
  }
}

static inline void ref_nvfp4_block(const float *x, float *y, int n, float global_amax) {
  float s2 = (float)(global_amax / 2688.0);
  if (s2 <= 0) s2 = 1e-12f;
  float six_s2 = (float)(6.0 * s2);
  float bmax = ref_block_max(x, n);
  float t = (float)(bmax / (double)six_s2);
  if (t > 448) t = 448;
  float sb = (float)((double)ref_e4m3(t) * s2);
  if (sb < 1e-5f) sb = 1.0f;
  for (int i = 0; i < n; i++) {
    float a = (float)(fabs((double)x[i]) / sb);
    float mag = (float)(ref_e2m1(a) * sb);
    y[i] = ref_bf16(ref_signed(mag, x[i]));
  }
}

/* Same value, with every NaN counting as equal. */
static inline int ref_same(float a, float b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  uint32_t ua, ub;
  memcpy(&ua, &a, 4);
  memcpy(&ub, &b, 4);
  return ua == ub;
}

#endif
