/* Deterministic mutation fuzzing of the override parser and the YAML loader:
 * every mutated input must give either a value or one error message (never a
 * crash or a silent half result), and a loaded YAML tree must survive a
 * dump/load round trip unchanged. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "config/override.h"
#include "config/yaml.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 11);
}

/* Pieces that exercise the grammar more than random bytes do. */
static const char *const FRAGMENTS[] = {
  "=", ",", "[", "]", "{", "}", "(", ")", ":", "'", "\"", "\\", " ", "\t", "$", "${x}", "@", "+", "~", "-", "/",
  "*", "?", "|", "#", "&", "!", "%", ".", "_", "0", "1e3", "inf", "null", "true", "range(", "choice(", "glob(",
  "int(", "sort(", "shuffle(", "str(", "interval(", "tag(", "reverse=true", "\n", "- ", ": ", "<<: ", "*a", "&a ",
  "!!str ", "---", "\xc3\xa9", "\xff", "0x1F", "1:30", "yes",
};

static char *mutate(const char *seed) {
  size_t cap = strlen(seed) + 64, len = strlen(seed);
  char *s = malloc(cap);
  memcpy(s, seed, len + 1);
  int edits = 1 + (int)(next_random() % 4);
  for (int e = 0; e < edits; e++) {
    size_t pos = len ? next_random() % (len + 1) : 0;
    uint32_t op = next_random() % 4;
    if (op == 0 && len) { /* delete a run */
      size_t n = 1 + next_random() % 3;
      if (pos + n > len) n = len - pos;
      memmove(s + pos, s + pos + n, len - pos - n + 1);
      len -= n;
    } else if (op == 1 && len) { /* replace a byte */
      if (pos == len) pos--;
      s[pos] = (char)(1 + next_random() % 255);
    } else { /* insert a fragment */
      const char *f = FRAGMENTS[next_random() % (sizeof FRAGMENTS / sizeof *FRAGMENTS)];
      size_t n = strlen(f);
      if (len + n + 1 > cap) s = realloc(s, cap = (len + n + 1) * 2);
      memmove(s + pos + n, s + pos, len - pos + 1);
      memcpy(s + pos, f, n);
      len += n;
    }
  }
  return s;
}

static const char *const OVERRIDE_SEEDS[] = {
  "a.b=1", "+a=[1,2]", "++x.y={a:1,b:[x,y]}", "~a", "~a=1", "g/sub@pkg=opt", "k=\"a,b\",'c'", "k=[a,b],[c,d]",
  "k=choice(a,b)", "k=range(0,1,0.1)", "k=sort(3,1,2,reverse=true)", "k=shuffle(range(3))", "k=glob(*,exclude=x*)",
  "k=int(choice(1.5,2))", "k=str(1,2)", "k=interval(0,1)", "k=tag(t,choice(1,2))", "k=${a.b}x\\ y\\,z",
  "k='it\\'s'", "hydra.run.dir=out/${now:%H}", "k=  padded  ", "k=1_000,1e-3,inf,null,TRUE",
};

static void fuzz_overrides(int rounds) {
  int ok_count = 0;
  for (int r = 0; r < rounds; r++) {
    char *arg = mutate(OVERRIDE_SEEDS[next_random() % (sizeof OVERRIDE_SEEDS / sizeof *OVERRIDE_SEEDS)]);
    qs_override ov;
    qs_error err;
    err.msg[0] = '\0';
    if (qs_override_parse(arg, &ov, &err)) {
      ok_count++;
      /* a parse is complete: a key, and a value matching its kind */
      bool complete = ov.key && ov.input && strcmp(ov.input, arg) == 0 &&
                      (!ov.has_value || ov.sweep != QS_SWEEP_NONE || (ov.value && ov.value_text));
      for (size_t k = 0; k < ov.n_values; k++) complete = complete && ov.values[k] && ov.value_texts[k];
      if (!complete) fprintf(stderr, "incomplete parse of [%s]\n", arg);
      CHECK(complete);
      qs_override_free(&ov);
    } else {
      /* one message, ending with Hydra's pointer to the grammar docs */
      bool clear = err.status == QS_EXIT_USAGE && strstr(err.msg, "override_grammar/basic for details") != NULL;
      if (!clear) fprintf(stderr, "unclear error for [%s]: %s\n", arg, err.msg);
      CHECK(clear);
    }
    free(arg);
  }
  printf("override fuzz: %d inputs, %d parsed\n", rounds, ok_count);
  CHECK(ok_count > rounds / 10); /* the mutations must not all be rejected */
}

static const char *const YAML_SEEDS[] = {
  "a: 1\nb: [x, 'y', \"z\"]\nc: {d: null, e: 1.5}\n",
  "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n",
  "# @package _global_\nf:\n- a: 1\n  b:\n    c: [1, 2]\n- - x\n  - y\n",
  "defaults:\n  - quant_pair: wfp8_afp8\n  - _self_\nseed: 0\nname: ${quant_pair.name}\n",
  "k: yes\nl: 0123\nm: 1:30\nn: 1e3\no: .5\np: 1_000\nq: ~\nr: 2024-01-01\n",
  "s: |\n  block\n  text\nt: >\n  folded\nu: 'it''s'\nv: \"tab\\t\"\n",
};

static void fuzz_yaml(int rounds) {
  int ok_count = 0;
  for (int r = 0; r < rounds; r++) {
    char *text = mutate(YAML_SEEDS[next_random() % (sizeof YAML_SEEDS / sizeof *YAML_SEEDS)]);
    qs_node *n = NULL;
    char *pkg = NULL;
    qs_error err;
    err.msg[0] = '\0';
    if (qs_yaml_load_string(text, strlen(text), "fuzz.yaml", &n, &pkg, &err)) {
      ok_count++;
      CHECK(n && n->kind == QS_MAP);
      char *dump = qs_yaml_dump(n);
      qs_node *again = NULL;
      bool reloaded = qs_yaml_load_string(dump, strlen(dump), "dump.yaml", &again, NULL, &err);
      /* nan != nan, so only trees without nan compare equal */
      bool same = reloaded && (qs_node_equal(n, again) || strstr(dump, ".nan"));
      if (!same) fprintf(stderr, "round trip failed for [%s]\ndump: [%s]\n%s\n", text, dump, reloaded ? "" : err.msg);
      CHECK(same);
      qs_node_free(again);
      free(dump);
      qs_node_free(n);
      free(pkg);
    } else {
      bool named = err.status == QS_EXIT_USAGE && strstr(err.msg, "fuzz.yaml") != NULL;
      if (!named) fprintf(stderr, "error without the file name for [%s]: %s\n", text, err.msg);
      CHECK(named);
    }
    free(text);
  }
  printf("yaml fuzz: %d inputs, %d loaded\n", rounds, ok_count);
  CHECK(ok_count > rounds / 10);
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 20000;
  fuzz_overrides(rounds);
  fuzz_yaml(rounds / 4);
  return check_summary("test_config_core_fuzz");
}
