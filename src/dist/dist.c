#define _POSIX_C_SOURCE 200809L
#include "dist/dist.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>


void qs_dist_init(int *argc, char ***argv, qs_dist *d) {
  int provided;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &d->size);
  /* The shared-memory split is right under every launcher; environment
   * variables such as OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID are not. */
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &d->node_comm);
  MPI_Comm_rank(d->node_comm, &d->local_rank);
  MPI_Comm_size(d->node_comm, &d->local_size);
  if (gethostname(d->host, sizeof d->host) != 0) strcpy(d->host, "unknown-host");
  d->host[sizeof d->host - 1] = '\0';
}

void qs_dist_finalize(qs_dist *d) {
  MPI_Comm_free(&d->node_comm);
  MPI_Finalize();
}

bool qs_dist_all(const qs_dist *d, bool ok) {
  (void)d;
  int mine = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}
