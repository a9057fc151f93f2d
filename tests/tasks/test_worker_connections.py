"""A Celery worker keeps its database connection between tasks, as a web process does between
requests (project/celery.py, settings.CELERY_DB_REUSE_MAX)."""

from __future__ import annotations

import threading

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.conf import settings
from django.db import connection, connections

from project.celery import app

pytestmark = [
    pytest.mark.skipif(not settings.CELERY_BROKER_URL.startswith("redis"),
                       reason="needs the Redis broker; run through scripts/testenv.py"),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="reads the PostgreSQL backend pid"),
    pytest.mark.django_db(transaction=True),
]


@app.task(name="tests.tasks.backend_pid")
def backend_pid_task() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@pytest.fixture
def pids():
    found: list[int] = []
    done = threading.Condition()

    def record(sender=None, retval=None, **kwargs):
        if sender is not None and sender.name == backend_pid_task.name:
            with done:
                found.append(retval)
                done.notify_all()
    task_postrun.connect(record, weak=False)
    yield found, done
    task_postrun.disconnect(record)
    # The worker's thread keeps its connection, which is the point; end that backend, or the test
    # database cannot be dropped at the end of the run (it was left behind on every run).
    with connection.cursor() as cursor:
        for pid in set(found):
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.fixture
def worker(monkeypatch):
    # connections kept for 10 minutes, as in a server (the test run's own setting closes them)
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 600)
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(settings.CELERY_TASK_DEFAULT_QUEUE)
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=30) as running:
        yield running
    client.delete(settings.CELERY_TASK_DEFAULT_QUEUE)
    client.close()


def test_tasks_in_a_row_use_one_database_connection(worker, pids):
    found, done = pids
    for _ in range(3):
        backend_pid_task.delay()
    with done:
        assert done.wait_for(lambda: len(found) == 3, timeout=30)
    assert len(set(found)) == 1, f"one backend per task: {found}"
