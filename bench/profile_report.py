"""Summarize a ``py-spy record -f raw`` profile (collapsed stacks): where the samples went.

    .venv/bin/python bench/profile_report.py bench/results/profiles/<run>-node1.txt [--top 25]

Self time: the innermost frame of each sample. Inclusive time: samples with the function anywhere
on the stack (counted once per sample). Percentages are of all samples of all threads; py-spy
leaves out idle threads (waiting on a lock, a socket, or the event loop's select), so "100 %" is
the time some thread of the process was busy on a CPU or in a system call.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# py-spy frames look like "function (path/to/file.py:123)"; the line is dropped to group by function.
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('function')} ({path})"


# Where a sample's time goes, by the first of these found on its stack, outermost first: the
# database thread's work (the ORM and the driver), the channel layer, the socket stack, ...
CATEGORIES = (
    ("database (Django ORM + psycopg, on the database thread)", ("django/db/", "psycopg/")),
    ("channel layer (channels_redis, redis-py)", ("channels_redis/", "redis/")),
    ("Celery/kombu publish (timers)", ("kombu/", "celery/")),
    ("JSON", ("python3.11/json/",)),
    ("WebSocket/HTTP stack (daphne, twisted, autobahn)", ("daphne/", "twisted/", "autobahn/", "txaio/")),
    ("asgiref/channels plumbing", ("asgiref/", "channels/")),
    ("asyncio loop", ("python3.11/asyncio/", "python3.11/selectors.py")),
)


def category_of(frames: list[str]) -> str:
    """The innermost frame decides, except that anything under a database call is database."""
    text = ";".join(frames)
    if "django/db/" in text or "psycopg/" in text:
        return CATEGORIES[0][0]
    for frame in reversed(frames):
        for name, markers in CATEGORIES[1:]:
            if any(marker in frame for marker in markers):
                return name
        if "(calls/" in frame:
            return "Duet code (calls/)"
    return "other"


def summarize(path: Path, top: int) -> str:
    categories: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        categories[category_of([frame.strip() for frame in stack.split(";") if frame])] += count
        if frames[0].startswith("process ") or frames[0].startswith("thread "):
            threads[frames[0]] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{path.name}: {total} samples", "", "By category:"]
    for name, count in categories.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines += ["", "Top self time:"]
    for frame, count in self_time.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    lines += ["", "Top inclusive time:"]
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    if threads:
        lines += ["", "By thread:"]
        for frame, count in threads.most_common():
            lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarize(args.profile, args.top))


if __name__ == "__main__":
    main()
