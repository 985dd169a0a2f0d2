/* bfloat16 storage type and exact conversions (upper 16 bits of an IEEE fp32). */
#ifndef QSENS_CORE_BF16_H
#define QSENS_CORE_BF16_H

#include <stdint.h>
#include <string.h>

typedef uint16_t qs_bf16;

static inline float qs_bf16_to_f32(qs_bf16 h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* Round to nearest even; NaN stays a (quiet) NaN. */
static inline qs_bf16 qs_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (qs_bf16)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (qs_bf16)(u >> 16);
}

/* f32 -> nearest bf16 value, as a float. */
static inline float qs_round_bf16(float f) { return qs_bf16_to_f32(qs_f32_to_bf16(f)); }

#endif
