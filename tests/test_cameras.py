"""The drivers behind the contract: emulated, files, the threaded helper, the registry.

What every driver must do is tests/test_contract.py's; here is what is particular to each."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from cameras import DRIVERS, CameraConfig, create_camera
from cameras.base import ThreadedCamera
from cameras.emulated import EmulatedCamera, loop_length, render_frame
from cameras.files import FilesCamera
from frame import CameraError
from harness.colours import COLOURS, nearest_colour
from tests.camera_polling import live_frames, wait_for


def test_registry_builds_known_drivers_and_refuses_others():
    assert {"emulated", "files"} <= set(DRIVERS)
    assert isinstance(create_camera("emulated", CameraConfig()), EmulatedCamera)
    with pytest.raises(CameraError, match="unknown camera driver 'webcam9'"):
        create_camera("webcam9", CameraConfig())


def test_emulated_camera_moves():
    # Start, stop, seq and size are the contract suite's (tests/test_contract.py).
    camera = EmulatedCamera(CameraConfig(width=320, height=240, fps=60, quality=70))
    camera.start()
    try:
        frames = live_frames(camera, 5)
    finally:
        camera.stop()
    assert len({f.jpeg for f in frames}) == 5, "consecutive frames must differ"


def test_emulated_loop_is_encoded_once():
    camera = EmulatedCamera(CameraConfig(width=64, height=48, fps=5))
    count = loop_length(5)
    first = [camera.capture()[0] for _ in range(count)]
    second = [camera.capture()[0] for _ in range(count)]
    assert all(a is b for a, b in zip(first, second, strict=True))  # the stored bytes, not new ones
    assert len(set(first)) == count


def test_emulated_frame_renders_at_any_size():
    for size in ((16, 16), (1920, 1080)):
        data = render_frame(3, 10, *size, quality=50)
        assert Image.open(io.BytesIO(data)).size == size


def test_files_camera_serves_the_files_as_they_are(frames_dir):
    files = sorted(frames_dir.glob("*.jpg"))
    camera = FilesCamera(CameraConfig(source=str(frames_dir), fps=100))
    published: list = []
    got_eight = threading.Event()

    def sink(frame) -> None:  # every frame, on the driver's thread: none missed on a busy machine
        if frame.live and len(published) < 8:
            published.append(frame)
            if len(published) == 8:
                got_eight.set()

    camera.add_sink(sink)
    camera.start()
    try:
        assert got_eight.wait(10), f"only {len(published)} of 8 frames within 10 s"
    finally:
        camera.stop()
    frames = published
    originals = [p.read_bytes() for p in files]
    start = originals.index(frames[0].jpeg)
    for i, frame in enumerate(frames):
        assert frame.jpeg == originals[(start + i) % len(originals)]
        assert (frame.width, frame.height) == (160, 120)
    colours = [nearest_colour(Image.open(io.BytesIO(f.jpeg)).getpixel((5, 5))) for f in frames]
    assert colours[:2] == [start % len(COLOURS), (start + 1) % len(COLOURS)]


def test_files_camera_errors(tmp_path):
    with pytest.raises(CameraError, match="needs --source"):
        FilesCamera(CameraConfig())
    with pytest.raises(CameraError, match="not a folder"):
        FilesCamera(CameraConfig(source=str(tmp_path / "missing")))
    with pytest.raises(CameraError, match=r"no \.jpg"):
        FilesCamera(CameraConfig(source=str(tmp_path)))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(CameraError, match=r"bad\.jpg: cannot read it as a JPEG"):
        FilesCamera(CameraConfig(source=str(tmp_path)))


class FlakyCamera(ThreadedCamera):
    """Fails to open twice, then delivers; fails again when told to."""

    driver = "flaky"
    retry_initial_s = 0.01
    retry_max_s = 0.04

    def __init__(self) -> None:
        super().__init__(CameraConfig(fps=200))
        self.opens = 0
        self.closes = 0
        self.broken = threading.Event()

    def open(self) -> None:
        self.opens += 1
        if self.opens <= 2:
            raise CameraError("device is busy")

    def capture(self):
        if self.broken.is_set():
            raise CameraError("device unplugged")
        return b"\xff\xd8\xff\xd9", 1, 1

    def close(self) -> None:
        self.closes += 1


def test_a_failing_source_is_retried_and_reported(caplog):
    camera = FlakyCamera()
    camera.start()
    try:
        wait_for(lambda: camera.online)
        assert camera.latest().live
        assert camera.opens == 3 and camera.online and camera.error is None
        camera.broken.set()
        wait_for(lambda: not camera.online)
        assert camera.error == "device unplugged"
        assert camera.running  # still trying
        camera.broken.clear()
        wait_for(lambda: camera.online)
    finally:
        camera.stop()
    assert camera.closes == camera.opens - 2  # every opened source was released
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("device is busy" in w for w in warnings)
    assert sum("device unplugged" in w for w in warnings) == 1  # one line, not one per retry


def test_a_failing_source_shows_no_signal_then_live_frames_again():
    camera = FlakyCamera()
    camera.config = CameraConfig(name="garage", fps=200, width=320, height=240)
    camera.retry_initial_s = camera.retry_max_s = 0.3
    camera.no_signal_interval_s = 0.05
    camera.start()
    try:
        first = wait_for(lambda: (f := camera.latest()) is not None and f)
        # The first two opens fail: a "no signal" picture, not nothing.
        assert first.live is False and (first.width, first.height) == (320, 240)
        image = Image.open(io.BytesIO(first.jpeg))
        assert image.size == (320, 240)
        # It is redrawn while the outage lasts (the time on it moves on).
        wait_for(lambda: camera.latest().seq > first.seq and not camera.latest().live)
        live = wait_for(lambda: (f := camera.latest()) is not None and f.live and f)
        wait_for(lambda: camera.online)
        camera.broken.set()
        wait_for(lambda: not camera.latest().live)
        assert not camera.online
        camera.broken.clear()
        back = wait_for(lambda: (f := camera.latest()) is not None and f.live and f)
        assert back.seq > live.seq
    finally:
        camera.stop()


def test_no_signal_picture_names_the_camera():
    from cameras.nosignal import render_no_signal

    data = render_no_signal("garage", 640, 480, when=0)
    image = Image.open(io.BytesIO(data))
    assert image.size == (640, 480)
    assert render_no_signal("garage", 640, 480, when=0) == data
    assert render_no_signal("porch", 640, 480, when=0) != data
    assert render_no_signal("garage", 640, 480, when=3600) != data
    # Mostly dark with bright text somewhere.
    assert max(image.convert("L").getextrema()) > 150
