"""The call services, called directly: dialing outcomes, timers, milestones, relay, credentials.

Time is passed in (``now=``) so every stamp and cost is exact. Events are read back from the
stored ``UserEvent`` rows, the outbox that the sockets deliver from.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone

from calls import devices, services
from calls.domain.machine import CallType, DialOutcome, Milestone
from calls.models import CallEvent, CallSession, Connection, Profile, UserEvent
from calls.services import ServiceError
from tests.support import make_user

pytestmark = pytest.mark.django_db

RING_MS = 5000


# ---- helpers --------------------------------------------------------------------------------


def start_time():
    """A whole second, so that every millisecond figure derived from it is exact."""
    return timezone.now().replace(microsecond=0)


def online(user, device_id: str, *, seen_at=None) -> None:
    devices.device_connect(user=user, device_id=device_id, channel_name=f"test.{device_id}")
    if seen_at is not None:
        Connection.objects.filter(channel_name=f"test.{device_id}").update(seen_at=seen_at)


def dial(caller, callee, *, now, device_id=None, call_type=CallType.video, timeout_ms=RING_MS):
    return services.call_start(caller=caller, device_id=device_id or f"{caller.username}-laptop",
                               callee_id=callee.pk, call_type=call_type, timeout_ms=timeout_ms,
                               now=now)


def summary(frame: dict) -> tuple:
    if frame["name"] == "call.state":
        return ("state", frame["state"], frame["reason"])
    if frame["name"] == "call.event":
        return ("event", frame["event"])
    return (frame["name"],)


def deliveries(user, *, after: int = 0) -> list[tuple]:
    """The user's stored events after seq ``after``: summary, then who of its devices gets it."""
    rows = UserEvent.objects.filter(user=user, seq__gt=after).order_by("seq")
    out = []
    for row in rows:
        audience = (f"only {row.only_device}" if row.only_device
                    else f"except {row.except_device}" if row.except_device else "all")
        out.append((*summary(row.frame), audience))
    return out


def seq_of(user) -> int:
    return Profile.objects.get(user=user).event_seq


def active_call_id(user):
    call = Profile.objects.get(user=user).active_call
    return call.call_id if call else None


def world() -> dict:
    """Everything a service may write, to assert that a refused one wrote nothing."""
    return {
        "calls": sorted(CallSession.objects.values_list("call_id", "phase", "end_reason",
                                                        "version")),
        "call_events": CallEvent.objects.count(),
        "user_events": UserEvent.objects.count(),
        "profiles": sorted(Profile.objects.values_list("user_id", "event_seq", "active_call_id")),
    }


def connect_call(call_id, caller, callee, *, now, callee_device="bob-phone",
                 caller_device="alice-laptop"):
    services.call_accept(user=callee, device_id=callee_device, call_id=call_id, now=now)
    for user, device in ((caller, caller_device), (callee, callee_device)):
        services.call_report_media(user=user, device_id=device, call_id=call_id,
                                   milestone=Milestone.first_remote_frame, now=now)


@pytest.fixture
def pair(alice, bob):
    online(alice, "alice-laptop")
    online(bob, "bob-phone")
    return alice, bob


# ---- dialing --------------------------------------------------------------------------------


@pytest.mark.parametrize("call_type, caller_reason, callee_reason", [
    pytest.param(CallType.video, "localVideoCall", "remoteVideoCall", id="video"),
    pytest.param(CallType.audio, "localAudioCall", "remoteAudioCall", id="audio"),
])
def test_call_to_a_free_online_user_rings_on_every_callee_device(pair, call_type, caller_reason,
                                                                 callee_reason):
    # given alice and bob online and free
    alice, bob = pair
    t0 = start_time()
    # when alice calls bob
    started = dial(alice, bob, now=t0, call_type=call_type)
    # then the call rings, occupies both and each side heard its own perspective
    call = CallSession.objects.get(pk=started.call.pk)
    assert started.outcome is DialOutcome.ring
    assert (call.phase, call.end_reason, call.deadline_at) == ("ringing", "",
                                                               t0 + timedelta(seconds=5))
    assert active_call_id(alice) == active_call_id(bob) == call.call_id
    assert deliveries(alice) == [("state", "calling", caller_reason, "all"),
                                 ("event", caller_reason, "all")]
    assert deliveries(bob) == [("state", "calling", callee_reason, "all"),
                               ("event", callee_reason, "all")]


def test_call_to_a_user_in_another_call_ends_at_once_as_busy(pair, carol):
    # given bob in a ringing call with carol
    alice, bob = pair
    online(carol, "carol-laptop")
    t0 = start_time()
    carols = dial(carol, bob, now=t0).call
    bob_seq, carol_seq = seq_of(bob), seq_of(carol)
    # when alice calls bob
    started = dial(alice, bob, now=t0 + timedelta(seconds=1))
    # then alice's call is recorded, ended busy; only alice hears of it; carol's call goes on
    call = CallSession.objects.get(pk=started.call.pk)
    assert started.outcome is DialOutcome.busy
    assert (call.phase, call.end_reason, call.ended_at) == ("ended", "busy",
                                                            t0 + timedelta(seconds=1))
    assert deliveries(alice) == [("state", "prepared", "remoteCallBusy", "all"),
                                 ("event", "remoteCallBusy", "all")]
    assert (seq_of(bob), seq_of(carol)) == (bob_seq, carol_seq)
    assert active_call_id(alice) is None
    assert active_call_id(bob) == active_call_id(carol) == carols.call_id
    assert CallSession.objects.get(pk=carols.pk).phase == "ringing"


@pytest.mark.parametrize("presence, outcome, alice_hears", [
    pytest.param("no connection", DialOutcome.offline,
                 [("state", "prepared", "remoteOffline", "all"), ("event", "remoteOffline", "all")],
                 id="no-connection-is-offline"),
    pytest.param("silent for 3 heartbeats and 1 ms", DialOutcome.offline,
                 [("state", "prepared", "remoteOffline", "all"), ("event", "remoteOffline", "all")],
                 id="stale-connection-is-offline"),
    pytest.param("silent for exactly 3 heartbeats", DialOutcome.ring,
                 [("state", "calling", "localVideoCall", "all"), ("event", "localVideoCall", "all")],
                 id="connection-at-the-limit-is-online"),
])
def test_call_to_a_user_without_a_live_device(alice, bob, presence, outcome, alice_hears):
    # given bob with no connection, or one whose heartbeat is old
    online(alice, "alice-laptop")
    t0 = start_time()
    silence = timedelta(seconds=3 * django_settings.DUET_HEARTBEAT_S)
    if presence == "silent for 3 heartbeats and 1 ms":
        online(bob, "bob-phone", seen_at=t0 - silence - timedelta(milliseconds=1))
    elif presence == "silent for exactly 3 heartbeats":
        online(bob, "bob-phone", seen_at=t0 - silence)
    # when alice calls bob
    started = dial(alice, bob, now=t0)
    # then an offline bob ends the call at once and hears nothing; a live one rings
    call = CallSession.objects.get(pk=started.call.pk)
    assert started.outcome is outcome
    assert deliveries(alice) == alice_hears
    if outcome is DialOutcome.offline:
        assert (call.phase, call.end_reason, call.ended_at) == ("ended", "offline", t0)
        assert seq_of(bob) == 0
        assert active_call_id(alice) is active_call_id(bob) is None
    else:
        assert call.phase == "ringing"


def test_calling_the_same_callee_again_while_it_rings_replaces_the_call(pair):
    # given alice's call to bob ringing
    alice, bob = pair
    t0 = start_time()
    first = dial(alice, bob, now=t0).call
    # when alice calls bob again
    second = dial(alice, bob, now=t0 + timedelta(seconds=1))
    # then the first ends recalled for both, and the new one rings and occupies both
    first.refresh_from_db()
    assert second.outcome is DialOutcome.recall
    assert (first.phase, first.end_reason) == ("ended", "recalled")
    assert CallSession.objects.get(pk=second.call.pk).phase == "ringing"
    assert active_call_id(alice) == active_call_id(bob) == second.call.call_id
    assert deliveries(alice, after=2) == [("state", "prepared", "cancelByCallerRecall", "all"),
                                          ("state", "calling", "localVideoCall", "all"),
                                          ("event", "localVideoCall", "all")]
    assert deliveries(bob, after=2) == [("state", "prepared", "cancelByCallerRecall", "all"),
                                        ("state", "calling", "remoteVideoCall", "all"),
                                        ("event", "remoteVideoCall", "all")]


@pytest.mark.parametrize("callee, code", [
    pytest.param("self", "self_call", id="self-call"),
    pytest.param("nobody", "not_found", id="unknown-user"),
    pytest.param("inactive", "not_found", id="inactive-user"),
])
def test_refused_dial_changes_nothing(pair, callee, code):
    # given alice in a ringing call with bob
    alice, bob = pair
    t0 = start_time()
    dial(alice, bob, now=t0)
    before = world()
    callee_id = {"self": alice.pk, "nobody": 999_999}.get(callee)
    if callee == "inactive":
        ghost = make_user("ghost")
        ghost.is_active = False
        ghost.save(update_fields=["is_active"])
        before = world()
        callee_id = ghost.pk
    # when alice dials the refused callee
    with pytest.raises(ServiceError) as refused:
        services.call_start(caller=alice, device_id="alice-laptop", callee_id=callee_id,
                            call_type=CallType.video, now=t0 + timedelta(seconds=1))
    # then it is refused with the code, and nothing was written
    assert refused.value.code == code
    assert world() == before


@pytest.mark.parametrize("action, actor, call_id, code", [
    pytest.param("cancel", "alice", "no-such-call", "not_found", id="cancel-unknown-call"),
    pytest.param("accept", "bob", "no-such-call", "not_found", id="accept-unknown-call"),
    pytest.param("accept", "carol", None, "forbidden", id="accept-by-a-stranger"),
    pytest.param("cancel", "bob", None, "forbidden", id="cancel-by-the-callee"),
    pytest.param("hangup", "alice", None, "state_mismatch", id="hangup-while-ringing"),
])
def test_refused_intent_changes_nothing(pair, carol, action, actor, call_id, code):
    # given alice's call to bob ringing
    alice, bob = pair
    users = {"alice": alice, "bob": bob, "carol": carol}
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    before = world()
    # when the intent is refused
    with pytest.raises(ServiceError) as refused:
        getattr(services, f"call_{action}")(user=users[actor], device_id=f"{actor}-device",
                                            call_id=call_id or call.call_id,
                                            now=t0 + timedelta(seconds=1))
    # then with its code, and nothing was written
    assert refused.value.code == code
    assert world() == before


# ---- the ring timer -------------------------------------------------------------------------


def queued_ring_sweeps() -> list[str]:
    """ETAs of the ring sweep tasks waiting in the broker's queue (Redis), in queue order."""
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    try:
        messages = [json.loads(raw) for raw in
                    client.lrange(django_settings.CELERY_TASK_DEFAULT_QUEUE, 0, -1)]
    finally:
        client.close()
    return sorted(message["headers"]["eta"] for message in messages
                  if message["headers"]["task"] == "calls.tasks.ring_sweep_task")


def drop_ring_sweeps() -> None:
    """Remove the ring sweeps from the shared queue, so no worker ever runs them."""
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    try:
        for raw in client.lrange(django_settings.CELERY_TASK_DEFAULT_QUEUE, 0, -1):
            if json.loads(raw)["headers"]["task"] == "calls.tasks.ring_sweep_task":
                client.lrem(django_settings.CELERY_TASK_DEFAULT_QUEUE, 0, raw)
    finally:
        client.close()


requires_redis_broker = pytest.mark.skipif(
    not django_settings.CELERY_BROKER_URL.startswith("redis"),
    reason="reads the timer task from the Redis broker queue; run through scripts/testenv.py")


@requires_redis_broker
def test_dial_schedules_the_ring_timer_at_the_deadline_after_commit(
        pair, django_capture_on_commit_callbacks):
    # given alice and bob online
    alice, bob = pair
    t0 = start_time()
    # when alice calls bob and the transaction commits
    with django_capture_on_commit_callbacks(execute=True):
        dial(alice, bob, now=t0)
    # then one sweep waits in the broker for the deadline (t0 is a whole second: a slot's end)
    try:
        assert queued_ring_sweeps() == [(t0 + timedelta(seconds=5)).isoformat()]
    finally:
        drop_ring_sweeps()


@requires_redis_broker
def test_calls_due_in_one_slot_share_one_sweep(settings, pair, carol, dave,
                                               django_capture_on_commit_callbacks):
    # given 250 ms slots and three pairs of users online
    settings.DUET_RING_TIMER_SLOT_MS = 250
    alice, bob = pair
    erin, frank = make_user("erin"), make_user("frank")
    for user in (carol, dave, erin, frank):
        online(user, f"{user.username}-laptop")
    t0 = start_time()
    # when three 5 s calls are placed whose deadlines fall in the slots ending at 5.25 and 5.5 s
    with django_capture_on_commit_callbacks(execute=True):
        dial(alice, bob, now=t0 + timedelta(milliseconds=10))
        dial(carol, dave, now=t0 + timedelta(milliseconds=250))
        dial(erin, frank, now=t0 + timedelta(milliseconds=251))
    # then the first two share the sweep at the end of their slot, the third has its own
    try:
        assert queued_ring_sweeps() == [(t0 + timedelta(milliseconds=ms)).isoformat()
                                        for ms in (5250, 5500)]
    finally:
        drop_ring_sweeps()


@requires_redis_broker
def test_the_dial_publishes_its_events_before_it_schedules_the_timer_and_presence(
        pair, monkeypatch, django_capture_on_commit_callbacks):
    # given the real publish, ring-timer and presence functions, each noting when it ran
    from calls import events

    alice, bob = pair
    order = []
    for module, name in ((events, "publish"), (services, "arm_ring_timer"),
                         (devices, "presence_publish")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: (
            order.append(_name), _real(*a, **k))[1])
    # when alice calls bob and the transaction commits
    with django_capture_on_commit_callbacks(execute=True):
        call = dial(alice, bob, now=start_time()).call
    # then the invite went out first: the broker and presence work never delays it
    try:
        assert order[0] == "publish"
        assert sorted(order[1:]) == ["arm_ring_timer", "presence_publish"]
    finally:
        drop_ring_sweeps()


@requires_redis_broker
def test_ring_timer_fired_early_rearms_and_changes_nothing_else(
        pair, django_capture_on_commit_callbacks):
    # given a ringing call whose timer was already taken off the queue
    alice, bob = pair
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    seqs = (seq_of(alice), seq_of(bob))
    # when the timer fires a second before the deadline
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        returned = services.call_timeout(call_id=call.call_id, now=t0 + timedelta(seconds=4))
    # then the call still rings, nobody hears anything, and the timer is armed again
    try:
        call.refresh_from_db()
        assert (returned.phase, call.phase, call.ended_at) == ("ringing", "ringing", None)
        assert (seq_of(alice), seq_of(bob)) == seqs
        assert len(callbacks) == 1
        assert queued_ring_sweeps() == [(t0 + timedelta(seconds=5)).isoformat()]
    finally:
        drop_ring_sweeps()


def test_ring_timer_fired_less_than_a_millisecond_early_does_not_end_the_call(pair):
    # given a call whose deadline falls in the middle of a millisecond
    alice, bob = pair
    t0 = start_time().replace(microsecond=123_900)
    call = dial(alice, bob, now=t0).call
    # when the timer fires 0.5 ms before the deadline
    services.call_timeout(call_id=call.call_id, now=call.deadline_at - timedelta(microseconds=500))
    # then the call still rings: it must never end before its deadline
    call.refresh_from_db()
    assert (call.phase, call.ended_at) == ("ringing", None)


@pytest.mark.parametrize("accepted", [
    pytest.param(False, id="ringing"),
    pytest.param(True, id="accepted-not-connected"),
])
def test_ring_timer_at_the_deadline_ends_the_call(pair, accepted):
    # given a call still not connected at its deadline
    alice, bob = pair
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    if accepted:
        services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id,
                             now=t0 + timedelta(seconds=1))
    alice_seq, bob_seq = seq_of(alice), seq_of(bob)
    deadline = t0 + timedelta(seconds=5)
    # when the timer fires at the deadline
    services.call_timeout(call_id=call.call_id, now=deadline)
    # then the call ends with timeout, caller callingTimeout, callee remoteCallingTimeout
    call.refresh_from_db()
    bob_audience = "only bob-phone" if accepted else "all"
    assert (call.phase, call.end_reason, call.ended_by, call.ended_at) == (
        "ended", "timeout", "", deadline)
    assert deliveries(alice, after=alice_seq) == [("state", "prepared", "callingTimeout", "all"),
                                                  ("event", "callingTimeout", "all")]
    assert deliveries(bob, after=bob_seq) == [
        ("state", "prepared", "remoteCallingTimeout", bob_audience),
        ("event", "remoteCallingTimeout", bob_audience)]
    assert active_call_id(alice) is active_call_id(bob) is None


@pytest.mark.parametrize("settled_by", [
    pytest.param("timeout", id="fired-twice"),
    pytest.param("cancel", id="after-cancel"),
    pytest.param("connected", id="after-connected"),
])
def test_ring_timer_fired_late_changes_nothing(pair, settled_by, django_assert_num_queries):
    # given a call settled before its timer fires
    alice, bob = pair
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    if settled_by == "timeout":
        services.call_timeout(call_id=call.call_id, now=t0 + timedelta(seconds=5))
    elif settled_by == "cancel":
        services.call_cancel(user=alice, device_id="alice-laptop", call_id=call.call_id,
                             now=t0 + timedelta(seconds=1))
    else:
        connect_call(call.call_id, alice, bob, now=t0 + timedelta(seconds=1))
    before = world()
    # when the timer fires late
    with django_assert_num_queries(1):  # one read, no lock, no transaction
        returned = services.call_timeout(call_id=call.call_id, now=t0 + timedelta(seconds=6))
    # then nothing changes and nothing is recorded
    assert returned.phase == {"connected": "connected"}.get(settled_by, "ended")
    assert world() == before


# ---- media milestones and costs -------------------------------------------------------------


@pytest.mark.parametrize("milestone, field", [
    pytest.param(Milestone.joined, "joined_at", id="joined"),
    pytest.param(Milestone.published, "published_at", id="published"),
    pytest.param(Milestone.first_remote_frame, "first_frame_at", id="first-remote-frame"),
])
@pytest.mark.parametrize("side", ["caller", "callee"])
def test_media_milestone_stamps_the_call_once(pair, milestone, field, side):
    # given an accepted call
    alice, bob = pair
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id,
                         now=t0 + timedelta(seconds=1))
    user, device = (alice, "alice-laptop") if side == "caller" else (bob, "bob-phone")
    other = "callee" if side == "caller" else "caller"
    services.call_report_media(user=user, device_id=device, call_id=call.call_id,
                               milestone=milestone, now=t0 + timedelta(seconds=2))
    before = world()
    # when the side reports the milestone again
    services.call_report_media(user=user, device_id=device, call_id=call.call_id,
                               milestone=milestone, now=t0 + timedelta(seconds=3))
    # then the first report's time stays stamped, for that side only, and the repeat wrote nothing
    call.refresh_from_db()
    assert getattr(call, f"{side}_{field}") == t0 + timedelta(seconds=2)
    assert getattr(call, f"{other}_{field}") is None
    assert list(CallEvent.objects.filter(call=call, kind="media").values_list(
        "actor_id", "payload")) == [(user.pk, {"milestone": milestone.value})]
    assert world() == before


def test_client_costs_merge_per_side_and_travel_in_the_connected_event(pair):
    # given an accepted call
    alice, bob = pair
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id,
                         now=t0 + timedelta(seconds=1))
    alice_seq, bob_seq = seq_of(alice), seq_of(bob)
    # when each side reports its cost nodes over two milestones, the callee's frame last
    reports = [
        (alice, "alice-laptop", Milestone.joined, {"join": 120, "token": 30}, 2),
        (bob, "bob-phone", Milestone.joined, {"join": 90}, 2),
        (alice, "alice-laptop", Milestone.first_remote_frame, {"first_frame": 400, "join": 125}, 3),
        (bob, "bob-phone", Milestone.first_remote_frame, {"first_frame": 380}, 4),
    ]
    for user, device, milestone, costs, second in reports:
        services.call_report_media(user=user, device_id=device, call_id=call.call_id,
                                   milestone=milestone, costs=costs,
                                   now=t0 + timedelta(seconds=second))
    # then the costs merged per side (a later node wins) and the last connected event carries
    # them beside the server's own timings
    call.refresh_from_db()
    client = {"caller": {"join": 125, "token": 30, "first_frame": 400},
              "callee": {"join": 90, "first_frame": 380}}
    assert call.costs == client
    assert deliveries(alice, after=alice_seq) == [
        ("state", "connected", "recvRemoteFirstFrame", "all")]
    assert deliveries(bob, after=bob_seq) == [
        ("state", "connected", "recvRemoteFirstFrame", "only bob-phone")]
    bob_connected = UserEvent.objects.get(user=bob, seq=bob_seq + 1).frame
    assert bob_connected["info"]["costs"] == {
        "delivered": 1000, "accepted": 1000, "caller_joined": 2000, "callee_joined": 2000,
        "caller_first_frame": 3000, "callee_first_frame": 4000, "caller_connected": 3000,
        "callee_connected": 4000, "connected": 4000, "client": client}
    assert call.phase == "connected"


# ---- a device that lost its media connections (a reloaded page) -----------------------------


def report_frame(user, device_id: str, call_id: str, *, now) -> None:
    services.call_report_media(user=user, device_id=device_id, call_id=call_id,
                               milestone=Milestone.first_remote_frame, now=now)


@pytest.mark.parametrize("side", ["caller", "callee"])
def test_a_media_reset_forgets_the_devices_frame_until_its_new_page_sees_one(pair, side):
    # given both sides' devices saw a remote frame while the call rang
    alice, bob = pair
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    report_frame(alice, "alice-laptop", call.call_id, now=t0 + timedelta(seconds=1))
    report_frame(bob, "bob-phone", call.call_id, now=t0 + timedelta(seconds=1))
    user, device = (alice, "alice-laptop") if side == "caller" else (bob, "bob-phone")
    seqs = (seq_of(alice), seq_of(bob))
    # when that side's page is reloaded: its hello says media_reset
    services.call_media_reset(user=user, device_id=device, now=t0 + timedelta(seconds=2))
    # then its frame no longer counts; the timeline says why, and nobody is told anything
    call.refresh_from_db()
    assert (call.caller_has_frame, call.callee_frame_devices) == (
        (False, ["bob-phone"]) if side == "caller" else (True, []))
    assert list(CallEvent.objects.filter(call=call, kind="media_reset").values_list(
        "actor_id", "device_id")) == [(user.pk, device)]
    assert (seq_of(alice), seq_of(bob)) == seqs
    # when bob accepts
    services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id,
                         now=t0 + timedelta(seconds=3))
    # then only the other side is connected at the accept
    call.refresh_from_db()
    assert (call.phase, call.caller_connected, call.callee_connected) == (
        "accepted", side != "caller", side != "callee")
    # when the reloaded page sees its first frame
    report_frame(user, device, call.call_id, now=t0 + timedelta(seconds=4))
    # then that frame connects its side, and the call
    call.refresh_from_db()
    connected = UserEvent.objects.filter(user=user, frame__state="connected").get()
    assert (connected.frame["reason"], call.phase) == ("recvRemoteFirstFrame", "connected")
    assert call.connected_at == t0 + timedelta(seconds=4)


def no_live_call(alice, bob, t0):
    return alice, "alice-laptop"


def dialed_without_waiting_for_a_frame(alice, bob, t0):
    services.call_start(caller=alice, device_id="alice-laptop", callee_id=bob.pk,
                        call_type=CallType.video, wait_first_frame=False, now=t0)
    return alice, "alice-laptop"


def frame_from_a_device_that_did_not_dial(alice, bob, t0):
    call = dial(alice, bob, now=t0).call
    report_frame(alice, "alice-laptop", call.call_id, now=t0)
    return alice, "alice-phone"


def callee_device_already_connected(alice, bob, t0):
    call = dial(alice, bob, now=t0).call
    report_frame(bob, "bob-phone", call.call_id, now=t0)
    services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id, now=t0)
    return bob, "bob-phone"


def call_connected(alice, bob, t0):
    call = dial(alice, bob, now=t0).call
    connect_call(call.call_id, alice, bob, now=t0)
    return alice, "alice-laptop"


@pytest.mark.parametrize("given", [
    no_live_call, dialed_without_waiting_for_a_frame, frame_from_a_device_that_did_not_dial,
    callee_device_already_connected, call_connected,
], ids=lambda given: given.__name__.replace("_", "-"))
def test_a_media_reset_with_no_frame_to_forget_writes_nothing(pair, given):
    # given
    alice, bob = pair
    t0 = start_time()
    user, device = given(alice, bob, t0)
    before = world()
    calls = list(CallSession.objects.values_list("caller_has_frame", "callee_frame_devices",
                                                 "caller_connected", "callee_connected"))
    # when
    services.call_media_reset(user=user, device_id=device, now=t0 + timedelta(seconds=1))
    # then
    assert world() == before
    assert list(CallSession.objects.values_list("caller_has_frame", "callee_frame_devices",
                                                "caller_connected", "callee_connected")) == calls


# ---- signal relay ---------------------------------------------------------------------------


@pytest.mark.parametrize("sender, accepted, receiver, audience", [
    pytest.param("alice", True, "bob", "only bob-phone", id="caller-to-the-answering-device"),
    pytest.param("bob", True, "alice", "only alice-laptop", id="callee-to-the-calling-device"),
    pytest.param("alice", False, "bob", "all", id="caller-to-every-ringing-device"),
])
def test_signal_is_relayed_to_the_peer_device(pair, sender, accepted, receiver, audience):
    # given bob on two devices, in a call with alice (answered on his phone or still ringing)
    alice, bob = pair
    online(bob, "bob-tablet")
    users = {"alice": (alice, "alice-laptop"), "bob": (bob, "bob-phone")}
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    if accepted:
        services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id,
                             now=t0 + timedelta(seconds=1))
    before = {name: seq_of(user) for name, (user, _) in users.items()}
    user, device = users[sender]
    payload = {"sdp": "v=0", "kind": "offer"}
    # when the sender relays a payload
    services.call_relay_signal(user=user, device_id=device, call_id=call.call_id,
                               payload=payload, now=t0 + timedelta(seconds=2))
    # then only the peer gets it, addressed to its device(s), with the payload untouched
    target, _ = users[receiver]
    assert deliveries(target, after=before[receiver]) == [("call.signal", audience)]
    frame = UserEvent.objects.get(user=target, seq=before[receiver] + 1).frame
    assert frame == {"type": "event", "seq": before[receiver] + 1, "name": "call.signal",
                     "call_id": call.call_id, "from_device": device, "payload": payload}
    assert seq_of(user) == before[sender]


@pytest.mark.parametrize("sender, settle, code", [
    pytest.param("carol", None, "forbidden", id="stranger"),
    pytest.param("alice", "hangup", "state_mismatch", id="ended-call"),
    pytest.param("alice", "unknown", "not_found", id="unknown-call"),
])
def test_signal_relay_is_refused(pair, carol, sender, settle, code):
    # given an accepted call between alice and bob (then ended, or not)
    alice, bob = pair
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    services.call_accept(user=bob, device_id="bob-phone", call_id=call.call_id,
                         now=t0 + timedelta(seconds=1))
    if settle == "hangup":
        services.call_hangup(user=alice, device_id="alice-laptop", call_id=call.call_id,
                             now=t0 + timedelta(seconds=2))
    before = world()
    user = {"alice": alice, "carol": carol}[sender]
    # when the sender relays a payload
    with pytest.raises(ServiceError) as refused:
        services.call_relay_signal(user=user, device_id=f"{sender}-laptop",
                                   call_id="no-such-call" if settle == "unknown" else call.call_id,
                                   payload={"candidate": "x"}, now=t0 + timedelta(seconds=3))
    # then it is refused and nothing is stored
    assert refused.value.code == code
    assert world() == before


# ---- media credentials ----------------------------------------------------------------------


def test_media_credentials_are_webrtc_by_default(pair, settings):
    # given no Agora configuration
    settings.AGORA_APP_ID = settings.AGORA_APP_CERTIFICATE = ""
    settings.DUET_ICE_SERVERS = [{"urls": "stun:stun.example.org:3478"}]
    alice, bob = pair
    t0 = start_time()
    # when a call is placed, accepted and its credentials renewed
    started = dial(alice, bob, now=t0)
    accepted = services.call_accept(user=bob, device_id="bob-phone",
                                    call_id=started.call.call_id, now=t0 + timedelta(seconds=1))
    renewed = services.call_media_credentials(user=alice, call_id=started.call.call_id,
                                              now=t0 + timedelta(seconds=2))
    # then every device gets the WebRTC engine with the ICE servers
    webrtc = {"engine": "webrtc", "ice_servers": [{"urls": "stun:stun.example.org:3478"}]}
    assert started.media == accepted["media"] == renewed["media"] == webrtc
    assert accepted["channel"] == started.call.channel == f"duet-{started.call.call_id}"


def test_media_credentials_are_agora_tokens_when_configured(pair, settings):
    # given an Agora app id and certificate
    settings.AGORA_APP_ID = "0123456789abcdef0123456789abcdef"
    settings.AGORA_APP_CERTIFICATE = "fedcba9876543210fedcba9876543210"
    settings.AGORA_TOKEN_TTL_S = 600
    alice, bob = pair
    t0 = start_time()
    # when a call is placed, accepted and its credentials renewed
    started = dial(alice, bob, now=t0)
    accepted = services.call_accept(user=bob, device_id="bob-phone",
                                    call_id=started.call.call_id, now=t0 + timedelta(seconds=1))
    renewed = services.call_media_credentials(user=alice, call_id=started.call.call_id,
                                              now=t0 + timedelta(seconds=2))
    # then each gets an Agora token for the call's channel, its own uid and the TTL
    channel = started.call.channel
    for media, user, issued in ((started.media, alice, t0),
                                (accepted["media"], bob, t0 + timedelta(seconds=1)),
                                (renewed["media"], alice, t0 + timedelta(seconds=2))):
        token = media.pop("token")
        assert token.startswith("006")
        assert media == {"engine": "agora", "app_id": "0123456789abcdef0123456789abcdef",
                         "channel": channel, "uid": user.pk,
                         "expires_at_ms": int((issued + timedelta(seconds=600)).timestamp()) * 1000}


def test_media_credentials_are_refused_for_an_ended_call_or_a_stranger(pair, carol):
    # given a call that alice cancelled
    alice, bob = pair
    t0 = start_time()
    call = dial(alice, bob, now=t0).call
    services.call_cancel(user=alice, device_id="alice-laptop", call_id=call.call_id,
                         now=t0 + timedelta(seconds=1))
    # when alice or carol ask for credentials
    with pytest.raises(ServiceError) as ended:
        services.call_media_credentials(user=alice, call_id=call.call_id)
    with pytest.raises(ServiceError) as stranger:
        services.call_media_credentials(user=carol, call_id=call.call_id)
    # then both are refused
    assert (ended.value.code, stranger.value.code) == ("state_mismatch", "forbidden")


# ---- the sweeper ----------------------------------------------------------------------------


def test_sweeper_ends_overdue_ringing_and_accepted_calls_and_leaves_the_rest(db):
    # given five pairs of users with calls in every situation, at t0
    t0 = start_time()
    users = [make_user(f"user{index}") for index in range(10)]
    for user in users:
        online(user, f"{user.username}-device")
    long_ago = t0 - timedelta(seconds=20)

    def place(index, now):
        caller, callee = users[2 * index], users[2 * index + 1]
        return dial(caller, callee, now=now, device_id=f"{caller.username}-device").call, callee

    overdue_ringing, _ = place(0, long_ago)
    overdue_accepted, callee = place(1, long_ago)
    services.call_accept(user=callee, device_id=f"{callee.username}-device",
                         call_id=overdue_accepted.call_id, now=long_ago + timedelta(seconds=1))
    due_later, _ = place(2, t0 - timedelta(seconds=1))
    connected, callee = place(3, long_ago)
    connect_call(connected.call_id, users[6], callee, now=long_ago + timedelta(seconds=1),
                 caller_device="user6-device", callee_device="user7-device")
    cancelled, _ = place(4, long_ago)
    services.call_cancel(user=users[8], device_id="user8-device", call_id=cancelled.call_id,
                         now=long_ago + timedelta(seconds=1))
    # when the sweeper runs at t0
    swept = services.calls_sweep_overdue(now=t0)
    # then the two overdue calls ended by timeout at t0; the others are as they were
    assert swept == 2
    phases = dict(CallSession.objects.values_list("call_id", "phase"))
    reasons = dict(CallSession.objects.values_list("call_id", "end_reason"))
    assert [(phases[c.call_id], reasons[c.call_id]) for c in (
        overdue_ringing, overdue_accepted, due_later, connected, cancelled)] == [
        ("ended", "timeout"), ("ended", "timeout"), ("ringing", ""), ("connected", ""),
        ("ended", "cancelled")]
    assert CallSession.objects.get(pk=overdue_ringing.pk).ended_at == t0
    assert [active_call_id(user) for user in users] == [
        None, None, None, None, due_later.call_id, due_later.call_id,
        connected.call_id, connected.call_id, None, None]


def test_sweeper_ends_overdue_calls_past_one_batch(monkeypatch):
    # given five overdue ringing calls and a sweep that reads two at a time
    monkeypatch.setattr(services, "SWEEP_BATCH", 2)
    users = [make_user(f"user{index}") for index in range(10)]
    for user in users:
        online(user, f"{user.username}-device")
    t0 = start_time()
    calls = [dial(users[2 * index], users[2 * index + 1], now=t0 - timedelta(seconds=20),
                  device_id=f"user{2 * index}-device").call for index in range(5)]
    # when the sweeper runs
    swept = services.calls_sweep_overdue(now=t0)
    # then every one of them ended by timeout
    assert swept == 5
    assert sorted(CallSession.objects.filter(pk__in=[c.pk for c in calls])
                  .values_list("end_reason", flat=True)) == ["timeout"] * 5
