#define _POSIX_C_SOURCE 200809L
#include "model/safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"
#include "core/strbuf.h"

static const struct {
  const char *name;
  size_t size;
} dtype_table[QS_ST_DTYPE_COUNT] = {
    [QS_ST_BOOL] = {"BOOL", 1}, [QS_ST_U8] = {"U8", 1},      [QS_ST_I8] = {"I8", 1},
    [QS_ST_I16] = {"I16", 2},   [QS_ST_U16] = {"U16", 2},    [QS_ST_F16] = {"F16", 2},
    [QS_ST_BF16] = {"BF16", 2}, [QS_ST_I32] = {"I32", 4},    [QS_ST_U32] = {"U32", 4},
    [QS_ST_F32] = {"F32", 4},   [QS_ST_F64] = {"F64", 8},    [QS_ST_I64] = {"I64", 8},
    [QS_ST_U64] = {"U64", 8},   [QS_ST_F8_E4M3] = {"F8_E4M3", 1}, [QS_ST_F8_E5M2] = {"F8_E5M2", 1},
};

const char *qs_st_dtype_name(qs_st_dtype dtype) {
  return (dtype >= 0 && dtype < QS_ST_DTYPE_COUNT) ? dtype_table[dtype].name : "?";
}

size_t qs_st_dtype_size(qs_st_dtype dtype) {
  return (dtype >= 0 && dtype < QS_ST_DTYPE_COUNT) ? dtype_table[dtype].size : 0;
}

bool qs_st_dtype_parse(const char *name, qs_st_dtype *out) {
  for (int i = 0; i < QS_ST_DTYPE_COUNT; i++) {
    if (strcmp(name, dtype_table[i].name) == 0) {
      *out = (qs_st_dtype)i;
      return true;
    }
  }
  return false;
}

void qs_st_format_shape(const uint64_t *shape, int ndim, char *buf, size_t size) {
  size_t at = 0;
  at += (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < ndim && at < size; i++)
    at += (size_t)snprintf(buf + at, size - at, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
  if (at < size) snprintf(buf + at, size - at, "]");
}

/* Names come from untrusted headers: messages stay on one line (control bytes
 * shown as '?') and bounded in length. */
static const char *printable(const char *name, char *buf, size_t size) {
  size_t n = 0;
  for (; name[n] && n + 4 < size; n++) buf[n] = ((unsigned char)name[n] < 0x20 || name[n] == 0x7f) ? '?' : name[n];
  if (name[n]) {
    memcpy(buf + n, "...", 3);
    n += 3;
  }
  buf[n] = '\0';
  return buf;
}

/* "<file>: tensor '<name>': " + message. */
static bool fail_tensor(qs_error *err, const char *label, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool fail_tensor(qs_error *err, const char *label, const char *name, const char *fmt, ...) {
  char what[512], shown[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return qs_fail(err, QS_EXIT_RUNTIME, "%s: tensor '%s': %s", label, printable(name, shown, sizeof shown), what);
}

static uint64_t read_u64_le(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static bool mul_overflows(uint64_t a, uint64_t b, uint64_t *out) {
  return __builtin_mul_overflow(a, b, out);
}

static bool parse_metadata(json_t *meta, const char *label, qs_error *err) {
  const char *key;
  json_t *value;
  if (!json_is_object(meta))
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: '__metadata__' must map strings to strings", label);
  json_object_foreach(meta, key, value) {
    if (!json_is_string(value))
      return qs_fail(err, QS_EXIT_RUNTIME, "%s: '__metadata__' must map strings to strings", label);
  }
  return true;
}

static bool parse_shape(json_t *shape, const char *label, qs_st_tensor *t, qs_error *err) {
  if (!json_is_array(shape)) return fail_tensor(err, label, t->name, "shape must be an array of non-negative integers");
  size_t n = json_array_size(shape);
  if (n > 64) return fail_tensor(err, label, t->name, "shape has %zu dimensions (at most 64)", n);
  t->ndim = (int)n;
  t->shape = n ? qs_calloc(n, sizeof *t->shape) : NULL;
  t->numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < n; i++) {
    json_t *d = json_array_get(shape, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return fail_tensor(err, label, t->name, "shape must be an array of non-negative integers");
    t->shape[i] = (uint64_t)json_integer_value(d);
    overflow |= mul_overflows(t->numel, t->shape[i], &t->numel);
  }
  if (overflow) return fail_tensor(err, label, t->name, "shape has more elements than 2^64");
  return true;
}

static bool parse_offsets(json_t *offsets, const char *label, uint64_t payload_size, qs_st_tensor *t, qs_error *err) {
  json_t *b = json_array_get(offsets, 0), *e = json_array_get(offsets, 1);
  if (!json_is_array(offsets) || json_array_size(offsets) != 2 || !json_is_integer(b) || !json_is_integer(e) ||
      json_integer_value(b) < 0 || json_integer_value(e) < 0)
    return fail_tensor(err, label, t->name, "data_offsets must be two non-negative integers");
  t->begin = (uint64_t)json_integer_value(b);
  t->end = (uint64_t)json_integer_value(e);
  if (t->begin > t->end || t->end > payload_size)
    return fail_tensor(err, label, t->name, "data_offsets [%llu, %llu] are outside the payload of %llu bytes",
                       (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)payload_size);
  uint64_t need;
  char shape[256];
  qs_st_format_shape(t->shape, t->ndim, shape, sizeof shape);
  if (mul_overflows(t->numel, qs_st_dtype_size(t->dtype), &need))
    return fail_tensor(err, label, t->name, "shape %s of dtype %s needs more than 2^64 bytes", shape,
                       qs_st_dtype_name(t->dtype));
  if (t->end - t->begin != need)
    return fail_tensor(err, label, t->name, "data_offsets [%llu, %llu] hold %llu bytes, but %s %s needs %llu",
                       (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)(t->end - t->begin), qs_st_dtype_name(t->dtype), shape,
                       (unsigned long long)need);
  return true;
}

static bool parse_entry(const char *name, json_t *entry, const char *label, uint64_t payload_size, qs_st_tensor *t,
                        qs_error *err) {
  t->name = qs_strdup(name);
  if (!json_is_object(entry)) return fail_tensor(err, label, name, "entry is not a JSON object");
  static const char *const required[] = {"dtype", "shape", "data_offsets"};
  for (int i = 0; i < 3; i++) {
    if (!json_object_get(entry, required[i])) return fail_tensor(err, label, name, "missing \"%s\"", required[i]);
  }
  if (json_object_size(entry) != 3) {
    const char *key;
    json_t *value;
    json_object_foreach(entry, key, value) {
      (void)value;
      if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets")) {
        char shown[128];
        return fail_tensor(err, label, name, "unexpected key \"%s\"", printable(key, shown, sizeof shown));
      }
    }
  }
  json_t *dtype = json_object_get(entry, "dtype");
  if (!json_is_string(dtype)) return fail_tensor(err, label, name, "dtype is not a string");
  if (!qs_st_dtype_parse(json_string_value(dtype), &t->dtype)) {
    char shown[64];
    return fail_tensor(err, label, name, "unknown dtype '%s'",
                       printable(json_string_value(dtype), shown, sizeof shown));
  }
  return parse_shape(json_object_get(entry, "shape"), label, t, err) &&
         parse_offsets(json_object_get(entry, "data_offsets"), label, payload_size, t, err);
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const qs_st_tensor *)a)->name, ((const qs_st_tensor *)b)->name);
}

static int by_offset(const void *a, const void *b) {
  const qs_st_tensor *x = *(const qs_st_tensor *const *)a, *y = *(const qs_st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* Rule 4: sorted by begin, the tensors tile the payload exactly. */
static bool check_tiling(const qs_st_file *f, qs_error *err) {
  const qs_st_tensor **order = qs_malloc((f->count ? f->count : 1) * sizeof *order);
  for (size_t i = 0; i < f->count; i++) order[i] = &f->tensors[i];
  qsort(order, f->count, sizeof *order, by_offset);
  uint64_t expected = 0;
  const qs_st_tensor *prev = NULL;
  bool ok = true;
  for (size_t i = 0; i < f->count && ok; i++) {
    const qs_st_tensor *t = order[i];
    if (t->begin < expected) {
      char shown[256];
      ok = fail_tensor(err, f->path, t->name, "data_offsets [%llu, %llu] overlap tensor '%s'",
                       (unsigned long long)t->begin, (unsigned long long)t->end,
                       printable(prev->name, shown, sizeof shown));
    } else if (t->begin > expected) {
      ok = fail_tensor(err, f->path, t->name, "data_offsets [%llu, %llu] leave a hole of %llu bytes before it",
                       (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)(t->begin - expected));
    }
    expected = t->end;
    prev = t;
  }
  if (ok && expected != f->payload_size)
    ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: the last %llu bytes of the payload belong to no tensor", f->path,
                 (unsigned long long)(f->payload_size - expected));
  free(order);
  return ok;
}

/* The last quoted string that ends before `pos` (jansson reports a duplicate
 * key just after reading it, without naming it). Escapes are shown raw. */
static const char *key_before(const char *text, size_t pos, char *buf, size_t size) {
  size_t close = pos;
  while (close > 0 && text[close - 1] != '"') close--;
  size_t open = close > 0 ? close - 1 : 0;
  while (open > 0 && !(text[open - 1] == '"' && (open < 2 || text[open - 2] != '\\'))) open--;
  size_t n = close > open + 1 ? close - 1 - open : 0;
  char raw[256];
  if (n >= sizeof raw) n = sizeof raw - 1;
  memcpy(raw, text + open, n);
  raw[n] = '\0';
  return printable(raw, buf, size);
}

static bool parse_header(qs_st_file *f, qs_error *err) {
  json_error_t jerr;
  json_t *root = json_loadb((const char *)f->base + 8, (size_t)f->header_len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    if (strncmp(jerr.text, "duplicate object key", 20) == 0) {
      char key[256];
      return qs_fail(err, QS_EXIT_RUNTIME, "%s: header is not valid JSON: duplicate key '%s'", f->path,
                     key_before((const char *)f->base + 8, (size_t)jerr.position, key, sizeof key));
    }
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: header is not valid JSON: %s (at byte %d of the header)", f->path,
                   jerr.text, jerr.position);
  }
  bool ok = true;
  if (!json_is_object(root)) {
    ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: header is not a JSON object", f->path);
  } else {
    f->tensors = qs_calloc(json_object_size(root) + 1, sizeof *f->tensors);
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
      if (strcmp(key, "__metadata__") == 0) {
        ok = parse_metadata(value, f->path, err);
      } else {
        ok = parse_entry(key, value, f->path, f->payload_size, &f->tensors[f->count], err);
        f->count++; /* counted even on failure so qs_st_close frees the partial entry */
      }
      if (!ok) break;
    }
  }
  json_decref(root);
  if (!ok) return false;
  qsort(f->tensors, f->count, sizeof *f->tensors, by_name);
  return check_tiling(f, err);
}

bool qs_st_parse(const void *bytes, size_t size, const char *label, qs_st_file *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  out->path = qs_strdup(label);
  out->base = bytes;
  out->size = size;
  bool ok;
  if (size < 8) {
    ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: file is %zu bytes, too short for the 8-byte header length", label, size);
  } else {
    out->header_len = read_u64_le(out->base);
    if (out->header_len > QS_ST_MAX_HEADER) {
      ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: header length %llu exceeds the limit of %llu bytes", label,
                   (unsigned long long)out->header_len, QS_ST_MAX_HEADER);
    } else if (out->header_len > size - 8) {
      ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: header length %llu exceeds the %zu bytes after the length field",
                   label, (unsigned long long)out->header_len, size - 8);
    } else {
      out->payload = out->base + 8 + out->header_len;
      out->payload_size = size - 8 - out->header_len;
      ok = parse_header(out, err);
    }
  }
  if (!ok) qs_st_close(out);
  return ok;
}

bool qs_st_open(const char *path, qs_st_file *out, qs_error *err) {
  memset(out, 0, sizeof *out);
  int fd = open(path, O_RDONLY);
  if (fd < 0) return qs_fail(err, QS_EXIT_RUNTIME, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: not a regular file", path);
  }
  size_t size = (size_t)st.st_size;
  void *map = NULL;
  if (size > 0) {
    /* No madvise on the mapping: measured on a 2 GB file read once in order
     * (as a weight upload reads it), MADV_WILLNEED and MADV_SEQUENTIAL gain
     * nothing beyond noise when the file is in the page cache; from disk
     * MADV_WILLNEED was no faster than the kernel's default readahead
     * (2.6-4.9 s either way) and MADV_SEQUENTIAL 25-40x slower. */
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      int e = errno;
      close(fd);
      return qs_fail(err, QS_EXIT_RUNTIME, "%s: cannot map: %s", path, strerror(e));
    }
  }
  close(fd); /* the mapping stays valid */
  if (!qs_st_parse(map, size, path, out, err)) {
    if (map) munmap(map, size);
    return false;
  }
  out->mapped = map != NULL;
  return true;
}

const qs_st_tensor *qs_st_find(const qs_st_file *f, const char *name) {
  if (!f->count) return NULL;
  qs_st_tensor key = {.name = (char *)name};
  return bsearch(&key, f->tensors, f->count, sizeof key, by_name);
}

void qs_st_close(qs_st_file *f) {
  if (!f) return;
  for (size_t i = 0; i < f->count; i++) {
    free(f->tensors[i].name);
    free(f->tensors[i].shape);
  }
  free(f->tensors);
  if (f->mapped) munmap((void *)f->base, f->size);
  free(f->path);
  memset(f, 0, sizeof *f);
}

/* ---- writer ------------------------------------------------------------ */

struct qs_st_writer {
  char *path, *tmp;
  int fd;
  uint64_t payload_size, written;
};

bool qs_st_spec_bytes(const qs_st_spec *spec, uint64_t *bytes) {
  uint64_t n = qs_st_dtype_size(spec->dtype);
  for (int i = 0; i < spec->ndim; i++) {
    if (mul_overflows(n, spec->shape[i], &n)) return false;
  }
  *bytes = n;
  return true;
}

static bool write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    len -= (size_t)w;
  }
  return true;
}

/* The JSON header, padded with spaces to a multiple of 8; NULL on overflow. */
static char *build_header(const qs_st_spec *specs, size_t count, uint64_t *payload_size, size_t *len) {
  json_t *root = json_object();
  json_t *meta = json_object();
  json_object_set_new(meta, "format", json_string("pt"));
  json_object_set_new(root, "__metadata__", meta);
  uint64_t offset = 0;
  bool ok = true;
  for (size_t i = 0; i < count && ok; i++) {
    uint64_t bytes;
    ok = qs_st_spec_bytes(&specs[i], &bytes) && !__builtin_add_overflow(offset, bytes, &bytes) &&
         bytes <= (uint64_t)INT64_MAX;
    if (!ok) break;
    json_t *shape = json_array();
    for (int d = 0; d < specs[i].ndim; d++) json_array_append_new(shape, json_integer((json_int_t)specs[i].shape[d]));
    json_t *entry = json_object();
    json_object_set_new(entry, "dtype", json_string(qs_st_dtype_name(specs[i].dtype)));
    json_object_set_new(entry, "shape", shape);
    json_object_set_new(entry, "data_offsets", json_pack("[II]", (json_int_t)offset, (json_int_t)bytes));
    json_object_set_new(root, specs[i].name, entry);
    offset = bytes;
  }
  char *text = ok ? json_dumps(root, JSON_COMPACT) : NULL;
  json_decref(root);
  if (!text) return NULL;
  qs_strbuf b = {0};
  qs_sb_append(&b, text);
  free(text);
  while (b.len % 8) qs_sb_putc(&b, ' ');
  *payload_size = offset;
  *len = b.len;
  return qs_sb_take(&b);
}

bool qs_st_writer_open(const char *path, const qs_st_spec *specs, size_t count, qs_st_writer **out, qs_error *err) {
  *out = NULL;
  uint64_t payload_size;
  size_t header_len;
  char *header = build_header(specs, count, &payload_size, &header_len);
  if (!header) return qs_fail(err, QS_EXIT_RUNTIME, "%s: tensors too large for one file", path);
  qs_st_writer *w = qs_calloc(1, sizeof *w);
  w->path = qs_strdup(path);
  qs_strbuf tmp = {0};
  qs_sb_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
  w->tmp = qs_sb_take(&tmp);
  w->payload_size = payload_size;
  w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (w->fd < 0) {
    qs_fail(err, QS_EXIT_RUNTIME, "%s: cannot create: %s", w->tmp, strerror(errno));
    free(header);
    free(w->tmp);
    free(w->path);
    free(w);
    return false;
  }
  uint8_t len_le[8];
  for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)header_len >> (8 * i));
  bool ok = write_all(w->fd, len_le, 8) && write_all(w->fd, header, header_len);
  free(header);
  if (!ok) {
    qs_fail(err, QS_EXIT_RUNTIME, "%s: cannot write: %s", w->tmp, strerror(errno));
    qs_st_writer_abort(w);
    return false;
  }
  *out = w;
  return true;
}

bool qs_st_writer_write(qs_st_writer *w, const void *data, size_t len, qs_error *err) {
  if (len > w->payload_size - w->written)
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: more tensor data than the header announces", w->path);
  if (!write_all(w->fd, data, len))
    return qs_fail(err, QS_EXIT_RUNTIME, "%s: cannot write: %s", w->tmp, strerror(errno));
  w->written += len;
  return true;
}

bool qs_st_writer_finish(qs_st_writer *w, qs_error *err) {
  bool ok;
  if (w->written != w->payload_size) {
    ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: %llu bytes of tensor data written, header announces %llu", w->path,
                 (unsigned long long)w->written, (unsigned long long)w->payload_size);
  } else if (fsync(w->fd) != 0 || close(w->fd) != 0) {
    w->fd = -1;
    ok = qs_fail(err, QS_EXIT_RUNTIME, "%s: cannot write: %s", w->tmp, strerror(errno));
  } else {
    w->fd = -1;
    ok = rename(w->tmp, w->path) == 0 ||
         qs_fail(err, QS_EXIT_RUNTIME, "%s: cannot rename from %s: %s", w->path, w->tmp, strerror(errno));
  }
  if (!ok) {
    qs_st_writer_abort(w);
    return false;
  }
  free(w->tmp);
  free(w->path);
  free(w);
  return true;
}

void qs_st_writer_abort(qs_st_writer *w) {
  if (!w) return;
  if (w->fd >= 0) close(w->fd);
  unlink(w->tmp);
  free(w->tmp);
  free(w->path);
  free(w);
}
