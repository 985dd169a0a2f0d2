/* Format registry, (W,A) pairs of spec §2 (config names, display strings, cost
 * bits, activation amax mode), pair-name parsing under random mutation, and
 * the shape/amax handling of qs_fake_quant. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "core/bf16.h"
#include "quant/quant.h"

static void registry(void) {
  const char *names[] = {"none", "fp16", "bf16", "fp8", "int8", "int4", "mxfp4", "fp4", "nvfp4"};
  const int bits[] = {16, 16, 16, 8, 8, 4, 4, 4, 4};
  for (int i = 0; i < 9; i++) {
    const qs_qformat *f = qs_qformat_find(names[i]);
    CHECK(f != NULL);
    if (f) CHECK_INT(f->bits, bits[i]);
  }
  CHECK(qs_qformat_find("fp4") == qs_qformat_find("mxfp4"));
  CHECK(qs_qformat_find("fp16") == qs_qformat_find("none"));
  CHECK(qs_qformat_find("int2") == NULL);
  CHECK(qs_qformat_find(NULL) == NULL);
  const qs_qformat *int8 = qs_qformat_find("int8"), *int4 = qs_qformat_find("int4");
  CHECK(int8->weight_amax == QS_GRAN_CHANNEL && int8->act_amax == QS_GRAN_TENSOR);
  CHECK(int4->weight_amax == QS_GRAN_BLOCK && int4->act_amax == QS_GRAN_TENSOR);
  CHECK_INT(qs_qformat_role_block(int4, true), 128);
  CHECK_INT(qs_qformat_role_block(int4, false), 0);
  CHECK_INT(qs_qformat_role_block(qs_qformat_find("mxfp4"), false), 32);
  CHECK_INT(qs_qformat_role_block(qs_qformat_find("nvfp4"), true), 16);
  qs_error err;
  const qs_qformat *f;
  CHECK(!qs_qformat_lookup("fp6", "quant_pair.weight", &f, &err));
  CHECK_INT(err.status, QS_EXIT_USAGE);
  CHECK(strstr(err.msg, "quant_pair.weight") && strstr(err.msg, "'fp6'"));
}

/* Every row of the §2 table: pair -> display string and amax mode. */
static void pairs(void) {
  static const struct {
    const char *pair, *display_4_0, *display_4_5, *config;
    int dynamic;
  } rows[] = {
      {"wfp4_afp16", "CUSTOM_0(effective-bits: 4.0)", NULL, "MXFP4_WEIGHT_ONLY_CFG", 0},
      {"wfp4_afp8", "W4A8_MXFP4_FP8_CFG(effective-bits: 4.0)", NULL, NULL, 1},
      {"wfp8_afp16", "CUSTOM_0(effective-bits: 8.0)", NULL, "FP8_WEIGHT_ONLY_CFG", 0},
      {"wfp8_afp8", "FP8_DEFAULT_CFG(effective-bits: 8.0)", NULL, NULL, 0},
      {"wint8_afp16", "INT8_WEIGHT_ONLY_CFG(effective-bits: 8.0)", NULL, NULL, 0},
      {"wint8_afp8", "CUSTOM_0(effective-bits: 8.0)", NULL, "INT8_WEIGHT_FP8_ACT_CFG", 0},
      {"wint8_aint8", "INT8_DEFAULT_CFG(effective-bits: 8.0)", NULL, NULL, 0},
      {"wnvfp4_afp16", "CUSTOM_0(effective-bits: 4.0)", "CUSTOM_0(effective-bits: 4.5)",
       "NVFP4_WEIGHT_ONLY_CFG", 0},
      {"wnvfp4_afp8", "W4A8_NVFP4_FP8_CFG(effective-bits: 4.0)",
       "W4A8_NVFP4_FP8_CFG(effective-bits: 4.0)", NULL, 0},
      {"wnvfp4_anvfp4", "NVFP4_DEFAULT_CFG(effective-bits: 4.0)",
       "NVFP4_DEFAULT_CFG(effective-bits: 4.5)", NULL, 0},
      {"wint4_afp16", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG(effective-bits: 4.0)", NULL, NULL, 0},
      {"wint4_afp8", "CUSTOM_0(effective-bits: 4.0)", NULL, "INT4_WEIGHT_FP8_ACT_CFG", 0},
      {"wfp8_aint8", "CUSTOM_0(effective-bits: 8.0)", NULL, "FP8_WEIGHT_INT8_ACT_CFG", 0},
      {"wfp4_aint8", "CUSTOM_0(effective-bits: 4.0)", NULL, "MXFP4_WEIGHT_INT8_ACT_CFG", 0},
      {"wnvfp4_aint8", "CUSTOM_0(effective-bits: 4.0)", "CUSTOM_0(effective-bits: 4.5)", NULL, 0},
      {"wint8_aint4", "CUSTOM_0(effective-bits: 4.0)", NULL, "INT8_WEIGHT_INT4_ACT_CFG", 0},
      {"wnvfp4_aint4", "CUSTOM_0(effective-bits: 4.0)", "CUSTOM_0(effective-bits: 4.0)", NULL, 0},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    qs_qpair p;
    qs_error err;
    CHECK(qs_qpair_parse(rows[i].pair, &p, &err));
    CHECK_STR(p.name, rows[i].pair);
    char buf[96];
    qs_qpair_display(&p, 0, 4.0, buf, sizeof buf);
    CHECK_STR(buf, rows[i].display_4_0);
    if (rows[i].display_4_5) {
      qs_qpair_display(&p, 0, 4.5, buf, sizeof buf);
      CHECK_STR(buf, rows[i].display_4_5);
    }
    if (rows[i].config) CHECK_STR(p.config_name, rows[i].config);
    CHECK_INT(p.dynamic_act_amax, rows[i].dynamic);
  }
  qs_qpair p;
  qs_error err;
  CHECK(qs_qpair_make("int8", "fp8", &p, &err));
  char buf[96];
  qs_qpair_display(&p, 3, 4.0, buf, sizeof buf);
  CHECK_STR(buf, "CUSTOM_3(effective-bits: 8.0)");
  qs_recipe_display("NONE", 16.0, buf, sizeof buf);
  CHECK_STR(buf, "NONE(effective-bits: 16.0)");
  CHECK(qs_qpair_make("mxfp4", "bf16", &p, &err));
  CHECK_STR(p.name, "wfp4_afp16");
}

static void pair_errors(void) {
  qs_qpair p;
  qs_error err;
  CHECK(!qs_qpair_parse("wint8", &p, &err));
  CHECK_INT(err.status, QS_EXIT_USAGE);
  CHECK(strstr(err.msg, "'wint8'") != NULL);
  CHECK(!qs_qpair_parse("wint3_aint8", &p, &err));
  CHECK(strstr(err.msg, "quant_pair 'wint3_aint8'") && strstr(err.msg, "'int3'"));
  CHECK(!qs_qpair_parse("wfp16_aint8", &p, &err));
  CHECK(strstr(err.msg, "unquantized") != NULL);
  CHECK(!qs_qpair_parse(NULL, &p, &err));
  /* Random mutations of valid names: each either parses to a pair whose
   * canonical name re-parses identically, or fails with a usage message. */
  const char *seeds[] = {"wint8_aint8", "wfp4_afp16", "wnvfp4_anvfp4", "wint4_afp8"};
  uint32_t state = 99;
  for (int trial = 0; trial < 20000; trial++) {
    char s[40];
    snprintf(s, sizeof s, "%s", seeds[trial % 4]);
    size_t len = strlen(s);
    for (int m = 0; m < 1 + trial % 3; m++) {
      state = state * 1664525u + 1013904223u;
      size_t at = (state >> 8) % (len + 1); /* len: at the end */
      char c = (char)(1 + (state >> 20) % 127);
      int op = (int)((state >> 4) % 3);
      if (op == 0 && at < len) { /* delete */
        memmove(s + at, s + at + 1, len - at);
        len--;
      } else if (op == 1 && len + 1 < sizeof s) { /* insert */
        memmove(s + at + 1, s + at, len - at + 1);
        s[at] = c;
        len++;
      } else if (at < len) { /* replace */
        s[at] = c;
      }
    }
    qs_error e2;
    if (qs_qpair_parse(s, &p, &e2)) {
      qs_qpair again;
      CHECK(qs_qpair_parse(p.name, &again, &e2));
      CHECK(again.weight == p.weight && again.act == p.act);
    } else {
      CHECK_INT(e2.status, QS_EXIT_USAGE);
      CHECK(strstr(e2.msg, "quant_pair") != NULL);
    }
  }
}

/* qs_fake_quant: amax counts, static vs data-derived amax, dtype combinations. */
static void dispatch(void) {
  enum { R = 2, C = 256 };
  static float x[R * C], y32[R * C], direct[R * C];
  static qs_bf16 xb[R * C], yb[R * C];
  for (int i = 0; i < R * C; i++) {
    x[i] = qs_round_bf16(sinf((float)i * 0.37f) * (i < C ? 3.0f : 0.02f));
    xb[i] = qs_f32_to_bf16(x[i]);
  }
  const qs_qformat *int8 = qs_qformat_find("int8");
  CHECK_INT(qs_amax_count(int8, QS_ROLE_WEIGHT, R, C), R);
  CHECK_INT(qs_amax_count(int8, QS_ROLE_ACT, R, C), 1);
  CHECK_INT(qs_amax_count(qs_qformat_find("int4"), QS_ROLE_WEIGHT, R, C), R * C / 128);
  CHECK_INT(qs_amax_count(qs_qformat_find("mxfp4"), QS_ROLE_WEIGHT, R, C), 0);
  CHECK_INT(qs_amax_count(qs_qformat_find("nvfp4"), QS_ROLE_ACT, R, C), 1);
  qs_error err;
  /* INT8 weights: per-row amax taken from the rows themselves */
  CHECK(qs_fake_quant(int8, QS_ROLE_WEIGHT, (qs_src){xb, QS_DTYPE_BF16}, (qs_dst){y32, QS_DTYPE_F32}, R, C, NULL, NULL, &err));
  float rows[R];
  qs_amax_blocks((qs_src){x, QS_DTYPE_F32}, R * C, C, rows);
  qs_quantize_int((qs_src){x, QS_DTYPE_F32}, (qs_dst){direct, QS_DTYPE_F32}, R * C, C, 8, rows);
  CHECK(memcmp(y32, direct, sizeof direct) == 0);
  CHECK(rows[0] > 100 * rows[1]); /* the rows really do differ in scale */
  /* INT8 activations with a static amax below the data: values clamp */
  float amax = 1.0f;
  CHECK(qs_fake_quant(int8, QS_ROLE_ACT, (qs_src){x, QS_DTYPE_F32}, (qs_dst){yb, QS_DTYPE_BF16}, R, C, &amax, NULL, &err));
  float top = 0;
  for (int i = 0; i < R * C; i++) top = fmaxf(top, fabsf(qs_bf16_to_f32(yb[i])));
  CHECK(top == qs_round_bf16(128.0f / 127.0f));
  /* bf16 in == fp32 in for bf16-valued data, and outputs in either dtype agree */
  const char *fmts[] = {"none", "fp8", "int8", "int4", "mxfp4", "nvfp4"};
  for (int f = 0; f < 6; f++) {
    const qs_qformat *fmt = qs_qformat_find(fmts[f]);
    for (qs_qrole role = QS_ROLE_WEIGHT; role <= QS_ROLE_ACT; role++) {
      CHECK(qs_fake_quant(fmt, role, (qs_src){xb, QS_DTYPE_BF16}, (qs_dst){yb, QS_DTYPE_BF16}, R, C, NULL, NULL, &err));
      CHECK(qs_fake_quant(fmt, role, (qs_src){x, QS_DTYPE_F32}, (qs_dst){y32, QS_DTYPE_F32}, R, C, NULL, NULL, &err));
      int same = 1;
      for (int i = 0; i < R * C; i++) same &= qs_bf16_to_f32(yb[i]) == y32[i];
      CHECK(same);
    }
  }
  /* fp32 data that is not bf16: NONE rounds it to bf16 */
  float odd = 1.0f + 0x1p-12f, out;
  CHECK(qs_fake_quant(qs_qformat_find("none"), QS_ROLE_ACT, (qs_src){&odd, QS_DTYPE_F32}, (qs_dst){&out, QS_DTYPE_F32}, 1, 1, NULL, NULL, &err));
  CHECK(out == 1.0f);
  /* rows that are not whole blocks are refused, naming the sizes */
  CHECK(!qs_fake_quant(qs_qformat_find("mxfp4"), QS_ROLE_ACT, (qs_src){x, QS_DTYPE_F32}, (qs_dst){y32, QS_DTYPE_F32}, 8, 40, NULL, NULL, &err));
  CHECK(strstr(err.msg, "40") && strstr(err.msg, "32-element"));
  qs_fq_options w4a8 = {QS_MX_NV_CEIL, 32};
  CHECK(!qs_fake_quant(qs_qformat_find("nvfp4"), QS_ROLE_WEIGHT, (qs_src){x, QS_DTYPE_F32}, (qs_dst){y32, QS_DTYPE_F32}, 12, 48, NULL, &w4a8, &err));
  CHECK(qs_fake_quant(qs_qformat_find("int4"), QS_ROLE_ACT, (qs_src){x, QS_DTYPE_F32}, (qs_dst){y32, QS_DTYPE_F32}, 8, 40, NULL, NULL, &err));
  /* amax propagates NaN and is exact */
  float nanrow[3] = {1.0f, NAN, 2.0f};
  CHECK(isnan(qs_amax((qs_src){nanrow, QS_DTYPE_F32}, 3)));
  CHECK(qs_amax((qs_src){x, QS_DTYPE_F32}, C) == qs_amax((qs_src){xb, QS_DTYPE_BF16}, C));
}

/* Tensors large enough to be split across threads give the same bits as the
 * per-element rules applied in one sequential pass. */
static void large_tensors(void) {
  enum { R = 4, C = 65536 + 128, N = R * C };
  float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
  for (int i = 0; i < N; i++) x[i] = qs_round_bf16(sinf((float)i * 0.001f) * (1.0f + (float)(i % 977)));
  x[N / 3] = -2000.0f; /* the tensor max sits in the middle of a chunk */
  qs_error err;
  float amax = 0;
  for (int i = 0; i < N; i++) amax = fmaxf(amax, fabsf(x[i]));
  CHECK(qs_amax((qs_src){x, QS_DTYPE_F32}, N) == amax);
  const char *fmts[] = {"fp8", "int8", "int4", "mxfp4", "nvfp4"};
  for (int f = 0; f < 5; f++) {
    const qs_qformat *fmt = qs_qformat_find(fmts[f]);
    CHECK(qs_fake_quant(fmt, QS_ROLE_ACT, (qs_src){x, QS_DTYPE_F32}, (qs_dst){y, QS_DTYPE_F32}, R, C, NULL, NULL, &err));
    int bad = 0;
    for (int b = 0; b < N; b += fmt->block ? fmt->block : N) {
      int len = fmt->block ? fmt->block : N;
      float bmax = 0;
      for (int i = b; i < b + len; i++) bmax = fmaxf(bmax, fabsf(x[i]));
      for (int i = b; i < b + len; i++) {
        float want = fmt->kind == QS_QK_FP8     ? qs_fq_fp8(x[i], qs_fp8_scale_for(amax))
                     : fmt->kind == QS_QK_INT   ? qs_fq_int(x[i], qs_int_scale_for(amax, fmt->bits))
                     : fmt->kind == QS_QK_MXFP4 ? qs_fq_mxfp4(x[i], qs_mx_exponent(bmax, QS_MX_NV_CEIL))
                                                : qs_fq_nvfp4(x[i], qs_nvfp4_block_scale(bmax, qs_nvfp4_global_scale(amax)));
        bad += y[i] != want;
      }
    }
    CHECK_INT(bad, 0);
  }
  free(x);
  free(y);
}

int main(void) {
  large_tensors();
  registry();
  pairs();
  pair_errors();
  dispatch();
  return check_summary("test_format");
}
