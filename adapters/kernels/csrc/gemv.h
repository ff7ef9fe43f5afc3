// The float32 GEMV of the fused kernels (gemv.cpp's linear, cache.cpp's decode K/V projection):
// y = x W^T (+ b) for few rows of x, W [N, K] row-major as torch stores a linear weight. Each
// output is a dot product of x's row with a contiguous row of W, so W streams through once per
// call, four rows at a time, with the (few) rows of x kept in L1.
#pragma once

#include <cstdint>

namespace msmm {

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// out[m, n] = sum_k x[m, k] w[n, k] (+ bias[n]), four rows of w per pass over x's rows.
inline void gemv(const float* x, const float* w, const float* bias, float* out, int64_t rows, int64_t n,
          int64_t k) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float* w0 = w + j * k;
    const float* w1 = w0 + k;
    const float* w2 = w1 + k;
    const float* w3 = w2 + k;
    for (int64_t m = 0; m < rows; ++m) {
      const float* xm = x + m * k;
      float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
      for (int64_t i = 0; i < k; ++i) {
        const float v = xm[i];
        s0 += v * w0[i];
        s1 += v * w1[i];
        s2 += v * w2[i];
        s3 += v * w3[i];
      }
      float* o = out + m * n + j;
      o[0] = s0 + (bias ? bias[j] : 0.f);
      o[1] = s1 + (bias ? bias[j + 1] : 0.f);
      o[2] = s2 + (bias ? bias[j + 2] : 0.f);
      o[3] = s3 + (bias ? bias[j + 3] : 0.f);
    }
  }
  for (; j < n; ++j)
    for (int64_t m = 0; m < rows; ++m) out[m * n + j] = dot(x + m * k, w + j * k, k) + (bias ? bias[j] : 0.f);
}

}  // namespace msmm
