/* qsens captions build --train FILE [--val FILE] --out DIR [--seed N] [--k N]
 *                      [--sizes NAME=COUNT,...]
 * Rebuilds the COCO 2017 calibration caption subset files (text/captions.h).
 * argv[0] is "captions", argv[1] the action. */
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
#include "core/mem.h"
#include "text/captions.h"

int qs_cmd_captions(int argc, char **argv);

#define MAX_SIZES 16

static const char usage_text[] =
    "usage: qsens captions build --train FILE [--val FILE] --out DIR [--seed N] [--k N]\n"
    "                            [--sizes NAME=COUNT,...]\n"
    "\n"
    "Builds the calibration caption subset from COCO caption annotation files, exactly as\n"
    "the original Python builder: every caption annotation of --train, then of --val, in\n"
    "file order; random.Random(seed).sample(all, k); one caption per line with newlines\n"
    "replaced by spaces and surrounding whitespace stripped. Writes\n"
    "DIR/coco2017_captions.txt and DIR/coco2017_captions_NAME.txt (its first COUNT lines).\n"
    "\n"
    "  --train FILE    captions_train2017.json\n"
    "  --val FILE      captions_val2017.json\n"
    "  --out DIR       output folder (created if missing)\n"
    "  --seed N        sampling seed (default 42)\n"
    "  --k N           subset size (default 4096; 0 or more than available keeps all, in order)\n"
    "  --sizes LIST    prefix files (default small=16,medium=128,large=512)\n";

typedef struct cli {
  const char *train, *val, *out, *sizes_text;
  int64_t seed;
  size_t k;
  qs_subset_size sizes[MAX_SIZES];
  char *size_names; /* storage the sizes' names point into */
  size_t n_sizes;
  bool help;
} cli;

static bool parse_int64(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  *out = (int64_t)v;
  return *s && *end == '\0' && errno == 0;
}

static bool parse_count(const char *s, size_t *out) {
  int64_t v;
  if (!parse_int64(s, &v) || v < 0) return false;
  *out = (size_t)v;
  return true;
}

static bool valid_size_name(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
      return false;
  return true;
}

/* "small=16,medium=128": names are file-name safe, counts >= 1. */
static int parse_sizes(cli *c) {
  c->size_names = qs_strdup(c->sizes_text);
  c->n_sizes = 0;
  if (!*c->size_names) return 0;
  char *save = NULL;
  for (char *item = strtok_r(c->size_names, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(item, '=');
    if (!eq) return qs_cmd_usage_error("captions", "--sizes entry '%s' is not NAME=COUNT", item);
    *eq = '\0';
    size_t count;
    if (!valid_size_name(item)) return qs_cmd_usage_error("captions", "--sizes name '%s' must use only letters, digits, '_' or '-'", item);
    if (!parse_count(eq + 1, &count) || count == 0)
      return qs_cmd_usage_error("captions", "--sizes count for '%s' must be a positive integer, not '%s'", item, eq + 1);
    if (c->n_sizes == MAX_SIZES) return qs_cmd_usage_error("captions", "--sizes lists more than %d entries", MAX_SIZES);
    c->sizes[c->n_sizes++] = (qs_subset_size){.name = item, .count = count};
  }
  return 0;
}

/* "--name value" or "--name=value"; NULL when argv[*i] is another option. */
static const char *take_value(int argc, char **argv, int *i, const char *name, bool *missing) {
  size_t n = strlen(name);
  *missing = false;
  if (strncmp(argv[*i], name, n) != 0) return NULL;
  if (argv[*i][n] == '=') return argv[*i] + n + 1;
  if (argv[*i][n] != '\0') return NULL;
  if (*i + 1 >= argc) {
    *missing = true;
    return NULL;
  }
  return argv[++*i];
}

static int set_option(cli *c, int which, const char *value) {
  switch (which) {
    case 0: c->train = value; break;
    case 1: c->val = value; break;
    case 2: c->out = value; break;
    case 3:
      if (!parse_int64(value, &c->seed)) return qs_cmd_usage_error("captions", "--seed must be an integer, not '%s'", value);
      break;
    case 4:
      if (!parse_count(value, &c->k)) return qs_cmd_usage_error("captions", "--k must be a non-negative integer, not '%s'", value);
      break;
    default: c->sizes_text = value;
  }
  return 0;
}

static int parse_args(int argc, char **argv, cli *c) {
  static const char *const names[] = {"--train", "--val", "--out", "--seed", "--k", "--sizes"};
  const int n_names = (int)(sizeof names / sizeof names[0]);
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) c->help = true;
  if (c->help) return 0;
  if (argc < 2) return qs_cmd_usage_error("captions", "missing action (only 'build')");
  if (strcmp(argv[1], "build") != 0) return qs_cmd_usage_error("captions", "unknown action '%s' (only 'build')", argv[1]);
  for (int i = 2; i < argc; i++) {
    const char *value = NULL;
    bool missing = false;
    int which = 0;
    for (; which < n_names && !value && !missing; which++) value = take_value(argc, argv, &i, names[which], &missing);
    if (missing) return qs_cmd_usage_error("captions", "option '%s' needs a value", argv[i]);
    if (!value) return qs_cmd_usage_error("captions", "unknown argument '%s'", argv[i]);
    int status = set_option(c, which - 1, value);
    if (status) return status;
  }
  if (!c->train) return qs_cmd_usage_error("captions", "missing --train FILE");
  if (!c->out) return qs_cmd_usage_error("captions", "missing --out DIR");
  return parse_sizes(c);
}

int qs_cmd_captions(int argc, char **argv) {
  cli c = {.seed = 42, .k = 4096, .sizes_text = "small=16,medium=128,large=512"};
  int status = parse_args(argc, argv, &c);
  if (status || c.help) {
    if (c.help) fputs(usage_text, stdout);
    free(c.size_names);
    return status;
  }
  const char *files[2] = {c.train, c.val};
  qs_subset_opts opts = {.annotation_files = files,
                         .n_annotation_files = c.val ? 2 : 1,
                         .out_dir = c.out,
                         .seed = c.seed,
                         .k = c.k,
                         .sizes = c.sizes,
                         .n_sizes = c.n_sizes};
  qs_subset_summary summary;
  qs_error err = {0};
  bool ok = qs_captions_build_subset(&opts, &summary, &err);
  if (ok) {
    printf("read %zu captions; wrote %zu to %s/coco2017_captions.txt and %zu prefix files\n", summary.n_captions,
           summary.n_selected, c.out, c.n_sizes);
    if (summary.n_published_known)
      printf("%zu of %zu files equal the published COCO 2017 subset (size and MD5)\n", summary.n_published_match,
             summary.n_published_known);
  } else {
    fprintf(stderr, "qsens captions: %s\n", err.msg);
  }
  free(c.size_names);
  return ok ? QS_EXIT_OK : err.status;
}
