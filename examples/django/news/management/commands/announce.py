"""manage.py announce CHANNEL TEXT: a message to every subscriber of a Herald
channel, e.g. `announce chat:lobby "maintenance at noon"` (group "chat..lobby")."""
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand

from news.groups import herald_group


class Command(BaseCommand):
    help = "Send an announcement to every subscriber of a Herald channel."

    def add_arguments(self, parser):
        parser.add_argument("channel")
        parser.add_argument("text")

    def handle(self, channel, text, **options):
        async_to_sync(get_channel_layer().group_send)(
            herald_group(channel), {"type": "announcement", "from": "django", "text": text})
