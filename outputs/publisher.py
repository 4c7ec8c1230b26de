"""The origin's output of a camera to the message bus (``--publish``).

:class:`Publisher` is an :class:`~feed.Output` of the camera's feed: every
frame the source makes is put on the source's thread into a mailbox of one
(:class:`~frame.Newest`), and the bus's thread publishes the newest, unchanged
(:func:`bus.frame_headers`); a frame replaced before the bus took it is
counted as not published.  Interest from edges is heard on the bus's thread
and acted on on the IOLoop: a hold keeps the camera running while any edge
has spoken within :data:`bus.INTEREST_TTL_S`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from bus import (
    DEFAULT_PREFIX,
    INTEREST_TTL_S,
    BusThread,
    frame_headers,
    frames_subject,
    interest_subject,
    shown,
)
from feed import FrameFeed, Hold, Output
from frame import CameraError, Frame, Newest, Periodic

log = logging.getLogger(__name__)

#: How often the edges' interest is looked at, ms.
INTEREST_CHECK_MS = 500
#: At most this many edges are remembered (an edge id is whatever a bus client says).
MAX_EDGES = 1024
#: The longest edge id taken, characters; the most viewers one edge may claim.
MAX_EDGE_ID = 200
MAX_EDGE_VIEWERS = 1_000_000


def parse_interest(data: bytes) -> tuple[str, int] | None:
    """An edge's interest message (``{"edge": ID, "viewers": N}``, JSON) as
    ``(edge, viewers)``, or None when it is not one: not JSON, no string id of
    1 to :data:`MAX_EDGE_ID` characters, or viewers not a whole number from 0 to
    :data:`MAX_EDGE_VIEWERS`.  Pure; never raises."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    edge, viewers = body.get("edge"), body.get("viewers", 0)
    if not isinstance(edge, str) or not 0 < len(edge) <= MAX_EDGE_ID:
        return None
    if isinstance(viewers, bool) or not isinstance(viewers, int) or not 0 <= viewers <= MAX_EDGE_VIEWERS:
        return None
    return edge, viewers


class Publisher(Output):
    """One camera's frames to the bus, for the edges (see the module).

    ``start`` (IOLoop) starts the bus's thread and attaches to ``feed``;
    ``put`` runs on the source's thread; ``close`` (IOLoop) lets the camera
    go and ends the bus's thread on a worker thread."""

    kind = "publishing"

    def __init__(
        self, feed: FrameFeed, servers: list[str], prefix: str = DEFAULT_PREFIX, auth: str | None = None
    ) -> None:
        self.feed = feed
        self.camera = feed.name
        self.servers = servers
        self.prefix = prefix
        self.subject = frames_subject(prefix, feed.name)
        self.bus = BusThread(servers, f"camstream origin {feed.name}", setup=self._subscribe, auth=auth)
        self._waiting: Newest[Frame] = Newest()
        self.frames_published = 0
        self.frames_failed = 0
        self.bytes_published = 0
        #: edge id -> (viewers, monotonic time heard), written on the bus's thread.
        self.edges: dict[str, tuple[int, float]] = {}
        self._hold: Hold | None = None
        self._timer: Periodic | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._too_big_at = -60.0
        #: Interest messages that were not one, or came from one edge too many.
        self.interest_rejected = 0

    def start(self) -> None:
        """Connect (in the background) and take the feed's frames from now on
        (IOLoop).  Raises CameraError without nats-py."""
        self.bus.start()
        self.feed.attach(self, hold=False)
        self._timer = Periodic(self._check_interest, INTEREST_CHECK_MS)
        self._timer.start()

    async def _subscribe(self, nc: Any) -> None:
        await nc.subscribe(interest_subject(self.prefix, self.camera), cb=self._interest)

    async def _interest(self, msg: Any) -> None:
        interest = parse_interest(msg.data)
        if interest is None:
            self.interest_rejected += 1
            return
        edge, viewers = interest
        now = time.monotonic()
        if edge not in self.edges and len(self.edges) >= MAX_EDGES:
            self._forget_edges(now)
            if len(self.edges) >= MAX_EDGES:  # as many live edges as the bound: a newcomer waits
                self.interest_rejected += 1
                return
        self.edges[edge] = (viewers, now)

    def _forget_edges(self, now: float) -> None:
        """Drop the edges not heard from within :data:`INTEREST_TTL_S` (the bus's thread,
        the one that writes ``edges``)."""
        for edge, (_, at) in list(self.edges.items()):
            if now - at > INTEREST_TTL_S:
                self.edges.pop(edge, None)

    # -- the source's thread ----------------------------------------------------
    def put(self, frame: Frame) -> None:
        """Keep ``frame`` as the next to publish, and wake the bus's thread if it
        is not woken already (never blocks)."""
        if self._waiting.put(frame):
            self.bus.call(self._send)

    # -- the bus's thread -------------------------------------------------------
    def _send(self) -> None:
        frame = self._waiting.take()
        nc = self.bus.nc
        if frame is None or nc is None or not self.bus.connected:
            return
        task = asyncio.ensure_future(self._publish(nc, frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, nc: Any, frame: Frame) -> None:
        try:
            await nc.publish(self.subject, frame.jpeg, headers=frame_headers(frame))
        except Exception as exc:  # disconnected meanwhile: the frame is lost, the next one goes
            from nats.errors import MaxPayloadError

            self.frames_failed += 1
            if isinstance(exc, MaxPayloadError):
                self._too_big(len(frame.jpeg), exc)
            else:
                log.debug("%s: publish failed: %s", self.camera, exc)
            return
        self.frames_published += 1
        self.bytes_published += len(frame.jpeg)

    def _too_big(self, size: int, exc: Exception) -> None:
        """A frame larger than the NATS server's ``max_payload``: never reaches an edge.
        Said once a minute, with the fix."""
        now = time.monotonic()
        if now - self._too_big_at >= 60.0:
            self._too_big_at = now
            log.warning(
                "%s: a %d-byte frame is larger than the NATS server's max_payload (%s): the edges get "
                "none; raise max_payload in nats-server.conf (8MB), or lower --quality or the size",
                self.camera,
                size,
                exc,
            )

    # -- the IOLoop ---------------------------------------------------------------
    def live_edges(self) -> dict[str, int]:
        """The edges heard from within :data:`INTEREST_TTL_S`, with their viewers."""
        now = time.monotonic()
        return {
            edge: viewers for edge, (viewers, at) in list(self.edges.items()) if now - at <= INTEREST_TTL_S
        }

    def _check_interest(self) -> None:
        wanted = bool(self.live_edges())
        if wanted and self._hold is None:
            try:
                self._hold = self.feed.hold("edges")
            except CameraError as exc:
                log.warning("%s: cannot start the camera for the edges: %s", self.camera, exc)
        elif not wanted and self._hold is not None:
            self._hold.release()
            self._hold = None

    def status(self) -> dict[str, Any]:
        edges = self.live_edges()
        return {
            "servers": [shown(url) for url in self.servers],
            "subject": self.subject,
            "connected": self.bus.connected,
            "error": self.bus.error,
            "frames_published": self.frames_published,
            "bytes_published": self.bytes_published,
            "frames_not_published": self.frames_failed + self._waiting.superseded,
            "bus_reconnects": self.bus.reconnects,
            "edges": edges,
            "edge_viewers": sum(edges.values()),
            "interest_rejected": self.interest_rejected,
        }

    def close(self) -> asyncio.Future[Any] | None:
        """Stop publishing and let the camera go (IOLoop), then end the bus's
        thread on a worker thread (it takes a moment): the future returned is
        done when it has ended.  Idempotent."""
        if self._timer is not None:
            self._timer.stop()
        self.feed.detach(self)
        if self._hold is not None:
            self._hold.release()
            self._hold = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.bus.stop()
            return None
        return loop.run_in_executor(None, self.bus.stop)
