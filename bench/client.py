"""A small client of the call protocol over a real WebSocket, for the smoke test and benchmarks.

It signs in over HTTP (the Django session cookie is the socket's credential), says ``hello``,
acknowledges every event, and lets the caller await replies and events by name.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import itertools
import json
import re
import time
import urllib.parse
import urllib.request

import websockets

# How long a wait for one reply or event may take before the client reports it missing.
DEFAULT_WAIT_S = 10.0
# A socket whose server died answers no close frame; do not wait long for one.
CLOSE_TIMEOUT_S = 1.0


def sign_in(base_url: str, username: str, password: str) -> str:
    """Sign in through the login form; returns the ``sessionid`` cookie value."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base_url}/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrfmiddlewaretoken": token}).encode()
    request = urllib.request.Request(f"{base_url}/login/", data=form,
                                     headers={"Referer": f"{base_url}/login/"})
    opener.open(request).read()
    for cookie in jar:
        if cookie.name == "sessionid":
            return cookie.value
    raise RuntimeError(f"sign-in as {username} failed")


class ProtocolClient:
    def __init__(self, base_url: str, session_id: str, device_id: str, *, auto_ack: bool = True):
        self.ws_url = base_url.replace("http", "ws", 1) + "/ws/calls/"
        self.origin = base_url
        self.session_id = session_id
        self.device_id = device_id
        self.auto_ack = auto_ack
        self.events: list[dict] = []
        self.presence: list[dict] = []
        self.replies: dict[str, dict] = {}
        self.last_seq = 0
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task | None = None
        self.ws = None
        self.hello: dict | None = None
        self.received_at: dict[int, float] = {}

    async def connect(self, *, last_seq: int | None = None, **hello_fields) -> dict:
        """Open the socket and say hello (``hello_fields``: e.g. ``event_batches=True``)."""
        self.ws = await websockets.connect(
            self.ws_url, origin=self.origin, max_size=2**20, close_timeout=CLOSE_TIMEOUT_S,
            additional_headers={"Cookie": f"sessionid={self.session_id}"})
        self._reader = asyncio.create_task(self._read())
        fields = {"device_id": self.device_id, **hello_fields}
        if last_seq is not None:
            fields["last_seq"] = last_seq
        self.hello = await self.request("hello", **fields)
        return self.hello

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                message = json.loads(text)
                async with self._changed:
                    kind = message.get("type")
                    if kind == "reply":
                        self.replies[message["id"]] = message
                        await self._sequenced(message.get("events", []))  # event_batches
                    elif kind == "event" and "seq" not in message:
                        self.presence.append(message)  # presence: unsequenced, not acknowledged
                    elif kind == "event":
                        await self._sequenced([message])
                    elif kind == "events":  # event_batches: acknowledged once, by the last seq
                        await self._sequenced(message["events"])
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _sequenced(self, events: list[dict]) -> None:
        for event in events:
            self.received_at[event["seq"]] = time.perf_counter()
            if event["seq"] > self.last_seq:
                self.last_seq = event["seq"]
                self.events.append(event)
        if events and self.auto_ack:
            await self.ws.send(json.dumps({"type": "ack", "seq": events[-1]["seq"]}))

    async def send(self, frame_type: str, frame_id: str | None = None, **fields) -> str:
        frame_id = frame_id or f"{self.device_id}-{next(self._ids)}"
        await self.ws.send(json.dumps({"id": frame_id, "type": frame_type, **fields}))
        return frame_id

    async def request(self, frame_type: str, *, timeout: float = DEFAULT_WAIT_S, **fields) -> dict:
        """Send a frame and return its reply's data; raises ``ReplyError`` on an error reply."""
        reply = await self.reply_to(await self.send(frame_type, **fields), timeout=timeout)
        if not reply["ok"]:
            raise ReplyError(reply["error"]["code"], reply["error"]["message"])
        return reply["data"]

    async def reply_to(self, frame_id: str, *, timeout: float = DEFAULT_WAIT_S) -> dict:
        return await self._wait(lambda: self.replies.get(frame_id), timeout, f"reply {frame_id}")

    async def event(self, name: str, *, timeout: float = DEFAULT_WAIT_S, after: int = 0,
                    **match) -> dict:
        """The first event named ``name`` with seq > ``after`` whose fields equal ``match``."""
        def find():
            for event in self.events:
                if event["seq"] > after and event["name"] == name and all(
                        event.get(key) == value for key, value in match.items()):
                    return event
            return None
        return await self._wait(find, timeout, f"event {name} {match}")

    async def presence_of(self, user_id: int, status: str, *,
                          timeout: float = DEFAULT_WAIT_S) -> dict:
        """Wait for (and take) a presence event saying ``user_id`` is ``status``."""
        def find():
            for event in self.presence:
                if event["user_id"] == user_id and event["status"] == status:
                    self.presence.remove(event)
                    return event
            return None
        return await self._wait(find, timeout, f"presence {user_id} {status}")

    async def _wait(self, find, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                found = find()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.device_id}: no {what} within {timeout}s")
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass


class ReplyError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
