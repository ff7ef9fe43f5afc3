// Rotary position embedding on float32, forward and backward, optionally fused with the
// move of the heads in front of the sequence ([B, L, H, D] -> [B, H, L, D]):
//
//   y = x * cos + rotate_half(x) * sin,  rotate_half(x) = [-x2, x1] (x = [x1, x2] halves of D)
//   dx = dy * cos - rotate_half(dy * sin)
//   dcos = sum(dy * x), dsin = sum(dy * rotate_half(x)) over heads (and batch if cos has one row)
//
// cos and sin are [Bc, L, D] with Bc 1 or B (per-position tables: 1D RoPE, M-RoPE, 2D ViT
// RoPE alike). The "HeadsFirst" functions read x [B, L, H, D] and write y [B, H, L, D] (and
// their gradients the other way round); the others keep x's [B, H, L, D].
//
// MindSpore AOT custom-op ABI: params holds the inputs then the outputs. Rows of D are split
// over the pool's threads (parallel.h) when a call has enough work to pay for waking them.
#include <cstdint>
#include <cstring>

#include "parallel.h"

namespace {

constexpr int64_t kParallelMin = 1 << 18;  // elements per call before waking a second thread pays (memory-bound: ~60 us)

struct Dims {
  int64_t batch, heads, length, dim, table_batch;
};

// x [B, H, L, D] (or [B, L, H, D] when heads_first, shape x_shape) and the tables [Bc, L, D]
// (inputs 1 and 2); the first ntensors tensors float32. False if they do not fit.
bool dims_of(const int64_t* x_shape, int* ndims, int64_t** shapes, const char** dtypes, int ntensors,
             bool heads_first, Dims* d) {
  for (int i = 0; i < ntensors; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  if (ndims[0] != 4 || ndims[1] != 3 || ndims[2] != 3) return false;
  const int64_t* x = x_shape;
  *d = Dims{x[0], heads_first ? x[2] : x[1], heads_first ? x[1] : x[2], x[3], shapes[1][0]};
  if (d->dim == 0 || d->dim % 2 || shapes[1][1] != d->length || shapes[1][2] != d->dim) return false;
  return d->table_batch == 1 || d->table_batch == d->batch;
}

// Offsets of row (b, h, l) in the [B, H, L, D] and x layouts and in the tables.
struct Row {
  int64_t head_major, x, table;
};

Row row_of(const Dims& d, bool heads_first, int64_t b, int64_t h, int64_t l) {
  const int64_t head_major = ((b * d.heads + h) * d.length + l) * d.dim;
  const int64_t x = heads_first ? ((b * d.length + l) * d.heads + h) * d.dim : head_major;
  const int64_t table = ((d.table_batch == 1 ? 0 : b) * d.length + l) * d.dim;
  return Row{head_major, x, table};
}

// Rows of D per call before splitting: kParallelMin elements, at least 2 rows.
int64_t min_split(const Dims& d) {
  const int64_t rows = kParallelMin / d.dim;
  return rows > 2 ? rows : 2;
}

// body(b, h, l) for every row of D, the rows split over the pool's threads. The indices are
// stepped, not divided out per row: a row is only ~20 cycles of work.
template <class Body>
void for_each_row(const Dims& d, Body body) {
  msmm::parallel_for(d.batch * d.heads * d.length, min_split(d), [=](int, int64_t begin, int64_t end) {
    int64_t b = begin / (d.heads * d.length), h = (begin / d.length) % d.heads, l = begin % d.length;
    for (int64_t row = begin; row < end; ++row) {
      body(b, h, l);
      if (++l == d.length) {
        l = 0;
        if (++h == d.heads) h = 0, ++b;
      }
    }
  });
}

void forward(const Dims& d, bool heads_first, const float* x, const float* cos, const float* sin, float* y) {
  const int64_t half = d.dim / 2;
  for_each_row(d, [=](int64_t b, int64_t h, int64_t l) {
    const Row r = row_of(d, heads_first, b, h, l);
    const float *xr = x + r.x, *c = cos + r.table, *s = sin + r.table;
    float* yr = y + r.head_major;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      yr[i] = xr[i] * c[i] - xr[i + half] * s[i];
      yr[i + half] = xr[i + half] * c[i + half] + xr[i] * s[i + half];
    }
  });
}

void backward(const Dims& d, bool heads_first, const float* dy, const float* cos, const float* sin, float* dx) {
  const int64_t half = d.dim / 2;
  for_each_row(d, [=](int64_t b, int64_t h, int64_t l) {
    const Row r = row_of(d, heads_first, b, h, l);
    const float *g = dy + r.head_major, *c = cos + r.table, *s = sin + r.table;
    float* dxr = dx + r.x;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      dxr[i] = g[i] * c[i] + g[i + half] * s[i + half];
      dxr[i + half] = g[i + half] * c[i + half] - g[i] * s[i];
    }
  });
}

// dcos, dsin [Bc, L, D]: each table row sums over the heads (and the batch when Bc = 1);
// threads split the table rows, so no two write the same one.
void table_grads(const Dims& d, bool heads_first, const float* x, const float* dy, float* dcos, float* dsin) {
  const int64_t half = d.dim / 2, batches = d.table_batch == 1 ? d.batch : 1;
  const int64_t per_row = batches * d.heads * d.dim;  // elements read per table row
  const int64_t rows_min = kParallelMin / per_row > 2 ? kParallelMin / per_row : 2;
  msmm::parallel_for(d.table_batch * d.length, rows_min, [=](int, int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t tb = row / d.length, l = row % d.length;
      float* dc = dcos + row * d.dim;
      float* ds = dsin + row * d.dim;
      for (int64_t i = 0; i < d.dim; ++i) dc[i] = ds[i] = 0.f;
      for (int64_t k = 0; k < batches; ++k)
        for (int64_t h = 0; h < d.heads; ++h) {
          const Row r = row_of(d, heads_first, tb + k, h, l);
          const float *xr = x + r.x, *g = dy + r.head_major;
#pragma omp simd
          for (int64_t i = 0; i < half; ++i) {
            dc[i] += g[i] * xr[i];
            dc[i + half] += g[i + half] * xr[i + half];
            ds[i] -= g[i] * xr[i + half];
            ds[i + half] += g[i + half] * xr[i];
          }
        }
    }
  });
}

template <bool heads_first>
int rotary(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  Dims d;
  if (nparam != 4 || !dims_of(shapes[0], ndims, shapes, dtypes, 3, heads_first, &d)) return 1;
  forward(d, heads_first, static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
          static_cast<const float*>(params[2]), static_cast<float*>(params[3]));
  return 0;
}

// inputs: dy [B, H, L, D], cos, sin; output dx in x's layout (whose shape gives the dims).
template <bool heads_first>
int rotary_grad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  Dims d;
  if (nparam != 4 || ndims[3] != 4 || !dims_of(shapes[3], ndims, shapes, dtypes, 3, heads_first, &d)) return 1;
  backward(d, heads_first, static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
           static_cast<const float*>(params[2]), static_cast<float*>(params[3]));
  return 0;
}

// inputs: x, cos, sin, dy; outputs dcos, dsin.
template <bool heads_first>
int rotary_table_grad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  Dims d;
  if (nparam != 6 || !dims_of(shapes[0], ndims, shapes, dtypes, 4, heads_first, &d)) return 1;
  table_grads(d, heads_first, static_cast<const float*>(params[0]), static_cast<const float*>(params[3]),
              static_cast<float*>(params[4]), static_cast<float*>(params[5]));
  return 0;
}

}  // namespace

extern "C" {
int Rotary(int n, void** p, int* nd, int64_t** s, const char** t, void*, void*) { return rotary<false>(n, p, nd, s, t); }
int RotaryHeadsFirst(int n, void** p, int* nd, int64_t** s, const char** t, void*, void*) {
  return rotary<true>(n, p, nd, s, t);
}
int RotaryGrad(int n, void** p, int* nd, int64_t** s, const char** t, void*, void*) {
  return rotary_grad<false>(n, p, nd, s, t);
}
int RotaryHeadsFirstGrad(int n, void** p, int* nd, int64_t** s, const char** t, void*, void*) {
  return rotary_grad<true>(n, p, nd, s, t);
}
int RotaryTableGrad(int n, void** p, int* nd, int64_t** s, const char** t, void*, void*) {
  return rotary_table_grad<false>(n, p, nd, s, t);
}
int RotaryHeadsFirstTableGrad(int n, void** p, int* nd, int64_t** s, const char** t, void*, void*) {
  return rotary_table_grad<true>(n, p, nd, s, t);
}
}
