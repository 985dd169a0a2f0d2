/* Canonical JSON of a config node, shared by the oracle drivers: scalars are
 * tagged so that types compare ("i:5", "f:0.5" as Python repr, "b:true",
 * "n", "s:text"), maps are {"map": [[key, value], ...]} so that key order
 * compares too. */
#ifndef QSENS_TESTS_NODE_JSON_H
#define QSENS_TESTS_NODE_JSON_H

#include <jansson.h>

#include "config/node.h"

json_t *node_json(const qs_node *n);

#endif
