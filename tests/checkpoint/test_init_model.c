/* qsens init-model: the written demo checkpoint loads, every element equals
 * the generator, sharding and seeds behave, presets match spec §1.4, and the
 * command line reports bad arguments with one line and status 2. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/commands.h"
#include "check.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "fixture.h"
#include "model/init_model.h"
#include "text/tokenizer.h"

static qs_lm_tensor *tensor_list(const qs_lm_config *c, size_t *n) {
  *n = qs_lm_tensor_list(c, QS_PREFIX_QWEN3_VL, !c->tied, NULL, 0);
  qs_lm_tensor *list = qs_malloc(*n * sizeof *list);
  qs_lm_tensor_list(c, QS_PREFIX_QWEN3_VL, !c->tied, list, *n);
  return list;
}

static uint64_t numel(const qs_lm_tensor *t) { return t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0]; }

static void write_demo(const char *dir, uint64_t seed, uint64_t shard_bytes) {
  qs_init_model_options opt = {.preset = "demo", .seed = seed, .max_shard_bytes = shard_bytes};
  qs_error err;
  CHECK(qs_init_model_write(dir, &opt, &err));
}

/* Every element of every tensor equals the generator's value. */
static void check_against_generator(const qs_lm *lm, uint64_t seed) {
  size_t n;
  qs_lm_tensor *list = tensor_list(&lm->cfg, &n);
  qs_lm copy = *lm;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    const qs_bf16 *data = *qs_lm_slot(&copy, &list[i]);
    for (uint64_t e = 0; e < numel(&list[i]); e++)
      bad += data[e] != qs_init_model_value(&lm->cfg, seed, &list[i], i, e);
  }
  CHECK_INT(bad, 0);
  free(list);
}

/* Sample mean and standard deviation of a tensor. */
static void moments(const qs_bf16 *data, uint64_t count, double *mean, double *std) {
  double s = 0, s2 = 0;
  for (uint64_t i = 0; i < count; i++) {
    double x = qs_bf16_to_f32(data[i]);
    s += x;
    s2 += x * x;
  }
  *mean = s / (double)count;
  *std = sqrt(s2 / (double)count - *mean * *mean);
}

static void test_demo_loads(void) {
  write_demo("im_demo", 7, 0);
  CHECK(qs_is_file("im_demo/model.safetensors"));
  CHECK(!qs_is_file("im_demo/model.safetensors.index.json"));
  qs_lm lm;
  qs_error err;
  qs_strbuf warnings = {0};
  CHECK_INT(fx_load("im_demo", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings), "");
  qs_lm_config want;
  CHECK(qs_init_model_preset("demo", &want));
  CHECK_INT(lm.cfg.hidden, 256);
  CHECK_INT(lm.cfg.intermediate, 768);
  CHECK_INT(lm.cfg.layers, 4);
  CHECK_INT(lm.cfg.heads, 8);
  CHECK_INT(lm.cfg.kv_heads, 2);
  CHECK_INT(lm.cfg.head_dim, 64);
  CHECK_INT(lm.cfg.vocab, want.vocab);
  CHECK(lm.cfg.rope_theta == 5e6);
  CHECK(lm.cfg.rms_eps == 1e-6);
  CHECK(lm.cfg.tied && lm.lm_head == lm.embed);
  check_against_generator(&lm, 7);
  /* Scales as documented in init_model.h. Over >= 16k samples of a uniform
   * variable the sample std is within ~1% of the true one (plus 0.4% bf16
   * rounding), so 3% separates a right scale from any wrong formula. */
  double mean, std;
  moments(lm.layer[2].q, 512 * 256, &mean, &std);
  CHECK_REL(std, 1 / sqrt(256.0), 0.03, 0);
  moments(lm.layer[3].o, 256 * 512, &mean, &std);
  CHECK_REL(std, 1 / sqrt(512.0 * 8), 0.03, 0);
  moments(lm.layer[0].down, 256 * 768, &mean, &std);
  CHECK_REL(std, 1 / sqrt(768.0 * 8), 0.03, 0);
  moments(lm.embed, (uint64_t)lm.cfg.vocab * 256, &mean, &std);
  CHECK_REL(std, 1 / sqrt(256.0), 0.03, 0);
  /* norms: 4 layers x 2 x 256 samples are too few for 3%; the mean of 1 + 0.3x
   * over 256 samples is within 0.3 * 3 / sqrt(256) ~ 0.06 of 1 */
  moments(lm.layer[1].input_norm, 256, &mean, &std);
  CHECK_REL(mean, 1.0, 0.06, 0);
  CHECK_REL(std, 0.3, 0.15, 0);
  qs_lm_release(&lm);
  qs_sb_free(&warnings);
}

static void test_sharded_same_values(void) {
  write_demo("im_sharded", 7, 1000000);
  CHECK(qs_is_file("im_sharded/model.safetensors.index.json"));
  CHECK(!qs_is_file("im_sharded/model.safetensors"));
  /* 1 MB shards: embed_tokens (1 MiB) alone, then ~2.5 shards per 1.84 MB layer */
  CHECK(qs_is_file("im_sharded/model-00001-of-00011.safetensors"));
  CHECK(qs_is_file("im_sharded/model-00011-of-00011.safetensors"));
  qs_lm lm;
  qs_error err;
  qs_strbuf warnings = {0};
  CHECK_INT(fx_load("im_sharded", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings), "");
  check_against_generator(&lm, 7);
  qs_lm_release(&lm);
  /* rewriting the folder unsharded replaces the index: the single file is what loads */
  write_demo("im_sharded", 8, 0);
  CHECK(!qs_is_file("im_sharded/model.safetensors.index.json"));
  CHECK(!qs_is_file("im_sharded/model-00001-of-00011.safetensors"));
  CHECK_INT(fx_load("im_sharded", &lm, &err, &warnings), 0);
  check_against_generator(&lm, 8);
  qs_lm_release(&lm);
  qs_sb_free(&warnings);
}

static void test_seed_determinism(void) {
  write_demo("im_seed_a", 3, 0);
  write_demo("im_seed_b", 3, 0);
  write_demo("im_seed_c", 4, 0);
  char *a, *b, *c;
  size_t la, lb, lc;
  qs_error err;
  CHECK(qs_read_file("im_seed_a/model.safetensors", &a, &la, &err));
  CHECK(qs_read_file("im_seed_b/model.safetensors", &b, &lb, &err));
  CHECK(qs_read_file("im_seed_c/model.safetensors", &c, &lc, &err));
  CHECK(la == lb && memcmp(a, b, la) == 0);
  CHECK(la == lc && memcmp(a, c, la) != 0);
  free(a);
  free(b);
  free(c);
}

/* LM parameter counts of spec §1.4 (embedding once when tied), to 3 digits. */
static void test_presets(void) {
  const struct {
    const char *name;
    double params;
    bool tied;
    int q_width;
  } rows[] = {{"qwen3_vl_2b", 1.72e9, true, 2048},
              {"qwen3_vl_4b", 4.02e9, true, 4096},
              {"qwen3_vl_8b", 8.19e9, false, 4096},
              {"qwen3_vl_32b", 32.76e9, false, 8192}};
  for (size_t r = 0; r < 4; r++) {
    qs_lm_config c;
    CHECK(qs_init_model_preset(rows[r].name, &c));
    size_t n;
    qs_lm_tensor *list = tensor_list(&c, &n);
    double total = 0;
    for (size_t i = 0; i < n; i++) total += (double)numel(&list[i]);
    free(list);
    CHECK_REL(total, rows[r].params, 0.005, 0); /* the spec rounds to 3 significant digits */
    CHECK_INT(c.tied, rows[r].tied);
    CHECK_INT(c.heads * c.head_dim, rows[r].q_width);
    CHECK_INT(c.vocab, 151936);
  }
  qs_lm_config c;
  CHECK(!qs_init_model_preset("qwen3_vl_3b", &c));
}

/* Runs the command with stderr captured; returns its status. */
static int run_cli(char *const *args, int argc, char *err_text, size_t size) {
  fflush(stderr);
  int saved = dup(2);
  int fd = open("im_cli_stderr.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  dup2(fd, 2);
  close(fd);
  int status = qs_cmd_init_model(argc, (char **)args);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  FILE *f = fopen("im_cli_stderr.txt", "r");
  size_t n = f ? fread(err_text, 1, size - 1, f) : 0;
  err_text[n] = '\0';
  if (f) fclose(f);
  return status;
}

/* A few hundred distinct captions, enough for a few hundred BPE merges. */
static void write_captions(const char *path) {
  static const char *const who[] = {"A man", "Two dogs", "A small child", "The woman", "Three birds", "A cat"};
  static const char *const act[] = {"is sitting", "are running", "stands", "is playing", "waits", "looks around"};
  static const char *const where[] = {"on a bench.", "in the park.", "near the water.", "by a red car.",
                                      "under a tree.", "at the station.", "on the beach."};
  FILE *f = fopen(path, "w");
  for (size_t a = 0; a < 6; a++)
    for (size_t b = 0; b < 6; b++)
      for (size_t c = 0; c < 7; c++) fprintf(f, "%s %s %s\n", who[a], act[b], where[c]);
  fclose(f);
}

static void test_cli(void) {
  char msg[1024];
  write_captions("im_captions.txt");
  const struct {
    char *args[8];
    int status;
    const char *message;
  } rows[] = {
      {{"init-model"}, 2, "qsens init-model: missing DIR (see qsens init-model --help)\n"},
      {{"init-model", "d"}, 2,
       "qsens init-model: missing --preset (one of demo, qwen3_vl_2b, qwen3_vl_4b, qwen3_vl_8b, qwen3_vl_32b) (see "
       "qsens init-model --help)\n"},
      {{"init-model", "d", "--preset", "tiny"}, 2,
       "qsens init-model: unknown preset 'tiny' (choose from demo, qwen3_vl_2b, qwen3_vl_4b, qwen3_vl_8b, "
       "qwen3_vl_32b) (see qsens init-model --help)\n"},
      {{"init-model", "d", "--preset"}, 2,
       "qsens init-model: option '--preset' needs a value (see qsens init-model --help)\n"},
      {{"init-model", "d", "--preset=demo", "--seed", "-3"}, 2,
       "qsens init-model: --seed must be a non-negative integer, not '-3' (see qsens init-model --help)\n"},
      {{"init-model", "d", "--preset=demo", "--dtype", "f32"}, 2,
       "qsens init-model: --dtype 'f32' is not supported (only bf16) (see qsens init-model --help)\n"},
      {{"init-model", "d", "--preset=demo", "--max-shard-size=5XB"}, 2,
       "qsens init-model: --max-shard-size must be a positive byte count (e.g. 2GB), not '5XB' (see qsens init-model "
       "--help)\n"},
      {{"init-model", "d", "e", "--preset=demo"}, 2,
       "qsens init-model: unexpected argument 'e': only one DIR (see qsens init-model --help)\n"},
      {{"init-model", "d", "--presets=demo"}, 2,
       "qsens init-model: unknown option '--presets=demo' (see qsens init-model --help)\n"},
      {{"init-model", "im_cli", "--preset=demo", "--tokenizer", "im_no_such.json"}, 1,
       "qsens init-model: cannot open 'im_no_such.json': No such file or directory\n"},
      {{"init-model", "--help"}, 0, ""},
      {{"init-model", "d", "--preset=qwen3_vl_2b", "--captions", "c.txt"}, 2,
       "qsens init-model: --captions applies to the demo preset only (see qsens init-model --help)\n"},
      {{"init-model", "d", "--preset=demo", "--captions=c.txt", "--tokenizer=t.json"}, 2,
       "qsens init-model: give --tokenizer or --captions, not both (see qsens init-model --help)\n"},
      {{"init-model", "im_cli", "--preset=demo", "--captions=im_no_such.txt"}, 1,
       "qsens init-model: cannot open 'im_no_such.txt': No such file or directory\n"},
      {{"init-model", "im_cli", "--preset", "demo", "--seed=5", "--max-shard-size=2MB", "--captions=im_captions.txt"},
       0, ""},
  };
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
    int argc = 0;
    while (argc < 8 && rows[r].args[argc]) argc++;
    CHECK_INT(run_cli(rows[r].args, argc, msg, sizeof msg), rows[r].status);
    CHECK_STR(msg, rows[r].message);
  }
  /* 2 MB shards of an 8.4 MB model */
  CHECK(qs_is_file("im_cli/model-00005-of-00005.safetensors"));
  qs_lm lm;
  qs_error err;
  qs_strbuf warnings = {0};
  CHECK_INT(fx_load("im_cli", &lm, &err, &warnings), 0);
  check_against_generator(&lm, 5);
  /* the vocabulary is the trained tokenizer's */
  qs_tokenizer *tok;
  CHECK(qs_tokenizer_load("im_cli/tokenizer.json", &tok, &err));
  CHECK_INT(lm.cfg.vocab, qs_tokenizer_vocab_size(tok));
  CHECK(lm.cfg.vocab > 300 && lm.cfg.vocab < QS_INIT_MODEL_DEMO_TOKENS);
  qs_token_ids ids = {0};
  CHECK(qs_tokenizer_encode(tok, "A cat waits", 11, &ids, &err));
  CHECK(ids.len > 0 && ids.len < 11);
  qs_token_ids_free(&ids);
  qs_tokenizer_free(tok);
  qs_lm_release(&lm);
  qs_sb_free(&warnings);
}

static void test_tokenizer_copy(void) {
  qs_error err;
  const char tok[] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}";
  CHECK(qs_write_file_atomic("im_tok_src.json", tok, sizeof tok - 1, &err));
  qs_init_model_options opt = {.preset = "demo", .tokenizer = "im_tok_src.json"};
  CHECK(qs_init_model_write("im_tok", &opt, &err));
  char *copy;
  size_t len;
  CHECK(qs_read_file("im_tok/tokenizer.json", &copy, &len, &err));
  CHECK_STR(copy, tok);
  free(copy);
  CHECK(qs_write_file_atomic("im_tok_src.json", "[1]", 3, &err));
  CHECK(!qs_init_model_write("im_tok", &opt, &err));
  CHECK_STR(err.msg, "im_tok_src.json: not a tokenizer.json (a JSON object with a 'model' section)");
  CHECK(!qs_is_file("im_tok/config.json")); /* no loadable half-written checkpoint */
}

int main(void) {
  test_demo_loads();
  test_sharded_same_values();
  test_seed_determinism();
  test_presets();
  test_cli();
  test_tokenizer_copy();
  return check_summary("test_init_model");
}
