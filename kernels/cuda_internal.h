/* Shared by the .cu files of the CUDA backend: its state, scratch memory,
 * error checks, launch helpers and the op entry points that the op table in
 * cuda_backend.cu points at. Arguments arrive validated by the qs_op_*
 * wrappers, so activations are bf16 here. Kernels run on the backend's one
 * stream in launch order; only downloads (and the ops that return a host
 * value) wait for them. */
#ifndef QSENS_KERNELS_CUDA_INTERNAL_H
#define QSENS_KERNELS_CUDA_INTERNAL_H

/* System headers first: inside the extern "C" block below their include
 * guards keep them from being read again with C linkage. */
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cuda_backend.h"

extern "C" {
#include "backend/backend.h"
#include "core/error.h"
#include "core/mem.h"
}

typedef struct blaslt blaslt;

/* Backend-owned device buffers reused across calls (grown on demand, never
 * shrunk), one per purpose so that an op never clobbers another's. */
typedef enum cuda_scratch_slot {
  SCRATCH_LOGITS,         /* one chunk of lm_head logits / G_lm */
  SCRATCH_ROW_LOSS,       /* per-row losses of a chunk, and the chunk sums */
  SCRATCH_ATTN_DELTA,     /* attention backward: do·o per row */
  SCRATCH_F32_IN,         /* f32 copy of an activation for an f32-weight GEMM */
  SCRATCH_F32_OUT,        /* f32 GEMM result before it is stored as bf16 */
  SCRATCH_SCORE_X,        /* score: bf16 copy of an f32 xr */
  SCRATCH_SCORE_W,        /* score: bf16 copy of an f32 wr */
  SCRATCH_SCORE_YR,       /* score: fp32 Y_r of one row block */
  SCRATCH_SCORE_PARTIALS, /* score: fp32 partials of one call */
  SCRATCH_SMALL,          /* flags and amax words */
  SCRATCH_AMAX,           /* fake quant: amax values taken from the input */
  SCRATCH_COUNT
} cuda_scratch_slot;

typedef struct cuda_allocation {
  void *ptr;
  size_t bytes;
} cuda_allocation;

/* Pinned host buffers that weight imports pass through, used as a ring:
 * while the DMA engine drains one buffer, host threads fill the next from
 * the checkpoint's mapping (pageable memory would be copied by the driver
 * through its own small staging area, one buffer at a time). Allocated on
 * the first import, freed at destroy; host memory, so not in in_use. */
enum { CUDA_STAGE_BUFFERS = 3 };
typedef struct cuda_staging {
  char *buf[CUDA_STAGE_BUFFERS];
  cudaEvent_t drained[CUDA_STAGE_BUFFERS]; /* recorded after the last copy out of buf[i] */
  int current;     /* the buffer being filled */
  size_t used;     /* bytes of buf[current] already handed to copies */
  int fill_threads;
} cuda_staging;

typedef struct cuda_state {
  int device;
  int sm_count;
  cudaStream_t stream;
  blaslt *gemm;
  void *scratch[SCRATCH_COUNT];
  size_t scratch_bytes[SCRATCH_COUNT];
  size_t in_use, peak; /* bytes of device memory held by the backend */
  /* Every device allocation comes from this stream-ordered pool, which keeps
   * what it once held (release threshold: never), so a reservation sized up
   * front is the arena later allocations are carved from, and frees never
   * synchronize the device as cudaFree does. */
  cudaMemPool_t pool;
  size_t reserved; /* bytes reserved up front (qs_cuda_backend_reserve) */
  cuda_allocation *live;
  size_t n_live, live_cap;
  cuda_staging staging;
} cuda_state;

static inline cuda_state *cuda_of(qs_backend *be) { return (cuda_state *)be->impl; }

/* Device memory counted against in_use/peak; a failure names the size, the
 * memory in use and the knob that bounds activation memory. */
bool cuda_device_alloc(cuda_state *s, size_t bytes, void **ptr, const char *what, qs_error *err);
void cuda_device_free(cuda_state *s, void *ptr);

/* A scratch buffer of at least `bytes` (contents undefined). */
bool cuda_scratch(cuda_state *s, cuda_scratch_slot slot, size_t bytes, void **ptr, qs_error *err);

/* Fails naming `what` when rc is not cudaSuccess. */
bool cuda_check(cudaError_t rc, const char *what, qs_error *err);
/* Launch errors of the kernels just queued, and (sync) execution errors. */
bool cuda_check_launch(const char *what, qs_error *err);
bool cuda_sync(cuda_state *s, const char *what, qs_error *err);

#define CUDA_TRY(call, what) \
  do {                       \
    if (!cuda_check((call), (what), err)) return false; \
  } while (0)

/* Grid of `threads`-wide blocks for a grid-stride loop over n items. */
static inline unsigned cuda_blocks(long n, int threads) {
  long b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return (unsigned)(b > 65535L * 16 ? 65535L * 16 : b);
}

/* Blocks of `threads` that give every one of `items` a warp of its own. */
static inline unsigned cuda_warp_blocks(long items, int threads) {
  long b = (items * 32 + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b);
}

/* bf16 / f32 element access for tensors whose dtype is known at run time. */
__device__ static inline float cuda_load(const void *p, bool bf16, long i) {
  return bf16 ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}
__device__ static inline void cuda_store(void *p, bool bf16, long i, float v) {
  if (bf16) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
  else ((float *)p)[i] = v;
}
/* Round to the nearest bf16 value, kept as a float. */
__device__ static inline float cuda_round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

/* Deterministic block-wide sums (float or double): a fixed shuffle tree
 * per warp, then warp 0 over the warp results. Every thread of the block
 * must call it; all get the total. blockDim.x is a multiple of 32, at most
 * 1024. */
template <typename T> __device__ static inline T cuda_block_sum(T v, T *shared32) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  T t = lane < warps ? shared32[lane] : (T)0;
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}

/* dst[i] (=|+=) src[i] for n elements, each f32 or bf16 (pointwise.cu). */
bool cuda_convert(cuda_state *s, const void *src, bool src_bf16, void *dst, bool dst_bf16, long n, bool accumulate,
                  qs_error *err);

/* The max of |x| over n f32/bf16 elements as fp32 bits into *bits (device
 * memory; cleared first). Unsigned max of |x| bits: exact, NaN wins. */
bool cuda_amax_bits(cuda_state *s, const void *x, bool bf16, long n, unsigned *bits, qs_error *err);

/* ---- cuBLASLt (blaslt.cu) ------------------------------------------------ */

typedef enum blaslt_type { BLASLT_BF16, BLASLT_F32 } blaslt_type;

/* Column-major D[m,n] = op(A)·op(B) (+ D when accumulate), fp32 accumulation;
 * A is [k,m] when trans_a else [m,k] (leading dimension its row count),
 * likewise B [n,k] / [k,n]. A and B share one type, D has its own. */
typedef struct blaslt_gemm {
  int m, n, k;
  bool trans_a, trans_b;
  blaslt_type ab, d;
  const void *a, *b;
  void *out;
  bool accumulate;
} blaslt_gemm;

bool blaslt_create(cuda_state *s, blaslt **out, qs_error *err);
void blaslt_destroy(cuda_state *s, blaslt *g);
bool blaslt_run(cuda_state *s, const blaslt_gemm *g, qs_error *err);

/* Row-major products of the op table on top of blaslt_run:
 * y[rows,out] = x[rows,in]·w[out,in]ᵀ and dx[rows,in] = dy[rows,out]·w[out,in],
 * any mix of bf16/f32 x, w and y (f32 weights run an fp32 GEMM). */
bool cuda_matmul_nt(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                    qs_error *err);
bool cuda_matmul_nn(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                    qs_error *err);

/* ---- ops ------------------------------------------------------------------ */

bool cuda_linear(qs_backend *be, const qs_tensor *x, const qs_tensor *w, qs_tensor *y, bool accumulate,
                 qs_error *err);
bool cuda_linear_bwd(qs_backend *be, const qs_tensor *dy, const qs_tensor *w, qs_tensor *dx, bool accumulate,
                     qs_error *err);
bool cuda_lm_head_xent(qs_backend *be, const qs_tensor *h, const qs_tensor *w, const qs_tensor *targets,
                       float grad_scale, long chunk_tokens, const qs_lm_head_hooks *hooks, qs_tensor *dh,
                       double *loss_sum, qs_error *err);
bool cuda_rmsnorm(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                  qs_tensor *rstd, qs_error *err);
bool cuda_rmsnorm_bwd(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                      const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err);
bool cuda_qknorm_rope(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, float eps,
                      const qs_tensor *positions, double theta, int head_dim, qs_tensor *out, qs_tensor *rstd,
                      qs_error *err);
bool cuda_qknorm_rope_bwd(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *rstd,
                          const qs_tensor *positions, double theta, int head_dim, const qs_tensor *dout,
                          qs_tensor *draw, qs_error *err);
bool cuda_attention(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                    const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                    qs_error *err);
bool cuda_attention_bwd(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                        const qs_tensor *o, const qs_tensor *lse, const qs_tensor *d_o, const qs_tensor *cu_seqlens,
                        const qs_attn_shape *shape, qs_tensor *dq, qs_tensor *dk, qs_tensor *dv, qs_error *err);
bool cuda_swiglu(qs_backend *be, const qs_tensor *g, const qs_tensor *u, qs_tensor *m, qs_error *err);
bool cuda_swiglu_bwd(qs_backend *be, const qs_tensor *g, const qs_tensor *u, const qs_tensor *dm, qs_tensor *dg,
                     qs_tensor *du, qs_error *err);
bool cuda_embedding(qs_backend *be, const qs_tensor *ids, const qs_tensor *table, qs_tensor *h, qs_error *err);
bool cuda_add(qs_backend *be, qs_tensor *acc, const qs_tensor *x, qs_error *err);
bool cuda_copy(qs_backend *be, qs_tensor *dst, const qs_tensor *src, qs_error *err);
bool cuda_amax_accumulate(qs_backend *be, const qs_tensor *x, qs_tensor *acc, qs_error *err);
bool cuda_all_finite(qs_backend *be, const qs_tensor *x, bool *finite, qs_error *err);
bool cuda_fake_quant(qs_backend *be, const qs_fq_spec *spec, const qs_tensor *x, const qs_tensor *amax,
                     qs_tensor *y, qs_error *err);
bool cuda_quant_score(qs_backend *be, const qs_tensor *xr, const qs_tensor *wr, const qs_tensor *y,
                      const qs_tensor *g, qs_delta_mode mode, qs_tensor *acc, long slot, qs_error *err);

#endif
