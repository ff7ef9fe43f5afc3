// Swapping two dims of a tensor of 4-byte elements (float32, int32, uint32), as a blocked copy.
//
// Any swap of dims a < b of an N-D tensor is, after reshapes that cost nothing, the swap of
// dims 1 and 3 of x [A, P, M, Q, C] (A: the dims before a, P = dim a, M: the dims between,
// Q = dim b, C: the dims after b) into y [A, Q, M, P, C]:
//
//   y[a, q, m, p, c] = x[a, p, m, q, c]
//
// With C >= kRowMin (the attention layouts [B, L, H, D] <-> [B, H, L, D]: rows of D) every
// output block y[a, q, m, :, :] is P rows of C contiguous elements copied with memcpy. With a
// short C (a swap involving the last dim) the P x Q planes are copied in square tiles so both
// the reads and the writes stay within a few cache lines. MindSpore's CPU Transpose steps a
// scalar index per element instead.
//
// The swap is its own inverse: the backward is the same kernel on dy [A, Q, M, P, C].
// MindSpore AOT custom-op ABI: params holds the input then the output. Work is split over the
// pool's threads (parallel.h) above kParallelMin elements.
#include <cstdint>
#include <cstring>

#include "parallel.h"

namespace {

constexpr int64_t kParallelMin = 1 << 18;  // elements per call before waking a second thread pays
constexpr int64_t kRowMin = 4;             // C at least this: memcpy rows of C
constexpr int64_t kTile = 16;              // P x Q tile edge of the short-row path

using Word = uint32_t;

bool is_four_bytes(const char* dtype) {
  return std::strcmp(dtype, "float32") == 0 || std::strcmp(dtype, "int32") == 0 ||
         std::strcmp(dtype, "uint32") == 0;
}

struct Dims {
  int64_t a, p, m, q, c;
};

// Rows: for each output block (a, q, m), P rows of C elements.
void copy_rows(const Dims& d, const Word* x, Word* y) {
  const int64_t blocks = d.a * d.q * d.m, per_block = d.p * d.c;
  const int64_t min_blocks = kParallelMin / (per_block > 0 ? per_block : 1);
  const size_t row_bytes = static_cast<size_t>(d.c) * sizeof(Word);
  const int64_t x_row_stride = d.m * d.q * d.c;  // x: from p to p + 1
  msmm::parallel_for(blocks, min_blocks > 2 ? min_blocks : 2, [=](int, int64_t begin, int64_t end) {
    int64_t a = begin / (d.q * d.m), q = (begin / d.m) % d.q, m = begin % d.m;
    for (int64_t block = begin; block < end; ++block) {
      const Word* src = x + ((a * d.p * d.m + m) * d.q + q) * d.c;
      Word* dst = y + block * per_block;
      for (int64_t p = 0; p < d.p; ++p) std::memcpy(dst + p * d.c, src + p * x_row_stride, row_bytes);
      if (++m == d.m) {
        m = 0;
        if (++q == d.q) q = 0, ++a;
      }
    }
  });
}

// Short rows: each plane (a, m) is a P x Q matrix of C-element items, transposed in tiles.
template <int64_t kC>
void copy_tiles(const Dims& d, const Word* x, Word* y) {
  const int64_t c = kC > 0 ? kC : d.c;
  const int64_t tiles_p = (d.p + kTile - 1) / kTile, tiles_q = (d.q + kTile - 1) / kTile;
  const int64_t tiles = d.a * d.m * tiles_p * tiles_q;
  const int64_t min_tiles = kParallelMin / (kTile * kTile * c);
  msmm::parallel_for(tiles, min_tiles > 2 ? min_tiles : 2, [=](int, int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t tq = tile % tiles_q, tp = (tile / tiles_q) % tiles_p, plane = tile / (tiles_q * tiles_p);
      const int64_t a = plane / d.m, m = plane % d.m;
      const int64_t p0 = tp * kTile, q0 = tq * kTile;
      const int64_t p1 = p0 + kTile < d.p ? p0 + kTile : d.p, q1 = q0 + kTile < d.q ? q0 + kTile : d.q;
      const Word* xs = x + a * d.p * d.m * d.q * c + m * d.q * c;  // x[a, 0, m, 0, 0]
      Word* ys = y + a * d.q * d.m * d.p * c + m * d.p * c;        // y[a, 0, m, 0, 0]
      const int64_t x_p = d.m * d.q * c, y_q = d.m * d.p * c;
      for (int64_t q = q0; q < q1; ++q)
        for (int64_t p = p0; p < p1; ++p)
          for (int64_t i = 0; i < c; ++i) ys[q * y_q + p * c + i] = xs[p * x_p + q * c + i];
    }
  });
}

void swap_dims(const Dims& d, const Word* x, Word* y) {
  if (d.a * d.p * d.m * d.q * d.c == 0) return;
  if (d.c >= kRowMin)
    copy_rows(d, x, y);
  else if (d.c == 1)
    copy_tiles<1>(d, x, y);
  else
    copy_tiles<0>(d, x, y);
}

// input x [A, P, M, Q, C], output y [A, Q, M, P, C], both of one 4-byte dtype.
int swap_dims_abi(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (nparam != 2 || ndims[0] != 5 || ndims[1] != 5) return 1;
  if (!is_four_bytes(dtypes[0]) || std::strcmp(dtypes[0], dtypes[1]) != 0) return 1;
  const int64_t* s = shapes[0];
  const int64_t* o = shapes[1];
  if (o[0] != s[0] || o[1] != s[3] || o[2] != s[2] || o[3] != s[1] || o[4] != s[4]) return 1;
  swap_dims(Dims{s[0], s[1], s[2], s[3], s[4]}, static_cast<const Word*>(params[0]), static_cast<Word*>(params[1]));
  return 0;
}

}  // namespace

extern "C" {
// Forward and backward have their own entry points (two Custom ops of one graph must not share one).
int SwapDims(int n, void** p, int* nd, int64_t** s, const char** t, void*, void*) { return swap_dims_abi(n, p, nd, s, t); }
int SwapDimsGrad(int n, void** p, int* nd, int64_t** s, const char** t, void*, void*) {
  return swap_dims_abi(n, p, nd, s, t);
}
}
