/* The pass: setup (Linears, quantizers, sizes), calibration, scoring, and
 * filling the cells. See engine.h. */
#define _POSIX_C_SOURCE 200809L
#include "engine/engine.h"

#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/mem.h"
#include "engine/batches.h"
#include "model/qwen3.h"
#include "text/batch.h"

#define TRY(x) \
  do {         \
    if (!(x)) return false; \
  } while (0)

/* Linears of a decoder layer in module order (q, k, v, o, gate, up, down). */
#define LINEARS_PER_LAYER 7

typedef struct eng_linear {
  int layer; /* -1: lm_head */
  qs_linear_kind kind;
  const qs_tensor *w; /* the model's weight [out, in] */
  bool none_only; /* matched disabled_layers: kept unquantized, not scored */
  bool scored;    /* scored by this rank: not none_only, in its layer slice */
  double wmax;    /* max |W| */
} eng_linear;

/* A dataset size of the pass: its step counts and calibrated amax. */
typedef struct eng_size {
  size_t n_samples;
  eng_size_steps steps;
  float *amax_host; /* [nlin] */
  qs_tensor amax;   /* [nlin, 1] F32 on the backend */
} eng_size;

typedef struct eng_cell {
  qs_engine_cell *req;
  qs_qpair pair;
  bool act_quant; /* the activation is quantized */
  bool dynamic;   /* ...with an amax taken from each call's input */
  qs_fq_spec wspec, aspec;
  size_t wq;      /* index of its weight quantizer */
  size_t size;    /* index of its dataset size */
  double loss_sum;
  size_t loss_batches;
} eng_cell;

typedef struct engine {
  qs_backend *be;
  const qs_lm *lm;
  const qs_engine_options *opts;
  qs_qwen3 *model;
  eng_linear *lin;
  size_t nlin;
  eng_cell *cells;
  size_t ncells;
  qs_fq_spec *wspecs; /* distinct weight quantizers */
  size_t nw;
  /* One FQ_w(W) scratch per weight quantizer (wq_cap elements, allocated
   * on first use), holding that quantizer's W of Linear wq_holds[k]: each
   * W is quantized once per step however many cells or head chunks use it,
   * and no quantized copy of the model is ever kept. Its dtype is the
   * activations': bf16 on a GPU (half the memory; tensor-core operands),
   * f32 on the CPU, whose GEMMs would otherwise upcast it for every
   * candidate. */
  qs_tensor *wq;
  size_t *wq_holds;
  long wq_cap;
  eng_size *sizes;
  size_t nsizes;
  qs_tensor acc;       /* [nlin, 1] running calibration amax */
  /* Packed batches with calib_pad_policy=include: one synthetic pad row
   * stands for the pads of the padded flow (padded batches have real ones). */
  bool pad_row;
  float *pad_amax;     /* [nlin] input amax of the pad row (0: no pad row) */
  qs_tensor pad_acc;   /* [nlin, 1] its accumulators */
  /* Dynamic amax are per logical batch (the padded flow's one forward per
   * batch), so per loss group of a step: max_groups slots each. */
  size_t max_groups;
  float *group_init;   /* [max_groups] host values the slots start from */
  qs_tensor head_amax; /* [max_groups, 1] dynamic amax of each group's whole lm_head input */
  qs_tensor dyn_amax;  /* [max_groups, 1] a decoder Linear's dynamic amax of each group with the pad row */
  /* Per-visit activation slots (capacity xq_cap elements each), each shared
   * by the cells that quantize X like the cell that filled it. */
  qs_tensor *xq;
  long *xq_cap;
  const eng_cell **xq_owner;
  size_t nxq;          /* slots filled in the current visit */
  /* Y = X·Wᵀ (F32) of the Linear being visited, shared by its candidates:
   * computed at the visit's first candidate (y_ready), capacity y_cap. */
  qs_tensor y;
  long y_cap;
  bool y_ready;
  /* The step's scores stay on the backend: score_acc[ci·nlin + i] (F64)
   * sums cell ci's score of Linear i over the step's visits; score_from
   * [ci·nlin + i] is the cell whose slot holds it (a twin's, SIZE_MAX: not
   * scored in this step). Downloaded once per step into score_host. */
  qs_tensor score_acc;
  double *score_host;
  size_t *score_from;
  const eng_step *step;
  size_t step_no;
} engine;

qs_engine_options qs_engine_options_default(void) {
  qs_engine_options o;
  memset(&o, 0, sizeof o);
  o.precision = QS_DELTA_ACCURATE;
  o.calib_pad_policy = QS_CALIB_PADS_INCLUDE;
  o.mx_rule = QS_MX_NV_CEIL;
  o.nvfp4_w4a8_block = 16;
  o.nvfp4_effective_bits = 4.0;
  o.name_style = QS_NAMES_HF;
  return o;
}

void qs_engine_linear_name(qs_name_style style, int layer, qs_linear_kind kind, char *buf, size_t size) {
  char path[96];
  qs_qwen3_linear_path(layer, kind, path, sizeof path);
  if (kind == QS_LIN_LM_HEAD) snprintf(buf, size, "%s", path);
  else snprintf(buf, size, "%slanguage_model.%s", style == QS_NAMES_HF ? "model." : "", path);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static size_t linear_index(const engine *e, const qs_linear_site *site) {
  if (site->kind == QS_LIN_LM_HEAD) return (size_t)e->lm->cfg.layers * LINEARS_PER_LAYER;
  return (size_t)site->layer * LINEARS_PER_LAYER + (size_t)site->kind;
}

static const char *linear_name(const engine *e, size_t i, char *buf, size_t size) {
  qs_engine_linear_name(e->opts->name_style, e->lin[i].layer, e->lin[i].kind, buf, size);
  return buf;
}

/* ---- setup: Linears ---------------------------------------------------- */

static bool is_disabled(const qs_engine_options *o, const char *name) {
  for (size_t i = 0; i < o->n_disabled_layers; i++)
    if (fnmatch(o->disabled_layers[i], name, 0) == 0) return true;
  return false;
}

/* Members of one recipe group share its choices (§4.4), so a glob may not
 * disable only some of q/k/v or gate/up: each of those Linears must agree
 * with its group's first member. */
static qs_linear_kind group_leader(qs_linear_kind kind) {
  if (kind == QS_LIN_K || kind == QS_LIN_V) return QS_LIN_Q;
  return kind == QS_LIN_UP ? QS_LIN_GATE : kind;
}

static bool check_group_agreement(const engine *e, qs_error *err) {
  for (size_t i = 0; i < (size_t)e->lm->cfg.layers * LINEARS_PER_LAYER; i++) {
    const eng_linear *member = &e->lin[i];
    size_t leader = i - (size_t)member->kind + (size_t)group_leader(member->kind);
    if (member->none_only == e->lin[leader].none_only) continue;
    char a[160], b[160];
    linear_name(e, member->none_only ? i : leader, a, sizeof a);
    linear_name(e, member->none_only ? leader : i, b, sizeof b);
    return qs_fail(err, QS_EXIT_USAGE,
                   "disabled_layers matches %s but not %s: they share one recipe group, so disable both or neither",
                   a, b);
  }
  return true;
}

static bool in_layer_slice(const qs_engine_options *o, int layer) {
  return o->layer_slices <= 1 || layer % o->layer_slices == o->layer_slice;
}

/* max |W| of every Linear, reduced where the weights live (a host loop
 * over the 7.5 GB of a 4B model's Linears took seconds); one download. */
static bool weight_amax(engine *e, qs_error *err) {
  float *host = qs_calloc(e->nlin, sizeof(float));
  qs_tensor acc = {0};
  bool ok = qs_tensor_alloc(e->be, QS_F32, (long)e->nlin, 1, &acc, err) && qs_tensor_upload(e->be, &acc, host, err);
  for (size_t i = 0; ok && i < e->nlin; i++) {
    qs_tensor row = qs_tensor_rows(&acc, (long)i, 1);
    ok = qs_op_amax_accumulate(e->be, e->lin[i].w, &row, err);
  }
  ok = ok && qs_tensor_download(e->be, host, &acc, err);
  for (size_t i = 0; ok && i < e->nlin; i++) e->lin[i].wmax = host[i];
  qs_tensor_free(e->be, &acc);
  free(host);
  return ok;
}

static bool setup_linears(engine *e, qs_error *err) {
  int layers = e->lm->cfg.layers;
  e->nlin = (size_t)layers * LINEARS_PER_LAYER + (e->opts->include_lm_head ? 1 : 0);
  e->lin = qs_calloc(e->nlin, sizeof *e->lin);
  for (size_t i = 0; i < e->nlin; i++) {
    eng_linear *l = &e->lin[i];
    l->layer = i < (size_t)layers * LINEARS_PER_LAYER ? (int)(i / LINEARS_PER_LAYER) : -1;
    l->kind = l->layer < 0 ? QS_LIN_LM_HEAD : (qs_linear_kind)(i % LINEARS_PER_LAYER);
    l->w = qs_qwen3_linear_weight(e->model, l->layer, l->kind);
    if (!l->w) {
      char name[160];
      return qs_fail(err, QS_EXIT_RUNTIME, "the model has no weight for %s", linear_name(e, i, name, sizeof name));
    }
    char name[160];
    l->none_only = is_disabled(e->opts, linear_name(e, i, name, sizeof name));
    l->scored = !l->none_only && in_layer_slice(e->opts, l->layer < 0 ? layers : l->layer);
    if (l->scored && qs_tensor_numel(l->w) > e->wq_cap) e->wq_cap = qs_tensor_numel(l->w);
  }
  return weight_amax(e, err) && check_group_agreement(e, err);
}

/* ---- setup: cells, quantizers, sizes ----------------------------------- */

static bool same_spec(const qs_fq_spec *a, const qs_fq_spec *b) {
  return a->format == b->format && a->weight == b->weight && a->mx_rule == b->mx_rule &&
         a->nvfp4_block == b->nvfp4_block;
}

static size_t intern_weight_spec(engine *e, const qs_fq_spec *spec) {
  for (size_t i = 0; i < e->nw; i++)
    if (same_spec(&e->wspecs[i], spec)) return i;
  e->wspecs[e->nw] = *spec;
  return e->nw++;
}

static size_t intern_size(engine *e, size_t n_samples) {
  for (size_t i = 0; i < e->nsizes; i++)
    if (e->sizes[i].n_samples == n_samples) return i;
  e->sizes[e->nsizes].n_samples = n_samples;
  return e->nsizes++;
}

static bool spec_fits(const engine *e, const qs_fq_spec *spec, const qs_qpair *pair, qs_error *err) {
  int block = spec->weight && spec->nvfp4_block > 0 ? spec->nvfp4_block
                                                    : qs_qformat_role_block(spec->format, spec->weight);
  for (size_t i = 0; block > 0 && i < e->nlin; i++) {
    if (e->lin[i].none_only || e->lin[i].w->cols % block == 0) continue;
    char name[160];
    return qs_fail(err, QS_EXIT_USAGE, "quant_pair %s: %s has %ld input features, not a whole number of %s's %d-element blocks",
                   pair->name, linear_name(e, i, name, sizeof name), e->lin[i].w->cols, spec->format->name, block);
  }
  return true;
}

static bool setup_cell(engine *e, qs_engine_cell *req, eng_cell *c, qs_error *err) {
  c->req = req;
  TRY(qs_qpair_parse(req->pair, &c->pair, err));
  if (req->n_samples == 0) return qs_fail(err, QS_EXIT_USAGE, "quant_pair %s: a dataset size of 0 samples", req->pair);
  c->act_quant = c->pair.act->kind != QS_QK_NONE;
  c->dynamic = c->act_quant && (req->act_amax == QS_ACT_AMAX_DYNAMIC ||
                                (req->act_amax == QS_ACT_AMAX_PAIR_DEFAULT && c->pair.dynamic_act_amax));
  bool w4a8_nvfp4 = c->pair.weight->kind == QS_QK_NVFP4 && c->pair.act->kind == QS_QK_FP8;
  c->wspec = (qs_fq_spec){c->pair.weight, true, e->opts->mx_rule, w4a8_nvfp4 ? e->opts->nvfp4_w4a8_block : 0};
  c->aspec = (qs_fq_spec){c->pair.act, false, e->opts->mx_rule, 0};
  TRY(spec_fits(e, &c->wspec, &c->pair, err));
  if (c->act_quant) TRY(spec_fits(e, &c->aspec, &c->pair, err));
  c->wq = intern_weight_spec(e, &c->wspec);
  c->size = intern_size(e, req->n_samples);
  return true;
}

static bool setup_cells(engine *e, qs_engine_cell *cells, size_t ncells, const eng_batches *batches,
                        size_t n_seqs, qs_error *err) {
  e->ncells = ncells;
  e->cells = qs_calloc(ncells ? ncells : 1, sizeof *e->cells);
  e->wspecs = qs_calloc(ncells ? ncells : 1, sizeof *e->wspecs);
  e->sizes = qs_calloc(ncells ? ncells : 1, sizeof *e->sizes);
  for (size_t i = 0; i < ncells; i++) {
    TRY(setup_cell(e, &cells[i], &e->cells[i], err));
    if (cells[i].n_samples > n_seqs)
      return qs_fail(err, QS_EXIT_USAGE, "quant_pair %s: dataset size of %zu samples, but only %zu were given",
                     cells[i].pair, cells[i].n_samples, n_seqs);
  }
  e->wq = qs_calloc(e->nw ? e->nw : 1, sizeof *e->wq);
  e->wq_holds = qs_malloc((e->nw ? e->nw : 1) * sizeof *e->wq_holds);
  for (size_t k = 0; k < e->nw; k++) e->wq_holds[k] = SIZE_MAX;
  for (size_t s = 0; s < e->nsizes; s++) {
    e->sizes[s].steps = eng_size_steps_for(batches, e->sizes[s].n_samples);
    e->sizes[s].amax_host = qs_calloc(e->nlin, sizeof(float));
    TRY(qs_tensor_alloc(e->be, QS_F32, (long)e->nlin, 1, &e->sizes[s].amax, err));
  }
  e->xq = qs_calloc(ncells ? ncells : 1, sizeof *e->xq);
  e->xq_cap = qs_calloc(ncells ? ncells : 1, sizeof *e->xq_cap);
  e->xq_owner = qs_calloc(ncells ? ncells : 1, sizeof *e->xq_owner);
  size_t nslots = (ncells ? ncells : 1) * e->nlin;
  e->score_host = qs_calloc(nslots, sizeof *e->score_host);
  e->score_from = qs_calloc(nslots, sizeof *e->score_from);
  TRY(qs_tensor_alloc(e->be, QS_F64, (long)nslots, 1, &e->score_acc, err));
  e->pad_amax = qs_calloc(e->nlin, sizeof(float));
  e->max_groups = batches->count ? batches->count : 1;
  e->group_init = qs_calloc(e->max_groups, sizeof(float));
  return qs_tensor_alloc(e->be, QS_F32, (long)e->nlin, 1, &e->acc, err) &&
         qs_tensor_alloc(e->be, QS_F32, (long)e->nlin, 1, &e->pad_acc, err) &&
         qs_tensor_alloc(e->be, QS_F32, (long)e->max_groups, 1, &e->head_amax, err) &&
         qs_tensor_alloc(e->be, QS_F32, (long)e->max_groups, 1, &e->dyn_amax, err);
}

static void engine_free(engine *e) {
  for (size_t k = 0; e->wq && k < e->nw; k++) qs_tensor_free(e->be, &e->wq[k]);
  for (size_t s = 0; s < e->nsizes; s++) {
    free(e->sizes[s].amax_host);
    qs_tensor_free(e->be, &e->sizes[s].amax);
  }
  for (size_t i = 0; e->xq && i < e->ncells; i++) qs_tensor_free(e->be, &e->xq[i]);
  qs_tensor_free(e->be, &e->acc);
  qs_tensor_free(e->be, &e->head_amax);
  qs_tensor_free(e->be, &e->pad_acc);
  qs_tensor_free(e->be, &e->dyn_amax);
  qs_tensor_free(e->be, &e->y);
  qs_tensor_free(e->be, &e->score_acc);
  free(e->pad_amax);
  free(e->group_init);
  free(e->xq);
  free(e->xq_cap);
  free(e->xq_owner);
  free(e->score_host);
  free(e->score_from);
  free(e->wq);
  free(e->wq_holds);
  free(e->sizes);
  free(e->wspecs);
  free(e->cells);
  free(e->lin);
  if (e->model) qs_qwen3_destroy(e->model);
}

/* ---- steps and progress ------------------------------------------------ */

static qs_qwen3_batch model_batch(const eng_step *s, long index) {
  qs_qwen3_batch mb = {index,         s->n_seqs,         s->cu_seqlens, s->ids,      s->labels,
                       s->positions, s->attention_mask, (int)s->count, s->group_seq};
  return mb;
}

/* Samples in the first n_logical logical batches. */
static size_t samples_in(const eng_batches *batches, size_t n_logical) {
  size_t n = 0;
  for (size_t i = 0; i < batches->count && batches->items[i].logical < n_logical; i++)
    n += (size_t)batches->items[i].n_seqs;
  return n;
}

/* The rows of a visited tensor (rows [row_begin, row_begin + rows) of the
 * step) that lie in loss group g: [begin, begin + rows) of the tensor. */
typedef struct group_part {
  long begin, rows;
} group_part;

static group_part group_part_of(const eng_step *s, size_t g, long row_begin, long rows) {
  long lo = s->group_rows[g] > row_begin ? s->group_rows[g] : row_begin;
  long hi = s->group_rows[g + 1] < row_begin + rows ? s->group_rows[g + 1] : row_begin + rows;
  group_part p = {lo - row_begin, hi > lo ? hi - lo : 0};
  return p;
}

typedef struct progress {
  const char *phase;
  size_t total, done, samples, samples_total;
  long tokens;
  double t0, loss_sum;
} progress;

/* One line per step; counts are logical batches, the loss their mean. */
static void progress_step(const engine *e, progress *p, const eng_step *s, const qs_qwen3_result *res) {
  p->done += s->count;
  p->samples += (size_t)s->n_seqs;
  p->tokens += s->tokens;
  for (int g = 0; g < res->n_groups; g++) p->loss_sum += res->group_loss[g];
  FILE *f = e->opts->progress;
  if (!f) return;
  double elapsed = now_s() - p->t0;
  double rate = elapsed > 0 ? (double)p->tokens / elapsed : 0.0;
  double eta = p->done ? elapsed / (double)p->done * (double)(p->total - p->done) : 0.0;
  const char *label = e->opts->progress_label;
  fprintf(f, "%s%s%s batch %zu/%zu: %zu/%zu samples, %ld tokens, %.0f tok/s, ETA %.0fs, loss %.4f\n",
          label ? label : "", label ? " " : "", p->phase, p->done, p->total, p->samples, p->samples_total,
          p->tokens, rate, eta, p->loss_sum / (double)p->done);
  fflush(f);
}

/* Step boundaries a phase must keep: where some size's calibration
 * (calib) or scoring ends, so every step is wholly inside or outside each
 * size's batches. Returns the number of cuts in cuts[nsizes] and the
 * largest in *limit. */
static size_t phase_cuts(const engine *e, bool calib, size_t *cuts, size_t *limit) {
  *limit = 0;
  for (size_t s = 0; s < e->nsizes; s++) {
    cuts[s] = calib ? e->sizes[s].steps.n_calib : e->sizes[s].steps.n_score;
    if (cuts[s] > *limit) *limit = cuts[s];
  }
  return e->nsizes;
}

typedef bool (*step_fn)(engine *e, const eng_step *s, size_t step_no, progress *p, qs_error *err);

/* Runs fn over the steps of logical batches [0, limit) of a phase. */
static bool for_each_step(engine *e, const eng_batches *batches, bool calib, const char *phase, step_fn fn,
                          qs_error *err) {
  size_t *cuts = qs_malloc((e->nsizes ? e->nsizes : 1) * sizeof *cuts), limit;
  size_t ncuts = phase_cuts(e, calib, cuts, &limit);
  if (limit > batches->count) limit = batches->count; /* never past the batches laid out */
  progress p = {phase, limit, 0, 0, samples_in(batches, limit), 0, now_s(), 0.0};
  bool ok = true;
  for (size_t first = 0, no = 0; ok && first < limit; no++) {
    size_t end = eng_step_end(batches, first, limit, cuts, ncuts, e->opts->step_tokens);
    eng_step step;
    eng_step_build(batches, first, end, &step);
    ok = fn(e, &step, no, &p, err);
    eng_step_free(&step);
    first = end;
  }
  free(cuts);
  return ok;
}

/* ---- the pad row (packed batches, calib_pad_policy=include) -------------- */

/* The pad token alone, with o_proj's output zeroed: a fully masked
 * attention row outputs 0, so o_proj's input is 0 (no amax) and everything
 * after it is what every pad position of the padded flow computes. */
static bool pad_visit(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y, qs_error *err) {
  engine *e = ctx;
  size_t i = linear_index(e, site);
  if (site->kind == QS_LIN_O) {
    void *zeros = qs_calloc(1, qs_tensor_bytes(y));
    bool ok = qs_tensor_upload(e->be, y, zeros, err);
    free(zeros);
    return ok;
  }
  if (e->lin[i].none_only) return true;
  qs_tensor acc = qs_tensor_rows(&e->pad_acc, (long)i, 1);
  return qs_op_amax_accumulate(e->be, x, &acc, err);
}

static bool any_act_quant(const engine *e) {
  for (size_t i = 0; i < e->ncells; i++)
    if (e->cells[i].act_quant) return true;
  return false;
}

/* The pad token runs through the model as the pad row or in padded rows
 * (where a GPU embedding would read outside the table). */
static bool check_pad_id(const engine *e, const eng_batches *batches, qs_error *err) {
  int32_t pad_id = batches->pad_id;
  if ((!e->pad_row && !batches->padded) || (pad_id >= 0 && pad_id < e->lm->cfg.vocab)) return true;
  if (batches->padded)
    return qs_fail(err, QS_EXIT_USAGE,
                   "dataset.padding=max_length: the pad token id %d is outside the model's vocabulary of %d (set the "
                   "tokenizer's pad token)",
                   pad_id, e->lm->cfg.vocab);
  return qs_fail(err, QS_EXIT_USAGE,
                 "calib_pad_policy=include: the pad token id %d is outside the model's vocabulary of %d (set the "
                 "tokenizer's pad token, or calib_pad_policy=exclude)",
                 pad_id, e->lm->cfg.vocab);
}

static bool measure_pad_row(engine *e, int32_t pad_id, qs_error *err) {
  if (!e->pad_row) return true;
  TRY(qs_tensor_upload(e->be, &e->pad_acc, e->pad_amax, err));
  int32_t cu[2] = {0, 1}, ids[1] = {pad_id};
  qs_qwen3_batch probe = {-1, 1, cu, ids, NULL, NULL, NULL, 0, NULL};
  qs_qwen3_visitor v = {pad_visit, NULL, e->opts->include_lm_head, e};
  qs_qwen3_result res;
  TRY(qs_qwen3_run(e->model, &probe, false, &v, &res, err));
  return qs_tensor_download(e->be, e->pad_amax, &e->pad_acc, err);
}

/* Sets the first n slots of a per-group amax tensor to value. */
static bool init_group_amax(engine *e, qs_tensor *t, size_t n, float value, qs_error *err) {
  for (size_t g = 0; g < n; g++) e->group_init[g] = value;
  qs_tensor head = qs_tensor_rows(t, 0, (long)n);
  return qs_tensor_upload(e->be, &head, e->group_init, err);
}

/* ---- calibration ------------------------------------------------------- */

static bool calib_visit(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y, qs_error *err) {
  (void)y;
  engine *e = ctx;
  size_t i = linear_index(e, site);
  if (e->lin[i].none_only) return true;
  qs_tensor acc = qs_tensor_rows(&e->acc, (long)i, 1);
  return qs_op_amax_accumulate(e->be, x, &acc, err);
}

static bool any_static(const engine *e) {
  for (size_t i = 0; i < e->ncells; i++)
    if (e->cells[i].act_quant && !e->cells[i].dynamic) return true;
  return false;
}

/* Sizes whose calibration ends with the first `end` logical batches take
 * their snapshot (steps never cross such an end). */
static bool snapshot_sizes(engine *e, size_t end, qs_error *err) {
  for (size_t s = 0; s < e->nsizes; s++) {
    eng_size *sz = &e->sizes[s];
    if (sz->steps.n_calib != end) continue;
    TRY(qs_tensor_download(e->be, sz->amax_host, &e->acc, err));
    TRY(qs_tensor_upload(e->be, &sz->amax, sz->amax_host, err));
  }
  return true;
}

static bool calibrate_step(engine *e, const eng_step *s, size_t step_no, progress *p, qs_error *err) {
  qs_qwen3_visitor v = {calib_visit, NULL, e->opts->include_lm_head, e};
  qs_qwen3_batch mb = model_batch(s, (long)step_no);
  qs_qwen3_result res;
  TRY(qs_qwen3_run(e->model, &mb, false, &v, &res, err));
  TRY(snapshot_sizes(e, s->first + s->count, err));
  progress_step(e, p, s, &res);
  return true;
}

static bool calibrate(engine *e, const eng_batches *batches, qs_error *err) {
  TRY(qs_tensor_upload(e->be, &e->acc, e->pad_amax, err));
  return for_each_step(e, batches, true, "calibrate", calibrate_step, err);
}

/* ---- scoring ----------------------------------------------------------- */

/* Every logical batch of a step lies on the same side of each size's end
 * of scoring, so the step's first one decides. */
static bool cell_scores_step(const engine *e, const eng_cell *c) {
  return e->step->first < e->sizes[c->size].steps.n_score;
}

static bool weight_quantized(engine *e, size_t i, size_t k, const qs_tensor **out, qs_error *err) {
  qs_tensor *t = &e->wq[k];
  if (e->wq_holds[k] != i) {
    const qs_tensor *w = e->lin[i].w;
    if (!t->data) TRY(qs_tensor_alloc(e->be, e->be->act_dtype, e->wq_cap, 1, t, err));
    *t = qs_tensor_reshape(t, w->rows, w->cols);
    TRY(qs_op_fake_quant(e->be, &e->wspecs[k], w, NULL, t, err));
    e->wq_holds[k] = i;
  }
  *out = t;
  return true;
}

/* The amax a dynamic cell quantizes group g's rows of Linear i's input
 * with: the group's whole-input amax of the head (visited in chunks), the
 * group's amax with the pad row of a decoder Linear, or NULL (taken from
 * those rows themselves). */
static const qs_tensor *dynamic_amax_tensor(engine *e, size_t i, size_t g, qs_tensor *view) {
  if (e->lin[i].kind == QS_LIN_LM_HEAD) *view = qs_tensor_rows(&e->head_amax, (long)g, 1);
  else if (e->pad_row) *view = qs_tensor_rows(&e->dyn_amax, (long)g, 1);
  else return NULL;
  return view;
}

/* max(pad row, |x| over each group) of a decoder Linear for the dynamic
 * cells of a visit. */
static bool dynamic_amax_with_pads(engine *e, size_t i, const qs_tensor *x, qs_error *err) {
  if (!e->pad_row || e->lin[i].kind == QS_LIN_LM_HEAD) return true;
  bool needed = false;
  for (size_t ci = 0; ci < e->ncells; ci++) needed |= e->cells[ci].dynamic && cell_scores_step(e, &e->cells[ci]);
  if (!needed) return true;
  TRY(init_group_amax(e, &e->dyn_amax, e->step->count, e->pad_amax[i], err));
  for (size_t g = 0; g < e->step->count; g++) {
    group_part part = group_part_of(e->step, g, 0, x->rows);
    qs_tensor rows = qs_tensor_rows(x, part.begin, part.rows), acc = qs_tensor_rows(&e->dyn_amax, (long)g, 1);
    if (part.rows) TRY(qs_op_amax_accumulate(e->be, &rows, &acc, err));
  }
  return true;
}

/* Whether two activation-quantizing cells give Linear i the same FQ_a(X):
 * the same quantizer with an amax from the same x (dynamic) or with equal
 * static amax, bit for bit (sizes often end their calibration with the same
 * max, spec §7.3). */
static bool same_act_quant(const engine *e, const eng_cell *a, const eng_cell *b, size_t i) {
  if (!same_spec(&a->aspec, &b->aspec) || a->dynamic != b->dynamic) return false;
  if (a->dynamic || a->size == b->size) return true;
  float amax_a = e->sizes[a->size].amax_host[i], amax_b = e->sizes[b->size].amax_host[i];
  return memcmp(&amax_a, &amax_b, sizeof amax_a) == 0;
}

/* FQ_a(x) of a cell: one static amax for all rows, or a dynamic amax per
 * loss group (each group is a logical batch of its own). */
static bool fake_quant_act(engine *e, const eng_cell *c, size_t i, const qs_linear_site *site, const qs_tensor *x,
                           qs_tensor *y, qs_error *err) {
  bool takes_amax = qs_fq_amax_count(&c->aspec, x->rows, x->cols) > 0;
  if (!c->dynamic || !takes_amax) {
    qs_tensor view = qs_tensor_rows(&e->sizes[c->size].amax, (long)i, 1);
    return qs_op_fake_quant(e->be, &c->aspec, x, takes_amax ? &view : NULL, y, err);
  }
  for (size_t g = 0; g < e->step->count; g++) {
    group_part part = group_part_of(e->step, g, site->row_begin, x->rows);
    if (!part.rows) continue;
    qs_tensor xg = qs_tensor_rows(x, part.begin, part.rows), yg = qs_tensor_rows(y, part.begin, part.rows), view;
    TRY(qs_op_fake_quant(e->be, &c->aspec, &xg, dynamic_amax_tensor(e, i, g, &view), &yg, err));
  }
  return true;
}

static bool act_quantized(engine *e, const eng_cell *c, size_t i, const qs_linear_site *site, const qs_tensor *x,
                          const qs_tensor **out, qs_error *err) {
  for (size_t k = 0; k < e->nxq; k++) {
    if (same_act_quant(e, e->xq_owner[k], c, i)) {
      *out = &e->xq[k];
      return true;
    }
  }
  size_t k = e->nxq++;
  e->xq_owner[k] = c;
  long n = qs_tensor_numel(x);
  if (e->xq_cap[k] < n) {
    qs_tensor_free(e->be, &e->xq[k]);
    TRY(qs_tensor_alloc(e->be, x->dtype, n, 1, &e->xq[k], err));
    e->xq_cap[k] = n;
  }
  qs_tensor *slot = &e->xq[k];
  *slot = qs_tensor_reshape(slot, x->rows, x->cols);
  TRY(fake_quant_act(e, c, i, site, x, slot, err));
  *out = slot;
  return true;
}

/* Two cells whose W and X quantizers agree for Linear i score it the same
 * in every batch: the weight-only and dynamic pairs of every size, and
 * static ones whose sizes ended calibration with the same amax. */
static bool same_candidate(const engine *e, const eng_cell *a, const eng_cell *b, size_t i) {
  if (a->wq != b->wq || a->act_quant != b->act_quant) return false;
  return !a->act_quant || same_act_quant(e, a, b, i);
}

/* The earliest cell scoring this step that gives Linear i the same score
 * as cell ci (ci itself when none does): its score is reused, so each
 * distinct candidate is computed once per visit, by the same op on the same
 * operands as a cell alone would. */
static size_t score_twin(const engine *e, size_t ci, size_t i) {
  for (size_t k = 0; k < ci; k++)
    if (cell_scores_step(e, &e->cells[k]) && same_candidate(e, &e->cells[k], &e->cells[ci], i)) return k;
  return ci;
}

/* Y = X·Wᵀ in F32 of the visited Linear, made once per visit. */
static bool reference_output(engine *e, size_t i, const qs_tensor *x, const qs_tensor **out, qs_error *err) {
  const qs_tensor *w = e->lin[i].w;
  if (!e->y_ready) {
    long n = x->rows * w->rows;
    if (e->y_cap < n) {
      qs_tensor_free(e->be, &e->y);
      TRY(qs_tensor_alloc(e->be, QS_F32, n, 1, &e->y, err));
      e->y_cap = n;
    }
    e->y = qs_tensor_reshape(&e->y, x->rows, w->rows);
    TRY(qs_op_linear(e->be, x, w, &e->y, false, err));
    e->y_ready = true;
  }
  *out = &e->y;
  return true;
}

/* Adds cell ci's score of Linear i for this visit to its slot. */
static bool candidate_score(engine *e, size_t ci, size_t i, const qs_linear_site *site, const qs_tensor *x,
                            const qs_tensor *g, qs_error *err) {
  const eng_cell *c = &e->cells[ci];
  const qs_tensor *wr, *xr = x, *y;
  TRY(weight_quantized(e, i, c->wq, &wr, err));
  if (c->act_quant) TRY(act_quantized(e, c, i, site, x, &xr, err));
  TRY(reference_output(e, i, x, &y, err));
  return qs_op_quant_score(e->be, xr, wr, y, g, e->opts->precision, &e->score_acc, (long)(ci * e->nlin + i), err);
}

static bool score_visit(void *ctx, const qs_linear_site *site, const qs_tensor *x, const qs_tensor *g,
                        qs_error *err) {
  engine *e = ctx;
  size_t i = linear_index(e, site);
  if (!e->lin[i].scored) return true;
  e->nxq = 0;
  e->y_ready = false;
  TRY(dynamic_amax_with_pads(e, i, x, err));
  for (size_t ci = 0; ci < e->ncells; ci++) {
    if (!cell_scores_step(e, &e->cells[ci])) continue;
    size_t twin = score_twin(e, ci, i);
    e->score_from[ci * e->nlin + i] = twin;
    if (twin == ci) TRY(candidate_score(e, ci, i, site, x, g, err));
  }
  return true;
}

static bool start_step_scores(engine *e, qs_error *err) {
  size_t nslots = e->ncells * e->nlin;
  memset(e->score_host, 0, nslots * sizeof *e->score_host);
  for (size_t k = 0; k < nslots; k++) e->score_from[k] = SIZE_MAX;
  return qs_tensor_upload(e->be, &e->score_acc, e->score_host, err);
}

/* Adds the step's scores into the cells, cell by cell and Linear by
 * Linear (a fixed order, so results are deterministic). */
static bool collect_step_scores(engine *e, qs_error *err) {
  TRY(qs_tensor_download(e->be, e->score_host, &e->score_acc, err));
  for (size_t ci = 0; ci < e->ncells; ci++) {
    for (size_t i = 0; i < e->nlin; i++) {
      size_t from = e->score_from[ci * e->nlin + i];
      if (from == SIZE_MAX) continue;
      double v = e->score_host[from * e->nlin + i];
      if (!isfinite(v)) {
        char name[160];
        return qs_fail(err, QS_EXIT_RUNTIME,
                       "non-finite sensitivity score (%g) of %s for quant_pair %s in score batch %zu", v,
                       linear_name(e, i, name, sizeof name), e->cells[from].pair.name, e->step->first);
      }
      e->cells[ci].req->out->linears[i].raw_scores[0] += v;
    }
  }
  return true;
}

static bool head_amax_visit(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y,
                            qs_error *err) {
  (void)y;
  engine *e = ctx;
  if (site->kind != QS_LIN_LM_HEAD) return true;
  for (size_t g = 0; g < e->step->count; g++) {
    group_part part = group_part_of(e->step, g, site->row_begin, x->rows);
    qs_tensor rows = qs_tensor_rows(x, part.begin, part.rows), acc = qs_tensor_rows(&e->head_amax, (long)g, 1);
    if (part.rows) TRY(qs_op_amax_accumulate(e->be, &rows, &acc, err));
  }
  return true;
}

/* A dynamic amax of the head must cover each group's whole input, but the
 * head is visited in chunks whose gradients come before later chunks'
 * inputs, so a forward-only pre-pass collects it first. */
static bool needs_head_prepass(const engine *e) {
  if (!e->opts->include_lm_head || !e->lin[e->nlin - 1].scored) return false;
  for (size_t i = 0; i < e->ncells; i++)
    if (e->cells[i].dynamic && qs_fq_amax_count(&e->cells[i].aspec, 1, 1) > 0) return true;
  return false;
}

static bool head_prepass(engine *e, const qs_qwen3_batch *mb, qs_error *err) {
  TRY(init_group_amax(e, &e->head_amax, e->step->count, e->pad_amax[e->nlin - 1], err));
  qs_qwen3_visitor v = {head_amax_visit, NULL, true, e};
  qs_qwen3_result res;
  return qs_qwen3_run(e->model, mb, false, &v, &res, err);
}

/* Each cell's baseline loss is the mean over its score batches of each
 * logical batch's loss: one loss group each. */
static void add_baseline_losses(engine *e, const qs_qwen3_result *res) {
  for (size_t ci = 0; ci < e->ncells; ci++) {
    if (!cell_scores_step(e, &e->cells[ci])) continue;
    for (int g = 0; g < res->n_groups; g++) e->cells[ci].loss_sum += res->group_loss[g];
    e->cells[ci].loss_batches += (size_t)res->n_groups;
  }
}

static bool score_step(engine *e, const eng_step *s, size_t step_no, progress *p, qs_error *err) {
  e->step = s;
  e->step_no = step_no;
  qs_qwen3_batch mb = model_batch(s, (long)step_no);
  if (needs_head_prepass(e)) TRY(head_prepass(e, &mb, err));
  qs_qwen3_visitor v = {NULL, score_visit, e->opts->include_lm_head, e};
  qs_qwen3_result res;
  TRY(start_step_scores(e, err));
  TRY(qs_qwen3_run(e->model, &mb, true, &v, &res, err));
  TRY(collect_step_scores(e, err));
  add_baseline_losses(e, &res);
  progress_step(e, p, s, &res);
  return true;
}

static bool score(engine *e, const eng_batches *batches, qs_error *err) {
  return for_each_step(e, batches, false, "score", score_step, err);
}

/* ---- cells ------------------------------------------------------------- */

static const char *mx_rule_name(qs_mx_rule r) { return r == QS_MX_NV_CEIL ? "nv_ceil" : "ocp_floor"; }

static void describe_cell(const engine *e, const eng_cell *c, const eng_batches *batches) {
  qs_cell *out = c->req->out;
  const qs_engine_options *o = e->opts;
  out->run.nvfp4_effective_bits = o->nvfp4_effective_bits;
  qs_cell_set_pair(out, &c->pair, 0, c->dynamic);
  for (size_t i = 0; i < e->nlin; i++) {
    char name[160];
    qs_cell_linear *l = qs_cell_add_linear(out, linear_name(e, i, name, sizeof name), qs_tensor_numel(e->lin[i].w));
    l->none_only = e->lin[i].none_only;
    l->weight_amax = c->pair.weight->weight_amax == QS_GRAN_NONE ? NAN : e->lin[i].wmax;
  }
  qs_cell_run *run = &out->run;
  qs_cell_set_str(&run->precision_mode, o->precision == QS_DELTA_MODELOPT ? "modelopt" : "accurate");
  qs_cell_set_str(&run->grad_dtype,
                  o->precision == QS_DELTA_MODELOPT || e->be->act_dtype == QS_BF16 ? "bfloat16" : "float32");
  qs_cell_set_str(&run->mx_scale_rule, mx_rule_name(o->mx_rule));
  run->nvfp4_w4a8_block = o->nvfp4_w4a8_block;
  run->include_lm_head = o->include_lm_head;
  qs_cell_set_str(&run->name_style, o->name_style == QS_NAMES_HF ? "hf" : "seed");
  run->batch_size = (long long)batches->batch_size;
  run->seq_len = (long long)batches->max_length;
  const eng_size *sz = &e->sizes[c->size];
  run->num_calib_steps = (long long)sz->steps.n_calib;
  run->num_score_steps = (long long)sz->steps.n_score;
  out->nsamples = sz->n_samples;
  out->sample_tokens = qs_malloc(sz->n_samples * sizeof(int));
  for (size_t s = 0; s < sz->n_samples; s++) out->sample_tokens[s] = (int)batches->sample_tokens[s];
}

static void finish_cell(const engine *e, const eng_cell *c, double calib_s, double score_s) {
  qs_cell *out = c->req->out;
  for (size_t i = 0; i < e->nlin; i++)
    if (c->act_quant && !c->dynamic && !e->lin[i].none_only)
      out->linears[i].input_amax[0] = e->sizes[c->size].amax_host[i];
  out->baseline_loss = c->loss_batches ? c->loss_sum / (double)c->loss_batches : NAN;
  out->timings.calibrate_s = calib_s;
  out->timings.score_s = score_s;
}

static bool run_pass(engine *e, const qs_engine_data *data, qs_engine_cell *cells, size_t ncells,
                     eng_batches *batches, qs_error *err) {
  size_t n_samples = 0;
  for (size_t i = 0; i < ncells; i++)
    if (cells[i].n_samples > n_samples) n_samples = cells[i].n_samples;
  if (n_samples > data->n_seqs)
    return qs_fail(err, QS_EXIT_USAGE, "a dataset size of %zu samples, but only %zu samples were given", n_samples,
                   data->n_seqs);
  const qs_engine_options *o = e->opts;
  if (o->layer_slices > 1 && (o->layer_slice < 0 || o->layer_slice >= o->layer_slices))
    return qs_fail(err, QS_EXIT_USAGE, "layer slice %d is not in [0, %d)", o->layer_slice, o->layer_slices);
  if (data->batch->padding == QS_PADDING_MAX_LENGTH && o->calib_pad_policy == QS_CALIB_PADS_EXCLUDE)
    return qs_fail(err, QS_EXIT_USAGE,
                   "dataset.calib_pad_policy=exclude needs dataset.padding=packed: with dataset.padding=max_length "
                   "the pads are rows of every batch and enter the activation amax");
  TRY(eng_batches_build(data->seqs, n_samples, data->batch, batches, err));
  qs_qwen3_options mo = {false, e->opts->lm_chunk_tokens};
  TRY(qs_qwen3_create(e->be, e->lm, &mo, &e->model, err));
  TRY(setup_linears(e, err));
  TRY(setup_cells(e, cells, ncells, batches, data->n_seqs, err));
  e->pad_row = !batches->padded && o->calib_pad_policy == QS_CALIB_PADS_INCLUDE && any_act_quant(e);
  TRY(check_pad_id(e, batches, err));
  for (size_t i = 0; i < e->ncells; i++) describe_cell(e, &e->cells[i], batches);
  double t0 = now_s();
  TRY(measure_pad_row(e, batches->pad_id, err));
  TRY(!any_static(e) || calibrate(e, batches, err));
  double t1 = now_s();
  TRY(score(e, batches, err));
  double t2 = now_s();
  for (size_t i = 0; i < e->ncells; i++) finish_cell(e, &e->cells[i], t1 - t0, t2 - t1);
  return true;
}

bool qs_engine_run_pass(qs_backend *be, const qs_lm *lm, const qs_engine_data *data, qs_engine_cell *cells,
                        size_t ncells, const qs_engine_options *opts, qs_error *err) {
  engine e;
  memset(&e, 0, sizeof e);
  e.be = be;
  e.lm = lm;
  e.opts = opts;
  eng_batches batches;
  memset(&batches, 0, sizeof batches);
  bool ok = run_pass(&e, data, cells, ncells, &batches, err);
  engine_free(&e);
  eng_batches_free(&batches);
  return ok;
}
