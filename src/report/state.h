/* Reading a cell back from its state file (spec §6.5), the input of
 * `qsens report` (regenerate reports) and `qsens solve` (new budget). */
#ifndef QSENS_REPORT_STATE_H
#define QSENS_REPORT_STATE_H

#include <stdbool.h>

#include "core/error.h"
#include "report/results.h"

/* Loads a state file written by qs_render_state. The cell has its formats,
 * Linears (names, numel, raw scores, amax), groups (stored formats, scores,
 * costs; never recomputed) and search result; measurements the state does not
 * keep (token counts, timings, baseline loss, config text) stay unset. A
 * missing, unreadable or malformed file fails with status 1 and one line
 * naming the file and the offending key. */
bool qs_cell_load_state(const char *path, qs_cell **out, qs_error *err);

/* Path of the single "*_autoquant_state.json" in dir; NULL (no error) when
 * there is none; two or more fail naming both. Caller frees. */
bool qs_find_state_file(const char *dir, char **path, qs_error *err);

/* State files to act on for a run dir or a sweep dir: dir's own state file
 * if it has one, else the state file of each immediate sub-folder (job dirs),
 * in name order. None at all fails (status 1) naming dir. Caller frees each
 * path and the array. */
bool qs_find_state_files(const char *dir, char ***paths, size_t *n, qs_error *err);

#endif
