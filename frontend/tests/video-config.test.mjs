// The camera's video settings: defaults, validation, and what each engine asks its browser/SDK for.
import assert from "node:assert/strict";
import { test } from "node:test";

import { WebRtcEngine } from "../duet/media/webrtc.js";
import { DEFAULT_VIDEO_ENCODER_CONFIG, videoEncoderConfig } from "../duet/media/video-config.js";
import { fakeDocument, settle } from "./doubles.mjs";

test("no settings give the default, 640x360 at 15 fps; settings left out take the default", () => {
  assert.deepEqual(videoEncoderConfig(undefined), { width: 640, height: 360, frameRate: 15 });
  assert.equal(videoEncoderConfig(null), DEFAULT_VIDEO_ENCODER_CONFIG);
  assert.deepEqual(videoEncoderConfig({ frameRate: 24 }), { width: 640, height: 360, frameRate: 24 });
  assert.deepEqual(videoEncoderConfig({ width: 1280, height: 720, frameRate: 30 }),
                   { width: 1280, height: 720, frameRate: 30 });
});

for (const [given, message] of [
  ["720p", /videoEncoderConfig must be an object/],
  [[640, 360], /videoEncoderConfig must be an object/],
  [{ fps: 15 }, /no setting "fps" \(it has width, height, frameRate\)/],
  [{ width: "640" }, /videoEncoderConfig.width must be a whole number from 16 to 3840, not "640"/],
  [{ height: 360.5 }, /videoEncoderConfig.height must be a whole number from 16 to 2160, not 360.5/],
  [{ frameRate: 0 }, /videoEncoderConfig.frameRate must be a whole number from 1 to 60, not 0/],
  [{ frameRate: 120 }, /frameRate must be a whole number from 1 to 60, not 120/],
]) {
  test(`videoEncoderConfig(${JSON.stringify(given)}) is refused with a TypeError naming the setting`, () => {
    assert.throws(() => videoEncoderConfig(given), { name: "TypeError", message });
  });
}

function fakeMediaDevices() {
  const asked = [];
  const track = (kind) => ({ kind, enabled: true, stop() {} });
  const stream = { tracks: [track("audio"), track("video")] };
  stream.getTracks = () => stream.tracks;
  stream.getAudioTracks = () => stream.tracks.filter((t) => t.kind === "audio");
  stream.getVideoTracks = () => stream.tracks.filter((t) => t.kind === "video");
  return { asked, getUserMedia: async (constraints) => { asked.push(constraints); return stream; } };
}

for (const [label, config, video] of [
  ["the default", undefined, { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 15 } }],
  ["settings given", { width: 320, height: 180, frameRate: 10 },
   { width: { ideal: 320 }, height: { ideal: 180 }, frameRate: { ideal: 10 } }],
]) {
  test(`a WebRTC video capture asks getUserMedia for ${label} as ideal constraints; an audio capture for no video`, async () => {
    // given
    const mediaDevices = fakeMediaDevices();
    const engine = new WebRtcEngine({ sendSignal: async () => {}, document: fakeDocument, mediaDevices });
    if (config) engine.setVideoEncoderConfig(config);
    // when
    await engine.startCapture("video");
    engine.leave();
    await engine.startCapture("audio");
    await settle();
    // then
    assert.deepEqual(mediaDevices.asked, [{ audio: true, video }, { audio: true, video: false }]);
  });
}

test("an engine refuses bad settings and keeps the ones it had", () => {
  const engine = new WebRtcEngine({ sendSignal: async () => {}, document: fakeDocument,
                                    mediaDevices: fakeMediaDevices() });
  engine.setVideoEncoderConfig({ frameRate: 24 });
  assert.throws(() => engine.setVideoEncoderConfig({ frameRate: "fast" }), TypeError);
  assert.deepEqual(engine.videoEncoderConfig, { width: 640, height: 360, frameRate: 24 });
});
