// Masked softmax of attention scores on float32, forward and backward:
//
//   MaskedSoftmax      y = softmax(x * scale + mask) over the last dim of x [B, G, R, S]
//   MaskedSoftmaxGrad  dx = (dy - sum(dy * y)) * y * scale
//   Attend / AttendKeep  o = softmax(q k^T * scale [+ keep-mask]) v for a few query rows
//                        (decoding): scores, softmax and the weighted sum of values per row
//                        in one pass, no [R, S] score tensor and no batched matmul calls
//
// The mask is optional and never materialised at x's size: a bool keep-mask (false = -inf)
// or an additive float mask [Bm, Gm, Lm, S] with each of Bm, Gm, Lm either 1 or x's dim
// (Lm may also be L when the R rows are n_rep groups of L queries: grouped-query attention
// with the query heads of a key/value group stacked along the rows, row r is query r % L).
// A causal band keeps key j of query i iff j <= i + offset. A row whose every key is masked
// gives zeros (torch's sdpa). params = [scale, L, causal, offset] as float32.
//
// MindSpore AOT custom-op ABI: params holds the inputs then the outputs. exp is polynomial
// so that the loops vectorise; rows are split over the pool's threads (parallel.h) when a
// call has enough work to pay for waking them.
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "parallel.h"
#include "vmath.h"

namespace {

constexpr int64_t kParallelMin = 1 << 17;  // elements per call before waking a second thread pays (~80 us of work)

// Rows per call before splitting: kParallelMin elements, at least 2 rows.
int64_t min_split(int64_t width) {
  const int64_t rows = kParallelMin / (width > 0 ? width : 1);
  return rows > 2 ? rows : 2;
}
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

enum class Mask { kNone, kKeep, kAdd };

struct Layout {
  int64_t batch, groups, rows, keys;  // x [B, G, R, S]
  int64_t mask_batch, mask_groups, mask_rows;  // mask [Bm, Gm, Lm, S]
  int64_t queries;  // L: row r is query r % L
  float scale;
  bool causal;
  int64_t offset;
};

// Scaled, masked scores of one row into y[0, limit); returns their max.
template <Mask kind>
float masked_scores(const float* x, const void* mask, float scale, int64_t limit, float* y) {
  float top = kNegInf;
  if constexpr (kind == Mask::kNone) {
#pragma omp simd reduction(max : top)
    for (int64_t j = 0; j < limit; ++j) {
      y[j] = x[j] * scale;
      top = y[j] > top ? y[j] : top;
    }
  } else if constexpr (kind == Mask::kKeep) {
    const uint8_t* keep = static_cast<const uint8_t*>(mask);
#pragma omp simd reduction(max : top)
    for (int64_t j = 0; j < limit; ++j) {
      y[j] = keep[j] ? x[j] * scale : kNegInf;
      top = y[j] > top ? y[j] : top;
    }
  } else {
    const float* add = static_cast<const float*>(mask);
#pragma omp simd reduction(max : top)
    for (int64_t j = 0; j < limit; ++j) {
      y[j] = x[j] * scale + add[j];
      top = y[j] > top ? y[j] : top;
    }
  }
  return top;
}

// Where row `row` of x [B, G, R, S] reads its mask, and how many keys it may see (causal).
template <Mask kind>
const void* row_mask(const Layout& s, int64_t row, const void* mask, int64_t* limit) {
  const int64_t r = row % s.rows, g = (row / s.rows) % s.groups, b = row / (s.rows * s.groups);
  const int64_t query = r % s.queries;
  *limit = s.keys;
  if (s.causal) {
    const int64_t last = query + s.offset + 1;
    *limit = last < 0 ? 0 : (last < s.keys ? last : s.keys);
  }
  if constexpr (kind == Mask::kNone) {
    return nullptr;
  } else {
    const size_t mask_item = kind == Mask::kAdd ? sizeof(float) : sizeof(uint8_t);
    const int64_t mb = s.mask_batch == 1 ? 0 : b, mg = s.mask_groups == 1 ? 0 : g;
    const int64_t mr = s.mask_rows == 1 ? 0 : query;
    const int64_t index = ((mb * s.mask_groups + mg) * s.mask_rows + mr) * s.keys;
    return static_cast<const char*>(mask) + index * mask_item;
  }
}

// y[0, keys) = the masked softmax of one row of raw scores xr (xr may be y), keys past
// `limit` (causal) zero.
template <Mask kind>
void softmax_span(const float* xr, const void* mask_row, float scale, int64_t limit, int64_t keys, float* yr) {
  const float top = masked_scores<kind>(xr, mask_row, scale, limit, yr);
  if (top == kNegInf) {  // fully masked: zeros, unless a kept score is NaN (the max skips NaN;
    bool nan = false;     // torch gives a NaN row, as for any NaN score)
    for (int64_t j = 0; j < limit; ++j) nan = nan || yr[j] != yr[j];
    if (!nan) limit = 0;
  }
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < limit; ++j) {
    const float e = yr[j] == kNegInf ? 0.f : msmm::exp_poly(yr[j] - top);
    yr[j] = e;
    sum += e;
  }
  const float inv = limit > 0 ? 1.f / sum : 0.f;
#pragma omp simd
  for (int64_t j = 0; j < limit; ++j) yr[j] *= inv;
  for (int64_t j = limit; j < keys; ++j) yr[j] = 0.f;
}

template <Mask kind>
void softmax_row(const Layout& s, int64_t row, const float* x, const void* mask, float* y) {
  int64_t limit;
  const void* mask_row = row_mask<kind>(s, row, mask, &limit);
  softmax_span<kind>(x + row * s.keys, mask_row, s.scale, limit, s.keys, y + row * s.keys);
}

// One row of attention: o_r = softmax(q_r k^T * scale + mask) v, q_r [D], k [S, D], v [S, Dv].
template <Mask kind>
void attend_row(const Layout& s, int64_t row, int64_t dim, int64_t vdim, const float* q, const float* k,
                const float* v, const void* mask, float* o, float* scores) {
  int64_t limit;
  const void* mask_row = row_mask<kind>(s, row, mask, &limit);
  const int64_t head = row / s.rows;  // b * G + g
  const float* qr = q + row * dim;
  const float* kh = k + head * s.keys * dim;
  const float* vh = v + head * s.keys * vdim;
  for (int64_t j = 0; j < limit; ++j) {
    const float* kj = kh + j * dim;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < dim; ++d) dot += qr[d] * kj[d];
    scores[j] = dot;
  }
  softmax_span<kind>(scores, mask_row, s.scale, limit, s.keys, scores);
  float* orow = o + row * vdim;
  for (int64_t d = 0; d < vdim; ++d) orow[d] = 0.f;
  for (int64_t j = 0; j < s.keys; ++j) {  // every key, as a matmul: 0 * NaN in v stays NaN
    const float p = scores[j];
    const float* vj = vh + j * vdim;
#pragma omp simd
    for (int64_t d = 0; d < vdim; ++d) orow[d] += p * vj[d];
  }
}

template <Mask kind>
void softmax_rows(const Layout& s, const float* x, const void* mask, float* y) {
  const Layout layout = s;
  msmm::parallel_for(s.batch * s.groups * s.rows, min_split(s.keys), [=](int, int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) softmax_row<kind>(layout, row, x, mask, y);
  });
}

bool is_float32(const char* dtype) { return std::strcmp(dtype, "float32") == 0; }

}  // namespace

namespace {

// inputs: x [B, G, R, S] float32, [mask [Bm, Gm, Lm, S] bool or float32], params [4]; output y.
int masked_softmax(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  const bool masked = nparam == 4;
  if ((nparam != 3 && !masked) || ndims[0] != 4 || !is_float32(dtypes[0])) return 1;
  const int64_t* xs = shapes[0];
  const float* p = static_cast<const float*>(params[masked ? 2 : 1]);
  Layout s{xs[0], xs[1], xs[2], xs[3], 1, 1, 1, static_cast<int64_t>(p[1]), p[0], p[2] != 0.f,
           static_cast<int64_t>(p[3])};
  if (s.queries < 1) return 1;
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[nparam - 1]);
  if (!masked) {
    softmax_rows<Mask::kNone>(s, x, nullptr, y);
    return 0;
  }
  const int64_t* ms = shapes[1];
  if (ndims[1] != 4 || ms[3] != s.keys) return 1;
  s.mask_batch = ms[0], s.mask_groups = ms[1], s.mask_rows = ms[2];
  if (std::strcmp(dtypes[1], "bool") == 0) {
    softmax_rows<Mask::kKeep>(s, x, params[1], y);
  } else if (is_float32(dtypes[1])) {
    softmax_rows<Mask::kAdd>(s, x, params[1], y);
  } else {
    return 1;
  }
  return 0;
}

}  // namespace

// One entry point per Custom op: MindSpore's graph mode mixes up Custom ops of one function
// name (a 2-input op's graph was called with 3 inputs).
extern "C" int MaskedSoftmax(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                             void* stream, void* extra) {
  return nparam == 3 ? masked_softmax(nparam, params, ndims, shapes, dtypes) : 1;
}

extern "C" int MaskedSoftmaxKeep(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                 void* stream, void* extra) {
  return nparam == 4 && std::strcmp(dtypes[1], "bool") == 0 ? masked_softmax(nparam, params, ndims, shapes, dtypes)
                                                            : 1;
}

extern "C" int MaskedSoftmaxAdd(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void* stream, void* extra) {
  return nparam == 4 && is_float32(dtypes[1]) ? masked_softmax(nparam, params, ndims, shapes, dtypes) : 1;
}

// inputs: y, dy [B, G, R, S] float32, params [4] (only scale is read); output dx.
extern "C" int MaskedSoftmaxGrad(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                 void* stream, void* extra) {
  if (nparam != 4 || !is_float32(dtypes[0]) || !is_float32(dtypes[1])) return 1;
  const int64_t keys = ndims[0] > 0 ? shapes[0][ndims[0] - 1] : 1;
  int64_t rows = 1;
  for (int i = 0; i + 1 < ndims[0]; ++i) rows *= shapes[0][i];
  const float* y = static_cast<const float*>(params[0]);
  const float* dy = static_cast<const float*>(params[1]);
  const float scale = static_cast<const float*>(params[2])[0];
  float* dx = static_cast<float*>(params[3]);
  msmm::parallel_for(rows, min_split(keys), [=](int, int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const float* yr = y + row * keys;
      const float* dyr = dy + row * keys;
      float* dxr = dx + row * keys;
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < keys; ++j) dot += dyr[j] * yr[j];
#pragma omp simd
      for (int64_t j = 0; j < keys; ++j) dxr[j] = (dyr[j] - dot) * yr[j] * scale;
    }
  });
  return 0;
}

namespace {

// inputs: q [B, G, R, D], k [B, G, S, D], v [B, G, S, Dv] float32, [keep-mask [Bm, Gm, Lm, S]
// bool], params [4]; output o [B, G, R, Dv].
int attend(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, bool masked) {
  if (nparam != (masked ? 6 : 5)) return 1;
  for (int i = 0; i < 3; ++i)
    if (ndims[i] != 4 || !is_float32(dtypes[i])) return 1;
  const int64_t *qs = shapes[0], *ks = shapes[1], *vs = shapes[2];
  if (ks[0] != qs[0] || ks[1] != qs[1] || ks[3] != qs[3] || vs[0] != qs[0] || vs[1] != qs[1] || vs[2] != ks[2])
    return 1;
  const float* p = static_cast<const float*>(params[masked ? 4 : 3]);
  Layout s{qs[0], qs[1], qs[2], ks[2], 1, 1, 1, static_cast<int64_t>(p[1]), p[0], p[2] != 0.f,
           static_cast<int64_t>(p[3])};
  if (s.queries < 1) return 1;
  const void* mask = nullptr;
  if (masked) {
    const int64_t* ms = shapes[3];
    if (ndims[3] != 4 || ms[3] != s.keys || std::strcmp(dtypes[3], "bool") != 0) return 1;
    s.mask_batch = ms[0], s.mask_groups = ms[1], s.mask_rows = ms[2];
    mask = params[3];
  }
  const int64_t dim = qs[3], vdim = vs[3];
  const float *q = static_cast<const float*>(params[0]), *k = static_cast<const float*>(params[1]),
              *v = static_cast<const float*>(params[2]);
  float* o = static_cast<float*>(params[nparam - 1]);
  const Layout layout = s;
  const int64_t work = s.keys * (dim + vdim);  // multiply-adds per row
  const int64_t min_rows = kParallelMin / (work > 0 ? work : 1);
  msmm::parallel_for(s.batch * s.groups * s.rows, min_rows > 2 ? min_rows : 2, [=](int, int64_t begin, int64_t end) {
    static thread_local std::vector<float> scratch;
    if (static_cast<int64_t>(scratch.size()) < layout.keys) scratch.resize(layout.keys);
    for (int64_t row = begin; row < end; ++row) {
      if (masked)
        attend_row<Mask::kKeep>(layout, row, dim, vdim, q, k, v, mask, o, scratch.data());
      else
        attend_row<Mask::kNone>(layout, row, dim, vdim, q, k, v, nullptr, o, scratch.data());
    }
  });
  return 0;
}

}  // namespace

extern "C" int Attend(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                      void* extra) {
  return attend(nparam, params, ndims, shapes, dtypes, false);
}

extern "C" int AttendKeep(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                          void* stream, void* extra) {
  return attend(nparam, params, ndims, shapes, dtypes, true);
}
