/**
 * CallApi: the browser's call client, named after Agora's CallAPI so that its README maps one to
 * one (initialize, prepareForCall, call, cancelCall, accept, reject, hangup, getCallId, ...).
 *
 * The server decides every call. This class renders the server's `call.state`/`call.event` to
 * listeners and drives the media engine from them; it never decides a state by itself except
 * the client-local ones (idle before prepareForCall, prepared after it). What it does locally:
 * - media timing: capture at call(), join on ringing unless canJoinRtcOnCalling says no,
 *   keep only the answering device at connecting, reveal at connected, tear down at the end;
 * - reports each media milestone with a `media` frame, and its cost nodes with the first frame;
 * - resumes after a reload from hello's `active_call` (events replayed to a reloaded page are
 *   acknowledged but not replayed into the media: their connections died with the old page).
 */

import { CallCosts, CostNode, epochNow } from "./costs.js";
import {
  CallErrorCodeType, CallErrorEvent, CallEvent, CallStateReason, CallStateType, CallType,
  LIVE_STATES,
} from "./codes.js";
import { MediaEngineEvent } from "../media/emitter.js";
import { DEFAULT_VIDEO_ENCODER_CONFIG, videoEncoderConfig } from "../media/video-config.js";

const MILESTONE_OF = {
  [MediaEngineEvent.joined]: ["joined", CostNode.localUserJoinChannel, CallEvent.localJoined],
  [MediaEngineEvent.published]: ["published", CostNode.publishFirstLocalFrame, null],
  [MediaEngineEvent.localFrame]: ["local_frame", CostNode.captureFirstLocalFrame, null],
  [MediaEngineEvent.remoteJoined]: ["remote_joined", CostNode.remoteUserJoinChannel, CallEvent.remoteJoined],
  [MediaEngineEvent.remoteLeft]: ["remote_left", null, CallEvent.remoteLeft],
};

// Milestones that only inform the call record are sent this long after connected: at connected
// the server is still delivering the accept's events, and on the embedded default every socket's
// database work runs on one thread.
export const MILESTONE_REPORT_DELAY_MS = 1500;

export const DEFAULT_PREPARE_CONFIG = Object.freeze({
  localView: null,
  remoteView: null,
  userExtension: null,
  callTimeoutMillisecond: null, // null: the server's ring timeout (hello's config)
  firstFrameWaittingDisabled: false, // CallAPI's spelling
  videoEncoderConfig: DEFAULT_VIDEO_ENCODER_CONFIG, // {width, height, frameRate} of the camera
});

export class CallApi {
  /**
   * @param {object} parts  how to reach the world (tests pass doubles)
   * @param {(config) => CallSocket} parts.createSocket
   * @param {(media, options) => Promise<engine>} parts.createEngine
   */
  constructor({ createSocket, createEngine, now = epochNow, timers = globalThis }) {
    this.timers = timers;
    this.createSocket = createSocket;
    this.createEngine = createEngine;
    this.now = now;
    this.listeners = new Set();
    this.state = CallStateType.idle;
    this.prepareConfig = { ...DEFAULT_PREPARE_CONFIG };
    this.socket = null;
    this.engine = null;
    this.user = null;
    this.serverConfig = null;
    this.backlog = [];
    this._clearCall();
  }

  _clearCall() {
    this.callId = null;
    this.dialedCallId = null;
    this.callInfo = null;
    this.role = null;
    this.callType = null;
    this.credentials = null;
    this.selectedDevice = null;
    this.mediaJoined = false;
    this.firstFrameReported = false;
    this.deferredReports = [];
    this.connectedAt = null;
    this.costs = new CallCosts(this.now);
  }

  // ---- listeners ---------------------------------------------------------------------------

  addListener(listener) { this.listeners.add(listener); }

  removeListener(listener) { this.listeners.delete(listener); }

  _notify(method, ...args) {
    for (const listener of [...this.listeners]) {
      if (typeof listener[method] === "function") listener[method](...args);
    }
  }

  // ---- set-up ------------------------------------------------------------------------------

  /**
   * Connect the device (socket, hello) and build the media engine hello's config names.
   * Resolves with hello's data once the device is ready.
   * @param {object} config  {socketUrl, watch, agoraSdkUrl} — the rest goes to createSocket
   */
  initialize(config) {
    this.config = config;
    this.socket = this.createSocket(config);
    this.socket.on("event", (event, flags) => this._onEvent(event, flags));
    this.socket.on("status", (status, error) => this._onSocketStatus(status, error));
    return new Promise((resolve, reject) => {
      this._initialized = { resolve, reject };
      this.socket.on("hello", (data, flags) => this._onHello(data, flags));
      this.socket.start();
    });
  }

  /**
   * CallAPI: set the views and options of the next calls; the state becomes prepared. Options
   * left out keep their value; `videoEncoderConfig`'s settings left out take their default
   * (media/video-config.js), and a bad one throws a TypeError before anything changes.
   */
  prepareForCall(prepareConfig = {}) {
    const given = { ...prepareConfig };
    if ("videoEncoderConfig" in given) given.videoEncoderConfig = videoEncoderConfig(given.videoEncoderConfig);
    this.prepareConfig = { ...this.prepareConfig, ...given };
    if (this.engine) this._configureEngine();
    if (this.state === CallStateType.idle || this.state === CallStateType.failed) {
      this._setState(CallStateType.prepared, CallStateReason.none, "", {});
    }
  }

  /** Leave every call, close the socket; the client is idle again. */
  async deinitialize() {
    if (LIVE_STATES.has(this.state)) await this._endFromHere("deinitialize").catch(() => {});
    await this.engine?.leave();
    this.socket?.stop();
    this._clearCall();
    this._notify("onCallEventChanged", CallEvent.deinitialize, "");
    this.state = CallStateType.idle;
  }

  // ---- intents -----------------------------------------------------------------------------

  /** Call a user. Resolves with the call reply ({call_id, channel, media, outcome}). */
  async call(remoteUserId, { callType = CallType.video, callExtension = null } = {}) {
    if (LIVE_STATES.has(this.state)) throw this._mismatch("call");
    this._clearCall();
    this.costs.start();
    this.callType = callType;
    this.role = "caller";
    // Capture while the call request travels: the camera is warm when the callee's offer lands.
    this.engine.startCapture(callType).catch((error) => this._captureFailed(error));
    const extension = { ...(this.prepareConfig.userExtension ?? {}), ...(callExtension ?? {}) };
    const fields = { to: remoteUserId, call_type: callType };
    if (Object.keys(extension).length) fields.extension = extension;
    if (this.prepareConfig.callTimeoutMillisecond) fields.timeout_ms = this.prepareConfig.callTimeoutMillisecond;
    let reply;
    try {
      reply = await this.socket.request("call", fields);
    } catch (error) {
      if (!this.callId) await this.engine.leave();
      this._notify("onCallError", CallErrorEvent.sendMessageFail, CallErrorCodeType.message,
                   error.code, error.reason ?? String(error));
      throw error;
    }
    this.dialedCallId = reply.call_id;
    this.credentials = reply.media;
    return reply;
  }

  async cancelCall(reason = "") {
    return this._request("cancel", { reason });
  }

  async accept(remoteUserId) {
    this.costs.mark(CostNode.acceptCall);
    // The frame goes first: joining the media (camera, connection) takes this thread tens of ms.
    const accepting = this._request("accept", {});
    if (!this.mediaJoined) { // canJoinRtcOnCalling said no: join now, with the accept's credentials
      this._joinMedia({ fetchCredentials: () => accepting.then((reply) => reply.media) });
    }
    const reply = await accepting;
    this.credentials = reply.media ?? this.credentials;
    return reply;
  }

  async reject(remoteUserId, reason = "") {
    return this._request("reject", { reason });
  }

  async hangup(remoteUserId, reason = "") {
    return this._request("hangup", { reason });
  }

  /** The current call's id while calling/connecting/connected, else "". */
  getCallId() {
    return LIVE_STATES.has(this.state) ? this.callId : "";
  }

  getCallInfo() { return this.callInfo; }

  /** The cost nodes of the current (or last) call on this device: {node: ms since start}. */
  getCallCosts() { return this.costs; }

  /** The media engine, to listen to its own events (CallAPI: addDelegateEx after joinRTCStart). */
  getMediaEngine() { return this.engine; }

  muteLocalAudio(muted) { this.engine?.setLocalAudioMuted(muted); }

  muteLocalVideo(muted) { this.engine?.setLocalVideoMuted(muted); }

  /** Renew the media token: with `token` given use it, else ask the server for a fresh one. */
  async renewToken(token = null) {
    if (!token) {
      const reply = await this._request("token", {});
      token = reply.media?.token ?? null;
      this.credentials = reply.media ?? this.credentials;
    }
    if (token) await this.engine?.renewToken(token);
    this._notify("onCallEventChanged", CallEvent.tokenRenewed, "");
  }

  _request(type, fields) {
    const callId = this.callId ?? this.dialedCallId;
    if (!callId) return Promise.reject(this._mismatch(type));
    return this.socket.request(type, { call_id: callId, ...fields }).catch((error) => {
      if (error.code === "state_mismatch") this._notify("onCallEventChanged", CallEvent.stateMismatch, type);
      this._notify("onCallError", CallErrorEvent.sendMessageFail, CallErrorCodeType.message,
                   error.code, error.reason ?? String(error));
      throw error;
    });
  }

  _endFromHere(reason) {
    if (this.state === CallStateType.calling) {
      return this.role === "caller" ? this.cancelCall(reason) : this.reject(null, reason);
    }
    return this.hangup(null, reason);
  }

  _mismatch(type) {
    const error = new Error(`${type} is not possible while ${this.state}`);
    error.code = "state_mismatch";
    return error;
  }

  // ---- what the server says ----------------------------------------------------------------

  async _onHello(data, { firstTime, pageResume }) {
    this.user = data.user;
    this.serverConfig = data.config;
    if (!this.engine) {
      this.engine = await this.createEngine(data.config.media, {
        sendSignal: (payload, toDevice) => this._sendSignal(payload, toDevice),
        agoraSdkUrl: this.config.agoraSdkUrl,
      });
      this._configureEngine();
      this.engine.on("*", (event) => this._onMediaEvent(event));
    }
    this._notify("onConnectionChanged", "open");
    for (const item of data.presence ?? []) this._notify("onPresenceChanged", item.user_id, item.status);
    const active = data.active_call;
    if (active && active.call_id && LIVE_STATES.has(active.state)) {
      const known = active.call_id === this.callId;
      this._applyState(active, { resume: !known || pageResume });
    } else if (LIVE_STATES.has(this.state)) {
      // The call ended while this device was away and its end is no longer replayable.
      this._endCall({ call_id: this.callId, reason: CallStateReason.none,
                      event_reason: "the call ended while this device was away", info: this.callInfo });
    }
    for (const [event, flags] of this.backlog.splice(0)) this._onEvent(event, flags);
    if (firstTime) this._initialized?.resolve(data);
  }

  _configureEngine() {
    this.engine.setViews({ localView: this.prepareConfig.localView,
                           remoteView: this.prepareConfig.remoteView });
    this.engine.setVideoEncoderConfig(this.prepareConfig.videoEncoderConfig);
  }

  _onSocketStatus(status, error) {
    this._notify("onConnectionChanged", status);
    if (status === "unauthenticated") {
      this._notify("onCallError", CallErrorEvent.socketUnauthenticated, CallErrorCodeType.message,
                   4401, "sign in again");
      this._initialized?.reject(Object.assign(new Error("unauthenticated"), { code: "unauthenticated" }));
    } else if (status === "failed") {
      this._initialized?.reject(Object.assign(new Error(error?.message ?? "hello failed"),
                                              { code: error?.code ?? "internal" }));
    }
  }

  _onEvent(event, flags) {
    if (flags.stale && event.name !== "presence") return; // hello's active_call is the truth
    if (!this.engine && event.name !== "presence") {
      this.backlog.push([event, flags]); // the engine is still loading (Agora's SDK)
      return;
    }
    switch (event.name) {
      case "call.state": this._applyState(event, { resume: false }); break;
      case "call.event": this._applyEvent(event); break;
      case "call.signal":
        if (event.call_id === this.callId && LIVE_STATES.has(this.state)) {
          this.engine?.handleSignal(event.from_device, event.payload);
        }
        break;
      case "call.media":
        if (event.call_id === this.callId) this.renewToken(event.media?.token).catch(() => {});
        break;
      case "presence": this._notify("onPresenceChanged", event.user_id, event.status); break;
      default: break;
    }
  }

  _applyState(event, { resume }) {
    const { call_id: callId, state, reason } = event;
    const info = event.info ?? {};
    if (state === CallStateType.prepared) {
      if (callId === this.callId || (callId === this.dialedCallId && !this.callId)) this._endCall(event);
      return; // the end of a call this device never showed (e.g. a replaced one)
    }
    if (!LIVE_STATES.has(state)) return;
    const isNewCall = callId !== this.callId;
    if (isNewCall) {
      if (callId !== this.dialedCallId) { // an incoming call, or one resumed after a reload
        this._clearCall();
        this.costs.start();
      }
      this.callId = callId;
      this.role = info.caller?.id === this.user?.id ? "caller" : "callee";
      this.callType = info.call_type ?? this.callType;
    }
    this.callInfo = info;
    if (state === this.state && !isNewCall && !resume) return;
    if (state === CallStateType.connected) this.costs.mark(CostNode.connected);
    this._setState(state, reason, event.event_reason ?? "", info);
    this._driveMedia(state, info, { resume, isNewCall });
  }

  _driveMedia(state, info, { resume, isNewCall }) {
    if (this.role === "caller") {
      if (isNewCall || resume) this._joinMedia();
      if (resume) this.engine.restart();
      if (info.active_device && info.active_device !== this.selectedDevice) {
        this.selectedDevice = info.active_device;
        this.engine.selectRemote(info.active_device);
      }
    } else if (state === CallStateType.calling) {
      if (isNewCall && !this._canJoinOnCalling(info)) return;
      if (!this.mediaJoined) this._joinMedia();
    } else if (!this.mediaJoined) {
      this._joinMedia();
    } else if (resume) {
      this.engine.restart();
    }
    if (state !== CallStateType.calling && this.prepareConfig.firstFrameWaittingDisabled) {
      this._reportFirstFrame(); // CallAPI: connected as soon as accepted
    }
    if (state === CallStateType.connected) {
      this.connectedAt = this.now();
      this.engine.reveal();
      this._flushDeferredReports();
      this._notify("onCallConnected", info.channel, info.caller?.id, this.user?.id, Date.now());
    }
  }

  _canJoinOnCalling(info) {
    for (const listener of this.listeners) {
      if (typeof listener.canJoinRtcOnCalling === "function" && listener.canJoinRtcOnCalling(info) === false) {
        return false;
      }
    }
    return true;
  }

  /** Join the call's media. An engine that needs credentials (Agora) and has none gets them from
   * `fetchCredentials` (by default a `token` request). */
  async _joinMedia({ fetchCredentials = () => this._request("token", {}).then((reply) => reply.media) } = {}) {
    this.mediaJoined = true;
    const callId = this.callId;
    this._notify("onCallEventChanged", CallEvent.joinRTCStart, "");
    let credentials = this.role === "caller" ? this.credentials : null;
    if (this.engine.needsCredentials && !credentials) {
      try {
        credentials = await fetchCredentials();
      } catch {
        // The call ended meanwhile (its end event tears down) or the accept failed: join again later.
        if (callId === this.callId) this.mediaJoined = false;
        return;
      }
      if (callId !== this.callId) return;
    }
    this.engine.join({ role: this.role, callType: this.callType, credentials });
  }

  _applyEvent(event) {
    if (![this.callId, this.dialedCallId, this.endedCallId].includes(event.call_id)) return;
    if (event.event === CallEvent.remoteUserRecvCall) this.costs.mark(CostNode.remoteUserRecvCall);
    if (event.event === CallEvent.remoteAccepted) this.costs.mark(CostNode.acceptCall);
    this._notify("onCallEventChanged", event.event, event.reason ?? "");
  }

  _endCall(event) {
    const info = event.info ?? this.callInfo ?? {};
    const wasConnected = this.state === CallStateType.connected;
    const callId = this.callId ?? event.call_id;
    const duration = this.connectedAt ? Math.round(this.now() - this.connectedAt) : 0;
    if (this.mediaJoined) {
      this.socket.request("media", { call_id: callId, milestone: "left" }).catch(() => {});
    }
    this.engine?.leave();
    const peerId = this.role === "caller" ? info.callee?.id : info.caller?.id;
    const costs = this.costs;
    this._clearCall();
    this.costs = costs; // kept for getCallCosts() after the call
    this.endedCallId = callId; // its closing call.event follows the state
    this._setState(CallStateType.prepared, event.reason, event.event_reason ?? "", info);
    if (wasConnected) {
      const byMe = [CallStateReason.localHangup].includes(event.reason);
      this._notify("onCallDisconnected", info.channel, byMe ? this.user?.id : peerId,
                   this.user?.id, Date.now(), duration);
    }
  }

  _setState(state, reason, eventReason, info) {
    this.state = state;
    this._notify("onCallStateChanged", state, reason, eventReason, info);
  }

  // ---- what the media engine says ----------------------------------------------------------

  _onMediaEvent({ name, ...detail }) {
    if (!this.callId || !LIVE_STATES.has(this.state)) return;
    if (name === MediaEngineEvent.firstRemoteFrame) {
      if (this.role === "caller" && this.callInfo?.active_device && detail.device
          && detail.device !== this.callInfo.active_device) return;
      this._reportFirstFrame();
    } else if (name === MediaEngineEvent.error) {
      this._report("error", { code: String(detail.code).slice(0, 200) });
      this._notify("onCallError", CallErrorEvent.rtcOccurError, CallErrorCodeType.rtc, detail.code,
                   detail.message ?? "");
    } else if (name === MediaEngineEvent.tokenWillExpire) {
      this._notify("tokenPrivilegeWillExpire");
    } else if (name === MediaEngineEvent.audioBlocked) {
      this._notify("onAudioBlocked");
    } else if (MILESTONE_OF[name]) {
      const [milestone, node, event] = MILESTONE_OF[name];
      const firstTime = node ? !this.costs.has(node) : true;
      if (node) this.costs.mark(node);
      if (!firstTime) return;
      this._report(milestone, {}, { deferred: true });
      if (name === MediaEngineEvent.localFrame && this.callType === CallType.video) {
        this._notify("onCallEventChanged", CallEvent.captureFirstLocalVideoFrame, "");
      } else if (name === MediaEngineEvent.published) {
        this._notify("onCallEventChanged", this.callType === CallType.video
          ? CallEvent.publishFirstLocalVideoFrame : CallEvent.publishFirstLocalAudioFrame, "");
      }
      if (event) this._notify("onCallEventChanged", event, "");
    }
  }

  _reportFirstFrame() {
    if (this.firstFrameReported) return;
    this.firstFrameReported = true;
    this.costs.mark(CostNode.recvFirstFrame);
    this._report("first_remote_frame", { costs: this.costs.toJSON() });
    this._notify("onCallEventChanged", CallEvent.recvRemoteFirstFrame, "");
  }

  /**
   * Report a media milestone. Milestones that only inform the call record (`deferred`) are sent
   * once the call is connected: the server handles a socket's frames (and its events) one at a
   * time, so they must not queue in front of the negotiation, the first frame or the accept.
   * Their client time travels in `at_ms` and in the cost nodes sent with the first frame.
   */
  _report(milestone, extra = {}, { deferred = false } = {}) {
    const frame = { call_id: this.callId, milestone, at_ms: Math.round(Date.now()), ...extra };
    if (deferred && (this.state !== CallStateType.connected || this.deferredReports.length)) {
      this.deferredReports.push(frame);
    }
    else this._send("media", frame);
  }

  /** Send the deferred milestones a moment after connected, when the accept's work is done. */
  _flushDeferredReports() {
    const callId = this.callId;
    this.timers.setTimeout(() => {
      if (callId !== this.callId) return; // the call ended: the server takes no more milestones
      for (const frame of this.deferredReports.splice(0)) this._send("media", frame);
    }, MILESTONE_REPORT_DELAY_MS);
  }

  _send(type, frame) {
    this.socket.request(type, frame).catch(() => {});
  }

  _sendSignal(payload, toDevice) {
    if (!this.callId) return Promise.resolve();
    const fields = { call_id: this.callId, payload };
    if (toDevice) fields.to_device = toDevice;
    return this.socket.request("signal", fields);
  }

  _captureFailed(error) {
    this._notify("onCallError", CallErrorEvent.startCaptureFail, CallErrorCodeType.rtc,
                 "capture_failed", String(error?.message ?? error));
  }
}
