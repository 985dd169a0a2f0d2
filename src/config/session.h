/* One invocation's composition context: the repository, the primary config
 * name and where warnings go. Composes a full config (with its hydra node)
 * from a list of override arguments, the way Hydra's ConfigLoader does. */
#ifndef QSENS_CONFIG_SESSION_H
#define QSENS_CONFIG_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/defaults.h"
#include "config/node.h"
#include "config/override.h"
#include "config/repo.h"
#include "core/error.h"

typedef struct qs_session {
  qs_repo repo;
  const char *config_name;
  const char *app_name;
  FILE *err_out;     /* warnings; NULL when this process does not print */
  bool writer;       /* this process writes the output files (MPI rank 0) */
  char **warned;     /* warnings already shown: Python shows each once per process */
  size_t n_warned, cap_warned;
  bool searchpath_added; /* hydra.searchpath is the same for every composition of one invocation */
} qs_session;

/* Prints the lines of warnings (to err_out) not shown before. Frees the
 * buffer. */
void qs_session_warn(qs_session *s, qs_strbuf *warnings);

/* Frees the repository and the warning memory. */
void qs_session_free(qs_session *s);

/* Parses every argument as an override; on failure frees what was parsed. */
bool qs_parse_overrides(char *const *args, size_t n, qs_override **ovs, qs_error *err);
void qs_overrides_free(qs_override *ovs, size_t n);

/* Composes config_name under args. multirun selects MULTIRUN composition
 * ("???" groups skipped); validate checks sweep overrides against the mode.
 * defaults, when not NULL, receives the defaults list (caller frees). */
bool qs_session_compose(qs_session *s, char *const *args, size_t n, bool multirun, bool validate, qs_node **cfg,
                        qs_defaults *defaults, qs_error *err);

/* Adds hydra.searchpath (from args or the primary config) to the
 * repository, as every composition does first; for --info. */
bool qs_session_searchpath(qs_session *s, char *const *args, size_t n, qs_error *err);

#endif
