"""The one poll helper of the tests: wait for a condition with a deadline (a camera's
driver thread, a server process's log or /status), never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from cameras.base import Camera
from frame import Frame

T = TypeVar("T")

POLL_S = 0.002


def wait_for(
    predicate: Callable[[], T], timeout_s: float = 10.0, what: str = "condition", poll_s: float = POLL_S
) -> T:
    """The first truthy value of ``predicate()``, polled every ``poll_s`` until
    ``timeout_s``; AssertionError naming ``what`` after.  Blocks: not for a coroutine."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout_s} s")
        time.sleep(poll_s)  # polling with a deadline


def live_frames(camera: Camera, count: int, timeout_s: float = 10.0, after_seq: int = 0) -> list[Frame]:
    """``count`` distinct live frames (newer than ``after_seq``) as ``latest()`` shows them."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(frames)} of {count} live frames within {timeout_s} s")
        frame = camera.latest()
        fresh = frame is not None and frame.live and frame.seq > after_seq
        if fresh and (not frames or frame.seq != frames[-1].seq):
            frames.append(frame)
        time.sleep(POLL_S)  # polling a driver thread with a deadline
    return frames
