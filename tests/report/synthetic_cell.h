/* A synthetic Qwen3-VL-4B-shaped cell for the report tests: 36 layers of
 * q,k,v,o,gate,up,down with the real weight sizes (144 groups), seed-style
 * names, one INT8_DEFAULT_CFG candidate, pseudo-random scores with exact ties
 * and zeros, the spec's real layer-6 gate_proj score, and a NONE-only lm_head. */
#ifndef QSENS_TESTS_REPORT_SYNTHETIC_CELL_H
#define QSENS_TESTS_REPORT_SYNTHETIC_CELL_H

#include "report/results.h"

#define SYNTH_LAYERS 36
#define SYNTH_GROUPS (4 * SYNTH_LAYERS + 1)
#define SYNTH_GATE6_SCORE 63.30435574054718

/* Filled but not finished (no groups yet). */
qs_cell *synth_cell_new(void);

/* Filled and finished at effective_bits; aborts the test on failure. */
qs_cell *synth_cell_finished(double effective_bits);

#endif
