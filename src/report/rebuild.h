/* Work behind `qsens report` and `qsens solve`: everything comes from the
 * stored state files, never from the model or the data. */
#ifndef QSENS_REPORT_REBUILD_H
#define QSENS_REPORT_REBUILD_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

/* Rewrites manifest, reports and chart of the run dir, or of every job dir of
 * a sweep dir, from their state files; *ncells counts them. */
bool qs_rebuild_reports(const char *dir, size_t *ncells, qs_error *err);

/* Re-solves every state under dir at effective_bits and rewrites state,
 * manifest and reports. All cells are solved before anything is written, so
 * an infeasible budget (status 2) leaves every file as it was. */
bool qs_resolve_budget(const char *dir, double effective_bits, size_t *ncells, qs_error *err);

#endif
