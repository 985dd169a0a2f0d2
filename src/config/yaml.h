/* YAML files in and out, the way Hydra reads and writes them.
 *
 * Loading follows PyYAML's SafeLoader (YAML 1.1) as OmegaConf configures it:
 * plain scalars are typed by the YAML 1.1 resolvers (yes/no/on/off bools,
 * octal/hex/binary/base-60 ints, "1_000", ".5", and OmegaConf's extra float
 * rule for "1e3"), timestamps stay strings, quoted and block scalars are
 * strings; anchors, aliases and "<<" merge keys work; duplicate keys are an
 * error. Dumping prints PyYAML block style with OmegaConf's quoting, byte for
 * byte as OmegaConf.to_yaml() for single-line scalars. */
#ifndef QSENS_CONFIG_YAML_H
#define QSENS_CONFIG_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include "config/node.h"
#include "core/error.h"

/* Loads a config file: its top level must be a mapping (an empty file gives
 * {}). *package_header (when package_header is not NULL) receives the value
 * of a "# @package <pkg>" line in the file's leading comment block, or NULL.
 * Errors name the file, line and column (QS_EXIT_USAGE). */
bool qs_yaml_load_file(const char *path, qs_node **out, char **package_header, qs_error *err);

/* Same for text in memory; `name` stands for the file in messages. */
bool qs_yaml_load_string(const char *text, size_t len, const char *name, qs_node **out, char **package_header,
                         qs_error *err);

/* Any YAML value (the top level need not be a mapping); NULL document -> null. */
bool qs_yaml_parse_value(const char *text, size_t len, const char *name, qs_node **out, qs_error *err);

/* Hydra's "# @package" header of a config text: the leading lines that are
 * blank or "# @key value" comments. Returns the package (caller frees) or
 * NULL; false with an error for a malformed header line. */
bool qs_yaml_package_header(const char *text, const char *name, char **package, qs_error *err);

/* OmegaConf.to_yaml(node): block style, 2-space indent, lists under a key
 * not indented, "{}"/"[]" for empty containers, trailing newline. */
char *qs_yaml_dump(const qs_node *n);

/* The text of one scalar as the dump writes it (quoted when needed);
 * `as_key` selects the simple-key rules. */
char *qs_yaml_scalar_text(const qs_node *n, bool as_key);

#endif
