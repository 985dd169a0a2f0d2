/* Elementwise ops, the embedding gather and the small reductions of the CUDA
 * backend. Grid-stride loops; every output element is written by one thread,
 * and the reductions combine with integer max or plain flag stores, so all
 * results are deterministic. The bandwidth-bound maps (SwiGLU, add, convert)
 * move 8 elements per 128-bit access (cuda_vec.h) on a grid of resident
 * blocks, with the same per-element arithmetic as their scalar tails. */
#include "kernels/cuda_vec.h"

enum { THREADS = 256 };

#define GRID_STRIDE(i, n) for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (n); i += (long)gridDim.x * blockDim.x)

/* Grid of a grid-stride map over n elements of which the first nvec·8 go
 * as vectors: no more blocks than the device holds at once, so each one
 * strides over an equal share and no wave of stragglers is left. */
static bool map_grid(cuda_state *s, const void *kernel, long n, long nvec, unsigned *blocks, qs_error *err) {
  int per_sm = 0;
  CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, THREADS, 0), "occupancy query");
  long work = nvec > n - nvec * VEC ? nvec : n - nvec * VEC;
  unsigned need = cuda_blocks(work, THREADS), resident = (unsigned)((per_sm > 0 ? per_sm : 1) * s->sm_count);
  *blocks = need < resident ? need : resident;
  return true;
}

/* The vectors of an n-element map whose pointers are all 16-byte aligned
 * (aligned = false: none, the scalar loop takes everything). */
static long map_vectors(long n, bool aligned) { return aligned ? n / VEC : 0; }

/* Accurate expf (no fast-math intrinsics): σ(z) as the CPU twin computes it. */
__device__ static inline float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

/* m = bf16(bf16(silu(g)) ⊙ u): the two roundings of a bf16 model (spec §3.1);
 * the outer rounding is the store's. */
__device__ static inline float swiglu_value(float z, float u) {
  float silu = cuda_round_bf16(z * sigmoid(z));
  return silu * u;
}

__global__ static void swiglu_kernel(const __nv_bfloat16 *g, const __nv_bfloat16 *u, __nv_bfloat16 *m, long n,
                                     long nvec) {
  GRID_STRIDE(v, nvec) {
    float gv[VEC], uv[VEC], mv[VEC];
    cuda_load8(g, true, v, gv);
    cuda_load8(u, true, v, uv);
#pragma unroll
    for (int k = 0; k < VEC; k++) mv[k] = swiglu_value(gv[k], uv[k]);
    cuda_store8(m, true, v, mv);
  }
  GRID_STRIDE(i, n - nvec * VEC) {
    long j = nvec * VEC + i;
    m[j] = __float2bfloat16_rn(swiglu_value(__bfloat162float(g[j]), __bfloat162float(u[j])));
  }
}

/* dg = d·u·silu'(z) and du = d·z·σ(z), before the stores round them. */
__device__ static inline void swiglu_grads(float z, float u, float d, float *dg, float *du) {
  float s = sigmoid(z);
  float dsilu = s * (1.0f + z * (1.0f - s));
  *dg = d * u * dsilu;
  *du = d * z * s;
}

__global__ static void swiglu_bwd_kernel(const __nv_bfloat16 *g, const __nv_bfloat16 *u, const __nv_bfloat16 *dm,
                                         __nv_bfloat16 *dg, __nv_bfloat16 *du, long n, long nvec) {
  GRID_STRIDE(v, nvec) {
    float gv[VEC], uv[VEC], dv[VEC], dgv[VEC], duv[VEC];
    cuda_load8(g, true, v, gv);
    cuda_load8(u, true, v, uv);
    cuda_load8(dm, true, v, dv);
#pragma unroll
    for (int k = 0; k < VEC; k++) swiglu_grads(gv[k], uv[k], dv[k], &dgv[k], &duv[k]);
    cuda_store8(dg, true, v, dgv);
    cuda_store8(du, true, v, duv);
  }
  GRID_STRIDE(i, n - nvec * VEC) {
    long j = nvec * VEC + i;
    float a, b;
    swiglu_grads(__bfloat162float(g[j]), __bfloat162float(u[j]), __bfloat162float(dm[j]), &a, &b);
    dg[j] = __float2bfloat16_rn(a);
    du[j] = __float2bfloat16_rn(b);
  }
}

bool cuda_swiglu(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err) {
  cuda_state *s = cuda_of(be);
  long n = qs_tensor_numel(g);
  if (n == 0) return true;
  long nvec = map_vectors(n, cuda_aligned16(g->data) && cuda_aligned16(u->data) && cuda_aligned16(m->data));
  unsigned blocks;
  if (!map_grid(s, (const void *)swiglu_kernel, n, nvec, &blocks, err)) return false;
  swiglu_kernel<<<blocks, THREADS, 0, s->stream>>>((const __nv_bfloat16 *)g->data, (const __nv_bfloat16 *)u->data,
                                                   (__nv_bfloat16 *)m->data, n, nvec);
  return cuda_check_launch("swiglu", err);
}

bool cuda_swiglu_bwd(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm, qs_tensor *dg,
                     qs_tensor *du, qs_error *err) {
  cuda_state *s = cuda_of(be);
  long n = qs_tensor_numel(g);
  if (n == 0) return true;
  long nvec = map_vectors(n, cuda_aligned16(g->data) && cuda_aligned16(u->data) && cuda_aligned16(dm->data) &&
                                 cuda_aligned16(dg->data) && cuda_aligned16(du->data));
  unsigned blocks;
  if (!map_grid(s, (const void *)swiglu_bwd_kernel, n, nvec, &blocks, err)) return false;
  swiglu_bwd_kernel<<<blocks, THREADS, 0, s->stream>>>(
      (const __nv_bfloat16 *)g->data, (const __nv_bfloat16 *)u->data, (const __nv_bfloat16 *)dm->data,
      (__nv_bfloat16 *)dg->data, (__nv_bfloat16 *)du->data, n, nvec);
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

__global__ static void convert_kernel(const void *src, bool src_bf16, void *dst, bool dst_bf16, long n, long nvec,
                                      bool accumulate) {
  GRID_STRIDE(v, nvec) {
    float a[VEC], b[VEC];
    cuda_load8(src, src_bf16, v, a);
    if (accumulate) {
      cuda_load8(dst, dst_bf16, v, b);
#pragma unroll
      for (int k = 0; k < VEC; k++) a[k] += b[k];
    }
    cuda_store8(dst, dst_bf16, v, a);
  }
  GRID_STRIDE(i, n - nvec * VEC) {
    long j = nvec * VEC + i;
    float v = cuda_load(src, src_bf16, j);
    if (accumulate) v += cuda_load(dst, dst_bf16, j);
    cuda_store(dst, dst_bf16, j, v);
  }
}

bool cuda_convert(cuda_state *s, const void *src, bool src_bf16, void *dst, bool dst_bf16, long n, bool accumulate,
                  qs_error *err) {
  if (n == 0) return true;
  long nvec = map_vectors(n, cuda_aligned16(src) && cuda_aligned16(dst));
  unsigned blocks;
  if (!map_grid(s, (const void *)convert_kernel, n, nvec, &blocks, err)) return false;
  convert_kernel<<<blocks, THREADS, 0, s->stream>>>(src, src_bf16, dst, dst_bf16, n, nvec, accumulate);
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
