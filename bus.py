"""The message bus: one NATS connection on a thread of its own, its subjects and URLs.

An origin (``--publish nats://HOST:PORT``) publishes each frame of each
camera, unchanged, on ``<prefix>.<camera>.frames``
(:class:`outputs.publisher.Publisher`, an output of the camera's feed); an
edge's camera ``NAME=nats:nats://HOST:PORT/NAME`` is a frame source like any
driver (:class:`cameras.nats.NatsCamera`).  Camera on demand across the
cluster: while an edge's camera runs (it has viewers), it says so once a
second on ``<prefix>.<camera>.interest``; the origin holds its camera running
while it hears from any edge, and lets it idle out when none has spoken for
:data:`INTEREST_TTL_S`.

Each frame is one NATS message: the JPEG bytes as the payload, and headers
``Camstream-Seq`` (the origin's seq), ``Camstream-Time`` (capture time, Unix
seconds), ``Camstream-Width``, ``Camstream-Height`` and ``Camstream-Live``
(``1``, or ``0`` for the origin's "no signal" picture) (:func:`frame_headers`).
Anyone allowed to publish on the subject can send anything there, so an edge
checks every message before it becomes a frame
(:func:`cameras.nats.check_message`), and NATS permissions can keep the
subjects to the origins and edges (the README).  NATS delivers at most once
and cuts off a consumer that falls far behind instead of buffering for it.

This module is what the publisher and the subscriber share: the connection
(:class:`BusThread`: all NATS work on a thread of its own with its own
asyncio loop, never on the IOLoop), the URLs (:func:`parse_bus_url`), the
credentials and the subjects.  nats-py is imported only when a bus is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from frame import CameraError, Frame

log = logging.getLogger(__name__)

#: Subjects start with this unless ``--bus-prefix`` says otherwise.
DEFAULT_PREFIX = "camstream"
#: An edge's camera says it is wanted this often, seconds.
INTEREST_INTERVAL_S = 1.0
#: The origin keeps a camera for an edge this long after its last word, seconds.
INTEREST_TTL_S = 3.0
#: While the bus stays unreachable, its error is logged again at most this often, seconds.
WARN_EVERY_S = 30.0
SCHEMES = ("nats", "tls")


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
    """The headers of ``frame``'s message (see the module); an edge takes a message
    only with these values in range (:func:`cameras.nats.check_message`)."""
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
            connecting = asyncio.ensure_future(
                nats.connect(
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
            )
            stopping = asyncio.ensure_future(self._stopped.wait())
            # A stop must not wait for a connection that nats-py is still trying
            # to make (a refused login, a server that is not there).
            await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting
                break
            try:
                self.nc = connecting.result()
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
