"""The idle test: how many connected users one daphne process holds, and its memory per socket.

Users connect (bounded concurrency) and say ``hello``; at each checkpoint (e.g. 1k, 5k, 10k) the
generator pauses, lets the server settle, and reads the server's RSS. Memory per connection is
the RSS growth since a warm baseline (after WARM_CONNECTIONS sockets, so that code loaded by the
first connections is not charged to all of them) divided by the sockets added since.

Then every socket stays idle for ``hold_s`` (more than redis-py's 5 s default socket timeout,
the trap of django/channels_redis#422), after which the first two users do one full call cycle:
it must complete, and every socket must still be open.

With ``target: relay`` the same is done against bench/relay_app.py (no session, no hello): the
floor's memory per connection on the same layer.

    python -m bench.idle job.json      (written by bench/run.py)
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import WebSocketException

from bench import pace, procstat
from bench.load import CycleLoad
from bench.wire import LoadClient, ReplyError

# Sockets connected before the baseline is read.
WARM_CONNECTIONS = 20
# Sockets opening at once. Each waits in daphne for the process's one database thread (session,
# user, hello); daphne drops a socket not accepted within 5 s, so the burst is kept small.
CONNECT_CONCURRENCY = 10
# How long the server gets to finish the work of the last connections before RSS is read.
SETTLE_S = 3.0
# How long a memory report of the probed server (bench/memprobe.py) may take.
MEMPROBE_WAIT_S = 600.0


async def main(job: dict) -> dict:
    limit = pace.raise_open_files_limit()
    pid = int(job["servers"]["node1"])
    users = job["users"]
    checkpoints = sorted(set(job["checkpoints"]))
    target = job.get("target", "duet")
    watch = job.get("watch", "none")
    clients: list = []
    failures: list[str] = []
    base_url = job["url"]

    async def open_one(index: int):
        try:
            if target == "relay":
                socket = await ws_connect(f"{base_url}/relay/{index}/a/", ping_interval=None,
                                          open_timeout=120)
                clients.append(socket)
                return
            user = users[index]
            client = LoadClient(base_url, user["session_key"], f"i{user['user_id']}",
                                user_id=user["user_id"])
            fields = {} if watch == "default" else {"watch": []}
            await client.connect(**fields)
            clients.append(client)
        except (OSError, asyncio.TimeoutError, ReplyError, ConnectionError,
                WebSocketException) as error:
            if len(failures) < 20:
                failures.append(f"{index}: {type(error).__name__}: {error}")

    async def connect_range(start: int, stop: int) -> None:
        await pace.gather_bounded([lambda i=i: open_one(i) for i in range(start, stop)],
                                 CONNECT_CONCURRENCY)

    rss_start = procstat.rss_kib(pid)
    started = time.monotonic()
    await connect_range(0, WARM_CONNECTIONS)
    await asyncio.sleep(SETTLE_S)
    baseline = procstat.rss_kib(pid)
    probe_memory = job.get("memprobe", False)
    probes = 0
    if probe_memory:
        probes += 1
        await _memprobe(pid, probes)  # bench/memprobe.py: the baseline snapshot
    points = []
    done = WARM_CONNECTIONS
    for checkpoint in checkpoints:
        await connect_range(done, checkpoint)
        done = checkpoint
        elapsed = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)
        rss = procstat.rss_kib(pid)
        connected = len(clients)
        if probe_memory:
            probes += 1
            await _memprobe(pid, probes)
        points.append({
            "target": checkpoint, "connected": connected,
            "connect_elapsed_s": round(elapsed, 1),
            "rss_kib": rss,
            "rss_delta_kib": rss - baseline,
            "kib_per_connection": round((rss - baseline) / max(1, connected - WARM_CONNECTIONS), 2),
            "kib_per_connection_from_start": round((rss - rss_start) / max(1, connected), 2),
            "load_average": procstat.load_average(),
        })
    await asyncio.sleep(job.get("hold_s", 12))
    if target == "relay":
        still_open = sum(1 for socket in clients if socket.state.name == "OPEN")
        probe = None
    else:
        still_open = sum(1 for client in clients if not client.closed.is_set())
        probe = await _probe_cycle(clients)
    peak = procstat.peak_rss_kib(pid)
    for client in clients:
        try:
            await client.close()
        except (OSError, WebSocketException, asyncio.TimeoutError):
            pass  # a socket the server already dropped: counted above
    return {
        "scenario": "idle",
        "target": target,
        "watch": watch if target == "duet" else None,
        "open_files_limit": limit,
        "rss_start_kib": rss_start,
        "rss_baseline_kib": baseline,
        "warm_connections": WARM_CONNECTIONS,
        "checkpoints": points,
        "connect_failures": (checkpoints[-1] if checkpoints else WARM_CONNECTIONS) - len(clients),
        "failure_samples": failures,
        "hold_s": job.get("hold_s", 12),
        "still_open_after_hold": still_open,
        "probe_cycle_after_hold": probe,
        "peak_rss_kib": peak,
    }


async def _memprobe(pid: int, number: int) -> None:
    """Ask the probed server for report ``number`` and wait until it is written (it takes a
    while with many sockets; the sockets idle meanwhile)."""
    from bench.memprobe import done_marker

    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + MEMPROBE_WAIT_S
    while time.monotonic() < deadline:
        try:
            with open(done_marker(pid)) as handle:
                if int(handle.read() or 0) >= number:
                    return
        except (FileNotFoundError, ValueError):
            pass
        await asyncio.sleep(1.0)  # the marker is a file written by another process


async def _probe_cycle(clients: list[LoadClient]) -> dict:
    """One full call cycle between the first two users after they sat idle."""
    if len(clients) < 2:
        return {"ok": False, "error": "fewer than two users connected"}
    cycle = CycleLoad({"call_type": "video"})
    try:
        call_id, times = await cycle._steps(clients[0], clients[1])
    except (asyncio.TimeoutError, ReplyError, ConnectionError, KeyError) as error:
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return {"ok": True, "call_id": call_id,
            "ms": {name: round(value * 1000, 2) for name, value in times.items()}}


if __name__ == "__main__":
    job = pace.read_job()
    pace.write_result(job, asyncio.run(main(job)))
