/* BPE trainer: merges are the most frequent pairs with deterministic ties
 * (hand-computed cases), and the written tokenizer.json reloads with
 * qs_tokenizer_load_json and round-trips text. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "check.h"
#include "text/bpe_train.h"
#include "text/tokenizer.h"

/* Byte ids follow byte-level code-point order: '!'..'~' are 0..93. */
static int32_t ascii_id(char c) { return (int32_t)(c - '!'); }
enum { ID_SPACE = 220 };

static bool train(const char *const *texts, size_t n, size_t vocab_size, int64_t min_count,
                  qs_bpe_vocab *v) {
  qs_bpe_options opt = {.vocab_size = vocab_size, .min_pair_count = min_count};
  qs_error err = {0};
  bool ok = qs_bpe_train(texts, NULL, n, &opt, v, &err);
  if (!ok) fprintf(stderr, "training failed: %s\n", err.msg);
  return ok;
}

/* "aaab aab ab" → pieces "aaab", " aab", " ab": (a,a) and (a,b) both occur 3
 * times, (a,a) has the smaller ids and goes first; then (a,b) occurs twice;
 * then every pair occurs once and the smallest is (Ġ, aa). */
static void test_hand_computed_merges(void) {
  const char *texts[] = {"aaab aab ab"};
  qs_bpe_vocab v;
  if (!train(texts, 1, 300, 2, &v)) { CHECK(false); return; }
  CHECK_INT(v.n_tokens, 258);
  CHECK_INT(v.n_merges, 2);
  CHECK(v.merges[0].left == ascii_id('a') && v.merges[0].right == ascii_id('a') && v.merges[0].result == 256);
  CHECK(v.merges[1].left == ascii_id('a') && v.merges[1].right == ascii_id('b') && v.merges[1].result == 257);
  CHECK_STR(v.spellings[256], "aa");
  CHECK_STR(v.spellings[257], "ab");
  CHECK_STR(v.spellings[ID_SPACE], "\xc4\xa0");
  qs_bpe_vocab_free(&v);

  if (!train(texts, 1, 259, 1, &v)) { CHECK(false); return; }
  CHECK_INT(v.n_tokens, 259);
  CHECK(v.merges[2].left == ID_SPACE && v.merges[2].right == 256);
  CHECK_STR(v.spellings[258], "\xc4\xa0" "aa");
  qs_bpe_vocab_free(&v);

  if (!train(texts, 1, 257, 1, &v)) { CHECK(false); return; }
  CHECK_INT(v.n_tokens, 257); /* stops at the requested size */
  qs_bpe_vocab_free(&v);
}

/* "the" occurs 3 times, "at" 3 times (in cat/hat/mat): ties at 3 resolve by
 * ids, a(64)t(83) < h(71)e(68) < t(83)h(71); "the" then follows from t + he. */
static const char *const THE_CAT[] = {"the cat", "the hat", "the mat"};

static void test_frequency_across_texts(void) {
  qs_bpe_vocab v;
  if (!train(THE_CAT, 3, 1000, 2, &v)) { CHECK(false); return; }
  CHECK_INT(v.n_tokens, 259);
  CHECK_STR(v.spellings[256], "at");
  CHECK_STR(v.spellings[257], "he");
  CHECK_STR(v.spellings[258], "the");
  CHECK(v.merges[2].left == ascii_id('t') && v.merges[2].right == 257);
  qs_bpe_vocab_free(&v);
}

static void test_reload(void) {
  qs_bpe_vocab v;
  if (!train(THE_CAT, 3, 1000, 2, &v)) { CHECK(false); return; }
  char *json = qs_bpe_tokenizer_json(&v);
  qs_error err = {0};
  qs_tokenizer *tok;
  CHECK(json != NULL);
  bool loaded = json && qs_tokenizer_load_json(json, strlen(json), "trained.json", &tok, &err);
  if (!loaded) fprintf(stderr, "%s\n", err.msg);
  CHECK(loaded);
  if (loaded) {
    qs_token_ids ids = {0};
    CHECK(qs_tokenizer_encode(tok, "the cat<|endoftext|>", 20, &ids, &err));
    const int32_t want[] = {258, ID_SPACE, ascii_id('c'), 256, 259};
    CHECK_INT(ids.len, 5);
    for (size_t i = 0; i < 5 && i < ids.len; i++) CHECK_INT(ids.ids[i], want[i]);
    qs_strbuf back = {0};
    CHECK(qs_tokenizer_decode(tok, ids.ids, ids.len, &back, &err));
    CHECK_STR(qs_sb_str(&back), "the cat<|endoftext|>");
    CHECK_INT(qs_tokenizer_token_id(tok, "<|im_start|>"), 260);
    CHECK_INT(qs_tokenizer_token_id(tok, "<|im_end|>"), 261);
    CHECK_INT(qs_tokenizer_vocab_size(tok), 262);
    qs_sb_free(&back);
    qs_token_ids_free(&ids);
    qs_tokenizer_free(tok);
  }
  free(json);
  qs_bpe_vocab_free(&v);
}

static const char *const WORDS[] = {"a", "dog", "runs", "across", "the", "green", "field", "two",
                                    "people", "near", "café", "Zürich", "naïve", "über", "ставит",
                                    "小狗", "在", "草地", "上", "🐶", "12", "2026", "'s", "don't",
                                    " ", "\n", "!", "...", "e\xcc\x81", "\xe3\x80\x80"};

static char *random_text(uint64_t *state) {
  qs_strbuf s = {0};
  size_t n = 3 + (*state % 17);
  for (size_t i = 0; i < n; i++) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    qs_sb_append(&s, WORDS[(*state >> 33) % (sizeof WORDS / sizeof *WORDS)]);
    qs_sb_append(&s, (*state >> 20) % 3 ? " " : "");
  }
  return qs_sb_take(&s);
}

/* A larger run: spellings are unique and each merge spells left + right;
 * the written file reloads and every training text decodes back (in NFC). */
static void test_larger_run(void) {
  enum { N = 300 };
  char *texts[N];
  uint64_t state = 42;
  for (int i = 0; i < N; i++) texts[i] = random_text(&state);
  qs_bpe_vocab v;
  if (!train((const char *const *)texts, N, 700, 1, &v)) { CHECK(false); return; }
  CHECK(v.n_tokens > 400); /* the texts have far more than 150 distinct pairs */
  int spelled_right = 0;
  for (size_t i = 0; i < v.n_merges; i++) {
    qs_strbuf s = {0};
    qs_sb_printf(&s, "%s%s", v.spellings[v.merges[i].left], v.spellings[v.merges[i].right]);
    spelled_right += strcmp(s.s, v.spellings[v.merges[i].result]) == 0;
    qs_sb_free(&s);
  }
  CHECK_INT(spelled_right, v.n_merges);
  int distinct = 1;
  for (size_t i = 0; i < v.n_tokens; i++)
    for (size_t k = i + 1; k < v.n_tokens; k++) distinct &= strcmp(v.spellings[i], v.spellings[k]) != 0;
  CHECK(distinct);
  char *json = qs_bpe_tokenizer_json(&v);
  qs_error err = {0};
  qs_tokenizer *tok;
  bool loaded = qs_tokenizer_load_json(json, strlen(json), "larger.json", &tok, &err);
  CHECK(loaded);
  int round_trips = 0;
  size_t bytes = 0, tokens = 0;
  for (int i = 0; loaded && i < N; i++) {
    qs_token_ids ids = {0};
    qs_strbuf back = {0};
    utf8proc_uint8_t *nfc = utf8proc_NFC((const utf8proc_uint8_t *)texts[i]);
    round_trips += qs_tokenizer_encode(tok, texts[i], strlen(texts[i]), &ids, &err) &&
                   qs_tokenizer_decode(tok, ids.ids, ids.len, &back, &err) &&
                   strcmp(qs_sb_str(&back), (const char *)nfc) == 0;
    bytes += strlen(texts[i]);
    tokens += ids.len;
    free(nfc);
    qs_sb_free(&back);
    qs_token_ids_free(&ids);
  }
  CHECK_INT(round_trips, N);
  /* The vocabulary was learned from these very texts: it must compress them well. */
  CHECK(tokens * 3 < bytes);
  if (loaded) qs_tokenizer_free(tok);
  free(json);
  qs_bpe_vocab_free(&v);
  for (int i = 0; i < N; i++) free(texts[i]);
}

static void test_errors(void) {
  qs_bpe_vocab v;
  qs_error err = {0};
  const char *texts[] = {"fine", "bad \xff"};
  qs_bpe_options small = {.vocab_size = 100, .min_pair_count = 1};
  CHECK(!qs_bpe_train(texts, NULL, 1, &small, &v, &err));
  CHECK_INT(err.status, QS_EXIT_USAGE);
  qs_bpe_options opt = {.vocab_size = 300, .min_pair_count = 1};
  CHECK(!qs_bpe_train(texts, NULL, 2, &opt, &v, &err));
  CHECK(strstr(err.msg, "training text 1") && strstr(err.msg, "not valid UTF-8"));
  CHECK(qs_bpe_train(texts, NULL, 1, &opt, &v, &err));
  CHECK(!qs_bpe_write_tokenizer_json(&v, "/nonexistent-dir/tokenizer.json", &err));
  CHECK(strstr(err.msg, "/nonexistent-dir/tokenizer.json") != NULL);
  qs_bpe_vocab_free(&v);
}

int main(void) {
  test_hand_computed_merges();
  test_frequency_across_texts();
  test_reload();
  test_larger_run();
  test_errors();
  return check_summary("test_bpe_train");
}
