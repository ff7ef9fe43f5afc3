// Bicubic resize of 8-bit images, bit-identical to Pillow's Image.resize(size, BICUBIC)
// (src/libImaging/Resample.c), optionally fused with rescale + normalise (a per-channel
// lookup table) and the model's tensor layout (per-row and per-column output offsets).
//
// Pillow's algorithm, which this follows step for step:
//   * output pixel i of an axis reads inputs [start, start + count) with the weights
//     filter((x - centre + 0.5) / filterscale), centre = (i + 0.5) * scale, normalised to
//     sum 1 in double and rounded to fixed point with PRECISION_BITS = 32 - 8 - 2 fractional
//     bits (ties away from zero); filterscale = max(scale, 1), so a downscale widens the
//     filter's support by the scale factor;
//   * two passes, each summed in int32 from 0.5 (rounding) and clipped to uint8 after the
//     shift; a pass is skipped when its side keeps its size; Pillow < 13 always runs the
//     horizontal pass first, Pillow >= 13 runs the vertical one first when the height shrinks
//     by more than twice the width (the `order` argument).
// Only the speed differs: the vertical pass is vectorised across 64 bytes of a row, the
// horizontal pass across 64 rows of a transposed strip, instead of one pixel at a time.
// Each output pixel depends only on its own weights, so a crop window of the output is
// computed alone, exactly.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#if defined(__SSE2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);
constexpr int64_t kLanes = 64;

double bicubic(double x) {  // Keys' cubic convolution, a = -0.5, as Pillow writes it
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point weights of one axis: output i reads inputs [start[i], start[i] + count[i])
// with weights[i * ksize + k].
struct Axis {
  int64_t ksize = 0;
  std::vector<int32_t> start, count, weights;
};

Axis precompute(int64_t in_size, int64_t out_size) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  const double inv_filterscale = 1.0 / filterscale;
  Axis axis;
  axis.ksize = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  axis.start.resize(out_size);
  axis.count.resize(out_size);
  axis.weights.assign(out_size * axis.ksize, 0);
  std::vector<double> w(axis.ksize);
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(static_cast<int>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int>(center + support + 0.5), in_size);
    double total = 0.0;
    for (int64_t k = 0; k < hi - lo; ++k) {
      w[k] = bicubic((k + lo - center + 0.5) * inv_filterscale);
      total += w[k];
    }
    for (int64_t k = 0; k < hi - lo; ++k) {
      const double v = total != 0.0 ? w[k] / total : w[k];
      const double fixed = v * (1 << kPrecisionBits);
      axis.weights[i * axis.ksize + k] = static_cast<int32_t>(v < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    axis.start[i] = static_cast<int32_t>(lo);
    axis.count[i] = static_cast<int32_t>(hi - lo);
  }
  return axis;
}

inline uint8_t clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// out[j] = clip8(0.5 + sum_k base[k * step + j] * weights[k]) for j < n (n = kLanes: vectorised).
template <int64_t N>
inline void blend(const uint8_t* __restrict base, int64_t step, const int32_t* __restrict weights, int64_t taps,
                  uint8_t* __restrict out, int64_t n = N) {
  int32_t acc[N];
  for (int64_t j = 0; j < N; ++j) acc[j] = kHalf;
  for (int64_t k = 0; k < taps; ++k) {
    const uint8_t* __restrict row = base + k * step;
    const int32_t w = weights[k];
    if (N == kLanes) {
      for (int64_t j = 0; j < N; ++j) acc[j] += static_cast<int32_t>(row[j]) * w;
    } else {
      for (int64_t j = 0; j < n; ++j) acc[j] += static_cast<int32_t>(row[j]) * w;
    }
  }
  for (int64_t j = 0; j < n; ++j) out[j] = clip8(acc[j]);
}

// Output row i of the vertical pass over rows of `width` bytes (channels interleaved).
void vertical_pass_row(const uint8_t* in, int64_t in_stride, int64_t first_row, const Axis& axis, int64_t i,
                       int64_t width, uint8_t* out) {
  const uint8_t* base = in + (axis.start[i] - first_row) * in_stride;
  const int32_t* weights = &axis.weights[i * axis.ksize];
  int64_t j = 0;
  for (; j + kLanes <= width; j += kLanes) blend<kLanes>(base + j, in_stride, weights, axis.count[i], out + j);
  if (j < width) blend<kLanes + 1>(base + j, in_stride, weights, axis.count[i], out + j, width - j);
}

// Scratch buffers kept per thread between calls (they grow to the largest image seen): fresh
// multi-megabyte allocations would be page-faulted in, and zeroed by the kernel, every image.
enum Slot { kStrip, kBlended, kMid, kOut, kLine, kSlots };

uint8_t* scratch(Slot slot, int64_t bytes) {
  thread_local std::vector<uint8_t> buffers[kSlots];
  std::vector<uint8_t>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < bytes) buffer.resize(bytes);
  return buffer.data();
}

#ifdef __SSE2__
// dst[j * dst_stride + i] = src[i * src_stride + j] for a 16 x 16 block: four rounds of
// interleaving (bytes, pairs, quads, eights) of the rows.
inline void transpose16(const uint8_t* src, int64_t src_stride, uint8_t* dst, int64_t dst_stride) {
  __m128i a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * src_stride));
  for (int i = 0; i < 8; ++i) {
    b[i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
    b[i + 8] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
  }
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm_unpacklo_epi16(b[2 * i], b[2 * i + 1]);
    a[i + 8] = _mm_unpackhi_epi16(b[2 * i], b[2 * i + 1]);
  }
  for (int i = 0; i < 8; ++i) {
    b[i] = _mm_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
    b[i + 8] = _mm_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
  }
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm_unpacklo_epi64(b[2 * i], b[2 * i + 1]);
    a[i + 8] = _mm_unpackhi_epi64(b[2 * i], b[2 * i + 1]);
  }
  // after four perfect shuffles the row holding column j is the bit-reversal of j
  static const int kRow[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  for (int j = 0; j < 16; ++j) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j * dst_stride), a[kRow[j]]);
}
#endif

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols.
void transpose(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t cols, uint8_t* dst, int64_t dst_stride) {
  int64_t j = 0;
#ifdef __SSE2__
  for (; j + 16 <= cols; j += 16) {
    int64_t i = 0;
    for (; i + 16 <= rows; i += 16) transpose16(src + i * src_stride + j, src_stride, dst + j * dst_stride + i, dst_stride);
    for (; i < rows; ++i)
      for (int64_t k = j; k < j + 16; ++k) dst[k * dst_stride + i] = src[i * src_stride + k];
  }
#endif
  for (; j < cols; ++j)
    for (int64_t i = 0; i < rows; ++i) dst[j * dst_stride + i] = src[i * src_stride + j];
}

// Horizontal pass over `rows` rows of `in` (channels interleaved; its pixel 0 is input column
// `lo`) to output columns [x0, x1), written planar: out[c * plane_stride + r * row_stride + x].
// A strip of kLanes rows is transposed, so that byte (x, c) of all its rows is one contiguous
// run of kLanes; each output pixel and channel is blended across the kLanes rows at once, and
// each channel transposed back.
void horizontal_pass(const uint8_t* in, int64_t in_stride, int64_t rows, int64_t channels, int64_t lo, int64_t span,
                     const Axis& axis, int64_t x0, int64_t x1, uint8_t* out, int64_t plane_stride, int64_t row_stride) {
  const int64_t cols = x1 - x0;
  uint8_t* strip = scratch(kStrip, span * channels * kLanes);  // strip[(x * channels + c) * kLanes + r]
  uint8_t* blended = scratch(kBlended, cols * channels * kLanes);  // the same for the output pixels
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    const int64_t n = std::min(kLanes, rows - r0);
    transpose(in + r0 * in_stride, in_stride, n, span * channels, strip, kLanes);
    for (int64_t x = 0; x < cols; ++x) {
      const int64_t i = x0 + x;
      for (int64_t c = 0; c < channels; ++c)
        blend<kLanes>(strip + ((axis.start[i] - lo) * channels + c) * kLanes, channels * kLanes,
                      &axis.weights[i * axis.ksize], axis.count[i], blended + (x * channels + c) * kLanes);
    }
    for (int64_t c = 0; c < channels; ++c)
      transpose(blended + c * kLanes, channels * kLanes, cols, n, out + c * plane_stride + r0 * row_stride, row_stride);
  }
}

// planes[c * cols + x] = row[x * channels + c]
void deinterleave(const uint8_t* row, int64_t cols, int64_t channels, uint8_t* planes) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t x = 0; x < cols; ++x) planes[c * cols + x] = row[x * channels + c];
}

// Window [y0, y1) x [x0, x1) of the (out_h, out_w) resize, one row at a time, planar:
// sink(window_row, planes, plane_stride), channel c of the row at planes + c * plane_stride.
template <class Sink>
void resample(const uint8_t* src, int64_t in_h, int64_t in_w, int64_t src_stride, int64_t channels, int64_t out_h,
              int64_t out_w, int64_t y0, int64_t y1, int64_t x0, int64_t x1, int order, Sink sink) {
  const int64_t rows = y1 - y0, cols = x1 - x0;
  const bool horizontal = out_w != in_w, vertical = out_h != in_h;
  const bool vertical_first = vertical && horizontal && order == 1 && in_h > out_h &&
                            in_h - out_h > 2 * (in_w - out_w);
  Axis vy, hx;
  if (vertical) vy = precompute(in_h, out_h);
  if (horizontal) hx = precompute(in_w, out_w);
  // input rows [first, last) and columns [lo, hi) feeding the window
  const int64_t first = vertical ? vy.start[y0] : y0;
  const int64_t last = vertical ? vy.start[y1 - 1] + vy.count[y1 - 1] : y1;
  const int64_t lo = horizontal ? hx.start[x0] : x0;
  const int64_t hi = horizontal ? hx.start[x1 - 1] + hx.count[x1 - 1] : x1;
  const uint8_t* window = src + first * src_stride + lo * channels;
  uint8_t* line = scratch(kLine, 2 * cols * channels);
  if (!horizontal) {  // rows stay interleaved until the sink
    for (int64_t y = 0; y < rows; ++y) {
      const uint8_t* row = window + y * src_stride;
      if (vertical) {
        vertical_pass_row(window, src_stride, first, vy, y0 + y, cols * channels, line + cols * channels);
        row = line + cols * channels;
      }
      deinterleave(row, cols, channels, line);
      sink(y, line, cols);
    }
    return;
  }
  if (vertical_first) {
    const int64_t stride = (hi - lo) * channels;
    uint8_t* mid = scratch(kMid, rows * stride);
    uint8_t* out = scratch(kOut, rows * cols * channels);
    for (int64_t y = 0; y < rows; ++y) vertical_pass_row(window, src_stride, first, vy, y0 + y, stride, mid + y * stride);
    horizontal_pass(mid, stride, rows, channels, lo, hi - lo, hx, x0, x1, out, rows * cols, cols);
    for (int64_t y = 0; y < rows; ++y) sink(y, out + y * cols, rows * cols);
    return;
  }
  const int64_t plane = (last - first) * cols;
  uint8_t* mid = scratch(kMid, plane * channels);  // rows [first, last) after the horizontal pass
  horizontal_pass(window, src_stride, last - first, channels, lo, hi - lo, hx, x0, x1, mid, plane, cols);
  for (int64_t y = 0; y < rows; ++y) {
    if (!vertical) {
      sink(y, mid + y * cols, plane);
      continue;
    }
    for (int64_t c = 0; c < channels; ++c)
      vertical_pass_row(mid + c * plane, cols, first, vy, y0 + y, cols, line + c * cols);
    sink(y, line, cols);
  }
}

// Window columns [x, x + n) land on consecutive output elements from offset.
struct Run {
  int64_t x, n, offset;
};

// out[x] = table[in[x]] for x < n.
void look_up(const uint8_t* __restrict in, int64_t n, const float* __restrict table, float* __restrict out) {
  int64_t x = 0;
#ifdef __AVX512F__
  for (; x + 16 <= n; x += 16) {
    const __m512i index = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + x)));
    _mm512_storeu_ps(out + x, _mm512_i32gather_ps(index, table, 4));
  }
#endif
  for (; x < n; ++x) out[x] = table[in[x]];
}

void copy_floats(const float* __restrict from, int64_t n, float* __restrict to) {
  int64_t x = 0;
#ifdef __AVX512F__
  for (; x + 16 <= n; x += 16) _mm512_storeu_ps(to + x, _mm512_loadu_ps(from + x));
  if (x < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - x)) - 1);
    _mm512_mask_storeu_ps(to + x, mask, _mm512_maskz_loadu_ps(mask, from + x));
  }
#else
  std::memcpy(to, from, n * sizeof(float));
#endif
}

bool valid(int64_t in_h, int64_t in_w, int64_t src_stride, int64_t channels, int64_t out_h, int64_t out_w,
           int64_t y0, int64_t y1, int64_t x0, int64_t x1, int order) {
  return in_h > 0 && in_w > 0 && channels > 0 && src_stride >= in_w * channels && out_h > 0 && out_w > 0 &&
         0 <= y0 && y0 < y1 && y1 <= out_h && 0 <= x0 && x0 < x1 && x1 <= out_w && (order == 0 || order == 1) &&
         in_h < (1 << 24) && in_w < (1 << 24) && out_h < (1 << 24) && out_w < (1 << 24);
}

}  // namespace

extern "C" {

// Window [y0, y1) x [x0, x1) of the (out_h, out_w) bicubic resize of src (in_h, in_w,
// channels; rows src_stride bytes apart) into dst ((y1 - y0), (x1 - x0), channels),
// contiguous. order: 0 = horizontal pass first (Pillow < 13), 1 = Pillow 13's choice.
// Returns 0, -1 on bad arguments, -2 when out of memory.
int msmm_resize_u8(const uint8_t* src, int64_t in_h, int64_t in_w, int64_t src_stride, int64_t channels,
                   int64_t out_h, int64_t out_w, int64_t y0, int64_t y1, int64_t x0, int64_t x1, int order,
                   uint8_t* dst) {
  if (!valid(in_h, in_w, src_stride, channels, out_h, out_w, y0, y1, x0, x1, order)) return -1;
  const int64_t cols = x1 - x0;
  try {
    resample(src, in_h, in_w, src_stride, channels, out_h, out_w, y0, y1, x0, x1, order,
             [&](int64_t y, const uint8_t* planes, int64_t plane_stride) {
               uint8_t* out = dst + y * cols * channels;
               for (int64_t c = 0; c < channels; ++c)
                 for (int64_t x = 0; x < cols; ++x) out[x * channels + c] = planes[c * plane_stride + x];
             });
  } catch (const std::bad_alloc&) {
    return -2;
  }
  return 0;
}

// The same window, the value v of channel c at window pixel (y, x) written as
// table[c * 256 + v] (float32) to dst[row_offset[y] + col_offset[x] + c * channel_stride +
// t * copy_stride] for t < copies (offsets in elements): rescale, normalise and the model's
// layout in the same pass. Rows are written `band` at a time, run of consecutive columns by
// run: with band = the patch size, a patch layout is written in memory order.
int msmm_resize_normalize(const uint8_t* src, int64_t in_h, int64_t in_w, int64_t src_stride, int64_t channels,
                          int64_t out_h, int64_t out_w, int64_t y0, int64_t y1, int64_t x0, int64_t x1, int order,
                          const float* table, float* dst, const int64_t* row_offset, const int64_t* col_offset,
                          int64_t channel_stride, int64_t copies, int64_t copy_stride, int64_t band) {
  if (!valid(in_h, in_w, src_stride, channels, out_h, out_w, y0, y1, x0, x1, order) || copies < 1 || band < 1)
    return -1;
  const int64_t cols = x1 - x0, rows = y1 - y0;
  band = std::min(band, rows);
  try {
    std::vector<Run> runs;
    for (int64_t x = 0; x < cols; ++x) {
      if (!runs.empty() && col_offset[x] == runs.back().offset + runs.back().n) {
        ++runs.back().n;
      } else {
        runs.push_back({x, 1, col_offset[x]});
      }
    }
    std::vector<float> values(channels * band * cols);  // values[(c * band + r) * cols + x] of the current band
    resample(src, in_h, in_w, src_stride, channels, out_h, out_w, y0, y1, x0, x1, order,
             [&](int64_t y, const uint8_t* planes, int64_t plane_stride) {
               const int64_t r = y % band;
               for (int64_t c = 0; c < channels; ++c)
                 look_up(planes + c * plane_stride, cols, table + c * 256, values.data() + (c * band + r) * cols);
               if (r + 1 < band && y + 1 < rows) return;
               const int64_t first = y - r;
               for (const Run& run : runs)
                 for (int64_t c = 0; c < channels; ++c)
                   for (int64_t t = 0; t < copies; ++t)
                     for (int64_t i = 0; i <= r; ++i)
                       copy_floats(values.data() + (c * band + i) * cols + run.x, run.n,
                                   dst + row_offset[first + i] + run.offset + c * channel_stride + t * copy_stride);
             });
  } catch (const std::bad_alloc&) {
    return -2;
  }
  return 0;
}

}  // extern "C"
