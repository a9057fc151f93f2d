import pytest

from tests.support import Device, summary

pytestmark = pytest.mark.django_db(transaction=True)


async def test_video_call_accept_and_hangup(alice, bob):
    a = await Device.open(alice)
    b = await Device.open(bob)
    started = await a.ok("call", to=bob.pk, call_type="video")
    call_id = started["call_id"]
    assert summary(await a.take_events(2)) == [("state", "calling", "localVideoCall"),
                                              ("event", "localVideoCall")]
    assert summary(await b.take_events(2)) == [("state", "calling", "remoteVideoCall"),
                                              ("event", "remoteVideoCall")]
    assert summary(await a.take_events(1)) == [("event", "remoteUserRecvCall")]
    await b.ok("accept", call_id=call_id)
    assert summary(await b.take_events(2)) == [("state", "connecting", "localAccepted"),
                                              ("event", "localAccepted")]
    assert summary(await a.take_events(2)) == [("state", "connecting", "remoteAccepted"),
                                              ("event", "remoteAccepted")]
    await a.ok("media", call_id=call_id, milestone="first_remote_frame")
    assert summary(await a.take_events(1)) == [("state", "connected", "recvRemoteFirstFrame")]
    await b.ok("media", call_id=call_id, milestone="first_remote_frame")
    connected = await b.event("call.state", state="connected")
    assert "costs" in connected["info"]
    await a.ok("hangup", call_id=call_id)
    assert summary(await a.take_events(2)) == [("state", "prepared", "localHangup"),
                                              ("event", "localHangup")]
    assert summary(await b.take_events(2)) == [("state", "prepared", "remoteHangup"),
                                              ("event", "remoteHangup")]
    await a.assert_silent()
    await b.assert_silent()
    await a.close()
    await b.close()
