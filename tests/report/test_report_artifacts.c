/* Data model, JSON layout, number formats, sort orders and the spec's real
 * example row (quant-and-scoring.md §4.4-4.6, §6). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/strbuf.h"
#include "report/artifacts.h"
#include "report/json_writer.h"
#include "synthetic_cell.h"

/* Expected texts are what python3 json.dumps(obj, indent=2) prints. */
static void test_json_writer(void) {
  qs_jw w = {0};
  qs_jw_begin_object(&w);
  qs_jw_key(&w, "empty_list"), qs_jw_begin_array(&w), qs_jw_end_array(&w);
  qs_jw_key(&w, "empty_obj"), qs_jw_begin_object(&w), qs_jw_end_object(&w);
  qs_jw_key(&w, "s\xc3\xa9"), qs_jw_string(&w, "a\"b\\c\n\t\x01\x7f\xf0\x9f\x98\x80\xff/");
  qs_jw_key(&w, "nums");
  qs_jw_begin_array(&w);
  qs_jw_float(&w, 1e-05), qs_jw_float(&w, 24903680.0), qs_jw_float(&w, 6.414685052025249e-07);
  qs_jw_float(&w, 0.00011332546546327649), qs_jw_float(&w, 1e16), qs_jw_float(&w, NAN);
  qs_jw_int(&w, -3), qs_jw_bool(&w, false), qs_jw_null(&w);
  qs_jw_begin_array(&w), qs_jw_int(&w, 1), qs_jw_end_array(&w);
  qs_jw_end_array(&w);
  qs_jw_end_object(&w);
  CHECK_STR(qs_sb_str(&w.out),
            "{\n  \"empty_list\": [],\n  \"empty_obj\": {},\n  \"s\\u00e9\": "
            "\"a\\\"b\\\\c\\n\\t\\u0001\\u007f\\ud83d\\ude00\\ufffd/\",\n  \"nums\": [\n"
            "    1e-05,\n    24903680.0,\n    6.414685052025249e-07,\n"
            "    0.00011332546546327649,\n    1e+16,\n    NaN,\n    -3,\n    false,\n"
            "    null,\n    [\n      1\n    ]\n  ]\n}");
  qs_sb_free(&w.out);
}

static void test_groups(const qs_cell *cell) {
  CHECK_INT(cell->ngroups, SYNTH_GROUPS);
  CHECK_STR(cell->scheme, "wint8_aint8_autoquant_lm"); /* identity from qs_cell_set_pair */
  CHECK_STR(cell->weight_format, "int8");
  CHECK_STR(cell->act_format, "int8");
  CHECK_STR(cell->run.act_amax, "static");
  CHECK_STR(cell->formats[0].display, "INT8_DEFAULT_CFG(effective-bits: 8.0)");
  CHECK(cell->formats[0].bits == 8.0);
  const qs_cell_group *q0 = &cell->groups[0], *gate6 = &cell->groups[4 * 6 + 2];
  CHECK_STR(q0->handle, "language_model.layers.0.self_attn.q_proj");
  CHECK_INT(q0->nmembers, 3);
  CHECK_INT(q0->numel, 15728640);
  CHECK_STR(cell->groups[1].handle, "language_model.layers.0.self_attn.o_proj");
  CHECK_STR(gate6->handle, "language_model.layers.6.mlp.gate_proj");
  CHECK_INT(gate6->nchoices, 2);
  CHECK(gate6->costs[0] == 24903680.0 && gate6->costs[1] == 49807360.0);
  CHECK(gate6->scores[0] == SYNTH_GATE6_SCORE && gate6->scores[1] == 0.0);
  const qs_cell_group *head = &cell->groups[SYNTH_GROUPS - 1];
  CHECK_STR(head->handle, "lm_head");
  CHECK_INT(head->nchoices, 1);
  CHECK_STR(head->formats[0], "NONE(effective-bits: 16.0)");
  long long total = 0;
  for (size_t g = 0; g < cell->ngroups; g++) total += cell->groups[g].numel;
  CHECK_INT(total, 3633315840LL + 388956160LL);
  CHECK(cell->search.cost_denominator == (double)total);
  CHECK(cell->search.is_satisfied);
  CHECK(cell->search.effective_bits <= 9.0 && cell->search.effective_bits > 8.0);
  CHECK(cell->search.front.n >= 2);
}

/* Stable orders: ascending ranking and descending tables keep group order on ties. */
static void test_orders(const qs_cell *cell) {
  size_t asc[SYNTH_GROUPS], desc[SYNTH_GROUPS];
  qs_cell_group_order(cell, false, asc);
  qs_cell_group_order(cell, true, desc);
  for (size_t i = 1; i < cell->ngroups; i++) {
    double a0 = qs_group_importance(&cell->groups[asc[i - 1]]);
    double a1 = qs_group_importance(&cell->groups[asc[i]]);
    CHECK(a0 < a1 || (a0 == a1 && asc[i - 1] < asc[i]));
    double d0 = qs_group_importance(&cell->groups[desc[i - 1]]);
    double d1 = qs_group_importance(&cell->groups[desc[i]]);
    CHECK(d0 > d1 || (d0 == d1 && desc[i - 1] < desc[i]));
  }
  CHECK_INT(desc[0], 4 * 6 + 2); /* the real layer-6 gate_proj score is the largest */
  CHECK_INT(asc[0], 1);          /* first zero: layer 0 o_proj, then the other zeros */
  CHECK_INT(asc[1], 9);          /* layer 2 o_proj */
}

static void check_contains(const char *text, const char *needle, const char *what) {
  check_count_++;
  if (!strstr(text, needle)) {
    check_failures_++;
    fprintf(stderr, "%s lacks:\n%s\n", what, needle);
  }
}

static void test_manifest(const qs_cell *cell) {
  char *m = qs_render_manifest(cell);
  check_contains(m,
                 "    \"language_model.layers.6.mlp.gate_proj.quant_recipe\": {\n"
                 "      \"formats\": [\n"
                 "        \"INT8_DEFAULT_CFG(effective-bits: 8.0)\",\n"
                 "        \"NONE(effective-bits: 16.0)\"\n"
                 "      ],\n"
                 "      \"scores\": [\n        63.30435574054718,\n        0.0\n      ],\n"
                 "      \"costs\": [\n        24903680.0,\n        49807360.0\n      ],\n"
                 "      \"importance\": 63.30435574054718,\n"
                 "      \"rank\": 145\n"
                 "    },\n",
                 "manifest");
  check_contains(m,
                 "    \"lm_head.quant_recipe\": {\n      \"formats\": [\n"
                 "        \"NONE(effective-bits: 16.0)\"\n      ],\n      \"scores\": [\n"
                 "        0.0\n      ],\n      \"costs\": [\n        388956160.0\n      ],\n"
                 "      \"importance\": 0.0,\n",
                 "manifest");
  check_contains(m, "{\n  \"scheme\": {\n    \"name\": \"wint8_aint8_autoquant_lm\",\n"
                    "    \"auto_quantize_bits\": 9.0,\n", "manifest");
  check_contains(m, "  \"num_quantized_layers\": 253,\n", "manifest");
  check_contains(m, "  \"sensitivity_ranking\": [\n    {\n      \"name\": "
                    "\"language_model.layers.0.self_attn.o_proj.quant_recipe\",\n"
                    "      \"importance\": 0.0\n    },\n", "manifest");
  CHECK(m[strlen(m) - 1] == '}'); /* no trailing newline */
  free(m);
}

static void test_report_md_committed(qs_cell *cell) {
  cell->report_style = QS_REPORT_COMMITTED;
  char *md = qs_render_report_md(cell);
  const char *head =
      "\nAutoQuant Layer Sensitivity (wint8_aint8_autoquant_lm)\n"
      "======================================================\n\n\n"
      "**Scheme:** `wint8_aint8_autoquant_lm`\n\n"
      "**Model:** `/models/Qwen3-VL-4B-Instruct`\n\n"
      "\n## Dataset\n\n- Name: `coco2017_captions`\n- Size: `medium`\n";
  CHECK(strncmp(md, head, strlen(head)) == 0);
  char line[200];
  snprintf(line, sizeof line, "**Effective bits (from search):** `%.4f`\n\n",
           cell->search.effective_bits);
  check_contains(md, line, "report.md");
  snprintf(line, sizeof line, "**Total AutoQuant score:** `%.6e`\n\n", cell->search.best_score);
  check_contains(md, line, "report.md");
  check_contains(md, "**Constraint satisfied:** `True`\n## Per-layer sensitivity table\n\n\n- **Layer**",
                 "report.md");
  check_contains(md, "|Layer|Num Bits|Sensitivity|Size Cost|\n| :--- | :--- | :--- | :--- |\n"
                     "|language_model.layers.6.mlp.gate_proj|8.0|6.330e+01|2.490e+07|\n",
                 "report.md");
  check_contains(md, "|lm_head|16.0|0.000e+00|3.890e+08|\n", "report.md");
  /* Ties (layers 20-23 down_proj = 0.875) keep group order. */
  const char *d20 = strstr(md, "|language_model.layers.20.mlp.down_proj|8.0|8.750e-01|");
  const char *d23 = strstr(md, "|language_model.layers.23.mlp.down_proj|8.0|8.750e-01|");
  CHECK(d20 && d23 && d20 < d23);
  check_contains(md, "](layer-sensitivity-top.svg)\n", "report.md");
  CHECK(md[strlen(md) - 1] == '\n');
  free(md);
  char *svg = qs_render_top_chart(cell);
  check_contains(svg, ">language_model.layers.6.mlp.gate_proj</text>", "chart");
  check_contains(svg, ">6.330e+01</text>", "chart");
  free(svg);
}

static void test_report_json(const qs_cell *cell) {
  char *j = qs_render_report_json(cell);
  check_contains(j, "  \"layer_sensitivity\": [\n    {\n"
                    "      \"layer\": \"language_model.layers.6.mlp.gate_proj\",\n"
                    "      \"num_bits\": 8.0,\n      \"sensitivity\": 63.30435574054718,\n"
                    "      \"size_cost\": 24903680.0\n    },\n", "report.json");
  check_contains(j, "      \"layer\": \"lm_head\",\n      \"num_bits\": 16.0,\n"
                    "      \"sensitivity\": 0.0,\n      \"size_cost\": 388956160.0\n", "report.json");
  free(j);
}

/* One decoder layer under wfp4_afp8 (MXFP4 weights in blocks of 32, FP8
 * activations) with the activation amax overridden to static, scores chosen so
 * the table order is visible: gate/up > q/k/v > down > o (zero). */
static qs_cell *small_head_cell(void) {
  static const char *const kinds[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                      "mlp.down_proj"};
  static const double scores[] = {1.5, 0.25, 0.25, 0.0, 12.0, 4.0, 0.5};
  qs_cell *cell = qs_cell_new();
  qs_qpair pair;
  qs_error err = {0};
  CHECK(qs_qpair_parse("wfp4_afp8", &pair, &err));
  qs_cell_set_pair(cell, &pair, 0, false); /* the pair's default is dynamic: an override */
  qs_cell_set_str(&cell->model_id, "/m/tiny");
  cell->dataset = (qs_cell_dataset){.present = true, .max_calib_samples = 8, .num_calib_samples = 6,
                                    .calib_seq_len = 32, .batch_size = 2, .num_calib_batches = 3};
  qs_cell_set_str(&cell->dataset.name, "demo");
  qs_cell_set_str(&cell->dataset.size, "small");
  qs_cell_set_str(&cell->config_yaml, "quant_pair: wfp4_afp8\nautoquant:\n  report_style: head\n");
  char name[64];
  for (int k = 0; k < 7; k++) {
    snprintf(name, sizeof name, "layers.0.%s", kinds[k]);
    qs_cell_linear *lin = qs_cell_add_linear(cell, name, 1024);
    lin->raw_scores[0] = scores[k];
  }
  CHECK(qs_cell_finish(cell, 10.0, &err));
  return cell;
}

/* The whole HEAD-layout Markdown of a small cell (spec §6.3). */
static void test_report_head_small(void) {
  qs_cell *cell = small_head_cell();
  char *md = qs_render_report_md(cell);
  const char *want =
      "\n"
      "AutoQuant Layer Sensitivity (wfp4_afp8_autoquant_lm)\n"
      "====================================================\n"
      "\n"
      "\n"
      "## Summary\n"
      "\n"
      "|Key|Value|\n"
      "| :--- | :--- |\n"
      "|Scheme|`wfp4_afp8_autoquant_lm`|\n"
      "|Model|`/m/tiny`|\n"
      "|Effective bits (from search)|`9.1429`|\n"
      "|Total AutoQuant score|`2.000000e+00`|\n"
      "|Constraint satisfied|`True`|\n"
      "\n"
      "## Dataset\n"
      "\n"
      "|Key|Value|\n"
      "| :--- | :--- |\n"
      "|Name|`demo`|\n"
      "|Size|`small`|\n"
      "|Calibration samples|`6` / `8`|\n"
      "|Calibration seq len|`32`|\n"
      "|Batch size|`2`|\n"
      "|Calibration batches|`3`|\n"
      "\n"
      "## Quantization\n"
      "\n"
      "- Base format: `W4A8_MXFP4_FP8_CFG`\n"
      "- Formats: `W=mxfp4 (4-bit, block 32)` / `A=fp8 (8-bit, per_tensor)`\n"
      "- Granularity: `block32`\n"
      "- Activation amax: `static`\n"
      "- Overrides: see `quant_cfg_overrides`\n"
      "\n"
      "```json\n"
      "{\n"
      "  \"quantization\": {\n"
      "    \"base_format_name\": \"W4A8_MXFP4_FP8_CFG\",\n"
      "    \"quant_granularity\": {\n"
      "      \"name\": \"block32\",\n"
      "      \"quant_cfg_overrides\": {\n"
      "        \"*input_quantizer\": {\n"
      "          \"amax\": \"static\"\n"
      "        }\n"
      "      }\n"
      "    },\n"
      "    \"effective_quantizer_summary\": {\n"
      "      \"*weight_quantizer\": {\n"
      "        \"enable\": true,\n"
      "        \"format\": \"mxfp4\",\n"
      "        \"num_bits\": 4,\n"
      "        \"granularity\": \"block\",\n"
      "        \"block_size\": 32,\n"
      "        \"amax\": \"none\"\n"
      "      },\n"
      "      \"*input_quantizer\": {\n"
      "        \"enable\": true,\n"
      "        \"format\": \"fp8\",\n"
      "        \"num_bits\": 8,\n"
      "        \"granularity\": \"per_tensor\",\n"
      "        \"amax\": \"static\"\n"
      "      }\n"
      "    }\n"
      "  }\n"
      "}\n"
      "```\n"
      "\n"
      "## Layer Sensitivity Table\n"
      "\n"
      "- **Layer**: the search group, named after its first Linear (all members share one recipe).\n"
      "- **Num Bits**: effective bits of the candidate quantization format.\n"
      "- **Sensitivity**: AutoQuant gradient score of that format; higher means quantizing the group hurts the loss more.\n"
      "- **Size Cost**: weight size of the group in that format (elements x bits / 16).\n"
      "\n"
      "Note: layer names are the AutoQuant recipe keys without their `.quant_recipe` suffix; rows are sorted by sensitivity, most sensitive first, and a layer offered only NONE is listed at 16 bits with zero sensitivity.\n"
      "\n"
      "|Layer|Num Bits|Sensitivity|Size Cost|\n"
      "| :--- | :--- | :--- | :--- |\n"
      "|layers.0.mlp.gate_proj|4.0|1.600e+01|5.120e+02|\n"
      "|layers.0.self_attn.q_proj|4.0|2.000e+00|7.680e+02|\n"
      "|layers.0.mlp.down_proj|4.0|5.000e-01|2.560e+02|\n"
      "|layers.0.self_attn.o_proj|4.0|0.000e+00|2.560e+02|\n"
      "\n"
      "## Sensitivity by module type\n"
      "\n"
      "|Module type|Groups|Total sensitivity|Max sensitivity|Share|\n"
      "| :--- | ---: | ---: | ---: | ---: |\n"
      "|q_proj|1|2.000e+00|2.000e+00|10.8%|\n"
      "|o_proj|1|0.000e+00|0.000e+00|0.0%|\n"
      "|gate_proj|1|1.600e+01|1.600e+01|86.5%|\n"
      "|down_proj|1|5.000e-01|5.000e-01|2.7%|\n"
      "\n"
      "## Most sensitive groups\n"
      "\n"
      "![Top 20 groups by sensitivity](layer-sensitivity-top.svg)\n"
      "\n"
      "## Composed Config (`composed-config.yaml`)\n"
      "\n"
      "```yaml\n"
      "quant_pair: wfp4_afp8\n"
      "autoquant:\n"
      "  report_style: head\n"
      "```\n";
  CHECK_STR(md, want);
  free(md);
  qs_cell_free(cell);
}

/* Grouping errors name the Linear. */
static void test_bad_groups(void) {
  qs_cell *cell = qs_cell_new();
  qs_cell_add_format(cell, "FP8_DEFAULT_CFG", "FP8_DEFAULT_CFG(effective-bits: 8.0)", 8.0);
  qs_cell_add_linear(cell, "model.language_model.layers.0.self_attn.q_proj", 16);
  qs_cell_add_linear(cell, "model.language_model.layers.0.self_attn.v_proj", 16);
  qs_error err = {0};
  CHECK(!qs_cell_finish(cell, 8.0, &err));
  CHECK(strstr(err.msg, "layers.0.self_attn.q_proj.quant_recipe lacks its k_proj") != NULL);
  qs_cell_free(cell);
  cell = qs_cell_new();
  qs_cell_add_format(cell, "FP8_DEFAULT_CFG", "FP8_DEFAULT_CFG(effective-bits: 8.0)", 8.0);
  qs_cell_add_linear(cell, "model.visual.merger.fc1", 16);
  CHECK(!qs_cell_finish(cell, 8.0, &err));
  CHECK_STR(err.msg, "Linear model.visual.merger.fc1 does not start a search group (§4.4)");
  qs_cell_free(cell);
}

/* Infeasible budgets fail with status 2 and leave no selection. */
static void test_infeasible(void) {
  qs_cell *cell = synth_cell_new();
  qs_error err = {0};
  CHECK(!qs_cell_finish(cell, 4.0, &err));
  CHECK_INT(err.status, QS_EXIT_USAGE);
  CHECK(!cell->search.is_satisfied);
  CHECK_INT(cell->groups[0].chosen, -1);
  qs_cell_free(cell);
}

int main(void) {
  test_json_writer();
  qs_cell *cell = synth_cell_finished(9.0);
  test_groups(cell);
  test_orders(cell);
  test_manifest(cell);
  test_report_md_committed(cell);
  test_report_json(cell);
  qs_cell_free(cell);
  test_report_head_small();
  test_bad_groups();
  test_infeasible();
  return check_summary("test_report_artifacts");
}
