/* The print-only flags: --cfg (with --resolve and --package), --help,
 * --hydra-help and --info. Each composes what it shows and writes to out
 * (NULL: compose and validate only, print nothing). */
#ifndef QSENS_CONFIG_SHOW_H
#define QSENS_CONFIG_SHOW_H

#include <stdbool.h>
#include <stdio.h>

#include "config/cli_args.h"
#include "config/session.h"
#include "core/error.h"

bool qs_show_cfg(qs_session *s, const qs_cli_args *a, FILE *out, qs_error *err);
bool qs_show_help(qs_session *s, const qs_cli_args *a, FILE *out, qs_error *err);
bool qs_show_hydra_help(qs_session *s, FILE *out);
bool qs_show_info(qs_session *s, const qs_cli_args *a, FILE *out, qs_error *err);

#endif
