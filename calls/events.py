"""The one door for server events: stored with a per-user seq, published only after commit.

Services add events to an :class:`Outbox` inside their transaction. ``flush`` gives each event the
next ``seq`` of its user (the user's profile row must be locked by the caller: that lock is what
makes seqs gapless and ordered), stores them as ``UserEvent`` rows and publishes them to the
user's group once the transaction commits. The channel layer delivers at most once; the consumer
re-sends unacknowledged events and replays stored ones, so publication may be lost without loss
of the event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from redis.exceptions import RedisError
from django.conf import settings
from django.db import close_old_connections, transaction

from calls import rows as statements
from calls.models import Profile, UserEvent
from project.channel_layer import group_send_many

log = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


USER_EVENT_FIELDS = ("user", "seq", "call_id", "frame", "only_device", "except_device",
                     "created_at")


class StoredEvent(NamedTuple):
    """A ``UserEvent`` row as this transaction writes it: its values in ``USER_EVENT_FIELDS``
    order (the insert takes it as it is; no model instance is made for a row only written)."""

    user_id: int
    seq: int
    call_id: str
    frame: dict
    only_device: str
    except_device: str
    created_at: datetime


@dataclass
class PendingEvent:
    user_id: int
    frame: dict
    call_id: str = ""
    only_device: str = ""
    except_device: str = ""


@dataclass
class Outbox:
    now: object  # datetime of the transaction
    events: list[PendingEvent] = field(default_factory=list)
    dirty: dict[int, set[str]] = field(default_factory=dict)  # profile fields to save at flush
    # Work for after commit that nobody waits on (timers, presence): run after the events are
    # handed to the layer, so that a Celery publish or a presence query in the same database
    # thread never delays the events of the transaction (docs/benchmarks.md).
    afterwards: list = field(default_factory=list)

    def after_publish(self, work) -> None:
        """Run ``work()`` once the transaction commits, after this outbox's events are sent."""
        self.afterwards.append(work)

    def touch(self, profile: Profile, field_name: str) -> None:
        """Save ``field_name`` of ``profile`` with the flush (one UPDATE per profile)."""
        self.dirty.setdefault(profile.user_id, set()).add(field_name)

    def add(self, user_id: int, frame: dict, *, call_id: str = "", only_device: str = "",
            except_device: str = "") -> None:
        self.events.append(PendingEvent(user_id, frame, call_id, only_device, except_device))

    def flush(self, profiles: dict[int, Profile]) -> list[StoredEvent]:
        """Store the events, with seqs from the locked ``profiles``, and publish after commit."""
        rows = []
        for pending in self.events:
            profile = profiles[pending.user_id]
            profile.event_seq += 1
            self.dirty.setdefault(pending.user_id, set()).add("event_seq")
            frame = {"type": "event", "seq": profile.event_seq, **pending.frame}
            rows.append(StoredEvent(pending.user_id, profile.event_seq, pending.call_id, frame,
                                    pending.only_device, pending.except_device, self.now))
        save_profiles([profiles[user_id] for user_id in sorted(self.dirty)],
                      sorted(set().union(*self.dirty.values())) if self.dirty else [])
        self.dirty = {}
        afterwards, self.afterwards = self.afterwards, []
        if rows:
            statements.insert_values(UserEvent, USER_EVENT_FIELDS, rows)
            self.events = []
            collecting = getattr(_collector, "target", None)
            if collecting is not None:
                user_id, sink = collecting
                sink.extend(row for row in rows if row.user_id == user_id)
        if rows or afterwards:
            sockets = {user_group(row.user_id): getattr(profiles[row.user_id], "socket_channels",
                                                        None) for row in rows}
            transaction.on_commit(lambda: _publish_then(rows, afterwards, sockets))
        return rows


_collector = threading.local()


@contextmanager
def collected_events(user_id: int):
    """Inside, every event stored for ``user_id`` by this thread is also added to the yielded
    list, in seq order: the events a client frame's own transaction made for its sender, which
    the socket may carry in the frame's reply (docs/protocol.md, ``event_batches``). The list
    means nothing unless the transaction commits; publication is unchanged."""
    sink: list[StoredEvent] = []
    previous = getattr(_collector, "target", None)
    _collector.target = (user_id, sink)
    try:
        yield sink
    finally:
        _collector.target = previous


def _publish_then(rows: list[StoredEvent], afterwards: list,
                  sockets: dict[str, tuple[str, ...] | None]) -> None:
    sent = publish(rows, sockets) if rows else None
    if not afterwards:
        return
    if _home_loop is not None and _home_loop.is_running():
        # A web process: its database thread goes back to the sockets at once (the frame's reply,
        # the next frame's transaction) and the work runs on the process's one after-thread, in
        # commit order, once the loop has sent this transaction's events (docs/benchmarks.md).
        _after_pool().submit(_run_after, sent, afterwards)
    else:
        for work in afterwards:
            work()


# How long the after-thread lets the loop send a transaction's events before it runs the
# transaction's after-work anyway (a send normally takes well under a millisecond).
AFTER_PUBLISH_WAIT_S = 0.5
_after_executor: ThreadPoolExecutor | None = None


def _after_pool() -> ThreadPoolExecutor:
    global _after_executor
    with _home_lock:
        if _after_executor is None:
            _after_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="duet-after")
        return _after_executor


def _run_after(sent: Future | None, afterwards: list) -> None:
    """Run a committed transaction's after-work (ring timer, presence) in the after-thread.

    Waiting for the sends first keeps this thread from taking the interpreter away from the
    loop while it sends the events. A failure is logged: a lost ring timer is caught by beat's
    sweep (``calls_sweep_overdue``), a lost presence update by the watchers' next ``hello``.
    """
    if sent is not None:
        wait([sent], timeout=AFTER_PUBLISH_WAIT_S)
    close_old_connections()
    try:
        for work in afterwards:
            try:
                work()
            except Exception:
                log.exception("after-commit work %r failed", work)
    finally:
        close_old_connections()


def save_profiles(rows: list[Profile], field_names: list[str]) -> None:
    """Write ``field_names`` of the locked profile ``rows`` in one UPDATE.

    The rows are locked by this transaction, so their other values are the stored ones and every
    named field can be written for every row. Hand-written because this runs in every call
    transaction: one statement instead of one ``save()`` per profile, without the ORM's compile.
    """
    if not rows or not field_names:
        return
    params = []
    for name in field_names:
        attname = Profile._meta.get_field(name).attname
        for profile in rows:
            params += [profile.pk, getattr(profile, attname)]
    params += [profile.pk for profile in rows]
    statements.execute(_profiles_update_sql(tuple(field_names), len(rows),
                                            statements.database().vendor), params,
                       updates=Profile._meta.db_table)


@lru_cache(maxsize=None)
def _profiles_update_sql(field_names: tuple[str, ...], count: int, vendor: str) -> str:
    connection = statements.database()
    quote = connection.ops.quote_name
    pk_column = quote(Profile._meta.pk.column)
    cases = " ".join(["WHEN %s THEN %s"] * count)
    assignments = []
    for name in field_names:
        model_field = Profile._meta.get_field(name)
        assignments.append(f"{quote(model_field.column)} = CAST(CASE {pk_column} {cases} END AS "
                           f"{model_field.db_type(connection)})")
    return (f"UPDATE {quote(Profile._meta.db_table)} SET {', '.join(assignments)} "
            f"WHERE {pk_column} IN ({', '.join(['%s'] * count)})")


def wire_event(row: StoredEvent) -> dict:
    """What travels through the channel layer for one stored event."""
    return {"frame": row.frame, "only": row.only_device, "except": row.except_device}


def publish(rows: list[StoredEvent],
            sockets: dict[str, tuple[str, ...] | None] | None = None) -> Future | None:
    """Send stored events to their users' groups: one layer message per user, all of them in one
    send (one Redis round trip on the pub/sub layer, project/channel_layer.py). ``sockets`` gives,
    per group, the channel names of the user's connections as the transaction read them behind
    its lock (services._lock_profiles_where): a group whose sockets are all in this process gets
    its message here, without Redis. Returns the send handed to the server's loop (see
    :func:`send_to_groups`)."""
    by_user: dict[int, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append(wire_event(row))
    return send_to_groups([(user_group(user_id), {"type": "user.events", "events": events})
                           for user_id, events in by_user.items()], sockets)


def local_delivery_on() -> bool:
    """Whether call transactions read their users' sockets so that events for sockets of this
    process skip Redis (``DUET_LOCAL_DELIVERY``; the pub/sub layer on PostgreSQL, whose row locks
    make the read sound: services._lock_profiles_where)."""
    return (settings.DUET_LOCAL_DELIVERY and settings.CHANNEL_LAYER_KIND == "pubsub"
            and statements.database().vendor == "postgresql")


# The event loop of the ASGI server in this process, when there is one. A thread that is not
# running on behalf of that loop (the embedded Celery worker) must hand sends to it: the
# in-memory channel layer's queues belong to that loop.
_home_loop: asyncio.AbstractEventLoop | None = None
_home_lock = threading.Lock()


def remember_home_loop() -> None:
    global _home_loop
    with _home_lock:
        _home_loop = asyncio.get_running_loop()


PUBLISH_ERRORS = (OSError, TimeoutError, ChannelFull, RedisError)


def send_to_groups(messages: list[tuple[str, dict]],
                   sockets: dict[str, tuple[str, ...] | None] | None = None) -> Future | None:
    """Send ``(group, message)`` pairs from synchronous code, without waiting on the server's loop.

    In a web process the send is handed to the server's loop (the layer's connections and the
    in-memory layer's queues belong to it) and this thread goes on: the process has one database
    thread, and waiting there for each publication would hold every socket's database work. A
    send that fails or arrives out of order is what the consumer recovers from (gap fill,
    re-send, replay). Elsewhere (a Celery worker process) the send gets a loop of its own.
    """
    layer = get_channel_layer()
    if layer is None or not messages:
        return None
    home = _home_loop
    if home is not None and home.is_running():
        future = asyncio.run_coroutine_threadsafe(group_send_many(layer, messages, sockets), home)
        future.add_done_callback(lambda done: _log_failure(done, messages))
        return future
    if home is not None and _started_by(home):
        # a thread of a server whose loop has stopped (shutting down): nobody is left to send to
        log.warning("dropping a publication to %s: the server loop has stopped",
                    _groups(messages))
        return None
    try:
        async_to_sync(group_send_many)(layer, messages, sockets)
    except PUBLISH_ERRORS:  # a lost publication is recovered by re-send and replay
        log.exception("publishing to %s failed; clients will recover it by replay",
                      _groups(messages))
    return None


def _groups(messages: list[tuple[str, dict]]) -> str:
    return ", ".join(group for group, _ in messages)


def _log_failure(future, messages: list[tuple[str, dict]]) -> None:
    if future.cancelled():
        return
    error = future.exception()
    if error is not None:
        log.error("publishing to %s failed; clients will recover it by replay", _groups(messages),
                  exc_info=error)


def _started_by(loop: asyncio.AbstractEventLoop) -> bool:
    """True in a thread that sync_to_async started from ``loop``."""
    from asgiref.sync import SyncToAsync

    return getattr(SyncToAsync.threadlocal, "main_event_loop", None) is loop
