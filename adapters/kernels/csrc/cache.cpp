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
// MindSpore AOT custom-op ABI: params holds the inputs then the outputs.
#include <cstdint>
#include <cstring>

namespace {

int64_t element_size(const char* dtype) {
  if (!std::strcmp(dtype, "float32") || !std::strcmp(dtype, "int32")) return 4;
  if (!std::strcmp(dtype, "float16") || !std::strcmp(dtype, "bfloat16") || !std::strcmp(dtype, "int16")) return 2;
  if (!std::strcmp(dtype, "float64") || !std::strcmp(dtype, "int64")) return 8;
  if (!std::strcmp(dtype, "int8") || !std::strcmp(dtype, "uint8") || !std::strcmp(dtype, "bool")) return 1;
  return 0;
}

}  // namespace

extern "C" {

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
  const char* cache = static_cast<const char*>(params[0]);
  const char* fresh = static_cast<const char*>(params[1]);
  const float* slots = static_cast<const float*>(params[2]);
  char* out = static_cast<char*>(params[3]);
  const int64_t row = dim * esize, sequence = groups * length * row;
  for (int64_t b = 0; b < batch; ++b) {
    if (sequence) std::memcpy(out + b * sequence, cache + b * sequence, sequence);
    const float* slot = slots + (slot_rows == 1 ? 0 : b) * length;
    for (int64_t s = 0; s < length; ++s) {
      if (slot[s] == 0.f) continue;
      for (int64_t g = 0; g < groups; ++g)
        std::memcpy(out + ((b * groups + g) * length + s) * row, fresh + (b * groups + g) * row, row);
    }
  }
  return 0;
}

}  // extern "C"
