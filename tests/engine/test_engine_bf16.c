/* The scoring pass on the CPU backend's bf16 mode (the CUDA backend's
 * precision, qs_cpu_backend_new_bf16) against the f32 mode, head searched:
 * the pass runs through every op of the mode (the lm_head's hooks receive
 * bf16 chunks), reports bf16 gradients, and its scores stay within the
 * bounds that bf16 activations explain (the GPU's against the f32 CPU,
 * docs/gpu.md): weight-only 1e-2 per Linear (G's bf16 noise), quantized
 * activations 0.25 (an element within 2^-9 of a rounding boundary of the
 * activation grid lands on the other side). Not bit-equal: the mode rounds. */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "engine_world.h"
#include "report/results.h"

enum { NSAMPLES = 16 };

static qs_cell *run_pair(fixture_world *w, qs_backend *be, const char *pair) {
  qs_engine_cell cell = {pair, QS_ACT_AMAX_PAIR_DEFAULT, NSAMPLES, qs_cell_new()};
  qs_engine_data data = {w->seqs, NSAMPLES, &w->bopts};
  qs_error err;
  bool ok = qs_engine_run_pass(be, &w->lm, &data, &cell, 1, &w->opts, &err);
  if (!ok) fprintf(stderr, "%s on %s: %s\n", pair, be->name, err.msg);
  CHECK(ok);
  return cell.out;
}

static void compare(fixture_world *w, const char *pair, double per_linear) {
  qs_backend *f32 = qs_cpu_backend_new(), *bf16 = qs_cpu_backend_new_bf16();
  qs_cell *ref = run_pair(w, f32, pair), *got = run_pair(w, bf16, pair);
  CHECK_STR(got->run.grad_dtype, "bfloat16");
  CHECK_STR(ref->run.grad_dtype, "float32");
  CHECK_INT(got->nlinears, ref->nlinears);
  CHECK(got->nlinears > 0);
  size_t equal = 0;
  double worst = 0.0;
  for (size_t i = 0; i < got->nlinears && i < ref->nlinears; i++) {
    double a = got->linears[i].raw_scores[0], b = ref->linears[i].raw_scores[0];
    CHECK(a > 0.0 && isfinite(a));
    worst = fmax(worst, fabs(a - b) / b);
    equal += a == b;
  }
  printf("%s: worst Linear %.3g\n", pair, worst);
  CHECK(worst <= per_linear);
  CHECK(equal < got->nlinears);
  CHECK_REL(got->baseline_loss, ref->baseline_loss, 1e-2, 0.0);
  qs_cell_free(ref);
  qs_cell_free(got);
  qs_backend_destroy(f32);
  qs_backend_destroy(bf16);
}

int main(void) {
  fixture_world w;
  fixture_world_init(&w, NSAMPLES, 5, 17);
  w.bopts.batch_size = 8;
  w.opts.include_lm_head = true;
  w.opts.lm_chunk_tokens = 7;
  compare(&w, "wfp8_afp16", 1e-2);
  compare(&w, "wint8_aint8", 0.25);
  compare(&w, "wfp4_afp8", 0.25);
  fixture_world_free(&w);
  return check_summary("test_engine_bf16");
}
