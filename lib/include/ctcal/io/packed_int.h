#pragma once
// compressed-tensors' int32 packing of 1..8-bit integers (compressors/pack_quantized/helpers.py
// `pack_to_int32` / `unpack_from_int32`): each row of E values is stored as ceil(E*bits/32)
// int32 words; value i (offset by +2^(bits-1) to unsigned) occupies bits [i*bits, (i+1)*bits)
// of the row's little-endian bit stream, crossing word boundaries when bits does not divide 32.
// `packed_dim` 0 packs along rows instead (the zero points of asymmetric group/channel weights).
#include <cstdint>
#include <vector>

namespace ctcal {

// values: [rows, cols] int8 in [-2^(bits-1), 2^(bits-1)); returns [rows, ceil(cols*bits/32)]
// (packed_dim 1) or [ceil(rows*bits/32), cols] (packed_dim 0).
std::vector<int32_t> pack_to_int32(const std::vector<int8_t>& values, int64_t rows, int64_t cols,
                                   int num_bits, int packed_dim = 1);

// packed: the words above; rows, cols: the unpacked shape. Returns [rows, cols].
std::vector<int8_t> unpack_from_int32(const int32_t* packed, int64_t rows, int64_t cols,
                                      int num_bits, int packed_dim = 1);

// Words per packed line of n values.
inline int64_t packed_words(int64_t n, int num_bits) { return (n * num_bits + 31) / 32; }

}  // namespace ctcal
