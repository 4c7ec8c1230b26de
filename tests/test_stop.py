"""Stopping a camera never blocks the IOLoop, and a camera never runs two capture threads.

A driver's release can hang (a wedged libcamera pipeline, a USB camera that
went away): the stop runs on a worker thread, so every other camera's viewers
keep their frame rate, and the camera starts again only once its old capture
thread has really ended.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from pathlib import Path

import pytest

from cameras.base import CameraConfig, ThreadedCamera
from feed import FrameFeed
from frame import CameraError
from harness.colours import jpeg
from tests.camera_polling import wait_for
from tests.fakes import FakeSubscriber
from tests.mjpeg_client import StreamReader
from tests.sources import FAKE_PICAMERA2


class StuckCamera(ThreadedCamera):
    """A camera whose release blocks until the test lets go (``release.set()``)."""

    driver = "stuck"

    def __init__(self, name: str = "stuck") -> None:
        super().__init__(CameraConfig(name=name, fps=50, width=64, height=48))
        self.release = threading.Event()
        self.closing = threading.Event()
        self.picture = jpeg((10, 200, 10))

    def capture(self) -> tuple[bytes, int, int]:
        return self.picture, 64, 48

    def close(self) -> None:
        self.closing.set()
        self.release.wait(30)


def capture_threads(camera: ThreadedCamera) -> list[threading.Thread]:
    name = f"camera-{camera.config.name}"
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_a_start_during_a_hung_stop_never_runs_a_second_capture_thread(caplog):
    camera = StuckCamera("twice")
    camera.stop_warn_s = 0.2  # the stop keeps waiting (and warning), it never gives up
    camera.start()
    wait_for(camera.latest, what="a first frame")
    stopper = threading.Thread(target=camera.stop, daemon=True)
    stopper.start()
    try:
        assert camera.closing.wait(10)
        # The stop waits for the driver past its warning interval (the old join
        # gave up here and forgot the thread)...
        wait_for(lambda: "still waiting" in caplog.text, what="the stop's warning")
        assert stopper.is_alive()
        # ...and meanwhile a start is refused rather than run beside the old thread.
        with pytest.raises(CameraError, match="still stopping"):
            camera.start()
        assert len(capture_threads(camera)) == 1
    finally:
        camera.release.set()
        stopper.join(10)
    assert not stopper.is_alive()
    assert capture_threads(camera) == []
    camera.release.clear()
    camera.start()
    try:
        assert len(capture_threads(camera)) == 1
    finally:
        camera.release.set()
        camera.stop()


@pytest.mark.gen_test(timeout=30)
async def test_the_feed_stops_a_camera_off_the_loop_and_restarts_it_after_the_stop():
    camera = StuckCamera("feedstop")
    feed = FrameFeed(camera, name="feedstop", idle_timeout_s=0.05)
    viewer = FakeSubscriber()
    viewer.auto_complete = True
    feed.subscribe(viewer)
    loop = asyncio.get_running_loop()

    async def until(predicate, what: str, timeout_s: float = 10.0) -> None:
        deadline = loop.time() + timeout_s
        while not predicate():
            assert loop.time() < deadline, what
            await asyncio.sleep(0.005)  # polling with a deadline

    await until(lambda: viewer.sent, "a frame delivered")
    feed.unsubscribe(viewer)
    await until(camera.closing.is_set, "the idle stop reaching the driver's release")
    # The loop is free while the release hangs: this coroutine runs, timers fire.
    started = loop.time()
    await asyncio.sleep(0.2)
    assert loop.time() - started < 0.5
    # A viewer arriving meanwhile is taken; the camera starts once the stop is over.
    again = FakeSubscriber()
    again.auto_complete = True
    feed.subscribe(again)
    assert feed.camera_starts == 1 and len(capture_threads(camera)) == 1
    camera.release.set()
    await until(lambda: feed.camera_starts == 2, "the restart after the stop")
    await until(lambda: again.sent, "a frame of the restarted camera")
    assert len(capture_threads(camera)) == 1
    done = feed.close()
    assert done is not None
    await asyncio.wait_for(done, 10)
    assert capture_threads(camera) == []


@pytest.mark.slow
@pytest.mark.alone  # no frame later than 0.5 s
def test_a_camera_hanging_on_release_does_not_stall_another_cameras_viewer(start_server, frames_dir: Path):
    """The measured bug: camera b (the fake picamera2, told to hang 3.5 s on
    release, which the old stop spent blocking the loop) idles out while a viewer
    watches camera a; a's frames keep coming."""
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKE_PICAMERA2), os.environ.get("PYTHONPATH")])),
        "FAKE_PICAMERA2_STOP_DELAY_S": "3.5",
    }
    server = start_server(
        "--camera",
        f"a=files:{frames_dir}",
        "--camera",
        "b=picamera2",
        "--fps",
        "30",
        "--idle-timeout",
        "0.3",
        env=env,
    )
    viewer_b = StreamReader(server.port, "/cameras/b/stream.mjpg")
    viewer_b.wait_for(3, 20)
    viewer_a = StreamReader(server.port, "/cameras/a/stream.mjpg")
    try:
        viewer_a.wait_for(10, 20)
        viewer_b.close()
        # b idles out 0.3 s later and its release hangs for 3.5 s.
        wait_for(lambda: "no viewer for 0.3 s" in server.log_text(), what="b's idle stop")
        seen = len(viewer_a.parts)
        parts = viewer_a.wait_for(seen + 60, 15)  # 2 s of frames at 30 fps
        arrivals = [p.arrived for p in parts[seen - 1 :]]
        worst_gap_s = max(b - a for a, b in itertools.pairwise(arrivals))
        logging.getLogger(__name__).info("camera a's largest gap between frames: %.3f s", worst_gap_s)
        assert worst_gap_s < 0.5, f"camera a's viewer waited {worst_gap_s:.2f} s for a frame"
    finally:
        viewer_a.close()
