#include "quant/quant.h"

#include <stdint.h>
#include <stdlib.h>

#include "core/bf16.h"
#include "core/mem.h"

/* Element i as fp32 (bf16 widens exactly). The dtype test is loop-invariant,
 * so it costs a predicted branch, not a second copy of every loop. */
static inline float load(qs_src x, size_t i) {
  if (x.dtype == QS_DTYPE_BF16) return qs_bf16_to_f32(((const qs_bf16 *)x.data)[i]);
  return ((const float *)x.data)[i];
}

/* Stores v, which already holds a bf16 value, so both stores are exact. */
static inline void store(qs_dst y, size_t i, float v) {
  if (y.dtype == QS_DTYPE_BF16) ((qs_bf16 *)y.data)[i] = (qs_bf16)(qs_fq_bits(v) >> 16);
  else ((float *)y.data)[i] = v;
}

/* Work is split into independent pieces of at least this many elements (or
 * whole blocks) for OpenMP; a smaller tensor runs on the calling thread.
 * Every output element is computed alone and the amax max is exact, so the
 * thread count never changes a result. */
#define CHUNK 65536

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* |x| bit patterns order like their values, with NaN above inf, so an integer
 * max is an exact amax that propagates NaN. */
static float amax_range(qs_src x, size_t begin, size_t end) {
  uint32_t m = 0;
  if (x.dtype == QS_DTYPE_BF16) {
    const qs_bf16 *p = x.data;
    for (size_t i = begin; i < end; i++) {
      uint32_t a = p[i] & 0x7fffu;
      m = a > m ? a : m;
    }
    m <<= 16;
  } else {
    const float *p = x.data;
    for (size_t i = begin; i < end; i++) {
      uint32_t a = qs_fq_bits(p[i]) & 0x7fffffffu;
      m = a > m ? a : m;
    }
  }
  return qs_fq_from_bits(m);
}

float qs_amax(qs_src x, size_t n) {
  uint32_t m = 0; /* amax values are non-negative: their bits order like them */
  size_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for reduction(max : m) if (nchunks > 1)
  for (size_t c = 0; c < nchunks; c++) {
    uint32_t a = qs_fq_bits(amax_range(x, c * CHUNK, min_size((c + 1) * CHUNK, n)));
    m = a > m ? a : m;
  }
  return qs_fq_from_bits(m);
}

void qs_amax_blocks(qs_src x, size_t n, size_t block, float *amax) {
  size_t nblocks = n / block;
  if (nblocks == 1) {
    amax[0] = qs_amax(x, n);
    return;
  }
#pragma omp parallel for if (n >= CHUNK)
  for (size_t b = 0; b < nblocks; b++) amax[b] = amax_range(x, b * block, (b + 1) * block);
}

static void quantize_fp8_range(qs_src x, qs_dst y, size_t begin, size_t end, qs_fp8_scale s) {
  for (size_t i = begin; i < end; i++) store(y, i, qs_fq_fp8(load(x, i), s));
}

void qs_quantize_fp8(qs_src x, qs_dst y, size_t n, float amax) {
  qs_fp8_scale s = qs_fp8_scale_for(amax);
  size_t nchunks = (n + CHUNK - 1) / CHUNK;
#pragma omp parallel for if (nchunks > 1)
  for (size_t c = 0; c < nchunks; c++) quantize_fp8_range(x, y, c * CHUNK, min_size((c + 1) * CHUNK, n), s);
}

static void quantize_int_range(qs_src x, qs_dst y, size_t begin, size_t end, qs_int_scale s) {
  for (size_t i = begin; i < end; i++) store(y, i, qs_fq_int(load(x, i), s));
}

void qs_quantize_int(qs_src x, qs_dst y, size_t n, size_t block, int bits, const float *amax) {
  /* pieces never straddle two blocks: whole blocks, or chunks of the one block */
  size_t piece = n / block == 1 ? CHUNK : block;
  size_t npieces = (n + piece - 1) / piece;
#pragma omp parallel for if (n >= CHUNK)
  for (size_t c = 0; c < npieces; c++) {
    size_t begin = c * piece;
    quantize_int_range(x, y, begin, min_size(begin + piece, n), qs_int_scale_for(amax[begin / block], bits));
  }
}

void qs_quantize_mxfp4(qs_src x, qs_dst y, size_t n, size_t block, qs_mx_rule rule) {
  size_t nblocks = n / block;
#pragma omp parallel for if (n >= CHUNK)
  for (size_t b = 0; b < nblocks; b++) {
    size_t begin = b * block, end = begin + block;
    int e = qs_mx_exponent(amax_range(x, begin, end), rule);
    for (size_t i = begin; i < end; i++) store(y, i, qs_fq_mxfp4(load(x, i), e));
  }
}

void qs_quantize_nvfp4(qs_src x, qs_dst y, size_t n, size_t block, float global_amax) {
  float s2 = qs_nvfp4_global_scale(global_amax);
  size_t nblocks = n / block;
#pragma omp parallel for if (n >= CHUNK)
  for (size_t b = 0; b < nblocks; b++) {
    size_t begin = b * block, end = begin + block;
    float sb = qs_nvfp4_block_scale(amax_range(x, begin, end), s2);
    for (size_t i = begin; i < end; i++) store(y, i, qs_fq_nvfp4(load(x, i), sb));
  }
}

static qs_qgran role_gran(const qs_qformat *fmt, qs_qrole role) {
  return role == QS_ROLE_WEIGHT ? fmt->weight_amax : fmt->act_amax;
}

/* Elements sharing one amax value. */
static size_t amax_span(const qs_qformat *fmt, qs_qrole role, size_t rows, size_t cols) {
  switch (role_gran(fmt, role)) {
  case QS_GRAN_TENSOR: return rows * cols;
  case QS_GRAN_CHANNEL: return cols;
  case QS_GRAN_BLOCK: return (size_t)fmt->block;
  case QS_GRAN_NONE: break;
  }
  return 0;
}

size_t qs_amax_count(const qs_qformat *fmt, qs_qrole role, size_t rows, size_t cols) {
  size_t span = amax_span(fmt, role, rows, cols);
  return span ? rows * cols / span : 0;
}

void qs_amax_for(const qs_qformat *fmt, qs_qrole role, qs_src x, size_t rows, size_t cols,
                 float *amax) {
  size_t span = amax_span(fmt, role, rows, cols);
  if (span) qs_amax_blocks(x, rows * cols, span, amax);
}

static void copy_bf16(qs_src x, qs_dst y, size_t n) {
  for (size_t i = 0; i < n; i++) store(y, i, qs_fq_bf16(load(x, i)));
}

static size_t element_block(const qs_qformat *fmt, qs_qrole role, const qs_fq_options *opts) {
  if (fmt->kind == QS_QK_NVFP4 && opts && opts->nvfp4_block > 0) return (size_t)opts->nvfp4_block;
  return (size_t)qs_qformat_role_block(fmt, role == QS_ROLE_WEIGHT);
}

bool qs_fake_quant(const qs_qformat *fmt, qs_qrole role, qs_src x, qs_dst y, size_t rows,
                   size_t cols, const float *amax, const qs_fq_options *opts, qs_error *err) {
  size_t n = rows * cols, block = element_block(fmt, role, opts);
  if (n == 0) return true;
  if (block && cols % block != 0)
    return qs_fail(err, QS_EXIT_RUNTIME,
                   "%s %s quantization: a row of %zu elements is not a whole number of %zu-element "
                   "blocks",
                   fmt->name, role == QS_ROLE_WEIGHT ? "weight" : "activation", cols, block);
  size_t count = qs_amax_count(fmt, role, rows, cols);
  float one_amax;
  float *own = NULL;
  if (!amax && count) {
    own = count == 1 ? &one_amax : qs_malloc(count * sizeof *own);
    qs_amax_for(fmt, role, x, rows, cols, own);
    amax = own;
  }
  switch (fmt->kind) {
  case QS_QK_NONE: copy_bf16(x, y, n); break;
  case QS_QK_FP8: qs_quantize_fp8(x, y, n, amax[0]); break;
  case QS_QK_INT: qs_quantize_int(x, y, n, amax_span(fmt, role, rows, cols), fmt->bits, amax); break;
  case QS_QK_MXFP4: qs_quantize_mxfp4(x, y, n, block, opts ? opts->mx_rule : QS_MX_NV_CEIL); break;
  case QS_QK_NVFP4: qs_quantize_nvfp4(x, y, n, block, amax[0]); break;
  }
  if (own != &one_amax) free(own);
  return true;
}
