"""An edge's camera: the frames an origin publishes on the message bus.

``--camera LOCAL=nats:nats://HOST:PORT/NAME`` makes a :class:`NatsCamera`: a
frame source like any driver, whose frames come from the origin's
:class:`outputs.publisher.Publisher` over NATS (:mod:`bus`).  Its
subscription holds a few frames at most (:data:`PENDING_FRAMES`) and the
source keeps only the newest, so an edge that falls behind drops frames,
never builds a backlog.  All its NATS work runs on the bus's thread, never on
the IOLoop.

The bus is input like any other: whoever may publish on the subject can send
anything, so every message is checked (:func:`check_message`, a pure
function) before it becomes a frame.  One that fails is dropped and counted
by reason (``frames_rejected`` in ``/status``'s ``"bus"``,
``camstream_frames_rejected_total`` in ``/metrics``), with one WARNING a
minute at most (:class:`Rejections`); the next good message is shown as usual.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bus import (
    DEFAULT_PREFIX,
    INTEREST_INTERVAL_S,
    BusThread,
    frames_subject,
    interest_subject,
    parse_bus_url,
    require_client,
    shown,
)
from cameras.base import Camera, CameraConfig
from cameras.jpeg import SOI, jpeg_size
from cameras.nosignal import no_signal_frame
from cameras.relay import MAX_PART_BYTES
from frame import CameraError, Frame

log = logging.getLogger(__name__)

#: Frames an edge's subscription may hold before NATS's client drops more.
PENDING_FRAMES = 4
#: An edge shows "no signal" after this long without a frame, seconds.
SILENCE_S = 2.0
#: An edge's bus latency (capture to arrival) is told over this many frames.
LATENCY_FRAMES = 1000

# -- what a bus message must be -------------------------------------------------------
#: The largest frame an edge takes from the bus, bytes: the limit of a relayed frame.
MAX_FRAME_BYTES = MAX_PART_BYTES
#: The largest width or height: JPEG's limit (as :data:`outputs.sizes.MAX_WIDTH`).
MAX_SIDE = 65535
#: The largest ``Camstream-Seq`` (a 64-bit signed counter).
MAX_SEQ = 2**63 - 1
#: A capture time further than this from the edge's clock is refused, seconds.
MAX_CLOCK_SKEW_S = 86400.0
EOI = b"\xff\xd9"
#: Dropped bus messages are told in one WARNING at most this often, seconds.
REJECT_WARN_EVERY_S = 60.0

# Why a bus message was dropped: the keys of ``frames_rejected_by_reason`` in
# ``/status`` and the ``reason`` label of ``camstream_frames_rejected_total``.
EMPTY = "empty"
TOO_LARGE = "too_large"
NO_SOI = "no_soi"
NO_EOI = "no_eoi"
NO_SOF = "no_sof"
BAD_TIME = "bad_time"
BAD_SIZE = "bad_size"
SIZE_MISMATCH = "size_mismatch"
BAD_SEQ = "bad_seq"
BAD_LIVE = "bad_live"
#: Each reason, for people (the WARNING).
REASONS = {
    EMPTY: "an empty message",
    TOO_LARGE: f"larger than {MAX_FRAME_BYTES} bytes",
    NO_SOI: "not a JPEG (no SOI)",
    NO_EOI: "a JPEG cut short (no EOI)",
    NO_SOF: "a JPEG without a picture size (no SOF before SOS)",
    BAD_TIME: f"Camstream-Time not a finite Unix time within {MAX_CLOCK_SKEW_S:g} s of now",
    BAD_SIZE: f"Camstream-Width or Camstream-Height not a whole number from 1 to {MAX_SIDE}",
    SIZE_MISMATCH: "Camstream-Width and Camstream-Height not the JPEG's size",
    BAD_SEQ: f"Camstream-Seq not a whole number from 0 to {MAX_SEQ}",
    BAD_LIVE: "Camstream-Live not 0 or 1",
}


class RejectedMessage(ValueError):
    """A bus message that is not a frame; ``reason`` is a key of :data:`REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(REASONS[reason])
        self.reason = reason


@dataclass(frozen=True)
class CheckedMessage:
    """What a checked bus message says of its frame (the JPEG is the payload).

    ``timestamp``: capture time, Unix seconds (the arrival time if the message
    gave none; then ``timed`` is False and it is no latency sample)."""

    timestamp: float
    width: int
    height: int
    live: bool
    timed: bool


def _whole(text: str, largest: int, smallest: int = 0) -> int | None:
    """``text`` as a whole number from ``smallest`` to ``largest`` (ASCII digits
    only: no sign, space or underscore), else None."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(largest)):
        return None
    value = int(text)
    return value if smallest <= value <= largest else None


def check_message(data: bytes, headers: Mapping[str, str] | None, now: float) -> CheckedMessage:
    """Check one bus message (payload and headers, as :func:`bus.frame_headers`
    makes them) received at ``now`` (Unix seconds); return what it says of its frame.

    The payload must be a JPEG of at most :data:`MAX_FRAME_BYTES`: SOI first,
    a start-of-frame header (the picture size) before the picture data, and
    EOI last (nothing after it, as the relay driver takes a frame).  Each header is optional, but when
    present must hold what an origin sends: ``Camstream-Time`` a finite time
    within :data:`MAX_CLOCK_SKEW_S` of ``now``; ``Camstream-Width`` and
    ``Camstream-Height`` whole numbers from 1 to :data:`MAX_SIDE`, equal to the
    JPEG's own size; ``Camstream-Seq`` a whole number from 0 to :data:`MAX_SEQ`;
    ``Camstream-Live`` ``0`` or ``1``.  A message without headers (a valid JPEG
    published by another tool) is a live frame captured on arrival, at the
    JPEG's own size.  Other headers are ignored.

    Pure: any thread, microseconds (the JPEG's headers are walked, its picture
    is not decoded).  Raises :class:`RejectedMessage` with the first reason
    found, checked in the order of :data:`REASONS`."""
    if not data:
        raise RejectedMessage(EMPTY)
    if len(data) > MAX_FRAME_BYTES:
        raise RejectedMessage(TOO_LARGE)
    if not data.startswith(SOI):
        raise RejectedMessage(NO_SOI)
    if not data.endswith(EOI):
        raise RejectedMessage(NO_EOI)
    size = jpeg_size(data)
    if size is None:
        raise RejectedMessage(NO_SOF)
    headers = headers or {}
    timestamp, timed = now, False
    if "Camstream-Time" in headers:
        try:
            timestamp = float(headers["Camstream-Time"])
        except ValueError:
            raise RejectedMessage(BAD_TIME) from None
        if not math.isfinite(timestamp) or abs(timestamp - now) > MAX_CLOCK_SKEW_S:
            raise RejectedMessage(BAD_TIME)
        timed = True
    width, height = size
    if "Camstream-Width" in headers or "Camstream-Height" in headers:
        said = (
            _whole(headers.get("Camstream-Width", str(width)), MAX_SIDE, 1),
            _whole(headers.get("Camstream-Height", str(height)), MAX_SIDE, 1),
        )
        if None in said:
            raise RejectedMessage(BAD_SIZE)
        if said != size:
            raise RejectedMessage(SIZE_MISMATCH)
    if "Camstream-Seq" in headers and _whole(headers["Camstream-Seq"], MAX_SEQ) is None:
        raise RejectedMessage(BAD_SEQ)
    live = headers.get("Camstream-Live", "1")
    if live not in ("0", "1"):
        raise RejectedMessage(BAD_LIVE)
    return CheckedMessage(timestamp, width, height, live == "1", timed)


class Rejections:
    """The bus messages an edge dropped, by reason, and when to say so.

    :meth:`add` is called on the bus's thread; :meth:`by_reason` and
    :attr:`total` may be read from any other (the counts of a fixed set of
    keys, changed in place: a read never sees the dictionary change size)."""

    def __init__(self, every_s: float = REJECT_WARN_EVERY_S) -> None:
        self.every_s = every_s
        self.total = 0
        self._counts = dict.fromkeys(REASONS, 0)
        self._warned_at: float | None = None
        self._since_warning = 0

    def add(self, reason: str, now: float) -> str | None:
        """Count one message dropped for ``reason`` at ``now`` (monotonic seconds);
        return the WARNING's text if one is due (the first drop, then at most one
        every ``every_s``), else None."""
        self.total += 1
        self._counts[reason] += 1
        self._since_warning += 1
        if self._warned_at is not None and now - self._warned_at < self.every_s:
            return None
        if self._warned_at is None:
            tail = f"counted as frames_rejected in /status; said at most once every {self.every_s:g} s"
        else:
            tail = f"{self._since_warning} dropped in the last {now - self._warned_at:.0f} s"
        self._warned_at, self._since_warning = now, 0
        return f"dropped a bus message: {REASONS[reason]}; {tail}"

    def by_reason(self) -> dict[str, int]:
        """The drops so far by reason (every reason, zeros too)."""
        return dict(self._counts)


class NatsCamera(Camera):
    """An edge's camera: the frames an origin publishes for camera NAME
    (``--camera LOCAL=nats:nats://HOST:PORT/NAME``).

    While it runs it subscribes (a few frames pending at most, the newest
    kept) and says it is wanted once a second; when no frame has come for
    :data:`SILENCE_S` (the bus or the origin is down) it shows the "no signal"
    picture once a second until frames come again, by themselves."""

    driver = "nats"

    def __init__(
        self,
        config: CameraConfig,
        *,
        prefix: str = DEFAULT_PREFIX,
        auth: str | None = None,
        viewers: Callable[[], int] | None = None,
    ) -> None:
        """``prefix``: the subjects' (``--bus-prefix``); ``auth``: ``--bus-auth``
        (USER:PASSWORD or a token) for a URL that gives none; ``viewers``: this
        camera's viewers, told to the origin (called on the bus's thread: a read
        that races the IOLoop raises RuntimeError and is told again next second).
        Raises CameraError for a bad source or without nats-py."""
        super().__init__(config)
        if not config.source:
            raise CameraError("the nats camera needs a source: nats://HOST:PORT/NAME")
        try:
            url = parse_bus_url(config.source, camera=True)
        except ValueError as exc:
            raise CameraError(f"--source {exc}") from None
        require_client()
        self.url = url
        self.prefix = prefix
        self.auth = auth
        #: Capture (the origin's clock) to arrival here, seconds, of the last frames.
        self._latency: collections.deque[float] = collections.deque(maxlen=LATENCY_FRAMES)
        self.edge_id = f"{socket.gethostname()}:{os.getpid()}:{config.name}"
        self._seq = 0
        self._running = False
        self._last_frame_at = 0.0
        self.frames_received = 0
        #: Bus messages dropped for failing :func:`check_message`, ever.
        self.rejections = Rejections()
        #: Frames and reconnections of the connections of earlier runs (a connection per run).
        self.frames_dropped = 0
        self.reconnects = 0
        self._online_seen = False
        self.bus: BusThread | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._viewers = viewers or (lambda: 0)

    # -- the contract -------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._frame = None
        self._rate.reset()
        self._online_seen = False
        self._last_frame_at = time.monotonic()
        self._latency.clear()
        self.bus = BusThread(
            [self.url.server], f"camstream edge {self.config.name}", setup=self._setup, auth=self.auth
        )
        self.bus.start()
        self.bus.call(self._start_tasks)
        log.info(
            "%s camera started (NATS %s, camera %s)",
            self.config.name,
            shown(self.url.server),
            self.url.camera,
        )

    def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        bus, self.bus = self.bus, None
        if bus is not None:
            bus.stop()
            self.frames_dropped += bus.dropped
            self.reconnects += bus.reconnects
        log.info("%s camera stopped", self.config.name)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def online(self) -> bool:
        return (
            self._running and time.monotonic() - self._last_frame_at < SILENCE_S and self._frame is not None
        )

    @property
    def error(self) -> str | None:
        if not self._running or self.online:
            return None
        bus = self.bus
        if bus is not None and bus.error:
            return bus.error
        return f"no frame from the origin's camera {self.url.camera} on {shown(self.url.server)}"

    def status(self) -> dict[str, Any]:
        """The subscription's figures: ``/status``'s ``"bus"`` (and ``/metrics``):
        ``frames_received`` counts the messages taken as frames, ``frames_rejected``
        those dropped by :func:`check_message` (by reason in
        ``frames_rejected_by_reason``, every reason of :data:`REASONS`).  Any thread."""
        bus = self.bus
        return {
            "bus": {
                "server": shown(self.url.server),
                "camera": self.url.camera,
                "subject": frames_subject(self.prefix, self.url.camera),
                "connected": bool(bus and bus.connected),
                "error": bus.error if bus else None,
                "frames_received": self.frames_received,
                "frames_rejected": self.rejections.total,
                "frames_rejected_by_reason": self.rejections.by_reason(),
                "frames_dropped": self.frames_dropped + (bus.dropped if bus else 0),
                "bus_reconnects": self.reconnects + (bus.reconnects if bus else 0),
                "latency_ms": self.latency_ms(),
            }
        }

    def latency_ms(self) -> dict[str, float] | None:
        """p50 and p99 of capture (the origin's clock) to arrival here, milliseconds,
        over the last :data:`LATENCY_FRAMES` live frames that gave their capture
        time; None before any.  Only checked times are samples (finite, within
        :data:`MAX_CLOCK_SKEW_S`), so the figures are finite.  Across machines it
        includes their clocks' difference."""
        samples = sorted(self._latency)
        if not samples:
            return None

        def at(q: float) -> float:
            return round(samples[min(len(samples) - 1, int(q * len(samples)))] * 1000, 2)

        return {"p50": at(0.50), "p99": at(0.99), "frames": len(samples)}

    # -- the bus's thread -----------------------------------------------------------
    async def _setup(self, nc: Any) -> None:
        await nc.subscribe(
            frames_subject(self.prefix, self.url.camera),
            cb=self._message,
            pending_msgs_limit=PENDING_FRAMES,
            pending_bytes_limit=64 * 1024 * 1024,
        )
        await self._say_wanted(nc)

    def _start_tasks(self) -> None:
        self._tasks = [asyncio.ensure_future(self._heartbeat())]

    async def _heartbeat(self) -> None:
        """Once a second: say we are wanted, and show "no signal" if frames stopped."""
        while self._running:
            bus = self.bus
            if bus is not None and bus.nc is not None and bus.connected:
                await self._say_wanted(bus.nc)
            if time.monotonic() - self._last_frame_at >= SILENCE_S:
                if self._online_seen:
                    self._online_seen = False
                    self.failures += 1
                    log.warning("%s camera: %s", self.config.name, self.error)
                # Drawn off this loop (milliseconds of Pillow), published on it.
                drawn = await asyncio.get_running_loop().run_in_executor(
                    None, no_signal_frame, self.config, self._frame, 0
                )
                if (
                    drawn is not None
                    and self._running
                    and time.monotonic() - self._last_frame_at >= SILENCE_S
                ):
                    self._seq += 1  # numbered here, on the thread that numbers the frames
                    self._publish_frame(dataclasses.replace(drawn, seq=self._seq))
            await asyncio.sleep(INTEREST_INTERVAL_S)

    async def _say_wanted(self, nc: Any) -> None:
        try:
            viewers = self._viewers()
        except RuntimeError:  # the IOLoop changed the viewers meanwhile
            viewers = 0
        body = json.dumps({"edge": self.edge_id, "viewers": viewers}).encode()
        try:
            await nc.publish(interest_subject(self.prefix, self.url.camera), body)
        except Exception as exc:  # disconnected: said again in a second
            log.debug("%s: cannot say it is wanted: %s", self.config.name, exc)

    async def _message(self, msg: Any) -> None:
        if not self._running:
            return
        arrived = time.time()
        data = bytes(msg.data)
        try:
            checked = check_message(data, msg.headers, arrived)
        except RejectedMessage as exc:
            warning = self.rejections.add(exc.reason, time.monotonic())
            if warning is not None:
                log.warning("%s: %s", self.config.name, warning)
            else:
                log.debug("%s: dropped a bus message: %s", self.config.name, exc)
            return
        if checked.live and checked.timed:
            self._latency.append(arrived - checked.timestamp)
        self._seq += 1
        self._last_frame_at = time.monotonic()
        self.frames_received += 1
        if not self._online_seen:
            self._online_seen = True
            log.info("%s camera: frames from %s", self.config.name, shown(self.url.server))
        frame = Frame(data, self._seq, checked.timestamp, checked.width, checked.height, checked.live)
        self._publish_frame(frame)
