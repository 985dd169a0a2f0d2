/* Open-addressing hash tables used by the tokenizer and the BPE trainer:
 * byte-string keys (vocabularies, word counts) and 64-bit keys (token-id
 * pairs). Keys are copied into the table; values are 64-bit integers.
 * Tables only grow: tokenizers never delete entries. */
#ifndef QSENS_TEXT_TOK_HASH_H
#define QSENS_TEXT_TOK_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qs_strmap_slot {
  uint64_t hash;     /* 0 marks an empty slot (real hashes are forced non-zero) */
  size_t key_off;    /* offset of the key in the table's key arena */
  size_t key_len;
  int64_t value;
} qs_strmap_slot;

typedef struct qs_strmap {
  qs_strmap_slot *slots;
  size_t cap;        /* power of two */
  size_t count;
  char *keys;        /* arena of all keys, each NUL-terminated */
  size_t keys_len;
  size_t keys_cap;
} qs_strmap;

/* Makes room for `count` entries with `key_bytes` of keys in all, so that
 * filling a table of known size does not rehash. */
void qs_strmap_reserve(qs_strmap *m, size_t count, size_t key_bytes);
/* Pointer to the value stored under key, or NULL. Valid until the next insertion. */
int64_t *qs_strmap_get(const qs_strmap *m, const char *key, size_t len);
/* Pointer to the value under key, inserting it with `initial` when absent;
 * *inserted (may be NULL) tells which happened. Valid until the next insertion. */
int64_t *qs_strmap_upsert(qs_strmap *m, const char *key, size_t len, int64_t initial, bool *inserted);
/* The key stored in a slot (NUL-terminated). */
const char *qs_strmap_slot_key(const qs_strmap *m, const qs_strmap_slot *slot);
void qs_strmap_free(qs_strmap *m);

/* Key reserved to mark empty slots (16-byte slots keep big tables cache-friendly). */
#define QS_U64MAP_EMPTY UINT64_MAX

typedef struct qs_u64map_slot {
  uint64_t key; /* QS_U64MAP_EMPTY when unused */
  uint64_t value;
} qs_u64map_slot;

typedef struct qs_u64map {
  qs_u64map_slot *slots;
  size_t cap;        /* power of two */
  size_t count;
} qs_u64map;

/* key must not be QS_U64MAP_EMPTY. */
uint64_t *qs_u64map_get(const qs_u64map *m, uint64_t key);
uint64_t *qs_u64map_upsert(qs_u64map *m, uint64_t key, uint64_t initial, bool *inserted);
void qs_u64map_free(qs_u64map *m);

/* A well-mixed 64-bit hash of a 64-bit key (the low bits are usable as a slot index). */
uint64_t qs_hash_u64(uint64_t x);

/* Packs two non-negative 32-bit ids into one key (left in the high half). */
static inline uint64_t qs_pair_key(int32_t left, int32_t right) {
  return ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
}

#endif
