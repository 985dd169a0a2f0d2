/* Weight import of the CUDA backend (through its ring of 64 MiB pinned
 * staging buffers): bytes imported then downloaded are identical for odd
 * sizes and sizes at the staging-buffer boundaries, from aligned and
 * unaligned host memory; the host bytes are all read when an import returns
 * (its last copies may still be in flight); ops queued after an import see
 * its data; the in-use count is exact; an import that fails names the size
 * and leaves the backend usable; destroying a backend with copies in flight
 * is clean. */
#include <stdlib.h>
#include <time.h>

#include "gpu_util.h"
#include "kernels/cuda_backend.h"

static const size_t MIB = (size_t)1 << 20;

/* Word w of pattern `seed` (splitmix64): random-access, so a download can
 * be checked without a second copy of hundreds of MiB on the host. */
static uint64_t pattern_word(uint64_t seed, size_t w) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + w + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint8_t pattern_byte(uint64_t seed, size_t i) { return (uint8_t)(pattern_word(seed, i / 8) >> (8 * (i % 8))); }

static void fill_pattern(uint8_t *buf, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w = pattern_word(seed, i / 8);
    for (size_t b = 0; b < 8 && i + b < n; b++) buf[i + b] = (uint8_t)(w >> (8 * b));
  }
}

/* The first byte that differs from the pattern, or n. */
static size_t first_mismatch(const uint8_t *buf, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w = pattern_word(seed, i / 8);
    for (size_t b = 0; b < 8 && i + b < n; b++)
      if (buf[i + b] != (uint8_t)(w >> (8 * b))) return i + b;
  }
  return n;
}

/* Downloads `bytes` of device memory and checks them against the pattern. */
static bool device_holds_pattern(qs_backend *gpu, const void *dev, size_t bytes, uint64_t seed, const char *what) {
  uint8_t *back = qs_malloc(bytes ? bytes : 1);
  qs_error err = {0};
  bool ok = gpu->ops->download(gpu, back, dev, bytes, &err);
  if (!ok) fprintf(stderr, "%s: download failed: %s\n", what, err.msg);
  size_t at = ok ? first_mismatch(back, bytes, seed) : 0;
  if (ok && at != bytes) fprintf(stderr, "%s: byte %zu of %zu differs\n", what, at, bytes);
  free(back);
  return ok && at == bytes;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Every size imported before any is downloaded, the host copies overwritten
 * as soon as each import returns: a copy that read host memory late, a
 * staging buffer refilled before its copy drained, or an off-by-one at a
 * buffer boundary shows as a differing byte. Odd-indexed sources start one
 * byte past an aligned address (checkpoint tensors may be unaligned). */
static void test_round_trip(qs_backend *gpu) {
  static const size_t sizes[] = {1, 1000, 64 * MIB - 3, 64 * MIB, 64 * MIB + 5, 200 * MIB + 7};
  enum { N = sizeof sizes / sizeof sizes[0] };
  void *dev[N] = {NULL};
  size_t base = qs_cuda_backend_bytes_in_use(gpu), total = 0;
  qs_error err = {0};
  for (size_t i = 0; i < N; i++) {
    size_t shift = i % 2;
    uint8_t *block = qs_malloc(sizes[i] + shift), *host = block + shift;
    fill_pattern(host, sizes[i], 100 + i);
    double t0 = now_s();
    bool ok = gpu->ops->import(gpu, host, sizes[i], &dev[i], &err);
    double sec = now_s() - t0;
    if (!ok) fprintf(stderr, "import of %zu bytes failed: %s\n", sizes[i], err.msg);
    CHECK(ok);
    if (sizes[i] >= 64 * MIB)
      printf("  import of %zu bytes: %.3f s (%.1f GB/s from pageable memory)\n", sizes[i], sec,
             (double)sizes[i] / sec / 1e9);
    memset(host, 0xEE, sizes[i]); /* the import must not read this */
    free(block);
    total += sizes[i];
  }
  /* in-use counts exactly the bytes asked for, as for any allocation */
  CHECK_INT(qs_cuda_backend_bytes_in_use(gpu), base + total);
  for (size_t i = 0; i < N; i++) {
    char what[64];
    snprintf(what, sizeof what, "import of %zu bytes", sizes[i]);
    CHECK(device_holds_pattern(gpu, dev[i], sizes[i], 100 + i, what));
    gpu->ops->unimport(gpu, dev[i]);
  }
  CHECK_INT(qs_cuda_backend_bytes_in_use(gpu), base);
}

/* Imports shaped like a model's (small norm vectors between larger
 * matrices), ~290 MiB in all: more than the ring's 3 x 64 MiB, so buffers
 * are refilled while other imports are in flight; all checked at the end. */
static void test_many_imports(qs_backend *gpu) {
  enum { N = 60 };
  void *dev[N] = {NULL};
  size_t bytes[N];
  qs_error err = {0};
  for (int i = 0; i < N; i++) {
    bytes[i] = i % 3 == 0 ? 5120 : 7 * MIB + 5 + (size_t)i * 4096;
    uint8_t *host = qs_malloc(bytes[i]);
    fill_pattern(host, bytes[i], 1000 + (uint64_t)i);
    CHECK(gpu->ops->import(gpu, host, bytes[i], &dev[i], &err));
    free(host);
  }
  int bad = 0;
  for (int i = 0; i < N; i++) {
    bad += !device_holds_pattern(gpu, dev[i], bytes[i], 1000 + (uint64_t)i, "one of many imports");
    gpu->ops->unimport(gpu, dev[i]);
  }
  CHECK_INT(bad, 0);
}

/* A kernel queued right after an import reads the imported values: the
 * bf16 -> f32 conversion runs on the backend's stream behind the import's
 * copies. The values are finite bf16 (exponent field below all-ones), which
 * convert to f32 exactly. */
static void test_op_after_import(qs_backend *gpu) {
  long n = (long)(96 * MIB / 2) + 3;
  qs_bf16 *host = qs_malloc((size_t)n * sizeof *host);
  for (long i = 0; i < n; i++)
    host[i] = (qs_bf16)(pattern_byte(7, (size_t)i) | (pattern_byte(8, (size_t)i) & 0xBF) << 8);
  qs_error err = {0};
  qs_tensor w = {0}, wide = {0};
  CHECK(qs_tensor_import(gpu, host, QS_BF16, 1, n, &w, &err));
  CHECK(qs_tensor_alloc(gpu, QS_F32, 1, n, &wide, &err));
  CHECK(qs_op_copy(gpu, &wide, &w, &err));
  float *back = qs_malloc((size_t)n * sizeof *back);
  CHECK(qs_tensor_download(gpu, back, &wide, &err));
  long differ = 0;
  for (long i = 0; i < n; i++) differ += back[i] != qs_bf16_to_f32(host[i]);
  CHECK_INT(differ, 0);
  qs_tensor_free(gpu, &wide);
  qs_tensor_unimport(gpu, &w);
  free(back);
  free(host);
}

/* More than the card holds: one line naming the size, nothing counted, and
 * the next import works. The host bytes of the failing import are never
 * read (its device memory is allocated before any copy), so a small buffer
 * stands for them. */
static void test_import_after_failure(qs_backend *gpu) {
  size_t free_b = 0, total_b = 0;
  qs_error err = {0};
  CHECK(qs_cuda_backend_free_bytes(gpu, &free_b, &total_b, &err));
  size_t base = qs_cuda_backend_bytes_in_use(gpu);
  uint8_t small[64] = {0};
  void *dev = NULL;
  size_t huge = total_b + 4096 * MIB;
  CHECK(!gpu->ops->import(gpu, small, huge, &dev, &err));
  CHECK(dev == NULL);
  CHECK_INT(err.status, QS_EXIT_RUNTIME);
  char size_text[32];
  snprintf(size_text, sizeof size_text, "%.1f MiB", (double)huge / (double)MIB);
  CHECK(strstr(err.msg, "out of GPU memory") != NULL && strstr(err.msg, size_text) != NULL);
  CHECK(strchr(err.msg, '\n') == NULL);
  CHECK_INT(qs_cuda_backend_bytes_in_use(gpu), base);
  size_t bytes = 64 * MIB + 5;
  uint8_t *host = qs_malloc(bytes);
  fill_pattern(host, bytes, 55);
  err = (qs_error){0};
  CHECK(gpu->ops->import(gpu, host, bytes, &dev, &err));
  free(host);
  CHECK(device_holds_pattern(gpu, dev, bytes, 55, "import after a failed one"));
  gpu->ops->unimport(gpu, dev);
  CHECK_INT(qs_cuda_backend_bytes_in_use(gpu), base);
}

/* The last copies of an import may be in flight when the backend goes. */
static void test_destroy_in_flight(void) {
  qs_error err = {0};
  qs_backend *gpu = qs_cuda_backend_new(0, &err);
  CHECK(gpu != NULL);
  if (!gpu) return;
  size_t bytes = 150 * MIB;
  uint8_t *host = qs_malloc(bytes);
  fill_pattern(host, bytes, 9);
  void *dev = NULL;
  CHECK(gpu->ops->import(gpu, host, bytes, &dev, &err));
  free(host);
  qs_backend_destroy(gpu);
}

int main(void) {
  gpu_require_device("test_cuda_import");
  qs_error err = {0};
  qs_backend *gpu = qs_cuda_backend_new(0, &err);
  CHECK(gpu != NULL);
  if (gpu) {
    test_round_trip(gpu);
    test_many_imports(gpu);
    test_op_after_import(gpu);
    test_import_after_failure(gpu);
    qs_backend_destroy(gpu);
  }
  test_destroy_in_flight();
  return check_summary("test_cuda_import");
}
