/**
 * CallApi: the browser's call client, named after Agora's CallAPI so that its README maps one to
 * one (initialize, prepareForCall, call, cancelCall, accept, reject, hangup, getCallId, ...).
 *
 * The server decides every call. This class sends the intents and renders the server's
 * `call.state`/`call.event` to listeners; it never decides a state by itself except the
 * client-local ones (idle before prepareForCall, prepared after it). Its parts:
 * - call-state.js: this device's state, the call it shows and what a server state does to them;
 * - media-driver.js: the media engine driven from the states (capture at call(), join while
 *   ringing unless canJoinRtcOnCalling says no, keep the answering device, reveal at connected,
 *   tear down at the end) and the engine's milestones reported with `media` frames;
 * - here: set-up, intents, and the server's events, including the resume after a reload from
 *   hello's `active_call` (events replayed to a reloaded page are acknowledged but not applied:
 *   the media connections they describe died with the old page).
 */

import { CallState } from "./call-state.js";
import { CostNode, epochNow } from "./costs.js";
import {
  CallErrorCodeType, CallErrorEvent, CallEvent, CallStateReason, CallStateType, CallType, LIVE_STATES,
} from "./codes.js";
import { MediaDriver } from "./media-driver.js";
import { DEFAULT_VIDEO_ENCODER_CONFIG, videoEncoderConfig } from "../media/video-config.js";

export { MILESTONE_REPORT_DELAY_MS } from "./media-driver.js";

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
    this.prepareConfig = { ...DEFAULT_PREPARE_CONFIG };
    this.socket = null;
    this.user = null;
    this.serverConfig = null;
    this.backlog = [];
    this.media = new MediaDriver(this);
    this.calls = new CallState({ now, media: this.media, notify: (...args) => this._notify(...args),
                                 userId: () => this.user?.id });
  }

  /** CallAPI's state of this device (codes.js CallStateType). */
  get state() { return this.calls.state; }

  /** What this device knows of the call it shows (call-state.js CallSession). */
  get session() { return this.calls.session; }

  /** "caller" or "callee" in the current call, else null. */
  get role() { return this.session.role; }

  // ---- listeners ---------------------------------------------------------------------------

  addListener(listener) { this.listeners.add(listener); }

  removeListener(listener) { this.listeners.delete(listener); }

  _notify(method, ...args) {
    for (const listener of [...this.listeners]) {
      if (typeof listener[method] === "function") listener[method](...args);
    }
  }

  _canJoinOnCalling(info) {
    return ![...this.listeners].some((listener) => typeof listener.canJoinRtcOnCalling === "function"
                                                    && listener.canJoinRtcOnCalling(info) === false);
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
    if (this.media.engine) this.media.configure();
    if (this.state === CallStateType.idle || this.state === CallStateType.failed) {
      this.calls.set(CallStateType.prepared, CallStateReason.none, "", {});
    }
  }

  /** Leave every call, close the socket; the client is idle again. */
  async deinitialize() {
    if (this.calls.live) await this._endFromHere("deinitialize").catch(() => {});
    await this.media.engine?.leave();
    this.socket?.stop();
    this.calls.reset();
    this._notify("onCallEventChanged", CallEvent.deinitialize, "");
  }

  // ---- intents -----------------------------------------------------------------------------

  /** Call a user. Resolves with the call reply ({call_id, channel, media, outcome}). */
  async call(remoteUserId, { callType = CallType.video, callExtension = null } = {}) {
    if (this.calls.live) throw this._mismatch("call");
    const session = this.calls.newSession();
    session.callType = callType;
    session.role = "caller";
    this.media.captureForCall(callType);
    const extension = { ...(this.prepareConfig.userExtension ?? {}), ...(callExtension ?? {}) };
    const fields = { to: remoteUserId, call_type: callType };
    if (Object.keys(extension).length) fields.extension = extension;
    if (this.prepareConfig.callTimeoutMillisecond) fields.timeout_ms = this.prepareConfig.callTimeoutMillisecond;
    Object.assign(fields, this._firstFrameFields());
    let reply;
    try {
      reply = await this.socket.request("call", fields);
    } catch (error) {
      if (!this.session.callId) await this.media.engine.leave();
      this._notify("onCallError", CallErrorEvent.sendMessageFail, CallErrorCodeType.message,
                   error.code, error.reason ?? String(error));
      throw error;
    }
    this.session.dialedCallId = reply.call_id;
    this.session.credentials = reply.media;
    return reply;
  }

  async cancelCall(reason = "") {
    return this._request("cancel", { reason });
  }

  async accept(remoteUserId) {
    const session = this.session;
    session.costs.mark(CostNode.acceptCall);
    // The cost nodes so far travel with the accept, as with the first frame's `media` report:
    // when the picture came first, acceptCall has no later report to ride on.
    const fields = { ...this._firstFrameFields(), costs: session.costs.toJSON() };
    const carried = session.firstFrameHeld;
    if (carried) fields.first_remote_frame = true; // the picture came first
    session.firstFrameHeld = false;
    session.acceptSent = true;
    // The frame goes first: joining the media (camera, connection) takes this thread tens of ms.
    const accepting = this._request("accept", fields);
    if (!session.mediaJoined) { // canJoinRtcOnCalling said no: join now, with the accept's credentials
      this.media.join({ fetchCredentials: () => accepting.then((reply) => reply.media) });
    }
    let reply;
    try {
      reply = await accepting;
    } catch (error) {
      // not answered: a later accept carries the frame again, or a later frame is held again
      session.acceptSent = false;
      session.firstFrameHeld = session.firstFrameHeld || carried;
      throw error;
    }
    session.credentials = reply.media ?? session.credentials;
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
    return this.calls.live ? this.session.callId : "";
  }

  getCallInfo() { return this.session.info; }

  /** The cost nodes of the current (or last) call on this device: {node: ms since start}. */
  getCallCosts() { return this.session.costs; }

  /** The media engine, to listen to its own events (CallAPI: addDelegateEx after joinRTCStart). */
  getMediaEngine() { return this.media.engine; }

  muteLocalAudio(muted) { this.media.engine?.setLocalAudioMuted(muted); }

  muteLocalVideo(muted) { this.media.engine?.setLocalVideoMuted(muted); }

  /** Renew the media token: with `token` given use it, else ask the server for a fresh one. */
  async renewToken(token = null) {
    if (!token) {
      const reply = await this._request("token", {});
      token = reply.media?.token ?? null;
      this.session.credentials = reply.media ?? this.session.credentials;
    }
    if (token) await this.media.engine?.renewToken(token);
    this._notify("onCallEventChanged", CallEvent.tokenRenewed, "");
  }

  /** A request about the current call; a refusal is reported to the listeners. */
  _request(type, fields) {
    const callId = this.session.targetId;
    if (!callId) return Promise.reject(this._mismatch(type));
    return this.socket.request(type, { call_id: callId, ...fields }).catch((error) => {
      if (error.code === "state_mismatch") this._notify("onCallEventChanged", CallEvent.stateMismatch, type);
      this._notify("onCallError", CallErrorEvent.sendMessageFail, CallErrorCodeType.message,
                   error.code, error.reason ?? String(error));
      throw error;
    });
  }

  /** CallAPI's firstFrameWaittingDisabled: this side connects at the accept, without waiting for
   * its first remote frame (the server decides it; on glare the `call` is the answer). */
  _firstFrameFields() {
    return this.prepareConfig.firstFrameWaittingDisabled ? { wait_first_frame: false } : {};
  }

  _endFromHere(reason) {
    if (this.state === CallStateType.calling) {
      return this.session.role === "caller" ? this.cancelCall(reason) : this.reject(null, reason);
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
    if (!this.media.engine) {
      this.media.attach(await this.createEngine(data.config.media, {
        sendSignal: (payload, toDevice) => this.media.sendSignal(payload, toDevice),
        agoraSdkUrl: this.config.agoraSdkUrl,
      }));
    }
    this._notify("onConnectionChanged", "open");
    for (const item of data.presence ?? []) this._notify("onPresenceChanged", item.user_id, item.status);
    const active = data.active_call;
    if (active && active.call_id && LIVE_STATES.has(active.state)) {
      const known = active.call_id === this.session.callId;
      this.calls.apply(active, { resume: !known || pageResume });
    } else {
      this.calls.endedWhileAway(); // and its end is no longer replayable
    }
    for (const [event, flags] of this.backlog.splice(0)) this._onEvent(event, flags);
    if (firstTime) this._initialized?.resolve(data);
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
    if (!this.media.engine && event.name !== "presence") {
      this.backlog.push([event, flags]); // the engine is still loading (Agora's SDK)
      return;
    }
    switch (event.name) {
      case "call.state": this.calls.apply(event, { resume: false }); break;
      case "call.event": this.calls.applyEvent(event); break;
      case "call.signal":
        if (event.call_id === this.session.callId && this.calls.live) {
          this.media.engine.handleSignal(event.from_device, event.payload);
        }
        break;
      case "call.media":
        if (event.call_id === this.session.callId) this.renewToken(event.media?.token).catch(() => {});
        break;
      case "presence": this._notify("onPresenceChanged", event.user_id, event.status); break;
      default: break;
    }
  }
}
