"""Glare: alice and bob call each other at the same time and end in one call, not two.

The server resolves it (docs/protocol.md, "Glare"): the second `call` to commit accepts the
first one on the second caller's device, so its reply has `outcome: "glare"` and the first call's
id. Nobody clicks Accept: both pages must go from their own click to a connected call with the
other's picture, and no dialog may be left open.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.e2e.support import STEP_MS

# How far ahead both pages are told the moment to click: enough for the second evaluate to arrive.
CLICK_LEAD_MS = 400

# Records what `CallApi.call()` gave the page (its reply, or the error's code), for the assertions.
RECORD_CALL_REPLIES_JS = """() => {
  window.callReplies = [];
  const call = duet.api.call.bind(duet.api);
  duet.api.call = (...args) => call(...args).then(
    (reply) => { callReplies.push(reply); return reply; },
    (error) => { callReplies.push({ error: error.code ?? String(error) }); throw error; });
}"""
# Clicks the call button of `name` at the epoch time `at` (both pages share the machine's clock).
CLICK_CALL_AT_JS = """([name, callType, at]) => {
  const button = document.querySelector(`.person[data-name="${name}"] button[data-call-type="${callType}"]`);
  setTimeout(() => button.click(), at - Date.now());
}"""
HELD_GLARE_REPLY_JS = """() => heldMessages.some((message) => {
  const frame = JSON.parse(message.data);
  return frame.type === "reply" && frame.data?.outcome === "glare";
})"""


def call_replies(person) -> list[dict]:
    person.page.wait_for_function("callReplies.length > 0", timeout=STEP_MS)
    return person.page.evaluate("callReplies")


def expect_one_connected_call(alice, bob) -> None:
    """Both pages are in the same connected call, see each other's video, show no dialog."""
    alice.expect_state("connected")
    bob.expect_state("connected")
    replies = [*call_replies(alice), *call_replies(bob)]
    assert sorted(reply.get("outcome", reply.get("error")) for reply in replies) == ["glare", "ring"], replies
    assert replies[0]["call_id"] == replies[1]["call_id"]
    call_id = replies[0]["call_id"]
    for person in (alice, bob):
        assert person.page.evaluate("duet.api.getCallId()") == call_id
        assert person.remote_video_decoding() is True
        assert person.peer_connection_count() == 1
        expect(person.page.locator("#incoming")).to_be_hidden()
        expect(person.page.locator("#outgoing")).to_be_hidden()
        expect(person.page.locator("#call-view")).to_be_visible()


def test_simultaneous_calls_end_in_one_connected_call(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    for person in (alice, bob):
        person.page.evaluate(RECORD_CALL_REPLIES_JS)
    # when: both click at the same moment, each before hearing of the other's call
    at = alice.page.evaluate("Date.now()") + CLICK_LEAD_MS
    alice.page.evaluate(CLICK_CALL_AT_JS, [users.bob.name, "video", at])
    bob.page.evaluate(CLICK_CALL_AT_JS, [users.alice.name, "video", at])
    # then
    expect_one_connected_call(alice, bob)
    # when
    bob.hang_up(alice)


def test_a_call_crossing_one_that_already_rings_connects_both(users, open_person):
    # given: bob's page hears nothing from the server for a while (a slow downlink)
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    for person in (alice, bob):
        person.page.evaluate(RECORD_CALL_REPLIES_JS)
    bob.hold_incoming_messages()
    # when: alice's call rings first, then bob, not knowing, calls her
    alice.call(users.bob, "video")
    alice.expect_state("calling", "localVideoCall")
    bob.call(users.alice, "video")
    bob.page.wait_for_function(HELD_GLARE_REPLY_JS, timeout=STEP_MS)
    bob.expect_state("prepared")
    bob.release_incoming_messages()
    # then
    expect_one_connected_call(alice, bob)
    assert call_replies(alice)[0]["outcome"] == "ring"
    assert call_replies(bob)[0]["outcome"] == "glare"
    # when
    alice.hang_up(bob)
