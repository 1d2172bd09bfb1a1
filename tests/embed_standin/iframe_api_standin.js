// A stand-in for Spotify's iFrame API script (https://open.spotify.com/embed/iframe-api/v1), served
// by the tests from 127.0.0.1. It follows the documented interface: it calls the global
// window.onSpotifyIframeApiReady(IFrameAPI) once loaded; IFrameAPI.createController(element,
// options, callback) replaces `element` with an iframe and hands over a controller with loadUri,
// play, resume, pause, togglePlay, seek, destroy and addListener; events `ready`,
// `playback_started` ({playingURI}) and `playback_update` ({isPaused, isBuffering, duration,
// position}, in ms). The known quirks are kept: a song's end is an update with isPaused true and
// position 0, nothing moves on by itself, play() does nothing before the user has clicked on the
// page, and removeListener does nothing.
// Settings in the script's query: speed (song ms per real ms, default 100), preview=1 (every
// song is a 30-second preview), tick (real ms between updates, default 50).
(() => {
  const params = new URL(document.currentScript.src).searchParams;
  const speed = Number(params.get("speed") || 100);
  const tick = Number(params.get("tick") || 50);
  const preview = params.get("preview") === "1";

  function durationOf(uri) {
    if (preview) return 30000;
    let hash = 0;
    for (const char of uri || "") hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
    return 150000 + (hash % 90000); // 2.5 to 4 minutes
  }

  class Controller {
    constructor(iframe, uri) {
      this.iframe = iframe;
      this.listeners = {};
      this.uri = uri || null;
      this.position = 0;
      this.paused = true;
      this.timer = null;
      this.draw();
      setTimeout(() => this.emit("ready", {}), 0);
    }
    addListener(name, handler) {
      (this.listeners[name] = this.listeners[name] || []).push(handler);
    }
    removeListener() {} // as in the shipped script: it does not work
    emit(name, data) {
      for (const handler of this.listeners[name] || []) handler({ data });
    }
    update() {
      this.emit("playback_update", { isPaused: this.paused, isBuffering: false,
                                     duration: durationOf(this.uri), position: Math.round(this.position) });
      this.draw();
    }
    loadUri(uri) {
      this.halt();
      this.uri = uri;
      this.position = 0;
      this.paused = true;
      this.draw();
    }
    play() {
      if (!this.uri || !navigator.userActivation.hasBeenActive) return; // autoplay is blocked
      this.position = 0;
      this.emit("playback_started", { playingURI: this.uri });
      this.emit("playback_update", { isPaused: false, isBuffering: true, duration: durationOf(this.uri), position: 0 });
      this.run();
    }
    resume() {
      if (this.uri && this.paused && navigator.userActivation.hasBeenActive) this.run();
    }
    pause() {
      if (this.paused) return;
      this.halt();
      this.update();
    }
    togglePlay() {
      if (this.paused) this.resume();
      else this.pause();
    }
    seek(seconds) {
      this.position = Math.min(Math.max(0, seconds * 1000), durationOf(this.uri));
      this.update();
    }
    destroy() {
      this.halt();
      this.iframe.remove();
    }
    run() {
      this.halt();
      this.paused = false;
      let last = performance.now();
      this.timer = setInterval(() => {
        const now = performance.now();
        const duration = durationOf(this.uri);
        this.position = Math.min(duration, this.position + (now - last) * speed);
        last = now;
        this.update();
        if (this.position >= duration) { // the end: paused, back at 0
          this.halt();
          this.position = 0;
          this.update();
        }
      }, tick);
    }
    halt() {
      clearInterval(this.timer);
      this.timer = null;
      this.paused = true;
    }
    draw() {
      const doc = this.iframe.contentDocument;
      if (!doc || !doc.body) return;
      const duration = durationOf(this.uri);
      const share = this.uri ? Math.min(1, this.position / duration) : 0;
      const clock = (ms) => `${Math.floor(ms / 60000)}:${String(Math.floor(ms / 1000) % 60).padStart(2, "0")}`;
      doc.body.innerHTML = `<div style="font:14px system-ui;color:#fff;background:#2a2a2a;padding:14px;height:124px;
        box-sizing:border-box;border-radius:12px"><div style="font-weight:600">Spotify embed (test stand-in)</div>
        <div style="opacity:.8;margin:6px 0 14px">${this.uri || "no track"}${preview ? " · preview" : ""}</div>
        <div style="background:#555;height:6px;border-radius:3px"><div style="background:#1db954;height:6px;
        border-radius:3px;width:${(share * 100).toFixed(1)}%"></div></div>
        <div style="opacity:.8;margin-top:6px">${clock(this.position)} / ${clock(duration)} · ${this.paused ? "paused" : "playing"}</div></div>`;
    }
  }

  const IFrameAPI = {
    createController(element, options, callback) {
      const iframe = document.createElement("iframe");
      iframe.setAttribute("allow", "autoplay; clipboard-write; encrypted-media");
      iframe.width = options.width || "100%";
      iframe.height = options.height || 152;
      iframe.srcdoc = "<!doctype html><body style='margin:0'></body>";
      element.replaceWith(iframe);
      iframe.addEventListener("load", () => {
        const controller = new Controller(iframe, options.uri);
        callback(controller);
      }, { once: true });
    },
  };

  const ready = () => window.onSpotifyIframeApiReady(IFrameAPI);
  if (typeof window.onSpotifyIframeApiReady === "function") setTimeout(ready, 0);
})();
