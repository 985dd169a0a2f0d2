/* Bandwidth-bound ops of the CUDA backend (a build target, not a test):
 * SwiGLU, RMSNorm, QK-norm + RoPE (forward and backward), the residual add
 * and an f32 -> bf16 copy at the Qwen3-VL-4B shape with 8192 tokens a step
 * (hidden 2560, intermediate 9728, 32 query and 8 kv heads of 128).
 *
 * A sample is `calls` back-to-back calls between two device
 * synchronizations (the backend's stream is its own, so no events can be
 * recorded on it; several calls per sample amortize the synchronization),
 * divided by `calls`; each op reports the median of `samples` samples
 * after one warm-up call, in ms, and the effective bandwidth: the bytes the
 * op must move at least (each input read once, each output written once;
 * the small weight vectors and position tables not counted) over the time.
 * The H100's device-to-device copy moves about 3 TB/s.
 *
 * Usage: qsens_bench_elementwise [--samples N] [--calls N]   (default 20, 5) */
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

enum { TOKENS = 8192, HIDDEN = 2560, INTERMEDIATE = 9728, HEADS = 32, KV_HEADS = 8, HEAD_DIM = 128 };
enum { MAX_SAMPLES = 1000 };

static const double ROPE_THETA = 5000000.0;
static const float EPS = 1e-6f;

typedef enum op_kind {
  OP_SWIGLU,
  OP_SWIGLU_BWD,
  OP_RMSNORM,
  OP_RMSNORM_BWD,
  OP_RMSNORM_BWD_F32,
  OP_QKNORM_ROPE,
  OP_QKNORM_ROPE_BWD,
  OP_ADD,
  OP_COPY_F32_TO_BF16
} op_kind;

/* Every tensor an op may touch; the sizes are those of the largest use. */
typedef struct buffers {
  qs_tensor g, u, m, dg, du;             /* [T, intermediate] */
  qs_tensor x, y, dy, dx, x32, dx32, w;  /* [T, hidden], w [1, hidden] */
  qs_tensor rstd, head_rstd;             /* [T, 1], [T·heads, 1] */
  qs_tensor q, q_out, dq_out, dq, qk_w;  /* [T, heads·head_dim], qk_w [1, head_dim] */
  qs_tensor positions;                   /* [T] i32 */
  int heads;                             /* of q for the rope ops: 32 or 8 */
} buffers;

static void die(const char *what, const qs_error *err) {
  fprintf(stderr, "qsens_bench_elementwise: %s: %s\n", what, err ? err->msg : "failed");
  exit(1);
}

static void sync_device(void) {
  if (cudaDeviceSynchronize() != cudaSuccess) die("cudaDeviceSynchronize", NULL);
}

static unsigned xorshift(unsigned *state) {
  *state ^= *state << 13, *state ^= *state >> 17, *state ^= *state << 5;
  return *state;
}

/* A tensor of pseudo-random values in [mean - 2, mean + 2) (xorshift, fixed
 * seed): weights near 1, activations near 0. */
static void alloc_random(qs_backend *be, qs_dtype dtype, long rows, long cols, float mean, qs_tensor *t,
                         unsigned *state) {
  qs_error err;
  if (!qs_tensor_alloc(be, dtype, rows, cols, t, &err)) die("alloc", &err);
  long n = rows * cols;
  float *values = qs_malloc((size_t)n * sizeof(float));
  for (long i = 0; i < n; i++) values[i] = mean + (float)(xorshift(state) >> 8) / (float)(1u << 24) * 4.0f - 2.0f;
  void *host = values;
  qs_bf16 *narrow = NULL;
  if (dtype == QS_BF16) {
    narrow = qs_malloc((size_t)n * sizeof(qs_bf16));
    for (long i = 0; i < n; i++) narrow[i] = qs_f32_to_bf16(values[i]);
    host = narrow;
  }
  if (!qs_tensor_upload(be, t, host, &err)) die("upload", &err);
  free(narrow);
  free(values);
}

static void alloc_buffers(qs_backend *be, buffers *b) {
  unsigned state = 12345u;
  long qw = (long)HEADS * HEAD_DIM;
  qs_tensor *inter[] = {&b->g, &b->u, &b->m, &b->dg, &b->du};
  for (size_t i = 0; i < sizeof inter / sizeof inter[0]; i++)
    alloc_random(be, QS_BF16, TOKENS, INTERMEDIATE, 0.0f, inter[i], &state);
  qs_tensor *hidden[] = {&b->x, &b->y, &b->dy, &b->dx};
  for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++)
    alloc_random(be, QS_BF16, TOKENS, HIDDEN, 0.0f, hidden[i], &state);
  alloc_random(be, QS_F32, TOKENS, HIDDEN, 0.0f, &b->x32, &state);
  alloc_random(be, QS_F32, TOKENS, HIDDEN, 0.0f, &b->dx32, &state);
  alloc_random(be, QS_BF16, 1, HIDDEN, 1.0f, &b->w, &state);
  alloc_random(be, QS_F32, TOKENS, 1, 1.0f, &b->rstd, &state);
  alloc_random(be, QS_F32, (long)TOKENS * HEADS, 1, 1.0f, &b->head_rstd, &state);
  qs_tensor *heads[] = {&b->q, &b->q_out, &b->dq_out, &b->dq};
  for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++)
    alloc_random(be, QS_BF16, TOKENS, qw, 0.0f, heads[i], &state);
  alloc_random(be, QS_BF16, 1, HEAD_DIM, 1.0f, &b->qk_w, &state);
  int *pos = qs_malloc(TOKENS * sizeof(int));
  for (int t = 0; t < TOKENS; t++) pos[t] = t;
  qs_error err;
  if (!qs_tensor_alloc(be, QS_I32, TOKENS, 1, &b->positions, &err) || !qs_tensor_upload(be, &b->positions, pos, &err))
    die("alloc positions", &err);
  free(pos);
}

static void free_buffers(qs_backend *be, buffers *b) {
  qs_tensor *all[] = {&b->g,  &b->u,    &b->m,         &b->dg,     &b->du,     &b->x,      &b->y,
                      &b->dy, &b->dx,   &b->x32,       &b->dx32,   &b->w,      &b->rstd,   &b->head_rstd,
                      &b->q,  &b->q_out, &b->dq_out,   &b->dq,     &b->qk_w,   &b->positions};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qs_tensor_free(be, all[i]);
}

/* The leading rows·cols elements of t's buffer as a [rows, cols] tensor:
 * the 32-head buffers serve the 8-head (k projection) shape too. */
static qs_tensor leading(const qs_tensor *t, long rows, long cols) {
  qs_tensor v = *t;
  v.rows = rows;
  v.cols = cols;
  return v;
}

static bool run_op(qs_backend *be, buffers *b, op_kind op, qs_error *err) {
  long width = (long)b->heads * HEAD_DIM;
  qs_tensor q = leading(&b->q, TOKENS, width), out = leading(&b->q_out, TOKENS, width);
  qs_tensor dout = leading(&b->dq_out, TOKENS, width), dq = leading(&b->dq, TOKENS, width);
  qs_tensor rstd = leading(&b->head_rstd, (long)TOKENS * b->heads, 1);
  switch (op) {
  case OP_SWIGLU: return qs_op_swiglu(be, &b->g, &b->u, &b->m, err);
  case OP_SWIGLU_BWD: return qs_op_swiglu_bwd(be, &b->g, &b->u, &b->m, &b->dg, &b->du, err);
  case OP_RMSNORM: return qs_op_rmsnorm(be, &b->x, &b->w, EPS, &b->y, &b->rstd, err);
  case OP_RMSNORM_BWD: return qs_op_rmsnorm_bwd(be, &b->x, &b->w, &b->rstd, &b->dy, &b->dx, false, err);
  case OP_RMSNORM_BWD_F32: return qs_op_rmsnorm_bwd(be, &b->x32, &b->w, &b->rstd, &b->dy, &b->dx32, true, err);
  case OP_QKNORM_ROPE:
    return qs_op_qknorm_rope(be, &q, &b->qk_w, EPS, &b->positions, ROPE_THETA, HEAD_DIM, &out, &rstd, err);
  case OP_QKNORM_ROPE_BWD:
    return qs_op_qknorm_rope_bwd(be, &q, &b->qk_w, &rstd, &b->positions, ROPE_THETA, HEAD_DIM, &dout, &dq,
                                 err);
  case OP_ADD: return qs_op_add(be, &b->y, &b->x, err);
  case OP_COPY_F32_TO_BF16: return qs_op_copy(be, &b->y, &b->x32, err);
  }
  return false;
}

/* Median seconds per call. */
static double time_op(qs_backend *be, buffers *b, op_kind op, const char *name, int samples, int calls) {
  double t[MAX_SAMPLES];
  qs_error err;
  if (!run_op(be, b, op, &err)) die(name, &err); /* warm-up */
  for (int s = 0; s < samples; s++) {
    sync_device();
    double t0 = bench_now_s();
    for (int c = 0; c < calls; c++)
      if (!run_op(be, b, op, &err)) die(name, &err);
    sync_device();
    t[s] = (bench_now_s() - t0) / calls;
  }
  return bench_median(t, samples);
}

static void report(qs_backend *be, buffers *b, op_kind op, const char *name, const char *shape, double bytes,
                   int samples, int calls) {
  double s = time_op(be, b, op, name, samples, calls);
  printf("%-22s %-28s %8.3f ms %7.0f GB/s\n", name, shape, 1e3 * s, bytes / s * 1e-9);
  fflush(stdout);
}

int main(int argc, char **argv) {
  int samples = 20, calls = 5;
  for (int i = 1; i < argc; i++) {
    int *knob = strcmp(argv[i], "--samples") == 0 ? &samples : strcmp(argv[i], "--calls") == 0 ? &calls : NULL;
    if (knob && i + 1 < argc && atoi(argv[i + 1]) > 0) *knob = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: qsens_bench_elementwise [--samples N] [--calls N]\n");
      return 2;
    }
  }
  if (samples > MAX_SAMPLES) samples = MAX_SAMPLES;
  qs_error err;
  qs_backend *be = qs_cuda_backend_new(0, &err);
  if (!be) die("CUDA backend", &err);
  buffers b;
  memset(&b, 0, sizeof b);
  alloc_buffers(be, &b);
  printf("elementwise ops, %d tokens, median of %d samples of %d calls\n", TOKENS, samples, calls);
  const double bf = 2.0, f32 = 4.0, t = TOKENS, inter = t * INTERMEDIATE, hid = t * HIDDEN;
  report(be, &b, OP_SWIGLU, "swiglu", "g,u,m [8192, 9728] bf16", 3 * bf * inter, samples, calls);
  report(be, &b, OP_SWIGLU_BWD, "swiglu_bwd", "g,u,dm,dg,du [8192, 9728]", 5 * bf * inter, samples, calls);
  report(be, &b, OP_RMSNORM, "rmsnorm", "[8192, 2560] bf16", 2 * bf * hid + f32 * t, samples, calls);
  report(be, &b, OP_RMSNORM_BWD, "rmsnorm_bwd", "[8192, 2560] bf16", 3 * bf * hid + f32 * t, samples, calls);
  report(be, &b, OP_RMSNORM_BWD_F32, "rmsnorm_bwd f32 acc", "[8192, 2560] f32 x, dx +=",
         (3 * f32 + bf) * hid + f32 * t, samples, calls);
  report(be, &b, OP_ADD, "residual add", "[8192, 2560] bf16", 3 * bf * hid, samples, calls);
  report(be, &b, OP_COPY_F32_TO_BF16, "copy f32 -> bf16", "[8192, 2560]", (f32 + bf) * hid, samples, calls);
  const int rope_heads[] = {HEADS, KV_HEADS};
  for (int i = 0; i < 2; i++) {
    b.heads = rope_heads[i];
    double n = t * b.heads * HEAD_DIM, rows = t * b.heads;
    char shape[64];
    snprintf(shape, sizeof shape, "[8192, %d heads x %d]", b.heads, HEAD_DIM);
    report(be, &b, OP_QKNORM_ROPE, b.heads == HEADS ? "qknorm_rope (q)" : "qknorm_rope (k)", shape,
           2 * bf * n + f32 * rows, samples, calls);
    report(be, &b, OP_QKNORM_ROPE_BWD, b.heads == HEADS ? "qknorm_rope_bwd (q)" : "qknorm_rope_bwd (k)", shape,
           3 * bf * n + f32 * rows, samples, calls);
  }
  free_buffers(be, &b);
  qs_backend_destroy(be);
  return 0;
}
