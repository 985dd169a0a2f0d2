/* MT19937 as in CPython's Modules/_randommodule.c, and the sampling helpers
 * of Lib/random.py (3.11). */
#include "text/pyrandom.h"

#include <math.h>
#include <stdlib.h>

#include "core/mem.h"

#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER_MASK 0x80000000u
#define MT_LOWER_MASK 0x7fffffffu

static void init_genrand(qs_pyrandom *r, uint32_t s) {
  r->mt[0] = s;
  for (int i = 1; i < QS_MT_N; i++) r->mt[i] = 1812433253u * (r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) + (uint32_t)i;
  r->index = QS_MT_N;
}

static void init_by_array(qs_pyrandom *r, const uint32_t *key, size_t key_len) {
  init_genrand(r, 19650218u);
  size_t i = 1, j = 0;
  for (size_t k = QS_MT_N > key_len ? QS_MT_N : key_len; k; k--) {
    r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
    i++;
    j++;
    if (i >= QS_MT_N) {
      r->mt[0] = r->mt[QS_MT_N - 1];
      i = 1;
    }
    if (j >= key_len) j = 0;
  }
  for (size_t k = QS_MT_N - 1; k; k--) {
    r->mt[i] = (r->mt[i] ^ ((r->mt[i - 1] ^ (r->mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
    i++;
    if (i >= QS_MT_N) {
      r->mt[0] = r->mt[QS_MT_N - 1];
      i = 1;
    }
  }
  r->mt[0] = 0x80000000u; /* MSB is 1, assuring a non-zero initial array */
}

void qs_pyrandom_seed(qs_pyrandom *r, int64_t seed) {
  /* |seed| without overflow for INT64_MIN. */
  uint64_t mag = seed < 0 ? (uint64_t)0 - (uint64_t)seed : (uint64_t)seed;
  uint32_t key[2] = {(uint32_t)mag, (uint32_t)(mag >> 32)};
  init_by_array(r, key, key[1] ? 2 : 1);
}

static void regenerate(qs_pyrandom *r) {
  static const uint32_t mag01[2] = {0u, MT_MATRIX_A};
  int kk = 0;
  uint32_t y;
  for (; kk < QS_MT_N - MT_M; kk++) {
    y = (r->mt[kk] & MT_UPPER_MASK) | (r->mt[kk + 1] & MT_LOWER_MASK);
    r->mt[kk] = r->mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 1u];
  }
  for (; kk < QS_MT_N - 1; kk++) {
    y = (r->mt[kk] & MT_UPPER_MASK) | (r->mt[kk + 1] & MT_LOWER_MASK);
    r->mt[kk] = r->mt[kk + (MT_M - QS_MT_N)] ^ (y >> 1) ^ mag01[y & 1u];
  }
  y = (r->mt[QS_MT_N - 1] & MT_UPPER_MASK) | (r->mt[0] & MT_LOWER_MASK);
  r->mt[QS_MT_N - 1] = r->mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 1u];
  r->index = 0;
}

uint32_t qs_pyrandom_next32(qs_pyrandom *r) {
  if (r->index >= QS_MT_N) regenerate(r);
  uint32_t y = r->mt[r->index++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return y;
}

uint64_t qs_pyrandom_getrandbits(qs_pyrandom *r, unsigned k) {
  if (k == 0) return 0;
  if (k <= 32) return qs_pyrandom_next32(r) >> (32 - k);
  uint64_t low = qs_pyrandom_next32(r);
  uint64_t high = qs_pyrandom_next32(r) >> (64 - k);
  return low | (high << 32);
}

static unsigned bit_length(uint64_t n) {
  unsigned bits = 0;
  for (; n; n >>= 1) bits++;
  return bits;
}

uint64_t qs_pyrandom_randbelow(qs_pyrandom *r, uint64_t n) {
  unsigned k = bit_length(n);
  uint64_t v = qs_pyrandom_getrandbits(r, k);
  while (v >= n) v = qs_pyrandom_getrandbits(r, k);
  return v;
}

/* Lib/random.py: an n-length list is used when it is smaller than a k-length
 * set; the set size estimate is 21 + 4**ceil(log(3k, 4)) for k > 5.
 * math.log(int, 4) is log((double)x) / log(4.0) in CPython, reproduced here. */
static bool sample_uses_pool(size_t n, size_t k) {
  double setsize = 21.0;
  if (k > 5) setsize += pow(4.0, ceil(log(3.0 * (double)k) / log(4.0)));
  return (double)n <= setsize; /* exact: both sides are integers below 2**53 here */
}

static void sample_from_pool(qs_pyrandom *r, size_t n, size_t k, size_t *out) {
  size_t *pool = qs_malloc((n ? n : 1) * sizeof *pool);
  for (size_t i = 0; i < n; i++) pool[i] = i;
  for (size_t i = 0; i < k; i++) {
    size_t j = (size_t)qs_pyrandom_randbelow(r, n - i);
    out[i] = pool[j];
    pool[j] = pool[n - i - 1]; /* move the non-selected item into the vacancy */
  }
  free(pool);
}

static void sample_by_rejection(qs_pyrandom *r, size_t n, size_t k, size_t *out) {
  unsigned char *selected = qs_calloc(n / 8 + 1, 1);
  for (size_t i = 0; i < k; i++) {
    size_t j = (size_t)qs_pyrandom_randbelow(r, n);
    while (selected[j / 8] & (1u << (j % 8))) j = (size_t)qs_pyrandom_randbelow(r, n);
    selected[j / 8] |= (unsigned char)(1u << (j % 8));
    out[i] = j;
  }
  free(selected);
}

bool qs_pyrandom_sample(qs_pyrandom *r, size_t n, size_t k, size_t *out, qs_error *err) {
  if (k > n) return qs_fail(err, QS_EXIT_USAGE, "sample of %zu items requested from a population of %zu", k, n);
  if (sample_uses_pool(n, k))
    sample_from_pool(r, n, k, out);
  else
    sample_by_rejection(r, n, k, out);
  return true;
}
