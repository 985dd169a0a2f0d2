/* 128-bit access to runs of 8 elements (bf16: one 16-byte access, f32: two)
 * for the bandwidth-bound kernels. A kernel moves the leading n/8 vectors
 * this way only when every pointer it touches is 16-byte aligned, and takes
 * the remaining elements one by one, so the per-element arithmetic (and
 * hence every result bit) is the same on both paths. */
#ifndef QSENS_KERNELS_CUDA_VEC_H
#define QSENS_KERNELS_CUDA_VEC_H

#include "kernels/cuda_internal.h"

enum { VEC = 8 };

/* Raw bits, converted with intrinsics: a union member of type
 * __nv_bfloat16 would carry its constructors. */
typedef union bf16x8 {
  uint4 raw;
  unsigned short bits[VEC];
} bf16x8;

static inline bool cuda_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Elements 8v .. 8v+7 of p (bf16 or f32, known at run time) as floats. */
__device__ static inline void cuda_load8(const void *p, bool bf16, long v, float out[VEC]) {
  if (bf16) {
    bf16x8 b;
    b.raw = ((const uint4 *)p)[v];
#pragma unroll
    for (int k = 0; k < VEC; k++) out[k] = __bfloat162float(__ushort_as_bfloat16(b.bits[k]));
  } else {
    float4 lo = ((const float4 *)p)[2 * v], hi = ((const float4 *)p)[2 * v + 1];
    out[0] = lo.x, out[1] = lo.y, out[2] = lo.z, out[3] = lo.w;
    out[4] = hi.x, out[5] = hi.y, out[6] = hi.z, out[7] = hi.w;
  }
}

/* Stores 8 floats at elements 8v .. 8v+7, rounded to nearest when bf16
 * (as cuda_store does). */
__device__ static inline void cuda_store8(void *p, bool bf16, long v, const float in[VEC]) {
  if (bf16) {
    bf16x8 b;
#pragma unroll
    for (int k = 0; k < VEC; k++) b.bits[k] = __bfloat16_as_ushort(__float2bfloat16_rn(in[k]));
    ((uint4 *)p)[v] = b.raw;
  } else {
    ((float4 *)p)[2 * v] = make_float4(in[0], in[1], in[2], in[3]);
    ((float4 *)p)[2 * v + 1] = make_float4(in[4], in[5], in[6], in[7]);
  }
}

#endif
