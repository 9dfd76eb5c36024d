#!/usr/bin/env bash
# The redis-cli example in one command: a private redis-server, Herald in
# cluster mode on it (herald.json: "feed" keeps history), and publish.sh's demo
# backend publishing into it with redis-cli. Ctrl-C stops them all. See README.md.
#
#   REDIS_URL                 use this Redis 7 instead of starting one
#   REDIS_PORT, HERALD_PORT   the ports (6390, 8080)
#   INTERVAL, COUNT           the backend's pace (2 s) and rounds (0: until Ctrl-C)
#   HERALD_BIN                the herald binary (default: build/herald, built if missing)
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=../lib.sh
source ../lib.sh

HERALD_PORT=${HERALD_PORT:-8080}
export HERALD_JWT_SECRET=${HERALD_JWT_SECRET:-$(random_hex 32)}
export HERALD_API_KEY=${HERALD_API_KEY:-$(random_hex 16)}
command -v redis-cli >/dev/null || die "redis-cli is missing: apt-get install redis-tools"

if [[ -z ${REDIS_URL:-} ]]; then
    start_redis "${REDIS_PORT:-6390}"
fi
export REDIS_URL HERALD_REDIS_URL=$REDIS_URL HERALD_CONFIG=$PWD/herald.json
start_herald

TOKEN=$("$HERALD" token --sub demo)
say "watch it: $HERALD tail status --url http://127.0.0.1:$HERALD_PORT --token $TOKEN"
say "      or: $HERALD tail feed:events --url http://127.0.0.1:$HERALD_PORT --token $TOKEN"
say "publish one: REDIS_URL=$REDIS_URL $PWD/publish.sh news '{\"title\":\"hi\"}'"
./publish.sh &
CHILDREN+=($!)
wait_children
