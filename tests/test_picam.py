"""The picamera2 camera (cameras/picam.py) against the fake picamera2 package in
tests/fake_picamera2, which mirrors the real library's recording API."""

from __future__ import annotations

import importlib
import io
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image

from cameras import CameraConfig, create_camera
from cameras.picam import LatestJpeg, PiCamera, quality_preset
from frame import CameraError
from harness.colours import nearest_colour
from tests.camera_polling import live_frames, wait_for
from tests.conftest import ROOT
from tests.sources import forget_picamera2, use_fake_picamera2


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake package on sys.path for this test only; yields its recorded state."""
    yield use_fake_picamera2(monkeypatch)
    forget_picamera2()


@pytest.fixture
def cameras(fake: Any) -> Iterator[Callable[..., PiCamera]]:
    """``cameras(**config)`` builds a camera (not started); all are stopped after the test."""
    made: list[PiCamera] = []

    def make(**config: Any) -> PiCamera:
        camera = create_camera("picamera2", CameraConfig(**config))
        assert isinstance(camera, PiCamera)
        made.append(camera)
        return camera

    yield make
    for camera in made:
        camera.stop()


def camera_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_records_with_the_mjpeg_encoder_as_the_examples_do(fake, cameras):
    camera = cameras(width=320, height=240, fps=30, quality=80)
    camera.start()
    frames = live_frames(camera, 6)
    assert camera.online
    colours = []
    for frame in frames:
        image = Image.open(io.BytesIO(frame.jpeg))
        assert image.format == "JPEG" and image.size == (320, 240) == (frame.width, frame.height)
        colours.append(nearest_colour(image.convert("RGB").getpixel((5, 5))))
    assert all(a != b for a, b in itertools.pairwise(colours)), "each frame is a new picture"
    camera.stop()

    assert fake.names() == [
        "Picamera2",
        "create_video_configuration",
        "configure",
        "MJPEGEncoder",
        "FileOutput",
        "start_recording",
        "start_encoder",
        "start",
        "start_preview",  # the event loop (a NULL preview)
        "stop_preview",  # first: stop() needs a live event loop, unless there is none
        "stop_recording",
        "stop",
        "stop_encoder",
        "close",
        "stop",  # close() stops the camera, already stopped
    ]
    (created,) = fake.arguments("create_video_configuration")
    assert created["main"] == {"size": (320, 240)}
    assert created["controls"] == {"FrameRate": 30.0}
    (configured,) = fake.arguments("configure")
    assert configured["camera_config"]["main"]["size"] == (320, 240)
    (recording,) = fake.arguments("start_recording")
    encoders = importlib.import_module("picamera2.encoders")
    outputs = importlib.import_module("picamera2.outputs")
    assert type(recording["encoder"]) is encoders.MJPEGEncoder
    assert isinstance(recording["output"], outputs.FileOutput)
    assert isinstance(recording["output"].fileoutput, LatestJpeg)
    assert recording["quality"] is encoders.Quality.HIGH
    assert recording["config"] is None  # configured beforehand, as the examples do
    assert fake.acquired == set()


@pytest.mark.parametrize(
    ("quality", "preset"),
    [
        (1, "VERY_LOW"),
        (20, "VERY_LOW"),
        (21, "LOW"),
        (40, "LOW"),
        (41, "MEDIUM"),
        (60, "MEDIUM"),
        (61, "HIGH"),
        (80, "HIGH"),
        (81, "VERY_HIGH"),
        (100, "VERY_HIGH"),
    ],
)
def test_quality_maps_to_the_library_presets(quality, preset):
    assert quality_preset(quality) == preset


def test_quality_reaches_the_encoder(fake, cameras):
    made = {}
    for quality in (10, 95):
        camera = cameras(width=640, height=480, fps=30, quality=quality)
        camera.open()  # on this thread: open/capture/close are the driver thread's calls
        try:
            made[quality] = camera.capture()
        finally:
            camera.close()
    low, high = (args["quality"].name for args in fake.arguments("start_recording"))
    assert (low, high) == ("VERY_LOW", "VERY_HIGH")
    encoders = [args["encoder"] for args in fake.arguments("start_recording")]
    assert encoders[0].bitrate < encoders[1].bitrate  # the library scaled the preset to a bitrate
    assert len(made[10][0]) < len(made[95][0])
    assert fake.acquired == set()


def test_the_output_keeps_only_the_newest_frame(fake):
    outputs = importlib.import_module("picamera2.outputs")
    latest = LatestJpeg()
    output = outputs.FileOutput(latest)
    output.start()
    assert latest.wait_newer(0, 0.0) is None
    reused = bytearray(b"\xff\xd8first")
    output.outputframe(reused, keyframe=True, timestamp=0)
    reused[:] = b"overwritten by the encoder"
    output.outputframe(b"\xff\xd8second", True, 33_000, None, False)
    output.outputframe(b"\xff\xd8third", True, 66_000)
    assert latest.latest() == (3, b"\xff\xd8third")
    assert latest.wait_newer(0, 0.0) == (3, b"\xff\xd8third")
    assert latest.wait_newer(3, 0.01) is None
    assert latest.wait_newer(1, 5.0) == (3, b"\xff\xd8third")
    # A frame kept is a copy: the encoder may reuse its buffer.
    first = LatestJpeg()
    first.write(reused)
    _count, kept = first.latest()
    reused[:] = b"changed"
    assert kept == b"overwritten by the encoder" and isinstance(kept, bytes)
    # wake() releases a waiter at once.
    latest.wake()
    started = time.monotonic()
    assert latest.wait_newer(3, 30.0) is None
    assert time.monotonic() - started < 1.0


def test_stop_releases_the_camera_for_another_process(fake, cameras):
    first = cameras(width=160, height=120, fps=30)
    first.start()
    live_frames(first, 2)
    assert fake.acquired == {0}
    other = cameras(width=160, height=120, fps=30)
    other.retry_initial_s = other.retry_max_s = 0.05
    other.start()  # another process, while the first holds the camera
    error = wait_for(lambda: other.error, what="busy")
    assert error == "cannot open the Pi camera 0: Camera __init__ sequence did not complete."
    other.stop()

    first.stop()
    first.stop()  # idempotent
    assert fake.acquired == set()
    names = fake.names()
    assert names.index("stop_recording") < names.index("close")
    again = cameras(width=160, height=120, fps=30)
    again.start()
    live_frames(again, 2)
    assert again.online


def test_a_camera_that_stops_sending_is_reopened(fake, cameras, caplog):
    camera = cameras(width=160, height=120, fps=30)
    camera.frame_timeout_s = camera.first_frame_timeout_s = 0.2
    camera.retry_initial_s, camera.retry_max_s = 0.05, 0.1
    camera.start()
    before = live_frames(camera, 3)
    fake.delivering.clear()  # the ribbon cable comes loose
    error = wait_for(lambda: not camera.online and camera.error, what="offline")
    assert error == "the Pi camera 0 is sending no frames"
    wait_for(lambda: not camera.latest().live, what="a no-signal picture")
    opened = fake.names().count("Picamera2")
    wait_for(lambda: fake.names().count("Picamera2") >= opened + 2, what="reopened")
    assert camera.error == "the Pi camera 0 is sending no frames"  # never "busy": each attempt released it
    fake.delivering.set()
    live_frames(camera, 3, after_seq=before[-1].seq)
    assert camera.online and camera.error is None
    assert fake.names().count("Picamera2") == fake.names().count("close") + 1
    assert sum("is sending no frames" in w for w in camera_warnings(caplog)) == 1


@pytest.fixture
def encoder_fault(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Callable[[int | None], None]:
    """``encoder_fault(n)``: the fake's encoder fails after ``n`` more good frames, until
    ``encoder_fault(None)`` (the fake's fault file, written whole)."""
    path = tmp_path / "encoder-fault"
    monkeypatch.setenv("FAKE_PICAMERA2_FAULT_FILE", str(path))

    def set_fault(good_frames: int | None) -> None:
        if good_frames is None:
            path.unlink()
            return
        ready = path.with_suffix(".new")
        ready.write_text(str(good_frames))
        ready.rename(path)

    return set_fault


def test_the_fake_hangs_in_stop_once_its_event_loop_died_as_the_library_does(
    fake, encoder_fault, monkeypatch
):
    """What the driver's close works around, as the real library behaves: an encoder's
    exception ends the event loop, and stop() then waits for that loop (the real one
    for ever, the fake FOREVER_S); with the loop stopped first, stop() returns."""
    library = importlib.import_module("picamera2")
    module = importlib.import_module("picamera2.picamera2")
    encoders = importlib.import_module("picamera2.encoders")
    outputs = importlib.import_module("picamera2.outputs")
    monkeypatch.setattr(module, "FOREVER_S", 0.3)
    for stop_preview_first in (False, True):
        picam2 = library.Picamera2(0)
        picam2.configure(picam2.create_video_configuration(main={"size": (64, 48)}))
        latest = LatestJpeg()
        picam2.start_recording(encoders.MJPEGEncoder(), outputs.FileOutput(latest))
        assert latest.wait_newer(0, 5) is not None
        encoder_fault(2)
        wait_for(lambda: fake.arguments("process_requests failed"), what="the event loop's death")
        (failed,) = fake.arguments("process_requests failed")[-1:]
        assert isinstance(failed["error"], OSError) and failed["error"].strerror == "Input/output error"
        if stop_preview_first:
            picam2.stop_preview()
            picam2.stop_recording()  # the camera stopped on this thread
        else:
            with pytest.raises(TimeoutError):
                picam2.stop_recording()  # waits for a loop that is gone
            picam2.stop_preview()
            picam2.stop_recording()
        picam2.close()
        encoder_fault(None)
    assert fake.acquired == set()


def test_an_encoder_failing_mid_stream_is_released_and_reopened(fake, cameras, encoder_fault, caplog):
    camera = cameras(width=160, height=120, fps=30)
    camera.frame_timeout_s = camera.first_frame_timeout_s = 0.2
    camera.retry_initial_s, camera.retry_max_s = 0.05, 0.1
    camera.start()
    before = live_frames(camera, 3)
    encoder_fault(3)
    error = wait_for(lambda: not camera.online and camera.error, what="offline")
    assert error == "the Pi camera 0 is sending no frames"
    wait_for(lambda: not camera.latest().live, what="a no-signal picture")
    # Each attempt releases the camera (never "busy"), though its event loop died.
    opened = fake.names().count("Picamera2")
    wait_for(lambda: fake.names().count("Picamera2") >= opened + 2, what="reopened twice")
    assert camera.error == "the Pi camera 0 is sending no frames"
    wait_for(lambda: fake.encoder_faults >= 3, what="the reopened cameras' encoders failing too")
    encoder_fault(None)
    live_frames(camera, 3, after_seq=before[-1].seq)
    assert camera.online and camera.error is None
    started = time.monotonic()
    camera.stop()
    assert time.monotonic() - started < 1.0
    assert fake.acquired == set()
    assert fake.names().count("Picamera2") == fake.names().count("close")
    assert sum("is sending no frames" in w for w in camera_warnings(caplog)) == 1


def test_the_camera_number_comes_from_the_source(fake, cameras):
    fake.cameras = 2
    camera = cameras(source="1", width=160, height=120)
    camera.start()
    live_frames(camera, 1)
    assert fake.arguments("Picamera2") == [{"camera_num": 1}]
    with pytest.raises(CameraError, match="--source front: the picamera2 camera takes a camera number"):
        create_camera("picamera2", CameraConfig(source="front"))


def test_missing_picamera2_is_one_clear_line(monkeypatch):
    forget_picamera2()
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 now raises ImportError
    with pytest.raises(CameraError) as caught:
        create_camera("picamera2", CameraConfig())
    message = str(caught.value)
    assert "\n" not in message
    assert "only on a Raspberry Pi" in message
    assert "sudo apt install python3-picamera2" in message
    assert "--system-site-packages" in message


@pytest.mark.slow
def test_cli_without_picamera2_exits_2_with_one_line(tmp_path):
    # A picamera2 that cannot be imported, as on a machine without libcamera.
    broken = tmp_path / "site" / "picamera2"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError(\"No module named 'libcamera'\")\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMSTREAM_", "CAMERA"))}
    env["PYTHONPATH"] = str(tmp_path / "site")
    result = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--camera", "picamera2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "picamera2 library, which exists only on a Raspberry Pi" in lines[0]
