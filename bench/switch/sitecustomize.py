"""The servers' half of ``bench/run.py --switch SETTING``: flip a boolean Django setting off and
on in turns, inside one run, so that the machine's changes of speed (10-25 %, within minutes,
docs/benchmarks.md) fall on both sides alike.

Loaded only by the benchmark's servers: the runner puts this directory first on their
``PYTHONPATH`` with ``DUET_BENCH_SWITCH=NAME:PERIOD_S`` set, and Python imports ``sitecustomize``
at start-up. A daemon thread waits for Django's settings, then sets ``settings.NAME`` to False in
even periods of the epoch clock and True in odd ones (``int(time.time() // PERIOD_S) % 2``), so
that every server process flips at the same moments, and the load generator charges what it
measures between two boundaries to that period's side (bench/pace.py, ``PhaseSampler``). A setting
read at use (``DATABASE_COMBINE_WRITES`` is read at every transaction) switches at once; one read
at start-up does not switch at all: an A/A run is what shows that.
"""

import os
import threading
import time


def side(epoch_s: float, period_s: float) -> bool:
    """The setting's value at ``epoch_s``: False in even periods, True in odd ones."""
    return int(epoch_s // period_s) % 2 == 1


def switch(name: str, period_s: float, stop: threading.Event | None = None) -> None:
    """Set ``settings.<name>`` to its side at every period boundary, until ``stop`` is set."""
    from django.conf import settings

    stop = stop or threading.Event()
    while not settings.configured:  # Django sets itself up on the main thread
        if stop.wait(0.05):
            return
    while not stop.is_set():
        now = time.time()
        setattr(settings, name, side(now, period_s))
        stop.wait(period_s - now % period_s + 0.0005)


def _start() -> None:
    spec = os.environ.get("DUET_BENCH_SWITCH")
    if not spec:
        return
    name, _, period = spec.rpartition(":")
    threading.Thread(target=switch, args=(name, float(period)), name="bench-switch",
                     daemon=True).start()


_start()
