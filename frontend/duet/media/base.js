import { Emitter } from "./emitter.js";
import { DEFAULT_VIDEO_ENCODER_CONFIG, videoEncoderConfig } from "./video-config.js";

/** What every media engine shares: its views, its video settings and one capture per call. An
 * engine subclass implements `_capture(callType)`, resolving with its local media (or null if the
 * call ended). */
export class MediaEngineBase extends Emitter {
  constructor() {
    super();
    this.videoEncoderConfig = DEFAULT_VIDEO_ENCODER_CONFIG;
  }

  setViews({ localView, remoteView }) {
    if (localView !== undefined) this.localView = localView;
    if (remoteView !== undefined) this.remoteView = remoteView;
  }

  /** The camera's settings from the next capture on (video-config.js; null: the default). */
  setVideoEncoderConfig(config) {
    this.videoEncoderConfig = videoEncoderConfig(config);
  }

  /** Start the camera and microphone (once per call); resolves with the local media, or with
   * null when the call ended before the browser gave it. */
  startCapture(callType) {
    this.callType = this.callType ?? callType;
    if (!this.capture) this.capture = this._capture(callType);
    return this.capture;
  }
}
