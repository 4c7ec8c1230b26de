/*
 * camstream.js: the shared front-end module, loaded first by every page with
 * a script (viewer, kiosk, cameras, player).  It creates the one global
 * namespace, window.Camstream, and holds what the pages have in common:
 *
 *  - withToken(path): the URL of ``path`` relative to the page's base URL
 *    (document.baseURI: the page's own URL, or the <base href> the server
 *    adds behind a proxy that strips a prefix), with the page's access token
 *    (?token=...) added if the page was opened with one.  Every URL a page
 *    opens goes through it, so the token is passed on.
 *  - Retry: reconnecting with a backoff: a delay growing from minDelayMs,
 *    doubling to maxDelayMs, +-20 % jitter, reset once a picture arrives.
 *  - drawFrame(canvas, source, width, height): the picture on a canvas whose
 *    backing store is the frame's own size (CSS object-fit scales it, so a
 *    window resize never blanks or redraws the picture).
 *  - Notice: the line over the picture ("connecting", "reconnecting", an error).
 *
 * frames.js (the WebSocket frame client) adds FrameSocket to the same namespace.
 */
"use strict";

(function (global) {
  const CONNECTING = "connecting\u2026";
  const RECONNECTING = "reconnecting\u2026";

  /** The page's access token (?token=...), passed on to what the page opens; or null. */
  const pageToken = new URLSearchParams(global.location.search).get("token");

  /** ``path`` (relative to the page's base URL) with the page's token added, if it has one. */
  function withToken(path) {
    const url = new URL(path, global.document.baseURI);
    if (pageToken !== null) url.searchParams.set("token", pageToken);
    return url.href;
  }

  /**
   * One pending reconnection at a time, after a delay that doubles from
   * minDelayMs to maxDelayMs (+-20 % jitter, so clients do not return in step).
   */
  class Retry {
    constructor(options) {
      const given = options || {};
      this.minDelayMs = given.minDelayMs || 500;
      this.maxDelayMs = given.maxDelayMs || 5000;
      this.delayMs = this.minDelayMs;
      this._timer = null;
    }

    /** True while a call is waiting for its delay. */
    get pending() {
      return this._timer !== null;
    }

    /** Call ``callback`` after the next delay, unless a call is already pending. */
    schedule(callback) {
      if (this._timer !== null) return;
      const delay = this.delayMs * (0.8 + 0.4 * Math.random());
      this.delayMs = Math.min(this.delayMs * 2, this.maxDelayMs);
      this._timer = global.setTimeout(() => {
        this._timer = null;
        callback();
      }, delay);
    }

    /** Forget the pending call, if any. */
    cancel() {
      global.clearTimeout(this._timer);
      this._timer = null;
    }

    /** Back to the shortest delay (a picture arrived: the link works). */
    reset() {
      this.delayMs = this.minDelayMs;
    }
  }

  /**
   * Draw ``source`` (an ImageBitmap, an <img>, a canvas) on ``canvas``, whose
   * backing store becomes width x height (the source's own size by default: an
   * <img>'s natural size, whatever size it is shown at).
   */
  function drawFrame(canvas, source, width, height) {
    const w = width || source.naturalWidth || source.width;
    const h = height || source.naturalHeight || source.height;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    canvas.getContext("2d", { alpha: false }).drawImage(source, 0, 0, w, h);
  }

  /** The line over the picture: an element whose text is shown, or hidden when there is none. */
  class Notice {
    constructor(element) {
      this.element = element;
    }

    get visible() {
      return !this.element.hidden;
    }

    /** Show ``text``; an empty text hides the notice (the last text stays in the element). */
    say(text) {
      if (text && this.element.textContent !== text) this.element.textContent = text;
      this.element.hidden = !text;
    }

    /** The stream is down: "reconnecting" once a picture was shown, "connecting" before. */
    down(everShown) {
      this.say(everShown ? RECONNECTING : CONNECTING);
    }
  }

  global.Camstream = { withToken, Retry, drawFrame, Notice };
})(window);
