/*
 * cameras.js: the camera list (/cameras/, and / with several cameras).
 *
 * Each tile (a <figure data-camera=NAME data-base=URL>) draws its camera's
 * frames from a CamstreamFrames.FrameSocket (frames.js) on its own canvas.
 * WebSockets are not held to the browser's six HTTP/1.1 connections per
 * host, so every tile is live however many cameras there are.  A tile's
 * socket runs only while the tile is on screen and the page is visible.
 *
 * Query: ?fps=N asks the server for at most N frames per second per tile.
 *
 * window.camstream.tiles[NAME] holds each tile's counters (tests read them):
 * framesDrawn, lastSeq, width, height, running, visible, plus FrameSocket's stats.
 */
"use strict";

(function () {
  const params = new URLSearchParams(window.location.search);
  const requestedFps = Number(params.get("fps"));
  const tiles = {};
  window.camstream = { page: "cameras", tiles };

  function makeTile(figure) {
    const canvas = figure.querySelector("canvas");
    const label = figure.querySelector(".state");
    const context = canvas.getContext("2d", { alpha: false });
    let tile = null;

    function render() {
      let text = "";
      if (!tile.connected) text = tile.everFramed ? "reconnecting\u2026" : "connecting\u2026";
      else if (!tile.framesDrawn) text = "waiting for a picture\u2026";
      label.textContent = text;
      label.hidden = text === "";
    }

    function draw(bitmap, info) {
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
      }
      context.drawImage(bitmap, 0, 0);
      tile.framesDrawn += 1;
      tile.lastSeq = info.seq;
      tile.width = bitmap.width;
      tile.height = bitmap.height;
      if (canvas.hidden || !label.hidden) {
        canvas.hidden = false;
        render();
      }
    }

    const frames = new CamstreamFrames.FrameSocket({
      url: CamstreamFrames.wsUrl(figure.dataset.base + "ws"),
      fps: requestedFps > 0 ? requestedFps : null,
      onFrame: draw,
      onChange: () => render(),
    });
    tile = Object.assign(frames.stats, {
      framesDrawn: 0,
      lastSeq: null,
      width: 0,
      height: 0,
      running: false,
      visible: false,
    });
    tile.update = function () {
      const wanted = tile.visible && !document.hidden;
      if (wanted && !tile.running) frames.start();
      else if (!wanted && tile.running) frames.stop();
      tile.running = wanted;
      render();
    };
    canvas.hidden = true;
    render();
    return tile;
  }

  if (!CamstreamFrames.supported()) {
    document.querySelectorAll(".tile .state").forEach((label) => {
      label.textContent = "this browser cannot show live tiles: click for the camera";
      label.hidden = false;
    });
    return;
  }

  const byFigure = new Map();
  document.querySelectorAll(".tile[data-camera]").forEach((figure) => {
    const tile = makeTile(figure);
    tiles[figure.dataset.camera] = tile;
    byFigure.set(figure, tile);
  });

  if (typeof window.IntersectionObserver === "function") {
    const observer = new IntersectionObserver(
      (entries) => {
        entries.forEach((entry) => {
          const tile = byFigure.get(entry.target);
          tile.visible = entry.isIntersecting;
          tile.update();
        });
      },
      { rootMargin: "100px" },
    );
    byFigure.forEach((tile, figure) => observer.observe(figure));
  } else {
    byFigure.forEach((tile) => {
      tile.visible = true;
      tile.update();
    });
  }
  document.addEventListener("visibilitychange", () => byFigure.forEach((tile) => tile.update()));
})();
