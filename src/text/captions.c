/* Caption sources and the COCO subset builder (see captions.h). */
#define _POSIX_C_SOURCE 200809L
#include "text/captions.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "text/pyrandom.h"
#include "text/tokenizer.h"

/* ---- Python string semantics on UTF-8 ---- */

/* str.isspace() in CPython 3.11 (Unicode White_Space plus the ASCII
 * separators U+001C..U+001F). */
static bool py_isspace(int32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* Line boundaries of str.splitlines() (\r\n is handled by the caller). */
static bool py_is_line_break(int32_t cp) {
  return cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || (cp >= 0x1c && cp <= 0x1e) || cp == 0x85 ||
         cp == 0x2028 || cp == 0x2029;
}

/* Decodes one code point of valid UTF-8 (the caller validated it). */
static int32_t decode_at(const char *s, size_t len, size_t *step) {
  utf8proc_int32_t cp = -1;
  utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &cp);
  *step = n > 0 ? (size_t)n : 1;
  return cp;
}

void qs_py_strip(const char *s, size_t len, size_t *begin, size_t *end) {
  size_t b = 0, e = len, step;
  while (b < e && py_isspace(decode_at(s + b, e - b, &step))) b += step;
  while (e > b) {
    size_t start = e - 1;
    while (start > b && ((unsigned char)s[start] & 0xc0) == 0x80) start--; /* continuation bytes */
    if (!py_isspace(decode_at(s + start, e - start, &step))) break;
    e = start;
  }
  *begin = b;
  *end = e;
}

/* 1-based line number (counted by "\n", as editors show it) of a byte offset. */
static size_t line_of(const char *data, size_t offset) {
  size_t line = 1;
  for (size_t i = 0; i < offset; i++) line += data[i] == '\n';
  return line;
}

/* ---- sample list ---- */

typedef struct list_builder {
  qs_sample_list *list;
  size_t cap;
  size_t limit;
} list_builder;

static bool builder_full(const list_builder *b) { return b->limit && b->list->count >= b->limit; }

static qs_sample *builder_push(list_builder *b) {
  qs_grow((void **)&b->list->items, &b->cap, b->list->count + 1, sizeof(qs_sample));
  qs_sample *s = &b->list->items[b->list->count++];
  memset(s, 0, sizeof *s);
  return s;
}

/* Adds text[0..len) stripped; empty captions are skipped like empty lines. */
static void builder_add_text(list_builder *b, const char *text, size_t len) {
  size_t begin, end;
  qs_py_strip(text, len, &begin, &end);
  if (begin == end) return;
  builder_push(b)->text = qs_strndup(text + begin, end - begin);
}

void qs_sample_list_free(qs_sample_list *list) {
  if (!list) return;
  for (size_t i = 0; i < list->count; i++) {
    free(list->items[i].text);
    free(list->items[i].ids);
  }
  free(list->items);
  memset(list, 0, sizeof *list);
}

bool qs_sample_list_check_ids(const qs_sample_list *list, size_t vocab_size, qs_error *err) {
  for (size_t i = 0; i < list->count; i++)
    for (size_t t = 0; t < list->items[i].n_ids; t++)
      if ((size_t)list->items[i].ids[t] >= vocab_size)
        return qs_fail(err, QS_EXIT_RUNTIME,
                       "sample %zu: token id %d at position %zu is outside the vocabulary (size %zu)", i,
                       (int)list->items[i].ids[t], t, vocab_size);
  return true;
}

bool qs_sample_list_tokenize(qs_sample_list *list, const qs_tokenizer *tok, qs_error *err) {
  for (size_t i = 0; i < list->count; i++) {
    qs_sample *s = &list->items[i];
    if (s->ids) continue;
    qs_token_ids ids = {0};
    if (!qs_tokenizer_encode(tok, s->text, strlen(s->text), &ids, err)) {
      qs_token_ids_free(&ids);
      return qs_fail_context(err, "sample %zu: ", i);
    }
    s->ids = ids.ids;
    s->n_ids = ids.len;
  }
  return true;
}

/* ---- .txt ---- */

static bool parse_txt(const char *path, const char *data, size_t len, list_builder *b, qs_error *err) {
  size_t line_start = 0, pos = 0;
  while (pos < len && !builder_full(b)) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate((const utf8proc_uint8_t *)data + pos, (utf8proc_ssize_t)(len - pos), &cp);
    if (n < 0)
      return qs_fail(err, QS_EXIT_RUNTIME, "%s:%zu: invalid UTF-8 (byte offset %zu)", path, line_of(data, pos), pos);
    if (cp == 0)
      return qs_fail(err, QS_EXIT_RUNTIME, "%s:%zu: NUL byte in a caption (byte offset %zu)", path, line_of(data, pos),
                     pos);
    size_t next = pos + (size_t)n;
    if (py_is_line_break(cp)) {
      builder_add_text(b, data + line_start, pos - line_start);
      if (cp == '\r' && next < len && data[next] == '\n') next++;
      line_start = next;
    }
    pos = next;
  }
  if (line_start < pos && !builder_full(b)) builder_add_text(b, data + line_start, pos - line_start);
  return true;
}

/* ---- .jsonl ---- */

static bool jsonl_ids(const char *where, json_t *arr, qs_sample *s, qs_error *err) {
  size_t n = json_array_size(arr);
  if (!json_is_array(arr) || n == 0)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: \"input_ids\" must be a non-empty array of token ids", where);
  s->ids = qs_malloc(n * sizeof *s->ids);
  s->n_ids = n;
  for (size_t i = 0; i < n; i++) {
    json_t *v = json_array_get(arr, i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
      return qs_fail(err, QS_EXIT_RUNTIME, "%s: input_ids[%zu] is not a token id (an integer 0..%d)", where, i,
                     INT32_MAX);
    s->ids[i] = (int32_t)json_integer_value(v);
  }
  return true;
}

/* One JSONL record: input_ids wins over the text key when both are present. */
static bool jsonl_record(const char *where, json_t *obj, const char *text_key, size_t line_no, list_builder *b,
                         size_t *first_kind_line, qs_error *err) {
  if (!json_is_object(obj)) return qs_fail(err, QS_EXIT_RUNTIME, "%s: expected a JSON object", where);
  json_t *ids = json_object_get(obj, "input_ids");
  json_t *text = json_object_get(obj, text_key);
  if (!ids && !json_is_string(text))
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: no \"%s\" string and no \"input_ids\" array", where, text_key);
  bool pretokenized = ids != NULL;
  if (*first_kind_line == 0) {
    *first_kind_line = line_no;
    b->list->pretokenized = pretokenized;
  } else if (b->list->pretokenized != pretokenized) {
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: has %s but line %zu has %s; a file holds one kind of sample", where,
                   pretokenized ? "input_ids" : "text", *first_kind_line, pretokenized ? "text" : "input_ids");
  }
  if (pretokenized) return jsonl_ids(where, ids, builder_push(b), err);
  builder_add_text(b, json_string_value(text), json_string_length(text));
  return true;
}

static bool is_blank(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (!strchr(" \t\r\f\v", s[i])) return false;
  return true;
}

static bool parse_jsonl(const char *path, const char *data, size_t len, const char *text_key, list_builder *b,
                        qs_error *err) {
  size_t first_kind_line = 0, line_no = 0;
  for (size_t pos = 0; pos < len && !builder_full(b);) {
    const char *nl = memchr(data + pos, '\n', len - pos);
    size_t line_len = (nl ? (size_t)(nl - data) : len) - pos;
    const char *line = data + pos;
    pos += line_len + 1;
    line_no++;
    if (is_blank(line, line_len)) continue;
    char where[1200];
    snprintf(where, sizeof where, "%s:%zu", path, line_no);
    json_error_t jerr;
    json_t *obj = json_loadb(line, line_len, 0, &jerr);
    if (!obj) return qs_fail(err, QS_EXIT_RUNTIME, "%s:%d: invalid JSON: %s", where, jerr.column, jerr.text);
    bool ok = jsonl_record(where, obj, text_key, line_no, b, &first_kind_line, err);
    json_decref(obj);
    if (!ok) return false;
  }
  return true;
}

/* ---- COCO caption annotations ---- */

static int compare_i64(const void *a, const void *b) {
  json_int_t x = *(const json_int_t *)a, y = *(const json_int_t *)b;
  return (x > y) - (x < y);
}

/* Sorted ids of the "images" list, or *n = SIZE_MAX when there is none. */
static bool coco_image_ids(const char *path, json_t *root, json_int_t **ids, size_t *n, qs_error *err) {
  json_t *images = json_object_get(root, "images");
  *ids = NULL;
  *n = SIZE_MAX;
  if (!images) return true;
  if (!json_is_array(images)) return qs_fail(err, QS_EXIT_RUNTIME, "%s: \"images\" is not an array", path);
  *n = json_array_size(images);
  *ids = qs_malloc((*n ? *n : 1) * sizeof **ids);
  for (size_t i = 0; i < *n; i++) {
    json_t *id = json_object_get(json_array_get(images, i), "id");
    if (!json_is_integer(id))
      return qs_fail(err, QS_EXIT_RUNTIME, "%s: images[%zu]: \"id\" is missing or not an integer", path, i);
    (*ids)[i] = json_integer_value(id);
  }
  qsort(*ids, *n, sizeof **ids, compare_i64);
  return true;
}

/* The caption as the builder wrote it: "\n" replaced by a space, then stripped. */
static char *coco_clean_caption(const char *caption, size_t len) {
  size_t begin, end;
  char *copy = qs_strndup(caption, len);
  for (char *c = copy; (c = strchr(c, '\n')) != NULL;) *c = ' ';
  qs_py_strip(copy, len, &begin, &end);
  memmove(copy, copy + begin, end - begin);
  copy[end - begin] = '\0';
  return copy;
}

typedef struct string_list {
  char **items;
  size_t count;
  size_t cap;
} string_list;

static void string_list_free(string_list *l) {
  for (size_t i = 0; i < l->count; i++) free(l->items[i]);
  free(l->items);
  memset(l, 0, sizeof *l);
}

static bool coco_annotation(const char *path, json_t *ann, size_t i, const json_int_t *image_ids, size_t n_images,
                            string_list *out, qs_error *err) {
  if (!json_is_object(ann)) return qs_fail(err, QS_EXIT_RUNTIME, "%s: annotations[%zu] is not an object", path, i);
  json_t *caption = json_object_get(ann, "caption"), *image_id = json_object_get(ann, "image_id");
  if (!json_is_string(caption))
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: annotations[%zu]: \"caption\" is missing or not a string", path, i);
  if (!json_is_integer(image_id))
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: annotations[%zu]: \"image_id\" is missing or not an integer", path, i);
  if (!json_is_integer(json_object_get(ann, "id")))
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: annotations[%zu]: \"id\" is missing or not an integer", path, i);
  json_int_t key = json_integer_value(image_id);
  if (n_images != SIZE_MAX && !bsearch(&key, image_ids, n_images, sizeof key, compare_i64))
    return true; /* no image entry: the original builder skipped these */
  qs_grow((void **)&out->items, &out->cap, out->count + 1, sizeof *out->items);
  out->items[out->count++] = coco_clean_caption(json_string_value(caption), json_string_length(caption));
  return true;
}

/* Appends the cleaned captions of a COCO annotations file, in file order
 * (empty ones included: they are lines of the subset file). */
static bool coco_captions(const char *path, const char *data, size_t len, string_list *out, qs_error *err) {
  json_error_t jerr;
  json_t *root = json_loadb(data, len, 0, &jerr);
  if (!root)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s:%d:%d: invalid JSON: %s", path, jerr.line, jerr.column, jerr.text);
  json_t *anns = json_object_get(root, "annotations");
  json_int_t *image_ids = NULL;
  size_t n_images = 0;
  bool ok = json_is_array(anns) ||
            qs_fail(err, QS_EXIT_RUNTIME, "%s: no \"annotations\" array (not a COCO captions file)", path);
  ok = ok && coco_image_ids(path, root, &image_ids, &n_images, err);
  for (size_t i = 0; ok && i < json_array_size(anns); i++)
    ok = coco_annotation(path, json_array_get(anns, i), i, image_ids, n_images, out, err);
  free(image_ids);
  json_decref(root);
  return ok;
}

static bool parse_coco(const char *path, const char *data, size_t len, list_builder *b, qs_error *err) {
  string_list captions = {0};
  bool ok = coco_captions(path, data, len, &captions, err);
  for (size_t i = 0; ok && i < captions.count && !builder_full(b); i++)
    builder_add_text(b, captions.items[i], strlen(captions.items[i]));
  string_list_free(&captions);
  return ok;
}

/* ---- entry points ---- */

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool resolve_format(const qs_caption_source *src, qs_caption_format *format, qs_error *err) {
  *format = src->format;
  if (*format != QS_CAPTIONS_AUTO) return true;
  if (ends_with(src->path, ".txt"))
    *format = QS_CAPTIONS_TXT;
  else if (ends_with(src->path, ".jsonl"))
    *format = QS_CAPTIONS_JSONL;
  else if (ends_with(src->path, ".json"))
    *format = QS_CAPTIONS_COCO;
  else
    return qs_fail(err, QS_EXIT_USAGE, "%s: unknown caption file type (expected .txt, .jsonl or COCO .json)",
                   src->path);
  return true;
}

bool qs_captions_parse(const qs_caption_source *src, const char *data, size_t len, qs_sample_list *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  list_builder b = {.list = out, .limit = src->limit};
  qs_caption_format format;
  bool ok = resolve_format(src, &format, err);
  if (ok && format == QS_CAPTIONS_TXT) ok = parse_txt(src->path, data, len, &b, err);
  if (ok && format == QS_CAPTIONS_JSONL)
    ok = parse_jsonl(src->path, data, len, src->text_key ? src->text_key : "text", &b, err);
  if (ok && format == QS_CAPTIONS_COCO) ok = parse_coco(src->path, data, len, &b, err);
  if (ok && out->count == 0) ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: no samples (every line is empty)", src->path);
  if (ok && src->limit && out->count < src->limit)
    ok = qs_fail(err, QS_EXIT_USAGE, "%s: holds %zu samples, %zu requested", src->path, out->count, src->limit);
  if (!ok) qs_sample_list_free(out);
  return ok;
}

bool qs_captions_load(const qs_caption_source *src, qs_sample_list *out, qs_error *err) {
  char *data;
  size_t len;
  memset(out, 0, sizeof *out);
  if (!qs_read_file(src->path, &data, &len, err)) return false;
  bool ok = qs_captions_parse(src, data, len, out, err);
  free(data);
  return ok;
}

/* ---- MD5 (RFC 1321), to recognize the published subset files ---- */

static uint32_t rotl32(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static void md5_block(uint32_t h[4], const unsigned char block[64], const uint32_t sine[64]) {
  static const unsigned shifts[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};
  uint32_t m[16];
  for (int i = 0; i < 16; i++)
    m[i] = (uint32_t)block[4 * i] | (uint32_t)block[4 * i + 1] << 8 | (uint32_t)block[4 * i + 2] << 16 |
           (uint32_t)block[4 * i + 3] << 24;
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
  for (int i = 0; i < 64; i++) {
    uint32_t f;
    int g, round = i / 16;
    if (round == 0)
      f = (b & c) | (~b & d), g = i;
    else if (round == 1)
      f = (d & b) | (~d & c), g = (5 * i + 1) % 16;
    else if (round == 2)
      f = b ^ c ^ d, g = (3 * i + 5) % 16;
    else
      f = c ^ (b | ~d), g = (7 * i) % 16;
    uint32_t rotated = rotl32(a + f + sine[i] + m[g], shifts[round][i % 4]);
    a = d;
    d = c;
    c = b;
    b += rotated;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
}

void qs_md5_hex(const void *data, size_t len, char hex[33]) {
  uint32_t h[4] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u}, sine[64];
  /* K[i] = floor(|sin(i + 1)| * 2^32), exact in double precision (the RFC's table). */
  for (int i = 0; i < 64; i++) sine[i] = (uint32_t)(fabs(sin((double)(i + 1))) * 4294967296.0);
  const unsigned char *bytes = data;
  size_t full = len / 64 * 64;
  for (size_t off = 0; off < full; off += 64) md5_block(h, bytes + off, sine);
  /* The tail, 0x80, zeros to 56 mod 64, then the bit length (little endian). */
  unsigned char tail[128] = {0};
  size_t rest = len - full, tail_len = rest < 56 ? 64 : 128;
  memcpy(tail, bytes + full, rest);
  tail[rest] = 0x80;
  uint64_t bits = (uint64_t)len * 8;
  for (int i = 0; i < 8; i++) tail[tail_len - 8 + i] = (unsigned char)(bits >> (8 * i));
  for (size_t off = 0; off < tail_len; off += 64) md5_block(h, tail + off, sine);
  for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", (unsigned)(h[i / 4] >> (8 * (i % 4))) & 0xffu);
}

bool qs_captions_published_check(const char *name, const void *data, size_t len, bool *matches) {
  static const struct {
    const char *name;
    size_t bytes;
    const char *md5_prefix;
  } published[] = {{"coco2017_captions.txt", 217926, "9715deb6"},
                   {"coco2017_captions_small.txt", 809, "deb3725f"},
                   {"coco2017_captions_medium.txt", 6685, "3a0b5658"},
                   {"coco2017_captions_large.txt", 27276, "56b338dc"}};
  for (size_t i = 0; i < sizeof published / sizeof published[0]; i++) {
    if (strcmp(name, published[i].name) != 0) continue;
    char hex[33];
    qs_md5_hex(data, len, hex);
    *matches = len == published[i].bytes && strncmp(hex, published[i].md5_prefix, 8) == 0;
    return true;
  }
  return false;
}

/* ---- subset builder ---- */

/* A .txt source (one caption per line, such as the demo's sample captions)
 * contributes its captions as the txt reader sees them. */
static bool text_captions(const char *path, string_list *out, qs_error *err) {
  qs_caption_source src = {.path = path, .format = QS_CAPTIONS_TXT};
  qs_sample_list list = {0};
  if (!qs_captions_load(&src, &list, err)) return false;
  for (size_t i = 0; i < list.count; i++) {
    qs_grow((void **)&out->items, &out->cap, out->count + 1, sizeof *out->items);
    out->items[out->count++] = qs_strdup(list.items[i].text);
  }
  qs_sample_list_free(&list);
  return true;
}

static bool read_all_annotations(const qs_subset_opts *o, string_list *all, qs_error *err) {
  for (size_t f = 0; f < o->n_annotation_files; f++) {
    const char *path = o->annotation_files[f];
    if (ends_with(path, ".txt")) {
      if (!text_captions(path, all, err)) return false;
      continue;
    }
    char *data;
    size_t len;
    if (!qs_read_file(path, &data, &len, err)) return false;
    bool ok = coco_captions(path, data, len, all, err);
    free(data);
    if (!ok) return false;
  }
  return true;
}

/* choose_subset() of the builder: everything in file order when k <= 0 or
 * k >= n, else random.Random(seed).sample(all, k). */
static bool choose_subset(const qs_subset_opts *o, size_t n, size_t **picked, size_t *count, qs_error *err) {
  *count = (o->k == 0 || o->k >= n) ? n : o->k;
  *picked = qs_malloc((*count ? *count : 1) * sizeof **picked);
  if (*count == n) {
    for (size_t i = 0; i < n; i++) (*picked)[i] = i;
    return true;
  }
  qs_pyrandom rng;
  qs_pyrandom_seed(&rng, o->seed);
  return qs_pyrandom_sample(&rng, n, *count, *picked, err);
}

static bool write_lines(const char *dir, const char *name, const string_list *all, const size_t *picked, size_t count,
                        qs_subset_summary *summary, qs_error *err) {
  qs_strbuf text = {0};
  for (size_t i = 0; i < count; i++) {
    qs_sb_append(&text, all->items[picked[i]]);
    qs_sb_putc(&text, '\n');
  }
  bool matches;
  if (qs_captions_published_check(name, qs_sb_str(&text), text.len, &matches)) {
    summary->n_published_known++;
    summary->n_published_match += matches;
  }
  char *path = qs_path_join(dir, name);
  bool ok = qs_write_file_atomic(path, qs_sb_str(&text), text.len, err);
  free(path);
  qs_sb_free(&text);
  return ok;
}

bool qs_captions_build_subset(const qs_subset_opts *o, qs_subset_summary *summary, qs_error *err) {
  qs_subset_summary counts = {0};
  string_list all = {0};
  size_t *picked = NULL, count = 0;
  bool ok = read_all_annotations(o, &all, err) && choose_subset(o, all.count, &picked, &count, err);
  for (size_t s = 0; ok && s < o->n_sizes; s++)
    if (o->sizes[s].count > count)
      ok = qs_fail(err, QS_EXIT_USAGE, "size %s=%zu is larger than the subset (%zu captions)", o->sizes[s].name,
                   o->sizes[s].count, count);
  ok = ok && qs_mkdirs(o->out_dir, err) &&
       write_lines(o->out_dir, "coco2017_captions.txt", &all, picked, count, &counts, err);
  for (size_t s = 0; ok && s < o->n_sizes; s++) {
    char name[512];
    snprintf(name, sizeof name, "coco2017_captions_%s.txt", o->sizes[s].name);
    ok = write_lines(o->out_dir, name, &all, picked, o->sizes[s].count, &counts, err);
  }
  counts.n_captions = all.count;
  counts.n_selected = count;
  if (ok && summary) *summary = counts;
  free(picked);
  string_list_free(&all);
  return ok;
}
