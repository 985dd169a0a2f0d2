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
  qs_qwen3_batch batch = {7, 3, cu3, ids3, labels3, NULL, NULL, 0, NULL};
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
    qs_qwen3_batch one = {s, 1, cu, ids3 + cu3[s], labels3 + cu3[s], NULL, NULL, 0, NULL};
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

/* ---- left padding ------------------------------------------------------ */

enum { ROW = 10, PADDED_T = 3 * ROW };

/* batch3 left-padded to rows of ROW slots the way the padded data flow lays
 * it out: pads first (id vocab-1, label -100, position 1, mask 0), then the
 * sequence at positions 0..n-1. With pad_context the first real token keeps
 * its label (the last pad predicts it); without, it is -100 as in a packed
 * batch. */
typedef struct padded_batch {
  int32_t cu[4], ids[PADDED_T], labels[PADDED_T], positions[PADDED_T];
  uint8_t mask[PADDED_T];
  long slot[16]; /* slot of packed token i */
  qs_qwen3_batch b;
} padded_batch;

static void make_padded(padded_batch *p, int vocab, bool pad_context) {
  for (int s = 0; s < 3; s++) {
    int n = cu3[s + 1] - cu3[s], pads = ROW - n;
    p->cu[s] = s * ROW;
    for (int j = 0; j < ROW; j++) {
      int at = s * ROW + j, i = cu3[s] + j - pads;
      bool real = j >= pads;
      p->ids[at] = real ? ids3[i] : vocab - 1;
      p->labels[at] = real ? labels3[i] : QS_IGNORE_LABEL;
      p->positions[at] = real ? j - pads : 1;
      p->mask[at] = real;
      if (real) p->slot[i] = at;
    }
    if (!pad_context) p->labels[s * ROW + pads] = QS_IGNORE_LABEL;
  }
  p->cu[3] = PADDED_T;
  qs_qwen3_batch b = {9, 3, p->cu, p->ids, p->labels, p->positions, p->mask, 0, NULL};
  p->b = b;
}

/* Logits of every row (lm_head Y from the forward visitor) and whether the
 * o_proj input X was exactly 0 at every pad row. */
typedef struct fwd_probe {
  const uint8_t *mask;
  long tokens, vocab;
  float *logits;
  long nonzero_o_at_pads;
} fwd_probe;

static bool probe_forward(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y, qs_error *err) {
  fwd_probe *p = ctx;
  if (site->kind == QS_LIN_LM_HEAD)
    return qs_tensor_download(be, p->logits + site->row_begin * p->vocab, y, err);
  if (site->kind != QS_LIN_O || !p->mask) return true;
  const float *o = x->data; /* CPU backend: host memory */
  for (long t = 0; t < x->rows; t++)
    for (long i = 0; i < x->cols && !p->mask[t]; i++) p->nonzero_o_at_pads += o[t * x->cols + i] != 0.0f;
  return true;
}

static void run_probe(qs_qwen3 *m, const qs_qwen3_batch *b, long vocab, fwd_probe *p) {
  p->tokens = qs_batch_tokens(b);
  p->vocab = vocab;
  p->logits = qs_malloc((size_t)(p->tokens * vocab) * sizeof(float));
  p->nonzero_o_at_pads = 0;
  p->mask = b->attention_mask;
  qs_qwen3_visitor v = {probe_forward, NULL, true, p};
  qs_qwen3_result res;
  qs_error err;
  CHECK(qs_qwen3_run(m, b, false, &v, &res, &err));
}

/* Rows of G at pad slots must be exactly zero for the kinds in `kinds`. */
static long nonzero_at_pads(const grad_store *s, const padded_batch *p, int layers, const bool kinds[QS_LIN_COUNT]) {
  long nonzero = 0;
  for (int l = 0; l <= layers; l++)
    for (int k = 0; k < QS_LIN_COUNT; k++) {
      if (!kinds[k] || !s->g[l][k]) continue;
      for (long t = 0; t < PADDED_T; t++)
        for (long i = 0; i < s->cols[l][k] && !p->mask[t]; i++) nonzero += s->g[l][k][t * s->cols[l][k] + i] != 0.0f;
    }
  return nonzero;
}

/* Largest relative difference, over Linears, between the packed G and the
 * padded G at the real slots. */
static double padded_vs_packed(const grad_store *packed, const grad_store *padded, const padded_batch *p,
                               int layers) {
  double worst = 0;
  for (int l = 0; l <= layers; l++)
    for (int k = 0; k < QS_LIN_COUNT; k++) {
      if (!packed->g[l][k]) continue;
      long cols = packed->cols[l][k];
      float *gathered = qs_malloc((size_t)(16 * cols) * sizeof(float));
      for (int i = 0; i < 16; i++)
        memcpy(gathered + i * cols, padded->g[l][k] + p->slot[i] * cols, sizeof(float) * (size_t)cols);
      double d = tensor_rel_diff(gathered, packed->g[l][k], 16 * cols, 1, 1);
      worst = d > worst ? d : worst;
      free(gathered);
    }
  return worst;
}

/* A left-padded batch equals the packed batch at every real token (pads are
 * never attended, positions restart at the first real token), with no
 * pad-context target; pads carry exactly zero G and a zero o_proj input.
 * Tolerance 1e-5: the same per-row math on differently shaped GEMMs only
 * reorders fp32 sums (~1e-6), while attending a pad gives O(1e-1). */
static void test_left_padded_equals_packed(void) {
  qs_lm_config cfg = tiny_lm_config();
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, 13, 1.5);
  qs_qwen3_batch packed;
  make_batch3(&packed, cfg.vocab);
  padded_batch p;
  make_padded(&p, cfg.vocab, false);
  qs_qwen3 *m = make_model(&lm, false, 7);
  grad_store gk, gp;
  qs_qwen3_result rk = run_grads(m, &packed, cfg.layers, &gk);
  qs_qwen3_result rp = run_grads(m, &p.b, cfg.layers, &gp);
  CHECK_INT(rp.n_valid, rk.n_valid);
  CHECK_REL(rp.loss, rk.loss, 1e-5, 0);
  CHECK(padded_vs_packed(&gk, &gp, &p, cfg.layers) < 1e-5);
  bool all_kinds[QS_LIN_COUNT] = {true, true, true, true, true, true, true, true};
  CHECK_INT(nonzero_at_pads(&gp, &p, cfg.layers, all_kinds), 0);
  fwd_probe fk, fp;
  run_probe(m, &packed, cfg.vocab, &fk);
  run_probe(m, &p.b, cfg.vocab, &fp);
  double worst = 0;
  for (int i = 0; i < 16; i++)
    worst = fmax(worst, tensor_rel_diff(fp.logits + p.slot[i] * cfg.vocab, fk.logits + i * cfg.vocab, cfg.vocab, 1, 1));
  CHECK(worst < 1e-5);
  CHECK_INT(fp.nonzero_o_at_pads, 0);
  free(fk.logits);
  free(fp.logits);

  /* the same two layouts with loss groups {seq 0} and {seqs 1, 2} */
  static const int32_t groups[3] = {0, 1, 3};
  qs_qwen3_batch packed_g = packed, padded_g = p.b;
  packed_g.n_groups = padded_g.n_groups = 2;
  packed_g.group_seq = padded_g.group_seq = groups;
  grad_store gkg, gpg;
  qs_qwen3_result rkg = run_grads(m, &packed_g, cfg.layers, &gkg);
  qs_qwen3_result rpg = run_grads(m, &padded_g, cfg.layers, &gpg);
  CHECK_REL(rpg.group_loss[0], rkg.group_loss[0], 1e-5, 0);
  CHECK_REL(rpg.group_loss[1], rkg.group_loss[1], 1e-5, 0);
  CHECK(padded_vs_packed(&gkg, &gpg, &p, cfg.layers) < 1e-5);
  store_free(&gkg);
  store_free(&gpg);

  /* pad-context targets: the last pad predicts the first real token, so
   * pad rows now carry G through the MLP and o_proj, but still none through
   * q, k, v: a pad query attends nothing and no query attends a pad key */
  padded_batch pc;
  make_padded(&pc, cfg.vocab, true);
  grad_store gc;
  qs_qwen3_result rc = run_grads(m, &pc.b, cfg.layers, &gc);
  CHECK_INT(rc.n_valid, rk.n_valid + 3);
  bool qkv[QS_LIN_COUNT] = {[QS_LIN_Q] = true, [QS_LIN_K] = true, [QS_LIN_V] = true};
  CHECK_INT(nonzero_at_pads(&gc, &pc, cfg.layers, qkv), 0);
  bool o_only[QS_LIN_COUNT] = {[QS_LIN_O] = true};
  CHECK(nonzero_at_pads(&gc, &pc, cfg.layers, o_only) > 0);
  store_free(&gc);

  store_free(&gk);
  store_free(&gp);
  qs_qwen3_destroy(m);
  qs_lm_release(&lm);
}

/* ---- loss groups ------------------------------------------------------- */

/* Each group of batch3 under group_seq gives the loss and G rows of running
 * its sequences alone. Tolerance 1e-5 as for packed == one by one (only the
 * fp32 reduction order differs). */
static void check_groups_match_alone(qs_qwen3 *m, int layers, const int32_t *group_seq, int n_groups) {
  qs_qwen3_batch all;
  make_batch3(&all, 50);
  all.n_groups = n_groups;
  all.group_seq = group_seq;
  grad_store ga;
  qs_qwen3_result ra = run_grads(m, &all, layers, &ga);
  CHECK_INT(ra.n_groups, n_groups);
  double loss_sum = 0, mean = 0;
  long n_valid = 0;
  for (int g = 0; g < n_groups; g++) {
    int first = group_seq[g], last = group_seq[g + 1];
    int32_t cu[4];
    for (int s = first; s <= last; s++) cu[s - first] = cu3[s] - cu3[first];
    qs_qwen3_batch alone = {g, last - first, cu, ids3 + cu3[first], labels3 + cu3[first], NULL, NULL, 0, NULL};
    grad_store g1;
    qs_qwen3_result r1 = run_grads(m, &alone, layers, &g1);
    CHECK_REL(ra.group_loss[g], r1.loss, 1e-6, 0);
    loss_sum += r1.loss_sum;
    n_valid += r1.n_valid;
    mean += r1.loss / n_groups;
    long rows = cu3[last] - cu3[first];
    for (int l = 0; l <= layers; l++)
      for (int k = 0; k < QS_LIN_COUNT; k++) {
        if (!ga.g[l][k] || rows == 0) continue;
        long cols = ga.cols[l][k];
        const float *got = ga.g[l][k] + cu3[first] * cols;
        /* a group without targets has no backward alone: its rows are 0 */
        double d = g1.g[l][k] ? tensor_rel_diff(got, g1.g[l][k], rows * cols, 1, 1)
                              : tensor_rel_diff(got, NULL, rows * cols, 1, 1);
        CHECK(d < 1e-5);
      }
    store_free(&g1);
  }
  CHECK_REL(ra.loss_sum, loss_sum, 1e-6, 0);
  CHECK_INT(ra.n_valid, n_valid);
  CHECK_REL(ra.loss, mean, 1e-6, 0);
  store_free(&ga);
}

static void test_loss_groups(void) {
  qs_lm_config cfg = tiny_lm_config();
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, 17, 1.5);
  qs_qwen3 *m = make_model(&lm, false, 5); /* head chunks split groups: row offsets matter */
  /* three groups of one sequence each; group 1 (one token) has no target */
  static const int32_t each[4] = {0, 1, 2, 3};
  check_groups_match_alone(m, cfg.layers, each, 3);
  /* two sequences, an empty group, one sequence */
  static const int32_t mixed[4] = {0, 2, 2, 3};
  check_groups_match_alone(m, cfg.layers, mixed, 3);
  /* one group given explicitly is the plain batch, bit for bit */
  qs_qwen3_batch plain, one;
  make_batch3(&plain, cfg.vocab);
  one = plain;
  static const int32_t whole[2] = {0, 3};
  one.n_groups = 1;
  one.group_seq = whole;
  qs_qwen3_result rp, r1;
  qs_error err;
  CHECK(qs_qwen3_run(m, &plain, false, NULL, &rp, &err));
  CHECK(qs_qwen3_run(m, &one, false, NULL, &r1, &err));
  CHECK(rp.loss == r1.loss && rp.loss_sum == r1.loss_sum && rp.n_groups == 1 && rp.group_loss[0] == rp.loss);

  /* malformed group_seq: one line naming the batch and the culprit */
  qs_qwen3_batch bad = plain;
  qs_qwen3_result res;
  static const int32_t decreasing[4] = {0, 2, 1, 3}, short_end[3] = {0, 1, 2}, late_start[3] = {1, 2, 3};
  bad.group_seq = decreasing;
  bad.n_groups = 3;
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg, "batch 7: group_seq decreases at loss group 1 (2 > 1)");
  bad.group_seq = short_end;
  bad.n_groups = 2;
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg, "batch 7: group_seq must run from 0 to 3 sequences (got 0 to 2)");
  bad.group_seq = late_start;
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg, "batch 7: group_seq must run from 0 to 3 sequences (got 1 to 3)");
  bad.n_groups = 0;
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg, "batch 7: group_seq is given with 0 loss groups (need at least 1)");
  /* random mutations: success (finite loss) or one line naming the batch */
  test_rng r = {77};
  int32_t gs[4];
  int failures = 0;
  for (int iter = 0; iter < 200; iter++) {
    memcpy(gs, mixed, sizeof gs);
    int32_t vals[] = {-1, 0, 1, 2, 3, 4, INT32_MIN, INT32_MAX};
    gs[rng_next(&r) % 4] = vals[rng_next(&r) % 8];
    bad.group_seq = gs;
    bad.n_groups = (int)(rng_next(&r) % 4);
    if (qs_qwen3_run(m, &bad, iter % 2 == 0, NULL, &res, &err)) {
      CHECK(isfinite(res.loss) && res.n_groups == bad.n_groups);
    } else {
      failures++;
      CHECK(strncmp(err.msg, "batch 7: ", 9) == 0 && strchr(err.msg, '\n') == NULL);
    }
  }
  CHECK(failures > 50);
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
  qs_qwen3_batch nothing = {8, 0, cu0, NULL, NULL, NULL, NULL, 0, NULL};
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
  qs_qwen3_batch bad = {4, 3, cu, ids, labels, NULL, NULL, 0, NULL};
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
  cu[2] = cu3[2];
  /* attention_mask: only left padding (0s, then 1s) in every sequence */
  uint8_t mask[16];
  memset(mask, 1, sizeof mask);
  bad.attention_mask = mask;
  mask[7] = mask[8] = 0; /* sequence 2 (tokens 7..15) with two pads: fine */
  CHECK(qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  mask[7] = 1; /* a pad after a real token */
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg,
            "batch 4: attention_mask of sequence 2 is not left padding: value 0 at token 8 (only 0s, then 1s)");
  mask[8] = 1;
  mask[0] = 2;
  CHECK(!qs_qwen3_run(m, &bad, true, NULL, &res, &err));
  CHECK_STR(err.msg,
            "batch 4: attention_mask of sequence 0 is not left padding: value 2 at token 0 (only 0s, then 1s)");

  /* random mutations of a valid batch: every run either succeeds or fails
   * with one message naming the batch, never crashes */
  test_rng r = {2024};
  int failures = 0;
  for (int iter = 0; iter < 300; iter++) {
    memcpy(ids, ids3, sizeof ids);
    memcpy(labels, labels3, sizeof labels);
    memcpy(cu, cu3, sizeof cu);
    memset(mask, 1, sizeof mask);
    int32_t *arrays[3] = {ids, labels, cu};
    int sizes[3] = {16, 16, 4};
    int which = (int)(rng_next(&r) % 4);
    if (which == 3) { /* the mask: a run of leading pads, then a random flip */
      int pads = (int)(rng_next(&r) % 4);
      for (int i = 0; i < pads; i++) mask[cu3[2] + i] = 0;
      mask[rng_next(&r) % 16] = (uint8_t)(rng_next(&r) % 3);
    } else {
      int at = (int)(rng_next(&r) % (uint64_t)sizes[which]);
      int32_t vals[] = {-1, -100, 0, cfg.vocab - 1, cfg.vocab, 16, 17, INT32_MIN, INT32_MAX};
      arrays[which][at] = vals[rng_next(&r) % 9];
    }
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
  test_left_padded_equals_packed();
  test_loss_groups();
  test_errors();
  qs_backend_destroy(be);
  return check_summary("test_qwen3");
}
