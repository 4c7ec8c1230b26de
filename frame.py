"""The data every room shares: a frame, the error of a source, and two small tools.

This module is the bottom of the house: every other module may import it, and
it imports nothing of the project's own.

* :class:`Frame`: one complete encoded picture with its ``seq`` and capture time.
* :class:`CameraError`: a source cannot be configured, opened or read.
* :class:`RateMeter`: frames per second, counted on one thread, read on another.
* :class:`Newest`: a mailbox of one, for a consumer thread that must only ever
  see the newest frame (never a backlog).
* :class:`Periodic`: a periodic callback on the IOLoop timed by the monotonic
  clock (Tornado's ``PeriodicCallback`` follows the wall clock).

Every interval and timeout is measured on the monotonic clock; the wall clock
(``time.time()``) is only for what is shown or stored as a time of day (a
frame's capture time, a segment's name), since NTP or a person may set it
back or forward by hours at any moment.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tornado.ioloop import IOLoop

T = TypeVar("T")

log = logging.getLogger(__name__)


class CameraError(Exception):
    """A camera cannot be configured, opened or read; the message is for people."""


@dataclass(frozen=True)
class Frame:
    """One complete encoded picture.

    ``seq`` is strictly increasing per camera (across restarts too), so a
    consumer can tell a new frame from one it has already seen.
    ``timestamp`` is the capture time in Unix seconds (``time.time()``).
    ``live`` is False for a picture the server made itself (the "no signal"
    picture shown while the source is failing).
    """

    jpeg: bytes
    seq: int
    timestamp: float
    width: int
    height: int
    live: bool = True


class RateMeter:
    """Events per second, measured over windows of at least ``window_s``.

    :meth:`tick` is called by one thread (a driver's, an encoder's, the
    bus's) for each event; :meth:`fps` may be read from any other: it reads
    two floats, never blocks, and says 0 once no event has come for
    ``stale_s``.  Monotonic seconds throughout.
    """

    __slots__ = ("_count", "_fps", "_last", "_start", "stale_s", "window_s")

    def __init__(self, window_s: float = 1.0, stale_s: float = 2.0) -> None:
        self.window_s = window_s
        self.stale_s = stale_s
        self.reset()

    def reset(self) -> None:
        """Start measuring afresh (a source that starts again)."""
        self._start = time.monotonic()
        self._count = 0
        self._fps = 0.0
        self._last = -1e18

    def tick(self, now: float | None = None) -> None:
        """Count one event at ``now`` (monotonic seconds; None: now)."""
        now = time.monotonic() if now is None else now
        self._last = now
        self._count += 1
        elapsed = now - self._start
        if elapsed >= self.window_s:
            self._fps = self._count / elapsed
            self._start = now
            self._count = 0

    def fps(self, now: float | None = None) -> float:
        """The rate of the last whole window, or 0.0 when no event came for ``stale_s``."""
        now = time.monotonic() if now is None else now
        return 0.0 if now - self._last > self.stale_s else self._fps


class Newest(Generic[T]):
    """A mailbox that holds one item: the newest put.

    Producers (:meth:`put`, any thread, never blocks) replace an item not yet
    taken (counted in :attr:`superseded`); the consumer takes it with
    :meth:`take` (non-blocking) or waits with :meth:`wait` (blocking, on the
    consumer's own thread).  :meth:`close` wakes a waiting consumer for good,
    until :meth:`open` again.  So a consumer slower than its producer always
    gets the newest item and memory holds one, whatever the rates.
    """

    def __init__(self) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._item: T | None = None
        self._closed = False
        #: Items replaced before the consumer took them.
        self.superseded = 0

    def put(self, item: T) -> bool:
        """Leave ``item`` for the consumer; True if the box was empty (a consumer
        that is woken by the producer must be woken now), False if it replaced
        an item not yet taken or the box is closed (the item is dropped)."""
        with self._ready:
            if self._closed:
                return False
            empty = self._item is None
            if not empty:
                self.superseded += 1
            self._item = item
            self._ready.notify()
        return empty

    def take(self) -> T | None:
        """The item left, or None; empties the box.  Never blocks."""
        with self._ready:
            item, self._item = self._item, None
        return item

    def wait(self) -> T | None:
        """Block until an item is left (then take it) or the box is closed (None)."""
        with self._ready:
            while self._item is None and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            item, self._item = self._item, None
        return item

    def open(self, item: T | None = None) -> None:
        """Take items again (after :meth:`close`), starting with ``item`` if given."""
        with self._ready:
            self._closed = False
            self._item = item

    def close(self) -> None:
        """Drop what is left and wake the consumer: :meth:`wait` returns None from now on."""
        with self._ready:
            self._closed = True
            self._item = None
            self._ready.notify_all()


class Periodic:
    """``callback()`` every ``interval_ms`` milliseconds on the IOLoop, scheduled on
    the monotonic clock: the interface of Tornado's ``PeriodicCallback``
    (:meth:`start`, :meth:`stop`, :meth:`is_running`).

    ``PeriodicCallback`` keeps its schedule in ``IOLoop.time()``, which is the
    wall clock: set back an hour, its next call comes an hour late (a feed's
    viewers would get nothing for that hour).  Here the next call is due a
    whole number of intervals after the start, in ``time.monotonic()``
    seconds, and waited for with the asyncio loop's own ``call_later`` (its
    clock is monotonic too).  A callback that overruns skips the calls it
    missed rather than bursting.  An exception of the callback is logged and
    the calls go on.  IOLoop thread only; :meth:`start` takes the thread's
    current IOLoop.
    """

    def __init__(self, callback: Callable[[], object], interval_ms: float) -> None:
        if not interval_ms > 0:
            raise ValueError("interval_ms must be positive")
        self.callback = callback
        self.interval_ms = interval_ms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._running = False

    def start(self) -> None:
        """Call ``callback`` every interval from one interval from now (idempotent)."""
        if self._running:
            return
        self._loop = IOLoop.current().asyncio_loop  # type: ignore[attr-defined]
        self._running = True
        self._next = time.monotonic()
        self._schedule()

    def stop(self) -> None:
        """No more calls until :meth:`start` (idempotent; also from the callback)."""
        self._running = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def is_running(self) -> bool:
        return self._running

    def _schedule(self) -> None:
        assert self._loop is not None
        interval_s = self.interval_ms / 1000
        now = time.monotonic()
        self._next += interval_s
        if self._next <= now:  # overran: the next whole interval from the start
            self._next += (math.floor((now - self._next) / interval_s) + 1) * interval_s
        self._handle = self._loop.call_later(self._next - now, self._run)

    def _run(self) -> None:
        self._handle = None
        if not self._running:
            return
        try:
            self.callback()
        except Exception:
            log.exception("periodic callback %r failed", self.callback)
        finally:
            if self._running and self._handle is None:  # not restarted by the callback
                self._schedule()
