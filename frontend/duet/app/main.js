/**
 * The lobby page: people with live presence, the call dialogs and the call view.
 *
 * It renders what the CallApi reports (which renders what the server decided) and turns clicks
 * into CallApi intents. Configuration comes from the #app element's data- attributes.
 * `window.duet` holds the page's CallApi and call history for diagnostics and the browser tests.
 */

import { CallApi } from "../callapi/call-api.js";
import { CallEvent, CallStateReason, CallStateType, CallType } from "../callapi/codes.js";
import { CostNode } from "../callapi/costs.js";
import { CallSocket, DeviceMemory } from "../callapi/socket.js";
import { createMediaEngine } from "../media/engine.js";
import { endMessage, formatDuration, peerOf, presenceText, timingRows } from "./messages.js";

// How long an end-of-call message stays on screen.
const TOAST_MS = 6000;
// The duration counter's refresh period.
const DURATION_TICK_MS = 500;
const SETTINGS_KEY = "duet.settings";

const $ = (selector) => document.querySelector(selector);

function loadSettings() {
  try {
    return { ringSeconds: "", joinOnAnswer: false, note: "",
             ...JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}") };
  } catch {
    return { ringSeconds: "", joinOnAnswer: false, note: "" };
  }
}

class LobbyPage {
  constructor(root) {
    this.root = root;
    this.settings = loadSettings();
    this.people = new Map([...document.querySelectorAll(".person")].map(
      (row) => [Number(row.dataset.userId), row]));
    this.history = [];
    const socketUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${root.dataset.socketPath}`;
    this.api = new CallApi({
      createSocket: (config) => new CallSocket({
        url: config.socketUrl, watch: config.watch, memory: new DeviceMemory(sessionStorage) }),
      createEngine: createMediaEngine,
    });
    this.api.addListener(this);
    this.config = { socketUrl, watch: [...this.people.keys()], agoraSdkUrl: root.dataset.agoraSdk };
  }

  async start() {
    this._bindControls();
    this._applySettings();
    this.api.prepareForCall({ localView: $("#local-view"), remoteView: $("#remote-view") });
    try {
      await this.api.initialize(this.config);
      this.root.dataset.ready = "true";
    } catch (error) {
      if (error.code === "unauthenticated") location.assign(this.root.dataset.loginUrl);
      else this.toast(`Duet cannot connect: ${error.message}`);
    }
  }

  // ---- controls ----------------------------------------------------------------------------

  _bindControls() {
    $("#people").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-call-type]");
      if (!button) return;
      const userId = Number(button.closest(".person").dataset.userId);
      this.startCall(userId, button.dataset.callType);
    });
    $("#accept").addEventListener("click", () => this._act(() => this.api.accept(this.peer?.id)));
    $("#reject").addEventListener("click", () => this._act(() => this.api.reject(this.peer?.id, "declined")));
    $("#cancel").addEventListener("click", () => this._act(() => this.api.cancelCall("cancelled")));
    $("#hangup").addEventListener("click", () => this._act(() => this.api.hangup(this.peer?.id, "hung up")));
    $("#mute-mic").addEventListener("click", (event) => this._toggle(event.currentTarget,
      (on) => this.api.muteLocalAudio(on)));
    $("#camera-off").addEventListener("click", (event) => this._toggle(event.currentTarget,
      (on) => this.api.muteLocalVideo(on)));
    $("#enable-audio").addEventListener("click", (event) => {
      this.api.getMediaEngine()?.resumeAudio();
      event.currentTarget.hidden = true;
    });
    $("#ring-seconds").addEventListener("change", (event) => this._saveSetting("ringSeconds", event.target.value));
    $("#join-on-answer").addEventListener("change", (event) => this._saveSetting("joinOnAnswer", event.target.checked));
    $("#call-note").addEventListener("change", (event) => this._saveSetting("note", event.target.value.trim()));
    for (const dialog of document.querySelectorAll("dialog")) {
      dialog.addEventListener("cancel", (event) => event.preventDefault()); // Esc is not an answer
    }
  }

  _saveSetting(name, value) {
    this.settings[name] = value;
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(this.settings));
    this._applySettings();
  }

  _applySettings() {
    $("#ring-seconds").value = this.settings.ringSeconds;
    $("#join-on-answer").checked = Boolean(this.settings.joinOnAnswer);
    $("#call-note").value = this.settings.note;
    const seconds = Number(this.settings.ringSeconds);
    this.api.prepareForCall({ callTimeoutMillisecond: seconds ? seconds * 1000 : null });
  }

  _toggle(button, apply) {
    const on = button.getAttribute("aria-pressed") !== "true";
    button.setAttribute("aria-pressed", String(on));
    apply(on);
  }

  async startCall(userId, callType) {
    const extension = this.settings.note ? { note: this.settings.note } : null;
    this.callStartedFor = this.people.get(userId)?.dataset.name;
    await this._act(() => this.api.call(userId, { callType, callExtension: extension }));
  }

  async _act(intent) {
    try {
      return await intent();
    } catch (error) {
      if (error.code !== "state_mismatch") this.toast(`That did not work: ${error.reason || error.message}`);
      return null;
    }
  }

  // ---- CallApi listener --------------------------------------------------------------------

  canJoinRtcOnCalling() {
    return !this.settings.joinOnAnswer;
  }

  onCallStateChanged(state, reason, eventReason, info) {
    this.root.dataset.callState = state;
    this.root.dataset.callReason = reason;
    if (state === CallStateType.prepared) {
      this._endView(reason);
      return;
    }
    this.peer = peerOf(info, this.api.user?.id);
    this.callId = this.api.getCallId();
    if (state === CallStateType.calling) {
      if (reason === CallStateReason.localVideoCall || reason === CallStateReason.localAudioCall) {
        this._showOutgoing(info);
      } else {
        this._showIncoming(info);
      }
    } else if (state === CallStateType.connecting) {
      this._showCallView(info, "Connecting…");
    } else if (state === CallStateType.connected) {
      this._showCallView(info, null);
      this._startDuration();
      this._renderTimings(info.costs ?? {});
    }
  }

  onCallEventChanged(event) {
    if (event === CallEvent.remoteUserRecvCall) {
      $("#outgoing-status").textContent = "Ringing…";
      $("#outgoing").dataset.ringing = "true";
    } else if (event === CallEvent.remoteReconnecting) {
      this._callNotice(`${this.peer?.display_name ?? "They"} lost their connection. Waiting for them…`);
    } else if (event === CallEvent.remoteReconnected) {
      this._callNotice(null);
    }
  }

  onCallConnected() {
    this.connectedAt = performance.now();
  }

  onCallDisconnected(roomId, hangupUserId, currentUserId, timestamp, duration) {
    this.lastDuration = duration;
  }

  onCallError(errorEvent, errorType, errorCode, message) {
    if (errorEvent === "startCaptureFail") this.toast("Your camera or microphone is not available.");
    else if (errorEvent === "rtcOccurError") this._callNotice(`Media problem: ${message}`);
  }

  onAudioBlocked() {
    $("#enable-audio").hidden = false;
  }

  onPresenceChanged(userId, status) {
    const row = this.people.get(userId);
    if (!row) return;
    row.dataset.status = status;
    row.querySelector(".presence-text").textContent = presenceText(status);
  }

  onConnectionChanged(status) {
    const banner = $("#connection-banner");
    banner.hidden = status === "open" || status === "connecting";
    if (status === "reconnecting") banner.textContent = "Connection lost. Reconnecting…";
    if (status === "unauthenticated") location.assign(this.root.dataset.loginUrl);
  }

  // ---- rendering ---------------------------------------------------------------------------

  _fillPeer(container, info) {
    const name = this.peer?.display_name ?? this.callStartedFor ?? "";
    for (const element of container.querySelectorAll(".peer-name")) element.textContent = name;
    for (const element of container.querySelectorAll(".avatar")) element.textContent = initials(name);
    for (const element of container.querySelectorAll(".call-kind")) {
      element.textContent = info.call_type === CallType.audio ? "Audio call" : "Video call";
    }
  }

  _showOutgoing(info) {
    const dialog = $("#outgoing");
    this._fillPeer(dialog, info);
    $("#outgoing-status").textContent = "Calling…";
    delete dialog.dataset.ringing;
    openDialog(dialog);
  }

  _showIncoming(info) {
    const dialog = $("#incoming");
    this._fillPeer(dialog, info);
    const note = info.extension?.note;
    const noteElement = dialog.querySelector(".call-note");
    noteElement.textContent = note ? `“${note}”` : "";
    noteElement.hidden = !note;
    openDialog(dialog);
  }

  _showCallView(info, status) {
    closeDialog($("#incoming"));
    closeDialog($("#outgoing"));
    const view = $("#call-view");
    this._fillPeer(view, info);
    view.hidden = false;
    view.dataset.callType = info.call_type;
    view.dataset.connected = String(status === null);
    $("#call-status").textContent = status ?? (info.call_type === CallType.audio ? "Audio call" : "");
    document.body.classList.add("in-call");
  }

  _endView(reason) {
    const record = { callId: this.callId, reason, costs: this.api.getCallCosts().toJSON() };
    this.history.push(record);
    closeDialog($("#incoming"));
    closeDialog($("#outgoing"));
    $("#call-view").hidden = true;
    $("#enable-audio").hidden = true;
    this._callNotice(null);
    document.body.classList.remove("in-call");
    for (const button of document.querySelectorAll("#call-view [aria-pressed]")) {
      button.setAttribute("aria-pressed", "false");
    }
    clearInterval(this.durationTimer);
    const duration = this.connectedAt ? performance.now() - this.connectedAt : 0;
    this.connectedAt = null;
    if (reason !== CallStateReason.none) {
      this.toast(endMessage(reason, this.peer?.display_name ?? this.callStartedFor, duration));
    }
    this.peer = null;
  }

  _startDuration() {
    clearInterval(this.durationTimer);
    const started = this.connectedAt ?? performance.now();
    const render = () => { $("#duration").textContent = formatDuration(performance.now() - started); };
    render();
    this.durationTimer = setInterval(render, DURATION_TICK_MS);
  }

  _renderTimings(serverCosts) {
    const role = this.api.role;
    const list = $("#timings-list");
    list.replaceChildren();
    const rows = timingRows(this.api.getCallCosts().toJSON(), serverCosts, role);
    for (const [label, ms] of rows) {
      const term = document.createElement("dt");
      term.textContent = label;
      const value = document.createElement("dd");
      value.textContent = `${ms} ms`;
      list.append(term, value);
    }
    const first = this.api.getCallCosts().toJSON()[CostNode.recvFirstFrame];
    $("#timings-summary").textContent = first == null ? "Connection timings"
      : `Picture in ${first} ms`;
  }

  _callNotice(text) {
    const notice = $("#call-notice");
    notice.hidden = !text;
    notice.textContent = text ?? "";
  }

  toast(text) {
    const toast = $("#toast");
    toast.textContent = text;
    toast.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { toast.hidden = true; }, TOAST_MS);
  }
}

function initials(name) {
  return name.split(/\s+/).filter(Boolean).slice(0, 2).map((part) => part[0].toUpperCase()).join("");
}

function openDialog(dialog) {
  if (!dialog.open) dialog.showModal();
}

function closeDialog(dialog) {
  if (dialog.open) dialog.close();
}

const root = document.getElementById("app");
if (root) {
  const page = new LobbyPage(root);
  window.duet = { api: page.api, page, history: page.history };
  page.start();
}
