/* Small random Qwen3 models built in memory for the model tests, and the
 * seeded generator they use. */
#ifndef QSENS_TESTS_MODEL_TINY_LM_H
#define QSENS_TESTS_MODEL_TINY_LM_H

#include <stdint.h>

#include "model/lm.h"

/* splitmix64: a tiny, well-mixed, reproducible generator. */
typedef struct test_rng {
  uint64_t s;
} test_rng;

uint64_t rng_next(test_rng *r);
double rng_uniform(test_rng *r); /* [0, 1) */
double rng_normal(test_rng *r);  /* N(0, 1) */

/* A model with the given shape: norms 1 + 0.3·N(0,1), Linear and embedding
 * weights N(0, 1/fan_in) scaled by `gain` (so activations and gradients are
 * O(1) rather than vanishing), all rounded to bf16. tied: lm_head is
 * embed_tokens. Release with qs_lm_release. */
void tiny_lm_build(qs_lm *lm, const qs_lm_config *cfg, uint64_t seed, double gain);

/* The default test shape: 2 layers, D 32, 4 heads / 2 kv heads of head_dim 12
 * (q width 48 != D), I 40, V 50, untied. */
qs_lm_config tiny_lm_config(void);

#endif
