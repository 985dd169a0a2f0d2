#include "engine_fixture.h"

#include <stdlib.h>

#include "backend/cpu/cpu_backend.h"
#include "core/mem.h"

qs_token_seq *fixture_seqs(size_t n, int vocab, unsigned seed) {
  qs_token_seq *seqs = qs_calloc(n, sizeof *seqs);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    size_t len = 4 + (seed >> 8) % 17;
    int32_t *ids = qs_malloc(len * sizeof *ids);
    for (size_t t = 0; t < len; t++) {
      seed = seed * 1664525u + 1013904223u;
      ids[t] = (int32_t)((seed >> 8) % (unsigned)vocab);
    }
    seqs[i].ids = ids;
    seqs[i].len = len;
  }
  return seqs;
}

void fixture_seqs_free(qs_token_seq *seqs, size_t n) {
  for (size_t i = 0; i < n; i++) free((void *)seqs[i].ids);
  free(seqs);
}

qs_token_seq *fixture_seqs_from_json(json_t *fixture, size_t *n) {
  json_t *list = json_object_get(fixture, "sequences");
  *n = json_array_size(list);
  qs_token_seq *seqs = qs_calloc(*n ? *n : 1, sizeof *seqs);
  for (size_t i = 0; i < *n; i++) {
    json_t *row = json_array_get(list, i);
    int32_t *ids = qs_malloc((json_array_size(row) + 1) * sizeof *ids);
    for (size_t t = 0; t < json_array_size(row); t++) ids[t] = (int32_t)json_integer_value(json_array_get(row, t));
    seqs[i].ids = ids;
    seqs[i].len = json_array_size(row);
  }
  return seqs;
}

bool fixture_run(const qs_lm *lm, const qs_token_seq *seqs, size_t n_seqs, const qs_batch_opts *bopts,
                 const qs_engine_options *opts, qs_engine_cell *cells, size_t ncells, qs_error *err) {
  qs_backend *be = qs_cpu_backend_new();
  qs_engine_data data = {seqs, n_seqs, bopts};
  bool ok = qs_engine_run_pass(be, lm, &data, cells, ncells, opts, err);
  qs_backend_destroy(be);
  return ok;
}
