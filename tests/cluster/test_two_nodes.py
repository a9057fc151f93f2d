"""Two real daphne processes sharing Redis and the database, and a real Celery worker with beat.

Clients are real WebSocket clients (bench.client.ProtocolClient). Covers a cross-node call,
presence across nodes, glare across nodes, a node killed mid-call whose client reconnects to the
other node, and one whose client never comes back (heartbeats stop, the grace runs out).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from django.test import Client

from bench.client import ProtocolClient
from tests.support import make_user, summary

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
# Short intervals so that a dead node is noticed within seconds (production: 15 s and 20 s).
HEARTBEAT_S = 1
GRACE_S = 3
NODE_START_WAIT_S = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "postgresql":
        user = settings.get("USER") or "postgres"
        return (f"postgres://{user}@{settings.get('HOST') or '127.0.0.1'}:"
                f"{settings.get('PORT') or 5432}/{settings['NAME']}")
    return f"sqlite:///{settings['NAME']}"


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + NODE_START_WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"process exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)  # allowed: polling a port that has no event to wait on
    raise TimeoutError(f"port {port} did not open")


# Node "two" runs the sockets' database work on four threads (DUET_DATABASE_THREADS), node "one"
# on a single thread: every cross-node flow below runs on both configurations (and the consumer
# tests on the default, two on PostgreSQL).
NODE_ENV = {"one": {"DUET_DATABASE_THREADS": "1"}, "two": {"DUET_DATABASE_THREADS": "4"}}


class Cluster:
    def __init__(self, tmp_path: Path):
        self.env = {key: value for key, value in os.environ.items()}
        self.env.update({
            "DATABASE_URL": database_url(),
            "DUET_HEARTBEAT_S": str(HEARTBEAT_S),
            "DUET_RECONNECT_GRACE_S": str(GRACE_S),
            "DUET_HOUSEKEEPING_INTERVAL_S": "1",
            "DUET_LOG_LEVEL": "WARNING",
            "DUET_VAR_DIR": str(tmp_path),
        })
        self.env.pop("DUET_TEST_DB_NAME", None)
        self.tmp_path = tmp_path
        self.nodes: dict[str, tuple[subprocess.Popen, int]] = {}
        self.worker: subprocess.Popen | None = None

    def start_node(self, name: str) -> str:
        """The node's base URL; started unless it is already running."""
        if name in self.nodes:
            return f"http://127.0.0.1:{self.nodes[name][1]}"
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
             "project.asgi:application"],
            cwd=ROOT, env={**self.env, **NODE_ENV.get(name, {})}, stdout=subprocess.DEVNULL,
            stderr=open(self.tmp_path / f"{name}.log", "wb"))
        wait_for_port(port, process)
        self.nodes[name] = (process, port)
        return f"http://127.0.0.1:{port}"

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "project", "worker", "-B", "-P", "threads",
             "-c", "2", "-Q", self.env["DUET_CELERY_QUEUE"], "--without-heartbeat",
             "--without-mingle", "--without-gossip", "-s", str(self.tmp_path / "beat-schedule"),
             "--loglevel", "WARNING"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
            stderr=open(self.tmp_path / "worker.log", "wb"),
            # -B forks beat into a child process: a group of its own, so that stop() kills both
            start_new_session=True)

    def describe(self) -> str:
        """What a failed cluster test reports: every call's record and the processes' logs."""
        from calls.models import CallEvent, CallSession

        lines = ["calls:"]
        for call in CallSession.objects.order_by("id"):
            kinds = list(CallEvent.objects.filter(call=call).order_by("id")
                         .values_list("kind", flat=True))
            lines.append(f"  {call.call_id} phase={call.phase} end_reason={call.end_reason} "
                         f"ended_at={call.ended_at} timeline={kinds}")
        for log in sorted(self.tmp_path.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-40:]
            lines += [f"{log.name}:", *(f"  {line}" for line in tail)]
        return "\n".join(lines)

    def kill(self, name: str) -> None:
        process, _ = self.nodes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        # A test cluster needs no graceful shutdown (daphne's waits for open sockets).
        processes = [p for p, _ in self.nodes.values()] + ([self.worker] if self.worker else [])
        if self.worker is not None:
            try:
                os.killpg(self.worker.pid, signal.SIGKILL)  # the worker and its beat child
            except ProcessLookupError:
                pass
        for process in processes:
            process.kill()
        for process in processes:
            process.wait(timeout=10)


# How often the flush between tests tries again after PostgreSQL broke a deadlock against it.
FLUSH_ATTEMPTS = 5


@pytest.fixture(scope="module", autouse=True)
def flush_that_survives_the_cluster():
    """The flush after each test (TRUNCATE of every table) runs while the module's cluster keeps
    working: heartbeats and housekeeping every second, ring sweeps. PostgreSQL breaks the
    occasional deadlock between the TRUNCATE's table locks and such a statement by failing one of
    them; when it fails the flush, the flush is tried again (it failed once in 15 runs of this
    module, and the next test then found the last one's users)."""
    from psycopg.errors import DeadlockDetected

    operations = type(connection.ops)
    flush = operations.execute_sql_flush

    def flush_again_after_a_deadlock(self, sql_list):
        for attempt in range(1, FLUSH_ATTEMPTS + 1):
            try:
                return flush(self, sql_list)
            except OperationalError as error:
                if not isinstance(error.__cause__, DeadlockDetected) or attempt == FLUSH_ATTEMPTS:
                    raise

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(operations, "execute_sql_flush", flush_again_after_a_deadlock)
        yield


@pytest.fixture(scope="module")
def running_cluster(django_db_setup, tmp_path_factory):
    """One worker and two nodes for the module: starting processes dominates these tests."""
    if "DUET_CELERY_QUEUE" not in os.environ or "REDIS_URL" not in os.environ:
        pytest.skip("needs Redis: run through scripts/testenv.py (make test)")
    running = Cluster(tmp_path_factory.mktemp("cluster"))
    running.start_worker()
    yield running
    running.stop()


@pytest.fixture
def cluster(running_cluster, transactional_db):
    return running_cluster


@pytest.fixture
def people(transactional_db):
    users = {name: make_user(name) for name in ("alice", "bob", "carol")}
    cookies = {}
    for name, user in users.items():
        client = Client()
        client.force_login(user)
        cookies[name] = client.cookies["sessionid"].value
    return users, cookies


async def client_on(base_url: str, cookie: str, device_id: str, **hello) -> ProtocolClient:
    client = ProtocolClient(base_url, cookie, device_id)
    await client.connect(**hello)
    return client


def call_events(client: ProtocolClient, after: int = 0) -> list[tuple]:
    return summary([e for e in client.events if e["seq"] > after and e["name"].startswith("call.")])


@pytest.mark.parametrize("event_batches", [False, True], ids=["event-frames", "event-batches"])
def test_a_call_across_two_nodes(cluster, people, event_batches):
    users, cookies = people
    one, two = cluster.start_node("one"), cluster.start_node("two")

    async def scenario():
        alice = await client_on(one, cookies["alice"], "alice-1", event_batches=event_batches)
        bob = await client_on(two, cookies["bob"], "bob-1", event_batches=event_batches)
        started = await alice.request("call", to=users["bob"].pk, call_type="video")
        call_id = started["call_id"]
        await alice.event("call.event", event="remoteUserRecvCall")
        await bob.request("accept", call_id=call_id)
        await alice.event("call.state", state="connecting")
        await alice.request("media", call_id=call_id, milestone="first_remote_frame")
        await bob.request("media", call_id=call_id, milestone="first_remote_frame")
        await alice.event("call.state", state="connected")
        await bob.event("call.state", state="connected")
        await bob.request("hangup", call_id=call_id)
        # the last event of each side (it travels with the state, in the frame after it)
        await alice.event("call.event", event="remoteHangup")
        await bob.event("call.event", event="localHangup")
        assert call_events(alice) == [
            ("state", "calling", "localVideoCall"), ("event", "localVideoCall"),
            ("event", "remoteUserRecvCall"),
            ("state", "connecting", "remoteAccepted"), ("event", "remoteAccepted"),
            ("state", "connected", "recvRemoteFirstFrame"),
            ("state", "prepared", "remoteHangup"), ("event", "remoteHangup")]
        assert call_events(bob) == [
            ("state", "calling", "remoteVideoCall"), ("event", "remoteVideoCall"),
            ("state", "connecting", "localAccepted"), ("event", "localAccepted"),
            ("state", "connected", "recvRemoteFirstFrame"),
            ("state", "prepared", "localHangup"), ("event", "localHangup")]
        await alice.close()
        await bob.close()

    asyncio.run(scenario())


def test_presence_across_two_nodes(cluster, people):
    users, cookies = people
    one, two = cluster.start_node("one"), cluster.start_node("two")

    async def scenario():
        carol = await client_on(one, cookies["carol"], "carol-1")
        bob = await client_on(two, cookies["bob"], "bob-1")
        await carol.presence_of(users["bob"].pk, "online")
        alice = await client_on(two, cookies["alice"], "alice-1")
        await carol.presence_of(users["alice"].pk, "online")
        await alice.request("call", to=users["bob"].pk, call_type="audio")
        await carol.presence_of(users["alice"].pk, "busy")
        await carol.presence_of(users["bob"].pk, "busy")
        await bob.close()
        await alice.close()
        # both are still in the call until bob's grace runs out; then both are offline
        await carol.presence_of(users["alice"].pk, "offline", timeout=GRACE_S + 10)
        await carol.presence_of(users["bob"].pk, "offline", timeout=GRACE_S + 10)
        await carol.close()

    try:
        asyncio.run(scenario())
    except TimeoutError as error:
        # failed about once in 40 runs (a presence update that never reached carol): report
        # what the calls and the processes did, to find why
        raise AssertionError(f"{error}\n{cluster.describe()}") from error


def test_glare_across_two_nodes_ends_in_one_call(cluster, people):
    users, cookies = people
    one, two = cluster.start_node("one"), cluster.start_node("two")

    async def scenario():
        alice = await client_on(one, cookies["alice"], "alice-1")
        bob = await client_on(two, cookies["bob"], "bob-1")
        for round_number in range(5):
            replies = await asyncio.gather(
                alice.request("call", to=users["bob"].pk, call_type="video"),
                bob.request("call", to=users["alice"].pk, call_type="video"))
            call_ids = {reply["call_id"] for reply in replies}
            assert len(call_ids) == 1, replies
            assert sorted(reply["outcome"] for reply in replies) == ["glare", "ring"]
            call_id = call_ids.pop()
            await alice.event("call.state", state="connecting", call_id=call_id)
            await bob.event("call.state", state="connecting", call_id=call_id)
            await alice.request("hangup", call_id=call_id)
            await bob.event("call.state", state="prepared", call_id=call_id)
            await alice.event("call.state", state="prepared", call_id=call_id)
        await alice.close()
        await bob.close()

    asyncio.run(scenario())


async def accepted_across(one: str, two: str, users, cookies):
    """alice on node one calls bob on node two, who accepts."""
    alice = await client_on(one, cookies["alice"], "alice-1")
    bob = await client_on(two, cookies["bob"], "bob-1")
    call_id = (await alice.request("call", to=users["bob"].pk, call_type="video"))["call_id"]
    await bob.event("call.state", state="calling")
    await bob.request("accept", call_id=call_id)
    await alice.event("call.state", state="connecting")
    return alice, bob, call_id


def test_a_node_killed_mid_call_and_its_client_moves_to_the_other(cluster, people):
    users, cookies = people
    one, two = cluster.start_node("one"), cluster.start_node("two")

    async def scenario():
        alice, bob, call_id = await accepted_across(one, two, users, cookies)
        for client in (alice, bob):
            await client.request("media", call_id=call_id, milestone="first_remote_frame")
        await alice.event("call.state", state="connected")
        await bob.event("call.state", state="connected")
        last_seq = bob.last_seq

        cluster.kill("two")
        await bob.close()
        moved = ProtocolClient(one, cookies["bob"], "bob-1")
        hello = await moved.connect(last_seq=last_seq)
        assert (hello["active_call"]["call_id"], hello["active_call"]["state"]) == (call_id, "connected")
        await alice.request("hangup", call_id=call_id)
        await moved.event("call.state", state="prepared", reason="remoteHangup")
        await alice.event("call.state", state="prepared", reason="localHangup")
        await alice.close()
        await moved.close()

    asyncio.run(scenario())


def test_a_client_lost_with_its_node_ends_the_call_after_the_grace(cluster, people):
    users, cookies = people
    one, two = cluster.start_node("one"), cluster.start_node("two")

    async def scenario():
        alice, bob, call_id = await accepted_across(one, two, users, cookies)
        seq = alice.last_seq

        cluster.kill("two")  # bob's socket dies with the node and he never comes back
        await bob.close()
        started = time.monotonic()
        # heartbeats stop -> housekeeping drops the stale connection -> grace -> the worker ends it
        await alice.event("call.event", event="remoteReconnecting", after=seq, timeout=15)
        ended = await alice.event("call.state", state="prepared", after=seq, timeout=15)
        assert ended["reason"] == "remoteConnectionLost"
        assert time.monotonic() - started >= GRACE_S
        await alice.close()

    asyncio.run(scenario())


def test_the_flush_between_tests_is_tried_again_after_a_deadlock():
    # given the flush's TRUNCATE, and another session that holds a table the TRUNCATE locks last
    # and then asks for the one it locks first (what a heartbeat or a sweep of the cluster can do)
    from django.core.management.color import no_style

    import psycopg

    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL lock cycle")
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    statements = connection.ops.sql_flush(no_style(), tables)
    make_user("zed")
    holding, outcome = threading.Event(), []

    def other_session():
        with psycopg.connect(database_url(), autocommit=False) as other:
            other.execute(f'SELECT count(*) FROM "{tables[-1]}"')
            holding.set()
            time.sleep(0.3)  # allowed: the TRUNCATE must be waiting, before its deadlock check
            other.execute(f'SELECT count(*) FROM "{tables[0]}"')
            outcome.append("read")
            other.rollback()

    thread = threading.Thread(target=other_session)
    thread.start()
    assert holding.wait(10)
    # when the flush runs (PostgreSQL fails the TRUNCATE, which waited first, to break the cycle)
    connection.ops.execute_sql_flush(statements)
    thread.join(10)
    # then the flush was tried again and emptied the tables, and the other session went on
    assert outcome == ["read"]
    assert not get_user_model().objects.exists()
