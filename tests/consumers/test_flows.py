"""Every call flow over the socket, with the exact call.state / call.event sequence each side gets.

Runs against the configured channel layer (channels_redis under `make test`).
"""

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async

from calls import services
from calls.models import CallSession, Profile
from tests.support import summary

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["event-frames", "event-batches"])
def opened(request, opened):
    """Every flow twice: devices that take one frame per event (the spec's) and devices that said
    hello with ``event_batches`` (events frames, a frame's own events in its reply)."""
    batches = request.param == "event-batches"

    async def open_device(user, **options):
        options.setdefault("batches", batches)
        return await opened(user, **options)

    return open_device

CALLING_VIDEO = [("state", "calling", "localVideoCall"), ("event", "localVideoCall")]
RINGING_VIDEO = [("state", "calling", "remoteVideoCall"), ("event", "remoteVideoCall")]
RECEIPT = [("event", "remoteUserRecvCall")]


@database_sync_to_async
def call_row(call_id):
    return CallSession.objects.get(call_id=call_id)


@database_sync_to_async
def active_call_ids(*users):
    return [Profile.objects.get(user=user).active_call_id for user in users]


async def ring(a, b, callee, call_type="video"):
    """alice calls bob; both see the call ring and alice gets the delivery receipt."""
    started = await a.ok("call", to=callee.pk, call_type=call_type)
    assert started["outcome"] == "ring"
    kind = "Video" if call_type == "video" else "Audio"
    assert summary(await a.take_events(2)) == [("state", "calling", f"local{kind}Call"),
                                              ("event", f"local{kind}Call")]
    assert summary(await b.take_events(2)) == [("state", "calling", f"remote{kind}Call"),
                                              ("event", f"remote{kind}Call")]
    assert summary(await a.take_events(1)) == RECEIPT
    return started["call_id"]


async def connect(a, b, call_id):
    """bob accepts; both report their first remote frame; both are connected."""
    accepted = await b.ok("accept", call_id=call_id)
    assert accepted["channel"] == f"duet-{call_id}"
    assert accepted["media"] == {"engine": "webrtc", "ice_servers": []}
    assert summary(await b.take_events(2)) == [("state", "connecting", "localAccepted"),
                                              ("event", "localAccepted")]
    assert summary(await a.take_events(2)) == [("state", "connecting", "remoteAccepted"),
                                              ("event", "remoteAccepted")]
    await a.ok("media", call_id=call_id, milestone="first_remote_frame")
    assert summary(await a.take_events(1)) == [("state", "connected", "recvRemoteFirstFrame")]
    await b.ok("media", call_id=call_id, milestone="first_remote_frame")
    assert summary(await b.take_events(1)) == [("state", "connected", "recvRemoteFirstFrame")]


@pytest.mark.parametrize("hanging_up", ["caller", "callee"])
async def test_video_call_connects_and_either_side_hangs_up(opened, alice, bob, hanging_up):
    a, b = await opened(alice), await opened(bob)
    call_id = await ring(a, b, bob)
    await connect(a, b, call_id)
    record = await call_row(call_id)
    assert (record.phase, record.caller_connected, record.callee_connected) == ("connected", True, True)

    actor, peer = (a, b) if hanging_up == "caller" else (b, a)
    await actor.ok("hangup", call_id=call_id, reason="bye")
    local = await actor.take_events(2)
    remote = await peer.take_events(2)
    assert summary(local) == [("state", "prepared", "localHangup"), ("event", "localHangup")]
    assert summary(remote) == [("state", "prepared", "remoteHangup"), ("event", "remoteHangup")]
    assert remote[0]["event_reason"] == "bye"
    record = await call_row(call_id)
    assert (record.phase, record.end_reason, record.ended_by) == ("ended", "hangup", hanging_up)
    assert await active_call_ids(alice, bob) == [None, None]
    await a.assert_silent()
    await b.assert_silent()


async def test_connected_event_carries_info_and_costs(opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    call_id = await ring(a, b, bob)
    await b.ok("media", call_id=call_id, milestone="first_remote_frame",
               costs={"recvCall": 12, "firstFrame": 80})
    await b.ok("accept", call_id=call_id, costs={"accept": 5})
    # bob's frame came before his accept: he is connected at accept, with that reason
    assert summary(await b.take_events(3)) == [("state", "connecting", "localAccepted"),
                                              ("event", "localAccepted"),
                                              ("state", "connected", "localAccepted")]
    await a.take_events(2)
    await a.ok("media", call_id=call_id, milestone="first_remote_frame", costs={"firstFrame": 90})
    connected = await a.event("call.state", state="connected")
    info = connected["info"]
    assert info["caller"] == {"id": alice.pk, "username": "alice", "display_name": "Alice"}
    assert info["callee"] == {"id": bob.pk, "username": "bob", "display_name": "Bob"}
    assert (info["call_type"], info["channel"], info["active_device"]) == (
        "video", f"duet-{call_id}", b.device_id)
    assert info["costs"]["client"] == {"callee": {"recvCall": 12, "firstFrame": 80, "accept": 5},
                                       "caller": {"firstFrame": 90}}
    assert {"delivered", "accepted", "connected"} <= set(info["costs"])


async def test_an_accept_can_bring_the_first_frame_that_came_while_ringing(opened, alice, bob):
    """The fast-first-frame flow in one frame: bob's device shows alice's picture before he
    accepts, and the accept says so instead of a media report of its own."""
    a, b = await opened(alice), await opened(bob)
    call_id = await ring(a, b, bob)
    await b.ok("accept", call_id=call_id, first_remote_frame=True,
               costs={"firstFrame": 80, "accept": 95})
    assert summary(await b.take_events(3)) == [("state", "connecting", "localAccepted"),
                                              ("event", "localAccepted"),
                                              ("state", "connected", "localAccepted")]
    await a.take_events(2)
    await a.ok("media", call_id=call_id, milestone="first_remote_frame")
    assert (await a.event("call.state", state="connected"))["reason"] == "recvRemoteFirstFrame"
    record = await call_row(call_id)
    assert record.phase == "connected"
    # the record reads as if the report had come with the accept: same moment, same costs
    assert record.callee_first_frame_at == record.accepted_at is not None
    assert record.costs == {"callee": {"firstFrame": 80, "accept": 95}}
    kinds = await database_sync_to_async(lambda: list(
        record.events.exclude(kind="notified").order_by("id").values_list("kind", "payload")))()
    assert [kind for kind, _ in kinds] == ["dial", "delivered", "accept", "media"]
    assert kinds[2][1]["milestone"] == "first_remote_frame"
    await b.assert_silent()


async def test_an_accept_with_a_first_frame_that_is_no_boolean_is_refused(opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    call_id = await ring(a, b, bob)
    assert await b.error("accept", call_id=call_id, first_remote_frame="yes") == "invalid_message"
    record = await call_row(call_id)
    assert record.phase == "ringing" and record.accepted_at is None


async def test_a_call_that_waits_for_no_first_frame_connects_at_the_accept(opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    started = await a.ok("call", to=bob.pk, call_type="video", wait_first_frame=False)
    await a.take_events(2)
    await b.take_events(2)
    await b.ok("accept", call_id=started["call_id"], wait_first_frame=False)
    # no media report from either side: the accept alone connects both
    assert summary(await b.take_events(3)) == [("state", "connecting", "localAccepted"),
                                              ("event", "localAccepted"),
                                              ("state", "connected", "localAccepted")]
    events = summary(await a.take_events(4))
    assert events[-1] == ("state", "connected", "remoteAccepted")
    record = await call_row(started["call_id"])
    assert record.phase == "connected"
    assert record.caller_first_frame_at is None and record.callee_first_frame_at is None
    timeline = await database_sync_to_async(lambda: list(
        record.events.filter(kind__in=("dial", "accept")).order_by("id")
        .values_list("kind", "payload")))()
    assert [payload.get("wait_first_frame") for _, payload in timeline] == [False, False]


ACCEPTED_BY_BOB = [("state", "connecting", "remoteAccepted"), ("event", "remoteAccepted")]


@pytest.mark.parametrize(("media_reset", "alice_at_accept"), [
    pytest.param(True, ACCEPTED_BY_BOB, id="reloaded-page-waits-for-a-frame-of-its-own"),
    pytest.param(None, ACCEPTED_BY_BOB + [("state", "connected", "remoteAccepted")],
                 id="living-page-back-keeps-its-frame"),
])
async def test_a_caller_back_while_ringing_counts_only_frames_of_its_page(
        opened, alice, bob, media_reset, alice_at_accept):
    # given alice's tab saw bob's picture while ringing, then left and came back on the same device
    a = await opened(alice, device_id="alice-tab")
    b = await opened(bob)
    call_id = await ring(a, b, bob)
    await a.ok("media", call_id=call_id, milestone="first_remote_frame")
    await a.close()
    back = await opened(alice, device_id="alice-tab", last_seq=a.handled_seq,
                        media_reset=media_reset)
    assert summary(await b.take_events(2)) == [("event", "remoteReconnecting"),
                                              ("event", "remoteReconnected")]
    # when bob accepts
    await b.ok("accept", call_id=call_id)
    # then a reloaded page is connecting only, a living one connected by its earlier frame
    assert summary(await back.take_events(len(alice_at_accept))) == alice_at_accept
    await back.assert_silent()
    if media_reset:
        # when the reloaded page sees a frame of its own
        await back.ok("media", call_id=call_id, milestone="first_remote_frame")
        # then
        assert summary(await back.take_events(1)) == [
            ("state", "connected", "recvRemoteFirstFrame")]
    assert (await call_row(call_id)).caller_connected is True


async def test_audio_call_uses_audio_reasons(opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    call_id = await ring(a, b, bob, call_type="audio")
    await connect(a, b, call_id)
    assert (await call_row(call_id)).call_type == "audio"


async def test_callee_rejects(opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    call_id = await ring(a, b, bob)
    await b.ok("reject", call_id=call_id, reason="not now")
    assert summary(await b.take_events(2)) == [("state", "prepared", "localRejected"),
                                              ("event", "localRejected")]
    remote = await a.take_events(2)
    assert summary(remote) == [("state", "prepared", "remoteRejected"), ("event", "remoteRejected")]
    assert remote[1]["reason"] == "not now"
    record = await call_row(call_id)
    assert (record.end_reason, record.ended_by) == ("rejected", "callee")


async def test_caller_cancels(opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    call_id = await ring(a, b, bob)
    await a.ok("cancel", call_id=call_id)
    assert summary(await a.take_events(2)) == [("state", "prepared", "localCancelled"),
                                              ("event", "localCancelled")]
    assert summary(await b.take_events(2)) == [("state", "prepared", "remoteCancelled"),
                                              ("event", "remoteCancelled")]
    assert (await call_row(call_id)).end_reason == "cancelled"
    assert await active_call_ids(alice, bob) == [None, None]


async def test_busy_callee_ends_the_new_call_at_once(opened, alice, bob, carol):
    a, b, c = await opened(alice), await opened(bob), await opened(carol)
    call_id = await ring(a, b, bob)
    await connect(a, b, call_id)

    started = await c.ok("call", to=bob.pk, call_type="video")
    assert started["outcome"] == "busy"
    assert summary(await c.take_events(2)) == [("state", "prepared", "remoteCallBusy"),
                                              ("event", "remoteCallBusy")]
    busy = await call_row(started["call_id"])
    assert (busy.phase, busy.end_reason) == ("ended", "busy")
    assert (await call_row(call_id)).phase == "connected"
    await a.assert_silent()
    await b.assert_silent()


async def test_offline_callee_ends_the_call_at_once(opened, alice, dave):
    a = await opened(alice)
    started = await a.ok("call", to=dave.pk, call_type="video")
    assert started["outcome"] == "offline"
    assert summary(await a.take_events(2)) == [("state", "prepared", "remoteOffline"),
                                              ("event", "remoteOffline")]
    record = await call_row(started["call_id"])
    assert (record.phase, record.end_reason) == ("ended", "offline")
    assert await active_call_ids(alice, dave) == [None, None]


async def test_recall_replaces_the_ringing_call(opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    first = await ring(a, b, bob)
    again = await a.ok("call", to=bob.pk, call_type="video")
    assert again["outcome"] == "recall" and again["call_id"] != first
    assert summary(await a.take_events(3)) == [("state", "prepared", "cancelByCallerRecall")] + CALLING_VIDEO
    assert summary(await b.take_events(3)) == [("state", "prepared", "cancelByCallerRecall")] + RINGING_VIDEO
    assert summary(await a.take_events(1)) == RECEIPT  # bob's device got the new call
    assert (await call_row(first)).end_reason == "recalled"
    assert (await call_row(again["call_id"])).phase == "ringing"
    assert await active_call_ids(alice, bob) == [(await call_row(again["call_id"])).pk] * 2


async def test_ring_timeout_ends_call_for_both(opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    call_id = await ring(a, b, bob)
    record = await call_row(call_id)
    # the timer task's service, at the deadline (the real worker runs it in tests/tasks)
    await database_sync_to_async(services.call_timeout)(
        call_id=call_id, now=record.deadline_at + timedelta(milliseconds=1))
    assert summary(await a.take_events(2)) == [("state", "prepared", "callingTimeout"),
                                              ("event", "callingTimeout")]
    assert summary(await b.take_events(2)) == [("state", "prepared", "remoteCallingTimeout"),
                                              ("event", "remoteCallingTimeout")]
    assert (await call_row(call_id)).end_reason == "timeout"


@pytest.mark.parametrize("first", ["alice", "bob"])
async def test_glare_ends_in_one_connecting_call(opened, alice, bob, first):
    users = {"alice": alice, "bob": bob}
    devices = {"alice": await opened(alice), "bob": await opened(bob)}
    second = "bob" if first == "alice" else "alice"
    x, y = devices[first], devices[second]
    call_id = await ring(x, y, users[second])
    crossed = await y.ok("call", to=users[first].pk, call_type="video")
    assert crossed == {"call_id": call_id, "channel": f"duet-{call_id}",
                       "media": {"engine": "webrtc", "ice_servers": []}, "outcome": "glare"}
    assert summary(await y.take_events(2)) == [("state", "connecting", "localAccepted"),
                                              ("event", "localAccepted")]
    assert summary(await x.take_events(2)) == [("state", "connecting", "remoteAccepted"),
                                              ("event", "remoteAccepted")]
    assert await database_sync_to_async(CallSession.objects.count)() == 1
    assert await active_call_ids(alice, bob) == [(await call_row(call_id)).pk] * 2


async def test_every_callee_device_rings_and_the_first_accept_wins(opened, alice, bob):
    a = await opened(alice)
    b1, b2 = await opened(bob), await opened(bob)
    started = await a.ok("call", to=bob.pk, call_type="video")
    call_id = started["call_id"]
    assert summary(await b1.take_events(2)) == RINGING_VIDEO
    assert summary(await b2.take_events(2)) == RINGING_VIDEO
    await b2.ok("accept", call_id=call_id)
    assert summary(await b2.take_events(2)) == [("state", "connecting", "localAccepted"),
                                               ("event", "localAccepted")]
    assert summary(await b1.take_events(2)) == [("state", "prepared", "answeredElsewhere"),
                                               ("event", "answeredElsewhere")]
    assert await b1.error("accept", call_id=call_id) == "state_mismatch"
    assert (await call_row(call_id)).callee_device == b2.device_id
    # the hang-up reaches only the device that answered
    await a.take_events(3)
    await a.ok("hangup", call_id=call_id)
    assert summary(await b2.take_events(2)) == [("state", "prepared", "remoteHangup"),
                                               ("event", "remoteHangup")]
    await b1.assert_silent()


async def test_a_reject_from_one_device_declines_everywhere(opened, alice, bob):
    a = await opened(alice)
    b1, b2 = await opened(bob), await opened(bob)
    call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
    await b1.take_events(2)
    await b2.take_events(2)
    await b1.ok("reject", call_id=call_id)
    assert summary(await b1.take_events(2)) == [("state", "prepared", "localRejected"),
                                               ("event", "localRejected")]
    assert summary(await b2.take_events(2)) == [("state", "prepared", "localRejected"),
                                               ("event", "localRejected")]
    assert summary(await a.take_events(3)) == CALLING_VIDEO + RECEIPT  # one receipt for two devices
    assert summary(await a.take_events(2)) == [("state", "prepared", "remoteRejected"),
                                              ("event", "remoteRejected")]


async def test_the_callers_other_device_follows_the_call(opened, alice, bob):
    a1, a2 = await opened(alice), await opened(alice)
    b = await opened(bob)
    call_id = await ring(a1, b, bob)
    assert summary(await a2.take_events(3)) == CALLING_VIDEO + RECEIPT
    await connect(a1, b, call_id)
    assert summary(await a2.take_events(3)) == [("state", "connecting", "remoteAccepted"),
                                               ("event", "remoteAccepted"),
                                               ("state", "connected", "recvRemoteFirstFrame")]


async def test_signal_is_relayed_to_the_peer_device_only(opened, alice, bob, carol):
    a, b, c = await opened(alice), await opened(bob), await opened(carol)
    call_id = await ring(a, b, bob)
    await b.ok("signal", call_id=call_id, payload={"sdp": "offer"})
    relayed = await a.event("call.signal")
    assert (relayed["from_device"], relayed["payload"]) == (b.device_id, {"sdp": "offer"})
    await a.ok("signal", call_id=call_id, payload={"sdp": "answer"}, to_device=b.device_id)
    assert (await b.event("call.signal"))["payload"] == {"sdp": "answer"}
    assert await c.error("signal", call_id=call_id, payload={"x": 1}) == "forbidden"
    await c.assert_silent()
