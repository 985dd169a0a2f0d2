/* Causal GQA attention over packed sequences on the CPU, forward and
 * backward. Every output row is computed by one thread in a fixed loop
 * order (no atomics), so results are deterministic; the backward recomputes
 * the probabilities from the forward's logsumexp in both of its passes
 * rather than storing the [T, T] matrix. */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu_internal.h"
#include "core/mem.h"

/* Per-token attention bounds: a token t of a sequence [b, e) whose keys
 * start at offset ks (key_start, 0 without one) gets first[t] = b + ks, its
 * first attended key, and end[t] = e; *longest = the longest sequence
 * (measured, not trusted from the shape's hint). Fails on malformed
 * cu_seqlens or key_start. */
static bool token_bounds(const qs_tensor *cu_seqlens, const qs_tensor *key_start, int n_seqs, long tokens,
                         long **first, long **end, long *longest, qs_error *err) {
  const int *cu = cu_seqlens->data;
  const int *ks = key_start ? key_start->data : NULL;
  if (cu[0] != 0 || cu[n_seqs] != tokens)
    return qs_fail(err, QS_EXIT_RUNTIME, "attention: cu_seqlens must run from 0 to %ld (got %d to %d)", tokens,
                   cu[0], cu[n_seqs]);
  for (int b = 0; b < n_seqs; b++) {
    if (cu[b + 1] < cu[b])
      return qs_fail(err, QS_EXIT_RUNTIME, "attention: cu_seqlens decreases at sequence %d (%d > %d)", b, cu[b],
                     cu[b + 1]);
    if (ks && (ks[b] < 0 || ks[b] > cu[b + 1] - cu[b]))
      return qs_fail(err, QS_EXIT_RUNTIME, "attention: key_start %d of sequence %d is outside [0, %d]", ks[b], b,
                     cu[b + 1] - cu[b]);
  }
  *first = qs_malloc((size_t)(tokens ? tokens : 1) * sizeof(long));
  *end = qs_malloc((size_t)(tokens ? tokens : 1) * sizeof(long));
  *longest = 1;
  for (int b = 0; b < n_seqs; b++) {
    if (cu[b + 1] - cu[b] > *longest) *longest = cu[b + 1] - cu[b];
    for (long t = cu[b]; t < cu[b + 1]; t++) {
      (*first)[t] = cu[b] + (ks ? ks[b] : 0);
      (*end)[t] = cu[b + 1];
    }
  }
  return true;
}

/* simd reductions reassociate the sum, but always the same way: results
 * stay deterministic. */
static float dot(const float *a, const float *b, int n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

static void axpy(float a, const float *x, float *y, int n) {
#pragma omp simd
  for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static void zero(float *y, int n) {
  for (int i = 0; i < n; i++) y[i] = 0.0f;
}

typedef struct attn_layout {
  int hd, n_rep;
  long q_width, kv_width; /* row widths of q/o and k/v */
  float scale;
  bool round; /* the bf16 mode: P and dS rounded to bf16 before their products, as on the GPU */
} attn_layout;

static attn_layout layout_of(const qs_backend *be, const qs_attn_shape *s) {
  attn_layout l = {s->head_dim, s->heads / s->kv_heads, (long)s->heads * s->head_dim,
                   (long)s->kv_heads * s->head_dim, (float)(1.0 / sqrt((double)s->head_dim)), cpu_rounds_bf16(be)};
  return l;
}

/* One query row (token t, head h): o = softmax(scores)·V over keys
 * [first, t]; returns the logsumexp. A query before its first key (a pad)
 * attends to nothing: o = 0 and the logsumexp of no score, -inf. p is
 * scratch of t - first + 1 floats. */
static float attend_row(const attn_layout *l, const float *q, const float *k, const float *v, long t, long first,
                        int h, float *p, float *o) {
  int g = h / l->n_rep;
  if (t < first) {
    zero(o, l->hd);
    return -INFINITY;
  }
  const float *qt = q + t * l->q_width + (long)h * l->hd;
  float m = -INFINITY;
  for (long tau = first; tau <= t; tau++) {
    float s = l->scale * dot(qt, k + tau * l->kv_width + (long)g * l->hd, l->hd);
    p[tau - first] = s;
    m = s > m ? s : m;
  }
  double sum = 0.0;
  for (long tau = first; tau <= t; tau++) {
    p[tau - first] = expf(p[tau - first] - m);
    sum += p[tau - first];
  }
  float inv = (float)(1.0 / sum);
  zero(o, l->hd);
  for (long tau = first; tau <= t; tau++)
    axpy(cpu_round_if(l->round, p[tau - first]) * inv, v + tau * l->kv_width + (long)g * l->hd, o, l->hd);
  return (float)((double)m + log(sum));
}

bool cpu_attention(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                   const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                   qs_error *err) {
  long *first, *end, longest, tokens = q->rows;
  if (!token_bounds(cu_seqlens, shape->key_start, shape->n_seqs, tokens, &first, &end, &longest, err)) return false;
  attn_layout l = layout_of(be, shape);
  const float *qd = q->data, *kd = k->data, *vd = v->data;
  float *od = o->data, *ld = lse->data;
  long rows = tokens * shape->heads;
#pragma omp parallel
  {
    float *p = qs_malloc((size_t)longest * sizeof(float));
#pragma omp for schedule(static)
    for (long r = 0; r < rows; r++) {
      long t = r / shape->heads;
      int h = (int)(r % shape->heads);
      ld[r] = attend_row(&l, qd, kd, vd, t, first[t], h, p, od + t * l.q_width + (long)h * l.hd);
    }
    free(p);
  }
  free(first);
  free(end);
  return true;
}

/* Probability P_tτ and dS_tτ = P(dP − Δ_t) of one (query t, key τ) pair of
 * query head h, with dP = do_t·v_τ (dS rounded in the bf16 mode). */
typedef struct attn_bwd_ctx {
  attn_layout l;
  const float *q, *k, *v, *lse, *d_o, *delta;
  int heads;
} attn_bwd_ctx;

static float pair_prob(const attn_bwd_ctx *c, long t, long tau, int h, int g) {
  const attn_layout *l = &c->l;
  float s = l->scale * dot(c->q + t * l->q_width + (long)h * l->hd, c->k + tau * l->kv_width + (long)g * l->hd, l->hd);
  return expf(s - c->lse[t * c->heads + h]);
}

static float pair_dscore(const attn_bwd_ctx *c, long t, long tau, int h, int g, float p) {
  const attn_layout *l = &c->l;
  float dp = dot(c->d_o + t * l->q_width + (long)h * l->hd, c->v + tau * l->kv_width + (long)g * l->hd, l->hd);
  return cpu_round_if(l->round, p * (dp - c->delta[t * c->heads + h]));
}

/* dq_t[h] = scale·Σ_τ dS_tτ k_τ over τ in [first, t] (0 for a query before
 * its first key). */
static void dq_row(const attn_bwd_ctx *c, long t, long first, int h, float *dq) {
  const attn_layout *l = &c->l;
  int g = h / l->n_rep;
  zero(dq, l->hd);
  for (long tau = first; tau <= t; tau++) {
    float ds = pair_dscore(c, t, tau, h, g, pair_prob(c, t, tau, h, g));
    axpy(l->scale * ds, c->k + tau * l->kv_width + (long)g * l->hd, dq, l->hd);
  }
}

/* dk_τ[g], dv_τ[g]: sums over the n_rep query heads of kv head g and the
 * queries t in [τ, last); 0 for a key before the first attended one (a pad),
 * which no query reads. */
static void dkv_row(const attn_bwd_ctx *c, long tau, long first, long last, int g, float *dk, float *dv) {
  const attn_layout *l = &c->l;
  zero(dk, l->hd);
  zero(dv, l->hd);
  if (tau < first) return;
  for (int h = g * l->n_rep; h < (g + 1) * l->n_rep; h++)
    for (long t = tau; t < last; t++) {
      /* The GPU's dV and dS of this pass both use the bf16 P. */
      float p = cpu_round_if(l->round, pair_prob(c, t, tau, h, g));
      axpy(p, c->d_o + t * l->q_width + (long)h * l->hd, dv, l->hd);
      axpy(l->scale * pair_dscore(c, t, tau, h, g, p), c->q + t * l->q_width + (long)h * l->hd, dk, l->hd);
    }
}

bool cpu_attention_bwd(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                       const qs_tensor *o, const qs_tensor *lse, const qs_tensor *d_o, const qs_tensor *cu_seqlens,
                       const qs_attn_shape *shape, qs_tensor *dq, qs_tensor *dk, qs_tensor *dv, qs_error *err) {
  long *first, *end, longest, tokens = q->rows;
  if (!token_bounds(cu_seqlens, shape->key_start, shape->n_seqs, tokens, &first, &end, &longest, err)) return false;
  (void)longest;
  attn_layout l = layout_of(be, shape);
  long rows = tokens * shape->heads, kv_rows = tokens * shape->kv_heads;
  float *delta = qs_malloc((size_t)(rows ? rows : 1) * sizeof(float));
  const float *od = o->data, *dod = d_o->data;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) delta[r] = dot(dod + r * l.hd, od + r * l.hd, l.hd);
  attn_bwd_ctx c = {l, q->data, k->data, v->data, lse->data, d_o->data, delta, shape->heads};
  float *dqd = dq->data, *dkd = dk->data, *dvd = dv->data;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; r++) {
    long t = r / shape->heads;
    int h = (int)(r % shape->heads);
    dq_row(&c, t, first[t], h, dqd + t * l.q_width + (long)h * l.hd);
  }
#pragma omp parallel for schedule(static)
  for (long r = 0; r < kv_rows; r++) {
    long tau = r / shape->kv_heads;
    int g = (int)(r % shape->kv_heads);
    long at = tau * l.kv_width + (long)g * l.hd;
    dkv_row(&c, tau, first[tau], end[tau], g, dkd + at, dvd + at);
  }
  free(delta);
  free(first);
  free(end);
  return true;
}
