/* The CPU score reduction follows its documented order bit for bit
 * (backend.h qs_op_quant_score): one fp32 partial per output row summed in
 * column order, the partials added in fp64 in row order. The operands are
 * small multiples of powers of two, so every GEMM output is exact whatever
 * the GEMM's blocking, and a plain loop gives the exact expected bits. Row
 * counts 1..9 cover the rows the op sums side by side and its leftovers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "core/mem.h"

enum { N = 37, K = 32, MAX_T = 9 };

static unsigned next(unsigned *s) { return *s = *s * 1103515245u + 12345u; }
/* An integer in [-range, range]. */
static int small_int(unsigned *s, int range) { return (int)((next(s) >> 8) % (unsigned)(2 * range + 1)) - range; }

/* The documented reduction over exact Δ (and, in modelopt mode, exact Y). */
static double expected(const float *x, const float *w, const float *wq, const float *g, long t,
                       qs_delta_mode mode) {
  double total = 0.0;
  for (long r = 0; r < t; r++) {
    float sum = 0.0f;
    for (long c = 0; c < N; c++) {
      float y = 0.0f, yr = 0.0f, d = 0.0f;
      for (long j = 0; j < K; j++) {
        y += x[r * K + j] * w[c * K + j];
        yr += x[r * K + j] * wq[c * K + j];
        d += x[r * K + j] * (wq[c * K + j] - w[c * K + j]);
      }
      float gv = g[r * N + c];
      if (mode == QS_DELTA_MODELOPT) {
        d = qs_fq_bf16(qs_fq_bf16(yr) - qs_fq_bf16(y));
        gv = qs_fq_bf16(gv);
      }
      float v = gv * d;
      sum += v * v;
    }
    total += (double)sum;
  }
  return total;
}

int main(void) {
  qs_backend *be = qs_cpu_backend_new();
  float *x = qs_malloc(MAX_T * K * sizeof(float)), *g = qs_malloc(MAX_T * N * sizeof(float));
  float *w = qs_malloc(N * K * sizeof(float)), *wq = qs_malloc(N * K * sizeof(float));
  unsigned seed = 5;
  /* |x| ≤ 3, w in 1/16 steps, wq − w in 1/8 steps: every product and sum of
   * K = 32 terms is a multiple of 1/16 below 2^10, exact in fp32 (and bf16
   * rounding of Y is then the only rounding modelopt adds). */
  for (long i = 0; i < MAX_T * K; i++) x[i] = (float)small_int(&seed, 3);
  for (long i = 0; i < N * K; i++) {
    w[i] = (float)small_int(&seed, 16) / 16.0f;
    wq[i] = w[i] + (float)small_int(&seed, 2) / 8.0f;
  }
  /* Arbitrary G: the fp32 sums of G·Δ squares depend on their order. */
  for (long i = 0; i < MAX_T * N; i++) g[i] = (float)(next(&seed) >> 8) / 16777216.0f * 0.37f + 1e-3f;
  qs_tensor tw = {w, QS_F32, N, K}, twq = {wq, QS_F32, N, K};
  qs_error err;
  size_t mismatches = 0;
  for (int m = 0; m < 2; m++) {
    qs_delta_mode mode = m ? QS_DELTA_MODELOPT : QS_DELTA_ACCURATE;
    for (long t = 1; t <= MAX_T; t++) {
      qs_tensor tx = {x, QS_F32, t, K}, tg = {g, QS_F32, t, N};
      double got = NAN, want = expected(x, w, wq, g, t, mode);
      CHECK(qs_op_quant_score(be, &tx, NULL, &tw, &twq, &tg, mode, &got, &err));
      CHECK(want > 0.0);
      if (memcmp(&got, &want, sizeof got) != 0) {
        fprintf(stderr, "%s, %ld rows: %.17g, expected %.17g\n", m ? "modelopt" : "accurate", t, got, want);
        mismatches++;
      }
    }
  }
  CHECK_INT(mismatches, 0);
  free(x), free(g), free(w), free(wq);
  qs_backend_destroy(be);
  return check_summary("test_engine_score_order");
}
