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

/* Output rows per GEMM block: bounds the Δ and operand scratch (about 2^22
 * floats each) without changing the result, since partials never span rows. */
#define BLOCK_FLOATS (1L << 22)

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
  for (long j = 0; j < n; j++) dst[j] = qs_bf16_to_f32(src[j]);
}

/* Row r of t as f32 into dst[cols]. */
static void row_f32(const qs_tensor *t, long r, float *dst) { load_f32(t, r * t->cols, t->cols, dst); }

/* Operands of the accurate Δ = A·Bᵀ. With an activation quantizer the K axis
 * is doubled: A = [xq | xq − x], B = [wq − w | w]; without one, A = x and
 * B = wq − w. Differences of two bf16 values are exact in fp32 in practice
 * (their exponents differ little), and no large product is subtracted. */
static float *accurate_weight_operand(const qs_tensor *w, const qs_tensor *wq, bool act_quant, long kb) {
  long n = w->rows, k = w->cols;
  float *b = qs_malloc((size_t)(n * kb) * sizeof(float));
#pragma omp parallel
  {
    float *wrow = qs_malloc((size_t)(k ? k : 1) * sizeof(float));
#pragma omp for schedule(static)
    for (long r = 0; r < n; r++) {
      float *dst = b + r * kb;
      row_f32(w, r, wrow);
      row_f32(wq, r, dst);
      for (long j = 0; j < k; j++) dst[j] -= wrow[j];
      if (act_quant) memcpy(dst + k, wrow, (size_t)k * sizeof(float));
    }
    free(wrow);
  }
  return b;
}

static void accurate_act_operand(const qs_tensor *x, const qs_tensor *xq, long r0, long rows, float *a) {
  long k = x->cols;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    float *dst = a + r * 2 * k;
    row_f32(xq, r0 + r, dst);
    row_f32(x, r0 + r, dst + k);
    for (long j = 0; j < k; j++) dst[k + j] = dst[j] - dst[k + j];
  }
}

static void gemm_nt(const float *a, const float *b, long m, long n, long k, float *c) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, a, (int)k, b, (int)k, 0.0f, c,
              (int)n);
}

static float *tensor_f32_copy(const qs_tensor *t) {
  long n = qs_tensor_numel(t);
  float *out = qs_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
#pragma omp parallel for schedule(static)
  for (long r = 0; r < t->rows; r++) row_f32(t, r, out + r * t->cols);
  return out;
}

/* Σ over rows [r0, r0 + rows) of clamp(G·Δ)², Δ [rows, N] in delta; in
 * modelopt mode G is rounded to bf16 first. Partials per the header. */
static double reduce_rows(const qs_tensor *g, long r0, long rows, const float *delta, bool g_bf16) {
  long n = g->cols, per_row = (n + QS_SCORE_PARTIAL_TERMS - 1) / QS_SCORE_PARTIAL_TERMS;
  long count = rows * per_row;
  float *partial = qs_malloc((size_t)(count > 0 ? count : 1) * sizeof(float));
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    const float *grow = (const float *)g->data + (r0 + r) * n;
    for (long p = 0; p < per_row; p++) {
      long end = (p + 1) * QS_SCORE_PARTIAL_TERMS < n ? (p + 1) * QS_SCORE_PARTIAL_TERMS : n;
      float sum = 0.0f;
      for (long j = p * QS_SCORE_PARTIAL_TERMS; j < end; j++) {
        float gv = g_bf16 ? qs_fq_bf16(grow[j]) : grow[j];
        float v = gv * delta[r * n + j];
        if (v > SCORE_CLAMP) v = SCORE_CLAMP;
        if (v < -SCORE_CLAMP) v = -SCORE_CLAMP;
        sum += v * v;
      }
      partial[r * per_row + p] = sum;
    }
  }
  double total = 0.0;
  for (long i = 0; i < count; i++) total += (double)partial[i];
  free(partial);
  return total;
}

static double score_accurate(const qs_tensor *x, const qs_tensor *xq, const qs_tensor *w, const qs_tensor *wq,
                             const qs_tensor *g) {
  long t = x->rows, n = w->rows, k = w->cols, kb = xq ? 2 * k : k;
  float *b = accurate_weight_operand(w, wq, xq != NULL, kb);
  long block = BLOCK_FLOATS / (n > kb ? n : kb);
  if (block < 1) block = 1;
  float *a = qs_malloc((size_t)((block < t ? block : t) * kb) * sizeof(float));
  float *delta = qs_malloc((size_t)((block < t ? block : t) * n) * sizeof(float));
  double total = 0.0;
  for (long r0 = 0; r0 < t; r0 += block) {
    long rows = t - r0 < block ? t - r0 : block;
    if (xq) accurate_act_operand(x, xq, r0, rows, a);
    else
      for (long r = 0; r < rows; r++) row_f32(x, r0 + r, a + r * k);
    gemm_nt(a, b, rows, n, kb, delta);
    total += reduce_rows(g, r0, rows, delta, false);
  }
  free(a);
  free(delta);
  free(b);
  return total;
}

/* ModelOpt's Δ: both outputs rounded to bf16, subtracted in bf16. */
static double score_modelopt(const qs_tensor *x, const qs_tensor *xq, const qs_tensor *w, const qs_tensor *wq,
                             const qs_tensor *g) {
  long t = x->rows, n = w->rows, k = w->cols;
  float *wf = tensor_f32_copy(w), *wqf = tensor_f32_copy(wq);
  long block = BLOCK_FLOATS / (n > k ? n : k);
  if (block < 1) block = 1;
  long cap = block < t ? block : t;
  float *a = qs_malloc((size_t)(cap * k) * sizeof(float)), *aq = qs_malloc((size_t)(cap * k) * sizeof(float));
  float *y = qs_malloc((size_t)(cap * n) * sizeof(float)), *yr = qs_malloc((size_t)(cap * n) * sizeof(float));
  double total = 0.0;
  for (long r0 = 0; r0 < t; r0 += block) {
    long rows = t - r0 < block ? t - r0 : block;
    for (long r = 0; r < rows; r++) {
      row_f32(x, r0 + r, a + r * k);
      row_f32(xq ? xq : x, r0 + r, aq + r * k);
    }
    gemm_nt(a, wf, rows, n, k, y);
    gemm_nt(aq, wqf, rows, n, k, yr);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < rows * n; i++) yr[i] = qs_fq_bf16(qs_fq_bf16(yr[i]) - qs_fq_bf16(y[i]));
    total += reduce_rows(g, r0, rows, yr, true);
  }
  free(a);
  free(aq);
  free(y);
  free(yr);
  free(wf);
  free(wqf);
  return total;
}

bool cpu_quant_score(qs_backend *be, const qs_tensor *x, const qs_tensor *xq, const qs_tensor *w,
                     const qs_tensor *wq, const qs_tensor *g, qs_delta_mode mode, double *score, qs_error *err) {
  (void)be;
  (void)err;
  *score = 0.0;
  if (x->rows == 0 || w->rows == 0) return true;
  *score = mode == QS_DELTA_MODELOPT ? score_modelopt(x, xq, w, wq, g) : score_accurate(x, xq, w, wq, g);
  return true;
}
