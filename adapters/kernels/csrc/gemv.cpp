// y = x W^T (+ b) for a float32 x with few rows (decoding: one token per sequence), W [N, K]
// row-major as torch stores a linear weight. Each output is a dot product of x's row with a
// contiguous row of W, so W streams through once per call, four rows at a time, with the
// (few) rows of x kept in L1; no packing of W (MindSpore's MatMul packs its operands on every
// call, which at M = 1 reads and writes W twice more than the product needs).
//
// MindSpore AOT custom-op ABI: params holds the inputs then the outputs.
#include <cstdint>

#include "gemv.h"

namespace {

using msmm::gemv;

constexpr int64_t kMaxRows = 8;  // the Python side sends only calls with at most this many rows

int64_t rows_of(int ndim, const int64_t* shape) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < ndim; ++i) rows *= shape[i];
  return rows;
}

}  // namespace

extern "C" {

// x [..., K], w [N, K] -> out [..., N]
int Gemv(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
         void* extra) {
  const int64_t rows = rows_of(ndims[0], shapes[0]);
  if (rows > kMaxRows) return 1;
  gemv(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]), nullptr,
       static_cast<float*>(params[2]), rows, shapes[1][0], shapes[1][1]);
  return 0;
}

// x [..., K], w [N, K], bias [N] -> out [..., N]
int GemvBias(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
             void* extra) {
  const int64_t rows = rows_of(ndims[0], shapes[0]);
  if (rows > kMaxRows) return 1;
  gemv(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
       static_cast<const float*>(params[2]), static_cast<float*>(params[3]), rows, shapes[1][0], shapes[1][1]);
  return 0;
}

}  // extern "C"
