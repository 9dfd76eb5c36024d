#!/bin/sh
# As the official image's entrypoint: a redis-server started without a config
# file accepts clients from other hosts (the compose network).
set -e
if [ "$1" = redis-server ] && [ "${2%.conf}" = "${2:-}" ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
