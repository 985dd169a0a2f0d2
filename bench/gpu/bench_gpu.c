/* GPU benchmark on the Qwen3-VL-4B shape (a build target, not a test):
 * tokens/s, MFU and peak GPU memory of the CUDA backend, in this order:
 *   the bf16 GEMM peak;
 *   (d) the seed grid end to end (checkpoint load, one fused pass of 7
 *       pairs x 16/128/512 captions, the existing flow's logical batches of
 *       8 and 128 score samples, the search of every cell), with the step
 *       token budget chosen as qsens chooses it (engine/memory_plan.h);
 *   then for packed steps of ~8k tokens of caption-length sequences (10-30
 *   tokens), and again of 512-token sequences:
 *   (a) forward only, (a') forward + activation-gradient backward,
 *   (b) one-pair scoring (forward, backward with recompute, one candidate),
 *   (c) the seven seed pairs fused in one pass.
 * MFU is DESIGN.md §5's: counted FLOPs over the bf16 GEMM peak measured in
 * the same run (cuBLASLt 8192³ through the backend's linear op).
 *
 * Usage: qsens_bench_gpu CHECKPOINT_DIR [--init [PRESET]] [--repeats N] [--skip-512] [--cpu]
 *   --init     writes a random checkpoint of PRESET (default qwen3_vl_4b: 8 GB,
 *              `qsens init-model`'s generator) into CHECKPOINT_DIR first when
 *              it holds no config.json.
 *   --repeats  timed runs of (a)-(c) after one warm-up, median reported
 *              (default 1: the whole run fits the GPU host's 10 minutes).
 *   --cpu      runs the same harness on the CPU reference backend (peak memory
 *              not measured): a smoke run of the benchmark itself on a small
 *              preset where there is no GPU.
 * Every result and progress line (the engine's too) starts with the seconds
 * since the start and is flushed as soon as it is printed, so a run cut
 * short keeps what it measured and when; the table comes last. */
/* fopencookie (a GNU extension): the engine's progress lines get the
 * elapsed-time prefix on their way to stdout. */
#define _GNU_SOURCE
#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "backend/cpu/cpu_backend.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "engine/engine.h"
#include "engine/memory_plan.h"
#include "kernels/cuda_backend.h"
#include "model/checkpoint.h"
#include "model/init_model.h"
#include "model/qwen3.h"
#include "quant/format.h"
#include "report/results.h"
#include "text/batch.h"

enum {
  SEED = 1,
  MIN_CAPTION = 10,
  MAX_CAPTION = 30,
  STEP_TOKENS = 8192,   /* tokens per step of the timed workloads (the 16 GiB target's 8k) */
  STEP_TOKENS_CPU = 512, /* the CPU smoke run's steps */
  LONG_SEQ = 512,       /* the padded flow's row length, here as real 512-token sequences */
  SCORE_BATCHES = 2,    /* score batches per timed engine pass */
  GEMM_N = 8192,
  GEMM_N_CPU = 1024,    /* the CPU smoke run's product: seconds, not minutes */
  MAX_ROWS = 16,
};

static const char *SEED_PAIRS[] = {"wfp4_afp16", "wfp4_afp8",  "wfp8_afp16", "wfp8_afp8",
                                   "wint8_afp16", "wint8_afp8", "wint8_aint8"};
enum { NPAIRS = sizeof SEED_PAIRS / sizeof *SEED_PAIRS };
static const char *ONE_PAIR = "wfp8_afp8"; /* FP8_DEFAULT_CFG, the baseline's format */
static const size_t SEED_SIZES[] = {16, 128, 512};
enum { NSIZES = sizeof SEED_SIZES / sizeof *SEED_SIZES };
static const double SEED_EFFECTIVE_BITS = 8.0; /* autoquant.effective_bits default */

/* --cpu: the CPU reference backend instead of the GPU. */
static bool USE_CPU;

/* Side of the square product that measures the GEMM peak. */
static long gemm_size(void) { return USE_CPU ? GEMM_N_CPU : GEMM_N; }

/* ---- time-stamped output ----------------------------------------------------- */

static double START_S; /* set first thing in main */

static void print_stamp(void) { printf("[%7.1f s] ", bench_now_s() - START_S); }

/* One line of output with the elapsed-time prefix, flushed at once. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  print_stamp();
  va_list ap;
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
}

/* The stream given to the engine as its progress output: every line it
 * writes reaches stdout with the prefix. */
static ssize_t stamp_write(void *cookie, const char *data, size_t size) {
  bool *at_line_start = cookie;
  for (size_t i = 0; i < size; i++) {
    if (*at_line_start) print_stamp();
    putchar(data[i]);
    *at_line_start = data[i] == '\n';
  }
  fflush(stdout);
  return (ssize_t)size;
}

static FILE *stamped_stream(void) {
  static bool at_line_start = true;
  FILE *f = fopencookie(&at_line_start, "w", (cookie_io_functions_t){NULL, stamp_write, NULL, NULL});
  if (f) setvbuf(f, NULL, _IOLBF, 0);
  return f ? f : stdout;
}

/* ---- measurements and the final table ----------------------------------- */

typedef struct row {
  char what[64], shape[24];
  double tokens_per_s, mfu, peak_gib, seconds;
} row;

static row ROWS[MAX_ROWS];
static int NROWS;

static void add_row(const char *what, const char *shape, double tokens_per_s, double mfu, double peak_gib,
                    double seconds) {
  if (NROWS == MAX_ROWS) return;
  row *r = &ROWS[NROWS++];
  snprintf(r->what, sizeof r->what, "%s", what);
  snprintf(r->shape, sizeof r->shape, "%s", shape);
  r->tokens_per_s = tokens_per_s;
  r->mfu = mfu;
  r->peak_gib = peak_gib;
  r->seconds = seconds;
  say("RESULT %-34s %-10s %10.0f tok/s  MFU %5.1f%%  peak %6.2f GiB  %8.3f s\n", what, shape, tokens_per_s,
      100 * mfu, peak_gib, seconds);
}

static void print_table(double peak_tflops, const char *device) {
  printf("\nqsens benchmark, %s, bf16 GEMM peak %.1f TFLOP/s (%ld³, this run)\n", device, peak_tflops,
         gemm_size());
  printf("| %-34s | %-10s | %10s | %6s | %9s | %8s |\n", "workload", "sequences", "tokens/s", "MFU", "peak GiB",
         "seconds");
  printf("|%s|%s|%s|%s|%s|%s|\n", "------------------------------------", "------------", "------------",
         "--------", "-----------", "----------");
  for (int i = 0; i < NROWS; i++) {
    const row *r = &ROWS[i];
    printf("| %-34s | %-10s | %10.0f | %5.1f%% | %9.2f | %8.3f |\n", r->what, r->shape, r->tokens_per_s,
           100 * r->mfu, r->peak_gib, r->seconds);
  }
  printf("seconds: (a) one step; (b), (c) one pass of %d score steps; (d) the whole grid\n", SCORE_BATCHES);
}

/* ---- helpers -------------------------------------------------------------- */

static double gib(size_t bytes) { return (double)bytes / (1024.0 * 1024.0 * 1024.0); }

static qs_backend *new_backend(qs_error *err) {
  if (!USE_CPU) return qs_cuda_backend_new(0, err);
  qs_backend *be = qs_cpu_backend_new();
  if (!be) qs_fail(err, QS_EXIT_RUNTIME, "could not create the CPU backend");
  return be;
}

static double peak_gib(const qs_backend *be) { return USE_CPU ? 0.0 : gib(qs_cuda_backend_peak_bytes(be)); }

/* Waits for the device's queued work (CPU ops are synchronous). */
static bool device_sync(qs_error *err) {
  cudaError_t rc = USE_CPU ? cudaSuccess : cudaDeviceSynchronize();
  return rc == cudaSuccess || qs_fail(err, QS_EXIT_RUNTIME, "cudaDeviceSynchronize: %s", cudaGetErrorString(rc));
}

/* Deterministic xorshift64*: the same sequences every run. */
static uint64_t next_random(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ull;
}

/* DESIGN.md §5's N (lm_head counted once) and the searched Linears' weights
 * (every decoder Linear; the head is not searched by default). */
static double decoder_linear_params(const qs_lm_config *c) {
  double d = c->hidden, q = (double)c->heads * c->head_dim, kv = (double)c->kv_heads * c->head_dim;
  return c->layers * (2 * d * q + 2 * d * kv + 3 * d * c->intermediate);
}

static double lm_params(const qs_lm_config *c) {
  double norms = c->layers * (2.0 * c->hidden + 2.0 * c->head_dim) + c->hidden;
  return decoder_linear_params(c) + (double)c->vocab * c->hidden + norms;
}

/* ---- token sequences --------------------------------------------------------- */

typedef struct seq_set {
  qs_token_seq *seqs;
  int32_t *ids;
  size_t n;
  long tokens;
} seq_set;

/* n sequences of random ids below vocab - 1 (never the last id), of
 * caption length (10-30) when fixed_len is 0, else of fixed_len tokens. */
static seq_set make_seqs(size_t n, int fixed_len, int vocab, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  seq_set set = {qs_malloc(n * sizeof(qs_token_seq)), NULL, n, 0};
  size_t *len = qs_malloc(n * sizeof *len);
  for (size_t i = 0; i < n; i++) {
    len[i] = fixed_len ? (size_t)fixed_len
                       : (size_t)(MIN_CAPTION + next_random(&s) % (MAX_CAPTION - MIN_CAPTION + 1));
    set.tokens += (long)len[i];
  }
  set.ids = qs_malloc((size_t)set.tokens * sizeof(int32_t));
  long at = 0;
  for (size_t i = 0; i < n; i++) {
    set.seqs[i] = (qs_token_seq){set.ids + at, len[i]};
    for (size_t t = 0; t < len[i]; t++) set.ids[at++] = (int32_t)(next_random(&s) % (uint64_t)(vocab - 1));
  }
  free(len);
  return set;
}

static void free_seqs(seq_set *set) {
  free(set->seqs);
  free(set->ids);
}

/* Tokens of sequences [first, first + n). */
static long tokens_in(const seq_set *set, size_t first, size_t n) {
  long t = 0;
  for (size_t i = first; i < first + n; i++) t += (long)set->seqs[i].len;
  return t;
}

/* ---- (0) the GEMM peak ------------------------------------------------------- */

static bool upload_random(qs_backend *be, qs_tensor *t, uint64_t seed, qs_error *err) {
  long n = qs_tensor_numel(t);
  qs_bf16 *host = qs_malloc((size_t)n * sizeof *host);
  uint64_t s = seed;
  /* Uniform on [-1, 1): random data, never zeros (zeros run faster). */
  for (long i = 0; i < n; i++)
    host[i] = qs_f32_to_bf16((float)((double)(next_random(&s) >> 11) * 0x1p-52 - 1.0));
  bool ok = qs_tensor_upload(be, t, host, err);
  free(host);
  return ok;
}

/* Median TFLOP/s of single n³ bf16 products y = x·wᵀ (fp32 accumulate;
 * n = 8192 on the GPU), each timed between device syncs (a sync costs
 * microseconds, the product about 1.4 ms) after a warm-up. */
static bool gemm_peak(double *tflops, qs_error *err) {
  qs_backend *be = new_backend(err);
  if (!be) return false;
  long n = gemm_size();
  qs_dtype dt = be->act_dtype;
  qs_tensor x = {0}, w = {0}, y = {0};
  bool ok = qs_tensor_alloc(be, QS_BF16, n, n, &w, err) && qs_tensor_alloc(be, dt, n, n, &x, err) &&
            qs_tensor_alloc(be, dt, n, n, &y, err) && upload_random(be, &w, 12, err);
  /* x in the activation dtype: the bf16 w through a copy op (random, not zeros). */
  ok = ok && qs_op_copy(be, &x, &w, err);
  enum { WARMUP = 5, TIMED = 20 };
  double sec[TIMED];
  for (int i = 0; ok && i < WARMUP; i++) ok = qs_op_linear(be, &x, &w, &y, false, err);
  ok = ok && device_sync(err);
  for (int i = 0; ok && i < TIMED; i++) {
    double t0 = bench_now_s();
    ok = qs_op_linear(be, &x, &w, &y, false, err) && device_sync(err);
    sec[i] = bench_now_s() - t0;
  }
  if (ok) *tflops = 2.0 * (double)n * (double)n * (double)n / bench_median(sec, TIMED) * 1e-12;
  qs_tensor_free(be, &x);
  qs_tensor_free(be, &w);
  qs_tensor_free(be, &y);
  qs_backend_destroy(be);
  return ok;
}

/* ---- (a) the model alone -------------------------------------------------------- */

typedef struct bench {
  const qs_lm *lm;
  double n_params, searched_params, peak_flops;
  int repeats;
} bench;

/* Seconds of one product, median of 5 after a warm-up (between device syncs). */
static bool time_product(qs_backend *be, const qs_tensor *a, const qs_tensor *w, qs_tensor *out, bool backward,
                         double *seconds, qs_error *err) {
  enum { TIMED = 5 };
  double sec[TIMED];
  bool ok = (backward ? qs_op_linear_bwd(be, a, w, out, false, err) : qs_op_linear(be, a, w, out, false, err)) &&
            device_sync(err);
  for (int i = 0; ok && i < TIMED; i++) {
    double t0 = bench_now_s();
    ok = (backward ? qs_op_linear_bwd(be, a, w, out, false, err) : qs_op_linear(be, a, w, out, false, err)) &&
         device_sync(err);
    sec[i] = bench_now_s() - t0;
  }
  if (ok) *seconds = bench_median(sec, TIMED);
  return ok;
}

/* The rate of the forward (x·Wᵀ) and backward (dy·W) products of one
 * decoder layer plus the head at one step's tokens, on random data: what
 * the model's own GEMMs reach, the ceiling of its MFU (the 8192³ peak is
 * higher than these narrower shapes give). */
static bool gemm_mix(const bench *b, long tokens, qs_error *err) {
  const qs_lm_config *c = &b->lm->cfg;
  long shapes[][2] = {{(long)c->heads * c->head_dim, c->hidden},   {(long)c->kv_heads * c->head_dim, c->hidden},
                      {(long)c->kv_heads * c->head_dim, c->hidden}, {c->hidden, (long)c->heads * c->head_dim},
                      {c->intermediate, c->hidden},                 {c->intermediate, c->hidden},
                      {c->hidden, c->intermediate}};
  qs_backend *be = new_backend(err);
  if (!be) return false;
  double flops = 0, seconds = 0;
  bool ok = true;
  for (int backward = 0; ok && backward <= 1; backward++) {
    for (size_t i = 0; ok && i < sizeof shapes / sizeof shapes[0]; i++) {
      long out = shapes[i][0], in = shapes[i][1];
      qs_tensor w = {0}, a16 = {0}, a = {0}, y = {0};
      double t = 0;
      long a_cols = backward ? out : in;
      /* The input in the activation dtype through a copy op from random bf16 (never zeros). */
      ok = qs_tensor_alloc(be, QS_BF16, out, in, &w, err) && upload_random(be, &w, 40 + i, err) &&
           qs_tensor_alloc(be, QS_BF16, tokens, a_cols, &a16, err) && upload_random(be, &a16, 90 + i, err) &&
           qs_tensor_alloc(be, be->act_dtype, tokens, a_cols, &a, err) && qs_op_copy(be, &a, &a16, err) &&
           qs_tensor_alloc(be, be->act_dtype, tokens, backward ? in : out, &y, err) &&
           time_product(be, &a, &w, &y, backward, &t, err);
      flops += 2.0 * (double)tokens * (double)out * (double)in;
      seconds += t;
      qs_tensor_free(be, &w);
      qs_tensor_free(be, &a16);
      qs_tensor_free(be, &a);
      qs_tensor_free(be, &y);
    }
  }
  if (ok)
    say("the decoder layer's GEMMs (forward and backward products, %ld tokens): %.1f TFLOP/s, %.1f%% of the "
        "8192^3 peak\n",
        tokens, flops / seconds * 1e-12, 100.0 * flops / seconds / b->peak_flops);
  qs_backend_destroy(be);
  return ok;
}

/* Median seconds of op(ctx) (between device syncs, after a warm-up). */
typedef bool (*timed_op)(qs_backend *be, void *ctx, qs_error *err);
static bool time_op(qs_backend *be, timed_op op, void *ctx, double *seconds, qs_error *err) {
  enum { TIMED = 5 };
  double sec[TIMED];
  bool ok = op(be, ctx, err) && device_sync(err);
  for (int i = 0; ok && i < TIMED; i++) {
    double t0 = bench_now_s();
    ok = op(be, ctx, err) && device_sync(err);
    sec[i] = bench_now_s() - t0;
  }
  if (ok) *seconds = bench_median(sec, TIMED);
  return ok;
}

/* Operands of the forward's element-wise ops at one step's tokens. */
typedef struct fwd_ops {
  const qs_lm_config *cfg;
  qs_tensor h, norm_w, y, rstd, q_raw, q, qk_w, q_rstd, pos, g, u, m, targets, head;
} fwd_ops;

static bool op_rmsnorm(qs_backend *be, void *c, qs_error *err) {
  fwd_ops *o = c;
  return qs_op_rmsnorm(be, &o->h, &o->norm_w, 1e-6f, &o->y, &o->rstd, err);
}
static bool op_qknorm_rope(qs_backend *be, void *c, qs_error *err) {
  fwd_ops *o = c;
  return qs_op_qknorm_rope(be, &o->q_raw, &o->qk_w, 1e-6f, &o->pos, o->cfg->rope_theta, o->cfg->head_dim, &o->q,
                           &o->q_rstd, err);
}
static bool op_swiglu(qs_backend *be, void *c, qs_error *err) {
  fwd_ops *o = c;
  return qs_op_swiglu(be, &o->g, &o->u, &o->m, err);
}
static bool op_add(qs_backend *be, void *c, qs_error *err) {
  fwd_ops *o = c;
  return qs_op_add(be, &o->y, &o->h, err);
}
static bool op_head(qs_backend *be, void *c, qs_error *err) {
  fwd_ops *o = c;
  double loss = 0;
  return qs_op_lm_head_xent(be, &o->h, &o->head, &o->targets, 1.0f, 4096, NULL, NULL, &loss, err);
}

/* Random bf16 contents for t (in its dtype, through a bf16 copy). */
static bool fill_random(qs_backend *be, qs_tensor *t, uint64_t seed, qs_error *err) {
  qs_tensor r = {0};
  bool ok = qs_tensor_alloc(be, QS_BF16, t->rows, t->cols, &r, err) && upload_random(be, &r, seed, err) &&
            qs_op_copy(be, t, &r, err);
  qs_tensor_free(be, &r);
  return ok;
}

/* Where a forward step's time goes outside the decoder GEMMs: each
 * element-wise op of the forward timed alone at the step's tokens, times
 * its calls per forward (attention is timed by qsens_bench_attention). */
static bool forward_ops(const bench *b, long tokens, qs_error *err) {
  const qs_lm_config *c = &b->lm->cfg;
  qs_backend *be = new_backend(err);
  if (!be) return false;
  qs_dtype act = be->act_dtype;
  long qw = (long)c->heads * c->head_dim;
  fwd_ops o = {.cfg = c};
  int32_t *ids = qs_malloc((size_t)tokens * sizeof(int32_t));
  for (long t = 0; t < tokens; t++) ids[t] = (int32_t)(t % c->vocab);
  bool ok = qs_tensor_alloc(be, act, tokens, c->hidden, &o.h, err) && fill_random(be, &o.h, 3, err) &&
            qs_tensor_alloc(be, QS_BF16, c->hidden, 1, &o.norm_w, err) && upload_random(be, &o.norm_w, 4, err) &&
            qs_tensor_alloc(be, act, tokens, c->hidden, &o.y, err) &&
            qs_tensor_alloc(be, QS_F32, tokens, 1, &o.rstd, err) &&
            qs_tensor_alloc(be, act, tokens, qw, &o.q_raw, err) && fill_random(be, &o.q_raw, 5, err) &&
            qs_tensor_alloc(be, act, tokens, qw, &o.q, err) &&
            qs_tensor_alloc(be, QS_BF16, c->head_dim, 1, &o.qk_w, err) && upload_random(be, &o.qk_w, 6, err) &&
            qs_tensor_alloc(be, QS_F32, tokens * c->heads, 1, &o.q_rstd, err) &&
            qs_tensor_alloc(be, QS_I32, tokens, 1, &o.pos, err) && qs_tensor_upload(be, &o.pos, ids, err) &&
            qs_tensor_alloc(be, act, tokens, c->intermediate, &o.g, err) && fill_random(be, &o.g, 7, err) &&
            qs_tensor_alloc(be, act, tokens, c->intermediate, &o.u, err) && fill_random(be, &o.u, 8, err) &&
            qs_tensor_alloc(be, act, tokens, c->intermediate, &o.m, err) &&
            qs_tensor_alloc(be, QS_I32, tokens, 1, &o.targets, err) && qs_tensor_upload(be, &o.targets, ids, err) &&
            qs_tensor_alloc(be, QS_BF16, c->vocab, c->hidden, &o.head, err) && upload_random(be, &o.head, 9, err);
  struct {
    const char *name;
    timed_op op;
    int calls;
  } ops[] = {{"rmsnorm", op_rmsnorm, 2 * c->layers + 1}, {"qknorm_rope (q)", op_qknorm_rope, c->layers},
             {"swiglu", op_swiglu, c->layers},           {"residual add", op_add, 2 * c->layers},
             {"lm_head + loss", op_head, 1}};
  double total = 0;
  for (size_t i = 0; ok && i < sizeof ops / sizeof ops[0]; i++) {
    double t = 0;
    ok = time_op(be, ops[i].op, &o, &t, err);
    if (ok) say("forward op %-16s %8.3f ms a call, x%d = %7.2f ms a step\n", ops[i].name, 1e3 * t, ops[i].calls,
                1e3 * t * ops[i].calls);
    total += t * ops[i].calls;
  }
  if (ok) say("forward ops above: %.1f ms a step of %ld tokens (the k half of qknorm_rope and attention not included)\n",
              1e3 * total, tokens);
  qs_tensor *all[] = {&o.h, &o.norm_w, &o.y, &o.rstd, &o.q_raw, &o.q, &o.qk_w, &o.q_rstd, &o.pos, &o.g, &o.u, &o.m,
                      &o.targets, &o.head};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qs_tensor_free(be, all[i]);
  free(ids);
  qs_backend_destroy(be);
  return ok;
}

/* One packed batch of sequences [0, n) of a set (positions 0..len-1 each,
 * every next token a target). */
typedef struct packed {
  int32_t *cu;
  qs_qwen3_batch batch;
} packed;

static packed pack(const seq_set *set, size_t n) {
  packed p = {qs_malloc((n + 1) * sizeof(int32_t)), {0}};
  p.cu[0] = 0;
  for (size_t i = 0; i < n; i++) p.cu[i + 1] = p.cu[i] + (int32_t)set->seqs[i].len;
  p.batch = (qs_qwen3_batch){.n_seqs = (int)n, .cu_seqlens = p.cu, .ids = set->ids};
  return p;
}

/* Median seconds of qs_qwen3_run (which ends with the loss download, so the
 * wall clock covers the device work) after a warm-up run (cuBLASLt's
 * heuristics, the arena); the model's backend is fresh, so its peak is this
 * workload's. */
static bool time_model(const bench *b, const qs_qwen3_batch *batch, bool backward, const char *what,
                       const char *shape, double flops_per_token, qs_error *err) {
  qs_backend *be = new_backend(err);
  if (!be) return false;
  qs_qwen3_options opt = {false, 0};
  qs_qwen3 *m = NULL;
  double *sec = qs_malloc((size_t)b->repeats * sizeof *sec);
  bool ok = qs_qwen3_create(be, b->lm, &opt, &m, err);
  qs_qwen3_result res;
  ok = ok && qs_qwen3_run(m, batch, backward, NULL, &res, err);
  for (int i = 0; ok && i < b->repeats; i++) {
    double t0 = bench_now_s();
    ok = qs_qwen3_run(m, batch, backward, NULL, &res, err);
    sec[i] = bench_now_s() - t0;
  }
  if (ok) {
    double s = bench_median(sec, b->repeats);
    long tokens = qs_batch_tokens(batch);
    add_row(what, shape, (double)tokens / s, flops_per_token * (double)tokens / s / b->peak_flops,
            peak_gib(be), s);
  }
  free(sec);
  qs_qwen3_destroy(m);
  qs_backend_destroy(be);
  return ok;
}

/* ---- (b), (c) scoring passes of the engine ---------------------------------------- */

/* <|endoftext|> of the Qwen vocabulary, or the last id of a smaller one
 * (the demo preset of a --cpu smoke run): the pad row of the amax. */
static int32_t pad_token(const qs_lm *lm) {
  return lm->cfg.vocab > QS_PAD_TOKEN_ID ? QS_PAD_TOKEN_ID : lm->cfg.vocab - 1;
}

static void make_cells(qs_engine_cell *cells, const char *const *pairs, size_t npairs, const size_t *sizes,
                       size_t nsizes) {
  for (size_t p = 0; p < npairs; p++)
    for (size_t s = 0; s < nsizes; s++)
      cells[p * nsizes + s] = (qs_engine_cell){pairs[p], QS_ACT_AMAX_PAIR_DEFAULT, sizes[s], qs_cell_new()};
}

static void free_cells(qs_engine_cell *cells, size_t n) {
  for (size_t i = 0; i < n; i++) qs_cell_free(cells[i].out);
}

/* Scoring throughput of a pass of the given pairs over SCORE_BATCHES packed
 * batches of per_batch sequences each (one logical batch per step, as the
 * engine wants), calibrated on one batch: the engine's own score_s (forward,
 * backward with recompute and every candidate, weight fake quant included)
 * after a warm-up pass, median over the repeats. */
static bool time_scoring(const bench *b, const seq_set *set, size_t per_batch, const char *const *pairs,
                         size_t npairs, const char *what, const char *shape, qs_error *err) {
  qs_backend *be = new_backend(err);
  if (!be) return false;
  size_t n = per_batch * SCORE_BATCHES;
  qs_batch_opts bopts = qs_batch_opts_default();
  bopts.batch_size = per_batch;
  bopts.score_size = n;
  bopts.calib_batches = 1;
  bopts.pad_id = pad_token(b->lm);
  qs_engine_data data = {set->seqs, n, &bopts};
  qs_engine_options opts = qs_engine_options_default();
  qs_engine_cell *cells = qs_malloc(npairs * sizeof *cells);
  double *sec = qs_malloc((size_t)b->repeats * sizeof *sec);
  bool ok = true;
  for (int i = -1; ok && i < b->repeats; i++) { /* pass -1 warms up */
    make_cells(cells, pairs, npairs, &n, 1);
    ok = qs_engine_run_pass(be, b->lm, &data, cells, npairs, &opts, err);
    if (ok && i >= 0) sec[i] = cells[0].out->timings.score_s;
    free_cells(cells, npairs);
  }
  if (ok) {
    double s = bench_median(sec, b->repeats);
    long tokens = tokens_in(set, 0, n);
    double flops = (6 * b->n_params + 2 * (double)npairs * b->searched_params) * (double)tokens;
    add_row(what, shape, (double)tokens / s, flops / s / b->peak_flops, peak_gib(be), s);
  }
  free(sec);
  free(cells);
  qs_backend_destroy(be);
  return ok;
}

static bool bench_shape(const bench *b, int fixed_len, qs_error *err) {
  const char *shape = fixed_len ? "512" : "captions";
  /* ~8k tokens per step: 16 sequences of 512, or ~410 captions of ~20. */
  size_t step = USE_CPU ? STEP_TOKENS_CPU : STEP_TOKENS;
  size_t per_batch = fixed_len ? step / (size_t)fixed_len : step / ((MIN_CAPTION + MAX_CAPTION) / 2);
  seq_set set = make_seqs(per_batch * SCORE_BATCHES, fixed_len, b->lm->cfg.vocab, fixed_len ? 7 : 5);
  packed p = pack(&set, per_batch);
  say("%s: %zu sequences, %ld tokens per step\n", shape, per_batch, qs_batch_tokens(&p.batch));
  bool ok = time_model(b, &p.batch, false, "(a) forward", shape, 2 * b->n_params, err) &&
            time_model(b, &p.batch, true, "(a') forward+backward (recompute)", shape, 6 * b->n_params, err) &&
            time_scoring(b, &set, per_batch, &ONE_PAIR, 1, "(b) one pair (wfp8_afp8)", shape, err) &&
            time_scoring(b, &set, per_batch, SEED_PAIRS, NPAIRS, "(c) seven pairs fused", shape, err);
  free(p.cu);
  free_seqs(&set);
  return ok;
}

/* ---- (d) the seed grid end to end ------------------------------------------------------- */

enum { NSEED_CELLS = NPAIRS * NSIZES };

/* The seed grid's step token budget as qsens picks it when
 * backend.token_budget is null (engine/memory_plan.h): the largest step that
 * fits the free device memory (the CPU default with --cpu); the plan for the
 * largest step the pass can run is printed, and later beside the peak. */
static bool seed_step_tokens(qs_backend *be, const qs_lm *lm, long pass_tokens, qs_engine_options *opts,
                             double *planned_gib, qs_error *err) {
  qs_memory_request r = {&lm->cfg, qs_dtype_size(be->act_dtype), false, opts->lm_chunk_tokens,
                         opts->include_lm_head, 0, 0};
  qs_memory_cell cells[NSEED_CELLS];
  for (size_t p = 0; p < NPAIRS; p++) {
    qs_qpair pair;
    if (!qs_qpair_parse(SEED_PAIRS[p], &pair, err)) return false;
    for (size_t k = 0; k < NSIZES; k++)
      cells[p * NSIZES + k] = (qs_memory_cell){pair.weight, pair.act, pair.dynamic_act_amax, SEED_SIZES[k]};
  }
  qs_memory_count_quantizers(cells, NSEED_CELLS, &r);
  size_t free_bytes = 0, total_bytes = 0;
  if (!USE_CPU && !qs_cuda_backend_free_bytes(be, &free_bytes, &total_bytes, err)) return false;
  opts->step_tokens = qs_memory_step_tokens(&r, free_bytes);
  qs_memory_plan plan = qs_memory_plan_make(&r, pass_tokens < opts->step_tokens ? pass_tokens : opts->step_tokens);
  if (opts->step_tokens == 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "the weights (%.2f GiB) and fixed scratch (%.2f GiB) do not fit %.2f GiB free",
                   gib(plan.weight_bytes), gib(plan.fixed_bytes), gib(free_bytes));
  *planned_gib = gib(plan.total_bytes);
  /* Reserved up front as the app does (kernels/cuda_backend.h). */
  if (!USE_CPU && !qs_cuda_backend_reserve(be, plan.total_bytes, err)) return false;
  say("seed grid memory plan: weights %.2f GiB, fixed scratch %.2f GiB, %.3f MiB per token, %d weight and %d "
      "activation quantizers; step budget %ld tokens (%s, the pass has %ld); planned total %.2f GiB\n",
      gib(plan.weight_bytes), gib(plan.fixed_bytes), (double)plan.per_token_bytes / (1024.0 * 1024.0),
      r.weight_quantizers, r.act_quantizers, opts->step_tokens, USE_CPU ? "CPU default" : "fitted to free memory",
      pass_tokens, *planned_gib);
  return true;
}

/* The backend's op table with its weight import timed, so that the seed
 * grid can report the model's weight upload apart from the pass. An import
 * returns once the host bytes are read; only its last staged copies may
 * still be in flight, so the sum is the upload time within a few ms. */
static const qs_backend_ops *UNTIMED_OPS;
static qs_backend_ops TIMED_OPS;
static double IMPORT_S;
static size_t IMPORT_BYTES;

static bool timed_import(qs_backend *be, const void *host, size_t bytes, void **ptr, qs_error *err) {
  double t0 = bench_now_s();
  bool ok = UNTIMED_OPS->import(be, host, bytes, ptr, err);
  IMPORT_S += bench_now_s() - t0;
  IMPORT_BYTES += bytes;
  return ok;
}

static void time_imports(qs_backend *be) {
  UNTIMED_OPS = be->ops;
  TIMED_OPS = *be->ops;
  TIMED_OPS.import = timed_import;
  be->ops = &TIMED_OPS;
  IMPORT_S = 0.0;
  IMPORT_BYTES = 0;
}

/* Load, one fused pass of 7 pairs x 3 sizes over 512 captions with the
 * existing flow's batching (8 per step, 128 score samples), and the search
 * of every cell; the FLOPs counted are the calibration forwards over all
 * 512 captions plus the scoring of the first 128. */
static bool seed_grid(const char *dir, const bench *b, qs_error *err) {
  double t0 = bench_now_s();
  qs_lm lm;
  if (!qs_checkpoint_load(dir, &lm, qs_warn_to_stream, stderr, err)) return false;
  qs_backend *be = new_backend(err);
  if (!be) {
    qs_lm_release(&lm);
    return false;
  }
  time_imports(be);
  double t_load = bench_now_s() - t0;
  seq_set set = make_seqs(SEED_SIZES[NSIZES - 1], 0, lm.cfg.vocab, 3);
  qs_batch_opts bopts = qs_batch_opts_default();
  bopts.pad_id = pad_token(&lm);
  qs_engine_data data = {set.seqs, set.n, &bopts};
  qs_engine_options opts = qs_engine_options_default();
  opts.progress = stamped_stream(); /* one line a step: where the time goes, also in a run cut short */
  opts.progress_label = "seed grid";
  qs_engine_cell cells[NSEED_CELLS];
  make_cells(cells, SEED_PAIRS, NPAIRS, SEED_SIZES, NSIZES);
  double planned_gib = 0;
  bool ok = seed_step_tokens(be, &lm, set.tokens, &opts, &planned_gib, err) &&
            qs_engine_run_pass(be, &lm, &data, cells, NSEED_CELLS, &opts, err);
  double t_search = bench_now_s();
  for (size_t i = 0; ok && i < NSEED_CELLS; i++) ok = qs_cell_finish(cells[i].out, SEED_EFFECTIVE_BITS, err);
  double t1 = bench_now_s();
  if (ok) {
    const qs_cell_timings *tm = &cells[NSEED_CELLS - 1].out->timings;
    long score_tokens = tokens_in(&set, 0, bopts.score_size);
    double flops = 2 * b->n_params * (double)set.tokens +
                   (6 * b->n_params + 2.0 * NPAIRS * b->searched_params) * (double)score_tokens;
    say("seed grid: load %.2f s, calibrate %.2f s (%ld tokens), score %.2f s (%ld tokens), search %.2f s; "
        "peak %.2f GiB of %.2f GiB planned\n",
        t_load, tm->calibrate_s, set.tokens, tm->score_s, score_tokens, t1 - t_search, peak_gib(be), planned_gib);
    say("seed grid weight upload (part of the pass): %.2f GiB in %.2f s, %.1f GB/s\n", gib(IMPORT_BYTES), IMPORT_S,
        IMPORT_S > 0.0 ? (double)IMPORT_BYTES / IMPORT_S / 1e9 : 0.0);
    add_row("(d) seed grid 7x3, load..search", "captions", (double)set.tokens / (t1 - t0),
            flops / (t1 - t0) / b->peak_flops, peak_gib(be), t1 - t0);
  }
  free_cells(cells, NSEED_CELLS);
  free_seqs(&set);
  qs_backend_destroy(be);
  qs_lm_release(&lm);
  return ok;
}

/* ---- main ----------------------------------------------------------------------------- */

static bool ensure_checkpoint(const char *dir, const char *preset, qs_error *err) {
  char *config = qs_path_join(dir, "config.json");
  bool present = access(config, F_OK) == 0;
  free(config);
  if (present) return true;
  qs_init_model_options o = {preset, SEED, 0, 0, NULL, NULL};
  double t0 = bench_now_s();
  if (!qs_init_model_write(dir, &o, err)) return false;
  say("wrote the %s checkpoint to %s in %.1f s\n", preset, dir, bench_now_s() - t0);
  return true;
}

typedef struct args {
  const char *dir, *preset; /* preset: NULL unless --init */
  bool skip_long;
  int repeats;
} args;

static bool parse_args(int argc, char **argv, args *a) {
  *a = (args){argc > 1 ? argv[1] : NULL, NULL, false, 1};
  if (!a->dir || a->dir[0] == '-') return false;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--init"))
      a->preset = i + 1 < argc && argv[i + 1][0] != '-' ? argv[++i] : "qwen3_vl_4b";
    else if (!strcmp(argv[i], "--skip-512"))
      a->skip_long = true;
    else if (!strcmp(argv[i], "--cpu"))
      USE_CPU = true;
    else if (!strcmp(argv[i], "--repeats") && i + 1 < argc && (a->repeats = atoi(argv[++i])) >= 1)
      continue;
    else
      return false;
  }
  return true;
}

/* A failed section prints its error at once and the next one still runs,
 * so one failure does not cost the other measurements. */
static bool section(bool ok, const char *name, qs_error *err) {
  if (!ok) {
    fprintf(stderr, "[%7.1f s] qsens_bench_gpu: %s: %s\n", bench_now_s() - START_S, name, err->msg);
    fflush(stderr);
  }
  return ok;
}

/* Everything after the GEMM peak: the model's workloads, both shapes. */
static bool run_workloads(const args *a, double peak_tflops, qs_error *err) {
  double t0 = bench_now_s();
  qs_lm lm;
  if (!section(qs_checkpoint_load(a->dir, &lm, qs_warn_to_stream, stderr, err), "checkpoint", err)) return false;
  say("checkpoint loaded (mmap) in %.2f s\n", bench_now_s() - t0);
  bench b = {&lm, lm_params(&lm.cfg), decoder_linear_params(&lm.cfg), peak_tflops * 1e12, a->repeats};
  say("model: %d layers, D %d, %d/%d heads x %d, I %d, V %d%s; N = %.4g, searched Linears Ns = %.4g\n",
      lm.cfg.layers, lm.cfg.hidden, lm.cfg.heads, lm.cfg.kv_heads, lm.cfg.head_dim, lm.cfg.intermediate,
      lm.cfg.vocab, lm.cfg.tied ? ", tied" : "", b.n_params, b.searched_params);
  say("FLOPs per token (DESIGN 5): forward 2N = %.4g, backward 2N, recompute 2N, each candidate 2Ns = %.4g; "
      "attention not counted\n",
      2 * b.n_params, 2 * b.searched_params);
  /* The seed grid first: it is the headline number and the cheapest section. */
  bool ok = section(seed_grid(a->dir, &b, err), "seed grid", err);
  ok = section(gemm_mix(&b, USE_CPU ? STEP_TOKENS_CPU : STEP_TOKENS, err), "GEMM shapes", err) && ok;
  ok = section(forward_ops(&b, USE_CPU ? STEP_TOKENS_CPU : STEP_TOKENS, err), "forward ops", err) && ok;
  ok = section(bench_shape(&b, 0, err), "caption-length sequences", err) && ok;
  ok = (a->skip_long || section(bench_shape(&b, LONG_SEQ, err), "512-token sequences", err)) && ok;
  qs_lm_release(&lm);
  return ok;
}

int main(int argc, char **argv) {
  START_S = bench_now_s();
  args a;
  if (!parse_args(argc, argv, &a)) {
    fprintf(stderr, "usage: qsens_bench_gpu CHECKPOINT_DIR [--init [PRESET]] [--repeats N >= 1] [--skip-512] [--cpu]\n");
    return QS_EXIT_USAGE;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *device = "CPU reference backend";
  struct cudaDeviceProp prop;
  if (!USE_CPU) {
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
      fprintf(stderr, "qsens_bench_gpu: no CUDA device (--cpu runs the harness on the CPU backend)\n");
      return QS_EXIT_RUNTIME;
    }
    device = prop.name;
  }
  qs_error err = {0};
  double peak_tflops = 0;
  bool ok = (!a.preset || ensure_checkpoint(a.dir, a.preset, &err)) && gemm_peak(&peak_tflops, &err);
  if (ok) say("device %s; bf16 GEMM peak: %.1f TFLOP/s\n", device, peak_tflops);
  if (!ok) fprintf(stderr, "[%7.1f s] qsens_bench_gpu: %s\n", bench_now_s() - START_S, err.msg);
  ok = ok && run_workloads(&a, peak_tflops, &err);
  print_table(peak_tflops, device);
  return ok ? 0 : err.status ? err.status : QS_EXIT_RUNTIME;
}
