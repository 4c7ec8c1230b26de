"""Recording onto a disk that fills: a real tmpfs of a few megabytes, mounted by the test,
under a real server recording the emulated camera while a viewer watches.

Without a size limit the disk fills: the recording stops with one WARNING, /status says
so, the viewer keeps its frame rate, every finished segment plays, the segment cut short
is finished at once, a little room freed does not make it flap, and recording resumes by
itself once the test frees room for a segment.  With ``--record-max-size`` below the
disk's size, retention keeps the disk from filling at all.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from recording.mkv import read_index
from tests.camera_polling import wait_for
from tests.media import centre_colours, packet_times, require_ffmpeg
from tests.mjpeg_client import StreamReader

MB = 1024 * 1024
DISK_BYTES = 3 * MB
SIZE = (320, 240)  # about 300 KB a second at 30 fps: the disk fills in about 10 s
FPS = 30
ARGS = ["--camera", "emulated", "--width", str(SIZE[0]), "--height", str(SIZE[1]), "--fps", str(FPS)]
FULL = "cannot record, the disk is full"


@pytest.fixture(scope="module", autouse=True)
def ffmpeg_present() -> None:
    require_ffmpeg()


@contextlib.contextmanager
def small_disk(path: Path, size_bytes: int = DISK_BYTES) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``path`` (made), unmounted after, whatever
    happened (lazily if something still holds it).  Needs root, as CI runs the tests."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path} (the test needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A disk of its own, 3 MB unless parametrized (indirect); asked for before
    ``start_server``, so the server has stopped before it is unmounted."""
    with small_disk(tmp_path / "disk", getattr(request, "param", DISK_BYTES)) as path:
        yield path


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def camera(server) -> dict:
    code, _, body = server.get("/status")
    assert code == 200
    return json.loads(body)


def recording(server) -> dict:
    return camera(server)["recording"]


def assert_plays(path: Path) -> int:
    """The file is finished (its index and sizes written), ffprobe lists its frames in
    time order, ffmpeg decodes every one of them, and each is a whole JPEG of the
    camera's size (Pillow decodes it to the last row); its frame count."""
    index = read_index(path)
    assert index.finished, path
    times = packet_times(path)
    assert len(times) == index.frame_count > 0, path
    assert all(b >= a for a, b in itertools.pairwise(times)), path  # two frames may share a ms
    assert len(centre_colours(path, SIZE)) == len(times), path
    data = path.read_bytes()
    for _, offset, size in index.frames:
        with Image.open(io.BytesIO(data[offset : offset + size])) as picture:
            picture.load()  # raises for a JPEG cut short
            assert picture.size == SIZE
    return len(times)


def warnings(server) -> list[str]:
    return [line for line in server.log_text().splitlines() if " WARNING " in line]


@pytest.mark.slow
@pytest.mark.alone  # the viewer's frame rate
@pytest.mark.parametrize("disk", [5 * MB], indirect=True)
def test_a_full_disk_stops_the_recording_once_and_it_resumes_when_there_is_room(
    disk: Path, start_server
) -> None:
    folder = disk / "emulated"
    ballast = disk / "ballast"  # not a segment: the test's, to free later
    ballast.write_bytes(bytes(600_000))
    server = start_server(*ARGS, "--record", str(disk), "--record-segment", "4")
    viewer = StreamReader(server.port)
    captured_from = (time.monotonic(), camera(server)["frames_captured"])
    states: list[str] = []

    kept = disk.parent / "kept"

    def state_is(wanted: str) -> dict | None:
        status = recording(server)
        if not states or states[-1] != status["state"]:
            states.append(status["state"])
        return status if status["state"] == wanted else None

    def not_recorded_for(seconds: float) -> None:
        """Wait until ``seconds`` of frames more have gone unrecorded, the state an error."""
        start = recording(server)["frames_not_recorded"]
        wait_for(
            lambda: state_is("error") and recording(server)["frames_not_recorded"] >= start + seconds * FPS,
            timeout_s=seconds + 30,
            what=f"{seconds} s of frames not recorded",
            poll_s=0.2,
        )

    try:
        # The disk fills: one WARNING, the state an error, the cut segment finished at once.
        failed = wait_for(lambda: state_is("error"), timeout_s=60, what="the disk full", poll_s=0.05)
        assert "No space left on device" in failed["error"]
        assert not list(folder.glob("*.part")), "the segment cut short is finished at once"
        finished = sorted(folder.glob("*.mkv"))
        assert len(finished) >= 3
        # A little room (600 KB: two seconds, not a segment) does not make it flap: no
        # attempt fills it a second later, with a WARNING each time.  Longer than a retry (10 s).
        ballast.unlink()
        not_recorded_for(12)
        assert free_bytes(disk) >= 600_000
        assert [w for w in warnings(server) if FULL in w] == warnings(server)
        assert len(warnings(server)) == 1, warnings(server)
        assert "cut short by a write error" in server.log_text()
        # Room again (the test deletes the oldest segments, kept elsewhere to be played after
        # the viewer is done): recording resumes by itself.
        kept.mkdir()
        for path in finished[:-1]:
            shutil.move(path, kept / path.name)
        resumed = wait_for(lambda: state_is("recording"), timeout_s=30, what="recording again", poll_s=0.05)
        assert resumed["error"] is None
        assert len(warnings(server)) == 1, warnings(server)
        assert "emulated: recording again" in server.log_text()
        segments = resumed["segments_recorded"]
        wait_for(
            lambda: recording(server)["segments_recorded"] > segments,
            timeout_s=10,
            what="a new segment",
            poll_s=0.05,
        )
        parts = list(viewer.parts)
        captured_to = (time.monotonic(), camera(server)["frames_captured"])
    finally:
        viewer.close()
    assert states == ["recording", "error", "recording"], states
    # The viewer kept the camera's rate all along: the fill, the error, the resumption.
    span_s = parts[-1].arrived - parts[0].arrived
    assert span_s > 30
    fps = (len(parts) - 1) / span_s
    made = (captured_to[1] - captured_from[1]) / (captured_to[0] - captured_from[0])
    assert fps >= 29, f"{fps:.2f} fps over {span_s:.1f} s (the camera made {made:.2f} a second)"
    gaps = [b.arrived - a.arrived for a, b in itertools.pairwise(parts)]
    assert max(gaps) < 0.5, f"the viewer waited {max(gaps):.2f} s for a frame"
    # A clean stop finishes the segment being written.  Every segment plays, the one cut
    # short included (it ends at its last whole second).
    assert server.stop() == 0
    assert not list(folder.glob("*.part"))
    left = sorted(folder.glob("*.mkv"))
    assert len(left) >= 2
    frames = [assert_plays(path) for path in [*sorted(kept.iterdir()), *left]]
    assert all(count <= 4 * FPS + 1 for count in frames), frames


@pytest.mark.slow
def test_a_size_limit_below_the_disk_keeps_it_from_filling(disk: Path, start_server) -> None:
    folder = disk / "emulated"
    limit = 1_000_000
    server = start_server(*ARGS, "--record", str(disk), "--record-segment", "2", "--record-max-size", "1M")
    lowest_free = DISK_BYTES
    states: set[str] = set()

    def written_more_than_the_disk_holds() -> bool:
        nonlocal lowest_free
        status = recording(server)
        states.add(status["state"])
        lowest_free = min(lowest_free, free_bytes(disk))
        return status["state"] != "recording" or status["bytes_recorded"] > 1.3 * DISK_BYTES

    wait_for(written_more_than_the_disk_holds, timeout_s=60, what="4 MB recorded", poll_s=0.05)
    status = recording(server)
    assert states == {"recording"}, states
    assert status["error"] is None and status["frames_not_recorded"] == 0
    assert status["segments_deleted"] >= 2
    # At most the limit and the segment being written (about 600 KB): never near full.
    assert lowest_free > DISK_BYTES - limit - 1_000_000, lowest_free
    assert server.stop() == 0
    assert not list(folder.glob("*.part"))
    assert sum(p.stat().st_size for p in folder.glob("*.mkv")) <= limit
    for path in sorted(folder.glob("*.mkv")):
        assert_plays(path)
    assert warnings(server) == []
