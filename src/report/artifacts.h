/* Per-cell artifacts (spec quant-and-scoring.md §6): the manifest, the
 * Markdown and JSON sensitivity reports, the top-k chart they embed, and the
 * state file that `qsens report` and `qsens solve` read back. Every writer
 * renders from a finished qs_cell only, so regenerating from a loaded state
 * gives the same bytes. */
#ifndef QSENS_REPORT_ARTIFACTS_H
#define QSENS_REPORT_ARTIFACTS_H

#include <stdbool.h>

#include "core/error.h"
#include "report/results.h"

#define QS_REPORT_MD_NAME "layer-sensitivity-report.md"
#define QS_REPORT_JSON_NAME "layer-sensitivity-report.json"
#define QS_REPORT_CHART_NAME "layer-sensitivity-top.svg"
#define QS_COMPOSED_CONFIG_NAME "composed-config.yaml" /* HEAD layout only */
#define QS_MANIFEST_SUFFIX "_quant_manifest.json"
#define QS_STATE_SUFFIX "_autoquant_state.json"

/* Groups drawn in the top-k chart. */
enum { QS_REPORT_TOP_K = 20 };

/* Texts of each artifact (caller frees). */
char *qs_render_manifest(const qs_cell *cell);    /* §6.2 */
char *qs_render_report_md(const qs_cell *cell);   /* §6.3 in cell->report_style + module-type summary + chart link */
char *qs_render_report_json(const qs_cell *cell); /* §6.4 */
char *qs_render_state(const qs_cell *cell);       /* §6.5 */
char *qs_render_top_chart(const qs_cell *cell);   /* SVG bar chart of the top-k groups */

/* "<dir>/<scheme><suffix>" (caller frees). */
char *qs_cell_file(const char *dir, const char *scheme, const char *suffix);

/* Writes manifest, both reports and the chart into dir (atomic writes), and
 * in the HEAD style composed-config.yaml when the cell has its config text. */
bool qs_write_reports(const qs_cell *cell, const char *dir, qs_error *err);

/* Writes the state file, then the reports: every per-cell artifact. */
bool qs_write_cell_artifacts(const qs_cell *cell, const char *dir, qs_error *err);

#endif
