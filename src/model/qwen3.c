/* Qwen3 LM forward, loss and activation-gradient backward over a backend.
 * Spec: shared specs/qwen3-vl-lm.md §3, §5–§8. */
#include "model/qwen3.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

#define TRY(expr)                \
  do {                           \
    if (!(expr)) return false;   \
  } while (0)

enum { ARENA_ALIGN = 256 };

typedef struct layer_weights {
  qs_tensor input_norm, q, k, v, q_norm, k_norm, o, post_norm, gate, up, down;
} layer_weights;

/* Everything one decoder layer's forward produces that its backward reads. */
typedef struct layer_acts {
  qs_tensor a, rstd_in;          /* normed input (X of q, k, v) and its r */
  qs_tensor q_raw, k_raw, v;     /* projections before QK-norm */
  qs_tensor q, k, rstd_q, rstd_k; /* after QK-norm + RoPE */
  qs_tensor o, lse;              /* attention output (X of o_proj) */
  qs_tensor x_mid;               /* residual after attention */
  qs_tensor b, rstd_post;        /* normed x_mid (X of gate, up) */
  qs_tensor g, u, m;             /* gate, up, silu(g)·u (X of down) */
} layer_acts;

/* Backward temporaries, reused by every layer. */
typedef struct grad_bufs {
  qs_tensor delta;     /* dL/d(residual), f32 */
  qs_tensor delta_act; /* delta in the activation dtype when that is not f32 */
  qs_tensor dh;        /* dL/d(final-normed hidden) */
  qs_tensor dm, g_gate, g_up, db, d_o, dq, dk, dv, g_q, g_k, da;
} grad_bufs;

/* Per-batch memory, carved from one backend allocation kept across runs. */
typedef struct run_bufs {
  qs_tensor ids, positions, targets, cu_seqlens, key_start;
  qs_tensor *resid; /* layer inputs: [L+1] with a backward, else 2 in turn */
  layer_acts *acts; /* [L] when kept, else 1 */
  qs_tensor proj;   /* output of o_proj / down_proj before the residual add */
  qs_tensor hf, rstd_f;
  grad_bufs grad;
} run_bufs;

struct qs_qwen3 {
  qs_backend *be;
  qs_lm_config cfg;
  qs_qwen3_options opts;
  qs_tensor embed, final_norm, lm_head;
  bool head_is_embed; /* tied: one imported tensor */
  layer_weights *layers;
  qs_tensor arena;
  size_t arena_bytes;
  run_bufs bufs;
  /* Loss groups of the last run (host): valid targets and mean loss of each. */
  long *group_valid;
  double *group_loss;
  int group_cap;
};

/* State of one qs_qwen3_run. */
typedef struct run_ctx {
  qs_qwen3 *m;
  const qs_qwen3_batch *batch;
  const qs_qwen3_visitor *visitor;
  bool backward;
  long tokens;
  qs_attn_shape shape;
  int n_groups;
  long head_row0; /* first batch row of the lm_head call in progress */
} run_ctx;

void qs_qwen3_linear_path(int layer, qs_linear_kind kind, char *buf, size_t size) {
  if (kind == QS_LIN_LM_HEAD) {
    snprintf(buf, size, "lm_head");
    return;
  }
  const char *block = kind <= QS_LIN_O ? "self_attn" : "mlp";
  snprintf(buf, size, "layers.%d.%s.%s", layer, block, qs_linear_name(kind));
}

/* ---- weights ----------------------------------------------------------- */

static bool import_vector(qs_backend *be, const qs_bf16 *w, long n, qs_tensor *t, const char *name,
                          qs_error *err) {
  if (!w) return qs_fail(err, QS_EXIT_RUNTIME, "qwen3: weight %s is missing", name);
  return qs_tensor_import(be, w, QS_BF16, n, 1, t, err);
}

static bool import_linear(qs_qwen3 *m, const qs_lm *lm, int layer, qs_linear_kind kind, qs_tensor *t,
                          qs_error *err) {
  int out, in;
  const qs_bf16 *w = qs_lm_linear_weight(lm, layer, kind, &out, &in);
  if (!w) {
    char path[96];
    qs_qwen3_linear_path(layer, kind, path, sizeof path);
    return qs_fail(err, QS_EXIT_RUNTIME, "qwen3: weight %s is missing", path);
  }
  return qs_tensor_import(m->be, w, QS_BF16, out, in, t, err);
}

static bool import_layer(qs_qwen3 *m, const qs_lm *lm, int l, qs_error *err) {
  const qs_lm_layer *src = &lm->layer[l];
  layer_weights *w = &m->layers[l];
  long d = m->cfg.hidden, hd = m->cfg.head_dim;
  TRY(import_vector(m->be, src->input_norm, d, &w->input_norm, "input_layernorm", err));
  TRY(import_vector(m->be, src->post_norm, d, &w->post_norm, "post_attention_layernorm", err));
  TRY(import_vector(m->be, src->q_norm, hd, &w->q_norm, "q_norm", err));
  TRY(import_vector(m->be, src->k_norm, hd, &w->k_norm, "k_norm", err));
  qs_tensor *lin[] = {&w->q, &w->k, &w->v, &w->o, &w->gate, &w->up, &w->down};
  for (int kind = QS_LIN_Q; kind <= QS_LIN_DOWN; kind++) TRY(import_linear(m, lm, l, kind, lin[kind], err));
  return true;
}

/* Embedding, final norm and head (one tensor for both when tied). */
static bool import_globals(qs_qwen3 *m, const qs_lm *lm, qs_error *err) {
  if (!lm->embed) return qs_fail(err, QS_EXIT_RUNTIME, "qwen3: weight embed_tokens is missing");
  TRY(qs_tensor_import(m->be, lm->embed, QS_BF16, m->cfg.vocab, m->cfg.hidden, &m->embed, err));
  TRY(import_vector(m->be, lm->final_norm, m->cfg.hidden, &m->final_norm, "norm", err));
  m->head_is_embed = lm->lm_head == lm->embed;
  if (m->head_is_embed) {
    m->lm_head = m->embed;
    return true;
  }
  return import_linear(m, lm, -1, QS_LIN_LM_HEAD, &m->lm_head, err);
}

static bool check_config(const qs_lm_config *c, qs_error *err) {
  if (c->hidden <= 0 || c->intermediate <= 0 || c->layers <= 0 || c->heads <= 0 || c->kv_heads <= 0 ||
      c->head_dim <= 0 || c->vocab <= 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "qwen3: every model dimension must be positive");
  if (c->heads % c->kv_heads != 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "qwen3: %d attention heads are not a multiple of %d kv heads", c->heads,
                   c->kv_heads);
  if (c->head_dim % 2 != 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "qwen3: head_dim %d is odd (RoPE needs pairs)", c->head_dim);
  if (!(c->rope_theta > 0) || !(c->rms_eps >= 0))
    return qs_fail(err, QS_EXIT_RUNTIME, "qwen3: rope theta (%g) must be positive and rms eps (%g) non-negative",
                   c->rope_theta, c->rms_eps);
  return true;
}

bool qs_qwen3_create(qs_backend *be, const qs_lm *lm, const qs_qwen3_options *opts, qs_qwen3 **out,
                     qs_error *err) {
  *out = NULL;
  TRY(check_config(&lm->cfg, err));
  qs_qwen3 *m = qs_calloc(1, sizeof *m);
  m->be = be;
  m->cfg = lm->cfg;
  if (opts) m->opts = *opts;
  if (m->opts.lm_chunk_tokens <= 0) m->opts.lm_chunk_tokens = QS_QWEN3_DEFAULT_LM_CHUNK;
  m->layers = qs_calloc((size_t)m->cfg.layers, sizeof *m->layers);
  bool ok = import_globals(m, lm, err);
  for (int l = 0; ok && l < m->cfg.layers; l++) ok = import_layer(m, lm, l, err);
  if (!ok) {
    qs_qwen3_destroy(m);
    return false;
  }
  *out = m;
  return true;
}

static void unimport_layer(qs_backend *be, layer_weights *w) {
  qs_tensor *all[] = {&w->input_norm, &w->q, &w->k, &w->v, &w->q_norm, &w->k_norm,
                      &w->o, &w->post_norm, &w->gate, &w->up, &w->down};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) qs_tensor_unimport(be, all[i]);
}

void qs_qwen3_destroy(qs_qwen3 *m) {
  if (!m) return;
  for (int l = 0; l < m->cfg.layers; l++) unimport_layer(m->be, &m->layers[l]);
  if (!m->head_is_embed) qs_tensor_unimport(m->be, &m->lm_head);
  qs_tensor_unimport(m->be, &m->embed);
  qs_tensor_unimport(m->be, &m->final_norm);
  qs_tensor_free(m->be, &m->arena);
  free(m->bufs.resid);
  free(m->bufs.acts);
  free(m->group_valid);
  free(m->group_loss);
  free(m->layers);
  free(m);
}

/* ---- per-batch memory -------------------------------------------------- */

/* Lays tensors out one after another; with base NULL it only measures. */
typedef struct carver {
  char *base;
  size_t used;
} carver;

static void carve(carver *c, qs_tensor *t, qs_dtype dtype, long rows, long cols) {
  t->dtype = dtype;
  t->rows = rows;
  t->cols = cols;
  t->data = c->base ? c->base + c->used : NULL;
  c->used += (qs_tensor_bytes(t) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

static void carve_acts(carver *c, const qs_lm_config *cfg, qs_dtype act, long t, layer_acts *a) {
  long d = cfg->hidden, qw = (long)cfg->heads * cfg->head_dim, kvw = (long)cfg->kv_heads * cfg->head_dim;
  long inter = cfg->intermediate;
  carve(c, &a->a, act, t, d);
  carve(c, &a->rstd_in, QS_F32, t, 1);
  carve(c, &a->q_raw, act, t, qw);
  carve(c, &a->k_raw, act, t, kvw);
  carve(c, &a->v, act, t, kvw);
  carve(c, &a->q, act, t, qw);
  carve(c, &a->k, act, t, kvw);
  carve(c, &a->rstd_q, QS_F32, t * cfg->heads, 1);
  carve(c, &a->rstd_k, QS_F32, t * cfg->kv_heads, 1);
  carve(c, &a->o, act, t, qw);
  carve(c, &a->lse, QS_F32, t, cfg->heads);
  carve(c, &a->x_mid, act, t, d);
  carve(c, &a->b, act, t, d);
  carve(c, &a->rstd_post, QS_F32, t, 1);
  carve(c, &a->g, act, t, inter);
  carve(c, &a->u, act, t, inter);
  carve(c, &a->m, act, t, inter);
}

static void carve_grads(carver *c, const qs_lm_config *cfg, qs_dtype act, long t, grad_bufs *g) {
  long d = cfg->hidden, qw = (long)cfg->heads * cfg->head_dim, kvw = (long)cfg->kv_heads * cfg->head_dim;
  long inter = cfg->intermediate;
  carve(c, &g->delta, QS_F32, t, d);
  carve(c, &g->delta_act, act, act == QS_F32 ? 0 : t, d);
  carve(c, &g->dh, act, t, d);
  carve(c, &g->dm, act, t, inter);
  carve(c, &g->g_gate, act, t, inter);
  carve(c, &g->g_up, act, t, inter);
  carve(c, &g->db, act, t, d);
  carve(c, &g->d_o, act, t, qw);
  carve(c, &g->dq, act, t, qw);
  carve(c, &g->dk, act, t, kvw);
  carve(c, &g->dv, act, t, kvw);
  carve(c, &g->g_q, act, t, qw);
  carve(c, &g->g_k, act, t, kvw);
  carve(c, &g->da, act, t, d);
}

static int resid_count(const qs_qwen3 *m, bool backward) { return backward ? m->cfg.layers + 1 : 2; }
static int acts_count(const qs_qwen3 *m, bool backward) {
  return backward && m->opts.keep_activations ? m->cfg.layers : 1;
}

static void carve_all(qs_qwen3 *m, carver *c, long t, int n_seqs, bool backward) {
  run_bufs *b = &m->bufs;
  qs_dtype act = m->be->act_dtype;
  carve(c, &b->ids, QS_I32, t, 1);
  carve(c, &b->positions, QS_I32, t, 1);
  carve(c, &b->targets, QS_I32, t, 1);
  carve(c, &b->cu_seqlens, QS_I32, (long)n_seqs + 1, 1);
  carve(c, &b->key_start, QS_I32, n_seqs, 1);
  for (int i = 0; i < resid_count(m, backward); i++) carve(c, &b->resid[i], act, t, m->cfg.hidden);
  for (int i = 0; i < acts_count(m, backward); i++) carve_acts(c, &m->cfg, act, t, &b->acts[i]);
  carve(c, &b->proj, act, t, m->cfg.hidden);
  carve(c, &b->hf, act, t, m->cfg.hidden);
  carve(c, &b->rstd_f, QS_F32, t, 1);
  if (backward) carve_grads(c, &m->cfg, act, t, &b->grad);
}

/* Sizes the arena for a batch (growing it when needed) and points every
 * per-batch tensor into it. */
static bool prepare_bufs(qs_qwen3 *m, long t, int n_seqs, bool backward, qs_error *err) {
  run_bufs *b = &m->bufs;
  b->resid = qs_realloc(b->resid, (size_t)(m->cfg.layers + 1) * sizeof *b->resid);
  b->acts = qs_realloc(b->acts, (size_t)m->cfg.layers * sizeof *b->acts);
  carver measure = {NULL, 0};
  carve_all(m, &measure, t, n_seqs, backward);
  if (measure.used > m->arena_bytes) {
    qs_tensor_free(m->be, &m->arena);
    m->arena_bytes = 0;
    TRY(qs_tensor_alloc(m->be, QS_F32, 1, (long)(measure.used / sizeof(float)), &m->arena, err));
    m->arena_bytes = measure.used;
  }
  carver place = {m->arena.data, 0};
  carve_all(m, &place, t, n_seqs, backward);
  return true;
}

/* ---- batch checks and targets ------------------------------------------ */

/* Pads (mask 0) of sequence s that come before its first real token. */
static int leading_pads(const qs_qwen3_batch *b, int s) {
  int n = 0;
  for (long t = b->cu_seqlens[s]; t < b->cu_seqlens[s + 1] && !b->attention_mask[t]; t++) n++;
  return n;
}

/* Only left padding: after the leading pads every token is real. */
static bool check_mask(const qs_qwen3_batch *b, qs_error *err) {
  for (int s = 0; s < b->n_seqs; s++)
    for (long t = b->cu_seqlens[s] + leading_pads(b, s); t < b->cu_seqlens[s + 1]; t++)
      if (b->attention_mask[t] != 1)
        return qs_fail(err, QS_EXIT_RUNTIME,
                       "batch %ld: attention_mask of sequence %d is not left padding: value %d at token %ld (only "
                       "0s, then 1s)",
                       b->index, s, b->attention_mask[t], t);
  return true;
}

static int group_count(const qs_qwen3_batch *b) { return b->group_seq ? b->n_groups : 1; }

/* Sequences [*first, *last) of group g. */
static void group_seqs(const qs_qwen3_batch *b, int g, int *first, int *last) {
  *first = b->group_seq ? b->group_seq[g] : 0;
  *last = b->group_seq ? b->group_seq[g + 1] : b->n_seqs;
}

static bool check_groups(const qs_qwen3_batch *b, qs_error *err) {
  if (!b->group_seq) return true;
  if (b->n_groups < 1)
    return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: group_seq is given with %d loss groups (need at least 1)",
                   b->index, b->n_groups);
  const int32_t *gs = b->group_seq;
  if (gs[0] != 0 || gs[b->n_groups] != b->n_seqs)
    return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: group_seq must run from 0 to %d sequences (got %d to %d)",
                   b->index, b->n_seqs, gs[0], gs[b->n_groups]);
  for (int g = 0; g < b->n_groups; g++)
    if (gs[g + 1] < gs[g])
      return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: group_seq decreases at loss group %d (%d > %d)", b->index, g,
                     gs[g], gs[g + 1]);
  return true;
}

static bool check_batch(const qs_qwen3 *m, const qs_qwen3_batch *b, qs_error *err) {
  if (b->n_seqs < 0) return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: negative sequence count", b->index);
  if (b->n_seqs > 0 && b->cu_seqlens[0] != 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: cu_seqlens must start at 0 (got %d)", b->index,
                   b->cu_seqlens[0]);
  for (int s = 0; s < b->n_seqs; s++)
    if (b->cu_seqlens[s + 1] < b->cu_seqlens[s])
      return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: cu_seqlens decreases at sequence %d", b->index, s);
  long t = qs_batch_tokens(b), v = m->cfg.vocab;
  for (long i = 0; i < t; i++) {
    if (b->ids[i] < 0 || b->ids[i] >= v)
      return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: token id %d at token %ld is outside the vocabulary [0, %ld)",
                     b->index, b->ids[i], i, v);
    if (b->labels && b->labels[i] != QS_IGNORE_LABEL && (b->labels[i] < 0 || b->labels[i] >= v))
      return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: label %d at token %ld is neither -100 nor in [0, %ld)",
                     b->index, b->labels[i], i, v);
    if (b->positions && b->positions[i] < 0)
      return qs_fail(err, QS_EXIT_RUNTIME, "batch %ld: position %d at token %ld is negative", b->index,
                     b->positions[i], i);
  }
  return (!b->attention_mask || check_mask(b, err)) && check_groups(b, err);
}

/* The label of token t: as given, else its id when it is real. */
static int32_t label_of(const qs_qwen3_batch *b, long t) {
  if (b->labels) return b->labels[t];
  return b->attention_mask && !b->attention_mask[t] ? QS_IGNORE_LABEL : b->ids[t];
}

/* Shifted targets (token t predicts label t+1 of its own sequence) and the
 * positions, on the host. */
static void host_targets(const qs_qwen3_batch *b, int32_t *targets, int32_t *positions, int *longest) {
  *longest = 0;
  for (int s = 0; s < b->n_seqs; s++) {
    long begin = b->cu_seqlens[s], end = b->cu_seqlens[s + 1];
    if (end - begin > *longest) *longest = (int)(end - begin);
    for (long t = begin; t < end; t++) {
      targets[t] = t + 1 < end ? label_of(b, t + 1) : QS_IGNORE_LABEL;
      positions[t] = b->positions ? b->positions[t] : (int32_t)(t - begin);
    }
  }
}

/* Valid targets of every loss group into m->group_valid; returns the total. */
static long count_group_targets(qs_qwen3 *m, const qs_qwen3_batch *b, const int32_t *targets) {
  int n = group_count(b);
  if (n > m->group_cap) {
    m->group_valid = qs_realloc(m->group_valid, (size_t)n * sizeof *m->group_valid);
    m->group_loss = qs_realloc(m->group_loss, (size_t)n * sizeof *m->group_loss);
    m->group_cap = n;
  }
  long total = 0;
  for (int g = 0; g < n; g++) {
    int first, last;
    group_seqs(b, g, &first, &last);
    m->group_valid[g] = 0;
    for (long t = b->cu_seqlens[first]; t < b->cu_seqlens[last]; t++)
      m->group_valid[g] += targets[t] != QS_IGNORE_LABEL;
    total += m->group_valid[g];
  }
  return total;
}

/* key_start of every sequence (its leading pads) for the attention. */
static bool upload_key_start(run_ctx *r, qs_error *err) {
  const qs_qwen3_batch *b = r->batch;
  int32_t *ks = qs_malloc((size_t)(b->n_seqs ? b->n_seqs : 1) * sizeof(int32_t));
  for (int s = 0; s < b->n_seqs; s++) ks[s] = leading_pads(b, s);
  bool ok = qs_tensor_upload(r->m->be, &r->m->bufs.key_start, ks, err);
  free(ks);
  r->shape.key_start = &r->m->bufs.key_start;
  return ok;
}

static bool upload_batch(run_ctx *r, long *n_valid, qs_error *err) {
  const qs_qwen3_batch *b = r->batch;
  run_bufs *bufs = &r->m->bufs;
  int32_t *targets = qs_malloc((size_t)(r->tokens ? r->tokens : 1) * sizeof(int32_t));
  int32_t *positions = qs_malloc((size_t)(r->tokens ? r->tokens : 1) * sizeof(int32_t));
  int32_t zero = 0;
  host_targets(b, targets, positions, &r->shape.max_seqlen);
  *n_valid = count_group_targets(r->m, b, targets);
  bool ok = qs_tensor_upload(r->m->be, &bufs->ids, b->ids, err) &&
            qs_tensor_upload(r->m->be, &bufs->targets, targets, err) &&
            qs_tensor_upload(r->m->be, &bufs->positions, positions, err) &&
            qs_tensor_upload(r->m->be, &bufs->cu_seqlens, b->n_seqs > 0 ? b->cu_seqlens : &zero, err) &&
            (!b->attention_mask || upload_key_start(r, err));
  free(targets);
  free(positions);
  return ok;
}

/* ---- visiting and checks ----------------------------------------------- */

static bool visit_forward(run_ctx *r, int layer, qs_linear_kind kind, const qs_tensor *x, qs_tensor *y,
                          qs_error *err) {
  if (!r->visitor || !r->visitor->forward) return true;
  qs_linear_site site = {layer, kind, r->batch->index, 0};
  return r->visitor->forward(r->visitor->ctx, &site, x, y, err);
}

static bool need_finite(run_ctx *r, const qs_tensor *t, int layer, qs_linear_kind kind, const char *what,
                        qs_error *err) {
  bool finite;
  TRY(qs_op_all_finite(r->m->be, t, &finite, err));
  if (finite) return true;
  char path[96];
  if (kind == QS_LIN_COUNT) snprintf(path, sizeof path, "layers.%d", layer);
  else qs_qwen3_linear_path(layer, kind, path, sizeof path);
  return qs_fail(err, QS_EXIT_RUNTIME, "non-finite %s at %s in batch %ld", what, path, r->batch->index);
}

/* Checks G = dL/dY of a Linear, then hands it with its input to the visitor. */
static bool emit_grad(run_ctx *r, int layer, qs_linear_kind kind, const qs_tensor *x, const qs_tensor *g,
                      qs_error *err) {
  TRY(need_finite(r, g, layer, kind, "gradient dL/dY", err));
  if (!r->visitor || !r->visitor->backward) return true;
  qs_linear_site site = {layer, kind, r->batch->index, 0};
  return r->visitor->backward(r->visitor->ctx, &site, x, g, err);
}

/* ---- forward ----------------------------------------------------------- */

static float eps_of(const qs_qwen3 *m) { return (float)m->cfg.rms_eps; }

/* y = x·Wᵀ, then the forward visitor (when visit). */
static bool linear_fwd(run_ctx *r, int l, qs_linear_kind kind, const qs_tensor *x, const qs_tensor *w,
                       qs_tensor *y, bool visit, qs_error *err) {
  TRY(qs_op_linear(r->m->be, x, w, y, false, err));
  return !visit || visit_forward(r, l, kind, x, y, err);
}

static bool attention_block(run_ctx *r, int l, const qs_tensor *x_in, layer_acts *a, bool visit, qs_error *err) {
  qs_qwen3 *m = r->m;
  qs_backend *be = m->be;
  const layer_weights *w = &m->layers[l];
  const run_bufs *bufs = &m->bufs;
  TRY(qs_op_rmsnorm(be, x_in, &w->input_norm, eps_of(m), &a->a, &a->rstd_in, err));
  TRY(linear_fwd(r, l, QS_LIN_Q, &a->a, &w->q, &a->q_raw, visit, err));
  TRY(linear_fwd(r, l, QS_LIN_K, &a->a, &w->k, &a->k_raw, visit, err));
  TRY(linear_fwd(r, l, QS_LIN_V, &a->a, &w->v, &a->v, visit, err));
  TRY(qs_op_qknorm_rope(be, &a->q_raw, &w->q_norm, eps_of(m), &bufs->positions, m->cfg.rope_theta,
                        m->cfg.head_dim, &a->q, &a->rstd_q, err));
  TRY(qs_op_qknorm_rope(be, &a->k_raw, &w->k_norm, eps_of(m), &bufs->positions, m->cfg.rope_theta,
                        m->cfg.head_dim, &a->k, &a->rstd_k, err));
  TRY(qs_op_attention(be, &a->q, &a->k, &a->v, &bufs->cu_seqlens, &r->shape, &a->o, &a->lse, err));
  qs_tensor proj = bufs->proj;
  TRY(linear_fwd(r, l, QS_LIN_O, &a->o, &w->o, &proj, visit, err));
  TRY(qs_op_copy(be, &a->x_mid, x_in, err));
  return qs_op_add(be, &a->x_mid, &proj, err);
}

/* One decoder layer from x_in. With x_out NULL (a recompute for the
 * backward) it stops at the down_proj input, which is all the backward
 * needs. */
static bool layer_forward(run_ctx *r, int l, const qs_tensor *x_in, layer_acts *a, qs_tensor *x_out, bool visit,
                          qs_error *err) {
  qs_qwen3 *m = r->m;
  qs_backend *be = m->be;
  const layer_weights *w = &m->layers[l];
  TRY(attention_block(r, l, x_in, a, visit, err));
  TRY(qs_op_rmsnorm(be, &a->x_mid, &w->post_norm, eps_of(m), &a->b, &a->rstd_post, err));
  TRY(linear_fwd(r, l, QS_LIN_GATE, &a->b, &w->gate, &a->g, visit, err));
  TRY(linear_fwd(r, l, QS_LIN_UP, &a->b, &w->up, &a->u, visit, err));
  TRY(qs_op_swiglu(be, &a->g, &a->u, &a->m, err));
  if (!x_out) return true;
  qs_tensor proj = m->bufs.proj;
  TRY(linear_fwd(r, l, QS_LIN_DOWN, &a->m, &w->down, &proj, visit, err));
  TRY(qs_op_copy(be, x_out, &a->x_mid, err));
  return qs_op_add(be, x_out, &proj, err);
}

static qs_tensor *resid(run_ctx *r, int l) {
  return &r->m->bufs.resid[r->backward ? l : l % 2];
}

static layer_acts *acts(run_ctx *r, int l) {
  return &r->m->bufs.acts[r->backward && r->m->opts.keep_activations ? l : 0];
}

static bool decoder_forward(run_ctx *r, qs_error *err) {
  qs_qwen3 *m = r->m;
  TRY(qs_op_embedding(m->be, &m->bufs.ids, &m->embed, resid(r, 0), err));
  for (int l = 0; l < m->cfg.layers; l++) TRY(layer_forward(r, l, resid(r, l), acts(r, l), resid(r, l + 1), true, err));
  return qs_op_rmsnorm(m->be, resid(r, m->cfg.layers), &m->final_norm, eps_of(m), &m->bufs.hf, &m->bufs.rstd_f,
                       err);
}

/* ---- head -------------------------------------------------------------- */

/* The hooks see rows of one group's call; the visitor gets batch rows. */
static bool head_logits_hook(void *ctx, long row_begin, const qs_tensor *x, qs_tensor *logits, qs_error *err) {
  run_ctx *r = ctx;
  qs_linear_site site = {-1, QS_LIN_LM_HEAD, r->batch->index, r->head_row0 + row_begin};
  return r->visitor->forward(r->visitor->ctx, &site, x, logits, err);
}

static bool head_grad_hook(void *ctx, long row_begin, const qs_tensor *x, const qs_tensor *g, qs_error *err) {
  run_ctx *r = ctx;
  TRY(need_finite(r, g, -1, QS_LIN_LM_HEAD, "gradient dL/dY", err));
  qs_linear_site site = {-1, QS_LIN_LM_HEAD, r->batch->index, r->head_row0 + row_begin};
  return r->visitor->backward(r->visitor->ctx, &site, x, g, err);
}

/* Loss sum of group g (token rows [row0, row0 + rows)) and, when grads,
 * those rows of dL/d(final-normed hidden) with grad scale 1/N_g (0 for a
 * group without targets: its rows get no gradient). */
static bool group_head(run_ctx *r, int g, long row0, long rows, bool grads, double *loss_sum, qs_error *err) {
  qs_qwen3 *m = r->m;
  const qs_qwen3_visitor *v = r->visitor;
  bool visit = v && v->include_lm_head;
  qs_lm_head_hooks hooks = {visit && v->forward ? head_logits_hook : NULL,
                            visit && v->backward ? head_grad_hook : NULL, r};
  long n_valid = m->group_valid[g];
  float scale = n_valid > 0 ? (float)(1.0 / (double)n_valid) : 0.0f;
  qs_tensor hf = qs_tensor_rows(&m->bufs.hf, row0, rows), targets = qs_tensor_rows(&m->bufs.targets, row0, rows);
  qs_tensor dh = grads ? qs_tensor_rows(&m->bufs.grad.dh, row0, rows) : (qs_tensor){0};
  r->head_row0 = row0;
  return qs_op_lm_head_xent(m->be, &hf, &m->lm_head, &targets, scale, m->opts.lm_chunk_tokens, &hooks,
                            grads ? &dh : NULL, loss_sum, err);
}

/* Logits, loss and (with a backward) dL/d(final-normed hidden), one
 * lm_head call per loss group. */
static bool head(run_ctx *r, long n_valid, qs_qwen3_result *res, qs_error *err) {
  qs_qwen3 *m = r->m;
  const qs_qwen3_batch *b = r->batch;
  bool grads = r->backward && n_valid > 0;
  double loss_mean = 0.0;
  for (int g = 0; g < r->n_groups; g++) {
    int first, last;
    group_seqs(b, g, &first, &last);
    long row0 = b->cu_seqlens[first], rows = b->cu_seqlens[last] - row0;
    double loss_sum = 0.0;
    if (rows > 0) TRY(group_head(r, g, row0, rows, grads, &loss_sum, err));
    if (!isfinite(loss_sum)) {
      if (!b->group_seq) return qs_fail(err, QS_EXIT_RUNTIME, "non-finite loss in batch %ld", b->index);
      return qs_fail(err, QS_EXIT_RUNTIME, "non-finite loss in loss group %d of batch %ld", g, b->index);
    }
    m->group_loss[g] = m->group_valid[g] > 0 ? loss_sum / (double)m->group_valid[g] : 0.0;
    res->loss_sum += loss_sum;
    loss_mean += m->group_loss[g];
  }
  res->n_valid = n_valid;
  res->n_groups = r->n_groups;
  res->group_loss = m->group_loss;
  res->loss = r->n_groups == 1 ? m->group_loss[0] : loss_mean / r->n_groups;
  return true;
}

/* ---- backward ---------------------------------------------------------- */

/* The residual gradient as a Linear's G: itself when activations are f32. */
static const qs_tensor *delta_as_act(run_ctx *r, qs_error *err) {
  grad_bufs *g = &r->m->bufs.grad;
  if (r->m->be->act_dtype == QS_F32) return &g->delta;
  return qs_op_copy(r->m->be, &g->delta_act, &g->delta, err) ? &g->delta_act : NULL;
}

/* down, gate, up and the post-attention norm: delta becomes dL/dx_mid. */
static bool mlp_backward(run_ctx *r, int l, const layer_acts *a, qs_error *err) {
  qs_backend *be = r->m->be;
  const layer_weights *w = &r->m->layers[l];
  grad_bufs *g = &r->m->bufs.grad;
  const qs_tensor *g_down = delta_as_act(r, err);
  TRY(g_down);
  TRY(emit_grad(r, l, QS_LIN_DOWN, &a->m, g_down, err));
  TRY(qs_op_linear_bwd(be, g_down, &w->down, &g->dm, false, err));
  TRY(qs_op_swiglu_bwd(be, &a->g, &a->u, &g->dm, &g->g_gate, &g->g_up, err));
  TRY(emit_grad(r, l, QS_LIN_GATE, &a->b, &g->g_gate, err));
  TRY(emit_grad(r, l, QS_LIN_UP, &a->b, &g->g_up, err));
  TRY(qs_op_linear_bwd(be, &g->g_gate, &w->gate, &g->db, false, err));
  TRY(qs_op_linear_bwd(be, &g->g_up, &w->up, &g->db, true, err));
  return qs_op_rmsnorm_bwd(be, &a->x_mid, &w->post_norm, &a->rstd_post, &g->db, &g->delta, true, err);
}

/* o, attention, QK-norm/RoPE, q, k, v and the input norm: delta becomes
 * dL/dx_in. */
static bool attention_backward(run_ctx *r, int l, const qs_tensor *x_in, const layer_acts *a, qs_error *err) {
  qs_qwen3 *m = r->m;
  qs_backend *be = m->be;
  const layer_weights *w = &m->layers[l];
  grad_bufs *g = &m->bufs.grad;
  const qs_tensor *pos = &m->bufs.positions;
  const qs_tensor *g_o = delta_as_act(r, err);
  TRY(g_o);
  TRY(emit_grad(r, l, QS_LIN_O, &a->o, g_o, err));
  TRY(qs_op_linear_bwd(be, g_o, &w->o, &g->d_o, false, err));
  TRY(qs_op_attention_bwd(be, &a->q, &a->k, &a->v, &a->o, &a->lse, &g->d_o, &m->bufs.cu_seqlens, &r->shape,
                          &g->dq, &g->dk, &g->dv, err));
  TRY(qs_op_qknorm_rope_bwd(be, &a->q_raw, &w->q_norm, &a->rstd_q, pos, m->cfg.rope_theta, m->cfg.head_dim,
                            &g->dq, &g->g_q, err));
  TRY(qs_op_qknorm_rope_bwd(be, &a->k_raw, &w->k_norm, &a->rstd_k, pos, m->cfg.rope_theta, m->cfg.head_dim,
                            &g->dk, &g->g_k, err));
  TRY(emit_grad(r, l, QS_LIN_Q, &a->a, &g->g_q, err));
  TRY(emit_grad(r, l, QS_LIN_K, &a->a, &g->g_k, err));
  TRY(emit_grad(r, l, QS_LIN_V, &a->a, &g->dv, err));
  TRY(qs_op_linear_bwd(be, &g->g_q, &w->q, &g->da, false, err));
  TRY(qs_op_linear_bwd(be, &g->g_k, &w->k, &g->da, true, err));
  TRY(qs_op_linear_bwd(be, &g->dv, &w->v, &g->da, true, err));
  return qs_op_rmsnorm_bwd(be, x_in, &w->input_norm, &a->rstd_in, &g->da, &g->delta, true, err);
}

static bool decoder_backward(run_ctx *r, qs_error *err) {
  qs_qwen3 *m = r->m;
  grad_bufs *g = &m->bufs.grad;
  int top = m->cfg.layers;
  TRY(need_finite(r, &g->dh, -1, QS_LIN_LM_HEAD, "gradient dL/dX", err));
  TRY(qs_op_rmsnorm_bwd(m->be, resid(r, top), &m->final_norm, &m->bufs.rstd_f, &g->dh, &g->delta, false, err));
  for (int l = top - 1; l >= 0; l--) {
    layer_acts *a = acts(r, l);
    if (!m->opts.keep_activations) TRY(layer_forward(r, l, resid(r, l), a, NULL, false, err));
    TRY(mlp_backward(r, l, a, err));
    TRY(attention_backward(r, l, resid(r, l), a, err));
    TRY(need_finite(r, &g->delta, l, QS_LIN_COUNT, "residual gradient", err));
  }
  return true;
}

bool qs_qwen3_run(qs_qwen3 *m, const qs_qwen3_batch *batch, bool backward, const qs_qwen3_visitor *visitor,
                  qs_qwen3_result *result, qs_error *err) {
  memset(result, 0, sizeof *result);
  TRY(check_batch(m, batch, err));
  run_ctx r = {m,
               batch,
               visitor,
               backward,
               qs_batch_tokens(batch),
               {m->cfg.heads, m->cfg.kv_heads, m->cfg.head_dim, batch->n_seqs, 0, NULL,
                batch->n_seqs > 0 ? batch->cu_seqlens : NULL},
               group_count(batch),
               0};
  TRY(prepare_bufs(m, r.tokens, batch->n_seqs, backward, err));
  long n_valid;
  TRY(upload_batch(&r, &n_valid, err));
  TRY(decoder_forward(&r, err));
  TRY(head(&r, n_valid, result, err));
  if (!backward || n_valid == 0) return true;
  return decoder_backward(&r, err);
}

const qs_tensor *qs_qwen3_linear_weight(const qs_qwen3 *m, int layer, qs_linear_kind kind) {
  if (layer < 0 || kind == QS_LIN_LM_HEAD) return &m->lm_head;
  if (layer >= m->cfg.layers || kind > QS_LIN_DOWN) return NULL;
  const layer_weights *w = &m->layers[layer];
  const qs_tensor *by_kind[] = {&w->q, &w->k, &w->v, &w->o, &w->gate, &w->up, &w->down};
  return by_kind[kind];
}
