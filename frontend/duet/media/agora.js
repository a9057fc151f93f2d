/**
 * The Agora media engine, behind the same interface as the WebRTC one (used when hello's
 * config.media.engine is "agora"). It follows CallAPI section 7 with the Agora Web SDK:
 * join the call's channel with the app id, channel, token and uid the server issued, publish,
 * subscribe to the remote video at once (into a hidden element) and to the remote audio only
 * once connected; an audio call subscribes to the audio at once but plays it only when connected.
 *
 * Offline the SDK retries a join for ever, so the engine gives up after AGORA_JOIN_TIMEOUT_MS and
 * leaves. `AgoraRTC` is passed in: the page loads the SDK served from node_modules, the unit tests
 * pass a test double.
 */

import { MediaEngineBase } from "./base.js";
import { MediaEngineEvent as Ev } from "./emitter.js";

// How long a join may take before the call's media is declared failed (then leave()).
export const AGORA_JOIN_TIMEOUT_MS = 10000;

export class AgoraEngine extends MediaEngineBase {
  constructor({ AgoraRTC, appId, document = globalThis.document, timers = globalThis,
                joinTimeoutMs = AGORA_JOIN_TIMEOUT_MS, log = () => {} }) {
    super();
    this.name = "agora";
    this.needsCredentials = true;
    this.AgoraRTC = AgoraRTC;
    this.appId = appId;
    this.document = document;
    this.timers = timers;
    this.joinTimeoutMs = joinTimeoutMs;
    this.log = log;
    this.localView = null;
    this.remoteView = null;
    this._reset();
  }

  _reset() {
    this.generation = (this.generation ?? 0) + 1;
    this.client = null;
    this.capture = null;
    this.localTracks = [];
    this.remoteVideos = new Map(); // uid -> element
    this.audioUsers = new Map(); // uid -> remote user who publishes audio
    this.revealed = false;
    this.callType = null;
    this.role = null;
    this.audioMuted = false;
    this.videoMuted = false;
    this.firstFrameSeen = false;
  }

  async _capture(callType) {
    const generation = this.generation;
    const tracks = callType === "video"
      ? await this.AgoraRTC.createMicrophoneAndCameraTracks({}, { encoderConfig: { ...this.videoEncoderConfig } })
      : [await this.AgoraRTC.createMicrophoneAudioTrack()];
    if (generation !== this.generation) { // the call ended while the browser was asking
      tracks.forEach((track) => track.close());
      return null;
    }
    this.localTracks = tracks;
    this._applyMutes();
    const video = tracks[1];
    if (video && this.localView) {
      const holder = this._element("local-video");
      this.localView.append(holder);
      video.play(holder);
    }
    this.emit(Ev.localFrame, {});
    return tracks;
  }

  /** Join the call's channel and publish; `credentials` is the call/accept/token reply's media. */
  async join({ role, callType, credentials }) {
    const generation = this.generation;
    this.role = role;
    this.callType = callType;
    const client = this.AgoraRTC.createClient({ mode: "rtc", codec: "vp8" });
    this.client = client;
    client.on("user-joined", (user) => this.emit(Ev.remoteJoined, { device: String(user.uid) }));
    client.on("user-left", (user) => this._userLeft(user));
    client.on("user-published", (user, mediaType) => this._published(user, mediaType));
    client.on("token-privilege-will-expire", () => this.emit(Ev.tokenWillExpire, {}));
    const capture = this.startCapture(callType);
    try {
      await this._withJoinTimeout(client.join(
        credentials.app_id ?? this.appId, credentials.channel, credentials.token ?? null,
        credentials.uid ?? null));
    } catch (error) {
      if (generation !== this.generation) return;
      await this._leaveClient(client);
      this.emit(Ev.error, { code: error.code ?? "join_failed", message: String(error.message ?? error) });
      return;
    }
    if (generation !== this.generation) return;
    this.emit(Ev.joined, {});
    const tracks = await capture;
    if (!tracks || generation !== this.generation) return;
    await client.publish(tracks);
    this.emit(Ev.published, {});
  }

  _withJoinTimeout(joining) {
    return new Promise((resolve, reject) => {
      const timer = this.timers.setTimeout(() => {
        const error = new Error(`no Agora join within ${this.joinTimeoutMs} ms`);
        error.code = "join_timeout";
        reject(error);
      }, this.joinTimeoutMs);
      joining.then((uid) => { this.timers.clearTimeout(timer); resolve(uid); },
                   (error) => { this.timers.clearTimeout(timer); reject(error); });
    });
  }

  async _published(user, mediaType) {
    const generation = this.generation;
    if (mediaType === "video") {
      await this.client.subscribe(user, "video");
      if (generation !== this.generation) return;
      const holder = this._element(this.revealed ? "remote-video" : "remote-video pending");
      holder.dataset.device = String(user.uid);
      this.remoteView?.append(holder);
      this.remoteVideos.set(user.uid, holder);
      user.videoTrack.on?.("first-frame-decoded", () => this._firstFrame(user));
      user.videoTrack.play(holder);
    } else if (mediaType === "audio") {
      this.audioUsers.set(user.uid, user);
      if (this.revealed || this.callType === "audio") await this._subscribeAudio(user, generation);
    }
  }

  async _subscribeAudio(user, generation) {
    await this.client.subscribe(user, "audio");
    if (generation !== this.generation) return;
    if (this.callType === "audio") user.audioTrack.on?.("first-frame-decoded", () => this._firstFrame(user));
    if (this.revealed) user.audioTrack.play();
  }

  _firstFrame(user) {
    if (this.firstFrameSeen) return;
    this.firstFrameSeen = true;
    this.emit(Ev.firstRemoteFrame, { device: String(user.uid) });
  }

  _userLeft(user) {
    this.remoteVideos.get(user.uid)?.remove();
    this.remoteVideos.delete(user.uid);
    this.audioUsers.delete(user.uid);
    this.emit(Ev.remoteLeft, { device: String(user.uid) });
  }

  handleSignal() {} // Agora negotiates inside its own service

  restart() {} // a reloaded page simply joins the channel again

  selectRemote() {} // one uid per user in an Agora channel

  reveal() {
    this.revealed = true;
    for (const holder of this.remoteVideos.values()) holder.classList.remove("pending");
    const generation = this.generation;
    for (const user of this.audioUsers.values()) {
      if (user.audioTrack && this.callType === "audio") user.audioTrack.play();
      else this._subscribeAudio(user, generation).catch((error) => this.log("audio", error));
    }
  }

  resumeAudio() {
    for (const user of this.audioUsers.values()) user.audioTrack?.play();
  }

  setLocalAudioMuted(muted) { this.audioMuted = muted; this._applyMutes(); }

  setLocalVideoMuted(muted) { this.videoMuted = muted; this._applyMutes(); }

  _applyMutes() {
    const [audio, video] = this.localTracks;
    audio?.setEnabled(!this.audioMuted);
    video?.setEnabled(!this.videoMuted);
  }

  async renewToken(token) {
    await this.client?.renewToken(token);
  }

  peerConnections() { return []; }

  async leave() {
    const client = this.client;
    const hadCall = this.role !== null;
    for (const track of this.localTracks) track.close();
    for (const holder of this.remoteVideos.values()) holder.remove();
    this.localView?.querySelectorAll?.(".local-video").forEach((holder) => holder.remove());
    this._reset();
    if (client) await this._leaveClient(client);
    if (hadCall) this.emit("left", {});
  }

  async _leaveClient(client) {
    try {
      await client.leave();
    } catch (error) {
      this.log("leave failed", error);
    }
  }

  _element(className) {
    const holder = this.document.createElement("div");
    holder.className = className;
    return holder;
  }
}

/** Load the Agora Web SDK served by Django (UMD: it sets window.AgoraRTC). */
export function loadAgoraSdk(url, document = globalThis.document) {
  if (globalThis.AgoraRTC) return Promise.resolve(globalThis.AgoraRTC);
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url;
    script.onload = () => resolve(globalThis.AgoraRTC);
    script.onerror = () => reject(new Error(`the Agora SDK did not load from ${url}`));
    document.head.append(script);
  });
}
