"""Device services: connections, presence, and noticing that a participant's devices are gone.

A device is connected while its ``Connection`` row is fresh (its process refreshes ``seen_at``
every DUET_HEARTBEAT_S). A user is ``online`` with at least one fresh connection, ``busy`` while
in a live call, else ``offline``. When a participant of a live call loses every device (a clean
close, or heartbeats that stopped because a process died), the call gets ``peer_disconnected``
and a grace timer; a device back in time gives ``peer_reconnected``.

Presence events are best-effort pushes to the watchers of a user (group ``presence.<id>``), not
sequenced events: the ``hello`` snapshot is their truth (docs/protocol.md says why).
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from calls import selectors, services
from calls.events import send_to_groups
from calls.models import Connection, Profile


def presence_group(user_id: int) -> str:
    return f"presence.{user_id}"


def presence_publish(*, user_ids, known: dict[int, str] | None = None) -> None:
    """Push the current status of ``user_ids`` (or the ``known`` statuses) to their watchers."""
    statuses = known if known is not None else selectors.presence_of(list(user_ids))
    send_to_groups([(presence_group(user_id),
                     {"type": "presence.changed", "user_id": user_id, "status": status})
                    for user_id, status in statuses.items()])


def device_connect(*, user, device_id: str, channel_name: str, now: datetime | None = None) -> None:
    now = now or timezone.now()
    Profile.objects.get_or_create(user_id=user.pk)
    with transaction.atomic():
        # The profile row, shared with other hellos but not with a call transaction: a
        # transaction that locked it first commits before this connection exists (so the hello
        # that follows replays its events); one that locks it after sees this connection and
        # publishes through the layer (local delivery, calls.services._lock_profiles_where).
        _share_profile(user.pk)
        was_online = selectors.is_online(user.pk, now=now)
        Connection.objects.update_or_create(
            channel_name=channel_name,
            defaults={"user": user, "device_id": device_id, "connected_at": now, "seen_at": now})
        if not was_online:
            transaction.on_commit(lambda: presence_publish(user_ids=[user.pk]))
    call_id = _live_call_id(user.pk)
    if call_id is not None:
        services.call_peer_back(call_id=call_id, user_id=user.pk, now=now)


def _share_profile(user_id: int) -> None:
    if connection.vendor != "postgresql":
        return  # SQLite: one writer at a time anyway
    with connection.cursor() as cursor:
        cursor.execute(_SHARE_PROFILE_SQL, [user_id])


_SHARE_PROFILE_SQL = (f"SELECT 1 FROM {Profile._meta.db_table} "
                      f"WHERE {Profile._meta.get_field('user').column} = %s FOR SHARE")


def device_disconnect(*, channel_name: str, now: datetime | None = None) -> None:
    now = now or timezone.now()
    row = Connection.objects.filter(channel_name=channel_name).values_list("user_id", flat=True).first()
    Connection.objects.filter(channel_name=channel_name).delete()
    if row is not None:
        _after_device_gone(row, now)


def device_heartbeat(*, channel_names: list[str], now: datetime | None = None) -> None:
    now = now or timezone.now()
    for start in range(0, len(channel_names), 1000):
        Connection.objects.filter(channel_name__in=channel_names[start:start + 1000]).update(seen_at=now)


def connections_sweep_stale(*, now: datetime | None = None) -> int:
    """Drop connections whose process stopped refreshing them; returns how many."""
    now = now or timezone.now()
    stale = Connection.objects.filter(seen_at__lt=selectors.presence_cutoff(now))
    users = set(stale.values_list("user_id", flat=True))
    count, _ = stale.delete()
    for user_id in users:
        _after_device_gone(user_id, now)
    return count


def _after_device_gone(user_id: int, now: datetime) -> None:
    if selectors.is_online(user_id, now=now):
        return  # another device is still here
    presence_publish(user_ids=[user_id])
    call_id = _live_call_id(user_id)
    if call_id is not None:
        services.call_peer_gone(call_id=call_id, user_id=user_id, now=now)


def _live_call_id(user_id: int) -> str | None:
    return (Profile.objects.filter(user_id=user_id, active_call__isnull=False)
            .values_list("active_call__call_id", flat=True).first())
