/* The planner (passes, rank assignment) and the engine's checks: errors
 * that name the culprit, disabled_layers, names, and a packing that would
 * change the loss normalization. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/mem.h"
#include "engine/plan.h"
#include "engine_fixture.h"
#include "engine_world.h"
#include "report/results.h"
#include "tiny_lm.h"

static void test_passes(void) {
  qs_plan_job jobs[] = {{"m1|coco", 16}, {"m1|coco", 512}, {"m2|coco", 128}, {"m1|coco", 128}, {"m2|coco", 16}};
  qs_pass_list list;
  qs_plan_passes(jobs, 5, &list);
  CHECK_INT(list.count, 2);
  CHECK_INT(list.passes[0].njobs, 3);
  CHECK_INT(list.passes[0].jobs[0], 0);
  CHECK_INT(list.passes[0].jobs[1], 1);
  CHECK_INT(list.passes[0].jobs[2], 3);
  CHECK_INT(list.passes[0].max_samples, 512);
  CHECK_INT(list.passes[1].max_samples, 128);
  CHECK(list.passes[0].cost == 512.0 * 6.0);
  int owner[2];
  qs_plan_assign_ranks(&list, 2, owner);
  CHECK_INT(owner[0], 0);
  CHECK_INT(owner[1], 1);
  qs_plan_assign_ranks(&list, 1, owner);
  CHECK(owner[0] == 0 && owner[1] == 0);
  qs_pass_list_free(&list);
  /* Four equal passes on three ranks: the fourth goes to rank 0 again. */
  qs_plan_job eq[] = {{"a", 8}, {"b", 8}, {"c", 8}, {"d", 8}};
  qs_plan_passes(eq, 4, &list);
  int own4[4];
  qs_plan_assign_ranks(&list, 3, own4);
  CHECK(own4[0] == 0 && own4[1] == 1 && own4[2] == 2 && own4[3] == 0);
  qs_pass_list_free(&list);
}

static void test_names(void) {
  char buf[128];
  qs_engine_linear_name(QS_NAMES_HF, 6, QS_LIN_GATE, buf, sizeof buf);
  CHECK_STR(buf, "model.language_model.layers.6.mlp.gate_proj");
  qs_engine_linear_name(QS_NAMES_SEED, 0, QS_LIN_Q, buf, sizeof buf);
  CHECK_STR(buf, "language_model.layers.0.self_attn.q_proj");
  qs_engine_linear_name(QS_NAMES_HF, -1, QS_LIN_LM_HEAD, buf, sizeof buf);
  CHECK_STR(buf, "lm_head");
}

typedef fixture_world world;

/* Logical batches of 4 of the 8 samples. */
static void world_init(world *w) {
  fixture_world_init(w, 8, 9, 17);
  w->bopts.batch_size = 4;
}

/* Runs one cell; returns success, the cell in *out (caller frees). */
static bool run_one(world *w, const char *pair, size_t n_samples, qs_cell **out, qs_error *err) {
  qs_engine_cell cell = {pair, QS_ACT_AMAX_PAIR_DEFAULT, n_samples, qs_cell_new()};
  bool ok = fixture_run(&w->lm, w->seqs, w->n, &w->bopts, &w->opts, &cell, 1, err);
  *out = cell.out;
  return ok;
}

static void expect_failure(world *w, const char *pair, size_t n_samples, int status, const char *needle) {
  qs_error err;
  qs_cell *cell;
  CHECK(!run_one(w, pair, n_samples, &cell, &err));
  CHECK_INT(err.status, status);
  if (!strstr(err.msg, needle)) fprintf(stderr, "message [%s] lacks [%s]\n", err.msg, needle);
  CHECK(strstr(err.msg, needle) != NULL);
  qs_cell_free(cell);
}

static void test_errors(void) {
  world w;
  world_init(&w);
  expect_failure(&w, "wint9_afp8", 8, QS_EXIT_USAGE, "int9");
  expect_failure(&w, "wint8_aint8", 9, QS_EXIT_USAGE, "only 8");
  expect_failure(&w, "wint8_aint8", 0, QS_EXIT_USAGE, "0 samples");
  /* INT4 weights need widths in whole 128-blocks: D = 32 is not. */
  expect_failure(&w, "wint4_afp16", 8, QS_EXIT_USAGE, "q_proj has 32 input features");
  /* Padded rows put the pads into every amax: excluding them is refused. */
  w.bopts.padding = QS_PADDING_MAX_LENGTH;
  w.opts.calib_pad_policy = QS_CALIB_PADS_EXCLUDE;
  expect_failure(&w, "wint8_aint8", 8, QS_EXIT_USAGE, "calib_pad_policy=exclude needs dataset.padding=packed");
  w.opts.calib_pad_policy = QS_CALIB_PADS_INCLUDE;
  w.bopts.padding = QS_PADDING_PACKED;
  /* Two logical batches in one packed batch would normalize the loss over both. */
  w.bopts.max_seqs = 8;
  expect_failure(&w, "wint8_aint8", 8, QS_EXIT_USAGE, "not exactly one logical batch");
  w.bopts.max_seqs = 0;
  w.bopts.pad_id = 50;
  expect_failure(&w, "wint8_aint8", 8, QS_EXIT_USAGE, "pad token id 50 is outside");
  w.bopts.pad_id = 1;
  const char *split[] = {"*layers.1.self_attn.k_proj"};
  w.opts.disabled_layers = split;
  w.opts.n_disabled_layers = 1;
  expect_failure(&w, "wint8_aint8", 8, QS_EXIT_USAGE, "model.language_model.layers.1.self_attn.k_proj");
  fixture_world_free(&w);
}

/* Disabled Linears stay in the cell as NONE-only with no score; the others
 * are unaffected (bit for bit) by the exclusion. */
static void test_disabled_layers(void) {
  world w;
  world_init(&w);
  qs_error err;
  qs_cell *all, *some;
  CHECK(run_one(&w, "wint8_aint8", 8, &all, &err));
  const char *globs[] = {"*layers.0.mlp.*"};
  w.opts.disabled_layers = globs;
  w.opts.n_disabled_layers = 1;
  CHECK(run_one(&w, "wint8_aint8", 8, &some, &err));
  CHECK_INT(some->nlinears, 14);
  size_t none_only = 0, equal = 0;
  for (size_t i = 0; i < some->nlinears; i++) {
    const qs_cell_linear *l = &some->linears[i];
    if (l->none_only) {
      none_only++;
      CHECK(l->raw_scores[0] == 0.0 && isnan(l->input_amax[0]));
      CHECK(strstr(l->name, "layers.0.mlp.") != NULL);
    } else {
      equal += memcmp(&l->raw_scores[0], &all->linears[i].raw_scores[0], sizeof(double)) == 0;
    }
  }
  CHECK_INT(none_only, 3);
  CHECK_INT(equal, 11);
  /* seed names and the cell's run record */
  CHECK_STR(some->run.act_amax, "static");
  CHECK_STR(some->run.precision_mode, "accurate");
  CHECK_INT(some->run.num_score_steps, 2);
  CHECK_INT(some->nsamples, 8);
  CHECK_INT(some->sample_tokens[0], (long long)w.seqs[0].len);
  CHECK_STR(some->formats[0].display, "INT8_DEFAULT_CFG(effective-bits: 8.0)");
  qs_cell_free(all);
  qs_cell_free(some);
  fixture_world_free(&w);
}

/* modelopt precision runs end to end and is recorded; its bf16-rounded Δ
 * gives other (here: positive, same order of magnitude) scores. The
 * progress stream gets one line per calibration and score batch. */
static void test_modelopt_and_progress(void) {
  world w;
  world_init(&w);
  qs_error err;
  qs_cell *acc, *mo;
  CHECK(run_one(&w, "wfp8_afp8", 8, &acc, &err));
  FILE *progress = tmpfile();
  w.opts.precision = QS_DELTA_MODELOPT;
  w.opts.progress = progress;
  w.opts.progress_label = "[pass 1/1]";
  CHECK(run_one(&w, "wfp8_afp8", 8, &mo, &err));
  CHECK_STR(mo->run.precision_mode, "modelopt");
  CHECK_STR(mo->run.grad_dtype, "bfloat16");
  size_t differ = 0;
  for (size_t i = 0; i < mo->nlinears; i++) {
    double a = acc->linears[i].raw_scores[0], m = mo->linears[i].raw_scores[0];
    CHECK(m > 0.1 * a && m < 10.0 * a);
    differ += a != m;
  }
  CHECK(differ > 0);
  char text[2048] = "";
  rewind(progress);
  size_t len = fread(text, 1, sizeof text - 1, progress);
  text[len] = '\0';
  fclose(progress);
  CHECK(strstr(text, "[pass 1/1] calibrate batch 1/2: 4/8 samples, ") != NULL);
  CHECK(strstr(text, "[pass 1/1] calibrate batch 2/2: 8/8 samples, ") != NULL);
  CHECK(strstr(text, "[pass 1/1] score batch 2/2: 8/8 samples, ") != NULL);
  CHECK(strstr(text, " tok/s, ETA ") != NULL && strstr(text, ", loss ") != NULL);
  qs_cell_free(acc);
  qs_cell_free(mo);
  fixture_world_free(&w);
}

/* calib_pad_policy: the pad row can only raise a static amax, and it
 * enters the dynamic amax of wfp4_afp8 too. */
static void test_pad_policy(void) {
  world w;
  world_init(&w);
  qs_error err;
  qs_cell *inc, *exc, *dyn_inc, *dyn_exc;
  CHECK(run_one(&w, "wint8_aint8", 8, &inc, &err));
  CHECK(run_one(&w, "wfp4_afp8", 8, &dyn_inc, &err));
  w.opts.calib_pad_policy = QS_CALIB_PADS_EXCLUDE;
  CHECK(run_one(&w, "wint8_aint8", 8, &exc, &err));
  CHECK(run_one(&w, "wfp4_afp8", 8, &dyn_exc, &err));
  size_t raised = 0, lowered = 0, dyn_changed = 0;
  for (size_t i = 0; i < inc->nlinears; i++) {
    raised += inc->linears[i].input_amax[0] > exc->linears[i].input_amax[0];
    lowered += inc->linears[i].input_amax[0] < exc->linears[i].input_amax[0];
    dyn_changed += dyn_inc->linears[i].raw_scores[0] != dyn_exc->linears[i].raw_scores[0];
  }
  CHECK_INT(lowered, 0);
  CHECK(raised > 0);
  CHECK(dyn_changed > 0);
  /* o_proj's pad input is 0: it never raises that amax. */
  CHECK(inc->linears[3].input_amax[0] == exc->linears[3].input_amax[0]);
  qs_cell_free(inc);
  qs_cell_free(exc);
  qs_cell_free(dyn_inc);
  qs_cell_free(dyn_exc);
  fixture_world_free(&w);
}

/* The head is visited in chunks of lm_chunk_tokens rows; its scores (and
 * wfp4_afp8's dynamic amax, which must cover the whole batch) do not depend
 * on the chunking beyond fp32 rounding: BLAS blocks a GEMM of fewer rows
 * differently (the model's logits and G too), ~1e-7 relative; 1e-5. An amax
 * taken per chunk would move the FP8 scale of most chunks: errors ~1e-2. */
static void test_head_chunks(void) {
  world w;
  world_init(&w);
  w.opts.include_lm_head = true;
  qs_error err;
  const char *pairs[] = {"wfp4_afp8", "wint8_aint8"};
  for (size_t p = 0; p < 2; p++) {
    qs_cell *whole, *chunked;
    CHECK(run_one(&w, pairs[p], 8, &whole, &err));
    w.opts.lm_chunk_tokens = 5;
    CHECK(run_one(&w, pairs[p], 8, &chunked, &err));
    w.opts.lm_chunk_tokens = 0;
    size_t head = whole->nlinears - 1;
    CHECK_STR(whole->linears[head].name, "lm_head");
    CHECK(whole->linears[head].raw_scores[0] > 0.0);
    CHECK_REL(chunked->linears[head].raw_scores[0], whole->linears[head].raw_scores[0], 1e-5, 0.0);
    qs_cell_free(whole);
    qs_cell_free(chunked);
  }
  fixture_world_free(&w);
}

/* Layer slices (parallel.mode=layers): each Linear is scored by exactly one
 * slice, and the slices' sum is the full result bit for bit (x + 0 = x). */
static void test_layer_slices(void) {
  world w;
  world_init(&w);
  w.opts.include_lm_head = true;
  qs_error err;
  qs_cell *full, *part[2];
  CHECK(run_one(&w, "wint8_afp8", 8, &full, &err));
  w.opts.layer_slices = 2;
  for (int r = 0; r < 2; r++) {
    w.opts.layer_slice = r;
    CHECK(run_one(&w, "wint8_afp8", 8, &part[r], &err));
  }
  size_t exact = 0, single = 0;
  for (size_t i = 0; i < full->nlinears; i++) {
    double a = part[0]->linears[i].raw_scores[0], b = part[1]->linears[i].raw_scores[0];
    double sum = a + b, want = full->linears[i].raw_scores[0];
    exact += memcmp(&sum, &want, sizeof sum) == 0;
    single += (a == 0.0) != (b == 0.0);
  }
  CHECK_INT(exact, full->nlinears);
  CHECK_INT(single, full->nlinears);
  CHECK(part[0]->linears[0].raw_scores[0] > 0.0 && part[1]->linears[7].raw_scores[0] > 0.0);
  w.opts.layer_slice = 2;
  expect_failure(&w, "wint8_afp8", 8, QS_EXIT_USAGE, "layer slice 2 is not in [0, 2)");
  qs_cell_free(full);
  qs_cell_free(part[0]);
  qs_cell_free(part[1]);
  fixture_world_free(&w);
}

int main(void) {
  test_passes();
  test_names();
  test_errors();
  test_disabled_layers();
  test_modelopt_and_progress();
  test_pad_policy();
  test_head_chunks();
  test_layer_slices();
  return check_summary("test_engine_plan");
}
