#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...] - fuzzes Herald's parsers with libFuzzer.
#
# Builds every module with clang, libFuzzer's coverage, ASan and UBSan in
# $HERALD_FUZZ_BUILD (default build-fuzz/), then runs each target (all of
# them, or those named: proto config jwt form route redis_url username) for
# SECONDS (default 300), one at a time in one process, starting from its
# checked-in seeds in fuzz/corpus/<name>/ (only read) plus what earlier runs
# found in $HERALD_FUZZ_BUILD/corpus/<name>/ (where new inputs go). A crash
# or a broken invariant stops the run with the input saved as
# $HERALD_FUZZ_BUILD/artifacts/<name>/crash-*: fix it, and copy the input
# into fuzz/corpus/<name>/ so every CI run replays it.
# Needs clang and its runtime (Debian: clang libclang-rt-14-dev, which
# `./setup.sh fuzz` installs).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
[ $# -gt 0 ] && shift
build=${HERALD_FUZZ_BUILD:-build-fuzz}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/fuzz_*.c; do
        n=${f#fuzz/fuzz_}
        targets+=("${n%.c}")
    done
fi

CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DHERALD_FUZZ=ON >/dev/null
cmake --build "$build" -j"${HERALD_FUZZ_JOBS:-2}" --target $(printf 'fuzz_%s ' "${targets[@]}")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "${targets[@]}"; do
    mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
    dict=()
    case $t in proto | config | jwt | proxy) dict=(-dict=fuzz/json.dict) ;; esac
    echo "== fuzz_$t for ${secs}s"
    "$build/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=4096 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$build/artifacts/$t/" "$build/corpus/$t" "fuzz/corpus/$t"
done
