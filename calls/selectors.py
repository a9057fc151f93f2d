"""Reads: presence, a device's view of its active call, events to replay, the people to call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from calls import rows
from calls.models import CallSession, Connection, Profile, UserEvent

# A device whose heartbeat has been silent this many intervals counts as gone (crashed process).
HEARTBEAT_MISSES_ALLOWED = 3
# Replay on reconnect covers events at most this old: older ones concern calls long over.
REPLAY_WINDOW_S = 600
# At most this many events are replayed on one hello.
REPLAY_MAX_EVENTS = 500


def presence_cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.DUET_HEARTBEAT_S * HEARTBEAT_MISSES_ALLOWED)


def is_online(user_id: int, *, now: datetime | None = None) -> bool:
    """Whether a device of ``user_id`` has a fresh heartbeat.

    Plain SQL: every dial and every hello asks, and the ORM's ``exists()`` spent about 0.6 ms
    building this statement each time, four times the query itself (docs/benchmarks.md).
    """
    return is_online_sent(user_id, now=now)()


def is_online_sent(user_id: int, *, now: datetime | None = None) -> Callable[[], bool]:
    """Send :func:`is_online`'s query now and read its answer later: ``is_online_sent(...)()``.

    Inside a pipelined block (calls.rows.pipelined) the query travels with the statements sent
    after it, and its answer comes back with theirs: the dial asks whether the callee is online
    and locks both profiles in one round trip instead of two (docs/benchmarks.md). Elsewhere it
    runs at once and the answer is only kept.
    """
    now = now or timezone.now()
    cutoff = _SEEN_AT.get_db_prep_value(presence_cutoff(now), connection)
    return rows.sent(_is_online_sql(connection.vendor), [user_id, cutoff],
                     lambda cursor: cursor.fetchone() is not None)


_SEEN_AT = Connection._meta.get_field("seen_at")


def socket_channels_sent(user_where: str, params) -> Callable[[], dict[int, list[str]]]:
    """Send a read of the channel names of every connection row of the users that ``user_where``
    picks (SQL with ``{user}`` for the connection's user column), fresh or stale; read the answer
    later: ``{user_id: [channel, ...]}`` (calls.events: where a user's events must go)."""
    quote = connection.ops.quote_name
    user = f"{quote(Connection._meta.db_table)}.{quote(Connection._meta.get_field('user').column)}"
    sql = (f"SELECT {user}, {quote(Connection._meta.get_field('channel_name').column)} "
           f"FROM {quote(Connection._meta.db_table)} WHERE {user_where.format(user=user)}")

    def channels_by_user(cursor) -> dict[int, list[str]]:
        channels: dict[int, list[str]] = {}
        for user_id, channel_name in cursor.fetchall():
            channels.setdefault(user_id, []).append(channel_name)
        return channels
    return rows.sent(sql, params, channels_by_user)


@lru_cache(maxsize=None)
def _is_online_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    return (f"SELECT 1 FROM {quote(Connection._meta.db_table)} "
            f"WHERE {quote(Connection._meta.get_field('user').column)} = %s "
            f"AND {quote(_SEEN_AT.column)} >= %s LIMIT 1")


def events_after(*, user_id: int, device_id: str, after_seq: int, now: datetime | None = None,
                 until_seq: int | None = None) -> list[dict]:
    """This device's stored events with seq > after_seq (and <= until_seq), oldest first."""
    now = now or timezone.now()
    rows = UserEvent.objects.filter(
        user_id=user_id, seq__gt=after_seq,
        created_at__gte=now - timedelta(seconds=REPLAY_WINDOW_S),
    ).filter(Q(only_device="") | Q(only_device=device_id)).exclude(except_device=device_id)
    if until_seq is not None:
        rows = rows.filter(seq__lte=until_seq)
    return [row.frame for row in rows.order_by("seq")[:REPLAY_MAX_EVENTS]]


def active_call_view(*, user_id: int, device_id: str) -> dict | None:
    """The fields of this device's latest call.state event for the user's live call, or None."""
    profile = Profile.objects.filter(user_id=user_id).only("active_call_id").first()
    if profile is None or profile.active_call_id is None:
        return None
    call_id = profile.active_call.call_id
    row = (UserEvent.objects.filter(user_id=user_id, call_id=call_id,
                                    frame__name="call.state")
           .filter(Q(only_device="") | Q(only_device=device_id))
           .exclude(except_device=device_id).order_by("-seq").first())
    if row is None:
        return None
    view = {key: value for key, value in row.frame.items() if key not in ("type", "name")}
    # whether a callee device has the call: a caller's page reloaded while ringing shows "ringing"
    # rather than "calling" (the receipt event went to the page it replaced)
    view["info"] = {**view.get("info", {}),
                    "delivered": profile.active_call.delivered_at is not None}
    return view


def current_seq(user_id: int) -> int:
    return Profile.objects.filter(user_id=user_id).values_list("event_seq", flat=True).first() or 0


def callable_users(*, exclude_user_id: int) -> list[dict]:
    users = (get_user_model().objects.filter(is_active=True).exclude(pk=exclude_user_id)
             .select_related("profile").order_by("username"))
    result = []
    for user in users:
        profile = getattr(user, "profile", None)
        result.append({"id": user.pk, "username": user.get_username(),
                       "display_name": (profile.name if profile else user.get_username())})
    return result


# How many users one device may watch the presence of.
MAX_WATCHED_USERS = 200


def presence_of(user_ids: list[int], *, now: datetime | None = None) -> dict[int, str]:
    """``online``, ``busy`` (in a live call) or ``offline`` for each user.

    One plain statement (the users with a fresh heartbeat, then those in a live call): every
    hang-up announces both users' presence from it, and the ORM built its two queries in about
    0.5 ms of a node's CPU each (docs/benchmarks.md).
    """
    now = now or timezone.now()
    user_ids = list(user_ids)
    if not user_ids:
        return {}
    cutoff = _SEEN_AT.get_db_prep_value(presence_cutoff(now), connection)
    if connection.vendor == "postgresql":  # one statement for any number of users
        sql, params = _presence_sql(connection.vendor, 0), [user_ids, cutoff, user_ids]
    else:
        sql, params = _presence_sql(connection.vendor, len(user_ids)), [*user_ids, cutoff,
                                                                         *user_ids]
    online, busy = set(), set()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for user_id, in_call in cursor.fetchall():
            (busy if in_call else online).add(user_id)
    return {user_id: "busy" if user_id in busy else "online" if user_id in online else "offline"
            for user_id in user_ids}


@lru_cache(maxsize=None)
def _presence_sql(vendor: str, count: int) -> str:
    """Rows (user_id, 0) for a fresh heartbeat and (user_id, 1) for a live call; ``count``
    placeholders for the ids, or one array parameter on PostgreSQL (``count`` 0)."""
    quote = connection.ops.quote_name
    ids = "= ANY(%s)" if count == 0 else f"IN ({', '.join(['%s'] * count)})"
    connection_user = quote(Connection._meta.get_field("user").column)
    profile_user = quote(Profile._meta.get_field("user").column)
    return (f"SELECT {connection_user}, 0 FROM {quote(Connection._meta.db_table)} "
            f"WHERE {connection_user} {ids} AND {quote(_SEEN_AT.column)} >= %s "
            f"UNION SELECT {profile_user}, 1 FROM {quote(Profile._meta.db_table)} "
            f"WHERE {profile_user} {ids} "
            f"AND {quote(Profile._meta.get_field('active_call').column)} IS NOT NULL")


# The default watch list of a large community is drawn from this many of the user's latest calls.
RECENT_CALLS_FOR_WATCH = 1000


def default_watch_list(*, user_id: int) -> list[int]:
    """Whom a device watches when it does not say.

    Everyone else while they are at most MAX_WATCHED_USERS (a small community's lobby). Beyond
    that, "everyone" cannot be watched, and the first 200 by username would be the same 200
    people for every device: each of their status changes would go to every connected socket,
    and every socket would join 200 presence groups (docs/memory.md measured it: +17 KiB per idle
    socket and 2.5x slower connects, and a call between two of those 200 took 11 s with 2,000
    sockets watching). So a large community's default is the people the user has been in calls
    with, latest first, up to MAX_WATCHED_USERS: whom the user is likely to call again, spread
    over the users instead of piled on the same 200.
    """
    others = get_user_model().objects.filter(is_active=True).exclude(pk=user_id)
    everyone = list(others.order_by("username").values_list("pk", flat=True)
                    [:MAX_WATCHED_USERS + 1])
    if len(everyone) <= MAX_WATCHED_USERS:
        return everyone
    return recent_call_partners(user_id=user_id, limit=MAX_WATCHED_USERS)


def recent_call_partners(*, user_id: int, limit: int) -> list[int]:
    """Active users this user has called or been called by, latest call first."""
    calls = (CallSession.objects.filter(Q(caller_id=user_id) | Q(callee_id=user_id))
             .order_by("-id").values_list("caller_id", "callee_id")[:RECENT_CALLS_FOR_WATCH])
    partners = list(dict.fromkeys(callee if caller == user_id else caller
                                  for caller, callee in calls))
    partners = [partner for partner in partners if partner != user_id]
    active = set(get_user_model().objects.filter(pk__in=partners, is_active=True)
                 .values_list("pk", flat=True))
    return [partner for partner in partners if partner in active][:limit]
