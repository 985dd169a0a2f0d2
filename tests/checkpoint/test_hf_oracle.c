/* Hugging Face transformers as the oracle (tests/checkpoint/hf_oracle.py):
 *  - checkpoints saved by transformers (layout B, tie variants, shards, F32)
 *    load here with exactly the tensors transformers holds, lm_head included;
 *  - checkpoints written by init-model load in transformers with every
 *    language-model weight present and equal to the file (checked in Python).
 * Skipped (77) when torch/transformers are not installed. */
#define _POSIX_C_SOURCE 200809L
#include <sys/wait.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "fixture.h"
#include "model/init_model.h"

#define ROOT "hf_oracle"

/* The tensors transformers holds equal ours element by element (bf16 values: exact). */
static void compare(const char *dir, const qs_lm *lm, json_t *expected) {
  size_t n = qs_lm_tensor_list(&lm->cfg, QS_PREFIX_QWEN3_VL, true, NULL, 0);
  qs_lm_tensor *list = qs_malloc(n * sizeof *list);
  qs_lm_tensor_list(&lm->cfg, QS_PREFIX_QWEN3_VL, true, list, n);
  json_t *tensors = json_object_get(expected, "tensors");
  CHECK_INT(json_object_size(tensors), n);
  qs_lm copy = *lm;
  for (size_t i = 0; i < n; i++) {
    json_t *values = json_object_get(tensors, list[i].name);
    const qs_bf16 *data = *qs_lm_slot(&copy, &list[i]);
    size_t count = (size_t)(list[i].ndim == 2 ? list[i].shape[0] * list[i].shape[1] : list[i].shape[0]);
    CHECK_INT(json_array_size(values), count);
    int bad = 0;
    for (size_t e = 0; e < count && e < json_array_size(values); e++)
      bad += qs_bf16_to_f32(data[e]) != (float)json_number_value(json_array_get(values, e));
    if (bad) fprintf(stderr, "%s: %s: %d elements differ\n", dir, list[i].name, bad);
    CHECK_INT(bad, 0);
  }
  CHECK_INT(lm->cfg.tied, json_is_true(json_object_get(expected, "tied")));
  free(list);
}

static void check_hf_checkpoint(const char *name, const char *warnings_expected) {
  char dir[256], path[300];
  snprintf(dir, sizeof dir, ROOT "/hf_%s", name);
  snprintf(path, sizeof path, "%s/expected.json", dir);
  json_t *expected = json_load_file(path, 0, NULL);
  CHECK(expected != NULL);
  qs_lm lm;
  qs_error err;
  qs_strbuf warnings = {0};
  int status = fx_load(dir, &lm, &err, &warnings);
  CHECK_INT(status, 0);
  if (status) fprintf(stderr, "%s\n", err.msg);
  if (!status && expected) {
    CHECK(lm.cfg.hidden == 16 && lm.cfg.layers == 2 && lm.cfg.heads == 4 && lm.cfg.kv_heads == 2);
    CHECK(lm.cfg.head_dim == 8 && lm.cfg.vocab == 40 && lm.cfg.rope_theta == 1e6);
    CHECK_STR(qs_sb_str(&warnings), warnings_expected);
    compare(dir, &lm, expected);
    qs_lm_release(&lm);
  }
  json_decref(expected);
  qs_sb_free(&warnings);
}

int main(void) {
  qs_error err;
  fx_clear_dir(ROOT "/ours_single");
  fx_clear_dir(ROOT "/ours_sharded");
  qs_init_model_options single = {.preset = "demo", .seed = 11};
  qs_init_model_options sharded = {.preset = "demo", .seed = 12, .max_shard_bytes = 1000000};
  CHECK(qs_init_model_write(ROOT "/ours_single", &single, &err));
  CHECK(qs_init_model_write(ROOT "/ours_sharded", &sharded, &err));
  int rc = system("python3 " QSENS_SOURCE_DIR "/tests/checkpoint/hf_oracle.py " ROOT " > " ROOT "/oracle.log 2>&1");
  int status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  char *log;
  size_t len;
  if (status == 77) {
    puts("skipped: torch/transformers not installed (see " ROOT "/oracle.log)");
    return 77;
  }
  if (status != 0 && qs_read_file(ROOT "/oracle.log", &log, &len, &err)) {
    fprintf(stderr, "%s\n", log);
    free(log);
  }
  CHECK_INT(status, 0);
  check_hf_checkpoint("tied_sharded", "");
  check_hf_checkpoint("untied", "");
  check_hf_checkpoint("top_true_text_false",
                      ROOT "/hf_top_true_text_false/config.json: tie_word_embeddings is true at the top level but "
                           "false in text_config; the top level decides\n");
  check_hf_checkpoint("top_false_text_true",
                      ROOT "/hf_top_false_text_true/config.json: tie_word_embeddings is false at the top level but "
                           "true in text_config; the top level decides\n");
  check_hf_checkpoint("untied_f32",
                      ROOT "/hf_untied_f32/model.safetensors: 25 tensors stored as F32/F16 were converted to bf16 "
                           "(round to nearest even)\n");
  return check_summary("test_hf_oracle");
}
