// The CUDA backend's projection GEMMs alone (cuda::xwt_gemm, the one cublasGemmEx call every
// projection goes through), on one chunk of a layer: each projection as the layer loop runs it,
// and q/k/v and gate/up each fused into one GEMM over their concatenated weights, to show what
// fusing them would buy. CUDA events, best of --reps after one warm-up; TFLOP/s = 2 n in out / t.
// Built with -DCTCAL_CUDA=ON; runs on a GPU (scripts/gpu_remote.sh bench-gemm).
//
// With --tokens T --layers L it also runs every projection GEMM of a whole calibration forward
// (T tokens in chunks of --rows, L layers, the last without its MLP, as calibration skips it)
// back to back with nothing else, timed once as a whole: the floor of ctcal's GPU time with these
// GEMMs at the clocks the GPU sustains (gpu_bench.py's "GEMM floor" line compares it).
//
//   projection_gemm_bench [--rows 16384] [--hidden 4096] [--q-dim 4096] [--kv-dim 1024]
//                         [--intermediate 14336] [--reps 5] [--tokens 0] [--layers 0]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "bench_args.h"
#include "cuda_support.h"
#include "cuda_timers.h"

namespace {

using bench::arg;

using namespace ctcal;

// Best time of `reps` runs of f on the handle's stream (one warm-up first), in ms.
float best_ms(cudaStream_t s, int reps, const std::function<void()>& f) {
  cuda::Event a, b;
  f();
  float best = 1e30f;
  for (int i = 0; i < reps; ++i) {
    cuda::check(cudaEventRecord(a.get(), s), "cudaEventRecord");
    f();
    cuda::check(cudaEventRecord(b.get(), s), "cudaEventRecord");
    cuda::check(cudaEventSynchronize(b.get()), "cudaEventSynchronize");
    best = std::min(best, static_cast<float>(cuda::seconds_between(a.get(), b.get()) * 1e3));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = arg(argc, argv, "--rows", 16384), h = arg(argc, argv, "--hidden", 4096);
  const int64_t qd = arg(argc, argv, "--q-dim", 4096), kvd = arg(argc, argv, "--kv-dim", 1024);
  const int64_t f = arg(argc, argv, "--intermediate", 14336);
  const int reps = static_cast<int>(arg(argc, argv, "--reps", 5));
  cuda::Stream stream;
  cublasHandle_t blas = nullptr;
  cuda::check(cublasCreate(&blas), "cublasCreate");
  cuda::check(cublasSetStream(blas, stream.get()), "cublasSetStream");
  // Random bf16 inputs and weights (|v| in [2^-8, 2^-7), random signs and mantissas): constant
  // operands draw less power, and the H200 then clocks its tensor cores higher than a real run does.
  const int64_t widest = std::max(h, f);
  std::vector<uint16_t> fill(static_cast<std::size_t>(std::max(n * widest, (qd + 2 * kvd + 2 * f) * widest)));
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (auto& v : fill) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;  // an LCG: speed, not statistics
    v = static_cast<uint16_t>(0x3B80u | ((state >> 33) & 0x7Fu) | (((state >> 41) & 1u) << 15));
  }
  cuda::DeviceBuffer<uint16_t> x(static_cast<std::size_t>(n * widest));                     // [n, max(hidden, intermediate)]
  cuda::DeviceBuffer<uint16_t> w(static_cast<std::size_t>((qd + 2 * kvd + 2 * f) * widest));  // weights, concatenated
  cuda::DeviceBuffer<float> y(static_cast<std::size_t>(n * std::max(qd + 2 * kvd, 2 * f)));  // [n, out] fp32 (or bf16)
  cuda::check(cudaMemcpy(x.get(), fill.data(), x.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda::check(cudaMemcpy(w.get(), fill.data(), w.size() * 2, cudaMemcpyHostToDevice), "cudaMemcpy");
  cuda::check(cudaMemset(y.get(), 0, y.size() * 4), "cudaMemset");
  std::printf("projection GEMMs, %ld rows, hidden %ld, q_dim %ld, kv_dim %ld, intermediate %ld; bf16 inputs, fp32 accumulation\n",
              static_cast<long>(n), static_cast<long>(h), static_cast<long>(qd), static_cast<long>(kvd), static_cast<long>(f));
  struct Case {
    const char* name;
    std::vector<std::pair<int64_t, int64_t>> gemms;  // (in, out) of each GEMM run back to back
    cudaDataType out_type;
    float beta;
  };
  const std::vector<Case> cases = {
      {"q, k, v: three GEMMs, fp32 out", {{h, qd}, {h, kvd}, {h, kvd}}, CUDA_R_32F, 0.0f},
      {"q|k|v: one GEMM, fp32 out", {{h, qd + 2 * kvd}}, CUDA_R_32F, 0.0f},
      {"o_proj, adding into fp32", {{qd, h}}, CUDA_R_32F, 1.0f},
      {"gate, up: two GEMMs, bf16 out", {{h, f}, {h, f}}, CUDA_R_16BF, 0.0f},
      {"gate|up: one GEMM, bf16 out", {{h, 2 * f}}, CUDA_R_16BF, 0.0f},  // not used: measured no faster
      {"down_proj, adding into fp32", {{f, h}}, CUDA_R_32F, 1.0f},
  };
  for (const Case& c : cases) {
    double flop = 0;
    for (const auto& [in, out] : c.gemms) flop += 2.0 * static_cast<double>(n) * static_cast<double>(in) * static_cast<double>(out);
    const float ms = best_ms(stream.get(), reps, [&] {
      for (const auto& [in, out] : c.gemms) cuda::xwt_gemm(blas, x.get(), n, in, w.get(), out, y.get(), c.out_type, c.beta, c.name);
    });
    std::printf("  %-32s %7.3f ms  %6.1f TFLOP/s\n", c.name, ms, flop / (ms * 1e-3) / 1e12);
  }
  const int64_t tokens = arg(argc, argv, "--tokens", 0), layers = arg(argc, argv, "--layers", 0);
  if (tokens > 0 && layers > 0) {
    auto forward = [&](int64_t n_layers) {  // the layer loop's GEMM calls, in its order
      for (int64_t l = 0; l < n_layers; ++l)
        for (int64_t r0 = 0; r0 < tokens; r0 += n) {
          const int64_t rows = std::min(n, tokens - r0);
          cuda::xwt_gemm(blas, x.get(), rows, h, w.get(), qd + 2 * kvd, y.get(), CUDA_R_32F, 0.0f, "q|k|v");
          cuda::xwt_gemm(blas, x.get(), rows, qd, w.get(), h, y.get(), CUDA_R_32F, 1.0f, "o_proj");
          if (l + 1 == n_layers) continue;  // calibration skips the last layer's MLP
          cuda::xwt_gemm(blas, x.get(), rows, h, w.get(), f, y.get(), CUDA_R_16BF, 0.0f, "gate");
          cuda::xwt_gemm(blas, x.get(), rows, h, w.get(), f, y.get(), CUDA_R_16BF, 0.0f, "up");
          cuda::xwt_gemm(blas, x.get(), rows, f, w.get(), h, y.get(), CUDA_R_32F, 1.0f, "down");
        }
    };
    const double per_token = 2.0 * static_cast<double>(h * (qd + 2 * kvd) + qd * h);
    const double flop = static_cast<double>(tokens) *
                        (per_token * static_cast<double>(layers) + 6.0 * static_cast<double>(h * f) * static_cast<double>(layers - 1));
    const float ms = best_ms(stream.get(), 1, [&] { forward(layers); });  // one warm-up forward, then one timed
    std::printf("GEMM floor: the projections of a %ld-token, %ld-layer forward alone, back to back: %.3f s, %.1f TFLOP/s "
                "(%.0f tok/s at most)\n", static_cast<long>(tokens), static_cast<long>(layers), ms * 1e-3,
                flop / (ms * 1e-3) / 1e12, static_cast<double>(tokens) / (ms * 1e-3));
  }
  cublasDestroy(blas);
  return 0;
}
