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
    settings = connection.settings_dict
    url = (f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:"
           f"{settings['PORT'] or 5432}/{settings['NAME']}")
    probe = run_settings(DATABASE_URL=url, DATABASE_SYNCHRONOUS_COMMIT=value)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == value


def test_an_unknown_synchronous_commit_value_stops_the_start():
    probe = run_settings(DATABASE_SYNCHRONOUS_COMMIT="sometimes")
    assert probe.returncode != 0
    assert "DATABASE_SYNCHRONOUS_COMMIT must be on, off" in probe.stderr
