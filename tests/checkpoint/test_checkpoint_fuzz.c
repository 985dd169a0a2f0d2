/* Deterministic mutation fuzz of the JSON files the loader reads (config.json
 * and model.safetensors.index.json): every mutation loads or fails with one
 * line starting with the checkpoint folder, status 1; never a crash. */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include "check.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "fixture.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static const char *const nasty_values[] = {
    "-1", "0", "1.5", "3", "9223372036854775807", "1e400", "\"silu\"", "\"default\"", "\"yarn\"", "[]", "[24,20,20]",
    "null", "{}", "true", "false", "{\"rope_type\":\"default\"}", "{\"a\":{}}", "\"../x\"", "\"model.safetensors\"",
    "\"\"", "\"model-00001-of-00002.safetensors\"", "{\"rope_theta\":5}",
};

/* Sets one (possibly nested) key, chosen among those present, to a nasty value. */
static void mutate_value(json_t *root) {
  json_t *obj = root;
  for (int depth = 0; depth < 3 && json_object_size(obj) > 0; depth++) {
    size_t pick = (size_t)(rnd() % json_object_size(obj)), i = 0;
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
      if (i++ != pick) continue;
      if (json_is_object(value) && rnd() % 2) {
        obj = value;
        break;
      }
      json_t *nasty = json_loads(nasty_values[rnd() % (sizeof nasty_values / sizeof nasty_values[0])],
                                 JSON_DECODE_ANY, NULL);
      json_object_set_new(obj, key, nasty);
      return;
    }
  }
  json_object_del(obj, "hidden_size"); /* reached only when no key was replaced */
}

/* Overwrites in place and trims, without truncating to zero first: ext4
 * flushes files truncated to zero on close, which made thousands of rounds
 * slow; durability is irrelevant here. */
static void write_plain(const char *path, const char *text, size_t len) {
  int fd = open(path, O_WRONLY);
  CHECK(fd >= 0 && write(fd, text, len) == (ssize_t)len && ftruncate(fd, (off_t)len) == 0);
  if (fd >= 0) close(fd);
}

/* Writes `good` mutated at byte level or value level to path. */
static void write_mutant(const char *path, const char *good, size_t len, int round) {
  if (round % 2 == 0) {
    char *text = qs_strndup(good, len);
    for (int k = 0, m = 1 + (int)(rnd() % 3); k < m; k++)
      text[rnd() % len] = (round % 4 == 0) ? (char)rnd() : "{}[]\",:-019e. \\n"[rnd() % 16];
    write_plain(path, text, len);
    free(text);
    return;
  }
  json_t *root = json_loadb(good, len, 0, NULL);
  mutate_value(root);
  char *text = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  write_plain(path, text, strlen(text));
  free(text);
}

static void fuzz_file(const char *dir, const char *file, int rounds, int *loaded, int *failed) {
  char *path = qs_path_join(dir, file), *good;
  size_t len;
  qs_error err;
  CHECK(qs_read_file(path, &good, &len, &err));
  qs_strbuf warnings = {0};
  int bad_messages = 0;
  for (int r = 0; r < rounds; r++) {
    write_mutant(path, good, len, r);
    qs_lm lm;
    if (fx_load(dir, &lm, &err, &warnings) == 0) {
      ++*loaded;
      qs_lm_release(&lm);
      continue;
    }
    ++*failed;
    bool clean = err.status == QS_EXIT_RUNTIME && strncmp(err.msg, dir, strlen(dir)) == 0 && !strchr(err.msg, '\n');
    if (!clean && bad_messages++ < 5) fprintf(stderr, "unclean error: [%s] status %d\n", err.msg, err.status);
  }
  CHECK_INT(bad_messages, 0);
  qs_sb_free(&warnings);
  free(good);
  free(path);
}

int main(void) {
  fx_options o = fx_defaults();
  fx_write("fz_config", &o, NULL);
  int loaded = 0, failed = 0;
  fuzz_file("fz_config", "config.json", 1500, &loaded, &failed);
  printf("config.json: %d loaded, %d rejected\n", loaded, failed);
  /* both outcomes must occur, or the mutations do not reach the validation */
  CHECK(loaded > 15 && failed > 700);

  o.shards = 2;
  o.visual = true;
  fx_write("fz_index", &o, NULL);
  loaded = failed = 0;
  fuzz_file("fz_index", "model.safetensors.index.json", 1000, &loaded, &failed);
  printf("index: %d loaded, %d rejected\n", loaded, failed);
  CHECK(loaded > 15 && failed > 500);
  fx_clear_dir("fz_config");
  fx_clear_dir("fz_index");
  return check_summary("test_checkpoint_fuzz");
}
