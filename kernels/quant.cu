/* Quantization ops of the CUDA backend: fake quant with the bit-exact
 * per-element rules of quant/fq.h (the CPU reference's own functions, so the
 * two backends give the same bits), and the per-Linear sensitivity score
 * with the reduction order fixed by backend.h: fp32 partials of at most
 * QS_SCORE_PARTIAL_TERMS terms summed in column order on the GPU, added in
 * fp64 in row-major order on the host. */
#include <stdlib.h>

#include "kernels/cuda_internal.h"

enum { THREADS = 256 };

/* |G·Δ| beyond this is clamped before squaring, as on the CPU. */
#define SCORE_CLAMP 1e10f
/* Rows of one Δ block: bounds the score's operand and Δ buffers (2^25 floats
 * each) without changing a result, since partials never span rows. */
#define BLOCK_FLOATS (1L << 25)

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

/* b[N, kb] = [wq − w | w] (with an activation quantizer) or wq − w. */
__global__ static void weight_operand_kernel(const void *w, bool w_bf16, const void *wq, bool wq_bf16, long n,
                                             long k, bool act_quant, float *b) {
  long kb = act_quant ? 2 * k : k;
  GRID_STRIDE(i, n * k) {
    long r = i / k, j = i % k;
    float wv = cuda_load(w, w_bf16, i);
    b[r * kb + j] = cuda_load(wq, wq_bf16, i) - wv;
    if (act_quant) b[r * kb + k + j] = wv;
  }
}

/* a[rows, 2k] = [xq | xq − x] for rows [r0, r0 + rows). */
__global__ static void act_operand_kernel(const __nv_bfloat16 *x, const void *xq, bool xq_bf16, long r0, long rows,
                                          long k, float *a) {
  GRID_STRIDE(i, rows * k) {
    long r = i / k, j = i % k, at = (r0 + r) * k + j;
    float qv = cuda_load(xq, xq_bf16, at);
    a[r * 2 * k + j] = qv;
    a[r * 2 * k + k + j] = qv - __bfloat162float(x[at]);
  }
}

/* ModelOpt's Δ = bf16(bf16(yr) − bf16(y)), in place in yr. */
__global__ static void modelopt_delta_kernel(float *yr, const float *y, long n) {
  GRID_STRIDE(i, n) yr[i] = qs_fq_bf16(qs_fq_bf16(yr[i]) - qs_fq_bf16(y[i]));
}

/* One thread per partial: clamp(G·Δ)² over a run of at most
 * QS_SCORE_PARTIAL_TERMS columns of one row, summed in column order. G is
 * bf16 on this backend, so ModelOpt's bf16 rounding of G is already done. */
__global__ static void partials_kernel(const __nv_bfloat16 *g, long r0, long rows, long n, const float *delta,
                                       long per_row, float *partial) {
  GRID_STRIDE(i, rows * per_row) {
    long r = i / per_row, p = i % per_row;
    long begin = p * QS_SCORE_PARTIAL_TERMS, end = min(begin + (long)QS_SCORE_PARTIAL_TERMS, n);
    const __nv_bfloat16 *grow = g + (r0 + r) * n;
    float sum = 0.0f;
    for (long j = begin; j < end; j++) {
      float v = __bfloat162float(grow[j]) * delta[r * n + j];
      /* Comparisons, not fminf/fmaxf: a NaN must pass through. */
      if (v > SCORE_CLAMP) v = SCORE_CLAMP;
      if (v < -SCORE_CLAMP) v = -SCORE_CLAMP;
      sum += v * v;
    }
    partial[(r0 + r) * per_row + p] = sum;
  }
}

typedef struct score_job {
  const qs_tensor *x, *xq, *w, *wq, *g;
  long t, n, k, block, per_row;
  float *a, *b, *c, *partial;
} score_job;

/* delta[rows, N] = a[rows, kk]·b[N, kk]ᵀ, fp32 GEMM. */
static bool product(cuda_state *s, const float *a, const float *b, long rows, long n, long kk, float *delta,
                    qs_error *err) {
  blaslt_gemm g = {(int)n, (int)rows, (int)kk, true, false, BLASLT_F32, BLASLT_F32, b, a, delta, false};
  return blaslt_run(s, &g, err);
}

static bool partials(cuda_state *s, const score_job *j, long r0, long rows, const float *delta, qs_error *err) {
  partials_kernel<<<cuda_blocks(rows * j->per_row, THREADS), THREADS, 0, s->stream>>>(
      (const __nv_bfloat16 *)j->g->data, r0, rows, j->n, delta, j->per_row, j->partial);
  return cuda_check_launch("quant_score", err);
}

static bool score_accurate(cuda_state *s, const score_job *j, qs_error *err) {
  bool act_quant = j->xq != NULL;
  long kb = act_quant ? 2 * j->k : j->k;
  weight_operand_kernel<<<cuda_blocks(j->n * j->k, THREADS), THREADS, 0, s->stream>>>(
      j->w->data, j->w->dtype == QS_BF16, j->wq->data, j->wq->dtype == QS_BF16, j->n, j->k, act_quant, j->b);
  for (long r0 = 0; r0 < j->t; r0 += j->block) {
    long rows = j->t - r0 < j->block ? j->t - r0 : j->block;
    if (act_quant)
      act_operand_kernel<<<cuda_blocks(rows * j->k, THREADS), THREADS, 0, s->stream>>>(
          (const __nv_bfloat16 *)j->x->data, j->xq->data, j->xq->dtype == QS_BF16, r0, rows, j->k, j->a);
    else if (!cuda_convert(s, (const __nv_bfloat16 *)j->x->data + r0 * j->k, true, j->a, false, rows * j->k, false,
                           err))
      return false;
    if (!product(s, j->a, j->b, rows, j->n, kb, j->c, err) || !partials(s, j, r0, rows, j->c, err)) return false;
  }
  return true;
}

static bool score_modelopt(cuda_state *s, const score_job *j, qs_error *err) {
  long nk = j->n * j->k;
  float *wf = j->b, *wqf = j->b + nk, *xf = j->a, *xqf = j->a + j->block * j->k, *y = j->c,
        *yr = j->c + j->block * j->n;
  if (!cuda_convert(s, j->w->data, j->w->dtype == QS_BF16, wf, false, nk, false, err) ||
      !cuda_convert(s, j->wq->data, j->wq->dtype == QS_BF16, wqf, false, nk, false, err))
    return false;
  const qs_tensor *xq = j->xq ? j->xq : j->x;
  size_t xq_size = qs_dtype_size(xq->dtype);
  for (long r0 = 0; r0 < j->t; r0 += j->block) {
    long rows = j->t - r0 < j->block ? j->t - r0 : j->block;
    if (!cuda_convert(s, (const __nv_bfloat16 *)j->x->data + r0 * j->k, true, xf, false, rows * j->k, false, err) ||
        !cuda_convert(s, (const char *)xq->data + (size_t)(r0 * j->k) * xq_size, xq->dtype == QS_BF16, xqf, false,
                      rows * j->k, false, err) ||
        !product(s, xf, wf, rows, j->n, j->k, y, err) || !product(s, xqf, wqf, rows, j->n, j->k, yr, err))
      return false;
    modelopt_delta_kernel<<<cuda_blocks(rows * j->n, THREADS), THREADS, 0, s->stream>>>(yr, y, rows * j->n);
    if (!partials(s, j, r0, rows, yr, err)) return false;
  }
  return true;
}

/* Scratch for one job: operands and Δ of one row block, all partials. */
static bool score_buffers(cuda_state *s, score_job *j, bool modelopt, qs_error *err) {
  long kb = j->xq && !modelopt ? 2 * j->k : j->k;
  long widest = j->n > kb ? j->n : kb;
  j->block = BLOCK_FLOATS / (widest > 0 ? widest : 1);
  if (j->block < 1) j->block = 1;
  if (j->block > j->t) j->block = j->t;
  int copies = modelopt ? 2 : 1; /* modelopt keeps (x, xq), (w, wq) and (y, yr) */
  void *a, *b, *c, *p;
  if (!cuda_scratch(s, SCRATCH_SCORE_A, (size_t)(copies * j->block * kb) * 4, &a, err) ||
      !cuda_scratch(s, SCRATCH_SCORE_B, (size_t)(copies * j->n * kb) * 4, &b, err) ||
      !cuda_scratch(s, SCRATCH_SCORE_C, (size_t)(copies * j->block * j->n) * 4, &c, err) ||
      !cuda_scratch(s, SCRATCH_PARTIALS, (size_t)(j->t * j->per_row) * 4, &p, err))
    return false;
  j->a = (float *)a;
  j->b = (float *)b;
  j->c = (float *)c;
  j->partial = (float *)p;
  return true;
}

bool cuda_quant_score(qs_backend *be, const qs_tensor *x, const qs_tensor *xq, const qs_tensor *w,
                      const qs_tensor *wq, const qs_tensor *g, qs_delta_mode mode, double *score, qs_error *err) {
  cuda_state *s = cuda_of(be);
  *score = 0.0;
  if (x->rows == 0 || w->rows == 0) return true;
  score_job j;
  memset(&j, 0, sizeof j);
  j.x = x;
  j.xq = xq;
  j.w = w;
  j.wq = wq;
  j.g = g;
  j.t = x->rows;
  j.n = w->rows;
  j.k = w->cols;
  j.per_row = (j.n + QS_SCORE_PARTIAL_TERMS - 1) / QS_SCORE_PARTIAL_TERMS;
  bool modelopt = mode == QS_DELTA_MODELOPT;
  if (!score_buffers(s, &j, modelopt, err)) return false;
  if (!(modelopt ? score_modelopt(s, &j, err) : score_accurate(s, &j, err))) return false;
  long count = j.t * j.per_row;
  float *host = (float *)qs_malloc((size_t)count * sizeof(float));
  bool ok = cuda_check(cudaMemcpyAsync(host, j.partial, (size_t)count * sizeof(float), cudaMemcpyDeviceToHost,
                                       s->stream),
                       "quant_score", err) &&
            cuda_sync(s, "quant_score", err);
  double total = 0.0;
  for (long i = 0; ok && i < count; i++) total += (double)host[i];
  free(host);
  if (ok) *score = total;
  return ok;
}
