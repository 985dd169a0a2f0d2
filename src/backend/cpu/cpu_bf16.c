/* The CPU backend's bf16 mode (qs_cpu_backend_new_bf16): activations are
 * bf16 tensors, as on the CUDA backend. Each op that takes activations
 * copies its bf16 arguments to f32 (exact), runs the f32 op of this backend
 * (which rounds its intermediates, cpu_rounds_bf16) and rounds its bf16
 * outputs back to nearest even, as a CUDA kernel's store does. f32
 * arguments (the residual gradient, rstd, lse, the score's Y) pass as they
 * are. Ops that already read bf16 (copy, amax, finiteness, fake quant) keep
 * their f32-mode entries. */
#include <stdlib.h>

#include "backend/cpu/cpu_internal.h"
#include "core/mem.h"

enum { MAX_COPIES = 8 };

/* The f32 copies of one op call's bf16 arguments. */
typedef struct f32_copies {
  qs_backend *be;
  qs_tensor copy[MAX_COPIES];
  qs_tensor *dest[MAX_COPIES]; /* the bf16 output a copy is rounded into, or NULL for an input */
  int n;
} f32_copies;

/* A new host tensor of dtype with t's values (cpu_copy converts, rounding
 * to nearest even into bf16). */
static qs_tensor converted(qs_backend *be, const qs_tensor *t, qs_dtype dtype) {
  long n = qs_tensor_numel(t);
  qs_tensor out = {qs_malloc((size_t)(n ? n : 1) * qs_dtype_size(dtype)), dtype, t->rows, t->cols};
  cpu_copy(be, &out, t, NULL);
  return out;
}

static qs_tensor *widen(f32_copies *c, const qs_tensor *t, qs_tensor *dest) {
  qs_tensor *w = &c->copy[c->n];
  *w = converted(c->be, t, QS_F32);
  c->dest[c->n++] = dest;
  return w;
}

/* t as f32: itself, or a copy when it is bf16. */
static const qs_tensor *in(f32_copies *c, const qs_tensor *t) { return t->dtype == QS_BF16 ? widen(c, t, NULL) : t; }

/* An output (its contents copied too, for the ops that accumulate): rounded
 * back into t by done() when t is bf16. */
static qs_tensor *out(f32_copies *c, qs_tensor *t) { return t->dtype == QS_BF16 ? widen(c, t, t) : t; }

/* Rounds the outputs back (when the op succeeded) and frees the copies. */
static bool done(f32_copies *c, bool ok) {
  for (int i = 0; i < c->n; i++) {
    if (ok && c->dest[i]) cpu_copy(c->be, c->dest[i], &c->copy[i], NULL);
    free(c->copy[i].data);
  }
  return ok;
}

static bool bf16_linear(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                        qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_linear(be, in(&c, x), w, out(&c, y), accumulate, err));
}

static bool bf16_linear_bwd(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                            qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_linear_bwd(be, in(&c, dy), w, out(&c, dx), accumulate, err));
}

static bool bf16_rmsnorm(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                         qs_tensor *rstd, qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_rmsnorm(be, in(&c, x), w, eps, out(&c, y), rstd, err));
}

static bool bf16_rmsnorm_bwd(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                             const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_rmsnorm_bwd(be, in(&c, x), w, rstd, in(&c, dy), out(&c, dx), accumulate, err));
}

static bool bf16_qknorm_rope(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, float eps,
                             const qs_tensor *positions, double theta, int head_dim, qs_tensor *o, qs_tensor *rstd,
                             qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_qknorm_rope(be, in(&c, raw), w, eps, positions, theta, head_dim, out(&c, o), rstd, err));
}

static bool bf16_qknorm_rope_bwd(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *rstd,
                                 const qs_tensor *positions, double theta, int head_dim, const qs_tensor *dout,
                                 qs_tensor *draw, qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_qknorm_rope_bwd(be, in(&c, raw), w, rstd, positions, theta, head_dim, in(&c, dout),
                                      out(&c, draw), err));
}

static bool bf16_attention(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                           const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                           qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_attention(be, in(&c, q), in(&c, k), in(&c, v), cu_seqlens, shape, out(&c, o), lse, err));
}

static bool bf16_attention_bwd(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                               const qs_tensor *o, const qs_tensor *lse, const qs_tensor *d_o,
                               const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *dq, qs_tensor *dk,
                               qs_tensor *dv, qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_attention_bwd(be, in(&c, q), in(&c, k), in(&c, v), in(&c, o), lse, in(&c, d_o), cu_seqlens,
                                    shape, out(&c, dq), out(&c, dk), out(&c, dv), err));
}

static bool bf16_swiglu(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_swiglu(be, in(&c, g), in(&c, u), out(&c, m), err));
}

static bool bf16_swiglu_bwd(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm,
                            qs_tensor *dg, qs_tensor *du, qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_swiglu_bwd(be, in(&c, g), in(&c, u), in(&c, dm), out(&c, dg), out(&c, du), err));
}

static bool bf16_embedding(qs_backend *be, const qs_tensor *ids, const qs_tensor *table, qs_tensor *h,
                           qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_embedding(be, ids, table, out(&c, h), err));
}

static bool bf16_add(qs_backend *be, qs_tensor *acc, const qs_tensor *x, qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_add(be, out(&c, acc), in(&c, x), err));
}

static bool bf16_quant_score(qs_backend *be, const qs_tensor *xr, const qs_tensor *wr, const qs_tensor *y,
                             const qs_tensor *g, qs_delta_mode mode, qs_tensor *acc, long slot, qs_error *err) {
  f32_copies c = {.be = be};
  return done(&c, cpu_quant_score(be, xr, wr, y, in(&c, g), mode, acc, slot, err));
}

/* ---- lm_head: the hooks see bf16 tensors ------------------------------- */

/* The caller's hooks and the backend the bridge converts with. */
typedef struct hook_bridge {
  qs_backend *be;
  const qs_lm_head_hooks *user;
} hook_bridge;

/* Calls the caller's hook with bf16 copies of the f32 op's chunk rows x and
 * logits or G_lm z, whose values are bf16 already (cpu_lm_head_xent rounds
 * them in this mode); logits changed by on_logits are copied back. */
static bool call_user(const hook_bridge *b, long row_begin, const qs_tensor *x, const qs_tensor *z,
                      qs_tensor *logits, qs_error *err) {
  qs_tensor xb = converted(b->be, x, QS_BF16), zb = converted(b->be, z, QS_BF16);
  bool ok = logits ? b->user->on_logits(b->user->ctx, row_begin, &xb, &zb, err)
                   : b->user->on_grad(b->user->ctx, row_begin, &xb, &zb, err);
  if (ok && logits) cpu_copy(b->be, logits, &zb, NULL);
  free(xb.data);
  free(zb.data);
  return ok;
}

static bool bridge_logits(void *ctx, long row_begin, const qs_tensor *x, qs_tensor *logits, qs_error *err) {
  return call_user(ctx, row_begin, x, logits, logits, err);
}

static bool bridge_grad(void *ctx, long row_begin, const qs_tensor *x, const qs_tensor *g, qs_error *err) {
  return call_user(ctx, row_begin, x, g, NULL, err);
}

static bool bf16_lm_head_xent(qs_backend *be, const qs_tensor *h, const qs_tensor *w, const qs_tensor *targets,
                              float grad_scale, long chunk_tokens, const qs_lm_head_hooks *hooks, qs_tensor *dh,
                              double *loss_sum, qs_error *err) {
  hook_bridge bridge = {be, hooks};
  qs_lm_head_hooks bridged = {hooks->on_logits ? bridge_logits : NULL, hooks->on_grad ? bridge_grad : NULL, &bridge};
  f32_copies c = {.be = be};
  return done(&c, cpu_lm_head_xent(be, in(&c, h), w, targets, grad_scale, chunk_tokens, &bridged,
                                   dh ? out(&c, dh) : NULL, loss_sum, err));
}

void cpu_bf16_ops(qs_backend_ops *ops) {
  ops->linear = bf16_linear;
  ops->linear_bwd = bf16_linear_bwd;
  ops->rmsnorm = bf16_rmsnorm;
  ops->rmsnorm_bwd = bf16_rmsnorm_bwd;
  ops->qknorm_rope = bf16_qknorm_rope;
  ops->qknorm_rope_bwd = bf16_qknorm_rope_bwd;
  ops->attention = bf16_attention;
  ops->attention_bwd = bf16_attention_bwd;
  ops->swiglu = bf16_swiglu;
  ops->swiglu_bwd = bf16_swiglu_bwd;
  ops->embedding = bf16_embedding;
  ops->add = bf16_add;
  ops->lm_head_xent = bf16_lm_head_xent;
  ops->quant_score = bf16_quant_score;
}
