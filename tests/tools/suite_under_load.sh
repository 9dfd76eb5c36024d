#!/usr/bin/env bash
# suite_under_load.sh - the whole suite, several times in a row, on a busy
# machine: a fresh clone of this checkout's HEAD, its normal and its ASan+UBSan
# build, then ROUNDS rounds in which both suites run at once (each `ctest -j2`,
# as ./setup.sh test runs them) beside HOGS busy loops. Stops at the first
# round with a failure; exit status 1 then, 0 when every round passed.
#
#   tests/tools/suite_under_load.sh [ROUNDS [HOGS]]     (defaults: 5 rounds, 2 busy loops)
#
# Each round's CTest output is in $OUT/normal-N.log and $OUT/asan-N.log
# (OUT defaults to a new directory under /tmp, printed first). With two
# cores, two busy loops and two suites of two tests each, every test gets
# about a third of a core: more load than CI's, so that a test that waits
# for time instead of an event fails here first. Needs what ./setup.sh test
# installs (run `./setup.sh deps test` once).
set -u
ROUNDS=${1:-5}
HOGS=${2:-2}
SRC=$(git -C "$(dirname "$0")" rev-parse --show-toplevel) || exit 2
OUT=${OUT:-$(mktemp -d /tmp/suite-under-load.XXXXXX)}
CLONE=$OUT/clone
mkdir -p "$OUT"
echo "suite_under_load: output in $OUT"

git clone -q "$SRC" "$CLONE" && cd "$CLONE" || exit 2
echo "commit $(git log --oneline -1)"
if ! { (cd web/swagger-ui && SCARF_ANALYTICS=false npm ci --ignore-scripts --prefer-offline \
    --no-audit --no-fund --loglevel=error) && (cd tests/browser && npm ci --no-audit --no-fund \
    --loglevel=error); } >"$OUT/npm.log" 2>&1; then
    echo "npm ci failed: $OUT/npm.log"
    exit 2
fi

build() { # DIR TYPE [cmake args...]: quiet, the output in $OUT/DIR.log
    local dir=$1 type=$2
    shift 2
    if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "$@" && cmake --build "$dir" -j2; } \
        >"$OUT/$dir.log" 2>&1; then
        echo "$dir failed to build: $OUT/$dir.log"
        exit 2
    fi
}
build build RelWithDebInfo
build build-asan Debug -DHERALD_SANITIZE=ON

hogs=()
for _ in $(seq 1 "$HOGS"); do
    (while :; do :; done) &
    hogs+=($!)
done
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT

suite() { # DIR LOG [env...]: one ctest -j2 run, its exit status appended to LOG
    local dir=$1 log=$2
    shift 2
    (cd "$dir" && env "$@" ctest --output-on-failure --timeout 300 -j2 >"$log" 2>&1
        echo "rc=$?" >>"$log")
}

for i in $(seq 1 "$ROUNDS"); do
    start=$(date +%s)
    suite build "$OUT/normal-$i.log" &
    n=$!
    suite build-asan "$OUT/asan-$i.log" ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
        UBSAN_OPTIONS=print_stacktrace=1 &
    a=$!
    wait $n $a
    echo "round $i: $(($(date +%s) - start)) s;" \
        "normal: $(grep -h 'tests passed' "$OUT/normal-$i.log");" \
        "asan: $(grep -h 'tests passed' "$OUT/asan-$i.log")"
    if ! grep -qx rc=0 "$OUT/normal-$i.log" || ! grep -qx rc=0 "$OUT/asan-$i.log"; then
        grep -h '\*\*\*' "$OUT/normal-$i.log" "$OUT/asan-$i.log"
        exit 1
    fi
done
echo "all $ROUNDS rounds passed"
