// AgoraEngine against a test double of the Agora Web SDK (Agora's cloud cannot be reached here).
import assert from "node:assert/strict";
import { test } from "node:test";

import { AgoraEngine } from "../duet/media/agora.js";
import { FakeElement, ManualClock, fakeDocument, settle } from "./doubles.mjs";

/** A test double of AgoraRTC: records what the engine asks of it; `joinNeverAnswers` as offline. */
class FakeAgoraRTC {
  constructor({ joinNeverAnswers = false } = {}) {
    this.log = [];
    this.joinNeverAnswers = joinNeverAnswers;
    this.clients = [];
    this.cameraConfigs = [];
  }
  createClient(config) {
    const sdk = this;
    const client = {
      handlers: {},
      on(name, fn) { this.handlers[name] = fn; },
      join(...args) { sdk.log.push(["join", ...args]); return sdk.joinNeverAnswers ? new Promise(() => {}) : Promise.resolve(args[3]); },
      publish(tracks) { sdk.log.push(["publish", tracks.map((track) => track.kind)]); return Promise.resolve(); },
      subscribe(user, kind) { sdk.log.push(["subscribe", user.uid, kind]); return Promise.resolve(); },
      leave() { sdk.log.push(["leave"]); return Promise.resolve(); },
      renewToken(token) { sdk.log.push(["renewToken", token]); return Promise.resolve(); },
    };
    sdk.log.push(["createClient", config]);
    this.clients.push(client);
    return client;
  }
  localTrack(kind) {
    const sdk = this;
    return { kind, enabled: true, setEnabled(on) { this.enabled = on; }, play() { sdk.log.push(["playLocal", kind]); },
             close() { sdk.log.push(["close", kind]); } };
  }
  createMicrophoneAndCameraTracks(audioConfig, videoConfig) {
    this.cameraConfigs.push(videoConfig);
    return Promise.resolve([this.localTrack("audio"), this.localTrack("video")]);
  }
  createMicrophoneAudioTrack() { return Promise.resolve(this.localTrack("audio")); }
}

function remoteUser(uid, sdk) {
  const track = (kind) => ({
    handlers: {}, on(name, fn) { this.handlers[name] = fn; },
    play(element) { sdk.log.push(["play", uid, kind, element ? element.className : "speaker"]); },
  });
  return { uid, videoTrack: track("video"), audioTrack: track("audio") };
}

const CREDENTIALS = { engine: "agora", app_id: "app-1", channel: "duet-c1", token: "tok", uid: 2 };

function makeEngine(options = {}) {
  const AgoraRTC = new FakeAgoraRTC(options);
  const clock = new ManualClock();
  const engine = new AgoraEngine({ AgoraRTC, appId: "app-1", document: fakeDocument, timers: clock,
                                   joinTimeoutMs: 10000 });
  const localView = new FakeElement("div");
  const remoteView = new FakeElement("div");
  engine.setViews({ localView, remoteView });
  const events = [];
  engine.on("*", ({ name }) => events.push(name));
  return { engine, AgoraRTC, clock, remoteView, events };
}

test("join uses the server's app id, channel, token and uid while capturing, then publishes both tracks", async () => {
  // given
  const { engine, AgoraRTC, events } = makeEngine();
  // when
  await engine.join({ role: "callee", callType: "video", credentials: CREDENTIALS });
  // then
  assert.deepEqual(AgoraRTC.log, [
    ["createClient", { mode: "rtc", codec: "vp8" }], ["join", "app-1", "duet-c1", "tok", 2],
    ["playLocal", "video"], ["publish", ["audio", "video"]],
  ]);
  assert.deepEqual(events, ["localFrame", "joined", "published"]);
  assert.deepEqual(AgoraRTC.cameraConfigs, [{ encoderConfig: { width: 640, height: 360, frameRate: 15 } }]);
});

test("the camera track is made with the video settings given to the engine", async () => {
  // given
  const { engine, AgoraRTC } = makeEngine();
  engine.setVideoEncoderConfig({ width: 1280, height: 720, frameRate: 24 });
  // when
  await engine.join({ role: "caller", callType: "video", credentials: CREDENTIALS });
  // then
  assert.deepEqual(AgoraRTC.cameraConfigs, [{ encoderConfig: { width: 1280, height: 720, frameRate: 24 } }]);
});

test("remote video is subscribed at once into a hidden element; remote audio only once revealed", async () => {
  // given
  const { engine, AgoraRTC, remoteView, events } = makeEngine();
  await engine.join({ role: "caller", callType: "video", credentials: CREDENTIALS });
  const client = AgoraRTC.clients[0];
  const bob = remoteUser(7, AgoraRTC);
  AgoraRTC.log.length = 0;
  // when
  await client.handlers["user-published"](bob, "video");
  await client.handlers["user-published"](bob, "audio");
  bob.videoTrack.handlers["first-frame-decoded"]();
  // then
  assert.deepEqual(AgoraRTC.log, [["subscribe", 7, "video"], ["play", 7, "video", "remote-video pending"]]);
  assert.equal(events.at(-1), "firstRemoteFrame");
  assert.equal(remoteView.children[0].classList.contains("pending"), true);
  // when
  engine.reveal();
  await settle();
  // then
  assert.equal(remoteView.children[0].classList.contains("pending"), false);
  assert.deepEqual(AgoraRTC.log.slice(2), [["subscribe", 7, "audio"], ["play", 7, "audio", "speaker"]]);
});

test("an audio call subscribes the remote audio at once, counts its first frame, plays it only when revealed", async () => {
  // given
  const { engine, AgoraRTC, events } = makeEngine();
  await engine.join({ role: "callee", callType: "audio", credentials: CREDENTIALS });
  const bob = remoteUser(7, AgoraRTC);
  AgoraRTC.log.length = 0;
  // when
  await AgoraRTC.clients[0].handlers["user-published"](bob, "audio");
  bob.audioTrack.handlers["first-frame-decoded"]();
  // then
  assert.deepEqual(AgoraRTC.log, [["subscribe", 7, "audio"]]);
  assert.equal(events.at(-1), "firstRemoteFrame");
  // when
  engine.reveal();
  // then
  assert.deepEqual(AgoraRTC.log.slice(1), [["play", 7, "audio", "speaker"]]);
});

test("a join that never answers times out, leaves the channel and reports the error", async () => {
  // given: offline, the SDK retries for ever
  const { engine, AgoraRTC, clock, events } = makeEngine({ joinNeverAnswers: true });
  const errors = [];
  engine.on("error", (detail) => errors.push(detail.code));
  const joining = engine.join({ role: "callee", callType: "video", credentials: CREDENTIALS });
  await settle();
  // when
  clock.advance(10000);
  await joining;
  // then
  assert.deepEqual(AgoraRTC.log.map(([name]) => name), ["createClient", "join", "playLocal", "leave"]);
  assert.deepEqual(errors, ["join_timeout"]);
  assert.equal(events.includes("joined"), false);
});

test("leave closes the local tracks and the client; token renewal reaches the client", async () => {
  // given
  const { engine, AgoraRTC, events } = makeEngine();
  await engine.join({ role: "caller", callType: "video", credentials: CREDENTIALS });
  // when
  await engine.renewToken("tok-2");
  engine.setLocalAudioMuted(true);
  await engine.leave();
  // then
  assert.deepEqual(AgoraRTC.log.slice(-4), [["renewToken", "tok-2"], ["close", "audio"], ["close", "video"], ["leave"]]);
  assert.equal(events.at(-1), "left");
});
