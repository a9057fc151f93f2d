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
        return {
            "window_s": round(self.seconds, 3),
            "cpu_s": {name: round(value, 3) for name, value in delta.items()},
            "cpu_s_loadgen": round(own, 3),
            "cpu_utilisation": {name: round(value / self.seconds, 3) for name, value in delta.items()},
            **cpu_per_unit(delta, own, units, unit_name),
            "load_average_start": self.load_before,
            "load_average_end": self.load_after,
        }


def cpu_per_unit(delta: dict[str, float], own: float, units: int, unit_name: str) -> dict:
    """CPU seconds by process (``delta``) and the load generator's (``own``) per unit of work."""
    servers = sum(value for name, value in delta.items() if name not in ("redis", "postgres"))
    per_unit = (lambda seconds: round(seconds * 1000 / units, 3) if units else None)
    return {
        f"server_cpu_ms_per_{unit_name}": per_unit(servers),
        f"total_cpu_ms_per_{unit_name}": per_unit(servers + delta.get("redis", 0.0)
                                                 + delta.get("postgres", 0.0)),
        f"cpu_ms_per_{unit_name}_by_process": {name: per_unit(value) for name, value in delta.items()},
        f"loadgen_cpu_ms_per_{unit_name}": per_unit(own),
    }


class PhaseSampler:
    """``bench/run.py --switch``: the servers flip a setting at every ``period_s`` boundary of the
    epoch clock (off in even periods, on in odd ones: bench/switch/sitecustomize.py). This samples
    the servers' CPU at each boundary while the window is open and charges each whole period to
    its side; a period the window cuts is left out on both ends."""

    def __init__(self, window: ServerWindow, period_s: float):
        self.window, self.period_s = window, period_s
        self.cpu = {False: {}, True: {}}  # side -> process -> CPU seconds
        self.own = {False: 0.0, True: 0.0}
        self.periods: dict[bool, list[int]] = {False: [], True: []}  # the periods charged

    async def run(self) -> None:
        while not self.window.started_at:
            await asyncio.sleep(0.05)
        index = int(time.time() // self.period_s) + 1  # the next boundary's, as an integer
        previous = None
        while not self.window.ended_at:
            await asyncio.sleep(max(0.0, index * self.period_s - time.time()))
            if self.window.ended_at:
                return
            sample, own = self.window.watch.sample(), os.times()
            if previous is not None:
                period = index - 1  # the one that just ended
                side = period % 2 == 1  # as bench/switch/sitecustomize.py's side()
                totals = self.cpu[side]
                for name, value in procstat.cpu_delta(previous[0], sample).items():
                    totals[name] = totals.get(name, 0.0) + value
                self.own[side] += own.user + own.system - previous[1].user - previous[1].system
                self.periods[side].append(period)
            previous = (sample, own)
            index += 1

    def report(self, series: list[tuple[float, float]], summarize) -> dict:
        """Each side's invites (``series``: send time on the epoch clock, latency ms) sent in
        the periods charged to it, and its CPU per invite (one invite per cycle)."""
        phases = {}
        for side in (False, True):
            charged = set(self.periods[side])
            latencies = [latency / 1000 for sent, latency in series
                         if int(sent // self.period_s) in charged]
            phases["on" if side else "off"] = {
                "periods": len(charged),
                "seconds": round(len(charged) * self.period_s, 1),
                "invite": summarize(latencies),
                "cycles_per_s": (round(len(latencies) / (len(charged) * self.period_s), 2)
                                 if charged else None),
                **cpu_per_unit(self.cpu[side], self.own[side], len(latencies), "cycle"),
            }
        return phases
