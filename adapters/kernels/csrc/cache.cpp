// KV-cache write of one new row per sequence, by slot (decoding):
//
//   out[b, g, s, :] = new[b, g, 0, :] where slots[b or 0, s] != 0, else cache[b, g, s, :]
//
// cache [B, G, S, D], new [B, G, 1, D] (any element type: rows are copied as bytes), slots
// [Bs, S] float32 with Bs 1 (one slot for every row) or B (per-row slots: continuous
// batching). This is exactly `torch.where((slots != 0)[:, None, :, None], new, cache)` for
// any slots, one-hot or not: a copy of the cache (one memcpy per sequence, the bulk of the
// work) and D elements per marked slot, instead of MindSpore's broadcast Select, which reads
// the condition and both operands per element (~3x the time of a same-shape add).
//
// ProjectQKV / ProjectQKVBias do a decode step's projections of one attention layer in one
// call: q = rope(x Wq^T (+ bq)), k = rope(x Wk^T (+ bk)), v = x Wv^T (+ bv) for x [B, 1, hidden]
// (one new token per sequence); k and v written at their slot as WriteSlots does; q returned
// as [B, G, H / G, D] (each key/value group's query heads as rows, what the attention kernel
// takes): three GEMVs, two rotations and two writes (seven kernels, and the reshapes between).
// The GEMV (gemv.h) and the rotation are the same float operations as gemv.cpp's and
// rope.cpp's.
//
// MindSpore AOT custom-op ABI: params holds the inputs then the outputs.
#include <cstdint>
#include <cstring>
#include <vector>

#include "gemv.h"

namespace {

int64_t element_size(const char* dtype) {
  if (!std::strcmp(dtype, "float32") || !std::strcmp(dtype, "int32")) return 4;
  if (!std::strcmp(dtype, "float16") || !std::strcmp(dtype, "bfloat16") || !std::strcmp(dtype, "int16")) return 2;
  if (!std::strcmp(dtype, "float64") || !std::strcmp(dtype, "int64")) return 8;
  if (!std::strcmp(dtype, "int8") || !std::strcmp(dtype, "uint8") || !std::strcmp(dtype, "bool")) return 1;
  return 0;
}

// out = cache with the row `fresh[b, g]` (D elements of esize bytes) at every slot marked in
// slots[b or 0] (the caller checked the shapes).
void write_rows(const char* cache, const char* fresh, const float* slots, int64_t slot_rows, char* out,
                int64_t batch, int64_t groups, int64_t length, int64_t row) {
  const int64_t sequence = groups * length * row;
  for (int64_t b = 0; b < batch; ++b) {
    if (sequence) std::memcpy(out + b * sequence, cache + b * sequence, sequence);
    const float* slot = slots + (slot_rows == 1 ? 0 : b) * length;
    for (int64_t s = 0; s < length; ++s) {
      if (slot[s] == 0.f) continue;
      for (int64_t g = 0; g < groups; ++g)
        std::memcpy(out + ((b * groups + g) * length + s) * row, fresh + (b * groups + g) * row, row);
    }
  }
}

// rope.cpp's forward for one position: rows [B, heads, D] of raw rotated into y (same layout)
// by cos / sin [Bc, 1, D].
void rotate(const float* raw, const float* cos, const float* sin, int64_t tables, int64_t batch, int64_t heads,
            int64_t dim, float* y) {
  const int64_t half = dim / 2;
  for (int64_t b = 0; b < batch; ++b) {
    const float *c = cos + (tables == 1 ? 0 : b) * dim, *s = sin + (tables == 1 ? 0 : b) * dim;
    for (int64_t h = 0; h < heads; ++h) {
      const float* xr = raw + (b * heads + h) * dim;
      float* yr = y + (b * heads + h) * dim;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        yr[i] = xr[i] * c[i] - xr[i + half] * s[i];
        yr[i + half] = xr[i + half] * c[i + half] + xr[i] * s[i + half];
      }
    }
  }
}

// x [B, 1, K], wq [H * D, K], wk / wv [G * D, K], biases [rows] or none, cos / sin [Bc, 1, D]
// (Bc 1 or B), caches [B, G, S, D], slots [Bs, S] (Bs 1 or B), all float32 -> q [B, G, H / G, D]
// (rotated; the query heads of each key/value group as rows), the two caches.
int project_qkv(void** in, int64_t** shapes, int* ndims, const char** dtypes, int ntensors, bool bias,
                void** out) {
  for (int i = 0; i < ntensors; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return 1;
  const int step = bias ? 2 : 1;  // weight, [bias] per projection
  const int ix = 0, iwq = 1, iwk = 1 + step, iwv = 1 + 2 * step, icos = 1 + 3 * step, isin = icos + 1,
            ikc = icos + 2, ivc = icos + 3, islots = icos + 4;
  if (ndims[ix] != 3 || ndims[ikc] != 4 || ndims[ivc] != 4 || ndims[icos] != 3 || ndims[isin] != 3 ||
      ndims[islots] != 2 || ndims[iwq] != 2 || ndims[iwk] != 2 || ndims[iwv] != 2)
    return 1;
  const int64_t batch = shapes[ikc][0], groups = shapes[ikc][1], length = shapes[ikc][2], dim = shapes[ikc][3];
  const int64_t hidden = shapes[ix][2], width = groups * dim, q_width = shapes[iwq][0], tables = shapes[icos][0];
  for (int d = 0; d < 4; ++d)
    if (shapes[ivc][d] != shapes[ikc][d]) return 1;
  if (shapes[ix][0] != batch || shapes[ix][1] != 1 || dim == 0 || dim % 2 || q_width % width) return 1;
  if (shapes[iwq][1] != hidden || shapes[iwk][0] != width || shapes[iwk][1] != hidden || shapes[iwv][0] != width ||
      shapes[iwv][1] != hidden)
    return 1;
  if (bias && (ndims[iwq + 1] != 1 || shapes[iwq + 1][0] != q_width || ndims[iwk + 1] != 1 ||
               shapes[iwk + 1][0] != width || ndims[iwv + 1] != 1 || shapes[iwv + 1][0] != width))
    return 1;
  if ((tables != 1 && tables != batch) || shapes[icos][1] != 1 || shapes[icos][2] != dim) return 1;
  for (int d = 0; d < 3; ++d)
    if (shapes[isin][d] != shapes[icos][d]) return 1;
  const int64_t slot_rows = shapes[islots][0];
  if ((slot_rows != 1 && slot_rows != batch) || shapes[islots][1] != length) return 1;

  const float* x = static_cast<const float*>(in[ix]);
  const float* cos = static_cast<const float*>(in[icos]);
  const float* sin = static_cast<const float*>(in[isin]);
  auto bias_of = [&](int weight) { return bias ? static_cast<const float*>(in[weight + 1]) : nullptr; };
  std::vector<float> raw(batch * q_width), k(batch * width), v(batch * width);
  msmm::gemv(x, static_cast<const float*>(in[iwq]), bias_of(iwq), raw.data(), batch, q_width, hidden);
  rotate(raw.data(), cos, sin, tables, batch, q_width / dim, dim, static_cast<float*>(out[0]));
  msmm::gemv(x, static_cast<const float*>(in[iwk]), bias_of(iwk), raw.data(), batch, width, hidden);
  rotate(raw.data(), cos, sin, tables, batch, groups, dim, k.data());
  msmm::gemv(x, static_cast<const float*>(in[iwv]), bias_of(iwv), v.data(), batch, width, hidden);
  const float* slots = static_cast<const float*>(in[islots]);
  const int64_t row = dim * static_cast<int64_t>(sizeof(float));
  write_rows(static_cast<const char*>(in[ikc]), reinterpret_cast<const char*>(k.data()), slots, slot_rows,
             static_cast<char*>(out[1]), batch, groups, length, row);
  write_rows(static_cast<const char*>(in[ivc]), reinterpret_cast<const char*>(v.data()), slots, slot_rows,
             static_cast<char*>(out[2]), batch, groups, length, row);
  return 0;
}

}  // namespace

extern "C" {

// x, wq, wk, wv, cos, sin, k_cache, v_cache, slots -> q, k_cache, v_cache
int ProjectQKV(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
               void* extra) {
  if (nparam != 12) return 1;
  return project_qkv(params, shapes, ndims, dtypes, 9, false, params + 9);
}

// x, wq, bq, wk, bk, wv, bv, cos, sin, k_cache, v_cache, slots -> q, k_cache, v_cache
int ProjectQKVBias(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
                   void* extra) {
  if (nparam != 15) return 1;
  return project_qkv(params, shapes, ndims, dtypes, 12, true, params + 12);
}

// cache [B, G, S, D], new [B, G, L, D], slots [L, S] float32 (one-hot rows: the slot of each new
// row) -> out [B, G, S, D]: the cache with new row i at every slot marked in slots[i] (a later
// row wins a slot marked twice). For one-hot rows at distinct slots this is the one-hot matmul
// cache * (1 - sum_i slots[i]) + slots^T new (the prefill's write) without the matmul.
int WriteRows(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
              void* extra) {
  if (nparam != 4 || ndims[0] != 4 || ndims[1] != 4 || ndims[2] != 2) return 1;
  const int64_t esize = element_size(dtypes[0]);
  if (esize == 0 || std::strcmp(dtypes[0], dtypes[1]) != 0 || std::strcmp(dtypes[2], "float32") != 0) return 1;
  const int64_t batch = shapes[0][0], groups = shapes[0][1], length = shapes[0][2], dim = shapes[0][3];
  const int64_t rows = shapes[1][2];
  if (shapes[1][0] != batch || shapes[1][1] != groups || shapes[1][3] != dim) return 1;
  if (shapes[2][0] != rows || shapes[2][1] != length) return 1;
  const char* cache = static_cast<const char*>(params[0]);
  const char* fresh = static_cast<const char*>(params[1]);
  const float* slots = static_cast<const float*>(params[2]);
  char* out = static_cast<char*>(params[3]);
  const int64_t row = dim * esize, sequence = groups * length * row;
  if (batch * sequence != 0) std::memcpy(out, cache, batch * sequence);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t s = 0; s < length; ++s) {
      if (slots[i * length + s] == 0.f) continue;
      for (int64_t bg = 0; bg < batch * groups; ++bg)
        std::memcpy(out + (bg * length + s) * row, fresh + (bg * rows + i) * row, row);
    }
  return 0;
}

// cache [B, G, S, D], new [B, G, 1, D], slots [Bs, S] float32 (Bs 1 or B) -> out [B, G, S, D]
int WriteSlots(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void* stream,
               void* extra) {
  if (nparam != 4 || ndims[0] != 4 || ndims[1] != 4 || ndims[2] != 2) return 1;
  const int64_t esize = element_size(dtypes[0]);
  if (esize == 0 || std::strcmp(dtypes[0], dtypes[1]) != 0 || std::strcmp(dtypes[2], "float32") != 0) return 1;
  const int64_t* c = shapes[0];
  const int64_t batch = c[0], groups = c[1], length = c[2], dim = c[3];
  const int64_t slot_rows = shapes[2][0];
  if (shapes[1][0] != batch || shapes[1][1] != groups || shapes[1][2] != 1 || shapes[1][3] != dim) return 1;
  if (shapes[2][1] != length || (slot_rows != 1 && slot_rows != batch)) return 1;
  write_rows(static_cast<const char*>(params[0]), static_cast<const char*>(params[1]),
             static_cast<const float*>(params[2]), slot_rows, static_cast<char*>(params[3]), batch, groups, length,
             dim * esize);
  return 0;
}

}  // extern "C"
