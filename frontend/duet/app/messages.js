/**
 * What the page says about a call, from the server's state reasons: pure functions, unit-tested.
 * Every way a call ends has its own sentence; the name is the other person's.
 */

import { CallStateReason as R } from "../callapi/codes.js";

const END_MESSAGES = {
  [R.localCancelled]: () => "Call cancelled.",
  [R.remoteCancelled]: (peer) => `Missed call from ${peer}.`,
  [R.localRejected]: (peer) => `You declined the call from ${peer}.`,
  [R.remoteRejected]: (peer) => `${peer} declined the call.`,
  [R.localHangup]: () => "You hung up.",
  [R.remoteHangup]: (peer) => `${peer} hung up.`,
  [R.callingTimeout]: (peer) => `${peer} didn't answer.`,
  [R.remoteCallingTimeout]: (peer) => `You missed a call from ${peer}.`,
  [R.remoteCallBusy]: (peer) => `${peer} is in another call.`,
  [R.remoteOffline]: (peer) => `${peer} is offline.`,
  [R.cancelByCallerRecall]: (peer) => `${peer} is calling again.`,
  [R.answeredElsewhere]: () => "Answered on another device.",
  [R.remoteConnectionLost]: (peer) => `Lost the connection to ${peer}. The call ended.`,
  [R.rtmLost]: () => "Your connection was lost. The call ended.",
  [R.endedByServer]: () => "The call was ended by Duet.",
  [R.insufficientBalance]: () => "Your balance is too low for this call.",
  [R.joinRTCFailed]: () => "The call's media could not start.",
};

/** The other participant of a call, seen from `myUserId`. */
export function peerOf(info, myUserId) {
  if (!info?.caller) return null;
  return info.caller.id === myUserId ? info.callee : info.caller;
}

/** The sentence for the end of a call, or a plain one for a reason with no sentence. */
export function endMessage(reason, peerName, durationMs = 0) {
  const sentence = END_MESSAGES[reason]?.(peerName ?? "They") ?? "The call ended.";
  if (durationMs > 0 && (reason === R.localHangup || reason === R.remoteHangup)) {
    return `${sentence} The call lasted ${formatDuration(durationMs)}.`;
  }
  return sentence;
}

/** 0:07, 12:30, 1:02:03 */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
}

const PRESENCE_TEXT = { online: "Online", busy: "In a call", offline: "Offline" };

export function presenceText(status) {
  return PRESENCE_TEXT[status] ?? "Offline";
}

/** Rows of the call view's timing panel: [label, ms] from this device's costs and the server's. */
export function timingRows(localCosts, serverCosts = {}, role = "caller") {
  const local = [
    ["Callee's device rang", localCosts.remoteUserRecvCall],
    [role === "caller" ? "Answered" : "You answered", localCosts.acceptCall],
    ["Camera's first frame", localCosts.captureFirstLocalFrame],
    ["Media connected", localCosts.localUserJoinChannel],
    ["First remote frame", localCosts.recvFirstFrame],
    ["Connected", localCosts.connected],
  ];
  const server = [
    ["Delivered (server)", serverCosts.delivered],
    ["Accepted (server)", serverCosts.accepted],
    ["Connected (server)", serverCosts.connected],
  ];
  // The callee's own click to connected (the caller only learns of the answer with connected).
  if (role === "callee" && typeof localCosts.acceptCall === "number"
      && typeof localCosts.connected === "number") {
    local.push(["Answer to connected", localCosts.connected - localCosts.acceptCall]);
  }
  return [...local, ...server].filter(([, ms]) => typeof ms === "number");
}
