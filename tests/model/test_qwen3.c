/* The Qwen3 forward/backward on the CPU backend with small random models:
 * finite-difference checks of G = dL/dY for every Linear kind, packed batch
 * == sequences one by one, recompute == kept activations, visitor order and
 * shapes, the N = 0 rule, and clean errors for bad batches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "core/mem.h"
#include "model/qwen3.h"
#include "tiny_lm.h"

static qs_backend *be;

/* ---- recording visitor ------------------------------------------------- */

/* Host copies of every G (and X) seen in a backward, per (layer, kind);
 * the lm_head lives at layer index L. Chunks of the head are assembled by
 * row_begin. */
typedef struct grad_store {
  int layers;
  long tokens;
  float *g[16][QS_LIN_COUNT];
  long cols[16][QS_LIN_COUNT];
  int order[16 * QS_LIN_COUNT * 8][2]; /* (layer, kind) in visiting order */
  int n_visits;
  int forward_visits;
  bool xrows_ok;
} grad_store;

static int slot_layer(const grad_store *s, const qs_linear_site *site) {
  return site->kind == QS_LIN_LM_HEAD ? s->layers : site->layer;
}

static bool record_grad(void *ctx, const qs_linear_site *site, const qs_tensor *x, const qs_tensor *g,
                        qs_error *err) {
  (void)err;
  grad_store *s = ctx;
  int l = slot_layer(s, site);
  if (!s->g[l][site->kind]) {
    s->g[l][site->kind] = qs_calloc((size_t)(s->tokens * g->cols), sizeof(float));
    s->cols[l][site->kind] = g->cols;
  }
  s->xrows_ok = s->xrows_ok && x->rows == g->rows;
  CHECK(qs_tensor_download(be, s->g[l][site->kind] + site->row_begin * g->cols, g, err));
  s->order[s->n_visits][0] = site->layer;
  s->order[s->n_visits][1] = site->kind;
  s->n_visits++;
  return true;
}

static bool count_forward(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y, qs_error *err) {
  (void)site, (void)x, (void)y, (void)err;
  ((grad_store *)ctx)->forward_visits++;
  return true;
}

static void store_init(grad_store *s, int layers, long tokens) {
  memset(s, 0, sizeof *s);
  s->layers = layers;
  s->tokens = tokens;
  s->xrows_ok = true;
}

static void store_free(grad_store *s) {
  for (int l = 0; l < 16; l++)
    for (int k = 0; k < QS_LIN_COUNT; k++) free(s->g[l][k]);
}

static qs_qwen3 *make_model(const qs_lm *lm, bool keep, long chunk) {
  qs_qwen3_options opt = {keep, chunk};
  qs_qwen3 *m = NULL;
  qs_error err;
  if (!qs_qwen3_create(be, lm, &opt, &m, &err)) fprintf(stderr, "%s\n", err.msg);
  CHECK(m != NULL);
  return m;
}

/* Runs forward + backward, recording every G (lm_head included). */
static qs_qwen3_result run_grads(qs_qwen3 *m, const qs_qwen3_batch *b, int layers, grad_store *s) {
  store_init(s, layers, qs_batch_tokens(b));
  qs_qwen3_visitor v = {count_forward, record_grad, true, s};
  qs_qwen3_result res;
  qs_error err;
  bool ok = qs_qwen3_run(m, b, true, &v, &res, &err);
  if (!ok) fprintf(stderr, "run failed: %s\n", err.msg);
  CHECK(ok);
  return res;
}

/* ---- a fixed packed batch ---------------------------------------------- */

static const int32_t cu3[] = {0, 6, 7, 16}; /* lengths 6, 1, 9 */
static int32_t ids3[16], labels3[16];

static void make_batch3(qs_qwen3_batch *b, int vocab) {
  test_rng r = {99};
  for (int i = 0; i < 16; i++) ids3[i] = (int32_t)(rng_next(&r) % (uint64_t)vocab);
  memcpy(labels3, ids3, sizeof ids3);
  labels3[3] = QS_IGNORE_LABEL;  /* an ignored target inside a sequence */
  labels3[15] = QS_IGNORE_LABEL; /* and at the end */
  qs_qwen3_batch batch = {7, 3, cu3, ids3, labels3, NULL};
  *b = batch;
}

/* ---- finite differences ------------------------------------------------ */

/* Adds eps to one element of one Linear's output during a forward. */
typedef struct poke {
  int layer;
  qs_linear_kind kind;
  long row, col;
  float eps;
} poke;

static bool poke_forward(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y, qs_error *err) {
  (void)x, (void)err;
  poke *p = ctx;
  bool same = site->kind == p->kind && (p->kind == QS_LIN_LM_HEAD || site->layer == p->layer);
  if (same && p->row >= site->row_begin && p->row < site->row_begin + y->rows)
    ((float *)y->data)[(p->row - site->row_begin) * y->cols + p->col] += p->eps;
  return true;
}

static double loss_sum_with(qs_qwen3 *m, const qs_qwen3_batch *b, poke *p) {
  qs_qwen3_visitor v = {poke_forward, NULL, true, p};
  qs_qwen3_result res;
  qs_error err;
  CHECK(qs_qwen3_run(m, b, false, &v, &res, &err));
  return res.loss_sum;
}

/* dL_sum/dY at one element by central differences. eps = 1e-2 on outputs of
 * size O(1): the truncation error is O(eps²·|Y'''|) ~ 1e-4 relative and the
 * fp32 rounding noise of the loss sum (~1e-6 of ~40) contributes ~1e-4/eps
 * ~ 1e-3·max|G·N| absolute; the tolerance below covers both with margin. */
static double fd_grad(qs_qwen3 *m, const qs_qwen3_batch *b, poke p) {
  p.eps = 1e-2f;
  double plus = loss_sum_with(m, b, &p);
  p.eps = -1e-2f;
  double minus = loss_sum_with(m, b, &p);
  return (plus - minus) / 2e-2;
}

static void check_fd_site(qs_qwen3 *m, const qs_qwen3_batch *b, const grad_store *s, int layer, qs_linear_kind kind,
                          long n_valid) {
  int slot = kind == QS_LIN_LM_HEAD ? s->layers : layer;
  const float *g = s->g[slot][kind];
  long cols = s->cols[slot][kind], n = s->tokens * cols;
  CHECK(g != NULL);
  if (!g) return;
  /* the two largest |G| and one mid-size element */
  long best = 0, second = -1, mid = -1;
  double gmax = 0;
  for (long i = 0; i < n; i++)
    if (fabs(g[i]) > fabs(g[best])) best = i;
  gmax = fabs(g[best]) * n_valid;
  for (long i = 0; i < n; i++) {
    if (i != best && (second < 0 || fabs(g[i]) > fabs(g[second]))) second = i;
    if (mid < 0 && fabs(g[i]) * n_valid > 0.2 * gmax && fabs(g[i]) * n_valid < 0.5 * gmax) mid = i;
  }
  long picks[3] = {best, second, mid};
  CHECK(gmax > 1e-3); /* gradients must actually reach this Linear */
  for (int i = 0; i < 3; i++) {
    if (picks[i] < 0) continue;
    poke p = {layer, kind, picks[i] / cols, picks[i] % cols, 0};
    double analytic = g[picks[i]] * (double)n_valid, numeric = fd_grad(m, b, p);
    double tol = 1e-2 * fabs(analytic) + 2e-3 * gmax;
    check_count_++;
    if (!(fabs(numeric - analytic) <= tol)) {
      check_failures_++;
      char path[96];
      qs_qwen3_linear_path(layer, kind, path, sizeof path);
      fprintf(stderr, "FD %s [%ld,%ld]: analytic %.6g numeric %.6g\n", path, p.row, p.col, analytic, numeric);
    }
  }
}

static void test_finite_differences(bool tied) {
  qs_lm_config cfg = tiny_lm_config();
  cfg.tied = tied;
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, tied ? 11 : 7, 1.5);
  qs_qwen3_batch b;
  make_batch3(&b, cfg.vocab);
  qs_qwen3 *m = make_model(&lm, false, 5); /* chunks of 5 tokens exercise the head's chunking */
  grad_store s;
  qs_qwen3_result res = run_grads(m, &b, cfg.layers, &s);
  CHECK_INT(res.n_valid, 11); /* 5 + 0 + 8 targets, minus the ignored label 3 (15 is a last token) */
  for (int l = 0; l < cfg.layers; l++)
    for (int k = QS_LIN_Q; k <= QS_LIN_DOWN; k++) check_fd_site(m, &b, &s, l, k, res.n_valid);
  check_fd_site(m, &b, &s, -1, QS_LIN_LM_HEAD, res.n_valid);
  store_free(&s);
  qs_qwen3_destroy(m);
  qs_lm_release(&lm);
}

/* ---- packed == one by one; recompute == kept --------------------------- */

static double tensor_rel_diff(const float *a, const float *b, long n, double scale_a, double scale_b) {
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    double x = a[i] * scale_a, y = b ? b[i] * scale_b : 0;
    num += (x - y) * (x - y);
    den += y * y;
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void test_packed_equals_single(void) {
  qs_lm_config cfg = tiny_lm_config();
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, 3, 1.5);
  qs_qwen3_batch packed;
  make_batch3(&packed, cfg.vocab);
  qs_qwen3 *m = make_model(&lm, false, 4096);
  grad_store all;
  qs_qwen3_result rp = run_grads(m, &packed, cfg.layers, &all);
  double loss_sum = 0;
  long n_valid = 0;
  for (int s = 0; s < 3; s++) {
    int32_t cu[2] = {0, cu3[s + 1] - cu3[s]};
    qs_qwen3_batch one = {s, 1, cu, ids3 + cu3[s], labels3 + cu3[s], NULL};
    grad_store g1;
    qs_qwen3_result r1 = run_grads(m, &one, cfg.layers, &g1);
    loss_sum += r1.loss_sum;
    n_valid += r1.n_valid;
    /* G·N per Linear over this sequence's rows: only the reduction order
     * differs, so fp32 rounding (~1e-6) is all that may separate them. */
    for (int l = 0; l <= cfg.layers; l++)
      for (int k = 0; k < QS_LIN_COUNT; k++) {
        if (!all.g[l][k]) continue;
        long cols = all.cols[l][k];
        if (!g1.g[l][k]) {
          /* no target in this sequence: its rows of the packed G must be 0 */
          CHECK(tensor_rel_diff(all.g[l][k] + cu3[s] * cols, NULL, cu[1] * cols, 1, 1) == 0);
        } else {
          CHECK(tensor_rel_diff(g1.g[l][k], all.g[l][k] + cu3[s] * cols, cu[1] * cols, (double)r1.n_valid,
                                (double)rp.n_valid) < 1e-5);
        }
      }
    store_free(&g1);
  }
  CHECK_REL(rp.loss_sum, loss_sum, 1e-6, 0);
  CHECK_INT(rp.n_valid, n_valid);
  /* explicit positions equal to the default ones give the same result */
  int32_t pos[16];
  for (int s = 0; s < 3; s++)
    for (int t = cu3[s]; t < cu3[s + 1]; t++) pos[t] = t - cu3[s];
  qs_qwen3_batch with_pos = packed;
  with_pos.positions = pos;
  grad_store gp;
  qs_qwen3_result rpos = run_grads(m, &with_pos, cfg.layers, &gp);
  CHECK(rpos.loss_sum == rp.loss_sum);
  store_free(&gp);

  /* a forward-only run (two alternating residual buffers) gives the same loss */
  qs_qwen3_result rf;
  qs_error err;
  CHECK(qs_qwen3_run(m, &packed, false, NULL, &rf, &err));
  CHECK(rf.loss_sum == rp.loss_sum && rf.n_valid == rp.n_valid);

  /* kept activations: the same ops on the same inputs, so bit-identical */
  qs_qwen3 *keep = make_model(&lm, true, 4096);
  grad_store kg;
  qs_qwen3_result rk = run_grads(keep, &packed, cfg.layers, &kg);
  CHECK(rk.loss_sum == rp.loss_sum);
  for (int l = 0; l <= cfg.layers; l++)
    for (int k = 0; k < QS_LIN_COUNT; k++) {
      if (!all.g[l][k]) continue;
      CHECK(kg.g[l][k] && memcmp(kg.g[l][k], all.g[l][k], sizeof(float) * (size_t)(16 * all.cols[l][k])) == 0);
    }
  store_free(&kg);
  qs_qwen3_destroy(keep);
  store_free(&all);
  qs_qwen3_destroy(m);
  qs_lm_release(&lm);
}

/* ---- visitor order, shapes and the N = 0 rule -------------------------- */

static void test_visitor_order(void) {
  qs_lm_config cfg = tiny_lm_config();
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, 5, 1.0);
  qs_qwen3_batch b;
  make_batch3(&b, cfg.vocab);
  qs_qwen3 *m = make_model(&lm, false, 6); /* 16 tokens: head chunks 6, 6, 4 */
  grad_store s;
  run_grads(m, &b, cfg.layers, &s);
  static const int per_layer[7] = {QS_LIN_DOWN, QS_LIN_GATE, QS_LIN_UP, QS_LIN_O, QS_LIN_Q, QS_LIN_K, QS_LIN_V};
  CHECK_INT(s.n_visits, 3 + 7 * cfg.layers);
  for (int i = 0; i < 3; i++) CHECK(s.order[i][0] == -1 && s.order[i][1] == QS_LIN_LM_HEAD);
  for (int l = cfg.layers - 1, i = 3; l >= 0; l--)
    for (int k = 0; k < 7; k++, i++) CHECK(s.order[i][0] == l && s.order[i][1] == per_layer[k]);
  CHECK_INT(s.forward_visits, 3 + 7 * cfg.layers); /* the recompute does not visit again */
  CHECK(s.xrows_ok);
  CHECK_INT(s.cols[0][QS_LIN_Q], cfg.heads * cfg.head_dim);
  CHECK_INT(s.cols[0][QS_LIN_K], cfg.kv_heads * cfg.head_dim);
  CHECK_INT(s.cols[1][QS_LIN_GATE], cfg.intermediate);
  CHECK_INT(s.cols[cfg.layers][QS_LIN_LM_HEAD], cfg.vocab);
  store_free(&s);

  /* no valid target: loss 0, no backward visit */
  int32_t none[16];
  for (int i = 0; i < 16; i++) none[i] = QS_IGNORE_LABEL;
  qs_qwen3_batch empty = b;
  empty.labels = none;
  qs_qwen3_result res = run_grads(m, &empty, cfg.layers, &s);
  CHECK(res.loss == 0 && res.loss_sum == 0 && res.n_valid == 0);
  CHECK_INT(s.n_visits, 0);
  store_free(&s);
  /* an empty batch is not an error either */
  int32_t cu0[1] = {0};
  qs_qwen3_batch nothing = {8, 0, cu0, NULL, NULL, NULL};
  res = run_grads(m, &nothing, cfg.layers, &s);
  CHECK(res.n_valid == 0);
  store_free(&s);
  qs_qwen3_destroy(m);
  qs_lm_release(&lm);
}

/* ---- errors ------------------------------------------------------------ */

static bool failing_visitor(void *ctx, const qs_linear_site *site, const qs_tensor *x, const qs_tensor *g,
                            qs_error *err) {
  (void)ctx, (void)x, (void)g;
  if (site->layer == 0 && site->kind == QS_LIN_UP) return qs_fail(err, QS_EXIT_RUNTIME, "stop at up_proj");
  return true;
}

static void test_errors(void) {
  qs_lm_config cfg = tiny_lm_config();
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, 5, 1.0);
  qs_qwen3 *m = make_model(&lm, false, 4096);
  qs_qwen3_batch b;
  make_batch3(&b, cfg.vocab);
  qs_qwen3_result res;
  qs_error err;
  qs_qwen3_visitor stop = {NULL, failing_visitor, false, NULL};
  CHECK(!qs_qwen3_run(m, &b, true, &stop, &res, &err));
  CHECK_STR(err.msg, "stop at up_proj");

  int32_t ids[16], labels[16], cu[4];
  memcpy(ids, ids3, sizeof ids);
  memcpy(labels, labels3, sizeof labels);
  memcpy(cu, cu3, sizeof cu);
  qs_qwen3_batch bad = {4, 3, cu, ids, labels, NULL};
  ids[9] = cfg.vocab;
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg, "batch 4: token id 50 at token 9 is outside the vocabulary [0, 50)");
  ids[9] = 1;
  labels[2] = -5;
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg, "batch 4: label -5 at token 2 is neither -100 nor in [0, 50)");
  labels[2] = 1;
  cu[2] = 3;
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg, "batch 4: cu_seqlens decreases at sequence 1");

  /* random mutations of a valid batch: every run either succeeds or fails
   * with one message naming the batch, never crashes */
  test_rng r = {2024};
  int failures = 0;
  for (int iter = 0; iter < 300; iter++) {
    memcpy(ids, ids3, sizeof ids);
    memcpy(labels, labels3, sizeof labels);
    memcpy(cu, cu3, sizeof cu);
    int32_t *arrays[3] = {ids, labels, cu};
    int sizes[3] = {16, 16, 4};
    int which = (int)(rng_next(&r) % 3);
    int at = (int)(rng_next(&r) % (uint64_t)sizes[which]);
    int32_t vals[] = {-1, -100, 0, cfg.vocab - 1, cfg.vocab, 16, 17, INT32_MIN, INT32_MAX};
    arrays[which][at] = vals[rng_next(&r) % 9];
    /* the token count is cu[n_seqs]: never let a mutation claim more tokens
     * than the arrays hold (that is the caller's contract, not data) */
    if (cu[3] > 16 || cu[3] < 0) cu[3] = 16;
    bool ok = qs_qwen3_run(m, &bad, iter % 2 == 0, NULL, &res, &err);
    if (!ok) {
      failures++;
      CHECK(strncmp(err.msg, "batch 4: ", 9) == 0 && strchr(err.msg, '\n') == NULL);
    } else {
      CHECK(isfinite(res.loss));
    }
  }
  CHECK(failures > 50);
  qs_qwen3_destroy(m);

  /* a NaN weight: the loss is non-finite and the run stops naming the batch */
  qs_bf16 *head = (qs_bf16 *)lm.lm_head;
  head[5] = 0x7fc0;
  m = make_model(&lm, false, 4096);
  CHECK(!qs_qwen3_run(m, &b, true, NULL, &res, &err));
  CHECK_STR(err.msg, "non-finite loss in batch 7");
  qs_qwen3_destroy(m);

  /* a bad configuration is refused when the model is made */
  lm.cfg.kv_heads = 3;
  qs_qwen3 *none = NULL;
  CHECK(!qs_qwen3_create(be, &lm, NULL, &none, &err));
  CHECK_STR(err.msg, "qwen3: 4 attention heads are not a multiple of 3 kv heads");
  CHECK(none == NULL);
  qs_lm_release(&lm);
}

int main(void) {
  be = qs_cpu_backend_new();
  test_finite_differences(false);
  test_finite_differences(true);
  test_packed_equals_single();
  test_visitor_order();
  test_errors();
  qs_backend_destroy(be);
  return check_summary("test_qwen3");
}
