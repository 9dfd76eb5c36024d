#!/usr/bin/env bash
# The Django example in one command: a private redis-server, Herald in cluster
# mode on it with the Django Channels bridge (HERALD_DJANGO_CHANNELS) and its
# backend proxy pointed at the project's views (HERALD_PROXY_*), the project's
# Channels worker (runworker herald-events herald-lifecycle), Django's
# development server, and nginx serving Django and Herald on one origin.
# Ctrl-C stops them all. See README.md.
#
#   DJANGO_CHANNEL_LAYER   redis (RedisChannelLayer, default) or pubsub
#                          (RedisPubSubChannelLayer): settings.py and Herald follow it
#   REDIS_URL              use this Redis instead of starting one (a Redis 7)
#   REDIS_PORT, HERALD_PORT, DJANGO_PORT, NGINX_PORT
#                          the ports (6390, 8080, 8000, 8088); the site is
#                          http://127.0.0.1:NGINX_PORT/
#   DEMO_PASSWORD          the password of the users alice and bob (default: random, printed)
#   HERALD_SESSION_CHECK   seconds between Herald's checks that a session still stands (60)
#   HERALD_BIN             the herald binary (default: build/herald, built if missing)
#   NGINX                  the nginx binary (default: /usr/sbin/nginx)
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
NGINX_PORT=${NGINX_PORT:-8088}
NGINX=${NGINX:-/usr/sbin/nginx}
SITE=http://127.0.0.1:$NGINX_PORT
export HERALD_JWT_SECRET=${HERALD_JWT_SECRET:-$(random_hex 32)}
export HERALD_API_KEY=${HERALD_API_KEY:-$(random_hex 16)}

find_python django channels channels_redis ||
    die "${PYTHON_GIVEN:-python3} lacks Django Channels: apt-get install python3-django python3-django-channels python3-channels-redis"
[[ -x $NGINX ]] || die "$NGINX is missing: apt-get install nginx"

if [[ -z ${REDIS_URL:-} ]]; then
    start_redis "${REDIS_PORT:-6390}"
fi
export REDIS_URL                                  # settings.py: CHANNEL_LAYERS

# Django: its users and sessions in a throwaway SQLite file, the key Herald's
# proxy calls carry, the origins whose pages may use a session socket
export DJANGO_DB=$EXAMPLE_DIR/django.db
export HERALD_PROXY_KEY=${HERALD_PROXY_KEY:-$(random_hex 16)}
export SITE_ORIGINS=$SITE,http://localhost:$NGINX_PORT
DEMO_PASSWORD=${DEMO_PASSWORD:-$(random_hex 8)}
"$PYTHON" manage.py migrate --noinput >"$EXAMPLE_DIR/migrate.log" 2>&1 ||
    { log_tail migrate; die "manage.py migrate failed"; }
"$PYTHON" manage.py demo_users "$DEMO_PASSWORD" >/dev/null

export HERALD_REDIS_URL=$REDIS_URL                # the same Redis: cluster mode
export HERALD_DJANGO_CHANNELS=$DJANGO_CHANNEL_LAYER
export HERALD_CONFIG=$PWD/herald.json             # chat -> django_channel herald-events; team: subscribe_proxy
# the backend proxy: sockets without a JWT are authenticated by Django's
# session (the Cookie header of their handshake), team:* subscriptions and
# RPCs are answered by Django views (chat/proxy.py)
DJANGO=http://127.0.0.1:$DJANGO_PORT
export HERALD_PROXY_CONNECT_URL=$DJANGO/herald/connect
export HERALD_PROXY_REFRESH_URL=$DJANGO/herald/refresh
export HERALD_PROXY_SUBSCRIBE_URL=$DJANGO/herald/subscribe
export HERALD_PROXY_RPC_URL=$DJANGO/herald/rpc
export HERALD_EVENTS_DJANGO_CHANNEL=herald-lifecycle  # lifecycle events -> chat.consumers.Lifecycle
export HERALD_TRUSTED_PROXIES=127.0.0.1           # nginx: X-Forwarded-For names the browser
start_herald

start worker "$PYTHON" manage.py runworker herald-events herald-lifecycle
start django "$PYTHON" manage.py runserver --noreload "127.0.0.1:$DJANGO_PORT"
wait_for django "$LAST_PID" "/healthz" http_ok "$DJANGO/healthz"

# nginx.conf with its three addresses pointed at this run's ports, in a config
# that keeps everything nginx writes in the throwaway directory
mkdir -p "$EXAMPLE_DIR/nginx"
sed -e "s/listen 127\.0\.0\.1:8088;/listen 127.0.0.1:$NGINX_PORT;/" \
    -e "s/server 127\.0\.0\.1:8080;/server 127.0.0.1:$HERALD_PORT;/" \
    -e "s/server 127\.0\.0\.1:8000;/server 127.0.0.1:$DJANGO_PORT;/" nginx.conf \
    >"$EXAMPLE_DIR/nginx/site.conf"
NGINX_USER=
if [[ $(id -u) == 0 ]]; then  # a root master runs its workers as nobody
    NGINX_USER="user nobody $(id -gn nobody);"
    chmod 711 "$EXAMPLE_DIR"  # they must reach the temp dirs below
fi
N=$EXAMPLE_DIR/nginx
cat >"$N/nginx.conf" <<CONF
$NGINX_USER
worker_processes 1;
pid $N/nginx.pid;
events { worker_connections 1024; }
http {
    access_log $N/access.log;
    client_body_temp_path $N/client_body;
    proxy_temp_path $N/proxy;
    fastcgi_temp_path $N/fastcgi;
    uwsgi_temp_path $N/uwsgi;
    scgi_temp_path $N/scgi;
    include $N/site.conf;
}
CONF
start nginx "$NGINX" -p "$N/" -c "$N/nginx.conf" -e "$N/error.log" -g "daemon off;"
wait_for nginx "$LAST_PID" "/healthz through nginx" http_ok "$SITE/healthz"

say "Django on $DJANGO ($DJANGO_CHANNEL_LAYER layer; logs: $EXAMPLE_DIR)"
say "the site (Django and Herald on one origin): $SITE/"
say "log in as alice (team staff) or bob, password $DEMO_PASSWORD"
say "a Herald token for user alice (manage.py herald_token alice):"
"$PYTHON" manage.py herald_token alice
wait_children
