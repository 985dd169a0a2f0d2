/* Loading good checkpoints: both RoPE layouts, the six tie rows, shards,
 * F32/F16 conversion, plain Qwen3, and the warnings of spec §1–2. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/mem.h"
#include "fixture.h"

static qs_strbuf warnings;

/* Every LM tensor holds fx_value(i, e) (exact in every dtype, so no tolerance). */
static void check_values(const qs_lm *lm, const char *prefix) {
  size_t n = qs_lm_tensor_list(&lm->cfg, prefix, false, NULL, 0);
  qs_lm_tensor *list = qs_malloc(n * sizeof *list);
  qs_lm_tensor_list(&lm->cfg, prefix, false, list, n);
  qs_lm copy = *lm;
  for (size_t i = 0; i < n; i++) {
    const qs_bf16 *data = *qs_lm_slot(&copy, &list[i]);
    uint64_t numel = list[i].ndim == 2 ? list[i].shape[0] * list[i].shape[1] : list[i].shape[0];
    int bad = 0;
    for (uint64_t e = 0; e < numel; e++) bad += qs_bf16_to_f32(data[e]) != fx_value(i, e);
    CHECK_INT(bad, 0);
  }
  free(list);
}

static void check_head_is(const qs_lm *lm, size_t value_index) {
  int bad = 0;
  for (uint64_t e = 0; e < 16 * 8; e++) bad += qs_bf16_to_f32(lm->lm_head[e]) != fx_value(value_index, e);
  CHECK_INT(bad, 0);
}

/* Number of the lm_head tensor in the fixture list (after all others). */
static size_t head_index(void) {
  qs_lm_config c = fx_lm_config();
  return qs_lm_tensor_list(&c, QS_PREFIX_QWEN3_VL, false, NULL, 0);
}

static void test_layout_a(void) {
  fx_options o = fx_defaults();
  fx_write("ck_layout_a", &o, NULL);
  qs_lm lm;
  qs_error err;
  CHECK_INT(fx_load("ck_layout_a", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings), "");
  CHECK_INT(lm.cfg.hidden, 8);
  CHECK_INT(lm.cfg.intermediate, 16);
  CHECK_INT(lm.cfg.layers, 2);
  CHECK_INT(lm.cfg.heads, 2);
  CHECK_INT(lm.cfg.kv_heads, 1);
  CHECK_INT(lm.cfg.head_dim, 4);
  CHECK_INT(lm.cfg.vocab, 16);
  CHECK_INT(lm.cfg.max_positions, 262144);
  CHECK(lm.cfg.rope_theta == 5e6);
  CHECK(lm.cfg.rms_eps == 1e-6);
  CHECK(lm.cfg.tied);
  CHECK(lm.lm_head == lm.embed);
  check_values(&lm, QS_PREFIX_QWEN3_VL);
  int out, in;
  CHECK(qs_lm_linear_weight(&lm, 1, QS_LIN_O, &out, &in) == lm.layer[1].o);
  CHECK_INT(out, 8);
  CHECK_INT(in, 8);
  qs_lm_release(&lm);
  CHECK(lm.embed == NULL);
}

static void test_layout_b(void) {
  fx_options o = fx_defaults();
  o.layout = FX_LAYOUT_B;
  fx_write("ck_layout_b", &o, NULL);
  qs_lm lm;
  qs_error err;
  CHECK_INT(fx_load("ck_layout_b", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings), "");
  CHECK(lm.cfg.rope_theta == 250000.0);
  check_values(&lm, QS_PREFIX_QWEN3_VL);
  qs_lm_release(&lm);
}

/* §1.3, one row at a time: flags, lm_head presence -> which matrix, warnings. */
typedef struct tie_row {
  int tie_top, tie_text;
  bool lm_head, differs;
  int status;          /* 0 or the error status */
  bool tied;
  const char *message; /* warnings (success) or the error */
} tie_row;

static void test_tie_rows(void) {
  const tie_row rows[] = {
      {1, 1, false, false, 0, true, ""},
      {1, 1, true, false, 0, true, ""},
      {1, 1, true, true, 0, true,
       "ck_tie/model.safetensors: lm_head.weight differs from model.language_model.embed_tokens.weight; "
       "tie_word_embeddings is true, so embed_tokens serves as lm_head\n"},
      {0, 0, true, true, 0, false, ""},
      {0, 0, false, false, 1, false,
       "ck_tie/model.safetensors: tensor 'lm_head.weight' is missing and tie_word_embeddings is not true in "
       "config.json"},
      {-1, 0, true, true, 0, false, ""},
      {-1, 1, false, false, 0, true, ""},
      {-1, 0, false, false, 1, false,
       "ck_tie/model.safetensors: tensor 'lm_head.weight' is missing and tie_word_embeddings is not true in "
       "config.json"},
      /* transformers 5.x: top-level true with text false is tied; the disagreement is reported */
      {1, 0, false, false, 0, true,
       "ck_tie/config.json: tie_word_embeddings is true at the top level but false in text_config; the top level "
       "decides\n"},
      {0, 1, true, true, 0, false,
       "ck_tie/config.json: tie_word_embeddings is false at the top level but true in text_config; the top level "
       "decides\n"},
  };
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
    fx_options o = fx_defaults();
    o.tie_top = rows[r].tie_top;
    o.tie_text = rows[r].tie_text;
    o.lm_head = rows[r].lm_head;
    o.lm_head_differs = rows[r].differs;
    fx_write("ck_tie", &o, NULL);
    qs_lm lm;
    qs_error err;
    int status = fx_load("ck_tie", &lm, &err, &warnings);
    CHECK_INT(status, rows[r].status);
    if (status) {
      CHECK_STR(err.msg, rows[r].message);
      continue;
    }
    CHECK_STR(qs_sb_str(&warnings), rows[r].message);
    CHECK_INT(lm.cfg.tied, rows[r].tied);
    CHECK(rows[r].tied ? lm.lm_head == lm.embed : lm.lm_head != lm.embed);
    check_head_is(&lm, rows[r].tied || !rows[r].differs ? 0 : head_index());
    qs_lm_release(&lm);
  }
}

static void test_sharded(void) {
  fx_options o = fx_defaults();
  o.shards = 3;
  o.visual = true;
  o.tie_top = o.tie_text = 0;
  o.lm_head = o.lm_head_differs = true;
  fx_write("ck_sharded", &o, NULL);
  qs_lm lm;
  qs_error err;
  CHECK_INT(fx_load("ck_sharded", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings), "");
  check_values(&lm, QS_PREFIX_QWEN3_VL);
  check_head_is(&lm, head_index());
  CHECK(!lm.cfg.tied);
  qs_lm_release(&lm);
}

static void test_converted(qs_st_dtype dtype) {
  fx_options o = fx_defaults();
  o.dtype = dtype;
  fx_write("ck_converted", &o, NULL);
  qs_lm lm;
  qs_error err;
  CHECK_INT(fx_load("ck_converted", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings),
            "ck_converted/model.safetensors: 24 tensors stored as F32/F16 were converted to bf16 (round to nearest "
            "even)\n");
  check_values(&lm, QS_PREFIX_QWEN3_VL);
  qs_lm_release(&lm);
}

static void test_plain_qwen3(void) {
  fx_options o = fx_defaults();
  o.layout = FX_LAYOUT_QWEN3;
  o.tie_top = 0;
  o.lm_head = o.lm_head_differs = true;
  fx_write("ck_qwen3", &o, NULL);
  qs_lm lm;
  qs_error err;
  CHECK_INT(fx_load("ck_qwen3", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings), "");
  CHECK(lm.cfg.rope_theta == 1e6);
  CHECK(!lm.cfg.tied);
  check_values(&lm, QS_PREFIX_QWEN3);
  check_head_is(&lm, head_index());
  qs_lm_release(&lm);
}

static void add_unknown_tensors(json_t *header, void *ctx) {
  size_t payload = *(size_t *)ctx;
  json_object_set_new(header, "extra.bias",
                      json_pack("{s:s,s:[i],s:[I,I]}", "dtype", "BF16", "shape", 1, "data_offsets",
                                (json_int_t)payload, (json_int_t)payload + 2));
  json_object_set_new(header, "model.language_model.rotary_emb.inv_freq",
                      json_pack("{s:s,s:[i],s:[I,I]}", "dtype", "F32", "shape", 1, "data_offsets",
                                (json_int_t)payload + 2, (json_int_t)payload + 6));
}

/* Unknown names outside the LM prefix warn; rotary caches and the vision tower
 * are skipped silently; the odd header length forces realigned copies. */
static void test_unknown_tensor_warns(void) {
  fx_options o = fx_defaults();
  o.visual = true;
  fx_write("ck_unknown", &o, NULL);
  qs_st_file f;
  qs_error err;
  CHECK(qs_st_open("ck_unknown/model.safetensors", &f, &err));
  size_t payload = (size_t)f.payload_size;
  qs_st_close(&f);
  fx_edit_header("ck_unknown/model.safetensors", add_unknown_tensors, &payload, 6);
  qs_lm lm;
  CHECK_INT(fx_load("ck_unknown", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings), "ck_unknown/model.safetensors: ignoring unknown tensor 'extra.bias'\n");
  CHECK((uintptr_t)lm.embed % 2 == 0);
  check_values(&lm, QS_PREFIX_QWEN3_VL);
  qs_lm_release(&lm);
}

static void unlist_visual(json_t *root, void *ctx) {
  (void)ctx;
  json_object_del(json_object_get(root, "weight_map"), "model.visual.blocks.0.attn.qkv.weight");
  json_object_set_new(json_object_get(root, "metadata"), "total_size", json_integer(12345));
}

static void test_index_warnings(void) {
  fx_options o = fx_defaults();
  o.shards = 2;
  o.visual = true;
  fx_write("ck_index_warn", &o, NULL);
  fx_edit_json("ck_index_warn/model.safetensors.index.json", unlist_visual, NULL);
  qs_lm lm;
  qs_error err;
  CHECK_INT(fx_load("ck_index_warn", &lm, &err, &warnings), 0);
  /* shards: 1336 bf16 elements (embed 128, 2 layers x 600, norm 8) + 48 + 12 vision bytes = 2732 */
  CHECK_STR(qs_sb_str(&warnings),
            "ck_index_warn/model.safetensors.index.json: metadata.total_size is 12345 but the shards hold 2732 bytes "
            "of tensors\n"
            "ck_index_warn/model-00002-of-00002.safetensors: tensor 'model.visual.blocks.0.attn.qkv.weight' is not "
            "listed in ck_index_warn/model.safetensors.index.json\n");
  qs_lm_release(&lm);
}

static void drop_head_dim(json_t *root, void *ctx) {
  (void)ctx;
  json_object_del(json_object_get(root, "text_config"), "head_dim");
  json_object_set_new(json_object_get(json_object_get(root, "text_config"), "rope_scaling"), "mrope_section",
                      json_pack("[i,i,i]", 24, 20, 20));
}

/* Without head_dim the HF default 128 applies (with a warning), which these
 * files contradict: the shape error names the first tensor that disagrees. */
static void test_head_dim_default(void) {
  fx_options o = fx_defaults();
  fx_write("ck_head_dim", &o, NULL);
  fx_edit_json("ck_head_dim/config.json", drop_head_dim, NULL);
  qs_lm lm;
  qs_error err;
  CHECK_INT(fx_load("ck_head_dim", &lm, &err, &warnings), 1);
  CHECK_STR(qs_sb_str(&warnings), "ck_head_dim/config.json: key 'text_config.head_dim' is missing; using 128\n");
  CHECK_STR(err.msg,
            "ck_head_dim/model.safetensors: tensor 'model.language_model.layers.0.self_attn.q_proj.weight' has "
            "shape [8, 8], config.json implies [256, 8]");
}

static void test_mrope_warning(void) {
  fx_options o = fx_defaults();
  o.layout = FX_LAYOUT_B;
  json_t *cfg = fx_config(&o);
  json_object_set_new(json_object_get(json_object_get(cfg, "text_config"), "rope_parameters"), "mrope_section",
                      json_pack("[i,i,i]", 24, 20, 20));
  fx_write("ck_mrope", &o, cfg);
  qs_lm lm;
  qs_error err;
  CHECK_INT(fx_load("ck_mrope", &lm, &err, &warnings), 0);
  CHECK_STR(qs_sb_str(&warnings),
            "ck_mrope/config.json: 'text_config.rope_parameters.mrope_section' sums to 64, not head_dim/2 = 2 "
            "(unused for text)\n");
  qs_lm_release(&lm);
}

int main(void) {
  test_layout_a();
  test_layout_b();
  test_tie_rows();
  test_sharded();
  test_converted(QS_ST_F32);
  test_converted(QS_ST_F16);
  test_plain_qwen3();
  test_unknown_tensor_warns();
  test_index_warnings();
  test_head_dim_default();
  test_mrope_warning();
  qs_sb_free(&warnings);
  return check_summary("test_checkpoint");
}
