/**
 * The media-engine interface and its factory. An engine does media only; the server decides the
 * call. Both engines (webrtc.js, agora.js) offer:
 *
 *   setViews({localView, remoteView})   elements the engine renders into
 *   setVideoEncoderConfig(config)       camera settings from the next capture (video-config.js)
 *   startCapture(callType) -> Promise   camera and microphone (microphone only for audio)
 *   join({role, callType, credentials}) take part in the call's media
 *   handleSignal(fromDevice, payload)   a relayed negotiation payload (WebRTC)
 *   restart()                           rebuild the media after a page reload mid-call
 *   selectRemote(deviceId)              keep only the callee device that answered
 *   reveal()                            connected: show the remote video, play remote audio
 *   resumeAudio()                       after `audioBlocked`, from a click
 *   setLocalAudioMuted(bool), setLocalVideoMuted(bool), renewToken(token)
 *   peerConnections()                   the engine's own connections, for diagnostics
 *   leave()                             end of call: tear everything down, capture included
 *   on(name, handler)                   the engine's events (emitter.js MediaEngineEvent)
 */

import { AgoraEngine, loadAgoraSdk } from "./agora.js";
import { WebRtcEngine } from "./webrtc.js";

export { MediaEngineEvent } from "./emitter.js";

/**
 * Build the engine named by hello's config.media.
 * @param {object} media  {engine: "webrtc", ice_servers} or {engine: "agora", app_id}
 * @param {object} options  {sendSignal, agoraSdkUrl, log}
 */
export async function createMediaEngine(media, { sendSignal, agoraSdkUrl, log } = {}) {
  if (media?.engine === "agora") {
    const AgoraRTC = await loadAgoraSdk(agoraSdkUrl);
    return new AgoraEngine({ AgoraRTC, appId: media.app_id, log });
  }
  return new WebRtcEngine({ iceServers: media?.ice_servers ?? [], sendSignal, log });
}
