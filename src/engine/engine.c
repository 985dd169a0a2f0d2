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

#define TRY(x) \
  do {         \
    if (!(x)) return false; \
  } while (0)

/* Linears of a decoder layer in module order (q, k, v, o, gate, up, down). */
#define LINEARS_PER_LAYER 7

typedef struct eng_linear {
  int layer; /* -1: lm_head */
  qs_linear_kind kind;
  qs_tensor w;    /* imported weight [out, in] */
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
  eng_linear *lin;
  size_t nlin;
  eng_cell *cells;
  size_t ncells;
  qs_fq_spec *wspecs; /* distinct weight quantizers */
  size_t nw;
  qs_tensor *wcache;  /* [nlin * nw] FQ_w(W), computed on first use */
  eng_size *sizes;
  size_t nsizes;
  qs_tensor acc;       /* [nlin, 1] running calibration amax */
  qs_tensor head_amax; /* [1, 1] dynamic amax of the whole lm_head input of a batch */
  float *pad_amax;     /* [nlin] input amax of the pad row (0: pads excluded) */
  qs_tensor pad_acc;   /* [nlin, 1] its accumulators */
  qs_tensor dyn_amax;  /* [1, 1] a decoder Linear's dynamic amax with the pad row */
  /* Per-visit activation slots (capacity xq_cap elements each), each shared
   * by the cells that quantize X like the cell that filled it. */
  qs_tensor *xq;
  long *xq_cap;
  const eng_cell **xq_owner;
  size_t nxq;          /* slots filled in the current visit */
  double *visit_score; /* [ncells] each cell's score of the Linear being visited */
  const eng_batch *batch;
  size_t batch_no;
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

static double abs_max_bf16(const qs_bf16 *w, long n) {
  float m = 0.0f;
  for (long i = 0; i < n; i++) {
    float v = fabsf(qs_bf16_to_f32(w[i]));
    if (v > m || v != v) m = v;
  }
  return m;
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

static bool setup_linears(engine *e, qs_error *err) {
  int layers = e->lm->cfg.layers;
  e->nlin = (size_t)layers * LINEARS_PER_LAYER + (e->opts->include_lm_head ? 1 : 0);
  e->lin = qs_calloc(e->nlin, sizeof *e->lin);
  for (size_t i = 0; i < e->nlin; i++) {
    eng_linear *l = &e->lin[i];
    l->layer = i < (size_t)layers * LINEARS_PER_LAYER ? (int)(i / LINEARS_PER_LAYER) : -1;
    l->kind = l->layer < 0 ? QS_LIN_LM_HEAD : (qs_linear_kind)(i % LINEARS_PER_LAYER);
    int out, in;
    const qs_bf16 *w = qs_lm_linear_weight(e->lm, l->layer, l->kind, &out, &in);
    TRY(qs_tensor_import(e->be, w, QS_BF16, out, in, &l->w, err));
    l->wmax = abs_max_bf16(w, (long)out * in);
    char name[160];
    l->none_only = is_disabled(e->opts, linear_name(e, i, name, sizeof name));
    l->scored = !l->none_only && in_layer_slice(e->opts, l->layer < 0 ? layers : l->layer);
  }
  return check_group_agreement(e, err);
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
    if (e->lin[i].none_only || e->lin[i].w.cols % block == 0) continue;
    char name[160];
    return qs_fail(err, QS_EXIT_USAGE, "quant_pair %s: %s has %ld input features, not a whole number of %s's %d-element blocks",
                   pair->name, linear_name(e, i, name, sizeof name), e->lin[i].w.cols, spec->format->name, block);
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
  e->wcache = qs_calloc(e->nlin * (e->nw ? e->nw : 1), sizeof *e->wcache);
  for (size_t s = 0; s < e->nsizes; s++) {
    e->sizes[s].steps = eng_size_steps_for(batches, e->sizes[s].n_samples);
    e->sizes[s].amax_host = qs_calloc(e->nlin, sizeof(float));
    TRY(qs_tensor_alloc(e->be, QS_F32, (long)e->nlin, 1, &e->sizes[s].amax, err));
  }
  e->xq = qs_calloc(ncells ? ncells : 1, sizeof *e->xq);
  e->xq_cap = qs_calloc(ncells ? ncells : 1, sizeof *e->xq_cap);
  e->xq_owner = qs_calloc(ncells ? ncells : 1, sizeof *e->xq_owner);
  e->visit_score = qs_calloc(ncells ? ncells : 1, sizeof *e->visit_score);
  e->pad_amax = qs_calloc(e->nlin, sizeof(float));
  return qs_tensor_alloc(e->be, QS_F32, (long)e->nlin, 1, &e->acc, err) &&
         qs_tensor_alloc(e->be, QS_F32, (long)e->nlin, 1, &e->pad_acc, err) &&
         qs_tensor_alloc(e->be, QS_F32, 1, 1, &e->head_amax, err) &&
         qs_tensor_alloc(e->be, QS_F32, 1, 1, &e->dyn_amax, err);
}

static void engine_free(engine *e) {
  for (size_t i = 0; e->wcache && i < e->nlin * e->nw; i++) qs_tensor_free(e->be, &e->wcache[i]);
  for (size_t i = 0; i < e->nlin; i++) qs_tensor_unimport(e->be, &e->lin[i].w);
  for (size_t s = 0; s < e->nsizes; s++) {
    free(e->sizes[s].amax_host);
    qs_tensor_free(e->be, &e->sizes[s].amax);
  }
  for (size_t i = 0; e->xq && i < e->ncells; i++) qs_tensor_free(e->be, &e->xq[i]);
  qs_tensor_free(e->be, &e->acc);
  qs_tensor_free(e->be, &e->head_amax);
  qs_tensor_free(e->be, &e->pad_acc);
  qs_tensor_free(e->be, &e->dyn_amax);
  free(e->pad_amax);
  free(e->xq);
  free(e->xq_cap);
  free(e->xq_owner);
  free(e->visit_score);
  free(e->wcache);
  free(e->sizes);
  free(e->wspecs);
  free(e->cells);
  free(e->lin);
}

/* ---- batches and progress ---------------------------------------------- */

static qs_qwen3_batch model_batch(const eng_batch *b, long index) {
  qs_qwen3_batch mb = {index, b->n_seqs, b->cu_seqlens, b->ids, b->labels, NULL};
  return mb;
}

/* Samples in the first n_logical logical batches. */
static size_t samples_in(const eng_batches *batches, size_t n_logical) {
  size_t n = 0;
  for (size_t i = 0; i < batches->count && batches->items[i].logical < n_logical; i++)
    n += (size_t)batches->items[i].n_seqs;
  return n;
}

typedef struct progress {
  const char *phase;
  size_t total, done, samples, samples_total;
  long tokens;
  double t0, loss_sum;
} progress;

static void progress_step(const engine *e, progress *p, const eng_batch *b, double loss) {
  p->done++;
  p->samples += (size_t)b->n_seqs;
  p->tokens += b->tokens;
  p->loss_sum += loss;
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

/* ---- the pad row (calib_pad_policy=include) ------------------------------ */

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

static bool measure_pad_row(engine *e, qs_qwen3 *model, int32_t pad_id, qs_error *err) {
  if (e->opts->calib_pad_policy != QS_CALIB_PADS_INCLUDE || !any_act_quant(e)) return true;
  if (pad_id < 0 || pad_id >= e->lm->cfg.vocab)
    return qs_fail(err, QS_EXIT_USAGE,
                   "calib_pad_policy=include: the pad token id %d is outside the model's vocabulary of %d (set the "
                   "tokenizer's pad token, or calib_pad_policy=exclude)",
                   pad_id, e->lm->cfg.vocab);
  TRY(qs_tensor_upload(e->be, &e->pad_acc, e->pad_amax, err));
  int32_t cu[2] = {0, 1}, ids[1] = {pad_id};
  qs_qwen3_batch probe = {-1, 1, cu, ids, NULL, NULL};
  qs_qwen3_visitor v = {pad_visit, NULL, e->opts->include_lm_head, e};
  qs_qwen3_result res;
  TRY(qs_qwen3_run(model, &probe, false, &v, &res, err));
  return qs_tensor_download(e->be, e->pad_amax, &e->pad_acc, err);
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

/* Sizes whose calibration ends with logical batch `logical` take their snapshot. */
static bool snapshot_sizes(engine *e, size_t logical, qs_error *err) {
  for (size_t s = 0; s < e->nsizes; s++) {
    eng_size *sz = &e->sizes[s];
    if (sz->steps.n_calib != logical + 1) continue;
    TRY(qs_tensor_download(e->be, sz->amax_host, &e->acc, err));
    TRY(qs_tensor_upload(e->be, &sz->amax, sz->amax_host, err));
  }
  return true;
}

static bool calibrate(engine *e, qs_qwen3 *model, const eng_batches *batches, qs_error *err) {
  size_t n_calib = 0;
  for (size_t s = 0; s < e->nsizes; s++)
    if (e->sizes[s].steps.n_calib > n_calib) n_calib = e->sizes[s].steps.n_calib;
  TRY(qs_tensor_upload(e->be, &e->acc, e->pad_amax, err));
  qs_qwen3_visitor v = {calib_visit, NULL, e->opts->include_lm_head, e};
  progress p = {"calibrate", n_calib, 0, 0, samples_in(batches, n_calib), 0, now_s(), 0.0};
  for (size_t i = 0; i < batches->count && batches->items[i].logical < n_calib; i++) {
    const eng_batch *b = &batches->items[i];
    qs_qwen3_batch mb = model_batch(b, (long)i);
    qs_qwen3_result res;
    TRY(qs_qwen3_run(model, &mb, false, &v, &res, err));
    TRY(snapshot_sizes(e, b->logical, err));
    progress_step(e, &p, b, res.loss);
  }
  return true;
}

/* ---- scoring ----------------------------------------------------------- */

static bool cell_scores_batch(const engine *e, const eng_cell *c, size_t logical) {
  return logical < e->sizes[c->size].steps.n_score;
}

static bool weight_quantized(engine *e, size_t i, size_t wq, const qs_tensor **out, qs_error *err) {
  qs_tensor *t = &e->wcache[i * e->nw + wq];
  if (!t->data) {
    const qs_tensor *w = &e->lin[i].w;
    TRY(qs_tensor_alloc(e->be, QS_BF16, w->rows, w->cols, t, err));
    TRY(qs_op_fake_quant(e->be, &e->wspecs[wq], w, NULL, t, err));
  }
  *out = t;
  return true;
}

/* The static amax of a cell's size for Linear i, the whole-batch dynamic
 * amax of the head (visited in chunks), or NULL (taken from x itself). */
static const qs_tensor *act_amax_tensor(engine *e, const eng_cell *c, size_t i, const qs_tensor *x,
                                        qs_tensor *view) {
  if (qs_fq_amax_count(&c->aspec, x->rows, x->cols) == 0) return NULL;
  if (!c->dynamic) {
    *view = qs_tensor_rows(&e->sizes[c->size].amax, (long)i, 1);
    return view;
  }
  if (e->lin[i].kind == QS_LIN_LM_HEAD) return &e->head_amax;
  return e->opts->calib_pad_policy == QS_CALIB_PADS_INCLUDE ? &e->dyn_amax : NULL;
}

/* max(pad row, |x|) of a decoder Linear for the dynamic cells of a visit. */
static bool dynamic_amax_with_pads(engine *e, size_t i, const qs_tensor *x, qs_error *err) {
  if (e->opts->calib_pad_policy != QS_CALIB_PADS_INCLUDE || e->lin[i].kind == QS_LIN_LM_HEAD) return true;
  bool needed = false;
  for (size_t ci = 0; ci < e->ncells; ci++)
    needed |= e->cells[ci].dynamic && cell_scores_batch(e, &e->cells[ci], e->batch->logical);
  if (!needed) return true;
  TRY(qs_tensor_upload(e->be, &e->dyn_amax, &e->pad_amax[i], err));
  return qs_op_amax_accumulate(e->be, x, &e->dyn_amax, err);
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

static bool act_quantized(engine *e, const eng_cell *c, size_t i, const qs_tensor *x, const qs_tensor **out,
                          qs_error *err) {
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
  qs_tensor view;
  TRY(qs_op_fake_quant(e->be, &c->aspec, x, act_amax_tensor(e, c, i, x, &view), slot, err));
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

/* The earliest cell scoring this batch that gives Linear i the same score
 * as cell ci (ci itself when none does): its score is reused, so each
 * distinct candidate is computed once per visit, by the same op on the same
 * operands as a cell alone would. */
static size_t score_twin(const engine *e, size_t ci, size_t i) {
  for (size_t k = 0; k < ci; k++)
    if (cell_scores_batch(e, &e->cells[k], e->batch->logical) && same_candidate(e, &e->cells[k], &e->cells[ci], i))
      return k;
  return ci;
}

static bool candidate_score(engine *e, const eng_cell *c, size_t i, const qs_tensor *x, const qs_tensor *g,
                            double *s, qs_error *err) {
  const qs_tensor *wq, *xq = NULL;
  TRY(weight_quantized(e, i, c->wq, &wq, err));
  if (c->act_quant) TRY(act_quantized(e, c, i, x, &xq, err));
  TRY(qs_op_quant_score(e->be, x, xq, &e->lin[i].w, wq, g, e->opts->precision, s, err));
  if (isfinite(*s)) return true;
  char name[160];
  return qs_fail(err, QS_EXIT_RUNTIME, "non-finite sensitivity score (%g) of %s for quant_pair %s in score batch %zu",
                 *s, linear_name(e, i, name, sizeof name), c->pair.name, e->batch_no);
}

static bool score_visit(void *ctx, const qs_linear_site *site, const qs_tensor *x, const qs_tensor *g,
                        qs_error *err) {
  engine *e = ctx;
  size_t i = linear_index(e, site);
  if (!e->lin[i].scored) return true;
  e->nxq = 0;
  TRY(dynamic_amax_with_pads(e, i, x, err));
  for (size_t ci = 0; ci < e->ncells; ci++) {
    eng_cell *c = &e->cells[ci];
    if (!cell_scores_batch(e, c, e->batch->logical)) continue;
    size_t twin = score_twin(e, ci, i);
    if (twin == ci) TRY(candidate_score(e, c, i, x, g, &e->visit_score[ci], err));
    else e->visit_score[ci] = e->visit_score[twin];
    c->req->out->linears[i].raw_scores[0] += e->visit_score[ci];
  }
  return true;
}

static bool head_amax_visit(void *ctx, const qs_linear_site *site, const qs_tensor *x, qs_tensor *y,
                            qs_error *err) {
  (void)y;
  engine *e = ctx;
  if (site->kind != QS_LIN_LM_HEAD) return true;
  return qs_op_amax_accumulate(e->be, x, &e->head_amax, err);
}

/* A dynamic amax of the head must cover the whole batch, but the head is
 * visited in chunks whose gradients come before later chunks' inputs, so a
 * forward-only pre-pass collects it first. */
static bool needs_head_prepass(const engine *e) {
  if (!e->opts->include_lm_head || !e->lin[e->nlin - 1].scored) return false;
  for (size_t i = 0; i < e->ncells; i++)
    if (e->cells[i].dynamic && qs_fq_amax_count(&e->cells[i].aspec, 1, 1) > 0) return true;
  return false;
}

static bool head_prepass(engine *e, qs_qwen3 *model, const qs_qwen3_batch *mb, qs_error *err) {
  TRY(qs_tensor_upload(e->be, &e->head_amax, &e->pad_amax[e->nlin - 1], err));
  qs_qwen3_visitor v = {head_amax_visit, NULL, true, e};
  qs_qwen3_result res;
  return qs_qwen3_run(model, mb, false, &v, &res, err);
}

static bool score(engine *e, qs_qwen3 *model, const eng_batches *batches, qs_error *err) {
  size_t n_score = 0;
  for (size_t s = 0; s < e->nsizes; s++)
    if (e->sizes[s].steps.n_score > n_score) n_score = e->sizes[s].steps.n_score;
  qs_qwen3_visitor v = {NULL, score_visit, e->opts->include_lm_head, e};
  bool prepass = needs_head_prepass(e);
  progress p = {"score", n_score, 0, 0, samples_in(batches, n_score), 0, now_s(), 0.0};
  for (size_t i = 0; i < batches->count && batches->items[i].logical < n_score; i++) {
    const eng_batch *b = &batches->items[i];
    e->batch = b;
    e->batch_no = i;
    qs_qwen3_batch mb = model_batch(b, (long)i);
    if (prepass) TRY(head_prepass(e, model, &mb, err));
    qs_qwen3_result res;
    TRY(qs_qwen3_run(model, &mb, true, &v, &res, err));
    for (size_t ci = 0; ci < e->ncells; ci++) {
      if (!cell_scores_batch(e, &e->cells[ci], b->logical)) continue;
      e->cells[ci].loss_sum += res.loss;
      e->cells[ci].loss_batches++;
    }
    progress_step(e, &p, b, res.loss);
  }
  return true;
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
    qs_cell_linear *l = qs_cell_add_linear(out, linear_name(e, i, name, sizeof name), qs_tensor_numel(&e->lin[i].w));
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
  TRY(eng_batches_build(data->seqs, n_samples, data->batch, batches, err));
  TRY(setup_linears(e, err));
  TRY(setup_cells(e, cells, ncells, batches, data->n_seqs, err));
  for (size_t i = 0; i < e->ncells; i++) describe_cell(e, &e->cells[i], batches);
  qs_qwen3_options mo = {false, e->opts->lm_chunk_tokens};
  qs_qwen3 *model = NULL;
  TRY(qs_qwen3_create(e->be, e->lm, &mo, &model, err));
  double t0 = now_s();
  bool ok = measure_pad_row(e, model, batches->pad_id, err);
  ok = ok && (!any_static(e) || calibrate(e, model, batches, err));
  double t1 = now_s();
  ok = ok && score(e, model, batches, err);
  double t2 = now_s();
  qs_qwen3_destroy(model);
  for (size_t i = 0; ok && i < e->ncells; i++) finish_cell(e, &e->cells[i], t1 - t0, t2 - t1);
  return ok;
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
