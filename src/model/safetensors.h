/* safetensors files: a validating reader over an mmap of the file, and a
 * streaming writer. Spec: shared specs/qwen3-vl-lm.md §2.3.
 *
 * Layout: 8 bytes N (u64 little-endian), N bytes of JSON header, payload.
 * The reader checks every rule of §2.3 (sizes, JSON, entry keys, dims,
 * overflow, offsets, contiguity) before any tensor is handed out; tensor
 * bytes are never touched by validation, so tensors a caller skips are never
 * read from disk. */
#ifndef QSENS_MODEL_SAFETENSORS_H
#define QSENS_MODEL_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Largest header accepted (the reference implementation's limit). */
#define QS_ST_MAX_HEADER 100000000ull

typedef enum qs_st_dtype {
  QS_ST_BOOL, QS_ST_U8, QS_ST_I8, QS_ST_I16, QS_ST_U16, QS_ST_F16, QS_ST_BF16, QS_ST_I32,
  QS_ST_U32, QS_ST_F32, QS_ST_F64, QS_ST_I64, QS_ST_U64, QS_ST_F8_E4M3, QS_ST_F8_E5M2,
  QS_ST_DTYPE_COUNT
} qs_st_dtype;

const char *qs_st_dtype_name(qs_st_dtype dtype);   /* "BF16", ... */
size_t qs_st_dtype_size(qs_st_dtype dtype);        /* bytes per element */
bool qs_st_dtype_parse(const char *name, qs_st_dtype *out);

typedef struct qs_st_tensor {
  char *name;
  qs_st_dtype dtype;
  int ndim;
  uint64_t *shape;        /* [ndim]; NULL when ndim == 0 */
  uint64_t numel;         /* product of shape, 1 for a scalar */
  uint64_t begin, end;    /* byte offsets into the payload, end exclusive */
} qs_st_tensor;

typedef struct qs_st_file {
  char *path;                 /* as given to qs_st_open (used in messages) */
  const uint8_t *base;        /* whole file (mmap or caller's buffer) */
  size_t size;
  uint64_t header_len;        /* N */
  const uint8_t *payload;     /* base + 8 + N */
  uint64_t payload_size;
  qs_st_tensor *tensors;      /* sorted by name */
  size_t count;
  bool mapped;                /* base is an mmap owned by this struct */
} qs_st_file;

/* Maps `path` read-only and validates it. Errors name the file and, where one
 * is at fault, the tensor: "<path>: tensor 'x': ..." (status QS_EXIT_RUNTIME). */
bool qs_st_open(const char *path, qs_st_file *out, qs_error *err);

/* Validates an in-memory image of a file (not copied: `bytes` must outlive
 * `out`). `label` stands for the path in messages. */
bool qs_st_parse(const void *bytes, size_t size, const char *label, qs_st_file *out, qs_error *err);

/* Tensor by name, or NULL. */
const qs_st_tensor *qs_st_find(const qs_st_file *f, const char *name);

/* First byte of a tensor's data (inside the mapping; may be unaligned). */
static inline const void *qs_st_data(const qs_st_file *f, const qs_st_tensor *t) {
  return f->payload + t->begin;
}

void qs_st_close(qs_st_file *f);

/* "[2, 3]" into buf (always NUL-terminated). */
void qs_st_format_shape(const uint64_t *shape, int ndim, char *buf, size_t size);

/* ---- writer ------------------------------------------------------------ */

/* One tensor to write: the header is built from these before any data. */
typedef struct qs_st_spec {
  const char *name;
  qs_st_dtype dtype;
  int ndim;
  uint64_t shape[4];
} qs_st_spec;

typedef struct qs_st_writer qs_st_writer;

/* Creates a temporary file beside `path` and writes the header for `specs`
 * (in that order, payload offsets assigned contiguously, header padded with
 * spaces to a multiple of 8 so the payload stays aligned; metadata
 * {"format": "pt"}). The tensors' bytes then follow with qs_st_writer_write,
 * in spec order, in pieces of any size. */
bool qs_st_writer_open(const char *path, const qs_st_spec *specs, size_t count,
                       qs_st_writer **out, qs_error *err);

/* Appends the next `len` bytes of payload. */
bool qs_st_writer_write(qs_st_writer *w, const void *data, size_t len, qs_error *err);

/* Checks that exactly the announced payload was written, fsyncs and renames
 * the temporary file onto `path`. Frees the writer in all cases. */
bool qs_st_writer_finish(qs_st_writer *w, qs_error *err);

/* Removes the temporary file and frees the writer (after a failure). */
void qs_st_writer_abort(qs_st_writer *w);

/* Total payload bytes of a spec list (numel * dtype size summed); false on overflow. */
bool qs_st_spec_bytes(const qs_st_spec *spec, uint64_t *bytes);

#endif
