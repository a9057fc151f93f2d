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
"""


def run_settings(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", **env})


@pytest.mark.django_db
@pytest.mark.parametrize("value", ["on", "off"])
def test_synchronous_commit_applies_to_postgresql_sessions(value):
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL setting")
    probe = run_settings(DATABASE_URL=postgres_url(), DATABASE_SYNCHRONOUS_COMMIT=value)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[0] == value


def test_an_unknown_synchronous_commit_value_stops_the_start():
    probe = run_settings(DATABASE_SYNCHRONOUS_COMMIT="sometimes")
    assert probe.returncode != 0
    assert "DATABASE_SYNCHRONOUS_COMMIT must be on, off" in probe.stderr


def postgres_url() -> str:
    settings = connection.settings_dict
    return (f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:"
            f"{settings['PORT'] or 5432}/{settings['NAME']}")


@pytest.mark.django_db
@pytest.mark.parametrize(("value", "cursor"), [("", "ServerBindingCursor"),
                                               ("on", "ServerBindingCursor"), ("off", "Cursor")])
def test_server_side_binding_is_the_default_and_can_be_turned_off(value, cursor):
    # Django's ServerBindingCursor is psycopg's server-binding Cursor (statements run five times
    # are prepared); its Cursor is psycopg's ClientCursor, which quotes parameters into the SQL
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL setting")
    probe = run_settings(DATABASE_URL=postgres_url(), DATABASE_SERVER_SIDE_BINDING=value)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[1] == cursor


def test_an_unclear_yes_no_value_stops_the_start():
    probe = run_settings(DATABASE_SERVER_SIDE_BINDING="sometimes")
    assert probe.returncode != 0
    assert "DATABASE_SERVER_SIDE_BINDING must be a yes/no value" in probe.stderr
