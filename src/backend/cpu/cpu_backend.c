/* CPU backend: memory is host memory, imports use the caller's memory in
 * place, and the op table points at the cpu_*.c implementations. */
#include "backend/cpu/cpu_backend.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "core/bf16.h"
#include "core/mem.h"

static cpu_state *state_of(qs_backend *be) { return be->impl; }

float *cpu_scratch(qs_backend *be, cpu_scratch_slot slot, size_t n) {
  cpu_state *s = state_of(be);
  if (s->scratch_cap[slot] < n) {
    free(s->scratch[slot]);
    s->scratch[slot] = qs_malloc(n * sizeof(float));
    s->scratch_cap[slot] = n;
  }
  return s->scratch[slot];
}

float cpu_load(const qs_tensor *t, long i) {
  if (t->dtype == QS_BF16) return qs_bf16_to_f32(((const qs_bf16 *)t->data)[i]);
  return ((const float *)t->data)[i];
}

const float *cpu_weight_f32(qs_backend *be, const qs_tensor *w, cpu_scratch_slot slot) {
  if (w->dtype == QS_F32) return w->data;
  long n = qs_tensor_numel(w);
  float *out = cpu_scratch(be, slot, (size_t)n);
  const qs_bf16 *src = w->data;
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; i++) out[i] = qs_bf16_to_f32(src[i]);
  return out;
}

float *cpu_vector_f32(const qs_tensor *t) {
  long n = qs_tensor_numel(t);
  float *out = qs_malloc((size_t)(n ? n : 1) * sizeof(float));
  for (long i = 0; i < n; i++) out[i] = cpu_load(t, i);
  return out;
}

static bool cpu_alloc(qs_backend *be, size_t bytes, void **ptr, qs_error *err) {
  (void)be;
  (void)err;
  *ptr = qs_malloc(bytes);
  return true;
}

static void cpu_free(qs_backend *be, void *ptr) {
  (void)be;
  free(ptr);
}

static bool cpu_memcpy(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
  (void)be;
  (void)err;
  if (bytes) memcpy(dst, src, bytes);
  return true;
}

/* Host memory is backend memory: no copy. Ops never write through a weight
 * tensor, which is what makes dropping const here safe. */
static bool cpu_import(qs_backend *be, const void *host, size_t bytes, void **ptr, qs_error *err) {
  (void)be;
  (void)bytes;
  (void)err;
  *ptr = (void *)host;
  return true;
}

static void cpu_unimport(qs_backend *be, void *ptr) {
  (void)be;
  (void)ptr;
}

static void cpu_destroy(qs_backend *be) {
  cpu_state *s = state_of(be);
  for (int i = 0; i < CPU_SCRATCH_COUNT; i++) free(s->scratch[i]);
  free(s);
  free(be);
}

static const qs_backend_ops cpu_ops = {
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .import = cpu_import,
    .unimport = cpu_unimport,
    .destroy = cpu_destroy,
    .linear = cpu_linear,
    .linear_bwd = cpu_linear_bwd,
    .rmsnorm = cpu_rmsnorm,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .qknorm_rope = cpu_qknorm_rope,
    .qknorm_rope_bwd = cpu_qknorm_rope_bwd,
    .attention = cpu_attention,
    .attention_bwd = cpu_attention_bwd,
    .swiglu = cpu_swiglu,
    .swiglu_bwd = cpu_swiglu_bwd,
    .embedding = cpu_embedding,
    .add = cpu_add,
    .copy = cpu_copy,
    .lm_head_xent = cpu_lm_head_xent,
    .amax_accumulate = cpu_amax_accumulate,
    .all_finite = cpu_all_finite,
    .fake_quant = cpu_fake_quant,
    .quant_score = cpu_quant_score,
};

bool cpu_rounds_bf16(const qs_backend *be) { return ((const cpu_state *)be->impl)->bf16; }

static qs_backend *backend_new(bool bf16) {
  qs_backend *be = qs_calloc(1, sizeof *be);
  cpu_state *s = qs_calloc(1, sizeof *s);
  s->bf16 = bf16;
  s->ops = cpu_ops;
  if (bf16) cpu_bf16_ops(&s->ops);
  be->ops = &s->ops;
  be->name = "cpu";
  be->act_dtype = bf16 ? QS_BF16 : QS_F32;
  be->impl = s;
  return be;
}

qs_backend *qs_cpu_backend_new(void) { return backend_new(false); }

qs_backend *qs_cpu_backend_new_bf16(void) { return backend_new(true); }
