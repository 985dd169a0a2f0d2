#define _POSIX_C_SOURCE 200809L
#include "config/interp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/pystr.h"
#include "core/mem.h"
#include "core/strbuf.h"

static struct timespec process_instant;
static bool instant_taken;

struct timespec qs_interp_now(void) {
  if (!instant_taken) {
    clock_gettime(CLOCK_REALTIME, &process_instant);
    instant_taken = true;
  }
  return process_instant;
}

void qs_interp_set_now(struct timespec instant) {
  process_instant = instant;
  instant_taken = true;
}

typedef struct rctx {
  const qs_node *root;
  const qs_node *hydra_root; /* a mapping holding "hydra", for ${hydra:...} */
  char **stack;              /* paths whose interpolation is being resolved */
  size_t depth, cap;
  bool trailer; /* reading one value (OmegaConf.select) names it in errors; OmegaConf.resolve does not */
  qs_error *err;
} rctx;

static bool resolve_node(rctx *c, const qs_node *n, const char *path, bool keep_missing, qs_node **out);
static bool resolve_string(rctx *c, const char *text, const char *path, qs_node **out);

static char *parent_path(const char *path) {
  const char *dot = strrchr(path, '.');
  return dot ? qs_strndup(path, (size_t)(dot - path)) : qs_strdup("");
}

static char *child_path(const char *base, const char *key) {
  qs_strbuf b = {0};
  qs_sb_printf(&b, "%s%s%s", base, *base && *key ? "." : "", key);
  return qs_sb_take(&b);
}

/* Fails with OmegaConf's trailer naming the node being read. */
static bool fail_at(rctx *c, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail_at(rctx *c, const char *path, const char *fmt, ...) {
  char what[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (!c->trailer) return qs_fail(c->err, QS_EXIT_USAGE, "%s", what);
  char *parent = parent_path(path);
  const qs_node *container = qs_node_get_path(c->root, parent);
  free(parent);
  const char *type = container && container->kind == QS_LIST ? "list" : "dict";
  return qs_fail(c->err, QS_EXIT_USAGE, "%s\n    full_key: %s\n    object_type=%s", what, path, type);
}

/* Index of the '}' closing an interpolation whose body starts at s[i];
 * quotes and nested interpolations are skipped. -1 when unterminated. */
static long find_close(const char *s, size_t i) {
  int depth = 1;
  char quote = 0;
  for (; s[i]; i++) {
    if (s[i] == '\\' && s[i + 1]) {
      i++;
    } else if (quote) {
      if (s[i] == quote) quote = 0;
    } else if (s[i] == '\'' || s[i] == '"') {
      quote = s[i];
    } else if (s[i] == '$' && s[i + 1] == '{') {
      depth++;
      i++;
    } else if (s[i] == '{') {
      depth++;
    } else if (s[i] == '}' && --depth == 0) {
      return (long)i;
    }
  }
  return -1;
}

/* The text of a value as Python's str() embeds it in a larger string. */
static void append_str(qs_strbuf *b, const qs_node *v) {
  if (v->kind == QS_STR) {
    qs_sb_append(b, v->s);
    return;
  }
  char *s = qs_pystr(v);
  qs_sb_append(b, s);
  free(s);
}

static bool is_ident_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
         ch == '.';
}

/* Absolute path of a node key: "a[0].b" -> "a.0.b"; leading dots climb
 * from the container of the node at `path`. */
static char *absolute_key(const char *key, const char *path) {
  qs_strbuf b = {0};
  const char *k = key;
  if (*k == '.') {
    char *base = parent_path(path);
    for (k++; *k == '.'; k++) {
      char *up = parent_path(base);
      free(base);
      base = up;
    }
    qs_sb_append(&b, base);
    free(base);
    if (*k && b.len) qs_sb_putc(&b, '.');
  }
  for (; *k; k++) {
    if (*k == '[') {
      if (b.len) qs_sb_putc(&b, '.');
    } else if (*k != ']') {
      qs_sb_putc(&b, *k);
    }
  }
  return qs_sb_take(&b);
}

static bool on_stack(const rctx *c, const char *path) {
  for (size_t k = 0; k < c->depth; k++)
    if (strcmp(c->stack[k], path) == 0) return true;
  return false;
}

static bool resolve_key(rctx *c, const char *key, const char *path, qs_node **out) {
  char *target = absolute_key(key, path);
  const qs_node *n = qs_node_get_path(c->root, target);
  bool ok;
  if (!n)
    ok = fail_at(c, path, "Interpolation key '%s' not found", key + strspn(key, "."));
  else if (qs_node_is_missing(n))
    ok = fail_at(c, path,
                 "MissingMandatoryValue while resolving interpolation: Missing mandatory value: %s", target);
  else if (qs_node_is_interp(n) && on_stack(c, target))
    ok = fail_at(c, path, "Recursive interpolation detected");
  else
    ok = resolve_node(c, n, target, false, out);
  free(target);
  return ok;
}

/* ---- resolver arguments ---- */

static char *trim(const char *s, size_t len) {
  while (len && (*s == ' ' || *s == '\t')) s++, len--;
  while (len && (s[len - 1] == ' ' || s[len - 1] == '\t')) len--;
  return qs_strndup(s, len);
}

/* Splits a resolver's argument text at top-level commas. */
static char **split_args(const char *s, size_t *n) {
  char **v = NULL;
  size_t cap = 0, start = 0, i = 0;
  int depth = 0;
  char quote = 0;
  *n = 0;
  if (!*s) return NULL;
  for (;; i++) {
    char ch = s[i];
    if (ch == '\\' && s[i + 1]) {
      i++;
      continue;
    }
    if (quote) {
      if (ch == quote) quote = 0;
      else if (!ch) break;
      continue;
    }
    if (ch == '\'' || ch == '"') quote = ch;
    else if (ch == '{' || ch == '[' || ch == '(') depth++;
    else if (ch == '}' || ch == ']' || ch == ')') depth--;
    else if ((ch == ',' && depth == 0) || !ch) {
      qs_grow((void **)&v, &cap, *n + 1, sizeof *v);
      v[(*n)++] = trim(s + start, i - start);
      start = i + 1;
      if (!ch) break;
    }
  }
  return v;
}

/* A plain argument typed the way OmegaConf's grammar types a primitive. */
static qs_node *typed_primitive(const char *text) {
  if (strcasecmp(text, "null") == 0) return qs_node_null();
  if (strcasecmp(text, "true") == 0) return qs_node_bool(true);
  if (strcasecmp(text, "false") == 0) return qs_node_bool(false);
  qs_strbuf digits = {0};
  bool numeric = *text != '\0';
  for (const char *p = text; *p; p++) {
    if (*p == '_') continue;
    if (!strchr("0123456789+-.eE", *p)) numeric = false;
    qs_sb_putc(&digits, *p);
  }
  qs_node *n = NULL;
  const char *d = qs_sb_str(&digits);
  char *end;
  if (numeric && strpbrk(d, "0123456789")) {
    long long i = strtoll(d, &end, 10);
    if (*end == '\0') n = qs_node_int(i);
    else {
      double f = strtod(d, &end);
      if (*end == '\0') n = qs_node_float(f);
    }
  } else if (strcasecmp(text, "inf") == 0 || strcasecmp(text, "+inf") == 0 || strcasecmp(text, "-inf") == 0 ||
             strcasecmp(text, "nan") == 0) {
    n = qs_node_float(strtod(text, NULL));
  }
  qs_sb_free(&digits);
  return n;
}

static char *unescape(const char *s, size_t len) {
  qs_strbuf b = {0};
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '\\' && i + 1 < len && strchr("\\'\", ()[]{}:=\t", s[i + 1])) i++;
    qs_sb_putc(&b, s[i]);
  }
  qs_sb_putc(&b, '\0');
  b.len--;
  return qs_sb_take(&b);
}

static bool eval_arg(rctx *c, const char *arg, const char *path, qs_node **out) {
  size_t len = strlen(arg);
  if (len >= 2 && (arg[0] == '\'' || arg[0] == '"') && arg[len - 1] == arg[0]) {
    char *inner = unescape(arg + 1, len - 2);
    bool ok = true;
    if (strstr(inner, "${")) {
      qs_node *v = NULL;
      ok = resolve_string(c, inner, path, &v);
      if (ok) {
        qs_strbuf b = {0};
        append_str(&b, v);
        qs_node_free(v);
        *out = qs_node_str(qs_sb_str(&b));
        qs_sb_free(&b);
      }
    } else {
      *out = qs_node_str(inner);
    }
    free(inner);
    return ok;
  }
  if (strstr(arg, "${")) return resolve_string(c, arg, path, out);
  char *text = unescape(arg, len);
  qs_node *typed = typed_primitive(text);
  *out = typed ? typed : qs_node_str(text);
  free(text);
  return true;
}

/* ---- resolvers ---- */

static bool resolver_env(rctx *c, qs_node **args, size_t n, const char *path, qs_node **out) {
  if (n < 1 || n > 2) return fail_at(c, path, "TypeError raised while resolving interpolation: oc.env takes 1 or 2 arguments");
  qs_strbuf key = {0};
  append_str(&key, args[0]);
  const char *value = getenv(qs_sb_str(&key));
  bool ok = true;
  if (value) *out = qs_node_str(value);
  else if (n == 2 && args[1]->kind == QS_NULL) *out = qs_node_null();
  else if (n == 2) {
    qs_strbuf def = {0};
    append_str(&def, args[1]);
    *out = qs_node_str(qs_sb_str(&def));
    qs_sb_free(&def);
  } else {
    ok = fail_at(c, path, "KeyError raised while resolving interpolation: \"Environment variable '%s' not found\"",
                 qs_sb_str(&key));
  }
  qs_sb_free(&key);
  return ok;
}

static bool resolver_now(qs_node **args, size_t n, qs_node **out) {
  qs_strbuf fmt = {0};
  if (n > 0) append_str(&fmt, args[0]);
  struct timespec ts = qs_interp_now();
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  char text[1024] = "";
  if (fmt.len) strftime(text, sizeof text, qs_sb_str(&fmt), &tm);
  *out = qs_node_str(text);
  qs_sb_free(&fmt);
  return true;
}

static bool resolver_hydra(rctx *c, qs_node **args, size_t n, qs_node **out) {
  qs_strbuf key = {0};
  qs_sb_append(&key, "hydra");
  if (n > 0) {
    qs_sb_putc(&key, '.');
    append_str(&key, args[0]);
  }
  rctx sub = {.root = c->hydra_root, .hydra_root = c->hydra_root, .trailer = c->trailer, .err = c->err};
  const qs_node *n_at = qs_node_get_path(sub.root, qs_sb_str(&key));
  bool ok = true;
  /* Hydra's resolver is OmegaConf.select(HydraConfig.get(), key): an absent
   * key and a missing value (???, e.g. runtime.output_dir under --cfg) are null. */
  if (!n_at || qs_node_is_missing(n_at)) *out = qs_node_null();
  else ok = resolve_node(&sub, n_at, qs_sb_str(&key), false, out);
  free(sub.stack);
  qs_sb_free(&key);
  return ok;
}

static bool eval_resolver(rctx *c, const char *name, const char *argtext, const char *path, qs_node **out) {
  size_t n = 0;
  char **raw = split_args(argtext, &n);
  qs_node **args = qs_calloc(n ? n : 1, sizeof *args);
  bool ok = true;
  for (size_t k = 0; ok && k < n; k++) ok = eval_arg(c, raw[k], path, &args[k]);
  if (ok) {
    if (strcmp(name, "oc.env") == 0) ok = resolver_env(c, args, n, path, out);
    else if (strcmp(name, "now") == 0) ok = resolver_now(args, n, out);
    else if (strcmp(name, "hydra") == 0) ok = resolver_hydra(c, args, n, out);
    else ok = fail_at(c, path, "Unsupported interpolation type %s", name);
  }
  for (size_t k = 0; k < n; k++) {
    free(raw[k]);
    qs_node_free(args[k]);
  }
  free(raw);
  free(args);
  return ok;
}

/* Evaluates the body of one ${...}. */
static bool eval_interp(rctx *c, const char *body, const char *path, qs_node **out) {
  size_t name_len = 0;
  while (is_ident_char(body[name_len])) name_len++;
  if (name_len > 0 && body[name_len] == ':' && body[0] != '.') {
    char *name = qs_strndup(body, name_len);
    bool ok = eval_resolver(c, name, body + name_len + 1, path, out);
    free(name);
    return ok;
  }
  if (!strstr(body, "${")) return resolve_key(c, body, path, out);
  /* A key built from nested interpolations: ${a.${b}}. */
  qs_node *key = NULL;
  if (!resolve_string(c, body, path, &key)) return false;
  qs_strbuf text = {0};
  append_str(&text, key);
  qs_node_free(key);
  bool ok = resolve_key(c, qs_sb_str(&text), path, out);
  qs_sb_free(&text);
  return ok;
}

/* A string holding interpolations: one whole interpolation keeps the
 * target's type; anything else concatenates str() of the pieces. */
static bool resolve_string(rctx *c, const char *text, const char *path, qs_node **out) {
  qs_strbuf b = {0};
  qs_node *single = NULL;
  size_t pieces = 0;
  bool ok = true;
  for (size_t i = 0; ok && text[i];) {
    if (text[i] == '\\' && text[i + 1] == '\\' && text[i + 2] == '$' && text[i + 3] == '{') {
      qs_sb_putc(&b, '\\');
      pieces++;
      i += 2;
    } else if (text[i] == '\\' && text[i + 1] == '$' && text[i + 2] == '{') {
      qs_sb_append(&b, "${");
      pieces++;
      i += 3;
    } else if (text[i] == '$' && text[i + 1] == '{') {
      long close = find_close(text, i + 2);
      if (close < 0) {
        ok = fail_at(c, path, "GrammarParseError raised while resolving interpolation: unterminated '${' in '%s'", text);
        break;
      }
      char *body = qs_strndup(text + i + 2, (size_t)close - i - 2);
      qs_node *v = NULL;
      ok = eval_interp(c, body, path, &v);
      free(body);
      if (ok) append_str(&b, v);
      qs_node_free(single);
      single = v;
      pieces++;
      i = (size_t)close + 1;
    } else {
      qs_sb_putc(&b, text[i++]);
      pieces++;
    }
  }
  if (ok && pieces == 1 && single) {
    *out = single;
    single = NULL;
  } else if (ok) {
    *out = qs_node_str(qs_sb_str(&b));
  }
  qs_node_free(single);
  qs_sb_free(&b);
  return ok;
}

static bool resolve_node(rctx *c, const qs_node *n, const char *path, bool keep_missing, qs_node **out) {
  if (n->kind == QS_MAP || n->kind == QS_LIST) {
    qs_node *copy = n->kind == QS_MAP ? qs_node_map() : qs_node_list();
    for (size_t k = 0; k < n->n; k++) {
      char index[32];
      snprintf(index, sizeof index, "%zu", k);
      char *sub = child_path(path, n->kind == QS_MAP ? n->keys[k] : index);
      qs_node *v = NULL;
      bool ok = resolve_node(c, n->items[k], sub, keep_missing, &v);
      free(sub);
      if (!ok) {
        qs_node_free(copy);
        return false;
      }
      if (n->kind == QS_MAP) qs_map_set(copy, n->keys[k], v);
      else qs_list_append(copy, v);
    }
    *out = copy;
    return true;
  }
  if (qs_node_is_missing(n) && !keep_missing) return fail_at(c, path, "Missing mandatory value: %s", path);
  /* Escaped "\${" also goes through the grammar, which unescapes it. */
  if (n->kind != QS_STR || !strstr(n->s, "${")) {
    *out = qs_node_copy(n);
    return true;
  }
  /* Also catches a value that points at a container holding itself. */
  if (on_stack(c, path)) return fail_at(c, path, "Recursive interpolation detected");
  qs_grow((void **)&c->stack, &c->cap, c->depth + 1, sizeof *c->stack);
  c->stack[c->depth++] = qs_strdup(path);
  bool ok = resolve_string(c, n->s, path, out);
  free(c->stack[--c->depth]);
  return ok;
}

/* A non-owning mapping {hydra: <node>} for a job config without its hydra
 * node, so ${hydra:...} resolves as it does in the full config. */
typedef struct hydra_holder {
  qs_node map;
  char *key;
  const qs_node *item;
} hydra_holder;

static const qs_node *hydra_root_of(const qs_node *root, const qs_node *hydra, hydra_holder *h) {
  if (qs_map_get(root, "hydra") || !hydra) return root;
  h->key = "hydra";
  h->item = hydra;
  h->map = (qs_node){.kind = QS_MAP, .n = 1, .cap = 1, .keys = &h->key, .items = (qs_node **)&h->item};
  return &h->map;
}

/* Resolves the node at path (which exists) in a fresh context. */
static bool resolve_subtree(const qs_node *root, const qs_node *hydra, const char *path, bool reading,
                            qs_node **out, qs_error *err) {
  hydra_holder h;
  rctx c = {.root = root, .hydra_root = hydra_root_of(root, hydra, &h), .trailer = reading, .err = err};
  bool ok = resolve_node(&c, qs_node_get_path(root, path), path, !reading, out);
  free(c.stack);
  return ok;
}

bool qs_interp_resolve(const qs_node *root, const qs_node *hydra, qs_node **out, qs_error *err) {
  return resolve_subtree(root, hydra, "", false, out, err);
}

bool qs_interp_resolve_at(const qs_node *root, const qs_node *hydra, const char *path, qs_node **out,
                          qs_error *err) {
  *out = NULL;
  return !qs_node_get_path(root, path) || resolve_subtree(root, hydra, path, false, out, err);
}

bool qs_interp_select_in(const qs_node *root, const qs_node *hydra, const char *path, qs_node **out,
                         qs_error *err) {
  *out = NULL;
  return !qs_node_get_path(root, path) || resolve_subtree(root, hydra, path, true, out, err);
}

bool qs_interp_select(const qs_node *root, const char *path, qs_node **out, qs_error *err) {
  return qs_interp_select_in(root, NULL, path, out, err);
}
