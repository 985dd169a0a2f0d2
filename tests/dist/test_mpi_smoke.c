/* Every rank contributes rank+1 to an allreduce (sum must be n(n+1)/2); on
 * one node the shared-memory local rank equals the world rank. */
#include <stdio.h>

#include "check.h"
#include "dist/dist.h"

int main(int argc, char **argv) {
  qs_dist d;
  qs_dist_init(&argc, &argv, &d);
  int mine = d.rank + 1, sum = 0;
  MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  CHECK_INT(sum, d.size * (d.size + 1) / 2);
  CHECK_INT(d.local_rank, d.rank);
  CHECK_INT(d.local_size, d.size);
  CHECK(qs_dist_all(&d, true));
  CHECK(!qs_dist_all(&d, d.rank != d.size - 1));

  int failed = check_failures_, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  qs_dist_finalize(&d);
  if (d.rank == 0) printf("test_mpi_smoke: %d ranks\n", d.size);
  return any ? 1 : 0;
}
