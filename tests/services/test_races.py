"""Races between services, on PostgreSQL: real threads, each with its own connection.

Each race is run ITERATIONS times. The two contenders wait at a barrier with their connections
open, then act at once. Whichever wins, exactly one outcome holds and every record agrees with
it: the call, both profiles, the call's timeline, each user's events (gapless seqs) and the
loser's error.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from calls import devices, services
from calls.domain.machine import CallType, DialOutcome
from calls.models import CallEvent, CallSession, Profile, UserEvent
from calls.services import LIVE_PHASES, ServiceError

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="races need PostgreSQL row locks; SQLite serialises every writer"),
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("no_timers_left_behind"),
]

# Enough rounds for both orders to show up, few enough to keep the module well under a minute.
ITERATIONS = 15
# A contender that has not finished by then is stuck on a lock: a deadlock, reported as such.
CONTENDER_TIMEOUT_S = 20

RINGING = [("state", "calling", "localVideoCall", "all"), ("event", "localVideoCall", "all")]
RUNG = [("state", "calling", "remoteVideoCall", "all"), ("event", "remoteVideoCall", "all")]


# The tests that count psycopg's waits for answers need its pipeline mode (DATABASE_PIPELINE).
pipeline_mode = pytest.mark.skipif(not settings.DATABASE_PIPELINE,
                                   reason="counts waits in psycopg's pipeline mode")

# ---- helpers --------------------------------------------------------------------------------


class ProfilesHeld:
    """Another connection's transaction holding the locks of some profiles (see profiles_held)."""

    def __init__(self):
        self.profiles: dict = {}
        self.locked, self.released = threading.Event(), threading.Event()

    def release(self) -> None:
        self.released.set()


@contextmanager
def profiles_held(user_ids):
    """A transaction on its own thread and connection that locks the profiles of ``user_ids``
    (as a call transaction does) and holds them until ``release()`` or the block's end."""
    from django.db import close_old_connections, transaction

    held = ProfilesHeld()

    def hold():
        try:
            with transaction.atomic():
                held.profiles.update(services.lock_profiles(user_ids))
                held.locked.set()
                held.released.wait(CONTENDER_TIMEOUT_S)
        finally:
            close_old_connections()

    with ThreadPoolExecutor(max_workers=1) as pool:
        holder = pool.submit(hold)
        try:
            assert held.locked.wait(CONTENDER_TIMEOUT_S)
            yield held
        finally:
            held.release()
        holder.result(CONTENDER_TIMEOUT_S)


def on_own_connection(action) -> Future:
    """``action()`` on a thread (and so a connection) of its own; its future."""
    from django.db import close_old_connections

    future: Future = Future()

    def run():
        try:
            future.set_result(action())
        except BaseException as error:  # noqa: BLE001 - handed to whoever awaits the future
            future.set_exception(error)
        finally:
            close_old_connections()
    threading.Thread(target=run, daemon=True).start()
    return future


def race(*actions):
    """Run the actions at once, each on its own thread and connection.

    Returns one ``("ok", value)`` or ``("error", code)`` per action, in order.
    """
    barrier = threading.Barrier(len(actions))

    def contend(action):
        try:
            connection.ensure_connection()  # connect before the start line, not after it
            barrier.wait(timeout=CONTENDER_TIMEOUT_S)
            try:
                return "ok", action()
            except ServiceError as error:
                return "error", error.code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(actions)) as pool:
        futures = [pool.submit(contend, action) for action in actions]
        return [future.result(timeout=CONTENDER_TIMEOUT_S) for future in futures]


def online(user, *device_ids: str) -> None:
    for device_id in device_ids:
        devices.device_connect(user=user, device_id=device_id, channel_name=f"test.{device_id}")


def dial(caller, callee, *, now=None, device_id=None):
    return services.call_start(caller=caller, device_id=device_id or f"{caller.username}-laptop",
                               callee_id=callee.pk, call_type=CallType.video, timeout_ms=5000,
                               now=now)


def summary(frame: dict) -> tuple:
    if frame["name"] == "call.state":
        return ("state", frame["state"], frame["reason"])
    return ("event", frame["event"])


def heard(user, *, after: int) -> list[tuple]:
    """What the user was told since seq ``after``, with which of its devices it is for."""
    out = []
    for row in UserEvent.objects.filter(user=user, seq__gt=after).order_by("seq"):
        audience = (f"only {row.only_device}" if row.only_device
                    else f"except {row.except_device}" if row.except_device else "all")
        out.append((*summary(row.frame), audience))
    return out


def seq_of(user) -> int:
    return Profile.objects.get(user=user).event_seq


def active_call_id(user):
    return Profile.objects.filter(user=user).values_list("active_call__call_id", flat=True).get()


def inputs_applied(call) -> list[tuple]:
    """The call's timeline without its notifications: which inputs were applied, by whom, in
    the order they were applied (ids are taken under the call's lock)."""
    return list(CallEvent.objects.filter(call=call).exclude(kind="notified")
                .order_by("id").values_list("kind", "device_id"))


def assert_records_consistent(*users) -> None:
    """Every user's seqs are 1..n with event_seq n; each is in at most the one live call its
    profile points to."""
    for user in users:
        seqs = list(UserEvent.objects.filter(user=user).order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1)), user.username
        assert seq_of(user) == len(seqs), user.username
        live = list(CallSession.objects.filter(Q(caller=user) | Q(callee=user),
                                               phase__in=LIVE_PHASES).values_list("call_id", flat=True))
        assert len(live) <= 1, (user.username, live)
        assert active_call_id(user) == (live[0] if live else None), user.username


def free_everyone() -> None:
    """End what a round left live, so the next round starts with everyone free."""
    for call_id in CallSession.objects.filter(phase__in=LIVE_PHASES).values_list("call_id",
                                                                                flat=True):
        services.call_end_by_server(call_id=call_id)


ACCEPTED_CALLER = [("event", "remoteUserRecvCall", "all"),
                   ("state", "connecting", "remoteAccepted", "all"),
                   ("event", "remoteAccepted", "all")]


def accepted_callee(device: str) -> list[tuple]:
    return [("state", "connecting", "localAccepted", f"only {device}"),
            ("event", "localAccepted", f"only {device}"),
            ("state", "prepared", "answeredElsewhere", f"except {device}"),
            ("event", "answeredElsewhere", f"except {device}")]


# ---- races ----------------------------------------------------------------------------------


def test_accept_racing_cancel_has_exactly_one_winner(alice, bob):
    # given alice calling bob, round after round
    online(alice, "alice-laptop")
    online(bob, "bob-phone")
    winners = []
    for _ in range(ITERATIONS):
        call = dial(alice, bob).call
        alice_seq, bob_seq = seq_of(alice), seq_of(bob)
        # when alice cancels as bob accepts
        cancel, accept = race(
            lambda: services.call_cancel(user=alice, device_id="alice-laptop", call_id=call.call_id),
            lambda: services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id))
        # then one of them won, and everything says so
        call.refresh_from_db()
        if cancel[0] == "ok":
            winners.append("cancel")
            assert accept == ("error", "state_mismatch")
            assert (call.phase, call.end_reason, call.ended_by, call.callee_device) == (
                "ended", "cancelled", "caller", "")
            assert active_call_id(alice) is active_call_id(bob) is None
            assert inputs_applied(call) == [("dial", "alice-laptop"), ("cancel", "alice-laptop")]
            assert heard(alice, after=alice_seq) == [("state", "prepared", "localCancelled", "all"),
                                                     ("event", "localCancelled", "all")]
            assert heard(bob, after=bob_seq) == [("state", "prepared", "remoteCancelled", "all"),
                                                 ("event", "remoteCancelled", "all")]
        else:
            winners.append("accept")
            assert (cancel, accept[0]) == (("error", "state_mismatch"), "ok")
            assert (call.phase, call.end_reason, call.callee_device) == ("accepted", "", "bob-phone")
            assert active_call_id(alice) == active_call_id(bob) == call.call_id
            assert inputs_applied(call) == [("dial", "alice-laptop"), ("accept", "bob-phone")]
            assert heard(alice, after=alice_seq) == ACCEPTED_CALLER
            assert heard(bob, after=bob_seq) == accepted_callee("bob-phone")
        assert_records_consistent(alice, bob)
        free_everyone()
    assert set(winners) <= {"cancel", "accept"} and len(winners) == ITERATIONS


def test_accept_racing_the_ring_timeout_ends_the_call_by_timeout_either_way(alice, bob):
    # given alice calling bob with a deadline already passed, round after round
    online(alice, "alice-laptop")
    online(bob, "bob-phone")
    for _ in range(ITERATIONS):
        t0 = timezone.now().replace(microsecond=0) - timedelta(seconds=10)  # calls keep whole ms
        call = dial(alice, bob, now=t0).call
        deadline = t0 + timedelta(seconds=5)
        alice_seq, bob_seq = seq_of(alice), seq_of(bob)
        # when bob accepts (just before the deadline) as the timer fires at it
        accept, timeout = race(
            lambda: services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id,
                                         now=deadline - timedelta(milliseconds=100)),
            lambda: services.call_timeout(call_id=call.call_id, now=deadline))
        # then the call ends by timeout at the deadline: an accepted call is not yet connected
        call.refresh_from_db()
        assert timeout[0] == "ok" and timeout[1].phase == "ended"
        assert (call.phase, call.end_reason, call.ended_at) == ("ended", "timeout", deadline)
        assert active_call_id(alice) is active_call_id(bob) is None
        if accept[0] == "ok":  # accepted first, then timed out
            assert (call.callee_device, call.accepted_at) == (
                "bob-phone", deadline - timedelta(milliseconds=100))
            assert inputs_applied(call) == [("dial", "alice-laptop"), ("accept", "bob-phone"),
                                            ("ring_timeout", "")]
            assert heard(alice, after=alice_seq) == ACCEPTED_CALLER + [
                ("state", "prepared", "callingTimeout", "all"), ("event", "callingTimeout", "all")]
            assert heard(bob, after=bob_seq) == accepted_callee("bob-phone") + [
                ("state", "prepared", "remoteCallingTimeout", "only bob-phone"),
                ("event", "remoteCallingTimeout", "only bob-phone")]
        else:  # timed out first: the accept came too late
            assert accept == ("error", "state_mismatch")
            assert (call.callee_device, call.accepted_at) == ("", None)
            assert inputs_applied(call) == [("dial", "alice-laptop"), ("ring_timeout", "")]
            assert heard(alice, after=alice_seq) == [
                ("state", "prepared", "callingTimeout", "all"), ("event", "callingTimeout", "all")]
            assert heard(bob, after=bob_seq) == [
                ("state", "prepared", "remoteCallingTimeout", "all"),
                ("event", "remoteCallingTimeout", "all")]
        assert_records_consistent(alice, bob)


def test_two_callee_devices_accepting_at_once_connect_exactly_one(alice, bob):
    # given alice calling bob, who has a phone and a tablet, round after round
    online(alice, "alice-laptop")
    online(bob, "bob-phone", "bob-tablet")
    for _ in range(ITERATIONS):
        call = dial(alice, bob).call
        alice_seq, bob_seq = seq_of(alice), seq_of(bob)
        # when both of bob's devices accept
        phone, tablet = race(
            lambda: services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id),
            lambda: services.call_accept(user=bob, device_id="bob-tablet", call_id=call.call_id))
        # then one device answered the call and the other was refused
        assert sorted([phone[0], tablet[0]]) == ["error", "ok"]
        winner = "bob-phone" if phone[0] == "ok" else "bob-tablet"
        assert (tablet if winner == "bob-phone" else phone) == ("error", "state_mismatch")
        call.refresh_from_db()
        assert (call.phase, call.callee_device) == ("accepted", winner)
        assert active_call_id(alice) == active_call_id(bob) == call.call_id
        assert inputs_applied(call) == [("dial", "alice-laptop"), ("accept", winner)]
        assert heard(alice, after=alice_seq) == ACCEPTED_CALLER
        assert heard(bob, after=bob_seq) == accepted_callee(winner)
        assert_records_consistent(alice, bob)
        free_everyone()


def test_both_users_calling_each_other_at_once_end_in_one_accepted_call(alice, bob):
    # given alice and bob free and online, round after round
    online(alice, "alice-laptop")
    online(bob, "bob-laptop")
    for _ in range(ITERATIONS):
        calls_before = CallSession.objects.count()
        alice_seq, bob_seq = seq_of(alice), seq_of(bob)
        # when each calls the other at the same moment
        from_alice, from_bob = race(lambda: dial(alice, bob), lambda: dial(bob, alice))
        # then one call rang and the other dial accepted it: one live call, accepted
        assert (from_alice[0], from_bob[0]) == ("ok", "ok")
        assert sorted([from_alice[1].outcome, from_bob[1].outcome]) == [DialOutcome.glare,
                                                                       DialOutcome.ring]
        assert from_alice[1].call.call_id == from_bob[1].call.call_id
        assert CallSession.objects.count() == calls_before + 1
        call = CallSession.objects.get(call_id=from_alice[1].call.call_id)
        caller, callee = (alice, bob) if call.caller_id == alice.pk else (bob, alice)
        callee_device = f"{callee.username}-laptop"
        assert (call.phase, call.end_reason, call.callee_device) == ("accepted", "", callee_device)
        assert active_call_id(alice) == active_call_id(bob) == call.call_id
        assert inputs_applied(call) == [("dial", f"{caller.username}-laptop"),
                                        ("accept", callee_device)]
        assert CallEvent.objects.get(call=call, kind="accept").payload == {"via": "glare"}
        seqs = {alice.pk: alice_seq, bob.pk: bob_seq}
        assert heard(caller, after=seqs[caller.pk]) == RINGING + ACCEPTED_CALLER
        assert heard(callee, after=seqs[callee.pk]) == RUNG + accepted_callee(callee_device)
        assert_records_consistent(alice, bob)
        free_everyone()


def test_caller_recalling_as_the_callee_accepts_has_exactly_one_winner(alice, bob):
    # given alice calling bob, round after round
    online(alice, "alice-laptop")
    online(bob, "bob-phone")
    for _ in range(ITERATIONS):
        first = dial(alice, bob).call
        calls_before = CallSession.objects.count()
        alice_seq, bob_seq = seq_of(alice), seq_of(bob)
        # when alice calls bob again as bob accepts the first call
        recall, accept = race(
            lambda: dial(alice, bob),
            lambda: services.call_accept(user=bob, device_id="bob-phone", call_id=first.call_id))
        # then either the recall replaced the call or the accept kept it, never both
        first.refresh_from_db()
        if recall[0] == "ok":
            assert recall[1].outcome is DialOutcome.recall
            assert accept == ("error", "state_mismatch")
            second = CallSession.objects.get(call_id=recall[1].call.call_id)
            assert CallSession.objects.count() == calls_before + 1
            assert (first.phase, first.end_reason, first.callee_device) == ("ended", "recalled", "")
            assert second.phase == "ringing"
            assert active_call_id(alice) == active_call_id(bob) == second.call_id
            assert inputs_applied(first) == [("dial", "alice-laptop"), ("recalled", "alice-laptop")]
            assert heard(alice, after=alice_seq) == [
                ("state", "prepared", "cancelByCallerRecall", "all"), *RINGING]
            assert heard(bob, after=bob_seq) == [
                ("state", "prepared", "cancelByCallerRecall", "all"), *RUNG]
        else:
            assert recall == ("error", "state_mismatch") and accept[0] == "ok"
            assert CallSession.objects.count() == calls_before
            assert (first.phase, first.callee_device) == ("accepted", "bob-phone")
            assert active_call_id(alice) == active_call_id(bob) == first.call_id
            assert inputs_applied(first) == [("dial", "alice-laptop"), ("accept", "bob-phone")]
            assert heard(alice, after=alice_seq) == ACCEPTED_CALLER
            assert heard(bob, after=bob_seq) == accepted_callee("bob-phone")
        assert_records_consistent(alice, bob)
        free_everyone()


def test_two_callers_calling_one_callee_at_once_ring_once_and_end_the_other_busy(alice, bob,
                                                                                 carol):
    # given alice and bob free, and carol online, round after round
    online(alice, "alice-laptop")
    online(bob, "bob-laptop")
    online(carol, "carol-phone")
    for _ in range(ITERATIONS):
        seqs = {user.pk: seq_of(user) for user in (alice, bob, carol)}
        # when alice and bob call carol at the same moment
        from_alice, from_bob = race(lambda: dial(alice, carol), lambda: dial(bob, carol))
        # then one rings carol and the other ended at once, busy
        assert (from_alice[0], from_bob[0]) == ("ok", "ok")
        outcomes = {alice: from_alice[1], bob: from_bob[1]}
        assert sorted(started.outcome for started in outcomes.values()) == [DialOutcome.busy,
                                                                            DialOutcome.ring]
        ringer = alice if outcomes[alice].outcome is DialOutcome.ring else bob
        busy = bob if ringer is alice else alice
        rings = CallSession.objects.get(pk=outcomes[ringer].call.pk)
        ended = CallSession.objects.get(pk=outcomes[busy].call.pk)
        assert (rings.phase, rings.callee_id) == ("ringing", carol.pk)
        assert (ended.phase, ended.end_reason, ended.callee_id) == ("ended", "busy", carol.pk)
        assert active_call_id(ringer) == active_call_id(carol) == rings.call_id
        assert active_call_id(busy) is None
        assert inputs_applied(ended) == [("dial", f"{busy.username}-laptop")]
        assert CallEvent.objects.get(call=ended, kind="dial").payload == {
            "outcome": "busy", "call_type": "video"}
        assert heard(ringer, after=seqs[ringer.pk]) == RINGING
        assert heard(busy, after=seqs[busy.pk]) == [("state", "prepared", "remoteCallBusy", "all"),
                                                    ("event", "remoteCallBusy", "all")]
        assert heard(carol, after=seqs[carol.pk]) == RUNG
        assert_records_consistent(alice, bob, carol)
        free_everyone()



def test_glare_that_waited_for_the_lock_is_stamped_after_the_call_it_accepts(alice, bob):
    # given the interleaving the glare race above produces in a fifth to a half of its rounds:
    # bob dialled at t0 and waited for the profile locks while alice's dial, begun 1 ms
    # later, created the call
    online(alice, "alice-laptop")
    online(bob, "bob-laptop")
    t0 = timezone.now()
    call = dial(alice, bob, now=t0 + timedelta(milliseconds=1)).call
    # when bob's dial gets the locks and turns into the accept of alice's call
    glare = dial(bob, alice, now=t0)
    # then the accept is recorded after the call it accepted: stamps and timeline in causal order
    call.refresh_from_db()
    assert glare.outcome is DialOutcome.glare
    assert call.accepted_at >= call.created_at
    times_in_applied_order = list(CallEvent.objects.filter(call=call).order_by("id")
                                  .values_list("at", flat=True))
    assert times_in_applied_order == sorted(times_in_applied_order)


def test_a_hello_waits_for_a_call_transaction_holding_its_users_profile(alice, bob):
    # given a call transaction of alice's that holds her profile (and read her sockets: none),
    # and a device of hers saying hello on another process meanwhile
    from django.db import transaction

    with profiles_held([alice.pk, bob.pk]) as held:
        greeter = on_own_connection(lambda: devices.device_connect(
            user=alice, device_id="a-2", channel_name="elsewhere.a-2"))
        # then the hello's connection waits for the transaction (which saw no socket of hers:
        # it may deliver her events here only, because the hello that follows its commit
        # replays them) ...
        assert not wait([greeter], timeout=0.5).done
        held.release()
        greeter.result(CONTENDER_TIMEOUT_S)
    assert held.profiles[alice.pk].socket_channels == ()
    # ... and the next transaction sees her new socket, so its events go through the layer
    with transaction.atomic():
        assert services.lock_profiles([alice.pk])[alice.pk].socket_channels == ("elsewhere.a-2",)


def test_a_transition_locks_the_call_only_once_its_participants_profiles_are_granted(alice, bob):
    # given a ringing call, and a transaction of another process holding alice's profile
    from django.db import transaction

    from calls import rows

    online(bob, "b1")
    call = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                               call_type="video").call
    assert call.phase == "ringing"
    with profiles_held([alice.pk]) as held:
        canceller = on_own_connection(lambda: services.call_cancel(
            user=alice, device_id="a1", call_id=call.call_id))
        # when alice's cancel is waiting for her profile (its call lock sent right behind)
        assert not wait([canceller], timeout=0.5).done
        # then the call's row is not locked yet: the call lock waits behind the profiles', in
        # the lock order every transaction keeps
        with transaction.atomic():
            rows.execute(f"SELECT 1 FROM {CallSession._meta.db_table} WHERE id = %s "
                         "FOR UPDATE NOWAIT", [call.pk])
        held.release()
        canceller.result(CONTENDER_TIMEOUT_S)
    call.refresh_from_db()
    assert call.phase == "ended" and call.end_reason == "cancelled"


@pipeline_mode
def test_a_transition_waits_once_for_its_locks_before_it_writes(alice, bob, monkeypatch):
    """The profiles' lock, their sockets' read and the call's lock come back in one round trip:
    a transition waits for answers twice, once for its locks (its BEGIN with them) and once at
    its block's end (its writes and COMMIT). Without DATABASE_COMBINE_WRITES psycopg's BEGIN
    waits on its own first: three (and Django's COMMIT a fourth, outside the pipeline)."""
    from psycopg._pipeline_base import BasePipeline

    online(bob, "b1")
    call = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                               call_type="video").call
    waits = []
    fetch = BasePipeline._fetch_gen

    def counted(self, *, flush):
        if self.result_queue:  # answers outstanding: the thread waits for them now
            waits.append(flush)
        return fetch(self, flush=flush)
    monkeypatch.setattr(BasePipeline, "_fetch_gen", counted)
    services.call_mark_delivered(call_id=call.call_id, device_id="b1")
    assert len(waits) == (2 if settings.DATABASE_COMBINE_WRITES else 3)
    call.refresh_from_db()
    assert call.delivered_at is not None


@pipeline_mode
def test_a_dial_waits_once_for_its_locks_and_its_new_calls_key_before_it_writes(alice, bob,
                                                                                 monkeypatch):
    """The callee's online check, the profiles' lock, their sockets and the new call's key
    (nextval) come back in one round trip; the call's INSERT then waits for nothing: two waits
    for answers in all (the BEGIN with the locks, the writes with the COMMIT); three without
    DATABASE_COMBINE_WRITES (psycopg's BEGIN on its own)."""
    from psycopg._pipeline_base import BasePipeline

    online(bob, "b1")
    waits = []
    fetch = BasePipeline._fetch_gen

    def counted(self, *, flush):
        if self.result_queue:
            waits.append(flush)
        return fetch(self, flush=flush)
    monkeypatch.setattr(BasePipeline, "_fetch_gen", counted)
    first = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                                call_type="video").call
    assert len(waits) == (2 if settings.DATABASE_COMBINE_WRITES else 3)
    # the key taken is the stored call's, and the next dial takes the next one
    stored = CallSession.objects.get(call_id=first.call_id)
    assert stored.pk == first.pk and stored.phase == "ringing"
    services.call_cancel(user=alice, device_id="a1", call_id=first.call_id)
    second = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                                 call_type="video").call
    assert second.pk > first.pk
    assert CallSession.objects.get(pk=second.pk).call_id == second.call_id


# The tests that count the statements of a transaction's writes need them held back and joined
# (DATABASE_COMBINE_WRITES, with the pipeline).
combined_writes = pytest.mark.skipif(
    not (settings.DATABASE_PIPELINE and settings.DATABASE_COMBINE_WRITES),
    reason="counts the statements of writes joined into one")


@pytest.fixture
def sent_statements(monkeypatch):
    """The SQL of every statement psycopg sends from here on, in order."""
    import psycopg

    sent = []
    execute = psycopg.Cursor.execute

    def recorded(self, query, params=None, **kwargs):
        sent.append(query if isinstance(query, str) else str(query))
        return execute(self, query, params, **kwargs)
    monkeypatch.setattr(psycopg.Cursor, "execute", recorded)
    return sent


def _writes(sent: list[str]) -> list[str]:
    return [sql for sql in sent if not sql.lstrip().upper().startswith(("SELECT", "COMMIT"))]


@combined_writes
def test_a_transitions_writes_go_to_postgresql_as_one_statement(alice, bob, sent_statements):
    """The call's guarded UPDATE, its timeline, the caller's event and the profiles' seqs: one
    statement, its parts joined with WITH, the guarded UPDATE last, its row count checked by
    PostgreSQL (duet_guard) because the COMMIT follows in the same round trip."""
    online(bob, "b1")
    call = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                               call_type="video").call
    sent_statements.clear()
    services.call_mark_delivered(call_id=call.call_id, device_id="b1")
    writes = _writes(sent_statements)
    assert len(writes) == 1, writes
    (statement,) = writes
    assert statement.startswith("WITH w0 AS (INSERT INTO")
    for table in ("calls_callevent", "calls_userevent"):
        assert f"INSERT INTO {connection.ops.quote_name(table)}" in statement
    assert f"UPDATE {connection.ops.quote_name('calls_profile')}" in statement
    assert f"UPDATE {connection.ops.quote_name('calls_callsession')} SET" in statement
    assert " RETURNING 1) SELECT duet_guard(count(*), $" in statement
    call.refresh_from_db()
    assert call.delivered_at is not None and call.version == 1
    assert UserEvent.objects.filter(user=alice, frame__event="remoteUserRecvCall").count() == 1
    assert Profile.objects.get(user=alice).event_seq == UserEvent.objects.filter(user=alice).count()


@combined_writes
def test_a_dials_writes_go_to_postgresql_as_one_statement(alice, bob, sent_statements):
    online(bob, "b1")
    sent_statements.clear()
    call = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                               call_type="video").call
    writes = _writes(sent_statements)
    assert len(writes) == 1, writes
    assert f"INSERT INTO {connection.ops.quote_name('calls_callsession')}" in writes[0]
    stored = CallSession.objects.get(call_id=call.call_id)
    assert stored.phase == "ringing"
    assert CallEvent.objects.filter(call=stored, kind="dial").count() == 1
    assert Profile.objects.get(user=bob).active_call_id == stored.pk
    assert UserEvent.objects.filter(user=bob, call_id=call.call_id).exists()


@combined_writes
def test_a_call_transaction_commits_in_the_round_trip_of_its_writes(alice, bob, sent_statements,
                                                                    monkeypatch):
    """The COMMIT goes behind the joined writes, in the same pipeline: Django's own commit then
    finds the transaction over, with nothing left to send (one round trip less)."""
    import psycopg
    from psycopg import pq

    online(bob, "b1")
    call = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                               call_type="video").call
    statuses = []
    commit = psycopg.Connection.commit

    def noted(self):
        statuses.append(self.pgconn.transaction_status)
        return commit(self)
    monkeypatch.setattr(psycopg.Connection, "commit", noted)
    sent_statements.clear()
    services.call_mark_delivered(call_id=call.call_id, device_id="b1")
    assert sent_statements[-1] == "COMMIT"
    assert "SELECT duet_guard(count(*)" in sent_statements[-2]
    assert statuses == [pq.TransactionStatus.IDLE]
    call.refresh_from_db()
    assert call.delivered_at is not None


def _data_segments_sent(fd: int) -> int | None:
    """How many TCP segments carrying data the socket ``fd`` has sent (Linux's TCP_INFO,
    ``tcpi_data_segs_out``): with TCP_NODELAY, as libpq sets it, one per write of a message
    this size. None where that cannot be read (not TCP, not Linux)."""
    import socket
    import struct

    if not hasattr(socket, "TCP_INFO"):
        return None
    try:
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    return struct.unpack_from("I", info, 156)[0] if len(info) >= 160 else None


@combined_writes
def test_a_transaction_writes_to_postgresql_once_per_wait(alice, bob, monkeypatch):
    """Statements are written to the socket when their answers are awaited, all together: a
    transition writes twice (BEGIN with its locks and reads; its writes with the COMMIT), where
    psycopg wrote once per statement, waking PostgreSQL's backend each time. Counted on the
    socket itself: libpq's own sync wrote the buffer out as well (a BEGIN alone, then the flush
    request alone), which counting psycopg's writes did not see."""
    from psycopg._pipeline_base import BasePipeline

    online(bob, "b1")
    call = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                               call_type="video").call
    fd = connection.connection.pgconn.socket
    before = _data_segments_sent(fd)
    if before is None:
        pytest.skip("counts TCP segments: needs PostgreSQL over TCP on Linux")
    per_statement = []
    communicate = BasePipeline._communicate_gen

    def counted_communicate(self):
        per_statement.append(self)
        return communicate(self)
    monkeypatch.setattr(BasePipeline, "_communicate_gen", counted_communicate)
    services.call_mark_delivered(call_id=call.call_id, device_id="b1")
    assert _data_segments_sent(fd) - before == 2 and per_statement == []
    call.refresh_from_db()
    assert call.delivered_at is not None


@combined_writes
def test_without_libpqs_queued_sync_a_transaction_still_commits(alice, bob, monkeypatch):
    """Where PQsendPipelineSync is not at hand (a libpq before 17, or not found for sure), the
    sync is psycopg's own, which writes the buffer out: more writes, the same outcome."""
    from psycopg import pq

    from calls import rows

    if pq.version() >= 170000 and pq.__impl__ == "binary":
        assert rows._libpq_send_pipeline_sync() is not None  # found where psycopg's wheel has it
    online(bob, "b1")
    call = services.call_start(caller=alice, device_id="a1", callee_id=bob.pk,
                               call_type="video").call
    monkeypatch.setattr(rows, "_libpq_send_pipeline_sync", lambda: None)
    fd = connection.connection.pgconn.socket
    before = _data_segments_sent(fd)
    services.call_mark_delivered(call_id=call.call_id, device_id="b1")
    if before is not None:
        assert _data_segments_sent(fd) - before > 2
    call.refresh_from_db()
    assert call.delivered_at is not None
