/* Several logical batches per step (qs_engine_options.step_tokens): each
 * logical batch is a loss group of its own, steps never straddle the end of
 * a size's calibration or score batches, and a pass grouped into few steps
 * gives the results of one logical batch per step.
 *
 * Tolerances: a grouped step runs every GEMM over more rows, and BLAS sums a
 * product of another shape in another order, so X, G and Y move by fp32
 * rounding (~1e-7 relative) that a few layers amplify; Δ = Y_r − Y of an
 * 8-bit format is ~1e-2 of Y, so its relative error is ~1e-5, and the
 * score's reduction order changes with the row count too. Measured worst
 * case for weight-only pairs 2e-6: bound 1e-4. A quantized activation is
 * not continuous in X: an ulp change of X (or of a static amax, below)
 * flips the rounding of the few elements lying at a half step, each moving
 * one element of Δ by a whole grid step. Measured on this tiny model: 9e-5
 * for FP8 (dynamic), 1.4e-3 for INT8 (static); bounds 1e-3 and 1e-2. A
 * dynamic amax taken over a whole step instead of per logical batch moves
 * the FP8 scale of every Linear and fails the 1e-3 bound. Static amax are maxima over the same rows:
 * bit-identical where X is made by row-local ops only (layer 0's q, k, v
 * read RMSNorm of the embeddings), within a few fp32 ulps (1e-6) where X
 * went through GEMMs of the step's shape. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/batches.h"
#include "engine_fixture.h"
#include "engine_world.h"
#include "report/results.h"
#include "tiny_lm.h"

enum { NSAMPLES = 128, SMALL = 16, BATCH = 8, NCELLS = 6 };

static const char *PAIRS[NCELLS] = {"wint8_aint8", "wint8_aint8", "wfp4_afp8", "wfp4_afp8", "wfp8_afp16", "wfp8_afp16"};
static const size_t SAMPLES[NCELLS] = {SMALL, NSAMPLES, SMALL, NSAMPLES, SMALL, NSAMPLES};

typedef fixture_world world;

/* Logical batches of BATCH samples; the head searched in 7-row chunks. */
static void world_init(world *w) {
  fixture_world_init(w, NSAMPLES, 21, 5);
  w->bopts.batch_size = BATCH;
  w->opts.include_lm_head = true;
  w->opts.lm_chunk_tokens = 7; /* head chunks that do not line up with sequences */
}

/* eng_step_end: joins batches within the budget, never past a cut, the
 * limit or the power-of-two block; a batch over the budget runs alone. */
static void test_step_ends(world *w) {
  eng_batches b;
  qs_error err;
  CHECK(eng_batches_build(w->seqs, NSAMPLES, &w->bopts, &b, &err));
  CHECK_INT(b.count, NSAMPLES / BATCH);
  size_t cuts[] = {3, 8};
  long huge = 1L << 30;
  CHECK_INT(eng_step_end(&b, 0, 8, cuts, 2, 0), 1);
  CHECK_INT(eng_step_end(&b, 4, 8, cuts, 2, 1), 5); /* over the budget: alone */
  CHECK_INT(eng_step_end(&b, 0, 8, cuts, 2, huge), 1); /* blocks [0,1) [1,2) [2,4) [4,8) */
  CHECK_INT(eng_step_end(&b, 1, 8, cuts, 2, huge), 2);
  CHECK_INT(eng_step_end(&b, 2, 8, cuts, 2, huge), 3); /* the cut at 3 */
  CHECK_INT(eng_step_end(&b, 3, 8, cuts, 2, huge), 4);
  CHECK_INT(eng_step_end(&b, 4, 8, cuts, 2, huge), 8);
  CHECK_INT(eng_step_end(&b, 4, 6, cuts, 2, huge), 6); /* the limit */
  long two = b.items[4].tokens + b.items[5].tokens;
  CHECK_INT(eng_step_end(&b, 4, 8, cuts, 2, two), 6);
  CHECK_INT(eng_step_end(&b, 4, 8, cuts, 2, two - 1), 5);
  /* A joined step: groups at the logical batches, offsets shifted. */
  eng_step s;
  eng_step_build(&b, 4, 6, &s);
  CHECK_INT(s.count, 2);
  CHECK_INT(s.n_seqs, 2 * BATCH);
  CHECK_INT(s.tokens, two);
  CHECK(s.group_seq[0] == 0 && s.group_seq[1] == BATCH && s.group_seq[2] == 2 * BATCH);
  CHECK_INT(s.group_rows[1], b.items[4].tokens);
  CHECK_INT(s.cu_seqlens[BATCH], b.items[4].tokens);
  CHECK_INT(s.ids[s.group_rows[1]], b.items[5].ids[0]);
  CHECK_INT(s.labels[s.group_rows[1]], -100); /* a sequence's first token is no target */
  CHECK(s.positions == NULL && s.attention_mask == NULL);
  eng_step_free(&s);
  eng_batches_free(&b);
}

static bool crosses(size_t first, size_t end, size_t at) { return first < at && at < end; }

/* Random budgets, cuts and limits: the steps partition [0, limit), none
 * crosses a cut or a power of two, and a step of several batches fits the
 * budget while one more batch would not (unless a boundary stopped it). */
static void test_step_properties(world *w) {
  eng_batches b;
  qs_error err;
  CHECK(eng_batches_build(w->seqs, NSAMPLES, &w->bopts, &b, &err));
  test_rng rng = {99};
  size_t bad = 0;
  for (int trial = 0; trial < 500; trial++) {
    size_t limit = 1 + rng_next(&rng) % b.count, cuts[3];
    for (size_t c = 0; c < 3; c++) cuts[c] = rng_next(&rng) % (b.count + 1);
    long budget = (long)(rng_next(&rng) % 600) - 50;
    for (size_t first = 0; first < limit;) {
      size_t end = eng_step_end(&b, first, limit, cuts, 3, budget);
      long tokens = 0;
      for (size_t i = first; i < end; i++) tokens += b.items[i].tokens;
      bool stopped = end == limit || (end & (end - 1)) == 0; /* a limit or a block end */
      for (size_t c = 0; c < 3; c++) {
        bad += crosses(first, end, cuts[c]);
        stopped |= end == cuts[c];
      }
      for (size_t p = 1; p < 2 * b.count; p *= 2) bad += crosses(first, end, p);
      bad += end <= first || end > limit || (end - first > 1 && tokens > budget);
      bad += !stopped && tokens + b.items[end].tokens <= budget;
      first = end > first ? end : limit;
    }
  }
  CHECK_INT(bad, 0);
  eng_batches_free(&b);
}

static void make_cells(qs_engine_cell *cells) {
  for (size_t c = 0; c < NCELLS; c++)
    cells[c] = (qs_engine_cell){PAIRS[c], QS_ACT_AMAX_PAIR_DEFAULT, SAMPLES[c], qs_cell_new()};
}

static void free_cells(qs_engine_cell *cells) {
  for (size_t c = 0; c < NCELLS; c++) qs_cell_free(cells[c].out);
}

/* Runs the six cells with step_tokens; the progress text into text. */
static bool run_cells(world *w, long step_tokens, qs_engine_cell *cells, char *text, size_t size) {
  FILE *progress = tmpfile();
  w->opts.step_tokens = step_tokens;
  w->opts.progress = progress;
  make_cells(cells);
  qs_error err;
  bool ok = fixture_run(&w->lm, w->seqs, NSAMPLES, &w->bopts, &w->opts, cells, NCELLS, &err);
  if (!ok) fprintf(stderr, "%s\n", err.msg);
  rewind(progress);
  size_t len = fread(text, 1, size - 1, progress);
  text[len] = '\0';
  fclose(progress);
  w->opts.progress = NULL;
  return ok;
}

static size_t count_lines(const char *text) {
  size_t n = 0;
  for (const char *p = text; *p; p++) n += *p == '\n';
  return n;
}

static double score_tolerance(const qs_cell *c) {
  if (strstr(c->pair, "_afp16")) return 1e-4;
  return strcmp(c->pair, "wfp4_afp8") == 0 ? 1e-3 : 1e-2;
}

static void compare_cell(const qs_cell *grouped, const qs_cell *single) {
  CHECK_INT(grouped->nlinears, single->nlinears);
  size_t amax_differ = 0;
  for (size_t i = 0; i < grouped->nlinears && i < single->nlinears; i++) {
    const qs_cell_linear *g = &grouped->linears[i], *s = &single->linears[i];
    CHECK(g->raw_scores[0] > 0.0 && isfinite(g->raw_scores[0]));
    CHECK_REL(g->raw_scores[0], s->raw_scores[0], score_tolerance(grouped), 0.0);
    /* NaN (no static amax) exactly where the single run has NaN. */
    if (i < 3 || isnan(s->input_amax[0])) amax_differ += !fixture_same_bits(g->input_amax[0], s->input_amax[0]);
    else CHECK_REL(g->input_amax[0], s->input_amax[0], 1e-6, 0.0);
  }
  CHECK_INT(amax_differ, 0);
  /* Mean of the same per-batch losses, each ~1e-7 apart. */
  CHECK_REL(grouped->baseline_loss, single->baseline_loss, 1e-6, 0.0);
  CHECK_INT(grouped->run.num_calib_steps, single->run.num_calib_steps);
  CHECK_INT(grouped->run.num_score_steps, single->run.num_score_steps);
}

/* The small static cell calibrates on 2 logical batches: its amax must be
 * the snapshot after them, which differs from the large cell's somewhere
 * (so a step crossing batch 2 would be caught). */
static void check_snapshot_matters(const qs_cell *small, const qs_cell *large) {
  size_t differ = 0, raised = 0;
  for (size_t i = 0; i < small->nlinears; i++) {
    differ += !fixture_same_bits(small->linears[i].input_amax[0], large->linears[i].input_amax[0]);
    raised += small->linears[i].input_amax[0] > large->linears[i].input_amax[0];
  }
  CHECK(differ > 0);
  CHECK_INT(raised, 0);
}

/* All batches of each phase in as few steps as the blocks allow. */
static void test_grouped_equals_single(world *w, const qs_engine_cell *single, const char *single_text) {
  qs_engine_cell grouped[NCELLS];
  static char text[4096];
  CHECK(run_cells(w, 1L << 30, grouped, text, sizeof text));
  /* One line per step: 16 + 16 alone; grouped, the blocks [0,1) [1,2)
   * [2,4) [4,8) [8,16) of both phases (small ends at 2, large at 16). */
  CHECK_INT(count_lines(single_text), 32);
  CHECK_INT(count_lines(text), 10);
  CHECK(strstr(text, "calibrate batch 2/16: 16/128 samples, ") != NULL);
  CHECK(strstr(text, "calibrate batch 8/16: 64/128 samples, ") != NULL);
  CHECK(strstr(text, "calibrate batch 16/16: 128/128 samples, ") != NULL);
  CHECK(strstr(text, "score batch 2/16: 16/128 samples, ") != NULL);
  CHECK(strstr(text, "score batch 16/16: 128/128 samples, ") != NULL);
  for (size_t c = 0; c < NCELLS; c++) compare_cell(grouped[c].out, single[c].out);
  check_snapshot_matters(grouped[0].out, grouped[1].out);
  CHECK_INT(grouped[0].out->run.num_calib_steps, 2);
  CHECK_INT(grouped[1].out->run.num_score_steps, 16);
  free_cells(grouped);
}

/* Sizes of 2 and 16 logical batches step alike alone and fused: each
 * grouped cell equals its grouped lone run bit for bit. */
static void test_grouped_fused_equals_alone(world *w) {
  qs_engine_cell fused[NCELLS];
  static char text[4096];
  CHECK(run_cells(w, 1L << 30, fused, text, sizeof text));
  for (size_t c = 0; c < NCELLS; c++) {
    qs_engine_cell alone = {PAIRS[c], QS_ACT_AMAX_PAIR_DEFAULT, SAMPLES[c], qs_cell_new()};
    qs_error err;
    CHECK(fixture_run(&w->lm, w->seqs, NSAMPLES, &w->bopts, &w->opts, &alone, 1, &err));
    size_t differ = !fixture_same_bits(alone.out->baseline_loss, fused[c].out->baseline_loss);
    for (size_t i = 0; i < alone.out->nlinears; i++)
      differ += !fixture_same_bits(alone.out->linears[i].raw_scores[0], fused[c].out->linears[i].raw_scores[0]) ||
                !fixture_same_bits(alone.out->linears[i].input_amax[0], fused[c].out->linears[i].input_amax[0]);
    if (differ) fprintf(stderr, "%s@%zu: %zu values differ from its lone run\n", PAIRS[c], SAMPLES[c], differ);
    CHECK_INT(differ, 0);
    qs_cell_free(alone.out);
  }
  free_cells(fused);
  w->opts.step_tokens = 0;
}

/* A budget of a few batches: steps of mixed lengths, same results. */
static void test_partial_grouping(world *w, const qs_engine_cell *single) {
  qs_engine_cell grouped[NCELLS];
  static char text[16384];
  CHECK(run_cells(w, 3 * 12 * BATCH, grouped, text, sizeof text));
  size_t lines = count_lines(text);
  CHECK(lines > 10 && lines < 32);
  for (size_t c = 0; c < NCELLS; c++) compare_cell(grouped[c].out, single[c].out);
  free_cells(grouped);
}

int main(void) {
  world w;
  world_init(&w);
  test_step_ends(&w);
  test_step_properties(&w);
  qs_engine_cell single[NCELLS];
  static char single_text[16384];
  CHECK(run_cells(&w, 0, single, single_text, sizeof single_text));
  test_grouped_equals_single(&w, single, single_text);
  test_partial_grouping(&w, single);
  test_grouped_fused_equals_alone(&w);
  free_cells(single);
  fixture_world_free(&w);
  return check_summary("test_engine_steps");
}
