#define _POSIX_C_SOURCE 200809L
#include "core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"
#include "core/strbuf.h"

bool qs_read_file(const char *path, char **data, size_t *len, qs_error *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return qs_fail(err, QS_EXIT_RUNTIME, "cannot open '%s': %s", path, strerror(errno));
  qs_strbuf b = {0};
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) qs_sb_append_n(&b, chunk, n);
  bool failed = ferror(f);
  fclose(f);
  if (failed) {
    qs_sb_free(&b);
    return qs_fail(err, QS_EXIT_RUNTIME, "cannot read '%s'", path);
  }
  *len = b.len;
  *data = qs_sb_take(&b);
  return true;
}

bool qs_write_file_atomic(const char *path, const void *data, size_t len, qs_error *err) {
  qs_strbuf tmp = {0};
  qs_sb_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
  const char *t = qs_sb_str(&tmp);
  int fd = open(t, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    qs_fail(err, QS_EXIT_RUNTIME, "cannot create '%s': %s", t, strerror(errno));
    qs_sb_free(&tmp);
    return false;
  }
  const char *p = data;
  size_t left = len;
  bool ok = true;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) { ok = false; break; }
    p += w;
    left -= (size_t)w;
  }
  if (ok && fsync(fd) != 0) ok = false;
  if (close(fd) != 0) ok = false;
  if (ok && rename(t, path) != 0) ok = false;
  if (!ok) {
    qs_fail(err, QS_EXIT_RUNTIME, "cannot write '%s': %s", path, strerror(errno));
    unlink(t);
  }
  qs_sb_free(&tmp);
  return ok;
}

bool qs_mkdirs(const char *path, qs_error *err) {
  char *p = qs_strdup(path);
  for (char *s = p + 1; ; s++) {
    bool end = (*s == '\0');
    if (*s == '/' || end) {
      *s = '\0';
      if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        qs_fail(err, QS_EXIT_RUNTIME, "cannot create directory '%s': %s", p, strerror(errno));
        free(p);
        return false;
      }
      if (end) break;
      *s = '/';
    }
  }
  free(p);
  if (!qs_is_dir(path)) return qs_fail(err, QS_EXIT_RUNTIME, "'%s' exists and is not a directory", path);
  return true;
}

bool qs_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool qs_is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Removes "." and ".." segments of an absolute path in place. */
static void normalize_abs(char *p) {
  char *out = p;
  const char *in = p;
  while (*in) {
    while (*in == '/') in++;
    const char *seg = in;
    while (*in && *in != '/') in++;
    size_t n = (size_t)(in - seg);
    if (n == 0 || (n == 1 && seg[0] == '.')) continue;
    if (n == 2 && seg[0] == '.' && seg[1] == '.') {
      while (out > p && *--out != '/') {}
      continue;
    }
    *out++ = '/';
    memmove(out, seg, n);
    out += n;
  }
  if (out == p) *out++ = '/';
  *out = '\0';
}

char *qs_abspath(const char *path) {
  char *full;
  if (path[0] == '/') {
    full = qs_strdup(path);
  } else {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "/");
    full = qs_path_join(cwd, path);
  }
  normalize_abs(full);
  return full;
}

char *qs_path_join(const char *a, const char *b) {
  if (b[0] == '/' || a[0] == '\0') return qs_strdup(b);
  qs_strbuf s = {0};
  qs_sb_append(&s, a);
  if (s.len && s.s[s.len - 1] != '/') qs_sb_putc(&s, '/');
  qs_sb_append(&s, b);
  return qs_sb_take(&s);
}

char *qs_exe_dir(void) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return NULL;
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (!slash) return NULL;
  *slash = '\0';
  return qs_strdup(buf[0] ? buf : "/");
}
