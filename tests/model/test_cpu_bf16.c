/* The CPU backend's bf16 mode (qs_cpu_backend_new_bf16) against its f32
 * mode on the same bf16-valued inputs:
 *   - ops without intermediate roundings (linear, add, swiglu_bwd) give the
 *     f32 mode's result rounded once to bf16, bit for bit (the same sgemm and
 *     loops run on the same values);
 *   - swiglu and rmsnorm give the formulas of spec qwen3-vl-lm.md §3.1 bit
 *     for bit: m = bf16(bf16(silu(g))·u), y = bf16(w·bf16(x·r));
 *   - the lm_head's hooks see bf16 chunk rows and logits, the logits being
 *     the f32 mode's rounded to bf16;
 *   - a tiny model's forward + backward: every G is bf16, and the loss and
 *     each G stay within the bf16 noise of the f32 mode (the bounds of
 *     test_cuda_model, whose GPU keeps the same precision: loss 1e-2, G
 *     6e-2 norm-wise) without being equal to it (the mode does round). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "core/bf16.h"
#include "core/mem.h"
#include "model/qwen3.h"
#include "tiny_lm.h"

static test_rng rng = {2024};

/* n random bf16 values N(mean, std). */
static float *rand_bf16_values(long n, double mean, double std) {
  float *v = qs_malloc((size_t)(n ? n : 1) * sizeof(float));
  for (long i = 0; i < n; i++) v[i] = qs_round_bf16((float)(mean + std * rng_normal(&rng)));
  return v;
}

/* A tensor of be's activation dtype holding v. */
static qs_tensor act_tensor(qs_backend *be, const float *v, long rows, long cols) {
  qs_tensor t;
  qs_error err;
  CHECK(qs_tensor_alloc(be, be->act_dtype, rows, cols, &t, &err));
  long n = rows * cols;
  if (be->act_dtype == QS_F32) {
    CHECK(qs_tensor_upload(be, &t, v, &err));
    return t;
  }
  qs_bf16 *h = qs_malloc((size_t)(n ? n : 1) * sizeof(qs_bf16));
  for (long i = 0; i < n; i++) h[i] = qs_f32_to_bf16(v[i]);
  CHECK(qs_tensor_upload(be, &t, h, &err));
  free(h);
  return t;
}

/* The values of an f32 or bf16 tensor (host memory on the CPU backend). */
static float *values(const qs_tensor *t) {
  long n = qs_tensor_numel(t);
  float *v = qs_malloc((size_t)(n ? n : 1) * sizeof(float));
  for (long i = 0; i < n; i++)
    v[i] = t->dtype == QS_BF16 ? qs_bf16_to_f32(((const qs_bf16 *)t->data)[i]) : ((const float *)t->data)[i];
  return v;
}

/* Elements of a that differ from bf16(b) (b rounded once). */
static long differs_from_rounded(const float *a, const float *b, long n) {
  long bad = 0;
  for (long i = 0; i < n; i++) bad += memcmp(&a[i], &(float){qs_round_bf16(b[i])}, sizeof(float)) != 0;
  return bad;
}

typedef struct modes {
  qs_backend *f32, *bf16;
} modes;

/* ---- ops ---------------------------------------------------------------- */

static void test_linear_add(modes *m) {
  enum { T = 9, K = 40, N = 24 };
  float *x = rand_bf16_values(T * K, 0.0, 1.0), *wv = rand_bf16_values(N * K, 0.0, 0.2);
  qs_bf16 wb[N * K];
  for (int i = 0; i < N * K; i++) wb[i] = qs_f32_to_bf16(wv[i]);
  qs_error err;
  float *y[2], *sum[2];
  qs_backend *bes[2] = {m->f32, m->bf16};
  for (int b = 0; b < 2; b++) {
    qs_backend *be = bes[b];
    qs_tensor w, xt = act_tensor(be, x, T, K), yt = act_tensor(be, x, T, N);
    CHECK(qs_tensor_import(be, wb, QS_BF16, N, K, &w, &err));
    CHECK(qs_op_linear(be, &xt, &w, &yt, false, &err));
    y[b] = values(&yt);
    qs_tensor head = {xt.data, xt.dtype, T, N}; /* x's first T·N values */
    CHECK(qs_op_add(be, &yt, &head, &err));
    sum[b] = values(&yt);
    qs_tensor_free(be, &xt), qs_tensor_free(be, &yt), qs_tensor_unimport(be, &w);
  }
  CHECK_INT(differs_from_rounded(y[1], y[0], T * N), 0);
  float *want = qs_malloc(T * N * sizeof(float));
  for (int i = 0; i < T * N; i++) want[i] = y[1][i] + x[i];
  CHECK_INT(differs_from_rounded(sum[1], want, T * N), 0);
  for (int b = 0; b < 2; b++) free(y[b]), free(sum[b]);
  free(want), free(x), free(wv);
}

static float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

static void test_swiglu(modes *m) {
  enum { N = 500 };
  float *g = rand_bf16_values(N, 0.0, 2.0), *u = rand_bf16_values(N, 0.0, 1.0), *dm = rand_bf16_values(N, 0.0, 1.0);
  float *out[2], *dgs[2];
  qs_backend *bes[2] = {m->f32, m->bf16};
  qs_error err;
  for (int b = 0; b < 2; b++) {
    qs_backend *be = bes[b];
    qs_tensor gt = act_tensor(be, g, N, 1), ut = act_tensor(be, u, N, 1), mt = act_tensor(be, u, N, 1);
    qs_tensor dmt = act_tensor(be, dm, N, 1), dgt = act_tensor(be, u, N, 1), dut = act_tensor(be, u, N, 1);
    CHECK(qs_op_swiglu(be, &gt, &ut, &mt, &err));
    CHECK(qs_op_swiglu_bwd(be, &gt, &ut, &dmt, &dgt, &dut, &err));
    out[b] = values(&mt);
    dgs[b] = values(&dgt);
    qs_tensor ts[] = {gt, ut, mt, dmt, dgt, dut};
    for (int i = 0; i < 6; i++) qs_tensor_free(be, &ts[i]);
  }
  long formula_misses = 0;
  for (int i = 0; i < N; i++) {
    float want = qs_round_bf16(qs_round_bf16(g[i] * sigmoid(g[i])) * u[i]);
    formula_misses += memcmp(&out[1][i], &want, sizeof want) != 0;
  }
  CHECK_INT(formula_misses, 0);
  CHECK(differs_from_rounded(out[1], out[0], N) > 0); /* silu's own rounding shows */
  CHECK_INT(differs_from_rounded(dgs[1], dgs[0], N), 0);
  for (int b = 0; b < 2; b++) free(out[b]), free(dgs[b]);
  free(g), free(u), free(dm);
}

static void test_rmsnorm(modes *m) {
  enum { T = 5, D = 64 };
  float *x = rand_bf16_values(T * D, 0.1, 1.5), *wv = rand_bf16_values(D, 1.0, 0.3);
  qs_bf16 wb[D];
  for (int i = 0; i < D; i++) wb[i] = qs_f32_to_bf16(wv[i]);
  qs_backend *be = m->bf16;
  qs_error err;
  qs_tensor w, rstd, xt = act_tensor(be, x, T, D), yt = act_tensor(be, x, T, D);
  CHECK(qs_tensor_import(be, wb, QS_BF16, D, 1, &w, &err));
  CHECK(qs_tensor_alloc(be, QS_F32, T, 1, &rstd, &err));
  CHECK(qs_op_rmsnorm(be, &xt, &w, 1e-6f, &yt, &rstd, &err));
  float *y = values(&yt), *r = values(&rstd);
  long misses = 0;
  for (int t = 0; t < T; t++) {
    double ss = 0.0;
    for (int j = 0; j < D; j++) ss += (double)x[t * D + j] * x[t * D + j];
    CHECK_REL(r[t], 1.0 / sqrt(ss / D + 1e-6), 1e-6, 0.0);
    for (int j = 0; j < D; j++) {
      float want = qs_round_bf16(wv[j] * qs_round_bf16(x[t * D + j] * r[t]));
      misses += memcmp(&y[t * D + j], &want, sizeof want) != 0;
    }
  }
  CHECK_INT(misses, 0);
  free(y), free(r), free(x), free(wv);
  qs_tensor_free(be, &xt), qs_tensor_free(be, &yt), qs_tensor_free(be, &rstd), qs_tensor_unimport(be, &w);
}

/* ---- lm_head hooks ------------------------------------------------------ */

typedef struct head_seen {
  float *logits; /* the first chunk's logits */
  long rows, cols;
  bool x_ok, g_ok; /* every hook saw tensors of the activation dtype */
  qs_dtype act;
} head_seen;

static bool see_logits(void *ctx, long row_begin, const qs_tensor *x, qs_tensor *logits, qs_error *err) {
  (void)err;
  head_seen *s = ctx;
  s->x_ok = s->x_ok && x->dtype == s->act && logits->dtype == s->act;
  if (row_begin == 0) {
    s->logits = values(logits);
    s->rows = logits->rows, s->cols = logits->cols;
  }
  return true;
}

static bool see_grad(void *ctx, long row_begin, const qs_tensor *x, const qs_tensor *g, qs_error *err) {
  (void)row_begin, (void)err;
  head_seen *s = ctx;
  s->g_ok = s->g_ok && x->dtype == s->act && g->dtype == s->act;
  return true;
}

static void test_lm_head(modes *m) {
  enum { T = 7, D = 32, V = 50 };
  float *h = rand_bf16_values(T * D, 0.0, 1.0), *wv = rand_bf16_values(V * D, 0.0, 0.3);
  qs_bf16 wb[V * D];
  for (int i = 0; i < V * D; i++) wb[i] = qs_f32_to_bf16(wv[i]);
  int32_t tg[T] = {3, 7, -100, 49, 0, 12, 5};
  qs_backend *bes[2] = {m->f32, m->bf16};
  head_seen seen[2];
  double loss[2];
  float *dh[2];
  qs_error err;
  for (int b = 0; b < 2; b++) {
    qs_backend *be = bes[b];
    seen[b] = (head_seen){NULL, 0, 0, true, true, be->act_dtype};
    qs_tensor w, targets, ht = act_tensor(be, h, T, D), dht = act_tensor(be, h, T, D);
    CHECK(qs_tensor_import(be, wb, QS_BF16, V, D, &w, &err));
    CHECK(qs_tensor_import(be, tg, QS_I32, T, 1, &targets, &err));
    qs_lm_head_hooks hooks = {see_logits, see_grad, &seen[b]};
    CHECK(qs_op_lm_head_xent(be, &ht, &w, &targets, 1.0f / 6.0f, 4, &hooks, &dht, &loss[b], &err));
    dh[b] = values(&dht);
    qs_tensor_free(be, &ht), qs_tensor_free(be, &dht), qs_tensor_unimport(be, &w), qs_tensor_unimport(be, &targets);
  }
  CHECK(seen[1].x_ok && seen[1].g_ok && seen[0].x_ok && seen[0].g_ok);
  CHECK_INT(seen[1].rows * seen[1].cols, 4 * V);
  CHECK_INT(differs_from_rounded(seen[1].logits, seen[0].logits, 4 * V), 0);
  /* bf16 logits move the loss by ~2^-9 of a logit: 1e-2 of the sum */
  CHECK_REL(loss[1], loss[0], 1e-2, 0.0);
  double num = 0.0, den = 0.0;
  for (int i = 0; i < T * D; i++) num += (dh[1][i] - dh[0][i]) * (dh[1][i] - dh[0][i]), den += dh[0][i] * dh[0][i];
  CHECK(sqrt(num / den) < 2e-2);
  for (int b = 0; b < 2; b++) free(seen[b].logits), free(dh[b]);
  free(h), free(wv);
}

/* ---- whole model -------------------------------------------------------- */

enum { LAYERS = 2, SLOTS = LAYERS + 1, TOKENS = 16 };

typedef struct grads {
  float *g[SLOTS][QS_LIN_COUNT];
  long cols[SLOTS][QS_LIN_COUNT];
  bool all_act; /* every G had the activation dtype */
  qs_dtype act;
} grads;

static bool record(void *ctx, const qs_linear_site *site, const qs_tensor *x, const qs_tensor *g, qs_error *err) {
  (void)x, (void)err;
  grads *s = ctx;
  int l = site->kind == QS_LIN_LM_HEAD ? LAYERS : site->layer;
  s->all_act = s->all_act && g->dtype == s->act;
  if (!s->g[l][site->kind]) {
    s->g[l][site->kind] = qs_calloc((size_t)(TOKENS * g->cols), sizeof(float));
    s->cols[l][site->kind] = g->cols;
  }
  float *v = values(g);
  memcpy(s->g[l][site->kind] + site->row_begin * g->cols, v, (size_t)qs_tensor_numel(g) * sizeof(float));
  free(v);
  return true;
}

static double run_model(qs_backend *be, const qs_lm *lm, grads *s) {
  static const int32_t cu[] = {0, 5, 16};
  int32_t ids[TOKENS];
  for (int i = 0; i < TOKENS; i++) ids[i] = (i * 7 + 3) % lm->cfg.vocab;
  qs_qwen3_batch batch = {0, 2, cu, ids, NULL, NULL, NULL, 1, NULL};
  qs_qwen3_options opt = {false, 6};
  qs_qwen3 *m = NULL;
  qs_error err;
  memset(s, 0, sizeof *s);
  s->all_act = true;
  s->act = be->act_dtype;
  CHECK(qs_qwen3_create(be, lm, &opt, &m, &err));
  qs_qwen3_visitor v = {NULL, record, true, s};
  qs_qwen3_result r = {0};
  CHECK(qs_qwen3_run(m, &batch, true, &v, &r, &err));
  qs_qwen3_destroy(m);
  return r.loss;
}

static void test_model(modes *m) {
  qs_lm lm;
  qs_lm_config cfg = tiny_lm_config();
  tiny_lm_build(&lm, &cfg, 77, 1.0);
  grads g[2];
  double loss_f32 = run_model(m->f32, &lm, &g[0]), loss_bf16 = run_model(m->bf16, &lm, &g[1]);
  CHECK(g[1].all_act && g[0].all_act);
  CHECK_REL(loss_bf16, loss_f32, 1e-2, 0.0);
  CHECK(loss_bf16 != loss_f32);
  for (int l = 0; l < SLOTS; l++)
    for (int k = 0; k < QS_LIN_COUNT; k++) {
      if (!g[0].g[l][k]) continue;
      CHECK(g[1].g[l][k] != NULL);
      long n = TOKENS * g[0].cols[l][k];
      double num = 0.0, den = 0.0;
      for (long i = 0; g[1].g[l][k] && i < n; i++) {
        double d = (double)g[1].g[l][k][i] - g[0].g[l][k][i];
        num += d * d, den += (double)g[0].g[l][k][i] * g[0].g[l][k][i];
      }
      CHECK(den > 0.0 && sqrt(num / den) <= 6e-2);
    }
  for (int b = 0; b < 2; b++)
    for (int l = 0; l < SLOTS; l++)
      for (int k = 0; k < QS_LIN_COUNT; k++) free(g[b].g[l][k]);
  qs_lm_release(&lm);
}

int main(void) {
  modes m = {qs_cpu_backend_new(), qs_cpu_backend_new_bf16()};
  CHECK(m.bf16->act_dtype == QS_BF16 && m.f32->act_dtype == QS_F32);
  test_linear_add(&m);
  test_swiglu(&m);
  test_rmsnorm(&m);
  test_lm_head(&m);
  test_model(&m);
  qs_backend_destroy(m.f32);
  qs_backend_destroy(m.bf16);
  return check_summary("test_cpu_bf16");
}
