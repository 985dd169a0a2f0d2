/* CPython's `random.Random`, bit for bit, for the parts the calibration subset
 * builder needs: MT19937 seeded from an int, getrandbits, randbelow and
 * `Random.sample`. The published COCO caption subset was drawn with
 * `random.Random(42).sample(all, k=4096)` (CPython 3.11 Lib/random.py), so
 * regenerating it needs exactly the same stream and the same algorithm choice. */
#ifndef QSENS_TEXT_PYRANDOM_H
#define QSENS_TEXT_PYRANDOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define QS_MT_N 624

typedef struct qs_pyrandom {
  uint32_t mt[QS_MT_N];
  int index; /* next word of mt to temper; QS_MT_N forces a regeneration */
} qs_pyrandom;

/* random.Random(seed): init_by_array over the 32-bit little-endian chunks of
 * |seed| (one zero chunk for seed 0). */
void qs_pyrandom_seed(qs_pyrandom *r, int64_t seed);

/* genrand_uint32(): the next raw 32-bit output. */
uint32_t qs_pyrandom_next32(qs_pyrandom *r);

/* getrandbits(k) for 0 <= k <= 64 (words consumed low word first, the last
 * one shifted right, as CPython does). */
uint64_t qs_pyrandom_getrandbits(qs_pyrandom *r, unsigned k);

/* _randbelow_with_getrandbits(n): uniform in [0, n) by rejection; n > 0. */
uint64_t qs_pyrandom_randbelow(qs_pyrandom *r, uint64_t n);

/* random.sample(range(n), k): writes k population indices to out, in the
 * order Python returns them. Uses CPython's pool algorithm when
 * n <= 21 + (k > 5 ? 4**ceil(log(3k, 4)) : 0), else set-based rejection.
 * k > n is an error (Python's ValueError). */
bool qs_pyrandom_sample(qs_pyrandom *r, size_t n, size_t k, size_t *out, qs_error *err);

#endif
