/* State file reader (§6.5 plus this tool's extension keys). */
#define _POSIX_C_SOURCE 200809L
#include "report/state.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "report/artifacts.h"

/* Context of one load: the file name for messages. */
typedef struct loader {
  const char *path;
  qs_error *err;
} loader;

static bool bad(const loader *L, const char *key, const char *what) {
  return qs_fail(L->err, QS_EXIT_RUNTIME, "%s: key '%s' %s", L->path, key, what);
}

static json_t *member(const loader *L, json_t *obj, const char *key, json_type type, bool *ok) {
  json_t *v = json_object_get(obj, key);
  if (!v) {
    *ok = bad(L, key, "is missing");
    return NULL;
  }
  bool fits = json_typeof(v) == type ||
              (type == JSON_REAL && json_typeof(v) == JSON_INTEGER) ||
              (type == JSON_TRUE && json_typeof(v) == JSON_FALSE);
  if (!fits) {
    static const char *names[] = {"an object", "an array", "a string", "an integer",
                                  "a number",  "a boolean", "a boolean", "null"};
    char what[48];
    snprintf(what, sizeof what, "must be %s", names[type]);
    *ok = bad(L, key, what);
    return NULL;
  }
  return v;
}

/* Typed getters: on failure they set *ok = false (error filled) and return a default. */
static json_t *get_obj(const loader *L, json_t *o, const char *k, bool *ok) {
  return *ok ? member(L, o, k, JSON_OBJECT, ok) : NULL;
}
static json_t *get_arr(const loader *L, json_t *o, const char *k, bool *ok) {
  return *ok ? member(L, o, k, JSON_ARRAY, ok) : NULL;
}
static double get_num(const loader *L, json_t *o, const char *k, bool *ok) {
  json_t *v = *ok ? member(L, o, k, JSON_REAL, ok) : NULL;
  return v ? json_number_value(v) : NAN;
}
static long long get_int(const loader *L, json_t *o, const char *k, bool *ok) {
  json_t *v = *ok ? member(L, o, k, JSON_INTEGER, ok) : NULL;
  return v ? (long long)json_integer_value(v) : 0;
}
static bool get_bool(const loader *L, json_t *o, const char *k, bool *ok) {
  json_t *v = *ok ? member(L, o, k, JSON_TRUE, ok) : NULL;
  return v && json_is_true(v);
}
/* String or null (NULL). */
static void get_str(const loader *L, json_t *o, const char *k, char **field, bool *ok) {
  if (!*ok) return;
  json_t *v = json_object_get(o, k);
  if (v && json_is_null(v)) {
    qs_cell_set_str(field, NULL);
    return;
  }
  v = member(L, o, k, JSON_STRING, ok);
  if (v) qs_cell_set_str(field, json_string_value(v));
}
/* Integer or null (-1). */
static long long get_opt_int(const loader *L, json_t *o, const char *k, bool *ok) {
  json_t *v = json_object_get(o, k);
  if (*ok && v && json_is_null(v)) return -1;
  return get_int(L, o, k, ok);
}

/* ---- sections ------------------------------------------------------------- */

static void load_scheme(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  json_t *s = get_obj(L, root, "scheme", ok);
  get_str(L, s, "name", &cell->scheme, ok);
  cell->score_size = get_int(L, s, "auto_quantize_score_size", ok);
  get_str(L, s, "coverage_mode", &cell->coverage_mode, ok);
  if (*ok && !cell->scheme) *ok = bad(L, "scheme.name", "must be a string");
}

static void load_formats(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  json_t *arr = get_arr(L, root, "candidate_formats", ok);
  for (size_t i = 0; *ok && i < json_array_size(arr); i++) {
    json_t *f = json_array_get(arr, i);
    if (!json_is_object(f)) {
      *ok = bad(L, "candidate_formats", "must hold objects");
      return;
    }
    char *name = NULL, *display = NULL;
    get_str(L, f, "config_name", &name, ok);
    get_str(L, f, "display", &display, ok);
    double bits = get_num(L, f, "bits", ok);
    if (*ok && (!name || !display))
      *ok = bad(L, "candidate_formats", "needs config_name and display strings");
    if (*ok) qs_cell_add_format(cell, name, display, bits);
    free(name);
    free(display);
  }
}

static void load_dataset(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  json_t *d = json_object_get(root, "dataset");
  if (!*ok || !d) return;
  if (!json_is_object(d)) {
    *ok = bad(L, "dataset", "must be an object");
    return;
  }
  qs_cell_dataset *ds = &cell->dataset;
  ds->present = true;
  static const char *str_keys[] = {"name", "size", "root", "captions_path"};
  char **str_fields[] = {&ds->name, &ds->size, &ds->root, &ds->captions_path};
  for (int i = 0; i < 4; i++)
    if (json_object_get(d, str_keys[i])) get_str(L, d, str_keys[i], str_fields[i], ok);
  static const char *int_keys[] = {"max_calib_samples", "num_calib_samples", "calib_seq_len",
                                   "batch_size", "num_calib_batches"};
  long long *int_fields[] = {&ds->max_calib_samples, &ds->num_calib_samples, &ds->calib_seq_len,
                             &ds->batch_size, &ds->num_calib_batches};
  for (int i = 0; i < 5; i++)
    if (json_object_get(d, int_keys[i])) *int_fields[i] = get_opt_int(L, d, int_keys[i], ok);
}

static void load_run(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  json_t *r = get_obj(L, root, "run", ok);
  qs_cell_run *run = &cell->run;
  get_str(L, r, "pair", &cell->pair, ok);
  qs_qpair pair;
  if (*ok && cell->pair && qs_qpair_parse(cell->pair, &pair, NULL)) { /* unknown pairs stay NULL */
    qs_cell_set_str(&cell->weight_format, pair.weight->name);
    qs_cell_set_str(&cell->act_format, pair.act->name);
  }
  get_str(L, r, "precision_mode", &run->precision_mode, ok);
  get_str(L, r, "grad_dtype", &run->grad_dtype, ok);
  get_str(L, r, "mx_scale_rule", &run->mx_scale_rule, ok);
  run->nvfp4_effective_bits = get_num(L, r, "nvfp4_effective_bits", ok);
  run->nvfp4_w4a8_block = get_opt_int(L, r, "nvfp4_w4a8_block", ok);
  get_str(L, r, "act_amax", &run->act_amax, ok);
  run->include_lm_head = get_bool(L, r, "include_lm_head", ok);
  get_str(L, r, "name_style", &run->name_style, ok);
  run->batch_size = get_opt_int(L, r, "batch_size", ok);
  run->seq_len = get_opt_int(L, r, "seq_len", ok);
  get_str(L, r, "padding_side", &run->padding_side, ok);
  run->num_calib_steps = get_opt_int(L, r, "num_calib_steps", ok);
  run->num_score_steps = get_opt_int(L, r, "num_score_steps", ok);
  get_str(L, r, "captions_path", &run->captions_path, ok);
  get_str(L, r, "captions_md5", &run->captions_md5, ok);
  get_str(L, r, "model_id", &cell->model_id, ok);
  get_str(L, r, "tool_version", &cell->provenance.tool_version, ok);
}

/* Cost bits from a display string "...(effective-bits: 8.0)". */
static bool display_bits(const char *display, double *bits) {
  const char *p = strstr(display, "(effective-bits: ");
  if (!p) return false;
  char *end;
  *bits = strtod(p + strlen("(effective-bits: "), &end);
  return end != p + strlen("(effective-bits: ") && strcmp(end, ")") == 0 && isfinite(*bits);
}

static void load_float_list(const loader *L, json_t *g, const char *key, size_t n, double *out,
                            bool *ok) {
  json_t *arr = get_arr(L, g, key, ok);
  if (*ok && json_array_size(arr) != n) *ok = bad(L, key, "must have one entry per format");
  for (size_t k = 0; *ok && k < n; k++) {
    json_t *v = json_array_get(arr, k);
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
      *ok = bad(L, key, "must hold finite numbers");
    else
      out[k] = json_number_value(v);
  }
}

/* Index of the cell format with this display string (-1 when none). */
static int format_index(const qs_cell *cell, const char *display) {
  for (size_t f = 0; f < cell->nformats; f++)
    if (strcmp(cell->formats[f].display, display) == 0) return (int)f;
  return -1;
}

static void load_group_formats(const loader *L, json_t *gj, qs_cell *cell, qs_cell_group *g,
                               bool *ok) {
  json_t *fmts = get_arr(L, gj, "formats", ok);
  g->nchoices = *ok ? json_array_size(fmts) : 0;
  if (*ok && g->nchoices == 0) *ok = bad(L, "formats", "must not be empty");
  g->formats = qs_calloc(g->nchoices ? g->nchoices : 1, sizeof *g->formats);
  g->bits = qs_calloc(g->nchoices ? g->nchoices : 1, sizeof *g->bits);
  for (size_t k = 0; *ok && k < g->nchoices; k++) {
    const char *s = json_string_value(json_array_get(fmts, k));
    if (!s || !display_bits(s, &g->bits[k]))
      *ok = bad(L, "formats", "must hold '<NAME>(effective-bits: <bits>)' strings");
    else if (k + 1 < g->nchoices && format_index(cell, s) < 0)
      *ok = bad(L, "formats", "names a format missing from candidate_formats");
    else
      g->formats[k] = qs_strdup(s);
  }
  if (*ok && strncmp(g->formats[g->nchoices - 1], "NONE(", 5) != 0)
    *ok = bad(L, "formats", "must end with NONE");
}

/* Adds the group's member Linears with their numel and raw scores per cell format. */
static void load_members(const loader *L, json_t *gj, qs_cell *cell, qs_cell_group *g, bool *ok) {
  json_t *names = get_arr(L, gj, "module_names", ok);
  json_t *mscores = get_obj(L, gj, "module_scores", ok);
  json_t *mnumel = get_obj(L, gj, "module_numel", ok);
  g->nmembers = *ok ? json_array_size(names) : 0;
  if (*ok && g->nmembers == 0) *ok = bad(L, "module_names", "must not be empty");
  g->members = qs_calloc(g->nmembers ? g->nmembers : 1, sizeof *g->members);
  double *row = qs_calloc(g->nchoices ? g->nchoices : 1, sizeof *row);
  for (size_t m = 0; *ok && m < g->nmembers; m++) {
    const char *name = json_string_value(json_array_get(names, m));
    if (!name) {
      *ok = bad(L, "module_names", "must hold strings");
      break;
    }
    long long numel = get_int(L, mnumel, name, ok);
    load_float_list(L, mscores, name, g->nchoices, row, ok);
    if (!*ok) break;
    if (numel <= 0) *ok = bad(L, name, "must have a positive numel");
    g->members[m] = cell->nlinears;
    qs_cell_linear *lin = qs_cell_add_linear(cell, name, numel);
    lin->none_only = g->nchoices == 1;
    for (size_t k = 0; k + 1 < g->nchoices; k++)
      lin->raw_scores[format_index(cell, g->formats[k])] = row[k];
  }
  free(row);
}

static void load_group(const loader *L, const char *key, json_t *gj, qs_cell *cell, bool *ok) {
  size_t klen = strlen(key), slen = strlen(QS_RECIPE_SUFFIX);
  if (!json_is_object(gj) || klen <= slen || strcmp(key + klen - slen, QS_RECIPE_SUFFIX) != 0) {
    *ok = bad(L, key, "is not a '<module>.quant_recipe' object");
    return;
  }
  qs_cell_group *g = &cell->groups[cell->ngroups++];
  g->handle = qs_strndup(key, klen - slen);
  g->chosen = -1;
  load_group_formats(L, gj, cell, g, ok);
  size_t n = g->nchoices ? g->nchoices : 1;
  g->raw_scores = qs_calloc(n, sizeof(double));
  g->scores = qs_calloc(n, sizeof(double));
  g->costs = qs_calloc(n, sizeof(double));
  load_float_list(L, gj, "scores", g->nchoices, g->scores, ok);
  load_float_list(L, gj, "raw_scores", g->nchoices, g->raw_scores, ok);
  load_float_list(L, gj, "costs", g->nchoices, g->costs, ok);
  double numel = get_num(L, gj, "uncompressed_cost", ok);
  if (*ok && !(numel >= 1.0 && numel < 9e15 && numel == floor(numel)))
    *ok = bad(L, key, "has an uncompressed_cost that is not a positive whole number");
  g->numel = *ok ? (long long)numel : 0;
  load_members(L, gj, cell, g, ok);
}

static void load_groups(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  json_t *stats = get_obj(L, root, "candidate_stats", ok);
  if (!*ok) return;
  cell->groups = qs_calloc(json_object_size(stats) + 1, sizeof *cell->groups);
  const char *key;
  json_t *gj;
  json_object_foreach(stats, key, gj) {
    if (!*ok) break;
    load_group(L, key, gj, cell, ok);
  }
  if (*ok && cell->ngroups == 0) *ok = bad(L, "candidate_stats", "must not be empty");
}

static void load_best(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  json_t *best = get_obj(L, root, "best", ok);
  json_t *recipe = get_obj(L, best, "recipe", ok);
  json_t *cons = get_obj(L, best, "constraints", ok);
  cell->search.effective_bits = get_num(L, cons, "effective_bits", ok);
  cell->search.best_score = get_num(L, best, "score", ok);
  cell->search.is_satisfied = get_bool(L, best, "is_satisfied", ok);
  for (size_t i = 0; *ok && i < cell->ngroups; i++) {
    qs_cell_group *g = &cell->groups[i];
    json_t *choice = json_object_get(recipe, g->handle);
    if (!choice || json_is_null(choice)) continue;
    const char *s = json_string_value(choice);
    for (size_t k = 0; s && k < g->nchoices; k++)
      if (strcmp(g->formats[k], s) == 0) g->chosen = (int)k;
    if (g->chosen < 0) *ok = bad(L, g->handle, "in best.recipe names none of the group's formats");
  }
}

/* amax keys name a Linear plus ".weight_quantizer" or ".input_quantizer[<i>]". */
static void load_amax(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  json_t *amax = get_obj(L, get_obj(L, root, "run", ok), "amax", ok);
  if (!*ok) return;
  for (size_t i = 0; i < cell->nlinears; i++) {
    qs_cell_linear *lin = &cell->linears[i];
    char key[1100];
    snprintf(key, sizeof key, "%s.weight_quantizer", lin->name);
    if (json_object_get(amax, key)) lin->weight_amax = get_num(L, amax, key, ok);
    for (size_t f = 0; f < cell->nformats; f++) {
      if (cell->nformats > 1)
        snprintf(key, sizeof key, "%s.input_quantizer[%zu]", lin->name, f);
      else
        snprintf(key, sizeof key, "%s.input_quantizer", lin->name);
      if (json_object_get(amax, key)) lin->input_amax[f] = get_num(L, amax, key, ok);
    }
  }
}

/* States written before the HEAD layout existed have no report_style: they
 * were rendered in the committed layout, so that is what rebuilds them. */
static void load_report_style(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  cell->report_style = QS_REPORT_COMMITTED;
  if (!*ok || !json_object_get(root, "report_style")) return;
  char *style = NULL;
  get_str(L, root, "report_style", &style, ok);
  if (*ok && !qs_report_style_parse(style, &cell->report_style))
    *ok = bad(L, "report_style", "must be \"head\" or \"committed\"");
  free(style);
}

static void load_extensions(const loader *L, json_t *root, qs_cell *cell, bool *ok) {
  char *rule = NULL;
  get_str(L, root, "monotone_rule", &rule, ok);
  if (*ok && rule && strcmp(rule, "v037") == 0) cell->monotone_rule = QS_MONOTONE_V037;
  else if (*ok && (!rule || strcmp(rule, "head") != 0))
    *ok = bad(L, "monotone_rule", "must be \"head\" or \"v037\"");
  free(rule);
  cell->extra_none_numel = get_int(L, root, "extra_none_numel", ok);
  load_report_style(L, root, cell, ok);
  cell->search.cost_denominator = get_num(L, root, "cost_denominator", ok);
  cell->search.requested_bits = get_num(L, get_obj(L, root, "constraints", ok), "effective_bits", ok);
}

static bool load_root(const loader *L, json_t *root, qs_cell *cell) {
  bool ok = true;
  if (!json_is_object(root)) return bad(L, "(top level)", "must be an object");
  load_scheme(L, root, cell, &ok);
  load_formats(L, root, cell, &ok);
  load_dataset(L, root, cell, &ok);
  load_run(L, root, cell, &ok);
  load_extensions(L, root, cell, &ok);
  load_groups(L, root, cell, &ok);
  load_best(L, root, cell, &ok);
  load_amax(L, root, cell, &ok);
  return ok;
}

bool qs_cell_load_state(const char *path, qs_cell **out, qs_error *err) {
  *out = NULL;
  char *text = NULL;
  size_t len = 0;
  if (!qs_read_file(path, &text, &len, err)) return false;
  json_error_t jerr;
  /* jansson parses numbers with strtod, so the repr floats round-trip exactly. */
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  free(text);
  if (!root)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: not valid JSON (line %d, column %d: %s)", path,
                   jerr.line, jerr.column, jerr.text);
  loader L = {path, err};
  qs_cell *cell = qs_cell_new();
  bool ok = load_root(&L, root, cell);
  json_decref(root);
  if (!ok) {
    qs_cell_free(cell);
    return false;
  }
  *out = cell;
  return true;
}

bool qs_find_state_file(const char *dir, char **path, qs_error *err) {
  *path = NULL;
  DIR *d = opendir(dir);
  if (!d) return qs_fail(err, QS_EXIT_RUNTIME, "cannot open directory %s", dir);
  size_t slen = strlen(QS_STATE_SUFFIX);
  bool ok = true;
  struct dirent *e;
  while (ok && (e = readdir(d)) != NULL) {
    size_t n = strlen(e->d_name);
    if (n <= slen || strcmp(e->d_name + n - slen, QS_STATE_SUFFIX) != 0) continue;
    char *p = qs_path_join(dir, e->d_name);
    if (!qs_is_file(p)) {
      free(p);
      continue;
    }
    if (*path) {
      ok = qs_fail(err, QS_EXIT_RUNTIME, "%s holds two state files: %s and %s", dir, *path, p);
      free(p);
    } else {
      *path = p;
    }
  }
  closedir(d);
  if (!ok) {
    free(*path);
    *path = NULL;
  }
  return ok;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sub-folder names of dir, sorted. */
static char **subdirs(const char *dir, size_t *n) {
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char **names = NULL;
  size_t cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue; /* ".", "..", and Hydra's ".hydra" */
    char *p = qs_path_join(dir, e->d_name);
    if (qs_is_dir(p)) {
      qs_grow((void **)&names, &cap, *n + 1, sizeof *names);
      names[(*n)++] = p;
    } else {
      free(p);
    }
  }
  closedir(d);
  if (*n) qsort(names, *n, sizeof *names, compare_names);
  return names;
}

bool qs_find_state_files(const char *dir, char ***paths, size_t *n, qs_error *err) {
  *paths = NULL;
  *n = 0;
  if (!qs_is_dir(dir)) return qs_fail(err, QS_EXIT_RUNTIME, "%s is not a directory", dir);
  char *own = NULL;
  if (!qs_find_state_file(dir, &own, err)) return false;
  if (own) {
    *paths = qs_malloc(sizeof **paths);
    (*paths)[(*n)++] = own;
    return true;
  }
  size_t nsub = 0;
  char **sub = subdirs(dir, &nsub);
  bool ok = true;
  for (size_t i = 0; i < nsub; i++) {
    char *p = NULL;
    if (ok && (ok = qs_find_state_file(sub[i], &p, err)) && p) {
      *paths = qs_realloc(*paths, (*n + 1) * sizeof **paths);
      (*paths)[(*n)++] = p;
    }
    free(sub[i]);
  }
  free(sub);
  if (ok && *n == 0)
    ok = qs_fail(err, QS_EXIT_RUNTIME, "no *%s in %s or its job folders", QS_STATE_SUFFIX, dir);
  if (!ok) {
    for (size_t i = 0; i < *n; i++) free((*paths)[i]);
    free(*paths);
    *paths = NULL;
    *n = 0;
  }
  return ok;
}
