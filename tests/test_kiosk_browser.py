"""The kiosk (/kiosk) in real browsers of three engines at 1280x720, against a server
process: it fills the screen, keeps animating, recovers from a server restart by itself,
and says it is alive (/status's "kiosks")."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import pytest
from PIL import Image, ImageChops

from harness.browsers import TestProxy

pytestmark = pytest.mark.slow

CAMERA = ("--camera", "emulated", "--fps", "30", "--width", "640", "--height", "480")
VIEWPORT = (1280, 720)


def screenshot(page) -> Image.Image:
    return Image.open(io.BytesIO(page.screenshot())).convert("RGB")


def picture_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """Bounding box of everything that is not (near) black."""
    mask = image.convert("L").point(lambda v: 255 if v > 8 else 0)
    return mask.getbbox()


def shown(page) -> int:
    return page.evaluate("() => window.camstream.framesShown")


def wait_shown(page, more: int, timeout_ms: int) -> None:
    page.wait_for_function(
        "n => window.camstream.framesShown >= n", arg=shown(page) + more, timeout=timeout_ms, polling=50
    )


def assert_animates(page, seconds: int, per_second: int) -> None:
    """At least ``per_second`` new frames in each of ``seconds`` consecutive seconds
    (the page's clock), and the picture on screen differs from start to end."""
    first = screenshot(page)
    start = page.evaluate("() => ({ t: performance.now(), n: window.camstream.framesShown })")
    previous = start["n"]
    for second in range(1, seconds + 1):
        page.wait_for_function(
            "([start, ms]) => performance.now() - start.t >= ms",
            arg=[start, second * 1000],
            timeout=5000,
            polling=50,
        )
        count = shown(page)
        assert count - previous >= per_second, f"second {second}: {count - previous} new frames"
        previous = count
    last = screenshot(page)
    assert ImageChops.difference(first, last).getbbox() is not None, "the screen did not change"


def assert_full_screen_and_quiet(page, fit: str) -> None:
    box = picture_box(screenshot(page))
    assert box is not None, "the screen is black"
    width, height = box[2] - box[0], box[3] - box[1]
    if fit == "cover":
        assert (width, height) == VIEWPORT, f"cover leaves a border: {box}"
    else:
        # 640x480 in 1280x720: full height, 960 wide, centred.
        assert height == VIEWPORT[1], f"the picture does not fill the height: {box}"
        assert abs(width - 960) <= 2 and abs(box[0] - 160) <= 2, f"not 4:3 and centred: {box}"
    layout = page.evaluate(
        """() => {
          const root = document.documentElement;
          return {
            scrollX: root.scrollWidth - root.clientWidth,
            scrollY: root.scrollHeight - root.clientHeight,
            cursor: getComputedStyle(document.body).cursor,
            background: getComputedStyle(document.body).backgroundColor,
            text: document.body.innerText.trim(),
          };
        }"""
    )
    assert layout["scrollX"] <= 0 and layout["scrollY"] <= 0, f"scrollbars: {layout}"
    assert layout["cursor"] == "none"
    assert layout["background"] == "rgb(0, 0, 0)"
    assert layout["text"] == "", f"text on a working kiosk: {layout['text']!r}"


@pytest.mark.alone  # 15 new frames in each second
@pytest.mark.parametrize("fit", ["contain", "cover"])
def test_kiosk_fills_the_screen_and_keeps_animating(start_server, page, fit):
    proc = start_server(*CAMERA)
    query = "" if fit == "contain" else "?fit=cover&_=1"
    page.goto(proc.url + "kiosk" + query)
    wait_shown(page, 5, timeout_ms=10000)
    assert page.evaluate("() => window.camstream.mode") == "ws"
    assert_full_screen_and_quiet(page, fit)
    assert_animates(page, seconds=5, per_second=15)


def assert_shows_a_picture(page, what: str) -> None:
    """The screen shows a 640x480 picture, contained (960x720, centred), with a
    picture's many colours: not black, not a broken-image icon."""
    picture = screenshot(page).crop((160, 0, 1120, 720))  # (the notice may be outside it)
    box = picture_box(picture)
    assert box is not None, f"{what}: the screen is black"
    assert box[2] - box[0] >= 956 and box[3] - box[1] >= 716, f"{what}: only {box} of 960x720 shows"
    colours = picture.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 100, f"{what}: {len(colours)} colours, not a picture"


def restart_and_recover(proc, page, per_second: int) -> None:
    page.evaluate("() => { window.__same_page = true; }")
    proc.stop()
    page.wait_for_function("() => window.camstream.noticeVisible", timeout=8000)
    assert "reconnecting" in page.locator("#notice").inner_text()
    assert_shows_a_picture(page, "the server is down: the last good frame is gone")
    before = shown(page)
    proc.start()
    started = time.monotonic()
    page.wait_for_function(
        "n => window.camstream.framesShown >= n", arg=before + 3, timeout=10000, polling=50
    )
    assert time.monotonic() - started < 10, "no picture within 10 s of the restart"
    assert page.evaluate("() => window.__same_page === true"), "the page was reloaded"
    page.wait_for_function("() => !window.camstream.noticeVisible", timeout=2000)
    assert page.locator("#notice").is_hidden()
    assert_animates(page, seconds=2, per_second=per_second)


@pytest.mark.alone  # 15 new frames in each second, within 10 s of the restart
def test_kiosk_recovers_after_a_server_restart(start_server, page):
    proc = start_server(*CAMERA)
    page.goto(proc.url + "kiosk")
    wait_shown(page, 5, timeout_ms=10000)
    restart_and_recover(proc, page, per_second=15)
    state = page.evaluate("() => window.camstream")
    assert state["mode"] == "ws" and state["reconnects"] >= 1
    assert_full_screen_and_quiet(page, "contain")


def test_kiosk_mjpeg_mode_recovers_after_a_server_restart(start_server, page):
    proc = start_server(*CAMERA)
    page.goto(proc.url + "kiosk?mode=mjpeg")
    wait_shown(page, 2, timeout_ms=10000)
    src = page.evaluate("() => document.getElementById('img').src")
    assert "stream.mjpg?framing=img&_=" in src
    assert page.evaluate("() => window.camstream.mode") == "mjpeg"
    assert_full_screen_and_quiet(page, "contain")
    # The watchdog samples the picture twice a second: two changes a second.
    assert_animates(page, seconds=3, per_second=1)
    # ...and a healthy stream is left alone: never taken for a stalled one.
    page.wait_for_function("() => performance.now() > 9000", timeout=15000, polling=100)
    state = page.evaluate("() => window.camstream")
    assert state["imgConnects"] == 1 and state["stalls"] == 0, (
        f"a healthy stream was reconnected {state['imgConnects'] - 1} times ({state['stalls']} stalls)"
    )
    restart_and_recover(proc, page, per_second=1)
    state = page.evaluate("() => window.camstream")
    assert state["mode"] == "mjpeg" and state["imgConnects"] >= 2


def test_kiosk_falls_back_to_mjpeg_when_websockets_fail(start_server, page):
    # Through a proxy that refuses every WebSocket handshake, as one that does not pass upgrades.
    proc = start_server(*CAMERA)
    proxy = TestProxy("127.0.0.1", proc.port, refuse_websocket=True)
    try:
        page.goto(proxy.url + "kiosk")
        page.wait_for_function("() => window.camstream.mode === 'mjpeg'", timeout=15000)
        assert "websocket failed" in page.evaluate("() => window.camstream.fallbackReason")
        assert proxy.refused >= 1
        wait_shown(page, 2, timeout_ms=10000)
        assert_full_screen_and_quiet(page, "contain")
    finally:
        proxy.close()


def test_kiosk_without_websocket_uses_mjpeg_at_once(start_server, page):
    proc = start_server(*CAMERA)
    page.add_init_script("delete window.WebSocket;")
    page.goto(proc.url + "kiosk?fit=cover")
    wait_shown(page, 2, timeout_ms=10000)
    state = page.evaluate("() => window.camstream")
    assert state["mode"] == "mjpeg" and "not available" in state["fallbackReason"]
    assert_full_screen_and_quiet(page, "cover")


WATCH_NOTICE = "() => setInterval(() => { if (window.camstream.noticeVisible) window.__notice = true; }, 50)"


TOKEN = "kiosk-token-0123456789abcdef"


@pytest.mark.parametrize(("mode", "token"), [("ws", False), ("mjpeg", False), ("mjpeg", True)])
def test_a_still_picture_is_not_taken_for_a_dead_stream(start_server, page, frames_dir, mode, token):
    # One frame every 10 s: longer than the 4 s watchdogs.  With --token the
    # watchdog's question to "status" must carry the page's token too (not a 401).
    access = ["--token", TOKEN] if token else []
    proc = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "0.1", *access)
    page.goto(proc.url + f"kiosk?mode={mode}" + (f"&token={TOKEN}" if token else ""))
    wait_shown(page, 1, timeout_ms=10000)
    page.evaluate(WATCH_NOTICE)
    page.wait_for_function("() => performance.now() > 7000", timeout=15000, polling=100)
    state = page.evaluate("() => window.camstream")
    assert state["mode"] == mode
    assert not page.evaluate("() => window.__notice === true"), "a still picture was shown as an outage"
    if mode == "ws":
        assert state["ws"]["connects"] == 1 and state["stalls"] == 0
        assert state["ws"]["repeats"] >= 4, "the server did not re-send the still picture"
    else:
        assert state["probes"] >= 1, "the watchdog never looked at the still picture"
        assert state["imgConnects"] == 1 and state["stalls"] == 0


# -- the heartbeat ------------------------------------------------------------------
def kiosks(proc) -> list[dict]:
    status, _, body = proc.get("status")
    assert status == 200, body
    return json.loads(body)["kiosks"]


def wait_for_kiosk(proc, kiosk_id: str, predicate, timeout_s: float, what: str) -> dict:
    """The kiosk ``kiosk_id`` of ``/status`` once ``predicate`` holds for it, polled."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = [k for k in kiosks(proc) if k["id"] == kiosk_id]
        if found and predicate(found[0]):
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout_s} s: {found}")
        time.sleep(0.1)  # polling /status, with a deadline


@pytest.mark.parametrize("mode", ["ws", "mjpeg"])
def test_the_kiosk_says_it_is_alive_and_status_marks_it_gone(start_server, page, mode):
    proc = start_server(*CAMERA)
    page.goto(proc.url + "kiosk" + ("?mode=mjpeg" if mode == "mjpeg" else ""))
    kiosk_id = page.evaluate("() => window.camstream.kioskId")
    # At once on connecting (then every 5 s): within a few seconds of opening the page.
    first = wait_for_kiosk(proc, kiosk_id, lambda k: True, 8, "a first heartbeat")
    assert first["state"] == "live" and first["camera"] == "emulated" and first["page"] == "/kiosk"
    assert first["address"] == "127.0.0.1"
    assert first["transport"] == ("ws" if mode == "ws" else "http")
    assert first["viewport"] == list(VIEWPORT) and first["interval_s"] == 5
    assert first["last_heartbeat_at"].endswith("Z") and first["gone_for_s"] is None
    # The next heartbeats, with the frames shown rising.
    later = wait_for_kiosk(
        proc,
        kiosk_id,
        lambda k: (
            k["heartbeats"] >= first["heartbeats"] + 2 and k["frames_shown"] > (first["frames_shown"] or 0)
        ),
        15,
        "two more heartbeats with more frames shown",
    )
    assert later["state"] == "live" and later["last_heartbeat_age_s"] < 8
    assert later["frames_per_s"] is not None and later["frames_per_s"] > 0
    shown_now = page.evaluate("() => window.camstream.framesShown")
    assert later["frames_shown"] <= shown_now
    if mode == "ws":
        assert later["connections"] == 1
    # The page goes away (its document unloaded): gone within the heartbeat's timeout
    # (3 intervals; a socket's close says so at once).
    page.goto("about:blank")
    left = time.monotonic()
    gone = wait_for_kiosk(proc, kiosk_id, lambda k: k["state"] == "gone", 15 + 5, "gone")
    if mode == "ws":
        assert time.monotonic() - left < 5, "a closed socket is gone at once"
    assert gone["frames_shown"] >= later["frames_shown"] and gone["gone_for_s"] is not None


# -- the display's clock jumps --------------------------------------------------------
#: Date.now() of the page's scripts, moved by window.__jumpClock(ms), as NTP moves the
#: display's clock at boot; performance.now() (monotonic) does not move.
JUMPING_CLOCK = """(() => {
  const real = Date.now.bind(Date);
  let shift = 0;
  window.__jumpClock = (ms) => { shift += ms; };
  Date.now = () => real() + shift;
})();"""
DAY_MS = 86_400_000


def page_seconds(page, seconds: float) -> None:
    """Wait until ``seconds`` more of the page's own (monotonic) time have passed."""
    start = page.evaluate("() => performance.now()")
    page.wait_for_function(
        "end => performance.now() >= end",
        arg=start + seconds * 1000,
        timeout=seconds * 1000 + 10000,
        polling=100,
    )


def wait_quiet(page, ms: int = 700) -> None:
    """Wait until the page has shown no new frame for ``ms`` of its own time."""
    page.wait_for_function(
        """ms => {
          const now = performance.now();
          const n = window.camstream.framesShown;
          if (window.__quiet === undefined || window.__quiet.n !== n) window.__quiet = { n, since: now };
          return now - window.__quiet.since >= ms;
        }""",
        arg=ms,
        timeout=10000,
        polling=50,
    )


@pytest.mark.alone  # a 2 s pause of the server is not an outage; a long one is, within 10 s
@pytest.mark.parametrize("mode", ["ws", "mjpeg"])
def test_a_jump_of_the_clock_neither_trips_nor_stalls_the_watchdog(start_server, page, mode):
    # The server is paused for real (SIGSTOP: its sockets stay open, silent), and the
    # display's clock jumps meanwhile, when a watchdog reading Date.now() would go wrong.
    proc = start_server(*CAMERA)
    pid = proc.proc.pid
    page.add_init_script(JUMPING_CLOCK)
    page.goto(proc.url + "kiosk" + ("?mode=mjpeg" if mode == "mjpeg" else ""))
    wait_shown(page, 3, timeout_ms=10000)
    page.evaluate("() => { window.__same_page = true; }")
    page.evaluate(WATCH_NOTICE)
    # A pause shorter than the 4 s watchdogs, the clock a day forward in it: nothing to repair.
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_quiet(page)
        page.evaluate(f"() => window.__jumpClock({DAY_MS})")
        page_seconds(page, 1.2)  # two of the watchdogs' checks, twice a second
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_shown(page, 3, timeout_ms=10000)
    state = page.evaluate("() => window.camstream")
    assert not page.evaluate("() => window.__notice === true"), "a short pause was shown as an outage"
    assert state["stalls"] == 0 and state["reconnects"] == 0, f"the jump tripped the watchdog: {state}"
    assert (state["ws"]["connects"] if mode == "ws" else state["imgConnects"]) == 1
    # A long pause, the clock two days back in it: the watchdog must still see the silence.
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_quiet(page)
        page.evaluate(f"() => window.__jumpClock({-2 * DAY_MS})")
        # ws: the socket closed as silent; mjpeg: the server asked, and no answer.
        seen = "s.stalls >= 1" if mode == "ws" else "s.probes >= 1"
        page.wait_for_function(
            f"() => {{ const s = window.camstream; return s.noticeVisible && {seen}; }}",
            timeout=15000,
            polling=100,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_shown(page, 3, timeout_ms=15000)
    page.wait_for_function("() => !window.camstream.noticeVisible", timeout=5000)
    assert page.evaluate("() => window.__same_page === true"), "the page was reloaded"
