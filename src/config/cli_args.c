#define _POSIX_C_SOURCE 200809L
#include "config/cli_args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

typedef enum { OPT_FLAG, OPT_VALUE, OPT_OPTIONAL_VALUE } opt_kind;

typedef struct opt_spec {
  const char *long_name, *short_name;
  opt_kind kind;
  const char *const *choices; /* NULL-terminated, or NULL */
} opt_spec;

static const char *const cfg_choices[] = {"job", "hydra", "all", NULL};
static const char *const info_choices[] = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath", NULL};

enum { O_HELP, O_HYDRA_HELP, O_VERSION, O_CFG, O_RESOLVE, O_PACKAGE, O_RUN, O_MULTIRUN, O_CONFIG_PATH,
       O_CONFIG_NAME, O_CONFIG_DIR, O_INFO, O_COUNT };

static const opt_spec specs[O_COUNT] = {
    [O_HELP] = {"--help", "-h", OPT_FLAG, NULL},
    [O_HYDRA_HELP] = {"--hydra-help", NULL, OPT_FLAG, NULL},
    [O_VERSION] = {"--version", NULL, OPT_FLAG, NULL},
    [O_CFG] = {"--cfg", "-c", OPT_VALUE, cfg_choices},
    [O_RESOLVE] = {"--resolve", NULL, OPT_FLAG, NULL},
    [O_PACKAGE] = {"--package", "-p", OPT_VALUE, NULL},
    [O_RUN] = {"--run", "-r", OPT_FLAG, NULL},
    [O_MULTIRUN] = {"--multirun", "-m", OPT_FLAG, NULL},
    [O_CONFIG_PATH] = {"--config-path", "-cp", OPT_VALUE, NULL},
    [O_CONFIG_NAME] = {"--config-name", "-cn", OPT_VALUE, NULL},
    [O_CONFIG_DIR] = {"--config-dir", "-cd", OPT_VALUE, NULL},
    [O_INFO] = {"--info", "-i", OPT_OPTIONAL_VALUE, info_choices},
};

#define USAGE_TEXT                                                                              \
  "usage: %s [--help] [--hydra-help] [--version] [--cfg {job,hydra,all}] [--resolve]\n"          \
  "       [--package PACKAGE] [--run] [--multirun] [--config-path CONFIG_PATH]\n"                 \
  "       [--config-name CONFIG_NAME] [--config-dir CONFIG_DIR]\n"                                \
  "       [--info [{all,config,defaults,defaults-tree,plugins,searchpath}]]\n"                    \
  "       [overrides ...]\n"                                                                      \
  "%s: error: %s"

/* what is a format taking the two strings a and b. */
static bool usage_error(qs_error *err, const char *app, const char *what, const char *a, const char *b) {
  char line[1024];
  snprintf(line, sizeof line, what, a, b);
  return qs_fail(err, QS_EXIT_USAGE, USAGE_TEXT, app, app, line);
}

static char *arg_name(int o) {
  char buf[64];
  if (specs[o].short_name) snprintf(buf, sizeof buf, "%s/%s", specs[o].long_name, specs[o].short_name);
  else snprintf(buf, sizeof buf, "%s", specs[o].long_name);
  return qs_strdup(buf);
}

/* Index of the option named by arg (exact, or a unique "--" prefix as
 * argparse allows); *value points after '=' when the value is attached. */
static int find_option(const char *arg, const char **value, bool *ambiguous) {
  size_t len = strcspn(arg, "=");
  *value = arg[len] == '=' ? arg + len + 1 : NULL;
  *ambiguous = false;
  int found = -1;
  for (int o = 0; o < O_COUNT; o++) {
    const opt_spec *s = &specs[o];
    if ((strlen(s->long_name) == len && strncmp(s->long_name, arg, len) == 0) ||
        (s->short_name && strlen(s->short_name) == len && strncmp(s->short_name, arg, len) == 0))
      return o;
  }
  if (strncmp(arg, "--", 2) != 0) return -1;
  for (int o = 0; o < O_COUNT; o++)
    if (strncmp(specs[o].long_name, arg, len) == 0) {
      if (found >= 0) *ambiguous = true;
      found = o;
    }
  return *ambiguous ? -1 : found;
}

static bool check_choice(int o, const char *value, const char *app, qs_error *err) {
  if (!specs[o].choices) return true;
  for (const char *const *c = specs[o].choices; *c; c++)
    if (strcmp(*c, value) == 0) return true;
  char choices[256] = "";
  for (const char *const *c = specs[o].choices; *c; c++) {
    size_t used = strlen(choices);
    snprintf(choices + used, sizeof choices - used, "%s'%s'", c == specs[o].choices ? "" : ", ", *c);
  }
  char *name = arg_name(o);
  char what[512];
  snprintf(what, sizeof what, "argument %s: invalid choice: '%%s' (choose from %s)", name, choices);
  free(name);
  return usage_error(err, app, what, value, "");
}

static void store(qs_cli_args *out, int o, const char *value) {
  switch (o) {
  case O_HELP: out->help = true; break;
  case O_HYDRA_HELP: out->hydra_help = true; break;
  case O_VERSION: out->version = true; break;
  case O_CFG: out->cfg = value; break;
  case O_RESOLVE: out->resolve = true; break;
  case O_PACKAGE: out->package = value; break;
  case O_RUN: out->run = true; break;
  case O_MULTIRUN: out->multirun = true; break;
  case O_CONFIG_PATH: out->config_path = value; break;
  case O_CONFIG_NAME: out->config_name = value; break;
  case O_CONFIG_DIR: out->config_dir = value; break;
  case O_INFO: out->info = value; break;
  }
}

static bool looks_like_flag(const char *arg) { return arg[0] == '-' && arg[1] != '\0'; }

bool qs_cli_parse(int argc, char **argv, const char *app, qs_cli_args *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  out->overrides = qs_calloc((size_t)(argc > 0 ? argc : 1), sizeof *out->overrides);
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!looks_like_flag(arg)) {
      out->overrides[out->n_overrides++] = argv[i];
      continue;
    }
    const char *value;
    bool ambiguous;
    int o = find_option(arg, &value, &ambiguous);
    if (o < 0) {
      qs_cli_args_free(out);
      return usage_error(err, app, ambiguous ? "ambiguous option: %s%s" : "unrecognized arguments: %s%s", arg, "");
    }
    if (specs[o].kind == OPT_FLAG && value) {
      char *name = arg_name(o);
      usage_error(err, app, "argument %s: ignored explicit argument '%s'", name, value);
      free(name);
      qs_cli_args_free(out);
      return false;
    }
    if (specs[o].kind == OPT_VALUE && !value) {
      if (i + 1 >= argc || looks_like_flag(argv[i + 1])) {
        char *name = arg_name(o);
        usage_error(err, app, "argument %s: expected one argument%s", name, "");
        free(name);
        qs_cli_args_free(out);
        return false;
      }
      value = argv[++i];
    }
    if (specs[o].kind == OPT_OPTIONAL_VALUE && !value)
      value = (i + 1 < argc && !looks_like_flag(argv[i + 1])) ? argv[++i] : "all";
    if (value && !check_choice(o, value, app, err)) {
      qs_cli_args_free(out);
      return false;
    }
    store(out, o, value);
  }
  return true;
}

void qs_cli_args_free(qs_cli_args *a) {
  free(a->overrides);
  a->overrides = NULL;
  a->n_overrides = 0;
}
