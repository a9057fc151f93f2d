"""Every error a client can provoke: a clear error reply, and nothing changes."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from calls.models import CallEvent, CallSession, ClientFrame, Profile, UserEvent
from tests.support import Device

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def snapshot():
    """Everything a frame could change."""
    return (
        list(CallSession.objects.order_by("pk").values()),
        CallEvent.objects.count(),
        list(UserEvent.objects.order_by("pk").values_list("user_id", "seq")),
        list(Profile.objects.order_by("pk").values_list("user_id", "active_call_id", "event_seq")),
    )


@pytest.fixture
async def pair(alice, bob):
    a = await Device.open(alice)
    b = await Device.open(bob)
    yield a, b
    await a.close()
    await b.close()


async def test_unauthenticated_socket_is_closed_with_4401(db):
    from project.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/calls/",
                                         headers=[(b"origin", b"http://testserver")])
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}


async def test_foreign_origin_is_refused(alice):
    with pytest.raises(AssertionError):
        await Device.open(alice, origin=b"http://evil.example")


async def test_frames_before_hello_get_hello_required(alice):
    device = await Device.open(alice, hello=False)
    before = await snapshot()
    reply = await device.request("call", to=alice.pk + 1, call_type="video")
    assert reply["error"]["code"] == "hello_required"
    assert await snapshot() == before
    await device.close()


@pytest.mark.parametrize(("raw", "code"), [
    ("not json", "invalid_message"),
    ("[1, 2]", "invalid_message"),
    (json.dumps({"id": "x1", "type": "dance"}), "unknown_type"),
    (json.dumps({"id": "x2", "type": "call", "call_type": "video"}), "invalid_message"),
    (json.dumps({"id": "x3", "type": "call", "to": "2", "call_type": "video"}), "invalid_message"),
    (json.dumps({"id": "x4", "type": "call", "to": True, "call_type": "video"}), "invalid_message"),
    (json.dumps({"id": "x5", "type": "call", "to": 2, "call_type": "hologram"}), "invalid_message"),
    (json.dumps({"id": "x6", "type": "call", "to": 2, "call_type": "video", "timeout_ms": 10}),
     "invalid_message"),
    (json.dumps({"id": "x7", "type": "call", "to": 2, "call_type": "video",
                 "extension": {"blob": "x" * 5000}}), "invalid_message"),
    (json.dumps({"type": "cancel", "call_id": "abc"}), "invalid_message"),
    (json.dumps({"id": "x8", "type": "media", "call_id": "abc", "milestone": "dancing"}),
     "invalid_message"),
    (json.dumps({"id": "x9", "type": "hello"}), "invalid_message"),
    (json.dumps({"id": "big", "type": "signal", "call_id": "a", "payload": {"x": "y" * 17000}}),
     "too_large"),
], ids=["not-json", "not-object", "unknown-type", "missing-field", "string-for-int",
        "bool-for-int", "bad-enum", "timeout-out-of-range", "extension-too-big", "missing-id",
        "bad-milestone", "hello-without-device", "too-large"])
async def test_malformed_frames_get_an_error_and_change_nothing(pair, raw, code):
    a, b = pair
    before = await snapshot()
    await a.send_raw(raw)
    reply = await a.next_reply()
    assert reply["ok"] is False and reply["error"]["code"] == code
    assert reply["error"]["message"]
    assert await snapshot() == before
    await b.assert_silent()


@pytest.mark.parametrize("value", ["yes", 1, [True]], ids=["string", "number", "list"])
async def test_a_hello_with_a_mistyped_media_reset_is_refused_and_changes_nothing(pair, value):
    # given alice's device saw bob's picture while the call rings
    a, b = pair
    call_id = (await a.ok("call", to=b.user.pk, call_type="video"))["call_id"]
    await a.ok("media", call_id=call_id, milestone="first_remote_frame")
    await b.take_events(2)
    await a.take_events(3)
    again = await Device.open(a.user, a.device_id, hello=False)
    before = await snapshot()
    # when a new socket of that device says hello with a media_reset that is no boolean
    reply = await again.request("hello", device_id=a.device_id, last_seq=a.handled_seq,
                                media_reset=value)
    # then it is refused, the device's frame still counts, and the socket still needs a hello
    assert (reply["ok"], reply["error"]["code"]) == (False, "invalid_message")
    assert reply["error"]["message"] == "'media_reset' must be true or false"
    assert await snapshot() == before
    assert await again.error("token", call_id=call_id) == "hello_required"
    await a.assert_silent()
    await b.assert_silent()
    await again.close()


async def test_calling_an_unknown_user_is_not_found(pair):
    a, _ = pair
    before = await snapshot()
    assert await a.error("call", to=999_999, call_type="video") == "not_found"
    assert await snapshot() == before


async def test_calling_yourself_is_refused(pair, alice):
    a, _ = pair
    before = await snapshot()
    assert await a.error("call", to=alice.pk, call_type="video") == "self_call"
    assert await snapshot() == before


@pytest.mark.parametrize("frame_type", ["cancel", "accept", "reject", "hangup", "token"])
async def test_acting_on_an_unknown_call_is_not_found(pair, frame_type):
    a, _ = pair
    before = await snapshot()
    assert await a.error(frame_type, call_id="f" * 32) == "not_found"
    assert await snapshot() == before


@pytest.mark.parametrize(("frame_type", "fields"), [
    ("cancel", {}), ("accept", {}), ("reject", {}), ("hangup", {}), ("token", {}),
    ("media", {"milestone": "joined"}), ("signal", {"payload": {"sdp": "x"}}),
])
async def test_acting_on_someone_elses_call_is_forbidden(pair, carol, frame_type, fields):
    a, b = pair
    call_id = (await a.ok("call", to=b.user.pk, call_type="video"))["call_id"]
    await b.take_events(2)
    await a.take_events(3)
    c = await Device.open(carol)
    before = await snapshot()
    assert await c.error(frame_type, call_id=call_id, **fields) == "forbidden"
    assert await snapshot() == before
    await a.assert_silent()
    await b.assert_silent()
    await c.close()


@pytest.mark.parametrize(("actor", "frame_type", "code"), [
    ("caller", "accept", "forbidden"),
    ("caller", "reject", "forbidden"),
    ("callee", "cancel", "forbidden"),
    ("caller", "hangup", "state_mismatch"),
    ("callee", "hangup", "state_mismatch"),
], ids=["caller-accepts", "caller-rejects", "callee-cancels", "caller-hangs-up-ringing",
        "callee-hangs-up-ringing"])
async def test_wrong_role_or_state_on_a_ringing_call(pair, actor, frame_type, code):
    a, b = pair
    call_id = (await a.ok("call", to=b.user.pk, call_type="video"))["call_id"]
    await b.take_events(2)
    await a.take_events(3)
    before = await snapshot()
    device = a if actor == "caller" else b
    assert await device.error(frame_type, call_id=call_id) == code
    assert await snapshot() == before
    await a.assert_silent()
    await b.assert_silent()


@pytest.mark.parametrize(("frame_type", "fields"), [
    ("accept", {}), ("cancel", {}), ("reject", {}), ("hangup", {}), ("token", {}),
    ("media", {"milestone": "first_remote_frame"}), ("signal", {"payload": {}}),
])
async def test_acting_on_an_ended_call_is_a_state_mismatch(pair, frame_type, fields):
    a, b = pair
    call_id = (await a.ok("call", to=b.user.pk, call_type="video"))["call_id"]
    await a.ok("cancel", call_id=call_id)
    await b.take_events(4)
    await a.take_events(4)
    before = await snapshot()
    device = a if frame_type in ("cancel", "hangup", "token") else b
    assert await device.error(frame_type, call_id=call_id, **fields) == "state_mismatch"
    assert await snapshot() == before


async def test_a_second_call_while_in_a_call_is_refused(pair, carol):
    a, b = pair
    c = await Device.open(carol)
    await a.ok("call", to=b.user.pk, call_type="video")
    before = await snapshot()
    assert await a.error("call", to=carol.pk, call_type="audio") == "state_mismatch"
    assert await snapshot() == before
    await c.assert_silent()
    await c.close()


async def test_error_replies_are_kept_for_resent_frames(pair):
    a, _ = pair
    first = await a.request("cancel", frame_id="same-frame", call_id="f" * 32)
    again = await a.request("cancel", frame_id="same-frame", call_id="f" * 32)
    assert first == again and first["error"]["code"] == "not_found"
    assert await database_sync_to_async(ClientFrame.objects.filter(frame_id="same-frame").count)() == 1


async def test_a_flood_of_frames_is_rate_limited_and_changes_nothing(pair, monkeypatch):
    from calls import consumers

    a, b = pair
    # no refill during the test: exactly the burst allowance gets through
    monkeypatch.setattr(consumers, "FRAME_RATE_PER_S", 0.0)
    before = await snapshot()
    flood = await Device.open(a.user)
    ids = [await flood.send("token", call_id="f" * 32) for _ in range(consumers.FRAME_BURST + 5)]
    codes = [(await flood.reply(frame_id))["error"]["code"] for frame_id in ids]
    assert codes == ["not_found"] * (consumers.FRAME_BURST - 1) + ["rate_limited"] * 6
    assert await snapshot() == before
    await flood.close()


async def test_an_unexpected_failure_answers_internal_and_keeps_the_socket(pair, monkeypatch):
    from calls import consumers

    a, _ = pair

    def broken(ctx, **fields):
        raise RuntimeError("simulated defect")

    # a defect in a handler, which no client input can provoke on purpose
    monkeypatch.setitem(consumers.FRAME_HANDLERS, "token", broken)
    reply = await a.request("token", call_id="f" * 32)
    assert reply["error"]["code"] == "internal"
    assert (await a.request("cancel", call_id="f" * 32))["error"]["code"] == "not_found"
