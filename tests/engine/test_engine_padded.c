/* dataset.padding=max_length through the engine: left-padded rows whose
 * pads are real rows of the batch (spec quant-and-scoring.md §7.2, §7.7).
 *
 * What the pads change, under the model's convention that a pad query
 * attends to nothing and no query attends to a pad:
 *   - without the pad-context target, nothing at real rows and G = 0 at pad
 *     rows: scores equal the packed pass's;
 *   - with it, each padded row gains one target (its last pad predicts the
 *     first real token) whose gradient stays in the pad row, so the real
 *     rows' G scale by r = N / (N + B) (N real targets, B padded rows of the
 *     logical batch); q/k/v get G = 0 at pads and o_proj's pad input is 0,
 *     so their weight-only scores are exactly r² × packed, while the MLP's
 *     pad rows add to theirs;
 *   - every pad holds the same hidden state, so activation amax equal those
 *     of a packed pass with the one synthetic pad row (calib_pad_policy=
 *     include).
 * Tolerances: padded GEMMs have more rows than packed ones, and BLAS sums
 * another shape in another order: fp32 rounding of X and G (~1e-7) through
 * two layers, ~1e-5 on the Δ of an 8-bit weight (a difference ~1e-2 of Y).
 * Scores 1e-4, amax 1e-6 (a few ulps), losses 1e-6. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_fixture.h"
#include "engine_world.h"
#include "report/results.h"
#include "tiny_lm.h"

enum { NSAMPLES = 4, MAX_LENGTH = 24, LAYERS_LINEARS = 7 };

typedef fixture_world world;

/* One logical batch of four captions (4..20 tokens), all shorter than the
 * padded row: every row has pads and a pad-context target. */
static void world_init(world *w) {
  fixture_world_init(w, NSAMPLES, 13, 29);
  w->bopts.batch_size = NSAMPLES;
  w->bopts.score_size = NSAMPLES;
  w->bopts.max_length = MAX_LENGTH;
}

static qs_cell *run_pair(world *w, const char *pair) {
  qs_engine_cell cell = {pair, QS_ACT_AMAX_PAIR_DEFAULT, NSAMPLES, qs_cell_new()};
  qs_error err;
  bool ok = fixture_run(&w->lm, w->seqs, NSAMPLES, &w->bopts, &w->opts, &cell, 1, &err);
  if (!ok) fprintf(stderr, "%s: %s\n", pair, err.msg);
  CHECK(ok);
  return cell.out;
}

static qs_cell *run_padded(world *w, const char *pair, bool pad_context) {
  w->bopts.padding = QS_PADDING_MAX_LENGTH;
  w->bopts.pad_context_target = pad_context;
  qs_cell *c = run_pair(w, pair);
  w->bopts.padding = QS_PADDING_PACKED;
  return c;
}

static void check_finite_positive(const qs_cell *c) {
  size_t bad = 0;
  for (size_t i = 0; i < c->nlinears; i++)
    bad += !(c->linears[i].raw_scores[0] > 0.0 && isfinite(c->linears[i].raw_scores[0]));
  CHECK_INT(bad, 0);
}

/* Without the pad-context target the pads change nothing. */
static void test_no_context_equals_packed(world *w) {
  qs_cell *packed = run_pair(w, "wint8_afp16"), *padded = run_padded(w, "wint8_afp16", false);
  CHECK_INT(padded->nlinears, packed->nlinears);
  for (size_t i = 0; i < padded->nlinears; i++)
    CHECK_REL(padded->linears[i].raw_scores[0], packed->linears[i].raw_scores[0], 1e-4, 0.0);
  CHECK_REL(padded->baseline_loss, packed->baseline_loss, 1e-6, 0.0);
  CHECK_INT(padded->run.seq_len, MAX_LENGTH);
  qs_cell_free(packed);
  qs_cell_free(padded);
}

/* With it: attention Linears scale by r², the MLP's gain pad terms. */
static void test_pad_context(world *w) {
  qs_cell *packed = run_pair(w, "wint8_afp16"), *padded = run_padded(w, "wint8_afp16", true);
  check_finite_positive(padded);
  long real_targets = 0;
  for (size_t s = 0; s < NSAMPLES; s++) real_targets += (long)w->seqs[s].len - 1;
  double r = (double)real_targets / (double)(real_targets + NSAMPLES);
  size_t mlp_raised = 0;
  for (size_t i = 0; i < padded->nlinears; i++) {
    double want = r * r * packed->linears[i].raw_scores[0], got = padded->linears[i].raw_scores[0];
    if (i % LAYERS_LINEARS <= QS_LIN_O) {
      CHECK_REL(got, want, 1e-4, 0.0);
    } else {
      CHECK(got >= want * (1.0 - 1e-4));
      mlp_raised += got > want * (1.0 + 1e-3);
    }
  }
  CHECK(mlp_raised > 0);
  /* The loss gains the pad-context targets: another mean. */
  CHECK(fabs(padded->baseline_loss - packed->baseline_loss) > 1e-3 * packed->baseline_loss);
  qs_cell_free(packed);
  qs_cell_free(padded);
}

/* Static amax: the padded pass's pads are the synthetic pad row's. */
static void test_amax_equals_pad_row(world *w) {
  qs_cell *packed = run_pair(w, "wint8_aint8"), *padded = run_padded(w, "wint8_aint8", true);
  w->opts.calib_pad_policy = QS_CALIB_PADS_EXCLUDE;
  qs_cell *real_only = run_pair(w, "wint8_aint8");
  w->opts.calib_pad_policy = QS_CALIB_PADS_INCLUDE;
  check_finite_positive(padded);
  size_t raised = 0;
  for (size_t i = 0; i < padded->nlinears; i++) {
    CHECK_REL(padded->linears[i].input_amax[0], packed->linears[i].input_amax[0], 1e-6, 0.0);
    raised += padded->linears[i].input_amax[0] > real_only->linears[i].input_amax[0] * (1.0 + 1e-6);
  }
  /* ...and they matter: the pads raise some amax above the real tokens'. */
  CHECK(raised > 0);
  qs_cell_free(packed);
  qs_cell_free(padded);
  qs_cell_free(real_only);
}

/* A fused padded pass of a static, a dynamic and a weight-only pair is
 * deterministic and each cell equals its lone run bit for bit. */
static void test_fused_deterministic(world *w) {
  const char *pairs[] = {"wint8_aint8", "wfp4_afp8", "wfp8_afp16"};
  qs_engine_cell fused[3];
  for (size_t c = 0; c < 3; c++)
    fused[c] = (qs_engine_cell){pairs[c], QS_ACT_AMAX_PAIR_DEFAULT, NSAMPLES, qs_cell_new()};
  w->bopts.padding = QS_PADDING_MAX_LENGTH;
  w->bopts.pad_context_target = true;
  qs_error err;
  CHECK(fixture_run(&w->lm, w->seqs, NSAMPLES, &w->bopts, &w->opts, fused, 3, &err));
  w->bopts.padding = QS_PADDING_PACKED;
  for (size_t c = 0; c < 3; c++) {
    qs_cell *alone = run_padded(w, pairs[c], true);
    check_finite_positive(fused[c].out);
    size_t differ = 0;
    for (size_t i = 0; i < alone->nlinears; i++)
      differ += !fixture_same_bits(alone->linears[i].raw_scores[0], fused[c].out->linears[i].raw_scores[0]);
    CHECK_INT(differ, 0);
    CHECK(fixture_same_bits(alone->baseline_loss, fused[c].out->baseline_loss));
    qs_cell_free(alone);
    qs_cell_free(fused[c].out);
  }
}

/* Padded rows embed the pad token: one outside the vocabulary is refused. */
static void test_bad_pad_id(world *w) {
  w->bopts.padding = QS_PADDING_MAX_LENGTH;
  w->bopts.pad_id = 50;
  qs_engine_cell cell = {"wfp8_afp16", QS_ACT_AMAX_PAIR_DEFAULT, NSAMPLES, qs_cell_new()};
  qs_error err;
  CHECK(!fixture_run(&w->lm, w->seqs, NSAMPLES, &w->bopts, &w->opts, &cell, 1, &err));
  CHECK_INT(err.status, QS_EXIT_USAGE);
  CHECK(strstr(err.msg, "dataset.padding=max_length: the pad token id 50 is outside") != NULL);
  qs_cell_free(cell.out);
  w->bopts.pad_id = 1;
  w->bopts.padding = QS_PADDING_PACKED;
}

int main(void) {
  world w;
  world_init(&w);
  test_bad_pad_id(&w);
  test_no_context_equals_packed(&w);
  test_pad_context(&w);
  test_amax_equals_pad_row(&w);
  test_fused_deterministic(&w);
  fixture_world_free(&w);
  return check_summary("test_engine_padded");
}
