"""Ring timers: one Celery task per time slot and process, not one per call.

Every dial arms a timer at the call's deadline. One ETA task per call cost the Celery worker
3.4-4.3 ms of CPU per call cycle and the web process a broker publish per call, for a task that
nearly always finds its call long connected (docs/benchmarks.md, "Ring timers by slot"). Here a
deadline is rounded up to the next slot of ``DUET_RING_TIMER_SLOT_MS``, and a process publishes
one ``ring_sweep_task`` per slot: the first call due in that slot schedules it, the others find it
scheduled. The task ends every live call whose deadline has passed (``calls_sweep_overdue``), so
it serves the calls of every process. A call ends at most one slot (plus the worker's pick-up)
after its deadline, never before it.

What the process remembers is only an economy: a slot task lost with its broker is caught by
housekeeping's sweep, as a lost per-call task was.
"""

from __future__ import annotations

import threading

from django.conf import settings


def slot_ms(deadline_ms: int, slot: int) -> int:
    """The end of the slot holding ``deadline_ms``: the first multiple of ``slot`` at or after it."""
    return -(-deadline_ms // slot) * slot


class SlotTimers:
    """The slots this process has scheduled a sweep for, still to come."""

    def __init__(self):
        self._scheduled: set[int] = set()
        self._lock = threading.Lock()

    def arm(self, deadline_ms: int, *, now_ms: int, schedule) -> bool:
        """Make sure a sweep runs at the end of ``deadline_ms``'s slot. ``schedule(at_ms)``
        publishes the task; it is called at most once per slot (again if it raised). Returns
        whether this call scheduled one."""
        at = slot_ms(deadline_ms, settings.DUET_RING_TIMER_SLOT_MS)
        with self._lock:
            if at in self._scheduled:
                return False
            if len(self._scheduled) > 64:  # forget the slots that have passed
                self._scheduled = {slot for slot in self._scheduled if slot > now_ms}
            self._scheduled.add(at)
        try:
            schedule(at)
        except BaseException:
            with self._lock:
                self._scheduled.discard(at)
            raise
        return True

    def forget(self) -> None:
        with self._lock:
            self._scheduled.clear()


ring_slots = SlotTimers()
