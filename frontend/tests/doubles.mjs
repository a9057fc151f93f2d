// Test doubles shared by the unit tests: a WebSocket, a manual clock, a call socket, a media
// engine and a DOM element, each recording what the code under test did to it.

export class ManualClock {
  constructor() { this.now = 0; this.timers = new Map(); this.nextId = 1; }
  setTimeout = (fn, ms) => { const id = this.nextId++; this.timers.set(id, { at: this.now + ms, fn }); return id; };
  clearTimeout = (id) => { this.timers.delete(id); };
  /** Run every timer due within `ms` from now, in time order. */
  advance(ms) {
    const until = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = until;
  }
  pendingDelays() { return [...this.timers.values()].map((t) => t.at - this.now); }
}

export class FakeWebSocket {
  static instances = [];
  constructor(url) { this.url = url; this.sent = []; this.readyState = 0; FakeWebSocket.instances.push(this); }
  static reset() { FakeWebSocket.instances = []; }
  static get last() { return FakeWebSocket.instances.at(-1); }
  open() { this.readyState = 1; this.onopen?.(); }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000) { this.readyState = 3; this.onclose?.({ code }); }
  serverSends(message) { this.onmessage?.({ data: JSON.stringify(message) }); }
  frames(type) { return this.sent.filter((frame) => frame.type === type); }
}

export class MemoryStorage {
  constructor(entries = {}) { this.map = new Map(Object.entries(entries)); }
  getItem(key) { return this.map.has(key) ? this.map.get(key) : null; }
  setItem(key, value) { this.map.set(key, String(value)); }
}

/** Stands in for CallSocket under CallApi: records requests, answers them from `replies`. */
export class FakeCallSocket {
  constructor() {
    this.requests = [];
    this.listeners = { event: [], hello: [], status: [] };
    this.replies = {};
    this.started = false;
  }
  on(kind, fn) { this.listeners[kind].push(fn); }
  start() { this.started = true; }
  stop() { this.stopped = true; }
  request(type, fields) {
    this.requests.push({ type, ...fields });
    const reply = this.replies[type];
    if (reply instanceof Error) return Promise.reject(reply);
    return Promise.resolve(typeof reply === "function" ? reply(fields) : reply ?? {});
  }
  hello(data, flags = { firstTime: true, pageResume: false }) {
    for (const fn of this.listeners.hello) fn(data, flags);
  }
  event(event, flags = { replayed: false, stale: false }) {
    for (const fn of this.listeners.event) fn(event, flags);
  }
  sent(type) { return this.requests.filter((request) => request.type === type); }
}

/** Stands in for a media engine: records every call; `emit` plays its events. */
export class FakeEngine {
  constructor() { this.calls = []; this.handlers = new Map(); }
  record(name, ...args) { this.calls.push([name, ...args]); }
  names() { return this.calls.map(([name]) => name); }
  on(name, fn) { this.handlers.set(name, fn); }
  emit(name, detail = {}) { this.handlers.get("*")?.({ name, ...detail }); }
  setViews(views) { this.record("setViews", views); }
  setVideoEncoderConfig(config) { this.videoEncoderConfig = config; } // kept, as an engine does
  startCapture(callType) { this.record("startCapture", callType); return Promise.resolve({}); }
  join(options) { this.record("join", options); }
  handleSignal(from, payload) { this.record("handleSignal", from, payload); }
  restart() { this.record("restart"); }
  selectRemote(device) { this.record("selectRemote", device); }
  reveal() { this.record("reveal"); }
  resumeAudio() { this.record("resumeAudio"); }
  setLocalAudioMuted(muted) { this.record("setLocalAudioMuted", muted); }
  setLocalVideoMuted(muted) { this.record("setLocalVideoMuted", muted); }
  renewToken(token) { this.record("renewToken", token); }
  peerConnections() { return []; }
  leave() { this.record("leave"); }
}

export class FakeElement {
  constructor(tag) {
    this.tag = tag;
    this.children = [];
    this.dataset = {};
    this.removed = false;
    const classes = new Set();
    this.classList = {
      add: (name) => classes.add(name), remove: (name) => classes.delete(name),
      contains: (name) => classes.has(name),
    };
    Object.defineProperty(this, "className", {
      get: () => [...classes].join(" "),
      set: (value) => { classes.clear(); value.split(/\s+/).filter(Boolean).forEach((c) => classes.add(c)); },
    });
  }
  append(child) { this.children.push(child); }
  addEventListener() {}
  removeEventListener() {}
  remove() { this.removed = true; }
  querySelectorAll(selector) {
    const name = selector.replace(/^\./, "");
    return this.children.filter((child) => child.classList.contains(name) && !child.removed);
  }
}

export const fakeDocument = { createElement: (tag) => new FakeElement(tag) };

/** Let pending promise callbacks run. */
export const settle = () => new Promise((resolve) => setImmediate(resolve));
