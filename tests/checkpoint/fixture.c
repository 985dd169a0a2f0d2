#define _POSIX_C_SOURCE 200809L
#include "fixture.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/mem.h"

/* Fixture files are the test's own: any failure to produce them is a broken
 * test environment, not a checked behaviour, so it aborts loudly. */
static void die(const char *what, const qs_error *err) {
  fprintf(stderr, "fixture: %s: %s\n", what, err ? err->msg : "");
  exit(99);
}

fx_options fx_defaults(void) {
  return (fx_options){.layout = FX_LAYOUT_A, .tie_top = 1, .tie_text = 1, .dtype = QS_ST_BF16};
}

qs_lm_config fx_lm_config(void) {
  return (qs_lm_config){.hidden = 8, .intermediate = 16, .layers = 2, .heads = 2, .kv_heads = 1, .head_dim = 4,
                        .vocab = 16, .rms_eps = 1e-6};
}

float fx_value(size_t tensor_index, uint64_t element) {
  return (float)((long)((tensor_index * 37 + element * 11) % 64) - 32) / 16.0f;
}

static void set_flag(json_t *obj, const char *key, int flag) {
  if (flag >= 0) json_object_set_new(obj, key, json_boolean(flag));
}

json_t *fx_config(const fx_options *o) {
  qs_lm_config c = fx_lm_config();
  json_t *text = json_pack("{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:s,s:b,s:i}", "hidden_size", c.hidden,
                           "intermediate_size", c.intermediate, "num_hidden_layers", c.layers, "num_attention_heads",
                           c.heads, "num_key_value_heads", c.kv_heads, "head_dim", c.head_dim, "vocab_size", c.vocab,
                           "rms_norm_eps", 1e-6, "hidden_act", "silu", "attention_bias", 0,
                           "max_position_embeddings", 262144);
  if (o->layout == FX_LAYOUT_QWEN3) {
    json_object_set_new(text, "model_type", json_string("qwen3"));
    json_object_set_new(text, "architectures", json_pack("[s]", "Qwen3ForCausalLM"));
    json_object_set_new(text, "rope_theta", json_integer(1000000));
    json_object_set_new(text, "rope_scaling", json_null());
    set_flag(text, "tie_word_embeddings", o->tie_top);
    return text;
  }
  json_object_set_new(text, "model_type", json_string("qwen3_vl_text"));
  if (o->layout == FX_LAYOUT_A) {
    json_object_set_new(text, "rope_theta", json_integer(5000000));
    json_object_set_new(text, "rope_scaling", json_pack("{s:s,s:[i,i,i],s:b}", "rope_type", "default",
                                                        "mrope_section", 1, 1, 0, "mrope_interleaved", 1));
  } else {
    json_object_set_new(text, "rope_parameters", json_pack("{s:s,s:f,s:[i,i,i],s:b}", "rope_type", "default",
                                                           "rope_theta", 250000.0, "mrope_section", 1, 1, 0,
                                                           "mrope_interleaved", 1));
  }
  set_flag(text, "tie_word_embeddings", o->tie_text);
  json_t *root = json_pack("{s:[s],s:s,s:o,s:{s:i,s:i,s:i,s:i},s:i,s:i}", "architectures",
                           "Qwen3VLForConditionalGeneration", "model_type", "qwen3_vl", "text_config", text,
                           "vision_config", "depth", 1, "hidden_size", 4, "num_heads", 2, "out_hidden_size", c.hidden,
                           "image_token_id", 151655, "video_token_id", 151656);
  set_flag(root, "tie_word_embeddings", o->tie_top);
  return root;
}

static void write_json(const char *path, json_t *root) {
  if (json_dump_file(root, path, JSON_INDENT(2)) != 0) die(path, NULL);
  json_decref(root);
}

/* One file's worth of tensors: specs plus where each one's values come from. */
typedef struct fx_tensor {
  qs_st_spec spec;
  size_t value_index; /* fx_value stream; SIZE_MAX: the vision filler */
} fx_tensor;

static void put_value(qs_st_writer *w, qs_st_dtype dtype, float v) {
  qs_error err;
  uint8_t bytes[4];
  size_t n = qs_st_dtype_size(dtype);
  if (dtype == QS_ST_F32) {
    memcpy(bytes, &v, 4);
  } else if (dtype == QS_ST_BF16) {
    qs_bf16 b = qs_f32_to_bf16(v);
    memcpy(bytes, &b, 2);
  } else { /* F16 of k/16, |k| <= 32: exact, built by hand (sign, exponent, 10-bit mantissa) */
    uint16_t h = 0;
    if (v != 0) {
      float a = v < 0 ? -v : v;
      int e = 0;
      while (a >= 2) { a /= 2; e++; }
      while (a < 1) { a *= 2; e--; }
      h = (uint16_t)((v < 0 ? 0x8000 : 0) | ((e + 15) << 10) | (uint16_t)((a - 1) * 1024));
    }
    memcpy(bytes, &h, 2);
  }
  if (!qs_st_writer_write(w, bytes, n, &err)) die("write", &err);
}

static void write_file(const char *path, const fx_tensor *t, size_t n) {
  qs_st_spec *specs = qs_calloc(n, sizeof *specs);
  for (size_t i = 0; i < n; i++) specs[i] = t[i].spec;
  qs_st_writer *w;
  qs_error err;
  if (!qs_st_writer_open(path, specs, n, &w, &err)) die("open", &err);
  free(specs);
  for (size_t i = 0; i < n; i++) {
    uint64_t numel = 1;
    for (int d = 0; d < t[i].spec.ndim; d++) numel *= t[i].spec.shape[d];
    for (uint64_t e = 0; e < numel; e++)
      put_value(w, t[i].spec.dtype, t[i].value_index == SIZE_MAX ? 0.5f : fx_value(t[i].value_index, e));
  }
  if (!qs_st_writer_finish(w, &err)) die("finish", &err);
}

/* The LM tensors (+ lm_head, + vision tensors) in file order. */
static fx_tensor *fixture_tensors(const fx_options *o, size_t *count) {
  qs_lm_config c = fx_lm_config();
  const char *prefix = o->layout == FX_LAYOUT_QWEN3 ? QS_PREFIX_QWEN3 : QS_PREFIX_QWEN3_VL;
  size_t n = qs_lm_tensor_list(&c, prefix, o->lm_head, NULL, 0);
  qs_lm_tensor *list = qs_malloc(n * sizeof *list);
  qs_lm_tensor_list(&c, prefix, o->lm_head, list, n);
  fx_tensor *t = qs_calloc(n + 2, sizeof *t);
  size_t k = 0;
  for (size_t i = 0; i < n; i++, k++) {
    t[k].spec = (qs_st_spec){.name = qs_strdup(list[i].name), .dtype = o->dtype, .ndim = list[i].ndim,
                             .shape = {list[i].shape[0], list[i].shape[1]}};
    t[k].value_index = (list[i].role == QS_ROLE_LM_HEAD && !o->lm_head_differs) ? 0 : i;
  }
  if (o->visual) {
    t[k++] = (fx_tensor){{qs_strdup("model.visual.patch_embed.proj.weight"), QS_ST_F32, 2, {4, 3}}, SIZE_MAX};
    t[k++] = (fx_tensor){{qs_strdup("model.visual.blocks.0.attn.qkv.weight"), QS_ST_BF16, 1, {6}}, SIZE_MAX};
  }
  free(list);
  *count = k;
  return t;
}

void fx_write(const char *dir, const fx_options *o, json_t *config) {
  qs_error err;
  fx_clear_dir(dir);
  if (!qs_mkdirs(dir, &err)) die("mkdir", &err);
  char *path = qs_path_join(dir, "config.json");
  write_json(path, config ? config : fx_config(o));
  free(path);
  size_t n;
  fx_tensor *t = fixture_tensors(o, &n);
  if (o->shards == 0) {
    path = qs_path_join(dir, "model.safetensors");
    write_file(path, t, n);
    free(path);
  } else {
    json_t *map = json_object();
    uint64_t total = 0;
    for (int s = 0; s < o->shards; s++) {
      size_t first = n * (size_t)s / (size_t)o->shards, last = n * (size_t)(s + 1) / (size_t)o->shards;
      char file[64];
      snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, o->shards);
      path = qs_path_join(dir, file);
      write_file(path, t + first, last - first);
      free(path);
      for (size_t i = first; i < last; i++) {
        uint64_t bytes;
        qs_st_spec_bytes(&t[i].spec, &bytes);
        total += bytes;
        json_object_set_new(map, t[i].spec.name, json_string(file));
      }
    }
    path = qs_path_join(dir, "model.safetensors.index.json");
    write_json(path, json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map));
    free(path);
  }
  for (size_t i = 0; i < n; i++) free((char *)t[i].spec.name);
  free(t);
}

void fx_edit_header(const char *path, void (*mutate)(json_t *header, void *ctx), void *ctx, size_t extra) {
  char *data;
  size_t len;
  qs_error err;
  if (!qs_read_file(path, &data, &len, &err)) die("read", &err);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | (uint8_t)data[i];
  json_t *header = json_loadb(data + 8, (size_t)n, 0, NULL);
  if (!header) die("header", NULL);
  mutate(header, ctx);
  char *text = json_dumps(header, JSON_COMPACT);
  json_decref(header);
  size_t hlen = strlen(text), plen = len - 8 - (size_t)n;
  if (hlen % 2 == 0) { /* odd header: the payload lands on odd addresses, exercising the copy path */
    text = qs_realloc(text, hlen + 2);
    text[hlen++] = ' ';
    text[hlen] = '\0';
  }
  uint8_t *out = qs_calloc(8 + hlen + plen + extra, 1);
  for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
  memcpy(out + 8, text, hlen);
  memcpy(out + 8 + hlen, data + 8 + n, plen);
  if (!qs_write_file_atomic(path, out, 8 + hlen + plen + extra, &err)) die("write", &err);
  free(out);
  free(text);
  free(data);
}

void fx_edit_json(const char *path, void (*mutate)(json_t *root, void *ctx), void *ctx) {
  json_t *root = json_load_file(path, 0, NULL);
  if (!root) die(path, NULL);
  mutate(root, ctx);
  write_json(path, root);
}

void fx_patch(const char *path, long offset, const void *bytes, size_t n) {
  FILE *f = fopen(path, "r+b");
  if (!f || fseek(f, offset, SEEK_SET) != 0 || fwrite(bytes, 1, n, f) != n) die(path, NULL);
  fclose(f);
}

void fx_collect_warning(void *strbuf, const char *message) {
  qs_sb_append(strbuf, message);
  qs_sb_putc(strbuf, '\n');
}

int fx_load(const char *dir, qs_lm *lm, qs_error *err, qs_strbuf *warnings) {
  qs_error_clear(err);
  qs_sb_clear(warnings);
  return qs_checkpoint_load(dir, lm, fx_collect_warning, warnings, err) ? 0 : err->status;
}

void fx_clear_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char *path = qs_path_join(dir, e->d_name);
    unlink(path);
    free(path);
  }
  closedir(d);
  rmdir(dir);
}
