"""The call socket: one per device. A thin adapter between the wire protocol and the services.

It parses frames (calls.protocol), calls one service per frame and answers with exactly one reply.
It also delivers the user's events to this device at least once, in seq order:
- events arrive through the user's group (calls.events); a seq already sent is dropped, a gap is
  filled from the stored events first;
- an event not acknowledged is sent again after RESEND_FIRST_S, doubling up to RESEND_MAX_S;
- ``hello`` with ``last_seq`` replays what the device missed.

It overrides ``receive`` rather than ``receive_json``: the spec wants oversized frames refused
before decoding, and malformed JSON answered with ``invalid_message`` instead of a closed socket.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from calls import media, selectors, services
from calls.events import remember_home_loop, user_group
from calls.protocol import MAX_FRAME_BYTES, ProtocolError, parse_frame, reply_error, reply_ok
from calls.services import ServiceError, to_ms

log = logging.getLogger(__name__)

# An unacknowledged event is sent again after this long, then after twice as long, ...
RESEND_FIRST_S = 1.0
RESEND_MAX_S = 8.0
# ... until it is this old: by then the call it concerns has ended or timed out, and a device
# that is still connected but silent will get it on its next hello.
RESEND_GIVE_UP_S = 60.0
# Close code for a socket without a signed-in user (the spec's "unauthenticated").
CLOSE_UNAUTHENTICATED = 4401
INCOMING_CALL_REASONS = ("remoteVideoCall", "remoteAudioCall")


class CallConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.user = self.scope.get("user")
        self.device_id: str | None = None
        self.sent_seq = 0
        self.unacked: dict[int, list] = {}  # seq -> [frame, due_monotonic, delay_s, first_sent]
        self.incoming_calls: dict[int, str] = {}  # seq of an incoming-call event -> call_id
        self.resend_task: asyncio.Task | None = None
        await self.accept()
        if self.user is None or not self.user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        remember_home_loop()

    async def disconnect(self, code):
        if self.resend_task is not None:
            self.resend_task.cancel()
        if self.device_id is not None:
            _LOCAL_CHANNELS.discard(self.channel_name)
            await self.channel_layer.group_discard(user_group(self.user.pk), self.channel_name)
            await database_sync_to_async(services.device_disconnect)(channel_name=self.channel_name)

    # ---- client frames --------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = parse_frame(text_data if text_data is not None else bytes_data)
        except ProtocolError as error:
            await self.send_json(reply_error(error.frame_id, error.code, error.message))
            return
        if frame.type == "ack":
            if self.device_id is not None:
                await self.on_ack(**frame.fields)
            return
        if self.device_id is None and frame.type != "hello":
            await self.send_json(reply_error(frame.id, "hello_required", "send hello first"))
            return
        handler = getattr(self, f"on_{frame.type}")
        try:
            data = await handler(**frame.fields)
        except ServiceError as error:
            await self.send_json(reply_error(frame.id, error.code, error.message))
            return
        except DatabaseError:
            log.exception("database error on %s", frame.type)
            await self.send_json(reply_error(frame.id, "unavailable", "try again shortly"))
            return
        await self.send_json(reply_ok(frame.id, data))

    async def on_hello(self, *, device_id: str, last_seq: int | None = None) -> dict:
        if self.device_id is not None and device_id != self.device_id:
            raise ServiceError("invalid_message", "this socket already said hello as another device")
        first_hello = self.device_id is None
        self.device_id = device_id
        if first_hello:
            await self.channel_layer.group_add(user_group(self.user.pk), self.channel_name)
            _LOCAL_CHANNELS.add(self.channel_name)
            _ensure_heartbeat()
        data, replay, cursor = await database_sync_to_async(_hello)(
            self.user, device_id, self.channel_name, last_seq)
        if last_seq is not None:
            self.sent_seq = max(self.sent_seq, min(last_seq, cursor))
        for frame in replay:
            await self._deliver(frame, fill_gaps=False)
        self.sent_seq = max(self.sent_seq, cursor)
        return data

    async def on_call(self, *, to, call_type, extension=None, timeout_ms=None, room=None) -> dict:
        started = await database_sync_to_async(services.call_start)(
            caller=self.user, device_id=self.device_id, callee_id=to, call_type=call_type,
            extension=extension, timeout_ms=timeout_ms, room_id=room)
        data = {"call_id": started.call.call_id, "channel": started.call.channel,
                "media": started.media, "outcome": started.outcome.value}
        return data

    async def on_cancel(self, *, call_id, reason="") -> dict:
        await database_sync_to_async(services.call_cancel)(
            user=self.user, device_id=self.device_id, call_id=call_id, reason=reason)
        return {}

    async def on_accept(self, *, call_id) -> dict:
        return await database_sync_to_async(services.call_accept)(
            user=self.user, device_id=self.device_id, call_id=call_id)

    async def on_reject(self, *, call_id, reason="") -> dict:
        await database_sync_to_async(services.call_reject)(
            user=self.user, device_id=self.device_id, call_id=call_id, reason=reason)
        return {}

    async def on_hangup(self, *, call_id, reason="") -> dict:
        await database_sync_to_async(services.call_hangup)(
            user=self.user, device_id=self.device_id, call_id=call_id, reason=reason)
        return {}

    async def on_media(self, *, call_id, milestone, at_ms=None, code=None, costs=None) -> dict:
        await database_sync_to_async(services.call_report_media)(
            user=self.user, device_id=self.device_id, call_id=call_id, milestone=milestone,
            at_ms=at_ms, code=code, costs=costs)
        return {}

    async def on_signal(self, *, call_id, payload, to_device=None) -> dict:
        await database_sync_to_async(services.call_relay_signal)(
            user=self.user, device_id=self.device_id, call_id=call_id, payload=payload,
            to_device=to_device)
        return {}

    async def on_token(self, *, call_id) -> dict:
        return await database_sync_to_async(services.call_media_credentials)(
            user=self.user, call_id=call_id)

    async def on_ack(self, *, seq: int) -> None:
        for acked in [s for s in self.unacked if s <= seq]:
            del self.unacked[acked]
        delivered = [s for s in self.incoming_calls if s <= seq]
        for acked in delivered:
            call_id = self.incoming_calls.pop(acked)
            await database_sync_to_async(services.call_mark_delivered)(
                call_id=call_id, device_id=self.device_id)

    # ---- server events --------------------------------------------------------------------

    async def user_events(self, message):
        """Events published for this user (calls.events.publish)."""
        if self.device_id is None:
            return
        for item in message["events"]:
            if item["only"] and item["only"] != self.device_id:
                continue
            if item["except"] and item["except"] == self.device_id:
                continue
            await self._deliver(item["frame"], fill_gaps=True)

    async def _deliver(self, frame: dict, *, fill_gaps: bool) -> None:
        seq = frame["seq"]
        if seq <= self.sent_seq:
            return
        if fill_gaps and seq > self.sent_seq + 1:
            missing = await database_sync_to_async(selectors.events_after)(
                user_id=self.user.pk, device_id=self.device_id, after_seq=self.sent_seq,
                until_seq=seq - 1)
            for earlier in missing:
                await self._send_event(earlier)
        await self._send_event(frame)

    async def _send_event(self, frame: dict) -> None:
        seq = frame["seq"]
        if seq <= self.sent_seq:
            return
        self.sent_seq = seq
        now = time.monotonic()
        self.unacked[seq] = [frame, now + RESEND_FIRST_S, RESEND_FIRST_S, now]
        if frame.get("name") == "call.state" and frame.get("reason") in INCOMING_CALL_REASONS:
            self.incoming_calls[seq] = frame["call_id"]
        await self.send_json(frame)
        if self.resend_task is None or self.resend_task.done():
            self.resend_task = asyncio.create_task(self._resend_loop())

    async def _resend_loop(self) -> None:
        while self.unacked:
            now = time.monotonic()
            next_due = min(entry[1] for entry in self.unacked.values())
            if next_due > now:
                await asyncio.sleep(next_due - now)
                continue
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
                await self.send_json(frame)


def _hello(user, device_id: str, channel_name: str, last_seq: int | None):
    now = timezone.now()
    services.device_connect(user=user, device_id=device_id, channel_name=channel_name, now=now)
    cursor = selectors.current_seq(user.pk)
    replay = []
    if last_seq is not None and last_seq < cursor:
        replay = selectors.events_after(user_id=user.pk, device_id=device_id, after_seq=last_seq,
                                        until_seq=cursor, now=now)
    profile = user.profile if hasattr(user, "profile") else None
    data = {
        "user": {"id": user.pk, "username": user.get_username(),
                 "display_name": profile.name if profile else user.get_username()},
        "device_id": device_id,
        "server_time_ms": to_ms(now),
        "config": {
            "ring_timeout_ms": settings.DUET_RING_TIMEOUT_MS,
            "heartbeat_s": settings.DUET_HEARTBEAT_S,
            "max_frame_bytes": MAX_FRAME_BYTES,
            "media": media.engine_config(),
        },
        "active_call": selectors.active_call_view(user_id=user.pk, device_id=device_id),
        "seq": cursor,
    }
    return data, replay, cursor


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
        channels = list(_LOCAL_CHANNELS)
        try:
            await database_sync_to_async(_refresh_seen)(channels)
        except DatabaseError:
            log.exception("presence heartbeat failed; retrying next interval")


def _refresh_seen(channel_names: list[str]) -> None:
    from calls.models import Connection

    now = timezone.now()
    for start in range(0, len(channel_names), 1000):
        Connection.objects.filter(channel_name__in=channel_names[start:start + 1000]).update(seen_at=now)
