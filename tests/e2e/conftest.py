"""Browser tests: Debian's Chromium with a fake camera and microphone against a real daphne.

pytest-django's live_server cannot serve WebSockets, so the server is `manage.py serve` in a
subprocess, on the embedded default (its own SQLite file in a temporary DUET_VAR_DIR, in-memory
channel layer, Celery worker in-process), with the test environment's database and Redis
settings stripped. Each test gets users of its own from a pool made at start-up, so a test that
fails mid-call cannot leave a user busy for the next one. Each person is a browser context of
their own: a background page in a shared context gets about one frame a second.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.support import CHROMIUM, CHROMIUM_ARGS, PASSWORD, RECONNECT_GRACE_S, Person

ROOT = Path(__file__).resolve().parents[2]
# How long the server may take to migrate and start answering.
SERVER_START_S = 60
# Users made for the tests: this many sets of alice, bob and carol (one set per test).
USER_SETS = 40
STRIPPED_ENV_PREFIXES = ("DUET_", "DATABASE_", "REDIS_URL", "CELERY_", "DJANGO_")

MAKE_USERS = """
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from calls.models import Profile
User = get_user_model()
encoded = make_password({password!r})  # hashed once: PBKDF2 per user would take a minute
for n in range(1, {sets} + 1):
    for name in ("alice", "bob", "carol"):
        user = User.objects.create(username=f"{{name}}{{n}}", password=encoded)
        Profile.objects.create(user=user, display_name=f"{{name.title()}} {{n}}")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_env(var_dir: Path) -> dict:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(STRIPPED_ENV_PREFIXES)}
    env.update(DUET_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="project.settings",
               DUET_LOG_LEVEL=os.environ.get("DUET_E2E_SERVER_LOG_LEVEL", "WARNING"), PYTHONUNBUFFERED="1",
               DUET_RECONNECT_GRACE_S=str(RECONNECT_GRACE_S))
    return env


def _manage(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def _wait_until_serving(base_url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)  # allowed: polling a port that has no event to wait on
    raise RuntimeError(f"the server did not answer within {SERVER_START_S} s")


class Server:
    def __init__(self, var_dir: Path, *, user_sets: int):
        self.var_dir = var_dir
        self.env = _server_env(var_dir)
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        _manage(self.env, "migrate", "--noinput")
        _manage(self.env, "seed_demo")
        if user_sets:
            _manage(self.env, "shell", "-c", MAKE_USERS.format(password=PASSWORD, sets=user_sets))
        self.log_path = var_dir / "server.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        _wait_until_serving(self.base_url, self.process, self.log_path)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("duet-e2e"), user_sets=USER_SETS)
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is needed at {CHROMIUM} (Debian package 'chromium')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


_next_set = iter(range(1, USER_SETS + 1))


@dataclass(frozen=True)
class User:
    username: str
    name: str  # display name, as the lobby shows it


@dataclass(frozen=True)
class Users:
    alice: User
    bob: User
    carol: User


@pytest.fixture
def users() -> Users:
    """A fresh alice, bob and carol for this test (alice7, "Alice 7", ...)."""
    n = next(_next_set)
    return Users(*(User(f"{name}{n}", f"{name.title()} {n}") for name in ("alice", "bob", "carol")))


@pytest.fixture
def open_person(server, browser):
    """Sign someone in, in a browser context of their own: open_person(users.alice)."""
    opened: list[Person] = []

    def open_one(user: User, *, password: str = PASSWORD) -> Person:
        person = Person(browser, server.base_url, user.username)
        opened.append(person)
        person.sign_in(password)
        return person

    yield open_one
    for person in opened:
        person.close()

