/* OmegaConf interpolation: ${a.b}, ${a[0]}, ${.x}, ${..x}, ${oc.env:V[,d]},
 * ${now:fmt}, ${hydra:key}, nested interpolations in resolver arguments and
 * keys, "\${" escapes. Values stay unresolved in the tree; these functions
 * resolve on read (lazily), with OmegaConf's error texts. */
#ifndef QSENS_CONFIG_INTERP_H
#define QSENS_CONFIG_INTERP_H

#include <stdbool.h>
#include <time.h>

#include "config/node.h"
#include "core/error.h"

/* The one instant of this process that every ${now:...} formats (fixed by
 * the first call), so the sweep dir, every job config and the log agree. */
struct timespec qs_interp_now(void);

/* Fixes that instant, e.g. to rank 0's so that every MPI rank computes the
 * same output directories. Call it before anything reads ${now:...}. */
void qs_interp_set_now(struct timespec instant);

/* Resolves the whole of root into a new tree, as OmegaConf.resolve does:
 * "???" values stay as they are and errors carry no full_key lines.
 * ${hydra:...} reads root's "hydra" node, or `hydra` when root has none (a
 * job config without its hydra node); hydra may be NULL. */
bool qs_interp_resolve(const qs_node *root, const qs_node *hydra, qs_node **out, qs_error *err);

/* The same for the subtree at a dotted path (interpolations in it still
 * resolve against root); *out is NULL when the path does not exist. */
bool qs_interp_resolve_at(const qs_node *root, const qs_node *hydra, const char *path, qs_node **out,
                          qs_error *err);

/* The resolved value at a dotted path (deeply resolved when a container),
 * as reading it in OmegaConf does: errors end with "    full_key: <key>" /
 * "    object_type=dict" lines and reading "???" is an error (Missing
 * mandatory value). *out is NULL, with success, when the path does not
 * exist. */
bool qs_interp_select_in(const qs_node *root, const qs_node *hydra, const char *path, qs_node **out,
                         qs_error *err);

/* qs_interp_select_in(root, NULL, ...). */
bool qs_interp_select(const qs_node *root, const char *path, qs_node **out, qs_error *err);

#endif
