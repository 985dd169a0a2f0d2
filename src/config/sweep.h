/* Hydra's BasicSweeper: expands sweep overrides into the ordered list of
 * jobs (Cartesian product, last key fastest) and cuts it into batches. */
#ifndef QSENS_CONFIG_SWEEP_H
#define QSENS_CONFIG_SWEEP_H

#include <stdbool.h>
#include <stddef.h>

#include "config/override.h"
#include "config/repo.h"
#include "core/error.h"

typedef struct qs_sweep_job {
  char **overrides; /* "key=value" texts as Hydra passes them to the job */
  size_t n_overrides;
} qs_sweep_job;

typedef struct qs_sweep {
  qs_sweep_job *jobs;
  size_t n_jobs;
} qs_sweep;

/* ovs: hydra.sweeper.params entries (file order) then the command-line
 * overrides. glob() sweeps list the options of their group in repo. */
bool qs_sweep_expand(const qs_override *ovs, size_t n_ovs, const qs_repo *repo, qs_sweep *out, qs_error *err);
void qs_sweep_free(qs_sweep *s);

/* Fails for a sweep in RUN mode (Hydra's "Ambiguous value..." /
 * "... requires --multirun") or over a hydra.* key in MULTIRUN mode. */
bool qs_sweep_validate(const qs_override *ovs, size_t n_ovs, bool multirun, qs_error *err);

#endif
