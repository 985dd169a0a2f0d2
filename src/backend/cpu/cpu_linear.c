/* Matrix products of the CPU backend (OpenBLAS sgemm, fp32 accumulation) and
 * the fused, chunked lm_head + cross-entropy. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu_internal.h"
#include "core/mem.h"

bool cpu_linear(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                qs_error *err) {
  (void)err;
  if (x->rows == 0 || w->rows == 0) return true;
  const float *wf = cpu_weight_f32(be, w, CPU_SCRATCH_WEIGHT);
  int t = (int)x->rows, out = (int)w->rows, in = (int)w->cols;
  /* in == 0 leaves y untouched in BLAS; y = x·Wᵀ is then 0. */
  if (in == 0 && !accumulate) {
    float *yd = y->data;
    for (long i = 0; i < qs_tensor_numel(y); i++) yd[i] = 0.0f;
    return true;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, t, out, in, 1.0f, x->data, in, wf, in,
              accumulate ? 1.0f : 0.0f, y->data, out);
  return true;
}

bool cpu_linear_bwd(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                    qs_error *err) {
  (void)err;
  if (dy->rows == 0 || w->cols == 0) return true;
  const float *wf = cpu_weight_f32(be, w, CPU_SCRATCH_WEIGHT);
  int t = (int)dy->rows, out = (int)w->rows, in = (int)w->cols;
  if (out == 0 && !accumulate) {
    float *d = dx->data;
    for (long i = 0; i < qs_tensor_numel(dx); i++) d[i] = 0.0f;
    return true;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, t, in, out, 1.0f, dy->data, out, wf, in,
              accumulate ? 1.0f : 0.0f, dx->data, in);
  return true;
}

/* ---- lm_head + cross-entropy ------------------------------------------- */

/* One row of logits z[V] with target c (or none): returns the row's loss
 * (0 without a target) and, when grad is set, overwrites z with
 * grad_scale·(softmax(z) − onehot(c)) (zeros without a target). */
static double xent_row(float *z, long vocab, int target, bool grad, float grad_scale) {
  float m = -INFINITY;
  for (long j = 0; j < vocab; j++) m = z[j] > m ? z[j] : m;
  double sum = 0.0;
  for (long j = 0; j < vocab; j++) sum += exp((double)z[j] - (double)m);
  double lse = (double)m + log(sum);
  bool has_target = target >= 0;
  double loss = has_target ? lse - (double)z[target] : 0.0;
  if (grad) {
    for (long j = 0; j < vocab; j++)
      z[j] = has_target ? (float)(exp((double)z[j] - lse) * grad_scale) : 0.0f;
    if (has_target) z[target] -= grad_scale;
  }
  return loss;
}

/* The bf16 mode keeps the logits and G_lm in bf16, as the GPU's chunk does. */
static void round_chunk(const qs_backend *be, qs_tensor *z) {
  if (!cpu_rounds_bf16(be)) return;
  float *v = z->data;
  for (long i = 0; i < qs_tensor_numel(z); i++) v[i] = qs_round_bf16(v[i]);
}

static bool check_targets(const qs_tensor *targets, long vocab, qs_error *err) {
  const int *tg = targets->data;
  for (long t = 0; t < qs_tensor_numel(targets); t++)
    if (tg[t] != -100 && (tg[t] < 0 || tg[t] >= vocab))
      return qs_fail(err, QS_EXIT_RUNTIME, "lm_head_xent: target %d of token %ld is outside [0, %ld) and not -100",
                     tg[t], t, vocab);
  return true;
}

bool cpu_lm_head_xent(qs_backend *be, const qs_tensor *h, const qs_tensor *w, const qs_tensor *targets,
                      float grad_scale, long chunk_tokens, const qs_lm_head_hooks *hooks, qs_tensor *dh,
                      double *loss_sum, qs_error *err) {
  long tokens = h->rows, vocab = w->rows, dim = w->cols;
  *loss_sum = 0.0;
  if (!check_targets(targets, vocab, err)) return false;
  if (tokens == 0) return true;
  const float *wf = cpu_weight_f32(be, w, CPU_SCRATCH_HEAD_WEIGHT);
  long chunk = chunk_tokens < tokens ? chunk_tokens : tokens;
  float *logits_mem = cpu_scratch(be, CPU_SCRATCH_LOGITS, (size_t)(chunk * vocab));
  double *row_loss = qs_malloc((size_t)chunk * sizeof(double));
  const int *tg = targets->data;
  bool ok = true;
  for (long begin = 0; ok && begin < tokens; begin += chunk) {
    long n = tokens - begin < chunk ? tokens - begin : chunk;
    qs_tensor x = qs_tensor_rows(h, begin, n);
    qs_tensor z = {logits_mem, QS_F32, n, vocab};
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)vocab, (int)dim, 1.0f, x.data, (int)dim, wf,
                (int)dim, 0.0f, logits_mem, (int)vocab);
    round_chunk(be, &z);
    if (hooks->on_logits && !hooks->on_logits(hooks->ctx, begin, &x, &z, err)) ok = false;
    if (!ok) break;
#pragma omp parallel for schedule(static)
    for (long r = 0; r < n; r++)
      row_loss[r] = xent_row(logits_mem + r * vocab, vocab, tg[begin + r], dh != NULL, grad_scale);
    /* Summed in row order, so the loss is bit-identical run to run. */
    for (long r = 0; r < n; r++) *loss_sum += row_loss[r];
    if (!dh) continue;
    round_chunk(be, &z);
    if (hooks->on_grad && !hooks->on_grad(hooks->ctx, begin, &x, &z, err)) ok = false;
    if (!ok) break;
    qs_tensor d = qs_tensor_rows(dh, begin, n);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)dim, (int)vocab, 1.0f, logits_mem,
                (int)vocab, wf, (int)dim, 0.0f, d.data, (int)dim);
  }
  free(row_loss);
  return ok;
}
