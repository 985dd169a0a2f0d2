#define _POSIX_C_SOURCE 200809L
#include "model/checkpoint.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "model/safetensors.h"

void qs_warn_to_stream(void *file, const char *message) {
  fprintf(file, "qsens: warning: %s\n", message);
}

static void warnf(qs_warn_fn warn, void *ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void warnf(qs_warn_fn warn, void *ctx, const char *fmt, ...) {
  if (!warn) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  warn(ctx, msg);
}

/* ---- tensor list ----------------------------------------------------------- */

size_t qs_lm_tensor_list(const qs_lm_config *c, const char *prefix, bool with_lm_head, qs_lm_tensor *out,
                         size_t cap) {
  static const struct {
    qs_lm_role role;
    const char *suffix;
  } layer_tensors[] = {
      {QS_ROLE_Q, "self_attn.q_proj.weight"},   {QS_ROLE_K, "self_attn.k_proj.weight"},
      {QS_ROLE_V, "self_attn.v_proj.weight"},   {QS_ROLE_O, "self_attn.o_proj.weight"},
      {QS_ROLE_Q_NORM, "self_attn.q_norm.weight"}, {QS_ROLE_K_NORM, "self_attn.k_norm.weight"},
      {QS_ROLE_GATE, "mlp.gate_proj.weight"},   {QS_ROLE_UP, "mlp.up_proj.weight"},
      {QS_ROLE_DOWN, "mlp.down_proj.weight"},   {QS_ROLE_INPUT_NORM, "input_layernorm.weight"},
      {QS_ROLE_POST_NORM, "post_attention_layernorm.weight"},
  };
  uint64_t D = (uint64_t)c->hidden, I = (uint64_t)c->intermediate, hd = (uint64_t)c->head_dim;
  uint64_t q = (uint64_t)c->heads * hd, kv = (uint64_t)c->kv_heads * hd, V = (uint64_t)c->vocab;
  size_t n = 0;
#define EMIT(role_, layer_, ndim_, d0_, d1_, ...)                                        \
  do {                                                                                   \
    if (out && n < cap) {                                                                \
      out[n] = (qs_lm_tensor){.role = (role_), .layer = (layer_), .ndim = (ndim_), .shape = {(d0_), (d1_)}}; \
      snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                            \
    }                                                                                    \
    n++;                                                                                 \
  } while (0)
  EMIT(QS_ROLE_EMBED, -1, 2, V, D, "%sembed_tokens.weight", prefix);
  for (int l = 0; l < c->layers; l++) {
    for (size_t k = 0; k < sizeof layer_tensors / sizeof layer_tensors[0]; k++) {
      qs_lm_role r = layer_tensors[k].role;
      uint64_t d0 = 0, d1 = 0;
      int ndim = 2;
      switch (r) {
        case QS_ROLE_Q: d0 = q; d1 = D; break;
        case QS_ROLE_K: case QS_ROLE_V: d0 = kv; d1 = D; break;
        case QS_ROLE_O: d0 = D; d1 = q; break;
        case QS_ROLE_GATE: case QS_ROLE_UP: d0 = I; d1 = D; break;
        case QS_ROLE_DOWN: d0 = D; d1 = I; break;
        case QS_ROLE_Q_NORM: case QS_ROLE_K_NORM: d0 = hd; ndim = 1; break;
        default: d0 = D; ndim = 1; break; /* input/post norms */
      }
      EMIT(r, l, ndim, d0, d1, "%slayers.%d.%s", prefix, l, layer_tensors[k].suffix);
    }
  }
  EMIT(QS_ROLE_FINAL_NORM, -1, 1, D, 0, "%snorm.weight", prefix);
  if (with_lm_head) EMIT(QS_ROLE_LM_HEAD, -1, 2, V, D, "lm_head.weight");
#undef EMIT
  return n;
}

const qs_bf16 **qs_lm_slot(qs_lm *lm, const qs_lm_tensor *t) {
  qs_lm_layer *l = t->layer >= 0 ? &lm->layer[t->layer] : NULL;
  switch (t->role) {
    case QS_ROLE_EMBED: return &lm->embed;
    case QS_ROLE_Q: return &l->q;
    case QS_ROLE_K: return &l->k;
    case QS_ROLE_V: return &l->v;
    case QS_ROLE_O: return &l->o;
    case QS_ROLE_Q_NORM: return &l->q_norm;
    case QS_ROLE_K_NORM: return &l->k_norm;
    case QS_ROLE_GATE: return &l->gate;
    case QS_ROLE_UP: return &l->up;
    case QS_ROLE_DOWN: return &l->down;
    case QS_ROLE_INPUT_NORM: return &l->input_norm;
    case QS_ROLE_POST_NORM: return &l->post_norm;
    case QS_ROLE_FINAL_NORM: return &lm->final_norm;
    case QS_ROLE_LM_HEAD: return &lm->lm_head;
  }
  return NULL;
}

/* ---- config.json ------------------------------------------------------------ */

/* Reading context: file path for messages, key prefix ("text_config." or ""). */
typedef struct cfg_reader {
  const char *path;
  const char *scope;
  qs_warn_fn warn;
  void *warn_ctx;
  qs_error *err;
} cfg_reader;

static bool cfg_fail(const cfg_reader *r, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool cfg_fail(const cfg_reader *r, const char *key, const char *fmt, ...) {
  char what[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return qs_fail(r->err, QS_EXIT_RUNTIME, "%s: key '%s%s' %s", r->path, r->scope, key, what);
}

/* Positive integer key; `fallback` < 0 means required. */
static bool cfg_int(const cfg_reader *r, json_t *obj, const char *key, long long fallback, long long max, int *out) {
  json_t *v = json_object_get(obj, key);
  if (!v) {
    if (fallback < 0) return cfg_fail(r, key, "is missing");
    *out = (int)fallback;
    return true;
  }
  if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > max)
    return cfg_fail(r, key, "must be a positive integer (at most %lld)", max);
  *out = (int)json_integer_value(v);
  return true;
}

/* -1 absent, else 0/1. */
static bool cfg_flag(const cfg_reader *r, json_t *obj, const char *key, int *out) {
  json_t *v = json_object_get(obj, key);
  *out = -1;
  if (!v) return true;
  if (!json_is_boolean(v)) return cfg_fail(r, key, "must be true or false");
  *out = json_is_true(v);
  return true;
}

static bool cfg_number(const cfg_reader *r, json_t *obj, const char *key, bool *present, double *out) {
  json_t *v = json_object_get(obj, key);
  *present = v != NULL;
  if (!v) return true;
  if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
    return cfg_fail(r, key, "must be a positive number");
  *out = json_number_value(v);
  return true;
}

/* rope_type (or its legacy alias type) of a RoPE dict; must be "default". */
static bool check_rope_type(const cfg_reader *r, json_t *dict, const char *dict_key) {
  const char *alias = json_object_get(dict, "rope_type") ? "rope_type" : "type";
  json_t *t = json_object_get(dict, alias);
  if (!t) return true;
  char key[64];
  snprintf(key, sizeof key, "%s.%s", dict_key, alias);
  if (!json_is_string(t)) return cfg_fail(r, key, "must be a string");
  if (strcmp(json_string_value(t), "default") != 0)
    return cfg_fail(r, key, "is '%.64s'; only 'default' RoPE is supported", json_string_value(t));
  return true;
}

static void check_mrope_section(const cfg_reader *r, json_t *dict, const char *dict_key, int head_dim) {
  json_t *sec = json_object_get(dict, "mrope_section");
  if (!json_is_array(sec)) return;
  long long sum = 0;
  size_t i;
  json_t *v;
  json_array_foreach(sec, i, v) sum += json_is_integer(v) ? json_integer_value(v) : 0;
  if (sum != head_dim / 2)
    warnf(r->warn, r->warn_ctx, "%s: '%s%s.mrope_section' sums to %lld, not head_dim/2 = %d (unused for text)",
          r->path, r->scope, dict_key, sum, head_dim / 2);
}

/* §1.2: theta from rope_parameters.rope_theta or rope_theta (never defaulted),
 * rope type "default" only, rope_parameters flat. */
static bool read_rope(const cfg_reader *r, json_t *text, qs_lm_config *lm) {
  json_t *params = json_object_get(text, "rope_parameters");
  json_t *scaling = json_object_get(text, "rope_scaling");
  double theta_top = 0, theta_params = 0;
  bool has_top, has_params = false;
  if (!cfg_number(r, text, "rope_theta", &has_top, &theta_top)) return false;
  if (params && !json_is_null(params)) {
    if (!json_is_object(params)) return cfg_fail(r, "rope_parameters", "must be an object");
    const char *k;
    json_t *v;
    json_object_foreach(params, k, v) {
      if (json_is_object(v))
        return cfg_fail(r, "rope_parameters", "must be flat (per-layer-type RoPE is not supported)");
    }
    cfg_reader sub = *r;
    char scope[64];
    snprintf(scope, sizeof scope, "%srope_parameters.", r->scope);
    sub.scope = scope;
    if (!cfg_number(&sub, params, "rope_theta", &has_params, &theta_params)) return false;
    if (!check_rope_type(r, params, "rope_parameters")) return false;
    check_mrope_section(r, params, "rope_parameters", lm->head_dim);
  }
  if (scaling && !json_is_null(scaling)) {
    if (!json_is_object(scaling)) return cfg_fail(r, "rope_scaling", "must be an object or null");
    if (!check_rope_type(r, scaling, "rope_scaling")) return false;
    check_mrope_section(r, scaling, "rope_scaling", lm->head_dim);
  }
  if (has_top && has_params && theta_top != theta_params)
    return cfg_fail(r, "rope_parameters.rope_theta", "(%g) conflicts with '%srope_theta' (%g)", theta_params,
                    r->scope, theta_top);
  if (!has_top && !has_params)
    return cfg_fail(r, "rope_theta",
                    "is missing (and there is no 'rope_parameters.rope_theta'); the RoPE base has no default");
  lm->rope_theta = has_params ? theta_params : theta_top;
  return true;
}

static bool read_text_config(const cfg_reader *r, json_t *text, qs_hf_config *out) {
  qs_lm_config *lm = &out->lm;
  const long long big = 1 << 24; /* keeps every product of two sizes inside int64 */
  if (!cfg_int(r, text, "hidden_size", -1, big, &lm->hidden) ||
      !cfg_int(r, text, "intermediate_size", -1, big, &lm->intermediate) ||
      !cfg_int(r, text, "num_hidden_layers", -1, 100000, &lm->layers) ||
      !cfg_int(r, text, "num_attention_heads", -1, 65536, &lm->heads) ||
      !cfg_int(r, text, "vocab_size", -1, big, &lm->vocab) ||
      !cfg_int(r, text, "num_key_value_heads", lm->heads, 65536, &lm->kv_heads))
    return false;
  if (lm->heads % lm->kv_heads != 0)
    return cfg_fail(r, "num_key_value_heads", "(%d) must divide num_attention_heads (%d)", lm->kv_heads, lm->heads);
  if (!json_object_get(text, "head_dim"))
    warnf(r->warn, r->warn_ctx, "%s: key '%shead_dim' is missing; using 128", r->path, r->scope);
  if (!cfg_int(r, text, "head_dim", 128, 65536, &lm->head_dim)) return false;
  if (lm->head_dim % 2) return cfg_fail(r, "head_dim", "must be even (RoPE rotates halves)");
  if ((long long)lm->heads * lm->head_dim > big)
    return cfg_fail(r, "head_dim", "times num_attention_heads is too large");
  bool present;
  lm->rms_eps = 1e-6;
  if (!cfg_number(r, text, "rms_norm_eps", &present, &lm->rms_eps)) return false;
  json_t *mpe = json_object_get(text, "max_position_embeddings");
  lm->max_positions = json_is_integer(mpe) ? (long)json_integer_value(mpe) : 0;
  json_t *bias = json_object_get(text, "attention_bias");
  if (bias && !json_is_false(bias)) return cfg_fail(r, "attention_bias", "must be false (no bias tensors exist)");
  json_t *act = json_object_get(text, "hidden_act");
  if (act && !(json_is_string(act) && strcmp(json_string_value(act), "silu") == 0))
    return cfg_fail(r, "hidden_act", "must be \"silu\"");
  return read_rope(r, text, lm);
}

static bool is_moe(const char *model_type) { return strstr(model_type, "moe") != NULL; }

static bool read_config_root(const cfg_reader *top, json_t *root, qs_hf_config *out) {
  json_t *mt = json_object_get(root, "model_type");
  if (!json_is_string(mt)) return cfg_fail(top, "model_type", "is missing or not a string");
  const char *type = json_string_value(mt);
  if (is_moe(type))
    return cfg_fail(top, "model_type", "is '%.64s': mixture-of-experts models are not supported", type);
  if (!cfg_flag(top, root, "tie_word_embeddings", &out->tie_top)) return false;
  if (strcmp(type, "qwen3") == 0) {
    out->prefix = QS_PREFIX_QWEN3;
    out->tie_text = out->tie_top;
    return read_text_config(top, root, out);
  }
  if (strcmp(type, "qwen3_vl") != 0)
    return cfg_fail(top, "model_type", "is '%.64s'; supported: 'qwen3_vl', 'qwen3'", type);
  out->vision_language = true;
  out->prefix = QS_PREFIX_QWEN3_VL;
  json_t *text = json_object_get(root, "text_config");
  if (!json_is_object(text)) return cfg_fail(top, "text_config", "is missing or not an object");
  cfg_reader r = *top;
  r.scope = "text_config.";
  json_t *tmt = json_object_get(text, "model_type");
  if (json_is_string(tmt) && is_moe(json_string_value(tmt)))
    return cfg_fail(&r, "model_type", "is '%.64s': mixture-of-experts models are not supported",
                    json_string_value(tmt));
  if (!cfg_flag(&r, text, "tie_word_embeddings", &out->tie_text)) return false;
  if (out->tie_top >= 0 && out->tie_text >= 0 && out->tie_top != out->tie_text)
    warnf(top->warn, top->warn_ctx,
          "%s: tie_word_embeddings is %s at the top level but %s in text_config; the top level decides", top->path,
          out->tie_top ? "true" : "false", out->tie_text ? "true" : "false");
  return read_text_config(&r, text, out);
}

bool qs_hf_config_read(const char *path, qs_hf_config *out, qs_warn_fn warn, void *warn_ctx, qs_error *err) {
  memset(out, 0, sizeof *out);
  json_error_t jerr;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    if (!qs_is_file(path)) return qs_fail(err, QS_EXIT_RUNTIME, "%s: no such file", path);
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: not valid JSON: %s (line %d, column %d)", path, jerr.text, jerr.line,
                   jerr.column);
  }
  cfg_reader r = {.path = path, .scope = "", .warn = warn, .warn_ctx = warn_ctx, .err = err};
  bool ok = json_is_object(root) ? read_config_root(&r, root, out)
                                 : qs_fail(err, QS_EXIT_RUNTIME, "%s: not a JSON object", path);
  json_decref(root);
  return ok;
}

/* ---- tensor sources ------------------------------------------------------- */

typedef struct source_set {
  const char *dir;
  char *index_path;     /* NULL for a single model.safetensors */
  json_t *weight_map;   /* name -> shard file name (index only) */
  qs_st_file *files;
  char **file_names;    /* plain names inside dir */
  size_t nfiles;
} source_set;

/* Owns everything a loaded qs_lm points into. */
typedef struct ckpt_storage {
  qs_st_file *files;
  size_t nfiles;
  void **buffers;       /* converted or realigned tensors */
  size_t nbuffers, cap;
} ckpt_storage;

static void release_checkpoint(qs_lm *lm) {
  ckpt_storage *s = lm->storage;
  if (s) {
    for (size_t i = 0; i < s->nbuffers; i++) free(s->buffers[i]);
    free(s->buffers);
    for (size_t i = 0; i < s->nfiles; i++) qs_st_close(&s->files[i]);
    free(s->files);
    free(s);
  }
  free(lm->layer);
  memset(lm, 0, sizeof *lm);
}

static void sources_free(source_set *s) {
  for (size_t i = 0; i < s->nfiles; i++) {
    qs_st_close(&s->files[i]);
    free(s->file_names[i]);
  }
  free(s->files);
  free(s->file_names);
  free(s->index_path);
  json_decref(s->weight_map);
  memset(s, 0, sizeof *s);
}

static bool open_source(source_set *s, const char *name, qs_error *err) {
  char *path = qs_path_join(s->dir, name);
  s->files = qs_realloc(s->files, (s->nfiles + 1) * sizeof *s->files);
  s->file_names = qs_realloc(s->file_names, (s->nfiles + 1) * sizeof *s->file_names);
  bool ok;
  if (s->index_path && !qs_is_file(path)) {
    const char *key;
    json_t *v;
    const char *example = "";
    json_object_foreach(s->weight_map, key, v) {
      if (strcmp(json_string_value(v), name) == 0) {
        example = key;
        break;
      }
    }
    ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: shard '%s' (holding tensor '%s') does not exist", s->index_path, name,
                 example);
  } else {
    ok = qs_st_open(path, &s->files[s->nfiles], err);
  }
  free(path);
  if (ok) s->file_names[s->nfiles++] = qs_strdup(name);
  return ok;
}

static bool plain_file_name(const char *name) {
  return name[0] && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static bool already_open(const source_set *s, const char *name) {
  for (size_t i = 0; i < s->nfiles; i++)
    if (strcmp(s->file_names[i], name) == 0) return true;
  return false;
}

/* Reads the index, checks shard names and opens each shard once, in order of first mention. */
static bool open_index(source_set *s, json_t **metadata, qs_error *err) {
  json_error_t jerr;
  json_t *root = json_load_file(s->index_path, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: not valid JSON: %s (line %d, column %d)", s->index_path, jerr.text,
                   jerr.line, jerr.column);
  json_t *map = json_object_get(root, "weight_map");
  *metadata = json_incref(json_object_get(root, "metadata"));
  bool ok = json_is_object(map) ||
            qs_fail(err, QS_EXIT_RUNTIME, "%s: key 'weight_map' is missing or not an object", s->index_path);
  if (ok) s->weight_map = json_incref(map);
  json_decref(root);
  const char *key;
  json_t *v;
  if (ok) {
    json_object_foreach(s->weight_map, key, v) {
      if (!json_is_string(v)) {
        ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: weight_map entry '%s' is not a file name", s->index_path, key);
      } else if (!plain_file_name(json_string_value(v))) {
        ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: shard name '%s' (tensor '%s') must be a plain file name",
                     s->index_path, json_string_value(v), key);
      } else if (!already_open(s, json_string_value(v))) {
        ok = open_source(s, json_string_value(v), err);
      }
      if (!ok) break;
    }
  }
  return ok;
}

static bool open_sources(source_set *s, const char *dir, qs_warn_fn warn, void *warn_ctx, qs_error *err) {
  memset(s, 0, sizeof *s);
  s->dir = dir;
  char *index = qs_path_join(dir, "model.safetensors.index.json");
  if (!qs_is_file(index)) {
    free(index);
    char *single = qs_path_join(dir, "model.safetensors");
    bool exists = qs_is_file(single);
    free(single);
    if (!exists)
      return qs_fail(err, QS_EXIT_RUNTIME, "%s: no model.safetensors or model.safetensors.index.json", dir);
    if (open_source(s, "model.safetensors", err)) return true;
    sources_free(s);
    return false;
  }
  s->index_path = index;
  json_t *metadata = NULL;
  bool ok = open_index(s, &metadata, err);
  json_t *total = json_object_get(metadata, "total_size");
  if (ok && json_is_integer(total)) {
    uint64_t sum = 0;
    for (size_t i = 0; i < s->nfiles; i++) sum += s->files[i].payload_size;
    if ((uint64_t)json_integer_value(total) != sum)
      warnf(warn, warn_ctx, "%s: metadata.total_size is %lld but the shards hold %llu bytes of tensors",
            s->index_path, (long long)json_integer_value(total), (unsigned long long)sum);
  }
  json_decref(metadata);
  if (!ok) sources_free(s);
  return ok;
}

/* The one file holding `name`, per §2.3 rule 6; *tensor NULL when absent. */
static bool locate(const source_set *s, const char *name, size_t *file, const qs_st_tensor **tensor, qs_error *err) {
  *tensor = NULL;
  if (!s->index_path) {
    *file = 0;
    *tensor = qs_st_find(&s->files[0], name);
    return true;
  }
  json_t *entry = json_object_get(s->weight_map, name);
  if (!entry) return true;
  for (size_t i = 0; i < s->nfiles; i++) {
    const qs_st_tensor *t = qs_st_find(&s->files[i], name);
    bool named = strcmp(s->file_names[i], json_string_value(entry)) == 0;
    if (named && !t)
      return qs_fail(err, QS_EXIT_RUNTIME, "%s: tensor '%s' is missing (the index places it in this shard)",
                     s->files[i].path, name);
    if (!named && t)
      return qs_fail(err, QS_EXIT_RUNTIME, "%s: tensor '%s' also appears here; the index places it in '%s'",
                     s->files[i].path, name, json_string_value(entry));
    if (named) {
      *file = i;
      *tensor = t;
    }
  }
  return true;
}

static const char *where_missing(const source_set *s) {
  return s->index_path ? s->index_path : s->files[0].path;
}

/* ---- names outside the expected list ---------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Unknown names under the LM prefix are errors; elsewhere warnings; the vision
 * tower and rotary caches are skipped silently. */
static bool check_names(const source_set *s, const qs_hf_config *hc, const qs_lm_tensor *list, size_t n,
                        qs_warn_fn warn, void *warn_ctx, qs_error *err) {
  const char **expected = qs_malloc((n + 1) * sizeof *expected);
  for (size_t i = 0; i < n; i++) expected[i] = list[i].name;
  expected[n++] = "lm_head.weight";
  qsort(expected, n, sizeof *expected, cmp_str);
  bool ok = true;
  for (size_t f = 0; f < s->nfiles && ok; f++) {
    for (size_t i = 0; i < s->files[f].count && ok; i++) {
      const char *name = s->files[f].tensors[i].name;
      if (s->index_path && !json_object_get(s->weight_map, name))
        warnf(warn, warn_ctx, "%s: tensor '%s' is not listed in %s", s->files[f].path, name, s->index_path);
      if (bsearch(&name, expected, n, sizeof *expected, cmp_str)) continue;
      if ((hc->vision_language && strncmp(name, "model.visual.", 13) == 0) || ends_with(name, "rotary_emb.inv_freq"))
        continue;
      if (strncmp(name, hc->prefix, strlen(hc->prefix)) == 0)
        ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: unexpected tensor '%s'", s->files[f].path, name);
      else
        warnf(warn, warn_ctx, "%s: ignoring unknown tensor '%s'", s->files[f].path, name);
    }
  }
  free(expected);
  return ok;
}

/* ---- tensor data --------------------------------------------------------------- */

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  float mag;
  if (exp == 0x1f) {
    mag = mant ? NAN : INFINITY;
  } else if (exp == 0) {
    mag = ldexpf((float)mant, -24); /* subnormal (or zero) */
  } else {
    mag = ldexpf((float)(mant | 0x400), (int)exp - 25);
  }
  uint32_t u;
  memcpy(&u, &mag, sizeof u);
  u |= sign;
  memcpy(&mag, &u, sizeof u);
  return mag;
}

static void keep_buffer(ckpt_storage *st, void *buf) {
  qs_grow((void **)&st->buffers, &st->cap, st->nbuffers + 1, sizeof *st->buffers);
  st->buffers[st->nbuffers++] = buf;
}

/* bf16 view of a tensor: in place when BF16 and 2-byte aligned, else a
 * converted (F32/F16, round to nearest even) or realigned copy. */
static const qs_bf16 *tensor_bf16(const qs_st_file *f, const qs_st_tensor *t, ckpt_storage *st) {
  const uint8_t *src = qs_st_data(f, t);
  if (t->dtype == QS_ST_BF16 && ((uintptr_t)src & 1) == 0) return (const qs_bf16 *)src;
  qs_bf16 *dst = qs_malloc((size_t)t->numel * sizeof *dst + 1);
  keep_buffer(st, dst);
  for (uint64_t i = 0; i < t->numel; i++) {
    if (t->dtype == QS_ST_BF16) {
      memcpy(&dst[i], src + 2 * i, 2);
    } else if (t->dtype == QS_ST_F16) {
      uint16_t h;
      memcpy(&h, src + 2 * i, 2);
      dst[i] = qs_f32_to_bf16(f16_to_f32(h));
    } else {
      float x;
      memcpy(&x, src + 4 * i, 4);
      dst[i] = qs_f32_to_bf16(x);
    }
  }
  return dst;
}

static bool check_tensor(const qs_st_file *f, const qs_st_tensor *t, const qs_lm_tensor *want, qs_error *err) {
  bool same = t->ndim == want->ndim;
  for (int d = 0; same && d < want->ndim; d++) same = t->shape[d] == want->shape[d];
  if (!same) {
    char got[128], exp[128];
    qs_st_format_shape(t->shape, t->ndim, got, sizeof got);
    qs_st_format_shape(want->shape, want->ndim, exp, sizeof exp);
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: tensor '%s' has shape %s, config.json implies %s", f->path, t->name, got,
                   exp);
  }
  if (t->dtype != QS_ST_BF16 && t->dtype != QS_ST_F32 && t->dtype != QS_ST_F16)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: tensor '%s' has dtype %s; expected BF16 (or F32/F16, converted)",
                   f->path, t->name, qs_st_dtype_name(t->dtype));
  return true;
}

typedef struct load_state {
  source_set src;
  ckpt_storage *st;
  size_t *converted;    /* per file: tensors converted to bf16 */
  qs_warn_fn warn;
  void *warn_ctx;
} load_state;

/* Finds, validates and maps one expected tensor; *data NULL when absent. */
static bool load_tensor(load_state *ls, const qs_lm_tensor *want, const qs_bf16 **data, size_t *file, qs_error *err) {
  const qs_st_tensor *t;
  *data = NULL;
  if (!locate(&ls->src, want->name, file, &t, err)) return false;
  if (!t) return true;
  const qs_st_file *f = &ls->src.files[*file];
  if (!check_tensor(f, t, want, err)) return false;
  if (t->dtype != QS_ST_BF16) ls->converted[*file]++;
  *data = tensor_bf16(f, t, ls->st);
  return true;
}

/* §1.3: which matrix serves as lm_head. */
static bool resolve_head(load_state *ls, const qs_hf_config *hc, qs_lm *lm, const qs_lm_tensor *head, qs_error *err) {
  const qs_bf16 *data;
  size_t file = 0;
  if (!load_tensor(ls, head, &data, &file, err)) return false;
  bool tied = hc->tie_top == 1 || (hc->tie_top < 0 && !data && hc->tie_text == 1);
  if (tied) {
    size_t bytes = (size_t)head->shape[0] * (size_t)head->shape[1] * sizeof(qs_bf16);
    if (data && memcmp(data, lm->embed, bytes) != 0)
      warnf(ls->warn, ls->warn_ctx,
            "%s: lm_head.weight differs from %sembed_tokens.weight; tie_word_embeddings is true, so embed_tokens "
            "serves as lm_head", ls->src.files[file].path, hc->prefix);
    lm->lm_head = lm->embed;
    lm->cfg.tied = true;
    return true;
  }
  if (!data)
    return qs_fail(err, QS_EXIT_RUNTIME,
                   "%s: tensor 'lm_head.weight' is missing and tie_word_embeddings is not true in config.json",
                   where_missing(&ls->src));
  lm->lm_head = data;
  return true;
}

static bool load_weights(load_state *ls, const qs_hf_config *hc, qs_lm *lm, qs_error *err) {
  size_t n = qs_lm_tensor_list(&hc->lm, hc->prefix, true, NULL, 0);
  qs_lm_tensor *list = qs_malloc(n * sizeof *list);
  qs_lm_tensor_list(&hc->lm, hc->prefix, true, list, n);
  bool ok = check_names(&ls->src, hc, list, n - 1, ls->warn, ls->warn_ctx, err);
  for (size_t i = 0; ok && i + 1 < n; i++) {
    const qs_bf16 *data;
    size_t file;
    ok = load_tensor(ls, &list[i], &data, &file, err);
    if (ok && !data)
      ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: tensor '%s' is missing", where_missing(&ls->src), list[i].name);
    if (ok) *qs_lm_slot(lm, &list[i]) = data;
  }
  ok = ok && resolve_head(ls, hc, lm, &list[n - 1], err);
  free(list);
  for (size_t f = 0; ok && f < ls->src.nfiles; f++) {
    if (ls->converted[f])
      warnf(ls->warn, ls->warn_ctx, "%s: %zu tensors stored as F32/F16 were converted to bf16 (round to nearest even)",
            ls->src.files[f].path, ls->converted[f]);
  }
  return ok;
}

bool qs_checkpoint_load(const char *dir, qs_lm *out, qs_warn_fn warn, void *warn_ctx, qs_error *err) {
  memset(out, 0, sizeof *out);
  qs_hf_config hc;
  char *cfg_path = qs_path_join(dir, "config.json");
  bool ok = qs_hf_config_read(cfg_path, &hc, warn, warn_ctx, err);
  free(cfg_path);
  if (!ok) return false;
  load_state ls = {.warn = warn, .warn_ctx = warn_ctx};
  if (!open_sources(&ls.src, dir, warn, warn_ctx, err)) return false;
  ls.st = qs_calloc(1, sizeof *ls.st);
  ls.converted = qs_calloc(ls.src.nfiles, sizeof *ls.converted);
  out->cfg = hc.lm;
  out->layer = qs_calloc((size_t)hc.lm.layers, sizeof *out->layer);
  out->storage = ls.st;
  out->release = release_checkpoint;
  ok = load_weights(&ls, &hc, out, err);
  free(ls.converted);
  /* the mappings now belong to the model */
  ls.st->files = ls.src.files;
  ls.st->nfiles = ls.src.nfiles;
  ls.src.files = NULL;
  ls.src.nfiles = 0;
  for (size_t i = 0; i < ls.st->nfiles; i++) free(ls.src.file_names[i]);
  sources_free(&ls.src);
  if (!ok) release_checkpoint(out);
  return ok;
}
