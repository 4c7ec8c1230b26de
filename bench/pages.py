"""The live pages in each browser engine: frames shown per second, the newest frame, recovery.

    .venv/bin/python bench/pages.py [--engine chromium --engine firefox --engine webkit]
        [--seconds 10] [--json out.json]

For each engine (Debian's Chromium, Firefox ESR and WebKitGTK, driven as the page
tests drive them: harness/browsers.py), against server processes this script starts
on free loopback ports:

- ``/``: the frames per second the plain ``<img>`` shows of a 640x480, 30 fps
  emulated camera, counted in the page for ``--seconds``: each animation frame
  draws the ``<img>`` into a small canvas and counts the picture changes
  (Chromium, WebKit), and the ``<img>``'s ``load`` events are counted too
  (Firefox fires one per part, and there drawImage gives the first part only);
  the larger of the two is the rate.
- ``/`` newest frame: a files camera showing a new colour every 2 s; after each of
  3 new frames, the time until the ``<img>`` on screen shows its colour
  (screenshots of the element).  A page that lags a frame behind would show it
  only after the server's repeat, about a second later.
- ``/viewer``: frames drawn per second (the page's own ``framesDrawn``) over
  ``--seconds``.
- ``/kiosk`` and ``/kiosk?mode=mjpeg``: recovery after a server restart: the
  server is stopped, the kiosk shows "reconnecting", the server starts again on
  the same port; the time from the new server's first log line to 3 new frames
  on the kiosk.

Prints one Markdown table row per engine and, with ``--json``, writes the figures.
Every process it starts (servers, browsers, Xvfb) is ended by its PID at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from harness.browsers import ENGINES, launch  # noqa: E402
from harness.colours import nearest_colour, write_colour_frames  # noqa: E402
from harness.process import ServerProcess  # noqa: E402

#: Counts, in the page, the pictures an <img> shows for ``ms`` milliseconds.
IMG_RATE = """
async ([selector, ms]) => {
  const img = document.querySelector(selector);
  let loads = 0;
  img.addEventListener("load", () => { loads += 1; });
  const canvas = document.createElement("canvas");
  canvas.width = 16;
  canvas.height = 12;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  let last = null;
  let changes = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    await new Promise((r) => requestAnimationFrame(r));
    if (!img.naturalWidth) continue;
    context.drawImage(img, 0, 0, 16, 12);
    const data = context.getImageData(0, 0, 16, 12).data;
    let hash = 0;
    for (let i = 0; i < data.length; i += 1) hash = (Math.imul(hash, 31) + data[i]) | 0;
    if (hash !== last) { changes += 1; last = hash; }
  }
  return { loads, changes, seconds: ms / 1000 };
}
"""


def server(folder: Path, *args: str) -> ServerProcess:
    """A server process (``server.py ARGS``) on a free loopback port, started."""
    folder.mkdir(parents=True, exist_ok=True)
    return ServerProcess(list(args), folder / "server").start()


def img_rate(page: Any, url: str, seconds: float) -> float:
    page.goto(url)
    page.wait_for_function("() => document.querySelector('#stream').naturalWidth > 0", timeout=20000)
    counted = page.evaluate(IMG_RATE, ["#stream", seconds * 1000])
    return max(counted["loads"], counted["changes"]) / counted["seconds"]


def newest_frame_delays(page: Any, proc: ServerProcess, changes: int = 3) -> list[float]:
    """Seconds from each new colour's capture (the server's X-Timestamp is not needed:
    the colour is polled from the first moment the page could show it) to its display."""
    page.goto(proc.url)
    page.wait_for_function("() => document.querySelector('#stream').naturalWidth > 0", timeout=20000)
    delays = []

    def colour() -> int:
        image = Image.open(io.BytesIO(page.locator("#stream").screenshot())).convert("RGB")
        return nearest_colour(image.getpixel((image.width // 2, image.height // 2)))

    current = colour()
    deadline = time.monotonic() + 20 * changes
    while len(delays) < changes and time.monotonic() < deadline:
        # The next colour, and when the server had it: its status says the frame's age.
        status = json.loads(proc.get("status")[2])
        age = status["last_frame_age_s"] or 0.0
        start = time.monotonic() - age
        shown = colour()
        if shown != current:
            delays.append(time.monotonic() - start)
            current = shown
    return delays


def viewer_rate(page: Any, url: str, seconds: float) -> float:
    page.goto(url)
    page.wait_for_function("() => window.camstream && window.camstream.framesDrawn > 3", timeout=20000)
    start = page.evaluate("() => [performance.now(), window.camstream.framesDrawn]")
    page.wait_for_function(
        "([t, ms]) => performance.now() - t >= ms",
        arg=[start[0], seconds * 1000],
        timeout=seconds * 1000 + 10000,
    )
    end = page.evaluate("() => [performance.now(), window.camstream.framesDrawn]")
    return (end[1] - start[1]) / ((end[0] - start[0]) / 1000)


def kiosk_recovery(page: Any, proc: ServerProcess, query: str) -> float:
    """Seconds from the restarted server's start to 3 new frames on the kiosk."""
    page.goto(proc.url + "kiosk" + query)
    page.wait_for_function("() => window.camstream && window.camstream.framesShown >= 3", timeout=20000)
    proc.stop()
    page.wait_for_function("() => window.camstream.noticeVisible", timeout=15000)
    before = page.evaluate("() => window.camstream.framesShown")
    started = time.monotonic()
    proc.start()
    page.wait_for_function(
        "n => window.camstream.framesShown >= n", arg=before + 3, timeout=30000, polling=20
    )
    return time.monotonic() - started


def measure(engine: str, work: Path, seconds: float) -> dict[str, Any]:
    live = server(work / f"{engine}-live", "--camera", "emulated", "--fps", "30")
    colours = server(
        work / f"{engine}-colours",
        "--camera",
        "files",
        "--source",
        str(write_colour_frames(work / f"{engine}-frames")),
        "--fps",
        "0.5",
    )
    browser = launch(engine)
    try:
        page = browser.new_page()
        try:
            figures = {
                "engine": engine,
                "index_fps": img_rate(page, live.url, seconds),
                "newest_frame_s": newest_frame_delays(page, colours),
                "viewer_fps": viewer_rate(page, live.url + "viewer", seconds),
                "kiosk_ws_recovery_s": kiosk_recovery(page, live, ""),
                "kiosk_mjpeg_recovery_s": kiosk_recovery(page, live, "?mode=mjpeg"),
            }
        finally:
            page.close()
    finally:
        browser.close()
        live.stop()
        colours.stop()
    return figures


def row(f: dict[str, Any]) -> str:
    newest = f["newest_frame_s"]
    shown = f"yes, {max(newest) * 1000:.0f} ms at most" if len(newest) == 3 else f"no ({len(newest)} of 3)"
    return (
        f"| {f['engine']} | {f['index_fps']:.1f} | {shown} | {f['viewer_fps']:.1f} "
        f"| {f['kiosk_ws_recovery_s']:.1f} s | {f['kiosk_mjpeg_recovery_s']:.1f} s |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", action="append", choices=ENGINES, help="repeatable; all three by default")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rate is counted (seconds)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="camstream-pages-") as work:
        for engine in args.engine or ENGINES:
            results.append(measure(engine, Path(work), args.seconds))
            sys.stderr.write(f"{engine}: {results[-1]}\n")
    sys.stdout.write(
        "| engine | `/` fps shown | `/` shows the newest frame | `/viewer` fps | kiosk recovery (ws) "
        "| kiosk recovery (mjpeg) |\n|---|---|---|---|---|---|\n"
    )
    for figures in results:
        sys.stdout.write(row(figures) + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
