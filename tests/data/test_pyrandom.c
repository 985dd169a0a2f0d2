/* CPython random.Random parity. Every expected number was printed by CPython
 * 3.11 (python3 -c "import random; r = random.Random(SEED); ..."). */
#include <stdlib.h>

#include "check.h"
#include "text/pyrandom.h"

static void check_first_outputs(int64_t seed, const uint32_t expected[5]) {
  qs_pyrandom r;
  qs_pyrandom_seed(&r, seed);
  for (int i = 0; i < 5; i++) CHECK_INT(qs_pyrandom_next32(&r), expected[i]);
}

/* [r.getrandbits(32) for _ in range(5)] */
static void test_seeds(void) {
  static const uint32_t seed0[5] = {3626764237u, 1654615998u, 3255389356u, 3823568514u, 1806341205u};
  static const uint32_t seed42[5] = {2746317213u, 478163327u, 107420369u, 3184935163u, 1181241943u};
  static const uint32_t seed_2p40_7[5] = {2635837658u, 3209733218u, 3500038837u, 4028389051u, 4058793509u};
  check_first_outputs(0, seed0);
  check_first_outputs(42, seed42);
  check_first_outputs(((int64_t)1 << 40) + 7, seed_2p40_7); /* two key words */
  check_first_outputs(-42, seed42);                         /* Python seeds with |seed| */
}

/* r = Random(42); r.getrandbits(1), (7), (33), (64) */
static void test_getrandbits(void) {
  qs_pyrandom r;
  qs_pyrandom_seed(&r, 42);
  CHECK_INT(qs_pyrandom_getrandbits(&r, 1), 1);
  CHECK_INT(qs_pyrandom_getrandbits(&r, 7), 14);
  CHECK_INT(qs_pyrandom_getrandbits(&r, 33), 4402387665ll);
  CHECK(qs_pyrandom_getrandbits(&r, 64) == 4517457392071889495ull);
  CHECK_INT(qs_pyrandom_getrandbits(&r, 0), 0);
}

/* r = Random(42); [r._randbelow(n) for n in (1, 2, 3, 10, 1000, 616767, 2**31 + 5)] */
static void test_randbelow(void) {
  static const uint64_t n[7] = {1, 2, 3, 10, 1000, 616767, 2147483653ull};
  static const uint64_t expected[7] = {0, 0, 2, 4, 250, 234053, 599310825};
  qs_pyrandom r;
  qs_pyrandom_seed(&r, 42);
  for (int i = 0; i < 7; i++) CHECK_INT(qs_pyrandom_randbelow(&r, n[i]), expected[i]);
}

static void check_sample(int64_t seed, size_t n, size_t k, const size_t *expected) {
  qs_pyrandom r;
  qs_pyrandom_seed(&r, seed);
  size_t out[16];
  qs_error err = {0};
  CHECK(qs_pyrandom_sample(&r, n, k, out, &err));
  for (size_t i = 0; i < k; i++) CHECK_INT(out[i], expected[i]);
}

/* random.Random(seed).sample(range(n), k) for both of CPython's algorithms. */
static void test_sample_small(void) {
  static const size_t pool[5] = {3, 0, 8, 7, 16};                                       /* (42, 20, 5) */
  static const size_t set[8] = {83810, 14592, 3278, 97196, 36048, 32098, 29256, 18289}; /* (42, 1e5, 8) */
  static const size_t all[10] = {5, 2, 6, 9, 0, 7, 4, 1, 3, 8};                         /* (7, 10, 10) */
  check_sample(42, 20, 5, pool);
  check_sample(42, 100000, 8, set);
  check_sample(7, 10, 10, all);
}

/* k = 4096: setsize = 21 + 4**7 = 16405, so n = 16405 takes the pool and
 * n = 16406 the set; the two draws diverge after a while.
 * a = Random(42).sample(range(n), 4096): a[:3], a[-1], sum(a). */
static void check_large_sample(size_t n, size_t last, unsigned long long sum) {
  enum { K = 4096 };
  size_t *out = malloc(K * sizeof *out);
  qs_pyrandom r;
  qs_pyrandom_seed(&r, 42);
  qs_error err = {0};
  CHECK(qs_pyrandom_sample(&r, n, K, out, &err));
  unsigned long long total = 0;
  for (size_t i = 0; i < K; i++) total += out[i];
  CHECK_INT(out[0], 3648);
  CHECK_INT(out[1], 819);
  CHECK_INT(out[2], 9012);
  CHECK_INT(out[K - 1], last);
  CHECK_INT(total, sum);
  free(out);
}

static void test_sample_algorithm_boundary(void) {
  check_large_sample(16405, 7801, 33723253ull);
  check_large_sample(16406, 9584, 33741195ull);
}

static void test_sample_too_large(void) {
  qs_pyrandom r;
  qs_pyrandom_seed(&r, 1);
  size_t out[4];
  qs_error err = {0};
  CHECK(!qs_pyrandom_sample(&r, 3, 4, out, &err));
  CHECK_STR(err.msg, "sample of 4 items requested from a population of 3");
}

int main(void) {
  test_seeds();
  test_getrandbits();
  test_randbelow();
  test_sample_small();
  test_sample_algorithm_boundary();
  test_sample_too_large();
  return check_summary("test_pyrandom");
}
