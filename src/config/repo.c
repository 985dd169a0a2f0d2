#define _POSIX_C_SOURCE 200809L
#include "config/repo.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/yaml.h"
#include "core/fsutil.h"
#include "core/mem.h"

static qs_search_dir *add_source(qs_repo *repo, const char *provider, const char *scheme, const char *path) {
  repo->dirs = qs_realloc(repo->dirs, (repo->n_dirs + 1) * sizeof *repo->dirs);
  qs_search_dir *d = &repo->dirs[repo->n_dirs++];
  d->provider = qs_strdup(provider);
  d->scheme = qs_strdup(scheme);
  d->path = qs_strdup(path);
  d->lookup = NULL;
  return d;
}

static void add_dir(qs_repo *repo, const char *provider, const char *abs) {
  add_source(repo, provider, "file", abs)->lookup = qs_strdup(abs);
}

void qs_repo_add_searchpath(qs_repo *repo, const char *provider, const char *entry, qs_strbuf *warnings) {
  const char *sep = strstr(entry, "://");
  char *scheme = sep ? qs_strndup(entry, (size_t)(sep - entry)) : qs_strdup("file");
  const char *path = sep ? sep + 3 : entry;
  qs_search_dir *d = add_source(repo, provider, scheme, path);
  if (strcmp(scheme, "file") == 0 && qs_is_dir(path)) d->lookup = qs_abspath(path);
  else qs_sb_printf(warnings, "UserWarning: provider=%s, path=%s is not available.\n", provider, path);
  free(scheme);
}

bool qs_repo_init(qs_repo *repo, const char *primary_dir, const char *extra_dir, qs_error *err) {
  memset(repo, 0, sizeof *repo);
  char *primary = qs_abspath(primary_dir);
  bool ok = qs_is_dir(primary);
  if (!ok)
    qs_fail(err, QS_EXIT_USAGE,
            "Primary config directory not found.\nCheck that the config directory '%s' exists and readable",
            primary);
  else
    add_dir(repo, "main", primary);
  free(primary);
  if (!ok || !extra_dir) return ok;
  /* Hydra inserts --config-dir just before its structured-config source,
   * i.e. after the primary directory. */
  char *extra = qs_abspath(extra_dir);
  ok = qs_is_dir(extra);
  if (!ok) qs_fail(err, QS_EXIT_USAGE, "Additional config directory '%s' not found", extra);
  else add_dir(repo, "command-line", extra);
  free(extra);
  return ok;
}

static void config_file_free(qs_config_file *f) {
  free(f->config_path);
  qs_node_free(f->content);
  qs_node_free(f->defaults);
  free(f->package_header);
  free(f);
}

void qs_repo_free(qs_repo *repo) {
  for (size_t k = 0; k < repo->n_dirs; k++) {
    free(repo->dirs[k].provider);
    free(repo->dirs[k].scheme);
    free(repo->dirs[k].path);
    free(repo->dirs[k].lookup);
  }
  free(repo->dirs);
  for (size_t k = 0; k < repo->n_cache; k++) config_file_free(repo->cache[k]);
  free(repo->cache);
  memset(repo, 0, sizeof *repo);
}

/* Absolute file of the first search directory holding config_path, or NULL. */
static char *find_file(const qs_repo *repo, const char *config_path) {
  for (size_t k = 0; k < repo->n_dirs; k++) {
    if (!repo->dirs[k].lookup) continue;
    char *file = qs_malloc(strlen(repo->dirs[k].lookup) + strlen(config_path) + 7);
    sprintf(file, "%s/%s.yaml", repo->dirs[k].lookup, config_path);
    if (qs_is_file(file)) return file;
    free(file);
  }
  return NULL;
}

bool qs_repo_config_exists(const qs_repo *repo, const char *config_path) {
  char *file = find_file(repo, config_path);
  free(file);
  return file != NULL;
}

bool qs_repo_group_exists(const qs_repo *repo, const char *group) {
  for (size_t k = 0; k < repo->n_dirs; k++) {
    if (!repo->dirs[k].lookup) continue;
    char *dir = qs_path_join(repo->dirs[k].lookup, group);
    bool found = qs_is_dir(dir);
    free(dir);
    if (found) return true;
  }
  return false;
}

/* Splits the "defaults" key off a loaded mapping. */
static bool take_defaults(qs_config_file *f, qs_error *err) {
  qs_node *d = qs_map_get(f->content, "defaults");
  if (!d) return true;
  if (d->kind != QS_LIST) {
    const char *type = d->kind == QS_MAP ? "mapping" : d->kind == QS_STR ? "str" : "scalar";
    return qs_fail(err, QS_EXIT_USAGE,
                   "Invalid defaults list in '%s', defaults must be a list (got %s)",
                   f->config_path, type);
  }
  f->defaults = qs_node_copy(d);
  qs_map_del(f->content, "defaults");
  return true;
}

bool qs_repo_load(qs_repo *repo, const char *config_path, const qs_config_file **out,
                  qs_error *err) {
  *out = NULL;
  for (size_t k = 0; k < repo->n_cache; k++)
    if (strcmp(repo->cache[k]->config_path, config_path) == 0) {
      *out = repo->cache[k];
      return true;
    }
  char *file = find_file(repo, config_path);
  if (!file) return true;
  qs_config_file *f = qs_calloc(1, sizeof *f);
  f->config_path = qs_strdup(config_path);
  bool ok = qs_yaml_load_file(file, &f->content, &f->package_header, err) && take_defaults(f, err);
  free(file);
  if (!ok) {
    config_file_free(f);
    return false;
  }
  qs_grow((void **)&repo->cache, &repo->cap_cache, repo->n_cache + 1, sizeof *repo->cache);
  repo->cache[repo->n_cache++] = f;
  *out = f;
  return true;
}

static int compare_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_yaml_suffix(const char *name, size_t *stem_len) {
  size_t len = strlen(name);
  if (len <= 5 || strcmp(name + len - 5, ".yaml") != 0) return false;
  *stem_len = len - 5;
  return true;
}

/* Entries of <dir>/<group> that are option files (want_dirs false) or
 * sub-groups (true), appended to v. */
static void list_dir(const char *dir, bool want_dirs, char ***v, size_t *n, size_t *cap) {
  DIR *d = opendir(dir);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.') continue;
    char *full = qs_path_join(dir, e->d_name);
    size_t stem = 0;
    char *name = NULL;
    if (want_dirs && qs_is_dir(full)) name = qs_strdup(e->d_name);
    else if (!want_dirs && qs_is_file(full) && has_yaml_suffix(e->d_name, &stem))
      name = qs_strndup(e->d_name, stem);
    free(full);
    if (!name) continue;
    qs_grow((void **)v, cap, *n + 1, sizeof **v);
    (*v)[(*n)++] = name;
  }
  closedir(d);
}

static char **list_group(const qs_repo *repo, const char *group, bool want_dirs, size_t *n) {
  char **v = NULL;
  size_t cap = 0;
  *n = 0;
  for (size_t k = 0; k < repo->n_dirs; k++) {
    if (!repo->dirs[k].lookup) continue;
    char *dir = qs_path_join(repo->dirs[k].lookup, group);
    list_dir(dir, want_dirs, &v, n, &cap);
    free(dir);
  }
  if (*n) qsort(v, *n, sizeof *v, compare_str);
  size_t unique = 0;
  for (size_t k = 0; k < *n; k++) {
    if (unique > 0 && strcmp(v[unique - 1], v[k]) == 0) free(v[k]);
    else v[unique++] = v[k];
  }
  *n = unique;
  return v;
}

char **qs_repo_options(const qs_repo *repo, const char *group, size_t *n) {
  return list_group(repo, group, false, n);
}

char **qs_repo_subgroups(const qs_repo *repo, const char *group, size_t *n) {
  return list_group(repo, group, true, n);
}

void qs_strv_free(char **v, size_t n) {
  for (size_t k = 0; k < n; k++) free(v[k]);
  free(v);
}

void qs_repo_describe(const qs_repo *repo, qs_strbuf *out) {
  qs_sb_append(out, "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf");
  for (size_t k = 0; k < repo->n_dirs; k++)
    qs_sb_printf(out, "\n\tprovider=%s, path=%s://%s", repo->dirs[k].provider, repo->dirs[k].scheme,
                 repo->dirs[k].path);
  qs_sb_append(out, "\n\tprovider=schema, path=structured://");
}

static qs_node *source_node(const char *path, const char *schema, const char *provider) {
  qs_node *s = qs_node_map();
  qs_map_set(s, "path", qs_node_str(path));
  qs_map_set(s, "schema", qs_node_str(schema));
  qs_map_set(s, "provider", qs_node_str(provider));
  return s;
}

qs_node *qs_repo_sources_node(const qs_repo *repo) {
  qs_node *list = qs_node_list();
  qs_list_append(list, source_node("hydra.conf", "pkg", "hydra"));
  for (size_t k = 0; k < repo->n_dirs; k++)
    qs_list_append(list, source_node(repo->dirs[k].path, repo->dirs[k].scheme, repo->dirs[k].provider));
  qs_list_append(list, source_node("", "structured", "schema"));
  return list;
}
