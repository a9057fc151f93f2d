"""Test helpers: users, and a device speaking the protocol through Channels' WebsocketCommunicator."""

from __future__ import annotations

import itertools

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from calls.models import Profile

# How long a test waits for one frame the server owes it.
FRAME_WAIT_S = 5.0
# How long "nothing more arrives" is watched for.
SILENCE_S = 0.3
ORIGIN = b"http://testserver"


def make_user(username: str, *, staff: bool = False, display_name: str | None = None):
    user = get_user_model().objects.create_user(username=username, password=f"{username}-pw",
                                                is_staff=staff, is_superuser=staff)
    Profile.objects.create(user=user, display_name=display_name or username.title())
    return user


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def uses_postgres() -> bool:
    return connection.vendor == "postgresql"


class Device:
    """One device (socket) of a user. Events are acknowledged unless ``auto_ack`` is off.

    ``batches``: the device says hello with ``event_batches`` (docs/protocol.md): it takes
    ``events`` frames and a reply's ``events``, and acknowledges each such frame once, with its
    highest seq. ``frames`` keeps every frame received, as it came."""

    _ids = itertools.count(1)

    def __init__(self, user, device_id: str, *, cookie: str, auto_ack: bool = True,
                 origin: bytes = ORIGIN, batches: bool = False):
        from project.asgi import application

        self.user = user
        self.device_id = device_id
        self.auto_ack = auto_ack
        self.batches = batches
        self.frames: list[dict] = []
        self.communicator = WebsocketCommunicator(
            application, "/ws/calls/",
            headers=[(b"cookie", f"sessionid={cookie}".encode()), (b"origin", origin)])
        self.events: list[dict] = []  # every event received, in order, duplicates included
        self.unread: list[dict] = []  # events not yet taken by event()/take_events()
        self.replies: dict[str, dict] = {}
        self.presence: list[dict] = []
        self.handled_seq = 0
        self.hello_data: dict | None = None

    @classmethod
    async def open(cls, user, device_id: str | None = None, *, hello: bool = True,
                   last_seq: int | None = None, media_reset: bool | None = None,
                   **options) -> Device:
        cookie = await database_sync_to_async(session_cookie)(user)
        device = cls(user, device_id or f"{user.username}-{next(cls._ids)}", cookie=cookie,
                     **options)
        device.handled_seq = last_seq or 0
        connected, _ = await device.communicator.connect(timeout=FRAME_WAIT_S)
        assert connected
        if hello:
            fields = {"device_id": device.device_id}
            if last_seq is not None:
                fields["last_seq"] = last_seq
            if media_reset is not None:
                fields["media_reset"] = media_reset
            if device.batches:
                fields["event_batches"] = True
            device.hello_data = await device.ok("hello", **fields)
        return device

    async def close(self) -> None:
        await self.communicator.disconnect()

    # ---- frames ------------------------------------------------------------------------------

    async def send_raw(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def send(self, frame_type: str, *, frame_id: str | None = None, **fields) -> str:
        frame_id = frame_id or f"f{next(self._ids)}"
        await self.communicator.send_json_to({"id": frame_id, "type": frame_type, **fields})
        return frame_id

    async def request(self, frame_type: str, *, frame_id: str | None = None, **fields) -> dict:
        """Send a frame; return its whole reply."""
        frame_id = await self.send(frame_type, frame_id=frame_id, **fields)
        return await self.reply(frame_id)

    async def ok(self, frame_type: str, **fields) -> dict:
        reply = await self.request(frame_type, **fields)
        assert reply["ok"], reply
        return reply["data"]

    async def error(self, frame_type: str, **fields) -> str:
        reply = await self.request(frame_type, **fields)
        assert not reply["ok"], reply
        return reply["error"]["code"]

    async def reply(self, frame_id: str | None) -> dict:
        while frame_id not in self.replies:
            await self._pump()
        return self.replies.pop(frame_id)

    async def next_reply(self) -> dict:
        while not self.replies:
            await self._pump()
        key = next(iter(self.replies))
        return self.replies.pop(key)

    async def _pump(self, timeout: float = FRAME_WAIT_S) -> dict:
        frame = await self.communicator.receive_json_from(timeout=timeout)
        self.frames.append(frame)
        if frame.get("type") == "reply":
            self.replies[frame["id"]] = frame
            await self._sequenced(frame.get("events", []))
        elif frame.get("type") == "event" and "seq" not in frame:
            self.presence.append(frame)  # presence is pushed unsequenced, never acknowledged
        elif frame.get("type") == "event":
            await self._sequenced([frame])
        elif frame.get("type") == "events":
            await self._sequenced(frame["events"])
        return frame

    async def _sequenced(self, events: list[dict]) -> None:
        for event in events:
            self.events.append(event)
            if event["seq"] > self.handled_seq:  # a client drops seqs it already handled
                self.handled_seq = event["seq"]
                self.unread.append(event)
        if events and self.auto_ack:
            await self.communicator.send_json_to({"type": "ack", "seq": events[-1]["seq"]})

    # ---- events ------------------------------------------------------------------------------

    async def event(self, name: str | None = None, **match) -> dict:
        """Take the first unread event matching ``name`` and ``match`` (waits for it)."""
        while True:
            for index, event in enumerate(self.unread):
                if (name is None or event["name"] == name) and all(
                        event.get(key) == value for key, value in match.items()):
                    return self.unread.pop(index)
            await self._pump()

    async def take_events(self, count: int) -> list[dict]:
        """The next ``count`` unread events, in order."""
        while len(self.unread) < count:
            await self._pump()
        taken, self.unread = self.unread[:count], self.unread[count:]
        return taken

    async def presence_of(self, user_id: int, status: str) -> dict:
        """Wait for a presence event saying ``user_id`` is ``status``."""
        while True:
            for event in self.presence:
                if event["user_id"] == user_id and event["status"] == status:
                    self.presence.remove(event)
                    return event
            await self._pump()

    async def assert_silent(self, timeout: float = SILENCE_S) -> None:
        """No sequenced event arrives within ``timeout`` (and nothing unread is pending)."""
        assert self.unread == [], self.unread
        if not await self.communicator.receive_nothing(timeout=timeout):
            frame = await self._pump()
            assert "seq" not in frame and frame.get("type") == "event", frame
            await self.assert_silent(timeout)

    async def ack(self, seq: int) -> None:
        await self.communicator.send_json_to({"type": "ack", "seq": seq})


def summary(events: list[dict]) -> list[tuple]:
    """Events as short tuples for exact sequence assertions."""
    out = []
    for event in events:
        if event["name"] == "call.state":
            out.append(("state", event["state"], event["reason"]))
        elif event["name"] == "call.event":
            out.append(("event", event["event"]))
        else:
            out.append((event["name"],))
    return out
