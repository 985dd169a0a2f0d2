/* Tokenizer unit tests on a small in-memory tokenizer.json (tiny_tokenizer.h):
 * byte map, UTF-8 validation, BPE merge order, regex pieces, added tokens,
 * NFC, decode round trips, one clear error per malformed file, and
 * deterministic mutation fuzzing of both the loader and the encoder. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "check.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "text/tokenizer.h"
#include "tiny_tokenizer.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t rng_next(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}

static size_t rng_below(size_t n) { return n ? rng_next() % n : 0; }

static qs_tokenizer *load_tree(json_t *root, const char *name, qs_error *err) {
  char *text = json_dumps(root, JSON_COMPACT);
  qs_tokenizer *tok = NULL;
  if (!qs_tokenizer_load_json(text, strlen(text), name, &tok, err)) tok = NULL;
  free(text);
  return tok;
}

/* Encodes s and compares with the expected ids. */
static void check_ids(const qs_tokenizer *tok, const char *s, size_t len, const int32_t *want,
                      size_t n_want) {
  qs_token_ids ids = {0};
  qs_error err = {0};
  CHECK(qs_tokenizer_encode(tok, s, len, &ids, &err));
  CHECK_INT(ids.len, n_want);
  for (size_t i = 0; i < n_want && i < ids.len; i++) {
    if (ids.ids[i] != want[i]) fprintf(stderr, "  text [%s] token %zu\n", s, i);
    CHECK_INT(ids.ids[i], want[i]);
  }
  qs_token_ids_free(&ids);
}

#define EXPECT_IDS(tok, s, ...)                                                  \
  do {                                                                           \
    const int32_t want_[] = {__VA_ARGS__};                                       \
    check_ids(tok, s, strlen(s), want_, sizeof want_ / sizeof want_[0]);         \
  } while (0)

static int32_t B(char c) { return tiny_byte_id((unsigned char)c); }

static void test_byte_map(void) {
  CHECK_INT(qs_byte_to_codepoint(' '), 0x120);
  CHECK_INT(qs_byte_to_codepoint('\n'), 0x10A);
  CHECK_INT(qs_byte_to_codepoint(0), 0x100);
  CHECK_INT(qs_byte_to_codepoint(127), 0x121);
  CHECK_INT(qs_byte_to_codepoint(160), 0x142);
  CHECK_INT(qs_byte_to_codepoint(173), 0x143);
  CHECK_INT(qs_byte_to_codepoint('!'), '!');
  CHECK_INT(qs_byte_to_codepoint(0xFF), 0xFF);
  CHECK_INT(qs_codepoint_to_byte(0x144), -1);
  CHECK_INT(qs_codepoint_to_byte(' '), -1);
  CHECK_INT(qs_codepoint_to_byte(0xAD), -1);
  int round_trips = 0;
  for (unsigned b = 0; b < 256; b++) round_trips += qs_codepoint_to_byte(qs_byte_to_codepoint((uint8_t)b)) == (int)b;
  CHECK_INT(round_trips, 256);
  /* GPT-2/Qwen ids: '!' is 0 and 'Ġ' (space) is 220. */
  CHECK_INT(tiny_byte_id('!'), 0);
  CHECK_INT(tiny_byte_id(' '), 220);
}

/* Independent validity check through utf8proc (which also rejects surrogates). */
static bool utf8proc_valid(const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
    if (k <= 0) return false;
    i += (size_t)k;
  }
  return true;
}

static void test_utf8_validation(void) {
  CHECK_INT(qs_utf8_invalid_offset("ab\xC3(", 4), 2);
  CHECK_INT(qs_utf8_invalid_offset("\xED\xA0\x80", 3), 0);     /* surrogate */
  CHECK_INT(qs_utf8_invalid_offset("x\xC0\xAF", 3), 1);        /* overlong */
  CHECK_INT(qs_utf8_invalid_offset("\xF4\x90\x80\x80", 4), 0); /* above U+10FFFF */
  CHECK_INT(qs_utf8_invalid_offset("\xE2\x82", 2), 0);         /* cut short */
  CHECK_INT(qs_utf8_invalid_offset("a\0\xF0\x9F\x98\x80", 6), 6);
  int agree = 0, total = 5000;
  for (int i = 0; i < total; i++) {
    char buf[8];
    size_t n = 1 + rng_below(sizeof buf);
    for (size_t k = 0; k < n; k++) buf[k] = (char)(rng_below(4) ? 0x80 + rng_below(0x80) : rng_below(256));
    agree += (qs_utf8_invalid_offset(buf, n) == n) == utf8proc_valid(buf, n);
  }
  CHECK_INT(agree, total);
}

typedef struct pieces {
  qs_strbuf joined; /* pieces separated by '|' */
  int count;
} pieces;

static bool collect_piece(void *ctx, const char *piece, size_t len, qs_error *err) {
  (void)err;
  pieces *p = ctx;
  if (p->count++) qs_sb_putc(&p->joined, '|');
  qs_sb_append_n(&p->joined, piece, len);
  return true;
}

/* Pieces as the reference's Split pre-tokenizer gives them (checked with
 * tokenizers 0.23), then the same text with NFC first. */
static void test_pretokenize(void) {
  const char *text = "Hello world'S  x\r\n\r\n 12 ...!\n\tCafe\xcc\x81";
  const bool nfc[2] = {false, true};
  const char *want[2] = {
      "Hello| world|'S| | x|\r\n\r\n| |1|2| ...!\n|\tCafe|\xcc\x81",
      "Hello| world|'S| | x|\r\n\r\n| |1|2| ...!\n|\tCaf\xc3\xa9"};
  for (int k = 0; k < 2; k++) {
    qs_pretokenizer *pre;
    qs_error err = {0};
    pieces p = {0};
    CHECK(qs_pretokenizer_create(QS_QWEN3_SPLIT_PATTERN, nfc[k], &pre, &err));
    CHECK(qs_pretokenize(pre, text, strlen(text), collect_piece, &p, &err));
    CHECK_STR(qs_sb_str(&p.joined), want[k]);
    CHECK(!qs_pretokenize(pre, "\xff", 1, collect_piece, &p, &err));
    qs_sb_free(&p.joined);
    qs_pretokenizer_free(pre);
  }
  /* A pattern from a file may match empty strings: they make no piece. */
  qs_pretokenizer *pre;
  qs_error err = {0};
  pieces p = {0};
  CHECK(qs_pretokenizer_create("a*", false, &pre, &err));
  CHECK(qs_pretokenize(pre, "baab", 4, collect_piece, &p, &err));
  CHECK_STR(qs_sb_str(&p.joined), "b|aa|b");
  qs_sb_free(&p.joined);
  qs_pretokenizer_free(pre);
  CHECK(!qs_pretokenizer_create("(unclosed", false, &pre, &err));
  CHECK(strstr(err.msg, "cannot compile the split regex") != NULL);
}

/* A batch gives each text the ids it gets alone (the piece cache shared by
 * the batch must not leak ids between texts), and a bad text is named. */
static void test_batch(const qs_tokenizer *tok) {
  const char *texts[] = {"abc abc abc", "", " aa aa<x>", "abc abc", "s\xcc\x81 abab abab"};
  enum { N = 5 };
  qs_token_ids batch = {0};
  size_t offsets[N + 1];
  qs_error err = {0};
  CHECK(qs_tokenizer_encode_batch(tok, texts, NULL, N, &batch, offsets, &err));
  int same = 0;
  for (int i = 0; i < N; i++) {
    qs_token_ids one = {0};
    CHECK(qs_tokenizer_encode(tok, texts[i], strlen(texts[i]), &one, &err));
    same += one.len == offsets[i + 1] - offsets[i] &&
            (one.len == 0 || memcmp(one.ids, batch.ids + offsets[i], one.len * sizeof *one.ids) == 0);
    qs_token_ids_free(&one);
  }
  CHECK_INT(same, N);
  CHECK_INT(offsets[N], batch.len);
  const char *bad[] = {"fine", "also fine", "bad \xc3"};
  size_t before = batch.len;
  CHECK(!qs_tokenizer_encode_batch(tok, bad, NULL, 3, &batch, offsets, &err));
  CHECK(strstr(err.msg, "text 2: ") == err.msg);
  CHECK_INT(batch.len, before);
  qs_token_ids_free(&batch);
}

static void test_bpe_and_pieces(const qs_tokenizer *tok) {
  EXPECT_IDS(tok, "abc", TINY_ID_ABC);           /* bc (rank 0) first, then a+bc */
  EXPECT_IDS(tok, "abab", TINY_ID_AB, TINY_ID_AB);
  EXPECT_IDS(tok, "aaa", TINY_ID_AA, B('a'));    /* equal ranks: leftmost first */
  EXPECT_IDS(tok, " a", TINY_ID_SPACE_A);
  EXPECT_IDS(tok, " aa", B(' '), TINY_ID_AA);    /* a+a (rank 3) beats Ġ+a (rank 4) */
  EXPECT_IDS(tok, "  a", B(' '), TINY_ID_SPACE_A); /* whitespace run leaves one space to the word */
  EXPECT_IDS(tok, "12345", B('1'), B('2'), B('3'), B('4'), B('5'));
  EXPECT_IDS(tok, "x\r\n\r\n", B('x'), B('\r'), B('\n'), B('\r'), B('\n'));
  check_ids(tok, "", 0, NULL, 0);
}

static void test_added_tokens(const qs_tokenizer *tok) {
  EXPECT_IDS(tok, "<x>", TINY_ID_X);
  EXPECT_IDS(tok, "<x>y", TINY_ID_XY);                 /* longest of the two at one position */
  EXPECT_IDS(tok, "<x><x>y", TINY_ID_X, TINY_ID_XY);
  EXPECT_IDS(tok, "<x>z", TINY_ID_X, B('z'));
  /* Raw added tokens are split out before NFC: the y does not compose with U+0301. */
  EXPECT_IDS(tok, "<x>y\xcc\x81", TINY_ID_XY, B('\xcc'), B('\x81'));
  EXPECT_IDS(tok, "<xy", B('<'), B('x'), B('y'));
  EXPECT_IDS(tok, "abc<x>abc", TINY_ID_ABC, TINY_ID_X, TINY_ID_ABC);
  EXPECT_IDS(tok, "<|endoftext|>a<|endoftext|", TINY_ID_EOT, B('a'), B('<'), B('|'), B('e'),
             B('n'), B('d'), B('o'), B('f'), B('t'), B('e'), B('x'), B('t'), B('|'));
  /* "ś" is a normalized added token: it matches the NFC form of s + U+0301 too. */
  EXPECT_IDS(tok, "s\xcc\x81", TINY_ID_S_ACUTE);
  EXPECT_IDS(tok, "<x>\xc5\x9b", TINY_ID_X, TINY_ID_S_ACUTE);
  CHECK_INT(qs_tokenizer_token_id(tok, "<x>y"), TINY_ID_XY);
  CHECK_INT(qs_tokenizer_token_id(tok, "Ġa"), TINY_ID_SPACE_A);
  CHECK_INT(qs_tokenizer_token_id(tok, "nope"), -1);
  CHECK_INT(qs_tokenizer_vocab_size(tok), TINY_ID_EOT + 1);
}

static void test_encode_errors_and_decode(const qs_tokenizer *tok) {
  qs_token_ids ids = {0};
  qs_error err = {0};
  CHECK(qs_tokenizer_encode(tok, "ab", 2, &ids, &err));
  CHECK(!qs_tokenizer_encode(tok, "ok \xC3(", 5, &ids, &err));
  CHECK(strstr(err.msg, "not valid UTF-8") && strstr(err.msg, "offset 3"));
  CHECK_INT(ids.len, 1); /* a failed call leaves earlier ids alone */
  const char nul_text[] = "a\0b";
  ids.len = 0;
  CHECK(qs_tokenizer_encode(tok, nul_text, 3, &ids, &err));
  qs_strbuf out = {0};
  CHECK(qs_tokenizer_decode(tok, ids.ids, ids.len, &out, &err));
  CHECK(out.len == 3 && memcmp(out.s, nul_text, 3) == 0);
  qs_sb_clear(&out);
  const int32_t some[] = {TINY_ID_X, TINY_ID_ABC, 220, TINY_ID_S_ACUTE};
  CHECK(qs_tokenizer_decode(tok, some, 4, &out, &err));
  CHECK_STR(qs_sb_str(&out), "<x>abc \xc5\x9b");
  const int32_t bad[] = {TINY_ID_AB, 99999};
  CHECK(!qs_tokenizer_decode(tok, bad, 2, &out, &err));
  CHECK(strstr(err.msg, "id 99999") != NULL);
  CHECK_STR(qs_sb_str(&out), "<x>abc \xc5\x9b");
  qs_sb_free(&out);
  qs_token_ids_free(&ids);
}

/* Very long pieces go through the heap-based merge loop in linear-ish time. */
static void test_long_pieces(const qs_tokenizer *tok) {
  size_t n = 200000;
  char *s = malloc(n);
  memset(s, 'a', n);
  qs_token_ids ids = {0};
  qs_error err = {0};
  CHECK(qs_tokenizer_encode(tok, s, n, &ids, &err));
  size_t aa = 0;
  for (size_t i = 0; i < ids.len; i++) aa += ids.ids[i] == TINY_ID_AA;
  CHECK_INT(ids.len, n / 2);
  CHECK_INT(aa, n / 2);
  memset(s, ' ', n);
  ids.len = 0;
  CHECK(qs_tokenizer_encode(tok, s, n, &ids, &err));
  CHECK_INT(ids.len, n);
  /* Repeated runs that stress the regex's backtracking alternatives. */
  static const char *const units[] = {" \n", "\r\n ", "'s", ".,", "\t ", "\xe3\x80\x80", "a1", " !"};
  int round_trips = 0;
  for (size_t u = 0; u < sizeof units / sizeof *units; u++) {
    qs_strbuf text = {0}, back = {0};
    for (int k = 0; k < 20000; k++) qs_sb_append(&text, units[u]);
    ids.len = 0;
    round_trips += qs_tokenizer_encode(tok, text.s, text.len, &ids, &err) &&
                   qs_tokenizer_decode(tok, ids.ids, ids.len, &back, &err) && back.len == text.len &&
                   memcmp(back.s, text.s, text.len) == 0;
    qs_sb_free(&text);
    qs_sb_free(&back);
  }
  CHECK_INT(round_trips, sizeof units / sizeof *units);
  qs_token_ids_free(&ids);
  free(s);
}

/* Sets root[path] (a "/"-separated path of keys and array indices) to value. */
static void set_path(json_t *root, const char *path, json_t *value) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  json_t *node = root;
  char *save, *part = strtok_r(buf, "/", &save);
  for (char *next; part; part = next) {
    next = strtok_r(NULL, "/", &save);
    bool is_index = part[0] >= '0' && part[0] <= '9';
    if (!next) {
      if (!value) json_object_del(node, part);
      else if (is_index) json_array_set_new(node, (size_t)atoi(part), value);
      else json_object_set_new(node, part, value);
      return;
    }
    node = is_index ? json_array_get(node, (size_t)atoi(part)) : json_object_get(node, part);
  }
}

static void expect_load_error(const char *path, json_t *value, const char *expect) {
  json_t *root = tiny_tokenizer(false);
  set_path(root, path, value);
  qs_error err = {0};
  qs_tokenizer *tok = load_tree(root, "tiny.json", &err);
  CHECK(tok == NULL);
  if (!strstr(err.msg, "tokenizer file 'tiny.json'") || !strstr(err.msg, expect))
    fprintf(stderr, "  %s: message [%s] lacks [%s]\n", path, err.msg, expect);
  CHECK(strstr(err.msg, "tokenizer file 'tiny.json'") && strstr(err.msg, expect));
  qs_tokenizer_free(tok);
  json_decref(root);
}

static void test_load_errors(void) {
  expect_load_error("model/type", json_string("WordPiece"), "model.type");
  expect_load_error("added_tokens/0/lstrip", json_true(), "added_tokens[0].lstrip");
  expect_load_error("added_tokens/1/single_word", json_true(), "added_tokens[1].single_word");
  expect_load_error("added_tokens/2/rstrip", json_true(), "added_tokens[2].rstrip");
  expect_load_error("added_tokens/0/content", json_string(""), "added_tokens[0].content");
  expect_load_error("added_tokens/0/id", json_integer(0), "already the vocabulary entry");
  expect_load_error("added_tokens/1/id", json_integer(TINY_ID_X), "used by two added tokens");
  expect_load_error("model/merges/0", json_pack("[s, s]", "b", "zz"), "model.merges[0]");
  expect_load_error("model/merges/1", json_string("a b c"), "model.merges[1]");
  expect_load_error("model/merges/2", json_integer(5), "model.merges[2]");
  expect_load_error("model/merges", json_object(), "model.merges");
  expect_load_error("pre_tokenizer", NULL, "pre_tokenizer");
  expect_load_error("pre_tokenizer/pretokenizers/0/behavior", json_string("Removed"), "behavior");
  expect_load_error("pre_tokenizer/pretokenizers/0/pattern/Regex", json_string("(a"), "Regex");
  expect_load_error("pre_tokenizer/pretokenizers/1/use_regex", json_true(), "use_regex");
  expect_load_error("decoder/type", json_string("WordPiece"), "decoder.type");
  expect_load_error("normalizer/type", json_string("NFKC"), "normalizer.type");
  expect_load_error("post_processor/type", json_string("TemplateProcessing"), "post_processor.type");
  expect_load_error("model/vocab/Ġ", NULL, "lacks the byte-level symbol");
  expect_load_error("model/vocab/ab", json_integer(-1), "out of range");
  expect_load_error("model/vocab/ab", json_string("x"), "expected an integer id");
  expect_load_error("model/vocab/ab", json_integer(0), "used by both");
  expect_load_error("model/byte_fallback", json_true(), "model.byte_fallback");
  expect_load_error("model/dropout", json_real(0.1), "model.dropout");
  expect_load_error("model/unk_token", json_string("<unk>"), "model.unk_token");
  expect_load_error("model/vocab", json_array(), "model.vocab");
  qs_error err = {0};
  qs_tokenizer *tok;
  CHECK(!qs_tokenizer_load_json("[1, 2", 5, "bad.json", &tok, &err));
  CHECK(strstr(err.msg, "'bad.json'") && strstr(err.msg, "invalid JSON"));
  CHECK(!qs_tokenizer_load_json("[]", 2, "bad.json", &tok, &err));
  CHECK(strstr(err.msg, "expected an object") != NULL);
  CHECK(!qs_tokenizer_load("/nonexistent/tokenizer.json", &tok, &err));
  CHECK(strstr(err.msg, "/nonexistent/tokenizer.json") != NULL);
}

/* Settings that do not change ids are accepted whatever their value; without
 * a normalizer the text is not composed, so "s" + U+0301 stays two symbols. */
static void test_accepted_variants(void) {
  json_t *root = tiny_tokenizer(false);
  set_path(root, "decoder/use_regex", json_true());
  set_path(root, "decoder/add_prefix_space", json_true());
  set_path(root, "post_processor", json_null());
  set_path(root, "normalizer", json_null());
  qs_error err = {0};
  qs_tokenizer *tok = load_tree(root, "variant.json", &err);
  CHECK(tok != NULL);
  if (tok) {
    EXPECT_IDS(tok, "s\xcc\x81", B('s'), B('\xcc'), B('\x81'));
    EXPECT_IDS(tok, "\xc5\x9b", TINY_ID_S_ACUTE);
  }
  qs_tokenizer_free(tok);
  json_decref(root);
}

/* Both merge spellings give the same tokenizer. */
static void test_merge_string_form(const qs_tokenizer *pairs) {
  json_t *root = tiny_tokenizer(true);
  qs_error err = {0};
  qs_tokenizer *strings = load_tree(root, "strings.json", &err);
  CHECK(strings != NULL);
  if (strings) {
    const char *text = "abc abab aaa  a <x>y";
    qs_token_ids a = {0}, b = {0};
    CHECK(qs_tokenizer_encode(pairs, text, strlen(text), &a, &err));
    CHECK(qs_tokenizer_encode(strings, text, strlen(text), &b, &err));
    CHECK(a.len == b.len && memcmp(a.ids, b.ids, a.len * sizeof *a.ids) == 0);
    qs_token_ids_free(&a);
    qs_token_ids_free(&b);
  }
  qs_tokenizer_free(strings);
  json_decref(root);
}

/* A place in a JSON tree: member `key` of an object, or element `index` of an array. */
typedef struct json_place {
  json_t *parent;
  const char *key;
  size_t index;
} json_place;

static void collect_places(json_t *node, json_place **places, size_t *n, size_t *cap) {
  const char *key;
  json_t *child;
  size_t index;
  if (json_is_object(node)) {
    json_object_foreach(node, key, child) {
      qs_grow((void **)places, cap, *n + 1, sizeof **places);
      (*places)[(*n)++] = (json_place){.parent = node, .key = key};
      collect_places(child, places, n, cap);
    }
  } else if (json_is_array(node)) {
    json_array_foreach(node, index, child) {
      qs_grow((void **)places, cap, *n + 1, sizeof **places);
      (*places)[(*n)++] = (json_place){.parent = node, .index = index};
      collect_places(child, places, n, cap);
    }
  }
}

static json_t *random_json_value(void) {
  switch (rng_below(10)) {
    case 0: return json_null();
    case 1: return json_true();
    case 2: return json_integer((json_int_t)rng_below(300) - 5);
    case 3: return json_integer(1LL << 40);
    case 4: return json_real(0.5);
    case 5: return json_string("");
    case 6: return json_string("a b");
    case 7: return json_pack("[s, s]", "a", "b");
    case 8: return json_array();
    default: return json_object();
  }
}

/* Structural corruption: one value of the tree replaced by a random value of
 * another shape, or removed. Loads succeed or fail with one line naming the file. */
static void fuzz_structure(void) {
  int named = 0, loaded = 0, iterations = 1500;
  for (int it = 0; it < iterations; it++) {
    json_t *root = tiny_tokenizer(it % 2 == 0);
    json_place *places = NULL;
    size_t n = 0, cap = 0;
    collect_places(root, &places, &n, &cap);
    /* Most places are vocabulary entries: every other time, draw until one is not. */
    const json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    size_t pick = rng_below(n);
    while (it % 2 && places[pick].parent == vocab) pick = rng_below(n);
    json_place *p = &places[pick];
    bool remove = rng_below(5) == 0;
    if (p->key && remove) json_object_del(p->parent, p->key);
    else if (p->key) json_object_set_new(p->parent, p->key, random_json_value());
    else if (remove) json_array_remove(p->parent, p->index);
    else json_array_set_new(p->parent, p->index, random_json_value());
    free(places);
    qs_error err = {0};
    qs_tokenizer *tok = load_tree(root, "fuzz.json", &err);
    if (tok) {
      loaded++;
      named++;
      qs_token_ids ids = {0};
      qs_tokenizer_encode(tok, "abc <x>y aaa", 12, &ids, &err);
      qs_token_ids_free(&ids);
      qs_tokenizer_free(tok);
    } else {
      named += strncmp(err.msg, "tokenizer file 'fuzz.json'", 26) == 0 && !strchr(err.msg, '\n');
    }
    json_decref(root);
  }
  CHECK_INT(named, iterations);
  printf("structure fuzz: %d of %d altered files still loaded\n", loaded, iterations);
}

static const char *const FUZZ_INSERTS[] = {"\"", "{", "}", "[", "]", ",", ":", "null", "-1",
                                           "1e999", "\\u0000", "\\ud800", "true", "\"x\""};

static void mutate(qs_strbuf *s) {
  size_t n = s->len, at = rng_below(n);
  switch (rng_below(5)) {
    case 0: s->s[at] = (char)rng_below(256); break;
    case 1: { /* delete a range */
      size_t k = 1 + rng_below(16);
      if (at + k > n) k = n - at;
      memmove(s->s + at, s->s + at + k, n - at - k);
      s->len -= k;
      break;
    }
    case 2: s->len = at; break; /* truncate */
    default: {
      const char *ins = FUZZ_INSERTS[rng_below(sizeof FUZZ_INSERTS / sizeof *FUZZ_INSERTS)];
      qs_strbuf t = {0};
      qs_sb_append_n(&t, s->s, at);
      qs_sb_append(&t, ins);
      qs_sb_append_n(&t, s->s + at, n - at);
      qs_sb_free(s);
      *s = t;
    }
  }
  if (s->s) s->s[s->len] = '\0';
}

/* Corrupted files load or fail with one message naming the file; never crash. */
static void fuzz_loading(void) {
  json_t *root = tiny_tokenizer(false);
  char *text = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  int named = 0, loaded = 0, iterations = 1500;
  for (int it = 0; it < iterations; it++) {
    qs_strbuf s = {0};
    qs_sb_append(&s, text);
    for (size_t m = 1 + rng_below(3); m > 0 && s.len > 0; m--) mutate(&s);
    qs_error err = {0};
    qs_tokenizer *tok;
    if (qs_tokenizer_load_json(s.s ? s.s : "", s.len, "fuzz.json", &tok, &err)) {
      loaded++;
      named++;
      qs_token_ids ids = {0};
      qs_strbuf out = {0};
      if (qs_tokenizer_encode(tok, "abc <x> aaa", 11, &ids, &err))
        qs_tokenizer_decode(tok, ids.ids, ids.len, &out, &err);
      qs_sb_free(&out);
      qs_token_ids_free(&ids);
      qs_tokenizer_free(tok);
    } else {
      named += strncmp(err.msg, "tokenizer file 'fuzz.json'", 26) == 0 && !strchr(err.msg, '\n');
    }
    qs_sb_free(&s);
  }
  free(text);
  CHECK_INT(named, iterations);
  printf("loader fuzz: %d of %d mutated files still loaded\n", loaded, iterations);
}

/* No atom lets "<x>" and "y" meet: the added token "<x>y" followed by U+0301
 * decodes to "<x>y" + U+0301 (raw added tokens are split out before NFC, as
 * in the reference), which is not the NFC of the whole text the check uses. */
static const char *const FUZZ_ATOMS[] = {"a", "b", "c", "s", "\xcc\x81", "\xc3\xa9", " ", "  ", "\n",
                                         "\r\n", "\t", "<x>", "<xy", "<", ">", "'s", "'LL", "7",
                                         "\xe4\xb8\xad", "\xf0\x9f\x98\x80", "\xe3\x80\x80", "!?",
                                         "<|endoftext|>", "\xc2\xa0", "A\xcc\x8a"};

static void fuzz_encoding(const qs_tokenizer *tok) {
  int round_trips = 0, consistent = 0, total = 3000;
  qs_token_ids ids = {0};
  qs_strbuf out = {0};
  for (int it = 0; it < total; it++) {
    qs_strbuf s = {0};
    bool raw_bytes = it % 3 == 0;
    for (size_t k = rng_below(24); k > 0; k--) {
      if (raw_bytes) qs_sb_putc(&s, (char)rng_below(256));
      else qs_sb_append(&s, FUZZ_ATOMS[rng_below(sizeof FUZZ_ATOMS / sizeof *FUZZ_ATOMS)]);
    }
    qs_error err = {0};
    ids.len = 0;
    bool valid = qs_utf8_invalid_offset(qs_sb_str(&s), s.len) == s.len;
    bool ok = qs_tokenizer_encode(tok, qs_sb_str(&s), s.len, &ids, &err);
    consistent += ok == valid && (ok || strstr(err.msg, "not valid UTF-8"));
    if (!ok) {
      round_trips++;
      qs_sb_free(&s);
      continue;
    }
    /* Decoding gives back the NFC form of the text. */
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t nfc_len = utf8proc_map((const utf8proc_uint8_t *)qs_sb_str(&s), (utf8proc_ssize_t)s.len,
                                            &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    qs_sb_clear(&out);
    bool decoded = qs_tokenizer_decode(tok, ids.ids, ids.len, &out, &err);
    round_trips += decoded && nfc_len >= 0 && out.len == (size_t)nfc_len &&
                   memcmp(qs_sb_str(&out), nfc, (size_t)nfc_len) == 0;
    free(nfc);
    qs_sb_free(&s);
  }
  CHECK_INT(consistent, total);
  CHECK_INT(round_trips, total);
  qs_sb_free(&out);
  qs_token_ids_free(&ids);
}

/* One loaded tokenizer encodes from several threads at once with the same
 * results as one thread (encode keeps all its state per call). */
static void test_threads(const qs_tokenizer *tok) {
  enum { N = 400 };
  qs_strbuf texts[N];
  qs_token_ids serial[N], parallel[N];
  for (int i = 0; i < N; i++) {
    texts[i] = (qs_strbuf){0};
    for (size_t k = 1 + rng_below(40); k > 0; k--)
      qs_sb_append(&texts[i], FUZZ_ATOMS[rng_below(sizeof FUZZ_ATOMS / sizeof *FUZZ_ATOMS)]);
    serial[i] = parallel[i] = (qs_token_ids){0};
    qs_error err = {0};
    qs_tokenizer_encode(tok, texts[i].s, texts[i].len, &serial[i], &err);
  }
  int failures = 0;
#pragma omp parallel for num_threads(4) schedule(dynamic, 1) reduction(+ : failures)
  for (int i = 0; i < N; i++) {
    qs_error err = {0};
    failures += !qs_tokenizer_encode(tok, texts[i].s, texts[i].len, &parallel[i], &err);
  }
  int same = 0;
  for (int i = 0; i < N; i++) {
    same += serial[i].len == parallel[i].len &&
            (serial[i].len == 0 ||
             memcmp(serial[i].ids, parallel[i].ids, serial[i].len * sizeof *serial[i].ids) == 0);
    qs_sb_free(&texts[i]);
    qs_token_ids_free(&serial[i]);
    qs_token_ids_free(&parallel[i]);
  }
  CHECK_INT(failures, 0);
  CHECK_INT(same, N);
}

int main(void) {
  test_byte_map();
  test_utf8_validation();
  json_t *root = tiny_tokenizer(false);
  qs_error err = {0};
  qs_tokenizer *tok = load_tree(root, "tiny.json", &err);
  json_decref(root);
  if (!tok) {
    fprintf(stderr, "tiny tokenizer failed to load: %s\n", err.msg);
    return 1;
  }
  test_pretokenize();
  test_bpe_and_pieces(tok);
  test_batch(tok);
  test_added_tokens(tok);
  test_encode_errors_and_decode(tok);
  test_long_pieces(tok);
  test_merge_string_form(tok);
  test_accepted_variants();
  test_load_errors();
  fuzz_loading();
  fuzz_structure();
  fuzz_encoding(tok);
  test_threads(tok);
  qs_tokenizer_free(tok);
  return check_summary("test_tokenizer");
}
