/* qsens formats [--config-dir DIR]
 * Lists the number formats of the registry (quant/format.h) and the (W,A)
 * pairs of the config tree's quant_pair/ folder, with their ModelOpt config,
 * cost bits, activation amax mode and the backends of this build and
 * machine that can run them. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/cfg_get.h"
#include "app/commands.h"
#include "config/yaml.h"
#include "core/error.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "quant/format.h"
#ifdef QSENS_HAVE_CUDA
#include "kernels/cuda_backend.h"
#endif

#define PAIR_FOLDER "quant_pair"

static const char formats_usage[] =
    "usage: qsens formats [--config-dir DIR]\n"
    "\n"
    "Lists the number formats qsens simulates and the (W,A) pairs of DIR/quant_pair/*.yaml\n"
    "(default: the conf/ tree a plain `qsens` uses), with the ModelOpt config each pair\n"
    "reproduces, its cost bits, whether its activation amax is static or dynamic, and the\n"
    "backends of this build and machine that can score it.\n";

/* Registry names, weakest first; the registry itself has no iteration API. */
static const char *const FORMAT_NAMES[] = {"none", "fp8", "int8", "int4", "mxfp4", "nvfp4"};

static const char *granularity(qs_qgran g) {
  static const char *const names[] = {"-", "tensor", "channel", "block"};
  return names[g];
}

static void print_formats(void) {
  printf("Formats (element bits; block = elements per scale along K; static amax per weight / activation):\n");
  printf("  %-6s %4s %5s  %-8s %-8s %s\n", "name", "bits", "block", "weight", "act", "scale");
  for (size_t i = 0; i < sizeof FORMAT_NAMES / sizeof FORMAT_NAMES[0]; i++) {
    const qs_qformat *f = qs_qformat_find(FORMAT_NAMES[i]);
    static const char *const scales[] = {"unquantized (bf16)", "E4M3 elements, fp32 scale from amax",
                                         "symmetric integers, fp32 scale from amax",
                                         "E2M1 elements, E8M0 block scale from the data",
                                         "E2M1 elements, E4M3 block scale under a per-tensor amax"};
    char block[16] = "-";
    if (f->block) snprintf(block, sizeof block, "%d", f->block);
    printf("  %-6s %4d %5s  %-8s %-8s %s\n", f->name, f->bits, block, granularity(f->weight_amax),
           granularity(f->act_amax), scales[f->kind]);
  }
}

/* "cpu", plus "cuda" when this build has the CUDA backend and a GPU is visible. */
static const char *runnable_backends(void) {
#ifdef QSENS_HAVE_CUDA
  qs_error err = {0};
  qs_backend *be = qs_cuda_backend_new(0, &err);
  if (!be) return "cpu (no GPU visible for cuda)";
  qs_backend_destroy(be);
  return "cpu, cuda";
#else
  return "cpu (built without cuda)";
#endif
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The *.yaml files of dir, sorted. */
static bool list_yaml(const char *dir, char ***names, size_t *n, qs_error *err) {
  DIR *d = opendir(dir);
  if (!d) return qs_fail(err, QS_EXIT_USAGE, "cannot open the pair folder '%s'", dir);
  size_t cap = 0;
  *names = NULL;
  *n = 0;
  for (struct dirent *e; (e = readdir(d));) {
    size_t len = strlen(e->d_name);
    if (len < 6 || strcmp(e->d_name + len - 5, ".yaml") != 0) continue;
    qs_grow((void **)names, &cap, *n + 1, sizeof **names);
    (*names)[(*n)++] = qs_path_join(dir, e->d_name);
  }
  closedir(d);
  if (*n) qsort(*names, *n, sizeof **names, compare_names);
  return true;
}

static bool print_pair(const char *path, const char *backends, qs_error *err) {
  qs_node *cfg = NULL;
  if (!qs_yaml_load_file(path, &cfg, NULL, err)) return false;
  const char *name, *weight, *act, *amax, *modelopt;
  bool experimental = false;
  qs_qpair pair;
  bool ok = qs_cfg_str(cfg, "name", false, &name, err) && qs_cfg_str(cfg, "weight_format", false, &weight, err) &&
            qs_cfg_str(cfg, "act_format", false, &act, err) && qs_cfg_str(cfg, "act_amax", false, &amax, err) &&
            qs_cfg_str(cfg, "modelopt_config", true, &modelopt, err) &&
            qs_cfg_bool(cfg, "experimental", &experimental, err) && qs_qpair_make(weight, act, &pair, err);
  if (ok) {
    const char *mode = pair.act->kind == QS_QK_NONE ? "-" : amax;
    printf("  %-14s %-32s %4.1f  %-8s %s\n", name, modelopt ? modelopt : pair.config_name,
           qs_qpair_cost_bits(&pair, 4.0), mode, backends);
    if (pair.weight->kind == QS_QK_INT && pair.weight->bits == 8 && pair.act->kind == QS_QK_FP8)
      printf("  %-14s (no deployment kernel exists for INT8 weights with FP8 activations; scored for analysis only)\n",
             "");
    else if (experimental)
      printf("  %-14s (experimental: no deployment kernel exists for this pair)\n", "");
  }
  qs_node_free(cfg);
  if (!ok) qs_fail_context(err, "%s: ", path);
  return ok;
}

static bool print_pairs(const char *conf, qs_error *err) {
  char *dir = qs_path_join(conf, PAIR_FOLDER);
  char **files = NULL;
  size_t n = 0;
  bool ok = list_yaml(dir, &files, &n, err);
  const char *backends = ok ? runnable_backends() : NULL;
  if (ok) {
    printf("\nPairs in %s (cost bits with nvfp4_effective_bits 4.0):\n", dir);
    printf("  %-14s %-32s %4s  %-8s %s\n", "pair", "ModelOpt config", "bits", "act amax", "runs on");
  }
  for (size_t i = 0; i < n; i++) {
    ok = ok && print_pair(files[i], backends, err);
    free(files[i]);
  }
  free(files);
  free(dir);
  return ok;
}

/* The first conf tree that exists, as `qsens` itself would choose it. */
static char *default_conf(void) {
  char *dirs[QS_N_CONF_DIRS];
  qs_default_conf_dirs(dirs);
  char *found = NULL;
  for (int i = 0; i < QS_N_CONF_DIRS; i++) {
    if (!found && qs_is_dir(dirs[i])) found = qs_strdup(dirs[i]);
    free(dirs[i]);
  }
  return found;
}

int qs_cmd_formats(int argc, char **argv) {
  if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    fputs(formats_usage, stdout);
    return QS_EXIT_OK;
  }
  if (!(argc == 1 || (argc == 3 && strcmp(argv[1], "--config-dir") == 0))) {
    return qs_cmd_usage_error("formats", "expected no argument or --config-dir DIR");
  }
  char *conf = argc == 3 ? qs_strdup(argv[2]) : default_conf();
  qs_error err = {0};
  print_formats();
  bool ok = conf ? print_pairs(conf, &err) : qs_fail(&err, QS_EXIT_USAGE, "no conf/ tree found");
  free(conf);
  fflush(stdout);
  if (!ok) {
    fprintf(stderr, "qsens formats: %s\n", err.msg);
    return err.status ? err.status : QS_EXIT_RUNTIME;
  }
  return QS_EXIT_OK;
}
