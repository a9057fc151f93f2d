"""A video call in two browsers: the picture is there when the callee answers."""

from __future__ import annotations

from tests.e2e.support import STEP_MS
from tests.e2e.timings import call_timings, print_timings


def test_video_call_connects_with_frames_flowing_both_ways_and_caller_hangs_up(users, open_person):
    # given
    alice = open_person(users["alice"])
    bob = open_person(users["bob"])
    # when
    alice.call("Bob " + users["bob"][3:], "video")
    bob.expect_state("calling", "remoteVideoCall")
    alice.expect_state("calling", "localVideoCall")
    bob.page.locator("#outgoing").is_visible()
    bob.click("#accept")
    # then
    bob.expect_state("connected")
    alice.expect_state("connected")
    assert alice.remote_video_decoding() is True
    assert bob.remote_video_decoding() is True
    assert alice.remote_video_size()["width"] > 0
    assert bob.remote_video_size()["width"] > 0
    print_timings("video call", call_timings(alice, bob))
    # when
    alice.click("#hangup")
    # then
    alice.expect_state("prepared", "localHangup")
    bob.expect_state("prepared", "remoteHangup")
    alice.expect_toast("You hung up.", timeout=STEP_MS)
