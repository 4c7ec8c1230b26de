"""The driver contract (DESIGN.md section 2), checked for every driver of the registry.

Each driver of ``cameras.DRIVERS`` has a factory here that builds it through
``create_camera`` against a real source it can read on this machine: the
emulated picture, a folder of JPEGs, a video file written by OpenCV, the fake
picamera2 package, and an MJPEG upstream on loopback.  A driver added to the
registry without a factory fails every test of this file.  The one source of
the registry that captures nothing itself, an edge's ``nats`` camera (frames
another server published), has its own tests against a real nats-server
(:data:`OTHER_SOURCES`).

The failure tests break each source the way that driver can fail at run time;
the drivers that cannot (they read nothing once built) are tested for that
instead, so every driver runs every test and nothing is skipped.
"""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from cameras import DRIVERS, CameraConfig, create_camera
from cameras.base import ThreadedCamera
from frame import Frame
from harness.colours import COLOURS, jpeg, write_colour_frames
from tests.camera_polling import live_frames, wait_for
from tests.sources import FILE_SIZE, ScriptedUpstream, forget_picamera2, use_fake_picamera2, write_video

#: Frame rate asked of every camera (the opencv file plays at its own, FILE_FPS).
FPS = 30.0
#: Retry delays set on every camera: the growth from one to the other is measured.
RETRY_INITIAL_S = 0.05
RETRY_MAX_S = 0.4
#: The picture size of the loopback MJPEG upstream.
UPSTREAM_SIZE = (96, 72)


@dataclass
class Rig:
    """A built, not started camera; the picture size it delivers; how to break its source."""

    camera: ThreadedCamera
    size: tuple[int, int]
    #: Disturbs the source at run time (what :class:`Driver` names); the driver may or may not fail.
    disturb: Callable[[], None]


@dataclass
class Env:
    """What a factory may use: a folder, monkeypatch, and cleanups run after the camera stops."""

    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def config(driver: str, **options: object) -> CameraConfig:
    return CameraConfig(name=f"contract-{driver}", fps=FPS, width=160, height=120, **options)


def build_emulated(env: Env) -> Rig:
    camera = create_camera("emulated", config("emulated"))
    return Rig(camera, (160, 120), disturb=lambda: None)


def build_files(env: Env) -> Rig:
    folder = write_colour_frames(env.tmp_path / "frames")
    camera = create_camera("files", config("files", source=str(folder)))

    def empty_folder() -> None:
        for path in folder.iterdir():
            path.unlink()

    return Rig(camera, (160, 120), disturb=empty_folder)


def build_opencv(env: Env) -> Rig:
    video = write_video(env.tmp_path / "colours.avi")
    camera = create_camera("opencv", config("opencv", source=str(video)))
    return Rig(camera, FILE_SIZE, disturb=lambda: None)


def build_opencv_stream(env: Env) -> Rig:
    """A file does not fail once open (FFmpeg rewinds what it has read, even of a
    file emptied meanwhile): the failing opencv source is a network stream."""
    upstream = mjpeg_upstream(env)
    camera = create_camera("opencv", config("opencv", source=upstream.url("/stream.mjpg")))
    camera.read_timeout_ms = 1000
    return Rig(camera, UPSTREAM_SIZE, disturb=upstream.close)  # the stream goes away


def build_picamera2(env: Env) -> Rig:
    state = use_fake_picamera2(env.monkeypatch)
    env.cleanups.append(forget_picamera2)
    camera = create_camera("picamera2", config("picamera2"))
    camera.frame_timeout_s = camera.first_frame_timeout_s = 0.2
    return Rig(camera, (160, 120), disturb=state.delivering.clear)  # the cable comes loose


def mjpeg_upstream(env: Env) -> ScriptedUpstream:
    """An endless MJPEG stream of coloured JPEGs at FPS on loopback, closed after the test."""
    bodies = [jpeg(colour, UPSTREAM_SIZE) for colour in COLOURS]
    upstream = ScriptedUpstream(lambda headers: upstream.stream(bodies, 1 / FPS))
    env.cleanups.append(upstream.close)
    return upstream


def build_mjpeg(env: Env) -> Rig:
    upstream = mjpeg_upstream(env)
    camera = create_camera("mjpeg", config("mjpeg", source=upstream.url("/stream.mjpg")))
    return Rig(camera, UPSTREAM_SIZE, disturb=upstream.close)  # the upstream goes away


@dataclass(frozen=True)
class Driver:
    build: Callable[[Env], Rig]
    #: What the failure tests do to the source at run time, for their ids.
    disturbance: str
    #: The rig of the failure tests, whose ``disturb`` makes the driver fail;
    #: None for a driver that cannot fail at run time (it reads nothing once built).
    build_failing: Callable[[Env], Rig] | None


#: Sources of the registry that are not capture drivers (no ThreadedCamera), and where they are tested.
OTHER_SOURCES = {"nats": "tests/test_bus.py"}

FACTORIES: dict[str, Driver] = {
    "emulated": Driver(build_emulated, "nothing-to-disturb", None),
    "files": Driver(build_files, "folder-emptied-but-read-when-built", None),
    "opencv": Driver(build_opencv, "stream-goes-away", build_opencv_stream),
    "picamera2": Driver(build_picamera2, "sensor-stops-delivering", build_picamera2),
    "mjpeg": Driver(build_mjpeg, "upstream-goes-away", build_mjpeg),
}


def failure_params(fails: bool) -> list:
    return [
        pytest.param(name, id=f"{name}-{FACTORIES[name].disturbance}")
        for name in sorted(DRIVERS)
        if name in FACTORIES and (FACTORIES[name].build_failing is not None) is fails
    ]


def factory(name: str) -> Driver:
    if name not in FACTORIES:
        pytest.fail(f"driver {name!r} is in cameras.DRIVERS but has no factory in {__name__}.FACTORIES")
    return FACTORIES[name]


@pytest.fixture(params=sorted(set(DRIVERS) - set(OTHER_SOURCES)))
def rig(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    """The camera of one driver of the registry, with short retry delays; stopped after."""
    yield from make_rig(factory(request.param).build, tmp_path, monkeypatch)


@pytest.fixture
def failing_rig(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Rig]:
    """As :func:`rig`, on the source of that driver that can be made to fail."""
    build = factory(request.param).build_failing
    assert build is not None
    yield from make_rig(build, tmp_path, monkeypatch)


def make_rig(build: Callable[[Env], Rig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    env = Env(tmp_path, monkeypatch)
    built = build(env)
    camera = built.camera
    assert isinstance(camera, ThreadedCamera)
    camera.retry_initial_s, camera.retry_max_s = RETRY_INITIAL_S, RETRY_MAX_S
    camera.no_signal_interval_s = 0.02
    try:
        yield built
    finally:
        camera.stop()
        for cleanup in reversed(env.cleanups):
            cleanup()


def capture_threads(camera: ThreadedCamera) -> int:
    """Live threads running this camera's capture loop (named after the camera)."""
    return sum(t.name == f"camera-{camera.config.name}" and t.is_alive() for t in threading.enumerate())


def assert_valid(frame: Frame, size: tuple[int, int]) -> None:
    """A complete JPEG that Pillow decodes, of the size the frame says."""
    with Image.open(io.BytesIO(frame.jpeg)) as image:
        assert image.format == "JPEG"
        image.load()  # the whole picture decodes, not just the header
        assert image.size == (frame.width, frame.height) == size


def assert_no_new_frame(camera: ThreadedCamera, window_s: float) -> None:
    """Watch ``latest()`` for ``window_s``: its seq must not move (an observation
    window, not a synchronisation: nothing is expected to happen)."""
    before = camera.latest()
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        now = camera.latest()
        assert (now.seq if now else None) == (before.seq if before else None), "a frame after stop()"
        threading.Event().wait(0.005)


# -- the registry -----------------------------------------------------------------------
def test_every_registered_driver_has_a_factory_here():
    assert sorted(FACTORIES) == sorted(set(DRIVERS) - set(OTHER_SOURCES))


# -- start and stop ---------------------------------------------------------------------
def test_start_returns_without_waiting_for_a_frame(rig):
    camera = rig.camera
    gate = threading.Event()
    opened = camera.open

    def held_open() -> None:  # the source takes its time to open
        gate.wait(10)
        opened()

    camera.open = held_open  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        camera.start()
        took_s = time.monotonic() - started
        assert took_s < 0.5, f"start() took {took_s:.2f} s"
        assert camera.running and not camera.online
        assert camera.latest() is None
    finally:
        gate.set()
    live_frames(camera, 1)
    assert camera.online


def test_start_and_stop_are_idempotent(rig):
    camera = rig.camera
    camera.stop()  # before any start
    assert not camera.running and not camera.online and camera.latest() is None
    camera.start()
    camera.start()  # on a running camera: nothing
    assert camera.running
    live_frames(camera, 3)
    assert capture_threads(camera) == 1  # never two capture threads
    camera.stop()
    camera.stop()
    assert not camera.running and not camera.online
    assert capture_threads(camera) == 0


def test_after_stop_no_new_frames_and_a_restart_continues_the_seq(rig):
    camera = rig.camera
    camera.start()
    before = live_frames(camera, 5)
    camera.stop()
    assert not camera.running
    assert_no_new_frame(camera, window_s=max(0.2, 5 / FPS))
    camera.start()
    after = live_frames(camera, 3)  # any seq: the first ones must already be above
    assert after[0].seq > before[-1].seq, "seq started again after a restart"
    for frame in after:
        assert_valid(frame, rig.size)
    assert camera.online and camera.error is None


# -- the frames -------------------------------------------------------------------------
def test_live_frames_are_valid_jpegs_with_increasing_seq(rig):
    camera = rig.camera
    camera.start()
    started = time.time()
    frames = live_frames(camera, 6)
    assert all(a.seq < b.seq for a, b in itertools.pairwise(frames))
    for frame in frames:
        assert frame.live
        assert started - 1 <= frame.timestamp <= time.time()
        assert_valid(frame, rig.size)
    assert camera.online and camera.error is None
    assert camera.measured_fps >= 0


def test_latest_is_none_or_a_frame_and_never_blocks(rig):
    camera = rig.camera
    assert camera.latest() is None  # before start
    camera.start()
    live_frames(camera, 1)  # the driver thread is now capturing beside us
    started = time.perf_counter()
    seen = [camera.latest() for _ in range(1000)]
    took_s = time.perf_counter() - started
    # A coarse bound, not a benchmark: a thousand reads fit well inside one frame interval.
    assert took_s < 1 / FPS, f"1000 latest() calls took {took_s * 1000:.1f} ms"
    assert all(isinstance(frame, Frame) for frame in seen)
    seqs = [frame.seq for frame in seen]
    assert seqs == sorted(seqs)


# -- a failing source -------------------------------------------------------------------
# Alone: the gaps are seen by polling, to 10 ms; a starved poll sees one failure late and
# the next on time, which reads as a retry sooner than its delay.
@pytest.mark.alone
@pytest.mark.parametrize("failing_rig", failure_params(fails=True), indirect=True)
def test_a_failing_source_goes_offline_retries_with_a_growing_delay_and_shows_no_signal(failing_rig):
    camera = failing_rig.camera
    camera.start()
    before = live_frames(camera, 2)
    failures = camera.failures
    failing_rig.disturb()

    error = wait_for(lambda: not camera.online and camera.error, what="offline, with an error")
    assert isinstance(error, str) and error.strip()
    assert camera.running  # still trying
    blank = wait_for(lambda: (f := camera.latest()) is not None and not f.live and f, what='"no signal"')
    assert blank.seq > before[-1].seq
    with Image.open(io.BytesIO(blank.jpeg)) as image:
        assert image.format == "JPEG" and image.size == (blank.width, blank.height)

    # When each failure is seen: the gaps between retries grow towards retry_max_s.
    seen_at = []
    for n in range(1, 6):
        wait_for(lambda n=n: camera.failures >= failures + n, timeout_s=10, what=f"failure {n}")
        seen_at.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(seen_at)]
    delays = [min(RETRY_INITIAL_S * 2**i, RETRY_MAX_S) for i in range(len(gaps))]
    for gap, delay in zip(gaps, delays, strict=True):
        assert gap >= delay - 0.01, (gaps, delays)  # never sooner than the delay: no busy spin
    assert gaps[-1] - gaps[0] >= (RETRY_MAX_S - RETRY_INITIAL_S) / 2, gaps
    assert not camera.latest().live

    camera.stop()  # safe after a failure
    camera.stop()
    assert not camera.running and not camera.online
    assert capture_threads(camera) == 0


@pytest.mark.parametrize("rig", failure_params(fails=False), indirect=True)
def test_a_source_that_cannot_fail_at_run_time_keeps_delivering(rig):
    camera = rig.camera
    camera.start()
    before = live_frames(camera, 2)
    rig.disturb()
    after = live_frames(camera, 5, after_seq=before[-1].seq)
    assert all(frame.live for frame in after)
    assert camera.online and camera.error is None and camera.failures == 0
