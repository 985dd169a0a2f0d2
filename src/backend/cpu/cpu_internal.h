/* Shared by the files of the CPU backend: its state and the op entry points
 * the op table in cpu_backend.c points at. Arguments arrive validated by the
 * qs_op_* wrappers, and activations are f32 here: in the bf16 mode
 * (cpu_bf16.c) the ops see f32 copies of the bf16 tensors. */
#ifndef QSENS_BACKEND_CPU_INTERNAL_H
#define QSENS_BACKEND_CPU_INTERNAL_H

#include "backend/backend.h"
#include "core/bf16.h"

/* Reusable host buffers, so that a bf16 weight's f32 copy or a chunk of
 * logits does not cost a fresh allocation (and page faults) on every call. */
/* The head's weight has a slot of its own: it must outlive the lm_head
 * hooks, whose visitors run other ops (linear, score) on CPU_SCRATCH_WEIGHT. */
typedef enum cpu_scratch_slot {
  CPU_SCRATCH_WEIGHT,
  CPU_SCRATCH_HEAD_WEIGHT,
  CPU_SCRATCH_LOGITS,
  CPU_SCRATCH_COUNT
} cpu_scratch_slot;

typedef struct cpu_state {
  float *scratch[CPU_SCRATCH_COUNT];
  size_t scratch_cap[CPU_SCRATCH_COUNT]; /* floats */
  bool bf16; /* the bf16 mode: intermediates rounded where the CUDA kernels round them */
  qs_backend_ops ops; /* this backend's table (the bf16 mode replaces the activation ops) */
} cpu_state;

/* Whether the ops round their intermediates to bf16 (the bf16 mode). */
bool cpu_rounds_bf16(const qs_backend *be);

/* v, or v rounded to bf16 when `round` (an intermediate the CUDA kernels
 * round, spec qwen3-vl-lm.md §3.1). */
static inline float cpu_round_if(bool round, float v) { return round ? qs_round_bf16(v) : v; }

/* Turns the f32 op table into the bf16 mode's (cpu_bf16.c): every op that
 * takes activations runs the f32 op on widened copies and rounds its bf16
 * outputs. */
void cpu_bf16_ops(qs_backend_ops *ops);

/* A float buffer of at least n elements owned by the backend (valid until the
 * next request for the same slot). */
float *cpu_scratch(qs_backend *be, cpu_scratch_slot slot, size_t n);

/* w as f32: w's own memory when it is f32, else an upcast copy in the given
 * scratch slot (valid until the next use of that slot). */
const float *cpu_weight_f32(qs_backend *be, const qs_tensor *w, cpu_scratch_slot slot);

/* Element i of an f32 or bf16 tensor. */
float cpu_load(const qs_tensor *t, long i);
/* A newly allocated f32 copy of a (small) f32 or bf16 vector; caller frees. */
float *cpu_vector_f32(const qs_tensor *t);

bool cpu_linear(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                qs_error *err);
bool cpu_linear_bwd(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                    qs_error *err);
bool cpu_lm_head_xent(qs_backend *be, const qs_tensor *h, const qs_tensor *w, const qs_tensor *targets,
                      float grad_scale, long chunk_tokens, const qs_lm_head_hooks *hooks, qs_tensor *dh,
                      double *loss_sum, qs_error *err);

bool cpu_rmsnorm(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                 qs_tensor *rstd, qs_error *err);
bool cpu_rmsnorm_bwd(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                     const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err);
bool cpu_qknorm_rope(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, float eps,
                     const qs_tensor *positions, double theta, int head_dim, qs_tensor *out, qs_tensor *rstd,
                     qs_error *err);
bool cpu_qknorm_rope_bwd(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *rstd,
                         const qs_tensor *positions, double theta, int head_dim, const qs_tensor *dout,
                         qs_tensor *draw, qs_error *err);

bool cpu_attention(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                   const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                   qs_error *err);
bool cpu_attention_bwd(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                       const qs_tensor *o, const qs_tensor *lse, const qs_tensor *d_o, const qs_tensor *cu_seqlens,
                       const qs_attn_shape *shape, qs_tensor *dq, qs_tensor *dk, qs_tensor *dv, qs_error *err);

bool cpu_swiglu(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err);
bool cpu_swiglu_bwd(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm, qs_tensor *dg,
                    qs_tensor *du, qs_error *err);
bool cpu_embedding(qs_backend *be, const qs_tensor *ids, const qs_tensor *table, qs_tensor *h, qs_error *err);
bool cpu_add(qs_backend *be, qs_tensor *acc, const qs_tensor *x, qs_error *err);
bool cpu_copy(qs_backend *be, qs_tensor *dst, const qs_tensor *src, qs_error *err);
bool cpu_amax_accumulate(qs_backend *be, const qs_tensor *x, qs_tensor *acc, qs_error *err);
bool cpu_all_finite(qs_backend *be, const qs_tensor *x, bool *finite, qs_error *err);
bool cpu_fake_quant(qs_backend *be, const qs_fq_spec *spec, const qs_tensor *x, const qs_tensor *amax,
                    qs_tensor *y, qs_error *err);
bool cpu_quant_score(qs_backend *be, const qs_tensor *xr, const qs_tensor *wr, const qs_tensor *y,
                     const qs_tensor *g, qs_delta_mode mode, qs_tensor *acc, long slot, qs_error *err);

#endif
