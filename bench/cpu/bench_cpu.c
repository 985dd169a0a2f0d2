/* CPU backend throughput on the demo-sized model (4 layers, D 256, 8/2 heads
 * of 64, I 768, vocab 2048; the weights `qsens init-model` writes for the
 * demo preset, built in memory): forward and forward+backward tokens/s over
 * packed batches of caption-length sequences (10-30 tokens).
 *
 * Usage: qsens_bench_cpu [tokens per batch (4096)] [timed batches (5)]
 * Threads: OMP_NUM_THREADS / OPENBLAS_NUM_THREADS. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend/cpu/cpu_backend.h"
#include "core/mem.h"
#include "model/checkpoint.h"
#include "model/init_model.h"
#include "model/qwen3.h"

enum { SEED = 1, MIN_CAPTION = 10, MAX_CAPTION = 30 };

static void release_bench_lm(qs_lm *lm) {
  qs_bf16 **blocks = lm->storage;
  for (size_t i = 0; blocks && blocks[i]; i++) free(blocks[i]);
  free(blocks);
  free(lm->layer);
}

/* The demo preset's weights, generated element by element exactly as the
 * checkpoint writer does. */
static bool build_demo_lm(qs_lm *lm, qs_error *err) {
  qs_lm_config cfg;
  if (!qs_init_model_preset("demo", &cfg)) return qs_fail(err, QS_EXIT_RUNTIME, "no demo preset");
  size_t n = qs_lm_tensor_list(&cfg, QS_PREFIX_QWEN3_VL, !cfg.tied, NULL, 0);
  qs_lm_tensor *list = qs_malloc(n * sizeof *list);
  qs_lm_tensor_list(&cfg, QS_PREFIX_QWEN3_VL, !cfg.tied, list, n);
  qs_bf16 **blocks = qs_calloc(n + 1, sizeof *blocks);
  *lm = (qs_lm){.cfg = cfg, .storage = blocks, .release = release_bench_lm};
  lm->layer = qs_calloc((size_t)cfg.layers, sizeof *lm->layer);
  for (size_t i = 0; i < n; i++) {
    uint64_t numel = list[i].shape[0] * (list[i].ndim == 2 ? list[i].shape[1] : 1);
    blocks[i] = qs_malloc(numel * sizeof(qs_bf16));
    for (uint64_t e = 0; e < numel; e++) blocks[i][e] = qs_init_model_value(&cfg, SEED, &list[i], i, e);
    *qs_lm_slot(lm, &list[i]) = blocks[i];
  }
  if (cfg.tied) lm->lm_head = lm->embed;
  free(list);
  return true;
}

/* Whole captions of 10-30 tokens until the budget is full. */
typedef struct packed_batch {
  int32_t *ids, *cu;
  int n_seqs;
  long tokens;
} packed_batch;

static void make_batch(packed_batch *b, long budget, int vocab) {
  b->ids = qs_malloc((size_t)budget * sizeof(int32_t));
  b->cu = qs_malloc((size_t)(budget / MIN_CAPTION + 2) * sizeof(int32_t));
  b->cu[0] = 0;
  b->n_seqs = 0;
  b->tokens = 0;
  srand(SEED);
  for (;;) {
    int len = MIN_CAPTION + rand() % (MAX_CAPTION - MIN_CAPTION + 1);
    if (b->tokens + len > budget) break;
    for (int i = 0; i < len; i++) b->ids[b->tokens + i] = rand() % vocab;
    b->tokens += len;
    b->cu[++b->n_seqs] = (int32_t)b->tokens;
  }
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* LM parameters with the head counted once (DESIGN §5's N). */
static double lm_params(const qs_lm_config *c) {
  double d = c->hidden, q = (double)c->heads * c->head_dim, kv = (double)c->kv_heads * c->head_dim;
  double layer = d * q * 2 + d * kv * 2 + 3 * d * c->intermediate + 2 * d + 2 * c->head_dim;
  return c->layers * layer + (double)c->vocab * d * (c->tied ? 1 : 2) + d;
}

/* Seconds per batch over `iters` timed runs after one warm-up. */
static double time_runs(qs_qwen3 *m, const qs_qwen3_batch *b, bool backward, int iters, qs_qwen3_result *res,
                        qs_error *err) {
  if (!qs_qwen3_run(m, b, backward, NULL, res, err)) return -1;
  double t0 = now_seconds();
  for (int i = 0; i < iters; i++)
    if (!qs_qwen3_run(m, b, backward, NULL, res, err)) return -1;
  return (now_seconds() - t0) / iters;
}

static void report(const char *what, double seconds, long tokens, double flops_per_token) {
  printf("%-34s %9.0f tokens/s  %7.2f GFLOP/s  (%.1f ms/batch)\n", what, tokens / seconds,
         flops_per_token * tokens / seconds * 1e-9, seconds * 1e3);
}

int main(int argc, char **argv) {
  long budget = argc > 1 ? atol(argv[1]) : 4096;
  int iters = argc > 2 ? atoi(argv[2]) : 5;
  if (budget < MAX_CAPTION || iters < 1) {
    fprintf(stderr, "usage: qsens_bench_cpu [tokens per batch >= %d] [timed batches >= 1]\n", MAX_CAPTION);
    return 2;
  }
  qs_error err;
  qs_lm lm;
  if (!build_demo_lm(&lm, &err)) {
    fprintf(stderr, "qsens_bench_cpu: %s\n", err.msg);
    return 1;
  }
  packed_batch pb;
  make_batch(&pb, budget, lm.cfg.vocab);
  qs_qwen3_batch batch = {.n_seqs = pb.n_seqs, .cu_seqlens = pb.cu, .ids = pb.ids};
  double n = lm_params(&lm.cfg);
  printf("demo model: %d layers, D %d, %d/%d heads x %d, I %d, V %d, N = %.3g parameters\n", lm.cfg.layers,
         lm.cfg.hidden, lm.cfg.heads, lm.cfg.kv_heads, lm.cfg.head_dim, lm.cfg.intermediate, lm.cfg.vocab, n);
  printf("batch: %d sequences of %d-%d tokens, %ld tokens; %d timed batches\n", pb.n_seqs, MIN_CAPTION,
         MAX_CAPTION, pb.tokens, iters);
  printf("FLOPs per token (DESIGN 5): forward 2N, backward 2N, recompute 2N (attention excluded)\n");
  int status = 0;
  for (int keep = 0; keep <= 1 && status == 0; keep++) {
    qs_backend *be = qs_cpu_backend_new();
    qs_qwen3_options opt = {keep == 1, 0};
    qs_qwen3 *m = NULL;
    qs_qwen3_result res;
    double fwd = -1, full = -1;
    if (qs_qwen3_create(be, &lm, &opt, &m, &err)) {
      fwd = keep ? 0 : time_runs(m, &batch, false, iters, &res, &err);
      full = fwd < 0 ? -1 : time_runs(m, &batch, true, iters, &res, &err);
    }
    if (full < 0) {
      fprintf(stderr, "qsens_bench_cpu: %s\n", err.msg);
      status = 1;
    } else {
      if (!keep) report("forward", fwd, pb.tokens, 2 * n);
      report(keep ? "forward+backward (keep activations)" : "forward+backward (recompute)", full, pb.tokens,
             keep ? 4 * n : 6 * n);
      if (!keep) printf("loss %.4f over %ld targets\n", res.loss, res.n_valid);
    }
    qs_qwen3_destroy(m);
    qs_backend_destroy(be);
  }
  free(pb.ids);
  free(pb.cu);
  qs_lm_release(&lm);
  return status;
}
