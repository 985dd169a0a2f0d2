/* What a cell quantizes and how (spec quant-and-scoring.md §6.2 `quantization`,
 * §6.3 HEAD `## Quantization`): base config name, weight and activation
 * formats with their scale granularity, the activation-amax mode and any
 * override of the pair's default. Derived from the cell's pair and the format
 * registry, so a cell rebuilt from its state describes itself identically. */
#ifndef QSENS_REPORT_QUANT_SUMMARY_H
#define QSENS_REPORT_QUANT_SUMMARY_H

#include <stdbool.h>

#include "core/strbuf.h"
#include "report/json_writer.h"
#include "report/results.h"

/* False when the cell's pair is not in the registry (e.g. a state written
 * under an unknown pair name): the quantization key and section are left out. */
bool qs_quant_summary_known(const qs_cell *cell);

/* Writes key "quantization" and its object: {base_format_name,
 * quant_granularity: {name, quant_cfg_overrides}, effective_quantizer_summary:
 * {"*weight_quantizer": {...}, "*input_quantizer": {...}}}. Needs a known pair. */
void qs_jw_quantization(qs_jw *w, const qs_cell *cell);

/* The HEAD report's "## Quantization" section (bullets and a json block). */
void qs_md_quantization(qs_strbuf *b, const qs_cell *cell);

#endif
