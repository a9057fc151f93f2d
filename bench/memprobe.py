"""Run daphne under tracemalloc; each SIGUSR1 writes where memory grew since the first signal.

    python -m bench.memprobe -b 127.0.0.1 -p 8101 project.asgi:application

The idle test (``bench/run.py --scenario idle --memprobe``) signals the server at its baseline
and at every checkpoint; the reports land in DUET_BENCH_MEMPROBE_OUT-<n>.txt, grouped by source
line (TRACEMALLOC_FRAMES deep). tracemalloc itself costs memory and CPU: the RSS figures of a
probed run are not the ones to report, only the split of the growth.
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc

TRACEMALLOC_FRAMES = int(os.environ.get("DUET_BENCH_TRACEMALLOC_FRAMES", "3"))
TOP_SITES = 40

_first: tracemalloc.Snapshot | None = None
_count = 0


def _report(signum, frame) -> None:
    global _first, _count
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    _count += 1
    path = f"{os.environ.get('DUET_BENCH_MEMPROBE_OUT', '/tmp/duet-memprobe')}-{_count}.txt"
    with open(path, "w") as handle:
        current, peak = tracemalloc.get_traced_memory()
        handle.write(f"traced now {current / 1024:.0f} KiB, peak {peak / 1024:.0f} KiB\n")
        if _first is None:
            _first = snapshot
            handle.write("baseline\n")
            return
        stats = snapshot.compare_to(_first, "traceback" if TRACEMALLOC_FRAMES > 1 else "lineno")
        total = sum(stat.size_diff for stat in stats)
        handle.write(f"growth since baseline: {total / 1024:.0f} KiB\n\n")
        by_package: dict[str, int] = {}
        for stat in stats:
            by_package[_package_of(stat.traceback)] = by_package.get(
                _package_of(stat.traceback), 0) + stat.size_diff
        handle.write("growth by the package that asked for it (deepest frame outside the "
                     "standard library):\n")
        for package, size in sorted(by_package.items(), key=lambda item: -item[1])[:20]:
            handle.write(f"{size / 1024:10.1f} KiB  {package}\n")
        handle.write("\ntop sites:\n")
        for stat in stats[:TOP_SITES]:
            handle.write(f"{stat.size_diff / 1024:10.1f} KiB {stat.count_diff:+8d} blocks\n")
            for line in stat.traceback.format()[-2 * TRACEMALLOC_FRAMES:]:
                handle.write(f"      {line}\n")


def _package_of(traceback: tracemalloc.Traceback) -> str:
    """The site-packages package (or project folder) of the innermost non-stdlib frame."""
    for frame in reversed(list(traceback)):  # innermost first
        name = frame.filename
        if "site-packages/" in name:
            return name.split("site-packages/", 1)[1].split("/", 1)[0]
        if "/calls/" in name or "/bench/" in name or "/project/" in name:
            return name.rsplit("/", 2)[-2]
    return "stdlib only"


def main() -> None:
    tracemalloc.start(TRACEMALLOC_FRAMES)
    signal.signal(signal.SIGUSR1, _report)
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(sys.argv[1:])


if __name__ == "__main__":
    main()
