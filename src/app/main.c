/* qsens entry point: MPI set-up, then a subcommand or the Hydra application. */
#include <stdio.h>
#include <string.h>

#include "app/commands.h"
#include "dist/dist.h"

typedef struct subcommand {
  const char *name;
  int (*run)(int argc, char **argv);
} subcommand;

static const subcommand SUBCOMMANDS[] = {
    {"init-model", qs_cmd_init_model},
    {"captions", qs_cmd_captions},
    {"formats", qs_cmd_formats},
    {"report", qs_cmd_report},
    {"solve", qs_cmd_solve},
};

static const subcommand *find_subcommand(const char *word) {
  for (size_t i = 0; i < sizeof SUBCOMMANDS / sizeof SUBCOMMANDS[0]; i++)
    if (strcmp(word, SUBCOMMANDS[i].name) == 0) return &SUBCOMMANDS[i];
  return NULL;
}

/* Subcommands are single-process tools: rank 0 runs them and the others
 * learn the exit status, so `mpirun qsens init-model ...` behaves sanely. */
static int run_subcommand(const qs_dist *d, const subcommand *cmd, int argc, char **argv) {
  int status = 0;
  if (qs_dist_is_root(d)) {
    status = cmd->run(argc, argv);
    fflush(stdout);
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return status;
}

int main(int argc, char **argv) {
  qs_dist d;
  qs_dist_init(&argc, &argv, &d);
  const subcommand *cmd = argc > 1 ? find_subcommand(argv[1]) : NULL;
  int status = cmd ? run_subcommand(&d, cmd, argc - 1, argv + 1) : qs_run_hydra(&d, argc, argv);
  qs_dist_finalize(&d);
  return status;
}
