/* Hydra's command-line flags (its argparse parser), minus shell completion
 * and --experimental-rerun. Arguments that are not flags are overrides. */
#ifndef QSENS_CONFIG_CLI_ARGS_H
#define QSENS_CONFIG_CLI_ARGS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

typedef struct qs_cli_args {
  bool help, hydra_help, version, resolve, run, multirun;
  const char *cfg;          /* job | hydra | all, or NULL */
  const char *package;      /* --package/-p */
  const char *config_path;  /* --config-path/-cp */
  const char *config_name;  /* --config-name/-cn */
  const char *config_dir;   /* --config-dir/-cd */
  const char *info;         /* --info/-i [what]; "all" when given bare */
  char **overrides;         /* the other arguments, in order (pointers into argv) */
  size_t n_overrides;
} qs_cli_args;

/* Fails (usage status) with argparse's "usage: ..." / "<app>: error: ..." text. */
bool qs_cli_parse(int argc, char **argv, const char *app_name, qs_cli_args *out, qs_error *err);
void qs_cli_args_free(qs_cli_args *a);

#endif
