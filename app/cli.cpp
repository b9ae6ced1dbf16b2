#include "cli.h"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "commands/calibrate_command.h"
#include "commands/eval_command.h"
#include "commands/inspect_command.h"
#include "commands/tokenize_command.h"
#include "commands/validate_command.h"
#include "ctcal/error.h"
#include "ctcal/io/output_dir.h"
#include "ctcal/run_defaults.h"
#include "ctcal/util/ranks.h"
#include "ctcal/version.h"
#include "logging.h"

namespace ctcal::app {

namespace {

std::atomic<bool> g_cancel{false};

extern "C" void on_signal(int) {
  // Cooperative: the calibration checks the flag between layers and unwinds, removing its
  // temporary directory. A second signal exits at once (the staging dir is removed by name).
  if (!g_cancel.exchange(true)) {
    // On a line of its own (the progress line may be mid-way); write() is async-signal-safe.
    static const char kMsg[] = "\nstopping... (Ctrl-C again to abort)\n";
    [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    return;
  }
  const char* dir = active_staging_dir();
  if (dir && dir[0]) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  static const char kAbort[] = "aborted (exit 130); the temporary output was removed\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, kAbort, sizeof(kAbort) - 1);
  std::_Exit(130);
}

constexpr const char* kCalibrateExamples = R"(
Examples:
  ctcal calibrate recipes/fp8_kv_per_tensor.yaml --model ./Llama-3.2-1B \
      --dataset calib.jsonl --output ./Llama-3.2-1B-FP8-KV
  ctcal calibrate recipes/fp8_kv_per_head.yaml --model DIR --dataset wiki.txt \
      --output OUT --num-samples 128 --max-seq-length 1024 --threads 8
  ctcal calibrate recipe.yaml --model DIR --dataset data.jsonl --dry-run

Datasets: .jsonl rows with "input_ids" (or "text", tokenized with the model's tokenizer),
.json arrays of the same, .txt documents separated by blank lines or <|endoftext|> lines.
Text is tokenized with the model's tokenizer.json (BPE) or tokenizer.model (SentencePiece).
Exit codes: 0 ok, 1 other error, 2 usage (incl. existing --output), 3 invalid recipe,
4 bad model/dataset/IO, 130 interrupted (Ctrl-C twice).)";

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"ctcal: calibrate KV-cache (and attention) quantization for Llama-family Hugging Face "
               "checkpoints and write a compressed-tensors checkpoint that vLLM loads."};
  app.set_version_flag("--version", fmt::format("ctcal {} (compressed-tensors format {})", kVersion,
                                                kCompressedTensorsVersion));
  app.require_subcommand(1);
  app.fallthrough();  // -v, -q and --log-json also work after the subcommand (SPEC §1 places them there)
  int verbose = 0;
  bool quiet = false, log_json = false;
  app.add_flag("-v,--verbose", verbose, "More log output (debug)");
  app.add_flag("-q,--quiet", quiet, "Only warnings and errors");
  app.add_flag("--log-json", log_json, "Log lines as JSON objects on stderr");

  CalibrateRequest req;
  auto* cal = app.add_subcommand("calibrate", "Calibrate KV-cache scales and write a checkpoint");
  cal->footer(kCalibrateExamples);
  cal->add_option("recipe", req.recipe, "llm-compressor style recipe (YAML)")->required()->check(CLI::ExistingFile);
  cal->add_option("--model", req.model, "Hugging Face Llama checkpoint directory");
  cal->add_option("--dataset", req.dataset, "Calibration data (.jsonl, .json, .txt)");
  cal->add_option("--output", req.output, "Output checkpoint directory (must not exist)");
  cal->add_option("--tokenizer", req.tokenizer, "tokenizer.json, tokenizer.model or a directory to use instead of the model's");
  // The defaults a run resolves to when neither flag nor recipe sets them (ctcal/run_defaults.h).
  cal->add_option("--num-samples", req.num_samples, fmt::format("Samples to calibrate on [{}]", kDefaultNumSamples));
  cal->add_option("--max-seq-length", req.max_seq_length,
                  fmt::format("Tokens per sample at most [{}]", kDefaultMaxSeqLength));
  cal->add_option("--seed", req.seed, fmt::format("Shuffle seed [{}]", kDefaultSeed));
  cal->add_flag("--no-shuffle", req.no_shuffle, "Take the first samples in file order");
  cal->add_option("--threads", req.threads, "Worker threads [all cores]")->check(CLI::NonNegativeNumber);
  cal->add_option("--chunk-tokens", req.chunk_tokens,
                  fmt::format("Tokens per GEMM chunk (memory vs speed) [{}]", req.chunk_tokens))
      ->check(CLI::PositiveNumber);
  cal->add_option("--compute-dtype", req.compute_dtype,
                  "fp32 (default, matches transformers to 1e-6) or bf16 (bf16 GEMM inputs, fp32 accumulation "
                  "and everything else; 1.7x faster on an AVX512-BF16 Zen 4; scales within 1 %)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  cal->add_option("--device", req.device,
                  "cpu, or cuda[:N]: the layers on a GPU (bf16 tensor-core GEMMs, fp32 accumulation; a build with "
                  "-DCTCAL_CUDA=ON). Under mpirun, cuda gives each rank of a host its own GPU [cpu]");
  cal->add_option("--max-gpu-memory", req.max_gpu_memory_mb,
                  "With --device cuda: GPU memory in MB the run may use beyond its two weight slots and scratch "
                  "(e.g. beside a serving engine); the hidden states then go up and down per chunk [what is free]")
      ->check(CLI::PositiveNumber);
  cal->add_option("--max-memory", req.max_memory_mb, "Memory budget in MB; picks the tokens per chunk")
      ->check(CLI::PositiveNumber);
  cal->add_option("--key-range", req.key_range,
                  "K's range: observed (post-RoPE keys, llm-compressor's behaviour) or envelope (pre-RoPE pair "
                  "norms: k_scale holds at every position) [" + std::string(kDefaultKeyRange) + "]")
      ->check(CLI::IsMember({"observed", "envelope"}));
  cal->add_option("--propagate", req.propagate,
                  "The calibration forward's Linear weights: unquantized (llm-compressor 0.14's behaviour) or "
                  "quantized (the FP8 weights written, so the output read back reproduces its KV scales) [" +
                      std::string(kDefaultPropagate) + "]")
      ->check(CLI::IsMember({"unquantized", "quantized"}));
  cal->add_option("--kv-skip-layers", req.kv_skip_layers,
                  "Keep the N layers whose KV quantization costs most KL (each quantized alone) unquantized: "
                  "written to ignore, served with vLLM's --kv-cache-dtype-skip-layers [0]")
      ->check(CLI::NonNegativeNumber);
  cal->add_option("--kv-cache-dtype", req.kv_cache_dtype,
                  "auto (the recipe's KV scheme), or nvfp4 (as vLLM spells it): search the NVFP4 decode multipliers "
                  "after the FP8 per-tensor calibration and write them as the k/v scales, for vllm serve "
                  "--kv-cache-dtype nvfp4 [auto]");
  cal->add_flag("--overwrite", req.overwrite, "Replace an existing --output");
  cal->add_flag("--dry-run", req.dry_run, "Check everything and print the plan; run nothing");
  cal->add_option("--report", req.report, "Write a self-contained HTML report: the plan, per-layer ranges against what the scales represent, scales");

  std::string validate_recipe;
  bool validate_json = false;
  auto* val = app.add_subcommand("validate", "Parse and check a recipe; print the effective recipe");
  val->add_option("recipe", validate_recipe, "Recipe (YAML)")->required()->check(CLI::ExistingFile);
  val->add_flag("--json", validate_json, "Print JSON instead of YAML");

  EvalRequest ev;
  EvalOutput ev_out;
  auto* evc = app.add_subcommand("eval", "Measure what KV scales cost in accuracy (NLL, KL, top-1, SQNR)");
  evc->footer(R"(
Examples:
  ctcal eval --model DIR --dataset heldout.txt --quantized OUT_FP8 --quantized OUT_R3
  ctcal eval --model DIR --dataset heldout.txt --calibration-dataset calib.txt \
      --recipe recipes/fp8_kv_per_head.yaml --recipe recipes/r2_r3_int4_kv.yaml --json
  ctcal eval --model DIR --dataset heldout.txt --quantized OUT_FP8 --kv-cache-dtype nvfp4)");
  evc->add_option("--model", ev.model, "Unquantized Hugging Face checkpoint (the baseline)")->required();
  evc->add_option("--dataset", ev.dataset, "Held-out evaluation data (.jsonl, .json, .txt)")->required();
  evc->add_option("--quantized", ev.quantized, "A quantized checkpoint to evaluate (repeatable)");
  evc->add_option("--recipe", ev.recipes, "A recipe to calibrate on the fly and evaluate (repeatable)");
  evc->add_option("--calibration-dataset", ev.calibration_dataset, "Calibration data for --recipe");
  evc->add_option("--tokenizer", ev.tokenizer, "tokenizer.json, tokenizer.model or a directory to use instead of the model's");
  // The request's own defaults, so that the help text cannot drift from them.
  evc->add_option("--num-samples", ev.num_samples, fmt::format("Samples [{}]", ev.num_samples))
      ->check(CLI::PositiveNumber);
  evc->add_option("--max-seq-length", ev.max_seq_length, fmt::format("Tokens per sample at most [{}]", ev.max_seq_length))
      ->check(CLI::PositiveNumber);
  evc->add_option("--seed", ev.seed, fmt::format("Shuffle seed [{}]", kDefaultSeed));
  evc->add_flag("--no-shuffle", ev.no_shuffle, "Take samples in file order");
  evc->add_option("--threads", ev.threads, "Worker threads [all cores]")->check(CLI::NonNegativeNumber);
  evc->add_flag("--json", ev_out.json, "Print the metrics as JSON on stdout");
  evc->add_option("--device", ev.device, "cpu, or cuda[:N]: the forward passes on a GPU (see calibrate) [cpu]");
  evc->add_option("--position-offset", ev.position_offset,
                  "Place every sample at positions N.. instead of 0.. (K ranges at long context) [0]")
      ->check(CLI::NonNegativeNumber);
  evc->add_flag("--layer-sensitivity", ev.layer_sensitivity,
                "Also quantize each layer alone and rank the layers by KL (one extra pass per layer and run)");
  evc->add_option("--kv-cache-dtype", ev.kv_cache_dtype,
                  "auto (each checkpoint's own KV scheme), or nvfp4 (as vLLM spells it): beside each FP8 run, vLLM's "
                  "NVFP4 KV cache at s = 1.0, amax/448, amax/2688 and, with --calibration-dataset, the searched s [auto]");
  evc->add_flag("--no-unit-scales", ev.no_unit_scales,
                "Skip the baseline with every scale 1.0 (vLLM's default without scales) beside each run");
  evc->add_option("--report", ev_out.report, "Write a self-contained HTML report: metrics per run with definitions, SQNR per format, ranges, scales");

  InspectRequest in;
  auto* ins = app.add_subcommand("inspect", "Show what a checkpoint holds, catch bad scales, give the serving verdict");
  ins->footer(R"(
Examples:
  ctcal inspect ./Llama-3.2-1B-FP8-KV
  ctcal inspect ./model/config.json --json | jq .problems
  ctcal inspect OUT --strict    # exit 5 when any problem is found (for CI)
  ctcal inspect OUT --strict --engine vllm-r3   # judge by the R3 serving branch's rules
Exit codes: 0 ok, 4 not a checkpoint, 5 with --strict: a problem was found, or the engine
(vLLM 0.34.0's rules unless --engine vllm-r3) cannot load the checkpoint or serve its KV scales.)");
  ins->add_option("path", in.path, "Checkpoint directory or config.json")->required();
  ins->add_flag("--json", in.json, "One JSON document on stdout (schema: docs/inspect.schema.json)");
  ins->add_flag("--strict", in.strict, "Exit 5 when a problem was found or the engine cannot load or serve it");
  ins->add_option("--engine", in.engine,
                  "Whose loading rules --strict checks: vllm (vLLM 0.34.0, default; docs/serving.md) or vllm-r3 "
                  "(the R3 serving branch)")
      ->check(CLI::IsMember({"vllm", "vllm-r3"}));

  TokenizeRequest tk;
  auto* tkc = app.add_subcommand("tokenize", "Print the token ids calibration will see, one line per dataset row");
  tkc->add_option("--tokenizer", tk.tokenizer, "tokenizer.json, tokenizer.model, or a model directory")->required();
  tkc->add_option("--dataset", tk.dataset, "Dataset (.jsonl, .json, .txt)")->required();
  tkc->add_flag("--no-special-tokens", tk.no_special_tokens, "Do not add BOS/EOS");
  tkc->add_option("--max-seq-length", tk.max_seq_length, "Truncate each row")->check(CLI::PositiveNumber);
  tkc->add_flag("--json", tk.json, "One {\"input_ids\": [...]} object per line");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    // CLI11 returns 0 for --help/--version; map its parse errors to the usage exit code.
    return rc == 0 ? 0 : static_cast<int>(ExitCode::kUsage);
  }
  // Under mpirun only rank 0 reports; the others log warnings and errors (setup_logging).
  setup_logging(quiet ? -1 : verbose, log_json);

  if (*cal) {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    req.cancel = &g_cancel;
    req.progress_tty = ::isatty(STDERR_FILENO) && !quiet && !log_json && Ranks::root();
    return run_calibrate(req, std::cout);
  }
  if (*val) return run_validate(validate_recipe, validate_json, std::cout);
  if (*evc) {
    ev.progress_tty = ::isatty(STDERR_FILENO) && !quiet && !log_json;
    return run_eval(ev, ev_out, std::cout);
  }
  if (*tkc) return run_tokenize(tk, std::cout);
  if (*ins) {
    in.color = ::isatty(STDOUT_FILENO) != 0;
    return run_inspect(in, std::cout);
  }
  return static_cast<int>(ExitCode::kUsage);
}

}  // namespace ctcal::app
