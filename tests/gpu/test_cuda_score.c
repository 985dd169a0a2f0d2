/* The sensitivity-score op of the CUDA backend against its CPU twin
 * (qs_op_quant_score, reduction order of backend/score_order.h). Skipped
 * (77) without a GPU.
 *   - Random bf16 inputs of Qwen-like shapes (K not a multiple of 32, rows
 *     of several runs, T in {1, 7, 300}), both precision modes, with and
 *     without activation quantization: relative error within bounds.
 *   - Exact GEMMs (small integers): every Y and Y_r is exact on both
 *     backends, so the two must give the same bits; G has full bf16
 *     mantissas, so the fp32 squares and sums round and any other
 *     reduction order shows in the bits.
 *   - A NaN reaches its slot and no other; repeat calls give the same bits;
 *     accumulation adds into the slot; nothing is written outside acc. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_backend.h"
#include "gpu_util.h"
#include "kernels/cuda_backend.h"
#include "quant/format.h"

enum { SLOTS = 4 };

static qs_backend *gpu, *cpu;
static qs_error err;

static void ok(bool r, const char *what) {
  if (!r) fprintf(stderr, "%s failed: %s\n", what, err.msg);
  CHECK(r);
}

/* The operands of one Linear on one backend: x [t, k], w [n, k], their fake
 * quantized xq and wq, y = x·wᵀ (f32), g [t, n] and an F64 accumulator of
 * SLOTS values. */
typedef struct operands {
  qs_backend *be;
  qs_tensor x, xq, w, wq, y, g, acc;
} operands;

static qs_tensor zero_acc(qs_backend *be) {
  qs_tensor acc = gpu_fenced_alloc(be, QS_F64, SLOTS, 1);
  double zeros[SLOTS] = {0.0};
  CHECK(qs_tensor_upload(be, &acc, zeros, &err));
  return acc;
}

/* Operands on be from host values; act: the activation dtype of be,
 * weight_dtype: the dtype of w and wq. xq NULL: no activation quantizer (xq
 * is then a copy of x). */
static operands make_operands(qs_backend *be, const float *x, const float *xq, const float *w, const float *wq,
                              const float *g, long t, long n, long k, qs_dtype weight_dtype) {
  operands o;
  o.be = be;
  o.x = gpu_tensor(be, x, be->act_dtype, t, k);
  o.xq = gpu_tensor(be, xq ? xq : x, be->act_dtype, t, k);
  o.w = gpu_tensor(be, w, weight_dtype, n, k);
  o.wq = gpu_tensor(be, wq, weight_dtype, n, k);
  o.g = gpu_tensor(be, g, be->act_dtype, t, n);
  o.y = gpu_fenced_alloc(be, QS_F32, t, n);
  ok(qs_op_linear(be, &o.x, &o.w, &o.y, false, &err), "linear into f32");
  o.acc = zero_acc(be);
  return o;
}

static void free_operands(operands *o) {
  qs_tensor *ts[] = {&o->x, &o->xq, &o->w, &o->wq, &o->y, &o->g, &o->acc};
  for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) gpu_free(o->be, ts[i]);
}

static void read_acc(operands *o, double out[SLOTS]) { CHECK(qs_tensor_download(o->be, out, &o->acc, &err)); }

/* The score of one call into `slot`, read back. */
static double score(operands *o, bool act_quant, qs_delta_mode mode, long slot) {
  ok(qs_op_quant_score(o->be, act_quant ? &o->xq : &o->x, &o->wq, &o->y, &o->g, mode, &o->acc, slot, &err),
     "quant_score");
  double v[SLOTS];
  read_acc(o, v);
  return v[slot];
}

static bool same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* ---- random inputs ----------------------------------------------------- */

/* accurate: Δ = Y_r − Y cancels. The backends' fp32 GEMM outputs differ by
 * summation order (and the tensor cores' internal adds), a few 2^-24·√K of
 * |Y| ≈ 1e-6|Y|, while Δ ≈ |Y|/220 for INT8 weights: ~2e-4 relative per
 * Δ, random in sign, so the sum of ≥ 9000 squared terms moves ~1e-5; 1e-3
 * leaves a wide margin, and an indexing mistake is O(1).
 * modelopt: bf16(Y_r) − bf16(Y) flips by one bf16 ulp of Y where the two
 * backends' fp32 outputs straddle a bf16 rounding boundary (~2e-4 of the
 * outputs), which changes that Δ by up to 100%: with 9000 terms (T = 1) a few
 * flips move the sum by ~1e-3; 2e-2 bounds them. */
#define TOL_ACCURATE 1e-3
#define TOL_MODELOPT 2e-2

static void quantize(qs_backend *be, const char *format, bool weight, const float *v, long rows, long cols,
                     float *out) {
  qs_tensor in = gpu_tensor(be, v, QS_F32, rows, cols), q = gpu_fenced_alloc(be, QS_F32, rows, cols);
  qs_fq_spec spec = {qs_qformat_find(format), weight, QS_MX_NV_CEIL, 0};
  ok(qs_op_fake_quant(be, &spec, &in, NULL, &q, &err), format);
  float *got = gpu_read(be, &q);
  memcpy(out, got, (size_t)(rows * cols) * sizeof(float));
  free(got);
  gpu_free(be, &in);
  gpu_free(be, &q);
}

static void check_random(long t, long n, long k, const char *wfmt, const char *afmt) {
  float *x = gpu_rand(t * k, 0.0, 1.0), *w = gpu_rand(n * k, 0.0, 0.05), *g = gpu_rand(t * n, 0.0, 1e-3);
  float *xq = qs_malloc((size_t)(t * k) * sizeof(float)), *wq = qs_malloc((size_t)(n * k) * sizeof(float));
  /* The CPU quantizes (the GPU's quantizers are checked elsewhere), so both
   * backends score the same bf16 values. */
  quantize(cpu, wfmt, true, w, n, k, wq);
  quantize(cpu, afmt, false, x, t, k, xq);
  operands og = make_operands(gpu, x, xq, w, wq, g, t, n, k, QS_BF16);
  operands oc = make_operands(cpu, x, xq, w, wq, g, t, n, k, QS_F32);
  for (int m = 0; m < 2; m++)
    for (int act = 0; act < 2; act++) {
      qs_delta_mode mode = m ? QS_DELTA_MODELOPT : QS_DELTA_ACCURATE;
      long slot = m * 2 + act;
      double sg = score(&og, act, mode, slot), sc = score(&oc, act, mode, slot);
      printf("  T %4ld N %5ld K %3ld %-5s %-5s %-8s gpu %.9g cpu %.9g rel %.2e\n", t, n, k, wfmt,
             act ? afmt : "-", m ? "modelopt" : "accurate", sg, sc, fabs(sg - sc) / fabs(sc));
      CHECK(sc > 0.0);
      CHECK_REL(sg, sc, m ? TOL_MODELOPT : TOL_ACCURATE, 0.0);
    }
  CHECK(gpu_check_fence(gpu, &og.acc, "quant_score acc"));
  free_operands(&og);
  free_operands(&oc);
  free(x), free(w), free(g), free(xq), free(wq);
}

static void test_random(void) {
  /* K = 200: not a multiple of 32 (nor of the GEMM tiles); N = 9000: two
   * full runs and one of 808 columns per row. */
  long ts[] = {1, 7, 300};
  for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) check_random(ts[i], 9000, 200, "int8", "fp8");
  check_random(7, 9000, 200, "fp8", "fp8");
}

/* ---- exact GEMMs: bit-identical to the CPU ------------------------------- */

static unsigned lcg(unsigned *s) { return *s = *s * 1103515245u + 12345u; }
static float small_int(unsigned *s, int range) {
  return (float)((int)((lcg(s) >> 8) % (unsigned)(2 * range + 1)) - range);
}

/* |x| ≤ 3, |w|, |wq| ≤ 18, K = 40: every Y is an integer below 2^12, exact
 * in fp32 whatever the order of the GEMM's adds. 140 rows × 2 runs = 280
 * partials (more than the 256 fp64 accumulators); the second run of a row
 * has 37 columns (not a whole number of lanes). f32 operands on the GPU
 * take the bf16 conversion path. */
static void test_exact(qs_dtype weight_dtype, bool f32_xr) {
  long t = 140, n = 4133, k = 40;
  unsigned seed = 9;
  float *x = qs_malloc((size_t)(t * k) * sizeof(float)), *w = qs_malloc((size_t)(n * k) * sizeof(float));
  float *wq = qs_malloc((size_t)(n * k) * sizeof(float));
  for (long i = 0; i < t * k; i++) x[i] = small_int(&seed, 3);
  for (long i = 0; i < n * k; i++) {
    w[i] = small_int(&seed, 16);
    wq[i] = w[i] + small_int(&seed, 2);
  }
  float *g = gpu_rand(t * n, 0.0, 0.3); /* bf16 values with full mantissas */
  operands og = make_operands(gpu, x, NULL, w, wq, g, t, n, k, weight_dtype);
  operands oc = make_operands(cpu, x, NULL, w, wq, g, t, n, k, QS_F32);
  qs_tensor xr = og.x;
  if (f32_xr) xr = gpu_tensor(gpu, x, QS_F32, t, k);
  for (int m = 0; m < 2; m++) {
    qs_delta_mode mode = m ? QS_DELTA_MODELOPT : QS_DELTA_ACCURATE;
    ok(qs_op_quant_score(gpu, &xr, &og.wq, &og.y, &og.g, mode, &og.acc, m, &err), "quant_score exact");
    ok(qs_op_quant_score(cpu, &oc.x, &oc.wq, &oc.y, &oc.g, mode, &oc.acc, m, &err), "quant_score exact (cpu)");
  }
  double vg[SLOTS], vc[SLOTS];
  read_acc(&og, vg);
  read_acc(&oc, vc);
  for (int m = 0; m < 2; m++) {
    printf("  exact %s w%s %-8s gpu %.17g cpu %.17g\n", f32_xr ? "f32 xr" : "bf16 xr",
           weight_dtype == QS_F32 ? " f32" : "", m ? "modelopt" : "accurate", vg[m], vc[m]);
    CHECK(vc[m] > 0.0);
    CHECK(same_bits(vg[m], vc[m]));
  }
  CHECK(vg[2] == 0.0 && vg[3] == 0.0);
  CHECK(gpu_check_fence(gpu, &og.acc, "quant_score acc"));
  if (f32_xr) gpu_free(gpu, &xr);
  free_operands(&og);
  free_operands(&oc);
  free(x), free(w), free(wq), free(g);
}

/* ---- NaN, repeats, accumulation ------------------------------------------- */

static void test_nan_and_repeats(void) {
  long t = 7, n = 4100, k = 72;
  float *x = gpu_rand(t * k, 0.0, 1.0), *w = gpu_rand(n * k, 0.0, 0.05), *g = gpu_rand(t * n, 0.0, 1e-3);
  float *wq = qs_malloc((size_t)(n * k) * sizeof(float));
  quantize(cpu, "int8", true, w, n, k, wq);
  operands o = make_operands(gpu, x, NULL, w, wq, g, t, n, k, QS_BF16);
  /* Two calls into slot 0 and one into slot 1: the same bits each time,
   * and slot 0 holds exactly twice that (a doubling is exact). */
  double once = score(&o, false, QS_DELTA_ACCURATE, 1);
  score(&o, false, QS_DELTA_ACCURATE, 0);
  double twice = score(&o, false, QS_DELTA_ACCURATE, 0);
  CHECK(once > 0.0);
  CHECK(same_bits(twice, 2.0 * once));
  double again = score(&o, false, QS_DELTA_ACCURATE, 2);
  CHECK(same_bits(again, once));
  /* One NaN in G (the last element: the last run's last lane) reaches slot
   * 3 only. */
  g[t * n - 1] = NAN;
  qs_tensor gnan = gpu_tensor(gpu, g, QS_BF16, t, n);
  for (int m = 0; m < 2; m++)
    ok(qs_op_quant_score(gpu, &o.x, &o.wq, &o.y, &gnan, m ? QS_DELTA_MODELOPT : QS_DELTA_ACCURATE, &o.acc, 3, &err),
       "quant_score nan");
  double v[SLOTS];
  read_acc(&o, v);
  CHECK(isnan(v[3]));
  CHECK(same_bits(v[0], twice) && same_bits(v[1], once) && same_bits(v[2], once));
  CHECK(gpu_check_fence(gpu, &o.acc, "quant_score acc"));
  gpu_free(gpu, &gnan);
  free_operands(&o);
  free(x), free(w), free(g), free(wq);
}

int main(void) {
  gpu_require_device("test_cuda_score");
  gpu = qs_cuda_backend_new(0, &err);
  if (!gpu) fprintf(stderr, "%s\n", err.msg);
  CHECK(gpu != NULL);
  if (!gpu) return check_summary("test_cuda_score");
  cpu = qs_cpu_backend_new();
  test_exact(QS_BF16, false);
  test_exact(QS_F32, true);
  test_random();
  test_nan_and_repeats();
  printf("  GPU memory: %.1f MiB in use, peak %.1f MiB\n", qs_cuda_backend_bytes_in_use(gpu) / 1048576.0,
         qs_cuda_backend_peak_bytes(gpu) / 1048576.0);
  qs_backend_destroy(gpu);
  qs_backend_destroy(cpu);
  return check_summary("test_cuda_score");
}
