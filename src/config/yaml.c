/* YAML load (libyaml events -> qs_node with PyYAML/OmegaConf typing) and
 * dump (PyYAML's emitter rules for block style and scalar quoting). */
#define _POSIX_C_SOURCE 200809L
#include "config/yaml.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pcre2.h>
#include <yaml.h>

#include "core/fsutil.h"
#include "core/mem.h"
#include "core/pyfmt.h"
#include "core/strbuf.h"

/* ------------------------------------------------------------------------ */
/* Implicit resolvers (PyYAML resolver.py, YAML 1.1), as regular expressions. */

typedef enum resolved {
  R_STR, R_BOOL, R_INT, R_FLOAT, R_NULL, R_MERGE, R_VALUE, R_TIMESTAMP,
} resolved;

typedef struct resolver {
  resolved tag;
  const char *pattern;
  const char *first_chars; /* PyYAML picks candidate resolvers by the first character */
  pcre2_code *re;
} resolver;

#define DIGITS "0123456789"
static const char *const BOOL_RE = "^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$";
static const char *const FLOAT_RE =
    "^(?:[-+]?(?:[0-9][0-9_]*)\\.[0-9_]*(?:[eE][-+][0-9]+)?|\\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    "|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$";
static const char *const INT_RE =
    "^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
    "|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$";
static const char *const NULL_RE = "^(?:~|null|Null|NULL|)$";
static const char *const TIMESTAMP_RE =
    "^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
    "|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \\t]+)[0-9][0-9]?"
    ":[0-9][0-9]:[0-9][0-9](?:\\.[0-9]*)?(?:[ \\t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$";
/* OmegaConf adds this float rule (after PyYAML's) so that 1e3 is a float. */
static const char *const OMEGACONF_FLOAT_RE =
    "^(?:[-+]?[0-9]+(?:_[0-9]+)*\\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)"
    "|\\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?|[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\\.[0-9_]*"
    "|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$";

/* In registration order, which is the order PyYAML tries them. */
static resolver LOAD_RESOLVERS[] = {
  {R_BOOL, NULL, "yYnNtTfFoO", NULL},
  {R_FLOAT, NULL, "-+" DIGITS ".", NULL},
  {R_INT, NULL, "-+" DIGITS, NULL},
  {R_MERGE, "^(?:<<)$", "<", NULL},
  {R_NULL, NULL, "~nN", NULL},
  {R_VALUE, "^(?:=)$", "=", NULL},
  {R_FLOAT, NULL, "-+" DIGITS ".", NULL},
};

/* yaml.Dumper's resolver: the standard set, timestamps included. */
static resolver DUMP_RESOLVERS[] = {
  {R_BOOL, NULL, "yYnNtTfFoO", NULL},
  {R_FLOAT, NULL, "-+" DIGITS ".", NULL},
  {R_INT, NULL, "-+" DIGITS, NULL},
  {R_MERGE, "^(?:<<)$", "<", NULL},
  {R_NULL, NULL, "~nN", NULL},
  {R_TIMESTAMP, NULL, DIGITS, NULL},
  {R_VALUE, "^(?:=)$", "=", NULL},
};

static const char *resolver_pattern(const resolver *r, bool omegaconf_float) {
  if (r->pattern) return r->pattern;
  switch (r->tag) {
  case R_BOOL: return BOOL_RE;
  case R_FLOAT: return omegaconf_float ? OMEGACONF_FLOAT_RE : FLOAT_RE;
  case R_INT: return INT_RE;
  case R_NULL: return NULL_RE;
  case R_TIMESTAMP: return TIMESTAMP_RE;
  default: return "^$";
  }
}

/* Patterns compile on first use and stay cached for the process (config
 * loading is single-threaded). */
static bool regex_match(resolver *r, bool omegaconf_float, const char *s) {
  if (!r->re) {
    int code;
    PCRE2_SIZE offset;
    r->re = pcre2_compile((PCRE2_SPTR)resolver_pattern(r, omegaconf_float), PCRE2_ZERO_TERMINATED, 0, &code, &offset,
                          NULL);
  }
  pcre2_match_data *md = pcre2_match_data_create_from_pattern(r->re, NULL);
  int rc = pcre2_match(r->re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
  pcre2_match_data_free(md);
  return rc >= 0;
}

/* Resolver.resolve() for a plain scalar. The empty string has only the
 * null resolver; otherwise the candidates registered for the first char. */
static resolved resolve_with(resolver *set, size_t n, bool dumping, const char *s) {
  if (!*s) return R_NULL;
  for (size_t k = 0; k < n; k++) {
    bool second_float = !dumping && k == n - 1;
    if (strchr(set[k].first_chars, s[0]) && regex_match(&set[k], second_float, s)) return set[k].tag;
  }
  return R_STR;
}

static resolved resolve_plain(const char *s) {
  return resolve_with(LOAD_RESOLVERS, sizeof LOAD_RESOLVERS / sizeof *LOAD_RESOLVERS, false, s);
}

static resolved resolve_for_dump(const char *s) {
  return resolve_with(DUMP_RESOLVERS, sizeof DUMP_RESOLVERS / sizeof *DUMP_RESOLVERS, true, s);
}

/* ------------------------------------------------------------------------ */
/* Constructors (SafeConstructor.construct_yaml_*). */

static char *without_underscores(const char *s) {
  char *d = qs_malloc(strlen(s) + 1), *o = d;
  for (; *s; s++)
    if (*s != '_') *o++ = *s;
  *o = '\0';
  return d;
}

/* Base 60 ("1:30" = 90): parts are weighted 1, 60, 3600... from the right.
 * The resolver's pattern has already checked the form. */
static double sexagesimal(const char *s) {
  double value = 0;
  const char *part = s;
  for (;;) {
    char *end;
    value = value * 60 + strtod(part, &end);
    if (*end != ':') return value;
    part = end + 1;
  }
}

static qs_node *construct_int(const char *text, bool *overflow) {
  char *v = without_underscores(text);
  const char *d = v;
  int sign = 1;
  if (*d == '-' || *d == '+') sign = *d++ == '-' ? -1 : 1;
  errno = 0;
  long long r;
  if (strcmp(d, "0") == 0) r = 0;
  else if (strncmp(d, "0b", 2) == 0) r = strtoll(d + 2, NULL, 2);
  else if (strncmp(d, "0x", 2) == 0) r = strtoll(d + 2, NULL, 16);
  else if (d[0] == '0') r = strtoll(d, NULL, 8);
  else if (strchr(d, ':')) {
    double x = sexagesimal(d);
    if (x > 9.2e18) errno = ERANGE;
    r = (long long)x;
  } else r = strtoll(d, NULL, 10);
  *overflow = errno == ERANGE;
  free(v);
  return qs_node_int(sign * (int64_t)r);
}

static qs_node *construct_float(const char *text) {
  char *v = without_underscores(text);
  for (char *c = v; *c; c++)
    if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
  const char *d = v;
  double sign = 1;
  if (*d == '-' || *d == '+') sign = *d++ == '-' ? -1 : 1;
  double r;
  if (strcmp(d, ".inf") == 0) r = INFINITY;
  else if (strcmp(d, ".nan") == 0) r = NAN;
  else if (strchr(d, ':')) r = sexagesimal(d);
  else r = strtod(d, NULL);
  free(v);
  return qs_node_float(sign * r);
}

static qs_node *construct_bool(const char *text) {
  return qs_node_bool(strcasecmp(text, "yes") == 0 || strcasecmp(text, "true") == 0 || strcasecmp(text, "on") == 0);
}

/* ------------------------------------------------------------------------ */
/* Loader. */

typedef struct anchor {
  char *name;
  qs_node *node;
} anchor;

typedef struct loader {
  yaml_parser_t parser;
  const char *name;
  qs_error *err;
  anchor *anchors;
  size_t n_anchors, cap_anchors;
} loader;

static bool fail_at(loader *l, const char *context, yaml_mark_t cmark, const char *problem, yaml_mark_t pmark) {
  if (context)
    return qs_fail(l->err, QS_EXIT_USAGE, "%s\n  in \"%s\", line %zu, column %zu\n%s\n  in \"%s\", line %zu, column %zu",
                   context, l->name, cmark.line + 1, cmark.column + 1, problem, l->name, pmark.line + 1,
                   pmark.column + 1);
  return qs_fail(l->err, QS_EXIT_USAGE, "%s\n  in \"%s\", line %zu, column %zu", problem, l->name, pmark.line + 1,
                 pmark.column + 1);
}

static bool next_event(loader *l, yaml_event_t *ev) {
  if (yaml_parser_parse(&l->parser, ev)) return true;
  yaml_parser_t *p = &l->parser;
  return fail_at(l, p->context, p->context_mark, p->problem ? p->problem : "invalid YAML", p->problem_mark);
}

static void remember_anchor(loader *l, const yaml_char_t *name, const qs_node *n) {
  if (!name) return;
  for (size_t k = 0; k < l->n_anchors; k++)
    if (strcmp(l->anchors[k].name, (const char *)name) == 0) {
      qs_node_free(l->anchors[k].node);
      l->anchors[k].node = qs_node_copy(n);
      return;
    }
  qs_grow((void **)&l->anchors, &l->cap_anchors, l->n_anchors + 1, sizeof *l->anchors);
  l->anchors[l->n_anchors++] = (anchor){qs_strdup((const char *)name), qs_node_copy(n)};
}

static const char *TAG_PREFIX = "tag:yaml.org,2002:";

/* Short name of a standard tag ("str"), or NULL for none / "!". */
static const char *std_tag(const yaml_char_t *tag) {
  if (!tag || strcmp((const char *)tag, "!") == 0) return NULL;
  if (strncmp((const char *)tag, TAG_PREFIX, strlen(TAG_PREFIX)) == 0) return (const char *)tag + strlen(TAG_PREFIX);
  return (const char *)tag;
}

typedef struct scalar_info {
  bool is_str;  /* resolved to the str tag (what the duplicate-key check looks at) */
  bool is_merge;
} scalar_info;

static qs_node *build_scalar(loader *l, yaml_event_t *ev, scalar_info *info) {
  const char *text = (const char *)ev->data.scalar.value;
  const char *tag = std_tag(ev->data.scalar.tag);
  bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  resolved r = R_STR;
  if (tag) {
    if (strcmp(tag, "str") == 0) r = R_STR;
    else if (strcmp(tag, "int") == 0) r = R_INT;
    else if (strcmp(tag, "float") == 0) r = R_FLOAT;
    else if (strcmp(tag, "bool") == 0) r = R_BOOL;
    else if (strcmp(tag, "null") == 0) r = R_NULL;
    else {
      char msg[512];
      snprintf(msg, sizeof msg, "could not determine a constructor for the tag '%s'", (const char *)ev->data.scalar.tag);
      fail_at(l, NULL, ev->start_mark, msg, ev->start_mark);
      return NULL;
    }
    resolved implicit = resolve_plain(text);
    bool fits = r == R_STR || implicit == r || (r == R_FLOAT && implicit == R_INT);
    if (!fits) {
      char msg[512];
      snprintf(msg, sizeof msg, "'%.200s' is not a valid !!%s", text, tag);
      fail_at(l, NULL, ev->start_mark, msg, ev->start_mark);
      return NULL;
    }
  } else if (plain) {
    r = resolve_plain(text);
  }
  info->is_str = r == R_STR;
  info->is_merge = r == R_MERGE;
  bool overflow = false;
  qs_node *n;
  switch (r) {
  case R_BOOL: n = construct_bool(text); break;
  case R_INT: n = construct_int(text, &overflow); break;
  case R_FLOAT: n = construct_float(text); break;
  case R_NULL: n = qs_node_null(); break;
  case R_MERGE: n = qs_node_str(text); break;
  case R_VALUE:
    fail_at(l, NULL, ev->start_mark, "could not determine a constructor for the tag 'tag:yaml.org,2002:value'",
            ev->start_mark);
    return NULL;
  default: n = qs_node_str(text); break;
  }
  if (overflow) {
    qs_node_free(n);
    char msg[512];
    snprintf(msg, sizeof msg, "integer %.200s does not fit in 64 bits", text);
    fail_at(l, NULL, ev->start_mark, msg, ev->start_mark);
    return NULL;
  }
  return n;
}

static qs_node *build_node(loader *l, yaml_event_t *ev, scalar_info *info);

static qs_node *build_sequence(loader *l, yaml_event_t *start) {
  qs_node *list = qs_node_list();
  for (;;) {
    yaml_event_t ev;
    if (!next_event(l, &ev)) break;
    if (ev.type == YAML_SEQUENCE_END_EVENT) {
      yaml_event_delete(&ev);
      remember_anchor(l, start->data.sequence_start.anchor, list);
      return list;
    }
    scalar_info info;
    qs_node *item = build_node(l, &ev, &info);
    yaml_event_delete(&ev);
    if (!item) break;
    qs_list_append(list, item);
  }
  qs_node_free(list);
  return NULL;
}

/* One pending key/value of a mapping, before "<<" merges are applied. */
typedef struct pair {
  char *key;
  qs_node *value;
} pair;

typedef struct pairs {
  pair *items;
  size_t n, cap;
} pairs;

static void pairs_push(pairs *ps, const char *key, qs_node *value) {
  qs_grow((void **)&ps->items, &ps->cap, ps->n + 1, sizeof *ps->items);
  ps->items[ps->n++] = (pair){qs_strdup(key), value};
}

static void pairs_free(pairs *ps) {
  for (size_t k = 0; k < ps->n; k++) {
    free(ps->items[k].key);
    qs_node_free(ps->items[k].value);
  }
  free(ps->items);
}

static void pairs_push_map(pairs *ps, const qs_node *map) {
  for (size_t k = 0; k < map->n; k++) pairs_push(ps, map->keys[k], qs_node_copy(map->items[k]));
}

/* SafeConstructor.flatten_mapping: a mapping's pairs, or a list of
 * mappings whose pairs go in reverse list order (earlier lists win). */
static bool add_merge(loader *l, pairs *merged, const qs_node *value, yaml_mark_t map_mark, yaml_mark_t mark) {
  if (value->kind == QS_MAP) {
    pairs_push_map(merged, value);
    return true;
  }
  if (value->kind != QS_LIST)
    return fail_at(l, "while constructing a mapping", map_mark,
                   "expected a mapping or list of mappings for merging", mark);
  for (size_t k = value->n; k-- > 0;) {
    if (value->items[k]->kind != QS_MAP)
      return fail_at(l, "while constructing a mapping", map_mark, "expected a mapping for merging", mark);
    pairs_push_map(merged, value->items[k]);
  }
  return true;
}

static bool has_str_key(const pairs *ps, const bool *is_str, const char *key) {
  for (size_t k = 0; k < ps->n; k++)
    if (is_str[k] && strcmp(ps->items[k].key, key) == 0) return true;
  return false;
}

static qs_node *finish_mapping(pairs *merged, pairs *explicit_pairs) {
  qs_node *map = qs_node_map();
  for (size_t k = 0; k < merged->n; k++) {
    qs_map_set(map, merged->items[k].key, merged->items[k].value);
    merged->items[k].value = NULL;
  }
  for (size_t k = 0; k < explicit_pairs->n; k++) {
    qs_map_set(map, explicit_pairs->items[k].key, explicit_pairs->items[k].value);
    explicit_pairs->items[k].value = NULL;
  }
  return map;
}

static bool read_mapping_entries(loader *l, yaml_event_t *start, pairs *merged, pairs *explicit_pairs) {
  bool *is_str = NULL;
  size_t cap_str = 0;
  bool ok = false;
  for (;;) {
    yaml_event_t kev;
    if (!next_event(l, &kev)) break;
    if (kev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&kev);
      ok = true;
      break;
    }
    if (kev.type != YAML_SCALAR_EVENT && kev.type != YAML_ALIAS_EVENT) {
      fail_at(l, "while constructing a mapping", start->start_mark, "found a mapping or list as a key (not supported)",
              kev.start_mark);
      yaml_event_delete(&kev);
      break;
    }
    scalar_info kinfo = {0};
    yaml_mark_t kmark = kev.start_mark;
    qs_node *key = build_node(l, &kev, &kinfo);
    yaml_event_delete(&kev);
    if (!key) break;
    char *key_text = key->kind == QS_STR ? qs_strdup(key->s) : qs_yaml_scalar_text(key, true);
    qs_node_free(key);
    yaml_event_t vev;
    qs_node *value = NULL;
    scalar_info vinfo;
    if (next_event(l, &vev)) {
      value = build_node(l, &vev, &vinfo);
      yaml_event_delete(&vev);
    }
    if (!value) {
      free(key_text);
      break;
    }
    if (kinfo.is_merge) {
      bool merged_ok = add_merge(l, merged, value, start->start_mark, kmark);
      qs_node_free(value);
      free(key_text);
      if (!merged_ok) break;
      continue;
    }
    if (kinfo.is_str && has_str_key(explicit_pairs, is_str, key_text)) {
      char msg[512];
      snprintf(msg, sizeof msg, "found duplicate key %.400s", key_text);
      fail_at(l, "while constructing a mapping", start->start_mark, msg, kmark);
      qs_node_free(value);
      free(key_text);
      break;
    }
    qs_grow((void **)&is_str, &cap_str, explicit_pairs->n + 1, sizeof *is_str);
    is_str[explicit_pairs->n] = kinfo.is_str;
    pairs_push(explicit_pairs, key_text, value);
    free(key_text);
  }
  free(is_str);
  return ok;
}

static qs_node *build_mapping(loader *l, yaml_event_t *start) {
  pairs merged = {0}, explicit_pairs = {0};
  qs_node *map = NULL;
  if (read_mapping_entries(l, start, &merged, &explicit_pairs)) {
    map = finish_mapping(&merged, &explicit_pairs);
    remember_anchor(l, start->data.mapping_start.anchor, map);
  }
  pairs_free(&merged);
  pairs_free(&explicit_pairs);
  return map;
}

static bool check_collection_tag(loader *l, yaml_event_t *ev, const yaml_char_t *raw, const char *expected) {
  const char *tag = std_tag(raw);
  if (!tag || strcmp(tag, expected) == 0) return true;
  char msg[512];
  snprintf(msg, sizeof msg, "could not determine a constructor for the tag '%s'", (const char *)raw);
  return fail_at(l, NULL, ev->start_mark, msg, ev->start_mark);
}

static qs_node *build_node(loader *l, yaml_event_t *ev, scalar_info *info) {
  memset(info, 0, sizeof *info);
  switch (ev->type) {
  case YAML_SCALAR_EVENT: {
    qs_node *n = build_scalar(l, ev, info);
    if (n) remember_anchor(l, ev->data.scalar.anchor, n);
    return n;
  }
  case YAML_SEQUENCE_START_EVENT:
    if (!check_collection_tag(l, ev, ev->data.sequence_start.tag, "seq")) return NULL;
    return build_sequence(l, ev);
  case YAML_MAPPING_START_EVENT:
    if (!check_collection_tag(l, ev, ev->data.mapping_start.tag, "map")) return NULL;
    return build_mapping(l, ev);
  case YAML_ALIAS_EVENT:
    for (size_t k = l->n_anchors; k-- > 0;)
      if (strcmp(l->anchors[k].name, (const char *)ev->data.alias.anchor) == 0) return qs_node_copy(l->anchors[k].node);
    {
      char msg[512];
      snprintf(msg, sizeof msg, "found undefined alias '%.400s'", (const char *)ev->data.alias.anchor);
      fail_at(l, NULL, ev->start_mark, msg, ev->start_mark);
    }
    return NULL;
  default:
    fail_at(l, NULL, ev->start_mark, "unexpected YAML event", ev->start_mark);
    return NULL;
  }
}

/* stream-start, [document-start node document-end], stream-end. */
static bool load_document(loader *l, qs_node **out) {
  yaml_event_t ev;
  *out = NULL;
  if (!next_event(l, &ev)) return false; /* stream start */
  yaml_event_delete(&ev);
  if (!next_event(l, &ev)) return false;
  if (ev.type == YAML_STREAM_END_EVENT) {
    yaml_event_delete(&ev);
    *out = qs_node_null();
    return true;
  }
  yaml_mark_t doc_mark = ev.start_mark;
  yaml_event_delete(&ev);
  if (!next_event(l, &ev)) return false;
  scalar_info info;
  qs_node *root = build_node(l, &ev, &info);
  yaml_event_delete(&ev);
  if (!root) return false;
  bool ok = next_event(l, &ev); /* document end */
  if (ok) yaml_event_delete(&ev);
  if (ok && (ok = next_event(l, &ev))) {
    if (ev.type != YAML_STREAM_END_EVENT)
      ok = fail_at(l, "expected a single document in the stream", doc_mark, "but found another document",
                   ev.start_mark);
    yaml_event_delete(&ev);
  }
  if (!ok) {
    qs_node_free(root);
    return false;
  }
  *out = root;
  return true;
}

bool qs_yaml_parse_value(const char *text, size_t len, const char *name, qs_node **out, qs_error *err) {
  loader l = {.name = name, .err = err};
  yaml_parser_initialize(&l.parser);
  yaml_parser_set_input_string(&l.parser, (const unsigned char *)text, len);
  bool ok = load_document(&l, out);
  yaml_parser_delete(&l.parser);
  for (size_t k = 0; k < l.n_anchors; k++) {
    free(l.anchors[k].name);
    qs_node_free(l.anchors[k].node);
  }
  free(l.anchors);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* Package header (hydra/plugins/config_source.py, _get_header_dict): read
 * from the first 512 characters; blank lines are skipped and the first line
 * that is not a "# @..." comment ends the header. */

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static bool header_line(const char *line, size_t len, const char *name, char **package, qs_error *err) {
  while (len && *line == '#') line++, len--;
  while (len && is_blank(*line)) line++, len--;
  char *shown = qs_strndup(line, len); /* the line as Hydra quotes it in messages */
  char *copy = qs_strndup(line, len);
  char *s = copy;
  char *words[3] = {0};
  size_t n = 0;
  for (char *tok = strtok(s, " \t\r"); tok && n < 3; tok = strtok(NULL, " \t\r")) words[n++] = tok;
  bool ok = true;
  if (n < 2) ok = qs_fail(err, QS_EXIT_USAGE, "%s: Expected header format: KEY VALUE, got '%s'", name, shown);
  else if (n > 2) ok = qs_fail(err, QS_EXIT_USAGE, "%s: Too many components in '%s'", name, shown);
  else if (strcmp(words[0], "@package") == 0) {
    free(*package);
    *package = qs_strdup(words[1]);
  }
  free(copy);
  free(shown);
  return ok;
}

bool qs_yaml_package_header(const char *text, const char *name, char **package, qs_error *err) {
  *package = NULL;
  size_t limit = strnlen(text, 512);
  for (size_t pos = 0; pos < limit;) {
    const char *nl = memchr(text + pos, '\n', limit - pos);
    size_t end = nl ? (size_t)(nl - text) : limit;
    size_t a = pos, b = end;
    while (a < b && is_blank(text[a])) a++;
    while (b > a && is_blank(text[b - 1])) b--;
    pos = end + 1;
    if (a == b) continue;
    size_t c = a;
    if (text[c] != '#') break;
    c++;
    while (c < b && is_blank(text[c])) c++;
    if (c >= b || text[c] != '@') break;
    if (!header_line(text + a, b - a, name, package, err)) {
      free(*package);
      *package = NULL;
      return false;
    }
  }
  return true;
}

bool qs_yaml_load_string(const char *text, size_t len, const char *name, qs_node **out, char **package_header,
                         qs_error *err) {
  *out = NULL;
  if (package_header) *package_header = NULL;
  qs_node *root;
  if (!qs_yaml_parse_value(text, len, name, &root, err)) return false;
  if (root->kind == QS_NULL) {
    qs_node_free(root);
    root = qs_node_map();
  }
  if (root->kind != QS_MAP) {
    qs_node_free(root);
    return qs_fail(err, QS_EXIT_USAGE, "%s: the top level of a config file must be a mapping", name);
  }
  if (package_header && !qs_yaml_package_header(text, name, package_header, err)) {
    qs_node_free(root);
    return false;
  }
  *out = root;
  return true;
}

bool qs_yaml_load_file(const char *path, qs_node **out, char **package_header, qs_error *err) {
  char *data;
  size_t len;
  *out = NULL;
  if (package_header) *package_header = NULL;
  if (!qs_read_file(path, &data, &len, err)) return false;
  bool ok = qs_yaml_load_string(data, len, path, out, package_header, err);
  free(data);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* Dumper. */

/* Python's int(s) / float(s) accept it (OmegaConf quotes such strings). */
static bool py_number_text(const char *s, bool allow_float) {
  const char *b = s;
  while (*b == ' ' || (*b >= '\t' && *b <= '\r')) b++;
  size_t len = strlen(b);
  while (len && (b[len - 1] == ' ' || (b[len - 1] >= '\t' && b[len - 1] <= '\r'))) len--;
  if (!len) return false;
  char *t = qs_strndup(b, len);
  const char *u = t + ((t[0] == '+' || t[0] == '-') ? 1 : 0);
  bool ok;
  if (!allow_float) {
    ok = true;
    size_t n = strlen(u);
    for (size_t k = 0; k < n && ok; k++)
      ok = (u[k] >= '0' && u[k] <= '9') || (u[k] == '_' && k > 0 && k + 1 < n && u[k - 1] != '_' && u[k + 1] != '_');
    ok = ok && n > 0;
  } else if (strcasecmp(u, "inf") == 0 || strcasecmp(u, "infinity") == 0 || strcasecmp(u, "nan") == 0) {
    ok = true;
  } else {
    /* digitpart ["." [digitpart]] | "." digitpart, then an optional exponent */
    size_t k = 0, digits = 0;
    bool good = true;
    for (; u[k] >= '0' && u[k] <= '9'; k++, digits++)
      if (u[k + 1] == '_' && u[k + 2] >= '0' && u[k + 2] <= '9') k++;
    if (u[k] == '.') {
      k++;
      for (; u[k] >= '0' && u[k] <= '9'; k++, digits++)
        if (u[k + 1] == '_' && u[k + 2] >= '0' && u[k + 2] <= '9') k++;
    }
    if (digits && (u[k] == 'e' || u[k] == 'E')) {
      k++;
      if (u[k] == '+' || u[k] == '-') k++;
      size_t exp_digits = 0;
      for (; u[k] >= '0' && u[k] <= '9'; k++, exp_digits++)
        if (u[k + 1] == '_' && u[k + 2] >= '0' && u[k + 2] <= '9') k++;
      good = exp_digits > 0;
    }
    ok = good && digits > 0 && u[k] == '\0';
  }
  free(t);
  return ok;
}

static bool omegaconf_bool_word(const char *s) {
  static const char *const WORDS[] = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
                                      "true", "True", "TRUE", "false", "False", "FALSE", "on", "On",
                                      "ON", "off", "Off", "OFF"};
  for (size_t k = 0; k < sizeof WORDS / sizeof *WORDS; k++)
    if (strcmp(s, WORDS[k]) == 0) return true;
  return false;
}

/* Decodes one UTF-8 code point; returns its length (1 for a bad byte, cp = -1). */
static size_t utf8_decode(const unsigned char *s, long *cp) {
  if (s[0] < 0x80) { *cp = s[0]; return 1; }
  size_t n = (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
  if (!n) { *cp = -1; return 1; }
  long v = s[0] & (0x7F >> n);
  for (size_t k = 1; k < n; k++) {
    if ((s[k] & 0xC0) != 0x80) { *cp = -1; return 1; }
    v = (v << 6) | (s[k] & 0x3F);
  }
  *cp = v;
  return n;
}

static bool is_break(long c) { return c == '\n' || c == 0x85 || c == 0x2028 || c == 0x2029; }
static bool is_space_or_end(long c) { return c == 0 || c == ' ' || c == '\t' || c == '\r' || is_break(c); }

/* Printable with allow_unicode=True (the emitter's test for "special"). */
static bool printable(long c) {
  if (c == '\n' || (c >= 0x20 && c <= 0x7E)) return true;
  return (c == 0x85 || (c >= 0xA0 && c <= 0xD7FF) || (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c < 0x10FFFF)) &&
         c != 0xFEFF;
}

typedef struct analysis {
  bool empty, multiline, allow_block_plain, allow_single_quoted;
} analysis;

/* Emitter.analyze_scalar, reduced to what block style needs. */
static analysis analyze(const char *s) {
  analysis a = {.empty = !*s, .allow_block_plain = true, .allow_single_quoted = true};
  if (!*s) return a;
  long cps[4096];
  size_t n = 0;
  long *cp = cps;
  size_t len = strlen(s);
  if (len > sizeof cps / sizeof *cps) cp = qs_malloc(len * sizeof *cp);
  for (size_t k = 0; s[k];) k += utf8_decode((const unsigned char *)s + k, &cp[n++]);
  bool block_ind = strncmp(s, "---", 3) == 0 || strncmp(s, "...", 3) == 0;
  bool line_breaks = false, special = false, leading_space = false, leading_break = false;
  bool trailing_space = false, trailing_break = false, break_space = false, space_break = false;
  bool prev_space = false, prev_break = false, preceded_ws = true;
  for (size_t k = 0; k < n; k++) {
    long c = cp[k];
    bool followed_ws = k + 1 >= n || is_space_or_end(cp[k + 1]);
    if (k == 0) {
      if (c < 128 && c > 0 && strchr("#,[]{}&*!|>'\"%@`", (int)c)) block_ind = true;
      if ((c == '?' || c == ':') && followed_ws) block_ind = true;
      if (c == '-' && followed_ws) block_ind = true;
    } else {
      if (c == ':' && followed_ws) block_ind = true;
      if (c == '#' && preceded_ws) block_ind = true;
    }
    if (is_break(c)) line_breaks = true;
    if (c < 0 || !printable(c)) special = true;
    if (c == ' ') {
      if (k == 0) leading_space = true;
      if (k == n - 1) trailing_space = true;
      if (prev_break) break_space = true;
      prev_space = true;
      prev_break = false;
    } else if (is_break(c)) {
      if (k == 0) leading_break = true;
      if (k == n - 1) trailing_break = true;
      if (prev_space) space_break = true;
      prev_space = false;
      prev_break = true;
    } else {
      prev_space = prev_break = false;
    }
    preceded_ws = is_space_or_end(c);
  }
  if (cp != cps) free(cp);
  if (leading_space || leading_break || trailing_space || trailing_break) a.allow_block_plain = false;
  if (break_space) a.allow_block_plain = a.allow_single_quoted = false;
  if (space_break || special) a.allow_block_plain = a.allow_single_quoted = false;
  if (line_breaks) a.allow_block_plain = false;
  if (block_ind) a.allow_block_plain = false;
  a.multiline = line_breaks;
  return a;
}

static void append_single_quoted(qs_strbuf *b, const char *s) {
  qs_sb_putc(b, '\'');
  for (; *s; s++) {
    if (*s == '\'') qs_sb_putc(b, '\'');
    qs_sb_putc(b, *s);
  }
  qs_sb_putc(b, '\'');
}

/* Emitter.write_double_quoted without line folding. */
static void append_double_quoted(qs_strbuf *b, const char *s) {
  qs_sb_putc(b, '"');
  for (size_t k = 0; s[k];) {
    long c;
    size_t n = utf8_decode((const unsigned char *)s + k, &c);
    const char *esc = NULL;
    switch (c) {
    case 0: esc = "0"; break;
    case 0x07: esc = "a"; break;
    case 0x08: esc = "b"; break;
    case 0x09: esc = "t"; break;
    case 0x0A: esc = "n"; break;
    case 0x0B: esc = "v"; break;
    case 0x0C: esc = "f"; break;
    case 0x0D: esc = "r"; break;
    case 0x1B: esc = "e"; break;
    case '"': esc = "\""; break;
    case '\\': esc = "\\"; break;
    case 0x85: esc = "N"; break;
    case 0xA0: esc = "_"; break;
    case 0x2028: esc = "L"; break;
    case 0x2029: esc = "P"; break;
    default: break;
    }
    if (esc) qs_sb_printf(b, "\\%s", esc);
    else if (c < 0) qs_sb_printf(b, "\\x%02X", (unsigned char)s[k]);
    else if (!printable(c) || c == 0xFEFF) {
      if (c <= 0xFF) qs_sb_printf(b, "\\x%02X", (unsigned)c);
      else if (c <= 0xFFFF) qs_sb_printf(b, "\\u%04X", (unsigned)c);
      else qs_sb_printf(b, "\\U%08X", (unsigned)c);
    } else qs_sb_append_n(b, s + k, n);
    k += n;
  }
  qs_sb_putc(b, '"');
}

/* OmegaConf's str representer + Emitter.choose_scalar_style. */
static void append_string(qs_strbuf *b, const char *s, bool as_key) {
  bool force_quotes = omegaconf_bool_word(s) || py_number_text(s, false) || py_number_text(s, true);
  analysis a = analyze(s);
  bool implicit = resolve_for_dump(s) == R_STR;
  if (!force_quotes && implicit && !(as_key && (a.empty || a.multiline)) && a.allow_block_plain) {
    qs_sb_append(b, s);
  } else if (a.allow_single_quoted && !(as_key && a.multiline) && !a.multiline) {
    /* multi-line single-quoted text is folded by PyYAML; double quotes keep
     * the same data on one line */
    append_single_quoted(b, s);
  } else {
    append_double_quoted(b, s);
  }
}

static void append_float(qs_strbuf *b, double v) {
  if (isnan(v)) { qs_sb_append(b, ".nan"); return; }
  if (isinf(v)) { qs_sb_append(b, v > 0 ? ".inf" : "-.inf"); return; }
  char buf[40];
  qs_py_float_repr(v, buf, sizeof buf);
  if (!strchr(buf, '.') && strchr(buf, 'e')) {
    char *e = strchr(buf, 'e');
    qs_sb_append_n(b, buf, (size_t)(e - buf));
    qs_sb_append(b, ".0");
    qs_sb_append(b, e);
  } else {
    qs_sb_append(b, buf);
  }
}

static void append_scalar(qs_strbuf *b, const qs_node *n, bool as_key) {
  switch (n->kind) {
  case QS_NULL: qs_sb_append(b, "null"); return;
  case QS_BOOL: qs_sb_append(b, n->b ? "true" : "false"); return;
  case QS_INT: qs_sb_printf(b, "%" PRId64, n->i); return;
  case QS_FLOAT: append_float(b, n->f); return;
  case QS_STR: append_string(b, n->s, as_key); return;
  case QS_MAP: qs_sb_append(b, "{}"); return;
  case QS_LIST: qs_sb_append(b, "[]"); return;
  }
}

char *qs_yaml_scalar_text(const qs_node *n, bool as_key) {
  qs_strbuf b = {0};
  append_scalar(&b, n, as_key);
  return qs_sb_take(&b);
}

static bool is_block(const qs_node *n) { return (n->kind == QS_MAP || n->kind == QS_LIST) && n->n > 0; }

static void indent_to(qs_strbuf *b, size_t indent) {
  for (size_t k = 0; k < indent; k++) qs_sb_putc(b, ' ');
}

static void emit_block(qs_strbuf *b, const qs_node *n, size_t indent, bool first_inline);

/* A mapping's entries at `indent`; the first key follows "- " when inline. */
static void emit_mapping(qs_strbuf *b, const qs_node *map, size_t indent, bool first_inline) {
  for (size_t k = 0; k < map->n; k++) {
    if (k || !first_inline) indent_to(b, indent);
    qs_node key = {.kind = QS_STR, .s = map->keys[k]};
    append_scalar(b, &key, true);
    qs_sb_putc(b, ':');
    const qs_node *v = map->items[k];
    if (!is_block(v)) {
      qs_sb_putc(b, ' ');
      append_scalar(b, v, false);
      qs_sb_putc(b, '\n');
    } else {
      qs_sb_putc(b, '\n');
      /* lists under a key are not indented; mappings are */
      emit_block(b, v, v->kind == QS_LIST ? indent : indent + 2, false);
    }
  }
}

static void emit_sequence(qs_strbuf *b, const qs_node *list, size_t indent, bool first_inline) {
  for (size_t k = 0; k < list->n; k++) {
    if (k || !first_inline) indent_to(b, indent);
    qs_sb_append(b, "- ");
    const qs_node *v = list->items[k];
    if (!is_block(v)) {
      append_scalar(b, v, false);
      qs_sb_putc(b, '\n');
    } else {
      emit_block(b, v, indent + 2, true);
    }
  }
}

static void emit_block(qs_strbuf *b, const qs_node *n, size_t indent, bool first_inline) {
  if (n->kind == QS_MAP) emit_mapping(b, n, indent, first_inline);
  else emit_sequence(b, n, indent, first_inline);
}

char *qs_yaml_dump(const qs_node *n) {
  qs_strbuf b = {0};
  if (is_block(n)) {
    emit_block(&b, n, 0, false);
  } else {
    append_scalar(&b, n, false);
    qs_sb_putc(&b, '\n');
    /* PyYAML ends a document whose root is a plain scalar with "..." */
    if (n->kind != QS_MAP && n->kind != QS_LIST && b.s[0] != '\'' && b.s[0] != '"') qs_sb_append(&b, "...\n");
  }
  return qs_sb_take(&b);
}
