/* The worked examples F1-F3, I1-I3, M1-M3, N1-N2 of spec §1.8, exactly, through
 * the format-driven entry point qs_fake_quant. */
#include "check.h"
#include "core/bf16.h"
#include "quant/quant.h"

/* FQ of a single row of `n` values (padded with zeros to `cols`), output y. */
static void run(const char *format, qs_qrole role, const float *x, int n, int cols,
                const float *amax, const qs_fq_options *opts, float *y) {
  float in[128] = {0}, out[128];
  for (int i = 0; i < n; i++) in[i] = x[i];
  qs_error err;
  const qs_qformat *fmt = qs_qformat_find(format);
  CHECK(fmt != NULL);
  CHECK(qs_fake_quant(fmt, role, (qs_src){in, QS_DTYPE_F32}, (qs_dst){out, QS_DTYPE_F32}, 1,
                      (size_t)cols, amax, opts, &err));
  for (int i = 0; i < n; i++) y[i] = out[i];
}

static void fp8_examples(void) {
  float y[3];
  float amax448 = 448.0f, amax3 = 3.0f, amax1 = 1.0f;
  run("fp8", QS_ROLE_ACT, (float[]){17, 19, 500}, 3, 3, &amax448, NULL, y);
  CHECK(y[0] == 16.0f && y[1] == 20.0f && y[2] == 448.0f); /* F1 */
  qs_fp8_scale s = qs_fp8_scale_for(3.0f);
  CHECK(s.scale == 149.33333f && s.inv == 0.0066964286f);  /* F2 scale and inverse */
  run("fp8", QS_ROLE_ACT, (float[]){1.0f}, 1, 1, &amax3, NULL, y);
  CHECK(y[0] == 0.96484375f);                              /* F2 */
  run("fp8", QS_ROLE_ACT, (float[]){0.30078125f}, 1, 1, &amax1, NULL, y);
  CHECK(y[0] == 0.28515625f);                              /* F3 */
}

static void int_examples(void) {
  float y[3];
  /* I1: an INT8 weight row whose max is 4 (per-channel amax from the weight) */
  run("int8", QS_ROLE_WEIGHT, (float[]){1.0f, 4.0f}, 2, 2, NULL, NULL, y);
  CHECK(y[0] == 1.0078125f && y[1] == 4.0f);
  /* I2: static activation amax 127 (scale 1): half-even and clamp at -128 */
  float amax127 = 127.0f;
  run("int8", QS_ROLE_ACT, (float[]){2.5f, 3.5f, -200.0f}, 3, 3, &amax127, NULL, y);
  CHECK(y[0] == 2.0f && y[1] == 4.0f && y[2] == -128.0f);
  /* I3: INT4 with amax 4 (scale 1.75): 1.0 and -5 (-8.75 -> -9 -> clamp -8) */
  float amax4 = 4.0f;
  run("int4", QS_ROLE_ACT, (float[]){1.0f, -5.0f}, 2, 2, &amax4, NULL, y);
  CHECK(y[0] == 1.140625f && y[1] == -4.5625f);
  /* the same through an INT4 weight block of 128 whose max is 4 */
  run("int4", QS_ROLE_WEIGHT, (float[]){1.0f, -4.0f}, 2, 128, NULL, NULL, y);
  CHECK(y[0] == 1.140625f && y[1] == -4.0f);
}

static void mx_examples(void) {
  float y[4];
  run("mxfp4", QS_ROLE_WEIGHT, (float[]){7, 3, 1, 0.4f}, 4, 32, NULL, NULL, y);
  CHECK(y[0] == 8.0f && y[1] == 3.0f && y[2] == 1.0f && y[3] == 0.0f); /* M1 */
  qs_fq_options ocp = {QS_MX_OCP_FLOOR, 0};
  run("mxfp4", QS_ROLE_ACT, (float[]){7}, 1, 32, NULL, &ocp, y);
  CHECK(y[0] == 6.0f);                                                  /* M2 */
  CHECK_INT(qs_mx_exponent(7.0f, QS_MX_OCP_FLOOR), 0);
  CHECK_INT(qs_mx_exponent(6.0f, QS_MX_NV_CEIL), 0);                    /* M3 */
  CHECK_INT(qs_mx_exponent(12.0f, QS_MX_NV_CEIL), 1);
  CHECK_INT(qs_mx_exponent(1.0f, QS_MX_NV_CEIL), -2);
  CHECK_INT(qs_mx_exponent(448.0f, QS_MX_NV_CEIL), 7);
  /* clamps and the no-scale cases */
  CHECK_INT(qs_mx_exponent(0.0f, QS_MX_NV_CEIL), 0);
  CHECK_INT(qs_mx_exponent(INFINITY, QS_MX_NV_CEIL), 0);
  CHECK_INT(qs_mx_exponent(NAN, QS_MX_OCP_FLOOR), 0);
  CHECK_INT(qs_mx_exponent(0x1p-133f, QS_MX_NV_CEIL), -127);
  CHECK_INT(qs_mx_exponent(0x1p-133f, QS_MX_OCP_FLOOR), -127);
  CHECK_INT(qs_mx_exponent(3.0e38f, QS_MX_NV_CEIL), 126);
}

static void nvfp4_examples(void) {
  float y[2];
  float A = 2688.0f;
  run("nvfp4", QS_ROLE_WEIGHT, (float[]){7, 3}, 2, 16, &A, NULL, y);
  CHECK(y[0] == 6.75f && y[1] == 3.375f); /* N1: sb = 1.125, 7 clips */
  CHECK(qs_nvfp4_block_scale(7.0f, qs_nvfp4_global_scale(2688.0f)) == 1.125f);
  float A10 = 10.0f;
  run("nvfp4", QS_ROLE_WEIGHT, (float[]){7}, 1, 16, &A10, NULL, y);
  CHECK(y[0] == 7.15625f);                /* N2 */
  CHECK(qs_nvfp4_global_scale(10.0f) == 0.0037202381f);
  CHECK(qs_nvfp4_block_scale(7.0f, 0.0037202381f) == 1.1904762f);
  /* with A taken from the tensor itself (NULL amax): A = 7, a different scale */
  run("nvfp4", QS_ROLE_WEIGHT, (float[]){7}, 1, 16, NULL, NULL, y);
  CHECK(y[0] == 7.0f);
  CHECK(qs_nvfp4_global_scale(0.0f) == 1e-12f);
}

int main(void) {
  fp8_examples();
  int_examples();
  mx_examples();
  nvfp4_examples();
  return check_summary("test_fq_examples");
}
