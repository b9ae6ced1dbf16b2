#pragma once
// GEMMs through oneDNN (the library PyTorch's own bf16 matmul uses). bf16: bf16 inputs, fp32
// accumulation and output. Used by `--compute-dtype bf16` for the projections only; norms,
// RoPE, attention, softmax and observers stay in fp32.
#include <cstdint>
#include <vector>

#include "ctcal/model/tensor_types.h"

namespace ctcal {

// True when the CPU has native bf16 dot products (AVX512-BF16 or AMX); oneDNN would otherwise
// emulate them slowly or refuse.
bool cpu_has_native_bf16();

// y[n, out] = x[n, in] (rounded to bf16) * w_bf16[out, in]^T, accumulated in fp32.
void matmul_bf16(const Eigen::Ref<const RowMatrix>& x, const std::vector<uint16_t>& w_bf16, int64_t out,
                 Eigen::Ref<RowMatrix> y);

// y[n, out] = x[n, in] * w[out, in]^T in fp32 through oneDNN (its brgemm kernels use the CPU's
// widest ISA: +12 % over Eigen's GEMM on the Zen 4 machine, more on Intel). The default;
// CTCAL_GEMM=eigen selects Eigen's GEMM instead.
void matmul_f32_onednn(const Eigen::Ref<const RowMatrix>& x, const RowMatrix& w, Eigen::Ref<RowMatrix> y);
bool use_onednn_f32();

}  // namespace ctcal
