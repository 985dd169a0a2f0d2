/* Quantization ops of the CPU backend: fake quant (the reference quantizers
 * of src/quant) and the per-Linear sensitivity score reduction. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_fq_ref.h"
#include "backend/cpu/cpu_internal.h"
#include "core/bf16.h"
#include "core/mem.h"

/* Element counts below which a loop of the op runs on the calling thread:
 * waking the other OpenMP threads costs more than such a loop (the demo's
 * Linears), and the OpenBLAS threads of the next GEMM still spin on the
 * other cores meanwhile. Every loop gives the same bits either way. */
#define PARALLEL_MIN_ELEMENTS (1L << 18)

bool cpu_fake_quant(qs_backend *be, const qs_fq_spec *spec, const qs_tensor *x, const qs_tensor *amax,
                    qs_tensor *y, qs_error *err) {
  (void)be;
  cpu_fq_array in = {x->data, x->dtype == QS_BF16}, out = {y->data, y->dtype == QS_BF16};
  return cpu_fq_reference(spec->format, spec->weight, spec->mx_rule, spec->nvfp4_block, in, out, (size_t)x->rows,
                          (size_t)x->cols, amax ? amax->data : NULL, err);
}

/* ---- score -------------------------------------------------------------- */

/* n bf16 values as f32 into dst. */
static void bf16_to_f32(const qs_bf16 *src, long n, float *dst) {
  /* simd: -O2's cost model leaves loops of unknown length scalar; this
   * element-wise loop gives the same bits either way. */
#pragma omp simd
  for (long j = 0; j < n; j++) dst[j] = qs_bf16_to_f32(src[j]);
}

/* c[m, n] = a[m, k]·b[n, k]ᵀ, fp32 accumulation. */
static void gemm_nt(const float *a, const float *b, long m, long n, long k, float *c) {
  if (k == 0) { /* an empty sum (BLAS rejects a zero leading dimension) */
    memset(c, 0, (size_t)(m * n) * sizeof(float));
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, a, (int)k, b, (int)k, 0.0f, c,
              (int)n);
}

/* The partial of one run of `len` columns (score_order.h): lane l sums the
 * terms of columns l, l + 32, … in order, then the butterfly. */
static float run_partial(const float *yr, const float *y, const float *g, long len, bool modelopt) {
  float lanes[QS_SCORE_LANES] = {0.0f};
  for (long base = 0; base < len; base += QS_SCORE_LANES) {
    long width = len - base < QS_SCORE_LANES ? len - base : QS_SCORE_LANES;
    /* simd: the lanes are independent sums, so vectors give the same bits. */
#pragma omp simd
    for (long l = 0; l < width; l++) {
      long j = base + l;
      lanes[l] = qs_score_add(lanes[l], qs_score_term(g[j], qs_score_delta(yr[j], y[j], modelopt), modelopt));
    }
  }
  return qs_score_butterfly(lanes);
}

/* One call of the op, with wr as f32 (its own memory or an upcast copy). */
typedef struct score_call {
  const qs_tensor *xr, *y, *g;
  const float *wr; /* [n, k] f32 */
  long t, n, k, runs;
  bool modelopt;
} score_call;

/* Partials of output rows [r0, r0 + rows), whose Y_r rows are yr. */
static void block_partials(const score_call *c, long r0, long rows, const float *yr, float *partial) {
  const float *y = c->y->data, *g = c->g->data; /* g is f32: the CPU's activation dtype */
  long items = rows * c->runs;
#pragma omp parallel for schedule(static) if (rows * c->n >= PARALLEL_MIN_ELEMENTS)
  for (long i = 0; i < items; i++) {
    long r = i / c->runs, begin = i % c->runs * QS_SCORE_PARTIAL_TERMS;
    long len = c->n - begin < QS_SCORE_PARTIAL_TERMS ? c->n - begin : QS_SCORE_PARTIAL_TERMS;
    long at = (r0 + r) * c->n + begin;
    partial[(r0 + r) * c->runs + i % c->runs] = run_partial(yr + r * c->n + begin, y + at, g + at, len, c->modelopt);
  }
}

/* The call's fp64 total (score_order.h), Y_r made block by block of rows. */
static double score_total(const score_call *c) {
  long widest = c->n > c->k ? c->n : c->k;
  long rb = QS_SCORE_BLOCK_FLOATS / (widest > 0 ? widest : 1);
  if (rb < 1) rb = 1;
  if (rb > c->t) rb = c->t;
  bool x_f32 = c->xr->dtype == QS_F32;
  float *xbuf = x_f32 ? NULL : qs_malloc((size_t)(rb * c->k + 1) * sizeof(float));
  float *yr = qs_malloc((size_t)(rb * c->n) * sizeof(float));
  float *partial = qs_malloc((size_t)(c->t * c->runs) * sizeof(float));
  for (long r0 = 0; r0 < c->t; r0 += rb) {
    long rows = c->t - r0 < rb ? c->t - r0 : rb;
    const float *a = xbuf;
    if (x_f32) a = (const float *)c->xr->data + r0 * c->k;
    else bf16_to_f32((const qs_bf16 *)c->xr->data + r0 * c->k, rows * c->k, xbuf);
    gemm_nt(a, c->wr, rows, c->n, c->k, yr);
    block_partials(c, r0, rows, yr, partial);
  }
  double total = qs_score_combine(partial, c->t * c->runs);
  free(xbuf), free(yr), free(partial);
  return total;
}

bool cpu_quant_score(qs_backend *be, const qs_tensor *xr, const qs_tensor *wr, const qs_tensor *y,
                     const qs_tensor *g, qs_delta_mode mode, qs_tensor *acc, long slot, qs_error *err) {
  (void)err;
  if (xr->rows == 0 || wr->rows == 0) return true; /* no outputs: nothing to add */
  score_call c = {xr, y, g, cpu_weight_f32(be, wr, CPU_SCRATCH_WEIGHT), xr->rows, wr->rows, wr->cols,
                  qs_score_runs_per_row(wr->rows), mode == QS_DELTA_MODELOPT};
  ((double *)acc->data)[slot] += score_total(&c);
  return true;
}
