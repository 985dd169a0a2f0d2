/* Elementwise ops, the embedding gather and the reductions of the CPU
 * backend. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "core/bf16.h"

static float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

/* m = silu(g)·u; in the bf16 mode silu(g) is rounded first (§3.1). */
bool cpu_swiglu(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err) {
  (void)err;
  bool round = cpu_rounds_bf16(be);
  const float *gd = g->data, *ud = u->data;
  float *md = m->data;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < qs_tensor_numel(g); i++) md[i] = cpu_round_if(round, gd[i] * sigmoid(gd[i])) * ud[i];
  return true;
}

bool cpu_swiglu_bwd(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm, qs_tensor *dg,
                    qs_tensor *du, qs_error *err) {
  (void)be;
  (void)err;
  const float *gd = g->data, *ud = u->data, *dmd = dm->data;
  float *dgd = dg->data, *dud = du->data;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < qs_tensor_numel(g); i++) {
    float z = gd[i], s = sigmoid(z);
    float dsilu = s * (1.0f + z * (1.0f - s));
    dgd[i] = dmd[i] * ud[i] * dsilu;
    dud[i] = dmd[i] * z * s;
  }
  return true;
}

bool cpu_embedding(qs_backend *be, const qs_tensor *ids, const qs_tensor *table, qs_tensor *h, qs_error *err) {
  (void)be;
  const int *id = ids->data;
  long n = qs_tensor_numel(ids), dim = table->cols;
  for (long t = 0; t < n; t++)
    if (id[t] < 0 || id[t] >= table->rows)
      return qs_fail(err, QS_EXIT_RUNTIME, "embedding: token id %d at position %ld is outside [0, %ld)", id[t], t,
                     table->rows);
  float *hd = h->data;
#pragma omp parallel for schedule(static)
  for (long t = 0; t < n; t++)
    for (long j = 0; j < dim; j++) hd[t * dim + j] = cpu_load(table, (long)id[t] * dim + j);
  return true;
}

bool cpu_add(qs_backend *be, qs_tensor *acc, const qs_tensor *x, qs_error *err) {
  (void)be;
  (void)err;
  float *a = acc->data;
  const float *xd = x->data;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < qs_tensor_numel(acc); i++) a[i] += xd[i];
  return true;
}

bool cpu_copy(qs_backend *be, qs_tensor *dst, const qs_tensor *src, qs_error *err) {
  (void)be;
  (void)err;
  long n = qs_tensor_numel(src);
  if (dst->dtype == src->dtype) {
    if (n) memmove(dst->data, src->data, qs_tensor_bytes(src));
  } else if (dst->dtype == QS_BF16) {
    qs_bf16 *d = dst->data;
    for (long i = 0; i < n; i++) d[i] = qs_f32_to_bf16(cpu_load(src, i));
  } else {
    float *d = dst->data;
    for (long i = 0; i < n; i++) d[i] = cpu_load(src, i);
  }
  return true;
}

bool cpu_amax_accumulate(qs_backend *be, const qs_tensor *x, qs_tensor *acc, qs_error *err) {
  (void)be;
  (void)err;
  float m = 0.0f;
  bool nan = false;
#pragma omp parallel for schedule(static) reduction(max : m) reduction(|| : nan)
  for (long i = 0; i < qs_tensor_numel(x); i++) {
    float a = fabsf(cpu_load(x, i));
    if (isnan(a)) nan = true;
    else if (a > m) m = a;
  }
  float *out = acc->data;
  if (nan) out[0] = NAN;
  else if (!(out[0] >= m)) out[0] = isnan(out[0]) ? out[0] : m;
  return true;
}

bool cpu_all_finite(qs_backend *be, const qs_tensor *x, bool *finite, qs_error *err) {
  (void)be;
  (void)err;
  bool bad = false;
#pragma omp parallel for schedule(static) reduction(|| : bad)
  for (long i = 0; i < qs_tensor_numel(x); i++)
    if (!isfinite(cpu_load(x, i))) bad = true;
  *finite = !bad;
  return true;
}
