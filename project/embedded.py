"""A Celery worker on a thread of the web process, and housekeeping on another: the embedded
default's timers.

The in-memory broker exists only inside this process, so the worker must live here too. Celery's
own embedded beat (``beat=True``) would fork a process with a broker of its own and its tasks
would never arrive, so a plain thread sends the housekeeping task on schedule instead.
"""

from __future__ import annotations

import threading

from django.conf import settings

from project.celery import app

_started = threading.Event()
_stopping = threading.Event()


def start_embedded_worker() -> None:
    if _started.is_set():
        return
    _started.set()
    worker = app.WorkController(
        pool_cls="threads", concurrency=2, loglevel="INFO",
        without_heartbeat=True, without_mingle=True, without_gossip=True,
    )
    threading.Thread(target=worker.start, name="embedded-celery", daemon=True).start()
    threading.Thread(target=_housekeeping_loop, name="embedded-beat", daemon=True).start()


def _housekeeping_loop() -> None:
    from calls.tasks import housekeeping_task

    while not _stopping.wait(settings.DUET_HOUSEKEEPING_INTERVAL_S):
        housekeeping_task.delay()
