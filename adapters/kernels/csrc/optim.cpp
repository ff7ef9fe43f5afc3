// Optimizer kernels over many fp32 tensors at once (msmm.train):
//
// SumSquares(scale[1], t_1, ..., t_n) -> out[1] = scale^2 * sum_k sum(t_k^2): the squared global
// gradient norm in one kernel instead of a concat of every gradient, a multiply and a reduce.
// Each tensor is summed in float lanes over blocks of kBlock elements, the blocks in double.
//
// AdamW(...): one AdamW update of every parameter, in place (below).
// AdamWStep(...): a whole single-micro-batch step: norm, finite check, clip factor and AdamW.
#include <omp.h>

#include <algorithm>
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

namespace {

struct Chunk {
  float *p, *m, *v;
  const float* g;
  int64_t size;
  float decay;
};

// The (p, m, v, g) quadruples params[first], params[first + 1], ... (until the output) in
// chunks of kBlock elements; decay[k] is the k-th parameter's weight decay factor.
std::vector<Chunk> chunks_of(int nparam, void** params, int* ndims, int64_t** shapes, int first, const float* decay,
                             int64_t* total) {
  std::vector<Chunk> chunks;
  *total = 0;
  for (int k = 0, base = first; base + 4 < nparam; ++k, base += 4) {
    const int64_t n = numel(ndims[base], shapes[base]);
    *total += n;
    for (int64_t start = 0; start < n; start += kBlock)
      chunks.push_back({static_cast<float*>(params[base]) + start, static_cast<float*>(params[base + 1]) + start,
                        static_cast<float*>(params[base + 2]) + start,
                        static_cast<const float*>(params[base + 3]) + start, n - start < kBlock ? n - start : kBlock,
                        decay[k]});
  }
  return chunks;
}

int threads_for(int64_t total) { return total < kParallelMin ? 1 : omp_get_max_threads(); }

// MindSpore's AdamWeightDecay arithmetic per element, gradient g * coef, weight decay
// chunk.decay * decay_scale.
void adamw_update(const std::vector<Chunk>& chunks, int64_t total, float lr, float beta1, float beta2, float eps,
                  float coef, float decay_scale) {
  const int64_t count = static_cast<int64_t>(chunks.size());
#pragma omp parallel for schedule(static) num_threads(threads_for(total))
  for (int64_t c = 0; c < count; ++c) {
    const Chunk ch = chunks[c];
    const float decay = ch.decay * decay_scale;
#pragma omp simd
    for (int64_t i = 0; i < ch.size; ++i) {
      const float g = ch.g[i] * coef;
      const float m = ch.m[i] + (g - ch.m[i]) * (1.f - beta1);
      const float v = ch.v[i] + (g * g - ch.v[i]) * (1.f - beta2);
      ch.m[i] = m;
      ch.v[i] = v;
      ch.p[i] -= lr * (m / (__builtin_sqrtf(v) + eps) + decay * ch.p[i]);
    }
  }
}

}  // namespace

// AdamW(hyper[5] = lr, beta1, beta2, eps, coef; decay[N]; p_1, m_1, v_1, g_1, ..., p_N, m_N, v_N, g_N) -> done[1]
// updates the parameters p_k and moments m_k, v_k IN PLACE (MindSpore's AdamWeightDecay
// arithmetic, gradient g_k * coef, weight decay decay[k]) and writes 0 to done, which the
// caller makes the graph depend on. In place is safe where msmm.train calls it: the kernel takes
// every gradient (so it runs after the backward) and nothing in its graph reads the parameters
// after it.
extern "C" int AdamW(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                     void* extra) {
  const float* hyper = static_cast<const float*>(params[0]);
  int64_t total = 0;
  const std::vector<Chunk> chunks =
      chunks_of(nparam, params, ndims, shapes, 2, static_cast<const float*>(params[1]), &total);
  adamw_update(chunks, total, hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], 1.f);
  static_cast<float*>(params[nparam - 1])[0] = 0.f;
  return 0;
}

// AdamWStep(constants[5] = beta1, beta2, eps, weight_decay, clip; lr[]; numerator[]; denominator[];
//           step[] int32; decay[N] (1: decayed, 0: not); p_1, m_1, v_1, g_1, ..., g_N) -> out[2]
// is a whole optimizer step of one micro-batch's gradients g_k of the loss numerator / denominator:
//   scale = 1 / max(denominator, 1e-12); norm = scale * ||g||  (out[0])
//   finite = norm and numerator * scale are finite         (out[1]: 1 or 0)
// and only if finite: step += 1 and one AdamW update IN PLACE (like AdamW above) with
// gradient g_k * scale * min(1, clip / (norm + 1e-6)) (clip <= 0: no clipping) and
// torch.optim.AdamW's bias corrections folded into lr, eps and the weight decay. No control
// flow, host round trip or separate norm graph in the caller's graph; in place is safe for the
// reason given at AdamW.
extern "C" int AdamWStep(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                         void* extra) {
  const float* constants = static_cast<const float*>(params[0]);
  const float beta1 = constants[0], beta2 = constants[1], eps = constants[2], weight_decay = constants[3],
              clip = constants[4];
  const float lr = static_cast<const float*>(params[1])[0];
  const float numerator = static_cast<const float*>(params[2])[0];
  const float denominator = static_cast<const float*>(params[3])[0];
  int32_t* step = static_cast<int32_t*>(params[4]);
  int64_t total = 0;
  const std::vector<Chunk> chunks =
      chunks_of(nparam, params, ndims, shapes, 6, static_cast<const float*>(params[5]), &total);
  const int64_t count = static_cast<int64_t>(chunks.size());
  double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum) num_threads(threads_for(total))
  for (int64_t c = 0; c < count; ++c) sum += msmm::sum_squares(chunks[c].g, chunks[c].size);
  const float scale = 1.f / (denominator > 1e-12f ? denominator : 1e-12f);
  const float norm = std::sqrt(static_cast<float>(sum * scale * scale));
  const bool finite = std::isfinite(norm) && std::isfinite(numerator * scale);
  float* out = static_cast<float*>(params[nparam - 1]);
  out[0] = norm;
  out[1] = finite ? 1.f : 0.f;
  if (!finite) return 0;
  *step += 1;
  const float t = static_cast<float>(*step);
  const float bias_correction1 = 1.f - std::pow(beta1, t);
  const float bias_correction2_sqrt = std::sqrt(1.f - std::pow(beta2, t));
  const float coef = clip > 0.f ? scale * std::min(clip / (norm + 1e-6f), 1.f) : scale;
  adamw_update(chunks, total, lr * bias_correction2_sqrt / bias_correction1, beta1, beta2,
               eps * bias_correction2_sqrt, coef, weight_decay * bias_correction1 / bias_correction2_sqrt);
  return 0;
}
