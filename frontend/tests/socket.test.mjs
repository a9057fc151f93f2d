// CallSocket: hello first, ack and de-duplicate events, re-send unanswered frames with the same id.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import {
  CallSocket, CLOSE_UNAUTHENTICATED, DeviceMemory, RATE_LIMITED_RETRY_MS, RECONNECT_FIRST_MS,
  RECONNECT_MAX_MS,
} from "../duet/callapi/socket.js";
import { FakeWebSocket, ManualClock, MemoryStorage } from "./doubles.mjs";

const HELLO_DATA = { user: { id: 1 }, seq: 7, config: {}, active_call: null, presence: [] };

function makeSocket({ storage = new MemoryStorage(), watch } = {}) {
  const clock = new ManualClock();
  const socket = new CallSocket({
    url: "ws://duet.test/ws/calls/", memory: new DeviceMemory(storage, () => "abc"), watch,
    WebSocketImpl: FakeWebSocket, timers: clock, random: () => 0.5,
  });
  const seen = { events: [], hellos: [], statuses: [] };
  socket.on("event", (event, flags) => seen.events.push([event, flags]));
  socket.on("hello", (data, flags) => seen.hellos.push([data, flags]));
  socket.on("status", (status) => seen.statuses.push(status));
  return { socket, clock, seen, storage };
}

function answerHello(ws, data = HELLO_DATA) {
  ws.serverSends({ type: "reply", id: ws.frames("hello").at(-1).id, ok: true, data });
}

beforeEach(() => FakeWebSocket.reset());

test("hello is the first frame, with the stored device id and the watch list", () => {
  // given
  const { socket } = makeSocket({ watch: [2, 3] });
  // when
  socket.start();
  FakeWebSocket.last.open();
  // then
  assert.deepEqual(FakeWebSocket.last.sent.map(({ id, ...rest }) => rest),
                   [{ type: "hello", device_id: "web-abc", event_batches: true, watch: [2, 3] }]);
});

test("requests wait for the hello reply, then go out in order", async () => {
  // given
  const { socket } = makeSocket();
  socket.start();
  const ws = FakeWebSocket.last;
  ws.open();
  // when
  const replied = socket.request("call", { to: 2, call_type: "video" });
  // then
  assert.deepEqual(ws.sent.map((frame) => frame.type), ["hello"]);
  // when
  answerHello(ws);
  // then
  const call = ws.frames("call")[0];
  assert.deepEqual({ ...call, id: undefined }, { id: undefined, type: "call", to: 2, call_type: "video" });
  ws.serverSends({ type: "reply", id: call.id, ok: true, data: { call_id: "c1" } });
  assert.deepEqual(await replied, { call_id: "c1" });
});

test("an error reply rejects with its code", async () => {
  // given
  const { socket } = makeSocket();
  socket.start();
  const ws = FakeWebSocket.last;
  ws.open();
  answerHello(ws);
  // when
  const replied = socket.request("accept", { call_id: "c1" });
  ws.serverSends({ type: "reply", id: ws.frames("accept")[0].id, ok: false,
                   error: { code: "state_mismatch", message: "the call has ended" } });
  // then
  await assert.rejects(replied, { code: "state_mismatch", reason: "the call has ended" });
});

/** A socket started, open and past its hello reply. */
function readySocket() {
  const parts = makeSocket();
  parts.socket.start();
  const ws = FakeWebSocket.last;
  ws.open();
  answerHello(ws);
  return { ...parts, ws };
}

test("every sequenced event is acknowledged and a repeated seq is dropped", () => {
  // given
  const { ws, seen, storage } = readySocket();
  // when
  ws.serverSends({ type: "event", seq: 8, name: "call.state", call_id: "c1" });
  ws.serverSends({ type: "event", seq: 8, name: "call.state", call_id: "c1" });
  ws.serverSends({ type: "event", seq: 9, name: "call.event", call_id: "c1" });
  // then
  assert.deepEqual(ws.frames("ack"), [{ type: "ack", seq: 8 }, { type: "ack", seq: 8 }, { type: "ack", seq: 9 }]);
  assert.deepEqual(seen.events.map(([event]) => event.seq), [8, 9]);
  assert.equal(storage.getItem("duet.lastSeq"), "9");
});

test("an events frame is acknowledged once, by its highest seq, and its events are handled in order", () => {
  // given
  const { ws, seen, storage } = readySocket();
  ws.serverSends({ type: "event", seq: 8, name: "call.state", call_id: "c1" });
  // when a batch repeats seq 8 and brings 9 and 10
  ws.serverSends({ type: "events", events: [
    { type: "event", seq: 8, name: "call.state", call_id: "c1" },
    { type: "event", seq: 9, name: "call.state", call_id: "c1" },
    { type: "event", seq: 10, name: "call.event", call_id: "c1" },
  ] });
  // then
  assert.deepEqual(ws.frames("ack"), [{ type: "ack", seq: 8 }, { type: "ack", seq: 10 }]);
  assert.deepEqual(seen.events.map(([event]) => event.seq), [8, 9, 10]);
  assert.equal(storage.getItem("duet.lastSeq"), "10");
});

test("a reply's events are handled after the code awaiting the reply, and later frames wait behind them", async () => {
  // given
  const { socket, ws, clock, seen } = readySocket();
  const order = [];
  socket.on("event", (event) => order.push(`event ${event.seq}`));
  const replied = socket.request("call", { to: 2, call_type: "video" })
    .then((data) => order.push(`reply ${data.call_id}`));
  // when the reply carries seqs 8 and 9, and seq 10 and a presence change follow at once
  ws.serverSends({ type: "reply", id: ws.frames("call")[0].id, ok: true, data: { call_id: "c1" },
                   events: [{ type: "event", seq: 8, name: "call.state", call_id: "c1" },
                            { type: "event", seq: 9, name: "call.event", call_id: "c1" }] });
  ws.serverSends({ type: "event", seq: 10, name: "call.event", call_id: "c1" });
  ws.serverSends({ type: "event", name: "presence", call_id: null, user_id: 2, status: "busy" });
  await replied;
  // then: acknowledged at once, nothing handled before the reply's awaiters ran
  assert.deepEqual(ws.frames("ack"), [{ type: "ack", seq: 9 }, { type: "ack", seq: 10 }]);
  assert.deepEqual(order, ["reply c1"]);
  // when the next turn comes
  clock.advance(0);
  // then
  assert.deepEqual(order, ["reply c1", "event 8", "event 9", "event 10", "event undefined"]);
  assert.deepEqual(seen.events.map(([event]) => event.status ?? event.seq), [8, 9, 10, "busy"]);
  // and afterwards events are handled at once again
  ws.serverSends({ type: "event", seq: 11, name: "call.state", call_id: "c1" });
  assert.equal(order.at(-1), "event 11");
});

test("a hello reply whose seq is below the device's own resets it: the server's new events are not dropped", () => {
  // given a page that had seen seq 20, on a server that lost its events after 17
  const { ws, seen, storage } = openReloadedPage();
  // when
  answerHello(ws, { ...HELLO_DATA, seq: 17 });
  ws.serverSends({ type: "event", seq: 18, name: "call.state", call_id: "c2" });
  // then
  assert.deepEqual(seen.events.map(([event]) => event.seq), [18]);
  assert.equal(storage.getItem("duet.lastSeq"), "18");
});

test("unsequenced presence events are passed on and not acknowledged", () => {
  // given
  const { socket, seen } = makeSocket();
  socket.start();
  const ws = FakeWebSocket.last;
  ws.open();
  answerHello(ws);
  // when
  ws.serverSends({ type: "event", name: "presence", call_id: null, user_id: 2, status: "busy" });
  // then
  assert.deepEqual(ws.frames("ack"), []);
  assert.deepEqual(seen.events.map(([event]) => event.status), ["busy"]);
});

test("after a drop it reconnects with backoff, says hello with last_seq and re-sends the same frame id", () => {
  // given
  const { socket, clock } = makeSocket();
  socket.start();
  const first = FakeWebSocket.last;
  first.open();
  answerHello(first);
  first.serverSends({ type: "event", seq: 12, name: "call.state", call_id: "c1" });
  socket.request("hangup", { call_id: "c1" }).catch(() => {});
  const hangupId = first.frames("hangup")[0].id;
  // when
  first.close(1006);
  // then
  assert.deepEqual(clock.pendingDelays().filter((ms) => ms < 20000), [RECONNECT_FIRST_MS]);
  // when
  clock.advance(RECONNECT_FIRST_MS);
  const second = FakeWebSocket.last;
  second.open();
  // then
  assert.notEqual(second, first);
  assert.equal(second.frames("hello")[0].last_seq, 12);
  assert.deepEqual(second.frames("hangup"), []);
  // when
  answerHello(second, { ...HELLO_DATA, seq: 12 });
  // then
  assert.deepEqual(second.frames("hangup").map((frame) => frame.id), [hangupId]);
});

test("backoff doubles per failed attempt up to its maximum", () => {
  // given
  const { socket, clock } = makeSocket();
  socket.start();
  const delays = [];
  // when
  for (let attempt = 0; attempt < 8; attempt += 1) {
    FakeWebSocket.last.close(1006);
    delays.push(Math.min(...clock.pendingDelays()));
    clock.advance(delays.at(-1));
  }
  // then
  assert.deepEqual(delays, [250, 500, 1000, 2000, 4000, RECONNECT_MAX_MS, RECONNECT_MAX_MS, RECONNECT_MAX_MS]);
});

test("an unauthenticated close stops for good", () => {
  // given
  const { socket, clock, seen } = makeSocket();
  socket.start();
  // when
  FakeWebSocket.last.close(CLOSE_UNAUTHENTICATED);
  clock.advance(60000);
  // then
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.deepEqual(seen.statuses, ["connecting", "unauthenticated"]);
});

/** A page reloaded in a tab that had handled seq 20: its socket started, its first one open. */
function openReloadedPage() {
  const storage = new MemoryStorage({ "duet.deviceId": "web-kept", "duet.lastSeq": "20" });
  const parts = makeSocket({ storage });
  parts.socket.start();
  FakeWebSocket.last.open();
  return { ...parts, ws: FakeWebSocket.last };
}

test("a reloaded page marks the events replayed before its first hello reply as stale", () => {
  // given
  const { ws, seen } = openReloadedPage();
  // when
  ws.serverSends({ type: "event", seq: 21, name: "call.signal", call_id: "c1" });
  answerHello(ws, { ...HELLO_DATA, seq: 21 });
  ws.serverSends({ type: "event", seq: 22, name: "call.signal", call_id: "c1" });
  // then
  assert.equal(ws.frames("hello")[0].device_id, "web-kept");
  assert.equal(ws.frames("hello")[0].last_seq, 20);
  assert.deepEqual(seen.events.map(([event, flags]) => [event.seq, flags.stale]), [[21, true], [22, false]]);
  assert.deepEqual(seen.hellos.map(([, flags]) => flags), [{ firstTime: true, pageResume: true }]);
});

test("only a reloaded page's first hello says media_reset, not its later reconnects", () => {
  // given
  const { ws: first, clock } = openReloadedPage();
  answerHello(first, { ...HELLO_DATA, seq: 20 });
  // when the living page's socket drops and comes back
  first.close(1006);
  clock.advance(RECONNECT_FIRST_MS);
  const second = FakeWebSocket.last;
  second.open();
  // then
  assert.deepEqual(first.frames("hello").map(({ id, ...rest }) => rest),
                   [{ type: "hello", device_id: "web-kept", event_batches: true, last_seq: 20,
                      media_reset: true }]);
  assert.deepEqual(second.frames("hello").map(({ id, ...rest }) => rest),
                   [{ type: "hello", device_id: "web-kept", event_batches: true, last_seq: 20 }]);
});

test("events replayed after a drop on a living page are not stale", () => {
  // given
  const { socket, clock, seen } = makeSocket();
  socket.start();
  FakeWebSocket.last.open();
  answerHello(FakeWebSocket.last);
  FakeWebSocket.last.close(1006);
  clock.advance(RECONNECT_FIRST_MS);
  const ws = FakeWebSocket.last;
  ws.open();
  // when
  ws.serverSends({ type: "event", seq: 8, name: "call.state", call_id: "c1" });
  // then
  assert.deepEqual(seen.events.map(([event, flags]) => [event.seq, flags.replayed, flags.stale]), [[8, true, false]]);
});

test("a frame refused as rate_limited goes again with the same id and its later reply counts", async () => {
  // given
  const { socket, clock } = makeSocket();
  socket.start();
  const ws = FakeWebSocket.last;
  ws.open();
  answerHello(ws);
  const replied = socket.request("signal", { call_id: "c1", payload: {} });
  const id = ws.frames("signal")[0].id;
  // when
  ws.serverSends({ type: "reply", id, ok: false, error: { code: "rate_limited", message: "slow down" } });
  clock.advance(RATE_LIMITED_RETRY_MS);
  ws.serverSends({ type: "reply", id, ok: true, data: {} });
  // then
  assert.deepEqual(ws.frames("signal").map((frame) => frame.id), [id, id]);
  assert.deepEqual(await replied, {});
});
