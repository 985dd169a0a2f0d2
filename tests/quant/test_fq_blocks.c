/* Block formats (MXFP4 both scale rules, NVFP4, INT4 blockwise) through the
 * array API on random bf16 blocks (never all zero), tie blocks and extreme
 * blocks, against the slow reference in ref.h. Bit-exact (NaN == NaN). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "core/bf16.h"
#include "quant/quant.h"
#include "ref.h"

#define MAXB 128

static uint32_t rng_state = 2463534242u;
static uint32_t rng(void) { /* xorshift32: reproducible on every platform */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

/* A random bf16 value with binary exponent in [lo, hi], random sign and
 * mantissa; one in eight is zero. */
static qs_bf16 random_bf16(int lo, int hi) {
  if (rng() % 8 == 0) return (qs_bf16)((rng() & 1) << 15);
  uint32_t e = (uint32_t)(127 + lo + (int)(rng() % (uint32_t)(hi - lo + 1)));
  return (qs_bf16)(((rng() & 1) << 15) | (e << 7) | (rng() & 0x7f));
}

typedef enum { MX_CEIL, MX_FLOOR, NVFP4, INT4 } kind;

static const char *kind_name(kind k) {
  static const char *names[] = {"mxfp4 nv_ceil", "mxfp4 ocp_floor", "nvfp4", "int4"};
  return names[k];
}

static int block_len(kind k) { return k == NVFP4 ? 16 : k == INT4 ? 128 : 32; }

/* Runs one block through the library and the reference; returns 1 on mismatch. */
static int check_block(kind k, const qs_bf16 *h, float global_amax) {
  int n = block_len(k);
  float x[MAXB], want[MAXB];
  qs_bf16 got[MAXB];
  for (int i = 0; i < n; i++) x[i] = qs_bf16_to_f32(h[i]);
  qs_src src = {h, QS_DTYPE_BF16};
  qs_dst dst = {got, QS_DTYPE_BF16};
  switch (k) {
  case MX_CEIL:
  case MX_FLOOR:
    qs_quantize_mxfp4(src, dst, (size_t)n, (size_t)n, k == MX_CEIL ? QS_MX_NV_CEIL : QS_MX_OCP_FLOOR);
    ref_mxfp4_block(x, want, n, k == MX_FLOOR);
    break;
  case NVFP4:
    qs_quantize_nvfp4(src, dst, (size_t)n, (size_t)n, global_amax);
    ref_nvfp4_block(x, want, n, global_amax);
    break;
  case INT4: {
    float amax = qs_amax(src, (size_t)n);
    CHECK(ref_same(amax, ref_block_max(x, n)));
    qs_quantize_int(src, dst, (size_t)n, (size_t)n, 4, &amax);
    for (int i = 0; i < n; i++) want[i] = ref_int(x[i], amax, 4);
    break;
  }
  }
  for (int i = 0; i < n; i++) {
    float g = qs_bf16_to_f32(got[i]);
    if (!ref_same(g, want[i])) {
      fprintf(stderr, "%s (A=%.9g): element %d x=%.9g got %.9g want %.9g\n", kind_name(k),
              global_amax, i, x[i], g, want[i]);
      return 1;
    }
  }
  return 0;
}

static void random_blocks(kind k) {
  int bad = 0, n = block_len(k);
  qs_bf16 h[MAXB];
  for (int trial = 0; trial < 4000; trial++) {
    /* exponent windows from subnormal-adjacent to huge, narrow and wide */
    int lo = -126 + (int)(rng() % 250), hi = lo + (int)(rng() % 12);
    if (hi > 127) hi = 127;
    for (int i = 0; i < n; i++) h[i] = random_bf16(lo, hi);
    h[rng() % (uint32_t)n] = random_bf16(hi, hi) | 0x0080; /* never an all-zero block */
    /* NVFP4: a tensor amax at, above and below the block max (activations beyond
     * a static amax saturate the block scale) */
    float bmax = qs_amax((qs_src){h, QS_DTYPE_BF16}, (size_t)n);
    float factors[] = {1.0f, 3.5f, 0.25f, 1e-4f};
    float A = bmax * factors[trial % 4];
    bad += check_block(k, h, A);
  }
  CHECK_INT(bad, 0);
}

/* Blocks whose elements sit exactly on E2M1 rounding ties once scaled: the
 * block max fixes the scale to an exact power of two (MX) or to an exact E4M3
 * block scale (NVFP4, s2 = 1), so every tie of §1.4 is hit. */
static void tie_blocks(void) {
  const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  int bad = 0;
  for (int e = -20; e <= 20; e++) {
    qs_bf16 h[MAXB];
    for (int i = 0; i < 32; i++) {
      float v = ldexpf(ties[i % 7], e) * (i % 2 ? -1.0f : 1.0f);
      h[i] = qs_f32_to_bf16(v);
    }
    h[31] = qs_f32_to_bf16(ldexpf(6.0f, e)); /* bmax = 6*2^e: nv_ceil e exact */
    bad += check_block(MX_CEIL, h, 0);
    h[31] = qs_f32_to_bf16(ldexpf(4.0f, e)); /* bmax = 4*2^e: ocp_floor e exact */
    bad += check_block(MX_FLOOR, h, 0);
  }
  const float sbs[] = {1.0f, 1.125f, 0.75f, 2.5f, 0.5f};
  for (size_t s = 0; s < sizeof sbs / sizeof sbs[0]; s++) {
    qs_bf16 h[16];
    for (int i = 0; i < 16; i++) h[i] = qs_f32_to_bf16(ties[i % 7] * sbs[s] * (i % 3 ? 1 : -1));
    h[15] = qs_f32_to_bf16(6.0f * sbs[s]); /* t = sb exactly, an E4M3 value */
    bad += check_block(NVFP4, h, 2688.0f);
    /* the library must produce the tie results of the table, not just agree */
    qs_bf16 y[16];
    qs_quantize_nvfp4((qs_src){h, QS_DTYPE_BF16}, (qs_dst){y, QS_DTYPE_BF16}, 16, 16, 2688.0f);
    const float want_mag[] = {0, 1, 1, 2, 2, 4, 4};
    for (int i = 0; i < 7; i++) CHECK(fabsf(qs_bf16_to_f32(y[i])) == qs_round_bf16(want_mag[i] * sbs[s]));
  }
  /* INT4 half-way points: amax 7 gives scale 1, so k + 0.5 are ties */
  qs_bf16 h[128];
  for (int i = 0; i < 128; i++) h[i] = qs_f32_to_bf16((float)(i % 16) * 0.5f - 4.0f);
  h[127] = qs_f32_to_bf16(7.0f);
  bad += check_block(INT4, h, 0);
  CHECK_INT(bad, 0);
}

/* Huge, tiny (bf16 subnormal), inf and NaN blocks. */
static void extreme_blocks(void) {
  int bad = 0;
  const qs_bf16 patterns[] = {0x7f7f /* bf16 max */, 0x0001 /* min subnormal */, 0x0080 /* min normal */,
                              0x7f80 /* inf */,      0x7fc0 /* NaN */,           0x3f80 /* 1.0 */};
  for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; p++) {
    for (kind k = MX_CEIL; k <= INT4; k++) {
      qs_bf16 h[MAXB];
      int n = block_len(k);
      for (int i = 0; i < n; i++) h[i] = random_bf16(-2, 2);
      h[n / 2] = patterns[p];
      h[n - 1] = (qs_bf16)(patterns[p] | 0x8000);
      bad += check_block(k, h, 1.0f);
      bad += check_block(k, h, 0.0f); /* NVFP4: s2 <= 0 -> 1e-12 */
      bad += check_block(k, h, 3.0e38f);
    }
  }
  CHECK_INT(bad, 0);
  /* spec behaviours, stated directly */
  qs_bf16 h[32], y[32];
  for (int i = 0; i < 32; i++) h[i] = qs_f32_to_bf16(1.0f);
  h[0] = 0x7f80;
  qs_quantize_mxfp4((qs_src){h, QS_DTYPE_BF16}, (qs_dst){y, QS_DTYPE_BF16}, 32, 32, QS_MX_NV_CEIL);
  CHECK(qs_bf16_to_f32(y[0]) == 6.0f && qs_bf16_to_f32(y[1]) == 1.0f); /* inf bmax -> e = 0 */
  h[0] = 0x7fc0;
  qs_quantize_nvfp4((qs_src){h, QS_DTYPE_BF16}, (qs_dst){y, QS_DTYPE_BF16}, 16, 16, 10.0f);
  CHECK(isnan(qs_bf16_to_f32(y[0])) && isnan(qs_bf16_to_f32(y[5]))); /* NaN block stays NaN */
  /* NVFP4 tiny block: sb < 1e-5 becomes 1, so the block flushes to zero */
  for (int i = 0; i < 16; i++) h[i] = qs_f32_to_bf16(3e-5f);
  qs_quantize_nvfp4((qs_src){h, QS_DTYPE_BF16}, (qs_dst){y, QS_DTYPE_BF16}, 16, 16, 1.0f);
  CHECK(qs_bf16_to_f32(y[3]) == 0.0f);
}

int main(void) {
  for (kind k = MX_CEIL; k <= INT4; k++) random_blocks(k);
  tie_blocks();
  extreme_blocks();
  return check_summary("test_fq_blocks");
}
