/* Byte-level BPE tokenizer of the Qwen2/Qwen3 family, read from a Hugging Face
 * `tokenizer.json` (spec qwen3-vl-lm.md §9). Encoding gives the same ids as the
 * `tokenizers` reference for valid UTF-8 text:
 *   added-token split (leftmost-longest) → NFC → regex split → byte map → BPE.
 * (Character classes and NFC come from PCRE2 and utf8proc, so a code point
 * assigned in a newer Unicode version than theirs may be classified
 * differently.) No BOS/EOS is ever added. A loaded tokenizer is read-only, so
 * one instance may encode from several threads at once.
 *
 * Input text must be valid UTF-8 (no overlong forms, surrogates or code points
 * above U+10FFFF; NUL bytes are allowed): the reference takes Unicode strings,
 * so invalid bytes have no defined tokenization and are reported as an error
 * naming the offset rather than guessed at. */
#ifndef QSENS_TEXT_TOKENIZER_H
#define QSENS_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/strbuf.h"

/* The pre-tokenizer regex of Qwen2/Qwen3 (a C string literal). */
#define QS_QWEN3_SPLIT_PATTERN                                                     \
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* ---- byte-level alphabet ------------------------------------------------ */

/* Code point that stands for byte b in byte-level vocabularies (' ' → U+0120). */
uint32_t qs_byte_to_codepoint(uint8_t b);
/* Inverse of qs_byte_to_codepoint: the byte, or -1 for a code point outside the alphabet. */
int qs_codepoint_to_byte(uint32_t cp);
/* Appends the byte-level (mapped, UTF-8) form of bytes[0..n) to out. */
void qs_byte_level_encode(const char *bytes, size_t n, qs_strbuf *out);

/* Offset of the first byte that breaks strict UTF-8, or `len` when the text is valid. */
size_t qs_utf8_invalid_offset(const char *text, size_t len);

/* ---- pre-tokenizer: NFC + regex split ----------------------------------- */

typedef struct qs_pretokenizer qs_pretokenizer;

/* Compiles `pattern` (PCRE2, UTF + Unicode properties, JIT when available). */
bool qs_pretokenizer_create(const char *pattern, bool nfc, qs_pretokenizer **out, qs_error *err);
void qs_pretokenizer_free(qs_pretokenizer *p);

/* Called once per piece, in order; the pieces concatenate to the (normalized)
 * text. Returning false stops the split and is passed on. */
typedef bool (*qs_piece_fn)(void *ctx, const char *piece, size_t len, qs_error *err);

/* Validates text as UTF-8, normalizes it (NFC when asked) and splits it into
 * pieces (every regex match is a piece, and so is every gap between matches). */
bool qs_pretokenize(const qs_pretokenizer *p, const char *text, size_t len, qs_piece_fn on_piece,
                    void *ctx, qs_error *err);

/* ---- tokenizer ---------------------------------------------------------- */

typedef struct qs_token_ids {
  int32_t *ids;
  size_t len;
  size_t cap;
} qs_token_ids;

void qs_token_ids_free(qs_token_ids *t);

typedef struct qs_tokenizer qs_tokenizer;

/* Loads and validates `tokenizer.json`. Errors name the file and the field. */
bool qs_tokenizer_load(const char *path, qs_tokenizer **out, qs_error *err);
/* Same from JSON text in memory; `name` stands for the file in messages. */
bool qs_tokenizer_load_json(const char *json, size_t len, const char *name, qs_tokenizer **out,
                            qs_error *err);
void qs_tokenizer_free(qs_tokenizer *tok);

/* Appends the ids of text[0..len) to out (on error, out keeps what it had). */
bool qs_tokenizer_encode(const qs_tokenizer *tok, const char *text, size_t len, qs_token_ids *out,
                         qs_error *err);

/* Encodes n texts (lens NULL: NUL-terminated) in one call, which is faster
 * than n calls when words repeat across texts. Text i gets
 * out->ids[offsets[i] .. offsets[i+1]) (offsets holds n+1 entries). An error
 * names the text's index and leaves out as it was. */
bool qs_tokenizer_encode_batch(const qs_tokenizer *tok, const char *const *texts, const size_t *lens,
                               size_t n, qs_token_ids *out, size_t *offsets, qs_error *err);

/* Appends the bytes ids stand for to out. Every token, added ones included,
 * goes through the inverse byte map, and one with a character outside the
 * byte alphabet is taken as its own UTF-8 — the reference's ByteLevel decoder
 * does the same (so "<think>" decodes to itself, "Ġ" to a space). The bytes
 * are returned as they are (the reference would replace a UTF-8 sequence cut
 * between ids by U+FFFD). */
bool qs_tokenizer_decode(const qs_tokenizer *tok, const int32_t *ids, size_t n, qs_strbuf *out,
                         qs_error *err);

/* Id of an added token (by content) or of a vocabulary entry (by its
 * byte-level spelling, e.g. "Ġthe"); -1 when there is none. */
int32_t qs_tokenizer_token_id(const qs_tokenizer *tok, const char *token);

/* One more than the largest id (vocabulary and added tokens). */
size_t qs_tokenizer_vocab_size(const qs_tokenizer *tok);

#endif
