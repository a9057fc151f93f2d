/**
 * The camera's video settings for a call, named after Agora's VideoEncoderConfiguration:
 * `{width, height, frameRate}`. Both engines capture (and so encode) at these: the WebRTC engine
 * asks getUserMedia for them, the Agora engine passes them as the camera track's `encoderConfig`.
 *
 * The default is Agora's "360p_1" preset, 640x360 at 15 fps: a 1v1 call shows one face in a
 * window, where 360 lines are sharp enough, 16:9 matches laptop cameras and the call view, and
 * 15 fps is the frame rate of Agora's defaults on every platform. It costs a quarter of the
 * pixels of 720p and half the frames of 30 fps, for the encoder and the decoder at both ends:
 * on machines without hardware video (software VP8) that is the CPU the call set-up needs.
 */

export const DEFAULT_VIDEO_ENCODER_CONFIG = Object.freeze({ width: 640, height: 360, frameRate: 15 });

// What a setting may be: whole numbers within what browsers and cameras offer.
export const VIDEO_ENCODER_LIMITS = Object.freeze({
  width: [16, 3840],
  height: [16, 2160],
  frameRate: [1, 60],
});

/**
 * The full settings for `given` (null or undefined: the default): the settings left out take the
 * default. Throws a TypeError naming the setting for anything else.
 */
export function videoEncoderConfig(given) {
  if (given == null) return DEFAULT_VIDEO_ENCODER_CONFIG;
  if (typeof given !== "object" || Array.isArray(given)) {
    throw new TypeError(`videoEncoderConfig must be an object like ${JSON.stringify(DEFAULT_VIDEO_ENCODER_CONFIG)}`);
  }
  for (const [name, value] of Object.entries(given)) {
    const limits = VIDEO_ENCODER_LIMITS[name];
    if (!limits) {
      throw new TypeError(`videoEncoderConfig has no setting "${name}" (it has ${Object.keys(VIDEO_ENCODER_LIMITS).join(", ")})`);
    }
    const [min, max] = limits;
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new TypeError(`videoEncoderConfig.${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(value)}`);
    }
  }
  return Object.freeze({ ...DEFAULT_VIDEO_ENCODER_CONFIG, ...given });
}

/** getUserMedia's video constraints for `config`: the browser picks the nearest the camera offers
 * and scales or drops frames down to it. */
export function cameraConstraints({ width, height, frameRate }) {
  return { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } };
}
