/* Device memory of a scoring pass, planned before it runs: the weights, the
 * bytes that do not grow with the step (weight fake-quant scratch, the
 * lm_head logits chunk, the score op's blocks) and the bytes per token of a
 * step (activations with per-layer recompute, gradients, the engine's
 * per-visit buffers). From it the app prints the plan at start and, when
 * backend.token_budget is null, picks the largest step that fits the free
 * device memory with a margin. The sizes mirror the model's arena
 * (model/qwen3.c carve_all) and the engine's buffers; they are estimates
 * within the arena's alignment padding, not allocations. */
#ifndef QSENS_ENGINE_MEMORY_PLAN_H
#define QSENS_ENGINE_MEMORY_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "model/lm.h"
#include "quant/format.h"

/* backend.token_budget null on the CPU backend: 4096 tokens make GEMMs of
 * thousands of rows (OpenBLAS runs near its peak from a few hundred) while
 * the fp32 activations of a 4B-shaped model stay near 4 GiB of host memory. */
enum { QS_MEMORY_CPU_STEP_TOKENS = 4096 };

/* What the plan depends on besides the token budget. */
typedef struct qs_memory_request {
  const qs_lm_config *cfg;
  size_t act_bytes;        /* bytes of one activation element: 2 (bf16, CUDA) or 4 (fp32, CPU) */
  bool keep_activations;   /* every layer's activations kept (no recompute) */
  long lm_chunk_tokens;    /* logits rows alive at once; <= 0: QS_QWEN3_DEFAULT_LM_CHUNK */
  bool include_lm_head;    /* the head is searched: its [V, D] is the widest Linear */
  int weight_quantizers;   /* distinct weight formats of the pass (one FQ_w scratch each) */
  int act_quantizers;      /* distinct quantized activations per visit (one FQ_a slot each) */
} qs_memory_request;

typedef struct qs_memory_plan {
  size_t weight_bytes;    /* every LM tensor in bf16 (embedding and head once when tied) */
  size_t fixed_bytes;     /* step-size independent: FQ_w scratch, logits chunk, score blocks */
  size_t per_token_bytes; /* activations, gradients and per-visit buffers per token of a step */
  long token_budget;      /* tokens per step the plan is for */
  size_t total_bytes;     /* weight + fixed + per_token * token_budget */
} qs_memory_plan;

/* Bytes left unplanned out of the free memory: the CUDA context's lazily
 * loaded kernels, cuBLASLt workspaces and allocation granularity. */
size_t qs_memory_margin(size_t free_bytes);

/* The plan of r for steps of token_budget tokens. */
qs_memory_plan qs_memory_plan_make(const qs_memory_request *r, long token_budget);

/* The largest token budget whose plan fits free_bytes (free device memory
 * before the weights are placed) less qs_memory_margin; 0 when not even
 * one token fits. */
long qs_memory_plan_fit(const qs_memory_request *r, size_t free_bytes);

/* The step token budget when backend.token_budget is null: on a device,
 * the largest that fits free_bytes, rounded down to a multiple of
 * QS_MEMORY_STEP_QUANTUM when it is larger (the few MiB by which free
 * memory varies between runs then rarely change the steps, whose GEMM
 * shapes decide the fp32 rounding of the scores); 0 when nothing fits. On
 * the host (free_bytes 0): QS_MEMORY_CPU_STEP_TOKENS. The budget never
 * depends on the pass's own tokens, so a cell scored alone is grouped into
 * the same steps as in a fused pass. */
enum { QS_MEMORY_STEP_QUANTUM = 1024 };
long qs_memory_step_tokens(const qs_memory_request *r, size_t free_bytes);

/* One cell of a pass as the plan counts quantizers: its formats, whether its
 * activation amax is dynamic, and its dataset size (samples). */
typedef struct qs_memory_cell {
  const qs_qformat *weight, *act;
  bool dynamic_act;
  size_t samples;
} qs_memory_cell;

/* Sets r's weight_quantizers to the distinct weight formats of the cells
 * (one FQ_w scratch each) and act_quantizers to their distinct quantized
 * activations (one FQ_a slot each): a static amax differs per dataset size,
 * a dynamic one is taken from the data whatever the size. */
void qs_memory_count_quantizers(const qs_memory_cell *cells, size_t n, qs_memory_request *r);

#endif
