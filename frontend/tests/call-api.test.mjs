// CallApi: it renders the server's call states to listeners and drives the media engine from them.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CallApi } from "../duet/callapi/call-api.js";
import { MILESTONE_REPORT_DELAY_MS } from "../duet/callapi/call-api.js";
import { CallEvent } from "../duet/callapi/codes.js";
import { FakeCallSocket, FakeEngine, ManualClock, settle } from "./doubles.mjs";

const ALICE = { id: 1, username: "alice", display_name: "Alice" };
const BOB = { id: 2, username: "bob", display_name: "Bob" };
const HELLO = { user: ALICE, seq: 0, config: { media: { engine: "webrtc", ice_servers: [] } },
                active_call: null, presence: [{ user_id: 2, status: "online" }] };

let seq = 0;
function state(callId, name, reason, info = {}) {
  return { type: "event", seq: ++seq, name: "call.state", call_id: callId, state: name, reason,
           event_reason: "", info: { caller: ALICE, callee: BOB, call_type: "video",
                                     channel: `duet-${callId}`, extension: {}, active_device: null, ...info } };
}
function callEvent(callId, event) {
  return { type: "event", seq: ++seq, name: "call.event", call_id: callId, event };
}

/** A CallApi signed in as `user`, with a recording listener; returns its parts. */
async function makeApi({ user = ALICE, listener = {}, hello = {}, prepare = {} } = {}) {
  const socket = new FakeCallSocket();
  const engine = new FakeEngine();
  let clock = 1000;
  const timers = new ManualClock();
  const api = new CallApi({ createSocket: () => socket, createEngine: async () => engine,
                            now: () => clock, timers });
  const seen = [];
  api.addListener({
    onCallStateChanged: (s, reason) => seen.push(`${s}/${reason}`),
    onCallEventChanged: (event) => seen.push(`event ${event}`),
    onCallConnected: () => seen.push("onCallConnected"),
    onCallDisconnected: (room, by, me, at, duration) => seen.push(`onCallDisconnected ${by} ${duration}`),
    onPresenceChanged: (userId, status) => seen.push(`presence ${userId} ${status}`),
    ...listener,
  });
  api.prepareForCall(prepare);
  const ready = api.initialize({ socketUrl: "ws://x" });
  socket.hello({ ...HELLO, user, ...hello }, hello.flags);
  await ready;
  return { api, socket, engine, seen, timers, tick: (ms) => { clock += ms; } };
}

test("prepareForCall makes an idle client prepared; hello's presence reaches the listener", async () => {
  // when
  const { api, seen } = await makeApi();
  // then
  assert.equal(api.state, "prepared");
  assert.deepEqual(seen, ["prepared/none", "presence 2 online"]);
});

test("call() captures before the reply and sends the call with extension and ring timeout", async () => {
  // given
  const { api, socket, engine } = await makeApi({ prepare: { callTimeoutMillisecond: 5000, userExtension: { from: "lobby" } } });
  socket.replies.call = { call_id: "c1", channel: "duet-c1", media: {}, outcome: "ring" };
  // when
  const reply = await api.call(2, { callType: "video", callExtension: { note: "hi" } });
  // then
  assert.equal(reply.call_id, "c1");
  assert.deepEqual(engine.names(), ["setViews", "startCapture"]);
  assert.deepEqual(socket.sent("call"), [{ type: "call", to: 2, call_type: "video",
                                           extension: { from: "lobby", note: "hi" }, timeout_ms: 5000 }]);
});

test("the caller's call runs calling, connecting, connected, hang-up with media driven at each step", async () => {
  // given
  const { api, socket, engine, seen, tick } = await makeApi();
  socket.replies.call = { call_id: "c1", channel: "duet-c1", media: {}, outcome: "ring" };
  await api.call(2, { callType: "video" });
  seen.length = 0;
  // when
  socket.event(state("c1", "calling", "localVideoCall"));
  socket.event(callEvent("c1", "remoteUserRecvCall"));
  socket.event(state("c1", "connecting", "remoteAccepted", { active_device: "bob-phone" }));
  engine.emit("firstRemoteFrame", { device: "bob-phone" });
  socket.event(state("c1", "connected", "recvRemoteFirstFrame", { active_device: "bob-phone" }));
  tick(4000);
  await api.hangup(2);
  socket.event(state("c1", "prepared", "localHangup", { active_device: "bob-phone" }));
  // then
  assert.deepEqual(seen, [
    "calling/localVideoCall", "event joinRTCStart", "event remoteUserRecvCall",
    "connecting/remoteAccepted", "event recvRemoteFirstFrame", "connected/recvRemoteFirstFrame",
    "onCallConnected", "prepared/localHangup", "onCallDisconnected 1 4000",
  ]);
  assert.deepEqual(engine.names().slice(2), ["join", "selectRemote", "reveal", "leave"]);
  assert.deepEqual(engine.calls.find(([name]) => name === "join")[1], { role: "caller", callType: "video", credentials: {} });
  assert.deepEqual(engine.calls.find(([name]) => name === "selectRemote"), ["selectRemote", "bob-phone"]);
  assert.deepEqual(socket.sent("hangup"), [{ type: "hangup", call_id: "c1", reason: "" }]);
  assert.equal(api.getCallId(), "");
});

for (const [label, listener, joinsWhileRinging] of [
  ["no canJoinRtcOnCalling", {}, true],
  ["canJoinRtcOnCalling true", { canJoinRtcOnCalling: () => true }, true],
  ["canJoinRtcOnCalling false", { canJoinRtcOnCalling: () => false }, false],
]) {
  test(`the callee with ${label} joins the media ${joinsWhileRinging ? "while ringing" : "on accept"}`, async () => {
    // given
    const { api, socket, engine } = await makeApi({ user: BOB, listener });
    socket.replies.accept = { channel: "duet-c2", media: {} };
    // when
    socket.event(state("c2", "calling", "remoteVideoCall"));
    // then
    assert.deepEqual(engine.names().includes("join"), joinsWhileRinging);
    // when
    await api.accept(1);
    // then
    assert.deepEqual(engine.calls.filter(([name]) => name === "join"),
                     [["join", { role: "callee", callType: "video", credentials: null }]]);
    assert.deepEqual(socket.sent("accept"), [{ type: "accept", call_id: "c2", costs: { acceptCall: 0 } }]);
  });
}

test("accept sends its frame before the media joins (canJoinRtcOnCalling false)", async () => {
  // given
  const { api, socket, engine } = await makeApi({ user: BOB, listener: { canJoinRtcOnCalling: () => false } });
  socket.event(state("c2", "calling", "remoteVideoCall"));
  let acceptsSentAtJoin = null;
  engine.join = () => { acceptsSentAtJoin = socket.sent("accept").length; };
  // when
  await api.accept(1);
  // then
  assert.equal(acceptsSentAtJoin, 1);
});

test("an engine that needs credentials joins on accept with the accept's, not with a token request", async () => {
  // given
  const { api, socket, engine } = await makeApi({ user: BOB, listener: { canJoinRtcOnCalling: () => false } });
  engine.needsCredentials = true;
  socket.event(state("c2", "calling", "remoteVideoCall"));
  socket.replies.accept = { channel: "duet-c2", media: { engine: "agora", token: "from-accept" } };
  // when
  await api.accept(1);
  await settle();
  // then
  assert.deepEqual(socket.sent("token"), []);
  assert.deepEqual(engine.calls.filter(([name]) => name === "join"), [
    ["join", { role: "callee", callType: "video", credentials: { engine: "agora", token: "from-accept" } }]]);
});

test("an accept that fails leaves the media unjoined, and the next accept joins it", async () => {
  // given
  const { api, socket, engine } = await makeApi({ user: BOB, listener: { canJoinRtcOnCalling: () => false } });
  engine.needsCredentials = true;
  socket.event(state("c2", "calling", "remoteVideoCall"));
  socket.replies.accept = Object.assign(new Error("x"), { code: "timeout", reason: "no reply" });
  await assert.rejects(api.accept(1), { code: "timeout" });
  await settle();
  assert.equal(engine.names().includes("join"), false);
  // when
  socket.replies.accept = { channel: "duet-c2", media: { token: "t2" } };
  await api.accept(1);
  await settle();
  // then
  assert.deepEqual(engine.calls.filter(([name]) => name === "join").map(([, options]) => options.credentials),
                   [{ token: "t2" }]);
});

test("a ringing callee's first remote frame rides on the accept, once; other milestones wait for connected", async () => {
  // given
  const { api, socket, engine, tick, timers } = await makeApi({ user: BOB });
  socket.event(state("c3", "calling", "remoteVideoCall"));
  const events = [];
  api.addListener({ onCallEventChanged: (event) => events.push(event) });
  // when
  tick(100);
  engine.emit("localFrame");
  tick(50);
  engine.emit("joined");
  tick(20);
  engine.emit("firstRemoteFrame", { device: "alice-laptop" });
  engine.emit("firstRemoteFrame", { device: "alice-laptop" });
  // then: the app hears of it at once; the server with the answer
  assert.deepEqual(socket.sent("media"), []);
  assert.equal(events.filter((event) => event === CallEvent.recvRemoteFirstFrame).length, 1);
  // when
  tick(1000);
  await api.accept(1);
  socket.event(state("c3", "connecting", "localAccepted", { active_device: "bob-web" }));
  socket.event(state("c3", "connected", "localAccepted", { active_device: "bob-web" }));
  // then
  assert.deepEqual(socket.sent("accept").map(({ first_remote_frame }) => first_remote_frame), [true]);
  assert.deepEqual(socket.sent("media"), []);
  // when
  timers.advance(MILESTONE_REPORT_DELAY_MS);
  // then
  assert.deepEqual(socket.sent("media").map(({ milestone }) => milestone), ["local_frame", "joined"]);
  assert.deepEqual(api.getCallCosts().toJSON(), { captureFirstLocalFrame: 100, localUserJoinChannel: 150,
                                                  recvFirstFrame: 170, acceptCall: 1170, connected: 1170 });
});

test("accept sends the cost nodes measured up to it, in the first frame report's form", async () => {
  // given: the callee's device captured, joined and saw the caller's picture while ringing
  const { api, socket, engine, tick } = await makeApi({ user: BOB });
  socket.replies.accept = { channel: "duet-c13", media: {} };
  socket.event(state("c13", "calling", "remoteVideoCall"));
  tick(100.4);
  engine.emit("localFrame");
  tick(50);
  engine.emit("joined");
  tick(20);
  engine.emit("firstRemoteFrame", { device: "alice-laptop" });
  // when the callee answers 1.2 s later
  tick(1200);
  await api.accept(1);
  // then
  const expected = { captureFirstLocalFrame: 100, localUserJoinChannel: 150, recvFirstFrame: 170,
                     acceptCall: 1370 };
  assert.deepEqual(socket.sent("accept"), [{ type: "accept", call_id: "c13", costs: expected,
                                             first_remote_frame: true }]);
  assert.deepEqual(socket.sent("media"), []);
});

test("an accept that fails keeps the picture's frame for the accept that follows", async () => {
  // given: the picture came while ringing, and the first accept gets no answer
  const { api, socket, engine } = await makeApi({ user: BOB });
  socket.event(state("c15", "calling", "remoteVideoCall"));
  engine.emit("firstRemoteFrame", { device: "alice-laptop" });
  socket.replies.accept = Object.assign(new Error("x"), { code: "timeout", reason: "no reply" });
  await assert.rejects(api.accept(1), { code: "timeout" });
  // when the callee answers again
  socket.replies.accept = { channel: "duet-c15", media: {} };
  await api.accept(1);
  // then both accepts said the picture was there, and no media report was needed
  assert.deepEqual(socket.sent("accept").map(({ first_remote_frame }) => first_remote_frame),
                   [true, true]);
  assert.deepEqual(socket.sent("media"), []);
});

test("a frame that comes while the accept is on its way is reported on its own", async () => {
  // given
  const { api, socket, engine } = await makeApi({ user: BOB });
  socket.replies.accept = { channel: "duet-c16", media: {} };
  socket.event(state("c16", "calling", "remoteVideoCall"));
  // when the picture comes after the answer left, before the server's reply
  const accepting = api.accept(1);
  engine.emit("firstRemoteFrame", { device: "alice-laptop" });
  await accepting;
  // then
  assert.deepEqual(socket.sent("accept").map(({ first_remote_frame }) => first_remote_frame),
                   [undefined]);
  assert.deepEqual(socket.sent("media").map(({ milestone }) => milestone), ["first_remote_frame"]);
});

test("a call that ends unanswered drops the ringing callee's held frame", async () => {
  // given
  const { socket, engine } = await makeApi({ user: BOB });
  socket.event(state("c17", "calling", "remoteVideoCall"));
  engine.emit("firstRemoteFrame", { device: "alice-laptop" });
  // when the caller gives up
  socket.event(state("c17", "prepared", "remoteCancelled"));
  // then the server hears that the device left the media, not of the frame
  assert.deepEqual(socket.sent("media").map(({ milestone }) => milestone), ["left"]);
});

test("an accept before any picture sends acceptCall alone; the first frame's report adds its nodes", async () => {
  // given
  const { api, socket, engine, tick } = await makeApi({ user: BOB });
  socket.replies.accept = { channel: "duet-c14", media: {} };
  socket.event(state("c14", "calling", "remoteVideoCall"));
  // when
  tick(800);
  await api.accept(1);
  tick(300);
  engine.emit("firstRemoteFrame", { device: "alice-laptop" });
  // then
  assert.deepEqual(socket.sent("accept").map(({ costs }) => costs), [{ acceptCall: 800 }]);
  assert.deepEqual(socket.sent("media").map(({ costs }) => costs),
                   [{ acceptCall: 800, recvFirstFrame: 1100 }]);
});

test("firstFrameWaittingDisabled asks the server not to wait for a first frame, on accept", async () => {
  // given
  const { api, socket } = await makeApi({ user: BOB, prepare: { firstFrameWaittingDisabled: true } });
  socket.event(state("c4", "calling", "remoteVideoCall"));
  // when
  await api.accept(1);
  socket.event(state("c4", "connecting", "localAccepted", { active_device: "bob-web" }));
  socket.event(state("c4", "connected", "localAccepted", { active_device: "bob-web" }));
  // then: no first frame is claimed before one arrives
  assert.deepEqual(socket.sent("accept"), [{ type: "accept", call_id: "c4", wait_first_frame: false,
                                             costs: { acceptCall: 0 } }]);
  assert.deepEqual(socket.sent("media"), []);
  assert.equal(api.state, "connected");
});

test("firstFrameWaittingDisabled asks the server not to wait for a first frame, on call", async () => {
  // given
  const { api, socket } = await makeApi({ prepare: { firstFrameWaittingDisabled: true } });
  socket.replies.call = { call_id: "c4", channel: "duet-c4", media: {}, outcome: "ring" };
  // when
  await api.call(2, { callType: "audio" });
  api.prepareForCall({ firstFrameWaittingDisabled: false });
  socket.replies.call = { call_id: "c5", channel: "duet-c5", media: {}, outcome: "ring" };
  socket.event(state("c4", "prepared", "localCancelled"));
  await api.call(2, { callType: "audio" });
  // then
  assert.deepEqual(socket.sent("call"), [{ type: "call", to: 2, call_type: "audio", wait_first_frame: false },
                                         { type: "call", to: 2, call_type: "audio" }]);
});

test("prepareForCall's videoEncoderConfig reaches the engine, before and after hello", async () => {
  // given: set before the engine exists
  const { api, engine } = await makeApi({ prepare: { videoEncoderConfig: { frameRate: 24 } } });
  // then
  assert.deepEqual(engine.videoEncoderConfig, { width: 640, height: 360, frameRate: 24 });
  // when: set again later; left out, it keeps its value
  api.prepareForCall({ videoEncoderConfig: { width: 1280, height: 720 } });
  api.prepareForCall({ callTimeoutMillisecond: 5000 });
  // then
  assert.deepEqual(engine.videoEncoderConfig, { width: 1280, height: 720, frameRate: 15 });
});

test("a bad videoEncoderConfig is refused with a TypeError and changes nothing", async () => {
  // given
  const { api, engine } = await makeApi();
  // when / then
  assert.throws(() => api.prepareForCall({ callTimeoutMillisecond: 5000, videoEncoderConfig: { width: -1 } }),
                { name: "TypeError", message: /videoEncoderConfig.width must be a whole number/ });
  assert.equal(api.prepareConfig.callTimeoutMillisecond, null);
  assert.deepEqual(engine.videoEncoderConfig, { width: 640, height: 360, frameRate: 15 });
});

test("a busy callee ends the dialed call at once", async () => {
  // given
  const { api, socket, engine, seen } = await makeApi();
  socket.replies.call = { call_id: "c5", channel: "duet-c5", media: {}, outcome: "busy" };
  await api.call(2);
  seen.length = 0;
  // when
  socket.event(state("c5", "prepared", "remoteCallBusy"));
  socket.event(callEvent("c5", "remoteCallBusy"));
  // then
  assert.deepEqual(seen, ["prepared/remoteCallBusy", "event remoteCallBusy"]);
  assert.deepEqual(engine.names().at(-1), "leave");
  assert.equal(api.state, "prepared");
});

test("the end of a call this device is not in changes nothing", async () => {
  // given
  const { api, socket, seen } = await makeApi({ user: BOB });
  socket.event(state("c6", "calling", "remoteVideoCall"));
  seen.length = 0;
  // when
  socket.event(state("old-call", "prepared", "remoteCancelled"));
  // then
  assert.deepEqual(seen, []);
  assert.equal(api.getCallId(), "c6");
});

test("another device answering ends the call here with answeredElsewhere", async () => {
  // given
  const { socket, engine, seen } = await makeApi({ user: BOB });
  socket.event(state("c7", "calling", "remoteVideoCall"));
  seen.length = 0;
  // when
  socket.event(state("c7", "prepared", "answeredElsewhere", { active_device: "bob-phone" }));
  // then
  assert.deepEqual(seen, ["prepared/answeredElsewhere"]);
  assert.equal(engine.names().at(-1), "leave");
  assert.deepEqual(socket.sent("media").map(({ milestone }) => milestone), ["left"]);
});

test("signals reach the engine only for the current call", async () => {
  // given
  const { socket, engine } = await makeApi({ user: BOB });
  socket.event(state("c8", "calling", "remoteVideoCall"));
  // when
  socket.event({ type: "event", seq: ++seq, name: "call.signal", call_id: "c8", from_device: "a1",
                 payload: { kind: "answer" } });
  socket.event({ type: "event", seq: ++seq, name: "call.signal", call_id: "other", from_device: "a1",
                 payload: { kind: "answer" } });
  // then
  assert.deepEqual(engine.calls.filter(([name]) => name === "handleSignal"),
                   [["handleSignal", "a1", { kind: "answer" }]]);
});

test("a reloaded caller resumes its connected call from hello's active_call and asks for a new offer", async () => {
  // given: the page had handled events; replayed ones are stale
  const active = state("c9", "connected", "recvRemoteFirstFrame", { active_device: "bob-web" });
  // when
  const { api, socket, engine, seen } = await makeApi({
    hello: { active_call: active, flags: { firstTime: true, pageResume: true } } });
  socket.event(state("c9", "calling", "localVideoCall"), { replayed: true, stale: true });
  // then
  assert.equal(api.getCallId(), "c9");
  assert.deepEqual(seen.filter((line) => line.includes("/")), ["prepared/none", "connected/recvRemoteFirstFrame"]);
  assert.deepEqual(engine.names().slice(1), ["join", "restart", "selectRemote", "reveal"]);
});

for (const [label, delivered, expected] of [
  ["a callee device has the call: it rings", true,
   ["calling/localVideoCall", "event joinRTCStart", "event remoteUserRecvCall"]],
  ["no callee device has the call yet: it calls", false,
   ["calling/localVideoCall", "event joinRTCStart"]],
]) {
  test(`a caller reloaded while ringing, ${label}`, async () => {
    // given: the receipt went to the page this one replaced
    const active = state("c11", "calling", "localVideoCall", { delivered });
    // when
    const { api, seen } = await makeApi({
      hello: { active_call: active, flags: { firstTime: true, pageResume: true } } });
    // then: the listeners hear what the live remoteUserRecvCall said, with no cost node made up
    assert.deepEqual(seen.slice(seen.indexOf("calling/localVideoCall")), expected);
    assert.equal(api.getCallCosts().has("remoteUserRecvCall"), false);
  });
}

test("a living page's reconnect does not repeat a receipt it already heard", async () => {
  // given
  const { socket, seen } = await makeApi();
  socket.replies.call = { call_id: "c12", channel: "duet-c12", media: {}, outcome: "ring" };
  const calling = state("c12", "calling", "localVideoCall");
  socket.event(calling);
  socket.event(callEvent("c12", "remoteUserRecvCall"));
  seen.length = 0;
  // when: the socket drops and says hello again on the same page
  socket.hello({ ...HELLO, active_call: { ...calling, info: { ...calling.info, delivered: true } } },
               { firstTime: false, pageResume: false });
  // then
  assert.deepEqual(seen, ["presence 2 online"]);
});

test("a call that ended while the device was away ends here at the next hello", async () => {
  // given
  const { api, socket, engine, seen } = await makeApi({ user: BOB });
  socket.event(state("c10", "calling", "remoteVideoCall"));
  seen.length = 0;
  // when
  socket.hello({ ...HELLO, user: BOB }, { firstTime: false, pageResume: false });
  // then
  assert.deepEqual(seen, ["presence 2 online", "prepared/none"]);
  assert.equal(engine.names().at(-1), "leave");
  assert.equal(api.getCallId(), "");
});

test("a refused intent reports onCallError and the stateMismatch event", async () => {
  // given
  const errors = [];
  const { api, socket, seen } = await makeApi({ user: BOB,
    listener: { onCallError: (...args) => errors.push(args) } });
  socket.event(state("c11", "calling", "remoteVideoCall"));
  socket.replies.accept = Object.assign(new Error("x"), { code: "state_mismatch", reason: "the call has ended" });
  seen.length = 0;
  // when
  await assert.rejects(api.accept(1), { code: "state_mismatch" });
  // then
  assert.deepEqual(seen, ["event stateMismatch"]);
  assert.deepEqual(errors, [["sendMessageFail", "message", "state_mismatch", "the call has ended"]]);
});

test("mute and token renewal go to the engine", async () => {
  // given
  const { api, socket, engine } = await makeApi({ user: BOB });
  socket.event(state("c12", "calling", "remoteVideoCall"));
  socket.replies.token = { media: { token: "fresh" } };
  // when
  api.muteLocalAudio(true);
  api.muteLocalVideo(false);
  await api.renewToken();
  // then
  assert.deepEqual(engine.calls.slice(-3), [["setLocalAudioMuted", true], ["setLocalVideoMuted", false],
                                            ["renewToken", "fresh"]]);
  assert.deepEqual(socket.sent("token"), [{ type: "token", call_id: "c12" }]);
});

test("deinitialize ends a ringing call, tears the media down and closes the socket", async () => {
  // given
  const { api, socket, engine, seen } = await makeApi({ user: BOB });
  socket.event(state("c13", "calling", "remoteVideoCall"));
  seen.length = 0;
  // when
  await api.deinitialize();
  // then
  assert.deepEqual(socket.sent("reject"), [{ type: "reject", call_id: "c13", reason: "deinitialize" }]);
  assert.equal(socket.stopped, true);
  assert.equal(engine.names().at(-1), "leave");
  assert.deepEqual(seen, ["event deinitialize"]);
  assert.equal(api.state, "idle");
});
