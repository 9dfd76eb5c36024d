"""manage.py herald_token USER: a Herald JWT for USER (for trying it out; a
real project hands the logged-in user one from a view, the same way)."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from herald_client import mint_token


class Command(BaseCommand):
    help = "Print a Herald token for USER, signed with settings.HERALD_JWT_SECRET."

    def add_arguments(self, parser):
        parser.add_argument("user")
        parser.add_argument("--ttl", type=int, default=3600)

    def handle(self, user, ttl, **options):
        if not settings.HERALD_JWT_SECRET:
            raise CommandError("set HERALD_JWT_SECRET (Herald's)")
        self.stdout.write(mint_token(settings.HERALD_JWT_SECRET, user, ttl=ttl))
