"""The feed: polls one camera and hands each new frame once to every subscriber.

Everything here runs on the IOLoop thread.  A ``PeriodicCallback`` reads the
camera's newest frame; when its ``seq`` is new, the wire bytes are built once
per wire format and handed to every subscriber whose previous write has
completed.  A subscriber still busy with an older frame is skipped (counted)
and gets whatever is newest as soon as it is free: no backlog, no duplicate,
at most one write in flight per subscriber, so memory stays bounded whatever
a client does.  The camera starts with the first subscriber and stops
``idle_timeout_s`` after the last one leaves; then no timer of the feed runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from tornado.ioloop import IOLoop, PeriodicCallback

from cameras.base import Camera, CameraError, Frame
from recording.recorder import Recorder

log = logging.getLogger(__name__)

Encoder = Callable[[Frame], bytes]


class SubscriberGone(Exception):
    """Raised by :meth:`Subscriber.send` when the client has gone away."""


class Subscriber(Protocol):
    """A client of the feed: an MJPEG response or a WebSocket.

    ``encoder`` turns a frame into this subscriber's wire bytes; subscribers
    sharing an encoder share the bytes (built once per frame).  ``repeat_stale``
    asks for the newest frame again when the camera has produced nothing new
    for ``repeat_after_s``.
    """

    encoder: Encoder
    repeat_stale: bool

    def send(self, data: bytes) -> asyncio.Future[Any] | None:
        """Start writing ``data``; return a future done when it is written, or None
        if already written.  Raise :class:`SubscriberGone` if the client is gone."""

    def feed_closed(self) -> None:
        """The feed is shutting down: end the response or close the socket."""


class Timer(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def is_running(self) -> bool: ...


class Clock:
    """Time and timers on the current IOLoop; tests substitute a hand-driven one."""

    def monotonic(self) -> float:
        return time.monotonic()

    def periodic(self, callback: Callable[[], None], interval_ms: float) -> Timer:
        return PeriodicCallback(callback, interval_ms)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> object:
        return IOLoop.current().call_later(delay_s, callback)

    def cancel(self, handle: object) -> None:
        IOLoop.current().remove_timeout(handle)  # type: ignore[arg-type]


class _Slot:
    """Per-subscriber delivery state."""

    __slots__ = ("last_seq", "pending", "pending_since", "sub")

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.pending: asyncio.Future[Any] | None = None
        self.pending_since = 0.0
        self.last_seq = 0


def poll_interval_ms(fps: float) -> float:
    """How often to poll a camera running at ``fps``: a quarter of a frame
    interval, so polling adds at most a quarter frame of delay (2 to 50 ms)."""
    return max(2.0, min(50.0, 1000.0 / fps / 4))


class FrameFeed:
    """Fan-out of one camera's frames to many subscribers (IOLoop thread only)."""

    def __init__(
        self,
        camera: Camera,
        *,
        name: str = "camera",
        interval_ms: float | None = None,
        idle_timeout_s: float = 10.0,
        repeat_after_s: float = 1.0,
        stall_timeout_s: float = 30.0,
        recorder: Recorder | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.camera = camera
        self.name = name
        self.interval_ms = interval_ms or poll_interval_ms(camera.config.fps)
        self.idle_timeout_s = idle_timeout_s
        self.repeat_after_s = repeat_after_s
        self.stall_timeout_s = stall_timeout_s
        self._clock = clock or Clock()
        self._slots: dict[Subscriber, _Slot] = {}
        self._behind: set[_Slot] = set()
        self._waiters: list[asyncio.Future[Frame]] = []
        self._timer: Timer | None = None
        self._idle_handle: object | None = None
        self._seq = 0
        self._wire: dict[Encoder, bytes] = {}
        self._last_new_at = 0.0
        self._last_repeat_at = 0.0
        self._closed = False
        self.frames_sent = 0
        self.frames_skipped = 0
        self.frames_repeated = 0
        self.camera_starts = 0
        self.stalled_dropped = 0
        self.bytes_sent = 0
        #: Records the camera once :meth:`start_recording` is called.
        self.recorder = recorder

    # -- subscribers --------------------------------------------------------
    @property
    def subscriber_count(self) -> int:
        return len(self._slots)

    def subscribe(self, sub: Subscriber) -> None:
        """Add a subscriber; starts the camera if needed (raises CameraError)."""
        if self._closed:
            raise CameraError("the server is shutting down")
        self._activate()
        slot = self._slots[sub] = _Slot(sub)
        if self.camera.running and self.camera.latest() is not None:
            # A warm camera: the newest frame (or "no signal" picture) goes out on
            # the next tick rather than one frame interval later.
            self._behind.add(slot)

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a subscriber (idempotent); the last one out arms the idle stop."""
        slot = self._slots.pop(sub, None)
        if slot is None:
            return
        self._behind.discard(slot)
        if slot.pending is not None:
            _consume(slot.pending)
        self._maybe_idle()

    async def snapshot(self, timeout_s: float) -> Frame:
        """The newest live frame; if the camera is cold or failing, start it and
        wait for its next live frame (never the "no signal" picture).

        Raises CameraError if the camera cannot start, TimeoutError if no frame
        comes within ``timeout_s``.  Keeps the camera warm for the idle timeout.
        """
        if self._closed:
            raise CameraError("the server is shutting down")
        frame = self.camera.latest()
        if frame is not None and frame.live and self.camera.online:
            self._maybe_idle()  # a snapshot counts as a visit
            return frame
        self._activate()
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if not waiter.done():
                waiter.cancel()
            self._maybe_idle()

    # -- recording ----------------------------------------------------------
    def start_recording(self) -> None:
        """Record every live frame with the feed's recorder from now on, keeping
        the camera running without viewers.  Raises OSError if its folder cannot
        be used, CameraError if the camera cannot start."""
        recorder = self.recorder
        if self._closed:
            raise CameraError("the server is shutting down")
        if recorder is None or recorder.running:
            return
        recorder.start()
        self.camera.frame_sink = recorder.put  # on the driver thread, whatever the IOLoop does
        self._activate()
        self._maybe_idle()  # no viewer: no polling, but the camera runs on

    @property
    def recording(self) -> bool:
        """True between :meth:`start_recording` and :meth:`close`."""
        return self.recorder is not None and self.recorder.running

    # -- lifetime -----------------------------------------------------------
    def _activate(self) -> None:
        if self._idle_handle is not None:
            self._clock.cancel(self._idle_handle)
            self._idle_handle = None
        if not self.camera.running:
            self.camera.start()
            self.camera_starts += 1
            self._last_new_at = self._clock.monotonic()
        if self._timer is None:
            self._timer = self._clock.periodic(self.tick, self.interval_ms)
        if not self._timer.is_running():
            self._timer.start()

    def _maybe_idle(self) -> None:
        if self._slots or self._waiters or self._closed:
            return
        if self._timer is not None and self._timer.is_running():
            self._timer.stop()
        if self.recording:
            return  # the camera keeps running for the recording
        if self._idle_handle is not None:
            self._clock.cancel(self._idle_handle)
        if self.camera.running:
            self._idle_handle = self._clock.call_later(self.idle_timeout_s, self._idle_stop)
        else:
            self._idle_handle = None

    def _idle_stop(self) -> None:
        self._idle_handle = None
        if self._slots or self._waiters or self.recording:
            return
        log.info("%s: no viewer for %g s, stopping the camera", self.name, self.idle_timeout_s)
        self.camera.stop()

    def close(self) -> None:
        """Stop polling, end every subscriber, fail waiters and stop the camera."""
        self._closed = True
        if self._timer is not None:
            self._timer.stop()
        if self._idle_handle is not None:
            self._clock.cancel(self._idle_handle)
            self._idle_handle = None
        slots = list(self._slots.values())
        self._slots.clear()
        self._behind.clear()
        for slot in slots:
            if slot.pending is not None:
                _consume(slot.pending)
            slot.sub.feed_closed()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(CameraError("the server is shutting down"))
        self._waiters.clear()
        self.camera.stop()
        if self.recorder is not None and self.recorder.running:
            self.camera.frame_sink = None
            self.recorder.close()  # after the camera: every frame it made is written

    # -- the periodic callback ----------------------------------------------
    def tick(self) -> None:
        """Poll the camera once and deliver; called by the periodic timer."""
        frame = self.camera.latest()
        if frame is None:
            return
        now = self._clock.monotonic()
        if frame.seq != self._seq:
            self._seq = frame.seq
            self._wire.clear()
            self._last_new_at = now
            self._last_repeat_at = now
            if self._waiters and frame.live:
                waiters, self._waiters = self._waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(frame)
            self._deliver(frame, list(self._slots.values()), new=True)
        else:
            if self._behind:
                self._deliver(frame, list(self._behind))
            if (
                now - self._last_new_at >= self.repeat_after_s
                and now - self._last_repeat_at >= self.repeat_after_s
            ):
                self._last_repeat_at = now
                slots = [s for s in self._slots.values() if s.sub.repeat_stale]
                self._deliver(frame, slots, repeat=True)

    def _deliver(self, frame: Frame, slots: list[_Slot], *, new: bool = False, repeat: bool = False) -> None:
        """Start a write of ``frame`` to each free slot; mark busy ones as behind.

        A busy slot is counted as skipping when a *new* frame finds it busy;
        it gets the newest frame as soon as its write completes.
        """
        wire = self._wire
        behind = self._behind
        seq = frame.seq
        now = self._clock.monotonic()
        for slot in slots:
            if slot.last_seq == seq and not repeat:
                behind.discard(slot)
                continue
            pending = slot.pending
            if pending is not None:
                if not pending.done():
                    if now - slot.pending_since > self.stall_timeout_s:
                        self._stalled(slot)
                    elif new:
                        behind.add(slot)
                        self.frames_skipped += 1
                    continue
                slot.pending = None
                if pending.exception() is not None:
                    self._drop(slot)
                    continue
            sub = slot.sub
            data = wire.get(sub.encoder)
            if data is None:
                data = wire[sub.encoder] = sub.encoder(frame)
            try:
                slot.pending = sub.send(data)
            except SubscriberGone:
                self._drop(slot)
                continue
            slot.pending_since = now
            self.bytes_sent += len(data)
            slot.last_seq = seq
            behind.discard(slot)
            if repeat:
                self.frames_repeated += 1
            else:
                self.frames_sent += 1

    def _stalled(self, slot: _Slot) -> None:
        """A viewer that has taken nothing for ``stall_timeout_s``: disconnect it."""
        self.stalled_dropped += 1
        log.info("%s: disconnecting a viewer that took nothing for %g s", self.name, self.stall_timeout_s)
        self._drop(slot)

    def _drop(self, slot: _Slot) -> None:
        log.debug("%s: dropping a subscriber that went away", self.name)
        self.unsubscribe(slot.sub)
        slot.sub.feed_closed()

    # -- reporting ----------------------------------------------------------
    def viewers_by_kind(self) -> dict[str, int]:
        """How many subscribers of each ``kind`` (``"mjpeg"``, ``"ws"``) are attached."""
        kinds: dict[str, int] = {}
        for sub in self._slots:
            kind = getattr(sub, "kind", "other")
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds

    def snapshot_failure(self, timeout_s: float) -> str:
        """Why no snapshot came within ``timeout_s``, for people."""
        error = self.camera.error
        if error:
            return f"the camera is offline: {error}"
        return f"no frame from the camera within {timeout_s:g} s"

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary of the camera and the feed."""
        cam = self.camera
        frame = cam.latest() if cam.running else None
        return {
            "name": self.name,
            "driver": cam.driver,
            "running": cam.running,
            "online": cam.online,
            "error": cam.error,
            "fps_configured": cam.config.fps,
            "fps_measured": round(cam.measured_fps, 2),
            "width": frame.width if frame else cam.config.width,
            "height": frame.height if frame else cam.config.height,
            "quality": cam.config.quality,
            "subscribers": len(self._slots),
            "frames_sent": self.frames_sent,
            "frames_skipped": self.frames_skipped,
            "frames_repeated": self.frames_repeated,
            "stalled_dropped": self.stalled_dropped,
            "camera_starts": self.camera_starts,
            "last_frame_age_s": round(time.time() - frame.timestamp, 3) if frame else None,
            "poll_interval_ms": round(self.interval_ms, 2),
            "idle_timeout_s": self.idle_timeout_s,
            "recording": self.recorder.status() if self.recorder and self.recorder.running else None,
        }


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a future's exception (now or when done) so none is logged as lost."""
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
