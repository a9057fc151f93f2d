"""What the load generators share: reading their job, pacing work at a rate, sampling the servers.

A load generator runs as its own process (``python -m bench.load job.json``): the runner writes
the job (URLs, users, rate, durations, the server pids to charge) and reads the result file.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from typing import Awaitable, Callable

from bench import procstat

# How many sockets open at once while connecting: bounds the burst on the server.
CONNECT_CONCURRENCY = 50


def read_job() -> dict:
    with open(sys.argv[1]) as handle:
        return json.load(handle)


def write_result(job: dict, result: dict) -> None:
    with open(job["result_path"], "w") as handle:
        json.dump(result, handle, indent=1)


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def gather_bounded(factories: list[Callable[[], Awaitable]], limit: int = CONNECT_CONCURRENCY):
    semaphore = asyncio.Semaphore(limit)

    async def run(factory):
        async with semaphore:
            return await factory()

    return await asyncio.gather(*(run(factory) for factory in factories))


async def paced(rate_per_s: float, until: float, max_count: int | None,
                start_one: Callable[[int], bool]) -> tuple[int, int]:
    """Call ``start_one(n)`` at ``rate_per_s`` until ``until`` (monotonic) or ``max_count`` calls.

    Late ticks are caught up at once (open loop: the schedule does not wait for the server).
    ``start_one`` returns False when it could not start (every worker busy): counted as skipped.
    Returns (started, skipped).
    """
    interval = 1.0 / rate_per_s
    next_at = time.monotonic()
    started = skipped = 0
    count = 0
    while True:
        now = time.monotonic()
        if now >= until or (max_count is not None and count >= max_count):
            return started, skipped
        while next_at <= now and (max_count is None or count < max_count):
            if start_one(count):
                started += 1
            else:
                skipped += 1
            count += 1
            next_at += interval
        await asyncio.sleep(max(0.0, min(next_at, until) - time.monotonic()))


class ServerWindow:
    """CPU of the servers (and Redis, PostgreSQL) and of this process over a measured window."""

    def __init__(self, servers: dict[str, int], marker: str | None = None):
        self.marker = marker  # a file written when the window opens (the runner's profiler waits on it)
        self.watch = procstat.Watch({name: int(pid) for name, pid in servers.items()})
        self.started_at = self.ended_at = 0.0
        self.before = self.after = None
        self.own_before = self.own_after = None
        self.load_before = self.load_after = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.before = self.watch.sample()
        self.own_before = os.times()
        self.load_before = procstat.load_average()
        if self.marker:
            with open(self.marker, "w") as handle:
                handle.write(str(time.time()))

    def stop(self) -> None:
        self.ended_at = time.monotonic()
        self.after = self.watch.sample()
        self.own_after = os.times()
        self.load_after = procstat.load_average()

    @property
    def seconds(self) -> float:
        return self.ended_at - self.started_at

    def report(self, units: int, unit_name: str) -> dict:
        delta = procstat.cpu_delta(self.before, self.after)
        own = (self.own_after.user + self.own_after.system
               - self.own_before.user - self.own_before.system)
        servers = sum(value for name, value in delta.items() if name not in ("redis", "postgres"))
        per_unit = (lambda seconds: round(seconds * 1000 / units, 3) if units else None)
        return {
            "window_s": round(self.seconds, 3),
            "cpu_s": {name: round(value, 3) for name, value in delta.items()},
            "cpu_s_loadgen": round(own, 3),
            "cpu_utilisation": {name: round(value / self.seconds, 3) for name, value in delta.items()},
            f"server_cpu_ms_per_{unit_name}": per_unit(servers),
            f"total_cpu_ms_per_{unit_name}": per_unit(servers + delta.get("redis", 0.0)
                                                     + delta.get("postgres", 0.0)),
            f"cpu_ms_per_{unit_name}_by_process": {name: per_unit(value) for name, value in delta.items()},
            f"loadgen_cpu_ms_per_{unit_name}": per_unit(own),
            "load_average_start": self.load_before,
            "load_average_end": self.load_after,
        }
