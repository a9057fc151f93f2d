"""Every way a call ends, as each person sees it: state, reason and the page's message."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.support import RECONNECT_GRACE_S

# The shortest ring the protocol allows (timeout_ms 5000..120000): the "no answer" test waits it.
SHORT_RING_S = 5
NO_ANSWER_WAIT_MS = (SHORT_RING_S + 10) * 1000
CONNECTION_LOST_WAIT_MS = (RECONNECT_GRACE_S + 10) * 1000


def test_caller_cancels_once_the_callee_rings(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    alice.call(users.bob, "video")
    expect(alice.page.locator("#outgoing-status")).to_have_text("Ringing…")
    bob.expect_state("calling", "remoteVideoCall")
    expect(bob.page.locator("#incoming .peer-name")).to_have_text(users.alice.name)
    # when
    alice.click("#cancel")
    # then
    alice.expect_state("prepared", "localCancelled")
    bob.expect_state("prepared", "remoteCancelled")
    alice.expect_toast("Call cancelled.")
    bob.expect_toast(f"Missed call from {users.alice.name}.")
    expect(bob.page.locator("#incoming")).to_be_hidden()
    assert alice.peer_connection_count() == 0
    assert bob.peer_connection_count() == 0


def test_callee_rejects(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    alice.call(users.bob, "video")
    bob.expect_state("calling", "remoteVideoCall")
    # when
    bob.click("#reject")
    # then
    bob.expect_state("prepared", "localRejected")
    alice.expect_state("prepared", "remoteRejected")
    alice.expect_toast(f"{users.bob.name} declined the call.")
    bob.expect_toast(f"You declined the call from {users.alice.name}.")
    expect(alice.page.locator("#outgoing")).to_be_hidden()


def test_calling_someone_in_a_call_says_busy(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    carol = open_person(users.carol)
    alice.call(users.bob, "video")
    bob.click("#accept")
    bob.expect_state("connected")
    alice.expect_state("connected")
    expect(carol.person_row(users.bob.name)).to_have_attribute("data-status", "busy")
    # when
    carol.call(users.bob, "video")
    # then
    carol.expect_state("prepared", "remoteCallBusy")
    carol.expect_toast(f"{users.bob.name} is in another call.")
    assert carol.peer_connection_count() == 0
    bob.expect_state("connected")
    alice.expect_state("connected")
    assert bob.remote_video_decoding() is True
    alice.click("#hangup")
    bob.expect_state("prepared", "remoteHangup")


def test_no_answer_ends_at_the_ring_timeout(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    alice.page.locator(".settings summary").click()
    alice.page.select_option("#ring-seconds", str(SHORT_RING_S))
    # when
    alice.call(users.bob, "video")
    bob.expect_state("calling", "remoteVideoCall")
    # then
    alice.expect_state("prepared", "callingTimeout", timeout=NO_ANSWER_WAIT_MS)
    bob.expect_state("prepared", "remoteCallingTimeout", timeout=NO_ANSWER_WAIT_MS)
    alice.expect_toast(f"{users.bob.name} didn't answer.")
    bob.expect_toast(f"You missed a call from {users.alice.name}.")
    assert bob.peer_connection_count() == 0


def test_calling_someone_offline_says_offline(users, open_person):
    # given
    alice = open_person(users.alice)
    expect(alice.person_row(users.carol.name)).to_have_attribute("data-status", "offline")
    # when
    alice.call(users.carol, "audio")
    # then
    alice.expect_state("prepared", "remoteOffline")
    alice.expect_toast(f"{users.carol.name} is offline.")
    assert alice.peer_connection_count() == 0


def test_lobby_presence_follows_sign_in_calls_and_sign_out(users, open_person):
    # given
    alice = open_person(users.alice)
    bob_row = alice.person_row(users.bob.name)
    expect(bob_row).to_have_attribute("data-status", "offline")
    # when
    bob = open_person(users.bob)
    # then
    expect(bob_row).to_have_attribute("data-status", "online")
    expect(bob_row.locator(".presence-text")).to_have_text("Online")
    # when
    carol = open_person(users.carol)
    carol.call(users.bob, "audio")
    bob.click("#accept")
    # then
    expect(bob_row).to_have_attribute("data-status", "busy")
    expect(bob_row.locator(".presence-text")).to_have_text("In a call")
    # when
    bob.click("#hangup")
    carol.expect_state("prepared", "remoteHangup")
    # then
    expect(bob_row).to_have_attribute("data-status", "online")
    # when
    bob.close()
    # then
    expect(bob_row).to_have_attribute("data-status", "offline")


def test_a_callee_who_vanishes_mid_call_ends_it_as_connection_lost(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    alice.call(users.bob, "video")
    bob.click("#accept")
    alice.expect_state("connected")
    # when: bob's browser goes away and does not come back
    bob.close()
    # then
    expect(alice.page.locator("#call-notice")).to_have_text(
        f"{users.bob.name} lost their connection. Waiting for them…")
    alice.expect_state("prepared", "remoteConnectionLost", timeout=CONNECTION_LOST_WAIT_MS)
    alice.expect_toast(f"Lost the connection to {users.bob.name}. The call ended.")
    expect(alice.page.locator("#call-notice")).to_be_hidden()
    assert alice.peer_connection_count() == 0
