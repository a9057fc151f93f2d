// What the page says about each way a call ends, and its small formatters.
import assert from "node:assert/strict";
import { test } from "node:test";

import { endMessage, formatDuration, peerOf, presenceText, timingRows } from "../duet/app/messages.js";
import { CallCosts } from "../duet/callapi/costs.js";

const CASES = [
  ["remoteRejected", "Bob declined the call."],
  ["localRejected", "You declined the call from Bob."],
  ["remoteCallBusy", "Bob is in another call."],
  ["remoteOffline", "Bob is offline."],
  ["callingTimeout", "Bob didn't answer."],
  ["remoteCallingTimeout", "You missed a call from Bob."],
  ["localCancelled", "Call cancelled."],
  ["remoteCancelled", "Missed call from Bob."],
  ["remoteHangup", "Bob hung up."],
  ["localHangup", "You hung up."],
  ["remoteConnectionLost", "Lost the connection to Bob. The call ended."],
  ["rtmLost", "Your connection was lost. The call ended."],
  ["answeredElsewhere", "Answered on another device."],
  ["cancelByCallerRecall", "Bob is calling again."],
  ["endedByServer", "The call was ended by Duet."],
  ["none", "The call ended."],
];

for (const [reason, sentence] of CASES) {
  test(`the end by ${reason} reads "${sentence}"`, () => {
    assert.equal(endMessage(reason, "Bob"), sentence);
  });
}

test("a hang-up after a connected call says how long it lasted", () => {
  assert.equal(endMessage("remoteHangup", "Bob", 83_400), "Bob hung up. The call lasted 1:23.");
});

test("durations read m:ss, or h:mm:ss past an hour", () => {
  assert.deepEqual([0, 7_000, 750_000, 3_723_000].map(formatDuration), ["0:00", "0:07", "12:30", "1:02:03"]);
});

test("the peer is the other participant", () => {
  const info = { caller: { id: 1 }, callee: { id: 2 } };
  assert.deepEqual([peerOf(info, 1), peerOf(info, 2)], [{ id: 2 }, { id: 1 }]);
});

test("presence reads Online, In a call, Offline", () => {
  assert.deepEqual(["online", "busy", "offline", "unknown"].map(presenceText),
                   ["Online", "In a call", "Offline", "Offline"]);
});

test("cost nodes keep their first time, in ms since the start", () => {
  let now = 5000;
  const costs = new CallCosts(() => now);
  costs.start();
  now = 5120.4;
  costs.mark("recvFirstFrame");
  now = 6000;
  costs.mark("recvFirstFrame");
  assert.deepEqual(costs.toJSON(), { recvFirstFrame: 120 });
  assert.deepEqual(timingRows(costs.toJSON(), { connected: 900 }, "callee"),
                   [["First remote frame", 120], ["Connected (server)", 900]]);
  assert.deepEqual(timingRows({ acceptCall: 2000, connected: 2040 }, {}, "callee"),
                   [["You answered", 2000], ["Connected", 2040], ["Answer to connected", 40]]);
});
