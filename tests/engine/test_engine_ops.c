/* The quantization ops of the CPU backend: hand-computed scores in both
 * precision modes, the score's accumulator slots, NaN and clamp, argument
 * checks, fake quant against the per-element rules of quant/fq.h, and the
 * score against a slow fp64 reference. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "core/bf16.h"
#include "core/mem.h"

static qs_backend *be;
static qs_error err;

static qs_tensor f32_tensor(float *data, long rows, long cols) { return (qs_tensor){data, QS_F32, rows, cols}; }

static const qs_qformat *fmt(const char *name) { return qs_qformat_find(name); }

/* y = x·wᵀ as the caller of the score op makes it (qs_op_linear, f32). */
static qs_tensor linear_f32(const qs_tensor *x, const qs_tensor *w) {
  qs_tensor y;
  CHECK(qs_tensor_alloc(be, QS_F32, x->rows, w->rows, &y, &err));
  CHECK(qs_op_linear(be, x, w, &y, false, &err));
  return y;
}

/* The op's score for one call into a fresh accumulator: xq NULL scores an
 * unquantized activation (xr = x). */
static double score_of(const qs_tensor *x, const qs_tensor *xq, const qs_tensor *w, const qs_tensor *wq,
                       const qs_tensor *g, qs_delta_mode mode) {
  double s = 0.0;
  qs_tensor y = linear_f32(x, w), acc = {&s, QS_F64, 1, 1};
  bool ok = qs_op_quant_score(be, xq ? xq : x, wq, &y, g, mode, &acc, 0, &err);
  CHECK(ok);
  if (!ok) fprintf(stderr, "%s\n", err.msg);
  qs_tensor_free(be, &y);
  return ok ? s : NAN;
}

/* INT8 weight-only, W = [4, 1]: the per-channel amax 4 gives scale 31.75,
 * 4 -> 127/31.75 = 4 and 1 -> 32/31.75 -> bf16 1.0078125 (spec example I1),
 * so Wq − W = [0, 2^-7]. With X = [1, 2], G = 3:
 *   accurate: Y = 6 and Y_r = 6.015625 are exact in fp32, Δ = 2^-6,
 *   (G·Δ)² = (3/64)² = 9/4096.
 *   modelopt: Y = bf16(6) = 6, Y_r = bf16(6.015625) = 6 (a tie between 6 and
 *   6.03125, to even), so Δ = 0: the cancellation accurate mode avoids. */
static void test_hand_weight_only(void) {
  float w[2] = {4.0f, 1.0f}, wq[2], x[2] = {1.0f, 2.0f}, g[1] = {3.0f};
  qs_tensor tw = f32_tensor(w, 1, 2), twq = f32_tensor(wq, 1, 2), tx = f32_tensor(x, 1, 2), tg = f32_tensor(g, 1, 1);
  qs_fq_spec spec = {fmt("int8"), true, QS_MX_NV_CEIL, 0};
  CHECK(qs_op_fake_quant(be, &spec, &tw, NULL, &twq, &err));
  CHECK(wq[0] == 4.0f && wq[1] == 1.0078125f);
  CHECK(score_of(&tx, NULL, &tw, &twq, &tg, QS_DELTA_ACCURATE) == 9.0 / 4096.0);
  CHECK(score_of(&tx, NULL, &tw, &twq, &tg, QS_DELTA_MODELOPT) == 0.0);
}

/* FP8 weight and static FP8 activation. W = [1, 2] (amax 2, scale 224:
 * both exact), X = [1, 0.30078125] with calibrated amax 1 (scale 448):
 * 0.30078125 -> 0.28515625 (spec example F3), 1 stays. So
 * Δ = (Xq − X)·Wᵀ = −2^-6·2 = −2^-5 and, with G = 2, (G·Δ)² = 2^-8 in both
 * modes (Y = 1.6015625 and Y_r = 1.5703125 are bf16 values: no rounding). */
static void test_hand_fp8_act(void) {
  float w[2] = {1.0f, 2.0f}, wq[2], x[2] = {1.0f, 0.30078125f}, xq[2], g[1] = {2.0f}, amax[1] = {1.0f};
  qs_tensor tw = f32_tensor(w, 1, 2), twq = f32_tensor(wq, 1, 2), tx = f32_tensor(x, 1, 2), txq = f32_tensor(xq, 1, 2);
  qs_tensor tg = f32_tensor(g, 1, 1), ta = f32_tensor(amax, 1, 1);
  qs_fq_spec ws = {fmt("fp8"), true, QS_MX_NV_CEIL, 0}, as = {fmt("fp8"), false, QS_MX_NV_CEIL, 0};
  CHECK(qs_op_fake_quant(be, &ws, &tw, NULL, &twq, &err));
  CHECK(qs_op_fake_quant(be, &as, &tx, &ta, &txq, &err));
  CHECK(wq[0] == 1.0f && wq[1] == 2.0f);
  CHECK(xq[0] == 1.0f && xq[1] == 0.28515625f);
  CHECK(score_of(&tx, &txq, &tw, &twq, &tg, QS_DELTA_ACCURATE) == 1.0 / 256.0);
  CHECK(score_of(&tx, &txq, &tw, &twq, &tg, QS_DELTA_MODELOPT) == 1.0 / 256.0);
  /* The clamp: |G·Δ| = 2^50·2^-5 > 1e10 contributes exactly 1e10² (as fp32). */
  g[0] = 0x1p50f;
  float clamp = 1e10f;
  CHECK(score_of(&tx, &txq, &tw, &twq, &tg, QS_DELTA_ACCURATE) == (double)(clamp * clamp));
}

/* The op adds into its slot only: other slots keep their bits, a second
 * call adds the same amount again, and a bf16 xr/wr gives what f32 copies of
 * the same values give. */
static void test_score_slots(void) {
  float w[4] = {4.0f, 1.0f, -2.0f, 0.5f}, wq[4] = {4.0f, 1.0078125f, -2.0f, 0.5f};
  float x[4] = {1.0f, 2.0f, -3.0f, 0.25f}, g[4] = {3.0f, -1.0f, 0.5f, 2.0f};
  qs_tensor tw = f32_tensor(w, 2, 2), twq = f32_tensor(wq, 2, 2), tx = f32_tensor(x, 2, 2), tg = f32_tensor(g, 2, 2);
  qs_tensor y = linear_f32(&tx, &tw);
  double slots[4] = {1.5, -0.0, 7.0, NAN};
  qs_tensor acc = {slots, QS_F64, 4, 1};
  CHECK(qs_op_quant_score(be, &tx, &twq, &y, &tg, QS_DELTA_ACCURATE, &acc, 2, &err));
  /* Only column 0 of wq differs, by 2^-7 in its second input: Δ[0][0] =
   * 2·2^-7 (G 3), Δ[1][0] = 0.25·2^-7 (G 0.5), every Y exact in fp32; the
   * sums below are exact in fp64. */
  double want = 9.0 / 4096.0 + 1.0 / 1048576.0;
  CHECK(slots[2] == 7.0 + want);
  CHECK(qs_op_quant_score(be, &tx, &twq, &y, &tg, QS_DELTA_ACCURATE, &acc, 2, &err));
  CHECK(slots[2] == 7.0 + want + want);
  CHECK(slots[0] == 1.5 && slots[1] == 0.0 && signbit(slots[1]) && isnan(slots[3]));
  qs_bf16 xb[4], wqb[4];
  for (int i = 0; i < 4; i++) xb[i] = qs_f32_to_bf16(x[i]), wqb[i] = qs_f32_to_bf16(wq[i]);
  qs_tensor txb = {xb, QS_BF16, 2, 2}, twqb = {wqb, QS_BF16, 2, 2};
  slots[0] = 0.0;
  CHECK(qs_op_quant_score(be, &txb, &twqb, &y, &tg, QS_DELTA_ACCURATE, &acc, 0, &err));
  CHECK(slots[0] == want);
  qs_tensor_free(be, &y);
}

/* A NaN in any operand makes the slot NaN (and only that slot); an overflow
 * to inf is clamped instead. */
static void test_score_nan(void) {
  float w[2] = {1.0f, 2.0f}, wq[2] = {1.0f, 2.015625f}, x[2] = {1.0f, 1.0f}, g[1] = {1.0f};
  qs_tensor tw = f32_tensor(w, 1, 2), twq = f32_tensor(wq, 1, 2), tx = f32_tensor(x, 1, 2), tg = f32_tensor(g, 1, 1);
  float *operands[4] = {x, wq, g, NULL};
  for (int o = 0; o < 4; o++) {
    qs_tensor y = linear_f32(&tx, &tw);
    if (o < 3) operands[o][0] = NAN;
    else ((float *)y.data)[0] = NAN;
    double slots[2] = {0.0, 0.0};
    qs_tensor acc = {slots, QS_F64, 2, 1};
    CHECK(qs_op_quant_score(be, &tx, &twq, &y, &tg, QS_DELTA_ACCURATE, &acc, 1, &err));
    CHECK(isnan(slots[1]) && slots[0] == 0.0);
    CHECK(qs_op_quant_score(be, &tx, &twq, &y, &tg, QS_DELTA_MODELOPT, &acc, 0, &err));
    CHECK(isnan(slots[0]));
    x[0] = 1.0f, wq[0] = 1.0f, g[0] = 1.0f;
    qs_tensor_free(be, &y);
  }
  /* G = inf: |G·Δ| = inf is clamped to 1e10, a finite 1e20 (fp32 square). */
  g[0] = INFINITY;
  double s = score_of(&tx, NULL, &tw, &twq, &tg, QS_DELTA_ACCURATE);
  CHECK(s == (double)(1e10f * 1e10f));
}

/* Bad arguments fail with one message naming the operand. */
static void test_score_arguments(void) {
  float w[6] = {0}, x[6] = {0}, g[6] = {0}, y[6] = {0};
  double slots[2] = {0.0, 0.0};
  qs_tensor tw = f32_tensor(w, 3, 2), tx = f32_tensor(x, 2, 2), tg = f32_tensor(g, 2, 3), ty = f32_tensor(y, 2, 3);
  qs_tensor acc = {slots, QS_F64, 2, 1};
  struct {
    qs_tensor xr, wr, y, g, acc;
    long slot;
    const char *names;
  } cases[] = {
      {tx, tw, ty, tg, acc, 2, "slot 2"},
      {tx, tw, ty, tg, acc, -1, "slot -1"},
      {tx, tw, ty, tg, f32_tensor(y, 2, 1), 0, "acc has dtype f32"},
      {tx, tw, (qs_tensor){g, QS_BF16, 2, 3}, tg, acc, 0, "y has dtype bf16"},
      {f32_tensor(x, 2, 3), tw, ty, tg, acc, 0, "xr is [2, 3]"},
      {tx, tw, f32_tensor(y, 3, 2), tg, acc, 0, "y is [3, 2]"},
      {tx, tw, ty, f32_tensor(g, 3, 2), acc, 0, "g is [3, 2]"},
      {tx, (qs_tensor){w, QS_I32, 3, 2}, ty, tg, acc, 0, "wr has dtype i32"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    err.msg[0] = '\0';
    CHECK(!qs_op_quant_score(be, &cases[i].xr, &cases[i].wr, &cases[i].y, &cases[i].g, QS_DELTA_ACCURATE,
                             &cases[i].acc, cases[i].slot, &err));
    if (!strstr(err.msg, cases[i].names)) fprintf(stderr, "case %zu: [%s]\n", i, err.msg);
    CHECK(strstr(err.msg, cases[i].names) != NULL);
  }
  CHECK(slots[0] == 0.0 && slots[1] == 0.0);
}

/* ---- fake quant against fq.h, element by element ----------------------- */

static float rnd(unsigned *s) {
  *s = *s * 1664525u + 1013904223u;
  return ((float)(*s >> 8) / 16777216.0f - 0.5f) * 6.0f;
}

/* One amax per `span` elements as the format's role asks (0: none). */
static long amax_span(const qs_fq_spec *s, long rows, long cols) {
  qs_qgran gran = s->weight ? s->format->weight_amax : s->format->act_amax;
  return gran == QS_GRAN_TENSOR ? rows * cols : gran == QS_GRAN_CHANNEL ? cols : gran == QS_GRAN_BLOCK ? s->format->block : 0;
}

static float slow_fq(const qs_fq_spec *s, const float *x, long i, long span, const float *amax) {
  float a = span ? amax[i / span] : 0.0f;
  switch (s->format->kind) {
    case QS_QK_NONE: return qs_fq_bf16(x[i]);
    case QS_QK_FP8: return qs_fq_fp8(x[i], qs_fp8_scale_for(a));
    case QS_QK_INT: return qs_fq_int(x[i], qs_int_scale_for(a, s->format->bits));
    case QS_QK_MXFP4: {
      long b = s->format->block, start = i / b * b;
      float bmax = 0.0f;
      for (long j = start; j < start + b; j++) bmax = fmaxf(bmax, fabsf(x[j]));
      return qs_fq_mxfp4(x[i], qs_mx_exponent(bmax, s->mx_rule));
    }
    case QS_QK_NVFP4: {
      long b = s->nvfp4_block ? s->nvfp4_block : s->format->block, start = i / b * b;
      float bmax = 0.0f;
      for (long j = start; j < start + b; j++) bmax = fmaxf(bmax, fabsf(x[j]));
      return qs_fq_nvfp4(x[i], qs_nvfp4_block_scale(bmax, qs_nvfp4_global_scale(a)));
    }
  }
  return NAN;
}

static void check_fake_quant(const char *name, bool weight, bool static_amax, bool bf16_out) {
  enum { ROWS = 3, COLS = 256 };
  float *x = qs_malloc(ROWS * COLS * sizeof(float)), *y = qs_malloc(ROWS * COLS * sizeof(float));
  unsigned seed = 7;
  for (long i = 0; i < ROWS * COLS; i++) x[i] = qs_fq_bf16(rnd(&seed) * (i % 17 == 0 ? 9.0f : 1.0f));
  qs_fq_spec spec = {fmt(name), weight, QS_MX_NV_CEIL, 0};
  long span = amax_span(&spec, ROWS, COLS), count = qs_fq_amax_count(&spec, ROWS, COLS);
  CHECK_INT(count, span ? ROWS * COLS / span : 0);
  float amax[ROWS * COLS];
  for (long a = 0; a < count; a++) {
    amax[a] = 0.0f;
    for (long j = a * span; j < (a + 1) * span; j++) amax[a] = fmaxf(amax[a], fabsf(x[j]));
    if (static_amax) amax[a] *= 0.5f; /* a calibrated amax below the data: saturation paths */
  }
  qs_tensor tx = f32_tensor(x, ROWS, COLS), ta = f32_tensor(amax, count ? count : 1, 1);
  qs_bf16 *yb = qs_malloc(ROWS * COLS * sizeof(qs_bf16));
  qs_tensor ty = bf16_out ? (qs_tensor){yb, QS_BF16, ROWS, COLS} : f32_tensor(y, ROWS, COLS);
  CHECK(qs_op_fake_quant(be, &spec, &tx, static_amax && count ? &ta : NULL, &ty, &err));
  long mismatches = 0;
  for (long i = 0; i < ROWS * COLS; i++) {
    float got = bf16_out ? qs_bf16_to_f32(yb[i]) : y[i], want = slow_fq(&spec, x, i, span, amax);
    if (memcmp(&got, &want, sizeof got) != 0) mismatches++;
  }
  if (mismatches) fprintf(stderr, "fake quant %s %s: %ld mismatches\n", name, weight ? "weight" : "act", mismatches);
  CHECK_INT(mismatches, 0);
  free(x);
  free(y);
  free(yb);
}

static void test_fake_quant_twins(void) {
  const char *names[] = {"fp8", "int8", "int4", "mxfp4", "nvfp4", "none"};
  for (size_t f = 0; f < sizeof names / sizeof *names; f++)
    for (int role = 0; role < 2; role++) {
      check_fake_quant(names[f], role == 0, false, false);
      check_fake_quant(names[f], role == 0, true, role == 1);
    }
  /* A width that is no whole number of blocks fails, naming the format. */
  float x[40] = {0}, y[40];
  qs_tensor tx = f32_tensor(x, 1, 40), ty = f32_tensor(y, 1, 40);
  qs_fq_spec spec = {fmt("mxfp4"), true, QS_MX_NV_CEIL, 0};
  CHECK(!qs_op_fake_quant(be, &spec, &tx, NULL, &ty, &err));
  CHECK(strstr(err.msg, "mxfp4") != NULL);
}

/* ---- score against a slow fp64 reference ------------------------------- */

/* Δ and Y from fp64 dot products; accurate: Σ (G·Δ)² in fp64; modelopt:
 * the bf16 steps applied to fp64 products rounded once to fp32. */
static double slow_score(const float *x, const float *xq, const float *w, const float *wq, const float *g, long t,
                         long n, long k, qs_delta_mode mode) {
  double total = 0.0;
  for (long r = 0; r < t; r++)
    for (long c = 0; c < n; c++) {
      double y = 0.0, yr = 0.0;
      for (long j = 0; j < k; j++) {
        y += (double)x[r * k + j] * w[c * k + j];
        yr += (double)xq[r * k + j] * wq[c * k + j];
      }
      double d, gv = g[r * n + c];
      if (mode == QS_DELTA_MODELOPT) {
        d = qs_fq_bf16(qs_fq_bf16((float)yr) - qs_fq_bf16((float)y));
        gv = qs_fq_bf16((float)gv);
      } else {
        d = yr - y;
      }
      total += (gv * d) * (gv * d);
    }
  return total;
}

static void check_score_twin(const char *wname, const char *aname, qs_delta_mode mode, double tol, long T, long N,
                             long K) {
  float *x = qs_malloc(T * K * sizeof(float)), *xq = qs_malloc(T * K * sizeof(float));
  float *w = qs_malloc(N * K * sizeof(float)), *wq = qs_malloc(N * K * sizeof(float));
  float *g = qs_malloc(T * N * sizeof(float));
  unsigned seed = 11;
  for (long i = 0; i < T * K; i++) x[i] = rnd(&seed);
  for (long i = 0; i < N * K; i++) w[i] = qs_fq_bf16(rnd(&seed) / 8.0f);
  for (long i = 0; i < T * N; i++) g[i] = rnd(&seed) * 1e-3f;
  qs_tensor tx = f32_tensor(x, T, K), txq = f32_tensor(xq, T, K), tw = f32_tensor(w, N, K), twq = f32_tensor(wq, N, K);
  qs_tensor tg = f32_tensor(g, T, N);
  qs_fq_spec ws = {fmt(wname), true, QS_MX_NV_CEIL, 0}, as = {fmt(aname), false, QS_MX_NV_CEIL, 0};
  CHECK(qs_op_fake_quant(be, &ws, &tw, NULL, &twq, &err));
  bool act = as.format->kind != QS_QK_NONE;
  if (act) CHECK(qs_op_fake_quant(be, &as, &tx, NULL, &txq, &err));
  else memcpy(xq, x, T * K * sizeof(float));
  double got = score_of(&tx, act ? &txq : NULL, &tw, &twq, &tg, mode);
  double want = slow_score(x, xq, w, wq, g, T, N, K, mode);
  CHECK(want > 0.0);
  CHECK_REL(got, want, tol, 0.0);
  free(x), free(xq), free(w), free(wq), free(g);
}

static void test_score_twins(void) {
  /* accurate: Δ = Y_r − Y of two fp32 GEMM outputs over K = 64 terms, each
   * off by a few 2^-24·|Y|, while Δ is ~2^-8·|Y| for INT8 weights: up to
   * ~1e-4 relative per Δ, but with random signs, so over ~12300 squared
   * terms the sum moves ~1e-6 (measured ≤ 1e-6); 1e-5 leaves 10x. */
  const char *pairs[][2] = {{"mxfp4", "none"}, {"mxfp4", "fp8"}, {"fp8", "none"}, {"fp8", "fp8"},
                            {"int8", "none"}, {"int8", "fp8"}, {"int8", "int8"}};
  for (size_t p = 0; p < sizeof pairs / sizeof *pairs; p++) {
    /* N > 4096: two partials (column blocks) per row */
    check_score_twin(pairs[p][0], pairs[p][1], QS_DELTA_ACCURATE, 1e-5, 3, 4100, 64);
    /* modelopt: the fp32 GEMM may round an output to the other bf16
     * neighbour than the correctly rounded fp64 one (a few ulp of fp32 near
     * a bf16 tie, ~1e-4 of the 12300 outputs); one such flip moves one of
     * ~12300 comparable terms by O(1) of itself: 1e-3 bounds a few. */
    check_score_twin(pairs[p][0], pairs[p][1], QS_DELTA_MODELOPT, 1e-3, 3, 4100, 64);
  }
  /* More rows than one Y_r block of QS_SCORE_BLOCK_FLOATS / 4100 = 8184
   * rows: the row blocking. */
  check_score_twin("int8", "int8", QS_DELTA_ACCURATE, 1e-5, 8200, 4100, 8);
  check_score_twin("int8", "int8", QS_DELTA_MODELOPT, 1e-3, 8200, 4100, 8);
}

int main(void) {
  be = qs_cpu_backend_new();
  test_hand_weight_only();
  test_hand_fp8_act();
  test_score_slots();
  test_score_nan();
  test_score_arguments();
  test_fake_quant_twins();
  test_score_twins();
  qs_backend_destroy(be);
  return check_summary("test_engine_ops");
}
