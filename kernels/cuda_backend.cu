/* CUDA backend: device memory with an in-use/peak count, scratch buffers,
 * host transfers on the backend's stream, and the op table. */
#include "kernels/cuda_internal.h"

#include <stdlib.h>

static const double MIB = 1024.0 * 1024.0;

bool cuda_check(cudaError_t rc, const char *what, qs_error *err) {
  if (rc == cudaSuccess) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "CUDA backend: %s failed: %s", what, cudaGetErrorString(rc));
}

bool cuda_check_launch(const char *what, qs_error *err) { return cuda_check(cudaGetLastError(), what, err); }

bool cuda_sync(cuda_state *s, const char *what, qs_error *err) {
  return cuda_check(cudaStreamSynchronize(s->stream), what, err);
}

/* Sizes of live allocations, so that a free can be taken off the in-use
 * count; a backend holds a few hundred at most (weights, arena, scratch), so
 * a linear search is cheap. */
static void remember(cuda_state *s, void *ptr, size_t bytes) {
  qs_grow((void **)&s->live, &s->live_cap, s->n_live + 1, sizeof *s->live);
  s->live[s->n_live].ptr = ptr;
  s->live[s->n_live].bytes = bytes;
  s->n_live++;
  s->in_use += bytes;
  if (s->in_use > s->peak) s->peak = s->in_use;
}

static void forget(cuda_state *s, void *ptr) {
  for (size_t i = 0; i < s->n_live; i++)
    if (s->live[i].ptr == ptr) {
      s->in_use -= s->live[i].bytes;
      s->live[i] = s->live[--s->n_live];
      return;
    }
}

bool cuda_device_alloc(cuda_state *s, size_t bytes, void **ptr, const char *what, qs_error *err) {
  cudaError_t rc = cudaMalloc(ptr, bytes);
  if (rc != cudaSuccess) {
    cudaGetLastError(); /* an allocation failure is not sticky: clear it */
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    *ptr = NULL;
    return qs_fail(err, QS_EXIT_RUNTIME,
                   "CUDA backend: out of GPU memory allocating %.1f MiB for %s (backend holds %.1f MiB, "
                   "device has %.1f MiB free of %.1f MiB); lower backend.token_budget",
                   (double)bytes / MIB, what, (double)s->in_use / MIB, (double)free_b / MIB,
                   (double)total_b / MIB);
  }
  remember(s, *ptr, bytes);
  return true;
}

void cuda_device_free(cuda_state *s, void *ptr) {
  if (!ptr) return;
  forget(s, ptr);
  cudaFree(ptr);
}

bool cuda_scratch(cuda_state *s, cuda_scratch_slot slot, size_t bytes, void **ptr, qs_error *err) {
  if (s->scratch_bytes[slot] < bytes) {
    /* The old contents are never needed: work queued on it finishes before
     * the stream runs anything that uses the new buffer. */
    cuda_device_free(s, s->scratch[slot]);
    s->scratch[slot] = NULL;
    s->scratch_bytes[slot] = 0;
    if (!cuda_device_alloc(s, bytes, &s->scratch[slot], "backend scratch", err)) return false;
    s->scratch_bytes[slot] = bytes;
  }
  *ptr = s->scratch[slot];
  return true;
}

size_t qs_cuda_backend_bytes_in_use(const qs_backend *be) { return ((const cuda_state *)be->impl)->in_use; }
size_t qs_cuda_backend_peak_bytes(const qs_backend *be) { return ((const cuda_state *)be->impl)->peak; }

bool qs_cuda_backend_free_bytes(const qs_backend *be, size_t *free_bytes, size_t *total_bytes, qs_error *err) {
  const cuda_state *s = (const cuda_state *)be->impl;
  *free_bytes = *total_bytes = 0;
  CUDA_TRY(cudaSetDevice(s->device), "selecting the device");
  CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes), "querying the free device memory");
  return true;
}

/* ---- table entries: memory ---------------------------------------------- */

static bool op_alloc(qs_backend *be, size_t bytes, void **ptr, qs_error *err) {
  return cuda_device_alloc(cuda_of(be), bytes, ptr, "a tensor", err);
}

static void op_free(qs_backend *be, void *ptr) { cuda_device_free(cuda_of(be), ptr); }

static bool copy_sync(cuda_state *s, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                      const char *what, qs_error *err) {
  if (bytes == 0) return true;
  CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, kind, s->stream), what);
  return cuda_sync(s, what, err);
}

static bool op_upload(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
  return copy_sync(cuda_of(be), dst, src, bytes, cudaMemcpyHostToDevice, "upload", err);
}

static bool op_download(qs_backend *be, void *dst, const void *src, size_t bytes, qs_error *err) {
  return copy_sync(cuda_of(be), dst, src, bytes, cudaMemcpyDeviceToHost, "download", err);
}

static bool op_import(qs_backend *be, const void *host, size_t bytes, void **ptr, qs_error *err) {
  cuda_state *s = cuda_of(be);
  if (!cuda_device_alloc(s, bytes ? bytes : 1, ptr, "a weight", err)) return false;
  if (copy_sync(s, *ptr, host, bytes, cudaMemcpyHostToDevice, "weight upload", err)) return true;
  cuda_device_free(s, *ptr);
  *ptr = NULL;
  return false;
}

static void op_unimport(qs_backend *be, void *ptr) { cuda_device_free(cuda_of(be), ptr); }

static void release_state(cuda_state *s) {
  cudaStreamSynchronize(s->stream);
  for (int i = 0; i < SCRATCH_COUNT; i++) cuda_device_free(s, s->scratch[i]);
  if (s->gemm) blaslt_destroy(s, s->gemm);
  if (s->stream) cudaStreamDestroy(s->stream);
  free(s->live);
  free(s);
}

static void op_destroy(qs_backend *be) {
  release_state(cuda_of(be));
  free(be);
}

static const qs_backend_ops cuda_ops = {
    op_alloc,
    op_free,
    op_upload,
    op_download,
    op_import,
    op_unimport,
    op_destroy,
    cuda_linear,
    cuda_linear_bwd,
    cuda_rmsnorm,
    cuda_rmsnorm_bwd,
    cuda_qknorm_rope,
    cuda_qknorm_rope_bwd,
    cuda_attention,
    cuda_attention_bwd,
    cuda_swiglu,
    cuda_swiglu_bwd,
    cuda_embedding,
    cuda_add,
    cuda_copy,
    cuda_lm_head_xent,
    cuda_amax_accumulate,
    cuda_all_finite,
    cuda_fake_quant,
    cuda_quant_score,
};

static bool open_device(cuda_state *s, int device, qs_error *err) {
  int count = 0;
  cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess || count == 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "CUDA backend: no CUDA device is visible (%s)",
                   rc != cudaSuccess ? cudaGetErrorString(rc) : "device count 0");
  if (device < 0 || device >= count)
    return qs_fail(err, QS_EXIT_RUNTIME, "CUDA backend: device %d does not exist (%d visible)", device, count);
  CUDA_TRY(cudaSetDevice(device), "selecting the device");
  CUDA_TRY(cudaDeviceGetAttribute(&s->sm_count, cudaDevAttrMultiProcessorCount, device), "querying the device");
  CUDA_TRY(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "creating a stream");
  s->device = device;
  return blaslt_create(s, &s->gemm, err);
}

qs_backend *qs_cuda_backend_new(int device, qs_error *err) {
  cuda_state *s = (cuda_state *)qs_calloc(1, sizeof *s);
  if (!open_device(s, device, err)) {
    release_state(s);
    return NULL;
  }
  qs_backend *be = (qs_backend *)qs_calloc(1, sizeof *be);
  be->ops = &cuda_ops;
  be->name = "cuda";
  be->act_dtype = QS_BF16;
  be->impl = s;
  return be;
}
