/**
 * One RTCPeerConnection of the WebRTC engine, with one remote device: negotiation steps run in
 * order, candidates wait for the remote description, remote tracks go to elements of the engine's
 * remote view, and its first frame, connection and failure become engine events.
 */

import { MediaEngineEvent as Ev } from "./emitter.js";
import { onFirstAudio, onFirstVideoFrame } from "./first-frame.js";

// A description is sent with the first candidates in it: once gathering completes, or
// ICE_SETTLE_MS after the first candidate (its siblings on other interfaces come within a few ms),
// or after ICE_GATHER_WAIT_MS at most. Host UDP candidates come within ~30 ms, host TCP ones only
// after ~130 ms: waiting for completion would cost a tenth of a second per description.
export const ICE_GATHER_WAIT_MS = 250;
export const ICE_SETTLE_MS = 15;
// Candidates found after the description are sent together if they come within this window: each
// signal is a server round trip, and the frames of one socket are handled in order.
export const CANDIDATE_BATCH_MS = 30;

export class Peer {
  constructor(engine, { key, remoteDevice, session }) {
    this.engine = engine;
    this.key = key;
    this.remoteDevice = remoteDevice;
    this.session = session;
    this.closed = false;
    this.descriptionSent = false;
    this.hasRemoteDescription = false;
    this.pendingCandidates = [];
    this.queue = Promise.resolve();
    this.cancels = [];
    this.video = null;
    this.audio = null;
    this.hasFirstFrame = false;
    this.trickle = [];
    this.pc = new engine.RTCPeerConnectionImpl({ iceServers: engine.iceServers,
                                                 bundlePolicy: "max-bundle" });
    this.pc.onicecandidate = (event) => {
      if (!event.candidate || !this.descriptionSent || this.closed) return;
      this.trickle.push(event.candidate.toJSON());
      if (this.trickle.length === 1) setTimeout(() => this._sendTrickle(), CANDIDATE_BATCH_MS);
    };
    this.pc.ontrack = (event) => this._track(event);
    this.pc.onconnectionstatechange = () => this._connectionState();
  }

  /** Run negotiation steps one after the other, dropping them once the peer is closed. */
  enqueue(step) {
    this.queue = this.queue.then(() => (this.closed ? undefined : step())).catch((error) => {
      if (!this.closed) this.engine.emit(Ev.error, { code: "negotiation_failed", message: String(error) });
    });
    return this.queue;
  }

  _sendTrickle() {
    if (this.closed || !this.trickle.length) return;
    const candidates = this.trickle.splice(0);
    this.engine._signal({ kind: "candidates", session: this.session, candidates }, this.remoteDevice);
  }

  async sendDescription() {
    await waitForFirstCandidates(this.pc);
    if (this.closed) return;
    const { type, sdp } = this.pc.localDescription;
    this.descriptionSent = true; // candidates from now on are trickled
    await this.engine._signal({ kind: type, session: this.session, sdp }, this.remoteDevice);
  }

  async setRemote(description) {
    await this.pc.setRemoteDescription(description);
    this.hasRemoteDescription = true;
    for (const candidate of this.pendingCandidates.splice(0)) await this._addCandidate(candidate);
  }

  addCandidate(candidate) {
    if (!this.hasRemoteDescription) this.pendingCandidates.push(candidate);
    else this._addCandidate(candidate);
  }

  async _addCandidate(candidate) {
    try {
      await this.pc.addIceCandidate(candidate);
    } catch (error) {
      if (!this.closed) this.engine.log("candidate refused", error);
    }
  }

  _track(event) {
    if (this.closed) return;
    const track = event.track;
    const engine = this.engine;
    engine.emit(Ev.remoteJoined, { device: this.remoteDevice });
    if (track.kind === "video") {
      this.video = engine._element("video", { muted: true, className: "remote-video pending" });
      this.video.dataset.device = this.remoteDevice ?? "";
      this.video.srcObject = new MediaStream([track]);
      engine.remoteView?.append(this.video);
      this.cancels.push(onFirstVideoFrame(this.video, (size) => this._firstFrame(size)));
      engine._showIfChosen(this);
    } else {
      this.audio = engine._element("audio", { muted: !engine.revealed, className: "remote-audio" });
      this.audio.srcObject = new MediaStream([track]);
      engine.remoteView?.append(this.audio);
      if (engine.revealed && engine._isChosen(this)) engine._playAudio(this);
      if (engine.callType === "audio") {
        this.cancels.push(onFirstAudio(event.receiver, () => this._firstFrame({})));
      }
    }
  }

  _firstFrame(size) {
    if (this.closed || this.hasFirstFrame) return;
    this.hasFirstFrame = true;
    this.engine.emit(Ev.firstRemoteFrame, { device: this.remoteDevice, ...size });
  }

  _connectionState() {
    if (this.closed) return;
    const state = this.pc.connectionState;
    if (state === "connected") {
      this.engine.emit(Ev.joined, { device: this.remoteDevice });
      this.engine.emit(Ev.published, { device: this.remoteDevice });
    } else if (state === "failed") {
      this.engine.emit(Ev.error, { code: "ice_failed", message: "the media connection failed" });
    }
  }

  close() {
    this.closed = true;
    for (const cancel of this.cancels) cancel();
    this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = null;
    this.pc.close();
    for (const element of [this.video, this.audio]) {
      if (!element) continue;
      element.srcObject = null;
      element.remove();
    }
  }
}

function waitForFirstCandidates(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    let settle = null;
    const done = () => {
      clearTimeout(timer);
      clearTimeout(settle);
      pc.removeEventListener("icegatheringstatechange", onState);
      pc.removeEventListener("icecandidate", onCandidate);
      resolve();
    };
    const onState = () => { if (pc.iceGatheringState === "complete") done(); };
    const onCandidate = (event) => {
      if (event.candidate && settle === null) settle = setTimeout(done, ICE_SETTLE_MS);
    };
    const timer = setTimeout(done, ICE_GATHER_WAIT_MS);
    pc.addEventListener("icegatheringstatechange", onState);
    pc.addEventListener("icecandidate", onCandidate);
    if (/a=candidate:/.test(pc.localDescription?.sdp ?? "")) settle = setTimeout(done, ICE_SETTLE_MS);
  });
}
