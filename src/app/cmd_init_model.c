/* qsens init-model DIR --preset NAME [--seed N] [--dtype bf16] [--tokenizer PATH]
 *                     [--captions PATH] [--max-shard-size BYTES]
 * Writes a synthetic Hugging Face Qwen3-VL checkpoint (model/init_model.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "model/init_model.h"

static const char usage_text[] =
    "usage: qsens init-model DIR --preset NAME [--seed N] [--dtype bf16] [--tokenizer PATH]\n"
    "                        [--captions PATH] [--max-shard-size BYTES]\n"
    "\n"
    "Writes a Hugging Face Qwen3-VL checkpoint with deterministic random weights to DIR:\n"
    "config.json, model.safetensors (or shards + model.safetensors.index.json) and a\n"
    "tokenizer.json: copied with --tokenizer, or, for the demo preset, trained on captions.\n"
    "\n"
    "  --preset NAME          demo, qwen3_vl_2b, qwen3_vl_4b, qwen3_vl_8b, qwen3_vl_32b\n"
    "  --seed N               weight seed (default 0); the same seed gives the same files\n"
    "  --dtype bf16           tensor dtype (only bf16)\n"
    "  --tokenizer PATH       tokenizer.json to copy into DIR\n"
    "  --captions PATH        demo: captions (one per line) to train the tokenizer on; the\n"
    "                         vocabulary is its size (default $QSENS_DATASETS/demo_captions.txt,\n"
    "                         QSENS_DATASETS defaulting to datasets)\n"
    "  --max-shard-size BYTES largest shard (suffixes KB, MB, GB = powers of 1000;\n"
    "                         default 5GB, as transformers)\n";

/* Decimal integer with an optional KB/MB/GB suffix; false when malformed or 0. */
static bool parse_size(const char *s, uint64_t *out) {
  static const struct {
    const char *suffix;
    uint64_t factor;
  } units[] = {{"", 1}, {"KB", 1000}, {"MB", 1000000}, {"GB", 1000000000}};
  if (*s < '0' || *s > '9') return false;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno) return false;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(end, units[i].suffix) == 0)
      return v > 0 && !__builtin_mul_overflow((uint64_t)v, units[i].factor, out);
  }
  return false;
}

static bool parse_seed(const char *s, uint64_t *out) {
  if (*s < '0' || *s > '9') return false;
  char *end;
  errno = 0;
  *out = strtoull(s, &end, 10);
  return errno == 0 && *end == '\0';
}

/* "--name=value" or "--name value"; NULL when argv[*i] is not --name. */
static const char *option_value(int argc, char **argv, int *i, const char *name, bool *missing) {
  size_t n = strlen(name);
  const char *arg = argv[*i];
  *missing = false;
  if (strncmp(arg, name, n) != 0) return NULL;
  if (arg[n] == '=') return arg + n + 1;
  if (arg[n] != '\0') return NULL;
  if (*i + 1 >= argc) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

typedef struct cli {
  const char *dir;
  qs_init_model_options opt;
  bool help;
} cli;

static int parse_args(int argc, char **argv, cli *c) {
  static const char *const names[] = {"--preset", "--seed", "--dtype", "--tokenizer", "--captions",
                                      "--max-shard-size"};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      c->help = true;
      return 0;
    }
    if (argv[i][0] != '-') {
      if (c->dir) return qs_cmd_usage_error("init-model", "unexpected argument '%s': only one DIR", argv[i]);
      c->dir = argv[i];
      continue;
    }
    const char *value = NULL;
    size_t which = 0;
    bool missing = false;
    for (; which < sizeof names / sizeof names[0]; which++) {
      value = option_value(argc, argv, &i, names[which], &missing);
      if (value || missing) break;
    }
    if (missing) return qs_cmd_usage_error("init-model", "option '%s' needs a value", argv[i]);
    if (!value) return qs_cmd_usage_error("init-model", "unknown option '%s'", argv[i]);
    switch (which) {
      case 0: c->opt.preset = value; break;
      case 1:
        if (!parse_seed(value, &c->opt.seed))
          return qs_cmd_usage_error("init-model", "--seed must be a non-negative integer, not '%s'", value);
        break;
      case 2:
        if (strcmp(value, "bf16") != 0) return qs_cmd_usage_error("init-model", "--dtype '%s' is not supported (only bf16)", value);
        break;
      case 3: c->opt.tokenizer = value; break;
      case 4: c->opt.captions = value; break;
      default:
        if (!parse_size(value, &c->opt.max_shard_bytes))
          return qs_cmd_usage_error("init-model", "--max-shard-size must be a positive byte count (e.g. 2GB), not '%s'", value);
    }
  }
  if (!c->dir) return qs_cmd_usage_error("init-model", "missing DIR");
  if (!c->opt.preset) return qs_cmd_usage_error("init-model", "missing --preset (one of %s)", qs_init_model_preset_names());
  qs_lm_config cfg;
  if (!qs_init_model_preset(c->opt.preset, &cfg))
    return qs_cmd_usage_error("init-model", "unknown preset '%s' (choose from %s)", c->opt.preset, qs_init_model_preset_names());
  bool demo = strcmp(c->opt.preset, "demo") == 0;
  if (c->opt.captions && !demo) return qs_cmd_usage_error("init-model", "--captions applies to the demo preset only");
  if (c->opt.captions && c->opt.tokenizer) return qs_cmd_usage_error("init-model", "give --tokenizer or --captions, not both");
  return 0;
}

/* The demo's captions as the dataset config finds them: ${QSENS_DATASETS,datasets}/demo_captions.txt. */
static char *default_captions(void) {
  const char *root = getenv("QSENS_DATASETS");
  return qs_path_join(root && *root ? root : "datasets", "demo_captions.txt");
}

int qs_cmd_init_model(int argc, char **argv) {
  cli c = {0};
  int status = parse_args(argc, argv, &c);
  if (status) return status;
  if (c.help) {
    fputs(usage_text, stdout);
    return QS_EXIT_OK;
  }
  char *captions = NULL;
  if (strcmp(c.opt.preset, "demo") == 0 && !c.opt.tokenizer && !c.opt.captions)
    c.opt.captions = captions = default_captions();
  qs_error err = {0};
  bool ok = qs_init_model_write(c.dir, &c.opt, &err);
  free(captions);
  if (!ok) {
    fprintf(stderr, "qsens init-model: %s\n", err.msg);
    return err.status;
  }
  qs_lm_config cfg;
  qs_init_model_preset(c.opt.preset, &cfg);
  printf("wrote a %s checkpoint (%d layers, hidden %d, seed %llu) to %s\n", c.opt.preset, cfg.layers, cfg.hidden,
         (unsigned long long)c.opt.seed, c.dir);
  return QS_EXIT_OK;
}
