"""``event_batches`` (docs/protocol.md): several events in one frame, and a frame's own events in
its reply, for devices that ask for it; one frame per event for every other device."""

import pytest

from calls.consumers import CallConsumer
from tests.support import summary

pytestmark = pytest.mark.django_db(transaction=True)

CALLING_VIDEO = [("state", "calling", "localVideoCall"), ("event", "localVideoCall")]
RINGING_VIDEO = [("state", "calling", "remoteVideoCall"), ("event", "remoteVideoCall")]
# Longer than the first re-send (RESEND_FIRST_S, 1 s): an unacknowledged event would be back.
PAST_FIRST_RESEND_S = 1.6


def sequenced_frames(device) -> list[dict]:
    """The frames that carried sequenced events, as they came (replies without events left out)."""
    return [frame for frame in device.frames
            if frame.get("type") == "events" or "seq" in frame or frame.get("events")]


def shape(frame: dict) -> tuple:
    """A frame as (kind, the events it carried)."""
    if frame.get("type") == "reply":
        return ("reply", summary(frame["events"]))
    if frame.get("type") == "events":
        return ("events", summary(frame["events"]))
    return ("event", summary([frame]))


async def test_a_transactions_events_come_in_one_frame_and_the_callers_ride_on_its_reply(
        opened, alice, bob):
    a = await opened(alice, batches=True)
    b = await opened(bob, batches=True)
    reply = await a.request("call", to=bob.pk, call_type="video")

    assert reply["ok"] and summary(reply["events"]) == CALLING_VIDEO
    assert summary(await b.take_events(2)) == RINGING_VIDEO
    assert summary(await a.take_events(2)) == CALLING_VIDEO
    # bob's one ack (the events frame's highest seq) is the delivery receipt
    assert summary(await a.take_events(1)) == [("event", "remoteUserRecvCall")]
    assert [shape(frame) for frame in sequenced_frames(b)] == [("events", RINGING_VIDEO)]
    assert [shape(frame) for frame in sequenced_frames(a)] == [
        ("reply", CALLING_VIDEO), ("event", [("event", "remoteUserRecvCall")])]
    # each frame's single ack stopped the re-sends of all its events
    await a.assert_silent(timeout=PAST_FIRST_RESEND_S)
    await b.assert_silent(timeout=PAST_FIRST_RESEND_S)
    assert len(a.events) == 3 and len(b.events) == 2  # no event came twice


async def test_without_event_batches_every_event_is_a_frame_and_no_reply_carries_events(
        opened, alice, bob):
    a, b = await opened(alice), await opened(bob)
    reply = await a.request("call", to=bob.pk, call_type="video")

    assert reply["ok"] and "events" not in reply
    assert summary(await b.take_events(2)) == RINGING_VIDEO
    assert summary(await a.take_events(3)) == [*CALLING_VIDEO, ("event", "remoteUserRecvCall")]
    assert [frame["type"] for frame in sequenced_frames(a) + sequenced_frames(b)] == ["event"] * 5


async def test_a_whole_cycle_takes_half_the_event_frames(opened, alice, bob):
    async def cycle(a, b):
        call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
        await b.take_events(2)  # bob's ack is the receipt alice waits for next
        await a.take_events(3)
        await b.ok("accept", call_id=call_id, first_remote_frame=True)
        await a.take_events(2)
        await a.ok("media", call_id=call_id, milestone="first_remote_frame")
        await b.take_events(3)
        await a.take_events(1)
        await a.ok("hangup", call_id=call_id)
        await a.take_events(2)
        await b.take_events(2)
        return ([shape(frame) for frame in sequenced_frames(a)],
                [shape(frame) for frame in sequenced_frames(b)])

    single = await cycle(await opened(alice), await opened(bob))
    batched = await cycle(await opened(alice, batches=True), await opened(bob, batches=True))

    assert [len(side) for side in single] == [8, 7]  # 15 events, 15 frames, 15 acks
    assert batched == (
        [("reply", CALLING_VIDEO),
         ("event", [("event", "remoteUserRecvCall")]),
         ("events", [("state", "connecting", "remoteAccepted"), ("event", "remoteAccepted")]),
         ("reply", [("state", "connected", "recvRemoteFirstFrame")]),
         ("reply", [("state", "prepared", "localHangup"), ("event", "localHangup")])],
        [("events", RINGING_VIDEO),
         ("reply", [("state", "connecting", "localAccepted"), ("event", "localAccepted"),
                    ("state", "connected", "localAccepted")]),
         ("events", [("state", "prepared", "remoteHangup"), ("event", "remoteHangup")])])


async def test_an_unacknowledged_events_frame_is_sent_again_whole(opened, alice, bob):
    a = await opened(alice, batches=True)
    b = await opened(bob, batches=True, auto_ack=False)
    await a.ok("call", to=bob.pk, call_type="video")
    first = await b._pump()
    assert shape(first) == ("events", RINGING_VIDEO)

    again = await b._pump(timeout=3.0)
    while again.get("type") != "events":
        again = await b._pump(timeout=3.0)
    assert again == first  # the same events, the same seqs, one frame
    await b.ack(first["events"][-1]["seq"])
    assert summary(await a.take_events(3)) == [*CALLING_VIDEO, ("event", "remoteUserRecvCall")]
    while not await b.communicator.receive_nothing(timeout=PAST_FIRST_RESEND_S):
        late = await b._pump()
        assert late == first  # only a re-send that was already on the wire


async def test_every_device_of_the_caller_gets_the_events_the_other_had_in_its_reply(
        opened, alice, bob):
    phone = await opened(alice, device_id="alice-phone", batches=True)
    laptop = await opened(alice, device_id="alice-laptop", batches=True)
    b = await opened(bob, batches=True)
    reply = await phone.request("call", to=bob.pk, call_type="video")

    assert summary(reply["events"]) == CALLING_VIDEO
    assert summary(await b.take_events(2)) == RINGING_VIDEO  # and bob acknowledges
    assert summary(await laptop.take_events(3)) == [*CALLING_VIDEO, ("event", "remoteUserRecvCall")]
    assert summary(await phone.take_events(3)) == [*CALLING_VIDEO, ("event", "remoteUserRecvCall")]
    assert shape(sequenced_frames(laptop)[0]) == ("events", CALLING_VIDEO)
    assert [event["seq"] for event in phone.events] == [event["seq"] for event in laptop.events]


async def test_a_reconnect_replays_what_was_missed_in_one_frame_before_the_hello_reply(
        opened, alice, bob):
    a = await opened(alice, batches=True)
    away = await opened(bob, device_id="bob-phone", batches=True)
    call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
    seen = await away.take_events(2)
    await away.close()
    await a.ok("cancel", call_id=call_id)

    back = await opened(bob, device_id="bob-phone", batches=True, last_seq=seen[-1]["seq"])
    replayed = back.frames[0]
    assert shape(replayed) == ("events", [("state", "prepared", "remoteCancelled"),
                                          ("event", "remoteCancelled")])
    assert back.frames[1]["type"] == "reply"  # hello's, after the replay
    assert [event["seq"] for event in replayed["events"]] == [seen[-1]["seq"] + 1,
                                                                seen[-1]["seq"] + 2]


async def test_a_failed_frame_carries_no_events(opened, alice, bob):
    a = await opened(alice, batches=True)
    await opened(bob, batches=True)
    call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
    reply = await a.request("hangup", call_id=call_id)  # a ringing call is cancelled, not hung up

    assert reply == {"type": "reply", "id": reply["id"], "ok": False,
                     "error": {"code": "state_mismatch", "message": reply["error"]["message"]}}


async def test_a_repeated_frame_gets_its_reply_again_without_the_events(opened, alice, bob):
    a = await opened(alice, batches=True)
    b = await opened(bob, batches=True)
    first = await a.request("call", frame_id="dial-1", to=bob.pk, call_type="video")
    await b.take_events(2)
    await a.take_events(3)
    again = await a.request("call", frame_id="dial-1", to=bob.pk, call_type="video")

    assert summary(first["events"]) == CALLING_VIDEO
    assert {key: value for key, value in first.items() if key != "events"} == again
    await a.assert_silent()


@pytest.mark.parametrize("hello", [{"event_batches": "yes"}, {"event_batches": 1}],
                         ids=["string", "number"])
async def test_a_hello_with_a_mistyped_event_batches_is_refused(opened, alice, hello):
    device = await opened(alice, hello=False)
    reply = await device.request("hello", device_id="alice-x", **hello)

    assert reply["ok"] is False and reply["error"]["code"] == "invalid_message"
    assert await device.error("call", to=alice.pk, call_type="video") == "hello_required"


# ---- the reply's share, in order ------------------------------------------------------------


def consumer_at(sent_seq: int, device_id: str = "phone") -> CallConsumer:
    consumer = CallConsumer()
    consumer.device_id, consumer.sent_seq = device_id, sent_seq
    consumer.unacked, consumer.incoming_calls = {}, {}
    return consumer


def item(seq: int, *, only: str = "", except_: str = "") -> dict:
    return {"frame": {"type": "event", "seq": seq, "name": "call.event", "call_id": "c"},
            "only": only, "except": except_}


def test_the_reply_takes_the_events_next_in_order_and_skips_other_devices():
    consumer = consumer_at(3)
    taken = consumer._next_in_order([item(4), item(5, only="laptop"), item(6, except_="laptop")])

    assert [frame["seq"] for frame in taken] == [4, 6]
    assert consumer.sent_seq == 6 and sorted(consumer.unacked) == [4, 6]


def test_the_reply_takes_nothing_after_a_gap():
    consumer = consumer_at(3)
    taken = consumer._next_in_order([item(5), item(6)])  # 4 is still on its way

    assert taken == [] and consumer.sent_seq == 3 and consumer.unacked == {}


def test_the_reply_skips_events_already_sent_and_stops_at_a_later_gap():
    consumer = consumer_at(5)
    taken = consumer._next_in_order([item(4), item(5), item(6), item(8)])

    assert [frame["seq"] for frame in taken] == [6]
    assert consumer.sent_seq == 6


async def test_a_long_replay_goes_out_in_frames_of_at_most_fifty_events(opened, alice, bob):
    a = await opened(alice, batches=True)
    laptop = await opened(bob, device_id="bob-laptop", batches=True)
    for _ in range(13):  # 13 calls, 4 events each for bob: ringing (2), cancelled (2)
        call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
        await laptop.take_events(2)
        await a.ok("cancel", call_id=call_id)
        await laptop.take_events(2)
    await laptop.close()

    back = await opened(bob, device_id="bob-phone", batches=True, last_seq=0)
    replayed = [frame for frame in back.frames if frame.get("type") == "events"]
    assert [len(frame["events"]) for frame in replayed] == [50, 2]
    seqs = [event["seq"] for frame in replayed for event in frame["events"]]
    assert seqs == list(range(1, 53))
    assert back.frames[len(replayed)]["type"] == "reply"  # hello's, after the whole replay
