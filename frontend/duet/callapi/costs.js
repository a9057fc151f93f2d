/**
 * CallAPI's cost nodes of one call, measured on this device.
 *
 * The caller counts from `call()`, the callee from the moment the incoming call arrived (CallAPI
 * section 7, "Call Exception Diagnosis"). Each node keeps its first time only. Times are kept on
 * the page's high-resolution clock as epoch milliseconds, so two pages on one machine can be
 * compared (the browser tests do that); `toJSON` gives the wire form: {node: ms since start}.
 */

export const CostNode = Object.freeze({
  remoteUserRecvCall: "remoteUserRecvCall", // caller: the callee's device has the call
  acceptCall: "acceptCall", // caller: remoteAccepted arrived; callee: pressed accept
  localUserJoinChannel: "localUserJoinChannel", // the media connection of this device is up
  captureFirstLocalFrame: "captureFirstLocalFrame", // first frame of the camera (or mic)
  publishFirstLocalFrame: "publishFirstLocalFrame", // local media flowing to the peer
  remoteUserJoinChannel: "remoteUserJoinChannel", // the peer's media arrived
  recvFirstFrame: "recvFirstFrame", // first remote video frame decoded (audio: first audio)
  connected: "connected", // the server said connected
});

export function epochNow() {
  const clock = globalThis.performance;
  return clock && clock.timeOrigin ? clock.timeOrigin + clock.now() : Date.now();
}

export class CallCosts {
  constructor(now = epochNow) {
    this.now = now;
    this.startedAt = null;
    this.marks = new Map();
  }

  start(at = this.now()) {
    this.startedAt = at;
    this.marks.clear();
    return at;
  }

  /** Record a node the first time it happens; returns its ms since the start. */
  mark(node, at = this.now()) {
    if (this.startedAt == null) return null;
    if (!this.marks.has(node)) this.marks.set(node, at);
    return this.marks.get(node) - this.startedAt;
  }

  has(node) { return this.marks.has(node); }

  /** Epoch ms of a node (or of the start when `node` is "start"). */
  at(node) { return node === "start" ? this.startedAt : this.marks.get(node) ?? null; }

  toJSON() {
    const costs = {};
    for (const [node, at] of this.marks) costs[node] = Math.max(0, Math.round(at - this.startedAt));
    return costs;
  }
}
