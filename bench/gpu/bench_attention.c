/* Attention benchmark of the CUDA backend (a build target, not a test):
 * forward and backward time and TFLOP/s of qs_op_attention /
 * qs_op_attention_bwd on the Qwen3-VL-4B attention shape (32 query heads,
 * 8 kv heads, head_dim 128) for packed batches of 16 x 512 and 2 x 4096
 * tokens.
 *
 * FLOPs are the usual causal count: the forward's two products
 * (Q·Kᵀ, P·V) over the n(n+1)/2 visible pairs of each sequence,
 * 4·hd·H·n(n+1)/2, and the backward 2.5 times that (Q·Kᵀ recomputed,
 * dO·Vᵀ, dS·K, Pᵀ·dO, dSᵀ·Q), whatever a kernel recomputes beyond that.
 * Times are host wall clock around `repeats` calls between two device
 * synchronizations (the backend's stream is its own), after one warm-up.
 *
 * Usage: qsens_bench_attention [--repeats N]   (default 20) */
#define _POSIX_C_SOURCE 200809L
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "core/bf16.h"
#include "core/mem.h"
#include "kernels/cuda_backend.h"

enum { HEADS = 32, KV_HEADS = 8, HEAD_DIM = 128, MAX_SEQS = 16 };

typedef struct workload {
  int n_seqs, seq_len;
} workload;

typedef struct attn_buffers {
  qs_tensor q, k, v, o, lse, d_o, dq, dk, dv, cu;
} attn_buffers;

static void die(const char *what, const qs_error *err) {
  fprintf(stderr, "qsens_bench_attention: %s: %s\n", what, err ? err->msg : "failed");
  exit(1);
}

/* A bf16 tensor of pseudo-random values in [-2, 2): scores of O(1), so the
 * softmax is neither uniform nor one-hot (xorshift, fixed seed). */
static void alloc_random(qs_backend *be, long rows, long cols, qs_tensor *t, unsigned *state) {
  qs_error err;
  if (!qs_tensor_alloc(be, QS_BF16, rows, cols, t, &err)) die("alloc", &err);
  long n = rows * cols;
  qs_bf16 *host = qs_malloc((size_t)n * sizeof(qs_bf16));
  for (long i = 0; i < n; i++) {
    *state ^= *state << 13, *state ^= *state >> 17, *state ^= *state << 5;
    host[i] = qs_f32_to_bf16((float)(*state >> 8) / (float)(1u << 24) * 4.0f - 2.0f);
  }
  if (!qs_tensor_upload(be, t, host, &err)) die("upload", &err);
  free(host);
}

static void alloc_buffers(qs_backend *be, const workload *w, const int *cu, attn_buffers *b) {
  long t = (long)w->n_seqs * w->seq_len, qw = (long)HEADS * HEAD_DIM, kvw = (long)KV_HEADS * HEAD_DIM;
  unsigned state = 12345u;
  qs_error err;
  alloc_random(be, t, qw, &b->q, &state);
  alloc_random(be, t, kvw, &b->k, &state);
  alloc_random(be, t, kvw, &b->v, &state);
  alloc_random(be, t, qw, &b->d_o, &state);
  if (!qs_tensor_alloc(be, QS_BF16, t, qw, &b->o, &err) || !qs_tensor_alloc(be, QS_F32, t, HEADS, &b->lse, &err) ||
      !qs_tensor_alloc(be, QS_BF16, t, qw, &b->dq, &err) || !qs_tensor_alloc(be, QS_BF16, t, kvw, &b->dk, &err) ||
      !qs_tensor_alloc(be, QS_BF16, t, kvw, &b->dv, &err) ||
      !qs_tensor_alloc(be, QS_I32, w->n_seqs + 1, 1, &b->cu, &err) || !qs_tensor_upload(be, &b->cu, cu, &err))
    die("alloc", &err);
}

static void free_buffers(qs_backend *be, attn_buffers *b) {
  qs_tensor *all[] = {&b->q, &b->k, &b->v, &b->o, &b->lse, &b->d_o, &b->dq, &b->dk, &b->dv, &b->cu};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qs_tensor_free(be, all[i]);
}

static void sync_device(void) {
  if (cudaDeviceSynchronize() != cudaSuccess) die("cudaDeviceSynchronize", NULL);
}

/* Seconds per call of the forward (backward = false) or the backward. */
static double time_op(qs_backend *be, attn_buffers *b, const qs_attn_shape *shape, bool backward, int repeats) {
  qs_error err;
  double t0 = 0.0;
  for (int r = -1; r < repeats; r++) { /* r = -1: warm-up */
    if (r == 0) sync_device(), t0 = bench_now_s();
    bool ok = backward ? qs_op_attention_bwd(be, &b->q, &b->k, &b->v, &b->o, &b->lse, &b->d_o, &b->cu, shape,
                                             &b->dq, &b->dk, &b->dv, &err)
                       : qs_op_attention(be, &b->q, &b->k, &b->v, &b->cu, shape, &b->o, &b->lse, &err);
    if (!ok) die(backward ? "attention_bwd" : "attention", &err);
  }
  sync_device();
  return (bench_now_s() - t0) / repeats;
}

static void run_workload(qs_backend *be, const workload *w, int repeats) {
  int cu[MAX_SEQS + 1];
  for (int s = 0; s <= w->n_seqs; s++) cu[s] = s * w->seq_len;
  attn_buffers b;
  alloc_buffers(be, w, cu, &b);
  qs_attn_shape shape = {HEADS, KV_HEADS, HEAD_DIM, w->n_seqs, w->seq_len, NULL, cu};
  double fwd = time_op(be, &b, &shape, false, repeats);
  double bwd = time_op(be, &b, &shape, true, repeats);
  double pairs = (double)w->n_seqs * w->seq_len * (w->seq_len + 1) / 2.0;
  double fwd_flop = 4.0 * HEAD_DIM * HEADS * pairs;
  printf("%2d x %4d tokens: forward %8.3f ms %6.1f TFLOP/s   backward %8.3f ms %6.1f TFLOP/s\n", w->n_seqs,
         w->seq_len, 1e3 * fwd, fwd_flop / fwd * 1e-12, 1e3 * bwd, 2.5 * fwd_flop / bwd * 1e-12);
  fflush(stdout);
  free_buffers(be, &b);
}

int main(int argc, char **argv) {
  int repeats = 20;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--repeats") == 0 && i + 1 < argc && atoi(argv[i + 1]) > 0) repeats = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: qsens_bench_attention [--repeats N]\n");
      return 2;
    }
  }
  qs_error err;
  qs_backend *be = qs_cuda_backend_new(0, &err);
  if (!be) die("CUDA backend", &err);
  printf("attention, %d/%d heads, head_dim %d, %d timed calls each\n", HEADS, KV_HEADS, HEAD_DIM, repeats);
  const workload workloads[] = {{16, 512}, {2, 4096}};
  for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++) run_workload(be, &workloads[i], repeats);
  qs_backend_destroy(be);
  return 0;
}
