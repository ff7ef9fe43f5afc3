// Optimizer kernels over many fp32 tensors at once (msmm.train):
//
// SumSquares(scale[1], t_1, ..., t_n) -> out[1] = scale^2 * sum_k sum(t_k^2): the squared global
// gradient norm in one kernel instead of a concat of every gradient, a multiply and a reduce.
// Each tensor is summed in float lanes over blocks of kBlock elements, the blocks in double.
#include <omp.h>

#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kBlock = 4096;
constexpr int64_t kParallelMin = 1 << 18;  // elements below which one thread does it all

int64_t numel(int ndim, const int64_t* shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

inline float block_sum_squares(const float* x, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

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
  for (int64_t b = 0; b < count; ++b) sum += block_sum_squares(blocks[b].data, blocks[b].size);
  static_cast<float*>(params[nparam - 1])[0] = static_cast<float>(sum * scale * scale);
  return 0;
}
