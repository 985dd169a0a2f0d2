/* MPI process layout: world rank/size, node-local rank (for GPU choice), and
 * the few collective helpers the application needs.
 *
 * qsens always initialises MPI, so a plain `qsens` is a one-rank singleton and
 * `mpirun -np N qsens ...` or `srun --mpi=pmix qsens ...` run the same code.
 * Only rank 0 prints the banner and writes shared files. */
#ifndef QSENS_DIST_DIST_H
#define QSENS_DIST_DIST_H

#include <mpi.h>
#include <stdbool.h>

typedef struct qs_dist {
  int rank, size;             /* MPI_COMM_WORLD */
  int local_rank, local_size; /* ranks on this node (MPI_COMM_TYPE_SHARED split) */
  char host[256];
  MPI_Comm node_comm;
} qs_dist;

void qs_dist_init(int *argc, char ***argv, qs_dist *d);
void qs_dist_finalize(qs_dist *d);

static inline bool qs_dist_is_root(const qs_dist *d) { return d->rank == 0; }

/* True on every rank iff `ok` is true on every rank. */
bool qs_dist_all(const qs_dist *d, bool ok);

#endif
