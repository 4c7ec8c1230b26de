/*
 * The player of one recorded segment (/recordings/NAME/SEGMENT).
 *
 * SEGMENT.json says when each frame was taken (t, milliseconds from the
 * segment's start) and where its JPEG lies in SEGMENT.mkv (offset, size).
 * The player fetches the file a chunk of frames at a time with HTTP Range
 * requests (about a second each, the next one ahead of time, a few kept),
 * decodes the frame that is due with createImageBitmap and draws it on the
 * canvas.  A clock paced by performance.now() says which frame is due, so
 * playback keeps the recorded pace; a frame that cannot be decoded in time is
 * skipped, never shown late.  While a chunk is still on its way the clock
 * waits (buffering), as a video player does.  From camstream.js (loaded
 * first): Camstream.drawFrame, Camstream.Notice for the line over the
 * picture, Camstream.withToken for the page's token on every request.
 *
 * Pause, resume, seeking (the slider, or the arrow keys), ?t=SECONDS to start
 * there and ?autoplay=0 to wait for play.  The canvas's data-frame and
 * data-time attributes say which frame is shown (for tests and tools).
 */
"use strict";

(function () {
  const FRAMES_PER_CHUNK = 30;
  const CHUNKS_KEPT = 6;
  const SEEK_STEP_S = 5;

  const canvas = document.getElementById("canvas");
  const notice = new Camstream.Notice(document.getElementById("notice"));
  const playButton = document.getElementById("play");
  const seek = document.getElementById("seek");
  const timeText = document.getElementById("time");
  const clockText = document.getElementById("clock");
  const withToken = Camstream.withToken;
  const params = new URLSearchParams(window.location.search);

  const fileUrl = withToken(canvas.dataset.file);
  let index = null; // {t, offset, size, length_s, start}
  let lengthMs = 0;
  let playing = false;
  let buffering = false;
  let ended = false;
  let originMs = 0; // media time at anchorPerf
  let anchorPerf = 0;
  let shown = -1; // index of the frame on the canvas
  let decoding = false;
  let wanted = -1; // the frame asked for while a decode was running
  let framesDrawn = 0;
  let dragging = false;
  const chunks = new Map(); // chunk number -> {promise, buffer, start}

  function format(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  /** The media time now, in milliseconds from the segment's start. */
  function now() {
    if (!playing || buffering) return originMs;
    return originMs + (performance.now() - anchorPerf);
  }

  function setTime(ms) {
    originMs = Math.min(Math.max(0, ms), lengthMs);
    anchorPerf = performance.now();
  }

  /** The last frame taken at or before ``ms`` (binary search). */
  function frameAt(ms) {
    const t = index.t;
    let lo = 0;
    let hi = t.length - 1;
    if (hi < 0) return -1;
    if (ms <= t[0]) return 0;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (t[mid] <= ms) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Fetch (once) the chunk of frames ``n``: one Range request over their bytes. */
  function chunk(n) {
    let entry = chunks.get(n);
    if (entry) {
      chunks.delete(n); // most recently used last
      chunks.set(n, entry);
      return entry;
    }
    const first = n * FRAMES_PER_CHUNK;
    const last = Math.min(first + FRAMES_PER_CHUNK, index.t.length) - 1;
    const start = index.offset[first];
    const end = index.offset[last] + index.size[last]; // exclusive
    entry = { start, buffer: null };
    entry.promise = fetch(fileUrl, { headers: { Range: `bytes=${start}-${end - 1}` } })
      .then((response) => {
        if (response.status !== 206 && response.status !== 200) {
          throw new Error(`the file answered ${response.status}`);
        }
        if (response.status === 200) entry.start = 0; // a server that ignored the range
        return response.arrayBuffer();
      })
      .then((buffer) => {
        entry.buffer = buffer;
        return entry;
      })
      .catch((err) => {
        chunks.delete(n); // fetched again when next asked for
        throw err;
      });
    chunks.set(n, entry);
    while (chunks.size > CHUNKS_KEPT) chunks.delete(chunks.keys().next().value);
    return entry;
  }

  /** Start fetching the chunks that frame ``i`` and the next second need. */
  function prefetch(i) {
    const n = Math.floor(i / FRAMES_PER_CHUNK);
    chunk(n);
    const next = n + 1;
    if (next * FRAMES_PER_CHUNK < index.t.length) chunk(next);
  }

  function present(i, bitmap) {
    Camstream.drawFrame(canvas, bitmap);
    bitmap.close();
    shown = i;
    framesDrawn += 1;
    canvas.dataset.frame = String(i);
    canvas.dataset.time = String(index.t[i]);
    canvas.dataset.drawn = String(framesDrawn);
  }

  /** Decode and draw frame ``i`` (one decode at a time; the newest wish wins). */
  async function show(i) {
    if (decoding) {
      wanted = i;
      return;
    }
    decoding = true;
    try {
      while (i >= 0) {
        const entry = chunk(Math.floor(i / FRAMES_PER_CHUNK));
        if (!entry.buffer) {
          if (playing && !buffering) {
            originMs = now();
            buffering = true;
          }
          notice.say("loading…");
          await entry.promise;
          if (buffering) {
            buffering = false;
            setTime(originMs);
          }
        }
        const from = index.offset[i] - entry.start;
        const blob = new Blob([new Uint8Array(entry.buffer, from, index.size[i])], { type: "image/jpeg" });
        const bitmap = await createImageBitmap(blob);
        if (wanted >= 0 && wanted !== i) {
          bitmap.close(); // a newer frame is due: this one would be late
        } else {
          present(i, bitmap);
          notice.say(ended ? "ended" : playing ? "" : "paused");
        }
        i = wanted;
        wanted = -1;
        if (i === shown) i = -1;
      }
    } catch (err) {
      playing = false;
      buffering = false;
      updateButton();
      notice.say(`cannot play: ${err.message || err}`);
    } finally {
      decoding = false;
    }
  }

  function updateButton() {
    playButton.textContent = playing ? "pause" : ended ? "replay" : "play";
    canvas.dataset.state = ended ? "ended" : playing ? (buffering ? "buffering" : "playing") : "paused";
  }

  function play() {
    if (!index || !index.t.length) return;
    if (ended || originMs >= lengthMs) {
      ended = false;
      setTime(0);
    } else {
      setTime(originMs);
    }
    playing = true;
    updateButton();
    notice.say("");
  }

  function pause() {
    originMs = now();
    playing = false;
    updateButton();
    notice.say("paused");
  }

  function seekTo(ms) {
    setTime(ms);
    // At the end is ended, playing or not (play then starts over): a slider dragged
    // there fires input then change, and the second seek must not undo the first's end.
    ended = originMs >= lengthMs - 0.5; // within half a millisecond: float rounding of ms
    if (ended) playing = false;
    const i = frameAt(originMs);
    prefetch(i);
    show(i);
    updateButton();
    tick();
  }

  function tick() {
    if (!index) return;
    let ms = now();
    if (playing && ms >= lengthMs) {
      ms = lengthMs;
      originMs = lengthMs;
      playing = false;
      ended = true;
      updateButton();
      notice.say("ended");
    }
    if (!dragging) seek.value = String(ms / 1000);
    timeText.textContent = `${format(ms)} / ${format(lengthMs)}`;
    if (index.start) clockText.textContent = new Date(index.start * 1000 + ms).toLocaleString();
    canvas.dataset.position = String(Math.round(ms));
    const i = frameAt(ms);
    if (i >= 0 && i !== shown && !(decoding && wanted === i)) {
      prefetch(i);
      show(i);
    }
  }

  function loop() {
    tick();
    window.requestAnimationFrame(loop);
  }

  playButton.addEventListener("click", () => (playing ? pause() : play()));
  /** The slider's position (ms).  It snaps to its 0.01 s steps, so its last step,
   * short of a length that is not a whole number of steps, is the segment's end. */
  function sliderMs() {
    const value = Number(seek.value);
    return Number(seek.max) - value < Number(seek.step) ? lengthMs : value * 1000;
  }

  seek.addEventListener("input", () => {
    dragging = true;
    seekTo(sliderMs());
  });
  seek.addEventListener("change", () => {
    dragging = false;
    seekTo(sliderMs());
  });
  document.addEventListener("keydown", (event) => {
    if (!index || event.target === seek) return;
    if (event.key === " ") {
      event.preventDefault();
      if (playing) pause();
      else play();
    } else if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
      event.preventDefault();
      seekTo(now() + (event.key === "ArrowLeft" ? -SEEK_STEP_S : SEEK_STEP_S) * 1000);
    }
  });

  fetch(withToken(canvas.dataset.index))
    .then((response) => {
      if (!response.ok) throw new Error(`the index answered ${response.status}`);
      return response.json();
    })
    .then((data) => {
      index = data;
      if (!index.t.length) {
        notice.say("this recording has no frame yet");
        return;
      }
      lengthMs = index.length_s * 1000;
      seek.max = String(index.length_s);
      seek.disabled = false;
      playButton.disabled = false;
      canvas.width = index.width || canvas.width;
      canvas.height = index.height || canvas.height;
      // The player's own handle, for tests and tools: window.camstreamPlayer.seek(5000).
      window.camstreamPlayer = { play, pause, seek: seekTo, frameAt, index, now };
      const start = Number(params.get("t"));
      setTime(Number.isFinite(start) && start > 0 ? start * 1000 : 0);
      if (params.get("autoplay") !== "0") play();
      else notice.say("paused");
      updateButton();
      loop();
    })
    .catch((err) => notice.say(`cannot load the recording: ${err.message || err}`));
})();
