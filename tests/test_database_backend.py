"""project/postgresql: Django's PostgreSQL backend with the health check at most once an interval."""

from __future__ import annotations

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, connections

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL backend"),
]


@pytest.fixture
def checks(monkeypatch):
    """Every health check the connection runs (the real ``SELECT 1``), counted."""
    done = []
    backend = type(connections["default"])
    real = backend.is_usable

    def counted(self):
        done.append(1)
        return real(self)
    monkeypatch.setattr(backend, "is_usable", counted)
    return done


def unit_of_work():
    """What each frame's database_sync_to_async call does: end-of-work bookkeeping, a query."""
    connection.close_if_unusable_or_obsolete()
    return get_user_model().objects.count()


def kill_backend() -> None:
    """Terminate this connection's PostgreSQL backend from another session (a restart, a
    failover, an idle timeout in a proxy)."""
    pid = connection.connection.info.backend_pid
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])  # waits until it is gone


def fresh_connection():
    """A new connection kept open between units of work, as DATABASE_CONN_MAX_AGE does in a
    server (the tests' own setting, 0, closes it after each unit)."""
    connection.close()
    connection.ensure_connection()
    connection.close_at = None


def test_a_busy_connection_is_checked_once_per_interval_not_before_every_unit(settings, checks):
    settings.DATABASE_HEALTH_CHECK_INTERVAL_S = 60
    fresh_connection()
    for _ in range(5):
        unit_of_work()
    assert checks == []  # opened just now: healthy for the interval
    connection.healthy_until = 0  # the interval has passed
    for _ in range(5):
        unit_of_work()
    assert len(checks) == 1  # checked once, then healthy for another interval


def test_an_interval_of_zero_checks_before_every_unit_as_django_does(settings, checks):
    settings.DATABASE_HEALTH_CHECK_INTERVAL_S = 0
    fresh_connection()
    for _ in range(3):
        unit_of_work()
    assert len(checks) == 3


def test_a_connection_that_died_while_idle_is_replaced_before_use(settings, checks):
    settings.DATABASE_HEALTH_CHECK_INTERVAL_S = 1
    fresh_connection()
    before = connection.connection.info.backend_pid
    kill_backend()
    connection.healthy_until = 0  # idle past the interval
    assert unit_of_work() == 0  # no error: the check found it dead and a new one was opened
    assert connection.connection.info.backend_pid != before
    assert len(checks) == 1


def test_a_connection_that_dies_within_the_interval_fails_one_unit_then_is_replaced(settings):
    settings.DATABASE_HEALTH_CHECK_INTERVAL_S = 60
    fresh_connection()
    before = connection.connection.info.backend_pid
    kill_backend()
    with pytest.raises(OperationalError):
        unit_of_work()
    assert unit_of_work() == 0  # Django's end-of-work check closed it; the next unit reconnects
    assert connection.connection.info.backend_pid != before
