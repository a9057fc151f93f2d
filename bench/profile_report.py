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


def summarize(path: Path, top: int) -> str:
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
        if frames[0].startswith("process ") or frames[0].startswith("thread "):
            threads[frames[0]] += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{path.name}: {total} samples", "", "Top self time:"]
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
