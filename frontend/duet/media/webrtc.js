/**
 * The WebRTC media engine: one RTCPeerConnection per remote device, negotiated through `signal`.
 *
 * Fast first frame (CallAPI section 7) the WebRTC way:
 * - the caller captures at `call()`; each callee device that may join captures when it rings and
 *   sends an offer to the caller; the caller answers every offering device (it cannot know which
 *   one will be answered on) and, once the server names the accepting device, closes the others;
 * - remote video plays into an element kept transparent (still rendered, so frames are decoded
 *   and presented) and is revealed at `connected`; remote audio plays muted until `connected`.
 *
 * Signal payloads (the server relays them untouched):
 *   {kind: "offer" | "answer", session, sdp}   a description; `session` names one connection
 *   {kind: "candidates", session, candidates}   ICE candidates found after the description
 *   {kind: "restart"}                           caller to callee: "I lost my connection, offer
 *                                               again" (a reloaded caller page)
 * The callee is always the offerer. An offer with a new session from a device replaces the
 * connection with that device (a reloaded callee page), so either side can rebuild mid-call.
 */

import { MediaEngineBase } from "./base.js";
import { MediaEngineEvent as Ev } from "./emitter.js";
import { onFirstVideoFrame } from "./first-frame.js";
import { cameraConstraints } from "./video-config.js";
import { Peer } from "./webrtc-peer.js";

const CALLEE_PEER = "caller"; // the callee's one connection, before it knows the caller device

function sessionId() {
  return globalThis.crypto.randomUUID().slice(0, 8);
}

export class WebRtcEngine extends MediaEngineBase {
  /**
   * @param {object} options
   * @param {RTCIceServer[]} options.iceServers  from hello's config.media
   * @param {(payload: object, toDevice: string|null) => Promise} options.sendSignal
   */
  constructor({ iceServers = [], sendSignal, document = globalThis.document,
                mediaDevices = globalThis.navigator?.mediaDevices,
                RTCPeerConnectionImpl = globalThis.RTCPeerConnection, log = () => {} }) {
    super();
    this.name = "webrtc";
    this.iceServers = iceServers;
    this.sendSignal = sendSignal;
    this.document = document;
    this.mediaDevices = mediaDevices;
    this.RTCPeerConnectionImpl = RTCPeerConnectionImpl;
    this.log = log;
    this.localView = null;
    this.remoteView = null;
    this._reset();
  }

  _reset() {
    this.generation = (this.generation ?? 0) + 1; // work started for an earlier call is dropped
    this.peers = new Map();
    this.role = null;
    this.callType = null;
    this.chosenDevice = null;
    this.revealed = false;
    this.capture = null;
    this.localStream = null;
    this.preview = null;
    this.audioMuted = false;
    this.videoMuted = false;
  }

  async _capture(callType) {
    const generation = this.generation;
    const stream = await this.mediaDevices.getUserMedia({
      audio: true, video: callType === "video" ? cameraConstraints(this.videoEncoderConfig) : false });
    if (generation !== this.generation) { // the call ended while the browser was asking
      stream.getTracks().forEach((track) => track.stop());
      return null;
    }
    this.localStream = stream;
    this._applyMutes();
    if (callType === "video") {
      this.preview = this._element("video", { muted: true, className: "local-video" });
      this.preview.srcObject = stream;
      this.localView?.append(this.preview);
      onFirstVideoFrame(this.preview, () => this.emit(Ev.localFrame, {}));
    } else {
      this.emit(Ev.localFrame, {});
    }
    return stream;
  }

  /** Take part in the call's media: the callee offers; the caller waits for offers. */
  async join({ role, callType }) {
    this.role = role;
    this.callType = callType;
    this.startCapture(callType).catch((error) => this._captureFailed(error));
    if (role === "callee") this._offer();
  }

  /** A page that lost its connections (reload) asks the other side to negotiate again. */
  restart() {
    if (this.role === "caller") this._signal({ kind: "restart" }, null);
    else if (this.role === "callee") this._offer();
  }

  _offer() {
    this.peers.get(CALLEE_PEER)?.close();
    const peer = new Peer(this, { key: CALLEE_PEER, remoteDevice: null, session: sessionId() });
    this.peers.set(CALLEE_PEER, peer);
    const kinds = this.callType === "video" ? ["audio", "video"] : ["audio"];
    for (const kind of kinds) peer.pc.addTransceiver(kind, { direction: "sendrecv" });
    this._sendCaptureThrough(peer);
    peer.enqueue(async () => {
      await peer.pc.setLocalDescription(await peer.pc.createOffer());
      await peer.sendDescription();
    });
  }

  /**
   * Negotiate without waiting for the camera: the transceivers are there from the start and the
   * captured tracks replace their empty senders when the browser hands them over (no
   * renegotiation). Connecting and capturing then overlap instead of following each other.
   */
  _sendCaptureThrough(peer) {
    this.startCapture(this.callType).then((stream) => {
      if (!stream || peer.closed) return; // the call ended meanwhile
      for (const transceiver of peer.pc.getTransceivers()) {
        const kind = transceiver.receiver.track.kind;
        const track = stream.getTracks().find((candidate) => candidate.kind === kind);
        if (!track || transceiver.sender.track) continue;
        transceiver.direction = "sendrecv";
        transceiver.sender.setStreams?.(stream);
        transceiver.sender.replaceTrack(track).catch((error) => this.log("track not sent", error));
      }
    }, () => {}); // a capture failure is reported by join()
  }

  /** A relayed payload from `fromDevice` for this call. */
  handleSignal(fromDevice, payload) {
    if (!this.role || !payload) return;
    if (payload.kind === "offer" && this.role === "caller") this._answer(fromDevice, payload);
    else if (payload.kind === "answer" && this.role === "callee") this._answered(fromDevice, payload);
    else if (payload.kind === "candidates") this._candidates(fromDevice, payload);
    else if (payload.kind === "restart" && this.role === "callee") this._offer();
  }

  _answer(fromDevice, { session, sdp }) {
    if (this.chosenDevice && fromDevice !== this.chosenDevice) return; // answered elsewhere
    const existing = this.peers.get(fromDevice);
    if (existing?.session === session) return; // a duplicate offer
    existing?.close();
    const peer = new Peer(this, { key: fromDevice, remoteDevice: fromDevice, session });
    this.peers.set(fromDevice, peer);
    peer.enqueue(async () => {
      await peer.setRemote({ type: "offer", sdp });
      for (const transceiver of peer.pc.getTransceivers()) transceiver.direction = "sendrecv";
      this._sendCaptureThrough(peer);
      await peer.pc.setLocalDescription(await peer.pc.createAnswer());
      await peer.sendDescription();
    });
  }

  _answered(fromDevice, { session, sdp }) {
    const peer = this.peers.get(CALLEE_PEER);
    if (!peer || peer.session !== session) return; // for a connection we replaced
    peer.enqueue(async () => {
      if (peer.pc.signalingState !== "have-local-offer") return; // a duplicate answer
      peer.remoteDevice = fromDevice;
      await peer.setRemote({ type: "answer", sdp });
    });
  }

  _candidates(fromDevice, { session, candidates }) {
    const peer = this.role === "callee" ? this.peers.get(CALLEE_PEER) : this.peers.get(fromDevice);
    if (!peer || peer.session !== session || !Array.isArray(candidates)) return;
    for (const candidate of candidates) peer.addCandidate(candidate);
  }

  /** The caller learns which callee device answered: the other connections are closed. */
  selectRemote(deviceId) {
    if (this.role !== "caller" || !deviceId) return;
    this.chosenDevice = deviceId;
    for (const [key, peer] of this.peers) {
      if (key !== deviceId) {
        peer.close();
        this.peers.delete(key);
      }
    }
    const chosen = this.peers.get(deviceId);
    if (chosen) this._showIfChosen(chosen);
  }

  /** Connected: show the remote video and let the remote audio be heard. */
  reveal() {
    this.revealed = true;
    for (const peer of this.peers.values()) {
      if (!this._isChosen(peer)) continue;
      this._showIfChosen(peer);
      if (peer.audio) this._playAudio(peer);
    }
  }

  _isChosen(peer) {
    if (this.role === "callee") return true;
    if (this.chosenDevice) return peer.key === this.chosenDevice;
    return this.peers.values().next().value === peer; // not told yet: the first that offered
  }

  _showIfChosen(peer) {
    if (this.revealed && peer.video && this._isChosen(peer)) peer.video.classList.remove("pending");
  }

  _playAudio(peer) {
    peer.audio.muted = false;
    const playing = peer.audio.play();
    playing?.catch?.(() => this.emit(Ev.audioBlocked, {}));
  }

  /** After an audioBlocked event, a click handler may call this to start the remote audio. */
  resumeAudio() {
    for (const peer of this.peers.values()) if (peer.audio && this._isChosen(peer)) this._playAudio(peer);
  }

  setLocalAudioMuted(muted) { this.audioMuted = muted; this._applyMutes(); }

  setLocalVideoMuted(muted) { this.videoMuted = muted; this._applyMutes(); }

  _applyMutes() {
    for (const track of this.localStream?.getAudioTracks() ?? []) track.enabled = !this.audioMuted;
    for (const track of this.localStream?.getVideoTracks() ?? []) track.enabled = !this.videoMuted;
  }

  renewToken() {} // WebRTC needs no media token

  /** The peer connections of the call (for diagnostics, like CallAPI's addDelegateEx). */
  peerConnections() {
    return [...this.peers.values()].map((peer) => peer.pc);
  }

  /** End of the call: close every connection, stop the camera and microphone. */
  leave() {
    for (const peer of this.peers.values()) peer.close();
    this.localStream?.getTracks().forEach((track) => track.stop());
    if (this.preview) {
      this.preview.srcObject = null;
      this.preview.remove();
    }
    const hadCall = this.role !== null;
    this._reset();
    if (hadCall) this.emit("left", {});
  }

  _captureFailed(error) {
    this.emit(Ev.error, { code: "capture_failed", message: String(error?.message ?? error) });
  }

  _signal(payload, toDevice) {
    return Promise.resolve(this.sendSignal(payload, toDevice)).catch((error) => {
      this.log("signal not relayed", error);
    });
  }

  _element(tag, { muted, className }) {
    const element = this.document.createElement(tag);
    element.autoplay = true;
    element.muted = muted;
    element.className = className;
    if (tag === "video") element.playsInline = true;
    return element;
  }
}
