"""Settings read from the environment, checked in a fresh interpreter as a server would start."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import django
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("SHOW synchronous_commit")
    print(cursor.fetchone()[0])
    print(type(cursor.cursor).__name__)
    for _ in range(6):
        cursor.execute("SELECT 1 WHERE 1 = %s", [1])
    cursor.execute("SELECT count(*) FROM pg_prepared_statements")
    print(cursor.fetchone()[0])
"""


def run_settings(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", **env})


def postgres_session(**env) -> tuple[str, str, int]:
    """(synchronous_commit, Django's cursor class, statements prepared after one statement ran six
    times) of a PostgreSQL session started with ``env``, on this run's test database."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL setting")
    settings = connection.settings_dict
    url = (f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:"
           f"{settings['PORT'] or 5432}/{settings['NAME']}")
    probe = run_settings(DATABASE_URL=url, **env)
    assert probe.returncode == 0, probe.stderr
    synchronous_commit, cursor, prepared = probe.stdout.split()
    return synchronous_commit, cursor, int(prepared)


def refused(**env) -> str:
    """The error of a start with ``env``, which must fail."""
    probe = run_settings(**env)
    assert probe.returncode != 0
    return probe.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["on", "off"])
def test_synchronous_commit_applies_to_postgresql_sessions(value):
    assert postgres_session(DATABASE_SYNCHRONOUS_COMMIT=value)[0] == value


def test_an_unknown_synchronous_commit_value_stops_the_start():
    assert "DATABASE_SYNCHRONOUS_COMMIT must be on, off" in refused(
        DATABASE_SYNCHRONOUS_COMMIT="sometimes")


@pytest.mark.django_db
@pytest.mark.parametrize(("value", "cursor"), [("", "ServerBindingCursor"),
                                               ("on", "ServerBindingCursor"), ("off", "Cursor")])
def test_server_side_binding_is_the_default_and_can_be_turned_off(value, cursor):
    # Django's ServerBindingCursor is psycopg's server-binding Cursor; its Cursor is psycopg's
    # ClientCursor, which quotes parameters into the SQL
    assert postgres_session(DATABASE_SERVER_SIDE_BINDING=value)[1] == cursor


@pytest.mark.django_db
@pytest.mark.parametrize(("value", "prepared"), [("", 1), ("5", 1), ("-1", 0), ("10", 0)])
def test_statements_repeated_on_a_connection_are_prepared_by_default(value, prepared):
    # a statement run six times is prepared from its sixth run on at the default threshold (5);
    # -1 keeps Django's default (never), 10 waits for more runs
    assert postgres_session(DATABASE_PREPARE_THRESHOLD=value)[2] == prepared


def test_an_unclear_yes_no_value_stops_the_start():
    assert "DATABASE_SERVER_SIDE_BINDING must be a yes/no value" in refused(
        DATABASE_SERVER_SIDE_BINDING="sometimes")


def test_a_negative_health_check_interval_stops_the_start():
    assert "DATABASE_HEALTH_CHECK_INTERVAL must be 0 or more" in refused(
        DATABASE_HEALTH_CHECK_INTERVAL="-1")


@pytest.mark.parametrize("value", ["0", "5001", "-250"])
def test_a_ring_timer_slot_out_of_range_stops_the_start(value):
    assert "DUET_RING_TIMER_SLOT_MS must be 1 to 5000" in refused(DUET_RING_TIMER_SLOT_MS=value)
