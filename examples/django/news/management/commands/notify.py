"""manage.py notify USER TEXT: a message to every socket of one user.

Herald's personal channel user:<USER> is Django group "user..<USER>"."""
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand

from news.groups import herald_group


class Command(BaseCommand):
    help = "Send a notification to one user's browsers (Herald channel user:USER)."

    def add_arguments(self, parser):
        parser.add_argument("user")
        parser.add_argument("text")

    def handle(self, user, text, **options):
        async_to_sync(get_channel_layer().group_send)(
            herald_group("user:" + user), {"type": "notification", "text": text})
