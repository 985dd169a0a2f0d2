/* RMSNorm and the per-head QK-norm + half-split RoPE of the CUDA backend,
 * forward and backward. Sums are fp32 with a fixed reduction tree
 * (deterministic); the forward rounds where a bf16 model does (spec §3.1):
 * x̂ and w⊙x̂ in every norm, the cos/sin tables, each RoPE product and sum. */
#include "kernels/cuda_internal.h"

enum { ROW_THREADS = 256, HEADS_PER_BLOCK = 4, MAX_HEAD_DIM = 256 };

/* ---- RMSNorm: one block per row ------------------------------------------- */

/* r = (mean x² + eps)^(-1/2) from the fp32 sum of squares. */
__device__ static inline float rstd_of(float sum_sq, long n, float eps) {
  return (float)(1.0 / sqrt((double)sum_sq / (double)(n ? n : 1) + (double)eps));
}

__global__ static void rmsnorm_kernel(const __nv_bfloat16 *x, const void *w, bool w_bf16, float eps, long n,
                                      __nv_bfloat16 *y, float *rstd) {
  __shared__ float partial[32];
  const __nv_bfloat16 *xr = x + blockIdx.x * n;
  float ss = 0.0f;
  for (long j = threadIdx.x; j < n; j += blockDim.x) {
    float v = __bfloat162float(xr[j]);
    ss += v * v;
  }
  float r = rstd_of(cuda_block_sum(ss, partial), n, eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = r;
  for (long j = threadIdx.x; j < n; j += blockDim.x) {
    float xhat = cuda_round_bf16(__bfloat162float(xr[j]) * r);
    y[blockIdx.x * n + j] = __float2bfloat16_rn(cuda_load(w, w_bf16, j) * xhat);
  }
}

bool cuda_rmsnorm(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                  qs_tensor *rstd, qs_error *err) {
  if (x->rows == 0) return true;
  rmsnorm_kernel<<<(unsigned)x->rows, ROW_THREADS, 0, cuda_of(be)->stream>>>(
      (const __nv_bfloat16 *)x->data, w->data, w->dtype == QS_BF16, eps, x->cols, (__nv_bfloat16 *)y->data,
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
  long n;
} norm_bwd_args;

__global__ static void rmsnorm_bwd_kernel(norm_bwd_args a) {
  __shared__ float partial[32];
  long base = blockIdx.x * a.n;
  float r = a.rstd[blockIdx.x], dot = 0.0f;
  for (long j = threadIdx.x; j < a.n; j += blockDim.x)
    dot += __bfloat162float(a.dy[base + j]) * cuda_load(a.w, a.w_bf16, j) * (cuda_load(a.x, a.x_bf16, base + j) * r);
  float mean = cuda_block_sum(dot, partial) / (float)(a.n ? a.n : 1);
  for (long j = threadIdx.x; j < a.n; j += blockDim.x) {
    float ghat = __bfloat162float(a.dy[base + j]) * cuda_load(a.w, a.w_bf16, j);
    float d = r * (ghat - cuda_load(a.x, a.x_bf16, base + j) * r * mean);
    if (a.accumulate) d += cuda_load(a.dx, a.dx_bf16, base + j);
    cuda_store(a.dx, a.dx_bf16, base + j, d);
  }
}

bool cuda_rmsnorm_bwd(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                      const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err) {
  if (x->rows == 0) return true;
  norm_bwd_args a = {x->data,         x->dtype == QS_BF16, w->data,    w->dtype == QS_BF16,
                     (const float *)rstd->data, (const __nv_bfloat16 *)dy->data, dx->data, dx->dtype == QS_BF16,
                     accumulate,      x->cols};
  rmsnorm_bwd_kernel<<<(unsigned)x->rows, ROW_THREADS, 0, cuda_of(be)->stream>>>(a);
  return cuda_check_launch("rmsnorm_bwd", err);
}

/* ---- QK-norm + RoPE: one warp per (token, head) ----------------------------- */

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
  long rows;
  const float *rstd_in; /* backward */
  float *rstd_out;      /* forward */
  const __nv_bfloat16 *dout;
  __nv_bfloat16 *out;
} rope_args;

/* cos/sin of φ = p·θ_i: the product in fp32, cos/sin in double then rounded,
 * accurate at the large angles of late positions (no fast-math). */
__device__ static inline void rope_angle(const rope_args *a, int position, int i, float *c, float *s) {
  float phi = (float)position * a->inv_freq[i];
  double sd, cd;
  sincos((double)phi, &sd, &cd);
  *c = (float)cd;
  *s = (float)sd;
}

__device__ static inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* The normalized element j of a head, rounded as a bf16 model does. */
__device__ static inline float normed(const rope_args *a, const __nv_bfloat16 *x, float r, int j) {
  return cuda_round_bf16(cuda_load(a->w, a->w_bf16, j) * cuda_round_bf16(__bfloat162float(x[j]) * r));
}

__global__ static void qknorm_rope_kernel(rope_args a) {
  long item = (blockIdx.x * (long)blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x % 32, hd = a.head_dim, half = hd / 2;
  if (item >= a.rows * a.heads) return; /* whole warps leave together */
  long t = item / a.heads;
  const __nv_bfloat16 *x = a.raw + item * hd;
  float ss = 0.0f;
  for (int j = lane; j < hd; j += 32) {
    float v = __bfloat162float(x[j]);
    ss += v * v;
  }
  float r = rstd_of(warp_sum(ss), hd, a.eps);
  if (lane == 0) a.rstd_out[item] = r;
  __nv_bfloat16 *o = a.out + item * hd;
  for (int i = lane; i < half; i += 32) {
    float c, s;
    rope_angle(&a, a.positions[t], i, &c, &s);
    c = cuda_round_bf16(c);
    s = cuda_round_bf16(s);
    float u = normed(&a, x, r, i), v = normed(&a, x, r, i + half);
    o[i] = __float2bfloat16_rn(cuda_round_bf16(u * c) - cuda_round_bf16(v * s));
    o[i + half] = __float2bfloat16_rn(cuda_round_bf16(v * c) + cuda_round_bf16(u * s));
  }
}

/* RoPE by −φ (fp32), then the head's RMSNorm backward. */
__global__ static void qknorm_rope_bwd_kernel(rope_args a) {
  __shared__ float rotated[HEADS_PER_BLOCK][MAX_HEAD_DIM];
  long item = (blockIdx.x * (long)blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, hd = a.head_dim, half = hd / 2;
  if (item >= a.rows * a.heads) return;
  long t = item / a.heads;
  const __nv_bfloat16 *x = a.raw + item * hd, *d = a.dout + item * hd;
  float *g = rotated[warp];
  float r = a.rstd_in[item], dot = 0.0f;
  for (int i = lane; i < half; i += 32) {
    float c, s;
    rope_angle(&a, a.positions[t], i, &c, &s);
    float d0 = __bfloat162float(d[i]), d1 = __bfloat162float(d[i + half]);
    g[i] = (d0 * c + d1 * s) * cuda_load(a.w, a.w_bf16, i);
    g[i + half] = (d1 * c - d0 * s) * cuda_load(a.w, a.w_bf16, i + half);
    dot += g[i] * (__bfloat162float(x[i]) * r) + g[i + half] * (__bfloat162float(x[i + half]) * r);
  }
  float mean = warp_sum(dot) / (float)hd;
  __syncwarp();
  for (int j = lane; j < hd; j += 32)
    a.out[item * hd + j] = __float2bfloat16_rn(r * (g[j] - __bfloat162float(x[j]) * r * mean));
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
  long warps = a->rows * a->heads;
  if (warps == 0) return true;
  unsigned blocks = cuda_warp_blocks(warps, 32 * HEADS_PER_BLOCK);
  cudaStream_t st = cuda_of(be)->stream;
  if (backward) qknorm_rope_bwd_kernel<<<blocks, 32 * HEADS_PER_BLOCK, 0, st>>>(*a);
  else qknorm_rope_kernel<<<blocks, 32 * HEADS_PER_BLOCK, 0, st>>>(*a);
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
