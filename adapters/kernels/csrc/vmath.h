// Vectorisable float math shared by the fused kernels (std::exp stays scalar under -fPIC).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace msmm {

// exp(x) to ~1 ulp (Cephes expf): x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6
// polynomial, 2^n put into the exponent bits. Above ln(FLT_MAX) it is inf and below the
// normal range 0, as expf rounds them (a clamped finite value made sigmoid(-inf) ~3e-39, so
// quick_gelu(-3e38) gave -1.25 and silu(-3e38) * -3e38 gave inf instead of torch's 0 and NaN).
#pragma omp declare simd notinbranch
inline float exp_poly(float x) {
  const float x0 = x;
  x = x < -87.33654f ? -87.33654f : x;
  x = x > 88.3762626647949f ? 88.3762626647949f : x;
  const float shifter = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float y = p * scale;  // n in [-126, 127] after the clamp
  return x0 > 88.72283935546875f ? INFINITY : (x0 < -87.33654f ? 0.f : y);
}

// Elements of a tensor of rank `ndim` and extents `shape` (the AOT ABI's ndims / shapes).
inline int64_t numel(int ndim, const int64_t* shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// sum of x[i]^2 over [0, n), vectorised.
inline float sum_squares(const float* x, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

}  // namespace msmm
