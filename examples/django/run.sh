#!/usr/bin/env bash
# The Django example in one command: a private redis-server, Herald in cluster
# mode on it with the Django Channels bridge (HERALD_DJANGO_CHANNELS), the
# project's Channels worker (runworker herald-events) and Django's development
# server. Ctrl-C stops them all. See README.md.
#
#   DJANGO_CHANNEL_LAYER   redis (RedisChannelLayer, default) or pubsub
#                          (RedisPubSubChannelLayer): settings.py and Herald follow it
#   REDIS_URL              use this Redis instead of starting one (a Redis 7)
#   REDIS_PORT, HERALD_PORT, DJANGO_PORT   the ports (6390, 8080, 8000)
#   HERALD_BIN             the herald binary (default: build/herald, built if missing)
#   PYTHON                 the interpreter with Django and Channels (default: python3, or
#                          Debian's /usr/bin/python3 when that one lacks them)
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=../lib.sh
source ../lib.sh

export DJANGO_CHANNEL_LAYER=${DJANGO_CHANNEL_LAYER:-redis}
[[ $DJANGO_CHANNEL_LAYER == redis || $DJANGO_CHANNEL_LAYER == pubsub ]] ||
    die "DJANGO_CHANNEL_LAYER is redis or pubsub"
HERALD_PORT=${HERALD_PORT:-8080}
DJANGO_PORT=${DJANGO_PORT:-8000}
export HERALD_JWT_SECRET=${HERALD_JWT_SECRET:-$(random_hex 32)}
export HERALD_API_KEY=${HERALD_API_KEY:-$(random_hex 16)}

find_python django channels channels_redis ||
    die "${PYTHON_GIVEN:-python3} lacks Django Channels: apt-get install python3-django python3-django-channels python3-channels-redis"

if [[ -z ${REDIS_URL:-} ]]; then
    start_redis "${REDIS_PORT:-6390}"
fi
export REDIS_URL                                  # settings.py: CHANNEL_LAYERS
export HERALD_REDIS_URL=$REDIS_URL                # the same Redis: cluster mode
export HERALD_DJANGO_CHANNELS=$DJANGO_CHANNEL_LAYER
export HERALD_CONFIG=$PWD/herald.json             # namespace chat -> django_channel herald-events
start_herald

start worker "$PYTHON" manage.py runworker herald-events
start django "$PYTHON" manage.py runserver --noreload "127.0.0.1:$DJANGO_PORT"
wait_for django "$LAST_PID" "/healthz" http_ok "http://127.0.0.1:$DJANGO_PORT/healthz"
say "Django on http://127.0.0.1:$DJANGO_PORT ($DJANGO_CHANNEL_LAYER layer; logs: $EXAMPLE_DIR)"
say "a Herald token for user alice (manage.py herald_token alice):"
"$PYTHON" manage.py herald_token alice
wait_children
