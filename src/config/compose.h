/* Composition: merges the configs of a defaults list at their packages
 * (Hydra's order), then applies the config overrides left to right with
 * OmegaConf's struct-mode rules and Hydra's error texts. */
#ifndef QSENS_CONFIG_COMPOSE_H
#define QSENS_CONFIG_COMPOSE_H

#include <stdbool.h>

#include "config/defaults.h"
#include "config/node.h"
#include "config/override.h"
#include "config/repo.h"
#include "core/error.h"

/* Merges every entry of defaults into a new mapping that starts as
 * {hydra: <copy of hydra_base>}, then applies defaults->config_overrides. */
bool qs_compose(qs_repo *repo, const qs_defaults *defaults, const qs_node *hydra_base, qs_node **cfg,
                qs_error *err);

/* One config override (key=v, +key=v, ++key=v, ~key[=v]) on a struct-mode
 * config. */
bool qs_apply_config_override(qs_node *cfg, const qs_override *ov, qs_error *err);

#endif
