/**
 * MediaDriver: the media half of CallApi. It drives the media engine from the server's states
 * (CallAPI section 7: capture at call(), join while ringing, keep the answering device at
 * connecting, reveal at connected) and turns what the engine says into `media` milestones, cost
 * nodes and listener callbacks.
 *
 * It keeps no call state of its own: it reads and updates the CallApi's current CallSession
 * (`api.session`), and uses the api's `state`, `prepareConfig`, `socket`, `timers`, `_notify`
 * (listeners), `_request` (a request about the current call) and `_canJoinOnCalling`.
 */

import { CallErrorCodeType, CallErrorEvent, CallEvent, CallStateType, CallType, LIVE_STATES } from "./codes.js";
import { CostNode } from "./costs.js";
import { MediaEngineEvent } from "../media/emitter.js";

// Engine events that are milestones: [media milestone, cost node, CallAPI event].
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

export class MediaDriver {
  constructor(api) {
    this.api = api;
    this.engine = null;
  }

  /** The engine hello's config named: it gets the views and camera settings, and is listened to. */
  attach(engine) {
    this.engine = engine;
    this.configure();
    engine.on("*", (event) => this._onEngineEvent(event));
  }

  /** Hand prepareForCall's views and camera settings to the engine. */
  configure() {
    const { localView, remoteView, videoEncoderConfig } = this.api.prepareConfig;
    this.engine.setViews({ localView, remoteView });
    this.engine.setVideoEncoderConfig(videoEncoderConfig);
  }

  /** call(): the camera starts while the call request travels, warm when the callee's offer lands. */
  captureForCall(callType) {
    this.engine.startCapture(callType).catch((error) => this._captureFailed(error));
  }

  /** The engine's part of a state this device just entered. */
  onState(state, info, { resume, isNewCall }) {
    const session = this.api.session;
    if (session.role === "caller") {
      if (isNewCall || resume) this.join();
      if (resume) this.engine.restart();
      if (info.active_device && info.active_device !== session.selectedDevice) {
        session.selectedDevice = info.active_device;
        this.engine.selectRemote(info.active_device);
      }
    } else if (state === CallStateType.calling) {
      if (isNewCall && !this.api._canJoinOnCalling(info)) return;
      if (!session.mediaJoined) this.join();
    } else if (!session.mediaJoined) {
      this.join();
    } else if (resume) {
      this.engine.restart();
    }
    if (state === CallStateType.connected) {
      this.engine.reveal();
      this._flushDeferredReports();
    }
  }

  /** Join the call's media. An engine that needs credentials (Agora) and has none gets them from
   * `fetchCredentials` (by default a `token` request). */
  async join({ fetchCredentials = () => this.api._request("token", {}).then((reply) => reply.media) } = {}) {
    const session = this.api.session;
    session.mediaJoined = true;
    this.api._notify("onCallEventChanged", CallEvent.joinRTCStart, "");
    let credentials = session.role === "caller" ? session.credentials : null;
    if (this.engine.needsCredentials && !credentials) {
      try {
        credentials = await fetchCredentials();
      } catch {
        // The call ended meanwhile (its end event tears down) or the accept failed: join again later.
        session.mediaJoined = false;
        return;
      }
      if (session !== this.api.session) return;
    }
    this.engine.join({ role: session.role, callType: session.callType, credentials });
  }

  /** The call ended here: the server hears this device left, the engine tears everything down. */
  leave(callId) {
    if (this.api.session.mediaJoined) this._send("media", { call_id: callId, milestone: "left" });
    return this.engine?.leave();
  }

  /** The engine's `sendSignal`: a negotiation payload for the current call. */
  sendSignal(payload, toDevice) {
    const callId = this.api.session.callId;
    if (!callId) return Promise.resolve();
    const fields = { call_id: callId, payload };
    if (toDevice) fields.to_device = toDevice;
    return this.api.socket.request("signal", fields);
  }

  _onEngineEvent({ name, ...detail }) {
    const { api } = this;
    const session = api.session;
    if (!session.callId || !LIVE_STATES.has(api.state)) return;
    if (name === MediaEngineEvent.firstRemoteFrame) {
      if (session.role === "caller" && session.info?.active_device && detail.device
          && detail.device !== session.info.active_device) return;
      this._reportFirstFrame();
    } else if (name === MediaEngineEvent.error) {
      this._report("error", { code: String(detail.code).slice(0, 200) });
      api._notify("onCallError", CallErrorEvent.rtcOccurError, CallErrorCodeType.rtc, detail.code,
                  detail.message ?? "");
    } else if (name === MediaEngineEvent.tokenWillExpire) {
      api._notify("tokenPrivilegeWillExpire");
    } else if (name === MediaEngineEvent.audioBlocked) {
      api._notify("onAudioBlocked");
    } else if (MILESTONE_OF[name]) {
      const [milestone, node, event] = MILESTONE_OF[name];
      const firstTime = node ? !session.costs.has(node) : true;
      if (node) session.costs.mark(node);
      if (!firstTime) return;
      this._report(milestone, {}, { deferred: true });
      if (name === MediaEngineEvent.localFrame && session.callType === CallType.video) {
        api._notify("onCallEventChanged", CallEvent.captureFirstLocalVideoFrame, "");
      } else if (name === MediaEngineEvent.published) {
        api._notify("onCallEventChanged", session.callType === CallType.video
          ? CallEvent.publishFirstLocalVideoFrame : CallEvent.publishFirstLocalAudioFrame, "");
      }
      if (event) api._notify("onCallEventChanged", event, "");
    }
  }

  /**
   * The first remote frame: reported at once, except on a callee device that has not answered
   * yet. There it waits for the accept, which carries it (`first_remote_frame`): the server only
   * needs it once the call is accepted, and the fast-first-frame flow (picture before the answer)
   * then costs one frame and one server transaction less. A call that ends unanswered drops it.
   */
  _reportFirstFrame() {
    const { api } = this;
    const session = api.session;
    if (session.firstFrameReported) return;
    session.firstFrameReported = true;
    session.costs.mark(CostNode.recvFirstFrame);
    if (session.role === "callee" && api.state === CallStateType.calling && !session.acceptSent) {
      session.firstFrameHeld = true;
    } else {
      this._report("first_remote_frame", { costs: session.costs.toJSON() });
    }
    api._notify("onCallEventChanged", CallEvent.recvRemoteFirstFrame, "");
  }

  /**
   * Report a media milestone. Milestones that only inform the call record (`deferred`) are sent
   * once the call is connected: the server handles a socket's frames (and its events) one at a
   * time, so they must not queue in front of the negotiation, the first frame or the accept.
   * Their client time travels in `at_ms` and in the cost nodes sent with the first frame.
   */
  _report(milestone, extra = {}, { deferred = false } = {}) {
    const session = this.api.session;
    const frame = { call_id: session.callId, milestone, at_ms: Math.round(Date.now()), ...extra };
    if (deferred && (this.api.state !== CallStateType.connected || session.deferredReports.length)) {
      session.deferredReports.push(frame);
    } else {
      this._send("media", frame);
    }
  }

  /** Send the deferred milestones a moment after connected, when the accept's work is done. */
  _flushDeferredReports() {
    const session = this.api.session;
    this.api.timers.setTimeout(() => {
      if (session !== this.api.session) return; // the call ended: the server takes no more milestones
      for (const frame of session.deferredReports.splice(0)) this._send("media", frame);
    }, MILESTONE_REPORT_DELAY_MS);
  }

  _send(type, frame) {
    this.api.socket.request(type, frame).catch(() => {});
  }

  _captureFailed(error) {
    this.api._notify("onCallError", CallErrorEvent.startCaptureFail, CallErrorCodeType.rtc,
                     "capture_failed", String(error?.message ?? error));
  }
}
