"""A lean protocol client for load generation: one socket, replies by id, events by predicate.

bench/client.py's ProtocolClient keeps every event and wakes every waiter on each frame, which is
right for tests and too heavy for thousands of sockets on the cores it shares with the server.
This one times every frame on arrival (``time.perf_counter``), acknowledges each sequenced event
at once (as a browser would; with ``event_batches``, each frame of events once, by its highest
seq, as Duet's client does), counts re-sent duplicates, and lets a caller register what it
waits for before sending the frame that causes it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Callable

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

Predicate = Callable[[dict], bool]


class ReplyError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class LoadClient:
    def __init__(self, base_url: str, session_key: str, device_id: str, *, user_id: int = 0,
                 event_batches: bool = False):
        self.ws_url = base_url.replace("http", "ws", 1) + "/ws/calls/"
        self.origin = base_url
        self.session_key = session_key
        self.device_id = device_id
        self.user_id = user_id
        self.event_batches = event_batches
        self.event_frames = 0  # frames that carried sequenced events (each acknowledged once)
        self.ws = None
        self.last_seq = 0
        self.duplicates = 0  # events received again (re-sent by the server) and dropped
        self.presence_frames = 0
        self.events_received = 0
        self.frames_sent = 0
        self.recent: list[tuple[float, dict]] = []  # (arrival time, event) since clear()
        self._ids = itertools.count(1)
        self._replies: dict[str, asyncio.Future] = {}
        self._waiters: list[tuple[Predicate, asyncio.Future]] = []
        self._reader: asyncio.Task | None = None
        self.closed = asyncio.Event()

    async def connect(self, **hello_fields) -> dict:
        self.ws = await ws_connect(
            self.ws_url, origin=self.origin, max_size=2**20, ping_interval=None,
            additional_headers={"Cookie": f"sessionid={self.session_key}"}, open_timeout=60)
        self._reader = asyncio.create_task(self._read())
        if self.event_batches:
            hello_fields["event_batches"] = True
        reply, _, _ = await self.request("hello", device_id=self.device_id, **hello_fields)
        return reply

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def send_frame(self, frame_type: str, **fields) -> tuple[str, float]:
        """Send a frame; returns its id and the moment just before it left."""
        frame_id = f"{self.device_id}-{next(self._ids)}"
        self._replies[frame_id] = asyncio.get_running_loop().create_future()
        text = json.dumps({"id": frame_id, "type": frame_type, **fields})
        sent_at = time.perf_counter()
        await self.ws.send(text)
        self.frames_sent += 1
        return frame_id, sent_at

    async def reply(self, frame_id: str, timeout: float) -> tuple[dict, float]:
        """The reply's data and its arrival time; raises ReplyError on an error reply."""
        future = self._replies[frame_id]
        try:
            message, arrived = await asyncio.wait_for(future, timeout)
        finally:
            self._replies.pop(frame_id, None)
        if not message["ok"]:
            raise ReplyError(message["error"]["code"], message["error"]["message"])
        return message["data"], arrived

    async def request(self, frame_type: str, *, timeout: float = 30.0, **fields):
        frame_id, sent_at = await self.send_frame(frame_type, **fields)
        data, arrived = await self.reply(frame_id, timeout)
        return data, sent_at, arrived

    def clear(self) -> None:
        self.recent.clear()

    def expect(self, predicate: Predicate) -> asyncio.Future:
        """A future for the first event (since clear()) matching ``predicate``: (arrival, event)."""
        future = asyncio.get_running_loop().create_future()
        for arrived, event in self.recent:
            if predicate(event):
                future.set_result((arrived, event))
                return future
        self._waiters.append((predicate, future))
        return future

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                arrived = time.perf_counter()
                message = json.loads(text)
                kind = message.get("type")
                if kind == "reply":
                    future = self._replies.get(message.get("id"))
                    if future is not None and not future.done():
                        future.set_result((message, arrived))
                    if message.get("events"):  # the frame's own events (event_batches)
                        await self._sequenced(message["events"], arrived)
                elif kind == "event":
                    if message.get("seq") is None:
                        self.presence_frames += 1  # presence: unsequenced, never acknowledged
                        continue
                    await self._sequenced([message], arrived)
                elif kind == "events":
                    await self._sequenced(message["events"], arrived)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            pending = [*self._replies.values(), *(future for _, future in self._waiters)]
            for future in pending:
                if not future.done():
                    future.set_exception(ConnectionError(f"{self.device_id}: socket closed"))
                    future.exception()  # retrieved here: whoever awaits it still gets it

    async def _sequenced(self, events: list[dict], arrived: float) -> None:
        """One frame's sequenced events: one ack (its highest seq), then each new one handled."""
        self.event_frames += 1
        await self.ws.send(json.dumps({"type": "ack", "seq": events[-1]["seq"]}))
        for event in events:
            if event["seq"] <= self.last_seq:
                self.duplicates += 1
                continue
            self.last_seq = event["seq"]
            self.events_received += 1
            self.recent.append((arrived, event))
            if self._waiters:
                self._resolve(arrived, event)

    def _resolve(self, arrived: float, event: dict) -> None:
        still = []
        for predicate, future in self._waiters:
            if future.done():
                continue
            if predicate(event):
                future.set_result((arrived, event))
            else:
                still.append((predicate, future))
        self._waiters = still


def is_state(state: str, reason: str | None = None, call_id: str | None = None) -> Predicate:
    def check(event: dict) -> bool:
        return (event.get("name") == "call.state" and event.get("state") == state
                and (reason is None or event.get("reason") == reason)
                and (call_id is None or event.get("call_id") == call_id))
    return check


def is_call_event(name: str, call_id: str | None = None) -> Predicate:
    def check(event: dict) -> bool:
        return (event.get("name") == "call.event" and event.get("event") == name
                and (call_id is None or event.get("call_id") == call_id))
    return check


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))  # ceil(fraction * n)
    return ordered[min(rank, len(ordered)) - 1]


def summarize_ms(values_s: list[float]) -> dict:
    values = [value * 1000 for value in values_s]
    return {"count": len(values),
            "p50": _round(percentile(values, 0.50)), "p95": _round(percentile(values, 0.95)),
            "p99": _round(percentile(values, 0.99)), "max": _round(max(values) if values else None),
            "mean": _round(sum(values) / len(values) if values else None)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
