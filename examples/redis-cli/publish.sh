#!/usr/bin/env bash
# A backend that publishes into Herald with nothing but redis-cli: one
# `FCALL herald_publish 0 CHANNEL JSON` per publication (the function every
# Herald node loads into its Redis; cluster mode).
#
#   ./publish.sh CHANNEL JSON   one publication; prints 0 (a plain channel) or
#                               the publication's offset (a history namespace)
#   ./publish.sh                the demo backend: every $INTERVAL seconds the load
#                               average to "status" (plain: live only) and a
#                               numbered event to "feed:events" (history: kept,
#                               recoverable)
#
#   REDIS_URL            Herald's Redis (redis://127.0.0.1:6379/0); with several
#                        shards, the channel's shard (docs/cluster.md)
#   HERALD_REDIS_PREFIX  Herald's prefix (herald): the function is <prefix>_publish
#   INTERVAL, COUNT      the demo's pace (2 s) and number of rounds (0: forever)
set -euo pipefail

REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
PREFIX=${HERALD_REDIS_PREFIX:-herald}
FUNCTION=${PREFIX//[^A-Za-z0-9_]/_}_publish
INTERVAL=${INTERVAL:-2}
COUNT=${COUNT:-0}

# publish CHANNEL JSON: prints Redis' answer. redis-cli -e exits 1 on an
# error reply (ERR invalid channel name, ERR data must be JSON text).
publish() {
    redis-cli -e -u "$REDIS_URL" FCALL "$FUNCTION" 0 "$1" "$2"
}

case $# in
2)
    publish "$1" "$2"
    exit
    ;;
0) ;;
*)
    echo "usage: $0 [CHANNEL JSON]" >&2
    exit 2
    ;;
esac

# stop at once on Ctrl-C / SIGTERM, the sleep too
trap 'kill $(jobs -p) 2>/dev/null; wait; exit 143' TERM
trap 'kill $(jobs -p) 2>/dev/null; wait; exit 130' INT
n=0
while ((COUNT == 0 || n < COUNT)); do
    n=$((n + 1))
    read -r load _ </proc/loadavg
    publish status "{\"host\":\"$HOSTNAME\",\"load\":$load,\"time\":$(date +%s)}" >/dev/null
    offset=$(publish feed:events "{\"n\":$n,\"text\":\"event $n\"}")
    echo "publish.sh: event $n is offset $offset of feed:events"
    sleep "$INTERVAL" &
    wait $!
done
