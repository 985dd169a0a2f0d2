/* FP8 E4M3 and INTb fake quantization over every bf16 bit pattern (65,536,
 * NaN and inf included) at several amax values, against the slow reference in
 * ref.h. Also the E4M3 rounding of random fp32 inputs (the fp32 CPU backend
 * feeds values that are not bf16). Comparisons are bit-exact (NaN == NaN). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "core/bf16.h"
#include "quant/fq.h"
#include "ref.h"

/* One failure report per (format, amax) keeps a broken rule readable. */
static void report(const char *what, float amax, float x, float got, float want, int *bad) {
  if ((*bad)++ == 0)
    fprintf(stderr, "%s amax=%.9g: x=%.9g got %.9g want %.9g\n", what, amax, x, got, want);
}

static void exhaustive_fp8(float amax) {
  qs_fp8_scale s = qs_fp8_scale_for(amax);
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float x = qs_bf16_to_f32((qs_bf16)h);
    float got = qs_fq_fp8(x, s), want = ref_fp8(x, amax);
    if (!ref_same(got, want)) report("fp8", amax, x, got, want, &bad);
  }
  CHECK_INT(bad, 0);
}

static void exhaustive_int(float amax, int bits) {
  qs_int_scale s = qs_int_scale_for(amax, bits);
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float x = qs_bf16_to_f32((qs_bf16)h);
    float got = qs_fq_int(x, s), want = ref_int(x, amax, bits);
    if (!ref_same(got, want)) report(bits == 8 ? "int8" : "int4", amax, x, got, want, &bad);
  }
  CHECK_INT(bad, 0);
}

/* Random fp32 bit patterns over the E4M3 range and beyond, plus exact
 * midpoints between neighbouring E4M3 values (the tie cases). */
static void e4m3_fp32_inputs(void) {
  int bad = 0;
  srand(12345);
  for (int i = 0; i < 1000000; i++) {
    uint32_t u = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
    /* exponents 2^-20 .. 2^12: subnormal E4M3 range up past saturation */
    u = (u & 0x807fffffu) | ((uint32_t)(107 + (u >> 23) % 33) << 23);
    float v = qs_fq_from_bits(u);
    if (!ref_same(qs_e4m3_rne_satfinite(v), ref_e4m3(v))) report("e4m3", 0, v, qs_e4m3_rne_satfinite(v), ref_e4m3(v), &bad);
  }
  const double *grid = ref_e4m3_grid();
  for (int c = 0; c + 1 < 127; c++) {
    float mid = (float)((grid[c] + grid[c + 1]) / 2); /* exact: 5 significant bits */
    float want = (float)grid[c % 2 == 0 ? c : c + 1];
    if (!ref_same(qs_e4m3_rne_satfinite(mid), want)) report("e4m3 tie", 0, mid, qs_e4m3_rne_satfinite(mid), want, &bad);
    if (!ref_same(qs_e4m3_rne_satfinite(-mid), -want)) report("e4m3 tie", 0, -mid, qs_e4m3_rne_satfinite(-mid), -want, &bad);
  }
  CHECK_INT(bad, 0);
}

static void special_values(void) {
  qs_fp8_scale s = qs_fp8_scale_for(448.0f);
  CHECK(isnan(qs_fq_fp8(NAN, s)));
  CHECK(qs_fq_fp8(INFINITY, s) == 448.0f);
  CHECK(qs_fq_fp8(-INFINITY, s) == -448.0f);
  CHECK(qs_e4m3_rne_satfinite(1e30f) == 448.0f);
  CHECK(qs_e4m3_rne_satfinite(464.0f) == 448.0f); /* would round to 480 without saturation */
  CHECK(qs_e4m3_rne_satfinite(ldexpf(1.0f, -10)) == 0.0f); /* half of the min subnormal: tie to 0 */
  CHECK(qs_e4m3_rne_satfinite(ldexpf(3.0f, -11)) == ldexpf(1.0f, -9));
  CHECK(signbit(qs_fq_fp8(-1e-6f, s))); /* small negatives keep their sign */
  qs_int_scale i8 = qs_int_scale_for(127.0f, 8);
  CHECK(isnan(qs_fq_int(NAN, i8)));
  CHECK(qs_fq_int(INFINITY, i8) == 127.0f);
  CHECK(qs_fq_int(-INFINITY, i8) == -128.0f);
  /* amax below 2^-24 zeroes everything, NaN included */
  qs_int_scale tiny = qs_int_scale_for(ldexpf(1.0f, -25), 8);
  CHECK(qs_fq_int(5.0f, tiny) == 0.0f && qs_fq_int(NAN, tiny) == 0.0f);
  /* FP8 with amax at/below 2^-24 uses a = 1 (scale 448) */
  CHECK(qs_fq_fp8(0.5f, qs_fp8_scale_for(0.0f)) == 0.5f);
}

int main(void) {
  /* amax values: scale 1, the worked examples, small/large, non-bf16 fp32 amax,
   * and the 2^-24 threshold on both sides. At 507.81817626953125 the spec's
   * inv = f32(1/scale) and the tempting a/448 give different bf16 outputs. */
  const float fp8_amax[] = {448.0f, 3.0f, 1.0f, 0.5f, 1e-3f, 57.3f, 12345.0f, 3.0e-30f,
                            0x1p-24f, 0x1p-25f, 0.0f, 2.5e38f, 507.81817626953125f};
  for (size_t i = 0; i < sizeof fp8_amax / sizeof fp8_amax[0]; i++) exhaustive_fp8(fp8_amax[i]);
  const float int_amax[] = {127.0f, 4.0f, 1.0f, 0.3f, 1e-6f, 0x1p-24f, 0x1p-25f,
                            0.0f, 31000.0f, 7.0f, 1.7e38f};
  for (size_t i = 0; i < sizeof int_amax / sizeof int_amax[0]; i++) {
    exhaustive_int(int_amax[i], 8);
    exhaustive_int(int_amax[i], 4);
  }
  e4m3_fp32_inputs();
  special_values();
  return check_summary("test_fq_exhaustive");
}
