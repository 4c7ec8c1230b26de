"""The opencv camera (cameras/opencv.py) against real OpenCV: a video file the test
writes, this server's own MJPEG URL, a device that is not there, and the command line."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from cameras import CameraConfig, create_camera
from cameras.opencv import OpenCVCamera, parse_source
from frame import CameraError
from harness.colours import COLOURS, nearest_colour
from tests.camera_polling import live_frames, wait_for
from tests.conftest import ROOT
from tests.sources import FILE_FPS, FILE_FRAMES, FILE_SIZE, write_video


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "colours.avi")


@pytest.fixture
def cameras():
    made: list[OpenCVCamera] = []

    def make(**config: Any) -> OpenCVCamera:
        camera = create_camera("opencv", CameraConfig(**config))
        assert isinstance(camera, OpenCVCamera)
        made.append(camera)
        return camera

    yield make
    for camera in made:
        camera.stop()


def colour_of(jpeg: bytes) -> int:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    return nearest_colour(image.getpixel((image.width // 2, image.height // 2)))


def test_a_video_file_plays_at_its_own_rate_and_loops(video, cameras, caplog):
    camera = cameras(source=str(video), fps=100, quality=85)
    assert camera.config.fps == FILE_FPS  # the file's rate, not --fps
    assert camera.paced
    camera.start()
    started = time.monotonic()
    count = FILE_FRAMES * 2 + 6  # more than two passes of the file
    frames = live_frames(camera, count, timeout_s=20)
    elapsed = time.monotonic() - started
    assert camera.online and camera.error is None
    # The end of the file is not a failure (reopening after one would also show frames).
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
    # At 100 fps this would take 0.3 s; at the file's 20 fps it takes about 1.5 s.
    assert elapsed >= (count - 2) / FILE_FPS * 0.8
    for frame in frames:
        image = Image.open(io.BytesIO(frame.jpeg))
        assert image.format == "JPEG"
        assert image.size == FILE_SIZE == (frame.width, frame.height)
    colours = [colour_of(f.jpeg) for f in frames]
    steps = [(b - a) % len(COLOURS) for a, b in itertools.pairwise(colours)]
    # The picture changes frame to frame in the file's order (a frame may be
    # missed by polling, never shown twice), across the loop's seam too.
    assert all(step in (1, 2) for step in steps), colours
    assert steps.count(1) >= len(steps) - 3, colours
    assert set(colours) == set(range(len(COLOURS)))


def test_quality_is_used_for_encoding(video):
    sizes = {}
    for quality in (10, 95):
        camera = OpenCVCamera(CameraConfig(source=str(video), quality=quality))
        camera.open()  # on this thread: open/capture/close are the driver thread's calls
        try:
            data, width, height = camera.capture()
        finally:
            camera.close()
        assert (width, height) == FILE_SIZE
        sizes[quality] = len(data)
    assert sizes[10] < sizes[95]


def test_a_missing_file_fails_when_the_camera_is_built(tmp_path):
    with pytest.raises(CameraError, match=r"--source .*nothing\.avi: no such video file"):
        OpenCVCamera(CameraConfig(source=str(tmp_path / "nothing.avi")))
    not_video = tmp_path / "notes.avi"
    not_video.write_text("not a video")
    with pytest.raises(CameraError, match="OpenCV cannot read video frames from this file"):
        OpenCVCamera(CameraConfig(source=str(not_video)))


def test_sources_are_told_apart(tmp_path, video):
    assert parse_source(None).target == 0 and parse_source(None).kind == "device"
    assert (parse_source("2").kind, parse_source("2").target) == ("device", 2)
    assert parse_source(str(video)).kind == "file"
    stream = parse_source("rtsp://admin:secret@cam.local:554/h264")
    assert stream.kind == "stream" and stream.target == "rtsp://admin:secret@cam.local:554/h264"
    assert "secret" not in stream.label
    assert parse_source(str(tmp_path)).kind == "device"  # an existing non-file path, as /dev/video0


@pytest.mark.slow
def test_reads_this_servers_mjpeg_url(start_server, frames_dir, cameras):
    upstream = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "30")
    camera = cameras(source=upstream.url + "stream.mjpg")
    assert not camera.paced  # read() waits for the stream's next frame
    camera.start()
    frames = live_frames(camera, 8, timeout_s=20)
    assert camera.online
    for frame in frames:
        assert Image.open(io.BytesIO(frame.jpeg)).size == (160, 120) == (frame.width, frame.height)
    colours = [colour_of(f.jpeg) for f in frames]
    assert len(set(colours)) >= 3, colours  # the upstream's colours go round


@pytest.mark.slow
def test_a_stream_that_stops_is_reported_and_reopened(start_server, frames_dir, cameras, caplog):
    upstream = start_server("--camera", "files", "--source", str(frames_dir), "--fps", "30")
    camera = cameras(source=upstream.url + "stream.mjpg")
    camera.retry_initial_s, camera.retry_max_s = 0.2, 0.5
    camera.start()
    before = live_frames(camera, 3, timeout_s=20)
    upstream.stop()
    wait_for(lambda: not camera.online and camera.error, timeout_s=10, what="offline, with the error")
    upstream.start()
    live_frames(camera, 3, timeout_s=20, after_seq=before[-1].seq)
    assert camera.online and camera.error is None
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert 1 <= sum("opencv camera failed" in w for w in warnings) <= 2, warnings


def test_a_device_that_is_not_there_is_retried(cameras, caplog):
    camera = cameras(source="63")
    camera.retry_initial_s, camera.retry_max_s = 0.05, 0.1
    camera.start()
    error = wait_for(lambda: camera.error, what="the error")
    assert error == "cannot open camera device 63 (is it plugged in and free?)"
    assert not camera.online and camera.running
    wait_for(lambda: (f := camera.latest()) is not None and not f.live, what='a "no signal" picture')
    warnings = [r.getMessage() for r in caplog.records if "camera device 63" in r.getMessage()]
    assert len(warnings) == 1


class RecordingCapture:
    """Stands in for cv2.VideoCapture on a device: records what is asked of it."""

    made: list[RecordingCapture] = []

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.props: dict[int, float] = {}
        self.released = False
        RecordingCapture.made.append(self)

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray]:
        image = np.zeros(
            (int(self.props[cv2.CAP_PROP_FRAME_HEIGHT]), int(self.props[cv2.CAP_PROP_FRAME_WIDTH]), 3)
        )
        return True, image.astype(np.uint8)

    def release(self) -> None:
        self.released = True


def test_a_device_is_asked_for_the_configured_size_and_rate(monkeypatch):
    RecordingCapture.made = []
    monkeypatch.setattr(cv2, "VideoCapture", RecordingCapture)
    camera = OpenCVCamera(CameraConfig(source="1", width=320, height=240, fps=15))
    camera.open()
    try:
        data, width, height = camera.capture()
    finally:
        camera.close()
    (capture,) = RecordingCapture.made
    assert capture.args == (1,)
    assert capture.props[cv2.CAP_PROP_FRAME_WIDTH] == 320
    assert capture.props[cv2.CAP_PROP_FRAME_HEIGHT] == 240
    assert capture.props[cv2.CAP_PROP_FPS] == 15
    assert (width, height) == (320, 240) and Image.open(io.BytesIO(data)).size == (320, 240)
    assert capture.released


def test_missing_opencv_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    with pytest.raises(CameraError) as caught:
        create_camera("opencv", CameraConfig())
    message = str(caught.value)
    assert "\n" not in message
    assert "pip install opencv-python-headless" in message
    assert "pip install -e '.[opencv]'" in message


@pytest.mark.slow
def test_cli_refuses_a_missing_file_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--camera", "opencv", "--source", "/no/such/file.avi"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith(("CAMSTREAM_", "CAMERA"))},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(
        "--source /no/such/file.avi: no such video file (or give a device index such as 0, or a URL)"
    )
