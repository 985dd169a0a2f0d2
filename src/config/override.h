/* Command-line overrides in Hydra's grammar (one argv word each).
 *
 *   [+|++|~]key[@package][=value]
 *
 * key is a dotted config path ("a.b", "a.0") or a group path ("a/b").
 * value is a typed element (see node.h), or a sweep: a comma list of >= 2
 * elements, choice(...), range(...), glob(...), possibly wrapped in the
 * sort()/shuffle() functions or casts int()/float()/str()/bool(). */
#ifndef QSENS_CONFIG_OVERRIDE_H
#define QSENS_CONFIG_OVERRIDE_H

#include <stdbool.h>
#include <stddef.h>

#include "config/node.h"
#include "core/error.h"

typedef enum qs_override_type {
  QS_OV_CHANGE,    /* key=value */
  QS_OV_ADD,       /* +key=value */
  QS_OV_FORCE_ADD, /* ++key=value */
  QS_OV_DEL,       /* ~key or ~key=value */
} qs_override_type;

typedef enum qs_sweep_kind {
  QS_SWEEP_NONE,   /* a single value */
  QS_SWEEP_LIST,   /* a,b,c  (and choice(a,b,c), which the basic sweeper treats alike) */
  QS_SWEEP_CHOICE,
  QS_SWEEP_RANGE,
  QS_SWEEP_GLOB,
  QS_SWEEP_INTERVAL, /* parsed only to be rejected by the basic sweeper */
} qs_sweep_kind;

typedef struct qs_override {
  qs_override_type type;
  char *key;       /* "dataset.size", "quant_pair", "server/db" */
  char *package;   /* text after '@' in the key, or NULL */
  char *input;     /* the argument exactly as given */
  bool has_value;  /* false only for "~key" */
  bool is_hydra;   /* key is "hydra" or starts with "hydra." / "hydra/" */

  qs_sweep_kind sweep;
  qs_node *value;  /* QS_SWEEP_NONE: the typed value (empty string for "key=") */
  char *value_text; /* QS_SWEEP_NONE: the value as Hydra writes it back ("'a,b'" keeps its quotes) */
  qs_node **values; size_t n_values;  /* LIST/CHOICE/RANGE: the expanded elements, in order
                                         (INTERVAL: start and end, as floats) */
  char **value_texts; /* per element of values: the text Hydra puts after "key=" in a job's
                         override list; like qs_override_element_text() but quoted strings keep
                         the quotes they were written with */
  char **glob_include; size_t n_include; /* GLOB patterns (fnmatch) */
  char **glob_exclude; size_t n_exclude;
} qs_override;

/* Parses one argument. On a grammar error the message follows Hydra's
 * ("Error parsing override '<arg>'\n<reason>\nSee https://hydra.cc/docs/1.2/advanced/override_grammar/basic for details"). */
bool qs_override_parse(const char *arg, qs_override *out, qs_error *err);
void qs_override_free(qs_override *ov);

/* "key" part as Hydra prints it back: prefix + key + "@package". */
char *qs_override_key_element(const qs_override *ov);

/* Text of one element as Hydra writes it into a job's override list
 * (Override._get_value_element_as_str): "small", "0", "True", "1e-05",
 * "null", "[1,2]", "{a:1}", and strings with \ ( ) [ ] { } : = , space or tab
 * escaped by a backslash (a,b is written a\,b). For elements parsed from an argument use
 * value_text / value_texts, which keep the quotes the user wrote. As in Hydra,
 * a string that looks like another type ("True", "1") reads back as that type. */
char *qs_override_element_text(const qs_node *element);

#endif
