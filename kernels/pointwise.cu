/* Elementwise ops, the embedding gather and the small reductions of the CUDA
 * backend. Grid-stride loops; every output element is written by one thread,
 * and the reductions combine with integer max or plain flag stores, so all
 * results are deterministic. */
#include "kernels/cuda_internal.h"

enum { THREADS = 256 };

#define GRID_STRIDE(i, n) for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (n); i += (long)gridDim.x * blockDim.x)

/* Accurate expf (no fast-math intrinsics): σ(z) as the CPU twin computes it. */
__device__ static inline float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

/* m = bf16(bf16(silu(g)) ⊙ u): the two roundings of a bf16 model (spec §3.1). */
__global__ static void swiglu_kernel(const __nv_bfloat16 *g, const __nv_bfloat16 *u, __nv_bfloat16 *m, long n) {
  GRID_STRIDE(i, n) {
    float z = __bfloat162float(g[i]);
    float silu = cuda_round_bf16(z * sigmoid(z));
    m[i] = __float2bfloat16_rn(silu * __bfloat162float(u[i]));
  }
}

__global__ static void swiglu_bwd_kernel(const __nv_bfloat16 *g, const __nv_bfloat16 *u, const __nv_bfloat16 *dm,
                                         __nv_bfloat16 *dg, __nv_bfloat16 *du, long n) {
  GRID_STRIDE(i, n) {
    float z = __bfloat162float(g[i]), s = sigmoid(z), d = __bfloat162float(dm[i]);
    float dsilu = s * (1.0f + z * (1.0f - s));
    dg[i] = __float2bfloat16_rn(d * __bfloat162float(u[i]) * dsilu);
    du[i] = __float2bfloat16_rn(d * z * s);
  }
}

bool cuda_swiglu(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err) {
  long n = qs_tensor_numel(g);
  if (n == 0) return true;
  swiglu_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, cuda_of(be)->stream>>>(
      (const __nv_bfloat16 *)g->data, (const __nv_bfloat16 *)u->data, (__nv_bfloat16 *)m->data, n);
  return cuda_check_launch("swiglu", err);
}

bool cuda_swiglu_bwd(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm, qs_tensor *dg,
                     qs_tensor *du, qs_error *err) {
  long n = qs_tensor_numel(g);
  if (n == 0) return true;
  swiglu_bwd_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, cuda_of(be)->stream>>>(
      (const __nv_bfloat16 *)g->data, (const __nv_bfloat16 *)u->data, (const __nv_bfloat16 *)dm->data,
      (__nv_bfloat16 *)dg->data, (__nv_bfloat16 *)du->data, n);
  return cuda_check_launch("swiglu_bwd", err);
}

/* An id outside the table (the caller's duty to prevent) gives a NaN row, so
 * the model's finiteness checks name the batch instead of reading out of
 * bounds. */
__global__ static void embedding_kernel(const int *ids, const void *table, bool table_bf16, long vocab, long dim,
                                        __nv_bfloat16 *h, long n) {
  GRID_STRIDE(i, n) {
    long t = i / dim, j = i % dim;
    int id = ids[t];
    float v = id >= 0 && id < vocab ? cuda_load(table, table_bf16, (long)id * dim + j) : nanf("");
    h[i] = __float2bfloat16_rn(v);
  }
}

bool cuda_embedding(qs_backend *be, const qs_tensor *ids, const qs_tensor *table, qs_tensor *h, qs_error *err) {
  long n = qs_tensor_numel(h);
  if (n == 0) return true;
  embedding_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, cuda_of(be)->stream>>>(
      (const int *)ids->data, table->data, table->dtype == QS_BF16, table->rows, table->cols,
      (__nv_bfloat16 *)h->data, n);
  return cuda_check_launch("embedding", err);
}

__global__ static void convert_kernel(const void *src, bool src_bf16, void *dst, bool dst_bf16, long n,
                                      bool accumulate) {
  GRID_STRIDE(i, n) {
    float v = cuda_load(src, src_bf16, i);
    if (accumulate) v += cuda_load(dst, dst_bf16, i);
    cuda_store(dst, dst_bf16, i, v);
  }
}

bool cuda_convert(cuda_state *s, const void *src, bool src_bf16, void *dst, bool dst_bf16, long n, bool accumulate,
                  qs_error *err) {
  if (n == 0) return true;
  convert_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s->stream>>>(src, src_bf16, dst, dst_bf16, n, accumulate);
  return cuda_check_launch("conversion", err);
}

/* acc += x, rounded to bf16 when acc is bf16 (the residual add of §3.1). */
bool cuda_add(qs_backend *be, qs_tensor *acc, const qs_tensor *x, qs_error *err) {
  return cuda_convert(cuda_of(be), x->data, true, acc->data, acc->dtype == QS_BF16, qs_tensor_numel(acc), true,
                      err);
}

bool cuda_copy(qs_backend *be, qs_tensor *dst, const qs_tensor *src, qs_error *err) {
  cuda_state *s = cuda_of(be);
  if (dst->dtype == src->dtype) {
    size_t bytes = qs_tensor_bytes(src);
    if (bytes) CUDA_TRY(cudaMemcpyAsync(dst->data, src->data, bytes, cudaMemcpyDeviceToDevice, s->stream), "copy");
    return true;
  }
  return cuda_convert(s, src->data, src->dtype == QS_BF16, dst->data, dst->dtype == QS_BF16, qs_tensor_numel(src),
                      false, err);
}

/* ---- reductions ----------------------------------------------------------- */

/* |v| as fp32 bits: non-negative floats order like their bits, NaN above
 * inf, so an unsigned max is an exact amax that keeps a NaN. */
__device__ static inline unsigned abs_bits(float v) { return __float_as_uint(v) & 0x7fffffffu; }

__global__ static void amax_bits_kernel(const void *x, bool bf16, long n, unsigned *out) {
  __shared__ unsigned block_max;
  if (threadIdx.x == 0) block_max = 0;
  __syncthreads();
  unsigned m = 0;
  GRID_STRIDE(i, n) m = max(m, abs_bits(cuda_load(x, bf16, i)));
  atomicMax(&block_max, m);
  __syncthreads();
  if (threadIdx.x == 0) atomicMax(out, block_max);
}

/* The CPU twin's rule: a NaN in x or in acc wins, else the larger. */
__global__ static void amax_merge_kernel(const unsigned *bits, float *acc) {
  float m = __uint_as_float(*bits);
  if (isnan(m)) *acc = m;
  else if (!(*acc >= m)) *acc = isnan(*acc) ? *acc : m;
}

bool cuda_amax_bits(cuda_state *s, const void *x, bool bf16, long n, unsigned *bits, qs_error *err) {
  CUDA_TRY(cudaMemsetAsync(bits, 0, sizeof *bits, s->stream), "amax");
  if (n > 0) amax_bits_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s->stream>>>(x, bf16, n, bits);
  return cuda_check_launch("amax", err);
}

bool cuda_amax_accumulate(qs_backend *be, const qs_tensor *x, qs_tensor *acc, qs_error *err) {
  cuda_state *s = cuda_of(be);
  void *bits;
  if (!cuda_scratch(s, SCRATCH_SMALL, 16, &bits, err) ||
      !cuda_amax_bits(s, x->data, x->dtype == QS_BF16, qs_tensor_numel(x), (unsigned *)bits, err))
    return false;
  amax_merge_kernel<<<1, 1, 0, s->stream>>>((const unsigned *)bits, (float *)acc->data);
  return cuda_check_launch("amax_accumulate", err);
}

__global__ static void nonfinite_kernel(const void *x, bool bf16, long n, int *flag) {
  GRID_STRIDE(i, n) if (!isfinite(cuda_load(x, bf16, i))) *flag = 1;
}

bool cuda_all_finite(qs_backend *be, const qs_tensor *x, bool *finite, qs_error *err) {
  cuda_state *s = cuda_of(be);
  long n = qs_tensor_numel(x);
  void *flag;
  int host_flag = 0;
  if (!cuda_scratch(s, SCRATCH_SMALL, 16, &flag, err)) return false;
  CUDA_TRY(cudaMemsetAsync(flag, 0, sizeof(int), s->stream), "all_finite");
  if (n > 0) nonfinite_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s->stream>>>(x->data, x->dtype == QS_BF16, n, (int *)flag);
  if (!cuda_check_launch("all_finite", err)) return false;
  CUDA_TRY(cudaMemcpyAsync(&host_flag, flag, sizeof host_flag, cudaMemcpyDeviceToHost, s->stream), "all_finite");
  if (!cuda_sync(s, "all_finite", err)) return false;
  *finite = host_flag == 0;
  return true;
}
