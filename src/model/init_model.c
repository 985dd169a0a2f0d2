#define _POSIX_C_SOURCE 200809L
#include "model/init_model.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "model/safetensors.h"
#include "text/bpe_train.h"
#include "text/captions.h"

typedef struct preset {
  const char *name;
  qs_lm_config cfg;
  int mrope_section[3]; /* sums to head_dim / 2, as transformers expects */
} preset;

#define QWEN3_VL(D, I, L, H, tied_)                                                                  \
  {.hidden = (D), .intermediate = (I), .layers = (L), .heads = (H), .kv_heads = 8, .head_dim = 128, \
   .vocab = 151936, .rms_eps = 1e-6, .rope_theta = 5e6, .tied = (tied_), .max_positions = 262144}

static const preset presets[] = {
    /* Vocabulary: replaced by the trained tokenizer's size when captions are given. */
    {"demo",
     {.hidden = 256, .intermediate = 768, .layers = 4, .heads = 8, .kv_heads = 2, .head_dim = 64, .vocab = 2048,
      .rms_eps = 1e-6, .rope_theta = 5e6, .tied = true, .max_positions = 262144},
     {12, 10, 10}},
    {"qwen3_vl_2b", QWEN3_VL(2048, 6144, 28, 16, true), {24, 20, 20}},
    {"qwen3_vl_4b", QWEN3_VL(2560, 9728, 36, 32, true), {24, 20, 20}},
    {"qwen3_vl_8b", QWEN3_VL(4096, 12288, 36, 32, false), {24, 20, 20}},
    {"qwen3_vl_32b", QWEN3_VL(5120, 25600, 64, 64, false), {24, 20, 20}},
};
#define PRESET_COUNT (sizeof presets / sizeof presets[0])

static const preset *find_preset(const char *name) {
  for (size_t i = 0; i < PRESET_COUNT; i++)
    if (strcmp(presets[i].name, name) == 0) return &presets[i];
  return NULL;
}

bool qs_init_model_preset(const char *name, qs_lm_config *cfg) {
  const preset *p = find_preset(name);
  if (p) *cfg = p->cfg;
  return p != NULL;
}

const char *qs_init_model_preset_names(void) {
  return "demo, qwen3_vl_2b, qwen3_vl_4b, qwen3_vl_8b, qwen3_vl_32b";
}

/* ---- deterministic values ------------------------------------------------- */

/* splitmix64's finalizer: a bijective mix, good enough as a counter hash. */
static uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t tensor_stream(uint64_t seed, size_t tensor_index) {
  return mix64(mix64(seed) ^ mix64((uint64_t)tensor_index));
}

typedef struct value_scale {
  double mean, std;
} value_scale;

static value_scale scale_of(const qs_lm_config *c, const qs_lm_tensor *t) {
  double depth = 2.0 * c->layers;
  switch (t->role) {
    case QS_ROLE_O: return (value_scale){0, 1 / sqrt((double)c->heads * c->head_dim * depth)};
    case QS_ROLE_DOWN: return (value_scale){0, 1 / sqrt((double)c->intermediate * depth)};
    case QS_ROLE_Q_NORM: case QS_ROLE_K_NORM: case QS_ROLE_INPUT_NORM: case QS_ROLE_POST_NORM:
    case QS_ROLE_FINAL_NORM:
      return (value_scale){1, 0.3};
    default: return (value_scale){0, 1 / sqrt((double)c->hidden)}; /* embed, lm_head, q/k/v/gate/up */
  }
}

static qs_bf16 value_at(uint64_t stream, value_scale s, uint64_t element) {
  uint64_t h = mix64(stream ^ element);
  double u = ((double)(h >> 40) + 0.5) * (1.0 / 16777216.0); /* 24 bits, in (0, 1) */
  double x = (2 * u - 1) * 1.7320508075688772;             /* unit variance */
  return qs_f32_to_bf16((float)(s.mean + s.std * x));
}

qs_bf16 qs_init_model_value(const qs_lm_config *cfg, uint64_t seed, const qs_lm_tensor *t, size_t tensor_index,
                            uint64_t element) {
  return value_at(tensor_stream(seed, tensor_index), scale_of(cfg, t), element);
}

/* ---- writing ---------------------------------------------------------------- */

static uint64_t tensor_bytes(const qs_lm_tensor *t) {
  return (t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0]) * sizeof(qs_bf16);
}

/* Streams one tensor's values in chunks generated in parallel. */
static bool write_tensor(qs_st_writer *w, const qs_lm_config *cfg, uint64_t seed, const qs_lm_tensor *t,
                         size_t index, qs_bf16 *chunk, size_t chunk_len, qs_error *err) {
  uint64_t numel = tensor_bytes(t) / sizeof(qs_bf16);
  uint64_t stream = tensor_stream(seed, index);
  value_scale s = scale_of(cfg, t);
  for (uint64_t start = 0; start < numel; start += chunk_len) {
    long n = (long)(numel - start < chunk_len ? numel - start : chunk_len);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) chunk[i] = value_at(stream, s, start + (uint64_t)i);
    if (!qs_st_writer_write(w, chunk, (size_t)n * sizeof *chunk, err)) return false;
  }
  return true;
}

/* Writes tensors [first, last) of the list as one safetensors file. */
static bool write_shard(const char *path, const qs_lm_config *cfg, uint64_t seed, const qs_lm_tensor *list,
                        size_t first, size_t last, qs_error *err) {
  qs_st_spec *specs = qs_calloc(last - first, sizeof *specs);
  for (size_t i = first; i < last; i++) {
    specs[i - first] = (qs_st_spec){.name = list[i].name, .dtype = QS_ST_BF16, .ndim = list[i].ndim};
    memcpy(specs[i - first].shape, list[i].shape, sizeof list[i].shape);
  }
  qs_st_writer *w;
  bool ok = qs_st_writer_open(path, specs, last - first, &w, err);
  free(specs);
  if (!ok) return false;
  const size_t chunk_len = (size_t)1 << 20;
  qs_bf16 *chunk = qs_malloc(chunk_len * sizeof *chunk);
  for (size_t i = first; ok && i < last; i++) ok = write_tensor(w, cfg, seed, &list[i], i, chunk, chunk_len, err);
  free(chunk);
  if (!ok) {
    qs_st_writer_abort(w);
    return false;
  }
  return qs_st_writer_finish(w, err);
}

/* Greedy split in list order: a shard ends before the tensor that would push
 * it past max_bytes (a single larger tensor gets a shard of its own). Fills
 * starts[0..n] (starts[n] = count) and returns the shard count n. */
static size_t plan_shards(const qs_lm_tensor *list, size_t count, uint64_t max_bytes, size_t *starts) {
  size_t n = 0;
  uint64_t size = 0;
  for (size_t i = 0; i < count; i++) {
    uint64_t b = tensor_bytes(&list[i]);
    if (i == 0 || (size > 0 && size + b > max_bytes)) {
      starts[n++] = i;
      size = 0;
    }
    size += b;
  }
  starts[n] = count;
  return n;
}

static bool write_json(const char *path, json_t *root, qs_error *err) {
  char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15)) : NULL;
  json_decref(root);
  if (!text) return qs_fail(err, QS_EXIT_RUNTIME, "%s: cannot format the JSON", path);
  size_t len = strlen(text);
  text = qs_realloc(text, len + 2);
  text[len++] = '\n';
  bool ok = qs_write_file_atomic(path, text, len, err);
  free(text);
  return ok;
}

static bool write_index(const char *dir, const qs_lm_tensor *list, const size_t *starts, size_t shards,
                        qs_error *err) {
  json_t *map = json_object();
  uint64_t total = 0;
  for (size_t s = 0; s < shards; s++) {
    char file[64];
    snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, shards);
    for (size_t i = starts[s]; i < starts[s + 1]; i++) {
      json_object_set_new(map, list[i].name, json_string(file));
      total += tensor_bytes(&list[i]);
    }
  }
  json_t *root = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
  char *path = qs_path_join(dir, "model.safetensors.index.json");
  bool ok = write_json(path, root, err);
  free(path);
  return ok;
}

/* Special-token ids: Qwen's for the full-size presets; for the demo, the
 * trained tokenizer's added tokens, which follow its learned vocabulary
 * (<|endoftext|> = V-3, <|im_end|> = V-1), so they stay inside the vocabulary. */
static void special_ids(const preset *p, const qs_lm_config *c, int *bos, int *eos) {
  bool demo = strcmp(p->name, "demo") == 0;
  *bos = demo ? c->vocab - QS_BPE_N_ADDED_TOKENS : 151643;
  *eos = demo ? c->vocab - 1 : 151645;
}

static json_t *text_config_json(const preset *p, const qs_lm_config *c) {
  int bos, eos;
  special_ids(p, c, &bos, &eos);
  json_t *rope = json_pack("{s:b,s:[i,i,i],s:s}", "mrope_interleaved", 1, "mrope_section", p->mrope_section[0],
                           p->mrope_section[1], p->mrope_section[2], "rope_type", "default");
  return json_pack(
      "{s:b,s:f,s:i,s:s,s:i,s:i,s:s,s:i,s:f,s:i,s:I,s:s,s:i,s:i,s:i,s:f,s:o,s:I,s:b,s:b,s:i}", "attention_bias", 0,
      "attention_dropout", 0.0, "bos_token_id", bos, "dtype", "bfloat16", "eos_token_id", eos, "head_dim",
      c->head_dim, "hidden_act", "silu", "hidden_size", c->hidden, "initializer_range", 0.02, "intermediate_size",
      c->intermediate, "max_position_embeddings", (json_int_t)c->max_positions, "model_type", "qwen3_vl_text",
      "num_attention_heads", c->heads, "num_hidden_layers", c->layers, "num_key_value_heads", c->kv_heads,
      "rms_norm_eps", c->rms_eps, "rope_scaling", rope, "rope_theta", (json_int_t)c->rope_theta,
      "tie_word_embeddings", c->tied, "use_cache", 1, "vocab_size", c->vocab);
}

/* A one-block vision tower: the LM never runs it, but transformers needs the section. */
static json_t *vision_config_json(const qs_lm_config *c) {
  return json_pack("{s:[i],s:i,s:s,s:i,s:i,s:f,s:i,s:s,s:i,s:i,s:i,s:i,s:i,s:i}", "deepstack_visual_indexes", 0,
                   "depth", 1, "hidden_act", "gelu_pytorch_tanh", "hidden_size", 32, "in_channels", 3,
                   "initializer_range", 0.02, "intermediate_size", 64, "model_type", "qwen3_vl", "num_heads", 2,
                   "num_position_embeddings", 2304, "out_hidden_size", c->hidden, "patch_size", 16,
                   "spatial_merge_size", 2, "temporal_patch_size", 2);
}

static bool write_config(const char *dir, const preset *p, const qs_lm_config *c, qs_error *err) {
  json_t *root = json_pack(
      "{s:[s],s:s,s:i,s:s,s:o,s:b,s:s,s:i,s:o,s:i,s:i}", "architectures", "Qwen3VLForConditionalGeneration", "dtype",
      "bfloat16", "image_token_id", 151655, "model_type", "qwen3_vl", "text_config", text_config_json(p, c),
      "tie_word_embeddings", c->tied, "transformers_version", "4.57.0", "video_token_id", 151656, "vision_config",
      vision_config_json(c), "vision_end_token_id", 151653, "vision_start_token_id", 151652);
  char *path = qs_path_join(dir, "config.json");
  bool ok = write_json(path, root, err);
  free(path);
  return ok;
}

static bool copy_tokenizer(const char *dir, const char *source, qs_error *err) {
  char *data;
  size_t len;
  if (!qs_read_file(source, &data, &len, err)) return false;
  json_error_t jerr;
  json_t *root = json_loadb(data, len, 0, &jerr);
  bool ok = json_is_object(root) && json_is_object(json_object_get(root, "model"));
  json_decref(root);
  if (!ok) {
    free(data);
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: not a tokenizer.json (a JSON object with a 'model' section)", source);
  }
  char *path = qs_path_join(dir, "tokenizer.json");
  ok = qs_write_file_atomic(path, data, len, err);
  free(path);
  free(data);
  return ok;
}

/* Trains the demo tokenizer on the captions and writes dir/tokenizer.json;
 * *vocab becomes its size (learned tokens + added tokens). */
static bool train_tokenizer(const char *dir, const char *captions, int *vocab, qs_error *err) {
  qs_caption_source src = {.path = captions, .format = QS_CAPTIONS_TXT};
  qs_sample_list samples;
  if (!qs_captions_load(&src, &samples, err)) return false;
  const char **texts = qs_malloc((samples.count + 1) * sizeof *texts);
  for (size_t i = 0; i < samples.count; i++) texts[i] = samples.items[i].text;
  qs_bpe_options bo = {.vocab_size = QS_INIT_MODEL_DEMO_TOKENS, .min_pair_count = 2};
  qs_bpe_vocab v;
  bool ok = qs_bpe_train(texts, NULL, samples.count, &bo, &v, err);
  free(texts);
  qs_sample_list_free(&samples);
  if (!ok) return qs_fail_context(err, "training the demo tokenizer on %s: ", captions);
  char *path = qs_path_join(dir, "tokenizer.json");
  ok = qs_bpe_write_tokenizer_json(&v, path, err);
  free(path);
  *vocab = (int)v.n_tokens + QS_BPE_N_ADDED_TOKENS;
  qs_bpe_vocab_free(&v);
  return ok;
}

/* Shard names as transformers writes them: model-00001-of-00004.safetensors. */
static bool is_shard_name(const char *name) {
  size_t n = strlen(name);
  return strncmp(name, "model-", 6) == 0 && strstr(name, "-of-") && n > 12 &&
         strcmp(name + n - 12, ".safetensors") == 0;
}

/* A previous checkpoint in dir must not mix with the new one: config.json goes
 * first (nothing is loadable until the new one is written), then the weights. */
static void remove_previous(const char *dir) {
  static const char *const names[] = {"config.json", "model.safetensors.index.json", "model.safetensors",
                                      "tokenizer.json"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char *path = qs_path_join(dir, names[i]);
    unlink(path);
    free(path);
  }
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (!is_shard_name(e->d_name)) continue;
    char *path = qs_path_join(dir, e->d_name);
    unlink(path);
    free(path);
  }
  closedir(d);
}

static bool write_weights(const char *dir, const qs_lm_config *cfg, uint64_t seed, uint64_t max_shard,
                          qs_error *err) {
  size_t count = qs_lm_tensor_list(cfg, QS_PREFIX_QWEN3_VL, !cfg->tied, NULL, 0);
  qs_lm_tensor *list = qs_malloc(count * sizeof *list);
  qs_lm_tensor_list(cfg, QS_PREFIX_QWEN3_VL, !cfg->tied, list, count);
  size_t *starts = qs_malloc((count + 1) * sizeof *starts);
  size_t shards = plan_shards(list, count, max_shard, starts);
  bool ok = true;
  for (size_t s = 0; ok && s < shards; s++) {
    char file[64];
    if (shards == 1)
      snprintf(file, sizeof file, "model.safetensors");
    else
      snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", s + 1, shards);
    char *path = qs_path_join(dir, file);
    ok = write_shard(path, cfg, seed, list, starts[s], starts[s + 1], err);
    free(path);
  }
  if (ok && shards > 1) ok = write_index(dir, list, starts, shards, err);
  free(starts);
  free(list);
  return ok;
}

bool qs_init_model_write(const char *dir, const qs_init_model_options *opt, qs_error *err) {
  const preset *p = find_preset(opt->preset);
  if (!p)
    return qs_fail(err, QS_EXIT_USAGE, "unknown preset '%s' (choose from %s)", opt->preset,
                   qs_init_model_preset_names());
  if (opt->captions && strcmp(p->name, "demo") != 0)
    return qs_fail(err, QS_EXIT_USAGE, "a tokenizer is trained from captions for the demo preset only, not '%s'",
                   p->name);
  if (opt->captions && opt->tokenizer)
    return qs_fail(err, QS_EXIT_USAGE, "give either a tokenizer to copy or captions to train one, not both");
  qs_lm_config cfg = p->cfg;
  if (opt->vocab > 0) cfg.vocab = opt->vocab;
  if (!qs_mkdirs(dir, err)) return false;
  remove_previous(dir);
  if (opt->captions && !train_tokenizer(dir, opt->captions, &cfg.vocab, err)) return false;
  if (opt->tokenizer && !copy_tokenizer(dir, opt->tokenizer, err)) return false;
  uint64_t max_shard = opt->max_shard_bytes ? opt->max_shard_bytes : QS_INIT_MODEL_SHARD_BYTES;
  return write_weights(dir, &cfg, opt->seed, max_shard, err) && write_config(dir, p, &cfg, err);
}
