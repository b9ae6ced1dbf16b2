#pragma once
// The fp32 projection GEMM (--compute-dtype fp32) with one summation order for every output,
// whatever the thread count, the tiling, the rows a call gets (chunks, MPI ranks) or the SIMD width:
//
//   y(r, c) = fma(x(r, in-1), w(c, in-1), ... fma(x(r, 1), w(c, 1), fma(x(r, 0), w(c, 0), 0.0f)))
//
// one fused multiply-add per k, in order, each rounded to fp32. Vector lanes run over output
// columns, so every lane performs exactly that scalar sequence; k blocks carry the running sum
// through y. The result is therefore bitwise that of the scalar loop above on every CPU.
// oneDNN's sgemm, which this replaces, chose its partition and kernels (and with them each
// output's summation order) from the thread count and the row count: on a 2-core AVX2 machine
// (EPYC Zen 3) --threads 8 and 16 gave other bits than --threads 1, and so other scales, for
// stories260K (a 577-row call differed at 2 threads already); the same rows in calls of different
// row counts differed too.
#include <cstdint>

namespace ctcal {

enum class GemmIsa { kScalar, kAvx2, kAvx512 };

// The widest kernel this CPU runs (AVX-512F, else AVX2 with FMA, else scalar std::fma).
GemmIsa best_gemm_isa();

// y[n, out] = x[n, in] * w[out, in]^T, in the order above. x rows are ldx floats apart, y rows
// ldy floats apart (ldx >= in, ldy >= out); w is dense row-major (PyTorch's Linear.weight).
// Runs on OpenMP's threads (called inside a parallel region, on the calling thread alone). `isa`
// is for tests; every value gives the same bits.
void matmul_f32_fixed_order(const float* x, int64_t ldx, int64_t n, int64_t in, const float* w, int64_t out,
                            float* y, int64_t ldy, GemmIsa isa = best_gemm_isa());

}  // namespace ctcal
