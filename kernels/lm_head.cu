/* The fused lm_head + cross-entropy of the CUDA backend, in token chunks so
 * that only one chunk of logits [chunk, V] (bf16, as a bf16 model rounds
 * them) exists at a time. Per chunk: logits by cuBLASLt, the on_logits hook,
 * one block per row for logsumexp, loss and G_lm (written over the logits),
 * a fixed-tree sum of the chunk's row losses in fp64, the on_grad hook, and
 * dh = G_lm·W. The chunk sums are added on the host in chunk order, so the
 * loss is bit-identical run to run (no float atomics). */
#include <stdlib.h>

#include "kernels/cuda_internal.h"

enum { ROW_THREADS = 512, SUM_THREADS = 256 };

__device__ static inline float block_max(float v, float *shared32) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  float t = lane < warps ? shared32[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
  return t;
}

/* Row r of z [rows, vocab]: row_loss[r] = logsumexp(z) − z[c] (0 without a
 * target); with grad, z = grad_scale·(softmax(z) − onehot(c)) (0 without a
 * target). exp and the per-thread sums are fp32, the row total fp64. */
__global__ static void xent_kernel(__nv_bfloat16 *z, long vocab, const int *targets, bool grad, float grad_scale,
                                   double *row_loss) {
  __shared__ float fshared[32];
  __shared__ double dshared[32];
  __nv_bfloat16 *row = z + blockIdx.x * vocab;
  int c = targets[blockIdx.x];
  float m = -INFINITY;
  for (long j = threadIdx.x; j < vocab; j += blockDim.x) m = fmaxf(m, __bfloat162float(row[j]));
  m = block_max(m, fshared);
  float part = 0.0f;
  for (long j = threadIdx.x; j < vocab; j += blockDim.x) part += expf(__bfloat162float(row[j]) - m);
  double lse = (double)m + log(cuda_block_sum((double)part, dshared));
  bool has_target = c >= 0;
  if (threadIdx.x == 0) row_loss[blockIdx.x] = has_target ? lse - (double)__bfloat162float(row[c]) : 0.0;
  if (!grad) return;
  __syncthreads(); /* row[c] is read above before it is overwritten */
  float lse_f = (float)lse;
  for (long j = threadIdx.x; j < vocab; j += blockDim.x) {
    float g = 0.0f;
    if (has_target) {
      g = expf(__bfloat162float(row[j]) - lse_f) * grad_scale;
      if (j == c) g -= grad_scale;
    }
    row[j] = __float2bfloat16_rn(g);
  }
}

/* out[0] = Σ values[0..n) in a fixed tree (one block). */
__global__ static void sum_f64_kernel(const double *values, long n, double *out) {
  __shared__ double shared[32];
  double s = 0.0;
  for (long i = threadIdx.x; i < n; i += blockDim.x) s += values[i];
  s = cuda_block_sum(s, shared);
  if (threadIdx.x == 0) *out = s;
}

static bool check_targets(qs_backend *be, const qs_tensor *targets, long vocab, qs_error *err) {
  long n = qs_tensor_numel(targets);
  int *tg = (int *)qs_malloc((size_t)(n ? n : 1) * sizeof(int));
  bool ok = qs_tensor_download(be, tg, targets, err);
  for (long t = 0; ok && t < n; t++)
    if (tg[t] != -100 && (tg[t] < 0 || tg[t] >= vocab))
      ok = qs_fail(err, QS_EXIT_RUNTIME, "lm_head_xent: target %d of token %ld is outside [0, %ld) and not -100",
                   tg[t], t, vocab);
  free(tg);
  return ok;
}

typedef struct xent_job {
  const qs_tensor *h, *w, *targets;
  float grad_scale;
  const qs_lm_head_hooks *hooks;
  qs_tensor *dh;
  void *logits;
  double *row_loss, *chunk_sums;
} xent_job;

static bool run_chunk(qs_backend *be, const xent_job *job, long begin, long n, long index, qs_error *err) {
  cuda_state *s = cuda_of(be);
  long vocab = job->w->rows;
  qs_tensor x = qs_tensor_rows(job->h, begin, n);
  qs_tensor z = {job->logits, QS_BF16, n, vocab};
  if (!cuda_matmul_nt(be, &x, job->w, &z, false, err)) return false;
  if (job->hooks->on_logits && !job->hooks->on_logits(job->hooks->ctx, begin, &x, &z, err)) return false;
  xent_kernel<<<(unsigned)n, ROW_THREADS, 0, s->stream>>>((__nv_bfloat16 *)job->logits, vocab,
                                                         (const int *)job->targets->data + begin, job->dh != NULL,
                                                         job->grad_scale, job->row_loss);
  sum_f64_kernel<<<1, SUM_THREADS, 0, s->stream>>>(job->row_loss, n, job->chunk_sums + index);
  if (!cuda_check_launch("lm_head_xent", err)) return false;
  if (!job->dh) return true;
  if (job->hooks->on_grad && !job->hooks->on_grad(job->hooks->ctx, begin, &x, &z, err)) return false;
  qs_tensor d = qs_tensor_rows(job->dh, begin, n);
  return cuda_matmul_nn(be, &z, job->w, &d, false, err);
}

bool cuda_lm_head_xent(qs_backend *be, const qs_tensor *h, const qs_tensor *w, const qs_tensor *targets,
                       float grad_scale, long chunk_tokens, const qs_lm_head_hooks *hooks, qs_tensor *dh,
                       double *loss_sum, qs_error *err) {
  cuda_state *s = cuda_of(be);
  long tokens = h->rows, vocab = w->rows;
  *loss_sum = 0.0;
  if (!check_targets(be, targets, vocab, err)) return false;
  if (tokens == 0) return true;
  long chunk = chunk_tokens < tokens ? chunk_tokens : tokens, n_chunks = (tokens + chunk - 1) / chunk;
  xent_job job = {h, w, targets, grad_scale, hooks, dh, NULL, NULL, NULL};
  void *losses;
  if (!cuda_scratch(s, SCRATCH_LOGITS, (size_t)(chunk * vocab) * 2, &job.logits, err) ||
      !cuda_scratch(s, SCRATCH_ROW_LOSS, (size_t)(chunk + n_chunks) * sizeof(double), &losses, err))
    return false;
  job.row_loss = (double *)losses;
  job.chunk_sums = job.row_loss + chunk;
  for (long c = 0; c < n_chunks; c++) {
    long begin = c * chunk, n = tokens - begin < chunk ? tokens - begin : chunk;
    if (!run_chunk(be, &job, begin, n, c, err)) return false;
  }
  double *sums = (double *)qs_malloc((size_t)n_chunks * sizeof(double));
  bool ok = cuda_check(cudaMemcpyAsync(sums, job.chunk_sums, (size_t)n_chunks * sizeof(double),
                                       cudaMemcpyDeviceToHost, s->stream),
                       "lm_head_xent loss", err) &&
            cuda_sync(s, "lm_head_xent", err);
  for (long c = 0; ok && c < n_chunks; c++) *loss_sum += sums[c];
  free(sums);
  return ok;
}
