"""One person in the browser tests: a browser context of their own, signed in to the lobby."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]
PASSWORD = "pw-duet"
# The test server waits this long for a participant whose devices all vanished (20 s in
# production): long enough for a page reload, short enough for the connection-lost test.
RECONNECT_GRACE_S = 4
# How long a step of a call may take in the browser tests (a call event, a first frame).
STEP_MS = 10_000
# Frame callbacks a playing video must fire to count as decoding (the fake camera runs ~20 fps).
FRAMES_TO_COUNT = 5

VIDEO_DECODING_JS = """([selector, frames]) => new Promise((resolve) => {
  const video = document.querySelector(selector);
  if (!video || !video.videoWidth) { resolve(false); return; }
  let seen = 0;
  const count = () => { seen += 1; if (seen >= frames) resolve(true); else video.requestVideoFrameCallback(count); };
  video.requestVideoFrameCallback(count);
})"""

STATE_IS_JS = """([state, reason]) => {
  const app = document.getElementById("app");
  return app.dataset.callState === state && (reason === null || app.dataset.callReason === reason);
}"""
SHOWN_STATE_JS = """() => {
  const app = document.getElementById("app");
  return {state: app.dataset.callState ?? null, reason: app.dataset.callReason ?? null};
}"""

# Holds every message the server sends to the page until releaseMessages(): a slow downlink.
HOLD_INCOMING_JS = """() => {
  const ws = duet.api.socket.ws;
  const deliver = ws.onmessage;
  window.heldMessages = [];
  ws.onmessage = (message) => { if (window.heldMessages) heldMessages.push(message); else deliver(message); };
  window.releaseMessages = () => { const held = heldMessages; window.heldMessages = null; held.forEach(deliver); };
}"""

COSTS_JS = """() => {
  const costs = duet.api.getCallCosts();
  return {start: costs.at("start"), marks: Object.fromEntries(costs.marks)};
}"""


class Person:
    def __init__(self, browser: Browser, base_url: str, username: str):
        self.username = username
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": 1100, "height": 720})
        self.page: Page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(message.text)
                     if message.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def sign_in(self, password: str = PASSWORD) -> None:
        self.page.goto(f"{self.base_url}/login/")
        self.page.fill("input[name=username]", self.username)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")
        self.wait_ready()

    def wait_ready(self) -> None:
        expect(self.page.locator("#app")).to_have_attribute("data-ready", "true", timeout=STEP_MS)

    def close(self) -> None:
        self.context.close()

    def reload(self) -> None:
        """Reload the page (the same tab: the same device) and wait until it said hello."""
        self.page.reload()
        self.wait_ready()

    # ---- actions -------------------------------------------------------------------------------

    def person_row(self, display_name: str):
        return self.page.locator(f'.person[data-name="{display_name}"]')

    def call(self, user, call_type: str = "video") -> None:
        self.person_row(user.name).locator(f"button[data-call-type={call_type}]").click()

    def click(self, selector: str) -> None:
        self.page.click(selector)

    def wait_for_first_remote_frame(self) -> None:
        """Media negotiated while ringing: this device decoded the other side's first frame and
        the server has its report (no request of this device is waiting for a reply)."""
        self.page.wait_for_function(
            "duet.api.getCallCosts().has('recvFirstFrame') && duet.api.socket.pending.size === 0",
            timeout=STEP_MS)

    def hold_incoming_messages(self) -> None:
        """From now on the page hears nothing from the server (it acknowledges nothing either)
        until :meth:`release_incoming_messages`; what it sends still goes out."""
        self.page.evaluate(HOLD_INCOMING_JS)

    def release_incoming_messages(self) -> None:
        self.page.evaluate("releaseMessages()")

    def peer_connection_count(self) -> int:
        return self.page.evaluate("duet.api.getMediaEngine().peerConnections().length")

    # ---- observations ------------------------------------------------------------------------

    def expect_state(self, state: str, reason: str | None = None, timeout: int = STEP_MS) -> None:
        """Wait until the page shows this call state (and reason).

        A plain attribute check in the page, not ``expect(locator)``: a retrying ``expect``
        builds an accessibility snapshot of the page for its failure message on every failed
        check, which held the page's main thread for 50-150 ms at a time and delayed the very
        WebSocket messages the timing test measures (docs/benchmarks.md).
        """
        try:
            self.page.wait_for_function(STATE_IS_JS, arg=[state, reason], timeout=timeout)
        except PlaywrightTimeoutError:
            shown = self.page.evaluate(SHOWN_STATE_JS)
            raise AssertionError(f"{self.username}: expected call state {state!r} reason "
                                 f"{reason!r}, the page shows {shown}") from None

    def hang_up(self, peer: "Person") -> None:
        """Hang up this side's call: both pages are back to `prepared` (local and remote hangup)."""
        self.click("#hangup")
        self.expect_state("prepared", "localHangup")
        peer.expect_state("prepared", "remoteHangup")

    def expect_toast(self, text: str, timeout: int = STEP_MS) -> None:
        expect(self.page.locator("#toast")).to_have_text(text, timeout=timeout)

    def remote_video_decoding(self) -> bool:
        """The revealed remote video has a size and presents frames."""
        selector = "#remote-view video:not(.pending)"
        self.page.wait_for_function(
            "(selector) => (document.querySelector(selector)?.videoWidth ?? 0) > 0", arg=selector,
            timeout=STEP_MS)
        return self.page.evaluate(VIDEO_DECODING_JS, [selector, FRAMES_TO_COUNT])

    def remote_video_size(self) -> dict:
        return self.page.evaluate("""() => {
          const video = document.querySelector('#remote-view video:not(.pending)');
          return video ? {width: video.videoWidth, height: video.videoHeight} : null;
        }""")

    def costs(self) -> dict:
        """This device's cost nodes of the current call: {"start": epoch ms, "marks": {...}}."""
        return self.page.evaluate(COSTS_JS)
