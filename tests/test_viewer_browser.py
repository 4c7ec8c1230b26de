"""The canvas viewer (/viewer) in real browsers of three engines, against a server process."""

from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image, ImageChops

pytestmark = pytest.mark.slow

CAMERA = ("--camera", "emulated", "--fps", "30", "--width", "640", "--height", "480")

#: Counts ImageBitmaps made and closed, and object URLs made, before the page's scripts run.
COUNT_BITMAPS = """
(() => {
  const made = { bitmaps: 0, closed: 0, urls: 0, revoked: 0 };
  window.__made = made;
  const create = window.createImageBitmap;
  window.createImageBitmap = function (...args) {
    return create.apply(this, args).then((bitmap) => { made.bitmaps += 1; return bitmap; });
  };
  const close = ImageBitmap.prototype.close;
  ImageBitmap.prototype.close = function () { made.closed += 1; return close.call(this); };
  const createURL = URL.createObjectURL;
  URL.createObjectURL = function (...args) { made.urls += 1; return createURL.apply(this, args); };
  const revokeURL = URL.revokeObjectURL;
  URL.revokeObjectURL = function (...args) { made.revoked += 1; return revokeURL.apply(this, args); };
})();
"""

#: Makes every decode take at least 150 ms, on either decode path of frames.js
#: (an ImageBitmap, or WebKit's reused <img>): a viewer slower than the camera.
SLOW_DECODER = """
(() => {
  const later = (value) => new Promise((resolve) => setTimeout(() => resolve(value), 150));
  const create = window.createImageBitmap;
  window.createImageBitmap = function (...args) { return create.apply(this, args).then(later); };
  const decode = HTMLImageElement.prototype.decode;
  HTMLImageElement.prototype.decode = function () { return decode.call(this).then(later); };
})();
"""

SET_VISIBILITY = """
state => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => state });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => state === "hidden" });
  document.dispatchEvent(new Event("visibilitychange"));
}
"""


def canvas_image(page) -> Image.Image:
    return Image.open(io.BytesIO(page.locator("#canvas").screenshot())).convert("RGB")


def stats(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.camstream))")


def wait_frames(page, more: int, timeout_ms: int = 10000) -> None:
    """Wait until the page has drawn ``more`` frames beyond its count now."""
    start = page.evaluate("() => window.camstream.framesDrawn")
    page.wait_for_function(
        "n => window.camstream.framesDrawn >= n", arg=start + more, timeout=timeout_ms, polling=50
    )


def page_rate(page, seconds: float) -> float:
    """Frames drawn per second over ``seconds`` of the page's own clock."""
    start = page.evaluate("() => ({ n: window.camstream.framesDrawn, t: performance.now() })")
    page.wait_for_function(
        "([start, ms]) => performance.now() - start.t >= ms",
        arg=[start, seconds * 1000],
        timeout=seconds * 1000 + 5000,
        polling=100,
    )
    return page.evaluate(
        "start => (window.camstream.framesDrawn - start.n) * 1000 / (performance.now() - start.t)", start
    )


@pytest.mark.alone  # 20 of the camera's 30 fps drawn, frames shown within 250 ms
def test_viewer_draws_the_live_picture_at_the_camera_rate(start_server, page, engine):
    proc = start_server(*CAMERA)
    page.add_init_script(COUNT_BITMAPS)
    page.goto(proc.url + "viewer")
    wait_frames(page, 1)
    first = canvas_image(page)
    assert first.getextrema() != ((0, 0), (0, 0), (0, 0)), "the canvas is black"
    assert len(first.getcolors(maxcolors=1 << 20)) > 10, "no picture on the canvas"
    assert page.evaluate("() => [canvas.width, canvas.height]") == [640, 480]
    changes, previous = 0, first
    deadline = time.monotonic() + 10
    while changes < 3 and time.monotonic() < deadline:
        wait_frames(page, 2)
        current = canvas_image(page)
        if ImageChops.difference(previous, current).getbbox() is not None:
            changes += 1
            previous = current
    assert changes >= 3, "the picture does not change over time"

    rate = page_rate(page, 3)
    assert rate >= 20, f"the page drew {rate:.1f} frames per second of a 30 fps camera"
    shown = stats(page)
    assert shown["fps"] >= 20, f"the page's own counter says {shown['fps']:.1f} fps"
    assert shown["connected"] and shown["connects"] == 1
    assert shown["width"] == 640 and shown["height"] == 480
    assert shown["clockRttMs"] is not None and shown["clockRttMs"] < 100
    # The server's clock is known to within half the quickest round trip (frames.js).
    low = -shown["clockRttMs"] / 2 - 1
    assert low <= shown["frameAgeAvgMs"] < 250, f"frames shown {shown['frameAgeAvgMs']:.0f} ms after capture"
    made = page.evaluate("() => window.__made")
    if shown["decoder"] == "bitmap":  # each frame an ImageBitmap, closed once drawn
        assert made["urls"] == 0, "object URLs were made"
        assert made["bitmaps"] >= 60
        assert made["bitmaps"] - made["closed"] <= 1, f"bitmaps left open: {made}"
    else:  # WebKit: one reused <img> (its bitmaps are freed by the collector only)
        assert shown["decoder"] == "image" and engine == "webkit", shown["decoder"]
        assert made["bitmaps"] == 0, "ImageBitmaps were made"
        assert made["urls"] >= 60
        assert made["urls"] - made["revoked"] <= 1, f"object URLs left alive: {made}"
    assert page.locator("#overlay").is_hidden()
    assert page.locator("#notice").is_hidden()


def test_overlay_by_query_and_by_key(start_server, page):
    proc = start_server(*CAMERA)
    page.goto(proc.url + "viewer?overlay=1&_=1")
    wait_frames(page, 10)
    overlay = page.locator("#overlay")
    page.wait_for_function(
        "() => /\\d fps/.test(overlay.textContent) && /age \\d+ ms/.test(overlay.textContent)"
    )
    assert overlay.is_visible()
    assert "640\u00d7480" in overlay.inner_text()
    page.keyboard.press("o")
    assert overlay.is_hidden()
    page.keyboard.press("o")
    assert overlay.is_visible()


def test_a_slow_decoder_drops_frames_instead_of_queueing_them(start_server, page):
    proc = start_server(*CAMERA)
    page.add_init_script(SLOW_DECODER)
    page.goto(proc.url + "viewer")
    wait_frames(page, 3)
    rate = page_rate(page, 4)
    shown = stats(page)
    assert rate < 10, "the decoder was not slowed down: the test proves nothing"
    assert shown["framesDropped"] > 40, "frames were not replaced while the decoder was busy"
    # A queue would grow by ~25 frames a second, and so would the age of what is shown.
    assert shown["frameAgeMs"] < 600, f"the frame shown is {shown['frameAgeMs']:.0f} ms old"
    assert shown["framesReceived"] - shown["framesDecoded"] - shown["framesDropped"] <= 2


def test_hidden_page_stops_receiving_and_resumes_when_shown(start_server, page):
    proc = start_server(*CAMERA)
    page.goto(proc.url + "viewer")
    wait_frames(page, 5)
    assert json.loads(proc.get("status")[2])["subscribers"] == 1
    page.evaluate(SET_VISIBILITY, "hidden")
    shown = stats(page)
    assert shown["paused"] and not shown["connected"]
    deadline = time.monotonic() + 5
    while json.loads(proc.get("status")[2])["subscribers"] != 0:
        assert time.monotonic() < deadline, "the server still sends frames to a hidden page"
        time.sleep(0.05)  # polling the server with a deadline
    page.evaluate(SET_VISIBILITY, "visible")
    wait_frames(page, 10)
    assert stats(page)["connects"] == 2


def test_viewer_reconnects_after_a_server_restart(start_server, page):
    proc = start_server(*CAMERA)
    page.goto(proc.url + "viewer")
    wait_frames(page, 5)
    page.evaluate("() => { window.__same_page = true; }")
    proc.stop()
    page.wait_for_function("() => !window.camstream.connected", timeout=5000)
    page.wait_for_function("() => !notice.hidden && /reconnecting/.test(notice.textContent)", timeout=5000)
    proc.start()
    started = time.monotonic()
    wait_frames(page, 10, timeout_ms=10000)
    assert time.monotonic() - started < 10
    assert page.evaluate("() => window.__same_page === true"), "the page was reloaded"
    page.wait_for_function("() => notice.hidden", timeout=2000)
