/* Subcommands of the qsens executable. A first argument naming one of these
 * runs it; anything else is a Hydra command line (run_hydra.c). Each
 * subcommand takes its own argv (argv[0] = the subcommand name) and returns
 * the process exit status; it runs on rank 0 only. */
#ifndef QSENS_APP_COMMANDS_H
#define QSENS_APP_COMMANDS_H

#include "dist/dist.h"

int qs_cmd_captions(int argc, char **argv);
int qs_cmd_formats(int argc, char **argv);
int qs_cmd_init_model(int argc, char **argv);
int qs_cmd_report(int argc, char **argv);
int qs_cmd_solve(int argc, char **argv);

/* The conf/ trees searched, in order: the working directory's, the
 * installed one, the source tree's (caller frees each). */
enum { QS_N_CONF_DIRS = 3 };
void qs_default_conf_dirs(char *dirs[QS_N_CONF_DIRS]);

/* A subcommand's bad-usage line, "qsens CMD: <message> (see qsens CMD --help)",
 * on stderr; returns QS_EXIT_USAGE. */
int qs_cmd_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The Hydra application: compose, sweep, run jobs (all ranks take part). */
int qs_run_hydra(const qs_dist *d, int argc, char **argv);

#endif
