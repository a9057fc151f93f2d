/**
 * The call state of this device: its CallAPI state, the call it shows (CallSession) and how a
 * server `call.state` changes them. The server decides every state; this only works out what a
 * state means for this device (a new call, the same call further on, the end of the shown call,
 * or a call it never showed), tells the listeners and has the MediaDriver act on it.
 */

import { CallCosts, CostNode } from "./costs.js";
import { CallEvent, CallStateReason, CallStateType, LIVE_STATES } from "./codes.js";

/** What this device knows of the one call it shows (or is dialing); a new call, a new session. */
export class CallSession {
  /** @param {() => number} now  the epoch clock of the cost nodes */
  constructor(now) {
    this.callId = null; // the call the server's events are about
    this.dialedCallId = null; // call()'s reply, until the call's first event arrives
    this.info = null; // the latest call.state's info
    this.role = null; // "caller" or "callee"
    this.callType = null;
    this.credentials = null; // media credentials of the call, accept or token reply
    this.selectedDevice = null; // the callee device the caller keeps (info.active_device)
    this.mediaJoined = false;
    this.firstFrameReported = false;
    this.firstFrameHeld = false; // a callee's first frame from before its answer, for the accept
    this.acceptSent = false;
    this.deferredReports = []; // `media` frames held back until connected
    this.connectedAt = null;
    this.costs = new CallCosts(now);
  }

  /** The call an intent is about: the shown one, or before its first event the dialed one. */
  get targetId() {
    return this.callId ?? this.dialedCallId;
  }

  /** Whether an event about `callId` concerns this session's call. */
  concerns(callId) {
    return callId === this.callId || callId === this.dialedCallId;
  }
}

export class CallState {
  /**
   * @param {object} parts
   * @param {() => number} parts.now  epoch clock
   * @param {(method: string, ...args) => void} parts.notify  calls the listeners
   * @param {MediaDriver} parts.media
   * @param {() => number|undefined} parts.userId  the signed-in user (hello's)
   */
  constructor({ now, notify, media, userId }) {
    this.now = now;
    this.notify = notify;
    this.media = media;
    this.userId = userId;
    this.state = CallStateType.idle;
    this.session = new CallSession(now);
    this.endedCallId = null; // the call that ended last: its closing call.event follows the state
  }

  get live() {
    return LIVE_STATES.has(this.state);
  }

  set(state, reason, eventReason, info) {
    this.state = state;
    this.notify("onCallStateChanged", state, reason, eventReason, info);
  }

  /** A new call starts on this device: a fresh session, its cost nodes counting from now. */
  newSession() {
    this.session = new CallSession(this.now);
    this.session.costs.start();
    return this.session;
  }

  /** Back to idle (deinitialize), with nothing of the last call kept. */
  reset() {
    this.session = new CallSession(this.now);
    this.state = CallStateType.idle;
  }

  /** A `call.state` event, or hello's `active_call` (`resume`: the media must be rebuilt). */
  apply(event, { resume }) {
    const { call_id: callId, state, reason } = event;
    const info = event.info ?? {};
    if (state === CallStateType.prepared) {
      if (callId === this.session.callId || (callId === this.session.dialedCallId && !this.session.callId)) {
        this.end(event);
      }
      return; // otherwise the end of a call this device never showed (e.g. a replaced one)
    }
    if (!LIVE_STATES.has(state)) return;
    const isNewCall = callId !== this.session.callId;
    if (isNewCall) {
      // An incoming call, or one resumed after a reload, gets a new session; a dialed one has it.
      const session = callId === this.session.dialedCallId ? this.session : this.newSession();
      session.callId = callId;
      session.role = info.caller?.id === this.userId() ? "caller" : "callee";
      session.callType = info.call_type ?? session.callType;
    }
    const session = this.session;
    session.info = info;
    if (state === this.state && !isNewCall && !resume) return;
    if (state === CallStateType.connected) {
      session.costs.mark(CostNode.connected);
      session.connectedAt = this.now();
    }
    this.set(state, reason, event.event_reason ?? "", info);
    this.media.onState(state, info, { resume, isNewCall });
    if (resume && state === CallStateType.calling && session.role === "caller" && info.delivered === true) {
      // A callee device has the call, and its receipt (remoteUserRecvCall) went to the page this
      // one replaced: the listeners hear it again, so a reloaded caller shows "ringing". No cost
      // node: this session started at the resume, so its time would say nothing.
      this.notify("onCallEventChanged", CallEvent.remoteUserRecvCall, "");
    }
    if (state === CallStateType.connected) {
      this.notify("onCallConnected", info.channel, info.caller?.id, this.userId(), Date.now());
    }
  }

  /** A `call.event` about the shown call (or the one that just ended). */
  applyEvent(event) {
    const session = this.session;
    if (!session.concerns(event.call_id) && event.call_id !== this.endedCallId) return;
    if (event.event === CallEvent.remoteUserRecvCall) session.costs.mark(CostNode.remoteUserRecvCall);
    if (event.event === CallEvent.remoteAccepted) session.costs.mark(CostNode.acceptCall);
    this.notify("onCallEventChanged", event.event, event.reason ?? "");
  }

  /** The shown call ended (a `prepared` state): media down, listeners told, costs kept. */
  end(event) {
    const ended = this.session;
    const info = event.info ?? ended.info ?? {};
    const wasConnected = this.state === CallStateType.connected;
    const callId = ended.callId ?? event.call_id;
    const duration = ended.connectedAt ? Math.round(this.now() - ended.connectedAt) : 0;
    this.media.leave(callId);
    const peerId = ended.role === "caller" ? info.callee?.id : info.caller?.id;
    this.session = new CallSession(this.now);
    this.session.costs = ended.costs; // kept for getCallCosts() after the call
    this.endedCallId = callId;
    this.set(CallStateType.prepared, event.reason, event.event_reason ?? "", info);
    if (wasConnected) {
      const byMe = event.reason === CallStateReason.localHangup;
      this.notify("onCallDisconnected", info.channel, byMe ? this.userId() : peerId,
                  this.userId(), Date.now(), duration);
    }
  }

  /** hello says there is no live call: one shown here ended while the device was away. */
  endedWhileAway() {
    if (!this.live) return;
    this.end({ call_id: this.session.callId, reason: CallStateReason.none,
               event_reason: "the call ended while this device was away", info: this.session.info });
  }
}
