"""The three pages a user sees most, rendered by Chromium: the lobby, an incoming call, a call.

They are written to docs/screenshots/ when DUET_UPDATE_SCREENSHOTS=1, else to a temporary folder
(the test still checks that each page shows what it should). It runs its own server with only
the demo users, so the lobby looks as it does after `make run`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, Server, User

DEMO = {name: User(name, display) for name, display in [
    ("alice", "Alice Liddell"), ("bob", "Bob Marley"), ("carol", "Carol King"), ("dave", "Dave Brubeck")]}


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    instance = Server(tmp_path_factory.mktemp("duet-demo"), user_sets=0)
    yield instance
    instance.stop()


@pytest.fixture
def shots_dir(tmp_path) -> Path:
    if os.environ.get("DUET_UPDATE_SCREENSHOTS") == "1":
        return ROOT / "docs" / "screenshots"
    return tmp_path


def test_screenshots_of_lobby_incoming_call_and_call_view(demo_server, browser, shots_dir):
    from tests.e2e.support import Person

    people = {}
    try:
        for name in ("alice", "bob", "carol", "dave"):
            people[name] = Person(browser, demo_server.base_url, name)
            people[name].sign_in(f"{name}-duet")
        alice, bob, carol, dave = (people[name] for name in ("alice", "bob", "carol", "dave"))
        # given: carol and dave are in a call, bob is around
        carol.call(DEMO["dave"], "audio")
        dave.click("#accept")
        dave.expect_state("connected")
        expect(alice.person_row("Carol King")).to_have_attribute("data-status", "busy")
        expect(alice.person_row("Bob Marley")).to_have_attribute("data-status", "online")
        # when / then: the lobby
        alice.page.screenshot(path=str(shots_dir / "lobby.png"))
        # when: alice calls bob with a note
        alice.page.locator(".settings summary").click()
        alice.page.fill("#call-note", "Rehearsal tonight?")
        alice.page.locator("#call-note").blur()
        alice.call(DEMO["bob"], "video")
        bob.expect_state("calling", "remoteVideoCall")
        expect(bob.page.locator("#incoming .call-note")).to_have_text("“Rehearsal tonight?”")
        bob.wait_for_first_remote_frame()
        alice.wait_for_first_remote_frame()
        # then: the incoming-call dialog
        bob.page.screenshot(path=str(shots_dir / "incoming-call.png"))
        # when
        bob.click("#accept")
        alice.expect_state("connected")
        assert alice.remote_video_decoding() is True
        alice.page.locator(".timings summary").click()
        expect(alice.page.locator("#timings-list dt").first).to_be_visible()
        # then: the call view
        alice.page.screenshot(path=str(shots_dir / "call-view.png"))
        assert sorted(path.name for path in shots_dir.glob("*.png")) == [
            "call-view.png", "incoming-call.png", "lobby.png"]
        alice.click("#hangup")
        bob.expect_state("prepared", "remoteHangup")
        dave.click("#hangup")
        carol.expect_state("prepared", "remoteHangup")
    finally:
        for person in people.values():
            person.close()
