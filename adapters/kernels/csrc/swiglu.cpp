// SwiGLU's gate and up projections for a float32 x with few rows (decoding: one token per
// sequence) in one call: y = silu(x Wg^T) * (x Wu^T), W [F, K] row-major as torch stores a
// linear weight. The two GEMVs are gemv.h's (as gemv.cpp's linear), silu * up is
// activation.cpp's SiluMul formula (a * sigmoid(a) * b with the same exp): the values of the
// three kernels it replaces.
//
// MindSpore AOT custom-op ABI: params holds the inputs then the outputs.
#include <cstdint>
#include <cstring>
#include <vector>

#include "gemv.h"
#include "vmath.h"

namespace {

constexpr int64_t kMaxRows = 8;  // the Python side sends only calls with at most this many rows

#pragma omp declare simd notinbranch
inline float sigmoid(float x) { return 1.f / (1.f + msmm::exp_poly(-x)); }

}  // namespace

extern "C" {

// x [..., K], wg [F, K], wu [F, K] -> y [..., F]
int SwiGLULinear(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                 void* extra) {
  if (nparam != 4 || ndims[1] != 2 || ndims[2] != 2 || ndims[0] < 1) return 1;
  for (int i = 0; i < 3; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return 1;
  const int64_t k = shapes[0][ndims[0] - 1], f = shapes[1][0];
  if (shapes[1][1] != k || shapes[2][0] != f || shapes[2][1] != k) return 1;
  int64_t rows = 1;
  for (int i = 0; i + 1 < ndims[0]; ++i) rows *= shapes[0][i];
  if (rows > kMaxRows) return 1;
  const float* x = static_cast<const float*>(params[0]);
  std::vector<float> up(rows * f);
  float* y = static_cast<float*>(params[3]);
  msmm::gemv(x, static_cast<const float*>(params[1]), nullptr, y, rows, f, k);  // the gate, into y
  msmm::gemv(x, static_cast<const float*>(params[2]), nullptr, up.data(), rows, f, k);
  const float* b = up.data();
  const int64_t n = rows * f;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] * sigmoid(y[i]) * b[i];
  return 0;
}

}  // extern "C"
