#define _POSIX_C_SOURCE 200809L
#include "config/show.h"

#include <stdlib.h>
#include <string.h>

#include "config/hydra_node.h"
#include "config/interp.h"
#include "config/pystr.h"
#include "config/yaml.h"
#include "core/mem.h"
#include "core/strbuf.h"

static void emit(FILE *out, const char *text) {
  if (out) fputs(text, out);
}

/* The part of the composed config that --cfg <type> shows. */
static qs_node *cfg_part(const qs_node *cfg, const char *type) {
  if (strcmp(type, "all") == 0) return qs_node_copy(cfg);
  if (strcmp(type, "hydra") == 0) {
    qs_node *h = qs_node_map();
    qs_map_set(h, "hydra", qs_node_copy(qs_map_get(cfg, "hydra")));
    return h;
  }
  qs_node *job = qs_node_copy(cfg);
  qs_map_del(job, "hydra");
  return job;
}

static void emit_value(FILE *out, const qs_node *v) {
  if (v->kind == QS_STR) {
    emit(out, v->s);
  } else {
    char *text = qs_pystr(v);
    emit(out, text);
    free(text);
  }
  emit(out, "\n");
}

static void emit_yaml(FILE *out, const qs_node *n) {
  char *text = qs_yaml_dump(n);
  emit(out, text);
  free(text);
}

/* The node --package selects: containers as stored (resolved when asked),
 * scalars always resolved (OmegaConf.select resolves them). */
static bool select_package(const qs_node *shown, const qs_node *hydra, const char *package, bool resolve,
                           qs_node **out, qs_error *err) {
  *out = NULL;
  const qs_node *raw = qs_node_get_path(shown, package);
  if (!raw || qs_node_is_missing(raw)) return true; /* OmegaConf.select gives None for "???" */
  if (raw->kind == QS_MAP || raw->kind == QS_LIST) {
    if (resolve) return qs_interp_resolve_at(shown, hydra, package, out, err);
    *out = qs_node_copy(raw);
    return true;
  }
  return qs_interp_select_in(shown, hydra, package, out, err);
}

bool qs_show_cfg(qs_session *s, const qs_cli_args *a, FILE *out, qs_error *err) {
  qs_node *cfg;
  if (!qs_session_compose(s, a->overrides, a->n_overrides, false, true, &cfg, NULL, err)) return false;
  const qs_node *hydra = qs_map_get(cfg, "hydra");
  qs_node *shown = cfg_part(cfg, a->cfg);
  const char *package = a->package && strcmp(a->package, "_global_") != 0 ? a->package : NULL;
  bool ok = true;
  if (package) {
    qs_node *sel = NULL;
    ok = select_package(shown, hydra, package, a->resolve, &sel, err);
    if (ok && (!sel || sel->kind == QS_NULL)) {
      ok = qs_fail(err, QS_EXIT_RUNTIME, "package '%s' not found in config", package);
    } else if (ok && sel->kind != QS_MAP && sel->kind != QS_LIST) {
      emit_value(out, sel);
    } else if (ok) {
      qs_strbuf header = {0};
      qs_sb_printf(&header, "# @package %s\n", package);
      emit(out, qs_sb_str(&header));
      qs_sb_free(&header);
      emit_yaml(out, sel);
    }
    qs_node_free(sel);
  } else if (a->resolve) {
    qs_node *resolved = NULL;
    ok = qs_interp_resolve(shown, hydra, &resolved, err);
    if (ok) emit_yaml(out, resolved);
    qs_node_free(resolved);
  } else {
    emit_yaml(out, shown);
  }
  qs_node_free(shown);
  qs_node_free(cfg);
  return ok;
}

/* Every group path below parent, recursively. */
static void collect_groups(const qs_repo *repo, const char *parent, char ***paths, size_t *n, size_t *cap) {
  size_t n_groups;
  char **groups = qs_repo_subgroups(repo, parent, &n_groups);
  for (size_t g = 0; g < n_groups; g++) {
    qs_strbuf path = {0};
    qs_sb_printf(&path, "%s%s%s", parent, *parent ? "/" : "", groups[g]);
    collect_groups(repo, qs_sb_str(&path), paths, n, cap);
    qs_grow((void **)paths, cap, *n + 1, sizeof **paths);
    (*paths)[(*n)++] = qs_sb_take(&path);
  }
  qs_strv_free(groups, n_groups);
}

static int compare_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* "group: opt1, opt2" lines of the application's groups, sorted by path
 * (Hydra's --help leaves out hydra/ groups and groups without options). */
static void group_lines(const qs_repo *repo, qs_strbuf *lines) {
  char **paths = NULL;
  size_t n = 0, cap = 0;
  collect_groups(repo, "", &paths, &n, &cap);
  if (n) qsort(paths, n, sizeof *paths, compare_str);
  for (size_t k = 0; k < n; k++) {
    if (strcmp(paths[k], "hydra") == 0 || strncmp(paths[k], "hydra/", 6) == 0) continue;
    size_t n_opts;
    char **opts = qs_repo_options(repo, paths[k], &n_opts);
    if (n_opts) {
      qs_sb_printf(lines, "%s: ", paths[k]);
      for (size_t o = 0; o < n_opts; o++) qs_sb_printf(lines, "%s%s", o ? ", " : "", opts[o]);
      qs_sb_putc(lines, '\n');
    }
    qs_strv_free(opts, n_opts);
  }
  qs_strv_free(paths, n);
}

bool qs_show_help(qs_session *s, const qs_cli_args *a, FILE *out, qs_error *err) {
  qs_node *cfg;
  if (!qs_session_compose(s, a->overrides, a->n_overrides, false, true, &cfg, NULL, err)) return false;
  qs_node *job = cfg_part(cfg, "job");
  qs_node *shown = job;
  bool ok = !a->resolve || qs_interp_resolve(job, qs_map_get(cfg, "hydra"), &shown, err);
  if (ok) {
    qs_strbuf groups = {0}, text = {0};
    group_lines(&s->repo, &groups);
    char *yaml = qs_yaml_dump(shown);
    qs_sb_printf(&text,
                 "%s is powered by Hydra.\n\n== Configuration groups ==\n"
                 "Compose your configuration from those groups (group=option)\n\n%s\n\n"
                 "== Config ==\nOverride anything in the config (foo.bar=value)\n\n%s\n\n"
                 "Powered by Hydra (https://hydra.cc)\nUse --hydra-help to view Hydra specific help\n\n\n",
                 s->app_name, qs_sb_str(&groups), yaml);
    emit(out, qs_sb_str(&text));
    free(yaml);
    qs_sb_free(&groups);
    qs_sb_free(&text);
  }
  if (shown != job) qs_node_free(shown);
  qs_node_free(job);
  qs_node_free(cfg);
  return ok;
}

bool qs_show_hydra_help(qs_session *s, FILE *out) {
  qs_strbuf text = {0};
  qs_sb_printf(&text,
               "Hydra (%s)\nSee https://hydra.cc for more info.\n\n== Flags ==\n"
               "--help,-h : Application's help\n"
               "--hydra-help : Hydra's help\n"
               "--version : Show Hydra's version and exit\n"
               "--cfg,-c : Show config instead of running [job|hydra|all]\n"
               "--resolve : Used in conjunction with --cfg, resolve config interpolations before printing.\n"
               "--package,-p : Config package to show\n"
               "--run,-r : Run a job\n"
               "--multirun,-m : Run multiple jobs with the configured launcher and sweeper\n"
               "--config-path,-cp : Overrides the config_path specified in hydra.main().\n"
               "                    The config_path is absolute or relative to the current directory\n"
               "--config-name,-cn : Overrides the config_name specified in hydra.main()\n"
               "--config-dir,-cd : Adds an additional config dir to the config search path\n"
               "--info,-i : Print Hydra information [all|config|defaults|defaults-tree|plugins|searchpath]\n"
               "Overrides : Any key=value arguments to override config values (use dots for.nested=overrides)\n\n"
               "Use '--cfg hydra' to Show the Hydra config.\n\n",
               QS_HYDRA_VERSION);
  (void)s;
  emit(out, qs_sb_str(&text));
  qs_sb_free(&text);
  return true;
}

/* ---- --info tables ---- */

typedef struct table {
  const char *(*cells)[4]; /* rows of borrowed strings */
  size_t cap;
  size_t rows, cols;
} table;

static void table_add(table *t, const char *a, const char *b, const char *c, const char *d) {
  qs_grow((void **)&t->cells, &t->cap, t->rows + 1, sizeof *t->cells);
  const char *row[4] = {a, b, c, d};
  for (size_t k = 0; k < 4; k++) t->cells[t->rows][k] = row[k] ? row[k] : "";
  t->rows++;
}

/* Hydra's box: header row (with a trailing blank when trailing_blank),
 * a dash line as long as the header, the rows, a dash line. */
static void table_print(const table *t, const char *title, const char *stars, bool trailing_blank, qs_strbuf *b) {
  size_t width[4] = {0};
  for (size_t r = 0; r < t->rows; r++)
    for (size_t c = 0; c < t->cols; c++)
      if (strlen(t->cells[r][c]) > width[c]) width[c] = strlen(t->cells[r][c]);
  qs_sb_printf(b, "\n%s\n%s\n", title, stars);
  size_t header_len = 0;
  for (size_t r = 0; r < t->rows; r++) {
    size_t start = b->len;
    for (size_t c = 0; c < t->cols; c++) qs_sb_printf(b, "| %-*s ", (int)width[c], t->cells[r][c]);
    qs_sb_append(b, r == 0 && trailing_blank ? "| " : "|");
    if (r == 0) header_len = b->len - start;
    qs_sb_putc(b, '\n');
    if (r == 0 || r + 1 == t->rows)
      for (size_t k = 0; k <= header_len; k++) qs_sb_putc(b, k == header_len ? '\n' : '-');
  }
}

/* Rows of Hydra's own configs, which precede the application's, with the
 * chosen options (choices holds "hydra/<group>" -> option). */
static void add_hydra_rows(table *t, const qs_node *choices, char **owned, size_t *n_owned) {
  static const char *const groups[][2] = {
      {"hydra/output", "hydra"},           {"hydra/launcher", "hydra.launcher"},
      {"hydra/sweeper", "hydra.sweeper"},  {"hydra/help", "hydra.help"},
      {"hydra/hydra_help", "hydra.hydra_help"}, {"hydra/hydra_logging", "hydra.hydra_logging"},
      {"hydra/job_logging", "hydra.job_logging"}, {"hydra/env", "hydra.env"},
  };
  for (size_t k = 0; k < sizeof groups / sizeof *groups; k++) {
    const qs_node *choice = qs_map_get(choices, groups[k][0]);
    if (!choice || choice->kind != QS_STR) continue;
    qs_strbuf path = {0};
    qs_sb_printf(&path, "%s/%s", groups[k][0], choice->s);
    owned[*n_owned] = qs_sb_take(&path);
    table_add(t, owned[(*n_owned)++], groups[k][1], "False", "hydra/config");
  }
  table_add(t, "hydra/config", "hydra", "True", "<root>");
}

/* Hydra's own part of the defaults tree, then the application's. */
static void print_tree(const qs_defaults *d, qs_strbuf *b) {
  static const char *const groups[] = {"hydra/output", "hydra/launcher", "hydra/sweeper", "hydra/help",
                                       "hydra/hydra_help", "hydra/hydra_logging", "hydra/job_logging",
                                       "hydra/callbacks", "hydra/env"};
  qs_sb_append(b, "\nDefaults Tree\n*************\n<root>:\n  hydra/config:\n");
  for (size_t k = 0; k < sizeof groups / sizeof *groups; k++) {
    const qs_node *choice = qs_map_get(d->choices, groups[k]);
    qs_sb_printf(b, "    %s: %s\n", groups[k], choice && choice->kind == QS_STR ? choice->s : "null");
  }
  qs_sb_append(b, "    _self_\n");
  qs_sb_append(b, d->tree_text);
}

static bool info_defaults(qs_session *s, const qs_cli_args *a, bool as_tree, qs_strbuf *b, qs_error *err) {
  qs_override *ovs;
  if (!qs_parse_overrides(a->overrides, a->n_overrides, &ovs, err)) return false;
  qs_defaults d;
  qs_strbuf warnings = {0};
  bool ok = qs_defaults_build(&s->repo, s->config_name, ovs, a->n_overrides, false, &d, &warnings, err);
  qs_session_warn(s, &warnings);
  if (ok && as_tree) {
    print_tree(&d, b);
    qs_defaults_free(&d);
  } else if (ok) {
    table t = {.cols = 4};
    table_add(&t, "Config path", "Package", "_self_", "Parent");
    char *owned[8];
    size_t n_owned = 0;
    add_hydra_rows(&t, d.choices, owned, &n_owned);
    for (size_t k = 0; k < d.n_entries; k++)
      table_add(&t, d.entries[k].config_path, d.entries[k].package, d.entries[k].is_self ? "True" : "False",
                d.entries[k].parent);
    table_print(&t, "Defaults List", "*************", true, b);
    free(t.cells);
    for (size_t k = 0; k < n_owned; k++) free(owned[k]);
    qs_defaults_free(&d);
  }
  qs_overrides_free(ovs, a->n_overrides);
  return ok;
}

static void info_searchpath(qs_session *s, qs_strbuf *b) {
  table t = {.cols = 2};
  char **paths = qs_calloc(s->repo.n_dirs + 1, sizeof *paths);
  table_add(&t, "Provider", "Search path", NULL, NULL);
  table_add(&t, "hydra", "pkg://hydra.conf", NULL, NULL);
  for (size_t k = 0; k < s->repo.n_dirs; k++) {
    qs_strbuf url = {0};
    qs_sb_printf(&url, "%s://%s", s->repo.dirs[k].scheme, s->repo.dirs[k].path);
    paths[k] = qs_sb_take(&url);
    table_add(&t, s->repo.dirs[k].provider, paths[k], NULL, NULL);
  }
  table_add(&t, "schema", "structured://", NULL, NULL);
  table_print(&t, "Config search path", "******************", false, b);
  free(t.cells);
  qs_strv_free(paths, s->repo.n_dirs);
}

bool qs_show_info(qs_session *s, const qs_cli_args *a, FILE *out, qs_error *err) {
  if (!qs_session_searchpath(s, a->overrides, a->n_overrides, err)) return false;
  qs_strbuf b = {0};
  bool ok = true;
  bool config = strcmp(a->info, "config") == 0;
  if (strcmp(a->info, "defaults") == 0) {
    ok = info_defaults(s, a, false, &b, err);
  } else if (strcmp(a->info, "defaults-tree") == 0) {
    ok = info_defaults(s, a, true, &b, err);
  } else if (strcmp(a->info, "searchpath") == 0 || config) {
    /* Hydra composes the config to list its sources. */
    qs_node *cfg = NULL;
    ok = qs_session_compose(s, a->overrides, a->n_overrides, false, true, &cfg, NULL, err);
    if (ok) info_searchpath(s, &b);
    /* --info config: every table, then the job config. */
    ok = ok && (!config || (info_defaults(s, a, true, &b, err) && info_defaults(s, a, false, &b, err)));
    if (ok && config) {
      qs_map_del(cfg, "hydra");
      char *yaml = qs_yaml_dump(cfg);
      qs_sb_printf(&b, "Config\n******\n%s\n", yaml);
      free(yaml);
    }
    qs_node_free(cfg);
  } else {
    ok = qs_fail(err, QS_EXIT_USAGE, "--info %s is not available in qsens; use --info config, defaults, defaults-tree or searchpath",
                    a->info);
  }
  if (ok) emit(out, qs_sb_str(&b));
  qs_sb_free(&b);
  return ok;
}
