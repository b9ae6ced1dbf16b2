// The CPU bf16 projection GEMMs alone (issue 17, item 6): ctcal's fixed-tile matmul_bf16 against
// oneDNN's own multi-threaded matmul on the same inputs, for the Llama-3.1-8B projection shapes.
// bench/compare_gemm.py runs it beside PyTorch's bf16 matmul at the same thread count.
//
//   gemm_bench [--threads T] [--rows N] [--reps R] [--shape 8b|1b]
//
// Prints, per projection: packing time (once per layer in calibration; best of R), best-of-R time and
// TFLOP/s of the tiled path and of oneDNN's threaded path (whose summation order depends on the
// thread count, which is why ctcal does not use it; here it is the ceiling of this oneDNN build).
#include <algorithm>
#include <memory>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <dnnl.hpp>
#include <omp.h>

#include "bench_args.h"
#include "ctcal/model/onednn_matmul.h"
#include "ctcal/data/sampling.h"

namespace {

using bench::arg;
using bench::arg_str;

using Clock = std::chrono::steady_clock;

// Random bf16 bits of N(0, ~0.02)-sized values: exponent fixed, random mantissa and sign.
std::vector<uint16_t> random_bf16(std::size_t n, uint64_t seed) {
  ctcal::SplitMix64 rng(seed);
  std::vector<uint16_t> v(n);
  for (auto& x : v) {
    const uint64_t r = rng.next();
    x = static_cast<uint16_t>(0x3C00u | (r & 0x7Fu) | ((r >> 8) & 1u) << 15);
  }
  return v;
}

template <typename F>
double best_seconds(int reps, F run) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    run();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// oneDNN's own threaded bf16 matmul: y [n, out] f32 = x [n, in] bf16 * w^T, w [out, in] bf16,
// weights in the layout it picks (packed once, outside the timing).
double onednn_threaded(const uint16_t* x, const uint16_t* w, float* y, int64_t n, int64_t in, int64_t out, int reps) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const dnnl::memory::desc src({n, in}, dt::bf16, tag::ab), dst({n, out}, dt::f32, tag::ab);
  const dnnl::memory::desc wany({in, out}, dt::bf16, tag::any);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wany, dst), eng);
  dnnl::memory wplain({{in, out}, dt::bf16, tag::ba}, eng, const_cast<uint16_t*>(w));
  dnnl::memory wpacked(pd.weights_desc(), eng);
  dnnl::reorder(wplain, wpacked).execute(s, wplain, wpacked);
  dnnl::memory xm(src, eng, const_cast<uint16_t*>(x)), ym(dst, eng, y);
  dnnl::matmul prim(pd);
  return best_seconds(reps, [&] {
    prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wpacked}, {DNNL_ARG_DST, ym}});
    s.wait();
  });
}

// The ISA oneDNN's kernels use here, by name.
const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::avx512_core_amx: return "AVX512 + AMX";
    case dnnl::cpu_isa::avx512_core_bf16: return "AVX512-BF16";
    case dnnl::cpu_isa::avx512_core_vnni: return "AVX512-VNNI";
    case dnnl::cpu_isa::avx512_core: return "AVX512";
    case dnnl::cpu_isa::avx2_vnni: return "AVX2-VNNI";
    case dnnl::cpu_isa::avx2: return "AVX2";
    default: return "other";
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = static_cast<int>(arg(argc, argv, "--threads", omp_get_max_threads()));
  const int64_t n = arg(argc, argv, "--rows", 2048);
  const int reps = static_cast<int>(arg(argc, argv, "--reps", 5));
  const std::string shape = arg_str(argc, argv, "--shape", "8b");
  omp_set_num_threads(threads);
  struct Proj {
    const char* name;
    int64_t out, in;
  };
  const std::vector<Proj> projs = shape == "1b"
      ? std::vector<Proj>{{"q/o", 2048, 2048}, {"k/v", 512, 2048}, {"gate/up", 8192, 2048}, {"down", 2048, 8192}}
      : std::vector<Proj>{{"q/o", 4096, 4096}, {"k/v", 1024, 4096}, {"gate/up", 14336, 4096}, {"down", 4096, 14336}};
  std::printf("gemm_bench: %s shapes, %ld rows, %d threads, best of %d; bf16 in, fp32 out; oneDNN ISA %s, native bf16 %s\n",
              shape.c_str(), static_cast<long>(n), threads, reps, isa_name(dnnl::get_effective_cpu_isa()),
              ctcal::cpu_has_native_bf16() ? "yes" : "no");
  for (const Proj& p : projs) {
    const std::vector<uint16_t> x = random_bf16(static_cast<std::size_t>(n * p.in), 1);   // [n, in]
    const std::vector<uint16_t> w = random_bf16(static_cast<std::size_t>(p.out * p.in), 2);  // [out, in]
    std::vector<float> y(static_cast<std::size_t>(n * p.out));                                 // [n, out]
    const double flop = 2.0 * static_cast<double>(n) * static_cast<double>(p.out) * static_cast<double>(p.in);
    std::unique_ptr<ctcal::PackedBf16Weights> packed;
    // Packing runs once per layer in calibration; best of `reps` after the first (which JIT-compiles).
    packed = std::make_unique<ctcal::PackedBf16Weights>(w.data(), p.out, p.in);
    const double pack = best_seconds(reps, [&] {
      packed.reset();  // its buffers go back to the pool, as between layers
      packed = std::make_unique<ctcal::PackedBf16Weights>(w.data(), p.out, p.in);
    });
    ctcal::matmul_bf16(x.data(), n, *packed, y.data());  // warm-up: JIT and buffers
    const double tiled = best_seconds(reps, [&] { ctcal::matmul_bf16(x.data(), n, *packed, y.data()); });
    const double native = onednn_threaded(x.data(), w.data(), y.data(), n, p.in, p.out, reps);
    std::printf("%-8s [%ld x %ld] x [%ld x %ld]^T: pack %.2f ms | tiled %.2f ms %.2f TFLOP/s | oneDNN threaded %.2f ms %.2f TFLOP/s\n",
                p.name, static_cast<long>(n), static_cast<long>(p.in), static_cast<long>(p.out), static_cast<long>(p.in),
                pack * 1e3, tiled * 1e3, flop / tiled / 1e12, native * 1e3, flop / native / 1e12);
  }
  return 0;
}
