/* CUDA backend: device memory with an in-use/peak count, scratch buffers,
 * host transfers on the backend's stream, weight imports through pinned
 * staging buffers, and the op table. */
#include "kernels/cuda_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
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
  cudaError_t rc = cudaMallocFromPoolAsync(ptr, bytes, s->pool, s->stream);
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
  /* Stream-ordered: the memory is reused only by work queued after this. */
  cudaFreeAsync(ptr, s->stream);
}

bool qs_cuda_backend_reserve(qs_backend *be, size_t bytes, qs_error *err) {
  cuda_state *s = cuda_of(be);
  if (bytes <= s->reserved) return true;
  void *block;
  if (!cuda_device_alloc(s, bytes - s->reserved, &block, "the memory reserved up front", err)) return false;
  cuda_device_free(s, block); /* back to the pool, which keeps it */
  s->reserved = bytes;
  return cuda_sync(s, "reserving device memory", err);
}

size_t qs_cuda_backend_reserved_bytes(const qs_backend *be) { return ((const cuda_state *)be->impl)->reserved; }

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

/* ---- weight import through pinned staging ----------------------------- */

/* 64 MiB a buffer: a copy that size runs at full link speed, and three of
 * them are little pinned memory per rank. */
static const size_t STAGE_BYTES = (size_t)64 << 20;
/* Copies start at this alignment inside a staging buffer. */
static const size_t STAGE_ALIGN = 256;
/* Filling a buffer from the checkpoint's mapping (page cache reads and the
 * first touch of the mapped pages) is what bounds an upload, at a few GB/s
 * per thread; each fill thread takes at least FILL_SLICE_MIN bytes, so small
 * tensors are copied by the calling thread alone. */
enum { FILL_THREADS_MAX = 8 };
static const size_t FILL_SLICE_MIN = (size_t)4 << 20;

typedef struct fill_slice {
  char *dst;
  const char *src;
  size_t bytes;
} fill_slice;

static void *copy_slice(void *arg) {
  const fill_slice *f = (const fill_slice *)arg;
  memcpy(f->dst, f->src, f->bytes);
  return NULL;
}

/* memcpy split over up to `threads` threads; a slice whose thread cannot be
 * started is copied by the caller's thread. */
static void parallel_copy(char *dst, const char *src, size_t bytes, int threads) {
  size_t by_size = bytes / FILL_SLICE_MIN;
  int n = by_size < (size_t)threads ? (by_size ? (int)by_size : 1) : threads;
  fill_slice slice[FILL_THREADS_MAX];
  pthread_t tid[FILL_THREADS_MAX];
  bool started[FILL_THREADS_MAX] = {false};
  for (int i = 0; i < n; i++) {
    size_t begin = bytes / (size_t)n * (size_t)i, end = i + 1 == n ? bytes : bytes / (size_t)n * (size_t)(i + 1);
    slice[i] = fill_slice{dst + begin, src + begin, end - begin};
    started[i] = i > 0 && pthread_create(&tid[i], NULL, copy_slice, &slice[i]) == 0;
  }
  for (int i = 0; i < n; i++)
    if (!started[i]) copy_slice(&slice[i]);
  for (int i = 1; i < n; i++)
    if (started[i]) pthread_join(tid[i], NULL);
}

/* The CPUs this process may run on (an MPI rank bound to a few cores gets
 * as many fill threads), at most FILL_THREADS_MAX. */
static int fill_threads(void) {
  cpu_set_t set;
  int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return cpus < 1 ? 1 : cpus > FILL_THREADS_MAX ? FILL_THREADS_MAX : cpus;
}

static void release_staging(cuda_staging *st) {
  for (int i = 0; i < CUDA_STAGE_BUFFERS; i++) {
    if (st->buf[i]) cudaFreeHost(st->buf[i]);
    if (st->drained[i]) cudaEventDestroy(st->drained[i]);
  }
  memset(st, 0, sizeof *st);
}

static bool staging_ready(cuda_staging *st, qs_error *err) {
  if (st->buf[0]) return true;
  for (int i = 0; i < CUDA_STAGE_BUFFERS; i++) {
    void *buf = NULL;
    cudaEvent_t drained = NULL;
    cudaError_t rc = cudaHostAlloc(&buf, STAGE_BYTES, cudaHostAllocDefault);
    if (rc == cudaSuccess) {
      st->buf[i] = (char *)buf;
      rc = cudaEventCreateWithFlags(&drained, cudaEventDisableTiming);
    }
    if (rc != cudaSuccess) {
      cudaGetLastError(); /* not sticky: the backend stays usable */
      release_staging(st);
      return qs_fail(err, QS_EXIT_RUNTIME,
                     "CUDA backend: cannot set up %d pinned host buffers of %.0f MiB for uploading weights: %s",
                     CUDA_STAGE_BUFFERS, (double)STAGE_BYTES / MIB, cudaGetErrorString(rc));
    }
    st->drained[i] = drained;
  }
  st->fill_threads = fill_threads();
  return true;
}

/* Where the next copy is staged and how much fits: the rest of the current
 * buffer, else the next buffer of the ring once the copies out of it have
 * drained. */
static bool stage_room(cuda_staging *st, char **at, size_t *room, const char *what, qs_error *err) {
  if (st->used == STAGE_BYTES) {
    st->current = (st->current + 1) % CUDA_STAGE_BUFFERS;
    st->used = 0;
    CUDA_TRY(cudaEventSynchronize(st->drained[st->current]), what);
  }
  *at = st->buf[st->current] + st->used;
  *room = STAGE_BYTES - st->used;
  return true;
}

/* Host bytes to device memory through the ring. The host bytes are all read
 * when this returns; the last copies may still be in flight on the stream,
 * which orders them before any later op, download or free, so the fill of
 * the next tensor overlaps them. */
static bool staged_upload(cuda_state *s, char *dst, const char *src, size_t bytes, const char *what,
                          qs_error *err) {
  cuda_staging *st = &s->staging;
  for (size_t done = 0; done < bytes;) {
    char *at;
    size_t room;
    if (!stage_room(st, &at, &room, what, err)) return false;
    size_t n = bytes - done < room ? bytes - done : room;
    parallel_copy(at, src + done, n, st->fill_threads);
    CUDA_TRY(cudaMemcpyAsync(dst + done, at, n, cudaMemcpyHostToDevice, s->stream), what);
    CUDA_TRY(cudaEventRecord(st->drained[st->current], s->stream), what);
    /* room and used are multiples of STAGE_ALIGN, so this stays <= STAGE_BYTES */
    st->used += (n + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN;
    done += n;
  }
  return true;
}

static bool op_import(qs_backend *be, const void *host, size_t bytes, void **ptr, qs_error *err) {
  cuda_state *s = cuda_of(be);
  char what[96];
  snprintf(what, sizeof what, "uploading a weight of %zu bytes (%.1f MiB)", bytes, (double)bytes / MIB);
  if (!staging_ready(&s->staging, err)) return false;
  if (!cuda_device_alloc(s, bytes ? bytes : 1, ptr, "a weight", err)) return false;
  if (staged_upload(s, (char *)*ptr, (const char *)host, bytes, what, err)) return true;
  cudaStreamSynchronize(s->stream); /* no copy may still write to the memory freed here */
  cuda_device_free(s, *ptr);
  *ptr = NULL;
  return false;
}

static void op_unimport(qs_backend *be, void *ptr) { cuda_device_free(cuda_of(be), ptr); }

static void release_state(cuda_state *s) {
  cudaStreamSynchronize(s->stream); /* staged copies included */
  release_staging(&s->staging);
  for (int i = 0; i < SCRATCH_COUNT; i++) cuda_device_free(s, s->scratch[i]);
  if (s->gemm) blaslt_destroy(s, s->gemm);
  if (s->stream) cudaStreamDestroy(s->stream);
  if (s->pool) cudaMemPoolDestroy(s->pool);
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
  cudaMemPoolProps props;
  memset(&props, 0, sizeof props);
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  CUDA_TRY(cudaMemPoolCreate(&s->pool, &props), "creating the memory pool");
  uint64_t keep_all = UINT64_MAX;
  CUDA_TRY(cudaMemPoolSetAttribute(s->pool, cudaMemPoolAttrReleaseThreshold, &keep_all), "configuring the memory pool");
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
