"""Reliable delivery: re-send until acknowledged, replay after reconnect, idempotent client
frames, presence, and connection loss."""

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from calls import devices, services
from calls.models import CallSession, Connection, UserEvent
from tests.support import Device, summary

pytestmark = pytest.mark.django_db(transaction=True)

# The consumer re-sends after about a second (RESEND_FIRST_S); wait comfortably longer.
RESEND_WAIT_S = 3.0


async def test_an_unacknowledged_event_is_sent_again_until_acknowledged(opened, alice, bob):
    a = await opened(alice)
    b = await opened(bob, auto_ack=False)
    await a.ok("call", to=bob.pk, call_type="video")
    first, second = await b.take_events(2)
    assert summary([first, second]) == [("state", "calling", "remoteVideoCall"),
                                        ("event", "remoteVideoCall")]
    again = await resent(b, first["seq"])
    assert again == first  # the same event, with the same seq
    await b.ack(second["seq"])
    # acknowledged: the incoming call counts as delivered, and re-sending stops
    assert summary(await a.take_events(3)) == [
        ("state", "calling", "localVideoCall"), ("event", "localVideoCall"),
        ("event", "remoteUserRecvCall")]
    while not await b.communicator.receive_nothing(timeout=RESEND_WAIT_S):
        late = await b._pump()
        assert late.get("seq", 0) <= second["seq"]  # only re-sends already on the wire


async def resent(device, seq):
    """Wait for event ``seq`` to arrive again."""
    while True:
        frame = await device._pump(timeout=RESEND_WAIT_S)
        if frame.get("seq") == seq:
            return frame


async def test_the_delivery_receipt_waits_for_the_callee_ack(opened, alice, bob):
    a = await opened(alice)
    b = await opened(bob, auto_ack=False)
    call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
    await b.take_events(2)
    assert summary(await a.take_events(2)) == [("state", "calling", "localVideoCall"),
                                              ("event", "localVideoCall")]
    await a.assert_silent()
    assert (await database_sync_to_async(CallSession.objects.get)(call_id=call_id)).delivered_at is None
    await b.ack(b.events[-1]["seq"])
    assert summary(await a.take_events(1)) == [("event", "remoteUserRecvCall")]
    record = await database_sync_to_async(CallSession.objects.get)(call_id=call_id)
    assert record.delivered_at is not None


async def test_reconnect_with_last_seq_replays_exactly_what_was_missed(opened, alice, bob):
    a = await opened(alice)
    phone = await opened(bob, device_id="bob-phone")
    laptop = await opened(bob, device_id="bob-laptop")
    call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
    seen = await phone.take_events(2)
    await laptop.take_events(2)
    last_seq = seen[-1]["seq"]
    await phone.close()

    # while the phone is away, the laptop rejects and a second call comes and is cancelled
    await laptop.ok("reject", call_id=call_id)
    await laptop.take_events(2)
    second = (await a.ok("call", to=bob.pk, call_type="audio"))["call_id"]
    await laptop.take_events(2)
    await a.ok("cancel", call_id=second)
    missed = await laptop.take_events(2)

    back = await opened(bob, device_id="bob-phone", last_seq=last_seq)
    replayed = await back.take_events(6)
    assert [e["seq"] for e in replayed] == list(range(last_seq + 1, last_seq + 7))
    assert summary(replayed) == [
        ("state", "prepared", "localRejected"), ("event", "localRejected"),
        ("state", "calling", "remoteAudioCall"), ("event", "remoteAudioCall"),
        ("state", "prepared", "remoteCancelled"), ("event", "remoteCancelled")]
    assert replayed[-2:] == missed
    await back.assert_silent()
    assert back.hello_data["active_call"] is None


async def test_hello_reports_the_active_call_as_the_truth(opened, alice, bob):
    a = await opened(alice)
    b = await opened(bob)
    call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
    await b.take_events(2)
    again = await opened(bob)
    active = again.hello_data["active_call"]
    assert (active["call_id"], active["state"], active["reason"]) == (
        call_id, "calling", "remoteVideoCall")
    assert active["info"]["caller"]["id"] == alice.pk


async def test_hello_tells_a_reloaded_caller_whether_the_callee_has_the_call(opened, alice, bob):
    a = await opened(alice)
    b = await opened(bob, auto_ack=False)
    await a.ok("call", to=bob.pk, call_type="video")
    ringing = await b.take_events(2)  # not acknowledged yet: no callee device confirmed the call
    before = await opened(alice)
    assert before.hello_data["active_call"]["info"]["delivered"] is False
    await b.ack(ringing[-1]["seq"])
    await a.event("call.event", event="remoteUserRecvCall")
    after = await opened(alice)
    assert after.hello_data["active_call"]["info"]["delivered"] is True


async def test_a_resent_frame_gets_the_same_reply_and_acts_once(opened, alice, bob):
    a = await opened(alice)
    await opened(bob)
    first = await a.request("call", frame_id="call-1", to=bob.pk, call_type="video")
    again = await a.request("call", frame_id="call-1", to=bob.pk, call_type="video")
    assert first == again and first["ok"]
    assert await database_sync_to_async(CallSession.objects.count)() == 1


async def test_a_frame_resent_after_reconnect_acts_once(opened, alice, bob):
    a = await opened(alice, device_id="alice-tab")
    await opened(bob)
    await a.send("call", frame_id="lost-reply", to=bob.pk, call_type="video")
    await a.close()  # the reply is lost with the socket
    back = await opened(alice, device_id="alice-tab")
    reply = await back.request("call", frame_id="lost-reply", to=bob.pk, call_type="video")
    assert reply["ok"] and reply["data"]["outcome"] == "ring"
    assert await database_sync_to_async(CallSession.objects.count)() == 1


async def test_presence_follows_devices_and_calls(opened, alice, bob, carol):
    watcher = await opened(carol)
    snapshot = {item["user_id"]: item["status"] for item in watcher.hello_data["presence"]}
    assert snapshot == {alice.pk: "offline", bob.pk: "offline"}
    a = await opened(alice)
    await watcher.presence_of(alice.pk, "online")
    b = await opened(bob)
    await watcher.presence_of(bob.pk, "online")
    call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
    await watcher.presence_of(alice.pk, "busy")
    await watcher.presence_of(bob.pk, "busy")
    await a.ok("cancel", call_id=call_id)
    await watcher.presence_of(alice.pk, "online")
    await watcher.presence_of(bob.pk, "online")
    await b.close()
    await watcher.presence_of(bob.pk, "offline")


async def test_presence_counts_every_device(opened, alice, carol):
    watcher = await opened(carol)
    first = await opened(alice)
    await opened(alice)
    await watcher.presence_of(alice.pk, "online")
    await first.close()
    await watcher.assert_silent()  # the second device keeps alice online
    assert watcher.presence == []


async def test_a_device_watches_only_whom_it_asks_for(opened, alice, bob, carol):
    watcher = await Device.open(carol, hello=False)
    await watcher.ok("hello", device_id="carol-w", watch=[alice.pk])
    await opened(bob)
    await opened(alice)
    await watcher.presence_of(alice.pk, "online")
    assert watcher.presence == []
    await watcher.close()


async def connected_call(a, b, callee):
    call_id = (await a.ok("call", to=callee.pk, call_type="video"))["call_id"]
    await b.ok("accept", call_id=call_id)
    for device in (a, b):
        await device.ok("media", call_id=call_id, milestone="first_remote_frame")
    await a.event("call.state", state="connected")
    await b.event("call.state", state="connected")
    a.unread.clear()
    b.unread.clear()
    return call_id


async def bob_drops_out_of_a_call(opened, alice, bob):
    """A connected call whose callee's only device disconnects."""
    a = await opened(alice)
    b = await opened(bob, device_id="bob-only")
    call_id = await connected_call(a, b, bob)
    last_seq = b.events[-1]["seq"]
    await b.close()
    assert summary(await a.take_events(1)) == [("event", "remoteReconnecting")]
    return a, call_id, last_seq


async def test_a_participant_back_within_the_grace_continues(opened, alice, bob):
    a, call_id, last_seq = await bob_drops_out_of_a_call(opened, alice, bob)
    back = await opened(bob, device_id="bob-only", last_seq=last_seq)
    assert summary(await a.take_events(1)) == [("event", "remoteReconnected")]
    assert back.hello_data["active_call"]["state"] == "connected"
    record = await database_sync_to_async(CallSession.objects.get)(call_id=call_id)
    assert (record.phase, record.callee_away) == ("connected", False)
    # the grace timer firing late changes nothing
    await database_sync_to_async(services.call_connection_lost)(call_id=call_id, user_id=bob.pk)
    assert (await database_sync_to_async(CallSession.objects.get)(call_id=call_id)).phase == "connected"
    await a.assert_silent()


async def test_a_participant_not_back_within_the_grace_loses_the_call(opened, alice, bob):
    a, call_id, last_seq = await bob_drops_out_of_a_call(opened, alice, bob)
    # the grace task's service (the two-node test runs it through a real worker)
    await database_sync_to_async(services.call_connection_lost)(call_id=call_id, user_id=bob.pk)
    assert summary(await a.take_events(1)) == [("state", "prepared", "remoteConnectionLost")]
    back = await opened(bob, device_id="bob-only", last_seq=last_seq)
    assert summary(await back.take_events(1)) == [("state", "prepared", "rtmLost")]
    assert back.hello_data["active_call"] is None
    record = await database_sync_to_async(CallSession.objects.get)(call_id=call_id)
    assert (record.phase, record.end_reason) == ("ended", "connection_lost")


async def test_a_crashed_process_is_noticed_when_its_heartbeats_stop(opened, alice, bob):
    a = await opened(alice)
    b = await opened(bob)
    await connected_call(a, b, bob)
    # bob's process dies: no close, its connection row simply stops being refreshed
    await database_sync_to_async(Connection.objects.filter(user=bob).update)(
        seen_at=timezone.now() - timedelta(minutes=5))
    swept = await database_sync_to_async(devices.connections_sweep_stale)()
    assert swept == 1
    assert summary(await a.take_events(1)) == [("event", "remoteReconnecting")]
    assert await database_sync_to_async(Connection.objects.filter(user=bob).count)() == 0


async def test_events_for_one_device_do_not_reach_the_others(opened, alice, bob):
    a = await opened(alice)
    b1 = await opened(bob)
    b2 = await opened(bob)
    call_id = (await a.ok("call", to=bob.pk, call_type="video"))["call_id"]
    await b1.take_events(2)
    await b2.take_events(2)
    await b1.ok("accept", call_id=call_id)
    await b1.take_events(2)
    await b2.take_events(2)
    await a.ok("signal", call_id=call_id, payload={"ice": 1})
    assert (await b1.event("call.signal"))["payload"] == {"ice": 1}
    await b2.assert_silent()
    rows = await database_sync_to_async(list)(
        UserEvent.objects.filter(user=bob, frame__name="call.signal").values_list("only_device", flat=True))
    assert rows == [b1.device_id]


@pytest.mark.parametrize("local_delivery", [True, False])
async def test_events_for_sockets_all_on_this_process_skip_redis(opened, alice, bob, settings,
                                                                 local_delivery):
    # given alice and bob connected to this process, and a spy on another process's layer
    # subscribed to both users' groups through Redis
    from django.conf import settings as django_settings

    from calls.events import local_delivery_on, user_group
    from project.channel_layer import PubSubChannelLayer

    if django_settings.CHANNEL_LAYER_KIND != "pubsub":
        pytest.skip("local delivery is the pub/sub layer's (scripts/testenv.py provides Redis)")
    settings.DUET_LOCAL_DELIVERY = local_delivery
    config = django_settings.CHANNEL_LAYERS["default"]["CONFIG"]
    elsewhere = PubSubChannelLayer(hosts=config["hosts"], prefix=config["prefix"])
    spy = await elsewhere.new_channel()
    for user in (alice, bob):
        await elsewhere.group_add(user_group(user.pk), spy)
    try:
        a, b = await opened(alice), await opened(bob)
        # when alice calls bob
        await a.ok("call", to=bob.pk, call_type="video")
        # then both devices get their events either way ...
        assert summary(await a.take_events(2)) == [("state", "calling", "localVideoCall"),
                                                  ("event", "localVideoCall")]
        assert summary(await b.take_events(2)) == [("state", "calling", "remoteVideoCall"),
                                                  ("event", "remoteVideoCall")]
        # ... and Redis carried them only without local delivery (or where it cannot be sound)
        try:
            through_redis = await asyncio.wait_for(elsewhere.receive(spy), timeout=0.5)
        except asyncio.TimeoutError:
            through_redis = None
        if local_delivery and await database_sync_to_async(local_delivery_on)():
            assert through_redis is None
        else:
            assert through_redis is not None and through_redis["type"] == "user.events"
    finally:
        await elsewhere.flush()
