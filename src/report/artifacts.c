/* Manifest, reports, chart and state file of one cell (spec §6.1-6.5). */
#include "report/artifacts.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "report/json_writer.h"
#include "report/quant_summary.h"

/* ---- shared JSON blocks ---------------------------------------------------- */

static void jw_recipe_key(qs_jw *w, const qs_cell_group *g) {
  char *key = qs_group_recipe_name(g);
  qs_jw_key(w, key);
  free(key);
}

static void jw_string_list(qs_jw *w, char *const *items, size_t n) {
  qs_jw_begin_array(w);
  for (size_t i = 0; i < n; i++) qs_jw_string(w, items[i]);
  qs_jw_end_array(w);
}

static void jw_float_list(qs_jw *w, const double *v, size_t n) {
  qs_jw_begin_array(w);
  for (size_t i = 0; i < n; i++) qs_jw_float(w, v[i]);
  qs_jw_end_array(w);
}

static void jw_scheme(qs_jw *w, const qs_cell *cell) {
  qs_jw_key(w, "scheme");
  qs_jw_begin_object(w);
  qs_jw_key(w, "name"), qs_jw_string(w, cell->scheme);
  qs_jw_key(w, "auto_quantize_bits"), qs_jw_float(w, cell->search.requested_bits);
  qs_jw_key(w, "auto_quantize_method"), qs_jw_string(w, "gradient");
  qs_jw_key(w, "auto_quantize_score_size"), qs_jw_int(w, cell->score_size);
  qs_jw_key(w, "coverage_mode"), qs_jw_string(w, cell->coverage_mode);
  qs_jw_key(w, "coverage_fraction"), qs_jw_float(w, 1.0);
  qs_jw_key(w, "quant_formats");
  qs_jw_begin_array(w);
  for (size_t f = 0; f < cell->nformats; f++) qs_jw_string(w, cell->formats[f].config_name);
  qs_jw_end_array(w);
  qs_jw_end_object(w);
}

static void jw_model(qs_jw *w, const qs_cell *cell) {
  qs_jw_key(w, "model");
  qs_jw_begin_object(w);
  qs_jw_key(w, "id"), qs_jw_string(w, cell->model_id);
  qs_jw_end_object(w);
}

static void jw_opt_str(qs_jw *w, const char *key, const char *v) {
  if (v) qs_jw_key(w, key), qs_jw_string(w, v);
}

static void jw_opt_int(qs_jw *w, const char *key, long long v) {
  if (v >= 0) qs_jw_key(w, key), qs_jw_int(w, v);
}

/* §6.2 dataset block, nulls dropped; nothing at all when absent. */
static void jw_dataset(qs_jw *w, const qs_cell *cell) {
  const qs_cell_dataset *d = &cell->dataset;
  if (!d->present) return;
  qs_jw_key(w, "dataset");
  qs_jw_begin_object(w);
  jw_opt_str(w, "name", d->name);
  jw_opt_str(w, "size", d->size);
  jw_opt_str(w, "root", d->root);
  jw_opt_str(w, "captions_path", d->captions_path);
  jw_opt_int(w, "max_calib_samples", d->max_calib_samples);
  jw_opt_int(w, "num_calib_samples", d->num_calib_samples);
  jw_opt_int(w, "calib_seq_len", d->calib_seq_len);
  jw_opt_int(w, "batch_size", d->batch_size);
  jw_opt_int(w, "num_calib_batches", d->num_calib_batches);
  qs_jw_end_object(w);
}

static void jw_effective_bits(qs_jw *w, double bits) {
  qs_jw_key(w, "constraints");
  qs_jw_begin_object(w);
  qs_jw_key(w, "effective_bits"), qs_jw_float(w, bits);
  qs_jw_end_object(w);
}

static void jw_autoquant_state(qs_jw *w, const qs_cell *cell) {
  static char *const keys[] = {"candidate_stats", "best", "constraints"};
  qs_jw_key(w, "autoquant_state");
  qs_jw_begin_object(w);
  qs_jw_key(w, "keys"), jw_string_list(w, keys, 3);
  jw_effective_bits(w, cell->search.effective_bits);
  qs_jw_key(w, "score"), qs_jw_float(w, cell->search.best_score);
  qs_jw_key(w, "is_satisfied"), qs_jw_bool(w, cell->search.is_satisfied);
  qs_jw_end_object(w);
}

/* §6.2/§6.4 optional HEAD keys: `quantization`, and `run_config` when the
 * composed config is published beside the reports. */
static void jw_head_keys(qs_jw *w, const qs_cell *cell) {
  if (cell->report_style != QS_REPORT_HEAD) return;
  if (qs_quant_summary_known(cell)) qs_jw_quantization(w, cell);
  if (!cell->config_yaml) return;
  qs_jw_key(w, "run_config");
  qs_jw_begin_object(w);
  qs_jw_key(w, "composed_yaml_path"), qs_jw_string(w, QS_COMPOSED_CONFIG_NAME);
  qs_jw_end_object(w);
}

static char *jw_finish(qs_jw *w) { return qs_sb_take(&w->out); }

/* ---- manifest (§6.2) ------------------------------------------------------- */

/* rank[g] = 1 + position of group g in the ascending, stable ranking. */
static size_t *ranks_of(const qs_cell *cell, size_t *ascending) {
  size_t *rank = qs_calloc(cell->ngroups ? cell->ngroups : 1, sizeof *rank);
  qs_cell_group_order(cell, false, ascending);
  for (size_t i = 0; i < cell->ngroups; i++) rank[ascending[i]] = i + 1;
  return rank;
}

static void jw_layers(qs_jw *w, const qs_cell *cell) {
  qs_jw_key(w, "num_quantized_layers"), qs_jw_int(w, (long long)cell->nlinears);
  qs_jw_key(w, "layers");
  qs_jw_begin_object(w);
  for (size_t i = 0; i < cell->nlinears; i++) {
    qs_jw_key(w, cell->linears[i].name);
    qs_jw_begin_object(w);
    qs_jw_key(w, "quantized"), qs_jw_bool(w, true);
    qs_jw_key(w, "module_type"), qs_jw_string(w, "QuantLinear");
    qs_jw_end_object(w);
  }
  qs_jw_end_object(w);
}

char *qs_render_manifest(const qs_cell *cell) {
  qs_jw w = {0};
  size_t *ascending = qs_calloc(cell->ngroups ? cell->ngroups : 1, sizeof *ascending);
  size_t *rank = ranks_of(cell, ascending);
  qs_jw_begin_object(&w);
  jw_scheme(&w, cell);
  jw_model(&w, cell);
  jw_dataset(&w, cell);
  jw_layers(&w, cell);
  jw_autoquant_state(&w, cell);
  qs_jw_key(&w, "layer_sensitivity");
  qs_jw_begin_object(&w);
  for (size_t i = 0; i < cell->ngroups; i++) {
    const qs_cell_group *g = &cell->groups[i];
    jw_recipe_key(&w, g);
    qs_jw_begin_object(&w);
    qs_jw_key(&w, "formats"), jw_string_list(&w, g->formats, g->nchoices);
    qs_jw_key(&w, "scores"), jw_float_list(&w, g->scores, g->nchoices);
    qs_jw_key(&w, "costs"), jw_float_list(&w, g->costs, g->nchoices);
    qs_jw_key(&w, "importance"), qs_jw_float(&w, qs_group_importance(g));
    qs_jw_key(&w, "rank"), qs_jw_int(&w, (long long)rank[i]);
    qs_jw_end_object(&w);
  }
  qs_jw_end_object(&w);
  qs_jw_key(&w, "sensitivity_ranking");
  qs_jw_begin_array(&w);
  for (size_t i = 0; i < cell->ngroups; i++) {
    const qs_cell_group *g = &cell->groups[ascending[i]];
    qs_jw_begin_object(&w);
    char *name = qs_group_recipe_name(g);
    qs_jw_key(&w, "name"), qs_jw_string(&w, name);
    free(name);
    qs_jw_key(&w, "importance"), qs_jw_float(&w, qs_group_importance(g));
    qs_jw_end_object(&w);
  }
  qs_jw_end_array(&w);
  jw_head_keys(&w, cell);
  qs_jw_end_object(&w);
  free(rank);
  free(ascending);
  return jw_finish(&w);
}

/* ---- report JSON (§6.4) ---------------------------------------------------- */

/* Index of the first non-NONE choice; -1 for a NONE-only group. */
static int first_format(const qs_cell_group *g) { return g->nchoices > 1 ? 0 : -1; }

char *qs_render_report_json(const qs_cell *cell) {
  qs_jw w = {0};
  size_t *order = qs_calloc(cell->ngroups ? cell->ngroups : 1, sizeof *order);
  qs_cell_group_order(cell, true, order);
  qs_jw_begin_object(&w);
  jw_scheme(&w, cell);
  jw_model(&w, cell);
  jw_dataset(&w, cell);
  jw_autoquant_state(&w, cell);
  qs_jw_key(&w, "layer_sensitivity");
  qs_jw_begin_array(&w);
  for (size_t i = 0; i < cell->ngroups; i++) {
    const qs_cell_group *g = &cell->groups[order[i]];
    int k = first_format(g);
    qs_jw_begin_object(&w);
    qs_jw_key(&w, "layer"), qs_jw_string(&w, g->handle);
    qs_jw_key(&w, "num_bits"), qs_jw_float(&w, k < 0 ? 16.0 : g->bits[k]);
    qs_jw_key(&w, "sensitivity"), qs_jw_float(&w, k < 0 ? 0.0 : g->scores[k]);
    qs_jw_key(&w, "size_cost"), qs_jw_float(&w, k < 0 ? (double)g->numel : g->costs[k]);
    qs_jw_end_object(&w);
  }
  qs_jw_end_array(&w);
  jw_head_keys(&w, cell);
  qs_jw_end_object(&w);
  free(order);
  return jw_finish(&w);
}

/* ---- report Markdown (§6.3) ------------------------------------------------ */

/* Fixed prose of the committed layout (legend and note). */
static const char report_legend[] =
    "- **Layer**: the search group, named after its first Linear (all members share one recipe).\n"
    "- **Num Bits**: effective bits of the candidate quantization format.\n"
    "- **Sensitivity**: AutoQuant gradient score of that format; higher means quantizing the "
    "group hurts the loss more.\n"
    "- **Size Cost**: weight size of the group in that format (elements x bits / 16).";
static const char report_note[] =
    "Note: layer names are the AutoQuant recipe keys without their `.quant_recipe` suffix; rows "
    "are sorted by sensitivity, most sensitive first, and a layer offered only NONE is listed at "
    "16 bits with zero sensitivity.";

/* One "label: value" item of a Markdown block: a bullet in the committed
 * layout, a Key/Value table row in the HEAD layout. */
static void md_item(qs_strbuf *b, qs_report_style style, const char *label, const char *value) {
  qs_sb_printf(b, style == QS_REPORT_HEAD ? "|%s|%s|\n" : "- %s: %s\n", label, value);
}

static void md_item_str(qs_strbuf *b, qs_report_style style, const char *label, const char *v) {
  if (!v) return;
  qs_strbuf value = {0};
  qs_sb_printf(&value, "`%s`", v);
  md_item(b, style, label, qs_sb_str(&value));
  qs_sb_free(&value);
}

static void md_item_int(qs_strbuf *b, qs_report_style style, const char *label, long long v) {
  if (v < 0) return;
  qs_strbuf value = {0};
  qs_sb_printf(&value, "`%lld`", v);
  md_item(b, style, label, qs_sb_str(&value));
  qs_sb_free(&value);
}

static const char md_key_value_header[] = "|Key|Value|\n| :--- | :--- |\n";

/* The dataset block (§6.3), only when the cell has a dataset. */
static void md_dataset(qs_strbuf *b, const qs_cell_dataset *d, qs_report_style style) {
  if (!d->present) return;
  qs_sb_append(b, style == QS_REPORT_HEAD ? "## Dataset\n\n" : "\n## Dataset\n\n");
  if (style == QS_REPORT_HEAD) qs_sb_append(b, md_key_value_header);
  md_item_str(b, style, "Name", d->name);
  md_item_str(b, style, "Size", d->size);
  md_item_str(b, style, "Captions path", d->captions_path);
  md_item_str(b, style, "Root", d->root);
  if (d->num_calib_samples >= 0 || d->max_calib_samples >= 0) {
    qs_strbuf value = {0};
    if (d->num_calib_samples >= 0) qs_sb_printf(&value, "`%lld`", d->num_calib_samples);
    if (d->max_calib_samples >= 0)
      qs_sb_printf(&value, "%s`%lld`", d->num_calib_samples >= 0 ? " / " : "", d->max_calib_samples);
    md_item(b, style, "Calibration samples", qs_sb_str(&value));
    qs_sb_free(&value);
  }
  md_item_int(b, style, "Calibration seq len", d->calib_seq_len);
  md_item_int(b, style, "Batch size", d->batch_size);
  md_item_int(b, style, "Calibration batches", d->num_calib_batches);
  qs_sb_putc(b, '\n');
}

/* One table row: non-NONE formats comma-joined; a NONE-only group as 16.0 / 0 / numel. */
static void md_row(qs_strbuf *b, const qs_cell_group *g) {
  qs_sb_printf(b, "|%s|", g->handle);
  if (g->nchoices == 1) {
    qs_sb_printf(b, "16.0|%.3e|%.3e|\n", 0.0, (double)g->numel);
    return;
  }
  size_t n = g->nchoices - 1;
  for (size_t k = 0; k < n; k++) qs_sb_printf(b, "%s%.1f", k ? ", " : "", g->bits[k]);
  qs_sb_putc(b, '|');
  for (size_t k = 0; k < n; k++) qs_sb_printf(b, "%s%.3e", k ? ", " : "", g->scores[k]);
  qs_sb_putc(b, '|');
  for (size_t k = 0; k < n; k++) qs_sb_printf(b, "%s%.3e", k ? ", " : "", g->costs[k]);
  qs_sb_append(b, "|\n");
}

/* Kind of a group (its handle's last component): "down_proj". */
static const char *group_kind(const qs_cell_group *g) {
  const char *dot = strrchr(g->handle, '.');
  return dot ? dot + 1 : g->handle;
}

/* Per-module-type totals, types in order of first appearance. */
static void md_type_summary(qs_strbuf *b, const qs_cell *cell) {
  double total = 0.0;
  for (size_t i = 0; i < cell->ngroups; i++) total += qs_group_importance(&cell->groups[i]);
  qs_sb_append(b, "\n## Sensitivity by module type\n\n");
  qs_sb_append(b, "|Module type|Groups|Total sensitivity|Max sensitivity|Share|\n");
  qs_sb_append(b, "| :--- | ---: | ---: | ---: | ---: |\n");
  for (size_t i = 0; i < cell->ngroups; i++) {
    const char *kind = group_kind(&cell->groups[i]);
    bool seen = false;
    for (size_t j = 0; j < i && !seen; j++) seen = strcmp(group_kind(&cell->groups[j]), kind) == 0;
    if (seen) continue;
    size_t count = 0;
    double sum = 0.0, max = 0.0;
    for (size_t j = i; j < cell->ngroups; j++) {
      if (strcmp(group_kind(&cell->groups[j]), kind) != 0) continue;
      double s = qs_group_importance(&cell->groups[j]);
      count++, sum += s;
      if (s > max) max = s;
    }
    qs_sb_printf(b, "|%s|%zu|%.3e|%.3e|%.1f%%|\n", kind, count, sum, max,
                 total > 0.0 ? 100.0 * sum / total : 0.0);
  }
}

static void md_title(qs_strbuf *b, const qs_cell *cell) {
  qs_strbuf title = {0};
  qs_sb_printf(&title, "AutoQuant Layer Sensitivity (%s)", cell->scheme);
  qs_sb_printf(b, "\n%s\n", qs_sb_str(&title));
  for (size_t i = 0; i < title.len; i++) qs_sb_putc(b, '=');
  qs_sb_append(b, "\n\n\n");
  qs_sb_free(&title);
}

/* Legend, note and the rows sorted by sensitivity (both layouts). */
static void md_table(qs_strbuf *b, const qs_cell *cell) {
  qs_sb_printf(b, "%s\n\n%s\n\n", report_legend, report_note);
  qs_sb_append(b, "|Layer|Num Bits|Sensitivity|Size Cost|\n| :--- | :--- | :--- | :--- |\n");
  size_t *order = qs_calloc(cell->ngroups ? cell->ngroups : 1, sizeof *order);
  qs_cell_group_order(cell, true, order);
  for (size_t i = 0; i < cell->ngroups; i++) md_row(b, &cell->groups[order[i]]);
  free(order);
}

/* Per-module-type summary and the embedded top-k chart (both layouts). */
static void md_overview(qs_strbuf *b, const qs_cell *cell) {
  md_type_summary(b, cell);
  qs_sb_printf(b, "\n## Most sensitive groups\n\n![Top %d groups by sensitivity](%s)\n", QS_REPORT_TOP_K,
               QS_REPORT_CHART_NAME);
}

/* The published seed layout (mdutils): bold header lines, then the table. */
static void md_committed(qs_strbuf *b, const qs_cell *cell) {
  qs_sb_printf(b, "**Scheme:** `%s`\n\n", cell->scheme);
  qs_sb_printf(b, "**Model:** `%s`\n\n", cell->model_id ? cell->model_id : "");
  md_dataset(b, &cell->dataset, QS_REPORT_COMMITTED);
  qs_sb_printf(b, "**Effective bits (from search):** `%.4f`\n\n", cell->search.effective_bits);
  qs_sb_printf(b, "**Total AutoQuant score:** `%.6e`\n\n", cell->search.best_score);
  qs_sb_printf(b, "**Constraint satisfied:** `%s`\n", cell->search.is_satisfied ? "True" : "False");
  qs_sb_append(b, "## Per-layer sensitivity table\n\n\n");
  md_table(b, cell);
  md_overview(b, cell);
}

static void md_head_summary(qs_strbuf *b, const qs_cell *cell) {
  qs_strbuf v = {0};
  qs_sb_append(b, "## Summary\n\n");
  qs_sb_append(b, md_key_value_header);
  md_item_str(b, QS_REPORT_HEAD, "Scheme", cell->scheme);
  md_item_str(b, QS_REPORT_HEAD, "Model", cell->model_id ? cell->model_id : "");
  qs_sb_printf(&v, "%.4f", cell->search.effective_bits);
  md_item_str(b, QS_REPORT_HEAD, "Effective bits (from search)", qs_sb_str(&v));
  qs_sb_clear(&v);
  qs_sb_printf(&v, "%.6e", cell->search.best_score);
  md_item_str(b, QS_REPORT_HEAD, "Total AutoQuant score", qs_sb_str(&v));
  md_item_str(b, QS_REPORT_HEAD, "Constraint satisfied", cell->search.is_satisfied ? "True" : "False");
  qs_sb_putc(b, '\n');
  qs_sb_free(&v);
}

/* The resolved config as a yaml block (the same text as composed-config.yaml). */
static void md_composed_config(qs_strbuf *b, const char *yaml) {
  if (!yaml) return;
  size_t len = strlen(yaml);
  qs_sb_printf(b, "\n## Composed Config (`%s`)\n\n```yaml\n%s%s```\n", QS_COMPOSED_CONFIG_NAME, yaml,
               len && yaml[len - 1] == '\n' ? "" : "\n");
}

/* The HEAD layout: Summary, Dataset, Quantization, Layer Sensitivity Table,
 * Composed Config. */
static void md_head(qs_strbuf *b, const qs_cell *cell) {
  md_head_summary(b, cell);
  md_dataset(b, &cell->dataset, QS_REPORT_HEAD);
  qs_md_quantization(b, cell);
  qs_sb_append(b, "## Layer Sensitivity Table\n\n");
  md_table(b, cell);
  md_overview(b, cell);
  md_composed_config(b, cell->config_yaml);
}

char *qs_render_report_md(const qs_cell *cell) {
  qs_strbuf b = {0};
  md_title(&b, cell);
  if (cell->report_style == QS_REPORT_HEAD)
    md_head(&b, cell);
  else
    md_committed(&b, cell);
  return qs_sb_take(&b);
}

/* ---- top-k chart (SVG) ------------------------------------------------------
 * SVG rather than PNG: plain text (diffable, byte-identical on regeneration),
 * no compression or font rendering needed, and Markdown viewers embed it. */

static void svg_text(qs_strbuf *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '&': qs_sb_append(b, "&amp;"); break;
    case '<': qs_sb_append(b, "&lt;"); break;
    case '>': qs_sb_append(b, "&gt;"); break;
    case '"': qs_sb_append(b, "&quot;"); break;
    default: qs_sb_putc(b, *s);
    }
  }
}

char *qs_render_top_chart(const qs_cell *cell) {
  enum { LABEL_W = 420, BAR_W = 360, ROW_H = 18, TOP = 30 };
  size_t *order = qs_calloc(cell->ngroups ? cell->ngroups : 1, sizeof *order);
  qs_cell_group_order(cell, true, order);
  size_t n = cell->ngroups < QS_REPORT_TOP_K ? cell->ngroups : QS_REPORT_TOP_K;
  double max = n ? qs_group_importance(&cell->groups[order[0]]) : 0.0;
  int width = LABEL_W + BAR_W + 90, height = TOP + (int)n * ROW_H + 10;
  qs_strbuf b = {0};
  qs_sb_printf(&b,
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"monospace\" font-size=\"11\">\n",
               width, height);
  qs_sb_append(&b, "<text x=\"4\" y=\"16\" font-size=\"13\">");
  svg_text(&b, cell->scheme);
  qs_sb_printf(&b, ": top %zu groups by sensitivity</text>\n", n);
  for (size_t i = 0; i < n; i++) {
    const qs_cell_group *g = &cell->groups[order[i]];
    double s = qs_group_importance(g);
    double len = max > 0.0 ? BAR_W * s / max : 0.0;
    int y = TOP + (int)i * ROW_H;
    qs_sb_printf(&b, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">", LABEL_W - 6, y + 12);
    svg_text(&b, g->handle);
    qs_sb_printf(&b, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
                     "fill=\"#4878a8\"/>\n",
                 LABEL_W, y + 2, len, ROW_H - 4);
    qs_sb_printf(&b, "<text x=\"%.1f\" y=\"%d\">%.3e</text>\n", LABEL_W + len + 4, y + 12, s);
  }
  qs_sb_append(&b, "</svg>\n");
  free(order);
  return qs_sb_take(&b);
}

/* ---- state (§6.5) ---------------------------------------------------------- */

static void jw_candidate_stats(qs_jw *w, const qs_cell *cell) {
  qs_jw_key(w, "candidate_stats");
  qs_jw_begin_object(w);
  for (size_t i = 0; i < cell->ngroups; i++) {
    const qs_cell_group *g = &cell->groups[i];
    jw_recipe_key(w, g);
    qs_jw_begin_object(w);
    qs_jw_key(w, "formats"), jw_string_list(w, g->formats, g->nchoices);
    qs_jw_key(w, "scores"), jw_float_list(w, g->scores, g->nchoices);
    qs_jw_key(w, "raw_scores"), jw_float_list(w, g->raw_scores, g->nchoices);
    qs_jw_key(w, "costs"), jw_float_list(w, g->costs, g->nchoices);
    qs_jw_key(w, "module_names");
    qs_jw_begin_array(w);
    for (size_t m = 0; m < g->nmembers; m++) qs_jw_string(w, cell->linears[g->members[m]].name);
    qs_jw_end_array(w);
    qs_jw_key(w, "module_scores");
    qs_jw_begin_object(w);
    for (size_t m = 0; m < g->nmembers; m++) {
      const qs_cell_linear *lin = &cell->linears[g->members[m]];
      qs_jw_key(w, lin->name);
      qs_jw_begin_array(w);
      /* choice k < NONE is candidate format fmt_index(k); raw member scores per choice */
      for (size_t k = 0; k + 1 < g->nchoices; k++) {
        size_t f = 0;
        while (f < cell->nformats && strcmp(cell->formats[f].display, g->formats[k]) != 0) f++;
        qs_jw_float(w, f < cell->nformats ? lin->raw_scores[f] : 0.0);
      }
      qs_jw_float(w, 0.0);
      qs_jw_end_array(w);
    }
    qs_jw_end_object(w);
    qs_jw_key(w, "module_numel");
    qs_jw_begin_object(w);
    for (size_t m = 0; m < g->nmembers; m++) {
      const qs_cell_linear *lin = &cell->linears[g->members[m]];
      qs_jw_key(w, lin->name), qs_jw_int(w, lin->numel);
    }
    qs_jw_end_object(w);
    qs_jw_key(w, "cost_weight"), qs_jw_float(w, 1.0);
    qs_jw_key(w, "allow_no_quant"), qs_jw_bool(w, true);
    qs_jw_key(w, "is_fixed"), qs_jw_bool(w, false);
    qs_jw_key(w, "uncompressed_cost"), qs_jw_float(w, (double)g->numel);
    qs_jw_end_object(w);
  }
  qs_jw_end_object(w);
}

static void jw_best(qs_jw *w, const qs_cell *cell) {
  qs_jw_key(w, "best");
  qs_jw_begin_object(w);
  qs_jw_key(w, "recipe");
  qs_jw_begin_object(w);
  for (size_t i = 0; i < cell->ngroups; i++) {
    const qs_cell_group *g = &cell->groups[i];
    qs_jw_key(w, g->handle);
    qs_jw_string(w, g->chosen >= 0 ? g->formats[g->chosen] : NULL);
  }
  qs_jw_end_object(w);
  jw_effective_bits(w, cell->search.effective_bits);
  qs_jw_key(w, "score"), qs_jw_float(w, cell->search.best_score);
  qs_jw_key(w, "is_satisfied"), qs_jw_bool(w, cell->search.is_satisfied);
  qs_jw_end_object(w);
}

/* amax per quantizer, module order: "<module>.weight_quantizer", then
 * "<module>.input_quantizer" (suffixed "[i]" per candidate when there are
 * several); quantizers without a static amax are left out. */
static void jw_amax(qs_jw *w, const qs_cell *cell) {
  qs_jw_key(w, "amax");
  qs_jw_begin_object(w);
  qs_strbuf key = {0};
  for (size_t i = 0; i < cell->nlinears; i++) {
    const qs_cell_linear *lin = &cell->linears[i];
    if (!isnan(lin->weight_amax)) {
      qs_sb_clear(&key);
      qs_sb_printf(&key, "%s.weight_quantizer", lin->name);
      qs_jw_key(w, qs_sb_str(&key)), qs_jw_float(w, lin->weight_amax);
    }
    for (size_t f = 0; f < cell->nformats; f++) {
      if (isnan(lin->input_amax[f])) continue;
      qs_sb_clear(&key);
      qs_sb_printf(&key, "%s.input_quantizer", lin->name);
      if (cell->nformats > 1) qs_sb_printf(&key, "[%zu]", f);
      qs_jw_key(w, qs_sb_str(&key)), qs_jw_float(w, lin->input_amax[f]);
    }
  }
  qs_sb_free(&key);
  qs_jw_end_object(w);
}

static void jw_int_or_null(qs_jw *w, const char *key, long long v) {
  qs_jw_key(w, key);
  if (v >= 0)
    qs_jw_int(w, v);
  else
    qs_jw_null(w);
}

static void jw_run(qs_jw *w, const qs_cell *cell) {
  const qs_cell_run *r = &cell->run;
  qs_jw_key(w, "run");
  qs_jw_begin_object(w);
  qs_jw_key(w, "pair"), qs_jw_string(w, cell->pair);
  qs_jw_key(w, "precision_mode"), qs_jw_string(w, r->precision_mode);
  qs_jw_key(w, "grad_dtype"), qs_jw_string(w, r->grad_dtype);
  qs_jw_key(w, "mx_scale_rule"), qs_jw_string(w, r->mx_scale_rule);
  qs_jw_key(w, "nvfp4_effective_bits"), qs_jw_float(w, r->nvfp4_effective_bits);
  jw_int_or_null(w, "nvfp4_w4a8_block", r->nvfp4_w4a8_block);
  qs_jw_key(w, "act_amax"), qs_jw_string(w, r->act_amax);
  qs_jw_key(w, "include_lm_head"), qs_jw_bool(w, r->include_lm_head);
  qs_jw_key(w, "name_style"), qs_jw_string(w, r->name_style);
  jw_int_or_null(w, "batch_size", r->batch_size);
  jw_int_or_null(w, "seq_len", r->seq_len);
  qs_jw_key(w, "padding_side"), qs_jw_string(w, r->padding_side);
  jw_int_or_null(w, "num_calib_steps", r->num_calib_steps);
  jw_int_or_null(w, "num_score_steps", r->num_score_steps);
  qs_jw_key(w, "captions_path"), qs_jw_string(w, r->captions_path);
  qs_jw_key(w, "captions_md5"), qs_jw_string(w, r->captions_md5);
  qs_jw_key(w, "model_id"), qs_jw_string(w, cell->model_id);
  qs_jw_key(w, "tool_version"), qs_jw_string(w, cell->provenance.tool_version);
  jw_amax(w, cell);
  qs_jw_end_object(w);
}

/* Candidate formats with their config names and cost bits: what the manifest
 * and a re-solve need beyond ModelOpt's search state. */
static void jw_candidate_formats(qs_jw *w, const qs_cell *cell) {
  qs_jw_key(w, "candidate_formats");
  qs_jw_begin_array(w);
  for (size_t f = 0; f < cell->nformats; f++) {
    qs_jw_begin_object(w);
    qs_jw_key(w, "config_name"), qs_jw_string(w, cell->formats[f].config_name);
    qs_jw_key(w, "display"), qs_jw_string(w, cell->formats[f].display);
    qs_jw_key(w, "bits"), qs_jw_float(w, cell->formats[f].bits);
    qs_jw_end_object(w);
  }
  qs_jw_end_array(w);
}

char *qs_render_state(const qs_cell *cell) {
  qs_jw w = {0};
  qs_jw_begin_object(&w);
  qs_jw_key(&w, "method"), qs_jw_string(&w, "gradient");
  qs_jw_key(&w, "cost_model"), qs_jw_string(&w, "weight");
  qs_jw_key(&w, "cost_denominator"), qs_jw_float(&w, cell->search.cost_denominator);
  jw_effective_bits(&w, cell->search.requested_bits);
  jw_candidate_stats(&w, cell);
  jw_best(&w, cell);
  jw_run(&w, cell);
  /* Extensions after the §6.5 keys: enough to rebuild every report. */
  jw_scheme(&w, cell);
  jw_candidate_formats(&w, cell);
  jw_dataset(&w, cell);
  qs_jw_key(&w, "monotone_rule");
  qs_jw_string(&w, cell->monotone_rule == QS_MONOTONE_V037 ? "v037" : "head");
  qs_jw_key(&w, "extra_none_numel"), qs_jw_int(&w, cell->extra_none_numel);
  qs_jw_key(&w, "report_style"), qs_jw_string(&w, qs_report_style_name(cell->report_style));
  qs_jw_end_object(&w);
  return jw_finish(&w);
}

/* ---- files ------------------------------------------------------------------ */

char *qs_cell_file(const char *dir, const char *scheme, const char *suffix) {
  qs_strbuf name = {0};
  qs_sb_printf(&name, "%s%s", scheme, suffix);
  char *path = qs_path_join(dir, qs_sb_str(&name));
  qs_sb_free(&name);
  return path;
}

/* Writes text to dir/name (name NULL: scheme + suffix), taking ownership of text. */
static bool write_text(const char *dir, const char *name, const char *scheme, const char *suffix,
                       char *text, qs_error *err) {
  char *path = name ? qs_path_join(dir, name) : qs_cell_file(dir, scheme, suffix);
  bool ok = qs_write_file_atomic(path, text, strlen(text), err);
  free(path);
  free(text);
  return ok;
}

/* composed-config.yaml (§6.1), which the HEAD layout's run_config points to. */
static bool write_composed_config(const qs_cell *cell, const char *dir, qs_error *err) {
  if (cell->report_style != QS_REPORT_HEAD || !cell->config_yaml) return true;
  return write_text(dir, QS_COMPOSED_CONFIG_NAME, NULL, NULL, qs_strdup(cell->config_yaml), err);
}

bool qs_write_reports(const qs_cell *cell, const char *dir, qs_error *err) {
  return qs_mkdirs(dir, err) &&
         write_text(dir, NULL, cell->scheme, QS_MANIFEST_SUFFIX, qs_render_manifest(cell), err) &&
         write_text(dir, QS_REPORT_MD_NAME, NULL, NULL, qs_render_report_md(cell), err) &&
         write_text(dir, QS_REPORT_JSON_NAME, NULL, NULL, qs_render_report_json(cell), err) &&
         write_text(dir, QS_REPORT_CHART_NAME, NULL, NULL, qs_render_top_chart(cell), err) &&
         write_composed_config(cell, dir, err);
}

bool qs_write_cell_artifacts(const qs_cell *cell, const char *dir, qs_error *err) {
  return qs_mkdirs(dir, err) &&
         write_text(dir, NULL, cell->scheme, QS_STATE_SUFFIX, qs_render_state(cell), err) &&
         qs_write_reports(cell, dir, err);
}
