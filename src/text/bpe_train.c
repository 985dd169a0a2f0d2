#define _POSIX_C_SOURCE 200809L
#include "text/bpe_train.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "text/tok_hash.h"
#include "text/tokenizer.h"

enum { N_BYTES = 256 };

/* One distinct piece of the training text, as current symbol ids. */
typedef struct word {
  int32_t *sym;
  size_t n;
  int64_t count; /* occurrences of the piece in all texts */
} word;

typedef struct trainer {
  qs_strmap piece_counts; /* piece bytes → occurrences */
  word *words;
  size_t n_words;
  qs_u64map pair_counts;  /* (left, right) → weighted occurrences (0 once merged away) */
  qs_strmap ids;          /* spelling → id */
  qs_bpe_vocab *v;
  size_t merges_cap;
} trainer;

static bool count_piece(void *ctx, const char *piece, size_t len, qs_error *err) {
  (void)err;
  trainer *t = ctx;
  (*qs_strmap_upsert(&t->piece_counts, piece, len, 0, NULL))++;
  return true;
}

static int32_t add_token(trainer *t, const char *spelling, size_t len) {
  qs_bpe_vocab *v = t->v;
  int32_t id = (int32_t)v->n_tokens;
  v->spellings = qs_realloc(v->spellings, (v->n_tokens + 1) * sizeof *v->spellings);
  v->spellings[v->n_tokens++] = qs_strndup(spelling, len);
  qs_strmap_upsert(&t->ids, spelling, len, id, NULL);
  return id;
}

/* The 256 byte tokens in code-point order of their spellings; fills the byte → id table. */
static void add_byte_tokens(trainer *t, int32_t byte_id[N_BYTES]) {
  for (uint32_t cp = 0; t->v->n_tokens < N_BYTES; cp++) {
    int b = qs_codepoint_to_byte(cp);
    if (b < 0) continue;
    qs_strbuf s = {0};
    char byte = (char)b;
    qs_byte_level_encode(&byte, 1, &s);
    byte_id[b] = add_token(t, s.s, s.len);
    qs_sb_free(&s);
  }
}

static void count_word_pairs(trainer *t, const word *w, bool add) {
  for (size_t i = 0; i + 1 < w->n; i++) {
    uint64_t *c = qs_u64map_upsert(&t->pair_counts, qs_pair_key(w->sym[i], w->sym[i + 1]), 0, NULL);
    *c = add ? *c + (uint64_t)w->count : *c - (uint64_t)w->count;
  }
}

static void build_words(trainer *t, const int32_t byte_id[N_BYTES]) {
  const qs_strmap *pc = &t->piece_counts;
  t->words = qs_calloc(pc->count ? pc->count : 1, sizeof *t->words);
  for (size_t i = 0; i < pc->cap; i++) {
    const qs_strmap_slot *s = &pc->slots[i];
    if (s->hash == 0) continue;
    const unsigned char *bytes = (const unsigned char *)qs_strmap_slot_key(pc, s);
    word *w = &t->words[t->n_words++];
    w->sym = qs_malloc(s->key_len * sizeof *w->sym);
    w->n = s->key_len;
    w->count = s->value;
    for (size_t k = 0; k < w->n; k++) w->sym[k] = byte_id[bytes[k]];
    count_word_pairs(t, w, true);
  }
}

/* Most frequent pair; ties go to the smaller (left, right). False when none is left. */
static bool best_pair(const trainer *t, uint64_t *key, uint64_t *count) {
  *count = 0;
  for (size_t i = 0; i < t->pair_counts.cap; i++) {
    const qs_u64map_slot *s = &t->pair_counts.slots[i];
    if (s->key == QS_U64MAP_EMPTY || s->value == 0) continue;
    if (s->value > *count || (s->value == *count && s->key < *key)) {
      *key = s->key;
      *count = s->value;
    }
  }
  return *count > 0;
}

static bool word_has_pair(const word *w, int32_t a, int32_t b) {
  for (size_t i = 0; i + 1 < w->n; i++)
    if (w->sym[i] == a && w->sym[i + 1] == b) return true;
  return false;
}

/* Replaces every (a, b) in the word by merged, left to right, and moves the
 * word's pair counts from the old symbols to the new ones. */
static void merge_in_word(trainer *t, word *w, int32_t a, int32_t b, int32_t merged) {
  count_word_pairs(t, w, false);
  size_t j = 0;
  for (size_t i = 0; i < w->n; j++) {
    if (i + 1 < w->n && w->sym[i] == a && w->sym[i + 1] == b) {
      w->sym[j] = merged;
      i += 2;
    } else {
      w->sym[j] = w->sym[i++];
    }
  }
  w->n = j;
  count_word_pairs(t, w, true);
}

static void apply_merge(trainer *t, int32_t a, int32_t b) {
  qs_bpe_vocab *v = t->v;
  qs_strbuf joined = {0};
  qs_sb_append(&joined, v->spellings[a]);
  qs_sb_append(&joined, v->spellings[b]);
  const int64_t *existing = qs_strmap_get(&t->ids, joined.s, joined.len);
  int32_t merged = existing ? (int32_t)*existing : add_token(t, joined.s, joined.len);
  qs_sb_free(&joined);
  qs_grow((void **)&v->merges, &t->merges_cap, v->n_merges + 1, sizeof *v->merges);
  v->merges[v->n_merges++] = (qs_bpe_merge){.left = a, .right = b, .result = merged};
  for (size_t i = 0; i < t->n_words; i++)
    if (word_has_pair(&t->words[i], a, b)) merge_in_word(t, &t->words[i], a, b, merged);
}

static void trainer_free(trainer *t) {
  for (size_t i = 0; i < t->n_words; i++) free(t->words[i].sym);
  free(t->words);
  qs_strmap_free(&t->piece_counts);
  qs_u64map_free(&t->pair_counts);
  qs_strmap_free(&t->ids);
}

static bool count_pieces(trainer *t, const char *const *texts, const size_t *lens, size_t n_texts,
                         qs_error *err) {
  qs_pretokenizer *pre;
  if (!qs_pretokenizer_create(QS_QWEN3_SPLIT_PATTERN, true, &pre, err)) return false;
  bool ok = true;
  for (size_t i = 0; ok && i < n_texts; i++) {
    size_t len = lens ? lens[i] : strlen(texts[i]);
    ok = qs_pretokenize(pre, texts[i], len, count_piece, t, err) ||
         qs_fail_context(err, "training text %zu: ", i);
  }
  qs_pretokenizer_free(pre);
  return ok;
}

bool qs_bpe_train(const char *const *texts, const size_t *lens, size_t n_texts,
                  const qs_bpe_options *opt, qs_bpe_vocab *out, qs_error *err) {
  if (opt->vocab_size < N_BYTES)
    return qs_fail(err, QS_EXIT_USAGE, "BPE vocabulary size %zu is below the %d byte tokens",
                   opt->vocab_size, N_BYTES);
  if (opt->min_pair_count < 1)
    return qs_fail(err, QS_EXIT_USAGE, "BPE minimum pair count must be at least 1, not %lld",
                   (long long)opt->min_pair_count);
  *out = (qs_bpe_vocab){0};
  trainer t = {.v = out};
  int32_t byte_id[N_BYTES];
  add_byte_tokens(&t, byte_id);
  if (!count_pieces(&t, texts, lens, n_texts, err)) {
    trainer_free(&t);
    qs_bpe_vocab_free(out);
    return false;
  }
  build_words(&t, byte_id);
  uint64_t key = 0, count;
  while (out->n_tokens < opt->vocab_size && best_pair(&t, &key, &count) &&
         count >= (uint64_t)opt->min_pair_count)
    apply_merge(&t, (int32_t)(key >> 32), (int32_t)(uint32_t)key);
  trainer_free(&t);
  return true;
}

void qs_bpe_vocab_free(qs_bpe_vocab *v) {
  for (size_t i = 0; i < v->n_tokens; i++) free(v->spellings[i]);
  free(v->spellings);
  free(v->merges);
  *v = (qs_bpe_vocab){0};
}

/* ---- tokenizer.json --------------------------------------------------- */

static json_t *byte_level_step(void) {
  return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                   "trim_offsets", 0, "use_regex", 0);
}

static json_t *added_tokens_json(const qs_bpe_vocab *v) {
  static const char *const contents[QS_BPE_N_ADDED_TOKENS] = QS_BPE_ADDED_TOKENS;
  json_t *list = json_array();
  for (size_t i = 0; i < QS_BPE_N_ADDED_TOKENS; i++)
    json_array_append_new(list, json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}",
                                          "id", (json_int_t)(v->n_tokens + i), "content", contents[i],
                                          "single_word", 0, "lstrip", 0, "rstrip", 0,
                                          "normalized", 0, "special", 1));
  return list;
}

static json_t *pre_tokenizer_json(void) {
  json_t *split = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex",
                            QS_QWEN3_SPLIT_PATTERN, "behavior", "Isolated", "invert", 0);
  return json_pack("{s:s, s:[o, o]}", "type", "Sequence", "pretokenizers", split, byte_level_step());
}

static json_t *model_json(const qs_bpe_vocab *v) {
  json_t *vocab = json_object();
  for (size_t i = 0; i < v->n_tokens; i++)
    json_object_set_new(vocab, v->spellings[i], json_integer((json_int_t)i));
  json_t *merges = json_array();
  for (size_t i = 0; i < v->n_merges; i++)
    json_array_append_new(merges, json_pack("[s, s]", v->spellings[v->merges[i].left],
                                            v->spellings[v->merges[i].right]));
  return json_pack("{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                   "unk_token", "continuing_subword_prefix", "", "end_of_word_suffix", "",
                   "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0, "vocab", vocab, "merges",
                   merges);
}

char *qs_bpe_tokenizer_json(const qs_bpe_vocab *v) {
  json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:{s:s}, s:o, s:o, s:o, s:o}", "version", "1.0",
                           "truncation", "padding", "added_tokens", added_tokens_json(v),
                           "normalizer", "type", "NFC", "pre_tokenizer", pre_tokenizer_json(),
                           "post_processor", byte_level_step(), "decoder", byte_level_step(),
                           "model", model_json(v));
  char *text = json_dumps(root, JSON_INDENT(2));
  json_decref(root);
  return text;
}

bool qs_bpe_write_tokenizer_json(const qs_bpe_vocab *v, const char *path, qs_error *err) {
  char *text = qs_bpe_tokenizer_json(v);
  if (!text) return qs_fail(err, QS_EXIT_RUNTIME, "out of memory serializing '%s'", path);
  bool ok = qs_write_file_atomic(path, text, strlen(text), err);
  free(text);
  return ok;
}
