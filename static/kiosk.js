/*
 * kiosk.js: one camera, full screen, for days with nobody at it (/kiosk).
 *
 * Black background, the picture fills the screen (?fit=contain, the default,
 * or ?fit=cover), no scrollbars, no cursor, no text unless the stream is
 * down: then a discreet "reconnecting" notice over the last good frame.
 *
 * Two paths:
 *  - "ws" (default): frames.js over the WebSocket, drawn on a canvas whose
 *    backing store is the frame's size (Camstream.drawFrame; CSS object-fit
 *    scales it).  Its watchdog closes a socket silent for 4 s (the server
 *    re-sends a still picture every second, so silence means a dead link) and
 *    reconnects with a backoff of 0.5 s doubling to 5 s (Camstream.Retry).
 *  - "mjpeg": the Motion-JPEG stream in an <img> ("stream.mjpg?framing=img&_=..."),
 *    used when ?mode=mjpeg asks for it, when WebSocket or createImageBitmap is
 *    missing, or when the WebSocket fails 3 times in a row without ever
 *    delivering a frame (a proxy that does not pass upgrades, say).
 *    Browsers fire no event when an MJPEG stream silently dies, so a watchdog
 *    draws the <img> into a 32x24 canvas twice a second and hashes the
 *    pixels.  When the picture has not changed for 4 s it asks "status":
 *    if the camera is running, online, watched and has simply produced no
 *    new frame, the picture is legitimately still; otherwise (server down,
 *    camera idle because our stream is gone, or frames flowing that we do
 *    not see) it reconnects the <img> with a new cache-buster, with the same
 *    backoff (its own Camstream.Retry).  Its URL, like the "status" one,
 *    carries the page's token (Camstream.withToken).  The last good frame is
 *    copied to the canvas underneath, so a broken <img> is hidden and the
 *    last picture stays on screen.
 *
 * Either way it recovers by itself, without a page reload, after a server
 * restart or a network drop.
 *
 * Framing: the server sends "Content-Security-Policy: frame-ancestors *" with
 * /kiosk, so any page may embed it in an iframe; change it in the URL table
 * (handlers/__init__.py) to restrict which origins may.
 *
 * window.camstream (for tests): mode, fit, framesShown (frames drawn in "ws"
 * mode; picture changes seen by the watchdog in "mjpeg" mode), lastFrameAt,
 * connected, down, noticeVisible, stalls, reconnects, fallbackReason, width,
 * height, imgConnects, probes (watchdog questions to "status"), ws (the
 * FrameSocket's stats).
 */
"use strict";

(function () {
  const STALL_MS = 4000;
  const CHECK_MS = 500;
  const NOTICE_AFTER_MS = 1500;
  const FALLBACK_AFTER = 3;
  const MIN_DELAY_MS = 500;
  const MAX_DELAY_MS = 5000;

  const params = new URLSearchParams(window.location.search);
  const root = document.documentElement;
  const fit = params.get("fit") === "cover" ? "cover" : "contain";
  root.classList.add(`fit-${fit}`);
  const canvas = document.getElementById("canvas");
  const img = document.getElementById("img");
  const notice = new Camstream.Notice(document.getElementById("notice"));

  const state = {
    page: "kiosk",
    mode: null,
    fit,
    framesShown: 0,
    lastFrameAt: 0,
    connected: false,
    down: false,
    downSince: null,
    noticeVisible: false,
    stalls: 0,
    reconnects: 0,
    fallbackReason: null,
    width: 0,
    height: 0,
    imgConnects: 0,
    probes: 0,
    ws: null,
  };
  window.camstream = state;

  function setDown(down) {
    if (down && !state.down) state.downSince = performance.now();
    if (!down) state.downSince = null;
    state.down = down;
  }

  function shown(width, height) {
    state.framesShown += 1;
    state.lastFrameAt = performance.now();
    state.width = width;
    state.height = height;
    setDown(false);
  }

  function copyToCanvas(source, width, height) {
    Camstream.drawFrame(canvas, source, width, height);
    canvas.hidden = false;
  }

  // -- the WebSocket path ---------------------------------------------------
  let frames = null;

  function startWs() {
    state.mode = "ws";
    frames = new Camstream.FrameSocket({
      stallMs: STALL_MS,
      minDelayMs: MIN_DELAY_MS,
      maxDelayMs: MAX_DELAY_MS,
      onFrame: (bitmap) => {
        copyToCanvas(bitmap, bitmap.width, bitmap.height);
        shown(bitmap.width, bitmap.height);
      },
    });
    state.ws = frames.stats;
    frames.start();
  }

  function checkWs(now) {
    const stats = frames.stats;
    if (!stats.everFramed && stats.failuresSinceFrame >= FALLBACK_AFTER) {
      frames.stop();
      frames = null;
      startMjpeg(`websocket failed ${stats.failuresSinceFrame} times without a frame`);
      return;
    }
    state.connected = stats.connected;
    state.stalls = stats.stalls;
    state.reconnects = Math.max(0, stats.connects - 1);
    setDown(frames.down(now));
  }

  // -- the Motion-JPEG path -------------------------------------------------
  const probe = document.createElement("canvas");
  probe.width = 32;
  probe.height = 24;
  const probeContext = probe.getContext("2d", { willReadFrequently: true });
  let signature = null;
  let changedAt = 0;
  const retry = new Camstream.Retry({ minDelayMs: MIN_DELAY_MS, maxDelayMs: MAX_DELAY_MS });
  let probing = false;

  function startMjpeg(reason) {
    state.mode = "mjpeg";
    state.fallbackReason = reason;
    img.hidden = false;
    connectImg();
  }

  function connectImg() {
    state.imgConnects += 1;
    signature = null;
    changedAt = performance.now();
    img.style.visibility = "hidden"; // until its first frame: the canvas shows the last one
    img.src = Camstream.withToken(`stream.mjpg?framing=img&_=${Date.now().toString(36)}${state.imgConnects}`);
  }

  function retryImg() {
    retry.schedule(connectImg);
  }

  img.addEventListener("error", () => {
    if (state.mode !== "mjpeg") return;
    img.style.visibility = "hidden";
    state.connected = false;
    setDown(true);
    retryImg();
  });

  /** A hash of the <img>'s current picture at 32x24, or null if it has none. */
  function imgSignature() {
    if (!img.naturalWidth) return null;
    probeContext.drawImage(img, 0, 0, probe.width, probe.height);
    const data = probeContext.getImageData(0, 0, probe.width, probe.height).data;
    let hash = 2166136261;
    for (let i = 0; i < data.length; i += 1) {
      hash = Math.imul(hash ^ data[i], 16777619);
    }
    return hash >>> 0;
  }

  function askServer() {
    probing = true;
    state.probes += 1;
    const controller = new AbortController();
    const timer = window.setTimeout(() => controller.abort(), 3000);
    fetch(Camstream.withToken("status"), { cache: "no-store", signal: controller.signal })
      .then((response) => {
        if (!response.ok) throw new Error(`status ${response.status}`);
        return response.json();
      })
      .then(
        (status) => {
          const live = status.running && status.online;
          const fresh = typeof status.last_frame_age_s === "number" && status.last_frame_age_s * 1000 < STALL_MS;
          if (live && !fresh && status.subscribers > 0) {
            changedAt = performance.now(); // a still picture: nothing to repair
            return;
          }
          state.stalls += 1;
          state.connected = false;
          setDown(true);
          retryImg();
        },
        () => {
          state.connected = false;
          setDown(true);
          retryImg();
        },
      )
      .finally(() => {
        window.clearTimeout(timer);
        probing = false;
      });
  }

  function checkMjpeg(now) {
    if (retry.pending || probing) return;
    const current = imgSignature();
    if (current !== null && current !== signature) {
      signature = current;
      changedAt = now;
      retry.reset();
      copyToCanvas(img, img.naturalWidth, img.naturalHeight);
      img.style.visibility = "visible";
      state.connected = true;
      state.reconnects = Math.max(0, state.imgConnects - 1);
      shown(img.naturalWidth, img.naturalHeight);
      return;
    }
    if (now - changedAt > STALL_MS) askServer();
  }

  // -- both ----------------------------------------------------------------
  function check() {
    const now = performance.now();
    if (state.mode === "ws") checkWs(now);
    if (state.mode === "mjpeg") checkMjpeg(now);
    const wait = state.mode === "ws" ? NOTICE_AFTER_MS : 0;
    const visible = state.down && now - state.downSince >= wait;
    if (visible !== state.noticeVisible) {
      state.noticeVisible = visible;
      if (visible) notice.down(state.framesShown > 0);
      else notice.say("");
    }
  }

  if (params.get("mode") === "mjpeg") {
    startMjpeg("asked for by ?mode=mjpeg");
  } else if (typeof Camstream.FrameSocket !== "function" || !Camstream.supported()) {
    startMjpeg("WebSocket or createImageBitmap is not available");
  } else {
    startWs();
  }
  window.setInterval(check, CHECK_MS);
})();
