/* Deterministic mutation of defaults lists and command lines: every input
 * must either compose or fail with one non-empty message, never crash. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <stdint.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "config/hydra.h"
#include "config/interp.h"
#include "core/fsutil.h"
#include "core/mem.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next_rand(void) {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng >> 33);
}

static const char base_config[] =
    "defaults:\n"
    "  - server: apache\n"
    "  - optional site: cluster\n"
    "  - server/db@backup: mysql\n"
    "  - _self_\n"
    "  - override server/db: mysql\n"
    "seed: 0\n"
    "label: ${server.name}-${.seed}\n";

static const char *const fragments[] = {"_self_", "@", "/", "override ", "optional ", "???", "null", "_global_",
                                        "_group_", "_here_", "${a}", ":", "-", " ", "[x]", "{}", "\n  - "};

static const char *const words[] = {"server=nginx", "server=nope", "+server=apache", "~server", "~server=apache",
                                    "server/db=postgres", "+x=1", "seed=2", "++y.z=3", "~seed", "label=${seed}",
                                    "server/db@backup=mysql", "+exp=fp4", "db=1", "server@other=apache",
                                    "seed=a,b", "x=[1,2", "~nope=1", "server={a:1}", "=", "+", "~", "@x=1"};

static void write_file(const char *path, const char *text) {
  qs_error err;
  if (!qs_write_file_atomic(path, text, strlen(text), &err)) fprintf(stderr, "%s\n", err.msg);
}

static char *mutate(const char *text) {
  size_t len = strlen(text);
  char *out = qs_malloc(len + 64);
  size_t at = next_rand() % len, cut = next_rand() % 4;
  const char *frag = fragments[next_rand() % (sizeof fragments / sizeof *fragments)];
  memcpy(out, text, at);
  strcpy(out + at, frag);
  if (at + cut > len) cut = len - at;
  strcat(out, text + at + cut);
  return out;
}

/* Random strings from interpolation-grammar fragments: reading them must
 * give a value or one error message. */
static void fuzz_interpolation(void) {
  static const char *const parts[] = {"${", "}", ":", ".", "..", "\\", "'", "\"", ",", "oc.env", "now", "hydra",
                                      "a", "b", "[0]", "[", "]", "%Y", " ", "x", "job.num", "${a}", "null", "3"};
  qs_node *root = qs_node_map();
  qs_node *a = qs_node_map();
  qs_map_set(a, "b", qs_node_int(1));
  qs_map_set(root, "a", a);
  qs_node *hydra = qs_node_map();
  qs_node *job = qs_node_map();
  qs_map_set(job, "num", qs_node_int(0));
  qs_map_set(hydra, "job", job);
  int resolved = 0, failed = 0;
  for (int round = 0; round < 3000; round++) {
    char text[256] = "";
    for (int k = (int)(next_rand() % 8) + 1; k > 0; k--)
      strncat(text, parts[next_rand() % (sizeof parts / sizeof *parts)], sizeof text - strlen(text) - 1);
    qs_map_set(root, "x", qs_node_str(text));
    qs_node *out = NULL;
    qs_error err = {0};
    if (qs_interp_select_in(root, hydra, "x", &out, &err)) {
      resolved++;
      CHECK(out != NULL);
    } else {
      failed++;
      if (!err.msg[0]) fprintf(stderr, "empty error for [%s]\n", text);
      CHECK(err.msg[0] != '\0');
    }
    qs_node_free(out);
  }
  CHECK(resolved > 100 && failed > 100);
  printf("interpolation: resolved %d, failed %d\n", resolved, failed);
  qs_node_free(hydra);
  qs_node_free(root);
}

/* Random command lines of flags and their values. */
static void fuzz_flags(const qs_hydra_options *opts, FILE *sink) {
  static const char *const words[] = {"--cfg", "-c", "job", "hydra", "all", "-p", "seed", "--resolve", "--info",
                                      "defaults", "-i", "-cn", "config", "nope", "--config-name=config", "-m", "-r",
                                      "--help", "--hydra-help", "--version", "--", "-", "--cf", "--c", "-x",
                                      "--cfg=bad", "--run=1", "seed=1", "-cp", "/nonexistent", "-cd", "--info=tree"};
  int ok_count = 0, err_count = 0;
  for (int round = 0; round < 300; round++) {
    char *argv[8] = {"qsens"};
    int argc = 1;
    for (int k = (int)(next_rand() % 5) + 1; k > 0; k--) argv[argc++] = (char *)words[next_rand() % (sizeof words / sizeof *words)];
    qs_hydra_plan plan;
    qs_error err = {0};
    if (qs_hydra_prepare(argc, argv, opts, &plan, sink, sink, &err)) {
      ok_count++;
      qs_hydra_plan_free(&plan);
    } else {
      err_count++;
      CHECK(err.msg[0] != '\0' && err.status != 0);
    }
  }
  CHECK(ok_count > 10 && err_count > 10);
  printf("flags: accepted %d, refused %d\n", ok_count, err_count);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* rm -r of the temporary directory the test worked in. */
static void remove_tree(const char *dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int main(void) {
  char tmpl[] = "/tmp/qsens_fuzz_XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  char *conf = qs_path_join(tmpl, "conf");
  char *server = qs_path_join(conf, "server");
  char *db = qs_path_join(server, "db");
  qs_error err;
  CHECK(qs_mkdirs(db, &err));
  char *path = qs_path_join(server, "apache.yaml");
  write_file(path, "defaults:\n  - db: mysql\n  - _self_\nname: apache\n");
  free(path);
  path = qs_path_join(server, "nginx.yaml");
  write_file(path, "name: nginx\n");
  free(path);
  path = qs_path_join(db, "mysql.yaml");
  write_file(path, "driver: mysql\n");
  free(path);
  path = qs_path_join(db, "postgres.yaml");
  write_file(path, "driver: postgres\n");
  free(path);
  char *config_path = qs_path_join(conf, "config.yaml");
  const char *dirs[] = {conf};
  qs_hydra_options opts = {.app_name = "qsens", .conf_dirs = dirs, .n_conf_dirs = 1, .prints = true};
  FILE *sink = fopen("/dev/null", "w");
  int composed = 0, failed = 0;
  for (int round = 0; round < 400; round++) {
    char *text = qs_strdup(base_config);
    for (int m = (int)(next_rand() % 3); m > 0; m--) {
      char *next = mutate(text);
      free(text);
      text = next;
    }
    write_file(config_path, text);
    char *argv[8] = {"qsens", "--cfg", "job"};
    int argc = 3;
    for (int k = (int)(next_rand() % 4); k > 0; k--) argv[argc++] = (char *)words[next_rand() % (sizeof words / sizeof *words)];
    qs_hydra_plan plan;
    memset(&err, 0, sizeof err);
    if (qs_hydra_prepare(argc, argv, &opts, &plan, sink, sink, &err)) {
      composed++;
      qs_hydra_plan_free(&plan);
    } else {
      failed++;
      if (err.msg[0] == '\0' || err.status == 0) fprintf(stderr, "empty error for:\n%s\n", text);
      CHECK(err.msg[0] != '\0' && err.status != 0);
    }
    free(text);
  }
  /* Both outcomes must occur, or the mutations test nothing. */
  CHECK(composed > 20);
  CHECK(failed > 20);
  printf("composed %d, failed %d\n", composed, failed);
  fuzz_interpolation();
  write_file(config_path, base_config);
  /* Runs (not only --cfg) write outputs: keep them in the temporary dir. */
  if (chdir(tmpl) != 0) return 1;
  fuzz_flags(&opts, sink);
  fclose(sink);
  remove_tree(tmpl);
  free(config_path);
  free(db);
  free(server);
  free(conf);
  return check_summary("test_config_fuzz");
}
