/**
 * CallAPI's vocabulary with the wire codes of shared/spec/protocol.md (codes from 50 up are
 * Duet's additions). Values are the names the server sends; `*_CODES` map them to numbers.
 * Data only: the client, the page and the tests read it, so a name is spelled once.
 */

function vocabulary(codes) {
  const names = Object.freeze(Object.fromEntries(Object.keys(codes).map((name) => [name, name])));
  return [names, Object.freeze({ ...codes })];
}

export const [CallStateType, CALL_STATE_CODES] = vocabulary({
  idle: 0, prepared: 1, calling: 2, connecting: 3, connected: 4, failed: 10,
});

export const [CallStateReason, CALL_STATE_REASON_CODES] = vocabulary({
  none: 0, joinRTCFailed: 1, rtmSetupFailed: 2, rtmSetupSuccessed: 3, messageFailed: 4,
  localRejected: 5, remoteRejected: 6, remoteAccepted: 7, localAccepted: 8, localHangup: 9,
  remoteHangup: 10, localCancelled: 11, remoteCancelled: 12, recvRemoteFirstFrame: 13,
  callingTimeout: 14, cancelByCallerRecall: 15, rtmLost: 16, remoteCallBusy: 17,
  remoteCallingTimeout: 18, localVideoCall: 30, localAudioCall: 31, remoteVideoCall: 32,
  remoteAudioCall: 33, remoteOffline: 50, answeredElsewhere: 51, insufficientBalance: 52,
  endedByServer: 53, remoteConnectionLost: 54,
});

export const [CallEvent, CALL_EVENT_CODES] = vocabulary({
  none: 0, deinitialize: 1, callingTimeout: 3, remoteCallingTimeout: 4, joinRTCSuccessed: 5,
  stateMismatch: 9, joinRTCStart: 10, remoteUserRecvCall: 99, localRejected: 100,
  remoteRejected: 101, remoteAccepted: 103, localAccepted: 104, localHangup: 105,
  remoteHangup: 106, remoteJoined: 107, remoteLeft: 108, localCancelled: 109,
  remoteCancelled: 110, localJoined: 111, localLeft: 112, recvRemoteFirstFrame: 113,
  remoteCallBusy: 117, captureFirstLocalVideoFrame: 119, publishFirstLocalVideoFrame: 120,
  publishFirstLocalAudioFrame: 130, localVideoCall: 140, localAudioCall: 141,
  remoteVideoCall: 142, remoteAudioCall: 143, remoteOffline: 150, answeredElsewhere: 151,
  insufficientBalance: 152, lowBalance: 153, tokenRenewed: 154, remoteReconnecting: 155,
  remoteReconnected: 156,
});

/** CallAPI's CallType. */
export const CallType = Object.freeze({ video: "video", audio: "audio" });

/** onCallError's first argument (CallErrorEvent) and second (CallErrorCodeType). */
export const CallErrorEvent = Object.freeze({
  normalError: "normalError", rtcOccurError: "rtcOccurError", sendMessageFail: "sendMessageFail",
  startCaptureFail: "startCaptureFail", socketUnauthenticated: "socketUnauthenticated",
});
export const CallErrorCodeType = Object.freeze({ normal: "normal", rtc: "rtc", message: "message" });

/** States in which the user has a call going on (CallAPI: getCallId answers). */
export const LIVE_STATES = Object.freeze(new Set([
  CallStateType.calling, CallStateType.connecting, CallStateType.connected,
]));
