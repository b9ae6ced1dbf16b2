# Two commands on a fresh Debian 12 machine: `make demo` and `make test`.
# CTCAL_DATA points at the shared data folder (default ../shared/data).
BUILD ?= build
BUILD_ASAN ?= build-asan
BUILD_CUDA ?= build-cuda
JOBS ?= $(shell nproc)
CTCAL_DATA ?= $(abspath ../shared/data)
export CTCAL_DATA
MAKEFLAGS += --no-print-directory
# bash with pipefail: a build line that filters the compiler's output still fails when the
# compiler fails (a failed build must never let tests run stale binaries).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
BENCH_MODEL ?= /tmp/ctcal-bench-model
DEMO_OUT ?= demo-output/stories260K-fp8-kv

.PHONY: deps build demo test test-smoke test-asan build-cuda gpu-bundle bench clean

deps:
	@bash scripts/install_deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) 2>&1 | { grep -v "^\(gmake\|\[\)" || true; }

# Calibrates the real trained stories260K model from TinyStories text with its tokenizer.model.
demo: build
	@test -d "$(CTCAL_DATA)/hf/stories260K" || { echo "demo: $(CTCAL_DATA)/hf/stories260K not found; set CTCAL_DATA" >&2; exit 4; }
	$(BUILD)/app/ctcal calibrate recipes/fp8_kv_per_tensor.yaml \
	    --model "$(CTCAL_DATA)/hf/stories260K" \
	    --dataset "$(CTCAL_DATA)/tinystories-valid/validation_100.txt" \
	    --num-samples 64 --max-seq-length 512 \
	    --output $(DEMO_OUT) --overwrite

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# A few tests that prove an install works (label smoke, tests/CMakeLists.txt says which): what
# scripts/fresh_root_check.sh runs after `make demo`, so that CI does not run the whole suite twice.
test-smoke: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L smoke

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer (RelWithDebInfo), less what they
# cannot add to (issue 27, CI time): the peer tests (-LE peer) run the Python stack (compressed-
# tensors, transformers, llm-compressor, vLLM) on ctcal's outputs, for minutes each; the ctcal
# commands they call are the ones the unit, golden and e2e tests run here under ASan already. The
# benchmarks (bench/) print figures and are no ctest tests: only ctcal and the test binaries are built.
#
# -O1 -g1 (line tables: enough for ASan's and UBSan's stack traces): GCC 12 compiles the
# instrumented code at -O2 -g 2-4.6x slower than the Release build (evaluate.cpp 92 s, gated_deltanet
# 69 s, calibrate.cpp 16 s of CPU time) and at -O1 -g1 in half that (44 s, 34 s, 11 s); it is the
# largest compile of CI's run (issue 27: CI under 60 minutes). -O1 is what ASan's documentation
# recommends for reasonable speed.
test-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
	    -DCTCAL_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS) --target ctcal unit_tests golden_tests
	@cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS) -LE peer

# The CUDA backend (-DCTCAL_CUDA=ON; needs the CUDA toolkit's nvcc and cuBLAS): compiles and links
# it with its GPU tests, then runs them (they skip, saying so, where no GPU is). CI does this on a
# machine without a GPU so that the GPU code never goes stale; scripts/gpu_remote.sh runs them on one.
build-cuda: deps
	@cmake -S . -B $(BUILD_CUDA) -DCMAKE_BUILD_TYPE=Release -DCTCAL_CUDA=ON >/dev/null
	@cmake --build $(BUILD_CUDA) -j $(JOBS) --target ctcal gpu_tests flash_attention_bench projection_gemm_bench 2>&1 | { grep -v "^\(gmake\|\[\)" || true; }
	@$(BUILD_CUDA)/tests/gpu_tests --gtest_brief=1

# What the GPU machine needs (.gpu-bundle/: binaries, their libraries, the data), for
# `bash scripts/gpu_remote.sh tests` there.
gpu-bundle: deps
	@bash scripts/gpu_bundle.sh

# The benchmarks (bench/): print figures, never pass/fail. Tokenizer throughput on WikiText-2,
# the blocked attention over block sizes, then calibration of a random 8-layer Llama-shaped bf16
# model (made once under BENCH_MODEL) in fp32 mode beside the machine's sgemm peak.
bench: build
	$(BUILD)/bench/tokenize_bench "$(CTCAL_DATA)"
	$(BUILD)/bench/attention_bench --seq 512
	@test -f "$(BENCH_MODEL)/config.json" || $(BUILD)/bench/calib_bench make "$(BENCH_MODEL)"
	$(BUILD)/bench/calib_bench run "$(BENCH_MODEL)" --samples 8 --seq 512

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_CUDA) demo-output .gpu-bundle
