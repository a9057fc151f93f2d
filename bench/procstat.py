"""CPU time and memory of processes, read from /proc: what the benchmark charges to the server.

CPU is utime+stime in seconds. PostgreSQL forks a backend per connection, so its CPU is counted
as the postmaster's own time, plus what it has reaped from exited backends (cutime+cstime), plus
the live children: a backend moving from "live" to "reaped" keeps its CPU in the sum, so the
difference of two samples is exactly what PostgreSQL spent in between, whatever connections came
and went. That sum covers every database on the server, not only the benchmark's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    # the command name is in parentheses and may hold spaces: split after it
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float:
    """utime+stime of ``pid`` (fields 14, 15), optionally plus cutime+cstime (16, 17)."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS_PER_S


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status, e.g. VmRSS or VmHWM; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    return status_kib(pid, "VmHWM")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(entry))
    return found


def pids_named(name: str) -> list[int]:
    """Pids whose command (comm) is ``name``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() == name:
                    found.append(int(entry))
        except OSError:
            continue
    return found


def postmaster_pid() -> int | None:
    """The PostgreSQL server process: a ``postgres`` whose parent is not ``postgres``."""
    candidates = set(pids_named("postgres"))
    for pid in sorted(candidates):
        try:
            parent = int(_stat_fields(pid)[1])
        except OSError:
            continue
        if parent not in candidates:
            return pid
    return None


def postgres_cpu_seconds(postmaster: int) -> float:
    total = cpu_seconds(postmaster, with_reaped_children=True)
    for child in children_of(postmaster):
        total += cpu_seconds(child)
    return total


@dataclass
class Sample:
    """CPU seconds of each watched process (name -> seconds) at one moment."""

    cpu_s: dict[str, float]


class Watch:
    """The processes a run charges: its own servers by pid, plus Redis and PostgreSQL."""

    def __init__(self, servers: dict[str, int], *, include_backing: bool = True):
        self.servers = dict(servers)
        self.redis = (pids_named("redis-server") or [None])[0] if include_backing else None
        self.postmaster = postmaster_pid() if include_backing else None

    def sample(self) -> Sample:
        cpu = {name: cpu_seconds(pid) for name, pid in self.servers.items()}
        if self.redis:
            cpu["redis"] = cpu_seconds(self.redis)
        if self.postmaster:
            cpu["postgres"] = postgres_cpu_seconds(self.postmaster)
        return Sample(cpu)

    def peak_rss_kib(self) -> dict[str, int]:
        return {name: peak_rss_kib(pid) for name, pid in self.servers.items()}

    def rss_kib(self) -> dict[str, int]:
        return {name: rss_kib(pid) for name, pid in self.servers.items()}


def cpu_delta(before: Sample, after: Sample) -> dict[str, float]:
    return {name: after.cpu_s[name] - before.cpu_s.get(name, 0.0) for name in after.cpu_s}


def load_average() -> list[float]:
    return list(os.getloadavg())
