/* Minimal assertion helpers for C test executables run by ctest.
 * Each failed check prints file:line and the values; main returns
 * check_summary(), non-zero when any check failed. Exit status 77 = skipped. */
#ifndef QSENS_TESTS_CHECK_H
#define QSENS_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int check_failures_;
static int check_count_;

#define CHECK(cond)                                                              \
  do {                                                                           \
    check_count_++;                                                              \
    if (!(cond)) {                                                               \
      check_failures_++;                                                         \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
    }                                                                            \
  } while (0)

#define CHECK_STR(a, b)                                                          \
  do {                                                                           \
    const char *ca_ = (a), *cb_ = (b);                                           \
    check_count_++;                                                              \
    if (!ca_ || !cb_ || strcmp(ca_, cb_) != 0) {                                 \
      check_failures_++;                                                         \
      fprintf(stderr, "%s:%d: %s != %s\n  got:      [%s]\n  expected: [%s]\n",   \
              __FILE__, __LINE__, #a, #b, ca_ ? ca_ : "(null)", cb_ ? cb_ : "(null)"); \
    }                                                                            \
  } while (0)

#define CHECK_INT(a, b)                                                          \
  do {                                                                           \
    long long ca_ = (long long)(a), cb_ = (long long)(b);                        \
    check_count_++;                                                              \
    if (ca_ != cb_) {                                                            \
      check_failures_++;                                                         \
      fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__,  \
              #a, ca_, cb_);                                                     \
    }                                                                            \
  } while (0)

/* |a-b| <= tol*max(|b|, floor_) ; the caller justifies tol. */
#define CHECK_REL(a, b, tol, floor_)                                             \
  do {                                                                           \
    double ca_ = (double)(a), cb_ = (double)(b);                                 \
    double scale_ = fabs(cb_) > (floor_) ? fabs(cb_) : (floor_);                 \
    check_count_++;                                                              \
    if (!(fabs(ca_ - cb_) <= (tol) * scale_)) {                                  \
      check_failures_++;                                                         \
      fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g (rel tol %g)\n",          \
              __FILE__, __LINE__, #a, ca_, cb_, (double)(tol));                  \
    }                                                                            \
  } while (0)

static inline int check_summary(const char *name) {
  printf("%s: %d checks, %d failed\n", name, check_count_, check_failures_);
  return check_failures_ ? 1 : 0;
}

#endif
