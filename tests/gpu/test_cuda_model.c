/* The Qwen3 forward/backward through src/model/qwen3.h on tiny random
 * models, CUDA backend against the CPU backend: the loss and the magnitude
 * ‖G‖ of every Linear's G = dL/dY (lm_head included; what the score Σ(G·Δ)²
 * scales with) agree within 1e-2 relative, G itself element by element
 * within ELEMENTWISE_TOL norm-wise, and two CUDA runs give the same bits.
 * Skipped (77) without a GPU.
 *
 * Why these bounds: the CUDA backend keeps activations and gradients in
 * bf16 (2^-9 relative per rounding) and rounds where a bf16 model does
 * (spec §3.1), so each element carries noise that compounds along the
 * backward; that noise is uncorrelated with G, so ‖G‖ moves far less than
 * G's elements (measured on an H100: loss 5e-4, ‖G‖ ≤ 8.4e-3, elements
 * ≤ 3.9e-2; docs/gpu.md).
 *
 * A left-padded batch with loss groups runs the same comparison (group
 * losses too) and must give exactly zero q/k/v G at every pad on the GPU:
 * pads are never attended and a pad query attends nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_backend.h"
#include "gpu_util.h"
#include "kernels/cuda_backend.h"
#include "model/qwen3.h"

enum { MAX_LAYERS = 4, SLOTS = MAX_LAYERS + 1, MAX_GROUPS = 8 };

/* Norm-wise ‖G_gpu − G_cpu‖/‖G_cpu‖: bf16 noise compounds along the backward
 * (measured up to 3.9e-2 on the hd-128 model, whose peaked logits, loss ~62,
 * amplify the bf16 rounding of the logits); a wrong formula or index gives
 * O(1). */
#define ELEMENTWISE_TOL 6e-2

/* Host copies of every G of one backward, per (layer, kind); the lm_head
 * sits at index `layers`, assembled from its chunks by row_begin. */
typedef struct grads {
  qs_backend *be;
  int layers;
  long tokens;
  float *g[SLOTS][QS_LIN_COUNT];
  long cols[SLOTS][QS_LIN_COUNT];
  double group_loss[MAX_GROUPS]; /* copied: the result's array dies with the model */
} grads;

static bool record(void *ctx, const qs_linear_site *site, const qs_tensor *x, const qs_tensor *g, qs_error *err) {
  (void)x, (void)err;
  grads *s = ctx;
  int l = site->kind == QS_LIN_LM_HEAD ? s->layers : site->layer;
  if (!s->g[l][site->kind]) {
    s->g[l][site->kind] = qs_calloc((size_t)(s->tokens * g->cols), sizeof(float));
    s->cols[l][site->kind] = g->cols;
  }
  float *v = gpu_read(s->be, g);
  memcpy(s->g[l][site->kind] + site->row_begin * g->cols, v, (size_t)qs_tensor_numel(g) * sizeof(float));
  free(v);
  return true;
}

static void grads_free(grads *s) {
  for (int l = 0; l < SLOTS; l++)
    for (int k = 0; k < QS_LIN_COUNT; k++) free(s->g[l][k]);
}

/* Forward + backward on one backend, recording every G. */
static qs_qwen3_result run(qs_backend *be, const qs_lm *lm, const qs_qwen3_batch *b, grads *s) {
  memset(s, 0, sizeof *s);
  s->be = be;
  s->layers = lm->cfg.layers;
  s->tokens = qs_batch_tokens(b);
  qs_qwen3_options opt = {false, 16}; /* recompute; several lm_head chunks */
  qs_qwen3 *m = NULL;
  qs_qwen3_result res = {0};
  qs_error err;
  qs_qwen3_visitor v = {NULL, record, true, s};
  bool ok = qs_qwen3_create(be, lm, &opt, &m, &err) && qs_qwen3_run(m, b, true, &v, &res, &err);
  if (!ok) fprintf(stderr, "%s backend: %s\n", be->name, err.msg);
  CHECK(ok);
  CHECK(res.n_groups <= MAX_GROUPS);
  for (int g = 0; ok && g < res.n_groups && g < MAX_GROUPS; g++) s->group_loss[g] = res.group_loss[g];
  qs_qwen3_destroy(m);
  return res;
}

/* Values of G (layer l, kind k) at pad rows, which must be exactly 0. */
static long nonzero_at_pads(const grads *s, int l, int k, const uint8_t *mask) {
  long nonzero = 0, cols = s->cols[l][k];
  for (long t = 0; t < s->tokens; t++)
    for (long i = 0; i < cols && !mask[t]; i++) nonzero += s->g[l][k][t * cols + i] != 0.0f;
  return nonzero;
}

static void compare_model(qs_backend *gpu, qs_backend *cpu, const qs_lm *lm, const qs_qwen3_batch *b,
                          const char *name) {
  grads gs, cs, gs2;
  qs_qwen3_result rg = run(gpu, lm, b, &gs), rc = run(cpu, lm, b, &cs), rg2 = run(gpu, lm, b, &gs2);
  printf("  %s: loss gpu %.7f cpu %.7f over %ld targets\n", name, rg.loss, rc.loss, rc.n_valid);
  CHECK_INT(rg.n_valid, rc.n_valid);
  CHECK_REL(rg.loss, rc.loss, 1e-2, 0.0);
  CHECK(memcmp(&rg.loss_sum, &rg2.loss_sum, sizeof rg.loss_sum) == 0);
  CHECK_INT(rg.n_groups, rc.n_groups);
  for (int g = 0; g < rc.n_groups && g < MAX_GROUPS; g++) {
    printf("    group %d loss gpu %.7f cpu %.7f\n", g, gs.group_loss[g], cs.group_loss[g]);
    CHECK_REL(gs.group_loss[g], cs.group_loss[g], 1e-2, 0.0); /* the loss bound above, per group */
  }
  double worst = 0.0, worst_norm = 0.0;
  int compared = 0;
  for (int l = 0; l <= lm->cfg.layers; l++)
    for (int k = 0; k < QS_LIN_COUNT; k++) {
      if (!cs.g[l][k]) continue;
      CHECK(gs.g[l][k] != NULL);
      if (!gs.g[l][k]) continue;
      long n = cs.tokens * cs.cols[l][k];
      double rel = sqrt(gpu_nmse(gs.g[l][k], cs.g[l][k], n));
      double ng = 0.0, nc = 0.0;
      for (long i = 0; i < n; i++) {
        ng += (double)gs.g[l][k][i] * gs.g[l][k][i];
        nc += (double)cs.g[l][k][i] * cs.g[l][k][i];
      }
      double rel_norm = fabs(sqrt(ng) - sqrt(nc)) / sqrt(nc);
      char path[64];
      qs_qwen3_linear_path(l == lm->cfg.layers ? -1 : l, (qs_linear_kind)k, path, sizeof path);
      printf("    G of %-28s |G| rel %.2e  elementwise rel %.2e\n", path, rel_norm, rel);
      CHECK(rel_norm <= 1e-2);
      CHECK(rel <= ELEMENTWISE_TOL);
      CHECK(gpu_all_finite(gs.g[l][k], n));
      if (b->attention_mask && k <= QS_LIN_V) CHECK_INT(nonzero_at_pads(&gs, l, k, b->attention_mask), 0);
      CHECK(memcmp(gs.g[l][k], gs2.g[l][k], (size_t)n * sizeof(float)) == 0);
      worst = rel > worst ? rel : worst;
      worst_norm = rel_norm > worst_norm ? rel_norm : worst_norm;
      compared++;
    }
  CHECK_INT(compared, lm->cfg.layers * 7 + 1);
  printf("  %s: %d Linears' G compared, worst |G| relative error %.3e, worst elementwise %.3e; "
         "two GPU runs bit-identical\n",
         name, compared, worst_norm, worst);
  grads_free(&gs), grads_free(&cs), grads_free(&gs2);
}

/* A packed batch of the given sequence lengths with random ids and every
 * next token a target, except a few ignored labels. */
typedef struct batch_mem {
  int32_t cu[16], *ids, *labels;
  qs_qwen3_batch b;
} batch_mem;

static void make_batch(batch_mem *m, const int *lens, int n_seqs, int vocab, uint64_t seed) {
  test_rng r = {seed};
  m->cu[0] = 0;
  for (int s = 0; s < n_seqs; s++) m->cu[s + 1] = m->cu[s] + lens[s];
  long t = m->cu[n_seqs];
  m->ids = qs_malloc((size_t)t * sizeof(int32_t));
  m->labels = qs_malloc((size_t)t * sizeof(int32_t));
  for (long i = 0; i < t; i++) {
    m->ids[i] = (int32_t)(rng_next(&r) % (uint64_t)vocab);
    m->labels[i] = i % 11 == 4 ? QS_IGNORE_LABEL : m->ids[i];
  }
  qs_qwen3_batch b = {1, n_seqs, m->cu, m->ids, m->labels, NULL, NULL, 0, NULL};
  m->b = b;
}

/* The sequences of `lens` left-padded to rows of row_len slots as the padded
 * data flow lays them out (mask, positions cumsum(mask)-1 with pads at 1,
 * pads -100 and the first real token keeping its label: the pad-context
 * target), in loss groups group_seq. */
typedef struct padded_mem {
  batch_mem packed;
  int32_t cu[16], *ids, *labels, *positions;
  uint8_t *mask;
  qs_qwen3_batch b;
} padded_mem;

static void make_padded(padded_mem *p, const int *lens, int n_seqs, int row_len, int vocab, uint64_t seed,
                        const int32_t *group_seq, int n_groups) {
  make_batch(&p->packed, lens, n_seqs, vocab, seed);
  long t = (long)n_seqs * row_len;
  p->ids = qs_malloc((size_t)t * sizeof(int32_t));
  p->labels = qs_malloc((size_t)t * sizeof(int32_t));
  p->positions = qs_malloc((size_t)t * sizeof(int32_t));
  p->mask = qs_malloc((size_t)t);
  for (int s = 0; s < n_seqs; s++) {
    int pads = row_len - lens[s];
    p->cu[s] = s * row_len;
    for (int j = 0; j < row_len; j++) {
      long at = (long)s * row_len + j, i = p->packed.cu[s] + j - pads;
      bool real = j >= pads;
      p->ids[at] = real ? p->packed.ids[i] : 0;
      p->labels[at] = real ? p->packed.labels[i] : QS_IGNORE_LABEL;
      p->positions[at] = real ? j - pads : 1;
      p->mask[at] = real;
    }
  }
  p->cu[n_seqs] = (int32_t)t;
  qs_qwen3_batch b = {2, n_seqs, p->cu, p->ids, p->labels, p->positions, p->mask, n_groups, group_seq};
  p->b = b;
}

static void padded_free(padded_mem *p) {
  free(p->packed.ids), free(p->packed.labels), free(p->ids), free(p->labels), free(p->positions), free(p->mask);
}

int main(void) {
  gpu_require_device("test_cuda_model");
  qs_error err;
  qs_backend *gpu = qs_cuda_backend_new(0, &err), *cpu = qs_cpu_backend_new();
  if (!gpu) fprintf(stderr, "%s\n", err.msg);
  CHECK(gpu != NULL);
  if (!gpu) return check_summary("test_cuda_model");

  /* The model tests' default shape (hd 12, GQA 4/2, untied). */
  qs_lm tiny;
  qs_lm_config cfg = tiny_lm_config();
  tiny_lm_build(&tiny, &cfg, 7, 1.5);
  static const int lens_small[] = {6, 1, 9};
  batch_mem small;
  make_batch(&small, lens_small, 3, cfg.vocab, 99);
  compare_model(gpu, cpu, &tiny, &small.b, "tiny model, 3 sequences");

  /* A wider one with Qwen3's head_dim 128, tied embeddings and 3 layers. */
  qs_lm wide;
  qs_lm_config wcfg = cfg;
  wcfg.hidden = 256;
  wcfg.intermediate = 512;
  wcfg.layers = 3;
  wcfg.heads = 4;
  wcfg.kv_heads = 2;
  wcfg.head_dim = 128;
  wcfg.vocab = 1000;
  wcfg.tied = true;
  wcfg.rope_theta = 5000000.0;
  tiny_lm_build(&wide, &wcfg, 11, 1.5);
  static const int lens_wide[] = {40, 1, 75, 33};
  batch_mem big;
  make_batch(&big, lens_wide, 4, wcfg.vocab, 5);
  compare_model(gpu, cpu, &wide, &big.b, "hd-128 model, 4 sequences");

  /* Left-padded rows of 80 (pads crossing the kernels' 32-row tiles, one
   * row without pads) in two loss groups. */
  static const int lens_padded[] = {40, 1, 75, 80};
  static const int32_t groups[] = {0, 1, 4};
  padded_mem padded;
  make_padded(&padded, lens_padded, 4, 80, wcfg.vocab, 6, groups, 2);
  compare_model(gpu, cpu, &wide, &padded.b, "hd-128 model, left-padded, 2 loss groups");
  padded_free(&padded);

  printf("  GPU memory peak %.1f MiB\n", qs_cuda_backend_peak_bytes(gpu) / 1048576.0);
  free(small.ids), free(small.labels), free(big.ids), free(big.labels);
  qs_lm_release(&tiny);
  qs_lm_release(&wide);
  qs_backend_destroy(gpu);
  qs_backend_destroy(cpu);
  return check_summary("test_cuda_model");
}
