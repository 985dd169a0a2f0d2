/* The one cuBLASLt wrapper: a matmul descriptor, the operand layouts and the
 * heuristic's algorithm are made once per problem (shape, transposes, types,
 * pointer alignment) and cached; the workspace is allocated once. Inputs are
 * bf16 (or fp32 for fp32 weights), accumulation is fp32 (CUBLAS_COMPUTE_32F:
 * no TF32 for fp32 operands). Split-K schemes that reduce in place are
 * excluded, so every product is bit-identical run to run. */
#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/cuda_internal.h"

enum { WORKSPACE_BYTES = 32 << 20 };

typedef struct gemm_key {
  int m, n, k;
  bool trans_a, trans_b;
  blaslt_type ab, d;
  unsigned align_a, align_b, align_d; /* bytes, power of two, at most 256 */
} gemm_key;

typedef struct gemm_plan {
  gemm_key key;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, d;
  cublasLtMatmulAlgo_t algo;
} gemm_plan;

struct blaslt {
  cublasLtHandle_t handle;
  void *workspace;
  gemm_plan *plans;
  size_t n_plans, cap;
};

static bool lt_check(cublasStatus_t rc, const char *what, qs_error *err) {
  if (rc == CUBLAS_STATUS_SUCCESS) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "CUDA backend: cuBLASLt %s failed (status %d)", what, (int)rc);
}

#define LT_TRY(call, what) \
  do {                     \
    if (!lt_check((call), (what), err)) return false; \
  } while (0)

bool blaslt_create(cuda_state *s, blaslt **out, qs_error *err) {
  blaslt *g = (blaslt *)qs_calloc(1, sizeof *g);
  *out = g;
  LT_TRY(cublasLtCreate(&g->handle), "handle creation");
  return cuda_device_alloc(s, WORKSPACE_BYTES, &g->workspace, "the cuBLASLt workspace", err);
}

static void destroy_plan(gemm_plan *p) {
  if (p->desc) cublasLtMatmulDescDestroy(p->desc);
  if (p->a) cublasLtMatrixLayoutDestroy(p->a);
  if (p->b) cublasLtMatrixLayoutDestroy(p->b);
  if (p->d) cublasLtMatrixLayoutDestroy(p->d);
}

void blaslt_destroy(cuda_state *s, blaslt *g) {
  for (size_t i = 0; i < g->n_plans; i++) destroy_plan(&g->plans[i]);
  free(g->plans);
  cuda_device_free(s, g->workspace);
  if (g->handle) cublasLtDestroy(g->handle);
  free(g);
}

static cudaDataType_t data_type(blaslt_type t) { return t == BLASLT_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

static unsigned alignment(const void *p) {
  uintptr_t a = (uintptr_t)p;
  unsigned bytes = 256;
  while (bytes > 1 && a % bytes) bytes /= 2;
  return bytes;
}

static gemm_key key_of(const blaslt_gemm *g) {
  gemm_key k;
  memset(&k, 0, sizeof k); /* padding too: keys are compared with memcmp */
  k.m = g->m;
  k.n = g->n;
  k.k = g->k;
  k.trans_a = g->trans_a;
  k.trans_b = g->trans_b;
  k.ab = g->ab;
  k.d = g->d;
  k.align_a = alignment(g->a);
  k.align_b = alignment(g->b);
  k.align_d = alignment(g->out);
  return k;
}

static bool make_layouts(gemm_plan *p, qs_error *err) {
  const gemm_key *k = &p->key;
  cudaDataType_t ab = data_type(k->ab);
  int a_rows = k->trans_a ? k->k : k->m, a_cols = k->trans_a ? k->m : k->k;
  int b_rows = k->trans_b ? k->n : k->k, b_cols = k->trans_b ? k->k : k->n;
  LT_TRY(cublasLtMatrixLayoutCreate(&p->a, ab, a_rows, a_cols, a_rows), "layout A");
  LT_TRY(cublasLtMatrixLayoutCreate(&p->b, ab, b_rows, b_cols, b_rows), "layout B");
  LT_TRY(cublasLtMatrixLayoutCreate(&p->d, data_type(k->d), k->m, k->n, k->m), "layout D");
  return true;
}

static bool make_desc(gemm_plan *p, qs_error *err) {
  cublasOperation_t ta = p->key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = p->key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  LT_TRY(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
  LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "transpose A");
  LT_TRY(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "transpose B");
  return true;
}

static bool choose_algo(blaslt *g, gemm_plan *p, qs_error *err) {
  cublasLtMatmulPreference_t pref = NULL;
  LT_TRY(cublasLtMatmulPreferenceCreate(&pref), "preference");
  uint64_t ws = WORKSPACE_BYTES;
  /* In-place split-K reductions add partial tiles in a run-dependent order. */
  uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_MASK & ~(uint32_t)CUBLASLT_REDUCTION_SCHEME_INPLACE;
  uint32_t al_a = p->key.align_a, al_b = p->key.align_b, al_d = p->key.align_d;
  cublasLtMatmulHeuristicResult_t result;
  int found = 0;
  bool ok =
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
               "workspace preference", err) &&
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                    sizeof schemes),
               "reduction preference", err) &&
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                    sizeof al_a),
               "alignment preference", err) &&
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                    sizeof al_b),
               "alignment preference", err) &&
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d,
                                                    sizeof al_d),
               "alignment preference", err) &&
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d,
                                                    sizeof al_d),
               "alignment preference", err) &&
      lt_check(cublasLtMatmulAlgoGetHeuristic(g->handle, p->desc, p->a, p->b, p->d, p->d, pref, 1, &result, &found),
               "heuristic", err);
  cublasLtMatmulPreferenceDestroy(pref);
  if (!ok) return false;
  if (found == 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "CUDA backend: cuBLASLt has no algorithm for a %dx%dx%d %s product", p->key.m,
                   p->key.n, p->key.k, p->key.ab == BLASLT_BF16 ? "bf16" : "fp32");
  p->algo = result.algo;
  return true;
}

/* The cached plan for g's problem, made on first use. */
static bool plan_for(blaslt *g, const blaslt_gemm *mm, gemm_plan **out, qs_error *err) {
  gemm_key key = key_of(mm);
  for (size_t i = 0; i < g->n_plans; i++)
    if (memcmp(&g->plans[i].key, &key, sizeof key) == 0) {
      *out = &g->plans[i];
      return true;
    }
  gemm_plan p;
  memset(&p, 0, sizeof p);
  p.key = key;
  if (!make_desc(&p, err) || !make_layouts(&p, err) || !choose_algo(g, &p, err)) {
    destroy_plan(&p);
    return false;
  }
  qs_grow((void **)&g->plans, &g->cap, g->n_plans + 1, sizeof *g->plans);
  g->plans[g->n_plans] = p;
  *out = &g->plans[g->n_plans++];
  return true;
}

bool blaslt_run(cuda_state *s, const blaslt_gemm *mm, qs_error *err) {
  if (mm->m == 0 || mm->n == 0) return true;
  if (mm->k == 0) {
    /* An empty sum: D = 0, or unchanged when accumulating. */
    if (mm->accumulate) return true;
    size_t bytes = (size_t)mm->m * (size_t)mm->n * (mm->d == BLASLT_BF16 ? 2 : 4);
    CUDA_TRY(cudaMemsetAsync(mm->out, 0, bytes, s->stream), "clearing an empty product");
    return true;
  }
  blaslt *g = s->gemm;
  gemm_plan *p;
  if (!plan_for(g, mm, &p, err)) return false;
  float alpha = 1.0f, beta = mm->accumulate ? 1.0f : 0.0f;
  LT_TRY(cublasLtMatmul(g->handle, p->desc, &alpha, mm->a, p->a, mm->b, p->b, &beta, mm->out, p->d, mm->out, p->d,
                        &p->algo, g->workspace, WORKSPACE_BYTES, s->stream),
         "matmul");
  return true;
}
