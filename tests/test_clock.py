"""The wall clock jumps under a real server: Debian's libfaketime, whose offset the test
changes while the server runs (``FAKETIME_TIMESTAMP_FILE``, read at every call).

Only the wall clock jumps, as when NTP or a person sets it: the monotonic clock runs on
(``FAKETIME_DONT_FAKE_MONOTONIC``), and files keep the times the kernel gave them
(``NO_FAKE_STAT``).  Set back an hour, then forward a day, while two cameras stream and
one records: frames keep coming at the camera's rate, no timer fires early or late
(idle stop, stalls, repeats, rate meters run on the monotonic clock), no segment is
overwritten or deleted, and the segments take the names the clock gives them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.colours import COLOURS, jpeg
from recording.mkv import MkvWriter, format_start
from recording.recorder import PART_SUFFIX, segment_name, start_of
from tests.camera_polling import wait_for
from tests.media import assert_plays, require_ffmpeg
from tests.mjpeg_client import StreamReader

FPS = 30
SIZE = (160, 120)
HOUR, DAY = 3600, 86400
LIBRARIES = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))


@pytest.fixture(scope="module", autouse=True)
def tools_present() -> None:
    require_ffmpeg()
    if not LIBRARIES:
        pytest.fail("libfaketime is missing: run scripts/test.sh, which installs Debian's faketime")


SHM = Path("/dev/shm")


class FakeClock:
    """The wall clock of the processes started with :attr:`env`: the real one plus an
    offset the test sets at any moment (libfaketime reads the file at every call)."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / "faketime.rc"
        self.set("+0")
        self.env = {
            "LD_PRELOAD": str(LIBRARIES[0]),
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "NO_FAKE_STAT": "1",
        }

    def set(self, offset: str) -> None:
        """``"+0"``, ``"-1h"``, ``"+1d"``: replaced whole, so no call reads half a file."""
        scratch = self.file.with_suffix(".new")
        scratch.write_text(offset + "\n")
        os.replace(scratch, self.file)


def shm_pids() -> set[int]:
    """The processes that libfaketime's shared memory in /dev/shm is named after."""
    return {int(p.name.rpartition("_")[2]) for p in SHM.glob("faketime_shm_*") if p.name[-1].isdigit()}


@pytest.fixture
def fake_clock(tmp_path: Path) -> Iterator[FakeClock]:
    """A :class:`FakeClock`; asked for before ``start_server``, so its servers have ended
    when it removes what libfaketime left in /dev/shm for those of them that could not
    exit properly (a stale file there breaks the next process with the same PID)."""
    before = shm_pids()
    yield FakeClock(tmp_path)
    for pid in shm_pids() - before:
        if not Path(f"/proc/{pid}").exists():
            for stale in (SHM / f"faketime_shm_{pid}", SHM / f"sem.faketime_sem_{pid}"):
                stale.unlink(missing_ok=True)


def status(server) -> dict:
    code, _, body = server.get("/status")
    assert code == 200
    return json.loads(body)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Files:
    """Every finished segment of a folder, with its bytes' digest when first seen."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: dict[str, str] = {}

    def look(self) -> None:
        for path in self.folder.glob("*.mkv"):
            if path.name not in self.seen:
                self.seen[path.name] = digest(path)

    def assert_untouched(self) -> None:
        """No segment seen has gone, and none has other bytes (none overwritten)."""
        for name, seen in self.seen.items():
            path = self.folder / name
            assert path.exists(), f"{name} was deleted"
            assert digest(path) == seen, f"{name} was overwritten"


@pytest.mark.slow
@pytest.mark.alone  # frame rates and the idle timer's delay
def test_streaming_and_recording_go_on_through_clock_jumps(
    tmp_path: Path, fake_clock: FakeClock, start_server
) -> None:
    clock = fake_clock
    config = tmp_path / "cameras.toml"
    config.write_text(
        '[cameras.yard]\ndriver = "emulated"\n\n[cameras.lobby]\ndriver = "emulated"\nrecord = false\n'
    )
    folder = tmp_path / "rec"
    server = start_server(
        *("--config", str(config), "--fps", str(FPS), "--width", str(SIZE[0]), "--height", str(SIZE[1])),
        *("--record", str(folder), "--record-segment", "2", "--record-max-age", "12h", "--idle-timeout", "4"),
        env=clock.env,
    )
    files = Files(folder / "yard")
    samples: list[dict] = []
    tick = threading.Event()  # never set: its wait spaces the samples

    def watch(seconds: float, until=None) -> dict:
        """Sample /status and the folder every 0.1 s for ``seconds`` (or until ``until(status)``)."""
        deadline = time.monotonic() + seconds
        while True:
            state = status(server)
            samples.append({"at": time.monotonic(), **state})
            files.look()
            if (until is not None and until(state)) or time.monotonic() > deadline:
                return state
            tick.wait(0.1)

    yard = StreamReader(server.port, "/cameras/yard/stream.mjpg")
    lobby = StreamReader(server.port, "/cameras/lobby/stream.mjpg")
    try:
        begun = time.monotonic()
        watch(3)
        clock.set("-1h")
        watch(4)
        lobby.close()  # its idle timer starts: 4 s, monotonic
        left_at = time.monotonic()
        watch(1)
        clock.set("+1d")  # a timer on the wall clock would fire at once here
        state = watch(15, until=lambda s: not s["cameras"]["lobby"]["running"])
        stopped_after_s = time.monotonic() - left_at
        assert not state["cameras"]["lobby"]["running"], "the idle camera never stopped"
        watch(3)
        parts = list(yard.parts)
    finally:
        yard.close()
        lobby.close()
    assert 3.5 <= stopped_after_s <= 8, (
        f"the idle camera stopped {stopped_after_s:.1f} s after its viewer left"
    )
    # The viewer of the recorded camera had its frames all along: (nearly) every one the
    # camera made, never a pause (a poll timer on the wall clock pauses for the hour).  The
    # bounds leave room for a busy machine; what they catch is frames stopping or a jump's
    # figures (a rate of 0 after a day, a pause of an hour).
    span_s = parts[-1].arrived - parts[0].arrived
    assert span_s > 12
    yard_before, yard_after = samples[0]["cameras"]["yard"], samples[-1]["cameras"]["yard"]
    captured = yard_after["frames_captured"] - yard_before["frames_captured"]
    assert len(parts) >= 0.75 * captured, (len(parts), captured)
    gaps = [b.arrived - a.arrived for a, b in itertools.pairwise(parts)]
    assert max(gaps) < 2, f"the viewer waited {max(gaps):.2f} s for a frame"
    # No timer saw the jumps: no restart, no stall, the rate meter steady.
    last = samples[-1]["cameras"]
    for name in ("yard", "lobby"):
        counters = {k: last[name][k] for k in ("camera_starts", "viewers_stalled", "camera_failures")}
        assert counters == {"camera_starts": 1, "viewers_stalled": 0, "camera_failures": 0}, (name, counters)
    steady = [s["cameras"]["yard"]["fps_measured"] for s in samples if s["at"] > begun + 1.5]
    assert min(steady) >= 5, f"the measured rate fell to {min(steady)}"  # on the wall clock: 0 at +1d
    assert {s["cameras"]["yard"]["recording"]["state"] for s in samples} == {"recording"}
    # The recording went on: nothing overwritten, nothing deleted (this run's segments are
    # aged on the monotonic clock, not by a clock that says a day has passed).
    assert last["yard"]["recording"]["segments_deleted"] == 0
    assert server.stop() == 0
    files.look()
    files.assert_untouched()
    assert not list((folder / "yard").glob("*" + PART_SUFFIX))
    # Segments of the three clocks: now, an hour ago, tomorrow.
    now = time.time()
    starts = [start_of(segment_name(name)) - now for name in files.seen]
    for offset in (0, -HOUR, DAY):
        assert any(abs(s - offset) < 60 for s in starts), (offset, sorted(starts))
    for name in files.seen:
        assert_plays(folder / "yard" / name, SIZE)


@pytest.mark.slow
def test_a_clock_set_back_over_what_was_recorded_overwrites_nothing(
    tmp_path: Path, fake_clock: FakeClock, start_server
) -> None:
    folder = tmp_path / "rec"
    camera = folder / "yard"
    camera.mkdir(parents=True)
    # An hour ago the camera recorded: a segment for every second of the next minute and a half
    # (an hour later), so that every name the clock set back gives is taken.
    hour_ago = float(int(time.time()) - HOUR - 2)
    old: dict[str, str] = {}
    for second in range(90):
        start = hour_ago + second
        path = camera / (format_start(start) + ".mkv")
        writer = MkvWriter(path, width=64, height=48, fps=10, start_time=start)
        for i in range(3):
            writer.add(jpeg(COLOURS[(second + i) % len(COLOURS)], (64, 48)), i * 100)
        writer.close()
        old[path.name] = digest(path)
    clock = fake_clock
    server = start_server(
        *("--camera", "yard=emulated", "--fps", str(FPS), "--width", str(SIZE[0]), "--height", str(SIZE[1])),
        *("--record", str(folder), "--record-segment", "2"),
        env=clock.env,
    )
    wait_for(lambda: status(server)["recording"]["segments_recorded"] >= 1, timeout_s=20, what="a segment")
    clock.set("-1h")
    before = status(server)["recording"]["segments_recorded"]
    wait_for(
        lambda: status(server)["recording"]["segments_recorded"] >= before + 3,
        timeout_s=30,
        what="three segments of the clock set back",
        poll_s=0.05,
    )
    assert server.stop() == 0
    for name, seen in old.items():
        assert digest(camera / name) == seen, f"{name} was overwritten"
    renamed = sorted(camera.glob("*-*.mkv"))
    assert len(renamed) >= 2, renamed
    for path in renamed:
        base = segment_name(path).rsplit("-", 1)[0]
        assert base + ".mkv" in old, path.name  # its own name was taken: it got the next
        assert_plays(path, SIZE)
    assert not list(camera.glob("*" + PART_SUFFIX))
