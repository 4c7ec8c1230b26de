"""Hand-driven stand-ins: a camera you push frames into, a clock you advance,
and a subscriber whose writes complete when the test says so."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from cameras.base import Camera, CameraConfig
from feed import SubscriberGone
from frame import Frame


class FakeCamera(Camera):
    """A camera whose frames arrive only when the test calls :meth:`push`."""

    driver = "fake"

    def __init__(self, config: CameraConfig | None = None) -> None:
        super().__init__(config or CameraConfig(fps=30))
        self._running = False
        self._seq = 0
        self.starts = 0
        self.stops = 0

    def start(self) -> None:
        if not self._running:
            self._running = True
            self.starts += 1

    def stop(self) -> None:
        if self._running:
            self._running = False
            self.stops += 1

    @property
    def running(self) -> bool:
        return self._running

    def push(self, data: bytes | None = None, timestamp: float | None = None, *, live: bool = True) -> Frame:
        self._seq += 1
        frame = Frame(
            data if data is not None else b"frame-%d" % self._seq,
            self._seq,
            float(self._seq) if timestamp is None else timestamp,
            64,
            48,
            live,
        )
        self._publish_frame(frame)
        return frame


class ManualTimer:
    def __init__(self, callback: Callable[[], None], interval_ms: float) -> None:
        self.callback = callback
        self.interval_ms = interval_ms
        self._running = False

    def start(self) -> None:
        self._running = True

    def stop(self) -> None:
        self._running = False

    def is_running(self) -> bool:
        return self._running


class ManualClock:
    """Time stands still until :meth:`advance`, which runs the timeouts that fall due."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[ManualTimer] = []
        self.pending: dict[int, tuple[float, Callable[[], None]]] = {}
        self._next = 0
        #: Work handed to worker threads: run at once, unless ``hold_workers`` is
        #: set; then it waits in ``workers`` until :meth:`run_workers`.
        self.hold_workers = False
        self.workers: list[tuple[str, Callable[[], None], Callable[[], None]]] = []

    def run_off_loop(self, name: str, work: Callable[[], None], done: Callable[[], None]) -> None:
        self.workers.append((name, work, done))
        if not self.hold_workers:
            self.run_workers()

    def run_workers(self) -> None:
        """Finish the work handed to worker threads, in order, each then its ``done``."""
        while self.workers:
            _, work, done = self.workers.pop(0)
            work()
            done()

    def monotonic(self) -> float:
        return self.now

    def periodic(self, callback: Callable[[], None], interval_ms: float) -> ManualTimer:
        timer = ManualTimer(callback, interval_ms)
        self.timers.append(timer)
        return timer

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> int:
        self._next += 1
        self.pending[self._next] = (self.now + delay_s, callback)
        return self._next

    def cancel(self, handle: object) -> None:
        self.pending.pop(handle, None)  # type: ignore[call-overload]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for handle, (due, callback) in sorted(self.pending.items(), key=lambda kv: kv[1][0]):
            if due <= self.now and handle in self.pending:
                del self.pending[handle]
                callback()

    def running_timers(self) -> list[ManualTimer]:
        return [t for t in self.timers if t.is_running()]


def identity(frame: Frame) -> bytes:
    return frame.jpeg


class FakeSubscriber:
    """Records what it is sent; each write stays pending until :meth:`complete`."""

    kind = "fake"

    def __init__(self, encoder: Callable[[Frame], bytes] = identity, *, repeat_stale: bool = False) -> None:
        self.encoder = encoder
        self.repeat_stale = repeat_stale
        #: What accepts() answers (False: a rate cap holding frames back).
        self.accepting = True
        self.sent: list[bytes] = []
        self.futures: list[concurrent.futures.Future[Any]] = []
        self.gone = False
        self.closed_by_feed = False
        self.auto_complete = False

    def accepts(self) -> bool:
        return self.accepting

    def send(self, data: bytes) -> concurrent.futures.Future[Any]:
        if self.gone:
            raise SubscriberGone
        self.sent.append(data)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self.auto_complete:
            future.set_result(None)
        self.futures.append(future)
        return future

    def complete(self, error: BaseException | None = None) -> None:
        future = self.futures[-1]
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def feed_closed(self) -> None:
        self.closed_by_feed = True
