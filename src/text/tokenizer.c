#define _POSIX_C_SOURCE 200809L
#include "text/tokenizer.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "text/tok_hash.h"

/* Limits of the packed merge table (below): ids take 20 bits and ranks 24.
 * Real vocabularies stay far below (Qwen3: 151,669 ids, 151,387 merges); the
 * id limit also keeps a corrupt file from making the id-indexed decode table
 * huge. The largest id is one less than all ones, which marks empty slots. */
enum { ID_BITS = 20, RANK_BITS = 24 };
enum { MAX_TOKEN_ID = (1 << ID_BITS) - 2, MAX_MERGES = 1 << RANK_BITS };

/* ======================================================================== */
/* Byte-level alphabet                                                      */
/* ======================================================================== */

/* Bytes that stand for themselves: printable Latin-1 except the soft hyphen. */
static bool byte_is_self_mapped(unsigned b) {
  return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

/* The other 68 bytes (0–32, 127–160, 173) take U+0100.. in increasing order. */
uint32_t qs_byte_to_codepoint(uint8_t b) {
  if (byte_is_self_mapped(b)) return b;
  if (b <= 32) return 256u + b;
  if (b <= 160) return 256u + 33u + (b - 127u);
  return 256u + 67u; /* 173 */
}

int qs_codepoint_to_byte(uint32_t cp) {
  if (cp < 256) return byte_is_self_mapped(cp) ? (int)cp : -1;
  if (cp < 256 + 33) return (int)(cp - 256);
  if (cp < 256 + 67) return (int)(cp - 256 - 33 + 127);
  if (cp == 256 + 67) return 173;
  return -1;
}

/* UTF-8 of a code point below U+0800 (all the alphabet needs); returns the length. */
static size_t utf8_put_small(uint32_t cp, char out[2]) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  out[0] = (char)(0xC0 | (cp >> 6));
  out[1] = (char)(0x80 | (cp & 0x3F));
  return 2;
}

void qs_byte_level_encode(const char *bytes, size_t n, qs_strbuf *out) {
  for (size_t i = 0; i < n; i++) {
    char u[2];
    size_t k = utf8_put_small(qs_byte_to_codepoint((uint8_t)bytes[i]), u);
    qs_sb_append_n(out, u, k);
  }
}

/* ======================================================================== */
/* UTF-8                                                                    */
/* ======================================================================== */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is invalid. */
static size_t utf8_sequence_length(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp, min;
  if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
  else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; min = 0x800; }
  else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
  else return 0;
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

size_t qs_utf8_invalid_offset(const char *text, size_t len) {
  const unsigned char *s = (const unsigned char *)text;
  size_t i = 0;
  while (i < len) {
    size_t k = utf8_sequence_length(s + i, len - i);
    if (k == 0) return i;
    i += k;
  }
  return len;
}

static bool check_utf8(const char *text, size_t len, qs_error *err) {
  size_t bad = qs_utf8_invalid_offset(text, len);
  if (bad == len) return true;
  return qs_fail(err, QS_EXIT_RUNTIME, "text is not valid UTF-8: byte 0x%02X at offset %zu",
                 (unsigned char)text[bad], bad);
}

static size_t skip_ascii(const char *s, size_t i, size_t n) {
  while (i < n && (unsigned char)s[i] < 0x80) i++;
  return i;
}

static size_t skip_non_ascii(const char *s, size_t i, size_t n) {
  while (i < n && (unsigned char)s[i] >= 0x80) i++;
  return i;
}

static bool append_nfc(qs_strbuf *out, const char *s, size_t n, qs_error *err) {
  utf8proc_uint8_t *dst = NULL;
  utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                    UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (r < 0) return qs_fail(err, QS_EXIT_RUNTIME, "NFC normalization failed: %s", utf8proc_errmsg(r));
  qs_sb_append_n(out, (const char *)dst, (size_t)r);
  free(dst);
  return true;
}

/* NFC of s[0..n). ASCII text is already in NFC and is returned in place;
 * otherwise *owned receives a buffer the caller frees.
 * Only the non-ASCII runs need work: an ASCII character is a starter that
 * never composes with what precedes it, so the text can be cut before any
 * ASCII character and normalized piecewise. Each run is normalized together
 * with the ASCII character before it, which may compose with it (e + U+0301). */
static bool nfc_normalize(const char *s, size_t n, char **owned, const char **out, size_t *out_len,
                          qs_error *err) {
  *owned = NULL;
  size_t run = skip_ascii(s, 0, n);
  if (run == n) {
    *out = s;
    *out_len = n;
    return true;
  }
  qs_strbuf b = {0};
  size_t done = 0;
  while (run < n) {
    size_t start = run > done ? run - 1 : run;
    size_t end = skip_non_ascii(s, run, n);
    qs_sb_append_n(&b, s + done, start - done);
    if (!append_nfc(&b, s + start, end - start, err)) {
      qs_sb_free(&b);
      return false;
    }
    done = end;
    run = skip_ascii(s, end, n);
  }
  qs_sb_append_n(&b, s + done, n - done);
  *out_len = b.len;
  *owned = qs_sb_take(&b);
  *out = *owned;
  return true;
}

/* ======================================================================== */
/* Pre-tokenizer                                                            */
/* ======================================================================== */

struct qs_pretokenizer {
  pcre2_code *re;
  bool nfc;
};

bool qs_pretokenizer_create(const char *pattern, bool nfc, qs_pretokenizer **out, qs_error *err) {
  int code;
  PCRE2_SIZE offset;
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                 &code, &offset, NULL);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(code, msg, sizeof msg);
    return qs_fail(err, QS_EXIT_RUNTIME, "cannot compile the split regex at offset %zu: %s",
                   (size_t)offset, (const char *)msg);
  }
  /* JIT is only a speed-up: where it is unavailable pcre2_match interprets. */
  (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
  qs_pretokenizer *p = qs_calloc(1, sizeof *p);
  p->re = re;
  p->nfc = nfc;
  *out = p;
  return true;
}

void qs_pretokenizer_free(qs_pretokenizer *p) {
  if (!p) return;
  pcre2_code_free(p->re);
  free(p);
}

/* Splits s[0..n) with the regex, behaviour "Isolated": every match is a piece
 * and so is every non-empty gap between matches. Empty matches make no piece
 * (the search resumes one character later), so no pattern can loop forever. */
static bool regex_split(const pcre2_code *re, pcre2_match_data *md, const char *s, size_t n,
                        qs_piece_fn on_piece, void *ctx, qs_error *err) {
  size_t gap_start = 0, pos = 0;
  while (pos < n) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      return qs_fail(err, QS_EXIT_RUNTIME, "split regex failed at offset %zu: %s", pos,
                     (const char *)msg);
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    size_t start = ov[0], end = ov[1];
    if (end == start) {
      if (start >= n) break;
      pos = start + utf8_sequence_length((const unsigned char *)s + start, n - start);
      continue;
    }
    if (start > gap_start && !on_piece(ctx, s + gap_start, start - gap_start, err)) return false;
    if (!on_piece(ctx, s + start, end - start, err)) return false;
    gap_start = pos = end;
  }
  if (n > gap_start && !on_piece(ctx, s + gap_start, n - gap_start, err)) return false;
  return true;
}

bool qs_pretokenize(const qs_pretokenizer *p, const char *text, size_t len, qs_piece_fn on_piece,
                    void *ctx, qs_error *err) {
  if (!check_utf8(text, len, err)) return false;
  char *owned = NULL;
  const char *s = text;
  size_t n = len;
  if (p->nfc && !nfc_normalize(text, len, &owned, &s, &n, err)) return false;
  pcre2_match_data *md = pcre2_match_data_create(1, NULL);
  bool ok = regex_split(p->re, md, s, n, on_piece, ctx, err);
  pcre2_match_data_free(md);
  free(owned);
  return ok;
}

/* ======================================================================== */
/* Merge table                                                              */
/* ======================================================================== */

/* Encoding does one lookup per adjacent symbol pair, each a likely cache miss
 * in a table of 150k merges, so a slot is a single word: (left id, right id,
 * rank) packed in 20 + 20 + 24 bits, a quarter of a general hash map's
 * footprint. The merged token comes from a per-rank array, read only when a
 * merge is applied. */
typedef struct merge_table {
  uint64_t *slots; /* UINT64_MAX when empty */
  size_t mask;
  int32_t *merged_by_rank;
} merge_table;

static uint64_t pair_bits(int32_t left, int32_t right) {
  return (uint64_t)left << ID_BITS | (uint64_t)right;
}

static void merge_table_init(merge_table *t, size_t n_merges) {
  size_t cap = 64;
  while (cap < n_merges + n_merges / 3) cap *= 2; /* load factor at most 3/4 */
  t->slots = qs_malloc(cap * sizeof *t->slots);
  for (size_t i = 0; i < cap; i++) t->slots[i] = UINT64_MAX;
  t->mask = cap - 1;
  t->merged_by_rank = qs_malloc((n_merges ? n_merges : 1) * sizeof *t->merged_by_rank);
}

/* Slot holding the pair, or the empty slot where it belongs. */
static size_t merge_slot(const merge_table *t, uint64_t pair) {
  size_t i = (size_t)qs_hash_u64(pair) & t->mask;
  while (t->slots[i] != UINT64_MAX && t->slots[i] >> RANK_BITS != pair) i = (i + 1) & t->mask;
  return i;
}

/* A repeated pair keeps its last rank, as the reference does. */
static void merge_table_put(merge_table *t, int32_t left, int32_t right, uint32_t rank, int32_t merged) {
  uint64_t pair = pair_bits(left, right);
  t->slots[merge_slot(t, pair)] = pair << RANK_BITS | rank;
  t->merged_by_rank[rank] = merged;
}

static bool merge_table_get(const merge_table *t, int32_t left, int32_t right, uint32_t *rank) {
  uint64_t slot = t->slots[merge_slot(t, pair_bits(left, right))];
  if (slot == UINT64_MAX) return false;
  *rank = (uint32_t)(slot & ((1u << RANK_BITS) - 1));
  return true;
}

static void merge_table_free(merge_table *t) {
  free(t->slots);
  free(t->merged_by_rank);
  *t = (merge_table){0};
}

/* ======================================================================== */
/* Tokenizer data                                                           */
/* ======================================================================== */

typedef struct added_token {
  char *content;
  size_t len;
  int32_t id;
} added_token;

/* Added tokens matched at one stage (raw text, or text after NFC). */
typedef struct added_set {
  added_token *tokens; /* longest first, so the first hit at a position is the longest */
  size_t count;
  bool first_byte[256];
} added_set;

struct qs_tokenizer {
  qs_strmap vocab;          /* byte-level spelling → id */
  merge_table merges;
  int32_t byte_ids[256];    /* id of the one-byte symbol of each byte */
  added_set raw_added;      /* "normalized": false — matched in the raw text */
  added_set norm_added;     /* "normalized": true — matched after NFC */
  qs_pretokenizer *split;   /* regex only: NFC runs between the two added-token stages */
  bool nfc;
  size_t n_ids;             /* max id + 1 */
  size_t *dec_off;          /* per id: offset into dec_bytes, SIZE_MAX for an unused id */
  size_t *dec_len;
  qs_strbuf dec_bytes;
};

static void added_set_free(added_set *s) {
  for (size_t i = 0; i < s->count; i++) free(s->tokens[i].content);
  free(s->tokens);
  *s = (added_set){0};
}

void qs_tokenizer_free(qs_tokenizer *tok) {
  if (!tok) return;
  qs_strmap_free(&tok->vocab);
  merge_table_free(&tok->merges);
  added_set_free(&tok->raw_added);
  added_set_free(&tok->norm_added);
  qs_pretokenizer_free(tok->split);
  free(tok->dec_off);
  free(tok->dec_len);
  qs_sb_free(&tok->dec_bytes);
  free(tok);
}

size_t qs_tokenizer_vocab_size(const qs_tokenizer *tok) { return tok->n_ids; }

static const added_token *find_added_content(const added_set *s, const char *content) {
  for (size_t i = 0; i < s->count; i++)
    if (strcmp(s->tokens[i].content, content) == 0) return &s->tokens[i];
  return NULL;
}

int32_t qs_tokenizer_token_id(const qs_tokenizer *tok, const char *token) {
  const added_token *a = find_added_content(&tok->raw_added, token);
  if (!a) a = find_added_content(&tok->norm_added, token);
  if (a) return a->id;
  const int64_t *v = qs_strmap_get(&tok->vocab, token, strlen(token));
  return v ? (int32_t)*v : -1;
}

/* ======================================================================== */
/* Loading                                                                  */
/* ======================================================================== */

typedef struct loader {
  const char *name; /* file named in messages */
  qs_error *err;
  qs_tokenizer *tok;
} loader;

static bool bad_field(const loader *ld, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool bad_field(const loader *ld, const char *field, const char *fmt, ...) {
  char what[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return qs_fail(ld->err, QS_EXIT_RUNTIME, "tokenizer file '%s': field '%s': %s", ld->name, field,
                 what);
}

/* Text from the file, quoted for a one-line message: JSON-escaped in ASCII
 * and cut short (a corrupt file may hold anything). */
typedef struct quoted {
  char s[56];
} quoted;

static quoted quote(const char *text, size_t len) {
  quoted q;
  json_t *str = json_stringn(text, len);
  char *dump = str ? json_dumps(str, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
  if (dump && strlen(dump) < sizeof q.s) snprintf(q.s, sizeof q.s, "%s", dump);
  else if (dump) snprintf(q.s, sizeof q.s, "%.*s...\"", (int)sizeof q.s - 6, dump);
  else snprintf(q.s, sizeof q.s, "(%zu bytes)", len);
  free(dump);
  json_decref(str);
  return q;
}

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
  }
}

static bool want_object(const loader *ld, const json_t *v, const char *field) {
  if (json_is_object(v)) return true;
  return v ? bad_field(ld, field, "expected an object, found %s", json_kind(v))
           : bad_field(ld, field, "missing");
}

/* `field` must be the string `expected`. */
static bool want_string_value(const loader *ld, const json_t *obj, const char *key,
                              const char *field, const char *expected) {
  const json_t *v = json_object_get(obj, key);
  if (!json_is_string(v))
    return v ? bad_field(ld, field, "expected \"%s\", found %s", expected, json_kind(v))
             : bad_field(ld, field, "missing (expected \"%s\")", expected);
  if (strcmp(json_string_value(v), expected) != 0)
    return bad_field(ld, field, "%s is not supported (expected \"%s\")",
                     quote(json_string_value(v), json_string_length(v)).s, expected);
  return true;
}

/* An optional flag that this tokenizer only supports when false (or absent). */
static bool want_false_or_absent(const loader *ld, const json_t *obj, const char *key,
                                 const char *field) {
  const json_t *v = json_object_get(obj, key);
  if (!v || json_is_false(v) || json_is_null(v)) return true;
  if (json_is_true(v)) return bad_field(ld, field, "true is not supported");
  return bad_field(ld, field, "expected a boolean, found %s", json_kind(v));
}

/* An optional setting that must be null, absent or (for affixes) "". */
static bool want_null_or_empty(const loader *ld, const json_t *obj, const char *key,
                               const char *field) {
  const json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) return true;
  return bad_field(ld, field, "must be null or empty (%s is not supported)", json_kind(v));
}

static bool load_normalizer(loader *ld, const json_t *root) {
  const json_t *n = json_object_get(root, "normalizer");
  if (!n || json_is_null(n)) return true;
  if (!want_object(ld, n, "normalizer")) return false;
  if (!want_string_value(ld, n, "type", "normalizer.type", "NFC")) return false;
  ld->tok->nfc = true;
  return true;
}

/* The byte map after the split; a prefix space or a second regex would change the pieces. */
static bool load_byte_level_step(loader *ld, const json_t *step) {
  return want_object(ld, step, "pre_tokenizer.pretokenizers[1]") &&
         want_string_value(ld, step, "type", "pre_tokenizer.pretokenizers[1].type", "ByteLevel") &&
         want_false_or_absent(ld, step, "add_prefix_space",
                              "pre_tokenizer.pretokenizers[1].add_prefix_space") &&
         want_false_or_absent(ld, step, "use_regex", "pre_tokenizer.pretokenizers[1].use_regex");
}

static bool load_split_step(loader *ld, const json_t *step) {
  const char *field = "pre_tokenizer.pretokenizers[0]";
  if (!want_object(ld, step, field)) return false;
  if (!want_string_value(ld, step, "type", "pre_tokenizer.pretokenizers[0].type", "Split") ||
      !want_string_value(ld, step, "behavior", "pre_tokenizer.pretokenizers[0].behavior",
                         "Isolated") ||
      !want_false_or_absent(ld, step, "invert", "pre_tokenizer.pretokenizers[0].invert"))
    return false;
  const json_t *pattern = json_object_get(step, "pattern");
  if (!want_object(ld, pattern, "pre_tokenizer.pretokenizers[0].pattern")) return false;
  const json_t *regex = json_object_get(pattern, "Regex");
  if (!json_is_string(regex))
    return bad_field(ld, "pre_tokenizer.pretokenizers[0].pattern.Regex",
                     "expected a regex string, found %s", regex ? json_kind(regex) : "nothing");
  if (!qs_pretokenizer_create(json_string_value(regex), false, &ld->tok->split, ld->err))
    return qs_fail_context(ld->err, "tokenizer file '%s': field '%s': ", ld->name,
                           "pre_tokenizer.pretokenizers[0].pattern.Regex");
  return true;
}

static bool load_pre_tokenizer(loader *ld, const json_t *root) {
  const json_t *p = json_object_get(root, "pre_tokenizer");
  if (!want_object(ld, p, "pre_tokenizer")) return false;
  if (!want_string_value(ld, p, "type", "pre_tokenizer.type", "Sequence")) return false;
  const json_t *steps = json_object_get(p, "pretokenizers");
  if (!json_is_array(steps) || json_array_size(steps) != 2)
    return bad_field(ld, "pre_tokenizer.pretokenizers",
                     "expected [Split, ByteLevel] (a regex split, then the byte map)");
  return load_split_step(ld, json_array_get(steps, 0)) &&
         load_byte_level_step(ld, json_array_get(steps, 1));
}

static bool load_decoder_and_post(loader *ld, const json_t *root) {
  /* The ByteLevel decoder's options only concern offsets, not the bytes. */
  const json_t *decoder = json_object_get(root, "decoder");
  if (!want_object(ld, decoder, "decoder") ||
      !want_string_value(ld, decoder, "type", "decoder.type", "ByteLevel"))
    return false;
  /* The post-processor only matters when special tokens are added, which
   * never happens here; ByteLevel (offsets only) and none are the safe cases. */
  const json_t *post = json_object_get(root, "post_processor");
  if (!post || json_is_null(post)) return true;
  if (!want_object(ld, post, "post_processor")) return false;
  return want_string_value(ld, post, "type", "post_processor.type", "ByteLevel");
}

static bool check_model_options(loader *ld, const json_t *model) {
  return want_string_value(ld, model, "type", "model.type", "BPE") &&
         want_null_or_empty(ld, model, "dropout", "model.dropout") &&
         want_null_or_empty(ld, model, "unk_token", "model.unk_token") &&
         want_null_or_empty(ld, model, "continuing_subword_prefix", "model.continuing_subword_prefix") &&
         want_null_or_empty(ld, model, "end_of_word_suffix", "model.end_of_word_suffix") &&
         want_false_or_absent(ld, model, "byte_fallback", "model.byte_fallback") &&
         want_false_or_absent(ld, model, "ignore_merges", "model.ignore_merges");
}

/* Reads an id (an integer in [0, MAX_TOKEN_ID]) and grows n_ids to cover it.
 * The field is `field`, or `field["key"]` when key is given (the name is only
 * formatted on failure: the vocabulary has 150k entries). */
static bool read_id(loader *ld, const json_t *v, const char *field, const char *key, int32_t *id) {
  json_int_t x = json_is_integer(v) ? json_integer_value(v) : -1;
  if (x < 0 || x > MAX_TOKEN_ID) {
    char name[128];
    if (key) snprintf(name, sizeof name, "%s[%s]", field, quote(key, strlen(key)).s);
    else snprintf(name, sizeof name, "%s", field);
    if (!json_is_integer(v))
      return bad_field(ld, name, "expected an integer id, found %s", v ? json_kind(v) : "nothing");
    return bad_field(ld, name, "id %lld is out of range [0, %d]", (long long)x, MAX_TOKEN_ID);
  }
  *id = (int32_t)x;
  if ((size_t)x + 1 > ld->tok->n_ids) ld->tok->n_ids = (size_t)x + 1;
  return true;
}

static bool load_vocab(loader *ld, const json_t *model) {
  const json_t *vocab = json_object_get(model, "vocab");
  if (!want_object(ld, vocab, "model.vocab")) return false;
  const char *key;
  size_t key_len;
  json_t *value;
  /* Byte-level tokens average well under 16 bytes; this is only a size hint. */
  qs_strmap_reserve(&ld->tok->vocab, json_object_size(vocab), 16 * json_object_size(vocab));
  json_object_keylen_foreach((json_t *)vocab, key, key_len, value) {
    int32_t id;
    if (!read_id(ld, value, "model.vocab", key, &id)) return false;
    qs_strmap_upsert(&ld->tok->vocab, key, key_len, id, NULL);
  }
  return true;
}

/* The one-byte symbols every byte-level vocabulary must hold (no unknown token exists). */
static bool load_byte_symbols(loader *ld) {
  for (unsigned b = 0; b < 256; b++) {
    char u[2];
    size_t k = utf8_put_small(qs_byte_to_codepoint((uint8_t)b), u);
    const int64_t *id = qs_strmap_get(&ld->tok->vocab, u, k);
    if (!id)
      return bad_field(ld, "model.vocab", "lacks the byte-level symbol \"%.*s\" of byte 0x%02X",
                       (int)k, u, b);
    ld->tok->byte_ids[b] = (int32_t)*id;
  }
  return true;
}

/* Splits merge i into its two symbols: ["a","b"] or the older "a b". */
static bool merge_parts(loader *ld, const json_t *m, size_t i, const char **a, size_t *a_len,
                        const char **b, size_t *b_len) {
  if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
      json_is_string(json_array_get(m, 1))) {
    *a = json_string_value(json_array_get(m, 0));
    *a_len = json_string_length(json_array_get(m, 0));
    *b = json_string_value(json_array_get(m, 1));
    *b_len = json_string_length(json_array_get(m, 1));
    return true;
  }
  if (json_is_string(m)) {
    const char *s = json_string_value(m);
    const char *space = strchr(s, ' ');
    if (space && space != s && space[1] != '\0' && !strchr(space + 1, ' ')) {
      *a = s;
      *a_len = (size_t)(space - s);
      *b = space + 1;
      *b_len = strlen(space + 1);
      return true;
    }
  }
  char field[48];
  snprintf(field, sizeof field, "model.merges[%zu]", i);
  return bad_field(ld, field, "expected [\"left\", \"right\"] or \"left right\"");
}

static bool lookup_symbol(loader *ld, const char *s, size_t len, size_t i, int32_t *id) {
  const int64_t *v = qs_strmap_get(&ld->tok->vocab, s, len);
  if (v) {
    *id = (int32_t)*v;
    return true;
  }
  char field[48];
  snprintf(field, sizeof field, "model.merges[%zu]", i);
  return bad_field(ld, field, "symbol %s is not in model.vocab", quote(s, len).s);
}

static bool load_merges(loader *ld, const json_t *model) {
  const json_t *merges = json_object_get(model, "merges");
  if (!json_is_array(merges))
    return bad_field(ld, "model.merges", "expected an array, found %s",
                     merges ? json_kind(merges) : "nothing");
  if (json_array_size(merges) >= MAX_MERGES)
    return bad_field(ld, "model.merges", "%zu merges are more than the %d supported",
                     json_array_size(merges), MAX_MERGES - 1);
  merge_table_init(&ld->tok->merges, json_array_size(merges));
  qs_strbuf joined = {0};
  bool ok = true;
  for (size_t i = 0; ok && i < json_array_size(merges); i++) {
    const char *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    int32_t left = 0, right = 0, merged = 0; /* set by lookup_symbol; initialised for -O3 flow analysis */
    ok = merge_parts(ld, json_array_get(merges, i), i, &a, &a_len, &b, &b_len) &&
         lookup_symbol(ld, a, a_len, i, &left) && lookup_symbol(ld, b, b_len, i, &right);
    if (!ok) break;
    qs_sb_clear(&joined);
    qs_sb_append_n(&joined, a, a_len);
    qs_sb_append_n(&joined, b, b_len);
    ok = lookup_symbol(ld, joined.s, joined.len, i, &merged);
    if (ok) merge_table_put(&ld->tok->merges, left, right, (uint32_t)i, merged);
  }
  qs_sb_free(&joined);
  return ok;
}

static int longest_first(const void *pa, const void *pb) {
  const added_token *a = pa, *b = pb;
  if (a->len != b->len) return a->len > b->len ? -1 : 1;
  return a->id < b->id ? -1 : (a->id > b->id);
}

static void added_set_add(added_set *s, const char *content, size_t len, int32_t id) {
  s->tokens = qs_realloc(s->tokens, (s->count + 1) * sizeof *s->tokens);
  s->tokens[s->count++] = (added_token){.content = qs_strndup(content, len), .len = len, .id = id};
  s->first_byte[(unsigned char)content[0]] = true;
}

/* NFC form of an added token matched after normalization (the reference
 * normalizes such contents too, so they match normalized text). */
static bool normalized_content(loader *ld, const char *content, size_t len, char **out,
                               size_t *out_len) {
  const char *s = content;
  char *owned = NULL;
  *out_len = len;
  if (ld->tok->nfc && !nfc_normalize(content, len, &owned, &s, out_len, ld->err)) return false;
  *out = owned ? owned : qs_strndup(s, *out_len);
  return true;
}

static bool load_added_token(loader *ld, const json_t *t, size_t i) {
  char field[64];
  snprintf(field, sizeof field, "added_tokens[%zu]", i);
  if (!want_object(ld, t, field)) return false;
  static const char *const unsupported[] = {"lstrip", "rstrip", "single_word"};
  for (size_t k = 0; k < 3; k++) {
    char f[96];
    snprintf(f, sizeof f, "%s.%s", field, unsupported[k]);
    if (!want_false_or_absent(ld, t, unsupported[k], f)) return false;
  }
  char f[96];
  snprintf(f, sizeof f, "%s.id", field);
  int32_t id;
  if (!read_id(ld, json_object_get(t, "id"), f, NULL, &id)) return false;
  const json_t *c = json_object_get(t, "content");
  snprintf(f, sizeof f, "%s.content", field);
  if (!json_is_string(c) || json_string_length(c) == 0)
    return bad_field(ld, f, "expected a non-empty string");
  const char *content = json_string_value(c);
  size_t len = json_string_length(c);
  const json_t *normalized = json_object_get(t, "normalized");
  if (!json_is_true(normalized)) {
    added_set_add(&ld->tok->raw_added, content, len, id);
    return true;
  }
  char *norm;
  size_t norm_len;
  if (!normalized_content(ld, content, len, &norm, &norm_len)) return false;
  added_set_add(&ld->tok->norm_added, norm, norm_len, id);
  free(norm);
  return true;
}

static bool load_added_tokens(loader *ld, const json_t *root) {
  const json_t *added = json_object_get(root, "added_tokens");
  if (!added || json_is_null(added)) return true;
  if (!json_is_array(added))
    return bad_field(ld, "added_tokens", "expected an array, found %s", json_kind(added));
  for (size_t i = 0; i < json_array_size(added); i++)
    if (!load_added_token(ld, json_array_get(added, i), i)) return false;
  added_set *sets[2] = {&ld->tok->raw_added, &ld->tok->norm_added};
  for (size_t k = 0; k < 2; k++)
    if (sets[k]->count) qsort(sets[k]->tokens, sets[k]->count, sizeof *sets[k]->tokens, longest_first);
  return true;
}

/* Bytes of a token for decoding: the byte map inverted, or the token's own
 * UTF-8 when a character lies outside the alphabet (as the reference does). */
static void append_token_bytes(qs_strbuf *out, const char *token, size_t len) {
  size_t start = out->len, i = 0;
  while (i < len) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)token + i,
                                          (utf8proc_ssize_t)(len - i), &cp);
    int b = k > 0 ? qs_codepoint_to_byte((uint32_t)cp) : -1;
    if (b < 0) {
      out->len = start;
      qs_sb_append_n(out, token, len);
      return;
    }
    qs_sb_putc(out, (char)b);
    i += (size_t)k;
  }
}

static void set_decoding(qs_tokenizer *tok, int32_t id, const char *token, size_t len) {
  tok->dec_off[id] = tok->dec_bytes.len;
  append_token_bytes(&tok->dec_bytes, token, len);
  tok->dec_len[id] = tok->dec_bytes.len - tok->dec_off[id];
}

/* Fills the id → bytes table; every id must have one meaning. An added token
 * may reuse an id only for the very vocabulary entry it spells. */
static bool build_decoding(loader *ld) {
  qs_tokenizer *tok = ld->tok;
  tok->dec_off = qs_malloc(tok->n_ids * sizeof *tok->dec_off);
  tok->dec_len = qs_calloc(tok->n_ids, sizeof *tok->dec_len);
  const char **vocab_spelling = qs_calloc(tok->n_ids, sizeof *vocab_spelling);
  for (size_t i = 0; i < tok->n_ids; i++) tok->dec_off[i] = SIZE_MAX;
  bool ok = true;
  for (size_t i = 0; ok && i < tok->vocab.cap; i++) {
    const qs_strmap_slot *s = &tok->vocab.slots[i];
    if (s->hash == 0) continue;
    const char *key = qs_strmap_slot_key(&tok->vocab, s);
    if (vocab_spelling[s->value])
      ok = bad_field(ld, "model.vocab", "id %d is used by both %s and %s", (int)s->value,
                     quote(vocab_spelling[s->value], strlen(vocab_spelling[s->value])).s,
                     quote(key, s->key_len).s);
    vocab_spelling[s->value] = key;
    set_decoding(tok, (int32_t)s->value, key, s->key_len);
  }
  const added_set *sets[2] = {&tok->raw_added, &tok->norm_added};
  for (size_t k = 0; ok && k < 2; k++)
    for (size_t i = 0; ok && i < sets[k]->count; i++) {
      const added_token *a = &sets[k]->tokens[i];
      const char *spelling = vocab_spelling[a->id];
      if (spelling && strcmp(spelling, a->content) != 0)
        ok = bad_field(ld, "added_tokens", "%s has id %d, already the vocabulary entry %s",
                       quote(a->content, a->len).s, (int)a->id, quote(spelling, strlen(spelling)).s);
      else if (!spelling && tok->dec_off[a->id] != SIZE_MAX)
        ok = bad_field(ld, "added_tokens", "id %d is used by two added tokens", (int)a->id);
      else if (!spelling)
        set_decoding(tok, a->id, a->content, a->len);
    }
  free(vocab_spelling);
  return ok;
}

static bool load_model(loader *ld, const json_t *root) {
  const json_t *model = json_object_get(root, "model");
  return want_object(ld, model, "model") && check_model_options(ld, model) &&
         load_vocab(ld, model) && load_byte_symbols(ld) && load_merges(ld, model);
}

bool qs_tokenizer_load_json(const char *json, size_t len, const char *name, qs_tokenizer **out,
                            qs_error *err) {
  json_error_t jerr;
  json_t *root = json_loadb(json, len, 0, &jerr);
  if (!root)
    return qs_fail(err, QS_EXIT_RUNTIME, "tokenizer file '%s': invalid JSON at line %d column %d: %s",
                   name, jerr.line, jerr.column, jerr.text);
  loader ld = {.name = name, .err = err, .tok = qs_calloc(1, sizeof(qs_tokenizer))};
  bool ok = (json_is_object(root) || bad_field(&ld, "(root)", "expected an object")) &&
            load_normalizer(&ld, root) && load_pre_tokenizer(&ld, root) &&
            load_decoder_and_post(&ld, root) && load_model(&ld, root) &&
            load_added_tokens(&ld, root) && build_decoding(&ld);
  json_decref(root);
  if (!ok) {
    qs_tokenizer_free(ld.tok);
    return false;
  }
  *out = ld.tok;
  return true;
}

bool qs_tokenizer_load(const char *path, qs_tokenizer **out, qs_error *err) {
  char *data;
  size_t len;
  if (!qs_read_file(path, &data, &len, err)) return false;
  bool ok = qs_tokenizer_load_json(data, len, path, out, err);
  free(data);
  return ok;
}

/* ======================================================================== */
/* Encoding                                                                 */
/* ======================================================================== */

/* A candidate merge of the symbol at `pos` with its right neighbour, and the
 * two symbols it was found for: symbols only ever grow into new ids, so the
 * candidate is stale exactly when either position now holds another id. */
typedef struct merge_cand {
  uint32_t rank;
  uint32_t pos;
  int32_t left_sym, right_sym;
} merge_cand;

/* Pieces up to this many bytes have their ids remembered for the rest of the
 * call: words repeat, and a hit skips the merge loop and its table lookups
 * (the merge table is megabytes, so each lookup is a cache miss). */
enum { CACHE_MAX_PIECE = 64, CACHE_MAX_ENTRIES = 1 << 16 };

/* Per-call state: scratch arrays and the piece cache, reused across the
 * pieces of all texts of one call. */
typedef struct encoder {
  const qs_tokenizer *tok;
  qs_token_ids *out;
  pcre2_match_data *md;
  qs_strmap cache;         /* piece → offset into cached_ids << 8 | id count */
  qs_token_ids cached_ids;
  int32_t *sym;    /* symbol id at each byte position (valid where alive) */
  int32_t *prev, *next;
  size_t sym_cap;
  merge_cand *heap;
  size_t heap_len, heap_cap;
} encoder;

static void push_id(qs_token_ids *t, int32_t id) {
  if (t->len == t->cap) qs_grow((void **)&t->ids, &t->cap, t->len + 1, sizeof *t->ids);
  t->ids[t->len++] = id;
}

void qs_token_ids_free(qs_token_ids *t) {
  free(t->ids);
  *t = (qs_token_ids){0};
}

static bool cand_before(const merge_cand *a, const merge_cand *b) {
  return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(encoder *e, merge_cand c) {
  if (e->heap_len == e->heap_cap)
    qs_grow((void **)&e->heap, &e->heap_cap, e->heap_len + 1, sizeof *e->heap);
  size_t i = e->heap_len++;
  while (i > 0 && cand_before(&c, &e->heap[(i - 1) / 2])) {
    e->heap[i] = e->heap[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  e->heap[i] = c;
}

static merge_cand heap_pop(encoder *e) {
  merge_cand top = e->heap[0], last = e->heap[--e->heap_len];
  size_t i = 0, n = e->heap_len;
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && cand_before(&e->heap[child + 1], &e->heap[child])) child++;
    if (!cand_before(&e->heap[child], &last)) break;
    e->heap[i] = e->heap[child];
    i = child;
  }
  if (n > 0) e->heap[i] = last;
  return top;
}

static void offer_merge(encoder *e, int32_t left) {
  int32_t right = e->next[left];
  uint32_t rank;
  if (right >= 0 && merge_table_get(&e->tok->merges, e->sym[left], e->sym[right], &rank))
    heap_push(e, (merge_cand){.rank = rank, .pos = (uint32_t)left,
                              .left_sym = e->sym[left], .right_sym = e->sym[right]});
}

static void reserve_symbols(encoder *e, size_t n) {
  if (n <= e->sym_cap) return;
  size_t cap = e->sym_cap;
  qs_grow((void **)&e->sym, &cap, n, sizeof *e->sym);
  e->prev = qs_realloc(e->prev, cap * sizeof *e->prev);
  e->next = qs_realloc(e->next, cap * sizeof *e->next);
  e->sym_cap = cap;
}

/* Byte-pair encoding of one piece: start from one symbol per byte and merge
 * the adjacent pair of lowest rank (leftmost on ties) until none is left.
 * Heap entries go stale when a neighbour merges first (see merge_cand). */
static void bpe_merge_piece(encoder *e, const char *piece, size_t n) {
  reserve_symbols(e, n);
  for (size_t i = 0; i < n; i++) {
    e->sym[i] = e->tok->byte_ids[(unsigned char)piece[i]];
    e->prev[i] = (int32_t)i - 1;
    e->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
  }
  e->heap_len = 0;
  for (size_t i = 0; i + 1 < n; i++) offer_merge(e, (int32_t)i);
  while (e->heap_len > 0) {
    merge_cand c = heap_pop(e);
    int32_t left = (int32_t)c.pos, right = e->next[left];
    if (e->prev[left] == -2 || right < 0 || e->sym[left] != c.left_sym || e->sym[right] != c.right_sym)
      continue;
    e->sym[left] = e->tok->merges.merged_by_rank[c.rank];
    e->next[left] = e->next[right];
    if (e->next[right] >= 0) e->prev[e->next[right]] = left;
    e->prev[right] = -2; /* marks a symbol absorbed by its left neighbour */
    if (e->prev[left] >= 0) offer_merge(e, e->prev[left]);
    offer_merge(e, left);
  }
  for (int32_t i = n ? 0 : -1; i >= 0; i = e->next[i]) push_id(e->out, e->sym[i]);
}

static bool bpe_piece(void *ctx, const char *piece, size_t n, qs_error *err) {
  (void)err;
  encoder *e = ctx;
  if (n == 1) {
    push_id(e->out, e->tok->byte_ids[(unsigned char)piece[0]]);
    return true;
  }
  bool cacheable = n <= CACHE_MAX_PIECE;
  const int64_t *hit = cacheable ? qs_strmap_get(&e->cache, piece, n) : NULL;
  if (hit) {
    for (int64_t i = 0; i < (*hit & 0xFF); i++) push_id(e->out, e->cached_ids.ids[(*hit >> 8) + i]);
    return true;
  }
  size_t first = e->out->len;
  bpe_merge_piece(e, piece, n);
  if (cacheable && e->cache.count < CACHE_MAX_ENTRIES) {
    int64_t entry = (int64_t)e->cached_ids.len << 8 | (int64_t)(e->out->len - first);
    for (size_t i = first; i < e->out->len; i++) push_id(&e->cached_ids, e->out->ids[i]);
    qs_strmap_upsert(&e->cache, piece, n, entry, NULL);
  }
  return true;
}

typedef bool (*segment_fn)(encoder *e, const char *s, size_t n, qs_error *err);

/* Longest added token of the set starting at s[0..n), or NULL. */
static const added_token *added_at(const added_set *set, const char *s, size_t n) {
  if (!set->first_byte[(unsigned char)s[0]]) return NULL;
  for (size_t i = 0; i < set->count; i++) {
    const added_token *a = &set->tokens[i];
    if (a->len <= n && memcmp(a->content, s, a->len) == 0) return a;
  }
  return NULL;
}

/* Emits the ids of added tokens found leftmost-longest in s[0..n) and hands
 * the text between them to on_text. */
static bool split_added(encoder *e, const added_set *set, const char *s, size_t n,
                        segment_fn on_text, qs_error *err) {
  size_t text_start = 0;
  for (size_t i = 0; i < n && set->count; i++) {
    const added_token *a = added_at(set, s + i, n - i);
    if (!a) continue;
    if (i > text_start && !on_text(e, s + text_start, i - text_start, err)) return false;
    push_id(e->out, a->id);
    text_start = i + a->len;
    i = text_start - 1;
  }
  return n > text_start ? on_text(e, s + text_start, n - text_start, err) : true;
}

static bool encode_normalized_segment(encoder *e, const char *s, size_t n, qs_error *err) {
  return regex_split(e->tok->split->re, e->md, s, n, bpe_piece, e, err);
}

static bool encode_raw_segment(encoder *e, const char *s, size_t n, qs_error *err) {
  char *owned = NULL;
  const char *norm = s;
  size_t norm_len = n;
  if (e->tok->nfc && !nfc_normalize(s, n, &owned, &norm, &norm_len, err)) return false;
  bool ok = split_added(e, &e->tok->norm_added, norm, norm_len, encode_normalized_segment, err);
  free(owned);
  return ok;
}

static void encoder_free(encoder *e) {
  pcre2_match_data_free(e->md);
  qs_strmap_free(&e->cache);
  qs_token_ids_free(&e->cached_ids);
  free(e->sym);
  free(e->prev);
  free(e->next);
  free(e->heap);
}

static bool encode_text(encoder *e, const char *text, size_t len, qs_error *err) {
  /* Symbol positions are 32-bit in the merge loop. */
  if (len > INT32_MAX)
    return qs_fail(err, QS_EXIT_RUNTIME, "text of %zu bytes is longer than the %d supported", len,
                   INT32_MAX);
  return check_utf8(text, len, err) &&
         split_added(e, &e->tok->raw_added, text, len, encode_raw_segment, err);
}

bool qs_tokenizer_encode(const qs_tokenizer *tok, const char *text, size_t len, qs_token_ids *out,
                         qs_error *err) {
  size_t keep = out->len;
  encoder e = {.tok = tok, .out = out, .md = pcre2_match_data_create(1, NULL)};
  bool ok = encode_text(&e, text, len, err);
  if (!ok) out->len = keep;
  encoder_free(&e);
  return ok;
}

bool qs_tokenizer_encode_batch(const qs_tokenizer *tok, const char *const *texts, const size_t *lens,
                               size_t n, qs_token_ids *out, size_t *offsets, qs_error *err) {
  size_t keep = out->len;
  encoder e = {.tok = tok, .out = out, .md = pcre2_match_data_create(1, NULL)};
  bool ok = true;
  for (size_t i = 0; ok && i < n; i++) {
    offsets[i] = out->len;
    ok = encode_text(&e, texts[i], lens ? lens[i] : strlen(texts[i]), err) ||
         qs_fail_context(err, "text %zu: ", i);
  }
  offsets[n] = out->len;
  if (!ok) out->len = keep;
  encoder_free(&e);
  return ok;
}

bool qs_tokenizer_decode(const qs_tokenizer *tok, const int32_t *ids, size_t n, qs_strbuf *out,
                         qs_error *err) {
  size_t keep = out->len;
  for (size_t i = 0; i < n; i++) {
    int32_t id = ids[i];
    if (id < 0 || (size_t)id >= tok->n_ids || tok->dec_off[id] == SIZE_MAX) {
      out->len = keep;
      if (out->s) out->s[keep] = '\0';
      return qs_fail(err, QS_EXIT_RUNTIME, "cannot decode token id %d (position %zu): not in the vocabulary",
                     (int)id, i);
    }
    qs_sb_append_n(out, tok->dec_bytes.s + tok->dec_off[id], tok->dec_len[id]);
  }
  return true;
}
