// Optimizer kernels over many fp32 tensors at once (msmm.train):
//
// SumSquares(scale[1], t_1, ..., t_n) -> out[1] = scale^2 * sum_k sum(t_k^2): the squared global
// gradient norm in one kernel instead of a concat of every gradient, a multiply and a reduce.
// Each tensor is summed in float lanes over blocks of kBlock elements, the blocks in double.
//
// AdamW(...): one AdamW update of every parameter, in place (below).
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "vmath.h"

namespace {

constexpr int64_t kBlock = 4096;
constexpr int64_t kParallelMin = 1 << 18;  // elements below which one thread does it all

using msmm::numel;

struct Block {
  const float* data;
  int64_t size;
};

}  // namespace

extern "C" int SumSquares(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                          void* stream, void* extra) {
  const int inputs = nparam - 1;
  const float scale = static_cast<const float*>(params[0])[0];
  std::vector<Block> blocks;
  int64_t total = 0;
  for (int k = 1; k < inputs; ++k) {
    const float* x = static_cast<const float*>(params[k]);
    const int64_t n = numel(ndims[k], shapes[k]);
    total += n;
    for (int64_t start = 0; start < n; start += kBlock)
      blocks.push_back({x + start, n - start < kBlock ? n - start : kBlock});
  }
  double sum = 0.0;
  const int64_t count = static_cast<int64_t>(blocks.size());
  const int threads = total < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for schedule(static) reduction(+ : sum) num_threads(threads)
  for (int64_t b = 0; b < count; ++b) sum += msmm::sum_squares(blocks[b].data, blocks[b].size);
  static_cast<float*>(params[nparam - 1])[0] = static_cast<float>(sum * scale * scale);
  return 0;
}

// AdamW(hyper[5] = lr, beta1, beta2, eps, coef; decay[N]; p_1, m_1, v_1, g_1, ..., p_N, m_N, v_N, g_N) -> done[1]
// updates the parameters p_k and moments m_k, v_k IN PLACE (MindSpore's AdamWeightDecay
// arithmetic, gradient g_k * coef, weight decay decay[k]) and writes 0 to done, which the
// caller makes the graph depend on. In place is safe where msmm.train calls it: the kernel takes
// every gradient (so it runs after the backward) and nothing in its graph reads the parameters
// after it.
extern "C" int AdamW(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                     void* extra) {
  const float* hyper = static_cast<const float*>(params[0]);
  const float* decay = static_cast<const float*>(params[1]);
  const float lr = hyper[0], beta1 = hyper[1], beta2 = hyper[2], eps = hyper[3], coef = hyper[4];
  struct Chunk {
    float *p, *m, *v;
    const float* g;
    int64_t size;
    float decay;
  };
  std::vector<Chunk> chunks;
  int64_t total = 0;
  for (int k = 0, base = 2; base + 4 < nparam; ++k, base += 4) {
    const int64_t n = numel(ndims[base], shapes[base]);
    total += n;
    for (int64_t start = 0; start < n; start += kBlock)
      chunks.push_back({static_cast<float*>(params[base]) + start, static_cast<float*>(params[base + 1]) + start,
                        static_cast<float*>(params[base + 2]) + start,
                        static_cast<const float*>(params[base + 3]) + start, n - start < kBlock ? n - start : kBlock,
                        decay[k]});
  }
  const int64_t count = static_cast<int64_t>(chunks.size());
  const int threads = total < kParallelMin ? 1 : omp_get_max_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t c = 0; c < count; ++c) {
    const Chunk ch = chunks[c];
#pragma omp simd
    for (int64_t i = 0; i < ch.size; ++i) {
      const float g = ch.g[i] * coef;
      const float m = ch.m[i] + (g - ch.m[i]) * (1.f - beta1);
      const float v = ch.v[i] + (g * g - ch.v[i]) * (1.f - beta2);
      ch.m[i] = m;
      ch.v[i] = v;
      ch.p[i] -= lr * (m / (__builtin_sqrtf(v) + eps) + ch.decay * ch.p[i]);
    }
  }
  static_cast<float*>(params[nparam - 1])[0] = 0.f;
  return 0;
}
