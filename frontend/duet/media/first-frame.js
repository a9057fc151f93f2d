/**
 * Noticing the first frame of a media element or an audio receiver, as early as the browser can
 * tell: a video by its first presented frame (requestVideoFrameCallback) or its first decoded
 * data, whichever comes first; audio by its first RTP packet (the receiver's synchronization
 * sources). The element must be rendered (the engines hide it with opacity, not display:none),
 * otherwise the browser skips presenting its frames.
 */

// How often a receiver is asked whether audio arrived: well under a frame of 20 ms audio.
export const AUDIO_POLL_MS = 10;
// Give up asking after this long; the call's ring timeout ends a call with no media anyway.
export const AUDIO_POLL_GIVE_UP_MS = 120000;

/** Calls `onFrame({width, height})` once, at the first frame of `video`. Returns a cancel. */
export function onFirstVideoFrame(video, onFrame) {
  let done = false;
  const fire = () => {
    if (done || !video.videoWidth) return false;
    done = true;
    cleanup();
    onFrame({ width: video.videoWidth, height: video.videoHeight });
    return true;
  };
  const onData = () => fire();
  const cleanup = () => {
    video.removeEventListener("loadeddata", onData);
    video.removeEventListener("resize", onData);
  };
  video.addEventListener("loadeddata", onData);
  video.addEventListener("resize", onData);
  if (typeof video.requestVideoFrameCallback === "function") {
    const onPresented = () => { if (!fire() && !done) video.requestVideoFrameCallback(onPresented); };
    video.requestVideoFrameCallback(onPresented);
  }
  return () => { done = true; cleanup(); };
}

/** Calls `onAudio()` once, when `receiver` got its first audio packet. Returns a cancel. */
export function onFirstAudio(receiver, onAudio, timers = globalThis) {
  let waited = 0;
  let timer = null;
  const check = () => {
    if (receiver.getSynchronizationSources().length > 0) {
      onAudio();
      return;
    }
    waited += AUDIO_POLL_MS;
    if (waited < AUDIO_POLL_GIVE_UP_MS) timer = timers.setTimeout(check, AUDIO_POLL_MS);
  };
  check();
  return () => timers.clearTimeout(timer);
}
