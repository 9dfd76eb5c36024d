"""Herald's lifecycle events, handled like websocket_disconnect in a Channels
consumer.

Herald runs with HERALD_EVENTS_DJANGO_CHANNEL=herald-lifecycle: it sends to
that Channels channel {"type": "herald.connect", "client", "user",
"transport", "node"}, {"type": "herald.disconnect", "client", "user", "code",
"duration_ms", "node"}, {"type": "herald.subscribe" / "herald.unsubscribe",
"client", "user", "channel"} and {"type": "herald.channel.occupied" /
"herald.channel.vacated", "channel"}; `manage.py runworker herald-lifecycle`
dispatches each to the method of its type (dots become underscores).
Delivery is at least once: a handler may see the same event twice.
"""
import logging

from asgiref.sync import async_to_sync
from channels.consumer import SyncConsumer

log = logging.getLogger(__name__)


class Lifecycle(SyncConsumer):
    """Tells everyone on channel "activity" who comes and goes."""

    def _announce(self, **event):
        async_to_sync(self.channel_layer.group_send)("activity", event)

    def herald_connect(self, event):
        log.info("%s connected (%s, %s on %s)", event["user"], event["client"],
                 event["transport"], event["node"])
        self._announce(type="user.online", user=event["user"])

    def herald_disconnect(self, event):
        log.info("%s disconnected (%s, code %s after %d ms)", event["user"], event["client"],
                 event["code"], event["duration_ms"])
        self._announce(type="user.offline", user=event["user"], code=event["code"],
                       duration_ms=event["duration_ms"])

    def herald_subscribe(self, event):
        log.info("%s subscribed to %s", event["user"], event["channel"])

    def herald_unsubscribe(self, event):
        log.info("%s unsubscribed from %s", event["user"], event["channel"])

    def herald_channel_occupied(self, event):
        log.info("channel %s has subscribers", event["channel"])

    def herald_channel_vacated(self, event):
        log.info("channel %s has no subscribers left", event["channel"])
