// What FP8 W8A8 Linear quantization adds to a KV-only calibration of the same model (issue 15:
// at most 15 %), measured in one run on the same samples:
//   kv-only    run_calibration with an FP8 per-tensor KV recipe;
//   fp8 w8a8   the same KV scheme plus recipes/fp8_w8a8_fp8_kv.yaml's Linear group: Linear-input
//              observers (q/k/v, o_proj, gate/up, down: the last layer's MLP runs too) during the
//              forward, then every planned weight's FP8 scales and codes (what the writer computes
//              from the checkpoint's weights: read, absmax, quantize);
//   quantized  fp8 w8a8 with --propagate quantized (FP8 weights in the forward).
// Each is run --reps times, alternating, and the fastest run counts (the machine is shared).
// Times are wall clock and the process's CPU time (all threads: less disturbed by other
// processes on a shared machine). The forward's cost grows with the tokens, the weights' does
// not, so the last line projects the ratio to the default calibration size (512 samples x 2048
// tokens) from the per-token forward times and the fixed weight time measured here.
//
//   fp8_overhead_bench DIR [--samples 32] [--seq 512] [--threads T] [--reps 2]
// DIR: a Hugging Face checkpoint (e.g. /work/shared/data/hf/babyllama-tok105) or one made by
// `calib_bench make DIR` (a random Llama-shaped bf16 model; --layers 16 --hidden 2048 --heads 32
// --kv-heads 8 --intermediate 8192 --vocab 128256 is Llama-3.2-1B's shape).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include <sys/resource.h>

#include <omp.h>

#include "bench_args.h"
#include "ctcal/data/sampling.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/pipeline/calibrate.h"
#include "ctcal/pipeline/plan.h"
#include "ctcal/quant/fp8_weight.h"
#include "ctcal/recipe/recipe.h"

namespace {

using bench::arg;

using Clock = std::chrono::steady_clock;

constexpr const char* kKvOnly = R"(q_stage:
  q_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false, observer: static_minmax}
)";
constexpr const char* kW8A8 = R"(q_stage:
  q_modifiers:
    QuantizationModifier:
      ignore: [lm_head]
      config_groups:
        group_0:
          targets: [Linear]
          weights: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false}
          input_activations: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false, observer: static_minmax}
      kv_cache_scheme: {num_bits: 8, type: float, symmetric: true, strategy: tensor, dynamic: false, observer: static_minmax}
)";

// The writer's work on the weights: scales and FP8 codes of every planned Linear layer.
void quantize_weights(const ctcal::Checkpoint& ckpt, const ctcal::CalibrationPlan& plan) {
  for (const auto& lp : plan.linear) {
    const std::string name = lp.module + ".weight";
    const ctcal::TensorInfo& t = ckpt.info(name);
    const int64_t rows = t.shape.at(0), cols = t.shape.at(1);
    const std::vector<float> w = ckpt.read_f32(name);  // [rows, cols]
    const ctcal::Fp8WeightScales s = ctcal::fp8_weight_scales(w.data(), rows, cols, lp.weights, t.dtype);
    const std::vector<uint8_t> codes = ctcal::fp8_quantize_weight(w.data(), rows, cols, s, t.dtype);
    if (codes.empty()) std::abort();
  }
}

// CPU seconds of this process so far, every thread.
double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Timing {
  double forward = 1e30, weights = 0;  // wall seconds of the best run
  double cpu_forward = 1e30, cpu_weights = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fp8_overhead_bench DIR [--samples N] [--seq S] [--threads T] [--reps R]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int64_t N = arg(argc, argv, "--samples", 32), S = arg(argc, argv, "--seq", 512);
  const int64_t reps = arg(argc, argv, "--reps", 2);
  omp_set_num_threads(static_cast<int>(arg(argc, argv, "--threads", omp_get_max_threads())));
  ctcal::Checkpoint ckpt(dir);
  const ctcal::ModelConfig c = ctcal::load_model_config(ckpt);
  const ctcal::DType storage = c.dtype.value_or(ckpt.weight_dtype());
  const ctcal::CalibrationPlan kv = ctcal::make_plan(ctcal::parse_recipe(kKvOnly, "kv-only"), c, storage);
  const ctcal::CalibrationPlan w8a8 = ctcal::make_plan(ctcal::parse_recipe(kW8A8, "fp8-w8a8"), c, storage);
  ctcal::SplitMix64 rng(7);
  std::vector<std::vector<int32_t>> samples(static_cast<std::size_t>(N));
  for (auto& s : samples)
    for (int64_t t = 0; t < S; ++t) s.push_back(static_cast<int32_t>(rng.bounded(static_cast<uint64_t>(c.vocab_size))));
  Timing best[3];
  for (int64_t r = 0; r < reps; ++r)
    for (int mode = 0; mode < 3; ++mode) {
      ctcal::CalibrateOptions opt;
      opt.quantized_forward = mode == 2;
      const auto t0 = Clock::now();
      const double c0 = cpu_seconds();
      ctcal::run_calibration(ckpt, mode == 0 ? kv : w8a8, samples, opt);
      const auto t1 = Clock::now();
      const double c1 = cpu_seconds();
      if (mode > 0) quantize_weights(ckpt, w8a8);
      Timing t;
      t.forward = std::chrono::duration<double>(t1 - t0).count();
      t.weights = std::chrono::duration<double>(Clock::now() - t1).count();
      t.cpu_forward = c1 - c0;
      t.cpu_weights = cpu_seconds() - c1;
      Timing& b = best[mode];
      if (t.forward + t.weights < b.forward + b.weights) {
        b.forward = t.forward;
        b.weights = t.weights;
      }
      if (t.cpu_forward + t.cpu_weights < b.cpu_forward + b.cpu_weights) {
        b.cpu_forward = t.cpu_forward;
        b.cpu_weights = t.cpu_weights;
      }
    }
  std::printf("%s (%s, %ld layers, hidden %ld, intermediate %ld), %ld samples x %ld tokens, %d threads, best of %ld\n",
              dir.c_str(), c.architecture.c_str(), static_cast<long>(c.num_hidden_layers), static_cast<long>(c.hidden_size),
              static_cast<long>(c.intermediate_size), static_cast<long>(N), static_cast<long>(S), omp_get_max_threads(),
              static_cast<long>(reps));
  const char* names[3] = {"kv-only", "fp8 w8a8 (input observers + weights to FP8)", "fp8 w8a8 --propagate quantized"};
  const double tokens = static_cast<double>(N * S), full = 512.0 * 2048.0;
  for (int m = 0; m < 3; ++m) {
    const Timing& t = best[m];
    std::printf("%-46s wall %7.2f s (forward %7.2f + weights %5.2f), ratio %.3f | cpu %7.2f s (forward %7.2f + weights "
                "%5.2f), ratio %.3f\n", names[m], t.forward + t.weights, t.forward, t.weights,
                (t.forward + t.weights) / best[0].forward, t.cpu_forward + t.cpu_weights, t.cpu_forward, t.cpu_weights,
                (t.cpu_forward + t.cpu_weights) / best[0].cpu_forward);
  }
  for (int m = 1; m < 3; ++m) {
    // At 512 x 2048 tokens: forward time per token measured here, the weights' fixed time.
    const double wall = (best[m].forward * full / tokens + best[m].weights) / (best[0].forward * full / tokens);
    const double cpu = (best[m].cpu_forward * full / tokens + best[m].cpu_weights) / (best[0].cpu_forward * full / tokens);
    std::printf("projected to 512 x 2048 tokens, %s: ratio %.3f wall, %.3f cpu (issue target <= 1.15)\n", names[m], wall,
                cpu);
  }
  return 0;
}
