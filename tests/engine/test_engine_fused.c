/* A fused pass over the seven seed pairs × three dataset sizes equals
 * running every cell alone, bit for bit (DESIGN.md §3 "Fused grid"), on a
 * model of the demo's shape with the lm_head searched. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/mem.h"
#include "engine_fixture.h"
#include "model/init_model.h"
#include "report/results.h"
#include "tiny_lm.h"

static const char *PAIRS[] = {"wfp4_afp16", "wfp4_afp8",   "wfp8_afp16", "wfp8_afp8",
                              "wint8_afp16", "wint8_afp8", "wint8_aint8"};
enum { NPAIRS = 7, NSIZES = 3, NCELLS = NPAIRS * NSIZES };
/* Batches of 4 and a score size of 8: small = 1 logical batch (1 calib, 1
 * score), medium 2 (2, 2), large 5 (5, 2): medium and large share their
 * score batches and differ by calibration, as 128/512 do in the real flow. */
static const size_t SIZES[NSIZES] = {4, 8, 20};

static bool same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void make_cells(qs_engine_cell *cells) {
  for (size_t p = 0; p < NPAIRS; p++)
    for (size_t s = 0; s < NSIZES; s++) {
      qs_engine_cell *c = &cells[p * NSIZES + s];
      c->pair = PAIRS[p];
      c->act_amax = QS_ACT_AMAX_PAIR_DEFAULT;
      c->n_samples = SIZES[s];
      c->out = qs_cell_new();
    }
}

static void compare_cells(const qs_cell *fused, const qs_cell *alone) {
  CHECK_INT(fused->nlinears, alone->nlinears);
  size_t differing = 0;
  for (size_t i = 0; i < fused->nlinears && i < alone->nlinears; i++) {
    const qs_cell_linear *a = &fused->linears[i], *b = &alone->linears[i];
    differing += !same_bits(a->raw_scores[0], b->raw_scores[0]) || !same_bits(a->input_amax[0], b->input_amax[0]) ||
                 !same_bits(a->weight_amax, b->weight_amax);
  }
  if (differing) fprintf(stderr, "%s at %zu samples: %zu Linears differ\n", fused->pair, fused->nsamples, differing);
  CHECK_INT(differing, 0);
  CHECK(same_bits(fused->baseline_loss, alone->baseline_loss));
  CHECK_INT(fused->run.num_calib_steps, alone->run.num_calib_steps);
  CHECK_INT(fused->run.num_score_steps, alone->run.num_score_steps);
}

/* Every scored value is positive and finite, the static amax present
 * exactly where the activation is statically quantized. */
static void check_cell_values(const qs_cell *c, bool static_act) {
  size_t bad = 0;
  for (size_t i = 0; i < c->nlinears; i++) {
    const qs_cell_linear *l = &c->linears[i];
    bad += !(l->raw_scores[0] > 0.0 && isfinite(l->raw_scores[0]));
    bad += static_act ? !(l->input_amax[0] > 0.0 && isfinite(l->input_amax[0])) : !isnan(l->input_amax[0]);
  }
  if (bad) fprintf(stderr, "%s at %zu samples: %zu bad values\n", c->pair, c->nsamples, bad);
  CHECK_INT(bad, 0);
}

int main(void) {
  qs_lm_config cfg;
  CHECK(qs_init_model_preset("demo", &cfg));
  qs_lm lm;
  tiny_lm_build(&lm, &cfg, 5, 1.0);
  qs_token_seq *seqs = fixture_seqs(SIZES[NSIZES - 1], cfg.vocab, 3);
  qs_batch_opts bopts = qs_batch_opts_default();
  bopts.batch_size = 4;
  bopts.score_size = 8;
  bopts.pad_id = cfg.vocab - 3; /* <|endoftext|> of the demo tokenizer; its row enters the amax */
  qs_engine_options opts = qs_engine_options_default();
  opts.include_lm_head = true;
  qs_error err;

  qs_engine_cell fused[NCELLS], alone[NCELLS];
  make_cells(fused);
  make_cells(alone);
  bool ok = fixture_run(&lm, seqs, SIZES[NSIZES - 1], &bopts, &opts, fused, NCELLS, &err);
  CHECK(ok);
  if (!ok) fprintf(stderr, "%s\n", err.msg);
  for (size_t c = 0; ok && c < NCELLS; c++) {
    CHECK(fixture_run(&lm, seqs, SIZES[NSIZES - 1], &bopts, &opts, &alone[c], 1, &err));
    compare_cells(fused[c].out, alone[c].out);
  }
  for (size_t p = 0; ok && p < NPAIRS; p++) {
    qs_cell *small = fused[p * NSIZES].out, *medium = fused[p * NSIZES + 1].out,
            *large = fused[p * NSIZES + 2].out;
    bool static_act = strcmp(PAIRS[p], "wfp8_afp8") == 0 || strcmp(PAIRS[p], "wint8_afp8") == 0 ||
                      strcmp(PAIRS[p], "wint8_aint8") == 0;
    for (size_t s = 0; s < NSIZES; s++) check_cell_values(fused[p * NSIZES + s].out, static_act);
    CHECK_INT(small->nlinears, cfg.layers * 7 + 1);
    CHECK_INT(large->run.num_calib_steps, 5);
    CHECK_INT(large->run.num_score_steps, 2);
    CHECK_INT(small->run.num_score_steps, 1);
    /* Twice the score batches: larger sums (scores are never normalized). */
    CHECK(medium->linears[0].raw_scores[0] > small->linears[0].raw_scores[0]);
    /* Without a static amax, medium and large see the same data. */
    if (!static_act) CHECK(same_bits(medium->linears[3].raw_scores[0], large->linears[3].raw_scores[0]));
    /* The cell feeds the search: groups, monotone fix and an 8-bit budget. */
    CHECK(qs_cell_finish(large, 8.0, &err));
    CHECK_INT(large->ngroups, cfg.layers * 4 + 1);
    CHECK(large->search.is_satisfied);
  }
  for (size_t c = 0; c < NCELLS; c++) {
    qs_cell_free(fused[c].out);
    qs_cell_free(alone[c].out);
  }
  fixture_seqs_free(seqs, SIZES[NSIZES - 1]);
  qs_lm_release(&lm);
  return check_summary("test_engine_fused");
}
