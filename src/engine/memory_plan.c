/* Device bytes of a pass from the model shape; see memory_plan.h. Every
 * count is in size_t bytes (a 32B model's weights exceed 2^32). */
#include "engine/memory_plan.h"

#include "backend/score_order.h"
#include "model/qwen3.h"

enum {
  BF16_BYTES = 2,
  F32_BYTES = 4,
  I32_BYTES = 4,
  F64_BYTES = 8,
};

/* Margin: 1/16 of the free memory (kernel modules load lazily, cuBLASLt
 * keeps workspaces, allocations round up to pages) and at least 512 MiB
 * (the CUDA context's own growth on a small card). */
static const size_t MARGIN_MIN_BYTES = (size_t)512 << 20;

size_t qs_memory_margin(size_t free_bytes) {
  size_t share = free_bytes / 16;
  return share > MARGIN_MIN_BYTES ? share : MARGIN_MIN_BYTES;
}

typedef struct widths {
  size_t d, inter, q, kv, vocab;
} widths;

static widths widths_of(const qs_lm_config *c) {
  return (widths){(size_t)c->hidden, (size_t)c->intermediate, (size_t)c->heads * (size_t)c->head_dim,
                  (size_t)c->kv_heads * (size_t)c->head_dim, (size_t)c->vocab};
}

static size_t max2(size_t a, size_t b) { return a > b ? a : b; }

static size_t weight_bytes(const qs_lm_config *c) {
  widths w = widths_of(c);
  size_t linears = 2 * w.d * w.q + 2 * w.d * w.kv + 3 * w.d * w.inter; /* q, o; k, v; gate, up, down */
  size_t norms = 2 * w.d + 2 * (size_t)c->head_dim;
  size_t heads = (c->tied ? 1 : 2) * w.vocab * w.d;
  return BF16_BYTES * ((size_t)c->layers * (linears + norms) + heads + w.d);
}

/* One decoder layer's forward activations per token (model/qwen3.c
 * carve_acts): a, q_raw, k_raw, v, q, k, o, x_mid, b, g, u, m in the
 * activation dtype, rstd_in, rstd_post, rstd_q/k per head and lse per head
 * in fp32. */
static size_t layer_acts_per_token(const qs_lm_config *c, size_t act) {
  widths w = widths_of(c);
  return act * (3 * w.d + 3 * w.q + 3 * w.kv + 3 * w.inter) +
         F32_BYTES * (2 + 2 * (size_t)c->heads + (size_t)c->kv_heads);
}

/* Backward temporaries per token (model/qwen3.c carve_grads): the fp32
 * residual gradient, its copy in the activation dtype (when that is not
 * fp32), and the gradients of every layer tensor the backward walks. */
static size_t grads_per_token(const qs_lm_config *c, size_t act) {
  widths w = widths_of(c);
  size_t delta_act = act == F32_BYTES ? 0 : act * w.d;
  return F32_BYTES * w.d + delta_act + act * (3 * w.d + 3 * w.inter + 3 * w.q + 3 * w.kv);
}

/* The model's per-step arena per token: ids, positions and targets, the
 * kept layer inputs (L + 1 with a backward), one layer's activations (every
 * layer's when kept), proj, the final-normed hidden and its rstd, and the
 * backward temporaries; plus the attention backward's fp32 do·o per head
 * (a backend scratch). */
static size_t model_per_token(const qs_memory_request *r) {
  const qs_lm_config *c = r->cfg;
  size_t d = (size_t)c->hidden, act = r->act_bytes;
  size_t layers_kept = r->keep_activations ? (size_t)c->layers : 1;
  return 3 * I32_BYTES + ((size_t)c->layers + 1) * d * act + layers_kept * layer_acts_per_token(c, act) +
         2 * d * act + F32_BYTES + grads_per_token(c, act) + F32_BYTES * (size_t)c->heads;
}

/* The engine's per-visit buffers per token, for the widest decoder Linear:
 * Y in fp32, the score op's fp32 partials, and one FQ_a(X) slot per
 * distinct quantized activation. */
static size_t engine_per_token(const qs_memory_request *r) {
  widths w = widths_of(r->cfg);
  size_t n_max = max2(max2(w.q, w.inter), w.d);
  size_t k_max = max2(max2(w.d, w.q), w.inter);
  return F32_BYTES * (n_max + (size_t)qs_score_runs_per_row((long)n_max)) + (size_t)r->act_quantizers * r->act_bytes * k_max;
}

static size_t lm_chunk(const qs_memory_request *r) {
  return r->lm_chunk_tokens > 0 ? (size_t)r->lm_chunk_tokens : QS_QWEN3_DEFAULT_LM_CHUNK;
}

/* The widest searched weight: [I, D] (gate, up, down) or the head's [V, D]. */
static size_t widest_weight(const qs_memory_request *r) {
  widths w = widths_of(r->cfg);
  size_t decoder = max2(w.inter * w.d, w.q * w.d);
  return r->include_lm_head ? max2(decoder, w.vocab * w.d) : decoder;
}

/* Bytes that do not grow with the step: the logits and row losses of one
 * lm_head chunk, one FQ_w(W) scratch of the widest weight per weight
 * quantizer (in the activation dtype, as the score op takes it) and the
 * score op's Y_r row block; with the head searched, its chunk's fp32 Y and
 * partials and its FQ_a slots. */
static size_t fixed_bytes(const qs_memory_request *r) {
  widths w = widths_of(r->cfg);
  size_t chunk = lm_chunk(r);
  size_t bytes = chunk * (w.vocab * r->act_bytes + F64_BYTES) +
                 (size_t)r->weight_quantizers * r->act_bytes * widest_weight(r) +
                 F32_BYTES * (size_t)QS_SCORE_BLOCK_FLOATS;
  if (r->include_lm_head)
    bytes += chunk * (F32_BYTES * (w.vocab + (size_t)qs_score_runs_per_row((long)w.vocab)) + (size_t)r->act_quantizers * r->act_bytes * w.d);
  return bytes;
}

qs_memory_plan qs_memory_plan_make(const qs_memory_request *r, long token_budget) {
  qs_memory_plan p;
  p.weight_bytes = weight_bytes(r->cfg);
  p.fixed_bytes = fixed_bytes(r);
  p.per_token_bytes = model_per_token(r) + engine_per_token(r);
  p.token_budget = token_budget > 0 ? token_budget : 0;
  p.total_bytes = p.weight_bytes + p.fixed_bytes + p.per_token_bytes * (size_t)p.token_budget;
  return p;
}

long qs_memory_plan_fit(const qs_memory_request *r, size_t free_bytes) {
  qs_memory_plan p = qs_memory_plan_make(r, 0);
  size_t reserved = p.weight_bytes + p.fixed_bytes + qs_memory_margin(free_bytes);
  if (free_bytes <= reserved) return 0;
  size_t tokens = (free_bytes - reserved) / p.per_token_bytes;
  return tokens > (size_t)0x7fffffff ? 0x7fffffffL : (long)tokens;
}

long qs_memory_step_tokens(const qs_memory_request *r, size_t free_bytes) {
  if (!free_bytes) return QS_MEMORY_CPU_STEP_TOKENS;
  long tokens = qs_memory_plan_fit(r, free_bytes);
  return tokens > QS_MEMORY_STEP_QUANTUM ? tokens / QS_MEMORY_STEP_QUANTUM * QS_MEMORY_STEP_QUANTUM : tokens;
}

static bool same_act_quantizer(const qs_memory_cell *a, const qs_memory_cell *b) {
  return a->act == b->act && a->dynamic_act == b->dynamic_act && (a->dynamic_act || a->samples == b->samples);
}

void qs_memory_count_quantizers(const qs_memory_cell *cells, size_t n, qs_memory_request *r) {
  r->weight_quantizers = r->act_quantizers = 0;
  for (size_t k = 0; k < n; k++) {
    bool new_weight = true, new_act = cells[k].act->kind != QS_QK_NONE;
    for (size_t j = 0; j < k; j++) {
      new_weight = new_weight && cells[j].weight != cells[k].weight;
      new_act = new_act && !same_act_quantizer(&cells[j], &cells[k]);
    }
    r->weight_quantizers += new_weight;
    r->act_quantizers += new_act;
  }
}
