/* Tensor helpers and the qs_op_* wrappers: argument checks shared by every
 * backend, then dispatch through the op table. A failed check is a bug in the
 * caller, reported as a runtime error naming the op and the operand. */
#include "backend/backend.h"

#include <math.h>
#include <string.h>

size_t qs_dtype_size(qs_dtype dtype) {
  switch (dtype) {
    case QS_BF16: return 2;
    case QS_F32:
    case QS_I32: return 4;
    case QS_F64: return 8;
  }
  return 4;
}

const char *qs_dtype_name(qs_dtype dtype) {
  switch (dtype) {
    case QS_F32: return "f32";
    case QS_BF16: return "bf16";
    case QS_I32: return "i32";
    case QS_F64: return "f64";
  }
  return "?";
}

long qs_tensor_numel(const qs_tensor *t) { return t->rows * t->cols; }

size_t qs_tensor_bytes(const qs_tensor *t) { return (size_t)qs_tensor_numel(t) * qs_dtype_size(t->dtype); }

qs_tensor qs_tensor_rows(const qs_tensor *t, long begin, long n) {
  qs_tensor v = *t;
  v.data = (char *)t->data + (size_t)begin * (size_t)t->cols * qs_dtype_size(t->dtype);
  v.rows = n;
  return v;
}

qs_tensor qs_tensor_reshape(const qs_tensor *t, long rows, long cols) {
  qs_tensor v = *t;
  v.rows = rows;
  v.cols = cols;
  return v;
}

void qs_backend_destroy(qs_backend *be) {
  if (be) be->ops->destroy(be);
}

/* ---- memory ------------------------------------------------------------ */

bool qs_tensor_alloc(qs_backend *be, qs_dtype dtype, long rows, long cols, qs_tensor *t, qs_error *err) {
  memset(t, 0, sizeof *t);
  if (rows < 0 || cols < 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s backend: tensor shape [%ld, %ld] is negative", be->name, rows, cols);
  qs_tensor shape = {NULL, dtype, rows, cols};
  size_t bytes = qs_tensor_bytes(&shape);
  void *ptr = NULL;
  /* A zero-sized request still gets a distinct buffer so views stay valid. */
  if (!be->ops->alloc(be, bytes ? bytes : 1, &ptr, err)) return false;
  *t = shape;
  t->data = ptr;
  return true;
}

void qs_tensor_free(qs_backend *be, qs_tensor *t) {
  if (t->data) be->ops->free(be, t->data);
  memset(t, 0, sizeof *t);
}

bool qs_tensor_upload(qs_backend *be, qs_tensor *t, const void *host, qs_error *err) {
  return be->ops->upload(be, t->data, host, qs_tensor_bytes(t), err);
}

bool qs_tensor_download(qs_backend *be, void *host, const qs_tensor *t, qs_error *err) {
  return be->ops->download(be, host, t->data, qs_tensor_bytes(t), err);
}

bool qs_tensor_import(qs_backend *be, const void *host, qs_dtype dtype, long rows, long cols, qs_tensor *t,
                      qs_error *err) {
  memset(t, 0, sizeof *t);
  qs_tensor shape = {NULL, dtype, rows, cols};
  void *ptr = NULL;
  if (!be->ops->import(be, host, qs_tensor_bytes(&shape), &ptr, err)) return false;
  *t = shape;
  t->data = ptr;
  return true;
}

void qs_tensor_unimport(qs_backend *be, qs_tensor *t) {
  if (t->data) be->ops->unimport(be, t->data);
  memset(t, 0, sizeof *t);
}

/* ---- argument checks --------------------------------------------------- */

static bool need_dtype(const char *op, const char *what, const qs_tensor *t, qs_dtype dtype, qs_error *err) {
  if (t->dtype == dtype) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "%s: %s has dtype %s, expected %s", op, what, qs_dtype_name(t->dtype),
                 qs_dtype_name(dtype));
}

static bool need_weight_dtype(const char *op, const qs_tensor *w, qs_error *err) {
  if (w->dtype == QS_BF16 || w->dtype == QS_F32) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "%s: weight has dtype %s, expected bf16 or f32", op,
                 qs_dtype_name(w->dtype));
}

static bool need_float(const char *op, const char *what, const qs_tensor *t, qs_error *err) {
  if (t->dtype == QS_F32 || t->dtype == QS_BF16) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "%s: %s has dtype %s, expected f32 or bf16", op, what,
                 qs_dtype_name(t->dtype));
}

static bool need_act(const char *op, const char *what, const qs_backend *be, const qs_tensor *t, qs_error *err) {
  return need_dtype(op, what, t, be->act_dtype, err);
}

static bool need_shape(const char *op, const char *what, const qs_tensor *t, long rows, long cols, qs_error *err) {
  if (t->rows == rows && t->cols == cols) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "%s: %s is [%ld, %ld], expected [%ld, %ld]", op, what, t->rows, t->cols,
                 rows, cols);
}

static bool need_numel(const char *op, const char *what, const qs_tensor *t, long n, qs_error *err) {
  if (qs_tensor_numel(t) == n) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "%s: %s has %ld elements, expected %ld", op, what, qs_tensor_numel(t), n);
}

static bool need_head_dim(const char *op, const qs_tensor *raw, int head_dim, qs_error *err) {
  if (head_dim > 0 && head_dim % 2 == 0 && raw->cols % head_dim == 0) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "%s: head_dim %d must be even and divide the row width %ld", op, head_dim,
                 raw->cols);
}

/* ---- ops --------------------------------------------------------------- */

bool qs_op_linear(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                  qs_error *err) {
  const char *op = "linear";
  /* An f32 y keeps the unrounded output (the score's Y). */
  if (y->dtype != QS_F32 && !need_act(op, "y", be, y, err)) return false;
  if (!need_act(op, "x", be, x, err) || !need_weight_dtype(op, w, err) ||
      !need_shape(op, "x", x, x->rows, w->cols, err) || !need_shape(op, "y", y, x->rows, w->rows, err))
    return false;
  return be->ops->linear(be, x, w, y, accumulate, err);
}

bool qs_op_linear_bwd(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                      qs_error *err) {
  const char *op = "linear_bwd";
  if (!need_act(op, "dy", be, dy, err) || !need_act(op, "dx", be, dx, err) || !need_weight_dtype(op, w, err) ||
      !need_shape(op, "dy", dy, dy->rows, w->rows, err) || !need_shape(op, "dx", dx, dy->rows, w->cols, err))
    return false;
  return be->ops->linear_bwd(be, dy, w, dx, accumulate, err);
}

bool qs_op_rmsnorm(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                   qs_tensor *rstd, qs_error *err) {
  const char *op = "rmsnorm";
  if (!need_act(op, "x", be, x, err) || !need_act(op, "y", be, y, err) || !need_weight_dtype(op, w, err) ||
      !need_dtype(op, "rstd", rstd, QS_F32, err) || !need_numel(op, "w", w, x->cols, err) ||
      !need_shape(op, "y", y, x->rows, x->cols, err) || !need_numel(op, "rstd", rstd, x->rows, err))
    return false;
  return be->ops->rmsnorm(be, x, w, eps, y, rstd, err);
}

bool qs_op_rmsnorm_bwd(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                       const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err) {
  const char *op = "rmsnorm_bwd";
  if (!need_act(op, "dy", be, dy, err) || !need_weight_dtype(op, w, err) ||
      !need_dtype(op, "rstd", rstd, QS_F32, err) || !need_numel(op, "w", w, x->cols, err) ||
      !need_shape(op, "dy", dy, x->rows, x->cols, err) || !need_shape(op, "dx", dx, x->rows, x->cols, err) ||
      !need_numel(op, "rstd", rstd, x->rows, err))
    return false;
  /* The residual stream and its gradient may be kept in f32 on any backend. */
  if (x->dtype != QS_F32 && !need_act(op, "x", be, x, err)) return false;
  if (dx->dtype != QS_F32 && !need_act(op, "dx", be, dx, err)) return false;
  return be->ops->rmsnorm_bwd(be, x, w, rstd, dy, dx, accumulate, err);
}

static bool check_qknorm_common(qs_backend *be, const char *op, const qs_tensor *raw, const qs_tensor *w,
                                const qs_tensor *positions, int head_dim, const qs_tensor *rstd, qs_error *err) {
  return need_act(op, "raw", be, raw, err) && need_weight_dtype(op, w, err) &&
         need_head_dim(op, raw, head_dim, err) && need_numel(op, "w", w, head_dim, err) &&
         need_dtype(op, "positions", positions, QS_I32, err) &&
         need_numel(op, "positions", positions, raw->rows, err) && need_dtype(op, "rstd", rstd, QS_F32, err) &&
         need_numel(op, "rstd", rstd, raw->rows * (raw->cols / head_dim), err);
}

bool qs_op_qknorm_rope(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, float eps,
                       const qs_tensor *positions, double theta, int head_dim, qs_tensor *out, qs_tensor *rstd,
                       qs_error *err) {
  const char *op = "qknorm_rope";
  if (!check_qknorm_common(be, op, raw, w, positions, head_dim, rstd, err) || !need_act(op, "out", be, out, err) ||
      !need_shape(op, "out", out, raw->rows, raw->cols, err))
    return false;
  return be->ops->qknorm_rope(be, raw, w, eps, positions, theta, head_dim, out, rstd, err);
}

bool qs_op_qknorm_rope_bwd(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *rstd,
                           const qs_tensor *positions, double theta, int head_dim, const qs_tensor *dout,
                           qs_tensor *draw, qs_error *err) {
  const char *op = "qknorm_rope_bwd";
  if (!check_qknorm_common(be, op, raw, w, positions, head_dim, rstd, err) ||
      !need_act(op, "dout", be, dout, err) || !need_act(op, "draw", be, draw, err) ||
      !need_shape(op, "dout", dout, raw->rows, raw->cols, err) ||
      !need_shape(op, "draw", draw, raw->rows, raw->cols, err))
    return false;
  return be->ops->qknorm_rope_bwd(be, raw, w, rstd, positions, theta, head_dim, dout, draw, err);
}

static bool check_attn_shape(const char *op, const qs_attn_shape *s, qs_error *err) {
  if (!(s->heads > 0 && s->kv_heads > 0 && s->head_dim > 0 && s->heads % s->kv_heads == 0 && s->n_seqs >= 0 &&
        s->max_seqlen >= 0))
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: bad shape (heads %d, kv_heads %d, head_dim %d, %d sequences)", op,
                   s->heads, s->kv_heads, s->head_dim, s->n_seqs);
  return !s->key_start || (need_dtype(op, "key_start", s->key_start, QS_I32, err) &&
                           need_numel(op, "key_start", s->key_start, s->n_seqs, err));
}

/* q, k, v (or their gradients) against the attention shape. */
static bool check_qkv(qs_backend *be, const char *op, const char *names[3], const qs_tensor *q,
                      const qs_tensor *k, const qs_tensor *v, const qs_attn_shape *s, qs_error *err) {
  long t = q->rows, kvw = (long)s->kv_heads * s->head_dim;
  return need_act(op, names[0], be, q, err) && need_act(op, names[1], be, k, err) &&
         need_act(op, names[2], be, v, err) && need_shape(op, names[0], q, t, (long)s->heads * s->head_dim, err) &&
         need_shape(op, names[1], k, t, kvw, err) && need_shape(op, names[2], v, t, kvw, err);
}

static bool check_attn_common(qs_backend *be, const char *op, const qs_tensor *q, const qs_tensor *k,
                              const qs_tensor *v, const qs_tensor *cu_seqlens, const qs_attn_shape *s,
                              const qs_tensor *o, const qs_tensor *lse, qs_error *err) {
  static const char *names[3] = {"q", "k", "v"};
  return check_attn_shape(op, s, err) && check_qkv(be, op, names, q, k, v, s, err) &&
         need_act(op, "o", be, o, err) && need_shape(op, "o", o, q->rows, q->cols, err) &&
         need_dtype(op, "lse", lse, QS_F32, err) && need_numel(op, "lse", lse, q->rows * s->heads, err) &&
         need_dtype(op, "cu_seqlens", cu_seqlens, QS_I32, err) &&
         need_numel(op, "cu_seqlens", cu_seqlens, (long)s->n_seqs + 1, err);
}

bool qs_op_attention(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                     const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                     qs_error *err) {
  if (!check_attn_common(be, "attention", q, k, v, cu_seqlens, shape, o, lse, err)) return false;
  return be->ops->attention(be, q, k, v, cu_seqlens, shape, o, lse, err);
}

bool qs_op_attention_bwd(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                         const qs_tensor *o, const qs_tensor *lse, const qs_tensor *d_o,
                         const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *dq, qs_tensor *dk,
                         qs_tensor *dv, qs_error *err) {
  static const char *grad_names[3] = {"dq", "dk", "dv"};
  const char *op = "attention_bwd";
  if (!check_attn_common(be, op, q, k, v, cu_seqlens, shape, o, lse, err) ||
      !check_qkv(be, op, grad_names, dq, dk, dv, shape, err) || !need_act(op, "d_o", be, d_o, err) ||
      !need_shape(op, "d_o", d_o, o->rows, o->cols, err) || !need_shape(op, "dq", dq, q->rows, q->cols, err))
    return false;
  return be->ops->attention_bwd(be, q, k, v, o, lse, d_o, cu_seqlens, shape, dq, dk, dv, err);
}

/* Every tensor of an elementwise op: activation dtype, the shape of the first. */
static bool check_elementwise(qs_backend *be, const char *op, const char *const names[],
                              const qs_tensor *const ts[], int n, qs_error *err) {
  for (int i = 0; i < n; i++)
    if (!need_act(op, names[i], be, ts[i], err) || !need_shape(op, names[i], ts[i], ts[0]->rows, ts[0]->cols, err))
      return false;
  return true;
}

bool qs_op_swiglu(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err) {
  static const char *const names[] = {"g", "u", "m"};
  const qs_tensor *const ts[] = {g, u, m};
  if (!check_elementwise(be, "swiglu", names, ts, 3, err)) return false;
  return be->ops->swiglu(be, g, u, m, err);
}

bool qs_op_swiglu_bwd(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm,
                      qs_tensor *dg, qs_tensor *du, qs_error *err) {
  static const char *const names[] = {"g", "u", "dm", "dg", "du"};
  const qs_tensor *const ts[] = {g, u, dm, dg, du};
  if (!check_elementwise(be, "swiglu_bwd", names, ts, 5, err)) return false;
  return be->ops->swiglu_bwd(be, g, u, dm, dg, du, err);
}

bool qs_op_embedding(qs_backend *be, const qs_tensor *ids, const qs_tensor *table, qs_tensor *h,
                     qs_error *err) {
  const char *op = "embedding";
  if (!need_dtype(op, "ids", ids, QS_I32, err) || !need_weight_dtype(op, table, err) ||
      !need_act(op, "h", be, h, err) || !need_shape(op, "h", h, qs_tensor_numel(ids), table->cols, err))
    return false;
  return be->ops->embedding(be, ids, table, h, err);
}

bool qs_op_add(qs_backend *be, qs_tensor *acc, const qs_tensor *x, qs_error *err) {
  const char *op = "add";
  if (acc->dtype != QS_F32 && !need_act(op, "acc", be, acc, err)) return false;
  if (!need_act(op, "x", be, x, err) || !need_shape(op, "x", x, acc->rows, acc->cols, err)) return false;
  return be->ops->add(be, acc, x, err);
}

bool qs_op_copy(qs_backend *be, qs_tensor *dst, const qs_tensor *src, qs_error *err) {
  const char *op = "copy";
  if (dst->dtype == QS_F64 || src->dtype == QS_F64)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: f64 tensors (score accumulators) are not copied", op);
  if (dst->dtype == QS_I32 || src->dtype == QS_I32) {
    if (!need_dtype(op, "dst", dst, src->dtype, err)) return false;
  }
  if (!need_numel(op, "dst", dst, qs_tensor_numel(src), err)) return false;
  return be->ops->copy(be, dst, src, err);
}

bool qs_op_lm_head_xent(qs_backend *be, const qs_tensor *h, const qs_tensor *w, const qs_tensor *targets,
                        float grad_scale, long chunk_tokens, const qs_lm_head_hooks *hooks, qs_tensor *dh,
                        double *loss_sum, qs_error *err) {
  const char *op = "lm_head_xent";
  if (!need_act(op, "h", be, h, err) || !need_weight_dtype(op, w, err) ||
      !need_shape(op, "h", h, h->rows, w->cols, err) || !need_dtype(op, "targets", targets, QS_I32, err) ||
      !need_numel(op, "targets", targets, h->rows, err))
    return false;
  if (dh && (!need_act(op, "dh", be, dh, err) || !need_shape(op, "dh", dh, h->rows, h->cols, err))) return false;
  if (chunk_tokens <= 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: chunk_tokens must be positive (got %ld)", op, chunk_tokens);
  static const qs_lm_head_hooks no_hooks = {NULL, NULL, NULL};
  return be->ops->lm_head_xent(be, h, w, targets, grad_scale, chunk_tokens, hooks ? hooks : &no_hooks, dh,
                               loss_sum, err);
}

bool qs_op_amax_accumulate(qs_backend *be, const qs_tensor *x, qs_tensor *acc, qs_error *err) {
  const char *op = "amax_accumulate";
  if (!need_float(op, "x", x, err) || !need_dtype(op, "acc", acc, QS_F32, err) || !need_numel(op, "acc", acc, 1, err))
    return false;
  return be->ops->amax_accumulate(be, x, acc, err);
}

bool qs_op_all_finite(qs_backend *be, const qs_tensor *x, bool *finite, qs_error *err) {
  if (!need_float("all_finite", "x", x, err)) return false;
  return be->ops->all_finite(be, x, finite, err);
}

float qs_rope_inv_freq(double theta, int head_dim, int i) {
  float exponent = (float)(2 * i) / (float)head_dim;
  float base = (float)theta;
  /* pow in double then rounded: the correctly rounded fp32 power. */
  float power = (float)pow((double)base, (double)exponent);
  return 1.0f / power;
}

/* ---- quantization and sensitivity scores ------------------------------- */

long qs_fq_amax_count(const qs_fq_spec *spec, long rows, long cols) {
  switch (spec->weight ? spec->format->weight_amax : spec->format->act_amax) {
    case QS_GRAN_TENSOR: return rows * cols > 0 ? 1 : 0;
    case QS_GRAN_CHANNEL: return rows;
    case QS_GRAN_BLOCK: return rows * cols / spec->format->block;
    case QS_GRAN_NONE: break;
  }
  return 0;
}

bool qs_op_fake_quant(qs_backend *be, const qs_fq_spec *spec, const qs_tensor *x, const qs_tensor *amax,
                      qs_tensor *y, qs_error *err) {
  const char *op = "fake_quant";
  if (!need_float(op, "x", x, err) || !need_float(op, "y", y, err) ||
      !need_shape(op, "y", y, x->rows, x->cols, err))
    return false;
  if (amax && (!need_dtype(op, "amax", amax, QS_F32, err) ||
               !need_numel(op, "amax", amax, qs_fq_amax_count(spec, x->rows, x->cols), err)))
    return false;
  return be->ops->fake_quant(be, spec, x, amax, y, err);
}

bool qs_op_quant_score(qs_backend *be, const qs_tensor *xr, const qs_tensor *wr, const qs_tensor *y,
                       const qs_tensor *g, qs_delta_mode mode, qs_tensor *acc, long slot, qs_error *err) {
  const char *op = "quant_score";
  long t = xr->rows, n = wr->rows;
  if (!need_float(op, "xr", xr, err) || !need_float(op, "wr", wr, err) || !need_dtype(op, "y", y, QS_F32, err) ||
      !need_act(op, "g", be, g, err) || !need_dtype(op, "acc", acc, QS_F64, err) ||
      !need_shape(op, "xr", xr, t, wr->cols, err) || !need_shape(op, "y", y, t, n, err) ||
      !need_shape(op, "g", g, t, n, err))
    return false;
  if (slot < 0 || slot >= qs_tensor_numel(acc))
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: slot %ld is outside acc's %ld elements", op, slot,
                   qs_tensor_numel(acc));
  if (mode != QS_DELTA_ACCURATE && mode != QS_DELTA_MODELOPT)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: unknown delta mode %d", op, (int)mode);
  return be->ops->quant_score(be, xr, wr, y, g, mode, acc, slot, err);
}
