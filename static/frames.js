/*
 * frames.js: the WebSocket frame client of the live pages (viewer, kiosk,
 * cameras), on top of camstream.js (load that first); it adds FrameSocket,
 * frameInfo, wsUrl, requestedFps and supported to window.Camstream.
 *
 * Camstream.FrameSocket connects to the server's "ws" URL (relative to the
 * page's base URL, with the page's token: see camstream.js), decodes each
 * binary message (one JPEG) with createImageBitmap (in WebKit, whose
 * ImageBitmaps hold their pixels until garbage-collected, into a reused <img>:
 * see decodeMethod; stats.decoder says which) and hands the bitmap (or <img>)
 * to onFrame(bitmap, info), then closes it: onFrame must draw it at once and
 * not keep it.  Frames are never queued: while one decodes, a newer one replaces
 * the one waiting (counted in stats.framesDropped).
 *
 * info = {seq, t, ageMs, bytes}: the frame's sequence number and capture time
 * (Unix seconds, server clock) from the JPEG comment the server adds, and its
 * age when handed over, corrected by the offset between the server's clock
 * and ours, estimated from a few {"time"} round trips (within half of the
 * quickest one; before the first answer, from the hello's server_time).  A
 * message with a seq already shown is the server's once-a-second repeat of a
 * still picture: it proves the connection alive and is not decoded again.
 *
 * On close or error it reconnects by itself with Camstream.Retry's backoff
 * (minDelayMs, doubling to maxDelayMs, reset once a frame arrives).  A
 * watchdog closes a socket that has received nothing for stallMs (the server
 * repeats a still picture every second, so silence means a dead connection).
 * Every timer reads performance.now() (monotonic), never Date.now(): a jump of
 * the machine's clock (NTP at boot) neither trips nor stalls the watchdog.  The
 * frames' ages read wallMs() (the clock at the page's start plus
 * performance.now()), so such a jump does not skew them either: the offset to
 * the server's clock absorbs whatever the clock said at the start.
 * send(message) sends a control message (an object, as JSON) on the open
 * socket (the kiosk's heartbeat); false when none is open.
 *
 * Browsers hide why a handshake failed.  After two sockets in a row closed
 * before they opened, it asks the server once ("ws?origin=<our origin>", a
 * plain GET): if the server would refuse a socket from this page (a proxy
 * that does not pass the Host header on, a bad token), stats.refusal holds
 * the server's one-line reason, for the page to show, and onChange is called.
 * It keeps retrying meanwhile; the first socket that opens clears it.
 *
 * Variants (the picture at the size it is drawn at).  With the option fitTo
 * (an element, the canvas the page draws on) and fit ("contain", the default,
 * or "cover": how the page's CSS object-fit scales it), it asks the server for
 * the smallest picture that still fills the element: the width it is drawn at
 * on screen times devicePixelRatio, rounded up; for contain
 * min(boxW, boxH * aspect), for cover max(boxW, boxH * aspect), where box is
 * the element's CSS box (clientWidth x clientHeight, or its
 * getBoundingClientRect; while the element is not rendered, display: none
 * until its first frame, say, that of its nearest rendered ancestor) and
 * aspect the last frame's width / height (before the first frame, the
 * element's width / height attributes; without them, the box's).  The server
 * snaps the width to one of its variants (the source's width /1, /2, /4 or /8:
 * see the server's ws docs).  That width goes in the socket's URL
 * (?width=N, so the very first frame is already that size) and in the
 * opening control message (beside "time" and "fps"), and again, as
 * {"width": N}, when it changes: on a resize of the element (ResizeObserver;
 * without one, the window's resize), on a change of devicePixelRatio (a
 * matchMedia resolution query), and once the first frame's real aspect
 * changes it (a frame's size is compared with the last one's: two integer
 * comparisons per frame, nothing more); debounced (FIT_DEBOUNCE_MS, 250 ms), and
 * never the same width twice on one socket.  The observers run only between
 * start() and stop().  Without fitTo, no width is asked: full size.
 *
 * The page's own query passes on to the socket's URL (wsUrl; variantParams
 * gives the pairs, for the kiosk's MJPEG stream): ?width=N (1-65535:
 * a fixed width; fitTo is then ignored), ?quality=Q (1-100) and ?adapt=0|1
 * (the server moves a slow viewer to a smaller variant unless ?adapt=0).
 * Other values are left out (the server would refuse the handshake, and
 * browsers hide why).  The server says what we get in its hello, in every
 * reply and, when it moves us (adaptation, or a new width asked), in a
 * {"type": "variant", ..., "reason"} message: stats.variant holds the latest,
 * {width, height, quality, variant ("320x240 q80" or "source"), asked (the
 * label of what we asked for), adapt, adapted (adaptation moved us off what
 * we asked)}; stats.variantChanges counts the variant messages (onChange is
 * called at each) and stats.variantReason holds the last one's reason;
 * stats.askedWidth is the last width asked (URL or message), null for full
 * size.
 */
"use strict";

(function (global) {
  const Camstream = global.Camstream;
  const DOWN_AFTER_MS = 2500;
  const FIT_DEBOUNCE_MS = 250;
  const MAX_WIDTH = 65535;

  /** The page's query parameter ``name`` if it is a whole number from 1 to ``max``, else null. */
  function pageNumber(name, max) {
    const text = new URLSearchParams(global.location.search).get(name);
    if (text === null || !/^\d{1,6}$/.test(text)) return null;
    const value = Number(text);
    return value >= 1 && value <= max ? value : null;
  }

  /** The page's ?width=N (a fixed width for every socket, no fitting), or null. */
  function pageWidth() {
    return pageNumber("width", MAX_WIDTH);
  }

  /** The page's valid ?width=, ?quality= and ?adapt=, as [name, value] pairs. */
  function variantParams() {
    const adapt = new URLSearchParams(global.location.search).get("adapt");
    const pairs = [
      ["width", pageWidth()],
      ["quality", pageNumber("quality", 100)],
      ["adapt", adapt === "0" || adapt === "1" ? adapt : null],
    ];
    return pairs.filter((pair) => pair[1] !== null).map(([name, value]) => [name, String(value)]);
  }

  /**
   * The WebSocket URL of ``path`` (relative to the page's base URL), with the
   * page's valid ?width=, ?quality= and ?adapt= and its token.
   */
  function wsUrl(path) {
    const url = new URL(path, global.document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    variantParams().forEach(([name, value]) => url.searchParams.set(name, value));
    return Camstream.withToken(url.href);
  }

  /** ``element``'s CSS box as [width, height], or null if it has none (not rendered). */
  function cssBox(element) {
    let width = element.clientWidth;
    let height = element.clientHeight;
    if (!width || !height) {
      const rect = element.getBoundingClientRect();
      width = rect.width;
      height = rect.height;
    }
    return width > 0 && height > 0 ? [width, height] : null;
  }

  /**
   * The width in device pixels (rounded up) a picture of ``aspect`` (width /
   * height; null: the element's width / height attributes, else its box's) is
   * drawn at in ``element`` scaled by object-fit ``fit``; null if neither the
   * element nor any ancestor has a box.
   */
  function drawnWidth(element, fit, aspect) {
    let box = null;
    for (let node = element; node && node.nodeType === 1 && !box; node = node.parentElement) box = cssBox(node);
    if (!box) return null;
    const [boxWidth, boxHeight] = box;
    const given = element.width > 0 && element.height > 0 ? element.width / element.height : null;
    const ratio = aspect || given || boxWidth / boxHeight;
    const css = fit === "cover" ? Math.max(boxWidth, boxHeight * ratio) : Math.min(boxWidth, boxHeight * ratio);
    const device = css * (global.devicePixelRatio || 1);
    // Rounded up, but 320.0000001 (float error) is 320: one pixel more could double the variant.
    return Math.min(MAX_WIDTH, Math.max(1, Math.ceil(device - 1e-6)));
  }

  /** The page's ?fps=N (the most frames per second to ask the server for), or null. */
  function requestedFps() {
    const fps = Number(new URLSearchParams(global.location.search).get("fps"));
    return fps > 0 ? fps : null;
  }

  /** Unix milliseconds that never jump: the clock at the page's start plus performance.now(). */
  function wallMs() {
    const origin = global.performance.timeOrigin;
    return typeof origin === "number" && origin > 0 ? origin + global.performance.now() : Date.now();
  }

  const COMMENT = /^camstream seq=(\d+) t=([0-9.]+)$/;

  /** {seq, t} from the "camstream" JPEG comment, or null. Reads only the headers. */
  function frameInfo(bytes) {
    if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return null;
    let pos = 2;
    while (pos + 4 <= bytes.length && bytes[pos] === 0xff) {
      const marker = bytes[pos + 1];
      const length = (bytes[pos + 2] << 8) | bytes[pos + 3];
      if (marker === 0xfe) {
        const end = Math.min(pos + 2 + length, pos + 4 + 96, bytes.length);
        const text = String.fromCharCode.apply(null, bytes.subarray(pos + 4, end));
        const found = COMMENT.exec(text);
        return found ? { seq: Number(found[1]), t: Number(found[2]) } : null;
      }
      if (marker < 0xe0 || marker > 0xef) return null;
      pos += 2 + length;
    }
    return null;
  }

  function supported() {
    return typeof global.WebSocket === "function" && typeof global.createImageBitmap === "function";
  }

  const JPEG = "image/jpeg";

  /**
   * How this browser should turn a JPEG into a picture to draw: "bitmap"
   * (createImageBitmap of a Blob; the ImageBitmap's pixels are freed by its
   * close()) or "image" (one <img> per socket, reused, fed an object URL that is
   * revoked once decoded).  WebKit frees an ImageBitmap's pixels only when the
   * garbage collector takes it, and does not count them towards collecting:
   * there a kiosk's memory grows without bound (docs/browsers.md), so WebKit
   * (navigator.vendor "Apple...": no feature test shows this) gets "image".
   * The page's ?decode=bitmap|image overrides the choice (for measurements).
   */
  function decodeMethod() {
    const asked = new URLSearchParams(global.location.search).get("decode");
    if (asked === "bitmap" || asked === "image") return asked;
    return /^Apple/.test(global.navigator.vendor || "") ? "image" : "bitmap";
  }

  /**
   * One JPEG (an ArrayBuffer) decoded with ``method``: a promise of an
   * ImageBitmap (the caller closes it) or of ``image`` itself, decoded (the
   * caller draws it before the next call reuses it).
   */
  function decodeJpeg(method, data, image) {
    const blob = new global.Blob([data], { type: JPEG });
    if (method !== "image") return global.createImageBitmap(blob);
    const url = global.URL.createObjectURL(blob);
    image.src = url;
    return image
      .decode()
      .then(() => image)
      .finally(() => global.URL.revokeObjectURL(url));
  }

  class FrameSocket {
    constructor(options) {
      this.url = options.url || wsUrl("ws");
      this.onFrame = options.onFrame;
      this.onChange = options.onChange || function () {};
      this.fps = options.fps || null;
      this.stallMs = options.stallMs || 4000;
      // A fixed ?width= of the page (in this.url, by wsUrl) turns fitting off.
      this.fitTo = pageWidth() === null ? options.fitTo || null : null;
      this.fit = options.fit === "cover" ? "cover" : "contain";
      this._retry = new Camstream.Retry(options);
      this.stats = {
        connected: false, // socket open
        connects: 0, // sockets opened
        attempts: 0, // sockets created
        failuresSinceFrame: 0, // sockets closed since the last frame
        everFramed: false, // any frame ever decoded
        messages: 0,
        framesReceived: 0, // new frames (repeats excluded)
        framesDecoded: 0,
        framesDropped: 0, // replaced while waiting for the decoder
        repeats: 0,
        decodeErrors: 0,
        drawErrors: 0,
        stalls: 0, // sockets closed by the watchdog
        lastMessageAt: 0, // performance.now()
        clockOffsetS: 0, // server clock minus ours (seconds)
        clockRttMs: null, // round trip of the best offset estimate
        hello: null,
        refusal: null, // why the server refuses our sockets (see above), or null
        variant: null, // what the server sends us (see above), or null before the hello
        variantChanges: 0, // the server's "variant" messages
        variantReason: null, // the last one's reason
        askedWidth: pageWidth(), // the last width asked for (URL or message), null: full size
      };
      this._asked = false;
      this._socket = null;
      this._running = false;
      this._watchdog = null;
      this._decoding = false;
      this._waiting = null;
      this._lastSeq = null;
      this._generation = 0;
      this._bestRttMs = Infinity;
      this._syncTimers = [];
      this._fitWidth = null; // the width fitTo needs, as last measured
      this._aspect = null; // the last frame's width / height, once one came
      this._frameWidth = 0;
      this._frameHeight = 0;
      this._fitTimer = null;
      this._unobserve = null;
    }

    start() {
      if (this._running) return;
      this._running = true;
      this._retry.reset();
      if (this.fitTo) this._observe();
      this._connect();
      this._watchdog = global.setInterval(() => this._check(), 500);
    }

    stop() {
      this._running = false;
      this._generation += 1;
      this._waiting = null;
      this._retry.cancel();
      global.clearInterval(this._watchdog);
      this._watchdog = null;
      if (this._unobserve) this._unobserve();
      this._unobserve = null;
      global.clearTimeout(this._fitTimer);
      this._fitTimer = null;
      this._drop();
      this._setConnected(false);
    }

    /** Watch fitTo's size and devicePixelRatio (until stop()): each change refits, debounced. */
    _observe() {
      const changed = () => this._fitSoon();
      let observer = null;
      if (typeof global.ResizeObserver === "function") {
        observer = new global.ResizeObserver(changed);
        observer.observe(this.fitTo);
      } else {
        global.addEventListener("resize", changed);
      }
      let ratio = null;
      const watchRatio = () => {
        if (typeof global.matchMedia !== "function") return;
        const query = global.matchMedia(`(resolution: ${global.devicePixelRatio || 1}dppx)`);
        if (typeof query.addEventListener !== "function") return;
        const onChange = () => {
          query.removeEventListener("change", onChange);
          watchRatio(); // a query for the new ratio
          changed();
        };
        query.addEventListener("change", onChange);
        ratio = { query, onChange };
      };
      watchRatio();
      this._unobserve = () => {
        if (observer) observer.disconnect();
        else global.removeEventListener("resize", changed);
        if (ratio) ratio.query.removeEventListener("change", ratio.onChange);
      };
    }

    _fitSoon() {
      global.clearTimeout(this._fitTimer);
      this._fitTimer = global.setTimeout(() => {
        this._fitTimer = null;
        this._refit();
      }, FIT_DEBOUNCE_MS);
    }

    /** Measure again; ask the open socket for the new width if it changed. */
    _refit() {
      if (!this._running || !this.fitTo) return;
      const width = drawnWidth(this.fitTo, this.fit, this._aspect);
      if (width === null || width === this._fitWidth) return;
      this._fitWidth = width;
      const socket = this._socket;
      if (!socket || socket.readyState !== 1 || socket.askedWidth === width) return;
      socket.askedWidth = width;
      this.stats.askedWidth = width;
      socket.send(JSON.stringify({ width }));
    }

    /** A frame of another size than the last: refit if its aspect differs (by over 1 %). */
    _frameSize(width, height) {
      this._frameWidth = width;
      this._frameHeight = height;
      if (!this.fitTo || !width || !height) return;
      const aspect = width / height;
      if (this._aspect !== null && Math.abs(aspect / this._aspect - 1) <= 0.01) return;
      this._aspect = aspect;
      this._fitSoon();
    }

    /** The URL of the next socket: this.url, with the width fitTo needs now. */
    _socketUrl() {
      if (!this.fitTo) return this.url;
      const width = drawnWidth(this.fitTo, this.fit, this._aspect);
      if (width !== null) this._fitWidth = width;
      if (this._fitWidth === null) return this.url;
      const url = new URL(this.url);
      url.searchParams.set("width", String(this._fitWidth));
      return url.href;
    }

    _connect() {
      if (!this._running) return;
      this.stats.attempts += 1;
      this._openedAt = global.performance.now();
      this.stats.lastMessageAt = this._openedAt;
      let socket;
      try {
        socket = new global.WebSocket(this._socketUrl());
      } catch (err) {
        this._closed(null);
        return;
      }
      if (this.fitTo) socket.askedWidth = this.stats.askedWidth = this._fitWidth;
      socket.binaryType = "arraybuffer";
      socket.onopen = () => {
        socket.opened = true;
        this.stats.connects += 1;
        this._asked = false;
        if (this.stats.refusal !== null) this.stats.refusal = null;
        this.stats.lastMessageAt = global.performance.now();
        this._bestRttMs = Infinity;
        this._setConnected(true);
        const request = { time: global.performance.now() };
        if (this.fps) request.fps = this.fps;
        if (this.fitTo && this._fitWidth !== null) socket.askedWidth = this.stats.askedWidth = this._fitWidth;
        if (socket.askedWidth) request.width = socket.askedWidth;
        socket.send(JSON.stringify(request));
        // A few more round trips to find a quick one (the first may wait for the page to load).
        this._syncTimers = [1000, 3000, 10000].map((ms) => global.setTimeout(() => this._sync(socket), ms));
      };
      socket.onmessage = (event) => this._message(event);
      socket.onclose = () => this._closed(socket);
      socket.onerror = () => {}; // a close event always follows
      this._socket = socket;
      this._lastSeq = null;
    }

    /** Send ``message`` (an object, as JSON) on the open socket: true if sent, false if none is open. */
    send(message) {
      const socket = this._socket;
      if (!socket || socket.readyState !== 1) return false;
      socket.send(JSON.stringify(message));
      return true;
    }

    _sync(socket) {
      if (socket === this._socket && socket.readyState === 1) {
        socket.send(JSON.stringify({ time: global.performance.now() }));
      }
    }

    /** Forget the current socket (its events no longer reach us) and close it. */
    _drop() {
      const socket = this._socket;
      this._socket = null;
      (this._syncTimers || []).forEach((timer) => global.clearTimeout(timer));
      this._syncTimers = [];
      if (!socket) return;
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch (err) {
        /* already closed */
      }
    }

    _closed(socket) {
      if (socket !== this._socket) return; // an old socket, already replaced
      this._drop();
      this.stats.failuresSinceFrame += 1;
      this._unopened = socket && socket.opened ? 0 : (this._unopened || 0) + 1;
      if (this._unopened >= 2 && !this._asked) this._askWhy();
      this._setConnected(false);
      if (this._running) this._retry.schedule(() => this._connect());
    }

    /** Ask the server whether it refuses sockets from this page, and why (see above). */
    _askWhy() {
      this._asked = true;
      const url = Camstream.withToken(`ws?origin=${encodeURIComponent(global.location.origin)}`);
      global
        .fetch(url, { cache: "no-store" })
        .then((response) => {
          if (!response.ok) {
            return response.text().then((text) => `the server refused the stream: ${response.status} ${text.trim()}`);
          }
          return response.json().then((answer) => (answer && answer.ok === false ? String(answer.reason) : null));
        })
        .then(
          (reason) => {
            if (!this._running || !reason || this.stats.connected) return;
            this.stats.refusal = reason;
            this.onChange(this.stats);
          },
          () => {
            this._asked = false; // the server is unreachable: ask again after the next failures
          },
        );
    }

    /** True while no socket is open, or the open one has been silent for 2.5 s. */
    down(now) {
      return !this.stats.connected || now - this.stats.lastMessageAt > DOWN_AFTER_MS;
    }

    _check() {
      if (!this._socket) return;
      const silentMs = global.performance.now() - this.stats.lastMessageAt;
      // Silence on an open socket, or a handshake that never completes.
      if (silentMs > this.stallMs * (this.stats.connected ? 1 : 2)) {
        this.stats.stalls += 1;
        this._closed(this._socket);
      }
    }

    _setConnected(value) {
      if (this.stats.connected === value) return;
      this.stats.connected = value;
      this.onChange(this.stats);
    }

    _message(event) {
      const stats = this.stats;
      stats.messages += 1;
      stats.lastMessageAt = global.performance.now();
      if (typeof event.data === "string") {
        this._control(event.data);
        return;
      }
      const bytes = new Uint8Array(event.data);
      const info = frameInfo(bytes) || { seq: null, t: null };
      if (info.seq !== null && info.seq === this._lastSeq) {
        stats.repeats += 1;
        return;
      }
      this._lastSeq = info.seq;
      info.bytes = bytes.length;
      stats.framesReceived += 1;
      if (this._decoding) {
        if (this._waiting) stats.framesDropped += 1;
        this._waiting = { data: event.data, info };
        return;
      }
      this._decode(event.data, info);
    }

    _control(text) {
      let message;
      try {
        message = JSON.parse(text);
      } catch (err) {
        return;
      }
      if (!message || typeof message !== "object") return;
      if (message.type === "variant") {
        const variant = Object.assign({}, message);
        delete variant.type;
        delete variant.reason;
        this.stats.variant = variant;
        this.stats.variantReason = String(message.reason);
        this.stats.variantChanges += 1;
        this.onChange(this.stats);
        return;
      }
      if (message.variant && typeof message.variant === "object") this.stats.variant = message.variant;
      if (typeof message.server_time !== "number") return;
      if (message.type === "hello") {
        this.stats.hello = message;
        if (this._bestRttMs === Infinity) this.stats.clockOffsetS = message.server_time - wallMs() / 1000;
      } else if (message.type === "reply" && typeof message.time === "number") {
        // Our request left at message.time (performance.now()); the server's clock
        // read server_time in between: offset within half the round trip.
        const rttMs = global.performance.now() - message.time;
        if (rttMs >= 0 && rttMs <= this._bestRttMs) {
          this._bestRttMs = rttMs;
          this.stats.clockRttMs = rttMs;
          this.stats.clockOffsetS = message.server_time - (wallMs() - rttMs / 2) / 1000;
        }
      }
    }

    _decode(data, info) {
      this._decoding = true;
      const generation = this._generation;
      const method = this.stats.decoder || (this.stats.decoder = decodeMethod());
      if (method === "image" && !this._image) this._image = new global.Image();
      decodeJpeg(method, data, this._image)
        .then(
          (bitmap) => {
            try {
              if (generation !== this._generation) return; // stopped meanwhile
              const width = bitmap.naturalWidth || bitmap.width;
              const height = bitmap.naturalHeight || bitmap.height;
              if (width !== this._frameWidth || height !== this._frameHeight) this._frameSize(width, height);
              const stats = this.stats;
              stats.framesDecoded += 1;
              stats.everFramed = true;
              stats.failuresSinceFrame = 0;
              this._retry.reset();
              info.ageMs = info.t === null ? null : (wallMs() / 1000 + stats.clockOffsetS - info.t) * 1000;
              this.onFrame(bitmap, info);
            } finally {
              if (typeof bitmap.close === "function") bitmap.close();
            }
          },
          () => {
            this.stats.decodeErrors += 1;
          },
        )
        .catch(() => {
          this.stats.drawErrors += 1;
        })
        .finally(() => {
          this._decoding = false;
          const next = this._waiting; // stop() clears it: it belongs to this run
          this._waiting = null;
          if (next) this._decode(next.data, next.info);
        });
    }
  }

  Object.assign(Camstream, { FrameSocket, frameInfo, wsUrl, variantParams, requestedFps, supported });
})(window);
