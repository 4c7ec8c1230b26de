/*
 * viewer.js: the canvas viewer (/viewer).
 *
 * Frames come from Camstream.FrameSocket (frames.js): decoded with
 * createImageBitmap, never queued, the bitmap closed once drawn, no object
 * URLs; Camstream.drawFrame (camstream.js) puts each on the canvas at its own
 * size and CSS (object-fit: contain) scales it to fit the page.  The socket
 * reconnects by itself with a backoff (0.5 s doubling to 5 s) and is closed
 * while the page is hidden.
 *
 * While it cannot connect, the notice says "connecting" or "reconnecting",
 * or the server's reason when it refuses sockets from this page (a proxy
 * that does not pass the Host header on: FrameSocket's stats.refusal).
 *
 * It asks the server for the variant that fits the canvas (FrameSocket's
 * fitTo, object-fit contain): the picture's width on screen in device pixels,
 * again after a resize; the overlay names what it gets ("320\u00d7240 q80",
 * "(adapted from source)" when the server moved it to a smaller one).
 *
 * Query: ?overlay=1 shows the overlay at once (key "o" toggles it);
 * ?fps=N asks the server for at most N frames per second; ?width=N (a fixed
 * width instead of fitting), ?quality=Q and ?adapt=0 pass on to the socket.
 *
 * window.camstream holds the counters (tests read them): framesDrawn, fps
 * (frames drawn per second over the last 2 s), frameAgeMs (capture to
 * draw, server clock corrected by the hello's offset), frameAgeAvgMs,
 * width, height (of the frame drawn), connected, paused, overlay, plus
 * FrameSocket's stats (variant, askedWidth, variantChanges among them).
 */
"use strict";

(function () {
  const WINDOW_MS = 2000;
  const params = new URLSearchParams(window.location.search);
  const canvas = document.getElementById("canvas");
  const overlay = document.getElementById("overlay");
  const notice = new Camstream.Notice(document.getElementById("notice"));

  const frames = new Camstream.FrameSocket({
    fps: Camstream.requestedFps(),
    fitTo: canvas,
    fit: "contain",
    onFrame: showFrame,
    onChange: refresh,
  });
  const state = Object.assign(frames.stats, {
    page: "viewer",
    framesDrawn: 0,
    fps: 0,
    lastFrameAt: 0,
    frameAgeMs: null,
    frameAgeAvgMs: null,
    width: 0,
    height: 0,
    overlay: params.get("overlay") === "1",
    paused: false,
  });
  window.camstream = state;

  const drawTimes = [];
  const ages = [];

  function showFrame(bitmap, info) {
    Camstream.drawFrame(canvas, bitmap);
    const now = performance.now();
    state.framesDrawn += 1;
    state.lastFrameAt = now;
    state.width = bitmap.width;
    state.height = bitmap.height;
    state.frameAgeMs = info.ageMs;
    drawTimes.push(now);
    ages.push(info.ageMs);
    measure(now);
    if (notice.visible) notice.say("");
  }

  function measure(now) {
    while (drawTimes.length && now - drawTimes[0] > WINDOW_MS) {
      drawTimes.shift();
      ages.shift();
    }
    const n = drawTimes.length;
    state.fps = n >= 2 ? ((n - 1) * 1000) / Math.max(now - drawTimes[0], 1) : 0;
    const known = ages.filter((age) => age !== null);
    state.frameAgeAvgMs = known.length ? known.reduce((a, b) => a + b, 0) / known.length : null;
  }

  function ms(value) {
    return value === null ? "?" : `${Math.round(value)} ms`;
  }

  /** "320\u00d7240 q80", "(adapted from source)" when adaptation moved us; "" before the hello. */
  function variantLine(variant) {
    if (!variant) return "";
    const got = `${variant.width}\u00d7${variant.height} q${variant.quality}`;
    return variant.adapted ? `${got} (adapted from ${variant.asked})` : got;
  }

  function refresh() {
    const now = performance.now();
    measure(now);
    if (!state.paused && frames.down(now) && state.refusal) notice.say(state.refusal);
    else if (!state.paused && frames.down(now)) notice.down(state.everFramed);
    else if (state.paused || state.framesDrawn > 0) notice.say("");
    overlay.hidden = !state.overlay;
    if (state.overlay) {
      overlay.textContent =
        `${state.fps.toFixed(1)} fps  ${state.width}\u00d7${state.height}\n` +
        `age ${ms(state.frameAgeMs)} (avg ${ms(state.frameAgeAvgMs)})\n` +
        `dropped ${state.framesDropped}  reconnects ${Math.max(0, state.connects - 1)}` +
        (state.variant ? `\n${variantLine(state.variant)}` : "") +
        (state.paused ? "\npaused (page hidden)" : "");
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "o" || event.key === "O") {
      state.overlay = !state.overlay;
      refresh();
    }
  });

  function resume() {
    state.paused = false;
    frames.start();
    refresh();
  }

  function suspend() {
    state.paused = true;
    frames.stop();
    refresh();
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") suspend();
    else resume();
  });
  window.addEventListener("pagehide", suspend);
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && document.visibilityState !== "hidden") resume();
  });

  window.setInterval(refresh, 250);
  if (document.visibilityState === "hidden") suspend();
  else resume();
})();
