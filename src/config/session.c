#define _POSIX_C_SOURCE 200809L
#include "config/session.h"

#include <stdlib.h>
#include <string.h>

#include "config/compose.h"
#include "config/hydra_node.h"
#include "config/pystr.h"
#include "config/sweep.h"
#include "core/mem.h"
#include "core/strbuf.h"

bool qs_parse_overrides(char *const *args, size_t n, qs_override **ovs, qs_error *err) {
  *ovs = qs_calloc(n ? n : 1, sizeof **ovs);
  for (size_t k = 0; k < n; k++)
    if (!qs_override_parse(args[k], &(*ovs)[k], err)) {
      qs_overrides_free(*ovs, k);
      *ovs = NULL;
      return false;
    }
  return true;
}

void qs_overrides_free(qs_override *ovs, size_t n) {
  for (size_t k = 0; ovs && k < n; k++) qs_override_free(&ovs[k]);
  free(ovs);
}

void qs_session_warn(qs_session *s, qs_strbuf *warnings) {
  char *text = qs_sb_take(warnings);
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = '\0';
    bool seen = false;
    for (size_t k = 0; k < s->n_warned && !seen; k++) seen = strcmp(s->warned[k], line) == 0;
    if (seen) continue;
    if (s->err_out) fprintf(s->err_out, "%s\n", line);
    qs_grow((void **)&s->warned, &s->cap_warned, s->n_warned + 1, sizeof *s->warned);
    s->warned[s->n_warned++] = qs_strdup(line);
  }
  free(text);
}

void qs_session_free(qs_session *s) {
  qs_repo_free(&s->repo);
  for (size_t k = 0; k < s->n_warned; k++) free(s->warned[k]);
  free(s->warned);
  s->warned = NULL;
  s->n_warned = s->cap_warned = 0;
}

/* hydra.searchpath from the command line (first such override) or else
 * from the primary config: Hydra reads it before composing anything. */
static bool add_searchpath(qs_session *s, const qs_override *ovs, size_t n, qs_strbuf *warnings, qs_error *err) {
  if (s->searchpath_added) return true;
  s->searchpath_added = true;
  const qs_node *paths = NULL;
  const char *provider = "hydra.searchpath in main";
  for (size_t k = 0; k < n && !paths; k++)
    if (ovs[k].sweep == QS_SWEEP_NONE && ovs[k].has_value && strcmp(ovs[k].key, "hydra.searchpath") == 0) {
      paths = ovs[k].value;
      provider = "hydra.searchpath in command-line";
    }
  const qs_config_file *primary = NULL;
  if (!paths && !qs_repo_load(&s->repo, s->config_name, &primary, err)) return false;
  if (primary) paths = qs_node_get_path(primary->content, "hydra.searchpath");
  if (!paths || paths->kind == QS_NULL) return true;
  bool strings = paths->kind == QS_LIST;
  for (size_t k = 0; strings && k < paths->n; k++) strings = paths->items[k]->kind == QS_STR;
  if (!strings) {
    char *text = qs_pystr(paths);
    qs_fail(err, QS_EXIT_USAGE, "hydra.searchpath must be a list of strings. Got: %s", text);
    free(text);
    return false;
  }
  for (size_t k = 0; k < paths->n; k++) qs_repo_add_searchpath(&s->repo, provider, paths->items[k]->s, warnings);
  return true;
}

bool qs_session_compose(qs_session *s, char *const *args, size_t n, bool multirun, bool validate, qs_node **cfg,
                        qs_defaults *defaults, qs_error *err) {
  *cfg = NULL;
  qs_override *ovs;
  if (!qs_parse_overrides(args, n, &ovs, err)) return false;
  qs_defaults list = {0};
  qs_strbuf warnings = {0};
  qs_node *hydra_base = qs_hydra_node_defaults();
  bool ok = add_searchpath(s, ovs, n, &warnings, err) && (!validate || qs_sweep_validate(ovs, n, multirun, err)) &&
            qs_defaults_build(&s->repo, s->config_name, ovs, n, multirun, &list, &warnings, err);
  qs_session_warn(s, &warnings);
  ok = ok && qs_compose(&s->repo, &list, hydra_base, cfg, err);
  qs_hydra_fill_info info = {.app_name = s->app_name, .config_name = s->config_name, .repo = &s->repo,
                             .ovs = ovs, .n_ovs = n, .choices = list.choices};
  ok = ok && qs_hydra_node_fill(*cfg, &info, err);
  if (!ok) {
    qs_node_free(*cfg);
    *cfg = NULL;
  }
  if (ok && defaults) {
    /* The config overrides point into ovs, which dies here. */
    free(list.config_overrides);
    list.config_overrides = NULL;
    list.n_config_overrides = 0;
    *defaults = list;
  } else {
    qs_defaults_free(&list);
  }
  qs_node_free(hydra_base);
  qs_overrides_free(ovs, n);
  return ok;
}

bool qs_session_searchpath(qs_session *s, char *const *args, size_t n, qs_error *err) {
  qs_override *ovs;
  if (!qs_parse_overrides(args, n, &ovs, err)) return false;
  qs_strbuf warnings = {0};
  bool ok = add_searchpath(s, ovs, n, &warnings, err);
  qs_session_warn(s, &warnings);
  qs_overrides_free(ovs, n);
  return ok;
}
