#include "text/tok_hash.h"

#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

enum { MIN_CAPACITY = 64 };

/* FNV-1a followed by a 64-bit finalizer: FNV alone clusters badly in the low
 * bits used for the slot index when keys share long prefixes. */
uint64_t qs_hash_u64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

static uint64_t hash_bytes(const char *key, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= 0x100000001b3ULL;
  }
  h = qs_hash_u64(h ^ len);
  return h ? h : 1;
}

static bool slot_matches(const qs_strmap *m, const qs_strmap_slot *s, uint64_t h, const char *key,
                         size_t len) {
  return s->hash == h && s->key_len == len && memcmp(m->keys + s->key_off, key, len) == 0;
}

/* Index of the slot holding key, or of the empty slot where it would go. */
static size_t strmap_find(const qs_strmap *m, uint64_t h, const char *key, size_t len) {
  size_t mask = m->cap - 1;
  size_t i = (size_t)h & mask;
  while (m->slots[i].hash != 0 && !slot_matches(m, &m->slots[i], h, key, len)) i = (i + 1) & mask;
  return i;
}

static void strmap_rehash(qs_strmap *m, size_t new_cap) {
  qs_strmap_slot *old = m->slots;
  size_t old_cap = m->cap;
  m->slots = qs_calloc(new_cap, sizeof *m->slots);
  m->cap = new_cap;
  for (size_t i = 0; i < old_cap; i++) {
    if (old[i].hash == 0) continue;
    size_t j = (size_t)old[i].hash & (new_cap - 1);
    while (m->slots[j].hash != 0) j = (j + 1) & (new_cap - 1);
    m->slots[j] = old[i];
  }
  free(old);
}

void qs_strmap_reserve(qs_strmap *m, size_t count, size_t key_bytes) {
  size_t cap = m->cap ? m->cap : MIN_CAPACITY;
  while (2 * count > cap) cap *= 2;
  if (cap > m->cap) strmap_rehash(m, cap);
  qs_grow((void **)&m->keys, &m->keys_cap, m->keys_len + key_bytes + count, 1);
}

int64_t *qs_strmap_get(const qs_strmap *m, const char *key, size_t len) {
  if (m->count == 0) return NULL;
  uint64_t h = hash_bytes(key, len);
  size_t i = strmap_find(m, h, key, len);
  return m->slots[i].hash ? &m->slots[i].value : NULL;
}

int64_t *qs_strmap_upsert(qs_strmap *m, const char *key, size_t len, int64_t initial, bool *inserted) {
  /* Load factor kept at or below 1/2 so probe runs stay short. */
  if (2 * (m->count + 1) > m->cap) strmap_rehash(m, m->cap ? 2 * m->cap : MIN_CAPACITY);
  uint64_t h = hash_bytes(key, len);
  size_t i = strmap_find(m, h, key, len);
  qs_strmap_slot *s = &m->slots[i];
  if (inserted) *inserted = (s->hash == 0);
  if (s->hash == 0) {
    qs_grow((void **)&m->keys, &m->keys_cap, m->keys_len + len + 1, 1);
    memcpy(m->keys + m->keys_len, key, len);
    m->keys[m->keys_len + len] = '\0';
    *s = (qs_strmap_slot){.hash = h, .key_off = m->keys_len, .key_len = len, .value = initial};
    m->keys_len += len + 1;
    m->count++;
  }
  return &s->value;
}

const char *qs_strmap_slot_key(const qs_strmap *m, const qs_strmap_slot *slot) {
  return m->keys + slot->key_off;
}

void qs_strmap_free(qs_strmap *m) {
  free(m->slots);
  free(m->keys);
  *m = (qs_strmap){0};
}

static size_t u64map_find(const qs_u64map *m, uint64_t key) {
  size_t mask = m->cap - 1;
  size_t i = (size_t)qs_hash_u64(key) & mask;
  while (m->slots[i].key != QS_U64MAP_EMPTY && m->slots[i].key != key) i = (i + 1) & mask;
  return i;
}

static void u64map_rehash(qs_u64map *m, size_t new_cap) {
  qs_u64map_slot *old = m->slots;
  size_t old_cap = m->cap;
  m->slots = qs_malloc(new_cap * sizeof *m->slots);
  for (size_t i = 0; i < new_cap; i++) m->slots[i].key = QS_U64MAP_EMPTY;
  m->cap = new_cap;
  for (size_t i = 0; i < old_cap; i++) {
    if (old[i].key == QS_U64MAP_EMPTY) continue;
    m->slots[u64map_find(m, old[i].key)] = old[i];
  }
  free(old);
}

uint64_t *qs_u64map_get(const qs_u64map *m, uint64_t key) {
  if (m->count == 0) return NULL;
  size_t i = u64map_find(m, key);
  return m->slots[i].key != QS_U64MAP_EMPTY ? &m->slots[i].value : NULL;
}

uint64_t *qs_u64map_upsert(qs_u64map *m, uint64_t key, uint64_t initial, bool *inserted) {
  if (2 * (m->count + 1) > m->cap) u64map_rehash(m, m->cap ? 2 * m->cap : MIN_CAPACITY);
  size_t i = u64map_find(m, key);
  qs_u64map_slot *s = &m->slots[i];
  if (inserted) *inserted = (s->key == QS_U64MAP_EMPTY);
  if (s->key == QS_U64MAP_EMPTY) {
    *s = (qs_u64map_slot){.key = key, .value = initial};
    m->count++;
  }
  return &s->value;
}

void qs_u64map_free(qs_u64map *m) {
  free(m->slots);
  *m = (qs_u64map){0};
}
