"""The ASGI application. Browsers' WebSockets go to Herald, not here; what is
left is HTTP and the Channels worker: `manage.py runworker herald-events
herald-lifecycle` hands every message sent to channel "herald-events" (Herald
sends each chat publication there, see herald.json) to news.consumers.ChatBot,
and every lifecycle event Herald sends to "herald-lifecycle"
(HERALD_EVENTS_DJANGO_CHANNEL) to chat.consumers.Lifecycle."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter  # noqa: E402

from chat.consumers import Lifecycle  # noqa: E402
from news.consumers import ChatBot  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "channel": ChannelNameRouter({
        "herald-events": ChatBot.as_asgi(),
        "herald-lifecycle": Lifecycle.as_asgi(),
    }),
})
