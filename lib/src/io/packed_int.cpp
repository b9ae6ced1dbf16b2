#include "ctcal/io/packed_int.h"

#include "ctcal/error.h"

namespace ctcal {

namespace {

// Packs one line of n values (read with stride `step`) into `words` (ceil(n*bits/32) of them).
void pack_line(const int8_t* v, int64_t n, int64_t step, int bits, uint32_t* words) {
  const int offset = 1 << (bits - 1);
  for (int64_t i = 0; i < n; ++i) {
    const auto u = static_cast<uint32_t>(v[i * step] + offset);  // [0, 2^bits)
    const int64_t bit = i * bits;
    const int64_t w = bit / 32;
    const int shift = static_cast<int>(bit % 32);
    words[w] |= u << shift;
    if (shift + bits > 32) words[w + 1] |= u >> (32 - shift);  // the high part spills over
  }
}

int8_t unpack_one(const uint32_t* words, int64_t i, int bits) {
  const int64_t bit = i * bits;
  const int64_t w = bit / 32;
  const int shift = static_cast<int>(bit % 32);
  uint32_t u = words[w] >> shift;
  if (shift + bits > 32) u |= words[w + 1] << (32 - shift);
  u &= (1u << bits) - 1u;
  return static_cast<int8_t>(static_cast<int>(u) - (1 << (bits - 1)));
}

}  // namespace

std::vector<int32_t> pack_to_int32(const std::vector<int8_t>& values, int64_t rows, int64_t cols,
                                   int num_bits, int packed_dim) {
  CTCAL_ASSERT(num_bits >= 1 && num_bits <= 8, "pack_to_int32 needs 1..8 bits");
  CTCAL_ASSERT(static_cast<int64_t>(values.size()) == rows * cols, "pack_to_int32 size");
  if (packed_dim == 1) {
    const int64_t nw = packed_words(cols, num_bits);
    std::vector<uint32_t> out(static_cast<std::size_t>(rows * nw), 0u);  // [rows, nw]
    for (int64_t r = 0; r < rows; ++r) pack_line(values.data() + r * cols, cols, 1, num_bits, out.data() + r * nw);
    return {out.begin(), out.end()};
  }
  // packed_dim 0: pack each column; stored [nw, cols].
  const int64_t nw = packed_words(rows, num_bits);
  std::vector<uint32_t> col(static_cast<std::size_t>(nw));  // [nw]
  std::vector<int32_t> out(static_cast<std::size_t>(nw * cols));  // [nw, cols]
  for (int64_t c = 0; c < cols; ++c) {
    std::fill(col.begin(), col.end(), 0u);
    pack_line(values.data() + c, rows, cols, num_bits, col.data());
    for (int64_t w = 0; w < nw; ++w) out[static_cast<std::size_t>(w * cols + c)] = static_cast<int32_t>(col[static_cast<std::size_t>(w)]);
  }
  return out;
}

std::vector<int8_t> unpack_from_int32(const int32_t* packed, int64_t rows, int64_t cols,
                                      int num_bits, int packed_dim) {
  CTCAL_ASSERT(num_bits >= 1 && num_bits <= 8, "unpack_from_int32 needs 1..8 bits");
  std::vector<int8_t> out(static_cast<std::size_t>(rows * cols));  // [rows, cols]
  const auto* words = reinterpret_cast<const uint32_t*>(packed);
  if (packed_dim == 1) {
    const int64_t nw = packed_words(cols, num_bits);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        out[static_cast<std::size_t>(r * cols + c)] = unpack_one(words + r * nw, c, num_bits);
    return out;
  }
  const int64_t nw = packed_words(rows, num_bits);
  std::vector<uint32_t> col(static_cast<std::size_t>(nw));  // [nw]
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t w = 0; w < nw; ++w) col[static_cast<std::size_t>(w)] = words[w * cols + c];
    for (int64_t r = 0; r < rows; ++r)
      out[static_cast<std::size_t>(r * cols + c)] = unpack_one(col.data(), r, num_bits);
  }
  return out;
}

}  // namespace ctcal
