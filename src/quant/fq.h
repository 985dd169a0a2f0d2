/* Per-element fake-quantization numerics (spec quant-and-scoring.md §1).
 *
 * These are the bit-exact reference rules shared by the CPU code and the CUDA
 * kernels: every function is a static inline that compiles as host and device
 * code, calls nothing from libc except math CUDA also has (rintf, fabsf) and
 * uses bit casts instead of frexp/ldexp, so a kernel and its CPU twin round
 * identically. Every scalar step is fp32 round-to-nearest-even, in the spec's
 * order; results are rounded to bf16 (returned as the float holding that value).
 *
 * Signs: a result carries the sign bit of x (a small negative x gives -0), as
 * the reference kernels do. */
#ifndef QSENS_QUANT_FQ_H
#define QSENS_QUANT_FQ_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define QS_FQ_FN static inline __host__ __device__
#else
#define QS_FQ_FN static inline
#endif

/* Largest finite E4M3 value (1.75 * 2^8) and the E2M1 maximum. */
#define QS_E4M3_MAX 448.0f
#define QS_E2M1_MAX 6.0f
/* amax at or below 2^-24 counts as zero (no usable scale). */
#define QS_AMAX_TINY 5.9604644775390625e-08f

/* MXFP4 shared-exponent rule (§1.5). */
typedef enum qs_mx_rule {
  QS_MX_NV_CEIL,   /* ModelOpt fake quant: never clips the block max */
  QS_MX_OCP_FLOOR, /* OCP MX spec: may clip elements at 6 */
} qs_mx_rule;

QS_FQ_FN uint32_t qs_fq_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

QS_FQ_FN float qs_fq_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* 2^e as an fp32, exact for e in [-149, 127] (subnormal powers included). */
QS_FQ_FN float qs_fq_pow2(int e) {
  if (e >= -126) return qs_fq_from_bits((uint32_t)(e + 127) << 23);
  return qs_fq_from_bits(1u << (e + 149));
}

/* The magnitude of mag with the sign bit of x. */
QS_FQ_FN float qs_fq_with_sign(float mag, float x) {
  return qs_fq_from_bits((qs_fq_bits(mag) & 0x7fffffffu) | (qs_fq_bits(x) & 0x80000000u));
}

/* f32 -> bf16 value, round to nearest even; NaN stays a quiet NaN. */
QS_FQ_FN float qs_fq_bf16(float f) {
  uint32_t u = qs_fq_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return qs_fq_from_bits(u | 0x00400000u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return qs_fq_from_bits(u & 0xffff0000u);
}

/* Unbiased binary exponent of a normal fp32 (subnormals and zero give -127). */
QS_FQ_FN int qs_fq_exponent(float a) { return (int)((qs_fq_bits(a) >> 23) & 0xffu) - 127; }

/* ---- FP8 E4M3 (§1.2) ------------------------------------------------------ */

/* Nearest E4M3 value, ties to the even code; |v| > 448 (inf too) saturates to
 * ±448; NaN stays NaN. In [2^e, 2^(e+1)) the spacing is 2^(e-3), and below the
 * min normal 2^-6 the subnormal spacing 2^-9, so rounding is rint on v/spacing
 * (scaling by a power of two is exact; an even multiple is an even code). */
QS_FQ_FN float qs_e4m3_rne_satfinite(float v) {
  if (v != v) return v;
  float a = fabsf(v);
  if (a >= QS_E4M3_MAX) return qs_fq_with_sign(QS_E4M3_MAX, v);
  int e = qs_fq_exponent(a);
  if (e < -6) e = -6;
  float q = rintf(a * qs_fq_pow2(3 - e)) * qs_fq_pow2(e - 3);
  return qs_fq_with_sign(q, v);
}

typedef struct qs_fp8_scale {
  float scale; /* f32(448 / a) */
  float inv;   /* f32(1 / scale), NOT a/448 */
} qs_fp8_scale;

QS_FQ_FN qs_fp8_scale qs_fp8_scale_for(float amax) {
  float a = amax <= QS_AMAX_TINY ? 1.0f : amax;
  qs_fp8_scale s;
  s.scale = QS_E4M3_MAX / a;
  s.inv = 1.0f / s.scale;
  return s;
}

QS_FQ_FN float qs_fq_fp8(float x, qs_fp8_scale s) {
  return qs_fq_bf16(qs_e4m3_rne_satfinite(x * s.scale) * s.inv);
}

/* ---- INTb (§1.3) ----------------------------------------------------------- */

/* Quantizer state for one amax: scale = f32(M/amax); amax < 2^-24 zeroes every
 * output (+0). An inf amax is not special: scale 0 makes every output NaN. */
typedef struct qs_int_scale {
  float scale;
  float bound; /* M = 2^(b-1) - 1 */
  int zero;    /* amax < 2^-24 */
} qs_int_scale;

QS_FQ_FN qs_int_scale qs_int_scale_for(float amax, int bits) {
  qs_int_scale s;
  s.bound = (float)((1 << (bits - 1)) - 1);
  s.zero = amax < QS_AMAX_TINY;
  s.scale = s.bound / amax;
  return s;
}

/* q = clamp(rint(x*scale), -M-1, M); y = bf16(q / scale) with true division.
 * NaN passes both comparisons and stays NaN. */
QS_FQ_FN float qs_fq_int(float x, qs_int_scale s) {
  if (s.zero) return 0.0f;
  float q = rintf(x * s.scale);
  if (q > s.bound) q = s.bound;
  if (q < -s.bound - 1.0f) q = -s.bound - 1.0f;
  return qs_fq_bf16(q / s.scale);
}

/* ---- E2M1 grid (§1.4) ------------------------------------------------------ */

/* Nearest of {0, .5, 1, 1.5, 2, 3, 4, 6} to a >= 0, ties to the even code,
 * saturating at 6; inf and NaN give 6 (they fail every comparison). */
QS_FQ_FN float qs_e2m1_magnitude(float a) {
  if (a <= 0.25f) return 0.0f;
  if (a < 0.75f) return 0.5f;
  if (a <= 1.25f) return 1.0f;
  if (a < 1.75f) return 1.5f;
  if (a <= 2.5f) return 2.0f;
  if (a < 3.5f) return 3.0f;
  if (a <= 5.0f) return 4.0f;
  return QS_E2M1_MAX;
}

/* ---- MXFP4 (§1.5) ---------------------------------------------------------- */

/* Shared exponent e of a block (scale 2^e) from its max |x|. */
QS_FQ_FN int qs_mx_exponent(float bmax, qs_mx_rule rule) {
  if (bmax == 0.0f || !(bmax - bmax == 0.0f)) return 0; /* zero, inf, NaN */
  int e;
  if (rule == QS_MX_NV_CEIL) {
    /* ceil(log2(f32(bmax/6))) from the bits: a power of two keeps its exponent.
     * A subnormal ratio has ceil(log2) <= -126; only those above 2^-127 reach -126. */
    float ratio = bmax / QS_E2M1_MAX;
    uint32_t u = qs_fq_bits(ratio);
    uint32_t mant = u & 0x7fffffu;
    if ((u >> 23) == 0) e = mant > 0x400000u ? -126 : -127;
    else e = qs_fq_exponent(ratio) + (mant != 0);
  } else {
    /* floor(log2 bmax) - floor(log2 6); subnormal bmax is below 2^-126 and clamps. */
    e = qs_fq_exponent(bmax) - 2;
  }
  if (e < -127) e = -127;
  if (e > 127) e = 127;
  return e;
}

/* y = bf16(sign(x) * E2M1(|x| * 2^-e) * 2^e); both scalings are exact. */
QS_FQ_FN float qs_fq_mxfp4(float x, int e) {
  float mag = qs_e2m1_magnitude(fabsf(x) * qs_fq_pow2(-e)) * qs_fq_pow2(e);
  return qs_fq_bf16(qs_fq_with_sign(mag, x));
}

/* ---- NVFP4 (§1.6) ---------------------------------------------------------- */

/* Second-level scale s2 = f32(A / 2688) from the per-tensor amax A. */
QS_FQ_FN float qs_nvfp4_global_scale(float amax) {
  float s2 = amax / (QS_E2M1_MAX * QS_E4M3_MAX);
  return s2 <= 0.0f ? 1e-12f : s2;
}

/* Block scale sb = f32(e4m3(min(bmax / f32(6*s2), 448)) * s2), no lower clamp;
 * sb < 1e-5 becomes 1 so a tiny block flushes to ~0. A NaN bmax gives a NaN sb
 * (the whole block turns NaN). */
QS_FQ_FN float qs_nvfp4_block_scale(float bmax, float s2) {
  float t = bmax / (QS_E2M1_MAX * s2);
  if (t > QS_E4M3_MAX) t = QS_E4M3_MAX;
  float sb = qs_e4m3_rne_satfinite(t) * s2;
  return sb < 1e-5f ? 1.0f : sb;
}

/* y = bf16(f32(sign(x) * E2M1(f32(|x| / sb)) * sb)). */
QS_FQ_FN float qs_fq_nvfp4(float x, float sb) {
  float mag = qs_e2m1_magnitude(fabsf(x) / sb) * sb;
  return qs_fq_bf16(qs_fq_with_sign(mag, x));
}

#endif
