"""The fan-out's own cost: nanoseconds per viewer per frame in FrameFeed, no sockets.

    taskset -c 0 .venv/bin/python bench/feed.py --viewers 500 --frames 400

A camera that makes a frame on demand and viewers whose ``send`` returns at
once (as a socket that takes the whole frame does): what is left is the
feed's loop over its viewers.  The best of ``--runs`` runs is printed, in
nanoseconds per viewer-frame (the best, because a shared machine only ever
adds time).  Runs in this process alone; nothing is opened.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cameras.base import Camera, CameraConfig  # noqa: E402
from feed import FrameFeed  # noqa: E402
from frame import Frame  # noqa: E402


class OnDemandCamera(Camera):
    driver = "bench"

    def __init__(self) -> None:
        super().__init__(CameraConfig(fps=30))
        self._frame: Frame | None = None
        self._running = False
        self._seq = 0

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        self._running = False

    def latest(self) -> Frame | None:
        return self._frame

    @property
    def running(self) -> bool:
        return self._running

    def make(self) -> None:
        self._seq += 1
        # Bytes of its own each time: a frame equal to the previous one is not sent again.
        self._frame = Frame(b"%099d" % self._seq, self._seq, 0.0, 1, 1)


def _wire(frame: Frame) -> bytes:
    return frame.jpeg


class InstantViewer:
    kind = "mjpeg"
    repeat_stale = False
    encoder = staticmethod(_wire)

    def accepts(self) -> bool:
        return True

    def send(self, data: bytes) -> None:
        return None

    def feed_closed(self) -> None:
        pass


class StillTimer:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def is_running(self) -> bool:
        return True


class StillClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def periodic(self, callback: object, interval_ms: float) -> StillTimer:
        return StillTimer()

    def call_later(self, delay_s: float, callback: object) -> None:
        return None

    def cancel(self, handle: object) -> None:
        pass


def measure(viewers: int, frames: int, runs: int) -> float:
    """The best run's nanoseconds per viewer-frame."""
    camera = OnDemandCamera()
    feed = FrameFeed(camera, clock=StillClock())  # type: ignore[arg-type]
    for _ in range(viewers):
        feed.subscribe(InstantViewer())
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(frames):
            camera.make()
            feed.tick()
        best = min(best, (time.perf_counter() - started) / (frames * viewers))
    return best * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=500)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    ns = measure(args.viewers, args.frames, args.runs)
    sys.stdout.write(f"{args.viewers} viewers: {ns:.0f} ns per viewer-frame in the feed\n")


if __name__ == "__main__":
    main()
