/* Broken checkpoints, each made from a good one: the load must fail with one
 * exact line naming the file and the key or tensor, status 1 (QS_EXIT_RUNTIME).
 * Usage: test_checkpoint_bad CASE (one ctest per case) or "all". */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "fixture.h"

#define FILE_1 "model.safetensors"
#define SHARD_1 "model-00001-of-00002.safetensors"
#define SHARD_2 "model-00002-of-00002.safetensors"
#define INDEX "model.safetensors.index.json"
#define P "model.language_model."

static char *in_dir(const char *dir, const char *name) { return qs_path_join(dir, name); }

static void write_default(const char *dir) {
  fx_options o = fx_defaults();
  fx_write(dir, &o, NULL);
}

static void write_sharded(const char *dir) {
  fx_options o = fx_defaults();
  o.shards = 2;
  fx_write(dir, &o, NULL);
}

static void write_config(const char *dir, fx_layout layout, void (*edit)(json_t *text)) {
  fx_options o = fx_defaults();
  o.layout = layout;
  json_t *cfg = fx_config(&o);
  edit(json_object_get(cfg, "text_config"));
  fx_write(dir, &o, cfg);
}

/* ---- safetensors header and payload edits ---- */

typedef struct entry_edit {
  const char *name;
  const char *key;   /* "dtype", "shape", "data_offsets", or NULL to rename the entry */
  json_t *value;     /* new value (or json_string of the new name) */
} entry_edit;

static void apply_entry_edit(json_t *header, void *ctx) {
  entry_edit *e = ctx;
  json_t *entry = json_object_get(header, e->name);
  if (e->key) {
    json_object_set_new(entry, e->key, e->value);
  } else {
    json_object_set(header, json_string_value(e->value), entry);
    json_object_del(header, e->name);
    json_decref(e->value);
  }
}

static void edit_entry(const char *dir, const char *file, const char *name, const char *key, json_t *value,
                       size_t extra) {
  char *path = in_dir(dir, file);
  entry_edit e = {name, key, value};
  fx_edit_header(path, apply_entry_edit, &e, extra);
  free(path);
}

static json_t *offsets_of(const char *dir, const char *file, const char *name, long shift_begin, long shift_end) {
  char *path = in_dir(dir, file);
  qs_st_file f;
  qs_error err;
  if (!qs_st_open(path, &f, &err)) abort();
  const qs_st_tensor *t = qs_st_find(&f, name);
  json_t *v = json_pack("[I,I]", (json_int_t)t->begin + shift_begin, (json_int_t)t->end + shift_end);
  qs_st_close(&f);
  free(path);
  return v;
}

static void set_header_length(const char *dir, uint64_t n) {
  uint8_t le[8];
  for (int i = 0; i < 8; i++) le[i] = (uint8_t)(n >> (8 * i));
  char *path = in_dir(dir, FILE_1);
  fx_patch(path, 0, le, 8);
  free(path);
}

/* ---- cases ---- */

static void header_beyond_file(const char *dir) {
  write_default(dir);
  set_header_length(dir, 1000000);
}

static void header_over_limit(const char *dir) {
  write_default(dir);
  set_header_length(dir, 100000001);
}

static void file_too_short(const char *dir) {
  write_default(dir);
  char *path = in_dir(dir, FILE_1);
  qs_error err;
  qs_write_file_atomic(path, "\x10\0\0\0", 4, &err);
  free(path);
}

static void header_not_json(const char *dir) {
  write_default(dir);
  char *path = in_dir(dir, FILE_1);
  fx_patch(path, 8, "x", 1);
  free(path);
}

/* layers.0 and layers.1 names have the same length: renaming one in place duplicates a key. */
static void header_duplicate_key(const char *dir) {
  write_default(dir);
  char *path = in_dir(dir, FILE_1), *data;
  size_t len;
  qs_error err;
  qs_read_file(path, &data, &len, &err);
  char *hit = strstr(data + 8, "layers.1.input_layernorm");
  fx_patch(path, hit - data, "layers.0", 8);
  free(data);
  free(path);
}

static void offsets_out_of_range(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "norm.weight", "data_offsets", offsets_of(dir, FILE_1, P "norm.weight", 0, 2), 0);
}

static void offsets_wrong_size(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "norm.weight", "data_offsets", offsets_of(dir, FILE_1, P "norm.weight", -2, 0), 0);
}

static void offsets_overlap(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "norm.weight", "data_offsets", offsets_of(dir, FILE_1, P "norm.weight", -2, -2), 0);
}

static void offsets_hole(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "norm.weight", "data_offsets", offsets_of(dir, FILE_1, P "norm.weight", 2, 2), 2);
}

static void payload_tail(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "norm.weight", "dtype", json_string("BF16"), 2);
}

static void dtype_unknown(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "norm.weight", "dtype", json_string("Q4"), 0);
}

static void dtype_wrong(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "norm.weight", "dtype", json_string("I16"), 0);
}

static void shape_mismatch(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "layers.0.self_attn.k_proj.weight", "shape", json_pack("[i,i]", 8, 4), 0);
}

static void tensor_missing(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "layers.1.mlp.up_proj.weight", NULL, json_string("spare.up_proj.weight"), 0);
}

static void tensor_unexpected(const char *dir) {
  write_default(dir);
  edit_entry(dir, FILE_1, P "layers.1.mlp.up_proj.weight", NULL, json_string(P "layers.1.mlp.up2_proj.weight"), 0);
}

static void no_weights(const char *dir) {
  write_default(dir);
  char *path = in_dir(dir, FILE_1);
  unlink(path);
  free(path);
}

static void shard_absent(const char *dir) {
  write_sharded(dir);
  char *path = in_dir(dir, SHARD_2);
  unlink(path);
  free(path);
}

static void set_weight_map(json_t *root, void *ctx) {
  const char *const *kv = ctx;
  json_object_set_new(json_object_get(root, "weight_map"), kv[0], json_string(kv[1]));
}

static void edit_index(const char *dir, const char *tensor, const char *file) {
  const char *kv[2] = {tensor, file};
  char *path = in_dir(dir, INDEX);
  fx_edit_json(path, set_weight_map, kv);
  free(path);
}

static void shard_name_not_plain(const char *dir) {
  write_sharded(dir);
  edit_index(dir, P "norm.weight", "../" SHARD_2);
}

static void index_names_wrong_shard(const char *dir) {
  write_sharded(dir);
  edit_index(dir, P "norm.weight", SHARD_1);
}

typedef struct new_entry {
  const char *name;
  json_t *value;
} new_entry;

static void add_entry(json_t *header, void *ctx) {
  new_entry *e = ctx;
  json_object_set_new(header, e->name, e->value);
}

/* Shard 1 gets a second copy of norm.weight (which the index places in shard 2). */
static void tensor_in_two_shards(const char *dir) {
  write_sharded(dir);
  char *path = in_dir(dir, SHARD_1);
  qs_st_file f;
  qs_error err;
  if (!qs_st_open(path, &f, &err)) abort();
  json_int_t end = (json_int_t)f.payload_size;
  qs_st_close(&f);
  new_entry e = {P "norm.weight", json_pack("{s:s,s:[i],s:[I,I]}", "dtype", "BF16", "shape", 8, "data_offsets", end,
                                            end + 16)};
  fx_edit_header(path, add_entry, &e, 16);
  free(path);
}

static void index_not_json(const char *dir) {
  write_sharded(dir);
  char *path = in_dir(dir, INDEX);
  qs_error err;
  qs_write_file_atomic(path, "{\"weight_map\": ", 15, &err);
  free(path);
}

static void drop_rope_theta(json_t *text) { json_object_del(text, "rope_theta"); }
static void yarn(json_t *text) {
  json_object_set_new(json_object_get(text, "rope_scaling"), "rope_type", json_string("yarn"));
}
static void legacy_linear(json_t *text) {
  json_object_set_new(text, "rope_scaling", json_pack("{s:s,s:f}", "type", "linear", "factor", 2.0));
}
static void conflicting_theta(json_t *text) { json_object_set_new(text, "rope_theta", json_integer(5000000)); }
static void nested_rope(json_t *text) {
  json_object_set_new(text, "rope_parameters",
                      json_pack("{s:{s:s,s:f}}", "full_attention", "rope_type", "default", "rope_theta", 1e6));
}
static void drop_hidden(json_t *text) { json_object_del(text, "hidden_size"); }
static void three_kv_heads(json_t *text) { json_object_set_new(text, "num_key_value_heads", json_integer(3)); }
static void with_bias(json_t *text) { json_object_set_new(text, "attention_bias", json_true()); }
static void string_layers(json_t *text) { json_object_set_new(text, "num_hidden_layers", json_string("2")); }

static void theta_missing(const char *dir) { write_config(dir, FX_LAYOUT_A, drop_rope_theta); }
static void rope_yarn(const char *dir) { write_config(dir, FX_LAYOUT_A, yarn); }
static void rope_legacy_linear(const char *dir) { write_config(dir, FX_LAYOUT_A, legacy_linear); }
static void theta_conflict(const char *dir) { write_config(dir, FX_LAYOUT_B, conflicting_theta); }
static void rope_nested(const char *dir) { write_config(dir, FX_LAYOUT_B, nested_rope); }
static void config_missing_key(const char *dir) { write_config(dir, FX_LAYOUT_A, drop_hidden); }
static void config_kv_heads(const char *dir) { write_config(dir, FX_LAYOUT_A, three_kv_heads); }
static void config_bias(const char *dir) { write_config(dir, FX_LAYOUT_A, with_bias); }
static void config_wrong_type(const char *dir) { write_config(dir, FX_LAYOUT_A, string_layers); }

static void set_model_type(json_t *root, void *ctx) { json_object_set_new(root, "model_type", json_string(ctx)); }

static void model_type_moe(const char *dir) {
  write_default(dir);
  char *path = in_dir(dir, "config.json");
  fx_edit_json(path, set_model_type, "qwen3_vl_moe");
  free(path);
}

static void model_type_unknown(const char *dir) {
  write_default(dir);
  char *path = in_dir(dir, "config.json");
  fx_edit_json(path, set_model_type, "llama");
  free(path);
}

static void config_not_json(const char *dir) {
  write_default(dir);
  char *path = in_dir(dir, "config.json");
  qs_error err;
  qs_write_file_atomic(path, "{\"model_type\": \"qwen3_vl\",}", 27, &err);
  free(path);
}

static void config_absent(const char *dir) {
  write_default(dir);
  char *path = in_dir(dir, "config.json");
  unlink(path);
  free(path);
}

typedef struct bad_case {
  const char *name;
  void (*make)(const char *dir);
  const char *message; /* '@' stands for the checkpoint folder */
} bad_case;

static const bad_case cases[] = {
    {"header_beyond_file", header_beyond_file,
     "@/model.safetensors: header length 1000000 exceeds the 5368 bytes after the length field"},
    {"header_over_limit", header_over_limit,
     "@/model.safetensors: header length 100000001 exceeds the limit of 100000000 bytes"},
    {"file_too_short", file_too_short, "@/model.safetensors: file is 4 bytes, too short for the 8-byte header length"},
    {"header_not_json", header_not_json,
     "@/model.safetensors: header is not valid JSON: '[' or '{' expected near 'x' (at byte 1 of the header)"},
    {"header_duplicate_key", header_duplicate_key,
     "@/model.safetensors: header is not valid JSON: duplicate key "
     "'model.language_model.layers.0.input_layernorm.weight'"},
    {"offsets_out_of_range", offsets_out_of_range,
     "@/model.safetensors: tensor 'model.language_model.norm.weight': data_offsets [2656, 2674] are outside the "
     "payload of 2672 bytes"},
    {"offsets_wrong_size", offsets_wrong_size,
     "@/model.safetensors: tensor 'model.language_model.norm.weight': data_offsets [2654, 2672] hold 18 bytes, but "
     "BF16 [8] needs 16"},
    {"offsets_overlap", offsets_overlap,
     "@/model.safetensors: tensor 'model.language_model.norm.weight': data_offsets [2654, 2670] overlap tensor "
     "'model.language_model.layers.1.post_attention_layernorm.weight'"},
    {"offsets_hole", offsets_hole,
     "@/model.safetensors: tensor 'model.language_model.norm.weight': data_offsets [2658, 2674] leave a hole of 2 "
     "bytes before it"},
    {"payload_tail", payload_tail, "@/model.safetensors: the last 2 bytes of the payload belong to no tensor"},
    {"dtype_unknown", dtype_unknown,
     "@/model.safetensors: tensor 'model.language_model.norm.weight': unknown dtype 'Q4'"},
    {"dtype_wrong", dtype_wrong,
     "@/model.safetensors: tensor 'model.language_model.norm.weight' has dtype I16; expected BF16 (or F32/F16, "
     "converted)"},
    {"shape_mismatch", shape_mismatch,
     "@/model.safetensors: tensor 'model.language_model.layers.0.self_attn.k_proj.weight' has shape [8, 4], "
     "config.json implies [4, 8]"},
    {"tensor_missing", tensor_missing,
     "@/model.safetensors: tensor 'model.language_model.layers.1.mlp.up_proj.weight' is missing"},
    {"tensor_unexpected", tensor_unexpected,
     "@/model.safetensors: unexpected tensor 'model.language_model.layers.1.mlp.up2_proj.weight'"},
    {"no_weights", no_weights, "@: no model.safetensors or model.safetensors.index.json"},
    {"shard_absent", shard_absent,
     "@/model.safetensors.index.json: shard 'model-00002-of-00002.safetensors' (holding tensor "
     "'model.language_model.layers.1.self_attn.q_proj.weight') does not exist"},
    {"shard_name_not_plain", shard_name_not_plain,
     "@/model.safetensors.index.json: shard name '../model-00002-of-00002.safetensors' (tensor "
     "'model.language_model.norm.weight') must be a plain file name"},
    {"index_names_wrong_shard", index_names_wrong_shard,
     "@/model-00001-of-00002.safetensors: tensor 'model.language_model.norm.weight' is missing (the index places it "
     "in this shard)"},
    {"tensor_in_two_shards", tensor_in_two_shards,
     "@/model-00001-of-00002.safetensors: tensor 'model.language_model.norm.weight' also appears here; the index "
     "places it in 'model-00002-of-00002.safetensors'"},
    {"index_not_json", index_not_json,
     "@/model.safetensors.index.json: not valid JSON: unexpected token near end of file (line 1, column 15)"},
    {"model_type_moe", model_type_moe,
     "@/config.json: key 'model_type' is 'qwen3_vl_moe': mixture-of-experts models are not supported"},
    {"model_type_unknown", model_type_unknown,
     "@/config.json: key 'model_type' is 'llama'; supported: 'qwen3_vl', 'qwen3'"},
    {"rope_yarn", rope_yarn,
     "@/config.json: key 'text_config.rope_scaling.rope_type' is 'yarn'; only 'default' RoPE is supported"},
    {"rope_legacy_linear", rope_legacy_linear,
     "@/config.json: key 'text_config.rope_scaling.type' is 'linear'; only 'default' RoPE is supported"},
    {"rope_nested", rope_nested,
     "@/config.json: key 'text_config.rope_parameters' must be flat (per-layer-type RoPE is not supported)"},
    {"theta_missing", theta_missing,
     "@/config.json: key 'text_config.rope_theta' is missing (and there is no 'rope_parameters.rope_theta'); the "
     "RoPE base has no default"},
    {"theta_conflict", theta_conflict,
     "@/config.json: key 'text_config.rope_parameters.rope_theta' (250000) conflicts with 'text_config.rope_theta' "
     "(5e+06)"},
    {"config_missing_key", config_missing_key, "@/config.json: key 'text_config.hidden_size' is missing"},
    {"config_kv_heads", config_kv_heads,
     "@/config.json: key 'text_config.num_key_value_heads' (3) must divide num_attention_heads (2)"},
    {"config_bias", config_bias,
     "@/config.json: key 'text_config.attention_bias' must be false (no bias tensors exist)"},
    {"config_wrong_type", config_wrong_type,
     "@/config.json: key 'text_config.num_hidden_layers' must be a positive integer (at most 100000)"},
    {"config_not_json", config_not_json,
     "@/config.json: not valid JSON: string or '}' expected near '}' (line 1, column 27)"},
    {"config_absent", config_absent, "@/config.json: no such file"},
};

static void run_case(const bad_case *c) {
  char dir[128];
  snprintf(dir, sizeof dir, "bad_%s", c->name);
  c->make(dir);
  qs_strbuf expected = {0}, warnings = {0};
  for (const char *m = c->message; *m; m++) {
    if (*m == '@') qs_sb_append(&expected, dir);
    else qs_sb_putc(&expected, *m);
  }
  qs_lm lm;
  qs_error err;
  int status = fx_load(dir, &lm, &err, &warnings);
  CHECK_INT(status, QS_EXIT_RUNTIME);
  if (status == 0) qs_lm_release(&lm);
  CHECK_STR(err.msg, qs_sb_str(&expected));
  CHECK(strchr(err.msg, '\n') == NULL);
  qs_sb_free(&expected);
  qs_sb_free(&warnings);
  fx_clear_dir(dir);
}

int main(int argc, char **argv) {
  const char *which = argc > 1 ? argv[1] : "all";
  bool found = false;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (strcmp(which, "all") != 0 && strcmp(which, cases[i].name) != 0) continue;
    found = true;
    run_case(&cases[i]);
  }
  if (!found) {
    fprintf(stderr, "unknown case '%s'\n", which);
    return 2;
  }
  return check_summary(which);
}
