/* See cpu_fq_ref.h: the CPU fake-quant op is the reference quantizer. */
#include "backend/cpu/cpu_fq_ref.h"

#include "quant/quant.h"

bool cpu_fq_reference(const qs_qformat *fmt, bool weight, qs_mx_rule mx_rule, int nvfp4_block, cpu_fq_array x,
                      cpu_fq_array y, size_t rows, size_t cols, const float *amax, qs_error *err) {
  qs_src src = {x.data, x.bf16 ? QS_DTYPE_BF16 : QS_DTYPE_F32};
  qs_dst dst = {y.data, y.bf16 ? QS_DTYPE_BF16 : QS_DTYPE_F32};
  qs_fq_options opts = {mx_rule, nvfp4_block};
  return qs_fake_quant(fmt, weight ? QS_ROLE_WEIGHT : QS_ROLE_ACT, src, dst, rows, cols, amax, &opts, err);
}
