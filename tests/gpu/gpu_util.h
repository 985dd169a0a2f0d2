/* Helpers of the GPU tests (header-only, so that their CHECKs count in the
 * including test's summary): skipping without a device, random bf16-valued
 * inputs, device tensors fenced by sentinel values, and error measures. */
#ifndef QSENS_TESTS_GPU_UTIL_H
#define QSENS_TESTS_GPU_UTIL_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "core/bf16.h"
#include "core/mem.h"
#include "model/tiny_lm.h"

/* Elements of sentinel pattern before and after every fenced tensor, which
 * gpu_check_fence verifies (an out-of-bounds write changes them). */
enum { SENTINEL_ELEMS = 64 };
enum { SENTINEL_BYTE = 0x5a }; /* 0x5a5a: a bf16/f32 value no op writes by chance */

/* The inputs of every GPU test come from this seeded generator. */
static test_rng gpu_rng = {2024};

/* Exits 77 (skipped) with a message when no CUDA device is visible. */
static inline void gpu_require_device(const char *test) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    printf("%s: no CUDA device visible, skipped\n", test);
    exit(77);
  }
}

/* n floats ~ mean + std·N(0,1), rounded to bf16 values, so that the CPU's
 * f32 copy and the GPU's bf16 copy hold the same numbers. Caller frees. */
static inline float *gpu_rand(long n, double mean, double std) {
  float *v = qs_malloc((size_t)(n ? n : 1) * sizeof(float));
  for (long i = 0; i < n; i++) v[i] = qs_round_bf16((float)(mean + std * rng_normal(&gpu_rng)));
  return v;
}

/* Host bytes of n floats in dtype. */
static inline void *gpu_pack(const float *host, qs_dtype dtype, long n) {
  void *out = qs_malloc((size_t)(n ? n : 1) * qs_dtype_size(dtype));
  for (long i = 0; i < n; i++) {
    if (dtype == QS_BF16) ((qs_bf16 *)out)[i] = qs_f32_to_bf16(host[i]);
    else ((float *)out)[i] = host[i];
  }
  return out;
}

/* The fenced block starts SENTINEL_ELEMS elements before t->data. */
static inline qs_tensor gpu_fence_of(const qs_tensor *t) {
  size_t es = qs_dtype_size(t->dtype);
  qs_tensor f = {(char *)t->data - SENTINEL_ELEMS * es, t->dtype, 1, qs_tensor_numel(t) + 2 * SENTINEL_ELEMS};
  return f;
}

/* A [rows, cols] tensor inside a block whose SENTINEL_ELEMS elements on
 * either side hold the sentinel pattern. */
static inline qs_tensor gpu_fenced_alloc(qs_backend *be, qs_dtype dtype, long rows, long cols) {
  qs_tensor block;
  qs_error err;
  long n = rows * cols;
  if (!qs_tensor_alloc(be, dtype, 1, n + 2 * SENTINEL_ELEMS, &block, &err)) {
    fprintf(stderr, "allocation failed: %s\n", err.msg);
    exit(1);
  }
  size_t bytes = qs_tensor_bytes(&block);
  unsigned char *pattern = qs_malloc(bytes);
  memset(pattern, SENTINEL_BYTE, bytes);
  CHECK(qs_tensor_upload(be, &block, pattern, &err));
  free(pattern);
  qs_tensor t = {(char *)block.data + SENTINEL_ELEMS * qs_dtype_size(dtype), dtype, rows, cols};
  return t;
}

/* A fenced tensor of backend memory holding host floats (converted to
 * dtype); host NULL leaves it unset. */
static inline qs_tensor gpu_tensor(qs_backend *be, const float *host, qs_dtype dtype, long rows, long cols) {
  qs_tensor t = gpu_fenced_alloc(be, dtype, rows, cols);
  if (host) {
    void *bytes = gpu_pack(host, dtype, rows * cols);
    qs_error err;
    CHECK(qs_tensor_upload(be, &t, bytes, &err));
    free(bytes);
  }
  return t;
}

/* A fenced [n, 1] I32 tensor holding host ints. */
static inline qs_tensor gpu_ints(qs_backend *be, const int *host, long n) {
  qs_tensor t = gpu_fenced_alloc(be, QS_I32, n, 1);
  qs_error err;
  CHECK(qs_tensor_upload(be, &t, host, &err));
  return t;
}

/* Frees a fenced tensor (the whole block). */
static inline void gpu_free(qs_backend *be, qs_tensor *t) {
  if (!t->data) return;
  qs_tensor block = gpu_fence_of(t);
  qs_tensor_free(be, &block);
  memset(t, 0, sizeof *t);
}

/* The tensor's values as floats (caller frees). */
static inline float *gpu_read(qs_backend *be, const qs_tensor *t) {
  long n = qs_tensor_numel(t);
  void *bytes = qs_malloc(qs_tensor_bytes(t) ? qs_tensor_bytes(t) : 1);
  float *out = qs_malloc((size_t)(n ? n : 1) * sizeof(float));
  qs_error err;
  CHECK(qs_tensor_download(be, bytes, t, &err));
  for (long i = 0; i < n; i++) {
    if (t->dtype == QS_BF16) out[i] = qs_bf16_to_f32(((qs_bf16 *)bytes)[i]);
    else if (t->dtype == QS_I32) out[i] = (float)((int32_t *)bytes)[i];
    else out[i] = ((float *)bytes)[i];
  }
  free(bytes);
  return out;
}

/* Sentinels around t intact (no out-of-bounds write); names the op. */
static inline bool gpu_check_fence(qs_backend *be, const qs_tensor *t, const char *op) {
  qs_tensor block = gpu_fence_of(t);
  size_t es = qs_dtype_size(t->dtype), fence_bytes = SENTINEL_ELEMS * es;
  unsigned char *bytes = qs_malloc(qs_tensor_bytes(&block));
  qs_error err;
  bool ok = qs_tensor_download(be, bytes, &block, &err);
  size_t tail = fence_bytes + qs_tensor_bytes(t);
  for (size_t i = 0; ok && i < fence_bytes; i++)
    if (bytes[i] != SENTINEL_BYTE || bytes[tail + i] != SENTINEL_BYTE) {
      fprintf(stderr, "%s: write outside the output at fence byte %zu\n", op, i);
      ok = false;
    }
  free(bytes);
  return ok;
}

/* Σ(a−b)² / Σb² (Σ(a−b)² when b is all zero). */
static inline double gpu_nmse(const float *a, const float *b, long n) {
  double num = 0.0, den = 0.0;
  for (long i = 0; i < n; i++) {
    double d = (double)a[i] - (double)b[i];
    num += d * d;
    den += (double)b[i] * b[i];
  }
  return den > 0.0 ? num / den : num;
}

/* No NaN or Inf in a[0..n). */
static inline bool gpu_all_finite(const float *a, long n) {
  for (long i = 0; i < n; i++)
    if (!isfinite(a[i])) return false;
  return true;
}

/* Downloads both tensors and checks: a finite, NMSE(a, b) <= tol, a's
 * fence intact; prints the NMSE under `what` and returns it. */
static inline double gpu_compare(qs_backend *gpu, const qs_tensor *a, qs_backend *cpu, const qs_tensor *b, double tol,
                   const char *what) {
  long n = qs_tensor_numel(a);
  CHECK_INT(n, qs_tensor_numel(b));
  float *ga = gpu_read(gpu, a), *cb = gpu_read(cpu, b);
  double e = gpu_nmse(ga, cb, n);
  bool finite = gpu_all_finite(ga, n);
  printf("  %-34s nmse %.3e (limit %.0e)%s\n", what, e, tol, finite ? "" : "  NON-FINITE");
  CHECK(finite);
  CHECK(e <= tol);
  CHECK(gpu_check_fence(gpu, a, what));
  free(ga);
  free(cb);
  return e;
}

/* Whether two tensors of one backend hold the same bytes. */
static inline bool gpu_same_bytes(qs_backend *be, const qs_tensor *a, const qs_tensor *b) {
  size_t bytes = qs_tensor_bytes(a);
  if (bytes != qs_tensor_bytes(b)) return false;
  unsigned char *x = qs_malloc(bytes ? bytes : 1), *y = qs_malloc(bytes ? bytes : 1);
  qs_error err;
  bool same = qs_tensor_download(be, x, a, &err) && qs_tensor_download(be, y, b, &err) && memcmp(x, y, bytes) == 0;
  free(x);
  free(y);
  return same;
}

#endif
