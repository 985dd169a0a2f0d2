/* What a job's resolved config asks of the sensitivity engine, checked once
 * before anything runs: every bad value is one line naming the key, status
 * QS_EXIT_USAGE. The settings point into the resolved config they own. */
#ifndef QSENS_APP_JOB_SETTINGS_H
#define QSENS_APP_JOB_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/hydra.h"
#include "core/error.h"
#include "engine/engine.h"
#include "quant/format.h"
#include "report/results.h"
#include "search/search.h"
#include "text/batch.h"
#include "text/captions.h"

typedef enum qs_backend_choice {
  QS_BACKEND_AUTO, /* CUDA when built with it and a GPU is visible, else CPU */
  QS_BACKEND_CPU,
  QS_BACKEND_CUDA,
  QS_BACKEND_CPU_BF16, /* the CPU backend with the CUDA backend's bf16 storage and rounding */
} qs_backend_choice;

typedef struct qs_job_settings {
  qs_node *cfg;            /* the resolved job config (owned) */
  char *pass_key;          /* the config minus what may differ within a pass (owned) */
  const char *model_name, *model_path;
  const char *scheme;      /* artifact name stem */
  const char *dataset_name, *dataset_size, *dataset_root, *captions_path, *text_field;
  qs_caption_format captions_format;
  long long max_calib_samples; /* -1: null */
  size_t n_samples;        /* samples of the job's dataset size */
  qs_qpair pair;
  qs_act_amax_mode act_amax;
  const char *modelopt_config; /* quant_pair.modelopt_config, for the record */
  double effective_bits;
  long long score_size, extra_none_numel;
  qs_monotone_rule monotone_rule;
  qs_report_style report_style; /* autoquant.report_style: Markdown layout of the report */
  qs_engine_options engine;    /* disabled_layers is owned */
  qs_batch_opts batch;         /* pad_id is the tokenizer's, set when the pass loads it */
  qs_backend_choice backend;
  int threads;                 /* backend.threads; 0: OpenMP's default */
  long token_budget;           /* backend.token_budget: tokens per step; 0: null (the pass picks) */
  const char *parallel_mode;
  const char *artifact_dir;
} qs_job_settings;

/* Resolves the job's config and reads every setting the run needs. */
bool qs_job_settings_load(const qs_hydra_job *job, qs_job_settings *out, qs_error *err);
void qs_job_settings_free(qs_job_settings *s);

#endif
