/* Python's str() of a config value, the text OmegaConf embeds when an
 * interpolation sits inside a longer string ("x-${a}" with a: true gives
 * "x-True"): None, True/False, ints, floats as repr ("1e-05", "inf"), lists
 * "[1, 'a']" and dicts "{'a': 1}" with repr()-quoted strings inside; a
 * string at the top level is its own text. */
#ifndef QSENS_CONFIG_PYSTR_H
#define QSENS_CONFIG_PYSTR_H

#include "config/node.h"

/* str(value). Caller frees. */
char *qs_pystr(const qs_node *n);

/* repr(value): like str() but a string is quoted the way Python quotes it
 * ('a', "it's", 'tab\t'). Caller frees. */
char *qs_pyrepr(const qs_node *n);

#endif
