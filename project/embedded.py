"""A Celery worker, with beat, on a thread of the web process: the embedded default's timers."""

from __future__ import annotations

import threading

from django.conf import settings

from project.celery import app

_started = threading.Event()


def start_embedded_worker() -> threading.Thread | None:
    if _started.is_set():
        return None
    _started.set()
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    worker = app.WorkController(
        pool_cls="threads", concurrency=2, loglevel="INFO", beat=True,
        schedule_filename=str(settings.VAR_DIR / "celerybeat-schedule"),
        without_heartbeat=True, without_mingle=True, without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="embedded-celery", daemon=True)
    thread.start()
    return thread
