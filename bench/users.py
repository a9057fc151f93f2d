"""Benchmark users with signed-in sessions, made in bulk: no login form, no password hash per user.

Every benchmark user shares one password hash (made once), so each gets its session in one bulk
insert: the session holds what ``django.contrib.auth.login`` would store (user id, backend, the
session auth hash). The call tables are emptied before each run so that runs start alike.

Runs inside the runner process, after ``django.setup()`` with the benchmark's DATABASE_URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

USERNAME_PREFIX = "bench-"
PASSWORD = "bench-password"
BACKEND = "django.contrib.auth.backends.ModelBackend"
# Sessions outlive any run by far; the next run replaces them anyway.
SESSION_LIFETIME = timedelta(days=2)
# Tables emptied before a run, in one TRUNCATE (profiles are re-made below).
CALL_TABLES = ("calls_callevent", "calls_userevent", "calls_clientframe", "calls_connection",
               "calls_profile", "calls_callsession", "calls_room")


@dataclass(frozen=True)
class BenchUser:
    user_id: int
    username: str
    session_key: str


def session_key_for(user_id: int) -> str:
    # 32 characters of [a-z0-9], as Django's own keys; unique per user and stable across runs
    return f"benchsession{user_id:020d}"


def reset_call_tables() -> None:
    from django.db import connection

    name = connection.settings_dict["NAME"]
    if "bench" not in name:
        raise SystemExit(f"refusing to empty tables of database {name!r}: its name lacks 'bench'")
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(CALL_TABLES)}")


def prepare_users(count: int) -> list[BenchUser]:
    """``count`` users named bench-00001..., each with a profile and a valid session."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.db import transaction
    from django.utils import timezone

    from calls.models import Profile

    User = get_user_model()
    names = [f"{USERNAME_PREFIX}{index:05d}" for index in range(1, count + 1)]
    with transaction.atomic():
        existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
        missing = [name for name in names if name not in existing]
        if missing:
            password = make_password(PASSWORD)
            User.objects.bulk_create(
                [User(username=name, password=password, is_active=True) for name in missing],
                batch_size=2000)
        users = list(User.objects.filter(username__in=names).order_by("username"))
        Profile.objects.bulk_create(
            [Profile(user_id=user.pk, display_name=user.username) for user in users],
            batch_size=2000, ignore_conflicts=True)
        store = SessionStore()
        expires = timezone.now() + SESSION_LIFETIME
        keys = [session_key_for(user.pk) for user in users]
        Session.objects.filter(session_key__in=keys).delete()
        Session.objects.bulk_create([
            Session(session_key=key, expire_date=expires, session_data=store.encode({
                "_auth_user_id": str(user.pk), "_auth_user_backend": BACKEND,
                "_auth_user_hash": user.get_session_auth_hash()}))
            for key, user in zip(keys, users)], batch_size=2000)
    return [BenchUser(user.pk, user.username, key) for key, user in zip(keys, users)]
