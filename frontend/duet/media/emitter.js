/** A tiny event emitter: the media engines' own events (CallAPI: addDelegateEx's callbacks). */
export class Emitter {
  constructor() { this.handlers = new Map(); }

  on(name, handler) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(handler);
    return () => this.off(name, handler);
  }

  off(name, handler) { this.handlers.get(name)?.delete(handler); }

  emit(name, detail = {}) {
    for (const handler of [...(this.handlers.get(name) ?? [])]) handler(detail);
    for (const handler of [...(this.handlers.get("*") ?? [])]) handler({ name, ...detail });
  }
}

/** The events every media engine emits (the CallApi turns them into media milestones). */
export const MediaEngineEvent = Object.freeze({
  localFrame: "localFrame", // first local camera frame captured (audio call: capture started)
  joined: "joined", // this device's media connection is up
  published: "published", // local media is flowing to the peer
  remoteJoined: "remoteJoined", // the peer's media arrived ({device})
  firstRemoteFrame: "firstRemoteFrame", // first remote video frame / first remote audio ({device})
  remoteLeft: "remoteLeft",
  audioBlocked: "audioBlocked", // the browser refused to play the remote audio without a gesture
  tokenWillExpire: "tokenWillExpire",
  error: "error", // {code, message}
});
