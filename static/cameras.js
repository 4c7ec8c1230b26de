/*
 * cameras.js: the camera list (/cameras/, and / with several cameras).
 *
 * Each tile (a <figure data-camera=NAME data-base=URL>) draws its camera's
 * frames from a Camstream.FrameSocket (frames.js) on its own canvas.
 * WebSockets are not held to the browser's six HTTP/1.1 connections per
 * host, so every tile is live however many cameras there are.  A tile's
 * socket runs only while the tile is on screen and the page is visible, and
 * asks for the variant that fits the tile (FrameSocket's fitTo, object-fit
 * contain): a 1280-pixel camera in a 300-pixel tile sends 320-pixel frames.
 *
 * Query: ?fps=N asks the server for at most N frames per second per tile;
 * ?width=N (a fixed width instead of fitting), ?quality=Q and ?adapt=0 pass
 * on to every tile's socket.
 *
 * window.camstream.tiles[NAME] holds each tile's counters (tests read them):
 * framesDrawn, lastSeq, width, height (of the frame drawn), running, visible,
 * plus FrameSocket's stats (variant, askedWidth among them).
 */
"use strict";

(function () {
  const tiles = {};
  window.camstream = { page: "cameras", tiles };

  function makeTile(figure) {
    const canvas = figure.querySelector("canvas");
    const label = new Camstream.Notice(figure.querySelector(".state"));
    let tile = null;

    function labelTile() {
      if (!tile.connected) label.down(tile.everFramed);
      else label.say(tile.framesDrawn ? "" : "waiting for a picture\u2026");
    }

    function drawTile(bitmap, info) {
      Camstream.drawFrame(canvas, bitmap);
      tile.framesDrawn += 1;
      tile.lastSeq = info.seq;
      tile.width = bitmap.width;
      tile.height = bitmap.height;
      if (canvas.hidden || label.visible) {
        canvas.hidden = false;
        labelTile();
      }
    }

    const frames = new Camstream.FrameSocket({
      url: Camstream.wsUrl(figure.dataset.base + "ws"),
      fps: Camstream.requestedFps(),
      fitTo: canvas,
      fit: "contain",
      onFrame: drawTile,
      onChange: () => labelTile(),
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
      labelTile();
    };
    canvas.hidden = true;
    labelTile();
    return tile;
  }

  if (!Camstream.supported()) {
    document.querySelectorAll(".tile .state").forEach((label) => {
      new Camstream.Notice(label).say("this browser cannot show live tiles: click for the camera");
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
