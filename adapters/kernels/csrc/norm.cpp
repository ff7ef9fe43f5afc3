// RMSNorm and LayerNorm over the last dim of a float32 tensor, forward and backward.
//
// MindSpore AOT custom-op ABI: params holds the inputs then the outputs; eps arrives as a
// one-element float32 tensor. Rows are independent: they are split statically over the
// pool's threads (parallel.h) when a call has enough work to pay for waking them.
// The backward recomputes the row statistics from x (one more read of a row that is in
// cache anyway) instead of saving them from the forward.
#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "vmath.h"

namespace {

// Elements per call before a second thread pays for waking it (helpers sleep between calls):
// at [516, 256] a split made both norms slower (23 -> 38 us forward).
constexpr int64_t kParallelMin = 1 << 18;

struct Rows {
  int64_t count;  // product of all dims but the last
  int64_t width;  // the normalized (last) dim
};

Rows rows_of(int ndim, const int64_t* shape) {
  Rows rows{1, ndim > 0 ? shape[ndim - 1] : 1};
  for (int i = 0; i + 1 < ndim; ++i) rows.count *= shape[i];
  return rows;
}

// Rows per call below which one thread does them all.
int64_t min_split(const Rows& rows) {
  const int64_t r = kParallelMin / (rows.width > 0 ? rows.width : 1);
  return r > 2 ? r : 2;
}

inline float sum(const float* x, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i];
  return s;
}

using msmm::sum_squares;

inline float centred_sum_squares(const float* x, float mean, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    s += d * d;
  }
  return s;
}

// Per-thread accumulators of the parameter gradients, summed into `out` at the end.
class Partials {
 public:
  Partials(int workers, int64_t width, int count) : width_(width), count_(count),
                                                    data_(static_cast<size_t>(workers) * width * count, 0.f) {}
  float* of(int thread, int which) { return data_.data() + (static_cast<int64_t>(thread) * count_ + which) * width_; }
  void reduce_into(int workers, int which, float* out) {
    for (int64_t i = 0; i < width_; ++i) out[i] = 0.f;
    for (int t = 0; t < workers; ++t) {
      const float* p = of(t, which);
#pragma omp simd
      for (int64_t i = 0; i < width_; ++i) out[i] += p[i];
    }
  }

 private:
  int64_t width_;
  int count_;
  std::vector<float> data_;
};

// rms_norm(x, [weight], eps) -> y = x * rsqrt(mean(x^2) + eps) [* weight]
int rms_norm(bool weighted, void** params, int* ndims, int64_t** shapes) {
  const int nparam = weighted ? 4 : 3;
  const float* x = static_cast<const float*>(params[0]);
  const float* w = weighted ? static_cast<const float*>(params[1]) : nullptr;
  const float eps = *static_cast<const float*>(params[weighted ? 2 : 1]);
  float* y = static_cast<float*>(params[nparam - 1]);
  const Rows rows = rows_of(ndims[0], shapes[0]);
  const int64_t h = rows.width;
  msmm::parallel_for(rows.count, min_split(rows), [=](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * h;
      float* yr = y + r * h;
      const float rstd = 1.f / std::sqrt(sum_squares(xr, h) / static_cast<float>(h) + eps);
      if (w != nullptr) {
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) yr[i] = (xr[i] * rstd) * w[i];
      } else {
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) yr[i] = xr[i] * rstd;
      }
    }
  });
  return 0;
}

// rms_norm_grad(x, [weight], eps, dy) -> dx, [dweight]
//   g = dy * w;  dx = rstd * (g - x * rstd^2 * mean(g * x));  dw = sum_rows(dy * x * rstd)
int rms_norm_grad(bool weighted, void** params, int* ndims, int64_t** shapes) {
  const float* x = static_cast<const float*>(params[0]);
  const float* w = weighted ? static_cast<const float*>(params[1]) : nullptr;
  const float eps = *static_cast<const float*>(params[weighted ? 2 : 1]);
  const float* dy = static_cast<const float*>(params[weighted ? 3 : 2]);
  float* dx = static_cast<float*>(params[weighted ? 4 : 3]);
  float* dw = weighted ? static_cast<float*>(params[5]) : nullptr;
  const Rows rows = rows_of(ndims[0], shapes[0]);
  const int64_t h = rows.width;
  const int workers = msmm::parallel_workers(rows.count, min_split(rows));
  Partials partials(weighted ? workers : 0, h, 1);
  Partials* sums = &partials;  // captured by value: the loops see no aliasing through a closure
  msmm::parallel_for(rows.count, min_split(rows), [=](int worker, int64_t begin, int64_t end) {
    float* acc = weighted ? sums->of(worker, 0) : nullptr;
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * h;
      const float* dyr = dy + r * h;
      float* dxr = dx + r * h;
      const float rstd = 1.f / std::sqrt(sum_squares(xr, h) / static_cast<float>(h) + eps);
      float dot = 0.f;
      if (w != nullptr) {
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < h; ++i) dot += dyr[i] * w[i] * xr[i];
      } else {
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < h; ++i) dot += dyr[i] * xr[i];
      }
      const float c = rstd * rstd * rstd * dot / static_cast<float>(h);
      if (w != nullptr) {
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) {
          dxr[i] = rstd * dyr[i] * w[i] - c * xr[i];
          acc[i] += dyr[i] * (xr[i] * rstd);
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < h; ++i) dxr[i] = rstd * dyr[i] - c * xr[i];
      }
    }
  });
  if (weighted) partials.reduce_into(workers, 0, dw);
  return 0;
}

}  // namespace

// One entry point per signature: graph mode mixes up Custom ops of one function name that
// take different numbers of inputs.
extern "C" int RmsNorm(int, void** params, int* ndims, int64_t** shapes, const char**, void*, void*) {
  return rms_norm(true, params, ndims, shapes);
}

extern "C" int RmsNormUnweighted(int, void** params, int* ndims, int64_t** shapes, const char**, void*, void*) {
  return rms_norm(false, params, ndims, shapes);
}

extern "C" int RmsNormGrad(int, void** params, int* ndims, int64_t** shapes, const char**, void*, void*) {
  return rms_norm_grad(true, params, ndims, shapes);
}

extern "C" int RmsNormUnweightedGrad(int, void** params, int* ndims, int64_t** shapes, const char**, void*,
                                     void*) {
  return rms_norm_grad(false, params, ndims, shapes);
}

namespace {

void layer_norm_row(const float* x, const float* w, const float* b, float eps, int64_t h, float* y) {
  const float inv_h = 1.f / static_cast<float>(h);
  const float mean = sum(x, h) * inv_h;
  const float rstd = 1.f / std::sqrt(centred_sum_squares(x, mean, h) * inv_h + eps);
#pragma omp simd
  for (int64_t i = 0; i < h; ++i) y[i] = (x[i] - mean) * rstd * w[i] + b[i];
}

}  // namespace

// LayerNorm(x, weight, bias, eps) -> y = (x - mean) * rsqrt(var + eps) * weight + bias
extern "C" int LayerNorm(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                         void* stream, void* extra) {
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  const float* b = static_cast<const float*>(params[2]);
  const float eps = *static_cast<const float*>(params[3]);
  float* y = static_cast<float*>(params[4]);
  const Rows rows = rows_of(ndims[0], shapes[0]);
  const int64_t h = rows.width;
  msmm::parallel_for(rows.count, min_split(rows), [=](int, int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) layer_norm_row(x + r * h, w, b, eps, h, y + r * h);
  });
  return 0;
}

// LayerNormGrad(x, weight, eps, dy) -> dx, dweight, dbias
//   xhat = (x - mean) * rstd;  g = dy * w;  dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
extern "C" int LayerNormGrad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                             void* stream, void* extra) {
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  const float eps = *static_cast<const float*>(params[2]);
  const float* dy = static_cast<const float*>(params[3]);
  float* dx = static_cast<float*>(params[4]);
  float* dw = static_cast<float*>(params[5]);
  float* db = static_cast<float*>(params[6]);
  const Rows rows = rows_of(ndims[0], shapes[0]);
  const int64_t h = rows.width;
  const float inv_h = 1.f / static_cast<float>(h);
  const int workers = msmm::parallel_workers(rows.count, min_split(rows));
  Partials partials(workers, h, 2);
  Partials* sums = &partials;
  msmm::parallel_for(rows.count, min_split(rows), [=](int worker, int64_t begin, int64_t end) {
    float* acc_w = sums->of(worker, 0);
    float* acc_b = sums->of(worker, 1);
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * h;
      const float* dyr = dy + r * h;
      float* dxr = dx + r * h;
      const float mean = sum(xr, h) * inv_h;
      const float rstd = 1.f / std::sqrt(centred_sum_squares(xr, mean, h) * inv_h + eps);
      float sum_g = 0.f, sum_gx = 0.f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t i = 0; i < h; ++i) {
        const float g = dyr[i] * w[i];
        sum_g += g;
        sum_gx += g * ((xr[i] - mean) * rstd);
      }
      const float mean_g = sum_g * inv_h, mean_gx = sum_gx * inv_h;
#pragma omp simd
      for (int64_t i = 0; i < h; ++i) {
        const float xhat = (xr[i] - mean) * rstd;
        dxr[i] = rstd * (dyr[i] * w[i] - mean_g - xhat * mean_gx);
        acc_w[i] += dyr[i] * xhat;
        acc_b[i] += dyr[i];
      }
    }
  });
  partials.reduce_into(workers, 0, dw);
  partials.reduce_into(workers, 1, db);
  return 0;
}
