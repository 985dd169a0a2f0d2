/* Calibration samples: captions (or pre-tokenized id lists) read from a file,
 * and the builder of the COCO 2017 caption subset files.
 *
 * Text normalization follows the existing Python flow: a .txt file is split
 * like str.splitlines(), each line is str.strip()ped and empty lines are
 * skipped; JSONL texts and COCO captions get the same strip (COCO captions
 * first have "\n" replaced by a space, as the subset builder did) and empty
 * ones are skipped too. */
#ifndef QSENS_TEXT_CAPTIONS_H
#define QSENS_TEXT_CAPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef enum qs_caption_format {
  QS_CAPTIONS_AUTO,  /* from the extension: .txt, .jsonl, .json (COCO) */
  QS_CAPTIONS_TXT,   /* one caption per line */
  QS_CAPTIONS_JSONL, /* one JSON object per line: {"text": ...} or {"input_ids": [...]} */
  QS_CAPTIONS_COCO,  /* {"annotations": [{"image_id", "id", "caption"}, ...]} */
} qs_caption_format;

/* One sample: text read from a caption file (ids filled in by
 * qs_sample_list_tokenize) or token ids read pre-tokenized (text NULL). */
typedef struct qs_sample {
  char *text;   /* NUL-terminated UTF-8, or NULL when pre-tokenized */
  int32_t *ids; /* token ids, or NULL for text not yet tokenized */
  size_t n_ids; /* > 0 when ids is set */
} qs_sample;

typedef struct qs_sample_list {
  qs_sample *items;
  size_t count;
  bool pretokenized; /* every sample carries ids (a source never mixes the kinds) */
} qs_sample_list;

typedef struct qs_caption_source {
  const char *path;
  qs_caption_format format;
  const char *text_key; /* JSONL key of the text field; NULL means "text" */
  size_t limit;         /* the first `limit` samples; 0 = all. Fewer in the file is an error. */
} qs_caption_source;

/* Reads src->path. Errors name the file, the line (or annotation index) and
 * what is wrong; status QS_EXIT_RUNTIME (bad data) or QS_EXIT_USAGE (unknown
 * extension, too few samples). */
bool qs_captions_load(const qs_caption_source *src, qs_sample_list *out, qs_error *err);

/* Same on bytes already in memory (src->path only names them in messages;
 * AUTO still looks at its extension). */
bool qs_captions_parse(const qs_caption_source *src, const char *data, size_t len, qs_sample_list *out, qs_error *err);

/* Checks every pre-tokenized id is below vocab_size (naming sample and position). */
bool qs_sample_list_check_ids(const qs_sample_list *list, size_t vocab_size, qs_error *err);

/* Encodes every text sample without ids (raw text: no template, no BOS/EOS),
 * keeping the text; errors name the sample. */
struct qs_tokenizer;
bool qs_sample_list_tokenize(qs_sample_list *list, const struct qs_tokenizer *tok, qs_error *err);

void qs_sample_list_free(qs_sample_list *list);

/* Python's str.strip() on UTF-8: the [*begin, *end) byte range left after
 * removing leading and trailing str.isspace() characters. s must be valid UTF-8. */
void qs_py_strip(const char *s, size_t len, size_t *begin, size_t *end);

/* ---- COCO 2017 caption subset (scripts/build_vlm_quantize_calib_coco2017_db.py) ---- */

typedef struct qs_subset_size {
  const char *name; /* file suffix: coco2017_captions_<name>.txt */
  size_t count;     /* first `count` lines of the subset */
} qs_subset_size;

typedef struct qs_subset_opts {
  const char *const *annotation_files; /* e.g. captions_train2017.json, captions_val2017.json */
  size_t n_annotation_files;
  const char *out_dir;
  int64_t seed; /* random.Random(seed) */
  size_t k;     /* subset size; 0 or >= the caption count keeps every caption in file order */
  const qs_subset_size *sizes;
  size_t n_sizes;
} qs_subset_opts;

typedef struct qs_subset_summary {
  size_t n_captions;        /* caption annotations read (all files) */
  size_t n_selected;        /* lines of coco2017_captions.txt */
  size_t n_published_match; /* written files equal to the published ones (size and MD5 prefix) */
  size_t n_published_known; /* written files the published subset has a checksum for */
} qs_subset_summary;

/* Reads every caption of the files in order (a .txt file: its captions as
 * the txt reader returns them; otherwise COCO annotation JSON) (annotations whose
 * image_id has no entry in a present "images" list are skipped, as the
 * original builder did), draws random.Random(seed).sample(all, k), and writes
 * <out_dir>/coco2017_captions.txt (caption.replace("\n", " ").strip(), one
 * per line) and coco2017_captions_<name>.txt prefixes, each atomically. */
bool qs_captions_build_subset(const qs_subset_opts *opts, qs_subset_summary *summary, qs_error *err);

/* The published subset (seed 42, k 4096, sizes 16/128/512; spec
 * quant-and-scoring.md §6.6) as sizes and MD5 prefixes. `name` is a file's
 * base name. Returns false when the name is not one of the four files;
 * otherwise *matches tells whether data is that file. */
bool qs_captions_published_check(const char *name, const void *data, size_t len, bool *matches);

/* MD5 (RFC 1321) of data as 32 lowercase hex digits; hex holds 33 bytes. */
void qs_md5_hex(const void *data, size_t len, char hex[33]);

#endif
