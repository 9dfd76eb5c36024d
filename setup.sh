#!/usr/bin/env bash
# Herald's entry points on a fresh Debian 12 machine (run as root):
#   ./setup.sh run    install what is missing, build, start Herald (embedded mode)
#   ./setup.sh test   install what is missing (redis-server included), build,
#                     run the whole suite, then again under ASan + UBSan
#   ./setup.sh fuzz [SECONDS] [TARGET...]
#                     install clang and libFuzzer, fuzz each parser (fuzz/run.sh)
set -euo pipefail
cd "$(dirname "$0")"

BUILD_PKGS=(build-essential cmake pkg-config libwebsockets-dev libuv1-dev libjansson-dev libjwt-dev
            libhiredis-dev libssl-dev libargon2-dev libsqlite3-dev libicu-dev)
TEST_PKGS=(redis-server python3 python3-websockets python3-requests python3-redis)
# libFuzzer ships in clang's runtime package on Debian (libclang_rt.fuzzer);
# only `fuzz` needs them: the test suite replays the corpora with gcc.
FUZZ_PKGS=(clang libclang-rt-14-dev)

# Installs the packages that are not installed yet (apt-get only when needed).
install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "setup: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# build DIR BUILD_TYPE [extra cmake args...]
build() {
    local dir=$1 type=$2
    shift 2
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
    cmake --build "$dir" -j"$(nproc)"
}

run_suite() {
    local dir=$1
    (cd "$dir" && ctest --output-on-failure --timeout 300 -j2)
}

case "${1:-}" in
run)
    shift
    install_missing "${BUILD_PKGS[@]}"
    build build RelWithDebInfo
    exec ./build/herald serve "$@"
    ;;
test)
    install_missing "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"
    build build RelWithDebInfo
    run_suite build
    build build-asan Debug -DHERALD_SANITIZE=ON
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 run_suite build-asan
    ;;
fuzz)
    shift
    install_missing "${BUILD_PKGS[@]}" "${FUZZ_PKGS[@]}"
    exec fuzz/run.sh "$@"
    ;;
*)
    echo "usage: $0 run [herald options] | $0 test | $0 fuzz [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac
