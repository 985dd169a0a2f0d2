/* The backend op table: every numerical step of the Qwen3 forward and
 * activation-gradient backward, on tensors that live in a backend's memory.
 *
 * Two backends implement the same table: the CPU reference (fp32 math,
 * OpenBLAS, OpenMP; src/backend/cpu) and the CUDA backend (bf16 storage, fp32
 * accumulation). The model code and the engine call only the qs_op_* wrappers
 * below, which check shapes and dtypes once for every backend and then
 * dispatch, so a backend implementation may assume well-formed arguments.
 *
 * Conventions
 *   - A tensor is a contiguous row-major 2-D view [rows, cols] of backend
 *     memory ("device" memory; on the CPU backend that is host memory).
 *     Vectors are [n, 1] or [1, n]; only the element count matters for them.
 *   - Weights are [out, in] as stored in the checkpoint, dtype BF16 (imported
 *     with qs_backend_import) or F32 (e.g. a weight difference made by the
 *     engine). Activations have the backend's activation dtype
 *     (qs_backend.act_dtype: F32 on the CPU); rstd, logsumexp, the residual
 *     gradient and reduction results are always F32; ids, positions, targets
 *     and cu_seqlens are I32.
 *   - T = tokens of a packed batch; sequences are delimited by cu_seqlens
 *     [B+1] (cu[0] = 0, cu[B] = T); attention never crosses a boundary.
 *   - Every op returns false with err filled on failure (bad arguments, a
 *     device error, or a failing callback); outputs are then unspecified.
 *   - Ops are deterministic: the same inputs give bit-identical outputs. */
#ifndef QSENS_BACKEND_BACKEND_H
#define QSENS_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/score_order.h"
#include "core/error.h"
#include "quant/format.h"
#include "quant/fq.h"

/* F64 tensors only hold score accumulators (qs_op_quant_score). */
typedef enum qs_dtype { QS_F32, QS_BF16, QS_I32, QS_F64 } qs_dtype;

typedef struct qs_tensor {
  void *data; /* backend memory */
  qs_dtype dtype;
  long rows, cols;
} qs_tensor;

size_t qs_dtype_size(qs_dtype dtype);
const char *qs_dtype_name(qs_dtype dtype);
long qs_tensor_numel(const qs_tensor *t);
size_t qs_tensor_bytes(const qs_tensor *t);
/* Rows [begin, begin + n) of t (no copy). */
qs_tensor qs_tensor_rows(const qs_tensor *t, long begin, long n);
/* The same memory seen as [rows, cols]; rows * cols must equal t's numel. */
qs_tensor qs_tensor_reshape(const qs_tensor *t, long rows, long cols);

/* Per-chunk hooks of the fused lm_head + cross-entropy (token rows
 * [row_begin, row_begin + x->rows) of the batch), called from the host
 * between the chunk's steps. on_logits sees the chunk's logits before the
 * loss and may modify them; on_grad sees G_lm = dL/dlogits of the chunk and
 * is called only when the op computes dh. Either may be NULL. */
typedef struct qs_lm_head_hooks {
  bool (*on_logits)(void *ctx, long row_begin, const qs_tensor *x, qs_tensor *logits, qs_error *err);
  bool (*on_grad)(void *ctx, long row_begin, const qs_tensor *x, const qs_tensor *g, qs_error *err);
  void *ctx;
} qs_lm_head_hooks;

/* Shape of a packed causal GQA attention. */
typedef struct qs_attn_shape {
  int heads, kv_heads, head_dim; /* heads % kv_heads == 0 */
  int n_seqs;                    /* B */
  int max_seqlen;                /* longest sequence (a launch-size hint) */
  /* I32 [B] or NULL: in sequence b only keys at offsets >= key_start[b] are
   * attended (left padding); a query at an offset < key_start[b] has no key:
   * its output is 0, its lse is -INFINITY and it passes no gradient.
   * 0 <= key_start[b] <= length of sequence b. */
  const qs_tensor *key_start;
  /* Host copy of cu_seqlens [B+1] or NULL; when given it must equal the
   * device tensor, and a GPU backend then launches without reading the
   * boundaries back. */
  const int32_t *cu_seqlens_host;
} qs_attn_shape;

/* Which quantizer to apply: a format in a role (weight or activation), with
 * the format options that change its numerics. */
typedef struct qs_fq_spec {
  const qs_qformat *format;
  bool weight;         /* weight role: amax from W (per tensor, channel or block) */
  qs_mx_rule mx_rule;  /* MXFP4 shared-exponent rule */
  int nvfp4_block;     /* 0: the format's block (16); 32 for nvfp4_w4a8_block=32 */
} qs_fq_spec;

/* Precision of Δ = Y_r − Y (§4.3). */
typedef enum qs_delta_mode {
  QS_DELTA_ACCURATE, /* Δ = Y_r − Y of unrounded fp32 GEMM outputs, in fp32; G as given */
  QS_DELTA_MODELOPT, /* Δ = bf16(bf16(Y_r) − bf16(Y)), G rounded to bf16 (ModelOpt parity) */
} qs_delta_mode;

typedef struct qs_backend qs_backend;

/* What a backend implements; arguments are already validated (see the
 * qs_op_* wrappers for the meaning of each). */
typedef struct qs_backend_ops {
  bool (*alloc)(qs_backend *be, size_t bytes, void **ptr, qs_error *err);
  void (*free)(qs_backend *be, void *ptr);
  bool (*upload)(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err);
  bool (*download)(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err);
  bool (*import)(qs_backend *be, const void *host, size_t bytes, void **ptr, qs_error *err);
  void (*unimport)(qs_backend *be, void *ptr);
  void (*destroy)(qs_backend *be);

  bool (*linear)(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                 qs_error *err);
  bool (*linear_bwd)(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                     qs_error *err);
  bool (*rmsnorm)(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                  qs_tensor *rstd, qs_error *err);
  bool (*rmsnorm_bwd)(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                      const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err);
  bool (*qknorm_rope)(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, float eps,
                      const qs_tensor *positions, double theta, int head_dim, qs_tensor *out, qs_tensor *rstd,
                      qs_error *err);
  bool (*qknorm_rope_bwd)(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *rstd,
                          const qs_tensor *positions, double theta, int head_dim, const qs_tensor *dout,
                          qs_tensor *draw, qs_error *err);
  bool (*attention)(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                    const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                    qs_error *err);
  bool (*attention_bwd)(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                        const qs_tensor *o, const qs_tensor *lse, const qs_tensor *d_o,
                        const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *dq, qs_tensor *dk,
                        qs_tensor *dv, qs_error *err);
  bool (*swiglu)(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err);
  bool (*swiglu_bwd)(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm,
                     qs_tensor *dg, qs_tensor *du, qs_error *err);
  bool (*embedding)(qs_backend *be, const qs_tensor *ids, const qs_tensor *table, qs_tensor *h, qs_error *err);
  bool (*add)(qs_backend *be, qs_tensor *acc, const qs_tensor *x, qs_error *err);
  bool (*copy)(qs_backend *be, qs_tensor *dst, const qs_tensor *src, qs_error *err);
  bool (*lm_head_xent)(qs_backend *be, const qs_tensor *h, const qs_tensor *w, const qs_tensor *targets,
                       float grad_scale, long chunk_tokens, const qs_lm_head_hooks *hooks, qs_tensor *dh,
                       double *loss_sum, qs_error *err);
  bool (*amax_accumulate)(qs_backend *be, const qs_tensor *x, qs_tensor *acc, qs_error *err);
  bool (*all_finite)(qs_backend *be, const qs_tensor *x, bool *finite, qs_error *err);
  bool (*fake_quant)(qs_backend *be, const qs_fq_spec *spec, const qs_tensor *x, const qs_tensor *amax, qs_tensor *y,
                     qs_error *err);
  bool (*quant_score)(qs_backend *be, const qs_tensor *xr, const qs_tensor *wr, const qs_tensor *y,
                      const qs_tensor *g, qs_delta_mode mode, qs_tensor *acc, long slot, qs_error *err);
} qs_backend_ops;

struct qs_backend {
  const qs_backend_ops *ops;
  const char *name;   /* "cpu", "cuda" */
  qs_dtype act_dtype; /* dtype of activation tensors */
  void *impl;         /* the implementation's state */
};

void qs_backend_destroy(qs_backend *be);

/* ---- memory ------------------------------------------------------------ */

/* A new [rows, cols] tensor of backend memory (contents undefined). */
bool qs_tensor_alloc(qs_backend *be, qs_dtype dtype, long rows, long cols, qs_tensor *t, qs_error *err);
/* Frees memory made by qs_tensor_alloc; t is zeroed. A zeroed t is allowed. */
void qs_tensor_free(qs_backend *be, qs_tensor *t);
/* Host -> tensor and tensor -> host, qs_tensor_bytes(t) bytes. */
bool qs_tensor_upload(qs_backend *be, qs_tensor *t, const void *host, qs_error *err);
bool qs_tensor_download(qs_backend *be, void *host, const qs_tensor *t, qs_error *err);
/* A read-only tensor with the contents of host memory that stays unchanged
 * while the tensor lives (weights): the CPU backend uses the host memory in
 * place, a GPU backend copies it. Release with qs_tensor_unimport. */
bool qs_tensor_import(qs_backend *be, const void *host, qs_dtype dtype, long rows, long cols, qs_tensor *t,
                      qs_error *err);
void qs_tensor_unimport(qs_backend *be, qs_tensor *t);

/* ---- ops --------------------------------------------------------------- */

/* y[T,out] = x[T,in]·w[out,in]ᵀ (added to y when accumulate); y has the
 * activation dtype or F32 (the unrounded fp32 output). */
bool qs_op_linear(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                  qs_error *err);
/* dx[T,in] = dy[T,out]·w[out,in] (added to dx when accumulate). */
bool qs_op_linear_bwd(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                      qs_error *err);
/* Per row of x[rows,n]: r = (mean_j x_j² + eps)^(-1/2), y = w ⊙ (x·r);
 * rstd[rows] (F32) keeps r for the backward. */
bool qs_op_rmsnorm(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                   qs_tensor *rstd, qs_error *err);
/* dx = r·(ĝ − x̂·(1/n)Σ_j ĝ_j x̂_j), ĝ = dy ⊙ w, x̂ = x·r (added to dx when
 * accumulate: the residual gradient of a pre-norm block). */
bool qs_op_rmsnorm_bwd(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                       const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err);
/* raw[T, nh·hd] seen as nh heads of head_dim: RMSNorm of every head with the
 * shared w[hd], then half-split RoPE at positions[T] with base theta
 * (θ_i = qs_rope_inv_freq, φ = p·θ_i in fp32, accurate cos/sin).
 * rstd[T·nh] (F32) keeps the per-head r. */
bool qs_op_qknorm_rope(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, float eps,
                       const qs_tensor *positions, double theta, int head_dim, qs_tensor *out, qs_tensor *rstd,
                       qs_error *err);
/* Gradient through qs_op_qknorm_rope: RoPE by −φ, then the per-head RMSNorm
 * backward; draw = dL/draw. */
bool qs_op_qknorm_rope_bwd(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *rstd,
                           const qs_tensor *positions, double theta, int head_dim, const qs_tensor *dout,
                           qs_tensor *draw, qs_error *err);
/* Causal GQA attention within each packed sequence: q[T, H·hd],
 * k/v[T, Hkv·hd] (head-major), query head h reads kv head h / (H/Hkv);
 * o[T, H·hd]; lse[T, H] (F32) = logsumexp of each row of scaled scores,
 * scale 1/√hd. With shape->key_start, keys before it are masked (left
 * padding) and a query with no key gets o = 0, lse = -INFINITY (never NaN).
 * key_start values are checked on the CPU backend, the caller's duty
 * elsewhere. */
bool qs_op_attention(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                     const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                     qs_error *err);
/* Gradients of qs_op_attention given d_o = dL/do; dk and dv sum the n_rep
 * query heads of each kv head (k and v are never replicated). With
 * key_start: dq = 0 at queries without a key, and dk = dv = 0 at masked
 * keys (no query reads them). */
bool qs_op_attention_bwd(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                         const qs_tensor *o, const qs_tensor *lse, const qs_tensor *d_o,
                         const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *dq, qs_tensor *dk,
                         qs_tensor *dv, qs_error *err);
/* m = silu(g) ⊙ u, silu(z) = z·σ(z). */
bool qs_op_swiglu(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err);
/* dg = dm ⊙ u ⊙ silu′(g), du = dm ⊙ silu(g). */
bool qs_op_swiglu_bwd(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm,
                      qs_tensor *dg, qs_tensor *du, qs_error *err);
/* h[t] = table[ids[t]] (ids must lie in [0, table rows); checked on the CPU
 * backend, the caller's duty elsewhere). */
bool qs_op_embedding(qs_backend *be, const qs_tensor *ids, const qs_tensor *table, qs_tensor *h,
                     qs_error *err);
/* acc += x (same shape). */
bool qs_op_add(qs_backend *be, qs_tensor *acc, const qs_tensor *x, qs_error *err);
/* dst = src (same element count; dtypes may differ: converts between f32 and
 * bf16; i32 copies only to i32; f64 accumulators are not copied). */
bool qs_op_copy(qs_backend *be, qs_tensor *dst, const qs_tensor *src, qs_error *err);
/* Fused lm_head + cross-entropy over token chunks of at most chunk_tokens
 * rows, so that only one chunk of logits [chunk, V] exists at a time.
 * h[T,D] is the final-normed hidden state, w[V,D] the head weight,
 * targets[T] the class each token predicts or -100 for none.
 * *loss_sum (host) = Σ over tokens with a target of logsumexp(z_t) − z_t[c],
 * summed in token order. Targets other than -100 outside [0, V) fail.
 * When dh is not NULL: G_lm = grad_scale·(softmax(z_t) − onehot(c)) (0 for
 * rows without a target) and dh[T,D] = G_lm·w. */
bool qs_op_lm_head_xent(qs_backend *be, const qs_tensor *h, const qs_tensor *w, const qs_tensor *targets,
                        float grad_scale, long chunk_tokens, const qs_lm_head_hooks *hooks, qs_tensor *dh,
                        double *loss_sum, qs_error *err);
/* acc[0] = max(acc[0], max |x|) (acc is F32, one element). A NaN in x makes
 * acc NaN. */
bool qs_op_amax_accumulate(qs_backend *be, const qs_tensor *x, qs_tensor *acc, qs_error *err);
/* *finite = no NaN or ±Inf in x (F32 or BF16). */
bool qs_op_all_finite(qs_backend *be, const qs_tensor *x, bool *finite, qs_error *err);

/* RoPE inverse frequency θ_i = theta^(−2i/hd) evaluated the way the
 * reference (HF, fp32) does: exponent and power in fp32. */
float qs_rope_inv_freq(double theta, int head_dim, int i);

/* ---- quantization and sensitivity scores -------------------------------
 * Spec quant-and-scoring.md §1 (fake quant), §4.2-4.3 (score). Appended
 * at the end of the op table: backends fill fake_quant and quant_score. */

/* Number of F32 amax values a static amax tensor of qs_op_fake_quant holds
 * for x [rows, cols]: 1 per tensor, rows per channel, rows·cols/128 per INT4
 * block; 0 when the format takes none (MXFP4, NONE). */
long qs_fq_amax_count(const qs_fq_spec *spec, long rows, long cols);

/* y = FQ(x) (bf16 values, stored in y's dtype, F32 or BF16) for x [rows,
 * cols] (F32 or BF16). amax: NULL takes the amax from x itself (weights;
 * dynamic activations: one per tensor over the whole x), else an F32 tensor
 * of qs_fq_amax_count values (static calibration). Fails when cols is not a
 * whole number of the format's blocks. */
bool qs_op_fake_quant(qs_backend *be, const qs_fq_spec *spec, const qs_tensor *x, const qs_tensor *amax,
                      qs_tensor *y, qs_error *err);

/* One Linear's score for one candidate and one batch (§4.2), added to acc[slot]:
 *   acc[slot] += Σ over the [T, N] outputs e of clamp(G_e·Δ_e, −1e10, 1e10)²
 * xr = FQ_a(x), or x itself for an unquantized activation [T, K] (activation
 * dtype, or F32/BF16), wr = FQ_w(w) [N, K] (F32 or BF16), y = x·wᵀ [T, N] F32
 * as qs_op_linear computes it with an F32 output, g = dL/dY [T, N]
 * (activation dtype), acc an F64 tensor, 0 <= slot < numel(acc). The values
 * of xr and wr are bf16 values (FQ outputs, or bf16 activations).
 *   accurate: Δ = Y_r − y in fp32, Y_r = xr·wrᵀ with fp32 accumulation (§4.3).
 *   modelopt: Δ = bf16(bf16(Y_r) − bf16(y)), G rounded to bf16.
 * G·Δ, clamp and square are fp32. Reduction order (fixed, the same on every
 * backend, see backend/score_order.h): each output row is cut into runs of
 * QS_SCORE_PARTIAL_TERMS columns; a run's fp32 partial is 32 lane sums of
 * the columns begin + l, begin + l + 32, … (in that order) joined by a fixed
 * xor butterfly; the partials of the call are combined in fp64 (partial i
 * into accumulator i mod 256 in increasing i, then a fixed tree) and the
 * total is added to acc[slot]. Nothing is downloaded: the op does not wait
 * for the device. A NaN anywhere makes acc[slot] NaN. */
bool qs_op_quant_score(qs_backend *be, const qs_tensor *xr, const qs_tensor *wr, const qs_tensor *y,
                       const qs_tensor *g, qs_delta_mode mode, qs_tensor *acc, long slot, qs_error *err);

#endif
