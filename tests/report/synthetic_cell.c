#include "synthetic_cell.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/mem.h"

/* Deterministic pseudo-random value in [0, 1) (64-bit LCG, top 53 bits). */
static double next_uniform(unsigned long long *state) {
  *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(*state >> 11) / 9007199254740992.0;
}

static const struct {
  const char *path;
  long long numel;
} linear_shapes[] = {
    {"self_attn.q_proj", 4096LL * 2560}, {"self_attn.k_proj", 1024LL * 2560},
    {"self_attn.v_proj", 1024LL * 2560}, {"self_attn.o_proj", 2560LL * 4096},
    {"mlp.gate_proj", 9728LL * 2560},    {"mlp.up_proj", 9728LL * 2560},
    {"mlp.down_proj", 2560LL * 9728},
};

/* Raw score of one Linear: mostly random below 20; exact zeros in every
 * o_proj of even layers; layers 20-23 share one value per kind (ties). */
static double synth_score(int layer, int kind, unsigned long long *rng) {
  double r = next_uniform(rng);
  if (kind == 3 && layer % 2 == 0) return 0.0;
  if (layer >= 20 && layer <= 23) return 0.125 * (kind + 1);
  if (layer == 6 && kind == 4) return SYNTH_GATE6_SCORE;
  if (layer == 6 && kind == 5) return 0.0; /* group score = gate's score exactly */
  return 20.0 * r * r * r; /* group sums stay below the layer-6 gate score */
}

qs_cell *synth_cell_new(void) {
  qs_cell *cell = qs_cell_new();
  qs_qpair pair;
  qs_error err = {0};
  if (!qs_qpair_parse("wint8_aint8", &pair, &err)) {
    fprintf(stderr, "synthetic cell: %s\n", err.msg);
    exit(1);
  }
  qs_cell_set_pair(cell, &pair, 0, false);
  qs_cell_set_str(&cell->model_id, "/models/Qwen3-VL-4B-Instruct");
  cell->dataset = (qs_cell_dataset){.present = true, .max_calib_samples = 128,
                                    .num_calib_samples = 128, .calib_seq_len = 512,
                                    .batch_size = 8, .num_calib_batches = 16};
  qs_cell_set_str(&cell->dataset.name, "coco2017_captions");
  qs_cell_set_str(&cell->dataset.size, "medium");
  qs_cell_set_str(&cell->dataset.captions_path, "datasets/captions/coco2017_captions_medium.txt");
  qs_cell_run *r = &cell->run;
  qs_cell_set_str(&r->precision_mode, "accurate");
  qs_cell_set_str(&r->grad_dtype, "bfloat16");
  qs_cell_set_str(&r->mx_scale_rule, "nv_ceil");
  qs_cell_set_str(&r->name_style, "seed");
  qs_cell_set_str(&r->padding_side, "left");
  qs_cell_set_str(&r->captions_path, "datasets/captions/coco2017_captions_medium.txt");
  qs_cell_set_str(&r->captions_md5, "3a0b5658\xc3\xa9"); /* non-ASCII exercises \u escapes */
  r->batch_size = 8, r->seq_len = 512, r->num_calib_steps = 16, r->num_score_steps = 16;
  qs_cell_set_str(&cell->provenance.tool_version, "0.1.0");
  qs_cell_set_str(&cell->provenance.git_commit, "abc123");
  qs_cell_set_str(&cell->config_yaml, "quant_pair: wint8_aint8\ndataset:\n  size: medium\n");
  unsigned long long rng = 42;
  char name[128];
  for (int layer = 0; layer < SYNTH_LAYERS; layer++) {
    for (int kind = 0; kind < 7; kind++) {
      snprintf(name, sizeof name, "language_model.layers.%d.%s", layer, linear_shapes[kind].path);
      qs_cell_linear *lin = qs_cell_add_linear(cell, name, linear_shapes[kind].numel);
      lin->raw_scores[0] = synth_score(layer, kind, &rng);
      lin->input_amax[0] = 1.5 + layer + 0.25 * kind;
      lin->weight_amax = 0.0625 * (kind + 1);
    }
  }
  qs_cell_linear *head = qs_cell_add_linear(cell, "lm_head", 151936LL * 2560);
  head->none_only = true;
  cell->nsamples = 5;
  cell->sample_tokens = qs_malloc(5 * sizeof *cell->sample_tokens);
  for (int i = 0; i < 5; i++) cell->sample_tokens[i] = 10 + 3 * i;
  cell->baseline_loss = 2.75;
  cell->timings = (qs_cell_timings){1.0, 2.0, 3.0, 0.5, 6.5};
  return cell;
}

qs_cell *synth_cell_finished(double effective_bits) {
  qs_cell *cell = synth_cell_new();
  qs_error err = {0};
  if (!qs_cell_finish(cell, effective_bits, &err)) {
    fprintf(stderr, "synthetic cell: %s\n", err.msg);
    exit(1);
  }
  return cell;
}
