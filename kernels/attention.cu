/* Causal GQA attention over packed sequences, flash style: a block takes a
 * tile of 32 rows (queries, or keys in the dK/dV pass) of one sequence and
 * one head and streams the other side through shared memory in tiles of 32,
 * with an online softmax in the forward. Each row is owned by 8 threads that
 * split head_dim; their partial dot products meet in a fixed shuffle tree,
 * and every output element is accumulated by one thread in a fixed order
 * (no atomics), so results are deterministic. The backward recomputes the
 * probabilities from the forward's logsumexp: one pass for dQ (per query
 * row), one for dK/dV (per key row, summing the n_rep query heads of its kv
 * head; k and v are never replicated). fp32 math, bf16 storage.
 *
 * Left padding (key_start): keys of sequence b start at offset
 * key_start[b]; the key loops begin there, so pads are never read as keys,
 * and a query before that offset sees no key at all: its output is 0, its
 * lse -inf, and both backward passes skip it. */
#include <stdlib.h>

#include "kernels/cuda_internal.h"

enum {
  THREADS = 256,
  TPR = 8,                 /* threads per row */
  ROWS = THREADS / TPR,    /* rows per block */
  TILE = 32,               /* rows of the streamed side per step */
  MAX_HD = 128,
  DPT = MAX_HD / TPR,      /* head dims per thread, at most */
};

typedef struct attn_args {
  const __nv_bfloat16 *q, *k, *v, *o, *d_o;
  const int *cu;
  const int *key_start; /* [B] or NULL: every key from offset 0 */
  const float *lse_in, *delta;
  float *lse_out;
  __nv_bfloat16 *out, *dk, *dv;
  int heads, n_rep, hd, tiles_per_seq;
  long q_width, kv_width;
  float scale;
} attn_args;

/* The tile a block works on: sequence [start, start + len) whose keys begin
 * at offset ks, rows [r0, r0 + ROWS). */
typedef struct attn_tile {
  long start;
  int len, r0, ks;
} attn_tile;

__device__ static inline attn_tile tile_of(const attn_args *a) {
  attn_tile t;
  int b = blockIdx.x / a->tiles_per_seq;
  t.start = a->cu[b];
  t.len = a->cu[b + 1] - a->cu[b];
  t.r0 = (blockIdx.x % a->tiles_per_seq) * ROWS;
  /* Out-of-range values (the caller's duty, checked by the CPU twin) are
   * clamped rather than read past the sequence. */
  t.ks = a->key_start ? min(max(a->key_start[b], 0), t.len) : 0;
  return t;
}

/* Sum over the TPR threads of a row: the same fixed tree for every row, and
 * (addition being commutative) the same bits in each of its threads. */
__device__ static inline float row_sum(float v) {
  for (int o = 1; o < TPR; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* This thread's slice (dims sub, sub + TPR, ...) of a head row of global memory. */
__device__ static inline void load_slice(const __nv_bfloat16 *row, int hd, int sub, bool valid, float *dst) {
#pragma unroll
  for (int j = 0; j < DPT; j++) {
    int d = sub + TPR * j;
    dst[j] = valid && d < hd ? __bfloat162float(row[d]) : 0.0f;
  }
}

__device__ static inline float slice_dot(const float *mine, const float *shared_row, int hd, int sub) {
  float s = 0.0f;
#pragma unroll
  for (int j = 0; j < DPT; j++) {
    int d = sub + TPR * j;
    if (d < hd) s += mine[j] * shared_row[d];
  }
  return row_sum(s);
}

__device__ static inline void slice_axpy(float a, const float *shared_row, int hd, int sub, float *acc) {
#pragma unroll
  for (int j = 0; j < DPT; j++) {
    int d = sub + TPR * j;
    if (d < hd) acc[j] += a * shared_row[d];
  }
}

__device__ static inline void store_slice(__nv_bfloat16 *row, int hd, int sub, const float *src, float mul) {
#pragma unroll
  for (int j = 0; j < DPT; j++) {
    int d = sub + TPR * j;
    if (d < hd) row[d] = __float2bfloat16_rn(src[j] * mul);
  }
}

/* Rows [first, first + TILE) of a packed [T, width] tensor, head column
 * offset col, into shared [TILE][hd] (zeros past `end`). */
__device__ static inline void load_tile(float *dst, const __nv_bfloat16 *src, long seq_start, int first, int end,
                                        long width, long col, int hd) {
  for (int e = threadIdx.x; e < TILE * hd; e += blockDim.x) {
    int r = e / hd, d = e % hd;
    dst[e] = first + r < end ? __bfloat162float(src[(seq_start + first + r) * width + col + d]) : 0.0f;
  }
}

/* ---- forward ----------------------------------------------------------------- */

__global__ static void attn_fwd_kernel(attn_args a) {
  extern __shared__ float smem[];
  float *ks = smem, *vs = smem + TILE * a.hd;
  attn_tile t = tile_of(&a);
  if (t.r0 >= t.len) return; /* the whole block: tiles past a short sequence */
  int h = blockIdx.y, g = h / a.n_rep, row = threadIdx.x / TPR, sub = threadIdx.x % TPR;
  int i = t.r0 + row;
  bool valid = i < t.len;
  long at = (t.start + i) * a.q_width + (long)h * a.hd;
  float qv[DPT], acc[DPT];
  load_slice(a.q + at, a.hd, sub, valid, qv);
#pragma unroll
  for (int j = 0; j < DPT; j++) acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  int kend = min(t.len, t.r0 + ROWS);
  for (int k0 = t.ks; k0 < kend; k0 += TILE) {
    __syncthreads();
    load_tile(ks, a.k, t.start, k0, kend, a.kv_width, (long)g * a.hd, a.hd);
    load_tile(vs, a.v, t.start, k0, kend, a.kv_width, (long)g * a.hd, a.hd);
    __syncthreads();
    float s[TILE], tile_max = -INFINITY;
#pragma unroll
    for (int kr = 0; kr < TILE; kr++) {
      float sc = a.scale * slice_dot(qv, ks + kr * a.hd, a.hd, sub);
      s[kr] = valid && k0 + kr <= i ? sc : -INFINITY;
      tile_max = fmaxf(tile_max, s[kr]);
    }
    float m_new = fmaxf(m, tile_max);
    if (m_new == -INFINITY) continue; /* nothing visible to this row yet */
    float corr = expf(m - m_new);
    l *= corr;
#pragma unroll
    for (int j = 0; j < DPT; j++) acc[j] *= corr;
#pragma unroll
    for (int kr = 0; kr < TILE; kr++) {
      float p = expf(s[kr] - m_new);
      l += p;
      slice_axpy(p, vs + kr * a.hd, a.hd, sub, acc);
    }
    m = m_new;
  }
  if (!valid) return;
  /* l == 0 only for a query before the first key (acc is then 0 too). */
  store_slice(a.out + at, a.hd, sub, acc, l > 0.0f ? 1.0f / l : 0.0f);
  if (sub == 0) a.lse_out[(t.start + i) * a.heads + h] = l > 0.0f ? m + logf(l) : -INFINITY;
}

/* ---- backward ---------------------------------------------------------------- */

/* delta[r] = do_r·o_r per (token, head) row, one warp each. */
__global__ static void attn_delta_kernel(const __nv_bfloat16 *d_o, const __nv_bfloat16 *o, long rows, int hd,
                                         float *delta) {
  long r = (blockIdx.x * (long)blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (r >= rows) return;
  float s = 0.0f;
  for (int d = lane; d < hd; d += 32) s += __bfloat162float(d_o[r * hd + d]) * __bfloat162float(o[r * hd + d]);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) delta[r] = s;
}

/* dq_i = scale·Σ_{ks ≤ j ≤ i} P_ij (do_i·v_j − Δ_i) k_j (0 when i < ks). */
__global__ static void attn_dq_kernel(attn_args a) {
  extern __shared__ float smem[];
  float *ks = smem, *vs = smem + TILE * a.hd;
  attn_tile t = tile_of(&a);
  if (t.r0 >= t.len) return;
  int h = blockIdx.y, g = h / a.n_rep, row = threadIdx.x / TPR, sub = threadIdx.x % TPR;
  int i = t.r0 + row;
  bool valid = i < t.len;
  long at = (t.start + i) * a.q_width + (long)h * a.hd, lrow = (t.start + i) * a.heads + h;
  float qv[DPT], dov[DPT], dq[DPT];
  load_slice(a.q + at, a.hd, sub, valid, qv);
  load_slice(a.d_o + at, a.hd, sub, valid, dov);
#pragma unroll
  for (int j = 0; j < DPT; j++) dq[j] = 0.0f;
  float lse = valid ? a.lse_in[lrow] : 0.0f, delta = valid ? a.delta[lrow] : 0.0f;
  int kend = min(t.len, t.r0 + ROWS);
  for (int k0 = t.ks; k0 < kend; k0 += TILE) {
    __syncthreads();
    load_tile(ks, a.k, t.start, k0, kend, a.kv_width, (long)g * a.hd, a.hd);
    load_tile(vs, a.v, t.start, k0, kend, a.kv_width, (long)g * a.hd, a.hd);
    __syncthreads();
    for (int kr = 0; kr < TILE; kr++) {
      float s = a.scale * slice_dot(qv, ks + kr * a.hd, a.hd, sub);
      float dp = slice_dot(dov, vs + kr * a.hd, a.hd, sub);
      float p = valid && k0 + kr <= i ? expf(s - lse) : 0.0f;
      slice_axpy(a.scale * p * (dp - delta), ks + kr * a.hd, a.hd, sub, dq);
    }
  }
  if (valid) store_slice(a.out + at, a.hd, sub, dq, 1.0f);
}

/* dv_j = Σ_h Σ_{i ≥ j} P_ij do_i and dk_j = scale·Σ_h Σ_{i ≥ j} dS_ij q_i over
 * the n_rep query heads h of kv head g = blockIdx.y; 0 for a pad key
 * (j < ks). Queries before ks attend nothing and are skipped. */
__global__ static void attn_dkv_kernel(attn_args a) {
  extern __shared__ float smem[];
  float *qs = smem, *dos = smem + TILE * a.hd, *lses = dos + TILE * a.hd, *deltas = lses + TILE;
  attn_tile t = tile_of(&a);
  if (t.r0 >= t.len) return;
  int g = blockIdx.y, row = threadIdx.x / TPR, sub = threadIdx.x % TPR;
  int j = t.r0 + row;
  bool valid = j < t.len, attended = valid && j >= t.ks;
  long at = (t.start + j) * a.kv_width + (long)g * a.hd;
  float kv[DPT], vv[DPT], dk[DPT], dv[DPT];
  load_slice(a.k + at, a.hd, sub, valid, kv);
  load_slice(a.v + at, a.hd, sub, valid, vv);
#pragma unroll
  for (int d = 0; d < DPT; d++) dk[d] = dv[d] = 0.0f;
  for (int h = g * a.n_rep; h < (g + 1) * a.n_rep; h++)
    for (int i0 = max(t.r0, t.ks); i0 < t.len; i0 += TILE) {
      __syncthreads();
      load_tile(qs, a.q, t.start, i0, t.len, a.q_width, (long)h * a.hd, a.hd);
      load_tile(dos, a.d_o, t.start, i0, t.len, a.q_width, (long)h * a.hd, a.hd);
      for (int r = threadIdx.x; r < TILE; r += blockDim.x) {
        bool in = i0 + r < t.len;
        long lrow = (t.start + i0 + r) * a.heads + h;
        lses[r] = in ? a.lse_in[lrow] : 0.0f;
        deltas[r] = in ? a.delta[lrow] : 0.0f;
      }
      __syncthreads();
      for (int qr = 0; qr < TILE; qr++) {
        int i = i0 + qr;
        float s = a.scale * slice_dot(kv, qs + qr * a.hd, a.hd, sub);
        float dp = slice_dot(vv, dos + qr * a.hd, a.hd, sub);
        float p = attended && i < t.len && i >= j ? expf(s - lses[qr]) : 0.0f;
        slice_axpy(p, dos + qr * a.hd, a.hd, sub, dv);
        slice_axpy(a.scale * p * (dp - deltas[qr]), qs + qr * a.hd, a.hd, sub, dk);
      }
    }
  if (!valid) return;
  store_slice(a.dk + at, a.hd, sub, dk, 1.0f);
  store_slice(a.dv + at, a.hd, sub, dv, 1.0f);
}

/* ---- host side ------------------------------------------------------------- */

/* Checks cu_seqlens as the CPU twin does and measures the longest sequence
 * (the shape's max_seqlen is only a hint; the launch must cover every row).
 * Reads the shape's host copy when there is one; otherwise downloads the
 * boundaries, which waits for the stream. */
static bool longest_sequence(qs_backend *be, const qs_tensor *cu_seqlens, const qs_attn_shape *shape, long tokens,
                             int *longest, qs_error *err) {
  int n_seqs = shape->n_seqs;
  int *cu = (int *)qs_malloc((size_t)(n_seqs + 1) * sizeof(int));
  bool ok = true;
  if (shape->cu_seqlens_host) memcpy(cu, shape->cu_seqlens_host, (size_t)(n_seqs + 1) * sizeof(int));
  else ok = qs_tensor_download(be, cu, cu_seqlens, err);
  if (ok && (cu[0] != 0 || cu[n_seqs] != tokens))
    ok = qs_fail(err, QS_EXIT_RUNTIME, "attention: cu_seqlens must run from 0 to %ld (got %d to %d)", tokens, cu[0],
                 cu[n_seqs]);
  *longest = 0;
  for (int b = 0; ok && b < n_seqs; b++) {
    if (cu[b + 1] < cu[b])
      ok = qs_fail(err, QS_EXIT_RUNTIME, "attention: cu_seqlens decreases at sequence %d (%d > %d)", b, cu[b],
                   cu[b + 1]);
    else if (cu[b + 1] - cu[b] > *longest) *longest = cu[b + 1] - cu[b];
  }
  free(cu);
  return ok;
}

/* Arguments and grid shared by the three passes; false (err filled) on a bad
 * shape or cu_seqlens. *grid.x == 0 means no work. */
static bool setup(qs_backend *be, const qs_tensor *q, const qs_tensor *cu_seqlens, const qs_attn_shape *shape,
                  attn_args *a, dim3 *grid, qs_error *err) {
  if (shape->head_dim > MAX_HD)
    return qs_fail(err, QS_EXIT_RUNTIME, "CUDA backend: attention head_dim %d is above the supported %d",
                   shape->head_dim, MAX_HD);
  int longest;
  if (!longest_sequence(be, cu_seqlens, shape, q->rows, &longest, err)) return false;
  memset(a, 0, sizeof *a);
  a->cu = (const int *)cu_seqlens->data;
  a->key_start = shape->key_start ? (const int *)shape->key_start->data : NULL;
  a->heads = shape->heads;
  a->n_rep = shape->heads / shape->kv_heads;
  a->hd = shape->head_dim;
  a->tiles_per_seq = (longest + ROWS - 1) / ROWS;
  a->q_width = (long)shape->heads * shape->head_dim;
  a->kv_width = (long)shape->kv_heads * shape->head_dim;
  a->scale = (float)(1.0 / sqrt((double)shape->head_dim));
  *grid = dim3((unsigned)((long)a->tiles_per_seq * shape->n_seqs), (unsigned)shape->heads);
  return true;
}

bool cuda_attention(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                    const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                    qs_error *err) {
  attn_args a;
  dim3 grid;
  if (!setup(be, q, cu_seqlens, shape, &a, &grid, err)) return false;
  if (grid.x == 0) return true;
  a.q = (const __nv_bfloat16 *)q->data;
  a.k = (const __nv_bfloat16 *)k->data;
  a.v = (const __nv_bfloat16 *)v->data;
  a.out = (__nv_bfloat16 *)o->data;
  a.lse_out = (float *)lse->data;
  size_t smem = 2 * TILE * (size_t)a.hd * sizeof(float);
  attn_fwd_kernel<<<grid, THREADS, smem, cuda_of(be)->stream>>>(a);
  return cuda_check_launch("attention", err);
}

bool cuda_attention_bwd(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                        const qs_tensor *o, const qs_tensor *lse, const qs_tensor *d_o, const qs_tensor *cu_seqlens,
                        const qs_attn_shape *shape, qs_tensor *dq, qs_tensor *dk, qs_tensor *dv, qs_error *err) {
  cuda_state *s = cuda_of(be);
  attn_args a;
  dim3 grid;
  if (!setup(be, q, cu_seqlens, shape, &a, &grid, err)) return false;
  if (grid.x == 0) return true;
  long rows = q->rows * shape->heads;
  void *delta;
  if (!cuda_scratch(s, SCRATCH_ATTN_DELTA, (size_t)rows * sizeof(float), &delta, err)) return false;
  attn_delta_kernel<<<cuda_warp_blocks(rows, THREADS), THREADS, 0, s->stream>>>(
      (const __nv_bfloat16 *)d_o->data, (const __nv_bfloat16 *)o->data, rows, a.hd, (float *)delta);
  a.q = (const __nv_bfloat16 *)q->data;
  a.k = (const __nv_bfloat16 *)k->data;
  a.v = (const __nv_bfloat16 *)v->data;
  a.d_o = (const __nv_bfloat16 *)d_o->data;
  a.lse_in = (const float *)lse->data;
  a.delta = (const float *)delta;
  a.out = (__nv_bfloat16 *)dq->data;
  a.dk = (__nv_bfloat16 *)dk->data;
  a.dv = (__nv_bfloat16 *)dv->data;
  size_t smem_dq = 2 * TILE * (size_t)a.hd * sizeof(float);
  attn_dq_kernel<<<grid, THREADS, smem_dq, s->stream>>>(a);
  size_t smem_dkv = smem_dq + 2 * TILE * sizeof(float);
  dim3 kv_grid(grid.x, (unsigned)shape->kv_heads);
  attn_dkv_kernel<<<kv_grid, THREADS, smem_dkv, s->stream>>>(a);
  return cuda_check_launch("attention_bwd", err);
}
