/* The Linear products of the CUDA backend. Row-major tensors are seen by
 * cuBLASLt as their column-major transposes:
 *   y[T,out] = x·wᵀ   is  yᵀ[out,T] = (wᵀ)ᵀ·xᵀ: m = out, n = T, k = in, A = w transposed;
 *   dx[T,in] = dy·w   is  dxᵀ[in,T] = wᵀ·dyᵀ:   m = in,  n = T, k = out, nothing transposed.
 * bf16 weights run a bf16 GEMM straight into the bf16 output; fp32 weights
 * (weight differences) run an fp32 GEMM on an fp32 copy of the activation
 * and store the result in the output's dtype. */
#include "kernels/cuda_internal.h"

typedef struct row_major_product {
  int m, n, k;
  bool trans_w;
} row_major_product;

static bool is_bf16(const qs_tensor *t) { return t->dtype == QS_BF16; }

static bool run_product(qs_backend *be, const row_major_product *p, const qs_tensor *act, const qs_tensor *w,
                        qs_tensor *out, bool accumulate, qs_error *err) {
  cuda_state *s = cuda_of(be);
  blaslt_gemm g = {p->m, p->n, p->k, p->trans_w, false, BLASLT_BF16, BLASLT_BF16, w->data, act->data, out->data,
                   accumulate};
  if (is_bf16(w)) { /* activations are bf16 on this backend */
    g.d = is_bf16(out) ? BLASLT_BF16 : BLASLT_F32;
    return blaslt_run(s, &g, err);
  }
  g.ab = BLASLT_F32;
  g.d = BLASLT_F32;
  long act_n = qs_tensor_numel(act), out_n = qs_tensor_numel(out);
  if (is_bf16(act)) {
    void *a32;
    if (!cuda_scratch(s, SCRATCH_F32_IN, (size_t)act_n * 4, &a32, err) ||
        !cuda_convert(s, act->data, true, a32, false, act_n, false, err))
      return false;
    g.b = a32;
  }
  if (!is_bf16(out)) return blaslt_run(s, &g, err);
  void *o32;
  if (!cuda_scratch(s, SCRATCH_F32_OUT, (size_t)out_n * 4, &o32, err)) return false;
  g.out = o32;
  g.accumulate = false;
  return blaslt_run(s, &g, err) && cuda_convert(s, o32, false, out->data, true, out_n, accumulate, err);
}

bool cuda_matmul_nt(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                    qs_error *err) {
  row_major_product p = {(int)w->rows, (int)x->rows, (int)w->cols, true};
  return run_product(be, &p, x, w, y, accumulate, err);
}

bool cuda_matmul_nn(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                    qs_error *err) {
  row_major_product p = {(int)w->cols, (int)dy->rows, (int)w->rows, false};
  return run_product(be, &p, dy, w, dx, accumulate, err);
}

bool cuda_linear(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                 qs_error *err) {
  return cuda_matmul_nt(be, x, w, y, accumulate, err);
}

bool cuda_linear_bwd(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                     qs_error *err) {
  return cuda_matmul_nn(be, dy, w, dx, accumulate, err);
}
