#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan + UBSan) and runs each for FUZZ_SECONDS (default 30)
# on a copy of its committed seed corpus. Fails on any finding; the crashing input is kept in
# build-fuzz/artifacts/ (turn it into a regression test under tests/). A longer local run:
#   FUZZ_SECONDS=3600 scripts/fuzz.sh recipe
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${FUZZ_SECONDS:-30}"
TARGETS=("${@:-safetensors config recipe tokenizer dataset}")
# shellcheck disable=SC2206
TARGETS=(${TARGETS[*]})
export CTCAL_DATA="${CTCAL_DATA:-$(cd .. && pwd)/shared/data}"
cmake -S . -B build-fuzz -DCTCAL_FUZZ=ON -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCTCAL_NATIVE=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${TARGETS[@]/#/fuzz_}" >/dev/null
mkdir -p build-fuzz/artifacts
status=0
for t in "${TARGETS[@]}"; do
  work="build-fuzz/corpus-$t"
  rm -rf "$work" && mkdir -p "$work" && cp tests/fuzz/corpus/"$t"/* "$work"/
  log="build-fuzz/fuzz-$t.log"
  if ./build-fuzz/tests/fuzz/fuzz_"$t" "$work" -max_total_time="$SECS" -timeout=20 -rss_limit_mb=4096 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix=build-fuzz/artifacts/"$t"- >"$log" 2>&1; then
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "fuzz $t: ok, $execs executions in ${SECS}s"
  else
    echo "fuzz $t: FINDING (see $log and build-fuzz/artifacts/)"
    tail -40 "$log"
    status=1
  fi
done
exit $status
