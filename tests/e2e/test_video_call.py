"""Video calls in two browsers: the picture is already there when the callee answers."""

from __future__ import annotations

import os
import re

from playwright.sync_api import expect

from tests.e2e.timings import call_timings, medians, print_timings

# How many calls the timing test makes (the benchmark records the median of ten).
TIMED_CALLS = int(os.environ.get("DUET_BROWSER_TIMED_CALLS", "10"))
HUNG_UP = re.compile(r"^You hung up\. The call lasted 0:\d\d\.$")
# What the page asked of the camera (the track's applied constraints). Not getSettings(): the
# contexts of one Chromium share its one fake camera, which delivers the size of whoever opened it
# first, so the delivered size depends on the order in which the parties opened it.
CAMERA_SETTINGS_JS = """() => {
  const asked = duet.api.getMediaEngine().localStream.getVideoTracks()[0].getConstraints();
  const value = (c) => (c !== null && typeof c === "object" ? (c.ideal ?? c.exact) : c);
  return { width: value(asked.width), height: value(asked.height), frameRate: value(asked.frameRate) };
}"""


def connect_video_call(alice, bob, users) -> dict:
    """alice calls bob, bob answers once both pictures are there (a person takes longer than that
    to see who calls and click); returns the timings."""
    alice.call(users.bob, "video")
    bob.expect_state("calling", "remoteVideoCall")
    alice.expect_state("calling", "localVideoCall")
    alice.wait_for_first_remote_frame()
    bob.wait_for_first_remote_frame()
    bob.click("#accept")
    bob.expect_state("connected")
    alice.expect_state("connected")
    return call_timings(alice, bob)


def test_video_call_shows_frames_both_ways_and_the_caller_hangs_up(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    # when
    timings = connect_video_call(alice, bob, users)
    # then
    assert alice.remote_video_decoding() is True
    assert bob.remote_video_decoding() is True
    assert alice.remote_video_size()["width"] > 0
    assert bob.remote_video_size()["width"] > 0
    assert alice.page.evaluate(CAMERA_SETTINGS_JS) == {"width": 640, "height": 360, "frameRate": 15}
    # bob's cost nodes up to his accept went with it (his picture came first, so no later report
    # carries acceptCall): the server returned them in both sides' connected state
    bob_costs = bob.page.evaluate("duet.api.getCallCosts().toJSON()")
    for person in (alice, bob):
        stored = person.page.evaluate("duet.api.getCallInfo().costs.client.callee")
        assert stored == {node: bob_costs[node] for node in stored}, person.username
        assert stored.get("acceptCall") == bob_costs["acceptCall"], person.username
    print_timings("video call", timings)
    # when
    alice.hang_up(bob)
    expect(alice.page.locator("#toast")).to_have_text(HUNG_UP)
    expect(bob.page.locator("#toast")).to_have_text(
        re.compile(rf"^{users.alice.name} hung up\. The call lasted 0:\d\d\.$"))
    expect(alice.page.locator("#call-view")).to_be_hidden()
    assert alice.peer_connection_count() == 0
    assert bob.peer_connection_count() == 0


def test_video_call_the_callee_hangs_up(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    connect_video_call(alice, bob, users)
    # both capture at the default camera settings
    for person in (alice, bob):
        assert person.page.evaluate(CAMERA_SETTINGS_JS) == {"width": 640, "height": 360,
                                                             "frameRate": 15}
    # when
    bob.hang_up(alice)
    expect(bob.page.locator("#toast")).to_have_text(HUNG_UP)
    expect(alice.page.locator("#toast")).to_have_text(
        re.compile(rf"^{users.bob.name} hung up\. The call lasted 0:\d\d\.$"))
    expect(bob.page.locator("#call-view")).to_be_hidden()


def test_the_camera_captures_at_the_video_settings_given_to_prepare_for_call(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    bob.page.evaluate("duet.api.prepareForCall({videoEncoderConfig: {width: 320, height: 240, frameRate: 10}})")
    # when
    connect_video_call(alice, bob, users)
    # then
    assert bob.page.evaluate(CAMERA_SETTINGS_JS) == {"width": 320, "height": 240, "frameRate": 10}
    assert alice.page.evaluate(CAMERA_SETTINGS_JS) == {"width": 640, "height": 360, "frameRate": 15}
    # (not the size alice receives: Chromium's one fake camera, shared by both contexts, sends
    # whatever size its first opener asked for)
    assert alice.remote_video_decoding() is True
    bob.click("#hangup")
    alice.expect_state("prepared", "remoteHangup")


def test_video_call_timings_over_repeated_calls(users, open_person):
    # given
    alice = open_person(users.alice)
    bob = open_person(users.bob)
    samples = []
    for number in range(1, TIMED_CALLS + 1):
        # when
        samples.append(connect_video_call(alice, bob, users))
        print_timings(f"call {number}", samples[-1])
        alice.hang_up(bob)
    print_timings(f"median of {TIMED_CALLS} video calls", medians(samples))
    assert len(samples) == TIMED_CALLS
