"""An edge's camera: the frames an origin publishes on the message bus.

``--camera LOCAL=nats:nats://HOST:PORT/NAME`` makes a :class:`NatsCamera`: a
frame source like any driver, whose frames come from the origin's
:class:`outputs.publisher.Publisher` over NATS (:mod:`bus`).  Its
subscription holds a few frames at most (:data:`PENDING_FRAMES`) and the
source keeps only the newest, so an edge that falls behind drops frames,
never builds a backlog.  All its NATS work runs on the bus's thread, never on
the IOLoop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Callable
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
from cameras.nosignal import no_signal_frame
from frame import CameraError, Frame

log = logging.getLogger(__name__)

#: Frames an edge's subscription may hold before NATS's client drops more.
PENDING_FRAMES = 4
#: An edge shows "no signal" after this long without a frame, seconds.
SILENCE_S = 2.0
#: An edge's bus latency (capture to arrival) is told over this many frames.
LATENCY_FRAMES = 1000


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
        """The subscription's figures: ``/status``'s ``"bus"`` (and ``/metrics``)."""
        bus = self.bus
        return {
            "bus": {
                "server": shown(self.url.server),
                "camera": self.url.camera,
                "subject": frames_subject(self.prefix, self.url.camera),
                "connected": bool(bus and bus.connected),
                "error": bus.error if bus else None,
                "frames_received": self.frames_received,
                "frames_dropped": self.frames_dropped + (bus.dropped if bus else 0),
                "bus_reconnects": self.reconnects + (bus.reconnects if bus else 0),
                "latency_ms": self.latency_ms(),
            }
        }

    def latency_ms(self) -> dict[str, float] | None:
        """p50 and p99 of capture (the origin's clock) to arrival here, milliseconds,
        over the last :data:`LATENCY_FRAMES` frames; None before any.  Across
        machines it includes their clocks' difference."""
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
        headers = msg.headers or {}
        try:
            timestamp = float(headers.get("Camstream-Time", time.time()))
            width = int(headers.get("Camstream-Width", 0))
            height = int(headers.get("Camstream-Height", 0))
        except ValueError:
            return
        live = headers.get("Camstream-Live", "1") != "0"
        if not self._running:
            return
        if live:
            self._latency.append(time.time() - timestamp)
        self._seq += 1
        self._last_frame_at = time.monotonic()
        self.frames_received += 1
        if not self._online_seen:
            self._online_seen = True
            log.info("%s camera: frames from %s", self.config.name, shown(self.url.server))
        self._publish_frame(Frame(bytes(msg.data), self._seq, timestamp, width, height, live))
