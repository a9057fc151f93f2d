"""Create the demo users (idempotent): alice, bob, carol, dave and a staff admin."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from calls.models import Profile, Room

DEMO_USERS = [
    # username, password, display name, staff
    ("alice", "alice-duet", "Alice Liddell", False),
    ("bob", "bob-duet", "Bob Marley", False),
    ("carol", "carol-duet", "Carol King", False),
    ("dave", "dave-duet", "Dave Brubeck", False),
    ("admin", "admin-duet", "Admin", True),
]


class Command(BaseCommand):
    help = "Create the demo users (alice, bob, carol, dave, admin) if they are missing."

    def handle(self, *args, **options):
        User = get_user_model()
        for username, password, display_name, staff in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = staff
                user.save()
            Profile.objects.update_or_create(user=user, defaults={"display_name": display_name})
            if not staff:
                Room.objects.get_or_create(owner=user, defaults={"title": f"{display_name}'s room"})
            self.stdout.write(f"{'created' if created else 'kept'} {username}")
