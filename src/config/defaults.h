/* Hydra's defaults list: builds the defaults tree of a primary config
 * (group choices, includes, _self_, override/optional/null/???, packages)
 * under the command-line group overrides, and flattens it depth-first into
 * the ordered list of (config, package) pairs that composition merges. */
#ifndef QSENS_CONFIG_DEFAULTS_H
#define QSENS_CONFIG_DEFAULTS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/override.h"
#include "config/repo.h"
#include "core/error.h"
#include "core/strbuf.h"

/* One entry of the final list. */
typedef struct qs_default_entry {
  char *config_path;  /* "quant_pair/wfp8_afp8", "config" */
  char *package;      /* final package ("" = root) */
  char *parent;       /* config path of the including file; "<root>" for the primary */
  bool is_self;       /* the including file's own content */
  bool primary;
} qs_default_entry;

typedef struct qs_defaults {
  qs_default_entry *entries;
  size_t n_entries;
  /* Group choices as Hydra records them (hydra.runtime.choices): override
   * key -> option name or null, in the order the tree walk met them, then
   * Hydra's own groups ("hydra/job_logging" ...). */
  qs_node *choices;
  /* Overrides that address config values rather than groups, in order. */
  const qs_override **config_overrides;
  size_t n_config_overrides;
  /* The application's defaults tree as --info defaults-tree prints it,
   * starting at the primary config with an indent of two spaces. */
  char *tree_text;
} qs_defaults;

/* Builds the list for config_name under ovs (sweep overrides are ignored).
 * skip_missing leaves "???" groups out instead of failing (multirun master
 * config). The missing-_self_ warning, if any, is appended to warnings. */
bool qs_defaults_build(qs_repo *repo, const char *config_name, const qs_override *ovs, size_t n_ovs,
                       bool skip_missing, qs_defaults *out, qs_strbuf *warnings, qs_error *err);
void qs_defaults_free(qs_defaults *d);

#endif
