/* Bridge from the CPU backend's fake-quant op to the reference quantizers of
 * src/quant (quant.h), kept in its own file because quant.h and backend.h
 * both name a type qs_dtype: this header includes neither. */
#ifndef QSENS_BACKEND_CPU_FQ_REF_H
#define QSENS_BACKEND_CPU_FQ_REF_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "quant/format.h"
#include "quant/fq.h"

/* A host array of fp32 or bf16 elements. */
typedef struct cpu_fq_array {
  void *data;
  bool bf16;
} cpu_fq_array;

/* y = FQ(x) over [rows, cols] by qs_fake_quant; amax NULL: from x. */
bool cpu_fq_reference(const qs_qformat *fmt, bool weight, qs_mx_rule mx_rule, int nvfp4_block, cpu_fq_array x,
                      cpu_fq_array y, size_t rows, size_t cols, const float *amax, qs_error *err);

#endif
