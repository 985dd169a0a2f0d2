#include "tiny_lm.h"

#include <math.h>
#include <stdlib.h>

#include "core/bf16.h"
#include "core/mem.h"

uint64_t rng_next(test_rng *r) {
  uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double rng_uniform(test_rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

double rng_normal(test_rng *r) {
  double u1 = rng_uniform(r), u2 = rng_uniform(r);
  return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

qs_lm_config tiny_lm_config(void) {
  qs_lm_config c = {0};
  c.hidden = 32;
  c.intermediate = 40;
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = 2;
  c.head_dim = 12;
  c.vocab = 50;
  c.rms_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.tied = false;
  c.max_positions = 4096;
  return c;
}

/* Bump allocator over the model's single storage block. */
typedef struct filler {
  qs_bf16 *next;
  test_rng rng;
} filler;

static const qs_bf16 *fill_normal(filler *f, long n, double mean, double std) {
  qs_bf16 *w = f->next;
  for (long i = 0; i < n; i++) w[i] = qs_f32_to_bf16((float)(mean + std * rng_normal(&f->rng)));
  f->next += n;
  return w;
}

static const qs_bf16 *fill_norm(filler *f, long n) { return fill_normal(f, n, 1.0, 0.3); }

static const qs_bf16 *fill_linear(filler *f, long out, long in, double gain) {
  return fill_normal(f, out * in, 0.0, gain / sqrt((double)in));
}

static void release_tiny(qs_lm *lm) {
  free(lm->storage);
  free(lm->layer);
  lm->storage = NULL;
  lm->layer = NULL;
}

void tiny_lm_build(qs_lm *lm, const qs_lm_config *cfg, uint64_t seed, double gain) {
  long d = cfg->hidden, inter = cfg->intermediate, v = cfg->vocab, hd = cfg->head_dim;
  long qw = cfg->heads * hd, kvw = cfg->kv_heads * hd;
  long per_layer = 2 * d + 2 * hd + qw * d + 2 * kvw * d + d * qw + 3 * inter * d;
  long total = 2 * v * d + d + cfg->layers * per_layer;
  lm->cfg = *cfg;
  lm->storage = qs_malloc((size_t)total * sizeof(qs_bf16));
  lm->layer = qs_calloc((size_t)cfg->layers, sizeof *lm->layer);
  lm->release = release_tiny;
  filler f = {lm->storage, {seed}};
  lm->embed = fill_normal(&f, v * d, 0.0, 1.0);
  for (int l = 0; l < cfg->layers; l++) {
    qs_lm_layer *L = &lm->layer[l];
    L->input_norm = fill_norm(&f, d);
    L->q = fill_linear(&f, qw, d, gain);
    L->k = fill_linear(&f, kvw, d, gain);
    L->v = fill_linear(&f, kvw, d, gain);
    L->q_norm = fill_norm(&f, hd);
    L->k_norm = fill_norm(&f, hd);
    L->o = fill_linear(&f, d, qw, gain);
    L->post_norm = fill_norm(&f, d);
    L->gate = fill_linear(&f, inter, d, gain);
    L->up = fill_linear(&f, inter, d, gain);
    L->down = fill_linear(&f, d, inter, gain);
  }
  lm->final_norm = fill_norm(&f, d);
  lm->lm_head = cfg->tied ? lm->embed : fill_linear(&f, v, d, gain);
}
