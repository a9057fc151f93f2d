"""The relay load generator: pairs of sockets on bench/relay_app.py, frames forwarded at a rate.

Side ``a`` of every pair connects to the first node, side ``b`` to the last (the same node with
one node). Frames of FRAME_BYTES go round-robin over the pairs, alternating direction, at the
target frame rate; latency is from just before the send to the arrival at the peer socket, both
timed in this process. The result has the same shape as bench/load.py's, per frame instead of
per cycle.

    python -m bench.relay job.json      (written by bench/run.py)
"""

from __future__ import annotations

import asyncio
import itertools
import time

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from bench import pace
from bench.wire import summarize_ms

# The size of each relayed frame: the floor was measured with 200-byte frames.
FRAME_BYTES = 200
# After the schedule ends, frames in flight get this long to arrive.
DRAIN_S = 5.0


class RelayLoad:
    def __init__(self, job: dict):
        self.job = job
        self.sockets: list[tuple[object, object]] = []
        self.sent_at: dict[int, float] = {}
        self.latencies: list[float] = []
        self.received = 0
        self.received_in_window = 0
        self.sent_in_window = 0
        self.window_open = False
        self.window_closed = False
        self.numbers = itertools.count()
        self.readers: list[asyncio.Task] = []
        self.send_errors = 0

    async def connect(self) -> float:
        started = time.monotonic()
        job = self.job

        async def open_pair(index: int):
            a = await ws_connect(f"{job['a_url']}/relay/{index}/a/", ping_interval=None,
                                 open_timeout=60)
            b = await ws_connect(f"{job['b_url']}/relay/{index}/b/", ping_interval=None,
                                 open_timeout=60)
            return a, b

        self.sockets = await pace.gather_bounded(
            [lambda i=index: open_pair(i) for index in range(job["pairs"])])
        for a, b in self.sockets:
            self.readers.append(asyncio.create_task(self.read(a)))
            self.readers.append(asyncio.create_task(self.read(b)))
        # group_add happens on connect; give a cross-node subscription a moment to settle
        await asyncio.sleep(0.5)
        return time.monotonic() - started

    async def read(self, socket) -> None:
        try:
            async for text in socket:
                arrived = time.perf_counter()
                number = int(text[5:text.index(",")])
                sent = self.sent_at.pop(number, None)
                self.received += 1
                if sent is not None and sent > 0:  # > 0: sent inside the measured window
                    self.latencies.append(arrived - sent)
                if self.window_open and not self.window_closed:
                    self.received_in_window += 1
        except ConnectionClosed:
            pass

    def send_one(self, count: int) -> bool:
        pair = self.sockets[count % len(self.sockets)]
        socket = pair[(count // len(self.sockets)) % 2]
        number = next(self.numbers)
        head = f'{{"n":{number},"p":'
        text = head + '"' + "x" * (FRAME_BYTES - len(head) - 3) + '"}'
        measured = self.window_open and not self.window_closed
        self.sent_at[number] = time.perf_counter() if measured else -1.0
        if measured:
            self.sent_in_window += 1
        task = asyncio.ensure_future(socket.send(text))
        task.add_done_callback(self._sent)
        return True

    def _sent(self, task: asyncio.Future) -> None:
        if task.exception() is not None:
            self.send_errors += 1


async def main(job: dict) -> dict:
    pace.raise_open_files_limit()
    load = RelayLoad(job)
    connect_s = await load.connect()
    window = pace.ServerWindow(job["servers"], job.get("window_marker"))
    until = time.monotonic() + job["warmup_s"] + job["duration_s"]

    async def open_window():
        await asyncio.sleep(job["warmup_s"])
        load.window_open = True
        window.start()

    opener = asyncio.create_task(open_window())
    started, _ = await pace.paced(job["rate"], until, job.get("frames"), load.send_one)
    if not load.window_open:
        opener.cancel()
        load.window_open = True
        window.start()
    load.window_closed = True
    window.stop()
    deadline = time.monotonic() + DRAIN_S
    while any(value > 0 for value in load.sent_at.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # frames in flight have no event to wait on but their arrival
    lost = sum(1 for value in load.sent_at.values() if value > 0)
    still_open = sum(1 for a, b in load.sockets for s in (a, b) if s.state.name == "OPEN")
    for a, b in load.sockets:
        await a.close()
        await b.close()
    for reader in load.readers:
        reader.cancel()
    delivered = len(load.latencies)  # frames sent in the window that arrived
    result = {
        "scenario": "relay",
        "pairs": job["pairs"],
        "frame_bytes": FRAME_BYTES,
        "target_rate": job["rate"],
        "connect_s": round(connect_s, 2),
        "sent": started,
        "sent_in_window": load.sent_in_window,
        "delivered_in_window": delivered,
        "frames_per_s": round(delivered / window.seconds, 1) if window.seconds else None,
        "lost_in_window": lost,
        "send_errors": load.send_errors,
        "sockets_open_at_end": still_open,
        "latency_ms": {"frame": summarize_ms(load.latencies)},
        **window.report(delivered, "frame"),
    }
    return result


if __name__ == "__main__":
    job = pace.read_job()
    pace.write_result(job, asyncio.run(main(job)))
