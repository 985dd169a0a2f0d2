/* RMSNorm and the per-head QK-norm + half-split RoPE of the CUDA backend,
 * forward and backward. Sums are fp32 with a fixed reduction tree
 * (deterministic); the forward rounds where a bf16 model does (spec §3.1):
 * x̂ and w⊙x̂ in every norm, the cos/sin tables, each RoPE product and sum. */
#include "kernels/cuda_vec.h"

/* ROPE_STAGE: bf16 elements of a token's head rows staged at once (8 KiB). */
enum { ROW_THREADS = 256, ROPE_WARPS = 8, MAX_HEAD_DIM = 256, ROPE_STAGE = 4096 };

/* Shared memory a row block may stage its row(s) in: below the 48 KiB that
 * every architecture grants without an opt-in, beside the static arrays. */
enum { STAGE_BYTES = 40 * 1024 };

/* ---- RMSNorm: one block per row ------------------------------------------- */

/* r = (mean x² + eps)^(-1/2) from the fp32 sum of squares. */
__device__ static inline float rstd_of(float sum_sq, long n, float eps) {
  return (float)(1.0 / sqrt((double)sum_sq / (double)(n ? n : 1) + (double)eps));
}

/* Copies `bytes` (a multiple of 16, from a 16-byte aligned row) into shared
 * memory with 128-bit loads, so the row is read from global memory once and
 * in wide accesses; the sums then read it in their usual strided order. */
__device__ static inline void stage_row(const void *row, size_t bytes, void *stage) {
  for (size_t v = threadIdx.x; v < bytes / 16; v += blockDim.x) ((uint4 *)stage)[v] = ((const uint4 *)row)[v];
  __syncthreads();
}

/* The row vectors a row kernel moves 128 bits at a time: all of them when
 * the row length is a multiple of 8, every pointer is 16-byte aligned (so
 * is every row) and the staged bytes fit; none otherwise, and the kernel
 * reads global memory element by element as the scalar twin of each pass. */
static long row_vectors(long n, bool aligned, size_t stage_bytes_per_elem) {
  return aligned && n % VEC == 0 && (size_t)n * stage_bytes_per_elem <= STAGE_BYTES ? n / VEC : 0;
}

/* w ⊙ bf16(x·r), before the store rounds it. */
__device__ static inline float rms_value(float x, float w, float r) { return w * cuda_round_bf16(x * r); }

__global__ static void rmsnorm_kernel(const __nv_bfloat16 *x, const void *w, bool w_bf16, float eps, long n,
                                      long nvec, __nv_bfloat16 *y, float *rstd) {
  __shared__ float partial[32];
  extern __shared__ uint4 stage[];
  const __nv_bfloat16 *xr = x + blockIdx.x * n;
  if (nvec) {
    stage_row(xr, (size_t)n * sizeof *xr, stage);
    xr = (const __nv_bfloat16 *)stage;
  }
  float ss = 0.0f;
  for (long j = threadIdx.x; j < n; j += blockDim.x) {
    float v = __bfloat162float(xr[j]);
    ss += v * v;
  }
  float r = rstd_of(cuda_block_sum(ss, partial), n, eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  __nv_bfloat16 *yr = y + blockIdx.x * n;
  for (long v = threadIdx.x; v < nvec; v += blockDim.x) {
    float xv[VEC], wv[VEC], out[VEC];
    cuda_load8(xr, true, v, xv);
    cuda_load8(w, w_bf16, v, wv);
#pragma unroll
    for (int k = 0; k < VEC; k++) out[k] = rms_value(xv[k], wv[k], r);
    cuda_store8(yr, true, v, out);
  }
  for (long j = nvec * VEC + threadIdx.x; j < n; j += blockDim.x)
    yr[j] = __float2bfloat16_rn(rms_value(__bfloat162float(xr[j]), cuda_load(w, w_bf16, j), r));
}

bool cuda_rmsnorm(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                  qs_tensor *rstd, qs_error *err) {
  if (x->rows == 0) return true;
  long nvec = row_vectors(x->cols, cuda_aligned16(x->data) && cuda_aligned16(w->data) && cuda_aligned16(y->data),
                          sizeof(__nv_bfloat16));
  size_t shared = nvec ? (size_t)x->cols * sizeof(__nv_bfloat16) : 0;
  rmsnorm_kernel<<<(unsigned)x->rows, ROW_THREADS, shared, cuda_of(be)->stream>>>(
      (const __nv_bfloat16 *)x->data, w->data, w->dtype == QS_BF16, eps, x->cols, nvec, (__nv_bfloat16 *)y->data,
      (float *)rstd->data);
  return cuda_check_launch("rmsnorm", err);
}

/* dx (=|+=) r·(ĝ − x̂·mean(ĝ·x̂)), ĝ = dy ⊙ w, x̂ = x·r (fp32). x and dx
 * may be f32 (the residual stream and its gradient) or bf16. */
typedef struct norm_bwd_args {
  const void *x;
  bool x_bf16;
  const void *w;
  bool w_bf16;
  const float *rstd;
  const __nv_bfloat16 *dy;
  void *dx;
  bool dx_bf16, accumulate;
  long n, nvec;
} norm_bwd_args;

/* One element of dx before the accumulation and the store. */
__device__ static inline float rms_grad(float x, float dy, float w, float r, float mean) {
  float ghat = dy * w;
  return r * (ghat - x * r * mean);
}

__global__ static void rmsnorm_bwd_kernel(norm_bwd_args a) {
  __shared__ float partial[32];
  extern __shared__ uint4 stage[];
  long base = blockIdx.x * a.n;
  size_t x_size = a.x_bf16 ? sizeof(__nv_bfloat16) : sizeof(float);
  const void *x = (const char *)a.x + base * x_size;
  const __nv_bfloat16 *dy = a.dy + base;
  void *dx = (char *)a.dx + base * (a.dx_bf16 ? sizeof(__nv_bfloat16) : sizeof(float));
  if (a.nvec) { /* x, then dy behind it (n·x_size is a multiple of 16) */
    char *x_stage = (char *)stage, *dy_stage = x_stage + a.n * x_size;
    stage_row(x, a.n * x_size, x_stage);
    stage_row(dy, a.n * sizeof *dy, dy_stage);
    x = x_stage;
    dy = (const __nv_bfloat16 *)dy_stage;
  }
  float r = a.rstd[blockIdx.x], dot = 0.0f;
  for (long j = threadIdx.x; j < a.n; j += blockDim.x)
    dot += __bfloat162float(dy[j]) * cuda_load(a.w, a.w_bf16, j) * (cuda_load(x, a.x_bf16, j) * r);
  float mean = cuda_block_sum(dot, partial) / (float)(a.n ? a.n : 1);
  for (long v = threadIdx.x; v < a.nvec; v += blockDim.x) {
    float xv[VEC], dyv[VEC], wv[VEC], prev[VEC], d[VEC];
    cuda_load8(x, a.x_bf16, v, xv);
    cuda_load8(dy, true, v, dyv);
    cuda_load8(a.w, a.w_bf16, v, wv);
    if (a.accumulate) cuda_load8(dx, a.dx_bf16, v, prev);
#pragma unroll
    for (int k = 0; k < VEC; k++) {
      d[k] = rms_grad(xv[k], dyv[k], wv[k], r, mean);
      if (a.accumulate) d[k] += prev[k];
    }
    cuda_store8(dx, a.dx_bf16, v, d);
  }
  for (long j = a.nvec * VEC + threadIdx.x; j < a.n; j += blockDim.x) {
    float d = rms_grad(cuda_load(x, a.x_bf16, j), __bfloat162float(dy[j]), cuda_load(a.w, a.w_bf16, j), r, mean);
    if (a.accumulate) d += cuda_load(dx, a.dx_bf16, j);
    cuda_store(dx, a.dx_bf16, j, d);
  }
}

bool cuda_rmsnorm_bwd(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                      const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err) {
  if (x->rows == 0) return true;
  size_t x_size = x->dtype == QS_BF16 ? sizeof(__nv_bfloat16) : sizeof(float);
  bool aligned = cuda_aligned16(x->data) && cuda_aligned16(w->data) && cuda_aligned16(dy->data) &&
                 cuda_aligned16(dx->data);
  long nvec = row_vectors(x->cols, aligned, x_size + sizeof(__nv_bfloat16));
  norm_bwd_args a = {x->data,         x->dtype == QS_BF16, w->data,    w->dtype == QS_BF16,
                     (const float *)rstd->data, (const __nv_bfloat16 *)dy->data, dx->data, dx->dtype == QS_BF16,
                     accumulate,      x->cols,             nvec};
  size_t shared = nvec ? (size_t)x->cols * (x_size + sizeof(__nv_bfloat16)) : 0;
  rmsnorm_bwd_kernel<<<(unsigned)x->rows, ROW_THREADS, shared, cuda_of(be)->stream>>>(a);
  return cuda_check_launch("rmsnorm_bwd", err);
}

/* ---- QK-norm + RoPE: one block per token, one warp per head ----------------- */

/* Everything a head needs besides its row: passed by value, so the inverse
 * frequencies (computed on the host exactly as the CPU twin does) need no
 * upload. */
typedef struct rope_args {
  float inv_freq[MAX_HEAD_DIM / 2];
  const __nv_bfloat16 *raw;
  const void *w;
  bool w_bf16;
  const int *positions;
  float eps;
  int head_dim, heads;
  bool vec; /* every head row is 16-byte aligned and a multiple of 8 long */
  long rows;
  const float *rstd_in; /* backward */
  float *rstd_out;      /* forward */
  const __nv_bfloat16 *dout;
  __nv_bfloat16 *out;
} rope_args;

/* The token's cos/sin of φ = p·θ_i, computed once for all its heads: the
 * product in fp32, cos/sin in double then rounded to fp32, accurate at the
 * large angles of late positions (no fast-math). The caller synchronizes
 * the block before they are read. */
__device__ static inline void rope_table(const rope_args *a, int position, float *cos_t, float *sin_t) {
  for (int i = threadIdx.x; i < a->head_dim / 2; i += blockDim.x) {
    float phi = (float)position * a->inv_freq[i];
    double sd, cd;
    sincos((double)phi, &sd, &cd);
    cos_t[i] = (float)cd;
    sin_t[i] = (float)sd;
  }
}

__device__ static inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* Copies n bf16 (a group of a token's head rows, contiguous) between global
 * and shared memory with all the block's threads: 128-bit accesses when
 * a.vec, else element by element. The caller synchronizes the block. */
__device__ static inline void block_copy(__nv_bfloat16 *dst, const __nv_bfloat16 *src, long n, const rope_args *a) {
  if (a->vec)
    for (long v = threadIdx.x; v < n / VEC; v += blockDim.x) ((uint4 *)dst)[v] = ((const uint4 *)src)[v];
  else
    for (long j = threadIdx.x; j < n; j += blockDim.x) dst[j] = src[j];
}

/* The normalized element j of a head, rounded as a bf16 model does. */
__device__ static inline float normed(const rope_args *a, const __nv_bfloat16 *x, float r, int j) {
  return cuda_round_bf16(cuda_load(a->w, a->w_bf16, j) * cuda_round_bf16(__bfloat162float(x[j]) * r));
}

/* A token's heads go through shared memory in groups of up to ROPE_STAGE
 * elements (all 32 heads of 128 at once): the whole group is loaded by
 * every thread of the block at once, then warp h rotates head h of it in
 * place and the group leaves with wide stores. Lane l owns the pairs
 * (i, i + half) with i ≡ l mod 32: it alone reads and rewrites them. */
__global__ static void qknorm_rope_kernel(rope_args a) {
  __shared__ float cos_t[MAX_HEAD_DIM / 2], sin_t[MAX_HEAD_DIM / 2];
  __shared__ __align__(16) __nv_bfloat16 rows[ROPE_STAGE];
  long t = blockIdx.x;
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, hd = a.head_dim, half = hd / 2, group = ROPE_STAGE / hd;
  rope_table(&a, a.positions[t], cos_t, sin_t);
  for (int h0 = 0; h0 < a.heads; h0 += group) {
    int count = min(group, a.heads - h0);
    long first = t * a.heads + h0;
    block_copy(rows, a.raw + first * hd, (long)count * hd, &a);
    __syncthreads(); /* the rows (and, the first time, the table) are in */
    for (int h = warp; h < count; h += ROPE_WARPS) {
      __nv_bfloat16 *x = rows + h * hd;
      float ss = 0.0f;
      for (int j = lane; j < hd; j += 32) {
        float v = __bfloat162float(x[j]);
        ss += v * v;
      }
      float r = rstd_of(warp_sum(ss), hd, a.eps);
      if (lane == 0) a.rstd_out[first + h] = r;
      __syncwarp(); /* every lane has read the row before any pair is rewritten */
      for (int i = lane; i < half; i += 32) {
        float c = cuda_round_bf16(cos_t[i]), s = cuda_round_bf16(sin_t[i]);
        float u = normed(&a, x, r, i), v = normed(&a, x, r, i + half);
        x[i] = __float2bfloat16_rn(cuda_round_bf16(u * c) - cuda_round_bf16(v * s));
        x[i + half] = __float2bfloat16_rn(cuda_round_bf16(v * c) + cuda_round_bf16(u * s));
      }
    }
    __syncthreads();
    block_copy(a.out + first * hd, rows, (long)count * hd, &a);
    __syncthreads(); /* stored before the next group overwrites the rows */
  }
}

/* RoPE by −φ (fp32), then the head's RMSNorm backward; groups of heads as
 * in the forward. dx[j] is written over the staged x[j] by the lane that
 * alone reads it in that pass. */
__global__ static void qknorm_rope_bwd_kernel(rope_args a) {
  __shared__ float cos_t[MAX_HEAD_DIM / 2], sin_t[MAX_HEAD_DIM / 2];
  __shared__ float rotated[ROPE_WARPS][MAX_HEAD_DIM];
  __shared__ __align__(16) __nv_bfloat16 x_rows[ROPE_STAGE], d_rows[ROPE_STAGE];
  long t = blockIdx.x;
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, hd = a.head_dim, half = hd / 2, group = ROPE_STAGE / hd;
  rope_table(&a, a.positions[t], cos_t, sin_t);
  float *g = rotated[warp];
  for (int h0 = 0; h0 < a.heads; h0 += group) {
    int count = min(group, a.heads - h0);
    long first = t * a.heads + h0;
    block_copy(x_rows, a.raw + first * hd, (long)count * hd, &a);
    block_copy(d_rows, a.dout + first * hd, (long)count * hd, &a);
    __syncthreads();
    for (int h = warp; h < count; h += ROPE_WARPS) {
      __nv_bfloat16 *x = x_rows + h * hd;
      const __nv_bfloat16 *d = d_rows + h * hd;
      float r = a.rstd_in[first + h], dot = 0.0f;
      for (int i = lane; i < half; i += 32) {
        float c = cos_t[i], s = sin_t[i];
        float d0 = __bfloat162float(d[i]), d1 = __bfloat162float(d[i + half]);
        g[i] = (d0 * c + d1 * s) * cuda_load(a.w, a.w_bf16, i);
        g[i + half] = (d1 * c - d0 * s) * cuda_load(a.w, a.w_bf16, i + half);
        dot += g[i] * (__bfloat162float(x[i]) * r) + g[i + half] * (__bfloat162float(x[i + half]) * r);
      }
      float mean = warp_sum(dot) / (float)hd;
      __syncwarp();
      for (int j = lane; j < hd; j += 32) x[j] = __float2bfloat16_rn(r * (g[j] - __bfloat162float(x[j]) * r * mean));
      __syncwarp(); /* g is rewritten by the warp's next head */
    }
    __syncthreads();
    block_copy(a.out + first * hd, x_rows, (long)count * hd, &a);
    __syncthreads();
  }
}

static bool launch_rope(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *positions,
                        double theta, int head_dim, rope_args *a, bool backward, qs_error *err) {
  if (head_dim > MAX_HEAD_DIM)
    return qs_fail(err, QS_EXIT_RUNTIME, "CUDA backend: head_dim %d is above the supported %d", head_dim,
                   MAX_HEAD_DIM);
  for (int i = 0; i < head_dim / 2; i++) a->inv_freq[i] = qs_rope_inv_freq(theta, head_dim, i);
  a->raw = (const __nv_bfloat16 *)raw->data;
  a->w = w->data;
  a->w_bf16 = w->dtype == QS_BF16;
  a->positions = (const int *)positions->data;
  a->head_dim = head_dim;
  a->heads = (int)(raw->cols / head_dim);
  a->rows = raw->rows;
  a->vec = head_dim % VEC == 0 && cuda_aligned16(a->raw) && cuda_aligned16(a->out) &&
           (!backward || cuda_aligned16(a->dout));
  if (a->rows == 0 || a->heads == 0) return true;
  cudaStream_t st = cuda_of(be)->stream;
  if (backward) qknorm_rope_bwd_kernel<<<(unsigned)a->rows, 32 * ROPE_WARPS, 0, st>>>(*a);
  else qknorm_rope_kernel<<<(unsigned)a->rows, 32 * ROPE_WARPS, 0, st>>>(*a);
  return cuda_check_launch(backward ? "qknorm_rope_bwd" : "qknorm_rope", err);
}

bool cuda_qknorm_rope(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, float eps,
                      const qs_tensor *positions, double theta, int head_dim, qs_tensor *out, qs_tensor *rstd,
                      qs_error *err) {
  rope_args a;
  memset(&a, 0, sizeof a);
  a.eps = eps;
  a.rstd_out = (float *)rstd->data;
  a.out = (__nv_bfloat16 *)out->data;
  return launch_rope(be, raw, w, positions, theta, head_dim, &a, false, err);
}

bool cuda_qknorm_rope_bwd(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *rstd,
                          const qs_tensor *positions, double theta, int head_dim, const qs_tensor *dout,
                          qs_tensor *draw, qs_error *err) {
  rope_args a;
  memset(&a, 0, sizeof a);
  a.rstd_in = (const float *)rstd->data;
  a.dout = (const __nv_bfloat16 *)dout->data;
  a.out = (__nv_bfloat16 *)draw->data;
  return launch_rope(be, raw, w, positions, theta, head_dim, &a, true, err);
}
