/* The per-sweep HDF5 file `sensitivity.h5` (schema: docs/sensitivity-h5.md;
 * conventions: spec cluster-runtime.md §8). One writer (rank 0), explicit
 * little-endian file types, the default (earliest) file format, written to a
 * temporary name and renamed when closed. */
#ifndef QSENS_REPORT_H5_H
#define QSENS_REPORT_H5_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "report/results.h"

/* Writes /runs/<run_ids[i]> for each finished cell into a new file at path
 * (replacing it atomically). Run ids may hold any character but '/'. */
bool qs_h5_write_runs(const char *path, const qs_cell *const *cells, const char *const *run_ids,
                      size_t n, qs_error *err);

/* Merges the /runs/<id> groups of several per-job files into one new file
 * (H5Ocopy keeps chunking, filters and attributes); a run id present in two
 * inputs fails naming both files. */
bool qs_h5_merge(const char *out_path, const char *const *in_paths, size_t n, qs_error *err);

#endif
