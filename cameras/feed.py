"""The feed: the fan-out of one frame source to its outputs.

A feed takes frames from any :class:`~cameras.base.Camera` (a driver, later a
bus subscription or a variant of another feed) and hands them to three kinds
of output, each through one interface:

* **viewers** (:class:`Subscriber`: an MJPEG response, a WebSocket): a
  ``PeriodicCallback`` reads the camera's newest frame; when its ``seq`` is
  new, the wire bytes are built once per wire format and handed to every
  viewer whose previous write has completed.  A viewer still busy with an
  older frame is skipped (counted) and gets whatever is newest as soon as it
  is free: no backlog, no duplicate, at most one write in flight per viewer,
  so memory stays bounded whatever a client does.
* **snapshot waiters** (:meth:`FrameFeed.snapshot`): the next live frame.
* **sinks** (:class:`FrameSink`: the recorder, later a bus publisher): every
  frame, on the source's own thread, whatever the IOLoop is doing; a sink
  attached with a hold keeps the source running without viewers.

The source starts with its first output (a viewer, a waiter or a
:meth:`FrameFeed.hold`) and stops ``idle_timeout_s`` after the last one
leaves; then no timer of the feed runs.  Stopping a source may block (a hung
SDK), so it runs on a worker thread: the IOLoop never waits for it, and the
source is started again only once its stop has finished (never two capture
threads).  Everything else here runs on the IOLoop thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from tornado.ioloop import IOLoop, PeriodicCallback

from cameras.base import Camera, CameraError, Frame
from cameras.jpeg import same_jpeg

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


class FrameSink(Protocol):
    """An output that takes every frame of the source (the recorder; later a bus
    publisher).  ``kind`` names its entry in :meth:`FrameFeed.status`."""

    kind: str

    def put(self, frame: Frame) -> None:
        """Take one frame, live or not (``frame.live``); called on the source's
        thread, so it must not block (a bounded queue)."""

    def status(self) -> dict[str, Any]:
        """JSON-ready figures, for ``/status`` (IOLoop thread)."""

    def close(self) -> None:
        """Write out what is queued and stop; may block (a worker thread calls it,
        after the source has stopped, so every frame it made is taken)."""


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
    hand-driven one."""

    def monotonic(self) -> float:
        return time.monotonic()

    def periodic(self, callback: Callable[[], None], interval_ms: float) -> Timer:
        return PeriodicCallback(callback, interval_ms)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> object:
        return IOLoop.current().call_later(delay_s, callback)

    def cancel(self, handle: object) -> None:
        IOLoop.current().remove_timeout(handle)  # type: ignore[arg-type]

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
        self._sinks: dict[FrameSink, Hold] = {}
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
        #: The camera's variants (:class:`cameras.variants.Variants`), if it has any;
        #: and, for a variant's own feed, the feed it is a variant of.
        self.variants: Any = None
        self.variant_of: FrameFeed | None = None
        #: The output to the message bus (:class:`cameras.bus.Publisher`), on an origin.
        self.publisher: Any = None

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

    # -- holds and sinks ----------------------------------------------------
    def hold(self, reason: str) -> Hold:
        """Keep the source running with no viewer until the hold is released (a
        recorder; later, viewers of other servers).  Starts the source now;
        raises CameraError if it cannot start or the feed is closed."""
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

    def attach(self, sink: FrameSink) -> None:
        """Hand every frame of the source to ``sink`` from now on, on the source's
        thread, and keep the source running for it (a hold) until :meth:`detach`
        or :meth:`close`.  Raises CameraError if the source cannot start."""
        if sink in self._sinks:
            return
        hold = self.hold(sink.kind)
        self.camera.add_sink(sink.put)
        self._sinks[sink] = hold

    def detach(self, sink: FrameSink) -> None:
        """Stop handing frames to ``sink`` and release its hold (idempotent).  The
        caller closes the sink (off the loop: :meth:`FrameSink.close` may block)."""
        hold = self._sinks.pop(sink, None)
        if hold is None:
            return
        self.camera.remove_sink(sink.put)
        hold.release()

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
            self._fail_outputs(exc)

    def _fail_outputs(self, exc: CameraError) -> None:
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
        stop the source and close the sinks (after the source: every frame it
        made is taken).  Returns a future done when that has finished, or None
        (done already) when called without a running event loop.  Idempotent."""
        if self._closed:
            return None
        self._closed = True
        if self.variants:
            self.variants.close()  # their viewers first; their holds here go with ours
        self._fail_outputs(CameraError("the server is shutting down"))
        if self._timer is not None:
            self._timer.stop()
        if self._idle_handle is not None:
            self._clock.cancel(self._idle_handle)
            self._idle_handle = None
        sinks = list(self._sinks)
        self._sinks.clear()
        self._holds.clear()
        camera = self.camera

        def work() -> None:
            camera.stop()  # waits for a stop already under way
            for sink in sinks:
                camera.remove_sink(sink.put)
                sink.close()

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work()
            return None
        done: asyncio.Future[None] = loop.create_future()
        self._clock.run_off_loop(f"close-{self.name}", work, lambda: done.done() or done.set_result(None))
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
        """How many viewers of each ``kind`` (``"mjpeg"``, ``"ws"``) are attached here."""
        kinds: dict[str, int] = {}
        for sub in self._slots:
            kinds[sub.kind] = kinds.get(sub.kind, 0) + 1
        return kinds

    def all_feeds(self) -> list[FrameFeed]:
        """This feed and its variants' feeds."""
        return [self, *(feed for _, feed in self.variants.feeds())] if self.variants else [self]

    @property
    def viewer_count(self) -> int:
        """Viewers of the camera: of this feed and of its variants."""
        return sum(feed.subscriber_count for feed in self.all_feeds())

    def clients(self, limit: int = 500) -> list[dict[str, Any]]:
        """Each viewer of the camera (this feed and its variants), as its
        ``client_info()`` tells it (kind, address, variant...), at most ``limit``."""
        out: list[dict[str, Any]] = []
        for feed in self.all_feeds():
            for sub in feed._slots:
                if len(out) >= limit:
                    return out
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
        """A JSON-ready summary of the source, the feed and its sinks (each
        under its ``kind``, e.g. ``"recording"``).  Counter names are those of
        ``/metrics`` without ``camstream_`` and ``_total``."""
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
            "subscribers": self.viewer_count,
            "viewers": self._all_viewers_by_kind(),
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
            "recording": None,
            **{sink.kind: sink.status() for sink in self._sinks},
            "max_variants": self.variants.max_variants if self.variants else 0,
            "variants": self.variants.status() if self.variants else {},
            "adapt_steps": self._adapt_steps(),
            "publishing": self.publisher.status() if self.publisher is not None else None,
            "bus": cam.bus_status() if hasattr(cam, "bus_status") else None,
            "clients": self.clients(),
        }

    def _adapt_steps(self) -> dict[str, int]:
        adaptation = getattr(self.variants, "adaptation", None)
        if adaptation is None:
            return {"down": 0, "up": 0}
        return {"down": adaptation.steps_down, "up": adaptation.steps_up}

    def _all_viewers_by_kind(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        for feed in self.all_feeds():
            for kind, count in feed.viewers_by_kind().items():
                kinds[kind] = kinds.get(kind, 0) + count
        return kinds


def consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a write future's exception (now or when done) so none is logged as
    lost: a viewer that went away is not an error.  A cancelled future has none."""
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.add_done_callback(lambda f: None if f.cancelled() else f.exception())
