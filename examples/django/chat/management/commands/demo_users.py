"""manage.py demo_users PASSWORD: the example's users, alice (in group
"staff") and bob, with that password (created, or their password reset)."""
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the users alice (group staff) and bob with PASSWORD."

    def add_arguments(self, parser):
        parser.add_argument("password")

    def handle(self, password, **options):
        staff, _ = Group.objects.get_or_create(name="staff")
        for name, groups in (("alice", [staff]), ("bob", [])):
            user, _ = get_user_model().objects.get_or_create(username=name)
            user.set_password(password)
            user.save()
            user.groups.set(groups)
        self.stdout.write("users alice (team staff) and bob")
