"""The other way: what browsers publish reaches Django.

herald.json gives the namespace "chat" a django_channel, so Herald sends every
publication a browser makes in chat:* to the Channels channel "herald-events",
as {"type": "herald.publication", "channel", "user", "client", "data"};
`manage.py runworker herald-events` dispatches it here.
"""
import logging

from asgiref.sync import async_to_sync
from channels.consumer import SyncConsumer

from .groups import herald_group

log = logging.getLogger(__name__)


class ChatBot(SyncConsumer):
    """A bot in every chat room: answers "!ping" (Django could as well store,
    moderate or index the messages here)."""

    def herald_publication(self, message):
        data, user = message["data"], message["user"]
        log.info("%s in %s: %r", user, message["channel"], data)
        if isinstance(data, dict) and data.get("text") == "!ping":
            async_to_sync(self.channel_layer.group_send)(
                herald_group(message["channel"]),
                {"type": "chat.bot", "from": "bot", "text": "pong, %s" % user})
