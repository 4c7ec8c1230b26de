"""The index page in a real headless Chromium: the <img> shows the live, newest frame."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image, ImageChops

from harness.colours import COLOURS, nearest_colour
from tests.mjpeg_client import StreamReader

pytestmark = pytest.mark.slow


def element_image(page, selector: str = "#stream") -> Image.Image:
    return Image.open(io.BytesIO(page.locator(selector).screenshot())).convert("RGB")


def wait_loaded(page, selector: str = "#stream", timeout_ms: int = 10000) -> None:
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.naturalWidth > 0; }",
        arg=selector,
        timeout=timeout_ms,
    )


def test_index_img_gets_pixels_and_moves(start_server, page):
    proc = start_server("--camera", "emulated", "--fps", "15", "--width", "320", "--height", "240")
    page.goto(proc.url)
    wait_loaded(page)
    size = page.evaluate("() => [stream.naturalWidth, stream.naturalHeight]")
    assert size == [320, 240]
    first = element_image(page)
    assert first.getextrema() != ((0, 0), (0, 0), (0, 0)), "the image is black"
    assert len(first.getcolors(maxcolors=1 << 20)) > 10, "no picture in the image"
    deadline = time.monotonic() + 10
    changes = 0
    previous = first
    while changes < 3 and time.monotonic() < deadline:
        current = element_image(page)
        if ImageChops.difference(previous, current).getbbox() is not None:
            changes += 1
            previous = current
    assert changes >= 3, "the picture does not change over time"


@pytest.mark.parametrize("path", ["", "?timestamp=1"])
def test_index_img_shows_the_newest_frame_not_the_one_before(start_server, page, frames_dir, path):
    # One colour every 2 s; the server repeats a still frame after ~1 s, so a page
    # that lags one frame behind would show the new colour only after that repeat.
    proc = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "0.5")
    page.goto(proc.url + path)
    reader = StreamReader(proc.port)  # the same stream, as a program reads it
    try:
        wait_loaded(page)
        seen = 0
        checked = 0
        deadline = time.monotonic() + 30
        while checked < 3 and time.monotonic() < deadline:
            parts = reader.wait_for(seen + 1, timeout_s=10)
            new = parts[seen:]
            seen = len(parts)
            stamps = [float(p.headers["x-timestamp"]) for p in parts]
            if len(new) != 1 or stamps[-1] in stamps[:-1]:
                continue  # a repeat of a still frame, or a burst: wait for a fresh frame
            sent = nearest_colour(Image.open(io.BytesIO(new[0].body)).getpixel((80, 60)))
            shown = None
            check_until = new[0].arrived + 0.8
            while time.monotonic() < check_until:
                image = element_image(page)
                shown = nearest_colour(image.getpixel((image.width // 2, image.height // 2)))
                if shown == sent:
                    break
            assert shown == sent, f"the page shows {COLOURS[shown]} while {COLOURS[sent]} is current"
            checked += 1
        assert checked == 3
    finally:
        reader.close()
