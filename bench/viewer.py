"""What the canvas viewer shows: frames drawn per second and the age of the frames
drawn (capture to draw, as its overlay reports), in a real headless Chromium.

    .venv/bin/python bench/viewer.py [--fps 30] [--seconds 10] [--width 640 --height 480]

Starts ``server.py`` (emulated camera) on a free loopback port, opens
``/viewer?overlay=1`` in Debian's chromium (``/usr/bin/chromium``, driven by
Playwright), lets it warm up for 2 s, then records, on every animation frame of
the page, each newly drawn frame's age as the page computed it
(``window.camstream.frameAgeMs``, the server's capture timestamp against the
page's clock corrected by the measured offset).  Prints a JSON report, the
overlay's text included.  Everything is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.basic import cpu_ns  # noqa: E402
from harness.browsers import CHROMIUM  # noqa: E402
from harness.process import stop_process  # noqa: E402
from harness.stats import percentile  # noqa: E402

log = logging.getLogger("bench.viewer")

#: Records the age of each frame drawn, sampled once per animation frame.
RECORD = """
() => {
  const ages = [];
  let seen = window.camstream.framesDrawn;
  window.__bench = { ages, start: performance.now(), drawn: seen };
  const sample = () => {
    const s = window.camstream;
    if (s.framesDrawn !== seen) {
      seen = s.framesDrawn;
      if (s.frameAgeMs !== null) ages.push(s.frameAgeMs);
    }
    requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seconds", type=float, default=10, help="how long the page is measured")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from playwright.sync_api import sync_playwright

    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as server_log:
        proc = subprocess.Popen(
            [
                *(sys.executable, str(ROOT / "server.py"), "--port", "0", "--fps", str(args.fps)),
                *("--width", str(args.width), "--height", str(args.height)),
            ],
            cwd=ROOT,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            port = 0
            deadline = time.monotonic() + 20
            while not port and time.monotonic() < deadline:
                found = re.search(rb"on http://127\.0\.0\.1:(\d+)/", Path(server_log.name).read_bytes())
                port = int(found.group(1)) if found else 0
                time.sleep(0.05)
            if not port:
                raise RuntimeError("the server did not start listening")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(f"http://127.0.0.1:{port}/viewer?overlay=1")
                page.wait_for_function("() => window.camstream.framesDrawn > 0", timeout=20000)
                page.wait_for_timeout(2000)  # warm-up: clock offset measured, decoder busy
                page.evaluate(RECORD)
                cpu_start, t0 = cpu_ns(proc.pid), time.monotonic()
                page.wait_for_timeout(args.seconds * 1000)  # the measurement period
                cpu = (cpu_ns(proc.pid) - cpu_start) / 1e9 / (time.monotonic() - t0)
                result = page.evaluate(
                    """() => {
                      const s = window.camstream, b = window.__bench;
                      return { ages: b.ages, drawn: s.framesDrawn - b.drawn,
                               ms: performance.now() - b.start, fps: s.fps,
                               dropped: s.framesDropped, repeats: s.repeats,
                               rtt: s.clockRttMs, offset: s.clockOffsetS,
                               overlay: document.getElementById("overlay").textContent };
                    }"""
                )
                browser.close()
        finally:
            stop_process(proc)

    ages = result["ages"]
    report = {
        "fps_configured": args.fps,
        "frame_size": f"{args.width}x{args.height}",
        "seconds_measured": round(result["ms"] / 1000, 2),
        "frames_drawn_per_s": round(result["drawn"] * 1000 / result["ms"], 2),
        "fps_page_counter_at_end": round(result["fps"], 2),
        "frames_dropped_by_the_page": result["dropped"],
        "frame_age_ms_mean": round(sum(ages) / len(ages), 2),
        "frame_age_ms_p50": round(percentile(ages, 50), 2),
        "frame_age_ms_p95": round(percentile(ages, 95), 2),
        "frame_age_ms_max": round(max(ages), 2),
        "frame_ages_sampled": len(ages),
        "clock_offset_ms": round(1000 * result["offset"], 3),
        "clock_round_trip_ms": result["rtt"],
        "server_cpu_percent_of_a_core": round(100 * cpu, 2),
        "overlay_text": result["overlay"],
    }
    print(json.dumps(report, indent=2))  # noqa: T201 - the report is this script's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
