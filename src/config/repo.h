/* The config repository: Hydra's search path over config directories, and
 * a cache of the config files loaded from it (each file is read once per
 * process, whatever the number of jobs composed from it).
 *
 * A config path names a file without extension relative to a search
 * directory ("config", "quant_pair/wfp8_afp8"); a group is a sub-directory
 * ("quant_pair", "server/db") and its options are the *.yaml stems in it. */
#ifndef QSENS_CONFIG_REPO_H
#define QSENS_CONFIG_REPO_H

#include <stdbool.h>
#include <stddef.h>

#include "config/node.h"
#include "core/error.h"
#include "core/strbuf.h"

typedef struct qs_config_file {
  char *config_path;    /* "quant_pair/wfp8_afp8" */
  qs_node *content;     /* the mapping without its "defaults" key */
  qs_node *defaults;    /* the "defaults" list as written, or NULL */
  char *package_header; /* text after "# @package", or NULL */
} qs_config_file;

typedef struct qs_search_dir {
  char *provider; /* "main", "command-line", "hydra.searchpath in main" ... as Hydra names the source */
  char *scheme;   /* "file", or a scheme qsens cannot read ("pkg") */
  char *path;     /* as Hydra shows it (absolute for the primary dir) */
  char *lookup;   /* absolute directory searched, NULL when unavailable */
} qs_search_dir;

typedef struct qs_repo {
  qs_search_dir *dirs; /* in lookup order: the primary dir, --config-dir, hydra.searchpath */
  size_t n_dirs;
  qs_config_file **cache;
  size_t n_cache, cap_cache;
} qs_repo;

/* primary_dir and extra_dir (may be NULL) are resolved against the CWD.
 * Fails with Hydra's messages when a directory is missing. */
bool qs_repo_init(qs_repo *repo, const char *primary_dir, const char *extra_dir, qs_error *err);
void qs_repo_free(qs_repo *repo);

/* Appends one hydra.searchpath entry ("file://dir", "dir", "pkg://mod");
 * an entry qsens cannot search adds Hydra's "is not available" warning. */
void qs_repo_add_searchpath(qs_repo *repo, const char *provider, const char *entry, qs_strbuf *warnings);

/* Loads (once) the config at config_path. *out is NULL, with no error, when
 * no search directory holds it. */
bool qs_repo_load(qs_repo *repo, const char *config_path, const qs_config_file **out,
                  qs_error *err);

bool qs_repo_config_exists(const qs_repo *repo, const char *config_path);
bool qs_repo_group_exists(const qs_repo *repo, const char *group);

/* Sorted, de-duplicated option names (or sub-group names) of a group over
 * every search directory; "" is the top level. Free with qs_strv_free. */
char **qs_repo_options(const qs_repo *repo, const char *group, size_t *n);
char **qs_repo_subgroups(const qs_repo *repo, const char *group, size_t *n);
void qs_strv_free(char **v, size_t n);

/* "Config search path:" and one "\tprovider=..., path=..." line per source,
 * Hydra's own sources included, no trailing newline. */
void qs_repo_describe(const qs_repo *repo, qs_strbuf *out);

/* Runtime config_sources of the hydra node: a list of {path, schema, provider}. */
qs_node *qs_repo_sources_node(const qs_repo *repo);

#endif
