#define _POSIX_C_SOURCE 200809L
#include "corpus_reader.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/fsutil.h"
#include "core/mem.h"

static void add_text(corpus *c, const char *text, size_t len) {
  c->texts = qs_realloc(c->texts, (c->count + 1) * sizeof *c->texts);
  c->lens = qs_realloc(c->lens, (c->count + 1) * sizeof *c->lens);
  c->lens[c->count] = len;
  c->texts[c->count] = qs_strndup(text, len);
  c->count++;
}

static bool add_json_line(corpus *c, const char *path, size_t line_no, const char *line, size_t len,
                          qs_error *err) {
  json_error_t jerr;
  json_t *obj = json_loadb(line, len, JSON_ALLOW_NUL, &jerr);
  const json_t *text = json_object_get(obj, "text");
  bool ok = json_is_string(text);
  if (ok) add_text(c, json_string_value(text), json_string_length(text));
  else qs_fail(err, QS_EXIT_USAGE, "%s:%zu: expected an object with a string \"text\"%s%s", path,
               line_no, obj ? "" : ": ", obj ? "" : jerr.text);
  json_decref(obj);
  return ok;
}

bool corpus_read(const char *path, corpus *out, qs_error *err) {
  char *data;
  size_t len;
  *out = (corpus){0};
  if (!qs_read_file(path, &data, &len, err)) return false;
  size_t path_len = strlen(path);
  bool txt = path_len >= 4 && strcmp(path + path_len - 4, ".txt") == 0;
  bool ok = true;
  size_t line_no = 0;
  for (char *line = data; ok && line < data + len;) {
    char *end = memchr(line, '\n', (size_t)(data + len - line));
    if (!end) end = data + len;
    line_no++;
    if (end > line && txt) add_text(out, line, (size_t)(end - line));
    else if (end > line) ok = add_json_line(out, path, line_no, line, (size_t)(end - line), err);
    line = end + 1;
  }
  free(data);
  if (!ok) corpus_free(out);
  return ok;
}

void corpus_free(corpus *c) {
  for (size_t i = 0; i < c->count; i++) free(c->texts[i]);
  free(c->texts);
  free(c->lens);
  *c = (corpus){0};
}
