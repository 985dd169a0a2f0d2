/* Parity with Hugging Face transformers: tiny random Qwen3-VL checkpoints
 * (saved by transformers, BF16) and the loss, logits and every Linear's
 * grad_output that transformers computed in float32 on the same weights
 * (scripts/fixtures/make_hf_fixtures.py; tests/fixtures/hf_tiny/), for a
 * packed batch and for a left-padded one (attention mask, HF positions, the
 * pad-context target).
 *
 * Tolerance 1e-4 in ‖a−b‖/‖b‖ per tensor: both sides run fp32 math on
 * identical bf16 weights (the bf16 -> fp32 upcast is exact), so they differ
 * only by summation order (GEMM blocking, softmax, SDPA), ~1e-6 per op and
 * ~1e-5 after a few layers and the backward; a formula mistake (w vs 1+w,
 * RoPE pairing, QK-norm order, GQA mapping, label shift) gives 1e-2 or more.
 * The loss is compared to 1e-5 relative for the same reason.
 *
 * Usage: test_qwen3_hf FIXTURE_ROOT (holds one folder per model). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "model/checkpoint.h"
#include "model/qwen3.h"
#include "model/safetensors.h"

static const char *const models[] = {"gqa2_untied", "gqa4_tied", "mha_untied"};

typedef struct parity {
  const qs_st_file *ref;
  qs_backend *be;
  long tokens;
  float *logits; /* [T, V] assembled from the head's chunks */
  int grads_seen;
} parity;

static double rel_diff(const float *a, const float *b, long n) {
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static const float *ref_f32(const qs_st_file *f, const char *name, uint64_t numel) {
  const qs_st_tensor *t = qs_st_find(f, name);
  if (!t || t->dtype != QS_ST_F32 || t->numel != numel) {
    fprintf(stderr, "reference tensor %s missing or of the wrong size\n", name);
    return NULL;
  }
  return qs_st_data(f, t);
}

static void check_tensor_close(const char *name, const float *got, const float *want, long n, double tol) {
  double d = rel_diff(got, want, n);
  check_count_++;
  if (!(d <= tol)) {
    check_failures_++;
    fprintf(stderr, "%s: relative difference %.3g > %.3g\n", name, d, tol);
  }
}

static bool on_forward(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y, qs_error *err) {
  (void)x;
  parity *p = ctx;
  if (site->kind != QS_LIN_LM_HEAD) return true;
  return qs_tensor_download(p->be, p->logits + site->row_begin * y->cols, y, err);
}

/* The head is compared per chunk as it arrives; other Linears whole. */
static bool on_backward(void *ctx, const qs_linear_site *site, const qs_tensor *x, const qs_tensor *g,
                        qs_error *err) {
  (void)x;
  parity *p = ctx;
  char path[96], name[128];
  qs_qwen3_linear_path(site->layer, site->kind, path, sizeof path);
  snprintf(name, sizeof name, "grad.%s", path);
  const float *want = ref_f32(p->ref, name, (uint64_t)(p->tokens * g->cols));
  CHECK(want != NULL);
  if (!want) return true;
  float *got = qs_malloc((size_t)qs_tensor_numel(g) * sizeof(float));
  if (!qs_tensor_download(p->be, got, g, err)) {
    free(got);
    return false;
  }
  check_tensor_close(name, got, want + site->row_begin * g->cols, qs_tensor_numel(g), 1e-4);
  free(got);
  p->grads_seen++;
  return true;
}

static const int32_t *ref_i32(const qs_st_file *f, const char *name, uint64_t *numel) {
  const qs_st_tensor *t = qs_st_find(f, name);
  if (!t || t->dtype != QS_ST_I32) return NULL;
  *numel = t->numel;
  return qs_st_data(f, t);
}

/* The padded layout of a reference: the mask as the model takes it (NULL
 * when the reference is packed). */
static uint8_t *mask_of(const qs_st_file *ref, uint64_t tokens) {
  uint64_t n = 0;
  const int32_t *mask = ref_i32(ref, "attention_mask", &n);
  if (!mask) return NULL;
  CHECK_INT((long)n, (long)tokens);
  uint8_t *out = qs_malloc(tokens ? tokens : 1);
  for (uint64_t i = 0; i < tokens && i < n; i++) out[i] = (uint8_t)mask[i];
  return out;
}

/* Runs the batch of one reference file through the model and compares the
 * loss, N, the logits and every G with what transformers recorded. */
static void check_reference(qs_backend *be, const qs_lm *lm, const char *dir, const char *file, const char *model) {
  char *ref_path = qs_path_join(dir, file);
  qs_st_file ref;
  qs_error err;
  bool opened = qs_st_open(ref_path, &ref, &err);
  if (!opened) fprintf(stderr, "%s\n", err.msg);
  CHECK(opened);
  free(ref_path);
  if (!opened) return;
  uint64_t t = 0, n_cu = 1, n_labels = 0, n_pos = 0;
  const int32_t *ids = ref_i32(&ref, "ids", &t), *cu = ref_i32(&ref, "cu_seqlens", &n_cu);
  const int32_t *labels = ref_i32(&ref, "labels", &n_labels), *positions = ref_i32(&ref, "positions", &n_pos);
  CHECK(ids && cu && labels && n_labels == t && (!positions || n_pos == t));
  uint8_t *mask = mask_of(&ref, t);
  qs_qwen3_batch batch = {0, (int)n_cu - 1, cu, ids, labels, positions, mask, 0, NULL};
  parity p = {&ref, be, (long)t, qs_malloc(t * (size_t)lm->cfg.vocab * sizeof(float)), 0};
  qs_qwen3_options opt = {false, 5}; /* chunked head: several chunks of 5 tokens */
  qs_qwen3 *m = NULL;
  CHECK(qs_qwen3_create(be, lm, &opt, &m, &err));
  qs_qwen3_visitor v = {on_forward, on_backward, true, &p};
  qs_qwen3_result res;
  bool ran = m && qs_qwen3_run(m, &batch, true, &v, &res, &err);
  if (!ran) fprintf(stderr, "%s %s: %s\n", model, file, err.msg);
  CHECK(ran);
  const float *loss = ref_f32(&ref, "loss", 1), *n_valid = ref_f32(&ref, "n_valid", 1);
  const float *logits = ref_f32(&ref, "logits", t * (uint64_t)lm->cfg.vocab);
  if (ran && loss && n_valid && logits) {
    CHECK_REL(res.loss, loss[0], 1e-5, 0);
    CHECK_INT(res.n_valid, (long)n_valid[0]);
    check_tensor_close("logits", p.logits, logits, (long)t * lm->cfg.vocab, 1e-4);
    CHECK_INT(p.grads_seen, 7 * lm->cfg.layers + (int)((t + 4) / 5)); /* the head per chunk */
  }
  printf("%s %s: loss %.6f (HF %.6f), N %ld\n", model, file, res.loss, loss ? loss[0] : NAN, res.n_valid);
  qs_qwen3_destroy(m);
  free(p.logits);
  free(mask);
  qs_st_close(&ref);
}

/* Each model against its packed (right-padded in HF) reference and its
 * left-padded one: pads as keys and fully masked pad queries, whose
 * attention output is 0 in HF's default (sdpa) attention as in qsens, so
 * every slot is compared, pads included. */
static void check_model(qs_backend *be, const char *root, const char *model) {
  char *dir = qs_path_join(root, model);
  qs_lm lm;
  qs_error err;
  bool loaded = qs_checkpoint_load(dir, &lm, NULL, NULL, &err);
  if (!loaded) fprintf(stderr, "%s\n", err.msg);
  CHECK(loaded);
  if (loaded) {
    CHECK_INT(lm.cfg.tied, strstr(model, "tied") != NULL && strstr(model, "untied") == NULL);
    check_reference(be, &lm, dir, "reference.safetensors", model);
    check_reference(be, &lm, dir, "reference_left_padded.safetensors", model);
    qs_lm_release(&lm);
  }
  free(dir);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_qwen3_hf FIXTURE_ROOT\n");
    return 2;
  }
  qs_backend *be = qs_cpu_backend_new();
  for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) check_model(be, argv[1], models[i]);
  qs_backend_destroy(be);
  return check_summary("test_qwen3_hf");
}
