// The CUDA backend's attention alone, on one layer's shape: the fused kernel with 64- and 128-row
// query blocks and the cuBLAS-blocked attention it replaced, on the same random bf16 q/k/v, timed
// with CUDA events (best of --reps after one warm-up). Prints ms and TFLOP/s of the causal work
// (4 * head_dim FLOPs per (query, seen key, head)). Built with -DCTCAL_CUDA=ON; runs on a GPU
// (scripts/gpu_remote.sh bench-attention).
//
//   flash_attention_bench [--samples 8] [--seq 2048] [--heads 32] [--kv-heads 8] [--head-dim 128]
//                         [--window W] [--reps 5]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "bench_args.h"
#include "cuda_attention.h"
#include "flash_attention.h"

namespace {

using bench::arg;

using namespace ctcal;

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t samples = arg(argc, argv, "--samples", 8), seq = arg(argc, argv, "--seq", 2048);
  const int64_t heads = arg(argc, argv, "--heads", 32), kv_heads = arg(argc, argv, "--kv-heads", 8);
  const int64_t d = arg(argc, argv, "--head-dim", 128), reps = arg(argc, argv, "--reps", 5);
  const int64_t window = arg(argc, argv, "--window", 0);
  const AttentionShape shape =
      AttentionShape::plain(heads, kv_heads, d, window > 0 ? std::optional<int64_t>(window) : std::nullopt);
  std::vector<SampleSpan> spans;
  for (int64_t s = 0; s < samples; ++s) spans.push_back({s * seq, seq});
  const int64_t rows = samples * seq;

  // q [rows, heads * d], k/v [rows, kv_heads * d]: random bf16 (N(0, 1) rounded by truncation).
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random_bf16 = [&](int64_t n) {
    std::vector<uint16_t> v(static_cast<std::size_t>(n));
    for (auto& x : v) {
      const float f = normal(rng);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      x = static_cast<uint16_t>(u >> 16);
    }
    return v;
  };
  const auto hq = random_bf16(rows * shape.q_dim()), hk = random_bf16(rows * shape.kv_dim()),
             hv = random_bf16(rows * shape.kv_dim());
  uint16_t *q, *k, *v;
  float* out;
  ok(cudaMalloc(reinterpret_cast<void**>(&q), hq.size() * 2), "cudaMalloc");
  ok(cudaMalloc(reinterpret_cast<void**>(&k), hk.size() * 2), "cudaMalloc");
  ok(cudaMalloc(reinterpret_cast<void**>(&v), hv.size() * 2), "cudaMalloc");
  ok(cudaMalloc(reinterpret_cast<void**>(&out), static_cast<std::size_t>(rows * shape.q_dim()) * 4), "cudaMalloc");
  ok(cudaMemcpy(q, hq.data(), hq.size() * 2, cudaMemcpyHostToDevice), "upload");
  ok(cudaMemcpy(k, hk.data(), hk.size() * 2, cudaMemcpyHostToDevice), "upload");
  ok(cudaMemcpy(v, hv.data(), hv.size() * 2, cudaMemcpyHostToDevice), "upload");

  // The causal work: query t sees min(t + 1, window) keys.
  double pairs = 0;
  for (int64_t t = 0; t < seq; ++t) pairs += static_cast<double>(window > 0 ? std::min(t + 1, window) : t + 1);
  const double flops = 4.0 * static_cast<double>(d) * pairs * static_cast<double>(heads * samples);

  cudaStream_t stream;
  ok(cudaStreamCreate(&stream), "cudaStreamCreate");
  cublasHandle_t blas;
  cublasCreate(&blas);
  cuda::BlockedAttention blocked(blas, std::size_t{4} << 30);
  cudaEvent_t t0, t1;
  ok(cudaEventCreate(&t0), "cudaEventCreate");
  ok(cudaEventCreate(&t1), "cudaEventCreate");
  auto time = [&](const char* name, auto&& run) {
    run();  // warm-up (and the pointer tables / shared-memory opt-in)
    float best = std::numeric_limits<float>::max();
    for (int64_t r = 0; r < reps; ++r) {
      ok(cudaEventRecord(t0, stream), "cudaEventRecord");
      run();
      ok(cudaEventRecord(t1, stream), "cudaEventRecord");
      ok(cudaEventSynchronize(t1), "cudaEventSynchronize");
      float ms = 0;
      ok(cudaEventElapsedTime(&ms, t0, t1), "cudaEventElapsedTime");
      best = std::min(best, ms);
    }
    std::printf("  %-28s %8.3f ms  %6.1f TFLOP/s\n", name, best, flops / (best * 1e-3) / 1e12);
    return best;
  };
  std::printf("attention: %lld samples x %lld tokens, %lld/%lld heads, head_dim %lld, window %s\n",
              static_cast<long long>(samples), static_cast<long long>(seq), static_cast<long long>(heads),
              static_cast<long long>(kv_heads), static_cast<long long>(d),
              window > 0 ? std::to_string(window).c_str() : "none");
  float fused[2] = {0, 0};
  int at = 0;
  for (int block_rows : {64, 128}) {
    const std::vector<cuda::FlashItem> items = cuda::flash_items(spans, block_rows);
    cuda::FlashItem* ditems;
    ok(cudaMalloc(reinterpret_cast<void**>(&ditems), items.size() * sizeof(cuda::FlashItem)), "cudaMalloc");
    ok(cudaMemcpy(ditems, items.data(), items.size() * sizeof(cuda::FlashItem), cudaMemcpyHostToDevice), "upload");
    const std::string name = "fused, " + std::to_string(block_rows) + "-row blocks";
    fused[at++] = time(name.c_str(), [&] {
      cuda::flash_attention(q, k, v, {out, nullptr}, shape.q_dim(), shape.kv_dim(), heads, kv_heads, d,
                            window > 0 ? window : std::numeric_limits<int64_t>::max(), shape.scale, nullptr, ditems,
                            static_cast<int64_t>(items.size()), block_rows, stream);
    });
    ok(cudaFree(ditems), "cudaFree");
  }
  const float cublas = time("cuBLAS-blocked (512 rows)", [&] { blocked.run(q, k, v, out, spans, shape, stream); });
  std::printf("  blocked / fused: %.2fx (64 rows), %.2fx (128 rows)\n", cublas / fused[0], cublas / fused[1]);
  cublasDestroy(blas);
  return 0;
}
