"""The call socket: one per device. A thin adapter between the wire protocol and the services.

It parses frames (calls.protocol), calls one service per frame and answers with exactly one reply.
It also delivers the user's events to this device at least once, in seq order:
- events arrive through the user's group (calls.events); a seq already sent is dropped, a gap is
  filled from the stored events first;
- an event not acknowledged is sent again after RESEND_FIRST_S, doubling up to RESEND_MAX_S;
- ``hello`` with ``last_seq`` replays what the device missed;
- a device that said hello with ``event_batches`` gets a publication's events in one ``events``
  frame, and the events its own frame made for it with that frame's reply (docs/protocol.md).

It overrides ``receive`` rather than ``receive_json``: the spec wants oversized frames refused
before decoding, and malformed JSON answered with ``invalid_message`` instead of a closed socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from bisect import bisect_left
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async as _database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.consumer import get_handler_name
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from calls import devices, gate, media, selectors, services
from calls.events import remember_home_loop, user_group, wire_event
from calls.gate import SocketUser
from calls.models import Profile
from calls.protocol import MAX_FRAME_BYTES, ProtocolError, parse_frame, reply_error, reply_ok
from calls.services import ServiceError, to_ms

log = logging.getLogger(__name__)

# An unacknowledged event is sent again after this long, then after twice as long, ...
RESEND_FIRST_S = 1.0
RESEND_MAX_S = 8.0
# ... until it is this old: by then the call it concerns has ended or timed out, and a device
# that is still connected but silent will get it on its next hello.
RESEND_GIVE_UP_S = 60.0
# A device may send this many frames a second on average, in bursts of up to FRAME_BURST (acks
# included: a client acks each event, and a call's set-up is a burst of signals and milestones).
FRAME_RATE_PER_S = 50.0
FRAME_BURST = 200
# Close code for a socket without a signed-in user (the spec's "unauthenticated").
CLOSE_UNAUTHENTICATED = 4401
INCOMING_CALL_REASONS = ("remoteVideoCall", "remoteAudioCall")
# A device that said hello with ``event_batches`` gets at most this many events in one ``events``
# frame (a replay of up to 500 stored events goes out in several).
EVENTS_PER_FRAME = 50
# The socket's database work runs on DUET_DATABASE_THREADS threads, each with its own database
# connection. Channels' default is one thread per process for every database_sync_to_async call,
# so each frame's transaction (PostgreSQL round trips included) waited for every other socket's.
# Row locks, always taken in one order, keep concurrent services correct.
_database_executor = ThreadPoolExecutor(max_workers=settings.DUET_DATABASE_THREADS,
                                        thread_name_prefix="duet-db")


def database_sync_to_async(function):
    return _database_sync_to_async(function, thread_sensitive=False, executor=_database_executor)

# The last presence status sent for each watched user, one byte each (0: none sent yet).
PRESENCE_STATUSES = ("offline", "online", "busy")
_STATUS_CODE = {status: code for code, status in enumerate(PRESENCE_STATUSES, start=1)}
# A socket that watches nobody shares these (never written to).
_NOBODY = array("q")
_NO_STATUSES = b""


class CallConsumer(AsyncJsonWebsocketConsumer):
    async def dispatch(self, message):
        """Channels' dispatch without its ``aclose_old_connections()`` before every message.

        Channels 4.2+ hops to the process's sync thread before handling each frame, ack and group
        message, to close stale database connections: on a loaded node that was a sixth of the
        process's CPU and a queue in front of the database thread (docs/benchmarks.md). This
        consumer touches the database only through ``database_sync_to_async``, which closes stale
        connections around each call in the thread that owns them.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def send_json(self, content, close=False):
        """Channels' send_json, except that a frame for a client already gone is dropped.

        Between a client closing its socket and daphne handing this consumer the disconnect,
        another socket's event may still come through the groups (a presence change, an event).
        daphne then raises ``Disconnected``, and an exception out of a handler ends the consumer
        before its ``disconnect`` runs: the device's connection row stayed, the heartbeat kept
        refreshing it, and its user counted as online for good (tests/cluster, presence across
        two nodes, failed about once in 40 runs). The disconnect that follows cleans up.
        """
        try:
            await super().send_json(content, close=close)
        except Disconnected:
            log.debug("dropped a frame for %s: the client is gone", self.channel_name)

    async def connect(self):
        """The door first (calls.gate): a foreign Origin is refused before the handshake
        completes, a socket without a signed-in user is accepted and closed with 4401."""
        self.user: SocketUser | None = None
        self.device_id: str | None = None
        self.sent_seq = 0
        # hello's ``event_batches``: several events in one frame, and a frame's own events in
        # its reply (docs/protocol.md); without it, every event is a frame of its own
        self.batches = False
        self.unacked: dict[int, list] = {}  # seq -> [frame, due_monotonic, delay_s, first_sent]
        self.incoming_calls: dict[int, str] = {}  # seq of an incoming-call event -> call_id
        self.resend_task: asyncio.Task | None = None
        headers = self.scope.get("headers", ())
        if not gate.origin_allowed(headers):
            await self.close()  # before accept: daphne refuses the handshake (403)
            return
        self.user = await database_sync_to_async(gate.socket_user)(gate.session_key(headers))
        gate.trim_scope(self.scope)
        # Presence state, compact because a lobby socket may watch 200 users: the watched ids
        # sorted (8 bytes each), and the status last sent for each, by position (1 byte each).
        self.watched: array = _NOBODY
        self.presence_sent: bytearray | bytes = _NO_STATUSES
        self.allowance = float(FRAME_BURST)
        self.allowance_at = time.monotonic()
        await self.accept()
        if self.user is None:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        remember_home_loop()

    async def disconnect(self, code):
        if self.resend_task is not None:
            self.resend_task.cancel()
        if self.device_id is not None:
            _LOCAL_CHANNELS.discard(self.channel_name)
            await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
            for user_id in self.watched:
                await self.channel_layer.group_discard(devices.presence_group(user_id),
                                                       self.channel_name)
            await database_sync_to_async(devices.device_disconnect)(channel_name=self.channel_name)

    # ---- client frames --------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = parse_frame(text_data if text_data is not None else bytes_data)
        except ProtocolError as error:
            await self.send_json(reply_error(error.frame_id, error.code, error.message))
            return
        if not self._within_rate():
            if frame.type != "ack":
                await self.send_json(reply_error(frame.id, "rate_limited",
                                                 "too many frames; slow down"))
            return
        started = time.perf_counter()
        try:
            await self._dispatch(frame)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s frame %s answered in %.1f ms", frame.type, frame.id,
                          (time.perf_counter() - started) * 1000)
        except Exception:  # the socket's boundary: answer and keep the device connected
            log.exception("unexpected error handling a %s frame", frame.type)
            if frame.type != "ack":
                await self.send_json(reply_error(frame.id, "internal", "the server failed"))

    def _within_rate(self) -> bool:
        now = time.monotonic()
        self.allowance = min(FRAME_BURST, self.allowance + (now - self.allowance_at) * FRAME_RATE_PER_S)
        self.allowance_at = now
        if self.allowance < 1:
            return False
        self.allowance -= 1
        return True

    async def _dispatch(self, frame) -> None:
        if frame.type == "ack":
            if self.device_id is not None:
                await self.on_ack(**frame.fields)
            return
        if frame.type == "hello":
            await self.send_json(await self._answer(frame.id, self.on_hello, frame.fields))
            return
        if self.device_id is None:
            await self.send_json(reply_error(frame.id, "hello_required", "send hello first"))
            return
        handler = FRAME_HANDLERS[frame.type]
        user = self.user.model()
        context = FrameContext(user, self.device_id)

        def handle():
            return handler(context, **frame.fields)

        made = [] if self.batches else None
        reply = await self._answer(
            frame.id, database_sync_to_async(services.client_frame_once),
            {"user": user, "frame_id": frame.id, "handle": handle, "events_out": made},
            whole_reply=True)
        own = self._next_in_order([wire_event(row) for row in made]) if made else []
        await self.send_json({**reply, "events": own} if own else reply)
        if own:
            self._ensure_resending()

    async def _answer(self, frame_id, function, fields, *, whole_reply=False) -> dict:
        try:
            result = await function(**fields)
        except ServiceError as error:
            return reply_error(frame_id, error.code, error.message)
        except DatabaseError:
            log.exception("database error answering frame %s", frame_id)
            return reply_error(frame_id, "unavailable", "the server cannot answer now; try again")
        return result if whole_reply else reply_ok(frame_id, result)

    async def on_hello(self, *, device_id: str, last_seq: int | None = None,
                       watch: list[int] | None = None, media_reset: bool = False,
                       event_batches: bool = False) -> dict:
        if self.device_id is not None and device_id != self.device_id:
            raise ServiceError("invalid_message", "this socket already said hello as another device")
        first_hello = self.device_id is None
        self.device_id = device_id
        self.batches = event_batches
        if first_hello:
            await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
            _LOCAL_CHANNELS.add(self.channel_name)
            _ensure_heartbeat()
        watched = watch if watch is not None else await database_sync_to_async(
            selectors.default_watch_list)(user_id=self.user.pk)
        before, after = set(self.watched), set(watched)
        for user_id in after - before:
            await self.channel_layer.group_add(devices.presence_group(user_id), self.channel_name)
        for user_id in before - after:
            await self.channel_layer.group_discard(devices.presence_group(user_id), self.channel_name)
        self.watched = array("q", sorted(after)) if after else _NOBODY
        self.presence_sent = _status_codes(self.watched, [])
        data, replay, cursor = await database_sync_to_async(_hello)(
            self.user.model(), device_id, self.channel_name, last_seq, watched, media_reset)
        self.presence_sent = _status_codes(self.watched, data["presence"])
        if last_seq is not None:
            self.sent_seq = max(self.sent_seq, min(last_seq, cursor))
        await self._send_events([frame for frame in replay if self._take(frame)])
        self.sent_seq = max(self.sent_seq, cursor)
        return data

    async def on_ack(self, *, seq: int) -> None:
        for acked in [s for s in self.unacked if s <= seq]:
            del self.unacked[acked]
        delivered = [s for s in self.incoming_calls if s <= seq]
        for acked in delivered:
            call_id = self.incoming_calls.pop(acked)
            try:
                await database_sync_to_async(services.call_mark_delivered)(
                    call_id=call_id, device_id=self.device_id)
            except ServiceError:
                pass  # the call is gone: nothing to confirm
            except DatabaseError:
                log.exception("could not record the delivery of call %s", call_id)

    async def presence_changed(self, message):
        """A watched user's status changed (calls.devices.presence_publish)."""
        user_id, status = message["user_id"], message["status"]
        index = bisect_left(self.watched, user_id)
        if index == len(self.watched) or self.watched[index] != user_id:
            return
        code = _STATUS_CODE.get(status, 0)
        if code and self.presence_sent[index] == code:
            return
        self.presence_sent[index] = code
        await self.send_json({"type": "event", "name": "presence", "call_id": None,
                              "user_id": user_id, "status": status})

    # ---- server events --------------------------------------------------------------------

    async def user_events(self, message):
        """Events published for this user (calls.events.publish)."""
        if self.device_id is None:
            return
        frames = []
        for item in message["events"]:
            if self._is_mine(item):
                frames += await self._unsent(item["frame"])
            elif item["frame"]["seq"] == self.sent_seq + 1:
                # another device's event: seen, so the next one of ours is no gap to fill
                self.sent_seq += 1
        await self._send_events(frames)

    def _is_mine(self, item: dict) -> bool:
        return not ((item["only"] and item["only"] != self.device_id)
                    or (item["except"] and item["except"] == self.device_id))

    def _next_in_order(self, items: list[dict]) -> list[dict]:
        """Of a frame's own events, those this device gets next in seq order, taken as sent (for
        the reply). From the first gap on (an earlier event still on its way through the group)
        nothing is taken: the group's copy comes after it, and a gap is filled there."""
        frames = []
        for item in items:
            seq = item["frame"]["seq"]
            if seq <= self.sent_seq:
                continue
            if seq != self.sent_seq + 1:
                break
            if self._is_mine(item):
                self._take(item["frame"])
                frames.append(item["frame"])
            else:
                self.sent_seq += 1
        return frames

    async def _unsent(self, frame: dict) -> list[dict]:
        """``frame`` if this device has not had it, after the stored events of any gap before it,
        all taken as sent."""
        seq = frame["seq"]
        if seq <= self.sent_seq:
            return []
        frames = []
        if seq > self.sent_seq + 1:
            missing = await database_sync_to_async(selectors.events_after)(
                user_id=self.user.pk, device_id=self.device_id, after_seq=self.sent_seq,
                until_seq=seq - 1)
            frames = [earlier for earlier in missing if self._take(earlier)]
        if self._take(frame):
            frames.append(frame)
        return frames

    def _take(self, frame: dict) -> bool:
        """Count ``frame`` as sent (re-sent until acknowledged); False if it was already."""
        seq = frame["seq"]
        if seq <= self.sent_seq:
            return False
        self.sent_seq = seq
        now = time.monotonic()
        self.unacked[seq] = [frame, now + RESEND_FIRST_S, RESEND_FIRST_S, now]
        if frame.get("name") == "call.state" and frame.get("reason") in INCOMING_CALL_REASONS:
            self.incoming_calls[seq] = frame["call_id"]
        return True

    async def _send_events(self, frames: list[dict], *, resend: bool = False) -> None:
        """Put events on the wire in seq order: one frame each, or with ``event_batches`` up to
        EVENTS_PER_FRAME in one ``events`` frame."""
        if not frames:
            return
        if self.batches and len(frames) > 1:
            for start in range(0, len(frames), EVENTS_PER_FRAME):
                await self.send_json({"type": "events",
                                      "events": frames[start:start + EVENTS_PER_FRAME]})
        else:
            for frame in frames:
                await self.send_json(frame)
        if not resend:
            self._ensure_resending()

    def _ensure_resending(self) -> None:
        if self.unacked and (self.resend_task is None or self.resend_task.done()):
            self.resend_task = asyncio.create_task(self._resend_loop())

    async def _resend_loop(self) -> None:
        while self.unacked:
            now = time.monotonic()
            next_due = min(entry[1] for entry in self.unacked.values())
            if next_due > now:
                await asyncio.sleep(next_due - now)
                continue
            due = []
            for seq in sorted(self.unacked):
                entry = self.unacked.get(seq)
                if entry is None or entry[1] > now:
                    continue
                frame, _, delay, first_sent = entry
                if now - first_sent > RESEND_GIVE_UP_S:
                    del self.unacked[seq]
                    continue
                delay = min(delay * 2, RESEND_MAX_S)
                entry[1], entry[2] = now + delay, delay
                due.append(frame)
            await self._send_events(due, resend=True)


def _status_codes(watched: array, presence: list[dict]) -> bytearray | bytes:
    """The hello snapshot as the status last sent for each of ``watched``, by position."""
    if not watched:
        return _NO_STATUSES
    codes = bytearray(len(watched))
    for item in presence:
        index = bisect_left(watched, item["user_id"])
        if index < len(watched) and watched[index] == item["user_id"]:
            codes[index] = _STATUS_CODE.get(item["status"], 0)
    return codes


def _hello(user, device_id: str, channel_name: str, last_seq: int | None, watched: list[int],
           media_reset: bool):
    now = timezone.now()
    devices.device_connect(user=user, device_id=device_id, channel_name=channel_name, now=now)
    if media_reset:  # a reloaded page: the frames its predecessor saw do not count for it
        services.call_media_reset(user=user, device_id=device_id, now=now)
    cursor = selectors.current_seq(user.pk)
    replay = []
    if last_seq is not None and last_seq < cursor:
        replay = selectors.events_after(user_id=user.pk, device_id=device_id, after_seq=last_seq,
                                        until_seq=cursor, now=now)
    # not user.profile: that would stay cached on the user the socket keeps
    display_name = Profile.objects.filter(user_id=user.pk).values_list(
        "display_name", flat=True).first()
    statuses = selectors.presence_of(watched, now=now)
    data = {
        "user": {"id": user.pk, "username": user.get_username(),
                 "display_name": display_name or user.get_username()},
        "device_id": device_id,
        "server_time_ms": to_ms(now),
        "config": {
            "ring_timeout_ms": settings.DUET_RING_TIMEOUT_MS,
            "heartbeat_s": settings.DUET_HEARTBEAT_S,
            "reconnect_grace_s": settings.DUET_RECONNECT_GRACE_S,
            "max_frame_bytes": MAX_FRAME_BYTES,
            "media": media.engine_config(),
        },
        "active_call": selectors.active_call_view(user_id=user.pk, device_id=device_id),
        "seq": cursor,
        "presence": [{"user_id": user_id, "status": statuses[user_id]} for user_id in watched],
    }
    return data, replay, cursor


@dataclass(frozen=True)
class FrameContext:
    user: object
    device_id: str


# Frame handlers run in a worker thread inside services.client_frame_once's transaction: each
# calls one service and returns the reply data.
def _call(ctx, *, to, call_type, extension=None, timeout_ms=None, room=None,
          wait_first_frame=True) -> dict:
    started = services.call_start(caller=ctx.user, device_id=ctx.device_id, callee_id=to,
                                  call_type=call_type, extension=extension,
                                  timeout_ms=timeout_ms, room_id=room,
                                  wait_first_frame=wait_first_frame)
    return {"call_id": started.call.call_id, "channel": started.call.channel,
            "media": started.media, "outcome": started.outcome.value}


def _cancel(ctx, *, call_id, reason="") -> dict:
    services.call_cancel(user=ctx.user, device_id=ctx.device_id, call_id=call_id, reason=reason)
    return {}


def _accept(ctx, *, call_id, wait_first_frame=True, first_remote_frame=False, costs=None) -> dict:
    return services.call_accept(user=ctx.user, device_id=ctx.device_id, call_id=call_id,
                                wait_first_frame=wait_first_frame,
                                first_remote_frame=first_remote_frame, costs=costs)


def _reject(ctx, *, call_id, reason="") -> dict:
    services.call_reject(user=ctx.user, device_id=ctx.device_id, call_id=call_id, reason=reason)
    return {}


def _hangup(ctx, *, call_id, reason="") -> dict:
    services.call_hangup(user=ctx.user, device_id=ctx.device_id, call_id=call_id, reason=reason)
    return {}


def _media(ctx, *, call_id, milestone, at_ms=None, code=None, costs=None) -> dict:
    services.call_report_media(user=ctx.user, device_id=ctx.device_id, call_id=call_id,
                               milestone=milestone, at_ms=at_ms, code=code, costs=costs)
    return {}


def _signal(ctx, *, call_id, payload, to_device=None) -> dict:
    services.call_relay_signal(user=ctx.user, device_id=ctx.device_id, call_id=call_id,
                               payload=payload, to_device=to_device)
    return {}


def _token(ctx, *, call_id) -> dict:
    return services.call_media_credentials(user=ctx.user, call_id=call_id)


FRAME_HANDLERS = {"call": _call, "cancel": _cancel, "accept": _accept, "reject": _reject,
                  "hangup": _hangup, "media": _media, "signal": _signal, "token": _token}


# ---- presence heartbeat: one refresh per process, not one per socket ------------------------

_LOCAL_CHANNELS: set[str] = set()
_heartbeat_task: asyncio.Task | None = None


def _ensure_heartbeat() -> None:
    global _heartbeat_task
    if _heartbeat_task is None or _heartbeat_task.done():
        _heartbeat_task = asyncio.create_task(_heartbeat_loop())


async def _heartbeat_loop() -> None:
    while _LOCAL_CHANNELS:
        await asyncio.sleep(settings.DUET_HEARTBEAT_S)
        try:
            await database_sync_to_async(devices.device_heartbeat)(channel_names=list(_LOCAL_CHANNELS))
        except DatabaseError:
            log.exception("presence heartbeat failed; retrying next interval")
