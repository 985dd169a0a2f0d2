/* Report regeneration and re-solving from state files. */
#define _POSIX_C_SOURCE 200809L
#include "report/rebuild.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "report/artifacts.h"
#include "report/state.h"

/* Folder of a file path (caller frees). */
static char *parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? qs_strndup(path, (size_t)(slash - path) + (slash == path)) : qs_strdup(".");
}

/* The HEAD report embeds the composed config, which the state does not keep
 * (it names run paths): it comes back from the composed-config.yaml beside
 * the state. Without that file the report is rebuilt without the section. */
static bool load_composed_config(qs_cell *cell, const char *state_path, qs_error *err) {
  if (cell->report_style != QS_REPORT_HEAD) return true;
  char *dir = parent_dir(state_path), *path = qs_path_join(dir, QS_COMPOSED_CONFIG_NAME);
  size_t len;
  bool ok = access(path, F_OK) != 0 || qs_read_file(path, &cell->config_yaml, &len, err);
  free(path);
  free(dir);
  return ok;
}

/* Loads every cell under dir; on failure frees what was loaded. */
static bool load_all(const char *dir, qs_cell ***cells, char ***paths, size_t *n, qs_error *err) {
  *cells = NULL;
  if (!qs_find_state_files(dir, paths, n, err)) return false;
  *cells = qs_calloc(*n, sizeof **cells);
  for (size_t i = 0; i < *n; i++)
    if (!qs_cell_load_state((*paths)[i], &(*cells)[i], err) ||
        !load_composed_config((*cells)[i], (*paths)[i], err))
      return false;
  return true;
}

static void free_all(qs_cell **cells, char **paths, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (cells) qs_cell_free(cells[i]);
    free(paths[i]);
  }
  free(cells);
  free(paths);
}

/* Writes each cell's artifacts next to its state file. */
static bool write_all(qs_cell **cells, char **paths, size_t n, bool with_state, qs_error *err) {
  bool ok = true;
  for (size_t i = 0; ok && i < n; i++) {
    char *dir = parent_dir(paths[i]);
    ok = with_state ? qs_write_cell_artifacts(cells[i], dir, err)
                    : qs_write_reports(cells[i], dir, err);
    free(dir);
  }
  return ok;
}

bool qs_rebuild_reports(const char *dir, size_t *ncells, qs_error *err) {
  qs_cell **cells;
  char **paths;
  size_t n = 0;
  bool ok = load_all(dir, &cells, &paths, &n, err) && write_all(cells, paths, n, false, err);
  *ncells = ok ? n : 0;
  free_all(cells, paths, n);
  return ok;
}

bool qs_resolve_budget(const char *dir, double effective_bits, size_t *ncells, qs_error *err) {
  qs_cell **cells;
  char **paths;
  size_t n = 0;
  bool ok = load_all(dir, &cells, &paths, &n, err);
  for (size_t i = 0; ok && i < n; i++)
    if (!qs_cell_solve(cells[i], effective_bits, err))
      ok = qs_fail_context(err, "%s: ", paths[i]);
  ok = ok && write_all(cells, paths, n, true, err);
  *ncells = ok ? n : 0;
  free_all(cells, paths, n);
  return ok;
}
