/* GPU memory of the CUDA backend: the free-memory query the step token
 * budget is fitted to, the in-use/peak count behind the job's "peak memory"
 * line, an out-of-memory failure that names backend.token_budget and leaves
 * the backend usable, the reservation made up front, and the memory plan (engine/memory_plan.h) against
 * what a model step really holds on the device. */
#include <stdlib.h>

#include "engine/memory_plan.h"
#include "gpu_util.h"
#include "kernels/cuda_backend.h"
#include "model/qwen3.h"

static const size_t MIB = (size_t)1 << 20;

static void test_free_bytes(qs_backend *gpu) {
  size_t free_b = 0, total_b = 0;
  qs_error err = {0};
  CHECK(qs_cuda_backend_free_bytes(gpu, &free_b, &total_b, &err));
  CHECK(total_b > 0 && free_b > 0 && free_b <= total_b);
  /* 64 MiB more in use shows as at least 64 MiB less free (the backend's
   * pool maps whole pages; nothing else allocates on the test's card). */
  qs_tensor t = {0};
  CHECK(qs_tensor_alloc(gpu, QS_BF16, 32, 1 << 20, &t, &err));
  size_t free_after = 0;
  CHECK(qs_cuda_backend_free_bytes(gpu, &free_after, &total_b, &err));
  CHECK(free_after + 64 * MIB <= free_b);
  qs_tensor_free(gpu, &t);
}

static void test_in_use_and_peak(qs_backend *gpu) {
  qs_error err = {0};
  size_t base = qs_cuda_backend_bytes_in_use(gpu);
  qs_tensor a = {0}, b = {0};
  CHECK(qs_tensor_alloc(gpu, QS_F32, 1000, 1000, &a, &err) && qs_tensor_alloc(gpu, QS_BF16, 10, 100, &b, &err));
  CHECK_INT(qs_cuda_backend_bytes_in_use(gpu), base + 4000000 + 2000);
  CHECK(qs_cuda_backend_peak_bytes(gpu) >= base + 4002000);
  qs_tensor_free(gpu, &a);
  CHECK_INT(qs_cuda_backend_bytes_in_use(gpu), base + 2000);
  CHECK(qs_cuda_backend_peak_bytes(gpu) >= base + 4002000); /* a peak is never lowered */
  qs_tensor_free(gpu, &b);
  CHECK_INT(qs_cuda_backend_bytes_in_use(gpu), base);
}

/* More than the card holds: one message naming the knob, nothing counted,
 * and the next allocation works (the failure is not sticky). */
static void test_out_of_memory(qs_backend *gpu) {
  size_t free_b = 0, total_b = 0;
  qs_error err = {0};
  CHECK(qs_cuda_backend_free_bytes(gpu, &free_b, &total_b, &err));
  size_t base = qs_cuda_backend_bytes_in_use(gpu);
  qs_tensor huge = {0};
  long rows = (long)(total_b / (4 * MIB)) + 1024; /* rows of 4 MiB: 4 GiB more than the card */
  CHECK(!qs_tensor_alloc(gpu, QS_F32, rows, (long)MIB, &huge, &err));
  CHECK_INT(err.status, QS_EXIT_RUNTIME);
  CHECK(strstr(err.msg, "out of GPU memory") != NULL && strstr(err.msg, "lower backend.token_budget") != NULL);
  CHECK(strchr(err.msg, '\n') == NULL);
  CHECK_INT(qs_cuda_backend_bytes_in_use(gpu), base);
  qs_tensor small = {0};
  err = (qs_error){0};
  CHECK(qs_tensor_alloc(gpu, QS_BF16, 16, 16, &small, &err));
  qs_tensor_free(gpu, &small);
}

/* A reservation made up front (the pass's plan) takes the device memory at
 * once, and later allocations within it are carved from it: the free
 * memory the driver reports does not move (2 MiB: its page rounding). */
static void test_reserve(qs_backend *gpu) {
  qs_error err = {0};
  size_t free_before = 0, free_reserved = 0, free_used = 0, total_b = 0;
  CHECK(qs_cuda_backend_free_bytes(gpu, &free_before, &total_b, &err));
  CHECK(qs_cuda_backend_reserve(gpu, 1024 * MIB, &err));
  CHECK_INT(qs_cuda_backend_reserved_bytes(gpu), 1024 * MIB);
  CHECK(qs_cuda_backend_free_bytes(gpu, &free_reserved, &total_b, &err));
  CHECK(free_reserved + 900 * MIB <= free_before);
  qs_tensor t = {0};
  CHECK(qs_tensor_alloc(gpu, QS_BF16, 256, 1 << 20, &t, &err)); /* 512 MiB */
  CHECK(qs_cuda_backend_free_bytes(gpu, &free_used, &total_b, &err));
  CHECK(free_used + 2 * MIB >= free_reserved);
  qs_tensor_free(gpu, &t);
  CHECK(qs_cuda_backend_reserve(gpu, 512 * MIB, &err)); /* already held: nothing to do */
  CHECK_INT(qs_cuda_backend_reserved_bytes(gpu), 1024 * MIB);
}

/* A forward+backward of SEQS x LEN tokens on a fresh backend holds, beyond
 * the weights: the plan's model bytes per token (its per-token bytes less
 * the engine's fp32 Y and partials of the widest Linear; the attention
 * backward's do·o is included), one lm_head chunk of bf16 logits and its
 * fp64 row losses, and a few flag words; the arena's 256-byte alignment
 * and per-sequence offsets are the only other bytes. */
static void test_plan_matches_a_step(void) {
  enum { SEQS = 256, LEN = 64, CHUNK = 16 };
  long tokens = (long)SEQS * LEN;
  qs_lm_config cfg = tiny_lm_config();
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, 5, 1.0);
  qs_error err = {0};
  qs_backend *gpu = qs_cuda_backend_new(0, &err);
  CHECK(gpu != NULL);
  if (!gpu) return;
  int32_t *cu = qs_malloc((SEQS + 1) * sizeof *cu), *ids = qs_malloc((size_t)tokens * sizeof *ids);
  for (int i = 0; i <= SEQS; i++) cu[i] = i * LEN;
  for (long i = 0; i < tokens; i++) ids[i] = (int32_t)(i * 7 % cfg.vocab);
  qs_qwen3_batch batch = {.n_seqs = SEQS, .cu_seqlens = cu, .ids = ids};
  qs_qwen3_options opts = {.keep_activations = false, .lm_chunk_tokens = CHUNK};
  qs_qwen3 *m = NULL;
  qs_qwen3_result res;
  bool ok = qs_qwen3_create(gpu, &lm, &opts, &m, &err);
  size_t weights = qs_cuda_backend_bytes_in_use(gpu);
  ok = ok && qs_qwen3_run(m, &batch, true, NULL, &res, &err);
  if (!ok) printf("model step failed: %s\n", err.msg);
  CHECK(ok);
  qs_memory_request r = {&cfg, 2, false, CHUNK, false, 0, 0};
  qs_memory_plan plan = qs_memory_plan_make(&r, tokens);
  long n_max = cfg.intermediate > cfg.heads * cfg.head_dim ? cfg.intermediate : cfg.heads * cfg.head_dim;
  size_t model_per_token = plan.per_token_bytes - 4 * (size_t)(n_max + 1);
  size_t chunk = (size_t)CHUNK * (size_t)cfg.vocab * 2 + (CHUNK + (size_t)(tokens / CHUNK)) * 8;
  size_t expected = model_per_token * (size_t)tokens + chunk;
  size_t held = qs_cuda_backend_bytes_in_use(gpu) - weights;
  /* 64 tensors x 256 bytes of alignment, 16 bytes a sequence, 1 KiB of
   * flags: below the 64 KiB of one missed fp32 value per token. */
  size_t slack = 64 * 256 + 16 * (SEQS + 1) + 1024;
  printf("  model step of %ld tokens: %zu bytes beyond the weights, planned %zu\n", tokens, held, expected);
  CHECK(held >= expected && held <= expected + slack);
  qs_qwen3_destroy(m);
  qs_backend_destroy(gpu);
  free(cu);
  free(ids);
  qs_lm_release(&lm);
}

int main(void) {
  gpu_require_device("test_cuda_memory");
  qs_error err = {0};
  qs_backend *gpu = qs_cuda_backend_new(0, &err);
  CHECK(gpu != NULL);
  if (gpu) {
    test_free_bytes(gpu);
    test_in_use_and_peak(gpu);
    test_out_of_memory(gpu);
    qs_backend_destroy(gpu);
  }
  /* A fresh backend: its pool holds nothing yet (a failed huge allocation
   * may leave the first one's pool larger than the reservation). */
  gpu = qs_cuda_backend_new(0, &err);
  CHECK(gpu != NULL);
  if (gpu) {
    test_reserve(gpu);
    qs_backend_destroy(gpu);
  }
  test_plan_matches_a_step();
  return check_summary("test_cuda_memory");
}
