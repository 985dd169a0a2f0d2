/* Quantization ops of the CPU backend: fake quant (the reference quantizers
 * of src/quant) and the per-Linear sensitivity score reduction. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_fq_ref.h"
#include "backend/cpu/cpu_internal.h"
#include "core/bf16.h"
#include "core/mem.h"

/* |G·Δ| beyond this is clamped before squaring (ModelOpt ≥ 0.44), so an
 * overflowing product cannot turn a score into inf. */
#define SCORE_CLAMP 1e10f

/* Scratch bound per operand block (floats). Outputs are computed in blocks
 * of QS_SCORE_PARTIAL_TERMS columns × as many rows as fit, so every partial
 * lies in one block and the result does not depend on the blocking. */
#define BLOCK_FLOATS (1L << 22)

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

/* n elements of t from element `begin` as f32 into dst (the dtype test
 * hoisted out of the loop: these copies are the op's main memory traffic). */
static void load_f32(const qs_tensor *t, long begin, long n, float *dst) {
  if (t->dtype == QS_F32) {
    memcpy(dst, (const float *)t->data + begin, (size_t)n * sizeof(float));
    return;
  }
  const qs_bf16 *src = (const qs_bf16 *)t->data + begin;
  /* simd: -O2's cost model leaves loops of unknown length scalar; these
   * element-wise loops give the same bits either way. */
#pragma omp simd
  for (long j = 0; j < n; j++) dst[j] = qs_bf16_to_f32(src[j]);
}

/* Row r of t as f32 into dst[cols]. */
static void row_f32(const qs_tensor *t, long r, float *dst) { load_f32(t, r * t->cols, t->cols, dst); }

/* The op's arguments and a block of output rows [r0, r0 + rows) × columns
 * [c0, c0 + cols). */
typedef struct score_args {
  const qs_tensor *x, *xq, *w, *wq, *g;
  qs_delta_mode mode;
} score_args;

typedef struct out_block {
  long r0, rows, c0, cols;
} out_block;

/* Weight operands of a column block, one row of width kb per output column.
 *   accurate: Δ = A·Bᵀ with A = [xq | xq − x], B = [wq − w | w] (K doubled),
 *     or A = x, B = wq − w without an activation quantizer. A difference of
 *     two bf16 values is exact in fp32 unless their exponents are far apart,
 *     and no two large products are subtracted.
 *   modelopt: B = w and B2 = wq, for Y = x·wᵀ and Y_r = xq·wqᵀ. */
static void weight_operands(const score_args *a, long c0, long cols, long kb, float *b, float *b2) {
  long k = a->w->cols;
  bool accurate = a->mode == QS_DELTA_ACCURATE, act = a->xq != NULL;
#pragma omp parallel for schedule(static) if (cols * kb >= PARALLEL_MIN_ELEMENTS)
  for (long c = 0; c < cols; c++) {
    float *dst = b + c * kb;
    if (!accurate) {
      row_f32(a->w, c0 + c, dst);
      row_f32(a->wq, c0 + c, b2 + c * kb);
      continue;
    }
    row_f32(a->wq, c0 + c, dst);
    float *wrow = act ? dst + k : b2 + c * k; /* b2: scratch row without activation quantization */
    row_f32(a->w, c0 + c, wrow);
#pragma omp simd
    for (long j = 0; j < k; j++) dst[j] -= wrow[j];
  }
}

/* Activation operands of a row block (see weight_operands). */
static void act_operands(const score_args *a, long r0, long rows, long kb, float *x_op, float *xq_op) {
  long k = a->x->cols;
  bool accurate = a->mode == QS_DELTA_ACCURATE;
#pragma omp parallel for schedule(static) if (rows * kb >= PARALLEL_MIN_ELEMENTS)
  for (long r = 0; r < rows; r++) {
    float *dst = x_op + r * kb;
    if (!a->xq) {
      row_f32(a->x, r0 + r, dst);
      if (!accurate) memcpy(xq_op + r * kb, dst, (size_t)k * sizeof(float));
    } else if (!accurate) {
      row_f32(a->x, r0 + r, dst);
      row_f32(a->xq, r0 + r, xq_op + r * kb);
    } else {
      row_f32(a->xq, r0 + r, dst);
      row_f32(a->x, r0 + r, dst + k);
#pragma omp simd
      for (long j = 0; j < k; j++) dst[k + j] = dst[j] - dst[k + j];
    }
  }
}

static void gemm_nt(const float *a, const float *b, long m, long n, long k, float *c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, a, (int)k, b, (int)k, 0.0f, c,
              (int)n);
}

/* Δ of a block into delta[rows, cols]. */
static void block_delta(const score_args *a, const out_block *blk, long kb, const float *x_op, const float *xq_op,
                        const float *b, const float *b2, float *delta, float *scratch) {
  if (a->mode == QS_DELTA_ACCURATE) {
    gemm_nt(x_op, b, blk->rows, blk->cols, kb, delta);
    return;
  }
  /* ModelOpt: both outputs rounded to bf16, subtracted in bf16. */
  gemm_nt(x_op, b, blk->rows, blk->cols, kb, scratch);
  gemm_nt(xq_op, b2, blk->rows, blk->cols, kb, delta);
  long n = blk->rows * blk->cols;
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN_ELEMENTS)
  for (long i = 0; i < n; i++) delta[i] = qs_fq_bf16(qs_fq_bf16(delta[i]) - qs_fq_bf16(scratch[i]));
}

/* Output rows whose partials are summed side by side: each row's sum keeps
 * its column order, and the independent chains hide the latency of the
 * fp32 adds. */
#define PARTIAL_ROWS 4

/* Σ_j clamp(G·Δ)² over the columns of `nrows` consecutive block rows
 * (nrows ≤ PARTIAL_ROWS, a constant at every call so the loop over the rows
 * unrolls). */
static inline void row_partials(const float *g, long g_stride, const float *delta, long cols, int nrows,
                                bool g_bf16, float *sums) {
  float acc[PARTIAL_ROWS] = {0.0f};
  for (long j = 0; j < cols; j++) {
    for (int q = 0; q < nrows; q++) {
      float gv = g_bf16 ? qs_fq_bf16(g[q * g_stride + j]) : g[q * g_stride + j];
      float v = gv * delta[q * cols + j];
      if (v > SCORE_CLAMP) v = SCORE_CLAMP;
      if (v < -SCORE_CLAMP) v = -SCORE_CLAMP;
      acc[q] += v * v;
    }
  }
  for (int q = 0; q < nrows; q++) sums[q] = acc[q];
}

/* One fp32 partial per row of the block: Σ_j clamp(G·Δ)² in column order,
 * G rounded to bf16 in modelopt mode. */
static void block_partials(const score_args *a, const out_block *blk, const float *delta, float *partial,
                           long partial_stride) {
  bool g_bf16 = a->mode == QS_DELTA_MODELOPT;
  long n = a->g->cols, groups = (blk->rows + PARTIAL_ROWS - 1) / PARTIAL_ROWS;
#pragma omp parallel for schedule(static) if (blk->rows * blk->cols >= PARALLEL_MIN_ELEMENTS)
  for (long grp = 0; grp < groups; grp++) {
    long r = grp * PARTIAL_ROWS;
    const float *grow = (const float *)a->g->data + (blk->r0 + r) * n + blk->c0;
    const float *drow = delta + r * blk->cols;
    float sums[PARTIAL_ROWS];
    long left = blk->rows - r;
    if (left >= PARTIAL_ROWS) {
      row_partials(grow, n, drow, blk->cols, PARTIAL_ROWS, g_bf16, sums);
    } else {
      for (long q = 0; q < left; q++)
        row_partials(grow + q * n, n, drow + q * blk->cols, blk->cols, 1, g_bf16, &sums[q]);
    }
    for (long q = 0; q < PARTIAL_ROWS && q < left; q++) partial[(r + q) * partial_stride] = sums[q];
  }
}

static double score(const score_args *a) {
  long t = a->x->rows, n = a->w->rows, k = a->w->cols;
  long kb = a->mode == QS_DELTA_ACCURATE && a->xq ? 2 * k : k;
  long cb = QS_SCORE_PARTIAL_TERMS, per_row = (n + cb - 1) / cb;
  long rb = BLOCK_FLOATS / (kb > cb ? kb : cb);
  if (rb < 1) rb = 1;
  if (rb > t) rb = t;
  long wcols = cb < n ? cb : n;
  float *b = qs_malloc((size_t)(wcols * kb) * sizeof(float)), *b2 = qs_malloc((size_t)(wcols * kb) * sizeof(float));
  float *x_op = qs_malloc((size_t)(rb * kb) * sizeof(float)), *xq_op = qs_malloc((size_t)(rb * kb) * sizeof(float));
  float *delta = qs_malloc((size_t)(rb * wcols) * sizeof(float)), *scratch = qs_malloc((size_t)(rb * wcols) * sizeof(float));
  float *partial = qs_malloc((size_t)(t * per_row) * sizeof(float));
  for (long p = 0; p < per_row; p++) {
    long c0 = p * cb, cols = n - c0 < cb ? n - c0 : cb;
    weight_operands(a, c0, cols, kb, b, b2);
    for (long r0 = 0; r0 < t; r0 += rb) {
      out_block blk = {r0, t - r0 < rb ? t - r0 : rb, c0, cols};
      act_operands(a, r0, blk.rows, kb, x_op, xq_op);
      block_delta(a, &blk, kb, x_op, xq_op, b, b2, delta, scratch);
      block_partials(a, &blk, delta, partial + r0 * per_row + p, per_row);
    }
  }
  double total = 0.0;
  for (long i = 0; i < t * per_row; i++) total += (double)partial[i];
  free(b), free(b2), free(x_op), free(xq_op), free(delta), free(scratch), free(partial);
  return total;
}

bool cpu_quant_score(qs_backend *be, const qs_tensor *x, const qs_tensor *xq, const qs_tensor *w,
                     const qs_tensor *wq, const qs_tensor *g, qs_delta_mode mode, double *result, qs_error *err) {
  (void)be;
  (void)err;
  *result = 0.0;
  if (x->rows == 0 || w->rows == 0) return true;
  score_args a = {x, xq, w, wq, g, mode};
  *result = score(&a);
  return true;
}
