"""`manage.py serve --cpu N`: one web process per core (README, production topology).

The server runs in its own process (the embedded default, as `make run` serves it), so that the
pinning never touches the test process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_make_run_smoke import (ROOT, SETUP_COMMAND_TIMEOUT_S, Server, embedded_env,
                                       free_port, manage, start_serve)

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"),
                                reason="pinning to a core is Linux's")


def allowed_cores(pid: int) -> dict[str, str]:
    """Each thread of ``pid`` (name@id) with the cores it may run on, as the kernel lists them."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            name = (task / "comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended after the listing (the server's own short-lived ones)
        cores = next(line.split(":", 1)[1].strip() for line in status.splitlines()
                     if line.startswith("Cpus_allowed_list:"))
        found[f"{name}@{task.name}"] = cores
    return found


def test_serve_cpu_pins_every_thread_of_the_server_to_that_core(tmp_path):
    # given the last core this machine lets us use, and a migrated embedded default
    core = max(os.sched_getaffinity(0))
    env = embedded_env(tmp_path)
    manage("migrate", "--noinput", env=env)
    # when serve starts pinned to it, and has answered a request
    log_path = tmp_path / "serve.log"
    process, url = start_serve(env, log_path, "--cpu", str(core))
    server = Server(process, url, log_path)
    try:
        threads = allowed_cores(process.pid)
    finally:
        server.stop()
    # then every thread (the loop's, the embedded worker's, the database threads started after
    # the pinning) may run on that core only
    assert len(threads) > 1, threads
    assert set(threads.values()) == {str(core)}, threads
    assert f"pinned to CPU core {core}" in server.log()


def test_serve_refuses_a_core_it_may_not_run_on_and_serves_nothing(tmp_path):
    missing = max(os.sched_getaffinity(0)) + 1
    port = free_port()
    done = subprocess.run([sys.executable, "manage.py", "serve", "--port", str(port), "--cpu",
                           str(missing)], cwd=ROOT, env=embedded_env(tmp_path),
                          capture_output=True, text=True, timeout=SETUP_COMMAND_TIMEOUT_S,
                          check=False)
    allowed = ", ".join(map(str, sorted(os.sched_getaffinity(0))))
    assert done.returncode != 0
    assert f"--cpu {missing}: this process may run on cores {allowed} only" in done.stderr
    assert "embedded Celery worker started" not in done.stdout
