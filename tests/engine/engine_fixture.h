/* Shared by the engine tests: random samples and a one-pass runner. */
#ifndef QSENS_TESTS_ENGINE_FIXTURE_H
#define QSENS_TESTS_ENGINE_FIXTURE_H

#include <jansson.h>

#include "engine/engine.h"
#include "text/batch.h"

/* n random token sequences of 4..20 ids below vocab (seeded); free with
 * fixture_seqs_free. */
qs_token_seq *fixture_seqs(size_t n, int vocab, unsigned seed);
void fixture_seqs_free(qs_token_seq *seqs, size_t n);

/* The token sequences of a reference fixture's "sequences" list (lists of
 * ids); *n is 0 when the key is absent. Free with fixture_seqs_free. */
qs_token_seq *fixture_seqs_from_json(json_t *fixture, size_t *n);

/* Runs one pass over cells (pairs[i] at sizes[i] samples), each out a new
 * qs_cell; returns the engine's verdict (err filled on failure). */
bool fixture_run(const qs_lm *lm, const qs_token_seq *seqs, size_t n_seqs, const qs_batch_opts *bopts,
                 const qs_engine_options *opts, qs_engine_cell *cells, size_t ncells, qs_error *err);

#endif
