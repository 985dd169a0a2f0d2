/* Cells of a pass that quantize a Linear's W and X identically get one
 * score computation, reused by all of them (engine.c score_twin): weight-only
 * and dynamic pairs across sizes, and static pairs whose sizes ended
 * calibration with the same amax. This checks that the sharing is exact
 * and never spans cells whose amax differ: every fused cell equals its lone
 * run bit for bit, and two sizes of a static pair have equal scores exactly
 * on the Linears where their calibrated amax agree. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "engine_fixture.h"
#include "model/init_model.h"
#include "report/results.h"
#include "tiny_lm.h"

enum { NCELLS = 6, MEDIUM = 8, LARGE = 20 };

/* Batches of 4, score size 8: medium (2 calibration batches) and large (5)
 * share their 2 score batches, as 128 and 512 samples do in the real flow. */
static const char *PAIRS[NCELLS] = {"wint8_aint8", "wint8_aint8", "wfp4_afp8", "wfp4_afp8", "wfp8_afp16", "wfp8_afp16"};
static const size_t SAMPLES[NCELLS] = {MEDIUM, LARGE, MEDIUM, LARGE, MEDIUM, LARGE};

static bool same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void make_cells(qs_engine_cell *cells) {
  for (size_t c = 0; c < NCELLS; c++)
    cells[c] = (qs_engine_cell){PAIRS[c], QS_ACT_AMAX_PAIR_DEFAULT, SAMPLES[c], qs_cell_new()};
}

static size_t differing_scores(const qs_cell *a, const qs_cell *b) {
  size_t n = 0;
  for (size_t i = 0; i < a->nlinears && i < b->nlinears; i++)
    n += !same_bits(a->linears[i].raw_scores[0], b->linears[i].raw_scores[0]);
  return n + (a->nlinears != b->nlinears);
}

/* medium vs large of one static pair: scores equal exactly where amax are. */
static void check_static_sizes(const qs_cell *medium, const qs_cell *large) {
  size_t equal_amax = 0, other_amax = 0, wrong = 0;
  for (size_t i = 0; i < medium->nlinears; i++) {
    const qs_cell_linear *m = &medium->linears[i], *l = &large->linears[i];
    bool amax_equal = same_bits(m->input_amax[0], l->input_amax[0]);
    bool scores_equal = same_bits(m->raw_scores[0], l->raw_scores[0]);
    equal_amax += amax_equal;
    other_amax += !amax_equal;
    wrong += amax_equal != scores_equal;
  }
  if (wrong) fprintf(stderr, "%s: %zu Linears where equal amax and equal scores disagree\n", medium->pair, wrong);
  CHECK_INT(wrong, 0);
  /* The fixture exercises both a shared and an unshared Linear. */
  CHECK(equal_amax > 0);
  CHECK(other_amax > 0);
}

int main(void) {
  qs_lm_config cfg;
  CHECK(qs_init_model_preset("demo", &cfg));
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, 11, 1.0);
  qs_token_seq *seqs = fixture_seqs(LARGE, cfg.vocab, 7);
  qs_batch_opts bopts = qs_batch_opts_default();
  bopts.batch_size = 4;
  bopts.score_size = 8;
  bopts.pad_id = cfg.vocab - 3;
  qs_engine_options opts = qs_engine_options_default();
  qs_error err;

  qs_engine_cell fused[NCELLS], alone[NCELLS];
  make_cells(fused);
  make_cells(alone);
  bool ok = fixture_run(&lm, seqs, LARGE, &bopts, &opts, fused, NCELLS, &err);
  CHECK(ok);
  if (!ok) fprintf(stderr, "%s\n", err.msg);
  for (size_t c = 0; ok && c < NCELLS; c++) {
    CHECK(fixture_run(&lm, seqs, LARGE, &bopts, &opts, &alone[c], 1, &err));
    size_t differing = differing_scores(fused[c].out, alone[c].out);
    if (differing)
      fprintf(stderr, "%s at %zu samples: %zu Linears differ from its lone run\n", PAIRS[c], SAMPLES[c], differing);
    CHECK_INT(differing, 0);
  }
  if (ok) {
    check_static_sizes(fused[0].out, fused[1].out);
    /* Dynamic and weight-only pairs: the sizes share every score. */
    CHECK_INT(differing_scores(fused[2].out, fused[3].out), 0);
    CHECK_INT(differing_scores(fused[4].out, fused[5].out), 0);
    CHECK(fused[0].out->linears[0].raw_scores[0] > 0.0 && isfinite(fused[0].out->linears[0].raw_scores[0]));
  }
  for (size_t c = 0; c < NCELLS; c++) {
    qs_cell_free(fused[c].out);
    qs_cell_free(alone[c].out);
  }
  fixture_seqs_free(seqs, LARGE);
  qs_lm_release(&lm);
  return check_summary("test_engine_shared_scores");
}
