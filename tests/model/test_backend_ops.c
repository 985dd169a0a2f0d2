/* Every op of the CPU backend against a naive double-precision reference on
 * random inputs. Backward ops are checked against central differences of the
 * double reference forward (so the backward formulas are tested
 * independently of how the backend writes them).
 *
 * Tolerances: the backend computes in fp32, so each output carries relative
 * rounding of about (terms summed)·2^-24; with at most ~100 terms per output
 * here, 2e-5 in the norm-wise relative error ‖a−b‖/‖b‖ leaves a margin of
 * ~3x over the worst case seen, while any formula mistake gives errors O(1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "core/bf16.h"
#include "core/mem.h"
#include "tiny_lm.h"

#define TOL 2e-5

static qs_backend *be;
static test_rng rng = {12345};

/* ---- helpers ----------------------------------------------------------- */

static double *rand_vec(long n, double mean, double std) {
  double *v = qs_malloc((size_t)(n ? n : 1) * sizeof(double));
  for (long i = 0; i < n; i++) v[i] = mean + std * rng_normal(&rng);
  return v;
}

/* Rounds the values to bf16 in place (so that bf16 and f32 copies agree). */
static void round_bf16(double *v, long n) {
  for (long i = 0; i < n; i++) v[i] = qs_round_bf16((float)v[i]);
}

static qs_tensor to_tensor(const double *v, qs_dtype dtype, long rows, long cols) {
  qs_tensor t;
  qs_error err;
  CHECK(qs_tensor_alloc(be, dtype, rows, cols, &t, &err));
  long n = rows * cols;
  void *host = qs_malloc((size_t)(n ? n : 1) * 4);
  for (long i = 0; i < n; i++) {
    if (dtype == QS_F32) ((float *)host)[i] = (float)v[i];
    else if (dtype == QS_BF16) ((qs_bf16 *)host)[i] = qs_f32_to_bf16((float)v[i]);
    else ((int32_t *)host)[i] = (int32_t)v[i];
  }
  CHECK(qs_tensor_upload(be, &t, host, &err));
  free(host);
  return t;
}

static qs_tensor empty(qs_dtype dtype, long rows, long cols) {
  double *zeros = qs_calloc((size_t)(rows * cols) + 1, sizeof(double));
  qs_tensor t = to_tensor(zeros, dtype, rows, cols);
  free(zeros);
  return t;
}

static double *from_tensor(const qs_tensor *t) {
  long n = qs_tensor_numel(t);
  float *host = qs_malloc((size_t)(n ? n : 1) * sizeof(float));
  qs_error err;
  CHECK(qs_tensor_download(be, host, t, &err));
  double *v = qs_malloc((size_t)(n ? n : 1) * sizeof(double));
  for (long i = 0; i < n; i++) v[i] = host[i];
  free(host);
  return v;
}

static double rel_err(const double *a, const double *b, long n) {
  double num = 0, den = 0;
  for (long i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
}

/* Compares a backend tensor with a reference; prints the error on failure. */
static void check_close(const char *what, const qs_tensor *t, const double *ref, double tol) {
  double *got = from_tensor(t);
  double e = rel_err(got, ref, qs_tensor_numel(t));
  check_count_++;
  if (!(e <= tol)) {
    check_failures_++;
    fprintf(stderr, "%s: relative error %.3g > %.3g\n", what, e, tol);
  }
  free(got);
}

/* A reference forward f: in[n_in] -> out[n_out], in double. */
typedef void (*ref_fn)(void *ctx, const double *in, double *out);

/* dL/din for L = Σ dout·f(in), by central differences in double (step 1e-6:
 * truncation ~1e-12, rounding ~1e-10 relative: far below TOL). */
static double *numeric_grad(ref_fn f, void *ctx, double *in, long n_in, const double *dout, long n_out) {
  double *g = qs_malloc((size_t)n_in * sizeof(double));
  double *out = qs_malloc((size_t)n_out * sizeof(double));
  const double h = 1e-6;
  for (long i = 0; i < n_in; i++) {
    double keep = in[i], lp = 0, lm = 0;
    in[i] = keep + h;
    f(ctx, in, out);
    for (long j = 0; j < n_out; j++) lp += dout[j] * out[j];
    in[i] = keep - h;
    f(ctx, in, out);
    for (long j = 0; j < n_out; j++) lm += dout[j] * out[j];
    in[i] = keep;
    g[i] = (lp - lm) / (2 * h);
  }
  free(out);
  return g;
}

/* ---- linear ------------------------------------------------------------ */

static void test_linear(qs_dtype wtype) {
  long t = 7, in = 37, out = 23;
  double *x = rand_vec(t * in, 0, 1), *w = rand_vec(out * in, 0, 0.3), *y0 = rand_vec(t * out, 0, 1);
  double *dy = rand_vec(t * out, 0, 1), *dx0 = rand_vec(t * in, 0, 1);
  round_bf16(w, out * in);
  double *y = qs_malloc(sizeof(double) * (size_t)(t * out)), *dx = qs_malloc(sizeof(double) * (size_t)(t * in));
  for (int acc = 0; acc <= 1; acc++) {
    qs_tensor X = to_tensor(x, QS_F32, t, in), W = to_tensor(w, wtype, out, in);
    qs_tensor Y = to_tensor(y0, QS_F32, t, out), DY = to_tensor(dy, QS_F32, t, out);
    qs_tensor DX = to_tensor(dx0, QS_F32, t, in);
    for (long i = 0; i < t; i++)
      for (long o = 0; o < out; o++) {
        double s = acc ? y0[i * out + o] : 0;
        for (long k = 0; k < in; k++) s += x[i * in + k] * w[o * in + k];
        y[i * out + o] = s;
      }
    for (long i = 0; i < t; i++)
      for (long k = 0; k < in; k++) {
        double s = acc ? dx0[i * in + k] : 0;
        for (long o = 0; o < out; o++) s += dy[i * out + o] * w[o * in + k];
        dx[i * in + k] = s;
      }
    qs_error err;
    CHECK(qs_op_linear(be, &X, &W, &Y, acc, &err));
    CHECK(qs_op_linear_bwd(be, &DY, &W, &DX, acc, &err));
    check_close(acc ? "linear (accumulate)" : "linear", &Y, y, TOL);
    check_close(acc ? "linear_bwd (accumulate)" : "linear_bwd", &DX, dx, TOL);
    /* A shape mismatch is refused with a message naming the operand. */
    qs_tensor bad = qs_tensor_reshape(&Y, t, out - 1);
    CHECK(!qs_op_linear(be, &X, &W, &bad, false, &err));
    CHECK(strstr(err.msg, "linear: y is") != NULL);
    qs_tensor *all[] = {&X, &Y, &DY, &DX, &W};
    for (int i = 0; i < 5; i++) qs_tensor_free(be, all[i]);
  }
  free(x), free(w), free(y0), free(dy), free(dx0), free(y), free(dx);
}

/* ---- rmsnorm ----------------------------------------------------------- */

typedef struct norm_ctx {
  long rows, n;
  const double *w;
  double eps;
} norm_ctx;

static void ref_rmsnorm(void *vctx, const double *x, double *y) {
  norm_ctx *c = vctx;
  for (long r = 0; r < c->rows; r++) {
    double ss = 0;
    for (long j = 0; j < c->n; j++) ss += x[r * c->n + j] * x[r * c->n + j];
    double inv = 1 / sqrt(ss / c->n + c->eps);
    for (long j = 0; j < c->n; j++) y[r * c->n + j] = c->w[j] * x[r * c->n + j] * inv;
  }
}

static void test_rmsnorm(void) {
  long rows = 9, n = 40;
  double *x = rand_vec(rows * n, 0.3, 2), *w = rand_vec(n, 1, 0.3), *dy = rand_vec(rows * n, 0, 1);
  double *dx0 = rand_vec(rows * n, 0, 1);
  round_bf16(w, n);
  norm_ctx c = {rows, n, w, 1e-6};
  double *y = qs_malloc(sizeof(double) * (size_t)(rows * n));
  ref_rmsnorm(&c, x, y);
  double *dx = numeric_grad(ref_rmsnorm, &c, x, rows * n, dy, rows * n);
  qs_tensor X = to_tensor(x, QS_F32, rows, n), W = to_tensor(w, QS_BF16, n, 1), Y = empty(QS_F32, rows, n);
  qs_tensor R = empty(QS_F32, rows, 1), DY = to_tensor(dy, QS_F32, rows, n), DX = to_tensor(dx0, QS_F32, rows, n);
  qs_error err;
  CHECK(qs_op_rmsnorm(be, &X, &W, 1e-6f, &Y, &R, &err));
  check_close("rmsnorm", &Y, y, TOL);
  CHECK(qs_op_rmsnorm_bwd(be, &X, &W, &R, &DY, &DX, false, &err));
  check_close("rmsnorm_bwd", &DX, dx, TOL);
  /* accumulate adds onto what dx held */
  qs_tensor DX2 = to_tensor(dx0, QS_F32, rows, n);
  for (long i = 0; i < rows * n; i++) dx[i] += dx0[i];
  CHECK(qs_op_rmsnorm_bwd(be, &X, &W, &R, &DY, &DX2, true, &err));
  check_close("rmsnorm_bwd (accumulate)", &DX2, dx, TOL);
  qs_tensor *all[] = {&X, &W, &Y, &R, &DY, &DX, &DX2};
  for (int i = 0; i < 7; i++) qs_tensor_free(be, all[i]);
  free(x), free(w), free(dy), free(dx0), free(y), free(dx);
}

/* ---- QK-norm + RoPE ---------------------------------------------------- */

typedef struct rope_ctx {
  long t, heads, hd;
  const double *w;
  const int *pos;
  double theta, eps;
} rope_ctx;

/* The angle as the reference computes it: θ_i in fp32 (fp32 exponent and
 * power), φ = fp32 product, then cos/sin exactly. */
static double ref_angle(double theta, long hd, long i, int p) {
  float e = (float)(2 * i) / (float)hd;
  float inv = 1.0f / (float)pow((double)(float)theta, (double)e);
  return (double)((float)p * inv);
}

static void ref_qknorm_rope(void *vctx, const double *x, double *y) {
  rope_ctx *c = vctx;
  long half = c->hd / 2;
  double *nrm = qs_malloc(sizeof(double) * (size_t)c->hd);
  for (long t = 0; t < c->t; t++)
    for (long h = 0; h < c->heads; h++) {
      const double *u = x + (t * c->heads + h) * c->hd;
      double *o = y + (t * c->heads + h) * c->hd;
      norm_ctx nc = {1, c->hd, c->w, c->eps};
      ref_rmsnorm(&nc, u, nrm);
      for (long i = 0; i < half; i++) {
        double phi = ref_angle(c->theta, c->hd, i, c->pos[t]);
        o[i] = nrm[i] * cos(phi) - nrm[i + half] * sin(phi);
        o[i + half] = nrm[i + half] * cos(phi) + nrm[i] * sin(phi);
      }
    }
  free(nrm);
}

static void test_qknorm_rope(void) {
  long t = 6, heads = 3, hd = 10;
  /* late positions exercise large angles (p·θ0 = p up to 2.6e5 in real use) */
  int pos[6] = {0, 1, 2, 17, 4097, 262000};
  double posd[6];
  for (int i = 0; i < 6; i++) posd[i] = pos[i];
  double *x = rand_vec(t * heads * hd, 0.2, 1.5), *w = rand_vec(hd, 1, 0.3), *dy = rand_vec(t * heads * hd, 0, 1);
  round_bf16(w, hd);
  rope_ctx c = {t, heads, hd, w, pos, 5e6, 1e-6};
  long n = t * heads * hd;
  double *y = qs_malloc(sizeof(double) * (size_t)n);
  ref_qknorm_rope(&c, x, y);
  double *dx = numeric_grad(ref_qknorm_rope, &c, x, n, dy, n);
  qs_tensor X = to_tensor(x, QS_F32, t, heads * hd), W = to_tensor(w, QS_BF16, hd, 1);
  qs_tensor P = to_tensor(posd, QS_I32, t, 1), Y = empty(QS_F32, t, heads * hd), R = empty(QS_F32, t * heads, 1);
  qs_tensor DY = to_tensor(dy, QS_F32, t, heads * hd), DX = empty(QS_F32, t, heads * hd);
  qs_error err;
  CHECK(qs_op_qknorm_rope(be, &X, &W, 1e-6f, &P, 5e6, (int)hd, &Y, &R, &err));
  check_close("qknorm_rope", &Y, y, TOL);
  CHECK(qs_op_qknorm_rope_bwd(be, &X, &W, &R, &P, 5e6, (int)hd, &DY, &DX, &err));
  check_close("qknorm_rope_bwd", &DX, dx, TOL);
  CHECK(!qs_op_qknorm_rope(be, &X, &W, 1e-6f, &P, 5e6, 7, &Y, &R, &err));
  CHECK(strstr(err.msg, "head_dim 7") != NULL);
  qs_tensor *all[] = {&X, &W, &P, &Y, &R, &DY, &DX};
  for (int i = 0; i < 7; i++) qs_tensor_free(be, all[i]);
  free(x), free(w), free(dy), free(y), free(dx);
}

static void test_rope_inv_freq(void) {
  /* spec §3: θ1 = 0.78583 and θ63 = 2.545e-7 for hd 128, theta 5e6 */
  CHECK(qs_rope_inv_freq(5e6, 128, 0) == 1.0f);
  CHECK_REL(qs_rope_inv_freq(5e6, 128, 1), 0.78583, 1e-5, 0);
  CHECK_REL(qs_rope_inv_freq(5e6, 128, 63), 2.545e-7, 1e-3, 0);
}

/* ---- attention --------------------------------------------------------- */

typedef struct attn_ctx {
  long t, heads, kv_heads, hd;
  const int *cu;
  const int *key_start; /* [n_seqs] or NULL */
  int n_seqs;
  const double *q, *k, *v; /* the inputs not being differentiated */
  int wrt;                 /* 0 q, 1 k, 2 v */
} attn_ctx;

static void ref_attention(const attn_ctx *c, const double *q, const double *k, const double *v, double *o,
                          double *lse) {
  long qw = c->heads * c->hd, kw = c->kv_heads * c->hd, rep = c->heads / c->kv_heads;
  double *s = qs_malloc(sizeof(double) * (size_t)c->t);
  for (int b = 0; b < c->n_seqs; b++)
    for (long t = c->cu[b]; t < c->cu[b + 1]; t++)
      for (long h = 0; h < c->heads; h++) {
        long g = h / rep, first = c->cu[b] + (c->key_start ? c->key_start[b] : 0);
        if (t < first) { /* a pad query: no key, output 0 */
          for (long i = 0; i < c->hd; i++) o[t * qw + h * c->hd + i] = 0;
          if (lse) lse[t * c->heads + h] = -INFINITY;
          continue;
        }
        double m = -INFINITY, sum = 0;
        for (long u = first; u <= t; u++) {
          double d = 0;
          for (long i = 0; i < c->hd; i++) d += q[t * qw + h * c->hd + i] * k[u * kw + g * c->hd + i];
          s[u] = d / sqrt((double)c->hd);
          m = fmax(m, s[u]);
        }
        for (long u = first; u <= t; u++) sum += exp(s[u] - m);
        for (long i = 0; i < c->hd; i++) {
          double acc = 0;
          for (long u = first; u <= t; u++) acc += exp(s[u] - m) / sum * v[u * kw + g * c->hd + i];
          o[t * qw + h * c->hd + i] = acc;
        }
        if (lse) lse[t * c->heads + h] = m + log(sum);
      }
  free(s);
}

static void ref_attention_wrt(void *vctx, const double *in, double *o) {
  attn_ctx *c = vctx;
  ref_attention(c, c->wrt == 0 ? in : c->q, c->wrt == 1 ? in : c->k, c->wrt == 2 ? in : c->v, o, NULL);
}

/* Rows of a [rows, width] tensor that are pads of the sequences (offset
 * below key_start) must be exactly 0: pad queries in o/dq, pad keys in dk/dv. */
static void check_pad_rows_zero(const char *what, const qs_tensor *t, const int *cu, const int *key_start,
                                int n_seqs) {
  double *got = from_tensor(t);
  long width = t->cols, nonzero = 0;
  for (int b = 0; b < n_seqs; b++)
    for (long r = cu[b]; r < cu[b] + key_start[b]; r++)
      for (long i = 0; i < width; i++) nonzero += got[r * width + i] != 0.0;
  if (nonzero) fprintf(stderr, "%s: %ld nonzero values at pads\n", what, nonzero);
  CHECK_INT(nonzero, 0);
  free(got);
}

/* lse: -inf exactly at pad queries; elsewhere close to the reference. */
static void check_lse(const qs_tensor *L, const double *lse, long n) {
  double *got = from_tensor(L);
  long wrong_pads = 0;
  for (long i = 0; i < n; i++) {
    if (isinf(lse[i])) wrong_pads += !(isinf(got[i]) && got[i] < 0);
    else CHECK_REL(got[i], lse[i], TOL, TOL);
  }
  CHECK_INT(wrong_pads, 0);
  free(got);
}

/* Three sequences (lengths 5, 1, 7); with key_start, left padding of
 * key_start[b] tokens in each (a whole sequence may be pads). */
static void test_attention(long heads, long kv_heads, long hd, const int *key_start) {
  int cu[4] = {0, 5, 6, 13}; /* lengths 5, 1, 7 */
  double cud[4] = {0, 5, 6, 13};
  long t = 13, qw = heads * hd, kw = kv_heads * hd;
  double *q = rand_vec(t * qw, 0, 1), *k = rand_vec(t * kw, 0, 1), *v = rand_vec(t * kw, 0, 1);
  double *d_o = rand_vec(t * qw, 0, 1);
  double *o = qs_malloc(sizeof(double) * (size_t)(t * qw)), *lse = qs_malloc(sizeof(double) * (size_t)(t * heads));
  attn_ctx c = {t, heads, kv_heads, hd, cu, key_start, 3, q, k, v, 0};
  ref_attention(&c, q, k, v, o, lse);
  double *grads[3];
  double *ins[3] = {q, k, v};
  long sizes[3] = {t * qw, t * kw, t * kw};
  for (int i = 0; i < 3; i++) {
    c.wrt = i;
    grads[i] = numeric_grad(ref_attention_wrt, &c, ins[i], sizes[i], d_o, t * qw);
  }
  qs_tensor Q = to_tensor(q, QS_F32, t, qw), K = to_tensor(k, QS_F32, t, kw), V = to_tensor(v, QS_F32, t, kw);
  qs_tensor CU = to_tensor(cud, QS_I32, 4, 1), O = empty(QS_F32, t, qw), L = empty(QS_F32, t, heads);
  qs_tensor DO = to_tensor(d_o, QS_F32, t, qw), DQ = empty(QS_F32, t, qw), DK = empty(QS_F32, t, kw);
  qs_tensor DV = empty(QS_F32, t, kw);
  double ksd[3] = {key_start ? key_start[0] : 0, key_start ? key_start[1] : 0, key_start ? key_start[2] : 0};
  qs_tensor KS = to_tensor(ksd, QS_I32, 3, 1);
  qs_attn_shape shape = {(int)heads, (int)kv_heads, (int)hd, 3, 7, key_start ? &KS : NULL, cu};
  qs_error err;
  CHECK(qs_op_attention(be, &Q, &K, &V, &CU, &shape, &O, &L, &err));
  check_close("attention o", &O, o, TOL);
  check_lse(&L, lse, t * heads);
  CHECK(qs_op_attention_bwd(be, &Q, &K, &V, &O, &L, &DO, &CU, &shape, &DQ, &DK, &DV, &err));
  check_close("attention dq", &DQ, grads[0], TOL);
  check_close("attention dk", &DK, grads[1], TOL);
  check_close("attention dv", &DV, grads[2], TOL);
  if (key_start) {
    /* exact zeros, not just small: pads must not leak into any score */
    check_pad_rows_zero("attention o", &O, cu, key_start, 3);
    check_pad_rows_zero("attention dq", &DQ, cu, key_start, 3);
    check_pad_rows_zero("attention dk", &DK, cu, key_start, 3);
    check_pad_rows_zero("attention dv", &DV, cu, key_start, 3);
    /* key_start past its sequence's end is refused naming it */
    double too_far[3] = {6, 0, 0};
    qs_tensor BKS = to_tensor(too_far, QS_I32, 3, 1);
    qs_attn_shape bad = shape;
    bad.key_start = &BKS;
    CHECK(!qs_op_attention(be, &Q, &K, &V, &CU, &bad, &O, &L, &err));
    CHECK_STR(err.msg, "attention: key_start 6 of sequence 0 is outside [0, 5]");
    qs_tensor_free(be, &BKS);
  } else {
    /* a single-token sequence attends only to itself: o = v of its kv head */
    double *got = from_tensor(&O);
    for (long i = 0; i < hd; i++) CHECK_REL(got[5 * qw + i], v[5 * kw + i], 1e-6, 1e-6);
    free(got);
  }
  /* key_start must be I32 of one value per sequence */
  qs_tensor KS2 = empty(QS_I32, 2, 1);
  qs_attn_shape short_ks = shape;
  short_ks.key_start = &KS2;
  CHECK(!qs_op_attention(be, &Q, &K, &V, &CU, &short_ks, &O, &L, &err));
  CHECK(strstr(err.msg, "key_start") != NULL);
  qs_tensor_free(be, &KS2);
  /* malformed cu_seqlens are refused */
  double bad_cu[4] = {0, 6, 5, 13};
  qs_tensor BCU = to_tensor(bad_cu, QS_I32, 4, 1);
  CHECK(!qs_op_attention(be, &Q, &K, &V, &BCU, &shape, &O, &L, &err));
  CHECK(strstr(err.msg, "cu_seqlens decreases at sequence 1") != NULL);
  qs_tensor *all[] = {&Q, &K, &V, &CU, &O, &L, &DO, &DQ, &DK, &DV, &BCU, &KS};
  for (int i = 0; i < 12; i++) qs_tensor_free(be, all[i]);
  for (int i = 0; i < 3; i++) free(grads[i]);
  free(q), free(k), free(v), free(d_o), free(o), free(lse);
}

/* ---- SwiGLU, embedding, add, copy -------------------------------------- */

static void ref_swiglu(void *vctx, const double *gu, double *m) {
  long n = *(long *)vctx;
  for (long i = 0; i < n; i++) m[i] = gu[i] / (1 + exp(-gu[i])) * gu[n + i];
}

static void test_swiglu(void) {
  long rows = 5, cols = 11, n = rows * cols;
  double *gu = rand_vec(2 * n, 0, 2), *dm = rand_vec(n, 0, 1), *m = qs_malloc(sizeof(double) * (size_t)n);
  ref_swiglu(&n, gu, m);
  double *dgu = numeric_grad(ref_swiglu, &n, gu, 2 * n, dm, n);
  qs_tensor G = to_tensor(gu, QS_F32, rows, cols), U = to_tensor(gu + n, QS_F32, rows, cols);
  qs_tensor M = empty(QS_F32, rows, cols), DM = to_tensor(dm, QS_F32, rows, cols);
  qs_tensor DG = empty(QS_F32, rows, cols), DU = empty(QS_F32, rows, cols);
  qs_error err;
  CHECK(qs_op_swiglu(be, &G, &U, &M, &err));
  check_close("swiglu", &M, m, TOL);
  CHECK(qs_op_swiglu_bwd(be, &G, &U, &DM, &DG, &DU, &err));
  check_close("swiglu_bwd dg", &DG, dgu, TOL);
  check_close("swiglu_bwd du", &DU, dgu + n, TOL);
  qs_tensor *all[] = {&G, &U, &M, &DM, &DG, &DU};
  for (int i = 0; i < 6; i++) qs_tensor_free(be, all[i]);
  free(gu), free(dm), free(m), free(dgu);
}

static void test_embedding_add_copy(void) {
  long v = 9, d = 6, t = 5;
  double ids[5] = {3, 0, 8, 3, 1};
  double *table = rand_vec(v * d, 0, 1), *ref = qs_malloc(sizeof(double) * (size_t)(t * d));
  round_bf16(table, v * d);
  for (long i = 0; i < t; i++)
    for (long j = 0; j < d; j++) ref[i * d + j] = table[(long)ids[i] * d + j];
  qs_tensor I = to_tensor(ids, QS_I32, t, 1), E = to_tensor(table, QS_BF16, v, d), H = empty(QS_F32, t, d);
  qs_error err;
  CHECK(qs_op_embedding(be, &I, &E, &H, &err));
  check_close("embedding", &H, ref, 0); /* a bf16 -> f32 gather is exact */
  double *x = rand_vec(t * d, 0, 1);
  qs_tensor X = to_tensor(x, QS_F32, t, d);
  for (long i = 0; i < t * d; i++) ref[i] += (double)(float)x[i];
  CHECK(qs_op_add(be, &H, &X, &err));
  check_close("add", &H, ref, 1e-7); /* one fp32 rounding per element */
  qs_tensor B = empty(QS_BF16, t, d), F = empty(QS_F32, t * d, 1);
  CHECK(qs_op_copy(be, &B, &X, &err));
  CHECK(qs_op_copy(be, &F, &B, &err));
  for (long i = 0; i < t * d; i++) x[i] = qs_round_bf16((float)x[i]);
  check_close("copy f32 -> bf16 -> f32", &F, x, 0); /* round to nearest even, then exact */
  double bad_ids[5] = {3, 0, 9, 3, 1};
  qs_tensor BI = to_tensor(bad_ids, QS_I32, t, 1);
  CHECK(!qs_op_embedding(be, &BI, &E, &H, &err));
  CHECK(strstr(err.msg, "token id 9 at position 2") != NULL);
  qs_tensor *all[] = {&I, &E, &H, &X, &B, &F, &BI};
  for (int i = 0; i < 7; i++) qs_tensor_free(be, all[i]);
  free(table), free(ref), free(x);
}

/* ---- lm_head + cross-entropy ------------------------------------------- */

typedef struct hook_log {
  int logits_calls, grad_calls;
  long rows_seen;
  long expect_begin;
  bool order_ok;
  /* When set, on_grad runs a linear with this bf16 weight on the chunk, as
   * a scoring visitor does: the head's own f32 weight must survive it. */
  const qs_tensor *visitor_w;
} hook_log;

static bool on_logits(void *ctx, long row_begin, const qs_tensor *x, qs_tensor *logits, qs_error *err) {
  (void)err;
  hook_log *h = ctx;
  h->logits_calls++;
  h->order_ok = h->order_ok && row_begin == h->expect_begin && x->rows == logits->rows;
  /* softmax is invariant to a per-row shift: the loss must not change */
  float *z = logits->data;
  for (long i = 0; i < qs_tensor_numel(logits); i++) z[i] += 3.0f;
  return true;
}

static bool on_grad(void *ctx, long row_begin, const qs_tensor *x, const qs_tensor *g, qs_error *err) {
  (void)err;
  hook_log *h = ctx;
  h->grad_calls++;
  h->order_ok = h->order_ok && row_begin == h->expect_begin && x->rows == g->rows;
  h->rows_seen += g->rows;
  h->expect_begin += g->rows;
  if (!h->visitor_w) return true;
  qs_tensor y = empty(QS_F32, x->rows, h->visitor_w->rows);
  bool ok = qs_op_linear(be, x, h->visitor_w, &y, false, err);
  qs_tensor_free(be, &y);
  return ok;
}

static void test_lm_head_xent(void) {
  long t = 11, d = 16, v = 29;
  double *h = rand_vec(t * d, 0, 1), *w = rand_vec(v * d, 0, 0.5);
  round_bf16(w, v * d);
  double tg[11] = {3, -100, 28, 0, 7, 7, -100, 12, 1, 2, 27};
  long n_valid = 9;
  double scale = 1.0 / n_valid, loss = 0;
  double *dh = qs_calloc((size_t)(t * d), sizeof(double)), *z = qs_malloc(sizeof(double) * (size_t)v);
  for (long i = 0; i < t; i++) {
    double m = -INFINITY, s = 0;
    for (long c = 0; c < v; c++) {
      z[c] = 0;
      for (long j = 0; j < d; j++) z[c] += h[i * d + j] * w[c * d + j];
      m = fmax(m, z[c]);
    }
    for (long c = 0; c < v; c++) s += exp(z[c] - m);
    if (tg[i] < 0) continue;
    loss += m + log(s) - z[(long)tg[i]];
    for (long c = 0; c < v; c++) {
      double g = (exp(z[c] - m) / s - (c == (long)tg[i])) * scale;
      for (long j = 0; j < d; j++) dh[i * d + j] += g * w[c * d + j];
    }
  }
  qs_tensor H = to_tensor(h, QS_F32, t, d), W = to_tensor(w, QS_BF16, v, d), TG = to_tensor(tg, QS_I32, t, 1);
  qs_tensor DH = empty(QS_F32, t, d);
  /* A wider bf16 weight for the visitor's linear (it also regrows the
   * backend's weight scratch). */
  double *vw = rand_vec(3 * v * d, 0, 1);
  qs_tensor VW = to_tensor(vw, QS_BF16, 3 * v, d);
  hook_log log = {0, 0, 0, 0, true, &VW};
  qs_lm_head_hooks hooks = {on_logits, on_grad, &log};
  double got = 0;
  qs_error err;
  CHECK(qs_op_lm_head_xent(be, &H, &W, &TG, (float)scale, 4, &hooks, &DH, &got, &err));
  CHECK_REL(got, loss, 1e-5, 0);
  check_close("lm_head_xent dh", &DH, dh, TOL);
  CHECK_INT(log.logits_calls, 3); /* chunks of 4, 4, 3 */
  CHECK_INT(log.grad_calls, 3);
  CHECK_INT(log.rows_seen, t);
  CHECK(log.order_ok);
  /* forward only: same loss, no gradient hook */
  hook_log log2 = {0, 0, 0, 0, true, NULL};
  qs_lm_head_hooks hooks2 = {NULL, on_grad, &log2};
  CHECK(qs_op_lm_head_xent(be, &H, &W, &TG, (float)scale, 100, &hooks2, NULL, &got, &err));
  CHECK_REL(got, loss, 1e-5, 0);
  CHECK_INT(log2.grad_calls, 0);
  double bad_tg[11] = {3, -100, 29, 0, 7, 7, -100, 12, 1, 2, 27};
  qs_tensor BT = to_tensor(bad_tg, QS_I32, t, 1);
  CHECK(!qs_op_lm_head_xent(be, &H, &W, &BT, (float)scale, 4, NULL, &DH, &got, &err));
  CHECK(strstr(err.msg, "target 29 of token 2") != NULL);
  qs_tensor *all[] = {&H, &W, &TG, &DH, &BT, &VW};
  for (int i = 0; i < 6; i++) qs_tensor_free(be, all[i]);
  free(h), free(w), free(dh), free(z), free(vw);
}

/* ---- reductions -------------------------------------------------------- */

static void test_reductions(void) {
  long n = 1000;
  double *x = rand_vec(n, 0, 1);
  x[417] = -7.25;
  qs_tensor X = to_tensor(x, QS_F32, 10, 100), XB = to_tensor(x, QS_BF16, 10, 100);
  double start = 2.0;
  qs_tensor A = to_tensor(&start, QS_F32, 1, 1);
  qs_error err;
  CHECK(qs_op_amax_accumulate(be, &X, &A, &err));
  double *a = from_tensor(&A);
  CHECK(a[0] == 7.25);
  free(a);
  CHECK(qs_op_amax_accumulate(be, &XB, &A, &err)); /* smaller running max stays */
  a = from_tensor(&A);
  CHECK(a[0] == 7.25);
  free(a);
  bool finite = false;
  CHECK(qs_op_all_finite(be, &X, &finite, &err));
  CHECK(finite);
  float *raw = X.data; /* CPU memory is host memory */
  raw[999] = INFINITY;
  CHECK(qs_op_all_finite(be, &X, &finite, &err));
  CHECK(!finite);
  raw[999] = NAN;
  CHECK(qs_op_all_finite(be, &X, &finite, &err));
  CHECK(!finite);
  CHECK(qs_op_amax_accumulate(be, &X, &A, &err));
  a = from_tensor(&A);
  CHECK(isnan(a[0])); /* NaN is not silently dropped */
  free(a);
  qs_tensor *all[] = {&X, &XB, &A};
  for (int i = 0; i < 3; i++) qs_tensor_free(be, all[i]);
  free(x);
}

int main(void) {
  be = qs_cpu_backend_new();
  test_linear(QS_BF16);
  test_linear(QS_F32);
  test_rmsnorm();
  test_qknorm_rope();
  test_rope_inv_freq();
  test_attention(4, 2, 8, NULL);
  test_attention(6, 1, 6, NULL);
  test_attention(3, 3, 4, NULL);
  /* left padding: 2 pads, a sequence of only pads, 3 pads */
  static const int key_start[3] = {2, 1, 3};
  test_attention(4, 2, 8, key_start);
  test_attention(6, 1, 6, key_start);
  test_attention(3, 3, 4, key_start);
  test_swiglu();
  test_embedding_add_copy();
  test_lm_head_xent();
  test_reductions();
  qs_backend_destroy(be);
  return check_summary("test_backend_ops");
}
