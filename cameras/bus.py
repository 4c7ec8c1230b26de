"""A camera across machines: frames over NATS from the origin to its edges.

The origin (``--publish nats://HOST:PORT``) publishes each frame of each
camera, unchanged, on ``<prefix>.<camera>.frames`` (:class:`Publisher`, an
output of the feed); an edge's camera ``NAME=nats:nats://HOST:PORT/NAME`` is
a frame source like any driver (:class:`NatsCamera`).  Camera on demand
across the cluster: while an edge's camera runs (it has viewers), it says so
once a second on ``<prefix>.<camera>.interest``; the origin holds its camera
running while it hears from any edge, and lets it idle out when none has
spoken for :data:`INTEREST_TTL_S`.

Each frame is one NATS message: the JPEG bytes as the payload, and headers
``Camstream-Seq`` (the origin's seq), ``Camstream-Time`` (capture time, Unix
seconds), ``Camstream-Width``, ``Camstream-Height`` and ``Camstream-Live``
(``1``, or ``0`` for the origin's "no signal" picture).  NATS delivers at
most once and cuts off a consumer that falls far behind instead of
buffering for it; an edge's subscription holds a few frames at most
(:data:`PENDING_FRAMES`) and keeps only the newest, so an edge that falls
behind drops frames, never builds a backlog.

All NATS work runs on a thread of its own with its own asyncio loop (nats-py
is asyncio), never on the IOLoop.  nats-py is imported only here, when a
bus is used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cameras.base import Camera, CameraConfig, CameraError, Frame

log = logging.getLogger(__name__)

#: Subjects start with this unless ``--bus-prefix`` says otherwise.
DEFAULT_PREFIX = "camstream"
#: Frames an edge's subscription may hold before NATS's client drops more.
PENDING_FRAMES = 4
#: An edge's camera says it is wanted this often, seconds.
INTEREST_INTERVAL_S = 1.0
#: The origin keeps a camera for an edge this long after its last word, seconds.
INTEREST_TTL_S = 3.0
#: An edge shows "no signal" after this long without a frame, seconds.
SILENCE_S = 2.0
#: While the bus stays unreachable, its error is logged again at most this often, seconds.
WARN_EVERY_S = 30.0
SCHEMES = ("nats", "tls")
#: An edge's bus latency (capture to arrival) is told over this many frames.
LATENCY_FRAMES = 1000


@dataclass(frozen=True)
class BusUrl:
    """A NATS server (``nats://`` or ``tls://``) and, for an edge's camera, the
    origin's camera name."""

    server: str
    camera: str = ""


def parse_bus_url(text: str, *, camera: bool) -> BusUrl:
    """``nats://HOST:PORT`` (``--publish``) or ``nats://HOST:PORT/NAME`` (an edge's
    camera source, ``camera=True``).  Raises ValueError with a message for people."""
    try:
        parts = urllib.parse.urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a NATS URL ({exc})") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ValueError(f"{text!r} is not a NATS URL: use nats://HOST:PORT or tls://HOST:PORT")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a NATS URL takes no query or fragment")
    name = parts.path.strip("/")
    if camera and not name:
        raise ValueError(f"{text!r} names no camera: use nats://HOST:PORT/NAME")
    if not camera and name:
        raise ValueError(f"{text!r}: --publish takes a server, nats://HOST:PORT, no path")
    if name and ("/" in name or "." in name or "*" in name or ">" in name or " " in name):
        raise ValueError(f"{text!r}: {name!r} is not a camera name")
    netloc = parts.netloc.rpartition("@")[2]
    auth = parts.netloc.rpartition("@")[0]
    server = f"{parts.scheme}://{auth + '@' if auth else ''}{netloc}"
    if port is None:
        server += ":4222"
    return BusUrl(server, name)


def require_client() -> None:
    """Raise CameraError, with the fix, if nats-py is not installed."""
    try:
        import nats  # noqa: F401  (only checking it is there)
    except ImportError as exc:
        raise CameraError(f"the NATS client is not installed (pip install -e '.[cluster]'): {exc}") from None


def shown(url: str) -> str:
    """``url`` for /status and the log: a password or token in it as ``***``."""
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = auth.partition(":")
    return f"{scheme}{sep}{user + ':***' if colon else '***'}@{host}"


def auth_options(servers: list[str], auth: str | None) -> dict[str, str]:
    """nats-py's credentials for ``auth`` (``USER:PASSWORD`` or a token), unless a
    server's URL gives its own (``nats://user:pass@host``), which then win."""
    if not auth or any(urllib.parse.urlsplit(url).username for url in servers):
        return {}
    user, colon, password = auth.partition(":")
    return {"user": user, "password": password} if colon else {"token": auth}


def frames_subject(prefix: str, camera: str) -> str:
    return f"{prefix}.{camera}.frames"


def interest_subject(prefix: str, camera: str) -> str:
    return f"{prefix}.{camera}.interest"


def frame_headers(frame: Frame) -> dict[str, str]:
    """The headers of ``frame``'s message (see the module)."""
    return {
        "Camstream-Seq": str(frame.seq),
        "Camstream-Time": f"{frame.timestamp:.6f}",
        "Camstream-Width": str(frame.width),
        "Camstream-Height": str(frame.height),
        "Camstream-Live": "1" if frame.live else "0",
    }


class BusThread:
    """One NATS connection on a thread of its own (its own asyncio loop).

    ``setup(nc)`` runs on that loop after each (re)connection is made, to
    subscribe; ``on_state(connected)`` is called there when the connection
    goes or comes back.  Reconnects forever.  Every method may be called from
    any thread; none blocks but :meth:`stop` (briefly)."""

    def __init__(
        self,
        servers: list[str],
        name: str,
        setup: Callable[[Any], Any] | None = None,
        on_state: Callable[[bool], None] | None = None,
        auth: str | None = None,
    ) -> None:
        self.servers = servers
        self.shown = ", ".join(shown(url) for url in servers)
        self._auth = auth_options(servers, auth)
        self.name = name
        self._setup = setup
        self._on_state = on_state or (lambda connected: None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.nc: Any = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self.connected = False
        #: Times the connection was lost and made again; messages nats-py dropped
        #: because a subscription had its pending limit (a consumer behind).
        self.reconnects = 0
        self.dropped = 0
        self.error: str | None = None
        self._warned_at = 0.0
        #: The server refused the login: kept as the error until a connection is made.
        self._refused = False

    def start(self) -> None:
        """Start the thread and its loop (never waits: callbacks given to :meth:`call`
        before the loop runs are queued on it; the connection is made there, and
        made again, by itself).  Raises CameraError without nats-py."""
        require_client()
        self.loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()  # bound to the loop that first waits on it
        self._thread = threading.Thread(target=self._run, name=f"bus-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the connection and end the thread (blocks up to a few seconds)."""
        thread, self._thread = self._thread, None
        if thread is None or self.loop is None:
            return
        stopped = self._stopped
        if stopped is not None:
            self.loop.call_soon_threadsafe(stopped.set)
        thread.join(10)

    def call(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` on the bus's loop soon (never blocks)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(callback)

    def _run(self) -> None:
        loop = self.loop
        assert loop is not None
        try:
            loop.run_until_complete(self._main())
            # The tasks still on the loop (a camera's heartbeat, a publish) end with it.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        except Exception:
            log.exception("%s: the NATS connection's thread failed", self.name)
        finally:
            loop.close()

    async def _main(self) -> None:
        import nats

        assert self._stopped is not None
        while not self._stopped.is_set():
            try:
                self.nc = await nats.connect(
                    self.servers,
                    name=self.name,
                    connect_timeout=2,
                    reconnect_time_wait=0.5,
                    max_reconnect_attempts=-1,
                    ping_interval=5,
                    max_outstanding_pings=2,
                    allow_reconnect=True,
                    error_cb=self._error,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    **self._auth,
                )
            except Exception as exc:  # the first connection: nats-py does not retry it
                self._unreachable(exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), 1.0)
                continue
            self._set_connected(True)
            if self._setup is not None:
                await self._setup(self.nc)
            await self._stopped.wait()
        if self.nc is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                await asyncio.wait_for(self.nc.close(), 3)

    def _unreachable(self, exc: BaseException) -> None:
        """The connection could not be made: ``exc`` becomes the error, unless the
        server refused the login, which stays the error (the reset of the connection
        that follows says nothing) until a connection is made."""
        from nats.errors import AuthorizationError

        refused = isinstance(exc, AuthorizationError) or "authorization" in str(exc).lower()
        if refused or not self._refused:
            self._refused = refused
            self._set_error(f"cannot reach NATS at {self.shown}: {exc or type(exc).__name__}")

    def _set_error(self, text: str) -> None:
        # A WARNING when the connection goes, then at most one every WARN_EVERY_S
        # while nats-py tries again (a wrong password would say so twice a second).
        now = time.monotonic()
        if text != self.error:
            if self.connected or self.error is None or now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("%s: %s", self.name, text)
            else:
                log.debug("%s: %s", self.name, text)
        self.error = text
        self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            if connected:
                self.error = None
                self._refused = False
            self._on_state(connected)

    async def _error(self, exc: Exception) -> None:
        from nats.errors import SlowConsumerError

        if isinstance(exc, SlowConsumerError):
            self.dropped += 1
            return
        if not self.connected:  # refused (credentials, TLS) while nats-py tries again
            self._unreachable(exc)
            return
        log.debug("%s: NATS: %s", self.name, exc)

    async def _disconnected(self) -> None:
        if self._stopped is not None and self._stopped.is_set():
            return
        self._set_error(f"lost the connection to NATS at {self.shown}; reconnecting")

    async def _reconnected(self) -> None:
        self.reconnects += 1
        log.info("%s: connected to NATS again", self.name)
        self._set_connected(True)


class Publisher:
    """The origin's output of one camera's feed to the bus (``--publish``).

    Every frame the camera makes (a sink on its driver thread, which only
    stores the newest and wakes the bus's thread) is published unchanged; a
    frame replaced before the bus took it is counted as dropped.  Interest
    from edges is heard on the bus's thread and acted on on the IOLoop: a
    hold keeps the camera running while any edge has spoken within
    :data:`INTEREST_TTL_S`.  ``start``/``close`` on the IOLoop."""

    kind = "publishing"

    def __init__(
        self, feed: Any, servers: list[str], prefix: str = DEFAULT_PREFIX, auth: str | None = None
    ) -> None:
        self.feed = feed
        self.servers = servers
        self.prefix = prefix
        self.subject = frames_subject(prefix, feed.name)
        self.bus = BusThread(servers, f"camstream origin {feed.name}", setup=self._subscribe, auth=auth)
        self._waiting: Frame | None = None
        self._lock = threading.Lock()
        self._wake_pending = False
        self.frames_published = 0
        self.frames_dropped = 0
        self.bytes_published = 0
        #: edge id -> (viewers, monotonic time heard), written on the bus's thread.
        self.edges: dict[str, tuple[int, float]] = {}
        self._hold: Any = None
        self._timer: Any = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._too_big_at = -60.0

    def start(self) -> None:
        from tornado.ioloop import PeriodicCallback

        self.bus.start()
        self.feed.camera.add_sink(self.put)
        self._timer = PeriodicCallback(self._check_interest, 500)
        self._timer.start()

    async def _subscribe(self, nc: Any) -> None:
        await nc.subscribe(interest_subject(self.prefix, self.feed.name), cb=self._interest)

    async def _interest(self, msg: Any) -> None:
        try:
            body = json.loads(msg.data)
            edge, viewers = str(body["edge"]), int(body.get("viewers", 0))
        except (ValueError, KeyError, TypeError):
            return
        self.edges[edge] = (viewers, time.monotonic())

    # -- the driver's thread ----------------------------------------------------
    def put(self, frame: Frame) -> None:
        """The sink: keep ``frame`` as the next to publish (never blocks)."""
        with self._lock:
            if self._waiting is not None:
                self.frames_dropped += 1
            self._waiting = frame
            if self._wake_pending:
                return
            self._wake_pending = True
        self.bus.call(self._send)

    # -- the bus's thread -------------------------------------------------------
    def _send(self) -> None:
        with self._lock:
            frame, self._waiting = self._waiting, None
            self._wake_pending = False
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

            self.frames_dropped += 1
            if isinstance(exc, MaxPayloadError):
                self._too_big(len(frame.jpeg), exc)
            else:
                log.debug("%s: publish failed: %s", self.feed.name, exc)
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
                self.feed.name,
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
                log.warning("%s: cannot start the camera for the edges: %s", self.feed.name, exc)
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
            "frames_not_published": self.frames_dropped,
            "bus_reconnects": self.bus.reconnects,
            "edges": edges,
            "edge_viewers": sum(edges.values()),
        }

    async def close(self) -> None:
        """Stop publishing and let the camera go (IOLoop), then end the bus's
        thread (on a worker thread: it takes a moment)."""
        if self._timer is not None:
            self._timer.stop()
        self.feed.camera.remove_sink(self.put)
        if self._hold is not None:
            self._hold.release()
            self._hold = None
        await asyncio.get_running_loop().run_in_executor(None, self.bus.stop)


class NatsCamera(Camera):
    """An edge's camera: the frames an origin publishes for camera NAME
    (``--camera LOCAL=nats:nats://HOST:PORT/NAME``).

    While it runs it subscribes (a few frames pending at most, the newest
    kept) and says it is wanted once a second; when no frame has come for
    :data:`SILENCE_S` (the bus or the origin is down) it shows the "no signal"
    picture once a second until frames come again, by themselves."""

    driver = "nats"

    def __init__(self, config: CameraConfig, prefix: str = DEFAULT_PREFIX) -> None:
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
        #: ``--bus-auth``: USER:PASSWORD or a token (the server sets it), if the URL gives none.
        self.auth: str | None = None
        #: Capture (the origin's clock) to arrival here, seconds, of the last frames.
        self._latency: collections.deque[float] = collections.deque(maxlen=LATENCY_FRAMES)
        self.edge_id = f"{socket.gethostname()}:{os.getpid()}:{config.name}"
        self._frame: Frame | None = None
        self._seq = 0
        self._running = False
        self._last_frame_at = 0.0
        self._rate: list[float] = []
        self.frames_received = 0
        #: Frames and reconnections of the connections of earlier runs (a connection per run).
        self.frames_dropped = 0
        self.reconnects = 0
        self._online_seen = False
        self.bus: BusThread | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        #: Viewers of this camera, reported to the origin; the server sets it to
        #: its feed's count (read on the bus's thread: a racy read is retried next second).
        self.viewers: Callable[[], int] = lambda: 0

    # -- the contract -------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._frame = None
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

    def latest(self) -> Frame | None:
        return self._frame

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

    def bus_status(self) -> dict[str, Any]:
        """The subscription's figures, for ``/status`` (``"bus"``) and ``/metrics``."""
        bus = self.bus
        return {
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

    @property
    def measured_fps(self) -> float:
        now = time.monotonic()
        recent = [t for t in self._rate if now - t <= 2.0]
        return len(recent) / 2.0 if self._running else 0.0

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
                jpeg = await asyncio.get_running_loop().run_in_executor(None, self._render_no_signal)
                if jpeg is not None and self._running and time.monotonic() - self._last_frame_at >= SILENCE_S:
                    self._seq += 1
                    last = self._frame
                    width, height = (
                        (last.width, last.height) if last else (self.config.width, self.config.height)
                    )
                    self._frame = Frame(jpeg, self._seq, time.time(), width, height, live=False)
                    self._emit(self._frame)
            await asyncio.sleep(INTEREST_INTERVAL_S)

    async def _say_wanted(self, nc: Any) -> None:
        try:
            viewers = self.viewers()
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
        frame = Frame(bytes(msg.data), self._seq, timestamp, width, height, live)
        self._frame = frame
        now = time.monotonic()
        self._last_frame_at = now
        self.frames_received += 1
        if live:
            self.frames_captured += 1
        if not self._online_seen:
            self._online_seen = True
            log.info("%s camera: frames from %s", self.config.name, shown(self.url.server))
        self._rate = [t for t in self._rate[-120:] if now - t <= 2.0] + [now]
        self._emit(frame)

    def _render_no_signal(self) -> bytes | None:
        """The "no signal" picture at the last frame's size (a worker thread)."""
        from cameras.nosignal import render_no_signal

        last = self._frame
        width, height = (last.width, last.height) if last else (self.config.width, self.config.height)
        try:
            return render_no_signal(self.config.name, width, height)
        except (OSError, ValueError):
            return None
