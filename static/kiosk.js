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
 *    It asks for the variant that fills the screen (FrameSocket's fitTo, with
 *    the page's fit): the picture's width on screen in device pixels, again
 *    after a resize; the page's ?width=N, ?quality=Q and ?adapt=0 pass on.
 *  - "mjpeg": the Motion-JPEG stream in an <img> ("stream.mjpg?framing=img&_=...",
 *    with the page's ?width=, ?quality= and ?adapt= passed on),
 *    used when ?mode=mjpeg asks for it, when WebSocket or createImageBitmap is
 *    missing, or when the WebSocket fails 3 times in a row without ever
 *    delivering a frame (a proxy that does not pass upgrades, say).
 *    Browsers fire no event when an MJPEG stream silently dies, and each
 *    engine shows a live one differently, so a watchdog looks twice a second
 *    for either sign of life: a new "load" event (Firefox fires one per part;
 *    there drawImage of the <img> gives the first part only) or a new
 *    picture (the <img> drawn into a 32x24 canvas and hashed: Chromium,
 *    WebKit).  When neither has come for 4 s it asks "status": if the camera
 *    is running, online, watched and has simply produced no new frame, the
 *    picture is legitimately still; otherwise (server down, camera idle
 *    because our stream is gone, or frames flowing that we do not see) it
 *    reconnects with a new cache-buster, with the same backoff (its own
 *    Camstream.Retry).  Its URL, like the "status" one, carries the page's
 *    token (Camstream.withToken).
 *    The last good frame stays on screen in every engine: a reconnection
 *    loads into a second, hidden <img>, which replaces the first only once
 *    it has a picture; each new picture is also copied to the canvas
 *    underneath, shown when the <img> breaks (an error event, or WebKit's
 *    "broken" state, in which it fires none, once the stream ends).
 *
 * Either way it recovers by itself, without a page reload, after a server
 * restart or a network drop.
 *
 * It says it is alive (the server's /status lists it under "kiosks", see
 * handlers/kiosks.py): a heartbeat every 5 s, and at once when a connection
 * is made, with its id (the page's ?kiosk=NAME, 1 to 64 letters, digits, "-"
 * or "_", naming the display, as docs/kiosk-browser.sh gives it; else a
 * random one for this page load), its path, the frames shown, the
 * viewport and screen sizes, the reconnects and stalls.  In "ws" mode it is a
 * control message on the socket (FrameSocket.send); in "mjpeg" mode a POST of
 * the same JSON to "heartbeat" (with the page's token), one at a time, given
 * up after 3 s.  A page whose renderer crashed or hung stops beating: the
 * server marks it gone (its socket closed) or silent (open, but quiet).
 *
 * Every timer reads performance.now() (monotonic), never Date.now(), so a
 * jump of the display's clock (NTP setting it at boot) neither trips nor
 * stalls a watchdog; Date.now() only makes the MJPEG URL's cache-buster.
 *
 * window.camstream (for tests): mode, fit, framesShown (frames drawn in "ws"
 * mode; load events or picture changes seen by the watchdog in "mjpeg" mode), lastFrameAt,
 * connected, down, noticeVisible, stalls, reconnects, fallbackReason, width,
 * height, imgConnects, probes (watchdog questions to "status"), ws (the
 * FrameSocket's stats: its variant and askedWidth among them), kioskId,
 * heartbeats (sent, or in "mjpeg" mode answered 2xx), heartbeatErrors.
 */
"use strict";

(function () {
  const STALL_MS = 4000;
  const CHECK_MS = 500;
  const NOTICE_AFTER_MS = 1500;
  const FALLBACK_AFTER = 3;
  const MIN_DELAY_MS = 500;
  const MAX_DELAY_MS = 5000;
  const HEARTBEAT_MS = 5000;
  const BEACON_TIMEOUT_MS = 3000;
  const MAX_PIXELS = 100000;

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
    kioskId: /^[A-Za-z0-9_-]{1,64}$/.test(params.get("kiosk") || "") ? params.get("kiosk") : newId(),
    heartbeats: 0,
    heartbeatErrors: 0,
  };
  window.camstream = state;

  /** A random name for this page load ("k" and 16 hex digits). */
  function newId() {
    const bytes = new Uint8Array(8);
    if (window.crypto && typeof window.crypto.getRandomValues === "function") {
      window.crypto.getRandomValues(bytes);
    } else {
      for (let i = 0; i < bytes.length; i += 1) bytes[i] = Math.floor(Math.random() * 256);
    }
    return `k${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  // -- the heartbeat ----------------------------------------------------------
  function pixels(value) {
    return Math.max(0, Math.min(MAX_PIXELS, Math.round(value) || 0));
  }

  function heartbeatMessage() {
    const ratio = window.devicePixelRatio;
    return {
      type: "heartbeat",
      id: state.kioskId,
      page: (window.location.pathname || "/").slice(0, 200),
      frames_shown: state.framesShown,
      interval_s: HEARTBEAT_MS / 1000,
      viewport: [pixels(window.innerWidth), pixels(window.innerHeight)],
      screen: [pixels(window.screen.width), pixels(window.screen.height)],
      pixel_ratio: ratio > 0 && ratio <= 16 ? ratio : 1,
      page_uptime_s: Math.round(performance.now()) / 1000,
      // (Read from the socket's own counts: the page's are a check behind.)
      reconnects: state.mode === "ws" && frames ? Math.max(0, frames.stats.connects - 1) : state.reconnects,
      stalls: state.mode === "ws" && frames ? frames.stats.stalls : state.stalls,
    };
  }

  let beaconPending = false;

  /** One heartbeat: on the socket ("ws"), or a POST to "heartbeat" ("mjpeg"). */
  function heartbeat() {
    if (state.mode === "ws") {
      // (A frames.js without send(), an older copy in a cache: no heartbeat, the picture goes on.)
      if (frames && typeof frames.send === "function" && frames.send(heartbeatMessage())) state.heartbeats += 1;
      return;
    }
    if (state.mode !== "mjpeg" || beaconPending) return;
    beaconPending = true;
    const controller = new AbortController();
    const timer = window.setTimeout(() => controller.abort(), BEACON_TIMEOUT_MS);
    fetch(Camstream.withToken("heartbeat"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(heartbeatMessage()),
      cache: "no-store",
      signal: controller.signal,
    })
      .then(
        (response) => {
          if (response.ok) state.heartbeats += 1;
          else state.heartbeatErrors += 1;
        },
        () => {
          state.heartbeatErrors += 1;
        },
      )
      .finally(() => {
        window.clearTimeout(timer);
        beaconPending = false;
      });
  }

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
  let socketOpen = false; // as FrameSocket last said (onChange)

  function startWs() {
    state.mode = "ws";
    frames = new Camstream.FrameSocket({
      stallMs: STALL_MS,
      minDelayMs: MIN_DELAY_MS,
      maxDelayMs: MAX_DELAY_MS,
      fitTo: canvas,
      fit,
      onChange: (stats) => {
        if (stats.connected && !socketOpen) heartbeat(); // a new socket: say so at once
        socketOpen = stats.connected;
      },
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
      startMjpeg(stats.refusal || `websocket failed ${stats.failuresSinceFrame} times without a frame`);
      return;
    }
    state.connected = stats.connected;
    state.stalls = stats.stalls;
    state.reconnects = Math.max(0, stats.connects - 1);
    setDown(frames.down(now));
  }

  // -- the Motion-JPEG path -------------------------------------------------
  // Two <img> elements: a new connection loads in the hidden one while the
  // other keeps showing the last good frame; they swap at its first picture.
  const imgs = [img, img.cloneNode()];
  imgs[1].id = "img2";
  img.after(imgs[1]);
  let current = null; // the <img> on screen, or null
  let loading = null; // the <img> connecting, or null
  const loads = new Map(imgs.map((element) => [element, 0])); // its load events, this connection
  const probe = document.createElement("canvas");
  probe.width = 32;
  probe.height = 24;
  const probeContext = probe.getContext("2d", { willReadFrequently: true });
  let signature = null;
  let seenLoads = 0;
  let changedAt = 0;
  const retry = new Camstream.Retry({ minDelayMs: MIN_DELAY_MS, maxDelayMs: MAX_DELAY_MS });
  let probing = false;

  function startMjpeg(reason) {
    state.mode = "mjpeg";
    state.fallbackReason = reason;
    connectImg();
    heartbeat();
  }

  function connectImg() {
    state.imgConnects += 1;
    changedAt = performance.now();
    const next = imgs[0] === current ? imgs[1] : imgs[0];
    if (loading && loading !== next) dropImg(loading);
    loading = next;
    loads.set(next, 0);
    next.style.visibility = "hidden"; // until its first frame: the other one, or the canvas, shows the last
    next.hidden = false;
    const variant = (Camstream.variantParams ? Camstream.variantParams() : []).map(([k, v]) => `&${k}=${v}`).join("");
    next.src = Camstream.withToken(
      `stream.mjpg?framing=img${variant}&_=${Date.now().toString(36)}${state.imgConnects}`,
    );
  }

  function retryImg() {
    retry.schedule(connectImg);
  }

  /** ``element`` off screen, its connection closed; the canvas shows the last good frame. */
  function dropImg(element) {
    element.style.visibility = "hidden";
    element.removeAttribute("src");
    if (element === current) current = null;
    if (element === loading) loading = null;
  }

  function lost() {
    state.connected = false;
    setDown(true);
    retryImg();
  }

  imgs.forEach((element) => {
    // Firefox fires "load" at every part of the stream; the other engines once.
    element.addEventListener("load", () => loads.set(element, loads.get(element) + 1));
    element.addEventListener("error", () => {
      if (state.mode !== "mjpeg" || !element.hasAttribute("src")) return;
      dropImg(element);
      lost();
    });
  });

  /**
   * A hash of ``element``'s picture at 32x24, or null if it has none.  (In
   * Firefox, drawImage of a multipart <img> gives its first part while the
   * stream runs: its "load" events tell a live stream there.)
   */
  function imgSignature(element) {
    if (!element.naturalWidth) return null;
    try {
      probeContext.drawImage(element, 0, 0, probe.width, probe.height);
    } catch (err) {
      return null; // WebKit: "broken" once its stream ends
    }
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
          lost();
        },
        lost,
      )
      .finally(() => {
        window.clearTimeout(timer);
        probing = false;
      });
  }

  /** The connecting <img> has its first picture: it goes on screen, the old one away. */
  function promote(element) {
    const old = current;
    current = element;
    loading = null;
    element.style.visibility = "visible";
    if (old) dropImg(old);
    signature = null;
    seenLoads = 0;
    retry.reset();
    state.connected = true;
    state.reconnects = Math.max(0, state.imgConnects - 1);
    heartbeat(); // a new connection: say so at once
  }

  function checkMjpeg(now) {
    if (loading && loading.naturalWidth > 0 && (loads.get(loading) > 0 || imgSignature(loading) !== null)) {
      promote(loading);
    }
    if (current && !current.naturalWidth) {
      // WebKit: the stream ended and the <img> is "broken" (no error event fires).
      dropImg(current);
      lost();
    }
    if (retry.pending || probing) return;
    if (loading) {
      if (now - changedAt > 2 * STALL_MS) {
        dropImg(loading); // a connection that never shows a picture
        lost();
      }
      return;
    }
    if (!current) {
      lost();
      return;
    }
    const count = loads.get(current);
    const picture = imgSignature(current);
    const changed = picture !== null && picture !== signature;
    if (count > seenLoads || changed) {
      state.framesShown += Math.max(1, count - seenLoads) - 1; // shown() adds one
      seenLoads = count;
      if (changed) {
        signature = picture;
        // The last good frame, underneath (a drawImage of a multipart <img> in
        // Firefox gives its first part: there the <img> itself keeps the last).
        copyToCanvas(current, current.naturalWidth, current.naturalHeight);
      }
      changedAt = now;
      state.connected = true;
      shown(current.naturalWidth, current.naturalHeight);
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
  window.setInterval(heartbeat, HEARTBEAT_MS);
})();
