"""The recordings list and the player of a recorded segment, in real browsers of
three engines, against real server processes that record the files camera.

The files camera cycles through six solid colours at 10 fps, so every frame of
a segment has a colour of its own.  The tests decode the segment files
themselves (:func:`recording.mkv.read_index` and Pillow) to know the colour of
each frame, and compare it with the pixel at the centre of the player's canvas.
"""

from __future__ import annotations

import bisect
import io
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from harness.colours import nearest_colour, write_colour_frames
from harness.process import ServerProcess
from recording.mkv import read_index

pytestmark = pytest.mark.slow

FPS = 10
SEGMENT_S = 4
TOKEN = "SECRET123"
CAMERA = "files"


# -- the recorded segments ------------------------------------------------------
@dataclass
class Segment:
    """A segment file, decoded: each frame's time (ms) and colour (index in COLOURS)."""

    name: str
    path: Path
    t: list[int]
    offset: list[int]
    size: list[int]
    colours: list[int]

    @property
    def last(self) -> int:
        return len(self.t) - 1

    def frame_at(self, ms: float) -> int:
        """The last frame taken at or before ``ms`` (the first one before it)."""
        return max(0, bisect.bisect_right(self.t, ms) - 1)


def decode(path: Path) -> Segment:
    index = read_index(path)
    data = path.read_bytes()
    colours = []
    for _, offset, size in index.frames:
        with Image.open(io.BytesIO(data[offset : offset + size])) as image:
            rgb = image.convert("RGB")
            colours.append(nearest_colour(rgb.getpixel((rgb.width // 2, rgb.height // 2))))
    name = path.name.removesuffix(".part").removesuffix(".mkv")
    return Segment(
        name,
        path,
        [t for t, _, _ in index.frames],
        [o for _, o, _ in index.frames],
        [s for _, _, s in index.frames],
        colours,
    )


class Recorder:
    """A server process recording the files camera into ``folder``."""

    def __init__(self, frames: Path, folder: Path, logs: Path, *extra: str) -> None:
        self.folder = folder
        self.token = TOKEN if "--token" in extra else None
        logs.mkdir()
        args = ["--camera", CAMERA, "--source", str(frames), "--fps", str(FPS)]
        args += ["--record", str(folder), "--record-segment", str(SEGMENT_S), *extra]
        self.server = ServerProcess(args, logs / "server")

    @property
    def url(self) -> str:
        return self.server.url

    def query(self) -> str:
        return f"?token={self.token}" if self.token else ""

    def listing(self) -> list[dict]:
        status, _, body = self.server.get("recordings/index.json" + self.query())
        assert status == 200, body
        return json.loads(body)["cameras"][CAMERA]["segments"]

    def wait_for(self, condition, what: str, timeout_s: float = 20.0) -> dict:
        """The longest segment of the listing that meets ``condition``, polled with a deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [s for s in self.listing() if condition(s)]
            if found:
                return max(found, key=lambda s: s["length_s"] or 0)
            time.sleep(0.1)  # polling the listing with a deadline
        raise AssertionError(f"no {what} within {timeout_s} s: {self.listing()}\n{self.server.log_text()}")

    def file(self, name: str) -> Path:
        """The segment's file: finished, or the part still being written."""
        finished = self.folder / CAMERA / f"{name}.mkv"
        part = self.folder / CAMERA / f"{name}.mkv.part"
        return part if part.exists() else finished


@dataclass
class Servers:
    plain: Recorder
    guarded: Recorder
    #: A finished segment of the plain server, of 3 seconds or more.
    segment: Segment


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Two servers recording at once (one with --token): their first segments take a
    while, so they are shared by the module's tests and awaited together."""
    tmp = tmp_path_factory.mktemp("player")
    frames = write_colour_frames(tmp / "frames", (320, 240))
    plain = Recorder(frames, tmp / "rec", tmp / "logs0")
    guarded = Recorder(frames, tmp / "rec-token", tmp / "logs1", "--token", TOKEN)
    try:
        plain.server.start()
        guarded.server.start()
        found = plain.wait_for(
            lambda s: not s["recording"] and s["length_s"] and s["length_s"] >= 3.0,
            "finished segment of 3 s or more",
        )
        segment = decode(plain.file(found["name"]))
        assert len(segment.t) >= 30 and len(set(segment.colours)) == 6, segment
        yield Servers(plain, guarded, segment)
    finally:
        for recorder in (plain, guarded):
            recorder.server.stop()
            text = recorder.server.log_text()
            assert "Traceback" not in text, text
            assert " ERROR " not in text, text


def player_url(recorder: Recorder, name: str, query: str = "") -> str:
    return f"{recorder.url}recordings/{CAMERA}/{name}{query}"


# -- reading the player ---------------------------------------------------------
#: What the canvas shows now: its data attributes and the colour of its centre pixel.
SAMPLE = """
() => {
  const canvas = document.getElementById("canvas");
  const d = canvas.dataset;
  const has = d.frame !== undefined;
  const ctx = canvas.getContext("2d");
  const rgb = has ? ctx.getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data : null;
  return {
    frame: has ? Number(d.frame) : null,
    time: has ? Number(d.time) : null,
    position: d.position === undefined ? null : Number(d.position),
    state: d.state || null,
    drawn: Number(d.drawn || 0),
    rgb: rgb ? [rgb[0], rgb[1], rgb[2]] : null,
  };
}
"""

#: Resolves after at least ``frames`` animation frames and ``ms`` milliseconds; gives the time passed.
ANIMATION_FRAMES = """
([frames, ms]) => new Promise((resolve) => {
  const start = performance.now();
  let count = 0;
  const step = () => {
    count += 1;
    const passed = performance.now() - start;
    if (count >= frames && passed >= ms) resolve(passed);
    else requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
})
"""

#: The shown frame is the one due at the clock, drawn (not merely asked for).
SETTLED = """
() => {
  const d = document.getElementById("canvas").dataset;
  const player = window.camstreamPlayer;
  return player && d.frame !== undefined && d.position !== undefined
    && Number(d.frame) === player.frameAt(Number(d.position));
}
"""


def sample(page) -> dict:
    return page.evaluate(SAMPLE)


def wait_animation_frames(page, frames: int = 20, ms: int = 400) -> None:
    passed = page.evaluate(ANIMATION_FRAMES, [frames, ms])
    assert passed >= ms


def wait_state(page, state: str, timeout_ms: int = 10000) -> None:
    page.wait_for_function(
        "s => document.getElementById('canvas').dataset.state === s", arg=state, timeout=timeout_ms
    )


def wait_drawn(page, count: int, timeout_ms: int = 10000) -> None:
    page.wait_for_function(
        "n => Number(document.getElementById('canvas').dataset.drawn) >= n", arg=count, timeout=timeout_ms
    )


def wait_frame_at_least(page, frame: int, timeout_ms: int = 10000) -> None:
    page.wait_for_function(
        "n => Number(document.getElementById('canvas').dataset.frame) >= n", arg=frame, timeout=timeout_ms
    )


def assert_shows(segment: Segment, now: dict) -> None:
    """The canvas shows frame ``now["frame"]`` of the file: its colour."""
    assert now["frame"] is not None and now["rgb"] is not None, now
    assert 0 <= now["frame"] <= segment.last, now
    assert now["time"] == segment.t[now["frame"]], now
    assert nearest_colour(tuple(now["rgb"])) == segment.colours[now["frame"]], now


def paused_now(page) -> dict:
    """The player's state once paused: the clock shown (one animation frame after
    the pause) and the frame due then drawn."""
    wait_state(page, "paused")
    wait_animation_frames(page, 2, 0)
    page.wait_for_function(SETTLED, timeout=10000)
    return sample(page)


def assert_settled_at(page, segment: Segment, position_ms: float) -> dict:
    """Paused at ``position_ms``, showing the frame due then, in its colour."""
    page.wait_for_function(SETTLED, timeout=10000)
    now = sample(page)
    assert abs(now["position"] - position_ms) <= 1, now
    assert now["frame"] == segment.frame_at(now["position"]), now
    assert page.evaluate("ms => window.camstreamPlayer.frameAt(ms)", now["position"]) == now["frame"]
    assert_shows(segment, now)
    return now


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- the tests ------------------------------------------------------------------
@pytest.mark.alone  # the pace of the clock against the test's own
def test_list_then_play_at_the_recorded_pace(servers: Servers, page) -> None:
    segment = servers.segment
    names = [s["name"] for s in servers.plain.listing()]
    page.goto(servers.plain.url + "recordings/")
    rows = page.locator(f"#camera-{CAMERA} tr.segment")
    shown = rows.evaluate_all("rows => rows.map((r) => r.dataset.segment)")
    # Newest first; every segment already listed is there (newer ones may have started since).
    assert shown == sorted(shown, reverse=True)
    assert set(names) <= set(shown), (names, shown)
    row = page.locator(f'tr.segment[data-segment="{segment.name}"]')
    assert "recording" not in (row.get_attribute("class") or "").split()
    assert row.locator("a.play").get_attribute("href") == f"{CAMERA}/{segment.name}"
    assert row.locator("a.download").get_attribute("href") == f"{CAMERA}/{segment.name}.mkv"

    row.locator("a.play").click()
    page.wait_for_url(player_url(servers.plain, segment.name))
    wait_drawn(page, 1)
    length_ms = page.evaluate("() => window.camstreamPlayer.index.length_s * 1000")
    assert page.evaluate("() => window.camstreamPlayer.index.t") == segment.t

    # Sample the canvas until the end, timing each sample by the test's own clock.
    samples: list[tuple[float, dict]] = []
    deadline = time.monotonic() + length_ms / 1000 + 10
    while time.monotonic() < deadline:
        before = time.monotonic()
        now = sample(page)
        samples.append(((before + time.monotonic()) / 2, now))
        if now["state"] == "ended":
            break
        page.wait_for_timeout(25)  # the sampling interval, not a synchronisation
    states = [now["state"] for _, now in samples]
    assert states[-1] == "ended", states
    assert set(states) <= {"playing", "buffering", "ended"}, states

    frames = [now["frame"] for _, now in samples]
    assert frames == sorted(frames), frames  # forward only
    assert frames[-1] == segment.last
    assert frames[-1] - frames[0] >= 20, frames
    assert len(set(frames)) >= 15, frames  # seen drawn one after the other, not jumped to
    for _, now in samples:
        assert_shows(segment, now)
        if now["state"] == "playing":
            # The frame drawn keeps up with the clock.
            assert 0 <= now["position"] - now["time"] < 300, now

    # The clock runs at the recorded pace: media time against the test's wall time.
    playing = [(wall, now) for wall, now in samples if now["state"] == "playing"]
    (wall0, first), (wall1, last) = playing[0], playing[-1]
    assert wall1 - wall0 >= 1.5, (wall0, wall1)
    ratio = (last["position"] - first["position"]) / 1000 / (wall1 - wall0)
    assert 0.75 <= ratio <= 1.25, ratio
    assert abs(samples[-1][1]["position"] - length_ms) <= 1


def test_autoplay_0_waits_then_play_pause_resume(servers: Servers, page) -> None:
    segment = servers.segment
    page.goto(player_url(servers.plain, segment.name, "?autoplay=0"))
    wait_drawn(page, 1)
    wait_state(page, "paused")
    still = assert_settled_at(page, segment, 0)
    assert still["frame"] == 0 and still["position"] == 0
    wait_animation_frames(page)
    assert sample(page) == still  # nothing moved, nothing drawn again
    assert page.locator("#play").text_content() == "play"

    page.click("#play")
    wait_state(page, "playing")
    wait_frame_at_least(page, 3)
    assert page.locator("#play").text_content() == "pause"

    page.click("#play")  # pause
    paused = paused_now(page)
    assert 3 <= paused["frame"] < segment.last, paused
    paused = assert_settled_at(page, segment, paused["position"])
    wait_animation_frames(page)
    assert sample(page) == paused
    assert page.locator("#play").text_content() == "play"

    page.click("#play")  # resume where it was
    wait_state(page, "playing")
    wait_frame_at_least(page, paused["frame"] + 3)
    now = sample(page)
    assert_shows(segment, now)
    assert now["position"] > paused["position"]


def test_space_toggles_play(servers: Servers, page) -> None:
    segment = servers.segment
    page.goto(player_url(servers.plain, segment.name, "?autoplay=0"))
    wait_state(page, "paused")
    page.wait_for_function(SETTLED, timeout=10000)
    page.keyboard.press(" ")
    wait_state(page, "playing")
    wait_frame_at_least(page, 3)
    page.keyboard.press(" ")
    paused = assert_settled_at(page, segment, paused_now(page)["position"])
    wait_animation_frames(page)
    assert sample(page) == paused
    # With the focus on the play button (clicked), space still toggles once, not twice.
    page.click("#play")
    wait_state(page, "playing")
    page.keyboard.press(" ")
    wait_state(page, "paused")
    wait_animation_frames(page)
    assert sample(page)["state"] == "paused"


#: The slider dragged to its end, as a user does it: input events, then change.
DRAG_TO_END = """() => {
  const seek = document.getElementById("seek");
  seek.value = seek.max;
  seek.dispatchEvent(new Event("input", { bubbles: true }));
  seek.dispatchEvent(new Event("change", { bubbles: true }));
}"""


def test_seeking(servers: Servers, page) -> None:
    segment = servers.segment
    page.goto(player_url(servers.plain, segment.name, "?autoplay=0"))
    wait_state(page, "paused")
    assert_settled_at(page, segment, 0)
    length_ms = page.evaluate("() => window.camstreamPlayer.index.length_s * 1000")
    assert page.locator("#seek").get_attribute("max") == page.evaluate(
        "() => String(window.camstreamPlayer.index.length_s)"
    )

    # The slider, as a user drags it: input events, then change.
    for seconds in (2.05, 0.5):
        page.evaluate(
            """s => {
              const seek = document.getElementById("seek");
              seek.value = String(s);
              seek.dispatchEvent(new Event("input", { bubbles: true }));
              seek.dispatchEvent(new Event("change", { bubbles: true }));
            }""",
            seconds,
        )
        now = assert_settled_at(page, segment, seconds * 1000)
        assert now["state"] == "paused"
        assert now["frame"] > 0

    # The player's handle.
    for ms in (3000, segment.t[7], segment.t[7] - 1, 0):
        page.evaluate("ms => window.camstreamPlayer.seek(ms)", ms)
        assert_settled_at(page, segment, ms)

    # The arrow keys, 5 seconds on or back (clamped to the segment).
    page.evaluate("() => window.camstreamPlayer.seek(300)")
    assert_settled_at(page, segment, 300)
    page.keyboard.press("ArrowRight")
    assert length_ms < 5300  # a segment is at most 4 s long: clamped to its end, which ends it
    now = assert_settled_at(page, segment, length_ms)
    assert now["frame"] == segment.last and now["state"] == "ended", now
    page.keyboard.press("ArrowLeft")
    now = assert_settled_at(page, segment, max(0, length_ms - 5000))
    assert now["frame"] == 0 and now["state"] == "paused", now

    # Seeking to the end while playing ends playback on the last frame.
    page.click("#play")
    wait_state(page, "playing")
    page.evaluate("ms => window.camstreamPlayer.seek(ms)", length_ms)
    wait_state(page, "ended")
    page.wait_for_function(SETTLED, timeout=10000)
    now = sample(page)
    assert now["frame"] == segment.last and now["position"] == round(length_ms), now
    assert_shows(segment, now)
    assert page.locator("#play").text_content() == "replay"
    # ...and so does the slider dragged to its end.
    page.click("#play")  # replay from the start
    wait_state(page, "playing")
    wait_frame_at_least(page, 1)
    page.evaluate(DRAG_TO_END)
    wait_state(page, "ended")
    page.wait_for_function(SETTLED, timeout=10000)
    assert sample(page)["frame"] == segment.last
    # Paused, too: the slider snaps to 0.01 s steps, so its last one (short of a
    # length that is not a whole number of steps) must still be the end.
    page.evaluate("() => window.camstreamPlayer.seek(300)")
    assert_settled_at(page, segment, 300)
    page.evaluate(DRAG_TO_END)
    wait_state(page, "ended")
    page.wait_for_function(SETTLED, timeout=10000)
    assert sample(page)["frame"] == segment.last


def test_start_at_t(servers: Servers, page, new_page) -> None:
    segment = servers.segment
    page.goto(player_url(servers.plain, segment.name, "?t=2.5&autoplay=0"))
    wait_state(page, "paused")
    now = assert_settled_at(page, segment, 2500)
    assert now["frame"] == segment.frame_at(2500) > 0
    assert now["drawn"] == 1  # frame 0 was never drawn first

    # Playing from there: the first frame drawn is the one due at 2.5 s.
    playing = new_page()
    playing.add_init_script(
        """
        window.__firstFrame = null;
        new MutationObserver((records) => {
          for (const r of records) {
            if (window.__firstFrame === null && r.target.dataset.frame !== undefined) {
              window.__firstFrame = Number(r.target.dataset.frame);
            }
          }
        }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-frame"] });
        """
    )
    playing.goto(player_url(servers.plain, segment.name, "?t=2.5"))
    wait_frame_at_least(playing, segment.frame_at(2500) + 2)
    # (A frame whose decoding falls behind the clock is skipped: allow for a slow first one.)
    first = playing.evaluate("() => window.__firstFrame")
    assert segment.frame_at(2500) <= first <= segment.frame_at(3000), first


def test_download(servers: Servers, page) -> None:
    segment = servers.segment
    page.goto(player_url(servers.plain, segment.name))
    link = page.locator("#download")
    assert link.get_attribute("download") is not None
    url = link.evaluate("a => a.href")
    assert url == f"{servers.plain.url}recordings/{CAMERA}/{segment.name}.mkv"
    on_disk = segment.path.read_bytes()

    status, headers, body = fetch(url)
    assert status == 200
    assert headers["Content-Type"] == "video/x-matroska"
    assert headers["Content-Disposition"].startswith("attachment")
    assert f'filename="{CAMERA}-{segment.name}.mkv"' in headers["Content-Disposition"]
    assert body == on_disk

    # A frame's JPEG, as the player asks for it.
    first, size = segment.offset[5], segment.size[5]
    status, headers, body = fetch(url, {"Range": f"bytes={first}-{first + size - 1}"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{first + size - 1}/{len(on_disk)}"
    assert body == on_disk[first : first + size]
    assert body[:2] == b"\xff\xd8"
    status, _, body = fetch(url, {"Range": "bytes=-100"})
    assert status == 206 and body == on_disk[-100:]


@pytest.mark.alone  # played within the 1.5 s left before the segment ends
def test_the_segment_being_written_plays(servers: Servers, page) -> None:
    recorder = servers.plain

    def playable(s: dict) -> bool:
        # A second of frames already, and time left before the segment ends (and is renamed).
        end = (math.floor(s["start"] / SEGMENT_S) + 1) * SEGMENT_S
        return s["recording"] and (s["length_s"] or 0) >= 1.0 and end - time.time() >= 1.5

    found = recorder.wait_for(playable, "segment being written with a second of frames", timeout_s=10)
    assert recorder.file(found["name"]).name.endswith(".mkv.part")
    page.goto(recorder.url + "recordings/")
    row = page.locator(f'tr.segment.recording[data-segment="{found["name"]}"]')
    assert row.locator(".badge").text_content() == "recording"
    row.locator("a.play").click()
    page.wait_for_url(player_url(recorder, found["name"]))
    wait_drawn(page, 5)
    now = sample(page)
    assert now["state"] in ("playing", "buffering", "ended")
    assert page.evaluate("() => window.camstreamPlayer.index.recording") is True
    # The file only grows: its frames so far are where they were.
    segment = decode(recorder.file(found["name"]))
    assert now["frame"] >= 4
    assert_shows(segment, now)


def test_token_is_passed_on(servers: Servers, page) -> None:
    recorder = servers.guarded
    found = recorder.wait_for(
        lambda s: not s["recording"] and (s["length_s"] or 0) >= 1.0, "finished segment of a second"
    )
    segment = decode(recorder.file(found["name"]))

    page.goto(f"{recorder.url}recordings/?token={TOKEN}")
    link = page.locator(f'tr.segment[data-segment="{segment.name}"] a.play')
    assert link.get_attribute("href") == f"{CAMERA}/{segment.name}?token={TOKEN}"
    link.click()
    page.wait_for_url(player_url(recorder, segment.name, f"?token={TOKEN}"))
    wait_frame_at_least(page, 3)
    assert_shows(segment, sample(page))
    # What the player's page fetched: itself, its files and the segment (its resource timing).
    requests = page.evaluate(
        "() => [location.href, ...performance.getEntriesByType('resource').map((e) => e.name)]"
    )
    fetched = [u for u in requests if u.startswith(recorder.url)]
    assert any(f"/{segment.name}.json" in u for u in fetched), fetched
    assert any(f"/{segment.name}.mkv" in u for u in fetched), fetched
    assert all(f"token={TOKEN}" in u for u in fetched), fetched
    assert f"token={TOKEN}" in page.locator("#download").evaluate("a => a.href")

    # Without the token: nothing.
    for path in ("recordings/", f"{CAMERA}/{segment.name}", f"{CAMERA}/{segment.name}.json"):
        url = recorder.url + ("" if path.startswith("recordings/") else "recordings/") + path
        assert fetch(url)[0] == 401, url
    assert fetch(f"{recorder.url}recordings/{CAMERA}/{segment.name}.mkv")[0] == 401
    assert fetch(f"{recorder.url}recordings/{CAMERA}/{segment.name}?token=WRONGTOKEN")[0] == 401
