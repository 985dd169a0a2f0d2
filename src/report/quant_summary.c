/* Quantization description of a cell (§6.2 `quantization`, §6.3 HEAD layout). */
#include "report/quant_summary.h"

#include <string.h>

#include "quant/format.h"

/* The cell's pair, parsed again from its name: the registry is the source of
 * truth for granularity and block sizes. */
static bool cell_pair(const qs_cell *cell, qs_qpair *pair) {
  return cell->pair && qs_qpair_parse(cell->pair, pair, NULL);
}

bool qs_quant_summary_known(const qs_cell *cell) {
  qs_qpair pair;
  return cell_pair(cell, &pair);
}

/* "per_tensor", "per_channel" or "block" for one role of a quantized format. */
static const char *granularity_name(const qs_qformat *fmt, bool weight) {
  if (qs_qformat_role_block(fmt, weight) > 0) return "block";
  qs_qgran gran = weight ? fmt->weight_amax : fmt->act_amax;
  return gran == QS_GRAN_CHANNEL ? "per_channel" : "per_tensor";
}

/* Activation amax mode as recorded in the run ("static" | "dynamic"). */
static const char *act_amax_mode(const qs_cell *cell, const qs_qpair *pair) {
  if (cell->run.act_amax) return cell->run.act_amax;
  return pair->dynamic_act_amax ? "dynamic" : "static";
}

/* The only setting a run may change against the pair's ModelOpt config is the
 * activation amax mode (§2 `act_amax`); it is an override when it differs. */
static bool act_amax_overridden(const qs_cell *cell, const qs_qpair *pair) {
  if (pair->act->kind == QS_QK_NONE || !cell->run.act_amax) return false;
  return strcmp(cell->run.act_amax, pair->dynamic_act_amax ? "dynamic" : "static") != 0;
}

/* "per_channel", "block32", ...: the weight granularity names the recipe. */
static void granularity_label(qs_strbuf *b, const qs_qformat *weight) {
  int block = qs_qformat_role_block(weight, true);
  if (block > 0)
    qs_sb_printf(b, "block%d", block);
  else
    qs_sb_append(b, granularity_name(weight, true));
}

static void jw_quantizer(qs_jw *w, const char *key, const qs_qformat *fmt, bool weight, const char *amax) {
  qs_jw_key(w, key);
  qs_jw_begin_object(w);
  qs_jw_key(w, "enable"), qs_jw_bool(w, fmt->kind != QS_QK_NONE);
  if (fmt->kind != QS_QK_NONE) {
    qs_jw_key(w, "format"), qs_jw_string(w, fmt->name);
    qs_jw_key(w, "num_bits"), qs_jw_int(w, fmt->bits);
    qs_jw_key(w, "granularity"), qs_jw_string(w, granularity_name(fmt, weight));
    int block = qs_qformat_role_block(fmt, weight);
    if (block > 0) qs_jw_key(w, "block_size"), qs_jw_int(w, block);
    qs_jw_key(w, "amax"), qs_jw_string(w, amax);
  }
  qs_jw_end_object(w);
}

/* Static weight amax, none for formats that scale from each block's data. */
static const char *weight_amax_mode(const qs_qformat *weight) {
  return weight->weight_amax == QS_GRAN_NONE ? "none" : "static";
}

void qs_jw_quantization(qs_jw *w, const qs_cell *cell) {
  qs_qpair pair;
  if (!cell_pair(cell, &pair)) return;
  qs_strbuf label = {0};
  granularity_label(&label, pair.weight);
  qs_jw_key(w, "quantization");
  qs_jw_begin_object(w);
  qs_jw_key(w, "base_format_name"), qs_jw_string(w, pair.config_name);
  qs_jw_key(w, "quant_granularity");
  qs_jw_begin_object(w);
  qs_jw_key(w, "name"), qs_jw_string(w, qs_sb_str(&label));
  qs_jw_key(w, "quant_cfg_overrides");
  qs_jw_begin_object(w);
  if (act_amax_overridden(cell, &pair)) {
    qs_jw_key(w, "*input_quantizer");
    qs_jw_begin_object(w);
    qs_jw_key(w, "amax"), qs_jw_string(w, cell->run.act_amax);
    qs_jw_end_object(w);
  }
  qs_jw_end_object(w);
  qs_jw_end_object(w);
  qs_jw_key(w, "effective_quantizer_summary");
  qs_jw_begin_object(w);
  jw_quantizer(w, "*weight_quantizer", pair.weight, true, weight_amax_mode(pair.weight));
  jw_quantizer(w, "*input_quantizer", pair.act, false, act_amax_mode(cell, &pair));
  qs_jw_end_object(w);
  qs_jw_end_object(w);
  qs_sb_free(&label);
}

/* "int8 (8-bit, per_channel)", "mxfp4 (4-bit, block 32)", "none (16-bit)". */
static void md_format(qs_strbuf *b, const qs_qformat *fmt, bool weight) {
  qs_sb_printf(b, "%s (%d-bit", fmt->name, fmt->bits);
  if (fmt->kind != QS_QK_NONE) {
    int block = qs_qformat_role_block(fmt, weight);
    if (block > 0)
      qs_sb_printf(b, ", block %d", block);
    else
      qs_sb_printf(b, ", %s", granularity_name(fmt, weight));
  }
  qs_sb_putc(b, ')');
}

void qs_md_quantization(qs_strbuf *b, const qs_cell *cell) {
  qs_qpair pair;
  if (!cell_pair(cell, &pair)) return;
  qs_sb_append(b, "## Quantization\n\n");
  qs_sb_printf(b, "- Base format: `%s`\n", pair.config_name);
  qs_sb_append(b, "- Formats: `W=");
  md_format(b, pair.weight, true);
  qs_sb_append(b, "` / `A=");
  md_format(b, pair.act, false);
  qs_sb_append(b, "`\n- Granularity: `");
  granularity_label(b, pair.weight);
  qs_sb_append(b, "`\n");
  if (pair.act->kind != QS_QK_NONE) qs_sb_printf(b, "- Activation amax: `%s`\n", act_amax_mode(cell, &pair));
  qs_sb_printf(b, "- Overrides: %s\n", act_amax_overridden(cell, &pair) ? "see `quant_cfg_overrides`" : "none");
  /* ModelOpt accepts INT8 weights with FP8 activations only as a custom
   * format (its export mislabels it INT8_SQ): nothing can deploy it. */
  if (pair.weight->kind == QS_QK_INT && pair.weight->bits == 8 && pair.act->kind == QS_QK_FP8)
    qs_sb_append(b, "- Deployment: no deployment kernel exists for INT8 weights with FP8 activations; "
                    "these scores are for analysis only\n");
  qs_sb_putc(b, '\n');
  qs_jw w = {0};
  qs_jw_begin_object(&w);
  qs_jw_quantization(&w, cell);
  qs_jw_end_object(&w);
  qs_sb_printf(b, "```json\n%s\n```\n\n", qs_sb_str(&w.out));
  qs_sb_free(&w.out);
}
