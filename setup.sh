#!/usr/bin/env bash
# Herald's entry points on a fresh Debian 12 machine (run as root):
#   ./setup.sh run    install what is missing, build, start Herald (embedded mode;
#                     Swagger UI at /docs); the build's output goes to
#                     build/build.log (shown when it fails)
#   ./setup.sh test   install what is missing (redis-server, nginx, docker.io,
#                     docker-compose included), build, run the whole suite, then
#                     again under ASan + UBSan
#   ./setup.sh deps build|test|runtime
#                     only install one package list (the Dockerfile's stages use
#                     `build` and `runtime`)
#   ./setup.sh fuzz [SECONDS] [TARGET...]
#                     install clang and libFuzzer, fuzz each parser (fuzz/run.sh)
set -euo pipefail
cd "$(dirname "$0")"

# libcurl4-openssl-dev: calls to the application's backend (proxies, webhooks)
BUILD_PKGS=(build-essential cmake pkg-config libwebsockets-dev libuv1-dev libjansson-dev libjwt-dev
            libhiredis-dev libssl-dev libargon2-dev libsqlite3-dev libmsgpack-dev libicu-dev
            libcurl4-openssl-dev zlib1g-dev)
# python3-channels-redis, -django-channels, -msgpack: the Django Channels
# bridge is tested against the real, unmodified channels_redis; python3-jwt,
# -cryptography, -pip, -setuptools, -wheel, -venv: the Python client's tokens
# and its `pip install` (into a virtualenv, as docs/clients/python.md says); python3-fastapi, -uvicorn, -multipart (FastAPI's form
# parsing, for OAuth2 password login): examples/fastapi; python3-jsonschema:
# every REST answer in the integration tests is checked against
# docs/openapi.json's schemas; prometheus (and its promtool): the Grafana
# dashboard's queries are evaluated by a real Prometheus scraping real nodes;
# docker.io, debootstrap: tests/compose/test_stack.py runs docker-compose.yml
# for real (its base image made with debootstrap; docker.io is left out on a
# machine that already has a dockerd, e.g. Docker's own docker-ce packages,
# which conflict with it)
TEST_PKGS=(redis-server openssl curl python3 python3-websockets python3-requests python3-redis
           python3-jsonschema prometheus docker.io debootstrap
           nginx docker-compose python3-yaml chromium python3-channels-redis
           python3-django-channels python3-msgpack python3-jwt python3-cryptography python3-pip
           python3-setuptools python3-wheel python3-venv python3-fastapi python3-uvicorn python3-multipart)
# What README's "Try it" uses besides Herald: curl, and python3-websockets for
# its WebSocket client (`run` installs them).
TRY_PKGS=(curl python3 python3-websockets)
# What the binary loads at run time (the Docker image's runtime stage):
# ldd's libraries, plus lws' libuv event-loop plugin, which lws dlopen()s and
# ldd does not show. tests/integration/test_dockerfile.py checks this list
# against the libraries a running herald has mapped.
RUNTIME_PKGS=(libwebsockets17 libwebsockets-evlib-uv libuv1 libjansson4 libjwt0 libhiredis0.14
              libssl3 libargon2-1 libsqlite3-0 libmsgpackc2 libicu72 libcurl4 zlib1g)
# libFuzzer ships in clang's runtime package on Debian (libclang_rt.fuzzer);
# only `fuzz` needs them: the test suite replays the corpora with gcc.
FUZZ_PKGS=(clang libclang-rt-14-dev)

# Installs the packages that are not installed yet (apt-get only when needed).
install_missing() {
    local missing=() p
    for p in "$@"; do
        if [[ $p == docker.io ]] && command -v dockerd >/dev/null; then
            continue  # an engine is installed already (maybe docker-ce, which conflicts)
        fi
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "setup: installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# The browser client's tests (tests/js, tests/browser): Node.js with npm (a
# machine's own Node.js is kept; Debian's is installed only when there is
# none: playwright-core wants Node.js 20 or newer), then playwright-core and
# typescript exactly as tests/browser/package-lock.json pins them. Chromium
# is Debian's (TEST_PKGS): nothing downloads a browser.
install_browser_test_deps() {
    install_npm
    (cd tests/browser && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
}

install_npm() {
    if ! command -v npm >/dev/null; then
        install_missing nodejs npm
    fi
}

# Swagger UI for /docs: npm's swagger-ui-dist as web/swagger-ui/package-lock.json
# pins it, into web/swagger-ui/node_modules (not committed). --ignore-scripts:
# its dependency @scarf/scarf would otherwise report the install to a
# third party.
SWAGGER_UI_DIR=web/swagger-ui/node_modules/swagger-ui-dist
install_swagger_ui() {
    install_npm
    (cd web/swagger-ui && SCARF_ANALYTICS=false npm ci --ignore-scripts --prefer-offline --no-audit \
        --no-fund --loglevel=error)
}

# build DIR BUILD_TYPE TARGET|all [extra cmake args...]: quiet, the output goes
# to DIR/build.log, whose end is shown when the build fails
build() {
    local dir=$1 type=$2 target=$3
    shift 3
    mkdir -p "$dir"
    echo "setup: building $dir ($type; log: $dir/build.log)" >&2
    if ! { cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "$@" &&
        cmake --build "$dir" -j"$(nproc)" --target "$target"; } >"$dir/build.log" 2>&1; then
        tail -n 40 "$dir/build.log" >&2
        echo "setup: the build failed (all of it: $dir/build.log)" >&2
        return 1
    fi
}

run_suite() {
    local dir=$1
    (cd "$dir" && ctest --output-on-failure --timeout 300 -j2)
}

case "${1:-}" in
deps)
    case "${2:-}" in
    build) install_missing "${BUILD_PKGS[@]}" ;;
    test)
        install_missing "${TEST_PKGS[@]}"
        install_browser_test_deps
        ;;
    runtime) install_missing "${RUNTIME_PKGS[@]}" ;;
    *)
        echo "usage: $0 deps build|test|runtime" >&2
        exit 2
        ;;
    esac
    ;;
run)
    shift
    install_missing "${BUILD_PKGS[@]}" "${TRY_PKGS[@]}"
    # /docs is a convenience: without npm's registry Herald still starts
    if install_swagger_ui; then
        export HERALD_SWAGGER_UI="${HERALD_SWAGGER_UI:-$PWD/$SWAGGER_UI_DIR}"
    else
        echo "setup: Swagger UI could not be installed; /docs stays off" >&2
    fi
    build build RelWithDebInfo herald
    exec ./build/herald serve "$@"
    ;;
test)
    install_missing "${BUILD_PKGS[@]}" "${TEST_PKGS[@]}"
    install_browser_test_deps
    install_swagger_ui
    build build RelWithDebInfo all
    run_suite build
    build build-asan Debug all -DHERALD_SANITIZE=ON
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 run_suite build-asan
    ;;
fuzz)
    shift
    install_missing "${BUILD_PKGS[@]}" "${FUZZ_PKGS[@]}"
    exec fuzz/run.sh "$@"
    ;;
*)
    echo "usage: $0 run [herald options] | $0 test | $0 deps build|test|runtime | $0 fuzz [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac
