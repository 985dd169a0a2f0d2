#include "engine_world.h"

#include "engine_fixture.h"
#include "model/tiny_lm.h"

qs_lm_config fixture_world_config(void) {
  qs_lm_config cfg = tiny_lm_config();
  cfg.intermediate = 64;
  cfg.head_dim = 16;
  return cfg;
}

void fixture_world_init_lm(fixture_world *w, const qs_lm *lm, size_t n, unsigned seqs_seed) {
  w->lm = *lm;
  w->n = n;
  w->seqs = fixture_seqs(n, lm->cfg.vocab, seqs_seed);
  w->bopts = qs_batch_opts_default();
  w->bopts.pad_id = 1;
  w->opts = qs_engine_options_default();
}

void fixture_world_init(fixture_world *w, size_t n, unsigned model_seed, unsigned seqs_seed) {
  qs_lm_config cfg = fixture_world_config();
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, model_seed, 1.0);
  fixture_world_init_lm(w, &lm, n, seqs_seed);
}

void fixture_world_free(fixture_world *w) {
  fixture_seqs_free(w->seqs, w->n);
  qs_lm_release(&w->lm);
}
