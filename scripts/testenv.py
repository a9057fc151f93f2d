"""Run the whole test suite on whatever this machine has: `make test` calls this.

It finds PostgreSQL and Redis on their usual local ports; a stopped one is started; a missing
Redis is installed (Debian) or started privately; without PostgreSQL the suite falls back to a
SQLite file. Chromium is installed for the browser tests when it is missing. Each run gets its own
test database name, channel-layer prefix and Celery queue, so two runs never collide.

The suites run as separate processes: the server-side tests, then the browser tests (a live
server forked after async tests inherits a dead executor), then the JS unit tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_URL = os.environ.get("DUET_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# How long a just-started service may take to accept connections.
SERVICE_START_WAIT_S = 30


def log(message: str) -> None:
    print(f"[testenv] {message}", flush=True)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int) -> bool:
    deadline = time.monotonic() + SERVICE_START_WAIT_S
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.2)  # polling a port that has no event to wait on
    return False


def run_quiet(*command: str) -> bool:
    try:
        return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              check=False, timeout=600).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_apt_updated = False


def apt_install(*packages: str) -> bool:
    global _apt_updated
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    if not _apt_updated:
        run_quiet("apt-get", "update", "-qq")
        _apt_updated = True
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "install", "-y", "-qq", *packages], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          check=False).returncode == 0


def postgres_url() -> str | None:
    if os.environ.get("DUET_TEST_SQLITE") == "1":
        return None
    if not port_open("127.0.0.1", 5432) and shutil.which("pg_ctlcluster"):
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if versions:
            log("starting PostgreSQL")
            run_quiet("pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start")
            wait_port("127.0.0.1", 5432)
    if not port_open("127.0.0.1", 5432):
        return None
    import psycopg

    try:
        with psycopg.connect(PG_URL.replace("postgres://", "postgresql://"), connect_timeout=5):
            return PG_URL
    except psycopg.Error as error:
        log(f"PostgreSQL is not usable ({error}); falling back to SQLite")
        return None


def redis_url(cleanup: list) -> str:
    if port_open(REDIS_HOST, REDIS_PORT):
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    if not shutil.which("redis-server"):
        log("installing redis-server")
        apt_install("redis-server")
    if not shutil.which("redis-server"):
        raise SystemExit("Redis is needed for the tests and could not be installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log(f"starting a private redis-server on port {port}")
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cleanup.append(process)
    if not wait_port("127.0.0.1", port):
        raise SystemExit("the private redis-server did not start")
    return f"redis://127.0.0.1:{port}/0"


def ensure_chromium() -> None:
    if Path("/usr/bin/chromium").exists():
        return
    log("installing chromium for the browser tests")
    if not apt_install("chromium"):
        log("chromium could not be installed: the browser tests will report it")


def main(argv: list[str]) -> int:
    cleanup: list[subprocess.Popen] = []
    run_id = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    pg = None
    try:
        pg = postgres_url()
        if pg:
            env["DATABASE_URL"] = pg
            env["DUET_TEST_DB_NAME"] = env.get("DUET_TEST_DB_NAME", f"test_duet_{run_id}")
            log(f"database: PostgreSQL ({env['DUET_TEST_DB_NAME']})")
        else:
            env.pop("DATABASE_URL", None)
            (ROOT / "var").mkdir(exist_ok=True)
            env["DUET_TEST_DB_NAME"] = str(ROOT / "var" / f"test-{run_id}.sqlite3")
            log("database: SQLite file")
        # Tests drop their database at the end; a connection kept open by a server thread of a
        # finished test would stop that (persistent connections are the settings' default).
        env.setdefault("DATABASE_CONN_MAX_AGE", "0")
        env["REDIS_URL"] = redis_url(cleanup)
        env["DUET_LAYER_PREFIX"] = f"duet-test-{run_id}"
        env["DUET_CELERY_QUEUE"] = f"duet-test-{run_id}"
        log(f"redis: {env['REDIS_URL']}")
        ensure_chromium()
        pytest = [str(VENV_BIN / "python"), "-m", "pytest"]
        selected = argv or []
        if any(not arg.startswith("-") for arg in selected):
            suites = [("selected", pytest + selected)]  # explicit paths: one process, as asked
        else:
            suites = [
                ("server", pytest + ["tests", "--ignore=tests/e2e", *selected]),
                ("browser", pytest + ["tests/e2e", *selected]),
            ]
        failed = []
        for name, command in suites:
            log(f"suite {name}: {' '.join(command[2:])}")
            code = subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
            if code not in (0, 5):  # 5: no tests collected in that suite
                failed.append(name)
        js_tests = sorted((ROOT / "frontend" / "tests").glob("*.test.mjs"))
        if js_tests and not selected:
            log("suite js: node --test")
            code = subprocess.run(["node", "--test", *map(str, js_tests)], cwd=ROOT, env=env,
                                  check=False).returncode
            if code != 0:
                failed.append("js")
        if failed:
            log(f"FAILED suites: {', '.join(failed)}")
            return 1
        log("all suites passed")
        return 0
    finally:
        for process in cleanup:
            process.terminate()
        if pg and env.get("DUET_TEST_DB_NAME", "").startswith("test_duet_"):
            drop_leftover_database(pg, env["DUET_TEST_DB_NAME"])


def drop_leftover_database(url: str, name: str) -> None:
    """pytest-django drops its test database unless a session is still attached to it (a
    server thread's kept connection): then the database stayed on the machine, run after run."""
    import psycopg

    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://"), connect_timeout=5,
                             autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error as error:
        log(f"could not drop the test database {name}: {error}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
