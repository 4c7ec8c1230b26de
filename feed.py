"""The feed: the fan-out of one frame source to its outputs.

A feed takes frames from any :class:`~cameras.base.Camera` (a driver, a bus
subscription, a variant encoder) and hands them to two kinds of output:

* **viewers** (:class:`Subscriber`: an MJPEG response, a WebSocket; and
  snapshot waiters, :meth:`FrameFeed.snapshot`): the hot path.  A
  ``PeriodicCallback`` reads the camera's newest frame; when its ``seq`` is
  new, the wire bytes are built once per wire format and handed to every
  viewer whose previous write has completed.  A viewer still busy with an
  older frame is skipped (counted) and gets whatever is newest as soon as it
  is free: no backlog, no duplicate, at most one write in flight per viewer,
  so memory stays bounded whatever a client does.
* **every other output** (:class:`Output`: the recorder, the bus publisher,
  the variants, each through this one contract): attached with
  :meth:`FrameFeed.attach`, it takes every frame on the source's own thread
  (:meth:`Output.put`), whatever the IOLoop is doing; it reports under its
  ``kind`` in :meth:`FrameFeed.status`, may serve viewers of feeds of its own
  (counted as the camera's, :meth:`Output.viewers`), and is closed with the
  feed, after the source has stopped (:meth:`Output.close`).  An output
  attached with a hold keeps the source running without viewers; one may
  also hold it for a while (:meth:`FrameFeed.hold`: the edges' interest, a
  running variant).  This module names no output.

The source starts with its first output that wants it (a viewer, a waiter,
a hold) and stops ``idle_timeout_s`` after the last one leaves; then no timer
of the feed runs.  Stopping a source may block (a hung SDK), so it runs on a
worker thread: the IOLoop never waits for it, and the source is started again
only once its stop has finished (never two capture threads).  Everything else
here runs on the IOLoop thread.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from tornado.ioloop import IOLoop

from cameras.base import Camera
from cameras.jpeg import same_jpeg
from frame import CameraError, Frame, Periodic

log = logging.getLogger(__name__)

Encoder = Callable[[Frame], bytes]


class SubscriberGone(Exception):
    """Raised by :meth:`Subscriber.send` when the client has gone away."""


class Subscriber(Protocol):
    """A viewer of the feed: an MJPEG response or a WebSocket (IOLoop thread).

    ``encoder`` turns a frame into this subscriber's wire bytes; subscribers
    sharing an encoder share the bytes (built once per frame).  ``repeat_stale``
    asks for the newest frame again when the camera has produced nothing new
    for ``repeat_after_s``.  ``kind`` names it in counts (``"mjpeg"``, ``"ws"``).
    """

    encoder: Encoder
    repeat_stale: bool
    kind: str

    def accepts(self) -> bool:
        """Whether this subscriber takes a frame now; called only when it is free,
        right before :meth:`send`.  False (a frame-rate cap it keeps) holds the
        frame back: nothing is sent, and the feed counts it in ``frames_capped``."""

    def send(self, data: bytes) -> asyncio.Future[Any] | None:
        """Start writing ``data``; return a future done when it is written, or None
        if already written.  Raise :class:`SubscriberGone` if the client is gone."""

    def feed_closed(self) -> None:
        """The feed is shutting down: end the response or close the socket."""


class Output(abc.ABC):
    """The one contract of every output of a feed but its viewers: the recorder,
    the bus publisher, the variants, and whatever comes next.

    ``kind`` names its entry in the camera's ``/status`` (``"recording"``,
    ``"publishing"``, ``"variants"``); a feed has at most one output of a kind.
    """

    kind: str = "output"

    @abc.abstractmethod
    def put(self, frame: Frame) -> None:
        """Take one frame, live or not (``frame.live``).  Called on the source's
        own thread for every frame it publishes while attached, so it must not
        block: keep the frame (a bounded queue, a mailbox of one) and do the
        work on a thread of the output's own."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """JSON-ready figures, the camera's ``/status`` entry under :attr:`kind`
        (IOLoop thread; cheap, never blocks).  Counter names are those of
        ``/metrics`` without ``camstream_`` and ``_total``."""

    def viewers(self) -> Iterable[Subscriber]:
        """The viewers this output serves on feeds of its own (a variant's), which
        count as viewers of the camera (IOLoop thread).  None for most."""
        return ()

    @abc.abstractmethod
    def close(self) -> asyncio.Future[Any] | None:
        """Stop: called once on the IOLoop when the feed closes, after its source
        has stopped (so every frame it made has been put), or by whoever
        detached it.  Must not block: blocking work (writing out a queue,
        ending a connection) goes to a worker thread, and the future returned
        is done when it has ended (None: done already).  Called without a
        running event loop, it does all its work before returning None."""


class Hold:
    """Keeps a feed's source running with no viewer (see :meth:`FrameFeed.hold`)."""

    __slots__ = ("_feed", "reason")

    def __init__(self, feed: FrameFeed, reason: str) -> None:
        self._feed: FrameFeed | None = feed
        self.reason = reason

    def release(self) -> None:
        """Let the source idle out again (idempotent; IOLoop thread)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            feed._release(self)


class Timer(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def is_running(self) -> bool: ...


class Clock:
    """Time, timers and worker threads on the current IOLoop; tests substitute a
    hand-driven one.  Every timer runs on the monotonic clock, so a wall clock
    set back or forward (NTP, a person) neither delays nor hastens a poll, an
    idle stop or a stall.  Tornado's own ``PeriodicCallback`` keeps its
    schedule on ``IOLoop.time()``, the wall clock (set back an hour, the poll
    would stop for an hour), and ``IOLoop.call_later`` passes through it; the
    asyncio loop's timers are used instead."""

    def monotonic(self) -> float:
        return time.monotonic()

    def periodic(self, callback: Callable[[], None], interval_ms: float) -> Timer:
        return Periodic(callback, interval_ms)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> object:
        """``callback()`` on this IOLoop after ``delay_s`` monotonic seconds; a handle for :meth:`cancel`."""
        return IOLoop.current().asyncio_loop.call_later(delay_s, callback)  # type: ignore[attr-defined]

    def cancel(self, handle: object) -> None:
        handle.cancel()  # type: ignore[attr-defined]

    def run_off_loop(self, name: str, work: Callable[[], None], done: Callable[[], None]) -> None:
        """Run ``work()`` (which may block) on a new daemon thread, then ``done()``
        on this IOLoop.  A daemon thread rather than an executor: a driver that
        never lets go must not hold up the process's exit.  An exception of
        ``work`` is logged; ``done`` runs anyway."""
        loop = IOLoop.current()

        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("%s failed", name)
            finally:
                loop.add_callback(done)

        threading.Thread(target=run, name=name, daemon=True).start()


class _Slot:
    """Per-subscriber delivery state."""

    __slots__ = ("last_seq", "pending", "pending_since", "skipped", "sub")

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.pending: asyncio.Future[Any] | None = None
        self.pending_since = 0.0
        self.last_seq = 0
        #: New frames this viewer skipped, busy with an older one (adaptation reads it).
        self.skipped = 0


def poll_interval_ms(fps: float) -> float:
    """How often to poll a camera running at ``fps``: a quarter of a frame
    interval, so polling adds at most a quarter frame of delay (2 to 50 ms)."""
    return max(2.0, min(50.0, 1000.0 / fps / 4))


class FrameFeed:
    """Fan-out of one source's frames to its outputs (IOLoop thread only)."""

    def __init__(
        self,
        camera: Camera,
        *,
        name: str = "camera",
        interval_ms: float | None = None,
        idle_timeout_s: float = 10.0,
        repeat_after_s: float = 1.0,
        stall_timeout_s: float = 30.0,
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
        self._holds: set[Hold] = set()
        #: Every attached output, and the hold each was attached with (or None).
        self._outputs: dict[Output, Hold | None] = {}
        self._timer: Timer | None = None
        self._idle_handle: object | None = None
        #: A stop of the source is under way on a worker thread.
        self._stopping = False
        self._seq = 0
        self._wire: dict[Encoder, bytes] = {}
        #: The frame last handed out as new (a later one with the same bytes is not).
        self._frame: Frame | None = None
        self._last_new_at = 0.0
        self._last_repeat_at = 0.0
        self._stall_checked_at = 0.0
        self._closed = False
        #: Frames written (or being written) to viewers, and their bytes; one count per write.
        self.frames_sent = 0
        self.bytes_sent = 0
        #: New frames a busy viewer skipped; frames a viewer's rate cap held back.
        self.frames_skipped = 0
        self.frames_capped = 0
        self.frames_repeated = 0
        #: New frames of the source, and those not sent because their bytes equal the previous one's.
        self.frames_new = 0
        self.frames_same = 0
        self.camera_starts = 0
        self.viewers_stalled = 0

    # -- viewers ------------------------------------------------------------
    @property
    def subscriber_count(self) -> int:
        return len(self._slots)

    def subscribe(self, sub: Subscriber) -> None:
        """Add a viewer; starts the source if needed (raises CameraError)."""
        self._add(_Slot(sub))

    def _add(self, slot: _Slot) -> None:
        if self._closed:
            raise CameraError("the server is shutting down")
        self._activate()
        self._slots[slot.sub] = slot
        if self.camera.running and self.camera.latest() is not None:
            # A warm camera: the newest frame (or "no signal" picture) goes out on
            # the next tick rather than one frame interval later.
            self._behind.add(slot)

    def move(self, sub: Subscriber, other: FrameFeed) -> None:
        """Move a viewer of this feed to ``other`` (another variant of the same
        camera), with its write in flight: it gets ``other``'s frames once that
        write is done, never one it has had (variants share the camera's
        ``seq``).  Raises CameraError if ``other`` cannot start: the viewer
        then stays here.  A viewer not attached here is subscribed to ``other``."""
        if other is self:
            return
        slot = self._slots.get(sub)
        if slot is None:
            other.subscribe(sub)
            return
        moved = _Slot(sub)
        moved.pending, moved.pending_since, moved.last_seq = slot.pending, slot.pending_since, slot.last_seq
        other._add(moved)
        del self._slots[sub]
        self._behind.discard(slot)
        self._maybe_idle()

    def skipped_by(self, sub: Subscriber) -> int | None:
        """New frames ``sub`` has skipped on this feed (busy with an older one),
        or None if it is not attached here."""
        slot = self._slots.get(sub)
        return None if slot is None else slot.skipped

    def unsubscribe(self, sub: Subscriber) -> None:
        """Remove a viewer (idempotent); the last output out arms the idle stop."""
        slot = self._slots.pop(sub, None)
        if slot is None:
            return
        self._behind.discard(slot)
        if slot.pending is not None:
            consume(slot.pending)
        self._maybe_idle()

    async def snapshot(self, timeout_s: float) -> Frame:
        """The newest live frame; if the source is cold or failing, start it and
        wait for its next live frame (never the "no signal" picture).

        Raises CameraError if the source cannot start, TimeoutError if no frame
        comes within ``timeout_s``.  Keeps the source warm for the idle timeout.
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

    # -- holds and outputs ---------------------------------------------------
    def hold(self, reason: str) -> Hold:
        """Keep the source running with no viewer until the hold is released (the
        edges' interest, a running variant).  Starts the source now; raises
        CameraError if it cannot start or the feed is closed."""
        if self._closed:
            raise CameraError("the server is shutting down")
        self._activate()
        hold = Hold(self, reason)
        self._holds.add(hold)
        self._maybe_idle()  # no viewer: no polling, but the source runs on
        return hold

    def _release(self, hold: Hold) -> None:
        self._holds.discard(hold)
        self._maybe_idle()

    @property
    def held(self) -> bool:
        """True while a hold keeps the source running."""
        return bool(self._holds)

    def attach(self, output: Output, *, hold: bool) -> None:
        """Hand every frame of the source to ``output.put`` from now on, on the
        source's thread, report it under its ``kind`` and close it with the feed.
        ``hold``: keep the source running for it (the recorder) until
        :meth:`detach` or :meth:`close`; without, it takes the frames of a source
        that runs for others (the variants, the publisher).  Raises CameraError
        if the source cannot start (with ``hold``) or the feed is closed, and
        ValueError if an output of the same kind is attached already."""
        if output in self._outputs:
            return
        if self._closed:
            raise CameraError("the server is shutting down")
        if any(other.kind == output.kind for other in self._outputs):
            raise ValueError(f"{self.name}: an output of kind {output.kind!r} is attached already")
        held = self.hold(output.kind) if hold else None
        self.camera.add_sink(output.put)
        self._outputs[output] = held

    def detach(self, output: Output) -> None:
        """Stop handing frames to ``output`` and release its hold (idempotent).
        The caller closes it (:meth:`Output.close`)."""
        if output not in self._outputs:
            return
        held = self._outputs.pop(output)
        self.camera.remove_sink(output.put)
        if held is not None:
            held.release()

    @property
    def outputs(self) -> tuple[Output, ...]:
        """The attached outputs, in the order they were attached."""
        return tuple(self._outputs)

    # -- lifetime -----------------------------------------------------------
    def _activate(self) -> None:
        """Make sure the source runs (or will, once a stop under way has ended)
        and the poll timer ticks."""
        if self._idle_handle is not None:
            self._clock.cancel(self._idle_handle)
            self._idle_handle = None
        if not self._stopping and not self.camera.running:
            self._start_camera()
        if self._timer is None:
            self._timer = self._clock.periodic(self.tick, self.interval_ms)
        if not self._timer.is_running():
            self._timer.start()

    def _start_camera(self) -> None:
        self.camera.start()
        self.camera_starts += 1
        self._frame = None  # a restarted camera's first frame is new, whatever its bytes
        self._last_new_at = self._clock.monotonic()

    def _wanted(self) -> bool:
        """Whether any output wants the source now."""
        return bool(self._slots or self._waiters or self._holds)

    def _maybe_idle(self) -> None:
        if self._slots or self._waiters or self._closed:
            return
        if self._timer is not None and self._timer.is_running():
            self._timer.stop()
        if self._holds:
            return  # the source keeps running for a hold
        if self._idle_handle is not None:
            self._clock.cancel(self._idle_handle)
        if self.camera.running:
            self._idle_handle = self._clock.call_later(self.idle_timeout_s, self._idle_stop)
        else:
            self._idle_handle = None

    def _idle_stop(self) -> None:
        self._idle_handle = None
        if self._wanted() or self._stopping:
            return
        log.info("%s: no viewer for %g s, stopping the camera", self.name, self.idle_timeout_s)
        self._stopping = True
        self._clock.run_off_loop(f"stop-{self.name}", self.camera.stop, self._stopped)

    def _stopped(self) -> None:
        """The source's stop has ended (IOLoop): start it again if an output came meanwhile."""
        self._stopping = False
        if self._closed or not self._wanted():
            return
        try:
            self._start_camera()
        except CameraError as exc:
            log.warning("%s: cannot start the camera again: %s", self.name, exc)
            self._end_viewers(exc)

    def _end_viewers(self, exc: CameraError) -> None:
        """End every viewer and fail every waiter (a source that cannot start)."""
        slots = list(self._slots.values())
        self._slots.clear()
        self._behind.clear()
        for slot in slots:
            if slot.pending is not None:
                consume(slot.pending)
            slot.sub.feed_closed()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._maybe_idle()

    def close(self) -> asyncio.Future[None] | None:
        """Stop polling, end every viewer, fail waiters; then, on a worker thread,
        stop the source; then close every output (after the source: every frame
        it made was put).  Returns a future done when all that has finished, or
        None (done already) when called without a running event loop.  Idempotent."""
        if self._closed:
            return None
        self._closed = True
        self._end_viewers(CameraError("the server is shutting down"))
        if self._timer is not None:
            self._timer.stop()
        if self._idle_handle is not None:
            self._clock.cancel(self._idle_handle)
            self._idle_handle = None
        outputs = list(self._outputs)
        self._outputs.clear()
        self._holds.clear()
        camera = self.camera

        def stop_source() -> None:
            camera.stop()  # waits for a stop already under way
            for output in outputs:
                camera.remove_sink(output.put)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            stop_source()
            for output in outputs:
                output.close()
            return None
        done: asyncio.Future[None] = loop.create_future()

        def close_outputs() -> None:
            closing = []
            for output in outputs:
                try:
                    future = output.close()
                except Exception:
                    log.exception("%s: closing its %s output failed", self.name, output.kind)
                    continue
                if future is not None:
                    closing.append(future)
            if not closing:
                done.done() or done.set_result(None)
                return
            gathered = asyncio.gather(*closing, return_exceptions=True)

            def finished(results: asyncio.Future[list[Any]]) -> None:
                for result in results.result():
                    if isinstance(result, BaseException):
                        log.error("%s: an output failed to close: %s", self.name, result)
                done.done() or done.set_result(None)

            gathered.add_done_callback(finished)

        self._clock.run_off_loop(f"close-{self.name}", stop_source, close_outputs)
        return done

    # -- the periodic callback ----------------------------------------------
    def tick(self) -> None:
        """Poll the source once and deliver; called by the periodic timer."""
        if self._stopping:
            return  # what the source holds is from before the stop
        frame = self.camera.latest()
        if frame is None:
            return
        now = self._clock.monotonic()
        if frame.seq != self._seq:
            self._seq = frame.seq
            last = self._frame
            if last is not None and last.live == frame.live and same_jpeg(last.jpeg, frame.jpeg):
                # The same picture again (a still scene, a relayed still): not sent
                # again, but a snapshot waiter takes it; the keep-alive repeat
                # re-sends ``last`` (its seq already shown) in due time.
                self.frames_same += 1
                self._wake_waiters(frame)
                frame = last
                if now - self._stall_checked_at >= self.repeat_after_s:
                    self._check_stalls(now)
            else:
                self._frame = frame
                self.frames_new += 1
                self._wire.clear()
                self._last_new_at = now
                self._last_repeat_at = now
                self._wake_waiters(frame)
                self._deliver(frame, list(self._slots.values()), new=True)
                return
        if self._behind:
            self._deliver(frame, list(self._behind))
        repeat_after_s = self.repeat_after_s
        if now - self._last_new_at >= repeat_after_s and now - self._last_repeat_at >= repeat_after_s:
            self._last_repeat_at = now
            slots = [s for s in self._slots.values() if s.sub.repeat_stale]
            self._deliver(frame, slots, repeat=True)

    def _wake_waiters(self, frame: Frame) -> None:
        """Hand a live ``frame`` to every snapshot waiter."""
        if self._waiters and frame.live:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(frame)

    def _deliver(self, frame: Frame, slots: list[_Slot], *, new: bool = False, repeat: bool = False) -> None:
        """Start a write of ``frame`` to each free slot; mark busy ones as behind.

        A busy slot is counted as skipping when a *new* frame finds it busy;
        it gets the newest frame as soon as its write completes.  A free slot
        whose subscriber does not accept a frame now (its rate cap) is counted
        as capped and not marked as having this frame.
        """
        # The hot path: one pass per viewer per frame.  Counters are kept in locals
        # and the last encoder's bytes at hand (most viewers share one).
        wire = self._wire
        behind = self._behind
        seq = frame.seq
        now = self._clock.monotonic()
        sent = sent_bytes = skipped = capped = 0
        encoder: Encoder | None = None
        data = b""
        try:
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
                            slot.skipped += 1
                            skipped += 1
                        continue
                    slot.pending = None
                    if pending.exception() is not None:
                        self._drop(slot)
                        continue
                sub = slot.sub
                if behind:
                    behind.discard(slot)
                if not sub.accepts():
                    capped += 1
                    continue
                if sub.encoder is not encoder:
                    encoder = sub.encoder
                    data = wire.get(encoder)  # type: ignore[assignment]
                    if data is None:
                        data = wire[encoder] = encoder(frame)
                try:
                    slot.pending = sub.send(data)
                except SubscriberGone:
                    self._drop(slot)
                    continue
                slot.pending_since = now
                slot.last_seq = seq
                sent += 1
                sent_bytes += len(data)
        finally:
            self.bytes_sent += sent_bytes
            self.frames_skipped += skipped
            self.frames_capped += capped
            if repeat:
                self.frames_repeated += sent
            else:
                self.frames_sent += sent

    def _check_stalls(self, now: float) -> None:
        """Disconnect viewers whose write has hung for ``stall_timeout_s`` (what a
        new frame's delivery does, for a still picture that brings none)."""
        self._stall_checked_at = now
        for slot in list(self._slots.values()):
            pending = slot.pending
            if pending is not None and not pending.done() and now - slot.pending_since > self.stall_timeout_s:
                self._stalled(slot)

    def _stalled(self, slot: _Slot) -> None:
        """A viewer that has taken nothing for ``stall_timeout_s``: disconnect it."""
        self.viewers_stalled += 1
        log.info("%s: disconnecting a viewer that took nothing for %g s", self.name, self.stall_timeout_s)
        self._drop(slot)

    def _drop(self, slot: _Slot) -> None:
        log.debug("%s: dropping a subscriber that went away", self.name)
        self.unsubscribe(slot.sub)
        slot.sub.feed_closed()

    # -- reporting ----------------------------------------------------------
    def viewers_by_kind(self) -> dict[str, int]:
        """How many viewers of each ``kind`` (``"mjpeg"``, ``"ws"``) are attached
        to this feed itself (not its outputs' feeds)."""
        kinds: dict[str, int] = {}
        for sub in self._slots:
            kinds[sub.kind] = kinds.get(sub.kind, 0) + 1
        return kinds

    def all_viewers(self) -> list[Subscriber]:
        """Every viewer of the camera: of this feed, then those its outputs serve."""
        viewers: list[Subscriber] = list(self._slots)
        for output in self.outputs:
            viewers += output.viewers()
        return viewers

    @property
    def viewer_count(self) -> int:
        """Viewers of the camera: of this feed and of its outputs' feeds (variants)."""
        return len(self._slots) + sum(len(list(output.viewers())) for output in self.outputs)

    def clients(self, limit: int = 500) -> list[dict[str, Any]]:
        """Each viewer of the camera, as its ``client_info()`` tells it (kind,
        address, variant...), at most ``limit``."""
        out: list[dict[str, Any]] = []
        for sub in self.all_viewers()[:limit]:
            info = getattr(sub, "client_info", None)
            out.append(info() if info else {"kind": sub.kind})
        return out

    def snapshot_failure(self, timeout_s: float) -> str:
        """Why no snapshot came within ``timeout_s``, for people."""
        error = self.camera.error
        if error:
            return f"the camera is offline: {error}"
        return f"no frame from the camera within {timeout_s:g} s"

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary of the source, the feed and each output (under its
        ``kind``: ``"recording"``, ``"publishing"``, ``"variants"``); the source's
        own entries (:meth:`~cameras.base.Camera.status`) beside them.  Counter
        names are those of ``/metrics`` without ``camstream_`` and ``_total``."""
        cam = self.camera
        frame = cam.latest() if cam.running else None
        viewers = self.all_viewers()
        kinds: dict[str, int] = {}
        for sub in viewers:
            kinds[sub.kind] = kinds.get(sub.kind, 0) + 1
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
            "subscribers": len(viewers),
            "viewers": kinds,
            "frames_captured": cam.frames_captured,
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "frames_skipped": self.frames_skipped,
            "frames_capped": self.frames_capped,
            "frames_repeated": self.frames_repeated,
            "frames_same": self.frames_same,
            "viewers_stalled": self.viewers_stalled,
            "camera_starts": self.camera_starts,
            "camera_failures": cam.failures,
            "last_frame_age_s": round(time.time() - frame.timestamp, 3) if frame else None,
            "poll_interval_ms": round(self.interval_ms, 2),
            "idle_timeout_s": self.idle_timeout_s,
            **cam.status(),
            **{output.kind: output.status() for output in self.outputs},
            "clients": self.clients(),
        }


def consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a write future's exception (now or when done) so none is logged as
    lost: a viewer that went away is not an error.  A cancelled future has none."""
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
