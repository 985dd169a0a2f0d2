/* sensitivity.h5 writer and merger (docs/sensitivity-h5.md). */
#define _POSIX_C_SOURCE 200809L
#include "report/h5.h"

#include <hdf5.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"
#include "core/strbuf.h"

enum {
  H5_NAME_LEN = 160, /* fixed string fields of the tables: module names are < 80 chars */
  H5_KIND_LEN = 16,
  H5_CHUNK_BYTES = 64 * 1024, /* within the 10 KiB-1 MiB chunk range of §8 */
};

#define SCHEMA_VERSION 1

/* ---- small typed writers (every failure becomes a negative hid) ------------ */

static hid_t string_type(size_t size) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, size);
  H5Tset_strpad(t, H5T_STR_NULLTERM);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

static herr_t attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v) {
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(loc, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
  herr_t rc = a < 0 ? -1 : H5Awrite(a, mtype, v);
  if (a >= 0) H5Aclose(a);
  H5Sclose(space);
  return rc;
}

/* Fixed-length UTF-8 string attribute; NULL writes "". */
static herr_t attr_str(hid_t loc, const char *name, const char *s) {
  if (!s) s = "";
  hid_t t = string_type(strlen(s) + 1);
  herr_t rc = attr_write(loc, name, t, t, s);
  H5Tclose(t);
  return rc;
}

/* Variable-length UTF-8 string attribute, for free text such as the YAML. */
static herr_t attr_vlstr(hid_t loc, const char *name, const char *s) {
  hid_t t = string_type(H5T_VARIABLE);
  const char *v = s ? s : "";
  herr_t rc = attr_write(loc, name, t, t, &v);
  H5Tclose(t);
  return rc;
}

static herr_t attr_f64(hid_t loc, const char *name, double v) {
  return attr_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

static herr_t attr_i64(hid_t loc, const char *name, long long v) {
  return attr_write(loc, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, &v);
}

/* Chunked dataset, unlimited along axis 0, shuffle then deflate(4). */
static hid_t dataset_create(hid_t loc, const char *name, hid_t ftype, int rank,
                            const hsize_t *dims) {
  hsize_t maxdims[2] = {H5S_UNLIMITED, rank > 1 ? dims[1] : 0};
  hsize_t chunk[2] = {1, rank > 1 ? (dims[1] ? dims[1] : 1) : 1};
  size_t row_bytes = H5Tget_size(ftype) * chunk[1];
  hsize_t rows = H5_CHUNK_BYTES / (row_bytes ? row_bytes : 1);
  chunk[0] = rows < 1 ? 1 : rows < dims[0] ? rows : (dims[0] ? dims[0] : 1);
  hid_t space = H5Screate_simple(rank, dims, maxdims);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, rank, chunk);
  H5Pset_shuffle(dcpl);
  H5Pset_deflate(dcpl, 4);
  hid_t d = H5Dcreate2(loc, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(space);
  return d;
}

static herr_t dataset_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int rank,
                            const hsize_t *dims, const void *data) {
  hid_t d = dataset_create(loc, name, ftype, rank, dims);
  if (d < 0) return -1;
  bool empty = dims[0] == 0 || (rank > 1 && dims[1] == 0);
  herr_t rc = empty ? 0 : H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  H5Dclose(d);
  return rc;
}

/* ---- run contents -------------------------------------------------------- */

/* Column of each candidate format: choice order (most compressed first), NONE last. */
static int *format_columns(const qs_cell *cell) {
  double *bits = qs_malloc((cell->nformats + 1) * sizeof *bits);
  int *order = qs_malloc((cell->nformats + 1) * sizeof *order);
  int *column = qs_malloc((cell->nformats + 1) * sizeof *column);
  for (size_t f = 0; f < cell->nformats; f++) bits[f] = cell->formats[f].bits;
  qs_choice_order(bits, (int)cell->nformats, order);
  for (size_t k = 0; k < cell->nformats; k++) column[order[k]] = (int)k;
  free(bits);
  free(order);
  return column;
}

static herr_t write_formats(hid_t run, const qs_cell *cell, const int *column) {
  size_t n = cell->nformats + 1;
  const char **names = qs_calloc(n, sizeof *names);
  double *bits = qs_calloc(n, sizeof *bits);
  for (size_t f = 0; f < cell->nformats; f++) {
    names[column[f]] = cell->formats[f].display;
    bits[column[f]] = cell->formats[f].bits;
  }
  names[n - 1] = "NONE(effective-bits: 16.0)";
  bits[n - 1] = 16.0;
  hsize_t dims[1] = {n};
  hid_t t = string_type(H5T_VARIABLE);
  herr_t rc = dataset_write(run, "formats", t, t, 1, dims, names);
  H5Tclose(t);
  if (rc >= 0) rc = dataset_write(run, "format_bits", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, dims, bits);
  free(names);
  free(bits);
  return rc;
}

/* One member of a row struct written as an HDF5 compound. */
typedef enum field_kind { FIELD_STR, FIELD_I8, FIELD_I32, FIELD_I64, FIELD_F64 } field_kind;

typedef struct compound_field {
  const char *name;
  size_t offset;
  field_kind kind;
  size_t str_len; /* FIELD_STR: bytes, the terminating NUL included */
} compound_field;

/* A field's type in memory (native) or in the file (little-endian). */
static hid_t field_type(const compound_field *f, bool file) {
  switch (f->kind) {
  case FIELD_STR: return string_type(f->str_len);
  case FIELD_I8: return H5Tcopy(file ? H5T_STD_I8LE : H5T_NATIVE_INT8);
  case FIELD_I32: return H5Tcopy(file ? H5T_STD_I32LE : H5T_NATIVE_INT32);
  case FIELD_I64: return H5Tcopy(file ? H5T_STD_I64LE : H5T_NATIVE_INT64);
  case FIELD_F64: break;
  }
  return H5Tcopy(file ? H5T_IEEE_F64LE : H5T_NATIVE_DOUBLE);
}

/* A row struct's compound type in memory, or packed in the file. */
static hid_t compound_type(size_t size, const compound_field *fields, size_t n, bool file) {
  hid_t t = H5Tcreate(H5T_COMPOUND, size);
  for (size_t i = 0; i < n; i++) {
    hid_t member = field_type(&fields[i], file);
    H5Tinsert(t, fields[i].name, fields[i].offset, member);
    H5Tclose(member);
  }
  if (file) H5Tpack(t);
  return t;
}

/* Writes n rows of a struct of the given fields as a 1-D compound dataset. */
static herr_t write_compound(hid_t run, const char *name, size_t row_size, const compound_field *fields,
                             size_t nfields, size_t n, const void *rows) {
  hid_t ft = compound_type(row_size, fields, nfields, true), mt = compound_type(row_size, fields, nfields, false);
  hsize_t dims[1] = {n};
  herr_t rc = dataset_write(run, name, ft, mt, 1, dims, rows);
  H5Tclose(ft);
  H5Tclose(mt);
  return rc;
}

typedef struct linear_row {
  char name[H5_NAME_LEN];
  char kind[H5_KIND_LEN];
  int32_t layer;
  int32_t group;
  int64_t numel;
  double weight_amax;
  int8_t none_only;
} linear_row;

static const compound_field LINEAR_FIELDS[] = {
    {"name", offsetof(linear_row, name), FIELD_STR, H5_NAME_LEN},
    {"kind", offsetof(linear_row, kind), FIELD_STR, H5_KIND_LEN},
    {"layer", offsetof(linear_row, layer), FIELD_I32, 0},
    {"group", offsetof(linear_row, group), FIELD_I32, 0},
    {"numel", offsetof(linear_row, numel), FIELD_I64, 0},
    {"weight_amax", offsetof(linear_row, weight_amax), FIELD_F64, 0},
    {"none_only", offsetof(linear_row, none_only), FIELD_I8, 0},
};

static herr_t write_linears(hid_t run, const qs_cell *cell, const int *column) {
  size_t n = cell->nlinears, w = cell->nformats + 1;
  linear_row *rows = qs_calloc(n ? n : 1, sizeof *rows);
  double *scores = qs_calloc(n * w + 1, sizeof *scores);
  double *amax = qs_calloc(n * w + 1, sizeof *amax);
  for (size_t i = 0; i < n; i++) {
    const qs_cell_linear *lin = &cell->linears[i];
    rows[i] = (linear_row){.layer = lin->layer, .group = -1, .numel = lin->numel,
                           .weight_amax = lin->weight_amax, .none_only = lin->none_only};
    snprintf(rows[i].name, H5_NAME_LEN, "%s", lin->name);
    snprintf(rows[i].kind, H5_KIND_LEN, "%s", lin->kind);
    for (size_t f = 0; f < cell->nformats; f++) {
      scores[i * w + (size_t)column[f]] = lin->none_only ? NAN : lin->raw_scores[f];
      amax[i * w + (size_t)column[f]] = lin->input_amax[f];
    }
    scores[i * w + w - 1] = 0.0; /* NONE scores 0 */
    amax[i * w + w - 1] = NAN;
  }
  for (size_t g = 0; g < cell->ngroups; g++)
    for (size_t m = 0; m < cell->groups[g].nmembers; m++)
      rows[cell->groups[g].members[m]].group = (int32_t)g;
  hsize_t dims[2] = {n, w};
  herr_t rc = write_compound(run, "linears", sizeof *rows, LINEAR_FIELDS,
                             sizeof LINEAR_FIELDS / sizeof *LINEAR_FIELDS, n, rows);
  if (rc >= 0)
    rc = dataset_write(run, "linear_raw_scores", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dims, scores);
  if (rc >= 0)
    rc = dataset_write(run, "linear_input_amax", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dims, amax);
  free(rows);
  free(scores);
  free(amax);
  return rc;
}

typedef struct group_row {
  char handle[H5_NAME_LEN];
  int64_t numel;
  int32_t nmembers;
  int32_t chosen; /* column in `formats`; -1 when the search failed */
  double importance;
  int32_t rank;
} group_row;

static const compound_field GROUP_FIELDS[] = {
    {"handle", offsetof(group_row, handle), FIELD_STR, H5_NAME_LEN},
    {"numel", offsetof(group_row, numel), FIELD_I64, 0},
    {"nmembers", offsetof(group_row, nmembers), FIELD_I32, 0},
    {"chosen", offsetof(group_row, chosen), FIELD_I32, 0},
    {"importance", offsetof(group_row, importance), FIELD_F64, 0},
    {"rank", offsetof(group_row, rank), FIELD_I32, 0},
};

/* Column of a group's choice k: its format's column, NONE last. */
static size_t choice_column(const qs_cell *cell, const qs_cell_group *g, size_t k,
                            const int *column) {
  if (k + 1 == g->nchoices) return cell->nformats;
  for (size_t f = 0; f < cell->nformats; f++)
    if (strcmp(cell->formats[f].display, g->formats[k]) == 0) return (size_t)column[f];
  return cell->nformats;
}

static herr_t write_groups(hid_t run, const qs_cell *cell, const int *column) {
  size_t n = cell->ngroups, w = cell->nformats + 1;
  group_row *rows = qs_calloc(n ? n : 1, sizeof *rows);
  double *mats = qs_malloc((3 * n * w + 1) * sizeof *mats); /* raw | monotone | costs */
  for (size_t i = 0; i < 3 * n * w; i++) mats[i] = NAN;    /* NaN: format not offered */
  size_t *ascending = qs_calloc(n ? n : 1, sizeof *ascending);
  qs_cell_group_order(cell, false, ascending);
  for (size_t i = 0; i < n; i++) rows[ascending[i]].rank = (int32_t)(i + 1);
  for (size_t i = 0; i < n; i++) {
    const qs_cell_group *g = &cell->groups[i];
    snprintf(rows[i].handle, H5_NAME_LEN, "%s", g->handle);
    rows[i].numel = g->numel;
    rows[i].nmembers = (int32_t)g->nmembers;
    rows[i].importance = qs_group_importance(g);
    rows[i].chosen = g->chosen < 0 ? -1 : (int32_t)choice_column(cell, g, (size_t)g->chosen, column);
    for (size_t k = 0; k < g->nchoices; k++) {
      size_t c = i * w + choice_column(cell, g, k, column);
      mats[c] = g->raw_scores[k];
      mats[n * w + c] = g->scores[k];
      mats[2 * n * w + c] = g->costs[k];
    }
  }
  hsize_t dims[2] = {n, w};
  herr_t rc = write_compound(run, "groups", sizeof *rows, GROUP_FIELDS,
                             sizeof GROUP_FIELDS / sizeof *GROUP_FIELDS, n, rows);
  static const char *names[] = {"group_raw_scores", "group_scores", "group_costs"};
  for (int m = 0; m < 3 && rc >= 0; m++)
    rc = dataset_write(run, names[m], H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 2, dims, mats + m * n * w);
  free(ascending);
  free(rows);
  free(mats);
  return rc;
}

typedef struct pareto_row {
  double cost, effective_bits, score;
} pareto_row;

static const compound_field PARETO_FIELDS[] = {
    {"cost", offsetof(pareto_row, cost), FIELD_F64, 0},
    {"effective_bits", offsetof(pareto_row, effective_bits), FIELD_F64, 0},
    {"score", offsetof(pareto_row, score), FIELD_F64, 0},
};

static herr_t write_pareto_and_tokens(hid_t run, const qs_cell *cell) {
  const qs_pareto *p = &cell->search.front;
  pareto_row *rows = qs_calloc(p->n ? p->n : 1, sizeof *rows);
  for (size_t i = 0; i < p->n; i++) rows[i] = (pareto_row){p->cost[i], p->effective_bits[i], p->score[i]};
  herr_t rc = write_compound(run, "pareto_front", sizeof *rows, PARETO_FIELDS,
                             sizeof PARETO_FIELDS / sizeof *PARETO_FIELDS, p->n, rows);
  free(rows);
  hsize_t dims[1] = {cell->nsamples};
  if (rc >= 0)
    rc = dataset_write(run, "sample_tokens", H5T_STD_I32LE, H5T_NATIVE_INT, 1, dims,
                       cell->sample_tokens);
  return rc;
}

static herr_t write_run_attrs(hid_t run, const char *id, const qs_cell *cell) {
  const qs_cell_provenance *p = &cell->provenance;
  const qs_cell_timings *t = &cell->timings;
  herr_t rc = 0;
  rc |= attr_str(run, "run_id", id);
  rc |= attr_str(run, "pair", cell->pair);
  rc |= attr_str(run, "weight_format", cell->weight_format);
  rc |= attr_str(run, "act_format", cell->act_format);
  rc |= attr_str(run, "scheme", cell->scheme);
  rc |= attr_str(run, "model_id", cell->model_id);
  rc |= attr_str(run, "precision_mode", cell->run.precision_mode);
  rc |= attr_str(run, "grad_dtype", cell->run.grad_dtype);
  rc |= attr_str(run, "act_amax", cell->run.act_amax);
  rc |= attr_str(run, "name_style", cell->run.name_style);
  rc |= attr_str(run, "dataset_size", cell->dataset.size);
  rc |= attr_f64(run, "requested_bits", cell->search.requested_bits);
  rc |= attr_f64(run, "effective_bits", cell->search.effective_bits);
  rc |= attr_f64(run, "best_score", cell->search.best_score);
  rc |= attr_i64(run, "is_satisfied", cell->search.is_satisfied);
  rc |= attr_f64(run, "cost_denominator", cell->search.cost_denominator);
  rc |= attr_i64(run, "extra_none_numel", cell->extra_none_numel);
  rc |= attr_f64(run, "baseline_loss", cell->baseline_loss);
  rc |= attr_f64(run, "time_load_s", t->load_s);
  rc |= attr_f64(run, "time_calibrate_s", t->calibrate_s);
  rc |= attr_f64(run, "time_score_s", t->score_s);
  rc |= attr_f64(run, "time_search_s", t->search_s);
  rc |= attr_f64(run, "time_total_s", t->total_s);
  rc |= attr_str(run, "tool_version", p->tool_version);
  rc |= attr_str(run, "git_commit", p->git_commit);
  rc |= attr_str(run, "checkpoint_checksum", p->checkpoint_checksum);
  rc |= attr_str(run, "data_checksum", p->data_checksum);
  rc |= attr_str(run, "captions_md5", cell->run.captions_md5);
  rc |= attr_vlstr(run, "config_yaml", cell->config_yaml);
  return rc;
}

static herr_t write_run(hid_t runs, const char *id, const qs_cell *cell) {
  hid_t run = H5Gcreate2(runs, id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (run < 0) return -1;
  int *column = format_columns(cell);
  herr_t rc = write_run_attrs(run, id, cell);
  if (rc >= 0) rc = write_formats(run, cell, column);
  if (rc >= 0) rc = write_linears(run, cell, column);
  if (rc >= 0) rc = write_groups(run, cell, column);
  if (rc >= 0) rc = write_pareto_and_tokens(run, cell);
  free(column);
  H5Gclose(run);
  return rc;
}

/* ---- files ----------------------------------------------------------------- */

static herr_t write_root_attrs(hid_t file) {
  unsigned maj, min, rel;
  H5get_libversion(&maj, &min, &rel);
  char version[32];
  snprintf(version, sizeof version, "%u.%u.%u", maj, min, rel);
  herr_t rc = attr_str(file, "format", "qsens-sensitivity");
  rc |= attr_i64(file, "format_version", SCHEMA_VERSION);
  rc |= attr_str(file, "tool_version", QSENS_VERSION);
  rc |= attr_str(file, "git_commit", QSENS_GIT_COMMIT);
  rc |= attr_str(file, "hdf5_version", version);
  return rc;
}

/* Creates "<path>.tmp<pid>" with /runs; the caller fills it and calls close_and_rename. */
static hid_t create_temp(const char *path, char **tmp, hid_t *runs) {
  qs_strbuf b = {0};
  qs_sb_printf(&b, "%s.tmp%ld", path, (long)getpid());
  *tmp = qs_sb_take(&b);
  hid_t file = H5Fcreate(*tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  *runs = -1;
  if (file < 0) return -1;
  if (write_root_attrs(file) < 0 ||
      (*runs = H5Gcreate2(file, "runs", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
    H5Fclose(file);
    return -1;
  }
  return file;
}

static bool close_and_rename(hid_t file, hid_t runs, const char *tmp, const char *path, bool ok,
                             qs_error *err) {
  if (runs >= 0) H5Gclose(runs);
  if (file >= 0 && H5Fclose(file) < 0 && ok)
    ok = qs_fail(err, QS_EXIT_RUNTIME, "cannot finish writing HDF5 file %s", tmp);
  if (ok && rename(tmp, path) != 0)
    ok = qs_fail(err, QS_EXIT_RUNTIME, "cannot rename %s to %s", tmp, path);
  if (!ok) remove(tmp);
  return ok;
}

/* HDF5 prints its error stack to stderr by default; qsens reports one line instead. */
typedef struct quiet_errors {
  H5E_auto2_t func;
  void *data;
} quiet_errors;

static quiet_errors silence_hdf5(void) {
  quiet_errors q;
  H5Eget_auto2(H5E_DEFAULT, &q.func, &q.data);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  return q;
}

static void restore_hdf5(quiet_errors q) { H5Eset_auto2(H5E_DEFAULT, q.func, q.data); }

bool qs_h5_write_runs(const char *path, const qs_cell *const *cells, const char *const *run_ids,
                      size_t n, qs_error *err) {
  quiet_errors q = silence_hdf5();
  char *tmp = NULL;
  hid_t runs;
  hid_t file = create_temp(path, &tmp, &runs);
  bool ok = file >= 0 || qs_fail(err, QS_EXIT_RUNTIME, "cannot create HDF5 file %s", tmp);
  for (size_t i = 0; ok && i < n; i++) {
    if (strchr(run_ids[i], '/') || !*run_ids[i])
      ok = qs_fail(err, QS_EXIT_RUNTIME, "HDF5 run id '%s' must be non-empty without '/'", run_ids[i]);
    else if (write_run(runs, run_ids[i], cells[i]) < 0)
      ok = qs_fail(err, QS_EXIT_RUNTIME, "cannot write /runs/%s to %s", run_ids[i], tmp);
  }
  ok = close_and_rename(file, runs, tmp, path, ok, err);
  free(tmp);
  restore_hdf5(q);
  return ok;
}

typedef struct merge_ctx {
  hid_t dst_runs;
  hid_t src_runs;
  const char *src_path;
  qs_error *err;
  bool reported; /* err already names the failing run */
} merge_ctx;

static herr_t copy_run(hid_t src, const char *name, const H5L_info_t *info, void *data) {
  (void)src, (void)info;
  merge_ctx *m = data;
  if (H5Lexists(m->dst_runs, name, H5P_DEFAULT) > 0) {
    m->reported = !qs_fail(m->err, QS_EXIT_RUNTIME, "run '%s' of %s is already in the merged file",
                           name, m->src_path);
    return -1;
  }
  if (H5Ocopy(m->src_runs, name, m->dst_runs, name, H5P_DEFAULT, H5P_DEFAULT) < 0) {
    m->reported = !qs_fail(m->err, QS_EXIT_RUNTIME, "cannot copy /runs/%s of %s", name, m->src_path);
    return -1;
  }
  return 0;
}

static bool merge_one(hid_t dst_runs, const char *src_path, qs_error *err) {
  hid_t src = H5Fopen(src_path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (src < 0) return qs_fail(err, QS_EXIT_RUNTIME, "cannot open HDF5 file %s", src_path);
  hid_t runs = H5Gopen2(src, "runs", H5P_DEFAULT);
  bool ok = runs >= 0 || qs_fail(err, QS_EXIT_RUNTIME, "%s has no /runs group", src_path);
  if (ok) {
    merge_ctx m = {dst_runs, runs, src_path, err, false};
    if (H5Literate(runs, H5_INDEX_NAME, H5_ITER_INC, NULL, copy_run, &m) < 0) {
      ok = false;
      if (!m.reported) qs_fail(err, QS_EXIT_RUNTIME, "cannot read /runs of %s", src_path);
    }
    H5Gclose(runs);
  }
  H5Fclose(src);
  return ok;
}

bool qs_h5_merge(const char *out_path, const char *const *in_paths, size_t n, qs_error *err) {
  quiet_errors q = silence_hdf5();
  char *tmp = NULL;
  hid_t runs;
  hid_t file = create_temp(out_path, &tmp, &runs);
  bool ok = file >= 0 || qs_fail(err, QS_EXIT_RUNTIME, "cannot create HDF5 file %s", tmp);
  for (size_t i = 0; ok && i < n; i++) ok = merge_one(runs, in_paths[i], err);
  ok = close_and_rename(file, runs, tmp, out_path, ok, err);
  free(tmp);
  restore_hdf5(q);
  return ok;
}
