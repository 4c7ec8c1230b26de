"""The data every room shares: a frame, the error of a source, and two small tools.

This module is the bottom of the house: every other module may import it, and
it imports nothing of the project's own.

* :class:`Frame`: one complete encoded picture with its ``seq`` and capture time.
* :class:`CameraError`: a source cannot be configured, opened or read.
* :class:`RateMeter`: frames per second, counted on one thread, read on another.
* :class:`Newest`: a mailbox of one, for a consumer thread that must only ever
  see the newest frame (never a backlog).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


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
