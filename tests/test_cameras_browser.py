"""The camera list page with 8 cameras, in real browsers of three engines, against a server process.

Eight cameras are more than the six HTTP/1.1 connections a browser opens per
host: the page must still show every one of them live.  Camera ``i`` is a
files camera alternating two colours, at a width of its own, so a tile's
pixels tell which camera it shows and whether it moves.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from PIL import Image

from harness.colours import COLOURS, jpeg, nearest_colour

pytestmark = pytest.mark.slow

COUNT = 8


def width_of(i: int) -> int:
    return 96 + 8 * i


def colours_of(i: int) -> tuple[int, int]:
    return i % len(COLOURS), (i + 1) % len(COLOURS)


@pytest.fixture
def eight_cameras(start_server, tmp_path: Path):
    # Requests at DEBUG: the tests read the snapshots a page asked for from the log.
    args = ["--fps", "10", "--idle-timeout", "5", "--log-level", "debug"]
    for i in range(COUNT):
        folder = tmp_path / f"cam{i}"
        folder.mkdir()
        for n, colour in enumerate(colours_of(i)):
            (folder / f"{n}.jpg").write_bytes(jpeg(COLOURS[colour], (width_of(i), 72)))
        args += ["--camera", f"cam{i}=files:{folder}"]
    return start_server(*args)


#: The colour at the centre of each tile's canvas, read from the canvas itself.
CENTRE_COLOURS = """
() => Array.from(document.querySelectorAll(".tile canvas")).map((canvas) => {
  if (canvas.hidden || !canvas.width) return null;
  const [r, g, b] = canvas.getContext("2d").getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data;
  return [r, g, b];
})
"""


def tiles(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.camstream.tiles))")


def test_eight_cameras_all_animate(eight_cameras, page):
    page.goto(eight_cameras.url)
    names = [f"cam{i}" for i in range(COUNT)]
    assert page.locator(".tile").count() == COUNT
    page.wait_for_function(
        "n => Object.values(window.camstream.tiles).filter((t) => t.framesDrawn > 0).length === n",
        arg=COUNT,
        timeout=15000,
    )
    # Each tile draws its camera's own size (its first frames may be smaller: asked for
    # a tile's width before the camera's first frame, the server snaps it to the size
    # configured, 640, and moves the tile once the opening message asks again).
    try:
        page.wait_for_function(
            "sizes => Object.entries(window.camstream.tiles).every(([n, t]) => t.width === sizes[n])",
            arg={name: width_of(i) for i, name in enumerate(names)},
            timeout=10000,
        )
    except TimeoutError:
        pytest.fail(f"the tiles' sizes: { {n: (t['width'], t['height']) for n, t in tiles(page).items()} }")
    start = tiles(page)
    assert list(start) == names
    for i, name in enumerate(names):
        assert (start[name]["width"], start[name]["height"]) == (width_of(i), 72), name
        assert start[name]["running"] and start[name]["visible"]
    # Every tile keeps drawing new frames (10 fps each)...
    page.wait_for_function(
        "start => Object.entries(window.camstream.tiles).every(([n, t]) => t.framesDrawn >= start[n] + 10)",
        arg={name: start[name]["framesDrawn"] for name in names},
        timeout=15000,
    )
    # ...and its picture changes between its camera's two colours.
    seen: list[set[int]] = [set() for _ in range(COUNT)]
    deadline = time.monotonic() + 10
    while any(len(s) < 2 for s in seen) and time.monotonic() < deadline:
        for i, rgb in enumerate(page.evaluate(CENTRE_COLOURS)):
            if rgb is not None:
                seen[i].add(nearest_colour(tuple(rgb)))
        page.wait_for_timeout(30)  # sampling the canvases with a deadline
    for i in range(COUNT):
        assert seen[i] == set(colours_of(i)), f"cam{i} showed {seen[i]}"
    # One WebSocket per camera, each to that camera's own URL (/cameras/NAME/ws): the server
    # logs each one it accepts with the camera it serves (and the variant it gets).
    joined = re.findall(r"ws viewer \S+ joined(?: \([^)]*\))?; \d+ watching (\S+)", eight_cameras.log_text())
    assert sorted(joined) == names, joined
    end = tiles(page)
    assert all(t["decodeErrors"] == 0 and t["drawErrors"] == 0 for t in end.values())


def test_tiles_out_of_sight_close_their_socket(eight_cameras, new_page):
    # (MiniBrowser under WebKitWebDriver keeps its window at least ~450 px wide.)
    page = new_page(viewport=(480, 400))
    page.goto(eight_cameras.url + "cameras/")
    page.wait_for_function("() => window.camstream.tiles.cam0.framesDrawn > 0", timeout=15000)
    state = tiles(page)
    assert state["cam0"]["running"] and not state["cam7"]["running"]
    page.locator("#camera-cam7").scroll_into_view_if_needed()
    page.wait_for_function("() => window.camstream.tiles.cam7.framesDrawn > 0", timeout=15000)
    assert not tiles(page)["cam0"]["running"]


def test_without_javascript_the_tiles_are_snapshots(eight_cameras, new_page):
    # Read from the server and the picture, not the page's scripts: a WebKit page
    # without JavaScript has no driver to run one in (harness/browsers.py).
    page = new_page(java_script_enabled=False)
    page.goto(eight_cameras.url)
    pattern = re.compile(r"GET /cameras/(cam\d)/snapshot\.jpg")
    deadline = time.monotonic() + 30
    while True:
        asked = set(pattern.findall(eight_cameras.log_text()))
        image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        shown = snapshot_colours(image)
        if len(asked) == COUNT and len(shown) >= 5:
            break
        assert time.monotonic() < deadline, f"snapshots asked for {sorted(asked)}; colours shown {shown}"
        time.sleep(0.2)  # polling the server's log and the screen with a deadline
    assert not re.search(r"ws viewer \S+ joined", eight_cameras.log_text()), (
        "the page's scripts ran: they opened a WebSocket"
    )


def snapshot_colours(image: Image.Image) -> set[int]:
    """The COLOURS (indexes) that fill an area of a tile or more (a 96x72 picture
    drawn at least that size) in ``image``."""
    small = image.resize((image.width // 4, image.height // 4), Image.Resampling.NEAREST)
    counts: dict[int, int] = {}
    for count, rgb in small.getcolors(maxcolors=1 << 20) or []:
        index = nearest_colour(rgb)
        if sum((a - b) ** 2 for a, b in zip(COLOURS[index], rgb, strict=True)) < 40 * 40:
            counts[index] = counts.get(index, 0) + count
    return {index for index, count in counts.items() if count >= (96 * 72) // 16}
