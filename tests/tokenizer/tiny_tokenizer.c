#define _POSIX_C_SOURCE 200809L
#include "tiny_tokenizer.h"

#include <stdlib.h>

#include "core/strbuf.h"
#include "text/tokenizer.h"

int tiny_byte_id(unsigned char b) {
  int id = 0;
  for (uint32_t cp = 0; cp < qs_byte_to_codepoint(b); cp++) id += qs_codepoint_to_byte(cp) >= 0;
  return id;
}

static json_t *tiny_vocab(void) {
  static const char *const merges[TINY_N_MERGES][2] = TINY_MERGES;
  json_t *vocab = json_object();
  for (unsigned b = 0; b < 256; b++) {
    qs_strbuf s = {0};
    char c = (char)b;
    qs_byte_level_encode(&c, 1, &s);
    json_object_set_new(vocab, s.s, json_integer(tiny_byte_id((unsigned char)b)));
    qs_sb_free(&s);
  }
  for (int i = 0; i < TINY_N_MERGES; i++) {
    qs_strbuf s = {0};
    qs_sb_printf(&s, "%s%s", merges[i][0], merges[i][1]);
    json_object_set_new(vocab, s.s, json_integer(256 + i));
    qs_sb_free(&s);
  }
  return vocab;
}

static json_t *tiny_merges(bool as_strings) {
  static const char *const merges[TINY_N_MERGES][2] = TINY_MERGES;
  json_t *list = json_array();
  for (int i = 0; i < TINY_N_MERGES; i++) {
    if (as_strings)
      json_array_append_new(list, json_sprintf("%s %s", merges[i][0], merges[i][1]));
    else
      json_array_append_new(list, json_pack("[s, s]", merges[i][0], merges[i][1]));
  }
  return list;
}

static json_t *added(int id, const char *content, bool normalized) {
  return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
                   "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", normalized,
                   "special", 1);
}

static json_t *byte_level(void) {
  return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                   "trim_offsets", 0, "use_regex", 0);
}

json_t *tiny_tokenizer(bool merges_as_strings) {
  json_t *added_tokens = json_pack("[o, o, o, o]", added(TINY_ID_X, "<x>", false),
                                   added(TINY_ID_XY, "<x>y", false),
                                   added(TINY_ID_S_ACUTE, "\xc5\x9b", true),
                                   added(TINY_ID_EOT, "<|endoftext|>", false));
  json_t *split = json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex",
                            QS_QWEN3_SPLIT_PATTERN, "behavior", "Isolated", "invert", 0);
  return json_pack(
      "{s:s, s:o, s:{s:s}, s:{s:s, s:[o, o]}, s:o, s:o, s:{s:s, s:n, s:n, s:s, s:s, s:b, s:b, s:o, s:o}}",
      "version", "1.0", "added_tokens", added_tokens, "normalizer", "type", "NFC",
      "pre_tokenizer", "type", "Sequence", "pretokenizers", split, byte_level(),
      "post_processor", byte_level(), "decoder", byte_level(),
      "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "",
      "end_of_word_suffix", "", "byte_fallback", 0, "ignore_merges", 0, "vocab", tiny_vocab(),
      "merges", tiny_merges(merges_as_strings));
}
