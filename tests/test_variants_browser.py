"""The live pages ask for the variant that fits their canvas (static/frames.js, fitTo),
in real browsers of three engines, against a server process.

The server snaps a width to the source's width /1, /2, /4 or /8 (outputs/sizes.py),
so a page's box decides which of those it gets: a 640x480 camera in a viewer whose
picture is drawn 240 pixels wide sends 320x240 frames; enlarged past 320, the source.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import statistics
import urllib.parse
import urllib.request

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CAMERA = ("--camera", "emulated", "--fps", "15", "--width", "640", "--height", "480")
#: The viewer's picture at 480x300: the stage is the viewport less 8em (120 px) high,
#: so it is drawn 180 * 4/3 = 240 pixels wide (MiniBrowser's window is at least ~450
#: px wide, so a small viewer is a short one).
SMALL = (480, 300)
LARGE = (1280, 720)

#: Records the control messages the page sends on its WebSockets, before its scripts run.
RECORD_SENT = """
(() => {
  window.__sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (typeof data === "string") window.__sent.push(data);
    return send.call(this, data);
  };
})();
"""


def set_viewport(page, engine: str, size: tuple[int, int]) -> None:
    """Resize ``page``'s viewport in its engine (harness/browsers.py has no common call for it)."""
    width, height = size
    if engine == "chromium":
        page.set_viewport_size({"width": width, "height": height})
    elif engine == "firefox":
        page._bidi.send(
            "browsingContext.setViewport",
            {"context": page.context, "viewport": {"width": width, "height": height}},
        )
    else:
        page._size(size)
    page.wait_for_function(
        "([w, h]) => innerWidth === w && innerHeight === h", arg=[width, height], timeout=10000
    )


def state(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.camstream))")


def widths_sent(page) -> list[int]:
    """The ``width`` of each control message the page sent that had one, in order."""
    messages = page.evaluate("() => window.__sent")
    return [m["width"] for m in map(json.loads, messages) if "width" in m]


def wait_drawn(page, width: int, timeout_ms: int = 15000) -> dict:
    """Wait until the viewer draws frames ``width`` wide and the server says it sends
    that variant; the page's state then."""
    try:
        page.wait_for_function(
            """w => {
              const s = window.camstream;
              return s.framesDrawn > 0 && s.width === w && s.variant && s.variant.width === w;
            }""",
            arg=width,
            timeout=timeout_ms,
            polling=50,
        )
    except TimeoutError:
        shown = state(page)
        pytest.fail(
            f"the viewer draws {shown['width']}x{shown['height']}, asked {shown['askedWidth']}, "
            f"gets {shown['variant']}; not {width} wide"
        )
    return state(page)


def test_the_viewer_asks_for_the_variant_that_fits_and_again_when_enlarged(start_server, new_page, engine):
    proc = start_server(*CAMERA)
    page = new_page(viewport=SMALL)
    page.add_init_script(RECORD_SENT)
    # ?adapt=0: the sizes depend on the box alone (and ?adapt= is passed on).
    page.goto(proc.url + "viewer?adapt=0")
    small = wait_drawn(page, 320)
    ratio = page.evaluate("() => devicePixelRatio")
    box = page.evaluate("() => [canvas.clientWidth, canvas.clientHeight]")
    drawn = min(box[0], box[1] * 4 / 3) * ratio
    assert 160 < small["askedWidth"] <= 320 and abs(small["askedWidth"] - drawn) <= 1, (small, box, ratio)
    assert page.evaluate("() => [canvas.width, canvas.height]") == [320, 240]
    variant = small["variant"]
    assert (variant["width"], variant["height"], variant["variant"]) == (320, 240, "320x240 q80"), variant
    assert variant["asked"] == "320x240 q80" and not variant["adapt"] and not variant["adapted"], variant
    assert widths_sent(page)[0] == small["askedWidth"], "the opening message did not carry the width"

    set_viewport(page, engine, LARGE)
    large = wait_drawn(page, 640)
    assert large["askedWidth"] > 320, large["askedWidth"]
    variant = large["variant"]
    assert (variant["width"], variant["height"], variant["variant"]) == (640, 480, "source"), variant
    assert large["variantChanges"] >= 1, "the server's variant message was not counted"
    assert large["connects"] == 1, "the page reconnected instead of asking on its socket"
    sent = widths_sent(page)
    assert sent[-1] == large["askedWidth"], sent
    assert all(a != b for a, b in itertools.pairwise(sent)), f"a width was sent twice: {sent}"
    assert len(sent) <= 4, f"the resize was not debounced: {sent}"
    # Nothing changes any more: no width is sent again over 15 more frames (1 s).
    more = page.evaluate("() => window.camstream.framesDrawn + 15")
    page.wait_for_function("n => window.camstream.framesDrawn >= n", arg=more, timeout=10000)
    assert widths_sent(page) == sent


#: The overlay's line for the variant the page gets now (viewer.js's format), if it shows it.
OVERLAY_LINE = """() => {
  const v = window.camstream.variant;
  if (!v || !window.camstream.framesDrawn) return null;
  const line = `${v.width}\u00d7${v.height} q${v.quality}` + (v.adapted ? ` (adapted from ${v.asked})` : "");
  return overlay.textContent.split("\\n").includes(line) ? line : null;
}"""


def test_the_viewer_overlay_names_the_variant(start_server, new_page):
    proc = start_server(*CAMERA)
    page = new_page(viewport=SMALL)
    # Adapting (the default), at quality 50: asked 320x240 q50; adaptation may move it lower.
    page.goto(proc.url + "viewer?overlay=1&quality=50")
    try:
        line = page.wait_for_function(OVERLAY_LINE, timeout=15000, polling=50)
    except TimeoutError:
        text = page.locator("#overlay").inner_text()
        pytest.fail(f"the overlay says {text!r}; the page gets {state(page)['variant']}")
    if hasattr(line, "json_value"):  # Playwright's own page answers with a handle
        line = line.json_value()
    variant = state(page)["variant"]
    assert variant["asked"] == "320x240 q50" and variant["adapt"], variant
    if not variant["adapted"]:
        assert line == "320\u00d7240 q50", line


def test_the_pages_own_width_and_quality_pass_on_with_its_token(start_server, new_page, engine):
    # ?width=100 is a fixed width (160x120, the smallest at least 100): no fitting, no
    # width message, even after a resize; ?quality=30 and the token go with it.
    token = "variants-token-0123456789"
    proc = start_server(*CAMERA, "--token", token)
    page = new_page(viewport=SMALL)
    page.add_init_script(RECORD_SENT)
    page.goto(proc.url + f"viewer?width=100&quality=30&token={token}")
    shown = wait_drawn(page, 160)
    assert shown["askedWidth"] == 100
    variant = shown["variant"]
    assert (variant["variant"], variant["asked"]) == ("160x120 q30", "160x120 q30"), variant
    set_viewport(page, engine, LARGE)
    more = page.evaluate("() => window.camstream.framesDrawn + 10")
    page.wait_for_function("n => window.camstream.framesDrawn >= n", arg=more, timeout=10000)
    shown = state(page)
    assert shown["width"] == 160 and shown["variant"]["variant"] == "160x120 q30", shown["variant"]
    assert widths_sent(page) == [], "a fixed width was fitted"
    # One socket, opened with the token (without it: a 401), never replaced.
    assert shown["connects"] == 1 and shown["attempts"] == 1


#: The width a 4:3 picture is drawn at in the kiosk's viewport, in device pixels.
KIOSK_DRAWN = """fit => {
  const css = (fit === "cover" ? Math.max : Math.min)(innerWidth, innerHeight * 4 / 3);
  return Math.ceil(css * devicePixelRatio - 1e-6);
}"""


def test_the_kiosk_asks_for_the_variant_that_fills_the_screen_in_its_fit(start_server, new_page):
    # A 1920x1440 camera in a 600x300 kiosk: contained, drawn 400 wide (480x360, a
    # quarter); covering, 600 wide (960x720, a half).  Before its first frame the
    # kiosk's canvas (300x150 by default) has the wrong aspect: the first frame's
    # corrects the width asked.
    proc = start_server("--camera", "emulated", "--fps", "10", "--width", "1920", "--height", "1440")
    page = new_page(viewport=(600, 300))
    for fit, want in [("contain", (480, 360)), ("cover", (960, 720))]:
        page.goto(proc.url + f"kiosk?fit={fit}")
        label = f"{want[0]}x{want[1]} q80"
        settled = """([label, drawn]) => {
          const s = window.camstream;
          const asked = s.ws.variant && s.ws.variant.asked;
          return s.framesShown > 0 && asked === label && s.ws.askedWidth === drawn;
        }"""
        drawn = page.evaluate(KIOSK_DRAWN, fit)
        assert want[0] // 2 < drawn <= want[0], f"{fit}: drawn {drawn} wide: the test proves nothing"
        try:
            page.wait_for_function(settled, arg=[label, drawn], timeout=20000, polling=50)
            # ...and it stays so (the width asked is not changed again, by the first
            # frame's aspect, say) for 15 more frames (1.5 s).
            more = page.evaluate("() => window.camstream.framesShown + 15")
            page.wait_for_function("n => window.camstream.framesShown >= n", arg=more, timeout=10000)
            assert page.evaluate(settled, [label, drawn])
        except (TimeoutError, AssertionError):
            pytest.fail(f"{fit}: drawn {drawn} wide, not asked for {label}: {state(page)}")
        shown = state(page)
        assert shown["mode"] == "ws" and shown["fit"] == fit
        # What it draws is what the server sends: that, or smaller if adaptation moved it.
        page.wait_for_function(
            "() => window.camstream.width === window.camstream.ws.variant.width", timeout=5000, polling=50
        )
        shown = state(page)
        assert shown["width"] <= want[0] and shown["width"] * 3 == shown["height"] * 4, (fit, shown)


def test_the_kiosk_in_mjpeg_mode_passes_the_pages_width_on(start_server, new_page):
    proc = start_server(*CAMERA)
    page = new_page()
    page.goto(proc.url + "kiosk?mode=mjpeg&width=160&quality=50")
    try:
        page.wait_for_function(
            "() => window.camstream.framesShown > 0 && window.camstream.width > 0", timeout=15000, polling=50
        )
    except TimeoutError:
        pytest.fail(f"no picture: {state(page)}")
    shown = state(page)
    assert shown["mode"] == "mjpeg" and (shown["width"], shown["height"]) == (160, 120), shown
    with urllib.request.urlopen(proc.url + "status", timeout=5) as response:
        clients = json.load(response)["clients"]
    assert [c["variant"] for c in clients if c["kind"] == "mjpeg"] == ["160x120 q50"], clients


def tile_states(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.camstream.tiles))")


NAMES = ["cam0", "cam1", "cam2"]


def test_the_grid_tiles_ask_for_small_variants(start_server, page, engine):
    # Three 640x480 cameras in tiles about 300 pixels wide (1280x720): 320x240 each.
    cameras = [arg for name in NAMES for arg in ("--camera", f"{name}=emulated")]
    proc = start_server(*cameras, "--fps", "15", "--width", "640", "--height", "480")
    received: dict[str, list[int]] = {name: [] for name in NAMES}
    if engine == "chromium":
        # The bytes each tile's socket receives (Playwright's own page: its websocket events).
        def watch(socket) -> None:
            found = re.search(r"/cameras/(cam\d)/ws", socket.url)
            if not found:
                return
            sizes = received[found.group(1)]

            def frame(payload: str | bytes) -> None:
                if isinstance(payload, bytes):  # a JPEG (text is a control message)
                    sizes.append(len(payload))

            socket.on("framereceived", frame)

        page.on("websocket", watch)
    page.goto(proc.url)
    try:
        page.wait_for_function(
            """n => Object.values(window.camstream.tiles)
              .filter((t) => t.framesDrawn >= 20 && t.variant).length === n""",
            arg=len(NAMES),
            timeout=30000,
            polling=100,
        )
    except TimeoutError:
        pytest.fail(f"the tiles: {tile_states(page)}")
    if engine == "chromium":
        status, _, full = proc.get("cameras/cam0/snapshot.jpg")
        assert status == 200
        for name in NAMES:
            sizes = received[name]
            assert len(sizes) >= 20, (name, sizes)
            # A 320x240 frame is about 40 % of a 640x480 one's bytes; every frame the
            # socket received is small (the first too: the width is in the socket's URL).
            assert max(sizes) < 0.6 * len(full), (name, len(full), sizes)
            assert statistics.median(sizes) < 0.5 * len(full), (name, len(full), sizes)
    tiles = tile_states(page)
    for name in NAMES:
        tile = tiles[name]
        variant = tile["variant"]
        box = page.evaluate(
            "n => ((c) => [c.clientWidth, c.clientHeight])(document.querySelector(`#camera-${n} canvas`))",
            name,
        )
        assert box[0] <= 320, f"the tiles are {box} CSS pixels: the test proves nothing"
        assert variant["asked"] == "320x240 q80", (name, tile["askedWidth"], variant)
        # The tile draws the frames the server sends: 320x240, or smaller if adaptation moved it.
        assert tile["width"] <= 320 and tile["width"] * 3 == tile["height"] * 4, (name, tile)
        assert tile["decodeErrors"] == 0 and tile["drawErrors"] == 0


def test_without_javascript_the_tiles_ask_for_tile_sized_snapshots(start_server):
    # The no-script tiles' <img>: ?width=320 (640 at 2x) joined with the page's ?token=.
    token = "variants-token-0123456789"
    proc = start_server(*CAMERA, "--token", token)
    page_url = proc.url + "cameras/"
    status, _, body = proc.get(f"cameras/?token={token}")
    assert status == 200
    found = re.findall(r'<noscript><img src="([^"]+)"\s+srcset="([^"]+)"', body.decode())
    assert len(found) == 1, body.decode()
    src, srcset = (text.replace("&amp;", "&") for text in found[0])
    assert src.endswith(f"/snapshot.jpg?width=320&token={token}"), src
    assert srcset == f"{src} 1x, {src.replace('width=320', 'width=640')} 2x", srcset
    for url, size in [(src, (320, 240)), (src.replace("width=320", "width=640"), (640, 480))]:
        status, headers, data = proc.get(urllib.parse.urljoin(page_url, url)[len(proc.url) :])
        assert status == 200 and headers["Content-Type"] == "image/jpeg", url
        assert Image.open(io.BytesIO(data)).size == size, url
