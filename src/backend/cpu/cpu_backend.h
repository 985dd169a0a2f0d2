/* The CPU reference backend: fp32 activations and math, bf16 or f32 weights
 * (upcast exactly), OpenBLAS sgemm for the matrix products, OpenMP across
 * rows, tokens and heads. It runs every op of backend.h and is what the CUDA
 * backend is tested against. */
#ifndef QSENS_BACKEND_CPU_BACKEND_H
#define QSENS_BACKEND_CPU_BACKEND_H

#include "backend/backend.h"

/* A new CPU backend; release with qs_backend_destroy. */
qs_backend *qs_cpu_backend_new(void);

#endif
