/* safetensors reader rules (spec §2.3) on in-memory images, the streaming
 * writer, and a deterministic mutation fuzz over headers: every mutated file
 * gives either a valid parse or one clean error line, never a crash. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "check.h"
#include "core/fsutil.h"
#include "core/mem.h"
#include "core/strbuf.h"
#include "model/safetensors.h"

/* An image: 8-byte length, header text, `payload` zero bytes. */
static uint8_t *image(const char *header, size_t payload, size_t *size) {
  size_t n = strlen(header);
  *size = 8 + n + payload;
  uint8_t *b = qs_calloc(*size ? *size : 1, 1);
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
  memcpy(b + 8, header, n);
  return b;
}

/* Parses header+payload; returns "" on success, else the error message. */
static const char *parse(const char *header, size_t payload) {
  static qs_error err;
  size_t size;
  uint8_t *b = image(header, payload, &size);
  qs_st_file f;
  qs_error_clear(&err);
  bool ok = qs_st_parse(b, size, "t.safetensors", &f, &err);
  if (ok) qs_st_close(&f);
  free(b);
  return ok ? "" : err.msg;
}

static void test_rules(void) {
  CHECK_STR(parse("{}", 0), "");
  CHECK_STR(parse("{\"__metadata__\":{\"format\":\"pt\"}}   ", 0), ""); /* trailing spaces allowed */
  CHECK_STR(parse("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4), ""); /* scalar */
  CHECK_STR(parse("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]}}", 0), ""); /* empty */
  CHECK_STR(parse("[]", 0), "t.safetensors: header is not a JSON object");
  CHECK_STR(parse("{\"__metadata__\":{\"a\":1}}", 0), "t.safetensors: '__metadata__' must map strings to strings");
  CHECK_STR(parse("{\"a\":[]}", 0), "t.safetensors: tensor 'a': entry is not a JSON object");
  CHECK_STR(parse("{\"a\":{\"shape\":[],\"data_offsets\":[0,1]}}", 1), "t.safetensors: tensor 'a': missing \"dtype\"");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],\"x\":1}}", 1),
            "t.safetensors: tensor 'a': unexpected key \"x\"");
  CHECK_STR(parse("{\"a\":{\"dtype\":7,\"shape\":[],\"data_offsets\":[0,1]}}", 1),
            "t.safetensors: tensor 'a': dtype is not a string");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1),
            "t.safetensors: tensor 'a': shape must be an array of non-negative integers");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", 1),
            "t.safetensors: tensor 'a': shape must be an array of non-negative integers");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}}", 1),
            "t.safetensors: tensor 'a': shape has more elements than 2^64");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,536870912],\"data_offsets\":[0,1]}}", 1),
            "t.safetensors: tensor 'a': shape [4294967296, 536870912] of dtype F64 needs more than 2^64 bytes");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1),
            "t.safetensors: tensor 'a': data_offsets must be two non-negative integers");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1),
            "t.safetensors: tensor 'a': data_offsets [1, 0] are outside the payload of 1 bytes");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 2),
            "t.safetensors: tensor 'b': data_offsets [0, 1] overlap tensor 'a'");
  CHECK_STR(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), "");
  uint8_t short_file[7] = {0};
  qs_st_file f;
  qs_error err;
  CHECK(!qs_st_parse(short_file, sizeof short_file, "s", &f, &err));
  CHECK_STR(err.msg, "s: file is 7 bytes, too short for the 8-byte header length");
}

/* Control characters in names are shown as '?' so the message stays one line. */
static void test_message_one_line(void) {
  CHECK_STR(parse("{\"a\\nb\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2),
            "t.safetensors: tensor 'a?b': data_offsets [0, 2] hold 2 bytes, but U8 [3] needs 3");
}

static void test_dtypes(void) {
  static const char *const names[] = {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32",
                                      "U32", "F32", "F64", "I64", "U64", "F8_E4M3", "F8_E5M2"};
  static const size_t sizes[] = {1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8, 1, 1};
  for (int i = 0; i < QS_ST_DTYPE_COUNT; i++) {
    qs_st_dtype d;
    CHECK(qs_st_dtype_parse(names[i], &d));
    CHECK_INT(d, i);
    CHECK_INT(qs_st_dtype_size(d), sizes[i]);
    CHECK_STR(qs_st_dtype_name(d), names[i]);
  }
  qs_st_dtype d;
  CHECK(!qs_st_dtype_parse("bf16", &d));
}

static void test_writer_roundtrip(void) {
  const char *path = "st_roundtrip.safetensors";
  qs_st_spec specs[] = {
      {"b.weight", QS_ST_BF16, 2, {3, 5}},
      {"a.scalar", QS_ST_F32, 0, {0}},
      {"c.bytes", QS_ST_U8, 1, {3}}, /* odd size: later tensors start unaligned */
      {"d.f16", QS_ST_F16, 1, {2}},
  };
  qs_st_writer *w;
  qs_error err;
  CHECK(qs_st_writer_open(path, specs, 4, &w, &err));
  uint16_t b[15];
  for (int i = 0; i < 15; i++) b[i] = (uint16_t)(1000 + i);
  /* uneven pieces: the writer streams bytes regardless of tensor boundaries */
  CHECK(qs_st_writer_write(w, b, 7, &err));
  CHECK(qs_st_writer_write(w, (uint8_t *)b + 7, 23, &err));
  float s = 2.5f;
  CHECK(qs_st_writer_write(w, &s, 4, &err));
  CHECK(qs_st_writer_write(w, "xyz", 3, &err));
  CHECK(access(path, F_OK) != 0); /* nothing visible until finish */
  CHECK(!qs_st_writer_write(w, "12345", 5, &err));
  CHECK_STR(err.msg, "st_roundtrip.safetensors: more tensor data than the header announces");
  CHECK(qs_st_writer_write(w, "1234", 4, &err));
  CHECK(qs_st_writer_finish(w, &err));

  qs_st_file f;
  CHECK(qs_st_open(path, &f, &err));
  CHECK_INT(f.count, 4);
  CHECK_INT(f.header_len % 8, 0);
  const qs_st_tensor *t = qs_st_find(&f, "b.weight");
  CHECK(t && t->dtype == QS_ST_BF16 && t->ndim == 2 && t->shape[0] == 3 && t->shape[1] == 5 && t->begin == 0);
  CHECK(t && memcmp(qs_st_data(&f, t), b, 30) == 0);
  t = qs_st_find(&f, "a.scalar");
  CHECK(t && t->ndim == 0 && t->numel == 1 && t->begin == 30 && t->end == 34);
  float back = 0;
  if (t) memcpy(&back, qs_st_data(&f, t), 4);
  CHECK(back == 2.5f);
  t = qs_st_find(&f, "d.f16");
  CHECK(t && t->begin == 37 && memcmp(qs_st_data(&f, t), "1234", 4) == 0);
  CHECK(qs_st_find(&f, "missing") == NULL);
  qs_st_close(&f);
  unlink(path);
}

static void test_writer_short(void) {
  const char *path = "st_short.safetensors";
  qs_st_spec spec = {"x", QS_ST_I32, 1, {4}};
  qs_st_writer *w;
  qs_error err;
  CHECK(qs_st_writer_open(path, &spec, 1, &w, &err));
  CHECK(qs_st_writer_write(w, "abcd", 4, &err));
  CHECK(!qs_st_writer_finish(w, &err));
  CHECK_STR(err.msg, "st_short.safetensors: 4 bytes of tensor data written, header announces 16");
  CHECK(access(path, F_OK) != 0);
}

/* ---- fuzz ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* A valid file with a few tensors of different dtypes, as seed input. */
static uint8_t *seed_image(size_t *size) {
  const char *path = "st_fuzz_seed.safetensors";
  qs_st_spec specs[] = {{"w", QS_ST_BF16, 2, {2, 3}}, {"n", QS_ST_F32, 1, {2}}, {"b", QS_ST_U8, 0, {0}}};
  qs_st_writer *w;
  qs_error err;
  qs_st_writer_open(path, specs, 3, &w, &err);
  uint8_t zeros[21] = {0};
  qs_st_writer_write(w, zeros, sizeof zeros, &err);
  qs_st_writer_finish(w, &err);
  char *data;
  qs_read_file(path, &data, size, &err);
  unlink(path);
  return (uint8_t *)data;
}

static const char *const nasty_values[] = {
    "-1", "1.5", "9223372036854775807", "18446744073709551616", "\"BF16\"", "\"F8_E4M3\"", "[]", "[1,2,3]",
    "null", "{}", "[0,0]", "[0,21]", "[12,20]", "[4294967296,4294967296]", "[3,2]", "\"\"", "[-1,4]", "true",
    "[0,12]", "[12,12]", "[2,3]", "[9007199254740993]", "\"\\u0000\"",
};

/* Replaces one value inside the parsed header with a nasty one. */
static char *mutate_json(const uint8_t *img, size_t size) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | img[i];
  json_t *root = json_loadb((const char *)img + 8, (size_t)n, 0, NULL);
  if (!root || size < 8) return NULL;
  const char *names[] = {"w", "n", "b", "__metadata__"};
  const char *keys[] = {"dtype", "shape", "data_offsets", "extra"};
  json_t *entry = json_object_get(root, names[rnd() % 4]);
  json_t *value = json_loads(nasty_values[rnd() % (sizeof nasty_values / sizeof nasty_values[0])],
                             JSON_DECODE_ANY, NULL);
  if (json_is_object(entry) && value)
    json_object_set_new(entry, keys[rnd() % 4], value);
  else
    json_decref(value);
  char *text = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return text;
}

static void test_fuzz(void) {
  size_t seed_size;
  uint8_t *seed = seed_image(&seed_size);
  qs_st_file f;
  qs_error err;
  CHECK(qs_st_parse(seed, seed_size, "seed", &f, &err));
  uint64_t header_len = f.header_len;
  qs_st_close(&f);
  int accepted = 0, rejected = 0, bad_messages = 0;
  const int rounds = 20000;
  uint8_t *buf = qs_malloc(seed_size + 64);
  for (int r = 0; r < rounds; r++) {
    size_t size = seed_size;
    memcpy(buf, seed, seed_size);
    uint8_t *work = buf;
    char *text = NULL;
    switch (r % 5) {
      case 0: /* random bytes in the header */
        for (int k = 0, m = 1 + (int)(rnd() % 4); k < m; k++) buf[8 + rnd() % header_len] = (uint8_t)rnd();
        break;
      case 1: /* JSON structural characters in the header */
        for (int k = 0, m = 1 + (int)(rnd() % 3); k < m; k++)
          buf[8 + rnd() % header_len] = (uint8_t)"{}[]\",:-019e. \\"[rnd() % 16];
        break;
      case 2: /* truncation */
        size = (size_t)(rnd() % (seed_size + 1));
        break;
      case 3: /* header length field */
        buf[rnd() % 8] = (uint8_t)rnd();
        break;
      default: { /* a semantically nasty value, re-serialized with a fresh length */
        text = mutate_json(seed, seed_size);
        work = image(text, (size_t)(seed_size - 8 - header_len), &size);
      }
    }
    qs_error_clear(&err);
    if (qs_st_parse(work, size, "fuzz", &f, &err)) {
      accepted++;
      uint64_t covered = 0;
      for (size_t i = 0; i < f.count; i++) covered += f.tensors[i].end - f.tensors[i].begin;
      CHECK(covered == f.payload_size);
      qs_st_close(&f);
    } else {
      rejected++;
      bad_messages += err.status != QS_EXIT_RUNTIME || strncmp(err.msg, "fuzz: ", 6) != 0 ||
                      strchr(err.msg, '\n') != NULL;
    }
    if (work != buf) free(work);
    free(text);
  }
  free(buf);
  free(seed);
  CHECK_INT(bad_messages, 0);
  /* both outcomes must occur, or the mutations are not exercising the validator */
  CHECK(accepted > rounds / 50);
  CHECK(rejected > rounds / 2);
  printf("fuzz: %d accepted, %d rejected\n", accepted, rejected);
}

int main(void) {
  test_rules();
  test_message_one_line();
  test_dtypes();
  test_writer_roundtrip();
  test_writer_short();
  test_fuzz();
  return check_summary("test_safetensors");
}
