/* RMSNorm and the per-head QK-norm + half-split RoPE of the CPU backend,
 * forward and backward. Row sums are accumulated in double so the reference
 * does not depend on the row length's rounding. In the bf16 mode the
 * forwards round x̂, w⊙x̂, cos/sin and every RoPE product as the CUDA
 * kernels do (spec qwen3-vl-lm.md §3.1); the backwards round nothing
 * inside, like theirs. */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu/cpu_internal.h"
#include "core/mem.h"

/* ---- one row ----------------------------------------------------------- */

static float row_rstd(const float *x, long n, float eps) {
  double ss = 0.0;
  for (long j = 0; j < n; j++) ss += (double)x[j] * x[j];
  return (float)(1.0 / sqrt(ss / (double)(n ? n : 1) + (double)eps));
}

/* y = w ⊙ (x·r); with round, bf16(w ⊙ bf16(x·r)). */
static void row_norm(const float *x, const float *w, float r, long n, bool round, float *y) {
  for (long j = 0; j < n; j++) y[j] = cpu_round_if(round, w[j] * cpu_round_if(round, x[j] * r));
}

/* dx (=|+=) r·(ĝ − x̂·mean(ĝ·x̂)), ĝ = dy ⊙ w, x̂ = x·r. */
static void row_norm_bwd(const float *x, const float *w, float r, const float *dy, long n, float *dx,
                         bool accumulate) {
  double dot = 0.0;
  for (long j = 0; j < n; j++) dot += (double)dy[j] * w[j] * (x[j] * r);
  float mean = (float)(dot / (double)(n ? n : 1));
  for (long j = 0; j < n; j++) {
    float d = r * (dy[j] * w[j] - (x[j] * r) * mean);
    dx[j] = accumulate ? dx[j] + d : d;
  }
}

/* ---- RMSNorm ----------------------------------------------------------- */

bool cpu_rmsnorm(qs_backend *be, const qs_tensor *x, const qs_tensor *w, float eps, qs_tensor *y,
                 qs_tensor *rstd, qs_error *err) {
  (void)err;
  float *wf = cpu_vector_f32(w);
  long n = x->cols;
  bool round = cpu_rounds_bf16(be);
  const float *xd = x->data;
  float *yd = y->data, *rd = rstd->data;
#pragma omp parallel for schedule(static)
  for (long t = 0; t < x->rows; t++) {
    rd[t] = row_rstd(xd + t * n, n, eps);
    row_norm(xd + t * n, wf, rd[t], n, round, yd + t * n);
  }
  free(wf);
  return true;
}

bool cpu_rmsnorm_bwd(qs_backend *be, const qs_tensor *x, const qs_tensor *w, const qs_tensor *rstd,
                     const qs_tensor *dy, qs_tensor *dx, bool accumulate, qs_error *err) {
  (void)be;
  (void)err;
  float *wf = cpu_vector_f32(w);
  long n = x->cols;
  const float *xd = x->data, *rd = rstd->data, *dyd = dy->data;
  float *dxd = dx->data;
#pragma omp parallel for schedule(static)
  for (long t = 0; t < x->rows; t++) row_norm_bwd(xd + t * n, wf, rd[t], dyd + t * n, n, dxd + t * n, accumulate);
  free(wf);
  return true;
}

/* ---- QK-norm + RoPE ---------------------------------------------------- */

/* cos/sin of φ_i = p·θ_i for i < hd/2: the product in fp32 (as the reference
 * computes it), cos/sin in double then rounded, i.e. accurate for the large
 * angles of late positions (and to bf16 with round: the bf16 tables). */
static void rope_angles(const float *inv_freq, int half, int position, bool round, float *c, float *s) {
  for (int i = 0; i < half; i++) {
    float phi = (float)position * inv_freq[i];
    c[i] = cpu_round_if(round, (float)cos((double)phi));
    s[i] = cpu_round_if(round, (float)sin((double)phi));
  }
}

static float *rope_inv_freqs(double theta, int head_dim) {
  int half = head_dim / 2;
  float *f = qs_malloc((size_t)half * sizeof(float));
  for (int i = 0; i < half; i++) f[i] = qs_rope_inv_freq(theta, head_dim, i);
  return f;
}

/* Rotates u[hd] by +φ (sign 1) or −φ (sign −1); with round, every product
 * and sum is rounded to bf16. */
static void rope_rotate(const float *u, const float *c, const float *s, int half, float sign, bool round,
                        float *out) {
  for (int i = 0; i < half; i++) {
    float a = u[i], b = u[i + half], sn = sign * s[i];
    out[i] = cpu_round_if(round, cpu_round_if(round, a * c[i]) - cpu_round_if(round, b * sn));
    out[i + half] = cpu_round_if(round, cpu_round_if(round, b * c[i]) + cpu_round_if(round, a * sn));
  }
}

bool cpu_qknorm_rope(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, float eps,
                     const qs_tensor *positions, double theta, int head_dim, qs_tensor *out, qs_tensor *rstd,
                     qs_error *err) {
  (void)err;
  float *wf = cpu_vector_f32(w);
  float *inv_freq = rope_inv_freqs(theta, head_dim);
  int half = head_dim / 2;
  long heads = raw->cols / head_dim, width = raw->cols;
  bool round = cpu_rounds_bf16(be);
  const float *xd = raw->data;
  const int *pos = positions->data;
  float *od = out->data, *rd = rstd->data;
#pragma omp parallel
  {
    float *buf = qs_malloc((size_t)head_dim * 2 * sizeof(float));
    float *c = buf, *s = buf + half, *normed = buf + head_dim;
#pragma omp for schedule(static)
    for (long t = 0; t < raw->rows; t++) {
      rope_angles(inv_freq, half, pos[t], round, c, s);
      for (long h = 0; h < heads; h++) {
        const float *x = xd + t * width + h * head_dim;
        float r = row_rstd(x, head_dim, eps);
        rd[t * heads + h] = r;
        row_norm(x, wf, r, head_dim, round, normed);
        rope_rotate(normed, c, s, half, 1.0f, round, od + t * width + h * head_dim);
      }
    }
    free(buf);
  }
  free(inv_freq);
  free(wf);
  return true;
}

bool cpu_qknorm_rope_bwd(qs_backend *be, const qs_tensor *raw, const qs_tensor *w, const qs_tensor *rstd,
                         const qs_tensor *positions, double theta, int head_dim, const qs_tensor *dout,
                         qs_tensor *draw, qs_error *err) {
  (void)be;
  (void)err;
  float *wf = cpu_vector_f32(w);
  float *inv_freq = rope_inv_freqs(theta, head_dim);
  int half = head_dim / 2;
  long heads = raw->cols / head_dim, width = raw->cols;
  const float *xd = raw->data, *rd = rstd->data, *dd = dout->data;
  const int *pos = positions->data;
  float *gd = draw->data;
#pragma omp parallel
  {
    float *buf = qs_malloc((size_t)head_dim * 2 * sizeof(float));
    float *c = buf, *s = buf + half, *dnormed = buf + head_dim;
#pragma omp for schedule(static)
    for (long t = 0; t < raw->rows; t++) {
      rope_angles(inv_freq, half, pos[t], false, c, s);
      for (long h = 0; h < heads; h++) {
        long at = t * width + h * head_dim;
        rope_rotate(dd + at, c, s, half, -1.0f, false, dnormed);
        row_norm_bwd(xd + at, wf, rd[t * heads + h], dnormed, head_dim, gd + at, false);
      }
    }
    free(buf);
  }
  free(inv_freq);
  free(wf);
  return true;
}
