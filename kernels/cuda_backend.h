/* The CUDA backend: the op table of backend/backend.h on one GPU, with bf16
 * activation storage, fp32 accumulation (cuBLASLt for the matrix products)
 * and fp32 rstd, logsumexp, residual gradients and reductions. It is tested
 * op by op against the CPU reference backend (tests/gpu). */
#ifndef QSENS_KERNELS_CUDA_BACKEND_H
#define QSENS_KERNELS_CUDA_BACKEND_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The project's headers are C: under nvcc (C++) their declarations need C
 * linkage. System headers come first so their guards keep them out of it. */
#ifdef __cplusplus
extern "C" {
#endif

#include "backend/backend.h"

/* A new backend on CUDA device `device` (an index as cudaSetDevice takes it);
 * NULL with err filled when there is no such device or it cannot be set up.
 * Release with qs_backend_destroy. */
qs_backend *qs_cuda_backend_new(int device, qs_error *err);

/* GPU memory held by the backend now and at most so far (tensors, imported
 * weights and its own scratch), in bytes; be must be a CUDA backend. */
size_t qs_cuda_backend_bytes_in_use(const qs_backend *be);
size_t qs_cuda_backend_peak_bytes(const qs_backend *be);

/* Reserves `bytes` of device memory up front (the pass's memory plan):
 * later allocations are carved from it and go beyond it only when the plan
 * was short. Fails, naming backend.token_budget, when the device lacks it. */
bool qs_cuda_backend_reserve(qs_backend *be, size_t bytes, qs_error *err);
size_t qs_cuda_backend_reserved_bytes(const qs_backend *be);

/* Free and total memory of the backend's device now (cudaMemGetInfo), for
 * sizing the step token budget before the weights are placed. */
bool qs_cuda_backend_free_bytes(const qs_backend *be, size_t *free_bytes, size_t *total_bytes, qs_error *err);

#ifdef __cplusplus
}
#endif

#endif
