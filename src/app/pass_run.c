/* A pass on its owner rank: load the checkpoint, the tokenizer and the
 * captions once, score every cell of the pass in one engine run, finish each
 * cell at its job's budget, and pack it (state text + measurements) with the
 * job's log and run record for rank 0, which alone writes files. */
#define _POSIX_C_SOURCE 200809L
#include "app/pass_run.h"

#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "backend/cpu/cpu_backend.h"
#include "config/yaml.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "engine/memory_plan.h"
#include "model/checkpoint.h"
#include "report/artifacts.h"
#include "text/tokenizer.h"
#ifdef QSENS_HAVE_CUDA
#include "kernels/cuda_backend.h"
#endif

#define PAD_TOKEN "<|endoftext|>"

typedef struct pass_inputs {
  qs_lm lm;
  bool lm_loaded;
  char checkpoint_md5[40]; /* "md5:<hex>" */
  qs_sample_list samples;  /* the pass's samples: the largest size's */
  qs_token_seq *seqs;
  char (*captions_md5)[33]; /* per job of the pass: md5 of the file it names */
  int32_t pad_id;
  qs_backend *be;
  const char *backend_name;
  double load_s;
  long step_tokens;        /* tokens per forward/backward step (memory plan) */
  size_t planned_bytes;    /* the plan's total for the pass's largest step */
} pass_inputs;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void iso_now(char *buf, size_t size) {
  time_t t = time(NULL);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(buf, size, "%Y-%m-%dT%H:%M:%S%z", &tm);
}

/* ---- inputs -------------------------------------------------------------- */

static bool md5_file(const char *path, char hex[33], qs_error *err) {
  char *data;
  size_t len;
  if (!qs_read_file(path, &data, &len, err)) return false;
  qs_md5_hex(data, len, hex);
  free(data);
  return true;
}

/* A sharded checkpoint is identified by its index (which names every tensor
 * and shard), a single-file one by the file itself. */
static bool checkpoint_checksum(const char *dir, char out[40], qs_error *err) {
  char *index = qs_path_join(dir, "model.safetensors.index.json");
  char *single = qs_path_join(dir, "model.safetensors");
  char hex[33];
  bool ok = md5_file(qs_is_file(index) ? index : single, hex, err);
  if (ok) snprintf(out, 40, "md5:%s", hex);
  free(index);
  free(single);
  return ok;
}

static void log_warning(void *ctx, const char *message) { qs_job_log(ctx, "WARNING", "%s", message); }

static bool load_model(const qs_job_settings *s, pass_inputs *in, qs_strbuf *log, qs_error *err) {
  if (!qs_is_dir(s->model_path))
    return qs_fail(err, QS_EXIT_RUNTIME, "model.path '%s' is not a directory", s->model_path);
  if (!qs_checkpoint_load(s->model_path, &in->lm, log_warning, log, err)) return false;
  in->lm_loaded = true;
  const qs_lm_config *c = &in->lm.cfg;
  qs_job_log(log, "INFO",
             "model %s: %s: %d layers, hidden %d, intermediate %d, heads %d/%d (head_dim %d), vocab %d, %s head",
             s->model_name, s->model_path, c->layers, c->hidden, c->intermediate, c->heads, c->kv_heads, c->head_dim,
             c->vocab, c->tied ? "tied" : "untied");
  return checkpoint_checksum(s->model_path, in->checkpoint_md5, err);
}

static bool load_tokenizer(const qs_job_settings *s, pass_inputs *in, qs_error *err) {
  char *path = qs_path_join(s->model_path, "tokenizer.json");
  qs_tokenizer *tok = NULL;
  bool ok = qs_tokenizer_load(path, &tok, err);
  if (ok) {
    /* The padded reference flow pads with <|endoftext|>; the engine runs one
     * such pad row for the activation amax (calib_pad_policy=include). */
    in->pad_id = qs_tokenizer_token_id(tok, PAD_TOKEN);
    if (in->pad_id < 0) ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: no %s token to pad with", path, PAD_TOKEN);
  }
  if (ok && !in->samples.pretokenized) ok = qs_sample_list_tokenize(&in->samples, tok, err);
  if (ok) ok = qs_sample_list_check_ids(&in->samples, (size_t)in->lm.cfg.vocab, err);
  qs_tokenizer_free(tok);
  free(path);
  return ok;
}

static bool read_captions(const qs_job_settings *s, qs_sample_list *out, char md5[33], qs_error *err) {
  char *data;
  size_t len;
  if (!qs_read_file(s->captions_path, &data, &len, err)) return false;
  qs_md5_hex(data, len, md5);
  qs_caption_source src = {
      .path = s->captions_path, .format = s->captions_format, .text_key = s->text_field, .limit = s->n_samples};
  bool ok = qs_captions_parse(&src, data, len, out, err);
  free(data);
  return ok;
}

static bool same_sample(const qs_sample *a, const qs_sample *b) {
  if (a->text || b->text) return a->text && b->text && strcmp(a->text, b->text) == 0;
  return a->n_ids == b->n_ids && memcmp(a->ids, b->ids, a->n_ids * sizeof *a->ids) == 0;
}

/* The sizes of a pass are snapshots of one sample stream, so every job's
 * captions must be a prefix of the pass's (the largest size's) captions. */
static bool check_prefix(const qs_job_settings *s, const qs_job_settings *largest, const qs_sample_list *mine,
                         const qs_sample_list *all, qs_error *err) {
  for (size_t i = 0; i < mine->count; i++)
    if (!same_sample(&mine->items[i], &all->items[i]))
      return qs_fail(err, QS_EXIT_USAGE,
                     "dataset: sample %zu of %s differs from sample %zu of %s; the dataset sizes of one sweep must "
                     "be prefixes of each other",
                     i + 1, s->captions_path, i + 1, largest->captions_path);
  return true;
}

static bool load_captions(const qs_job_settings *settings, const qs_pass *pass, size_t largest, pass_inputs *in,
                          qs_strbuf *log, qs_error *err) {
  const qs_job_settings *big = &settings[pass->jobs[largest]];
  in->captions_md5 = qs_calloc(pass->njobs, sizeof *in->captions_md5);
  if (!read_captions(big, &in->samples, in->captions_md5[largest], err)) return false;
  qs_job_log(log, "INFO", "dataset %s: %zu samples from %s (the pass's largest size, %s)", big->dataset_name,
             in->samples.count, big->captions_path, big->dataset_size);
  for (size_t k = 0; k < pass->njobs; k++) {
    if (k == largest) continue;
    const qs_job_settings *s = &settings[pass->jobs[k]];
    qs_sample_list mine = {0};
    bool ok = read_captions(s, &mine, in->captions_md5[k], err) && check_prefix(s, big, &mine, &in->samples, err);
    qs_sample_list_free(&mine);
    if (!ok) return false;
  }
  return true;
}

/* backend.threads sets OpenBLAS's threads too: its GEMM results depend on
 * the thread count, so pinning both makes CPU scores reproducible across
 * machines and rank layouts (mpirun binds a rank to fewer cores). */
static void set_cpu_threads(int threads) {
  if (threads <= 0) return;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

static bool open_backend(const qs_dist *d, const qs_job_settings *s, pass_inputs *in, qs_error *err) {
  set_cpu_threads(s->threads);
#ifdef QSENS_HAVE_CUDA
  if (s->backend == QS_BACKEND_AUTO || s->backend == QS_BACKEND_CUDA) {
    qs_error cuda_err = {0};
    in->be = qs_cuda_backend_new(d->local_rank, &cuda_err);
    if (in->be) {
      in->backend_name = "cuda";
      return true;
    }
    if (s->backend == QS_BACKEND_CUDA) return qs_fail(err, QS_EXIT_RUNTIME, "backend.name=cuda: %s", cuda_err.msg);
  }
#else
  (void)d;
  if (s->backend == QS_BACKEND_CUDA)
    return qs_fail(err, QS_EXIT_USAGE, "config key 'backend.name': cuda, but this qsens was built without CUDA");
#endif
  bool bf16 = s->backend == QS_BACKEND_CPU_BF16;
  in->be = bf16 ? qs_cpu_backend_new_bf16() : qs_cpu_backend_new();
  in->backend_name = bf16 ? "cpu_bf16" : "cpu";
  return true;
}

static bool load_inputs(const qs_dist *d, const qs_job_settings *settings, const qs_pass *pass, size_t largest,
                        pass_inputs *in, qs_strbuf *log, qs_error *err) {
  const qs_job_settings *s = &settings[pass->jobs[largest]];
  double t0 = now_s();
  bool ok = load_model(s, in, log, err) && load_captions(settings, pass, largest, in, log, err) &&
            load_tokenizer(s, in, err) && qs_token_seqs_from_samples(&in->samples, &in->seqs, err) &&
            open_backend(d, s, in, err);
  in->load_s = now_s() - t0;
  if (ok)
    qs_job_log(log, "INFO", "backend %s (%d OpenMP thread%s), %zu cell%s in this pass", in->backend_name,
               omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s", pass->njobs, pass->njobs == 1 ? "" : "s");
  return ok;
}

/* ---- memory plan ------------------------------------------------------------ */

static const double GIB = 1024.0 * 1024.0 * 1024.0;

/* The plan's inputs: the model's shape, the backend's activation width and
 * the quantizers of the pass's cells. */
static qs_memory_request memory_request(const qs_job_settings *settings, const qs_pass *pass, const pass_inputs *in) {
  const qs_job_settings *first = &settings[pass->jobs[0]];
  qs_memory_request r = {&in->lm.cfg, qs_dtype_size(in->be->act_dtype), false, first->engine.lm_chunk_tokens,
                         first->engine.include_lm_head, 0, 0};
  qs_memory_cell *cells = qs_calloc(pass->njobs, sizeof *cells);
  for (size_t k = 0; k < pass->njobs; k++) {
    const qs_job_settings *s = &settings[pass->jobs[k]];
    cells[k] = (qs_memory_cell){s->pair.weight, s->pair.act, s->act_amax == QS_ACT_AMAX_DYNAMIC, s->n_samples};
  }
  qs_memory_count_quantizers(cells, pass->njobs, &r);
  free(cells);
  return r;
}

/* Tokens of the pass's samples, each cut at the sequence length. */
static long pass_tokens(const pass_inputs *in, const qs_batch_opts *b) {
  long total = 0;
  for (size_t i = 0; i < in->samples.count; i++) {
    size_t len = in->seqs[i].len;
    total += (long)(b->max_length && len > b->max_length ? b->max_length : len);
  }
  return total;
}

/* Free device memory on the CUDA backend; 0 (nothing to fit) on the CPU. */
static bool device_free_bytes(const pass_inputs *in, size_t *free_bytes, qs_error *err) {
#ifdef QSENS_HAVE_CUDA
  size_t total;
  if (strcmp(in->backend_name, "cuda") == 0) return qs_cuda_backend_free_bytes(in->be, free_bytes, &total, err);
#else
  (void)in;
  (void)err;
#endif
  *free_bytes = 0;
  return true;
}

/* The step token budget: backend.token_budget when set, else
 * qs_memory_step_tokens's choice; why describes it for the log. */
static bool choose_step_tokens(const qs_job_settings *s, const qs_memory_request *r, size_t free_bytes,
                               pass_inputs *in, char *why, size_t why_size, qs_error *err) {
  if (s->token_budget > 0) {
    in->step_tokens = s->token_budget;
    snprintf(why, why_size, "backend.token_budget");
    return true;
  }
  in->step_tokens = qs_memory_step_tokens(r, free_bytes);
  if (in->step_tokens == 0) {
    qs_memory_plan none = qs_memory_plan_make(r, 0);
    return qs_fail(err, QS_EXIT_RUNTIME,
                   "CUDA backend: the weights (%.2f GiB) and fixed scratch (%.2f GiB) do not fit the device's %.2f "
                   "GiB of free memory less a %.2f GiB margin; set backend.token_budget to try a small step anyway",
                   none.weight_bytes / GIB, none.fixed_bytes / GIB, free_bytes / GIB,
                   qs_memory_margin(free_bytes) / GIB);
  }
  if (free_bytes) snprintf(why, why_size, "null: fitted to %.2f GiB of free device memory", free_bytes / GIB);
  else snprintf(why, why_size, "null: CPU default");
  return true;
}

/* On the CUDA backend the planned bytes are reserved before the weights
 * arrive: the model, the engine and the backend's scratch are then carved
 * from that one arena, and a plan the device cannot hold fails here, before
 * any work, naming backend.token_budget. */
static bool reserve_planned(const pass_inputs *in, qs_strbuf *log, qs_error *err) {
#ifdef QSENS_HAVE_CUDA
  if (strcmp(in->backend_name, "cuda") == 0) {
    if (!qs_cuda_backend_reserve(in->be, in->planned_bytes, err)) return false;
    qs_job_log(log, "INFO", "reserved %.2f GiB of GPU memory up front for the plan", in->planned_bytes / GIB);
  }
#else
  (void)in;
  (void)log;
  (void)err;
#endif
  return true;
}

/* Plans the pass's memory, picks the step token budget and logs both (one
 * line; a second, a warning, when a set budget overshoots the free memory).
 * The job log reaches the terminal when the pass ends, so the plan line is
 * also printed at once on `live` (rank 0's progress stream; NULL on other
 * ranks), prefixed by the pass label as the progress lines are. The planned
 * total is for the largest step the pass can run: the budget, or all the
 * pass's tokens when they are fewer. */
static bool plan_memory(const qs_job_settings *settings, const qs_pass *pass, FILE *live, const char *label,
                        pass_inputs *in, qs_strbuf *log, qs_error *err) {
  const qs_job_settings *s = &settings[pass->jobs[0]];
  qs_memory_request r = memory_request(settings, pass, in);
  char why[160];
  size_t free_bytes;
  if (!device_free_bytes(in, &free_bytes, err) || !choose_step_tokens(s, &r, free_bytes, in, why, sizeof why, err))
    return false;
  long own = pass_tokens(in, &s->batch), largest = own < in->step_tokens ? own : in->step_tokens;
  qs_memory_plan p = qs_memory_plan_make(&r, largest);
  in->planned_bytes = p.total_bytes;
  char line[512];
  snprintf(line, sizeof line,
           "memory plan (%s backend): weights %.2f GiB, fixed scratch %.2f GiB, %.3f MiB per token; token budget %ld "
           "per step (%s); planned total %.2f GiB for steps of up to %ld tokens (the pass has %ld)",
           in->backend_name, p.weight_bytes / GIB, p.fixed_bytes / GIB, p.per_token_bytes / (1024.0 * 1024.0),
           in->step_tokens, why, p.total_bytes / GIB, largest, own);
  qs_job_log(log, "INFO", "%s", line);
  if (live) {
    fprintf(live, "%s%s%s\n", label ? label : "", label ? " " : "", line);
    fflush(live);
  }
  if (s->token_budget > 0 && free_bytes && p.total_bytes + qs_memory_margin(free_bytes) > free_bytes)
    qs_job_log(log, "WARNING",
               "the planned %.2f GiB exceed the device's %.2f GiB of free memory less its margin; lower "
               "backend.token_budget if the pass runs out of memory",
               p.total_bytes / GIB, free_bytes / GIB);
  return reserve_planned(in, log, err);
}

/* One line after the pass: the most device memory the CUDA backend held,
 * or the process's peak resident set on the host backend. */
static void log_peak_memory(const pass_inputs *in, qs_strbuf *log) {
#ifdef QSENS_HAVE_CUDA
  if (strcmp(in->backend_name, "cuda") == 0) {
    qs_job_log(log, "INFO", "peak memory: %.2f GiB of GPU memory held by the cuda backend (planned %.2f GiB)",
               qs_cuda_backend_peak_bytes(in->be) / GIB, in->planned_bytes / GIB);
    return;
  }
#endif
  struct rusage usage;
  if (getrusage(RUSAGE_SELF, &usage) == 0) /* ru_maxrss is in KiB on Linux */
    qs_job_log(log, "INFO", "peak memory: host backend, process max RSS %.2f GiB (planned %.2f GiB)",
               (double)usage.ru_maxrss * 1024.0 / GIB, in->planned_bytes / GIB);
}

static void free_inputs(pass_inputs *in) {
  if (in->be) qs_backend_destroy(in->be);
  free(in->seqs);
  qs_sample_list_free(&in->samples);
  free(in->captions_md5);
  if (in->lm_loaded) qs_lm_release(&in->lm);
}

/* ---- scoring and finishing -------------------------------------------------- */

static bool score_pass(const qs_dist *d, const qs_job_settings *settings, const qs_pass *pass,
                       const qs_pass_share *share, const char *label, pass_inputs *in, qs_engine_cell *cells,
                       qs_error *err) {
  const qs_job_settings *first = &settings[pass->jobs[0]];
  for (size_t k = 0; k < pass->njobs; k++) {
    const qs_job_settings *s = &settings[pass->jobs[k]];
    cells[k] = (qs_engine_cell){s->pair.name, s->act_amax, s->n_samples, qs_cell_new()};
  }
  qs_engine_options opts = first->engine;
  opts.progress = qs_dist_is_root(d) ? stdout : NULL;
  opts.progress_label = label;
  opts.layer_slice = share->slice;
  opts.layer_slices = share->slices;
  opts.step_tokens = in->step_tokens;
  qs_batch_opts batch = first->batch;
  batch.pad_id = in->pad_id;
  qs_engine_data data = {in->seqs, in->samples.count, &batch};
  bool ok = qs_engine_run_pass(in->be, &in->lm, &data, cells, pass->njobs, &opts, err);
  fflush(stdout);
  return ok;
}

/* parallel.mode=layers: the raw scores of every cell summed at rank 0. Every
 * rank takes part even when its own pass failed, so none waits forever. */
static bool sum_layer_slices(const qs_dist *d, const qs_pass *pass, qs_engine_cell *cells, bool ok, qs_error *err) {
  if (!qs_dist_all(d, ok))
    return ok ? qs_fail(err, QS_EXIT_RUNTIME, "the pass failed on another rank (parallel.mode=layers)") : false;
  for (size_t k = 0; k < pass->njobs; k++) {
    qs_cell *c = cells[k].out;
    size_t n = c->nlinears * c->nformats;
    double *sums = qs_calloc(n ? n : 1, sizeof *sums);
    size_t row = c->nformats * sizeof *sums;
    for (size_t i = 0; i < c->nlinears; i++) memcpy(sums + i * c->nformats, c->linears[i].raw_scores, row);
    MPI_Reduce(qs_dist_is_root(d) ? MPI_IN_PLACE : sums, sums, (int)n, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    for (size_t i = 0; i < c->nlinears; i++) memcpy(c->linears[i].raw_scores, sums + i * c->nformats, row);
    free(sums);
  }
  return true;
}

static void describe_cell(const qs_job_settings *s, const pass_inputs *in, const char *captions_md5, qs_cell *cell) {
  qs_cell_set_str(&cell->scheme, s->scheme);
  qs_cell_set_str(&cell->model_id, s->model_path);
  cell->score_size = s->score_size;
  cell->monotone_rule = s->monotone_rule;
  cell->report_style = s->report_style;
  cell->extra_none_numel = s->extra_none_numel;
  qs_cell_dataset *ds = &cell->dataset;
  ds->present = true;
  qs_cell_set_str(&ds->name, s->dataset_name);
  qs_cell_set_str(&ds->size, s->dataset_size);
  qs_cell_set_str(&ds->root, s->dataset_root);
  qs_cell_set_str(&ds->captions_path, s->captions_path);
  ds->max_calib_samples = s->max_calib_samples;
  ds->num_calib_samples = (long long)s->n_samples;
  ds->calib_seq_len = (long long)s->batch.max_length;
  ds->batch_size = (long long)s->batch.batch_size;
  ds->num_calib_batches = cell->run.num_calib_steps;
  qs_cell_set_str(&cell->run.captions_path, s->captions_path);
  qs_cell_set_str(&cell->run.captions_md5, captions_md5);
  /* Packed batches give the scores of the existing left-padded flow. */
  qs_cell_set_str(&cell->run.padding_side, "left");
  qs_cell_provenance *p = &cell->provenance;
  qs_cell_set_str(&p->tool_version, QSENS_VERSION);
  qs_cell_set_str(&p->git_commit, QSENS_GIT_COMMIT);
  qs_cell_set_str(&p->checkpoint_checksum, in->checkpoint_md5);
  qs_cell_set_str(&p->data_checksum, captions_md5);
  cell->config_yaml = qs_yaml_dump(s->cfg);
  cell->timings.load_s = in->load_s;
}

static json_t *json_measured(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static char *render_measurements(const qs_cell *cell) {
  json_t *tokens = json_array();
  for (size_t i = 0; i < cell->nsamples; i++) json_array_append_new(tokens, json_integer(cell->sample_tokens[i]));
  const qs_cell_timings *t = &cell->timings;
  const qs_cell_provenance *p = &cell->provenance;
  json_t *m = json_pack("{s:o, s:o, s:{s:o, s:o, s:o, s:o, s:o}, s:s, s:s, s:s, s:s}", "sample_tokens", tokens,
                        "baseline_loss", json_measured(cell->baseline_loss), "timings", "load_s",
                        json_measured(t->load_s), "calibrate_s", json_measured(t->calibrate_s), "score_s",
                        json_measured(t->score_s), "search_s", json_measured(t->search_s), "total_s",
                        json_measured(t->total_s), "git_commit", p->git_commit, "checkpoint_checksum",
                        p->checkpoint_checksum, "data_checksum", p->data_checksum, "config_yaml", cell->config_yaml);
  char *text = json_dumps(m, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(m);
  return text;
}

static bool finish_cell(const qs_job_settings *s, const pass_inputs *in, const char *captions_md5, qs_cell *cell,
                        qs_error *err) {
  describe_cell(s, in, captions_md5, cell);
  double t0 = now_s();
  bool ok = qs_cell_finish(cell, s->effective_bits, err);
  if (!ok && err->status == QS_EXIT_USAGE) qs_fail_context(err, "config key 'autoquant.effective_bits': ");
  qs_cell_timings *t = &cell->timings;
  t->search_s = now_s() - t0;
  t->total_s = t->load_s + t->calibrate_s + t->score_s + t->search_s;
  return ok;
}

static json_t *record_base(const qs_dist *d, const qs_hydra_job *job, const qs_job_settings *s, const char *label,
                           const char *started, const pass_inputs *in) {
  json_t *overrides = json_array();
  for (size_t i = 0; i < job->n_overrides; i++) json_array_append_new(overrides, json_string(job->overrides[i]));
  json_t *r = json_pack("{s:s, s:s, s:{s:i, s:o}, s:i, s:s, s:s, s:s, s:s}", "tool", "qsens " QSENS_VERSION,
                        "git_commit", QSENS_GIT_COMMIT, "job", "num", job->num, "overrides", overrides, "rank",
                        d->rank, "host", d->host, "started", started, "pass", label, "backend",
                        in->backend_name ? in->backend_name : "none");
  json_object_set_new(r, "model", json_pack("{s:s, s:s, s:s}", "name", s->model_name, "path", s->model_path,
                                            "checksum", in->checkpoint_md5));
  json_object_set_new(r, "dataset", json_pack("{s:s, s:s, s:s, s:I}", "name", s->dataset_name, "size",
                                              s->dataset_size, "captions_path", s->captions_path, "samples",
                                              (json_int_t)s->n_samples));
  json_object_set_new(r, "quant_pair",
                      json_pack("{s:s, s:s, s:s, s:s, s:s?}", "name", s->pair.name, "weight_format",
                                s->pair.weight->name, "act_format", s->pair.act->name, "config_name",
                                s->pair.config_name, "modelopt_config", s->modelopt_config));
  json_object_set_new(r, "artifact_dir", json_string(s->artifact_dir));
  return r;
}

/* The search result and timings of a finished cell, for the run record. */
static void record_result(json_t *record, const qs_cell *cell) {
  const qs_cell_searchres *r = &cell->search;
  json_object_set_new(record, "result",
                      json_pack("{s:s, s:o, s:o, s:o, s:b}", "scheme", cell->scheme, "requested_bits",
                                json_real(r->requested_bits), "effective_bits", json_real(r->effective_bits),
                                "best_score", json_real(r->best_score), "is_satisfied", r->is_satisfied));
  const qs_cell_timings *t = &cell->timings;
  json_object_set_new(record, "timings",
                      json_pack("{s:o, s:o, s:o, s:o, s:o}", "load_s", json_measured(t->load_s), "calibrate_s",
                                json_measured(t->calibrate_s), "score_s", json_measured(t->score_s), "search_s",
                                json_measured(t->search_s), "total_s", json_measured(t->total_s)));
}

static char *take_record(json_t *record, bool ok, const qs_error *err) {
  char finished[40];
  iso_now(finished, sizeof finished);
  json_object_set_new(record, "finished", json_string(finished));
  json_object_set_new(record, "status", json_string(ok ? "scored" : "failed"));
  if (!ok) json_object_set_new(record, "error", json_string(err->msg));
  char *text = json_dumps(record, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(record);
  return text;
}

/* What the pass leaves for each of its jobs. */
typedef struct pass_result {
  const qs_dist *d;
  const char *label, *started;
  const pass_inputs *in;
  const char *shared_log; /* log lines of the pass, at the head of every job's log */
  bool ok;
  const qs_error *err;    /* why the pass failed */
} pass_result;

static void fill_outcome(const pass_result *p, const qs_hydra_job *job, const qs_job_settings *s, qs_cell *cell,
                         size_t k, qs_job_outcome *out) {
  qs_strbuf log = {0};
  qs_sb_append(&log, p->shared_log);
  out->pass_log_len = (int)strlen(p->shared_log);
  out->pass_head = k == 0;
  qs_error err = *p->err;
  json_t *record = record_base(p->d, job, s, p->label, p->started, p->in);
  out->ok = p->ok && finish_cell(s, p->in, p->in->captions_md5[k], cell, &err);
  if (out->ok) {
    out->state = qs_render_state(cell);
    out->measurements = render_measurements(cell);
    record_result(record, cell);
  } else {
    out->status = err.status ? err.status : QS_EXIT_RUNTIME;
    qs_strbuf msg = {0};
    qs_sb_printf(&msg, "%s (rank %d on %s)", err.msg, p->d->rank, p->d->host);
    out->error = qs_sb_take(&msg);
  }
  out->record = take_record(record, out->ok, &err);
  out->log = qs_sb_take(&log);
}

static size_t largest_job(const qs_job_settings *settings, const qs_pass *pass) {
  size_t best = 0;
  for (size_t k = 1; k < pass->njobs; k++)
    if (settings[pass->jobs[k]].n_samples > settings[pass->jobs[best]].n_samples) best = k;
  return best;
}

void qs_pass_run(const qs_dist *d, const qs_hydra_plan *plan, const qs_job_settings *settings, const qs_pass *pass,
                 const qs_pass_share *share, const char *label, qs_job_outcome *outs) {
  qs_strbuf log = {0};
  qs_error err = {0};
  char started[40];
  iso_now(started, sizeof started);
  pass_inputs in;
  memset(&in, 0, sizeof in);
  qs_engine_cell *cells = qs_calloc(pass->njobs, sizeof *cells);
  bool ok = load_inputs(d, settings, pass, largest_job(settings, pass), &in, &log, &err) &&
            plan_memory(settings, pass, qs_dist_is_root(d) ? stdout : NULL, label, &in, &log, &err) &&
            score_pass(d, settings, pass, share, label, &in, cells, &err);
  if (ok) log_peak_memory(&in, &log);
  if (share->slices > 1) ok = sum_layer_slices(d, pass, cells, ok, &err);
  if (!in.captions_md5) in.captions_md5 = qs_calloc(pass->njobs, sizeof *in.captions_md5);
  pass_result result = {d, label, started, &in, qs_sb_str(&log), ok, &err};
  bool reports = share->slices <= 1 || qs_dist_is_root(d);
  for (size_t k = 0; k < pass->njobs; k++) {
    size_t j = pass->jobs[k];
    if (!cells[k].out) cells[k].out = qs_cell_new();
    if (reports) fill_outcome(&result, &plan->jobs[j], &settings[j], cells[k].out, k, &outs[j]);
    qs_cell_free(cells[k].out);
  }
  free(cells);
  free_inputs(&in);
  qs_sb_free(&log);
}
