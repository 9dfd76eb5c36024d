# examples/lib.sh - sourced by the examples' run.sh scripts (not run itself).
#
# Finds (or builds) Herald, starts the processes an example needs in the
# background, waits for them, and stops every one of them when the script
# exits (Ctrl-C, SIGTERM, or one of them dying). Everything they write goes
# to a throwaway directory ($EXAMPLE_DIR: logs, SQLite files), removed at the
# end; KEEP_EXAMPLE_DIR=1 keeps it.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON_GIVEN=${PYTHON:-}
PYTHON=${PYTHON:-python3}
# herald_client straight from the clone: no `pip install` needed to try an example
export PYTHONPATH="$REPO/clients/python${PYTHONPATH:+:$PYTHONPATH}"
EXAMPLE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/herald-example.XXXXXX")
CHILDREN=()

stop_children() {
    local pid
    for pid in "${CHILDREN[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${CHILDREN[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_EXAMPLE_DIR:-0} == 1 ]]; then
        echo "example: logs kept in $EXAMPLE_DIR" >&2
    else
        rm -rf "$EXAMPLE_DIR"
    fi
}
trap stop_children EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "example: $*" >&2; }
die() { say "$*"; exit 1; }

# Sets PYTHON to an interpreter that imports every module named: $PYTHON when
# the caller set it, else python3 on PATH or, failing that, Debian's
# /usr/bin/python3 - where apt-get installs python3-fastapi and the like, which
# a python3 of pyenv or a virtualenv first on PATH does not see. Returns 1
# when none does.
find_python() {
    local p imports
    imports="import $(IFS=,; echo "$*")"
    for p in ${PYTHON_GIVEN:-python3 /usr/bin/python3}; do
        if "$p" -c "$imports" 2>/dev/null; then
            PYTHON=$p
            return 0
        fi
    done
    return 1
}

# A random secret (hex), without openssl.
random_hex() { "$PYTHON" -c 'import secrets, sys; print(secrets.token_hex(int(sys.argv[1])))' "$1"; }

# The herald binary: $HERALD_BIN, else build/herald of this clone (built
# here the first time, as `./setup.sh run` would).
find_herald() {
    HERALD=${HERALD_BIN:-$REPO/build/herald}
    if [[ ! -x $HERALD ]]; then
        [[ -z ${HERALD_BIN:-} ]] || die "HERALD_BIN=$HERALD_BIN is not an executable"
        say "building Herald into $REPO/build (once)"
        if ! cmake -S "$REPO" -B "$REPO/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null ||
            ! cmake --build "$REPO/build" -j"$(nproc)" --target herald >/dev/null; then
            die "building Herald failed: run ./setup.sh run once (it installs the build packages)"
        fi
    fi
}

# start NAME COMMAND...: runs COMMAND in the background, output to NAME.log;
# its pid is in LAST_PID.
start() {
    local name=$1
    shift
    "$@" >"$EXAMPLE_DIR/$name.log" 2>&1 &
    LAST_PID=$!
    CHILDREN+=("$LAST_PID")
}

# log_tail NAME: the end of NAME.log (for failures).
log_tail() { tail -n 20 "$EXAMPLE_DIR/$1.log" >&2 || true; }

# wait_for NAME PID WHAT COMMAND...: repeats COMMAND until it succeeds
# (30 s at most); fails with NAME's log when PID dies first.
wait_for() {
    local name=$1 pid=$2 what=$3 i
    shift 3
    for ((i = 0; i < 300; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            say "$name exited before $what; its log:"
            log_tail "$name"
            exit 1
        fi
        sleep 0.1
    done
    say "$name: no $what within 30 s; its log:"
    log_tail "$name"
    exit 1
}

# http_ok URL: 2xx from URL (python's urllib: curl may not be installed).
http_ok() {
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1"
}

# start_redis PORT: a private redis-server on 127.0.0.1:PORT that keeps
# nothing on disk; sets REDIS_URL (for the caller).
start_redis() {
    local port=$1
    command -v redis-server >/dev/null || die "redis-server is missing: apt-get install redis-server"
    start redis redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$EXAMPLE_DIR"
    # shellcheck disable=SC2034 # the caller's
    REDIS_URL=redis://127.0.0.1:$port/0
    wait_for redis "$LAST_PID" "an answer to PING" redis-cli -p "$port" ping
    say "redis-server on 127.0.0.1:$port"
}

# start_herald: Herald with the HERALD_* variables set by the caller on
# 127.0.0.1:$HERALD_PORT; waits for /readyz.
start_herald() {
    find_herald
    HERALD_LISTEN=127.0.0.1:$HERALD_PORT HERALD_DB=$EXAMPLE_DIR/herald.db HERALD_LOG_FORMAT=text \
        start herald "$HERALD" serve
    wait_for herald "$LAST_PID" "/readyz" http_ok "http://127.0.0.1:$HERALD_PORT/readyz"
    say "Herald on http://127.0.0.1:$HERALD_PORT (log: $EXAMPLE_DIR/herald.log)"
}

# wait_children: returns when any child exits (and the EXIT trap stops the rest).
wait_children() {
    local rc=0
    wait -n || rc=$?
    say "a process of the example exited (status $rc); stopping the others"
    exit "$rc"
}
