/* The score reduction follows its documented order bit for bit
 * (backend/score_order.h): 32 lane sums per run of QS_SCORE_PARTIAL_TERMS
 * columns joined by an xor butterfly, the partials combined in fp64 through
 * 256 accumulators and a fixed tree. This file re-implements that order with
 * plain loops (independently of score_order.h) and checks:
 *   - the helpers of score_order.h against the re-implementation (same bits)
 *     and against plain fp64 sums (within rounding bounds);
 *   - the CPU op against the re-implementation on operands whose GEMMs are
 *     exact (small integers), so that only the reduction order can make the
 *     bits differ, with several runs per row and more than 256 partials. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "core/mem.h"

static unsigned next(unsigned *s) { return *s = *s * 1103515245u + 12345u; }
/* An integer in [-range, range]. */
static int small_int(unsigned *s, int range) { return (int)((next(s) >> 8) % (unsigned)(2 * range + 1)) - range; }
/* A float in (0, scale]. */
static float positive(unsigned *s, float scale) { return ((float)(next(s) >> 8) + 1.0f) / 16777216.0f * scale; }

static bool same_bits_f(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }
static bool same_bits_d(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* ---- the documented order, written out ---------------------------------- */

/* 32 lanes, then v_l = v_l + v_(l^o) for o = 16, 8, 4, 2, 1, all lanes at once. */
static float ref_butterfly(const float lanes[32]) {
  float v[32], t[32];
  memcpy(v, lanes, sizeof v);
  for (int o = 16; o >= 1; o /= 2) {
    for (int l = 0; l < 32; l++) t[l] = v[l] + v[l ^ o];
    memcpy(v, t, sizeof v);
  }
  return v[0];
}

/* Partial i into accumulator i % 256 in increasing i, then the tree. */
static double ref_combine(const float *p, long n) {
  double a[256] = {0.0};
  for (long i = 0; i < n; i++) a[i % 256] += (double)p[i];
  for (int o = 128; o >= 1; o /= 2)
    for (int j = 0; j < o; j++) a[j] += a[j + o];
  return a[0];
}

static float clamp_square(float v) {
  if (v > 1e10f) v = 1e10f;
  if (v < -1e10f) v = -1e10f;
  return v * v;
}

/* The score of exact Y, Y_r (row-major [t, n]) and G in the documented order. */
static double ref_score(const float *y, const float *yr, const float *g, long t, long n, qs_delta_mode mode) {
  long runs = (n + 4095) / 4096;
  float *partial = qs_malloc((size_t)(t * runs) * sizeof(float));
  for (long r = 0; r < t; r++)
    for (long p = 0; p < runs; p++) {
      float lanes[32] = {0.0f};
      for (long c = p * 4096; c < n && c < (p + 1) * 4096; c++) {
        long e = r * n + c;
        float d = yr[e] - y[e], gv = g[e];
        if (mode == QS_DELTA_MODELOPT) {
          d = qs_fq_bf16(qs_fq_bf16(yr[e]) - qs_fq_bf16(y[e]));
          gv = qs_fq_bf16(gv);
        }
        lanes[(c - p * 4096) % 32] += clamp_square(gv * d);
      }
      partial[r * runs + p] = ref_butterfly(lanes);
    }
  double total = ref_combine(partial, t * runs);
  free(partial);
  return total;
}

/* ---- the helpers --------------------------------------------------------- */

/* Positive terms: an fp32 sum of m of them is within (m − 1)·2^-24 relative
 * of the exact sum (each add rounds once, by at most 2^-24 of a partial sum
 * that never exceeds the total); fp64 sums are ~2^29 times tighter. */
static void test_helpers(void) {
  unsigned seed = 3;
  for (int trial = 0; trial < 50; trial++) {
    float lanes[32], copy[32];
    double exact = 0.0;
    for (int l = 0; l < 32; l++) {
      lanes[l] = positive(&seed, trial % 2 ? 1.0f : 1e6f);
      exact += lanes[l];
    }
    memcpy(copy, lanes, sizeof copy);
    float want = ref_butterfly(lanes), got = qs_score_butterfly(copy);
    CHECK(same_bits_f(got, want));
    /* A butterfly is a tree of depth 5: 5·2^-24 relative at most. */
    CHECK_REL(got, exact, 5.0 * 0x1p-24, 0.0);
  }
  long sizes[] = {0, 1, 255, 256, 257, 1000, 70001};
  float *p = qs_malloc(70001 * sizeof(float));
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    long n = sizes[s];
    double exact = 0.0;
    for (long i = 0; i < n; i++) {
      p[i] = positive(&seed, i % 7 ? 1.0f : 1e4f);
      exact += p[i];
    }
    double got = qs_score_combine(p, n), want = ref_combine(p, n);
    CHECK(same_bits_d(got, want));
    /* fp64 adds of n terms: (n + 8)·2^-53 relative at most (< 1e-11). */
    CHECK_REL(got, exact, 1e-11, 0.0);
    if (n == 0) CHECK(got == 0.0);
  }
  free(p);
  CHECK_INT(qs_score_runs_per_row(4096), 1);
  CHECK_INT(qs_score_runs_per_row(4097), 2);
  CHECK_INT(qs_score_runs_per_row(0), 0);
}

/* ---- the CPU op ------------------------------------------------------------ */

enum { K = 32 };

typedef struct exact_case {
  long t, n;
  float *x, *w, *wq, *g, *y, *yr; /* y and yr: exact products, row-major [t, n] */
} exact_case;

/* |x| ≤ 3 and |w|, |wq| ≤ 20 integers: every Y and Y_r is an integer below
 * 2^11, exact in fp32 whatever the GEMM's order. G is arbitrary, so the fp32
 * squares and sums round and their order shows in the bits. */
static exact_case make_case(long t, long n, unsigned seed) {
  exact_case c = {t, n, NULL, NULL, NULL, NULL, NULL, NULL};
  c.x = qs_malloc((size_t)(t * K) * sizeof(float));
  c.w = qs_malloc((size_t)(n * K) * sizeof(float));
  c.wq = qs_malloc((size_t)(n * K) * sizeof(float));
  c.g = qs_malloc((size_t)(t * n) * sizeof(float));
  c.y = qs_malloc((size_t)(t * n) * sizeof(float));
  c.yr = qs_malloc((size_t)(t * n) * sizeof(float));
  for (long i = 0; i < t * K; i++) c.x[i] = (float)small_int(&seed, 3);
  for (long i = 0; i < n * K; i++) {
    c.w[i] = (float)small_int(&seed, 16);
    c.wq[i] = c.w[i] + (float)small_int(&seed, 2);
  }
  for (long i = 0; i < t * n; i++) c.g[i] = positive(&seed, 0.37f);
  for (long r = 0; r < t; r++)
    for (long j = 0; j < n; j++) {
      float y = 0.0f, yr = 0.0f;
      for (long k = 0; k < K; k++) {
        y += c.x[r * K + k] * c.w[j * K + k];
        yr += c.x[r * K + k] * c.wq[j * K + k];
      }
      c.y[r * n + j] = y;
      c.yr[r * n + j] = yr;
    }
  return c;
}

static void free_case(exact_case *c) { free(c->x), free(c->w), free(c->wq), free(c->g), free(c->y), free(c->yr); }

static size_t check_op(qs_backend *be, const exact_case *c, qs_delta_mode mode) {
  qs_tensor tx = {c->x, QS_F32, c->t, K}, twq = {c->wq, QS_F32, c->n, K};
  qs_tensor ty = {c->y, QS_F32, c->t, c->n}, tg = {c->g, QS_F32, c->t, c->n};
  double slots[3] = {0.0, 0.0, 0.0};
  qs_tensor acc = {slots, QS_F64, 3, 1};
  qs_error err;
  CHECK(qs_op_quant_score(be, &tx, &twq, &ty, &tg, mode, &acc, 1, &err));
  double want = ref_score(c->y, c->yr, c->g, c->t, c->n, mode);
  CHECK(want > 0.0);
  if (same_bits_d(slots[1], want)) return 0;
  fprintf(stderr, "%s, %ld x %ld: %.17g, expected %.17g\n", mode ? "modelopt" : "accurate", c->t, c->n, slots[1],
          want);
  return 1;
}

static void test_op(void) {
  qs_backend *be = qs_cpu_backend_new();
  /* t·runs: 1..9 partials; 2·140 = 280 > 256 partials (the accumulators
   * wrap); n = 4133: a full run and a run of 37 columns, not a multiple of
   * 32 lanes. */
  long shapes[][2] = {{1, 37}, {4, 37}, {9, 37}, {1, 4133}, {5, 4133}, {140, 4133}};
  size_t mismatches = 0;
  unsigned seed = 5;
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    exact_case c = make_case(shapes[s][0], shapes[s][1], seed++);
    mismatches += check_op(be, &c, QS_DELTA_ACCURATE);
    mismatches += check_op(be, &c, QS_DELTA_MODELOPT);
    free_case(&c);
  }
  CHECK_INT(mismatches, 0);
  qs_backend_destroy(be);
}

int main(void) {
  test_helpers();
  test_op();
  return check_summary("test_engine_score_order");
}
