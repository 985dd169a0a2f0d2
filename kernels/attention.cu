/* Causal GQA attention over packed sequences, flash style on bf16 tensor
 * cores (WMMA 16x16x16, fp32 accumulation): a block of 4 warps takes a tile
 * of 64 rows (queries, or keys in the dK/dV pass) of one sequence and one
 * head, each warp 16 of them, and streams the other side through shared
 * memory in tiles of 64, with an online softmax in the forward. head_dim is
 * padded with zeros to a multiple of 16 in shared memory.
 *
 * Numerics: S = Q·Kᵀ and dP = dO·Vᵀ take the bf16 inputs with fp32
 * accumulation; the softmax, the running max/sum, the logsumexp and
 * dS = P∘(dP − Δ) are fp32 (accurate expf). The probabilities P and dS are
 * rounded to bf16 (2^-9 relative) to enter the P·V, dS·K, Pᵀ·dO and dSᵀ·Q
 * products on tensor cores, as FlashAttention does; the row sum l uses the
 * unrounded P, and the dK/dV pass forms dS from the bf16 P it keeps for dV
 * (one more rounding, for shared memory: see dkv_smem).
 *
 * Determinism: no atomics. Every output element is accumulated by one warp
 * in a fixed order: the forward and dQ walk the key tiles in order, dK/dV
 * (a block owns a key tile) walks the n_rep query heads of its kv head and
 * then the query tiles in order; k and v are never replicated. Row maxima
 * and sums meet in a fixed shuffle between the two lanes of a row. The
 * backward recomputes P from the forward's logsumexp.
 *
 * Left padding (key_start): keys of sequence b start at offset
 * key_start[b]; the key loops begin there, so pads are never read as keys,
 * and a query before that offset sees no key at all: its output is 0, its
 * lse -inf, and both backward passes give it (and pad keys) exact zeros. */
#include <mma.h>
#include <stdlib.h>

#include "kernels/cuda_internal.h"

using namespace nvcuda;

enum {
  WARPS = 4,
  THREADS = WARPS * 32,
  WROWS = 16,            /* rows per warp: one WMMA fragment high */
  TILE = WARPS * WROWS,  /* rows per block, and rows of the streamed side per step */
  FRAG = 16,             /* WMMA m = n = k */
  MAX_HD = 128,
  MAX_FRAGS = MAX_HD / FRAG,
  LDS = TILE + 4,        /* fp32 score rows (+4: fewer bank conflicts, WMMA needs a multiple of 4) */
  LDP = TILE + 8,        /* bf16 probability rows (WMMA needs a multiple of 8) */
  ROW_LANES = 2,         /* lanes of a warp per score row: 32 lanes / 16 rows */
};

typedef __nv_bfloat16 bf16;
typedef wmma::fragment<wmma::matrix_a, FRAG, FRAG, FRAG, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, FRAG, FRAG, FRAG, bf16, wmma::row_major> frag_b_row;
typedef wmma::fragment<wmma::matrix_b, FRAG, FRAG, FRAG, bf16, wmma::col_major> frag_b_col;
typedef wmma::fragment<wmma::accumulator, FRAG, FRAG, FRAG, float> frag_acc;

typedef struct attn_args {
  const bf16 *q, *k, *v, *o, *d_o;
  const int *cu;
  const int *key_start; /* [B] or NULL: every key from offset 0 */
  const float *lse_in, *delta;
  float *lse_out;
  bf16 *out, *dk, *dv;
  int heads, n_rep, hd, hdp, n_seqs, tiles_per_seq;
  long q_width, kv_width;
  float scale;
  bool vec; /* 16-byte loads: hd % 8 == 0 and every head row 16-byte aligned */
} attn_args;

/* The tile a block works on: sequence [start, start + len) whose keys begin
 * at offset ks, rows [r0, r0 + TILE). Blocks are numbered so that the
 * heaviest tiles start first (a shorter tail of the grid): with
 * last_rows_first (forward, dQ: a query tile's work grows with its
 * offset) the tiles of a sequence run from its end; dK/dV tiles, whose
 * work shrinks with the offset, run from its start. */
typedef struct attn_tile {
  long start;
  int len, r0, ks;
} attn_tile;

__device__ static inline attn_tile tile_of(const attn_args *a, bool last_rows_first) {
  attn_tile t;
  int b = blockIdx.x % a->n_seqs, n = blockIdx.x / a->n_seqs;
  t.start = a->cu[b];
  t.len = a->cu[b + 1] - a->cu[b];
  t.r0 = (last_rows_first ? a->tiles_per_seq - 1 - n : n) * TILE;
  /* Out-of-range values (the caller's duty, checked by the CPU twin) are
   * clamped rather than read past the sequence. */
  t.ks = a->key_start ? min(max(a->key_start[b], 0), t.len) : 0;
  return t;
}

/* ---- shared memory --------------------------------------------------------- */

/* Carves 128-byte aligned arrays (WMMA wants 32) out of dynamic shared
 * memory; with base NULL it only counts the bytes, so the host sizes the
 * launch with the very function the kernel uses. */
typedef struct smem_carver {
  char *base;
  size_t used;
} smem_carver;

template <typename T>
__host__ __device__ static inline T *carve(smem_carver *c, size_t elems) {
  T *p = c->base ? (T *)(c->base + c->used) : NULL;
  c->used += (elems * sizeof(T) + 127) & ~(size_t)127;
  return p;
}

/* bf16 rows of the padded head dim: +8 elements against bank conflicts,
 * keeping 16-byte rows for the vector loads. */
__host__ __device__ static inline int head_ld(int hdp) { return hdp + 8; }

typedef struct fwd_smem {
  bf16 *q, *k, *v, *p;
  float *s, *o, *row_scale;
} fwd_smem;

__host__ __device__ static inline size_t fwd_layout(char *base, int hdp, fwd_smem *m) {
  smem_carver c = {base, 0};
  m->q = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->k = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->v = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->p = carve<bf16>(&c, (size_t)TILE * LDP);
  m->s = carve<float>(&c, (size_t)TILE * LDS);
  m->o = carve<float>(&c, (size_t)TILE * (hdp + 4));
  m->row_scale = carve<float>(&c, TILE);
  return c.used;
}

typedef struct dq_smem {
  bf16 *q, *d_o, *k, *v, *ds;
  float *s, *dp;
} dq_smem;

__host__ __device__ static inline size_t dq_layout(char *base, int hdp, dq_smem *m) {
  smem_carver c = {base, 0};
  m->q = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->d_o = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->k = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->v = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->ds = carve<bf16>(&c, (size_t)TILE * LDP);
  m->s = carve<float>(&c, (size_t)TILE * LDS);
  m->dp = carve<float>(&c, (size_t)TILE * LDS);
  return c.used;
}

/* One fp32 score buffer, first for Sᵀ, then for dPᵀ (P waits in bf16):
 * 17 KiB less, so that two blocks fit an SM (228 KiB on Hopper). */
typedef struct dkv_smem {
  bf16 *k, *v, *q, *d_o, *p, *ds;
  float *s, *lse, *delta;
} dkv_smem;

__host__ __device__ static inline size_t dkv_layout(char *base, int hdp, dkv_smem *m) {
  smem_carver c = {base, 0};
  m->k = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->v = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->q = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->d_o = carve<bf16>(&c, (size_t)TILE * head_ld(hdp));
  m->p = carve<bf16>(&c, (size_t)TILE * LDP);
  m->ds = carve<bf16>(&c, (size_t)TILE * LDP);
  m->s = carve<float>(&c, (size_t)TILE * LDS);
  m->lse = carve<float>(&c, TILE);
  m->delta = carve<float>(&c, TILE);
  return c.used;
}

/* Rows [first, first + TILE) of a packed [T, width] tensor, head column
 * offset col, into shared [TILE][head_ld] bf16; zeros past row `end` and in
 * the padding dims [hd, hdp), so that they add nothing to any product. */
__device__ static inline void load_rows(bf16 *dst, const bf16 *src, long seq_start, int first, int end, long width,
                                        long col, const attn_args *a) {
  int chunks = a->hdp / 8, ld = head_ld(a->hdp);
  const bf16 zero = __float2bfloat16_rn(0.0f);
  for (int e = threadIdx.x; e < TILE * chunks; e += blockDim.x) {
    int r = e / chunks, c = (e % chunks) * 8;
    bf16 *d = dst + r * ld + c;
    bool in = first + r < end;
    const bf16 *s = src + (seq_start + first + r) * width + col + c;
    if (a->vec && in && c < a->hd) { /* hd % 8 == 0: the whole chunk is real */
      *(uint4 *)d = *(const uint4 *)s;
      continue;
    }
#pragma unroll
    for (int x = 0; x < 8; x++) d[x] = in && c + x < a->hd ? s[x] : zero;
  }
}

/* ---- warp-level products ------------------------------------------------------ */

/* out[16][TILE] (fp32, ld LDS) = A[16][hdp] · B[TILE][hdp]ᵀ: this warp's
 * rows of A against every row of the streamed tile B (both bf16, ld head_ld). */
__device__ static inline void warp_scores(float *out, const bf16 *a_rows, const bf16 *b_tile, int hdp) {
  int ld = head_ld(hdp);
  frag_acc acc[TILE / FRAG];
#pragma unroll
  for (int n = 0; n < TILE / FRAG; n++) wmma::fill_fragment(acc[n], 0.0f);
  for (int kk = 0; kk < hdp; kk += FRAG) {
    frag_a fa;
    wmma::load_matrix_sync(fa, a_rows + kk, ld);
#pragma unroll
    for (int n = 0; n < TILE / FRAG; n++) {
      frag_b_col fb;
      wmma::load_matrix_sync(fb, b_tile + n * FRAG * ld + kk, ld);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
#pragma unroll
  for (int n = 0; n < TILE / FRAG; n++) wmma::store_matrix_sync(out + n * FRAG, acc[n], LDS, wmma::mem_row_major);
}

/* acc[n] += P[16][TILE] · B[TILE][hdp] for the head-dim blocks n < hdp/16:
 * P bf16 (ld LDP), B the streamed bf16 tile (ld head_ld). The accumulators
 * stay in registers (static indices under the unrolled guard). */
__device__ static inline void warp_accumulate(frag_acc (&acc)[MAX_FRAGS], const bf16 *p_rows, const bf16 *b_tile,
                                              int hdp) {
  int ld = head_ld(hdp);
#pragma unroll
  for (int kk = 0; kk < TILE; kk += FRAG) {
    frag_a fa;
    wmma::load_matrix_sync(fa, p_rows + kk, LDP);
#pragma unroll
    for (int n = 0; n < MAX_FRAGS; n++)
      if (n * FRAG < hdp) {
        frag_b_row fb;
        wmma::load_matrix_sync(fb, b_tile + kk * ld + n * FRAG, ld);
        wmma::mma_sync(acc[n], fa, fb, acc[n]);
      }
  }
}

__device__ static inline void zero_frags(frag_acc (&acc)[MAX_FRAGS]) {
#pragma unroll
  for (int n = 0; n < MAX_FRAGS; n++) wmma::fill_fragment(acc[n], 0.0f);
}

/* Writes this warp's 16 accumulated rows times `mul` as bf16 to global rows
 * dst + r·stride (r < rows, dims < hd), one 16x16 block at a time through
 * the warp's fp32 staging rows (ld LDS). */
__device__ static inline void warp_store(frag_acc (&acc)[MAX_FRAGS], float *staging, bf16 *dst, long stride, int rows,
                                         const attn_args *a, float mul) {
  int lane = threadIdx.x % 32;
#pragma unroll
  for (int n = 0; n < MAX_FRAGS; n++)
    if (n * FRAG < a->hdp) {
      wmma::store_matrix_sync(staging, acc[n], LDS, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < FRAG * FRAG; e += 32) {
        int r = e / FRAG, d = n * FRAG + e % FRAG;
        if (r < rows && d < a->hd) dst[r * stride + d] = __float2bfloat16_rn(staging[r * LDS + e % FRAG] * mul);
      }
      __syncwarp();
    }
}

/* The two lanes of a score row meet in a fixed shuffle (same bits in both). */
__device__ static inline float pair_max(float v) { return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1)); }
__device__ static inline float pair_sum(float v) { return v + __shfl_xor_sync(0xffffffffu, v, 1); }

/* ---- forward ----------------------------------------------------------------- */

/* One key tile of the online softmax for this lane's row r (its columns
 * half, half + 2, ...): masks, rescales the running max m / sum l and the
 * row of o, writes bf16 P. i is the query's offset, k0 the tile's first key. */
__device__ static inline void softmax_step(const fwd_smem *sm, int r, int half, int i, bool valid, int k0, int hdp,
                                           float scale, float *m, float *l) {
  const float *s = sm->s + r * LDS;
  bf16 *p = sm->p + r * LDP;
  float tile_max = -INFINITY;
  for (int c = half; c < TILE; c += ROW_LANES)
    if (valid && k0 + c <= i) tile_max = fmaxf(tile_max, scale * s[c]);
  float m_new = fmaxf(*m, pair_max(tile_max));
  float corr = m_new == -INFINITY ? 1.0f : expf(*m - m_new); /* nothing visible yet: o and l stay 0 */
  float sum = 0.0f;
  for (int c = half; c < TILE; c += ROW_LANES) {
    float pv = valid && k0 + c <= i ? expf(scale * s[c] - m_new) : 0.0f;
    sum += pv;
    p[c] = __float2bfloat16_rn(pv);
  }
  *l = *l * corr + pair_sum(sum);
  *m = m_new;
  float *o = sm->o + r * (hdp + 4);
  for (int d = half; d < hdp; d += ROW_LANES) o[d] *= corr;
}

/* o_rows (fp32 in shared memory, ld hdp + 4) += P · V, 16x16 blocks loaded,
 * accumulated and stored back (the running o is rescaled between tiles, so
 * it cannot stay in opaque fragments). */
__device__ static inline void warp_pv(float *o_rows, const bf16 *p_rows, const bf16 *v_tile, int hdp) {
  int ld = head_ld(hdp);
  for (int n = 0; n < hdp; n += FRAG) {
    frag_acc acc;
    wmma::load_matrix_sync(acc, o_rows + n, hdp + 4, wmma::mem_row_major);
#pragma unroll
    for (int kk = 0; kk < TILE; kk += FRAG) {
      frag_a fa;
      frag_b_row fb;
      wmma::load_matrix_sync(fa, p_rows + kk, LDP);
      wmma::load_matrix_sync(fb, v_tile + kk * ld + n, ld);
      wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(o_rows + n, acc, hdp + 4, wmma::mem_row_major);
  }
}

__global__ static void __launch_bounds__(THREADS) attn_fwd_kernel(attn_args a) {
  extern __shared__ __align__(128) char smem[];
  fwd_smem sm;
  fwd_layout(smem, a.hdp, &sm);
  attn_tile t = tile_of(&a, true);
  if (t.r0 >= t.len) return; /* the whole block: tiles past a short sequence */
  int h = blockIdx.y, g = h / a.n_rep, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int r = warp * WROWS + lane / ROW_LANES, half = lane % ROW_LANES, i = t.r0 + r;
  bool valid = i < t.len;
  load_rows(sm.q, a.q, t.start, t.r0, t.len, a.q_width, (long)h * a.hd, &a);
  for (int e = threadIdx.x; e < TILE * (a.hdp + 4); e += blockDim.x) sm.o[e] = 0.0f;
  __syncthreads(); /* q and o are read by other warps (or, with no key tile, stored at once) */
  float m = -INFINITY, l = 0.0f;
  int kend = min(t.len, t.r0 + TILE), ld = head_ld(a.hdp);
  for (int k0 = t.ks; k0 < kend; k0 += TILE) {
    __syncthreads(); /* the previous tile's products are done with k, v */
    load_rows(sm.k, a.k, t.start, k0, kend, a.kv_width, (long)g * a.hd, &a);
    load_rows(sm.v, a.v, t.start, k0, kend, a.kv_width, (long)g * a.hd, &a);
    __syncthreads();
    int w0 = warp * WROWS;
    warp_scores(sm.s + w0 * LDS, sm.q + w0 * ld, sm.k, a.hdp);
    __syncwarp();
    softmax_step(&sm, r, half, i, valid, k0, a.hdp, a.scale, &m, &l);
    __syncwarp();
    warp_pv(sm.o + w0 * (a.hdp + 4), sm.p + w0 * LDP, sm.v, a.hdp);
  }
  /* l == 0 only for a query before the first key (o is then 0 too). */
  if (half == 0) sm.row_scale[r] = l > 0.0f ? 1.0f / l : 0.0f;
  if (half == 0 && valid) a.lse_out[(t.start + i) * a.heads + h] = l > 0.0f ? m + logf(l) : -INFINITY;
  __syncwarp();
  int w0 = warp * WROWS, rows = min(WROWS, t.len - (t.r0 + w0));
  for (int e = lane; e < rows * a.hd; e += 32) {
    int rr = w0 + e / a.hd, d = e % a.hd;
    a.out[(t.start + t.r0 + rr) * a.q_width + (long)h * a.hd + d] =
        __float2bfloat16_rn(sm.o[rr * (a.hdp + 4) + d] * sm.row_scale[rr]);
  }
}

/* ---- backward ---------------------------------------------------------------- */

/* delta[r] = do_r·o_r per (token, head) row, one warp each. */
__global__ static void attn_delta_kernel(const bf16 *d_o, const bf16 *o, long rows, int hd, float *delta) {
  long r = (blockIdx.x * (long)blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (r >= rows) return;
  float s = 0.0f;
  for (int d = lane; d < hd; d += 32) s += __bfloat162float(d_o[r * hd + d]) * __bfloat162float(o[r * hd + d]);
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) delta[r] = s;
}

/* dq_i = scale·Σ_{ks ≤ j ≤ i} dS_ij k_j, dS_ij = P_ij (do_i·v_j − Δ_i)
 * (0 when i < ks). A block owns 64 queries and walks the key tiles. */
__global__ static void __launch_bounds__(THREADS) attn_dq_kernel(attn_args a) {
  extern __shared__ __align__(128) char smem[];
  dq_smem sm;
  dq_layout(smem, a.hdp, &sm);
  attn_tile t = tile_of(&a, true);
  if (t.r0 >= t.len) return;
  int h = blockIdx.y, g = h / a.n_rep, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int r = warp * WROWS + lane / ROW_LANES, half = lane % ROW_LANES, i = t.r0 + r, w0 = warp * WROWS;
  bool valid = i < t.len;
  long lrow = (t.start + i) * a.heads + h;
  float lse = valid ? a.lse_in[lrow] : 0.0f, delta = valid ? a.delta[lrow] : 0.0f;
  load_rows(sm.q, a.q, t.start, t.r0, t.len, a.q_width, (long)h * a.hd, &a);
  load_rows(sm.d_o, a.d_o, t.start, t.r0, t.len, a.q_width, (long)h * a.hd, &a);
  frag_acc dq[MAX_FRAGS];
  zero_frags(dq);
  int kend = min(t.len, t.r0 + TILE), ld = head_ld(a.hdp);
  for (int k0 = t.ks; k0 < kend; k0 += TILE) {
    __syncthreads();
    load_rows(sm.k, a.k, t.start, k0, kend, a.kv_width, (long)g * a.hd, &a);
    load_rows(sm.v, a.v, t.start, k0, kend, a.kv_width, (long)g * a.hd, &a);
    __syncthreads();
    warp_scores(sm.s + w0 * LDS, sm.q + w0 * ld, sm.k, a.hdp);
    warp_scores(sm.dp + w0 * LDS, sm.d_o + w0 * ld, sm.v, a.hdp);
    __syncwarp();
    for (int c = half; c < TILE; c += ROW_LANES) {
      /* A pad query (i < ks) has no visible key: lse = -inf is never used. */
      float p = valid && k0 + c <= i ? expf(a.scale * sm.s[r * LDS + c] - lse) : 0.0f;
      sm.ds[r * LDP + c] = __float2bfloat16_rn(p * (sm.dp[r * LDS + c] - delta));
    }
    __syncwarp();
    warp_accumulate(dq, sm.ds + w0 * LDP, sm.k, a.hdp);
  }
  int rows = min(WROWS, t.len - (t.r0 + w0));
  warp_store(dq, sm.s + w0 * LDS, a.out + (t.start + t.r0 + w0) * a.q_width + (long)h * a.hd, a.q_width, rows, &a,
             a.scale);
}

/* dv_j = Σ_h Σ_{i ≥ j} P_ij do_i and dk_j = scale·Σ_h Σ_{i ≥ j} dS_ij q_i over
 * the n_rep query heads h of kv head g = blockIdx.y; 0 for a pad key
 * (j < ks). Queries before ks attend nothing and are skipped. A block owns
 * 64 keys and walks the heads, then the query tiles, in order. */
__global__ static void __launch_bounds__(THREADS) attn_dkv_kernel(attn_args a) {
  extern __shared__ __align__(128) char smem[];
  dkv_smem sm;
  dkv_layout(smem, a.hdp, &sm);
  attn_tile t = tile_of(&a, false);
  if (t.r0 >= t.len) return;
  int g = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int r = warp * WROWS + lane / ROW_LANES, half = lane % ROW_LANES, j = t.r0 + r, w0 = warp * WROWS;
  bool attended = j < t.len && j >= t.ks;
  load_rows(sm.k, a.k, t.start, t.r0, t.len, a.kv_width, (long)g * a.hd, &a);
  load_rows(sm.v, a.v, t.start, t.r0, t.len, a.kv_width, (long)g * a.hd, &a);
  frag_acc dk[MAX_FRAGS], dv[MAX_FRAGS];
  zero_frags(dk);
  zero_frags(dv);
  int ld = head_ld(a.hdp);
  for (int h = g * a.n_rep; h < (g + 1) * a.n_rep; h++)
    for (int i0 = max(t.r0, t.ks); i0 < t.len; i0 += TILE) {
      __syncthreads();
      load_rows(sm.q, a.q, t.start, i0, t.len, a.q_width, (long)h * a.hd, &a);
      load_rows(sm.d_o, a.d_o, t.start, i0, t.len, a.q_width, (long)h * a.hd, &a);
      for (int c = threadIdx.x; c < TILE; c += blockDim.x) {
        bool in = i0 + c < t.len;
        long lrow = (t.start + i0 + c) * a.heads + h;
        sm.lse[c] = in ? a.lse_in[lrow] : 0.0f;
        sm.delta[c] = in ? a.delta[lrow] : 0.0f;
      }
      __syncthreads();
      warp_scores(sm.s + w0 * LDS, sm.k + w0 * ld, sm.q, a.hdp);
      __syncwarp();
      for (int c = half; c < TILE; c += ROW_LANES) {
        int i = i0 + c;
        float p = attended && i < t.len && i >= j ? expf(a.scale * sm.s[r * LDS + c] - sm.lse[c]) : 0.0f;
        sm.p[r * LDP + c] = __float2bfloat16_rn(p);
      }
      __syncwarp();
      warp_scores(sm.s + w0 * LDS, sm.v + w0 * ld, sm.d_o, a.hdp);
      __syncwarp();
      /* dS from the bf16 P that dV uses too: one more 2^-9 rounding. */
      for (int c = half; c < TILE; c += ROW_LANES) {
        float p = __bfloat162float(sm.p[r * LDP + c]);
        sm.ds[r * LDP + c] = __float2bfloat16_rn(p * (sm.s[r * LDS + c] - sm.delta[c]));
      }
      __syncwarp();
      warp_accumulate(dv, sm.p + w0 * LDP, sm.d_o, a.hdp);
      warp_accumulate(dk, sm.ds + w0 * LDP, sm.q, a.hdp);
    }
  int rows = min(WROWS, t.len - (t.r0 + w0));
  long at = (t.start + t.r0 + w0) * a.kv_width + (long)g * a.hd;
  warp_store(dk, sm.s + w0 * LDS, a.dk + at, a.kv_width, rows, &a, a.scale);
  warp_store(dv, sm.s + w0 * LDS, a.dv + at, a.kv_width, rows, &a, 1.0f);
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

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Arguments and grid shared by the three passes; false (err filled) on a bad
 * shape or cu_seqlens. *grid.x == 0 means no work. The tensor pointers are
 * the caller's to fill, then choose_vector_loads looks at them. */
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
  a->hdp = (shape->head_dim + FRAG - 1) / FRAG * FRAG;
  a->n_seqs = shape->n_seqs;
  a->tiles_per_seq = (longest + TILE - 1) / TILE;
  a->q_width = (long)shape->heads * shape->head_dim;
  a->kv_width = (long)shape->kv_heads * shape->head_dim;
  a->scale = (float)(1.0 / sqrt((double)shape->head_dim));
  *grid = dim3((unsigned)((long)a->tiles_per_seq * shape->n_seqs), (unsigned)shape->heads);
  return true;
}

/* Head rows start at multiples of hd elements from each base: with hd % 8
 * == 0 and 16-byte aligned bases every 8-element chunk is 16-byte aligned. */
static void choose_vector_loads(attn_args *a) {
  a->vec = a->hd % 8 == 0 && aligned16(a->q) && aligned16(a->k) && aligned16(a->v) && (!a->d_o || aligned16(a->d_o));
}

/* Dynamic shared memory above 48 KiB must be allowed per kernel. */
static bool allow_smem(const void *kernel, size_t bytes, qs_error *err) {
  CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes),
           "attention shared memory");
  return true;
}

bool cuda_attention(qs_backend *be, const qs_tensor *q, const qs_tensor *k, const qs_tensor *v,
                    const qs_tensor *cu_seqlens, const qs_attn_shape *shape, qs_tensor *o, qs_tensor *lse,
                    qs_error *err) {
  attn_args a;
  dim3 grid;
  if (!setup(be, q, cu_seqlens, shape, &a, &grid, err)) return false;
  if (grid.x == 0) return true;
  a.q = (const bf16 *)q->data;
  a.k = (const bf16 *)k->data;
  a.v = (const bf16 *)v->data;
  a.out = (bf16 *)o->data;
  a.lse_out = (float *)lse->data;
  choose_vector_loads(&a);
  fwd_smem sizing; /* NULL pointers: only the byte count is wanted */
  size_t smem = fwd_layout(NULL, a.hdp, &sizing);
  if (!allow_smem((const void *)attn_fwd_kernel, smem, err)) return false;
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
      (const bf16 *)d_o->data, (const bf16 *)o->data, rows, a.hd, (float *)delta);
  a.q = (const bf16 *)q->data;
  a.k = (const bf16 *)k->data;
  a.v = (const bf16 *)v->data;
  a.d_o = (const bf16 *)d_o->data;
  a.lse_in = (const float *)lse->data;
  a.delta = (const float *)delta;
  a.out = (bf16 *)dq->data;
  a.dk = (bf16 *)dk->data;
  a.dv = (bf16 *)dv->data;
  choose_vector_loads(&a);
  dq_smem dq_sizing; /* NULL pointers: only the byte counts are wanted */
  dkv_smem dkv_sizing;
  size_t smem_dq = dq_layout(NULL, a.hdp, &dq_sizing), smem_dkv = dkv_layout(NULL, a.hdp, &dkv_sizing);
  if (!allow_smem((const void *)attn_dq_kernel, smem_dq, err) ||
      !allow_smem((const void *)attn_dkv_kernel, smem_dkv, err))
    return false;
  attn_dq_kernel<<<grid, THREADS, smem_dq, s->stream>>>(a);
  dim3 kv_grid(grid.x, (unsigned)shape->kv_heads);
  attn_dkv_kernel<<<kv_grid, THREADS, smem_dkv, s->stream>>>(a);
  return cuda_check_launch("attention_bwd", err);
}
