/* Shared by the engine tests that run passes on a tiny random model: the
 * model, its samples and default options, made alike everywhere. */
#ifndef QSENS_TESTS_ENGINE_WORLD_H
#define QSENS_TESTS_ENGINE_WORLD_H

#include <stdbool.h>
#include <string.h>

#include "engine/engine.h"
#include "model/lm.h"
#include "text/batch.h"

typedef struct fixture_world {
  qs_lm lm;
  qs_token_seq *seqs;
  size_t n;
  qs_batch_opts bopts; /* qs_batch_opts_default() with pad id 1 (inside the tiny vocabulary) */
  qs_engine_options opts;
} fixture_world;

/* The model tests' tiny shape with widths in whole 32-element blocks
 * (MXFP4 fits). */
qs_lm_config fixture_world_config(void);

/* That shape with random weights from model_seed, n random samples from
 * seqs_seed (fixture_seqs). Free with fixture_world_free. */
void fixture_world_init(fixture_world *w, size_t n, unsigned model_seed, unsigned seqs_seed);

/* A world around a given model (the world owns it from now on) and n random
 * samples below its vocabulary. */
void fixture_world_init_lm(fixture_world *w, const qs_lm *lm, size_t n, unsigned seqs_seed);
void fixture_world_free(fixture_world *w);

/* The same double, bit for bit. */
static inline bool fixture_same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

#endif
