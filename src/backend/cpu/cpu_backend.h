/* The CPU reference backend: fp32 activations and math (or the bf16 mode
 * below), bf16 or f32 weights (upcast exactly), OpenBLAS sgemm for the
 * matrix products, OpenMP across rows, tokens and heads. It runs every op of
 * backend.h and is what the CUDA backend is tested against. */
#ifndef QSENS_BACKEND_CPU_BACKEND_H
#define QSENS_BACKEND_CPU_BACKEND_H

#include "backend/backend.h"

/* A new CPU backend; release with qs_backend_destroy. */
qs_backend *qs_cpu_backend_new(void);

/* The CPU backend in bf16 mode, the CUDA backend's numerics on the CPU:
 * activations are stored in bf16 (act_dtype QS_BF16) and rounded where the
 * CUDA kernels round them (spec qwen3-vl-lm.md §3.1: x̂ and w⊙x̂ in the
 * norms, cos/sin and every RoPE product, silu(g), the attention
 * probabilities P and dS, the logits and G_lm), so that a quantizer sees
 * the same bf16 activations on both backends and GPU-vs-CPU tests compare
 * like with like. Results then differ only where the fp32 sums of a GEMM or
 * a reduction, summed in another order, round to another bf16 value. A
 * reference for tests: every op copies its bf16 arguments to f32 and back. */
qs_backend *qs_cpu_backend_new_bf16(void);

#endif
