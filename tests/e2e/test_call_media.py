"""Media timing and resilience: audio calls, joining only on answer, reloads, two devices."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.support import STEP_MS

TRACK_KINDS_JS = """() => duet.api.getMediaEngine().peerConnections().map((pc) => ({
  sending: pc.getSenders().filter((s) => s.track).map((s) => s.track.kind).sort(),
  receiving: pc.getReceivers().map((r) => r.track.kind).sort(),
}))"""
# Resolves with the audio bytes received once they grew between two stats reads a frame apart.
AUDIO_FLOWING_JS = """() => new Promise((resolve) => {
  const pc = duet.api.getMediaEngine().peerConnections()[0];
  const received = async () => {
    let bytes = 0;
    (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") bytes = s.bytesReceived; });
    return bytes;
  };
  received().then((first) => {
    const again = async () => { const now = await received(); if (now > first) resolve(now); else setTimeout(again, 50); };
    again();
  });
})"""
# Whether the page holds the reply to its accept (see Person.hold_incoming_messages): the server
# has committed the accept and sent its events.
HELD_ACCEPT_REPLY_JS = """() => heldMessages.some((message) => {
  const frame = JSON.parse(message.data);
  return frame.type === "reply" && frame.ok && frame.data?.channel !== undefined;
})"""


def test_audio_call_sends_no_video_and_audio_flows(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    # when
    alice.call(users.bob, "audio")
    bob.expect_state("calling", "remoteAudioCall")
    expect(bob.page.locator("#incoming .call-kind")).to_have_text("Audio call")
    bob.click("#accept")
    # then
    bob.expect_state("connected")
    alice.expect_state("connected")
    audio_only = [{"sending": ["audio"], "receiving": ["audio"]}]
    assert alice.page.evaluate(TRACK_KINDS_JS) == audio_only
    assert bob.page.evaluate(TRACK_KINDS_JS) == audio_only
    assert alice.page.evaluate(AUDIO_FLOWING_JS) > 0
    assert bob.page.evaluate(AUDIO_FLOWING_JS) > 0
    assert alice.page.locator("#remote-view video").count() == 0
    assert bob.page.evaluate("document.querySelector('#remote-view audio').muted") is False
    expect(alice.page.locator("#call-status")).to_have_text("Audio call")
    alice.click("#hangup")
    bob.expect_state("prepared", "remoteHangup")


def test_callee_who_joins_only_on_answer_sends_nothing_while_ringing(users, open_person):
    # given: bob's setting makes canJoinRtcOnCalling return false
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    bob.page.locator(".settings summary").click()
    bob.page.check("#join-on-answer")
    # when
    alice.call(users.bob, "video")
    expect(alice.page.locator("#outgoing-status")).to_have_text("Ringing…")
    # then
    bob.expect_state("calling", "remoteVideoCall")
    assert bob.peer_connection_count() == 0
    assert alice.peer_connection_count() == 0
    assert bob.page.evaluate("duet.api.getMediaEngine().localStream") is None
    # when
    bob.click("#accept")
    # then
    bob.expect_state("connected", "recvRemoteFirstFrame")
    alice.expect_state("connected")
    assert alice.remote_video_decoding() is True
    assert bob.remote_video_decoding() is True
    bob.click("#hangup")
    alice.expect_state("prepared", "remoteHangup")


def test_first_frame_waiting_disabled_connects_at_the_accept_before_any_media(users, open_person):
    # given: both pages connect without waiting for a picture; bob sends no media until he answers
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    for person in (alice, bob):
        person.page.evaluate("duet.api.prepareForCall({firstFrameWaittingDisabled: true})")
    bob.page.locator(".settings summary").click()
    bob.page.check("#join-on-answer")
    alice.call(users.bob, "video")
    bob.expect_state("calling", "remoteVideoCall")
    # when
    bob.click("#accept")
    # then: connected by the accept itself, not by a first frame (there was none to wait for)
    bob.expect_state("connected", "localAccepted")
    alice.expect_state("connected", "remoteAccepted")
    assert alice.remote_video_decoding() is True
    assert bob.remote_video_decoding() is True
    alice.click("#hangup")
    bob.expect_state("prepared", "remoteHangup")


def test_reloading_the_page_mid_call_resumes_the_call(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    alice.call(users.bob, "video")
    bob.click("#accept")
    bob.expect_state("connected")
    alice.expect_state("connected")
    device_before = bob.page.evaluate("sessionStorage.getItem('duet.deviceId')")
    # when
    bob.reload()
    # then
    bob.expect_state("connected")
    expect(bob.page.locator("#call-view")).to_be_visible()
    assert bob.page.evaluate("sessionStorage.getItem('duet.deviceId')") == device_before
    assert bob.remote_video_decoding() is True
    assert alice.remote_video_decoding() is True
    assert alice.peer_connection_count() == 1
    alice.expect_state("connected")
    expect(alice.page.locator("#call-notice")).to_be_hidden()
    # when
    bob.hang_up(alice)


def test_callee_signed_in_twice_the_other_tab_hears_answered_elsewhere(users, open_person):
    # given
    alice = open_person(users.alice)
    bob_laptop = open_person(users.bob)
    bob_phone = open_person(users.bob)
    alice.call(users.bob, "video")
    bob_laptop.expect_state("calling", "remoteVideoCall")
    bob_phone.expect_state("calling", "remoteVideoCall")
    # when
    bob_laptop.click("#accept")
    # then
    bob_phone.expect_state("prepared", "answeredElsewhere")
    bob_phone.expect_toast("Answered on another device.")
    expect(bob_phone.page.locator("#incoming")).to_be_hidden()
    assert bob_phone.peer_connection_count() == 0
    bob_laptop.expect_state("connected")
    alice.expect_state("connected")
    assert alice.remote_video_decoding() is True
    assert bob_laptop.remote_video_decoding() is True
    alice.page.wait_for_function("duet.api.getMediaEngine().peerConnections().length === 1",
                                 timeout=STEP_MS)
    alice.click("#hangup")
    bob_laptop.expect_state("prepared", "remoteHangup")


def ring_with_both_pictures(alice, bob, users) -> None:
    """alice calls bob; while it rings, each page has the other's picture (media negotiated while
    ringing)."""
    alice.call(users.bob, "video")
    bob.expect_state("calling", "remoteVideoCall")
    alice.wait_for_first_remote_frame()
    bob.wait_for_first_remote_frame()


def reload_the_calling_page(caller) -> None:
    """The caller reloads the page while its call rings: the new page resumes the outgoing call
    from hello's active_call."""
    caller.reload()
    caller.expect_state("calling", "localVideoCall")
    expect(caller.page.locator("#outgoing")).to_be_visible()


def test_the_caller_reloading_while_the_callee_rings_resumes_the_call(users, open_person):
    # given: bob's device rings and has alice's picture
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    ring_with_both_pictures(alice, bob, users)
    call_id = alice.page.evaluate("duet.api.getCallId()")
    # when
    reload_the_calling_page(alice)
    # then: it rings there (bob's device had acknowledged the call to the page it replaced)
    expect(alice.page.locator("#outgoing-status")).to_have_text("Ringing…")
    expect(alice.page.locator("#outgoing")).to_have_attribute("data-ringing", "true")
    assert alice.page.evaluate("duet.api.getCallId()") == call_id
    bob.expect_state("calling", "remoteVideoCall")
    expect(bob.page.locator("#incoming")).to_be_visible()
    # when
    bob.click("#accept")
    # then
    bob.expect_state("connected")
    alice.expect_state("connected")
    assert alice.remote_video_decoding() is True
    assert bob.remote_video_decoding() is True
    assert alice.peer_connection_count() == 1
    assert bob.peer_connection_count() == 1
    expect(alice.page.locator("#outgoing")).to_be_hidden()
    expect(bob.page.locator("#incoming")).to_be_hidden()
    # when
    alice.hang_up(bob)


def test_a_caller_reloaded_before_the_callee_has_the_call_shows_calling_then_ringing(
        users, open_person):
    # given: bob's page hears nothing from the server, so no device of his acknowledges the call
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    bob.hold_incoming_messages()
    alice.call(users.bob, "video")
    alice.expect_state("calling", "localVideoCall")
    # when
    reload_the_calling_page(alice)
    # then: it calls; it does not claim that bob's device rings
    expect(alice.page.locator("#outgoing-status")).to_have_text("Calling…")
    expect(alice.page.locator("#outgoing")).not_to_have_attribute("data-ringing", "true")
    # when bob's page hears the call
    bob.release_incoming_messages()
    # then it rings there, and the reloaded page hears the receipt live
    bob.expect_state("calling", "remoteVideoCall")
    expect(alice.page.locator("#outgoing-status")).to_have_text("Ringing…")
    # when
    alice.click("#cancel")
    # then
    alice.expect_state("prepared", "localCancelled")
    bob.expect_state("prepared", "remoteCancelled")


def test_a_caller_reloaded_while_ringing_connects_only_on_a_frame_of_its_new_page(
        users, open_person):
    # given: both pages had each other's picture while ringing; then bob's page stops hearing the
    # server, so it cannot answer alice's reloaded page, which asks for a new connection
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    ring_with_both_pictures(alice, bob, users)
    bob.hold_incoming_messages()
    reload_the_calling_page(alice)
    # when bob accepts before alice's new page has a picture
    bob.click("#accept")
    bob.page.wait_for_function(HELD_ACCEPT_REPLY_JS, timeout=STEP_MS)
    # then alice is connecting: her old page's frame does not count for the new one
    alice.expect_state("connecting", "remoteAccepted")
    assert alice.page.evaluate("duet.api.getCallCosts().has('recvFirstFrame')") is False
    # when bob's page hears the server again and connects to alice's new page
    bob.release_incoming_messages()
    # then the first frame of alice's new page is what connects her
    alice.expect_state("connected", "recvRemoteFirstFrame")
    marks = alice.costs()["marks"]
    assert marks["recvFirstFrame"] <= marks["connected"]
    bob.expect_state("connected", "localAccepted")
    assert alice.remote_video_decoding() is True
    assert bob.remote_video_decoding() is True
    # when
    alice.hang_up(bob)
