"""The source contract: what every frame source offers to the feed.

A camera (a driver, a bus subscription, a variant encoder) produces complete
JPEG frames on a thread of its own and keeps only the newest one.  The
IOLoop reads that one slot with :meth:`Camera.latest`, which never blocks.
The feed's other outputs (the recorder, the bus publisher, the variants)
take every frame on the camera's own thread: the feed hands their ``put`` to
:meth:`Camera.add_sink`, and only the feed calls it.  Drivers know nothing
of HTTP or Tornado.  :class:`~frame.Frame` and :class:`~frame.CameraError`
live at the bottom of the house (:mod:`frame`).
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from frame import CameraError, Frame, RateMeter

__all__ = ["Camera", "CameraConfig", "FrameSinkFn", "ThreadedCamera"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraConfig:
    """What a driver is asked for; a driver may ignore what does not apply."""

    #: The camera's name, for logs and the "no signal" picture.
    name: str = ""
    source: str | None = None
    width: int = 640
    height: int = 480
    fps: float = 30.0
    quality: int = 80
    #: The largest part (one JPEG) of a relayed stream, bytes (``--relay-max-part``);
    #: None: the relay's default (:data:`cameras.relay.DEFAULT_MAX_PART_BYTES`).
    max_part_bytes: int | None = None


FrameSinkFn = Callable[[Frame], None]


class Camera(abc.ABC):
    """A source of JPEG frames.

    ``start`` is called from the IOLoop thread and returns at once; ``stop``
    may block (a hung SDK), so the feed calls it on a worker thread; ``latest``
    and the sink methods from any thread.  Subclasses run their blocking work
    on their own thread and hand each frame to :meth:`_publish_frame` there.
    """

    #: Registry name of the driver, for logs and ``/status``.
    driver: str = "camera"

    def __init__(self, config: CameraConfig) -> None:
        self.config = config
        #: Live frames produced, and failures (each error of open or capture), ever.
        self.frames_captured = 0
        self.failures = 0
        #: The newest frame: replaced by one reference assignment, read without a lock.
        self._frame: Frame | None = None
        self._rate = RateMeter()
        # Replaced whole (copy on write), never changed in place: the driver's
        # thread iterates over the tuple it read without a lock.
        self._sinks: tuple[FrameSinkFn, ...] = ()
        self._sinks_lock = threading.Lock()

    def add_sink(self, sink: FrameSinkFn) -> None:
        """Call ``sink(frame)`` with every frame published from now on, live or
        "no signal" (``Frame.live``), on the thread that publishes it (the
        driver's); ``sink`` must not block.  Any thread; the feed's
        :meth:`~feed.FrameFeed.attach` is its one caller."""
        with self._sinks_lock:
            self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: FrameSinkFn) -> None:
        """Stop calling ``sink`` (idempotent; a call under way may still finish).  Any thread."""
        with self._sinks_lock:
            self._sinks = tuple(s for s in self._sinks if s != sink)  # == : bound methods are made anew

    def _publish_frame(self, frame: Frame) -> None:
        """Make ``frame`` the newest (the publishing thread): one reference
        assignment, a live frame counted and metered, then handed to every
        sink; a sink that raises is logged and kept."""
        if frame.live:
            self.frames_captured += 1
            self._rate.tick()
        self._frame = frame
        for sink in self._sinks:
            try:
                sink(frame)
            except Exception:  # one broken output must not stop the camera
                log.exception("%s: a frame sink failed", self.config.name or self.driver)

    @abc.abstractmethod
    def start(self) -> None:
        """Begin producing frames; returns at once without waiting for a frame.

        Raises :class:`CameraError` when the camera cannot be started (or is
        still stopping).  Calling it on a running camera does nothing.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop producing frames and release the device; idempotent, safe in ``finally``.

        Blocks until the capture thread has ended, however long a hung SDK
        takes: call it off the IOLoop (the feed does).
        """

    def latest(self) -> Frame | None:
        """The newest complete frame, or None before the first one; O(1), never blocks."""
        return self._frame

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""

    @property
    def online(self) -> bool:
        """True while the source delivers frames (running and not failing)."""
        return self.running

    @property
    def error(self) -> str | None:
        """The last failure, as a message for people, or None."""
        return None

    @property
    def measured_fps(self) -> float:
        """Frames published per second over the last second or so (0 when none
        came for 2 s, or stopped).  Any thread."""
        return self._rate.fps() if self.running else 0.0

    def status(self) -> dict[str, Any]:
        """The source's own entries of its camera's ``/status``, beyond those every
        source has (a bus subscription's ``"bus"``); ``{}`` for most.  IOLoop
        thread; cheap, never blocks."""
        return {}


class ThreadedCamera(Camera):
    """A camera whose frames come from :meth:`capture` called on a driver thread.

    Subclasses implement :meth:`open`, :meth:`capture` and :meth:`close`.  The
    helper paces captures to ``config.fps`` (when ``paced`` is true), keeps the
    newest frame in a single slot, measures the frame rate and, when the source
    fails, reports it offline and shows "no signal" at once, then closes it and
    retries with a growing delay.

    The promise to a viewer: "no signal" within 2 s of a fault, live frames within
    3 s of the source coming back.  A driver keeps the first by noticing a failure
    within about 1.5 s (its timeouts); the helper keeps the second by publishing
    "no signal" before the close (which may take long) and by capping the delay
    between attempts at :attr:`retry_max_s`.
    """

    #: Pace captures to ``config.fps``; False for sources that block until a
    #: frame is ready (a device read).
    paced: bool = True
    #: First and largest delay between attempts to reopen a failed source, seconds.
    #: The camera runs only while someone watches (or records): a viewer waits at
    #: most about ``retry_max_s`` after the source is back, and a failing source
    #: is tried once a second, never in a busy loop.
    retry_initial_s: float = 0.5
    retry_max_s: float = 1.0
    #: While the source is failing, a "no signal" picture is published this often.
    no_signal_interval_s: float = 1.0

    #: While a stop waits for a driver thread that will not end, a warning this often.
    stop_warn_s: float = 5.0

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self._seq = 0
        # The one capture thread; kept until it has really ended, so a start()
        # meanwhile cannot run a second one beside it.
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()  # held briefly, never across a join
        self._stop_lock = threading.Lock()  # one stop at a time; a second waits for the first
        self._stop_event = threading.Event()
        self._online = False
        self._error: str | None = None

    # -- to implement -------------------------------------------------------
    def open(self) -> None:
        """Open the source (driver thread). Raise CameraError on failure."""

    @abc.abstractmethod
    def capture(self) -> tuple[bytes, int, int] | None:
        """Return one frame as ``(jpeg, width, height)`` (driver thread).

        May block until the source has a frame.  Return None when there is
        nothing new yet; raise CameraError when the source has failed.
        """

    def close(self) -> None:
        """Release the source (driver thread); must not raise."""

    def wake(self) -> None:
        """Unblock a capture() that waits on the source, so stop() returns soon
        (the thread calling stop(), after :attr:`stopping` became true)."""

    @property
    def stopping(self) -> bool:
        """True once stop() was called: a blocking capture() should give up."""
        return self._stop_event.is_set()

    @property
    def label(self) -> str:
        """How logs name this camera: ``garage (opencv)``, or the driver alone when unnamed."""
        name = self.config.name
        return f"{name} ({self.driver})" if name and name != self.driver else self.driver

    # -- the contract -------------------------------------------------------
    def start(self) -> None:
        """Start the capture thread (returns at once).  Raises CameraError if the
        previous capture thread has not ended yet (a stop still under way):
        never two capture threads for one camera."""
        with self._thread_lock:
            if self._thread is not None:
                if self._stop_event.is_set():
                    raise CameraError(f"the {self.label} camera is still stopping; try again shortly")
                return
            self._stop_event = threading.Event()
            self._frame = None  # a frame from before the last stop is stale
            self._rate.reset()
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop_event,),
                name=f"camera-{self.config.name or self.driver}",
                daemon=True,
            )
            self._thread.start()
        log.info("%s camera started", self.label)

    def stop(self) -> None:
        """Stop the capture thread and release the source; blocks until the thread
        has ended (off the IOLoop: see :class:`Camera`).  Idempotent; a stop
        while another is under way waits for that one."""
        with self._stop_lock:
            with self._thread_lock:
                thread = self._thread
                if thread is None:
                    return
                self._stop_event.set()
            self.wake()
            thread.join(self.stop_warn_s)
            waited_s = self.stop_warn_s
            while thread.is_alive():
                log.warning(
                    "%s camera: its driver has not let go after %g s; still waiting", self.label, waited_s
                )
                thread.join(self.stop_warn_s)
                waited_s += self.stop_warn_s
            with self._thread_lock:
                self._thread = None
                self._online = False
        log.info("%s camera stopped", self.label)

    @property
    def running(self) -> bool:
        """True from start() until stop() is called."""
        return self._thread is not None and not self._stop_event.is_set()

    @property
    def online(self) -> bool:
        return self.running and self._online

    @property
    def error(self) -> str | None:
        return self._error

    # -- the driver thread --------------------------------------------------
    def _publish(self, jpeg: bytes, width: int, height: int) -> None:
        self._seq += 1
        self._publish_frame(Frame(jpeg, self._seq, time.time(), width, height))

    def _run(self, stop: threading.Event) -> None:
        interval_s = 1.0 / self.config.fps if self.config.fps > 0 else 0.0
        retry_s = self.retry_initial_s
        opened = False
        next_due = time.monotonic()
        while not stop.is_set():
            try:
                if not opened:
                    self.open()
                    opened = True
                result = self.capture()
            except CameraError as exc:
                self.failures += 1
                if self._online or self._error != str(exc):
                    log.warning("%s camera failed: %s (retrying in %.1f s)", self.label, exc, retry_s)
                self._online = False
                self._error = str(exc)
                # Viewers see the outage now, not after the close: releasing a
                # failed device can take long (an SDK waiting for a dead thread).
                shown_at = time.monotonic()
                self._publish_no_signal()
                if opened:
                    self._safe_close()
                    opened = False
                self._wait_showing_no_signal(stop, time.monotonic() + retry_s, shown_at)
                retry_s = min(retry_s * 2, self.retry_max_s)
                next_due = time.monotonic()
                continue
            if result is not None:
                self._publish(*result)  # before going online: latest() is then fresh
                if not self._online:
                    if self._error is not None:
                        log.info("%s camera is back online", self.label)
                    self._online = True
                    self._error = None
                retry_s = self.retry_initial_s
            if self.paced and interval_s:
                next_due += interval_s
                delay = next_due - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -interval_s:
                    next_due = time.monotonic()  # fell behind: do not burst to catch up
        if opened:
            self._safe_close()

    def _wait_showing_no_signal(self, stop: threading.Event, until: float, shown_at: float) -> None:
        """Wait until ``until`` (time.monotonic; or until stopped), publishing a fresh
        "no signal" picture every ``no_signal_interval_s`` after the one published at
        ``shown_at``, so viewers see the outage go on."""
        next_at = shown_at + self.no_signal_interval_s
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_at:
                self._publish_no_signal()
                next_at = now + self.no_signal_interval_s
            wake_at = min(next_at, until)
            if now >= until or stop.wait(max(0.0, wake_at - now)):
                return

    def _publish_no_signal(self) -> None:
        from cameras.nosignal import no_signal_frame  # Pillow, only when needed

        frame = no_signal_frame(self.config, self._frame, self._seq + 1, self.config.name or self.driver)
        if frame is not None:
            self._seq = frame.seq
            self._publish_frame(frame)

    def _safe_close(self) -> None:
        try:
            self.close()
        except Exception:  # a driver's release must never kill the thread
            log.exception("%s camera failed to close", self.driver)
