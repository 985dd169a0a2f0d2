/* The fixed reduction order of the sensitivity score (qs_op_quant_score,
 * spec quant-and-scoring.md §4.2-4.3), shared by every backend so that the
 * same inputs give the same bits on each of them.
 *
 * Terms. Output element e of a call contributes
 *   term_e = clamp(G_e·Δ_e, −1e10, 1e10)²          (fp32 product, clamp, square)
 * with Δ_e from qs_score_delta and G rounded to bf16 in modelopt mode.
 *
 * Partials. Each output row is cut into runs of QS_SCORE_PARTIAL_TERMS
 * columns (the last run of a row may be shorter). A run [begin, end) has
 * QS_SCORE_LANES lane sums: lane l adds, starting from +0.0f, the terms of
 * columns begin + l, begin + l + 32, … < end in increasing column order
 * (fp32). Then a butterfly, for o = 16, 8, 4, 2, 1 in turn, replaces every
 * lane at once by v_l + v_(l^o); all lanes end equal and that value is the
 * run's fp32 partial. (On a GPU: one warp per run, __shfl_xor_sync steps.)
 *
 * Combination. The partials of one call, numbered i = row·runs_per_row + run
 * (row-major), are combined in fp64: accumulator a_j, j = i mod
 * QS_SCORE_COMBINE_SLOTS, adds partial i in increasing i starting from +0.0;
 * then for o = 128, 64, …, 1 in turn a_j = a_j + a_(j+o) for every j < o; the
 * total a_0 is added to the call's accumulator slot.
 *
 * Every operation is a single rounded IEEE add or multiply (no fused
 * multiply-add: the device code says so explicitly with __fmul_rn/__fadd_rn,
 * which the compiler never contracts). A NaN anywhere stays NaN: the clamp
 * uses comparisons, which let a NaN through. */
#ifndef QSENS_BACKEND_SCORE_ORDER_H
#define QSENS_BACKEND_SCORE_ORDER_H

#include <stdbool.h>

#include "quant/fq.h"

/* Terms of one fp32 partial sum (a run of an output row). */
#define QS_SCORE_PARTIAL_TERMS 4096
/* Lane sums per run (one warp). */
#define QS_SCORE_LANES 32
/* fp64 accumulators of the combination (a power of two). */
#define QS_SCORE_COMBINE_SLOTS 256
/* A backend makes Y_r in blocks of whole rows of at most this many fp32
 * values (its scratch, which the memory plan counts); partials never span
 * rows, so the blocking changes no bit. */
#define QS_SCORE_BLOCK_FLOATS (1L << 25)
/* |G·Δ| beyond this is clamped before squaring (ModelOpt ≥ 0.44), so an
 * overflowing product cannot turn a score into inf. */
#define QS_SCORE_CLAMP 1e10f

#ifdef __CUDACC__
#define QS_SCORE_FN static inline __host__ __device__
#else
#define QS_SCORE_FN static inline
#endif

/* fp32 product and sum, each rounded once (never fused into an FMA). */
QS_SCORE_FN float qs_score_mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

QS_SCORE_FN float qs_score_add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

/* Number of runs in an output row of n columns. */
QS_SCORE_FN long qs_score_runs_per_row(long n) { return (n + QS_SCORE_PARTIAL_TERMS - 1) / QS_SCORE_PARTIAL_TERMS; }

/* Δ from the candidate's output yr and the unquantized output y (fp32):
 * accurate yr − y; modelopt bf16(bf16(yr) − bf16(y)). */
QS_SCORE_FN float qs_score_delta(float yr, float y, bool modelopt) {
  if (!modelopt) return yr - y;
  return qs_fq_bf16(qs_fq_bf16(yr) - qs_fq_bf16(y));
}

/* clamp(G·Δ)² of one output element (G rounded to bf16 in modelopt mode). */
QS_SCORE_FN float qs_score_term(float g, float delta, bool modelopt) {
  float v = qs_score_mul(modelopt ? qs_fq_bf16(g) : g, delta);
  /* Comparisons, not fminf/fmaxf: a NaN must pass through. */
  if (v > QS_SCORE_CLAMP) v = QS_SCORE_CLAMP;
  if (v < -QS_SCORE_CLAMP) v = -QS_SCORE_CLAMP;
  return qs_score_mul(v, v);
}

/* The butterfly of a run: lanes v[QS_SCORE_LANES] in, the run's partial out
 * (the device code does the same steps with warp shuffles). */
static inline float qs_score_butterfly(float v[QS_SCORE_LANES]) {
  for (int o = QS_SCORE_LANES / 2; o > 0; o >>= 1) {
    float next[QS_SCORE_LANES];
    for (int l = 0; l < QS_SCORE_LANES; l++) next[l] = qs_score_add(v[l], v[l ^ o]);
    for (int l = 0; l < QS_SCORE_LANES; l++) v[l] = next[l];
  }
  return v[0];
}

/* Accumulator `slot` of the combination: the partials i ≡ slot (mod
 * QS_SCORE_COMBINE_SLOTS) of p[n], summed in increasing i. */
QS_SCORE_FN double qs_score_combine_slot(const float *p, long n, int slot) {
  double a = 0.0;
#ifdef __CUDA_ARCH__
#pragma unroll 8 /* loads issued ahead of the (still in-order) adds */
#endif
  for (long i = slot; i < n; i += QS_SCORE_COMBINE_SLOTS) a += (double)p[i];
  return a;
}

/* The fixed tree over the accumulators a[QS_SCORE_COMBINE_SLOTS] (host; the
 * device code does the same steps in shared memory). */
static inline double qs_score_combine_tree(double a[QS_SCORE_COMBINE_SLOTS]) {
  for (int o = QS_SCORE_COMBINE_SLOTS / 2; o > 0; o >>= 1)
    for (int j = 0; j < o; j++) a[j] = a[j] + a[j + o];
  return a[0];
}

/* The fp64 total of the partials p[n] of one call in the documented order. */
static inline double qs_score_combine(const float *p, long n) {
  double a[QS_SCORE_COMBINE_SLOTS];
  for (int j = 0; j < QS_SCORE_COMBINE_SLOTS; j++) a[j] = qs_score_combine_slot(p, n, j);
  return qs_score_combine_tree(a);
}

#endif
