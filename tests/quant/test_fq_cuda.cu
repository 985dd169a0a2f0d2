/* The per-element rules of quant/fq.h compiled as device code give the same
 * bits as on the host, for every bf16 input and every format, at amax values
 * that exercise scale 1, the worked examples, tiny/huge amax and the
 * inverse-scale rounding case. Skipped (77) without a GPU. */
#include <cstdint>
#include <cstdio>
#include <vector>

#include "check.h"
#include "quant/fq.h"

enum { NFORMATS = 6, NPATTERNS = 65536 };

__host__ __device__ static float fake_quant(int format, float x, float p) {
  switch (format) {
  case 0: return qs_fq_fp8(x, qs_fp8_scale_for(p));
  case 1: return qs_fq_int(x, qs_int_scale_for(p, 8));
  case 2: return qs_fq_int(x, qs_int_scale_for(p, 4));
  case 3: return qs_fq_mxfp4(x, qs_mx_exponent(p, QS_MX_NV_CEIL));
  case 4: return qs_fq_mxfp4(x, qs_mx_exponent(p, QS_MX_OCP_FLOOR));
  default: return qs_fq_nvfp4(x, qs_nvfp4_block_scale(p, qs_nvfp4_global_scale(p * 3.0f)));
  }
}

__global__ static void all_patterns(int format, float p, uint32_t *out) {
  int h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h < NPATTERNS) out[h] = qs_fq_bits(fake_quant(format, qs_fq_from_bits((uint32_t)h << 16), p));
}

static bool is_nan_bits(uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    printf("test_fq_cuda: no CUDA device, skipped\n");
    return 77;
  }
  const float params[] = {448.f, 3.f, 1.f, 507.81817626953125f, 1e-3f, 0x1p-25f,
                          12345.f, 7.f, 0.3f, 2.5e38f, 0.f};
  uint32_t *dev = nullptr;
  CHECK(cudaMalloc(&dev, NPATTERNS * sizeof *dev) == cudaSuccess);
  std::vector<uint32_t> got(NPATTERNS);
  for (int format = 0; format < NFORMATS; format++) {
    for (float p : params) {
      all_patterns<<<NPATTERNS / 256, 256>>>(format, p, dev);
      CHECK(cudaMemcpy(got.data(), dev, NPATTERNS * sizeof *dev, cudaMemcpyDeviceToHost) == cudaSuccess);
      int bad = 0;
      for (uint32_t h = 0; h < NPATTERNS; h++) {
        uint32_t want = qs_fq_bits(fake_quant(format, qs_fq_from_bits(h << 16), p));
        if (got[h] != want && !(is_nan_bits(got[h]) && is_nan_bits(want)) && bad++ == 0)
          fprintf(stderr, "format %d amax %g input %04x: host %08x device %08x\n", format, p, h, want,
                  got[h]);
      }
      CHECK_INT(bad, 0);
    }
  }
  cudaFree(dev);
  return check_summary("test_fq_cuda");
}
