/* Small file-system helpers shared by every module that reads or writes files. */
#ifndef QSENS_CORE_FSUTIL_H
#define QSENS_CORE_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

/* Reads a whole file; the buffer is NUL-terminated (not counted in *len). */
bool qs_read_file(const char *path, char **data, size_t *len, qs_error *err);

/* Writes data to `path` atomically: a temporary file in the same folder,
 * fsync, then rename. A reader never sees a half-written file. */
bool qs_write_file_atomic(const char *path, const void *data, size_t len, qs_error *err);

/* mkdir -p. */
bool qs_mkdirs(const char *path, qs_error *err);

bool qs_is_dir(const char *path);
bool qs_is_file(const char *path);

/* Absolute form of `path` (made against the current directory, `.`/`..`
 * segments removed lexically; the path need not exist). Caller frees. */
char *qs_abspath(const char *path);

/* a + "/" + b (b absolute wins). Caller frees. */
char *qs_path_join(const char *a, const char *b);

/* Folder holding the running executable, or NULL. Caller frees. */
char *qs_exe_dir(void);

#endif
