#define _POSIX_C_SOURCE 200809L
#include "config/hydra_node.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/interp.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"

static qs_node *map_of(const char *key, qs_node *val) {
  qs_node *m = qs_node_map();
  qs_map_set(m, key, val);
  return m;
}

static qs_node *job_defaults(void) {
  qs_node *job = qs_node_map();
  qs_map_set(job, "name", qs_node_str("???"));
  qs_map_set(job, "chdir", qs_node_null());
  qs_map_set(job, "override_dirname", qs_node_str("???"));
  qs_map_set(job, "id", qs_node_str("???"));
  qs_map_set(job, "num", qs_node_str("???"));
  qs_map_set(job, "config_name", qs_node_str("???"));
  qs_map_set(job, "env_set", qs_node_map());
  qs_map_set(job, "env_copy", qs_node_list());
  qs_node *dirname = qs_node_map();
  qs_map_set(dirname, "kv_sep", qs_node_str("="));
  qs_map_set(dirname, "item_sep", qs_node_str(","));
  qs_map_set(dirname, "exclude_keys", qs_node_list());
  qs_map_set(job, "config", map_of("override_dirname", dirname));
  return job;
}

static qs_node *runtime_defaults(void) {
  qs_node *rt = qs_node_map();
  static const char *const keys[] = {"version", "version_base", "cwd", "config_sources", "output_dir"};
  for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) qs_map_set(rt, keys[k], qs_node_str("???"));
  qs_map_set(rt, "choices", qs_node_map());
  return rt;
}

qs_node *qs_hydra_node_defaults(void) {
  qs_node *h = qs_node_map();
  qs_map_set(h, "run", map_of("dir", qs_node_str("outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}")));
  qs_node *sweep = map_of("dir", qs_node_str("multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}"));
  qs_map_set(sweep, "subdir", qs_node_str("${hydra.job.num}"));
  qs_map_set(h, "sweep", sweep);
  qs_node *sweeper = map_of("max_batch_size", qs_node_null());
  qs_map_set(sweeper, "params", qs_node_null());
  qs_map_set(h, "sweeper", sweeper);
  qs_map_set(h, "mode", qs_node_null());
  qs_map_set(h, "searchpath", qs_node_list());
  qs_map_set(h, "output_subdir", qs_node_str(".hydra"));
  qs_node *overrides = map_of("hydra", qs_node_list());
  qs_map_set(overrides, "task", qs_node_list());
  qs_map_set(h, "overrides", overrides);
  qs_map_set(h, "job", job_defaults());
  qs_map_set(h, "runtime", runtime_defaults());
  qs_map_set(h, "verbose", qs_node_bool(false));
  return h;
}

static int compare_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Text of a resolved scalar setting ("=" / ","), "" when unusable. */
static char *setting_text(const qs_node *cfg, const char *path) {
  qs_node *v = NULL;
  qs_error ignored;
  char *text = qs_strdup("");
  if (qs_interp_select(cfg, path, &v, &ignored) && v && v->kind == QS_STR) {
    free(text);
    text = qs_strdup(v->s);
  }
  qs_node_free(v);
  return text;
}

static bool excluded(const qs_node *cfg, const char *key) {
  qs_node *list = NULL;
  qs_error ignored;
  bool found = false;
  if (qs_interp_select(cfg, "hydra.job.config.override_dirname.exclude_keys", &list, &ignored) && list &&
      list->kind == QS_LIST)
    for (size_t k = 0; k < list->n; k++)
      found |= list->items[k]->kind == QS_STR && strcmp(list->items[k]->s, key) == 0;
  qs_node_free(list);
  return found;
}

/* hydra.job.override_dirname: task overrides as typed minus excluded keys,
 * sorted, joined with item_sep, then every '=' replaced by kv_sep. */
static char *override_dirname(const qs_node *cfg, const qs_override *ovs, size_t n) {
  char **lines = qs_calloc(n ? n : 1, sizeof *lines);
  size_t count = 0;
  for (size_t k = 0; k < n; k++)
    if (!ovs[k].is_hydra && !excluded(cfg, ovs[k].key)) lines[count++] = ovs[k].input;
  qsort(lines, count, sizeof *lines, compare_str);
  char *kv_sep = setting_text(cfg, "hydra.job.config.override_dirname.kv_sep");
  char *item_sep = setting_text(cfg, "hydra.job.config.override_dirname.item_sep");
  qs_strbuf joined = {0}, out = {0};
  for (size_t k = 0; k < count; k++) qs_sb_printf(&joined, "%s%s", k ? item_sep : "", lines[k]);
  for (const char *p = qs_sb_str(&joined); *p; p++) {
    if (*p == '=') qs_sb_append(&out, kv_sep);
    else qs_sb_putc(&out, *p);
  }
  qs_sb_putc(&out, '\0');
  out.len--;
  free(lines);
  free(kv_sep);
  free(item_sep);
  qs_sb_free(&joined);
  return qs_sb_take(&out);
}

static void copy_env(qs_node *job) {
  const qs_node *env_copy = qs_map_get(job, "env_copy");
  qs_node *env_set = qs_map_get(job, "env_set");
  if (!env_copy || env_copy->kind != QS_LIST || !env_set || env_set->kind != QS_MAP) return;
  for (size_t k = 0; k < env_copy->n; k++) {
    const qs_node *name = env_copy->items[k];
    const char *value = name->kind == QS_STR ? getenv(name->s) : NULL;
    if (value) qs_map_set(env_set, name->s, qs_node_str(value));
  }
}

static qs_node *ensure_map(qs_node *parent, const char *key) {
  qs_node *n = qs_map_get(parent, key);
  if (!n || n->kind != QS_MAP) {
    n = qs_node_map();
    qs_map_set(parent, key, n);
  }
  return n;
}

static qs_node *ensure_list(qs_node *parent, const char *key) {
  qs_node *n = qs_map_get(parent, key);
  if (!n || n->kind != QS_LIST) {
    n = qs_node_list();
    qs_map_set(parent, key, n);
  }
  return n;
}

bool qs_hydra_node_fill(qs_node *cfg, const qs_hydra_fill_info *info, qs_error *err) {
  qs_node *hydra = qs_map_get(cfg, "hydra");
  if (!hydra || hydra->kind != QS_MAP) return qs_fail(err, QS_EXIT_USAGE, "The config has no 'hydra' node");
  qs_node *overrides = ensure_map(hydra, "overrides");
  qs_node *hydra_list = ensure_list(overrides, "hydra"), *task_list = ensure_list(overrides, "task");
  for (size_t k = 0; k < info->n_ovs; k++)
    qs_list_append(info->ovs[k].is_hydra ? hydra_list : task_list, qs_node_str(info->ovs[k].input));

  qs_node *runtime = ensure_map(hydra, "runtime");
  qs_node *choices = ensure_map(runtime, "choices");
  for (size_t k = 0; info->choices && k < info->choices->n; k++)
    qs_map_set(choices, info->choices->keys[k], qs_node_copy(info->choices->items[k]));

  qs_node *job = ensure_map(hydra, "job");
  copy_env(job);
  qs_map_set(runtime, "version", qs_node_str(QS_HYDRA_VERSION));
  qs_map_set(runtime, "version_base", qs_node_str(QS_HYDRA_VERSION_BASE));
  char *cwd = qs_abspath(".");
  qs_map_set(runtime, "cwd", qs_node_str(cwd));
  free(cwd);
  qs_map_set(runtime, "config_sources", qs_repo_sources_node(info->repo));
  const qs_node *name = qs_map_get(job, "name");
  if (!name || qs_node_is_missing(name)) qs_map_set(job, "name", qs_node_str(info->app_name));
  char *dirname = override_dirname(cfg, info->ovs, info->n_ovs);
  qs_map_set(job, "override_dirname", qs_node_str(dirname));
  free(dirname);
  qs_map_set(job, "config_name", qs_node_str(info->config_name));
  return true;
}
