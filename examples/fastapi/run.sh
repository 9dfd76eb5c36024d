#!/usr/bin/env bash
# The FastAPI example in one command: Herald (embedded mode) on 127.0.0.1:8080
# and the shop app (uvicorn) on 127.0.0.1:8000, sharing a fresh JWT secret and
# API key; Herald's backend proxy asks the app about sockets that come without
# a token (its session cookie). Ctrl-C stops both. See README.md.
#
#   HERALD_PORT, APP_PORT      the ports (8080, 8000)
#   HERALD_SESSION_CHECK       seconds between Herald's checks that a session stands (60)
#   HERALD_URL                 use a Herald that is already running instead
#                              (then HERALD_API_KEY and HERALD_JWT_SECRET must be its own)
#   HERALD_BIN                 the herald binary (default: build/herald, built if missing)
#   PYTHON                     the interpreter with fastapi and uvicorn (default:
#                              python3, or Debian's /usr/bin/python3 when that one lacks them)
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=../lib.sh
source ../lib.sh

HERALD_PORT=${HERALD_PORT:-8080}
APP_PORT=${APP_PORT:-8000}
export HERALD_JWT_SECRET=${HERALD_JWT_SECRET:-$(random_hex 32)}
export HERALD_API_KEY=${HERALD_API_KEY:-$(random_hex 16)}
export SHOP_DB=${SHOP_DB:-$EXAMPLE_DIR/shop.db}
export HERALD_PROXY_KEY=${HERALD_PROXY_KEY:-$(random_hex 16)}
export SITE_ORIGINS=http://127.0.0.1:$APP_PORT   # the pages that may open session sockets

find_python fastapi uvicorn multipart ||
    die "${PYTHON_GIVEN:-python3} lacks FastAPI: apt-get install python3-fastapi python3-uvicorn python3-multipart"

if [[ -z ${HERALD_URL:-} ]]; then
    # the backend proxy: sockets without a JWT are the app's cookie sessions;
    # order:<id> subscriptions and RPCs are answered by the app (/herald/*)
    APP=http://127.0.0.1:$APP_PORT
    export HERALD_CONFIG=$PWD/herald.json        # namespace order: subscribe_proxy
    export HERALD_PROXY_CONNECT_URL=$APP/herald/connect
    export HERALD_PROXY_REFRESH_URL=$APP/herald/refresh
    export HERALD_PROXY_SUBSCRIBE_URL=$APP/herald/subscribe
    export HERALD_PROXY_RPC_URL=$APP/herald/rpc
    start_herald
    export HERALD_URL=http://127.0.0.1:$HERALD_PORT
fi

start app "$PYTHON" -m uvicorn app:app --host 127.0.0.1 --port "$APP_PORT"
wait_for app "$LAST_PID" "/healthz" http_ok "http://127.0.0.1:$APP_PORT/healthz"
say "the shop on http://127.0.0.1:$APP_PORT (open it in a browser; log: $EXAMPLE_DIR/app.log)"
wait_children
