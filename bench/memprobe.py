"""Run daphne under tracemalloc; each SIGUSR1 writes where memory grew since the first signal.

    python -m bench.memprobe -b 127.0.0.1 -p 8101 project.asgi:application

The idle test (``bench/run.py --scenario idle --memprobe``) signals the server at its baseline
and at every checkpoint; the reports land in DUET_BENCH_MEMPROBE_OUT-<n>.txt, grouped by source
line (TRACEMALLOC_FRAMES deep). tracemalloc itself costs memory and CPU: the RSS figures of a
probed run are not the ones to report, only the split of the growth.

Each report after the baseline also has, divided by the consumers added since the previous
report (so that checkpoints N and 2N give the cost of one more socket):
- the tracemalloc growth by source line (the innermost frame);
- a census of the objects the garbage collector tracks, by type (coroutines and tasks by the
  function they run), count and shallow size;
- what one consumer holds, attribute by attribute and scope key by scope key: the data reached
  from it (containers, strings, numbers, model instances, sessions), not shared machinery.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import gc
import linecache
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
import types

TRACEMALLOC_FRAMES = int(os.environ.get("DUET_BENCH_TRACEMALLOC_FRAMES", "3"))
TOP_SITES = 40
PER_CONSUMER_SITES = 150
TOP_TYPES = 45

_first: tracemalloc.Snapshot | None = None
_previous: tuple[tracemalloc.Snapshot, collections.Counter, collections.Counter, int] | None = None
_count = 0
_writing = threading.Lock()  # reports are written one at a time, in order


def done_marker(pid: int) -> str:
    """A file holding how many reports the probed process ``pid`` has finished writing."""
    return os.path.join(tempfile.gettempdir(), f"duet-memprobe-{pid}.done")


def _report(signum, frame) -> None:
    """Everything is done on a thread: the server's loop keeps running between the thread's
    GIL slices. A loop held for long (a report takes 20-40 s with 1,000 sockets under
    tracemalloc on a busy machine) makes the channel layer's Redis reads time out
    (REDIS_SOCKET_TIMEOUT_S) and closes every socket waiting on one."""
    global _count
    _count += 1
    threading.Thread(target=_write_report, args=(_count,), daemon=True).start()


def _take(number: int):
    started = time.monotonic()
    # the probe's own memory: tracemalloc, and the source lines its reports read
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__),
         tracemalloc.Filter(False, linecache.__file__)])
    consumers = _consumers()
    counts, sizes = _census()
    holdings = _holdings(consumers)
    current, peak = tracemalloc.get_traced_memory()
    header = (f"traced now {current / 1024:.0f} KiB, peak {peak / 1024:.0f} KiB; "
              f"{len(consumers)} consumers; VmRSS {_rss_kib()} KiB; taken in "
              f"{time.monotonic() - started:.1f} s\n")
    return number, header, snapshot, counts, sizes, len(consumers), holdings


def _write_report(number: int) -> None:
    try:
        with _writing:
            _write(*_take(number))
    finally:
        with open(done_marker(os.getpid()), "w") as handle:
            handle.write(str(number))


def _write(number, header, snapshot, counts, sizes, consumer_count, holdings) -> None:
    global _first, _previous
    path = f"{os.environ.get('DUET_BENCH_MEMPROBE_OUT', '/tmp/duet-memprobe')}-{number}.txt"
    with open(path, "w") as handle:
        handle.write(header)
        if _first is None:
            _first = snapshot
            _previous = (snapshot, counts, sizes, consumer_count)
            handle.write("baseline\n")
            return
        stats = snapshot.compare_to(_first, "traceback" if TRACEMALLOC_FRAMES > 1 else "lineno")
        total = sum(stat.size_diff for stat in stats)
        handle.write(f"growth since baseline: {total / 1024:.0f} KiB\n\n")
        _write_since_previous(handle, snapshot, counts, sizes, consumer_count, holdings)
        by_package: dict[str, int] = {}
        for stat in stats:
            by_package[_package_of(stat.traceback)] = by_package.get(
                _package_of(stat.traceback), 0) + stat.size_diff
        handle.write("growth since baseline by the package that asked for it (deepest frame "
                     "outside the standard library):\n")
        for package, size in sorted(by_package.items(), key=lambda item: -item[1])[:20]:
            handle.write(f"{size / 1024:10.1f} KiB  {package}\n")
        handle.write("\ntop sites since baseline:\n")
        for stat in stats[:TOP_SITES]:
            handle.write(f"{stat.size_diff / 1024:10.1f} KiB {stat.count_diff:+8d} blocks\n")
            for line in stat.traceback.format()[-2 * TRACEMALLOC_FRAMES:]:
                handle.write(f"      {line}\n")
    _previous = (snapshot, counts, sizes, consumer_count)


def _write_since_previous(handle, snapshot, counts, sizes, consumer_count, holdings) -> None:
    before, counts_before, sizes_before, consumers_before = _previous
    added = consumer_count - consumers_before
    if added <= 0:
        handle.write("no consumers added since the previous report\n\n")
        return
    stats = snapshot.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in stats)
    handle.write(f"== since the previous report: {added} consumers added; traced growth "
                 f"{total / 1024:.0f} KiB = {total / added:.0f} B per consumer\n\n")
    by_package: dict[str, int] = {}
    for stat in stats:
        package = _package_of(stat.traceback)
        by_package[package] = by_package.get(package, 0) + stat.size_diff
    handle.write("bytes per added consumer, by the package that asked for it:\n")
    for package, size in sorted(by_package.items(), key=lambda item: -item[1]):
        if abs(size) >= added * 16:
            handle.write(f"{size / added:8.0f} B  {package}\n")
    handle.write("\nbytes per added consumer, by source line (innermost frame):\n")
    for stat in stats[:PER_CONSUMER_SITES]:
        if abs(stat.size_diff) < added * 24:
            break
        handle.write(f"{stat.size_diff / added:8.0f} B {stat.count_diff / added:+6.2f} blocks  "
                     f"{stat.traceback[0].filename.split('site-packages/')[-1]}:"
                     f"{stat.traceback[0].lineno}\n")
    handle.write("\ngc-tracked objects per added consumer, by type (count, shallow bytes):\n")
    delta = {name: (counts[name] - counts_before.get(name, 0),
                    sizes[name] - sizes_before.get(name, 0)) for name in counts}
    shown = sorted(delta.items(), key=lambda item: -item[1][1])[:TOP_TYPES]
    for name, (count, size) in shown:
        if count / added < 0.05:
            continue
        handle.write(f"{count / added:7.2f} {size / added:8.0f} B  {name}\n")
    handle.write(f"  (all gc-tracked: {sum(c for c, _ in delta.values()) / added:.1f} objects, "
                 f"{sum(s for _, s in delta.values()) / added:.0f} B shallow)\n\n")
    handle.write(holdings)


# ---- what one consumer holds ---------------------------------------------------------------


def _consumers() -> list:
    from channels.consumer import AsyncConsumer

    return [obj for obj in gc.get_objects() if isinstance(obj, AsyncConsumer)]


def _census() -> tuple[collections.Counter, collections.Counter]:
    counts: collections.Counter = collections.Counter()
    sizes: collections.Counter = collections.Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        if isinstance(obj, types.CoroutineType):
            name = f"coroutine {obj.cr_code.co_qualname}"
        elif isinstance(obj, asyncio.Task):
            coro = obj.get_coro()
            name = f"Task running {getattr(getattr(coro, 'cr_code', None), 'co_qualname', '?')}"
        else:
            name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


_DATA = (dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float, bool,
         type(None), datetime.datetime, datetime.date, datetime.timedelta, collections.deque)


def _is_data_object(obj) -> bool:
    """Objects a consumer may own outright: containers, scalars, model instances, sessions."""
    if isinstance(obj, _DATA):
        return True
    from django.contrib.sessions.backends.base import SessionBase
    from django.db.models import Model
    from django.db.models.base import ModelState
    from django.utils.functional import LazyObject

    return isinstance(obj, (Model, ModelState, SessionBase, LazyObject))


def _deep_size(root, seen: set[int]) -> int:
    """Bytes of ``root`` and the data objects reached from it that ``seen`` does not hold."""
    total = 0
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or not _is_data_object(obj):
            continue
        if isinstance(obj, (int, bool, type(None))) and -5 <= (obj or 0) <= 256:
            continue  # small ints, True/False/None: shared by the interpreter
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, (str, bytes, int, float)):
            continue
        if hasattr(obj, "__dict__") and not isinstance(obj, _DATA):
            stack.append(obj.__dict__)  # a model instance's or session's fields
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(obj)
    return total


def _holdings(consumers: list) -> str:
    """Average bytes per consumer, per attribute and per scope key (the data only)."""
    if not consumers:
        return ""
    sample = consumers[:200]
    attributes: collections.Counter = collections.Counter()
    scope_keys: collections.Counter = collections.Counter()
    for consumer in sample:
        try:
            _hold(consumer, attributes, scope_keys)
        except RuntimeError:  # it changed while walked (the loop runs meanwhile): skip it
            continue
    lines = [f"what one consumer holds (mean of {len(sample)}, data reached from it, "
             f"bytes; shared machinery such as the channel layer is not counted):\n"]
    for name, size in sorted(attributes.items(), key=lambda item: -item[1]):
        lines.append(f"  attribute {name:28s} {size / len(sample):8.0f}\n")
    lines.append(f"  attributes in all {'':20s} {sum(attributes.values()) / len(sample):8.0f}\n")
    for name, size in sorted(scope_keys.items(), key=lambda item: -item[1]):
        lines.append(f"  scope[{name!r}] {'':16s} {size / len(sample):8.0f}\n")
    return "".join(lines) + "\n"


def _hold(consumer, attributes: collections.Counter, scope_keys: collections.Counter) -> None:
    """Add one consumer's attributes and scope keys (bytes of data reached from each)."""
    seen: set[int] = {id(consumer), id(consumer.__dict__)}
    attributes["(instance and its __dict__)"] += (sys.getsizeof(consumer)
                                                  + sys.getsizeof(consumer.__dict__))
    for name, value in list(consumer.__dict__.items()):
        if name != "scope":
            attributes[name] += _deep_size(value, seen)
    scope = consumer.__dict__.get("scope") or {}
    scope_keys["(the scope dict)"] += _deep_size(scope, set())  # walked alone: all of it
    scope_seen: set[int] = {id(scope)}
    for key, value in list(scope.items()):
        scope_keys[key] += _deep_size(value, scope_seen)


def _rss_kib() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


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
