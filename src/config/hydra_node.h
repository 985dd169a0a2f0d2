/* The `hydra` node of a composed config: Hydra 1.3's keys (minus the
 * Python-only ones) with their defaults, and the runtime values Hydra fills
 * in after composition. */
#ifndef QSENS_CONFIG_HYDRA_NODE_H
#define QSENS_CONFIG_HYDRA_NODE_H

#include <stdbool.h>
#include <stddef.h>

#include "config/node.h"
#include "config/override.h"
#include "config/repo.h"
#include "core/error.h"

/* The Hydra release whose behaviour qsens reproduces (hydra.runtime.version). */
#define QS_HYDRA_VERSION "1.3.2"
#define QS_HYDRA_VERSION_BASE "1.3"

/* hydra node defaults, before the primary config and overrides merge in. */
qs_node *qs_hydra_node_defaults(void);

typedef struct qs_hydra_fill_info {
  const char *app_name;    /* job name when hydra.job.name is not set */
  const char *config_name; /* primary config name */
  const qs_repo *repo;
  const qs_override *ovs;  /* every command-line override of this composition, in order */
  size_t n_ovs;
  const qs_node *choices;  /* group choices from the defaults list */
} qs_hydra_fill_info;

/* Fills overrides, choices, runtime.* and job.* of cfg's hydra node, as
 * Hydra does at the end of composition. */
bool qs_hydra_node_fill(qs_node *cfg, const qs_hydra_fill_info *info, qs_error *err);

#endif
