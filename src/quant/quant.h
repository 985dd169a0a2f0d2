/* Array-level reference fake quantizers and amax helpers (spec §1, §3).
 *
 * Inputs are bf16 or fp32 arrays, outputs bf16 values stored as bf16 or fp32,
 * so the fp32 CPU backend and bf16 code share one implementation. Blocks and
 * rows run along the contiguous last dim (K); a tensor [rows, cols] is passed
 * flat. The per-element rules live in fq.h. */
#ifndef QSENS_QUANT_QUANT_H
#define QSENS_QUANT_QUANT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "quant/format.h"
#include "quant/fq.h"

typedef enum qs_elem_type { QS_DTYPE_BF16, QS_DTYPE_F32 } qs_elem_type;

typedef struct qs_src {
  const void *data;
  qs_elem_type dtype;
} qs_src;

typedef struct qs_dst {
  void *data;
  qs_elem_type dtype;
} qs_dst;

/* max |x| over n elements. NaN anywhere gives NaN (so a corrupt tensor cannot
 * hide behind a finite scale); inf gives inf. Exact: a max of input values. */
float qs_amax(qs_src x, size_t n);

/* amax of each run of `block` consecutive elements: per block (INT4, NVFP4),
 * per row (block = cols), per tensor (block = n). n % block must be 0. */
void qs_amax_blocks(qs_src x, size_t n, size_t block, float *amax);

/* The quantizers below assume valid shapes (n a multiple of the block); use
 * qs_fake_quant for checked, format-driven calls. x and y may alias. */

/* FP8 E4M3 with one amax for all n elements. */
void qs_quantize_fp8(qs_src x, qs_dst y, size_t n, float amax);

/* INTb with one amax per run of `block` elements (block = n: per tensor;
 * block = cols: per output channel; 128: INT4 blockwise). */
void qs_quantize_int(qs_src x, qs_dst y, size_t n, size_t block, int bits, const float *amax);

/* MXFP4 with blocks of `block` (32) elements and a dynamic E8M0 scale each. */
void qs_quantize_mxfp4(qs_src x, qs_dst y, size_t n, size_t block, qs_mx_rule rule);

/* NVFP4 with blocks of `block` (16) elements under the per-tensor amax A. */
void qs_quantize_nvfp4(qs_src x, qs_dst y, size_t n, size_t block, float global_amax);

typedef enum qs_qrole { QS_ROLE_WEIGHT, QS_ROLE_ACT } qs_qrole;

typedef struct qs_fq_options {
  qs_mx_rule mx_rule; /* mx_scale_rule, default QS_MX_NV_CEIL */
  int nvfp4_block;    /* 0: the format's (16); nvfp4_w4a8_block may set 32 */
} qs_fq_options;

/* Number of amax values the format uses for a [rows, cols] tensor in this role:
 * 1 per tensor, rows per channel, rows*cols/block per block, 0 for MXFP4
 * and NONE. */
size_t qs_amax_count(const qs_qformat *fmt, qs_qrole role, size_t rows, size_t cols);

/* Computes the amax values of x that fmt uses in this role (the weight amax,
 * or a dynamic activation amax) into amax[qs_amax_count(...)]. */
void qs_amax_for(const qs_qformat *fmt, qs_qrole role, qs_src x, size_t rows, size_t cols,
                 float *amax);

/* y = FQ(x) for a [rows, cols] tensor. amax: the qs_amax_count values to use
 * (static calibration), or NULL to take them from x (weights, dynamic
 * activations). NONE copies x rounded to bf16. Fails (status 1) when cols is
 * not a multiple of the format's block. */
bool qs_fake_quant(const qs_qformat *fmt, qs_qrole role, qs_src x, qs_dst y, size_t rows,
                   size_t cols, const float *amax, const qs_fq_options *opts, qs_error *err);

#endif
