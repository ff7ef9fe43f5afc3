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
enum Slot { kStrip, kBlended, kMid, kOut, kLine, kCanvas, kSlots };

uint8_t* scratch(Slot slot, int64_t bytes) {
  thread_local std::vector<uint8_t> buffers[kSlots];
  std::vector<uint8_t>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < bytes) buffer.resize(bytes);
  return buffer.data();
}

#ifdef __SSE2__
// dst[j * dst_stride + i] = src[i * src_stride + j] for a 16 x 16 block: four rounds of
// interleaving (bytes, pairs, quads, eights) of the rows.
// kDropX: the 16 columns are 4 RGBX pixels; only their R, G, B rows are stored (12 rows of dst).
template <bool kDropX = false>
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
  if (kDropX) {  // 16 columns = 4 RGBX pixels: keep R, G, B, dst rows 0-11
    for (int j = 0; j < 16; ++j)
      if ((j & 3) != 3) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + ((j >> 2) * 3 + (j & 3)) * dst_stride), a[kRow[j]]);
    return;
  }
  for (int j = 0; j < 16; ++j) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j * dst_stride), a[kRow[j]]);
}
#endif

#ifdef __AVX512BW__
// transpose16<true> on four blocks at once: 16 rows of 16 RGBX pixels (64 bytes each), one
// 16 x 16 byte block per 128-bit lane (the unpacks work lane by lane), R, G, B rows stored:
// dst[(x * 3 + c) * dst_stride + i] = src[i * src_stride + x * 4 + c] for i, x < 16, c < 3.
inline void transpose16_rgbx_x4(const uint8_t* src, int64_t src_stride, uint8_t* dst, int64_t dst_stride) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_loadu_si512(src + i * src_stride);
  for (int i = 0; i < 8; ++i) {
    b[i] = _mm512_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
    b[i + 8] = _mm512_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
  }
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm512_unpacklo_epi16(b[2 * i], b[2 * i + 1]);
    a[i + 8] = _mm512_unpackhi_epi16(b[2 * i], b[2 * i + 1]);
  }
  for (int i = 0; i < 8; ++i) {
    b[i] = _mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
    b[i + 8] = _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
  }
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm512_unpacklo_epi64(b[2 * i], b[2 * i + 1]);
    a[i + 8] = _mm512_unpackhi_epi64(b[2 * i], b[2 * i + 1]);
  }
  static const int kRow[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  for (int j = 0; j < 16; ++j) {
    if ((j & 3) == 3) continue;
    uint8_t* row = dst + ((j >> 2) * 3 + (j & 3)) * dst_stride;  // pixel j / 4 of lane 0, channel j % 4
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row), _mm512_extracti32x4_epi32(a[kRow[j]], 0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row + 12 * dst_stride), _mm512_extracti32x4_epi32(a[kRow[j]], 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row + 24 * dst_stride), _mm512_extracti32x4_epi32(a[kRow[j]], 2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row + 36 * dst_stride), _mm512_extracti32x4_epi32(a[kRow[j]], 3));
  }
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

// dst[(x * channels + c) * dst_stride + i] = src[i * src_stride + x * pixel + c] for i < rows,
// x < pixels, c < channels: a transpose that drops the bytes of a pixel past its channels (the
// X of RGBX storage). The last pixel of a row is read for its `channels` bytes only (an RGB
// view of RGBX storage may end there).
void transpose_pixels(const uint8_t* src, int64_t src_stride, int64_t rows, int64_t pixels, int64_t pixel,
                      int64_t channels, uint8_t* dst, int64_t dst_stride) {
  if (pixel == channels) return transpose(src, src_stride, rows, pixels * channels, dst, dst_stride);
  int64_t x = 0;
#ifdef __SSE2__
  if (pixel == 4 && channels == 3) {  // 16 x 16 byte blocks of 4 pixels, 12 of their 16 rows kept
#ifdef __AVX512BW__
    for (; x + 16 < pixels; x += 16) {  // four blocks at a time (whole cache lines of 16 pixels)
      // the source lines 4 ahead, for all rows of the strip, into L2: 64 row streams defeat the hardware
      // prefetcher; into L1 they evict each other when the row stride is a multiple of 4 KB (2048 px)
      for (int64_t r = 0; r < rows; ++r) _mm_prefetch(reinterpret_cast<const char*>(src + r * src_stride + (x + 64) * 4), _MM_HINT_T1);
      int64_t i = 0;
      for (; i + 16 <= rows; i += 16) transpose16_rgbx_x4(src + i * src_stride + x * 4, src_stride, dst + x * 3 * dst_stride + i, dst_stride);
      for (; i < rows; ++i)
        for (int64_t k = x; k < x + 16; ++k)
          for (int64_t c = 0; c < 3; ++c) dst[(k * 3 + c) * dst_stride + i] = src[i * src_stride + k * 4 + c];
    }
#endif
    for (; x + 4 < pixels; x += 4) {
      if ((x & 15) == 0)  // (see above)
        for (int64_t r = 0; r < rows; ++r) _mm_prefetch(reinterpret_cast<const char*>(src + r * src_stride + (x + 64) * 4), _MM_HINT_T1);
      int64_t i = 0;
      for (; i + 16 <= rows; i += 16) transpose16<true>(src + i * src_stride + x * 4, src_stride, dst + x * 3 * dst_stride + i, dst_stride);
      for (; i < rows; ++i)
        for (int64_t k = x; k < x + 4; ++k)
          for (int64_t c = 0; c < 3; ++c) dst[(k * 3 + c) * dst_stride + i] = src[i * src_stride + k * 4 + c];
    }
  }
#endif
  for (; x < pixels; ++x)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < rows; ++i) dst[(x * channels + c) * dst_stride + i] = src[i * src_stride + x * pixel + c];
}

// The input of a resize: an image of h x w pixels (rows `stride` bytes apart, pixels `pixel`
// bytes apart, `pixel` >= channels: RGBX storage reads as RGB) placed at (top, left) on a
// canvas whose other pixels are `background` (LLaVA's pad-to-square without building the
// canvas). Without padding the canvas is the image.
struct Source {
  const uint8_t* data;
  int64_t stride, pixel, top, left, h, w;
  const uint8_t* background;  // `channels` bytes, or null when the image is the whole canvas
};

// Canvas rows [row, row + n) and columns [lo, lo + span), transposed into strip[(x * channels + c) * kLanes + r].
void fill_strip(const Source& src, int64_t channels, int64_t row, int64_t n, int64_t lo, int64_t span, uint8_t* strip) {
  const int64_t p = src.pixel;
  const int64_t ya = std::max(row, src.top), yb = std::min(row + n, src.top + src.h);
  const int64_t xa = std::max(lo, src.left), xb = std::min(lo + span, src.left + src.w);
  if (!src.background) {
    transpose_pixels(src.data + row * src.stride + lo * p, src.stride, n, span, p, channels, strip, kLanes);
    return;
  }
  const bool none = ya >= yb || xa >= xb, partial_rows = ya > row || yb < row + n;
  for (int64_t x = 0; x < span; ++x) {
    if (!none && !partial_rows && lo + x >= xa && lo + x < xb) continue;
    for (int64_t c = 0; c < channels; ++c) std::memset(strip + (x * channels + c) * kLanes, src.background[c], kLanes);
  }
  if (!none)
    transpose_pixels(src.data + (ya - src.top) * src.stride + (xa - src.left) * p, src.stride, yb - ya, xb - xa, p,
                     channels, strip + (xa - lo) * channels * kLanes + (ya - row), kLanes);
}

// Horizontal pass over canvas rows [first, first + rows) of `src`, input columns [lo, lo + span),
// to output columns [x0, x1), written planar: out[c * plane_stride + r * row_stride + x].
// A strip of kLanes rows is transposed, so that byte (x, c) of all its rows is one contiguous
// run of kLanes; each output pixel and channel is blended across the kLanes rows at once, and
// each channel transposed back.
void horizontal_pass(const Source& src, int64_t first, int64_t rows, int64_t channels, int64_t lo, int64_t span,
                     const Axis& axis, int64_t x0, int64_t x1, uint8_t* out, int64_t plane_stride, int64_t row_stride) {
  const int64_t cols = x1 - x0;
  uint8_t* strip = scratch(kStrip, span * channels * kLanes);  // strip[(x * channels + c) * kLanes + r]
  uint8_t* blended = scratch(kBlended, cols * channels * kLanes);  // the same for the output pixels
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    const int64_t n = std::min(kLanes, rows - r0);
    fill_strip(src, channels, first + r0, n, lo, span, strip);
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

// Canvas rows [first, last) and columns [lo, hi) of a padded source, written densely (pixels
// `src.pixel` bytes apart) to dst: the passes that read the input row by row read this.
void materialise(const Source& src, int64_t channels, int64_t first, int64_t last, int64_t lo, int64_t hi, uint8_t* dst) {
  const int64_t p = src.pixel, width = (hi - lo) * p;
  const int64_t xa = std::max(lo, src.left), xb = std::min(hi, src.left + src.w);
  for (int64_t y = first; y < last; ++y) {
    uint8_t* row = dst + (y - first) * width;
    const bool inside = y >= src.top && y < src.top + src.h && xa < xb;
    for (int64_t x = lo; x < hi; ++x) {
      if (inside && x >= xa && x < xb) continue;
      for (int64_t c = 0; c < p; ++c) row[(x - lo) * p + c] = c < channels ? src.background[c] : 0;
    }
    if (inside)
      std::memcpy(row + (xa - lo) * p, src.data + (y - src.top) * src.stride + (xa - src.left) * p, (xb - xa) * p - (p - channels));
  }
}

// planes[c * cols + x] = row[x * pixel + c]
void deinterleave(const uint8_t* row, int64_t cols, int64_t channels, int64_t pixel, uint8_t* planes) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t x = 0; x < cols; ++x) planes[c * cols + x] = row[x * pixel + c];
}

// Window [y0, y1) x [x0, x1) of the (out_h, out_w) resize of the (in_h, in_w) canvas of `src`,
// one row at a time, planar: sink(window_row, planes, plane_stride), channel c of the row at
// planes + c * plane_stride.
template <class Sink>
void resample(Source src, int64_t in_h, int64_t in_w, int64_t channels, int64_t out_h, int64_t out_w, int64_t y0,
              int64_t y1, int64_t x0, int64_t x1, int order, Sink sink) {
  const int64_t rows = y1 - y0, cols = x1 - x0, p = src.pixel;
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
  if (src.background && (!horizontal || vertical_first)) {  // these passes read rows: build the rows they read
    uint8_t* canvas = scratch(kCanvas, (last - first) * (hi - lo) * p);
    materialise(src, channels, first, last, lo, hi, canvas);
    src = {canvas - first * (hi - lo) * p - lo * p, (hi - lo) * p, p, 0, 0, in_h, in_w, nullptr};
  }
  const int64_t src_stride = src.stride;
  const uint8_t* window = src.data + first * src_stride + lo * p;  // (unpadded sources only)
  uint8_t* line = scratch(kLine, 2 * cols * p);
  if (!horizontal) {  // rows stay interleaved until the sink
    for (int64_t y = 0; y < rows; ++y) {
      const uint8_t* row = window + y * src_stride;
      if (vertical) {
        vertical_pass_row(window, src_stride, first, vy, y0 + y, cols * p - (p - channels), line + cols * p);
        row = line + cols * p;
      }
      deinterleave(row, cols, channels, p, line);
      sink(y, line, cols);
    }
    return;
  }
  if (vertical_first) {
    const int64_t stride = (hi - lo) * p;
    uint8_t* mid = scratch(kMid, rows * stride);
    uint8_t* out = scratch(kOut, rows * cols * channels);
    for (int64_t y = 0; y < rows; ++y)
      vertical_pass_row(window, src_stride, first, vy, y0 + y, stride - (p - channels), mid + y * stride);
    const Source dense{mid - lo * p, stride, p, 0, 0, rows, in_w, nullptr};
    horizontal_pass(dense, 0, rows, channels, lo, hi - lo, hx, x0, x1, out, rows * cols, cols);
    for (int64_t y = 0; y < rows; ++y) sink(y, out + y * cols, rows * cols);
    return;
  }
  const int64_t plane = (last - first) * cols;
  uint8_t* mid = scratch(kMid, plane * channels);  // rows [first, last) after the horizontal pass
  horizontal_pass(src, first, last - first, channels, lo, hi - lo, hx, x0, x1, mid, plane, cols);
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

// The arguments every entry point takes: the image, its place on the canvas, the resize and its window.
struct Geometry {
  const uint8_t* src;
  int64_t img_h, img_w, src_stride, pixel, channels;  // the image (pixel: bytes per pixel, >= channels)
  int64_t in_h, in_w, top, left;                       // the canvas and where the image lies on it
  const uint8_t* background;                           // channels bytes; null: the canvas is the image
  int64_t out_h, out_w, y0, y1, x0, x1;
  int order;
};

bool valid(const Geometry& g) {
  constexpr int64_t kMax = int64_t(1) << 24;
  const bool padded = g.background != nullptr;
  return g.img_h > 0 && g.img_w > 0 && g.channels > 0 && g.pixel >= g.channels && g.src_stride >= g.img_w * g.pixel &&
         g.out_h > 0 && g.out_w > 0 && 0 <= g.y0 && g.y0 < g.y1 && g.y1 <= g.out_h && 0 <= g.x0 && g.x0 < g.x1 &&
         g.x1 <= g.out_w && (g.order == 0 || g.order == 1) && g.in_h < kMax && g.in_w < kMax && g.out_h < kMax &&
         g.out_w < kMax &&
         (padded ? (0 <= g.top && 0 <= g.left && g.top + g.img_h <= g.in_h && g.left + g.img_w <= g.in_w)
                 : (g.top == 0 && g.left == 0 && g.in_h == g.img_h && g.in_w == g.img_w));
}

template <class Sink>
void resample(const Geometry& g, Sink sink) {
  const Source src{g.src, g.src_stride, g.pixel, g.top, g.left, g.img_h, g.img_w, g.background};
  resample(src, g.in_h, g.in_w, g.channels, g.out_h, g.out_w, g.y0, g.y1, g.x0, g.x1, g.order, sink);
}

}  // namespace

extern "C" {

// Window [y0, y1) x [x0, x1) of the (out_h, out_w) bicubic resize of a canvas of (in_h, in_w)
// pixels into dst ((y1 - y0), (x1 - x0), channels), contiguous. The canvas is the image src
// (img_h, img_w pixels of `channels` bytes, `pixel` bytes apart, rows src_stride bytes apart)
// placed at (top, left), the rest `background` (channels bytes); with background null the
// canvas is the image itself (top = left = 0, in = img). order: 0 = horizontal pass first
// (Pillow < 13), 1 = Pillow 13's choice. Returns 0, -1 on bad arguments, -2 when out of memory.
int msmm_resize_u8(const uint8_t* src, int64_t img_h, int64_t img_w, int64_t src_stride, int64_t pixel,
                   int64_t channels, int64_t in_h, int64_t in_w, int64_t top, int64_t left, const uint8_t* background,
                   int64_t out_h, int64_t out_w, int64_t y0, int64_t y1, int64_t x0, int64_t x1, int order,
                   uint8_t* dst) {
  const Geometry g{src, img_h, img_w, src_stride, pixel, channels, in_h, in_w, top, left, background,
                   out_h, out_w, y0, y1, x0, x1, order};
  if (!valid(g)) return -1;
  const int64_t cols = x1 - x0;
  try {
    resample(g, [&](int64_t y, const uint8_t* planes, int64_t plane_stride) {
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
int msmm_resize_normalize(const uint8_t* src, int64_t img_h, int64_t img_w, int64_t src_stride, int64_t pixel,
                          int64_t channels, int64_t in_h, int64_t in_w, int64_t top, int64_t left,
                          const uint8_t* background, int64_t out_h, int64_t out_w, int64_t y0, int64_t y1, int64_t x0,
                          int64_t x1, int order, const float* table, float* dst, const int64_t* row_offset,
                          const int64_t* col_offset, int64_t channel_stride, int64_t copies, int64_t copy_stride,
                          int64_t band) {
  const Geometry g{src, img_h, img_w, src_stride, pixel, channels, in_h, in_w, top, left, background,
                   out_h, out_w, y0, y1, x0, x1, order};
  if (!valid(g) || copies < 1 || band < 1) return -1;
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
    resample(g, [&](int64_t y, const uint8_t* planes, int64_t plane_stride) {
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
