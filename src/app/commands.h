/* Subcommands of the qsens executable. A first argument naming one of these
 * runs it; anything else is a Hydra command line (run_hydra.c). Each
 * subcommand takes its own argv (argv[0] = the subcommand name) and returns
 * the process exit status; it runs on rank 0 only. */
#ifndef QSENS_APP_COMMANDS_H
#define QSENS_APP_COMMANDS_H

#include "dist/dist.h"

int qs_cmd_captions(int argc, char **argv);
int qs_cmd_init_model(int argc, char **argv);
int qs_cmd_report(int argc, char **argv);
int qs_cmd_solve(int argc, char **argv);

/* The Hydra application: compose, sweep, run jobs (all ranks take part). */
int qs_run_hydra(const qs_dist *d, int argc, char **argv);

#endif
