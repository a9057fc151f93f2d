/**
 * The call socket of one device: the transport half of the client (CallAPI's signal client).
 *
 * Invariants it keeps, from shared/spec/protocol.md:
 * - `hello` is the first frame of every connection; nothing else is sent before its reply;
 * - every event with a `seq` is acknowledged at once (the caller's "ringing" is the server seeing
 *   the callee's ack) and handled once: a seq at or below the last handled one is dropped;
 * - hello asks for `event_batches` (docs/protocol.md): an `events` frame carries several events,
 *   acknowledged once by its highest seq, and a reply may carry the events its request caused
 *   for this device. Those are handled on the next turn, after the code awaiting the reply ran
 *   (as if they had come in a frame of their own), and anything arriving meanwhile waits
 *   behind them, so events are always handled in the order they came;
 * - a request is answered exactly once: unanswered requests are re-sent with the same `id` after
 *   each reconnect (the server replays its stored reply instead of acting twice), and a request
 *   refused as `rate_limited` is sent again a moment later;
 * - the device id and the last handled seq live in sessionStorage, so a reload of the tab is the
 *   same device and resumes where it was (`hello` with `last_seq`).
 */

// First reconnect delay; doubled per failed attempt up to the maximum, with some jitter so a
// restarted server is not hit by every tab at the same millisecond.
export const RECONNECT_FIRST_MS = 250;
export const RECONNECT_MAX_MS = 8000;
const RECONNECT_JITTER = 0.2;
// A request with no reply after this long is given up (its promise rejects with `timeout`).
export const REQUEST_TIMEOUT_MS = 20000;
// The server closes a socket without a signed-in user with this code (spec: unauthenticated).
export const CLOSE_UNAUTHENTICATED = 4401;
// A frame the server refused as rate_limited (it did not read it) is sent again after this long.
export const RATE_LIMITED_RETRY_MS = 1000;
// Round trips remembered for diagnostics (window.duet.api.socket.replyTimes).
const REPLY_TIMES_KEPT = 100;
const DEVICE_KEY = "duet.deviceId";
const SEQ_KEY = "duet.lastSeq";

export class ReplyError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
    this.reason = message;
  }
}

/** Where a tab keeps its device id and last handled seq (sessionStorage in a browser). */
export class DeviceMemory {
  constructor(storage, makeId = () => globalThis.crypto.randomUUID()) {
    this.storage = storage;
    let deviceId = storage?.getItem(DEVICE_KEY);
    if (!deviceId) {
      deviceId = `web-${makeId()}`.slice(0, 64);
      storage?.setItem(DEVICE_KEY, deviceId);
    }
    this.deviceId = deviceId;
    const seq = storage?.getItem(SEQ_KEY);
    this.lastSeq = seq == null || seq === "" ? null : Number(seq);
  }

  saveSeq(seq) {
    this.lastSeq = seq;
    this.storage?.setItem(SEQ_KEY, String(seq));
  }
}

export class CallSocket {
  /**
   * @param {object} options
   * @param {string} options.url  the socket's ws:// or wss:// address
   * @param {DeviceMemory} options.memory
   * @param {number[]} [options.watch]  user ids whose presence this device follows
   * @param {Function} [options.WebSocketImpl]  a WebSocket class (tests pass a double)
   * @param {object} [options.timers]  {setTimeout, clearTimeout} (tests pass a manual clock)
   */
  constructor({ url, memory, watch, WebSocketImpl = globalThis.WebSocket, timers = globalThis,
                random = Math.random }) {
    this.url = url;
    this.memory = memory;
    this.watch = watch;
    this.WebSocketImpl = WebSocketImpl;
    this.timers = timers;
    this.random = random;
    this.nonce = Math.floor(random() * 36 ** 8).toString(36);
    this.counter = 0;
    this.pending = new Map(); // id -> {frame, resolve, reject, timer, sentAt}
    this.replyTimes = []; // the last replies' round trips, for diagnostics: [{type, ms}]
    this.listeners = { event: [], hello: [], status: [] };
    this.held = []; // [event, replayed] waiting for the turn after a reply that carried events
    this.heldTimer = null;
    this.ws = null;
    this.ready = false; // hello answered on the current connection
    this.helloId = null;
    this.attempt = 0;
    this.everReady = false;
    this.stopped = false;
    this.status = "idle";
  }

  get deviceId() { return this.memory.deviceId; }

  on(kind, listener) {
    this.listeners[kind].push(listener);
    return () => { this.listeners[kind] = this.listeners[kind].filter((l) => l !== listener); };
  }

  start() {
    this.stopped = false;
    this._connect();
  }

  /** Close for good (deinitialize): no reconnect, pending requests fail. */
  stop() {
    this.stopped = true;
    this.timers.clearTimeout(this.reconnectTimer);
    for (const [id, entry] of this.pending) {
      this.timers.clearTimeout(entry.timer);
      entry.reject(new ReplyError("closed", "the client was deinitialized"));
      this.pending.delete(id);
    }
    this.ws?.close(1000);
    this._setStatus("closed");
  }

  /** Send a client frame; resolves with the reply's data, rejects with a ReplyError. */
  request(type, fields = {}) {
    const id = `${this.nonce}-${++this.counter}`;
    const frame = { id, type, ...fields };
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        this.pending.delete(id);
        reject(new ReplyError("timeout", `no reply to ${type} within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { frame, resolve, reject, timer, sentAt: globalThis.performance?.now() });
      if (this.ready) this._send(frame);
    });
  }

  _connect() {
    if (this.stopped) return;
    this._setStatus(this.everReady ? "reconnecting" : "connecting");
    const ws = new this.WebSocketImpl(this.url);
    this.ws = ws;
    this.ready = false;
    ws.onopen = () => this._sayHello(ws);
    ws.onmessage = (message) => this._receive(ws, message.data);
    ws.onclose = (closed) => this._closed(ws, closed.code);
    ws.onerror = () => {}; // a close follows; that is where we act
  }

  _sayHello(ws) {
    this.helloId = `${this.nonce}-hello-${++this.counter}`;
    this.resuming = this.memory.lastSeq != null;
    // Only the first hello of a page load starts from nothing: events replayed to it concern
    // media state that died with the previous page.
    this.pageResume = this.resuming && !this.everReady;
    const frame = { id: this.helloId, type: "hello", device_id: this.memory.deviceId, event_batches: true };
    if (this.resuming) frame.last_seq = this.memory.lastSeq;
    // The server forgets the first remote frames this device reported: they came through
    // connections of the previous page, and the call must connect on what this page sees.
    if (this.pageResume) frame.media_reset = true;
    if (this.watch) frame.watch = this.watch;
    ws.send(JSON.stringify(frame));
  }

  _receive(ws, text) {
    if (ws !== this.ws) return;
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return; // the server only sends JSON; ignore anything else
    }
    if (message.type === "reply") {
      if (message.id === this.helloId) this._helloAnswered(message);
      else this._answered(message);
      if (Array.isArray(message.events) && message.events.length) this._events(message.events, true);
    } else if (message.type === "event") {
      this._events([message], false);
    } else if (message.type === "events" && Array.isArray(message.events) && message.events.length) {
      this._events(message.events, false);
    }
  }

  _helloAnswered(reply) {
    if (!reply.ok) {
      this._emit("status", "failed", reply.error);
      this.ws.close(1000);
      return;
    }
    const data = reply.data;
    // The server's seq is the truth. Below ours only if the server lost events this device had
    // seen (a database restored from a backup, commits lost with synchronous_commit off): its
    // new events reuse those numbers, so counting from ours would drop them as repeats.
    if (this.memory.lastSeq == null || data.seq !== this.memory.lastSeq) this.memory.saveSeq(data.seq);
    this.ready = true;
    this.attempt = 0;
    const firstTime = !this.everReady;
    this.everReady = true;
    this._setStatus("open");
    this._emit("hello", data, { firstTime, pageResume: this.pageResume });
    for (const entry of this.pending.values()) this._send(entry.frame);
  }

  _answered(reply) {
    const entry = this.pending.get(reply.id);
    if (!entry) return; // a duplicate answer to a re-sent frame
    if (!reply.ok && reply.error?.code === "rate_limited") {
      // Refused unread: the same frame may go again once the socket's allowance has refilled.
      this.timers.setTimeout(() => { if (this.ready && this.pending.has(reply.id)) this._send(entry.frame); },
                             RATE_LIMITED_RETRY_MS);
      return;
    }
    this.pending.delete(reply.id);
    this.timers.clearTimeout(entry.timer);
    if (entry.sentAt != null) {
      this.replyTimes.push({ type: entry.frame.type, ms: globalThis.performance.now() - entry.sentAt });
      if (this.replyTimes.length > REPLY_TIMES_KEPT) this.replyTimes.shift();
    }
    if (reply.ok) entry.resolve(reply.data ?? {});
    else entry.reject(new ReplyError(reply.error?.code ?? "internal", reply.error?.message ?? ""));
  }

  /** One frame's events: one ack (its highest seq), then each handled, now or after `hold`. */
  _events(events, hold) {
    const seqs = events.map((event) => event.seq).filter((seq) => typeof seq === "number");
    if (seqs.length) this._send({ type: "ack", seq: Math.max(...seqs) });
    const replayed = !this.ready;
    if (!hold && !this.held.length) {
      for (const event of events) this._event(event, replayed);
      return;
    }
    for (const event of events) this.held.push([event, replayed]);
    this.heldTimer ??= this.timers.setTimeout(() => {
      this.heldTimer = null;
      for (const [event, wasReplayed] of this.held.splice(0)) this._event(event, wasReplayed);
    }, 0);
  }

  _event(event, replayed) {
    if (typeof event.seq === "number") {
      if (this.memory.lastSeq != null && event.seq <= this.memory.lastSeq) return;
      this.memory.saveSeq(event.seq);
    }
    this._emit("event", event, { replayed, stale: replayed && this.pageResume });
  }

  _closed(ws, code) {
    if (ws !== this.ws) return;
    this.ready = false;
    if (this.stopped) return;
    if (code === CLOSE_UNAUTHENTICATED) {
      this.stopped = true;
      this._setStatus("unauthenticated");
      return;
    }
    const delay = Math.min(RECONNECT_FIRST_MS * 2 ** this.attempt, RECONNECT_MAX_MS);
    this.attempt += 1;
    const jitter = 1 + (this.random() * 2 - 1) * RECONNECT_JITTER;
    this._setStatus("reconnecting");
    this.reconnectTimer = this.timers.setTimeout(() => this._connect(), Math.round(delay * jitter));
  }

  _send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  _setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this._emit("status", status);
  }

  _emit(kind, ...args) {
    for (const listener of [...this.listeners[kind]]) listener(...args);
  }
}
