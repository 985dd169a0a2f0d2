/* Quantization ops of the CUDA backend: fake quant with the bit-exact
 * per-element rules of quant/fq.h (the CPU reference's own functions, so the
 * two backends give the same bits), and the per-Linear sensitivity score:
 * Y_r on the bf16 tensor cores with fp32 output, then the reduction order of
 * backend/score_order.h (one warp per run, one block for the fp64
 * combination), accumulated on the device without waiting for it. */
#include "kernels/cuda_internal.h"

enum { THREADS = 256 };

#define GRID_STRIDE(i, n) for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (n); i += (long)gridDim.x * blockDim.x)

/* ---- fake quant ------------------------------------------------------------- */

typedef struct fq_args {
  qs_qkind kind;
  int bits;
  qs_mx_rule mx_rule;
  const void *x;
  bool x_bf16;
  void *y;
  bool y_bf16;
  long n, span, block; /* elements per amax value; per block scale */
  const float *amax;   /* one per span (NVFP4: [0] is the tensor's) */
} fq_args;

/* FP8, INT and NONE: one thread per element, the amax of its span. */
__global__ static void fq_elementwise_kernel(fq_args a) {
  GRID_STRIDE(i, a.n) {
    float x = cuda_load(a.x, a.x_bf16, i), y;
    if (a.kind == QS_QK_FP8) y = qs_fq_fp8(x, qs_fp8_scale_for(a.amax[i / a.span]));
    else if (a.kind == QS_QK_INT) y = qs_fq_int(x, qs_int_scale_for(a.amax[i / a.span], a.bits));
    else y = qs_fq_bf16(x);
    cuda_store(a.y, a.y_bf16, i, y);
  }
}

__device__ static inline float block_amax(const fq_args *a, long begin) {
  unsigned m = 0;
  for (long i = begin; i < begin + a->block; i++) m = max(m, __float_as_uint(cuda_load(a->x, a->x_bf16, i)) & 0x7fffffffu);
  return __uint_as_float(m);
}

/* MXFP4 and NVFP4: one thread per scale block. */
__global__ static void fq_blocks_kernel(fq_args a) {
  float s2 = a.kind == QS_QK_NVFP4 ? qs_nvfp4_global_scale(a.amax[0]) : 0.0f;
  GRID_STRIDE(b, a.n / a.block) {
    long begin = b * a.block;
    float bmax = block_amax(&a, begin);
    if (a.kind == QS_QK_MXFP4) {
      int e = qs_mx_exponent(bmax, a.mx_rule);
      for (long i = begin; i < begin + a.block; i++) cuda_store(a.y, a.y_bf16, i, qs_fq_mxfp4(cuda_load(a.x, a.x_bf16, i), e));
    } else {
      float sb = qs_nvfp4_block_scale(bmax, s2);
      for (long i = begin; i < begin + a.block; i++) cuda_store(a.y, a.y_bf16, i, qs_fq_nvfp4(cuda_load(a.x, a.x_bf16, i), sb));
    }
  }
}

/* amax of each span of `span` elements, one warp per span. */
__global__ static void span_amax_kernel(const void *x, bool bf16, long spans, long span, float *amax) {
  long w = (blockIdx.x * (long)blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (w >= spans) return;
  unsigned m = 0;
  for (long i = w * span + lane; i < (w + 1) * span; i += 32) m = max(m, __float_as_uint(cuda_load(x, bf16, i)) & 0x7fffffffu);
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (lane == 0) amax[w] = __uint_as_float(m);
}

/* The amax values of x the quantizer uses, taken from x itself. */
static bool amax_from_data(cuda_state *s, const fq_args *a, long count, float **out, qs_error *err) {
  void *buf;
  if (!cuda_scratch(s, SCRATCH_AMAX, (size_t)count * sizeof(float), &buf, err)) return false;
  *out = (float *)buf;
  if (count == 1) return cuda_amax_bits(s, a->x, a->x_bf16, a->n, (unsigned *)buf, err);
  span_amax_kernel<<<cuda_warp_blocks(count, THREADS), THREADS, 0, s->stream>>>(a->x, a->x_bf16, count, a->span,
                                                                               *out);
  return cuda_check_launch("fake_quant amax", err);
}

/* Elements per block scale, as the reference quantizer takes it. */
static long element_block(const qs_fq_spec *spec) {
  if (spec->format->kind == QS_QK_NVFP4 && spec->nvfp4_block > 0) return spec->nvfp4_block;
  return qs_qformat_role_block(spec->format, spec->weight);
}

bool cuda_fake_quant(qs_backend *be, const qs_fq_spec *spec, const qs_tensor *x, const qs_tensor *amax,
                     qs_tensor *y, qs_error *err) {
  cuda_state *s = cuda_of(be);
  const qs_qformat *fmt = spec->format;
  long n = qs_tensor_numel(x), block = element_block(spec);
  if (n == 0) return true;
  if (block && x->cols % block != 0)
    return qs_fail(err, QS_EXIT_RUNTIME,
                   "%s %s quantization: a row of %ld elements is not a whole number of %ld-element blocks",
                   fmt->name, spec->weight ? "weight" : "activation", x->cols, block);
  long count = qs_fq_amax_count(spec, x->rows, x->cols);
  fq_args a = {fmt->kind, fmt->bits, spec->mx_rule, x->data, x->dtype == QS_BF16, y->data, y->dtype == QS_BF16,
               n, count ? n / count : n, block, NULL};
  if (count) {
    float *values = amax ? (float *)amax->data : NULL;
    if (!values && !amax_from_data(s, &a, count, &values, err)) return false;
    a.amax = values;
  }
  if (fmt->kind == QS_QK_MXFP4 || fmt->kind == QS_QK_NVFP4)
    fq_blocks_kernel<<<cuda_blocks(n / block, THREADS), THREADS, 0, s->stream>>>(a);
  else fq_elementwise_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s->stream>>>(a);
  return cuda_check_launch("fake_quant", err);
}

/* ---- score ------------------------------------------------------------------- */

/* One warp per run of an output row (score_order.h): lane l sums the terms
 * of columns begin + l, begin + l + 32, … in order, then the xor butterfly.
 * yr, y and g point at the block's first row; partial at its first partial.
 * G is bf16 on this backend, so ModelOpt's bf16 rounding of G changes
 * nothing. */
__global__ static void score_partials_kernel(const float *yr, const float *y, const __nv_bfloat16 *g, long rows,
                                             long n, long runs, bool modelopt, float *partial) {
  long warp = (blockIdx.x * (long)blockDim.x + threadIdx.x) / 32;
  int lane = threadIdx.x % 32;
  if (warp >= rows * runs) return; /* whole warps: blockDim.x is a multiple of 32 */
  long row = warp / runs * n, begin = warp % runs * QS_SCORE_PARTIAL_TERMS;
  long end = min(begin + (long)QS_SCORE_PARTIAL_TERMS, n);
  float v = 0.0f;
#pragma unroll 4 /* loads issued ahead; the adds keep their order */
  for (long c = row + begin + lane; c < row + end; c += QS_SCORE_LANES) {
    float delta = qs_score_delta(yr[c], y[c], modelopt);
    v = qs_score_add(v, qs_score_term(__bfloat162float(g[c]), delta, modelopt));
  }
  for (int o = QS_SCORE_LANES / 2; o > 0; o >>= 1) v = qs_score_add(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane == 0) partial[warp] = v;
}

/* The fp64 combination of the call's partials (score_order.h) by one block
 * of QS_SCORE_COMBINE_SLOTS threads, and the one write acc[slot] += total. */
__global__ static void score_combine_kernel(const float *partial, long count, double *acc, long slot) {
  __shared__ double a[QS_SCORE_COMBINE_SLOTS];
  int j = threadIdx.x;
  a[j] = qs_score_combine_slot(partial, count, j);
  __syncthreads();
  for (int o = QS_SCORE_COMBINE_SLOTS / 2; o > 0; o >>= 1) {
    if (j < o) a[j] = a[j] + a[j + o];
    __syncthreads();
  }
  if (j == 0) acc[slot] += a[0];
}

/* A bf16 view of an operand: itself, or its f32 values rounded into a
 * scratch slot (exact: they are bf16 values by the op's contract). */
static bool bf16_operand(cuda_state *s, const qs_tensor *t, cuda_scratch_slot slot, const __nv_bfloat16 **out,
                         qs_error *err) {
  if (t->dtype == QS_BF16) {
    *out = (const __nv_bfloat16 *)t->data;
    return true;
  }
  long n = qs_tensor_numel(t);
  void *buf;
  if (!cuda_scratch(s, slot, (size_t)n * sizeof(__nv_bfloat16), &buf, err) ||
      !cuda_convert(s, t->data, false, buf, true, n, false, err))
    return false;
  *out = (const __nv_bfloat16 *)buf;
  return true;
}

typedef struct score_call {
  const __nv_bfloat16 *xr, *wr; /* [t, k], [n, k] */
  const float *y;               /* [t, n] */
  const __nv_bfloat16 *g;       /* [t, n] */
  long t, n, k, runs, block;    /* block: rows of one Y_r block */
  bool modelopt;
  float *yr, *partial; /* scratch: [block, n], [t·runs] */
} score_call;

/* Y_r and the partials of rows [r0, r0 + rows). */
static bool score_block(cuda_state *s, const score_call *c, long r0, long rows, qs_error *err) {
  /* Row-major Y_r[rows, n] = xr·wrᵀ is column-major Y_rᵀ = wr(ᵀ)·xrᵀ. */
  blaslt_gemm mm = {(int)c->n, (int)rows, (int)c->k, true, false, BLASLT_BF16, BLASLT_F32,
                    c->wr, c->xr + r0 * c->k, c->yr, false};
  if (!blaslt_run(s, &mm, err)) return false;
  long at = r0 * c->n, warps = rows * c->runs;
  score_partials_kernel<<<cuda_warp_blocks(warps, THREADS), THREADS, 0, s->stream>>>(
      c->yr, c->y + at, c->g + at, rows, c->n, c->runs, c->modelopt, c->partial + r0 * c->runs);
  return cuda_check_launch("quant_score partials", err);
}

static bool score_scratch(cuda_state *s, score_call *c, qs_error *err) {
  c->block = QS_SCORE_BLOCK_FLOATS / c->n;
  if (c->block < 1) c->block = 1;
  if (c->block > c->t) c->block = c->t;
  void *yr, *partial;
  if (!cuda_scratch(s, SCRATCH_SCORE_YR, (size_t)(c->block * c->n) * sizeof(float), &yr, err) ||
      !cuda_scratch(s, SCRATCH_SCORE_PARTIALS, (size_t)(c->t * c->runs) * sizeof(float), &partial, err))
    return false;
  c->yr = (float *)yr;
  c->partial = (float *)partial;
  return true;
}

bool cuda_quant_score(qs_backend *be, const qs_tensor *xr, const qs_tensor *wr, const qs_tensor *y,
                      const qs_tensor *g, qs_delta_mode mode, qs_tensor *acc, long slot, qs_error *err) {
  cuda_state *s = cuda_of(be);
  if (xr->rows == 0 || wr->rows == 0) return true; /* no outputs: nothing to add */
  score_call c;
  memset(&c, 0, sizeof c);
  c.y = (const float *)y->data;
  c.g = (const __nv_bfloat16 *)g->data; /* activation dtype: bf16 */
  c.t = xr->rows;
  c.n = wr->rows;
  c.k = wr->cols;
  c.runs = qs_score_runs_per_row(c.n);
  c.modelopt = mode == QS_DELTA_MODELOPT;
  if (!bf16_operand(s, xr, SCRATCH_SCORE_X, &c.xr, err) || !bf16_operand(s, wr, SCRATCH_SCORE_W, &c.wr, err) ||
      !score_scratch(s, &c, err))
    return false;
  for (long r0 = 0; r0 < c.t; r0 += c.block)
    if (!score_block(s, &c, r0, c.t - r0 < c.block ? c.t - r0 : c.block, err)) return false;
  score_combine_kernel<<<1, QS_SCORE_COMBINE_SLOTS, 0, s->stream>>>(c.partial, c.t * c.runs, (double *)acc->data,
                                                                    slot);
  return cuda_check_launch("quant_score combine", err);
}
