"""The listening sockets: accepting connections without spinning when descriptors run out.

When ``accept()`` fails for want of room (EMFILE: this process's ``ulimit -n``;
ENFILE: the system's; ENOBUFS, ENOMEM: kernel memory), the connection stays in
the kernel's queue and the listening socket stays readable, so Tornado's
accept handler is called again at once, fails again, and so on: a core spun
(and a traceback logged) for as long as the shortage lasts.  Here such a
socket is taken off the IOLoop for a pause (100 ms, doubling up to 1 s while
the shortage lasts, back to 100 ms once an accept succeeds); connections that
arrive meanwhile wait in the kernel's queue.

When a pause ends and there is still no descriptor to be had, the connections
waiting are refused rather than left waiting for ever: one descriptor kept in
reserve is closed for each, the connection accepted on it, answered ``503``
with ``Retry-After: 1`` (on a TLS port, closed without a word: no handshake
on the IOLoop), closed, and the reserve opened again.  So a connection is
served as soon as a descriptor comes free, or refused about a pause after it
arrived, and the loop does a few system calls a pause, not a spin.  One
WARNING a minute says so (the limit, the descriptors open, the connections
refused); :meth:`Listener.status` counts it.

Every connection accepted gets ``TCP_NOTSENT_LOWAT`` (:data:`NOTSENT_LOWAT_BYTES`):
the kernel takes no more bytes for it while that many are waiting to be sent.
Without it, the send buffer of a viewer that reads slowly grows to
``tcp_wmem``'s maximum (4 MB by default: some 70 frames of 40 KB, minutes old
by the time they are read, and the machine's TCP memory under pressure with a
few hundred such viewers): the backlog the feed never keeps would be kept by the kernel.
With it, the rest of the frame waits in the feed's one pending write, and the
viewer skips to the newest frame.  A viewer that keeps up is not affected: its
bytes are sent as soon as they are written.  An adaptive viewer's socket is
held tighter still by handlers/viewing.py (32 KB).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from tornado.ioloop import IOLoop

log = logging.getLogger(__name__)

#: accept()'s errors that say there is no room for one more connection now.
OUT_OF_ROOM = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Unsent bytes the kernel keeps for a connection at most (about 1.5 frames of
#: 640x480): what a viewer on a slow link may wait for beyond what is in flight.
NOTSENT_LOWAT_BYTES = 64 * 1024
PAUSE_MIN_S = 0.1
PAUSE_MAX_S = 1.0
WARN_EVERY_S = 60.0
#: Waiting connections refused at most at the end of one pause (the listen backlog
#: Tornado's ``bind_sockets`` asks for).
REFUSE_AT_ONCE = 128

_MESSAGE = b"the server has no room for another connection now; try again in a moment\n"
#: What a refused connection is told (plain HTTP ports).
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Cache-Control: no-store\r\n"
    b"Connection: close\r\n"
    b"\r\n" % len(_MESSAGE)
) + _MESSAGE


def _reserve() -> int | None:
    """A descriptor held in reserve (``/dev/null``), or None if there is none to be had."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class ListeningSocket(socket.socket):
    """A listening socket whose ``accept()`` tells its :class:`Listener` of a
    shortage of room and then says "nothing to accept" (BlockingIOError) to
    Tornado's accept handler, which returns; a connection it accepts has
    ``TCP_NOTSENT_LOWAT`` set.  Made by the Listener; the IOLoop's thread only."""

    def __init__(
        self,
        family: int = -1,
        kind: int = -1,
        proto: int = -1,
        fileno: int | None = None,
        *,
        listener: Listener | None = None,
    ) -> None:
        super().__init__(family, kind, proto, fileno)
        self.listener = listener
        #: The current pause, or 0.0 while accepting normally.
        self.pause_s = 0.0

    def accept(self) -> tuple[socket.socket, Any]:
        """``(connection, address)`` as ``socket.accept``; out of room, the socket
        is paused and BlockingIOError raised (Tornado's "nothing more to accept")."""
        try:
            pair = super().accept()
        except OSError as exc:
            if self.listener is not None and exc.errno in OUT_OF_ROOM:
                self.listener.short_of_room(self, exc.errno)
                raise BlockingIOError(errno.EAGAIN, "accepting paused: no room") from exc
            raise
        self.pause_s = 0.0
        if self.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_NOTSENT_LOWAT"):
            with contextlib.suppress(OSError):
                pair[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT_BYTES)
        return pair


class Listener:
    """The server's listening sockets, with the pause and the refusals of a
    shortage of descriptors (see the module's docstring).

    Takes ``sockets`` over (``bind_sockets``'s: the originals are detached, so
    use :attr:`sockets`, to give ``HTTPServer.add_sockets``).  ``tls``: the port
    speaks TLS (refused connections are then closed without an answer).  Build,
    use and close it on the IOLoop's thread; ``clock`` (seconds, monotonic) paces
    the warnings."""

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        *,
        tls: bool = False,
        pause_min_s: float = PAUSE_MIN_S,
        pause_max_s: float = PAUSE_MAX_S,
        warn_every_s: float = WARN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tls = tls
        self.pause_min_s = pause_min_s
        self.pause_max_s = pause_max_s
        self.warn_every_s = warn_every_s
        self._clock = clock
        self._loop = IOLoop.current()
        self.sockets: list[ListeningSocket] = []
        for sock in sockets:
            family, kind, proto = sock.family, sock.type, sock.proto
            guarded = ListeningSocket(family, kind, proto, sock.detach(), listener=self)
            guarded.setblocking(False)
            self.sockets.append(guarded)
        self._spare = _reserve()
        self._timers: dict[int, object] = {}
        self._closed = False
        self.pauses = 0
        self.refused = 0
        self._warned_at: float | None = None
        self._shortages_unreported = 0
        self._error = errno.EMFILE

    def status(self) -> dict[str, int | bool]:
        """``accept_pauses`` (pauses of accepting for want of room, each 0.1 to
        1 s), ``connections_refused`` (answered 503, or closed on a TLS port,
        for it) and whether every socket is accepting now.  Cheap; the IOLoop's
        thread."""
        return {
            "accept_pauses": self.pauses,
            "connections_refused": self.refused,
            "accepting": not self._timers,
        }

    def close(self) -> None:
        """Cancel the pauses and give the reserve back; the sockets are the
        HTTPServer's to close (``stop()``).  Idempotent."""
        self._closed = True
        for timer in self._timers.values():
            self._loop.remove_timeout(timer)
        self._timers.clear()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    # -- a shortage -------------------------------------------------------------
    def short_of_room(self, sock: ListeningSocket, error: int) -> None:
        """``sock``'s accept failed with ``error`` (one of :data:`OUT_OF_ROOM`):
        stop watching it for a pause, longer each time in a row."""
        self._error = error
        self._loop.update_handler(sock, 0)
        self._pause(sock)

    def _pause(self, sock: ListeningSocket) -> None:
        self.pauses += 1
        sock.pause_s = min(sock.pause_s * 2, self.pause_max_s) if sock.pause_s else self.pause_min_s
        self._timers[id(sock)] = self._loop.call_later(sock.pause_s, self._resume, sock)
        self._warn()

    def _resume(self, sock: ListeningSocket) -> None:
        self._timers.pop(id(sock), None)
        if self._closed or sock.fileno() == -1:  # the server stopped meanwhile
            return
        if not self._room():
            self._refuse_waiting(sock)
            self._pause(sock)
            return
        self._loop.update_handler(sock, IOLoop.READ)  # the waiting ones are accepted now

    def _room(self) -> bool:
        """Whether one more descriptor can be had now (one is made and closed)."""
        probe = _reserve()
        if probe is None:
            return False
        os.close(probe)
        if self._spare is None:
            self._spare = _reserve()
        return True

    def _refuse_waiting(self, sock: ListeningSocket) -> None:
        """Answer and close the connections waiting on ``sock``, each on the
        descriptor held in reserve (at most :data:`REFUSE_AT_ONCE`)."""
        for _ in range(REFUSE_AT_ONCE):
            if self._spare is None:
                return
            os.close(self._spare)
            self._spare = None
            try:
                connection, _ = socket.socket.accept(sock)  # the plain accept, not ours
            except OSError:  # nobody waiting, or another thread took the descriptor
                self._spare = _reserve()
                return
            self._refuse(connection)
            self._spare = _reserve()

    def _refuse(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection:
            connection.setblocking(False)
            if not self.tls:
                with contextlib.suppress(BlockingIOError):
                    connection.recv(65536)  # the request: closing with it unread would reset
                connection.send(REFUSAL)
        self.refused += 1

    # -- the warning ------------------------------------------------------------
    def _warn(self) -> None:
        """One WARNING a minute while the shortage lasts (the pauses between
        counted); reads /proc/self/fd then, a few microseconds on the loop."""
        error = self._error
        self._shortages_unreported += 1
        now = self._clock()
        if self._warned_at is not None and now - self._warned_at < self.warn_every_s:
            return
        self._warned_at = now
        times, self._shortages_unreported = self._shortages_unreported, 0
        if error == errno.EMFILE:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            what = f"out of file descriptors (ulimit -n {limit})"
        elif error == errno.ENFILE:
            what = "the system is out of file descriptors (fs.file-max)"
        else:
            what = f"out of memory for connections ({errno.errorcode.get(error, error)})"
        log.warning(
            "%s: new connections wait, then are refused while it lasts; "
            "%s descriptors open, %d connections refused so far (%d pauses since the last warning)",
            what,
            self._open_descriptors(),
            self.refused,
            times,
        )

    def _open_descriptors(self) -> int | str:
        """How many descriptors this process has open (its /proc/self/fd: the
        reserve lends the one that reading it takes), or ``"?"``."""
        lent = self._spare is not None
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        try:
            listed = len(os.listdir("/proc/self/fd"))  # the listing's own descriptor among them
        except OSError:
            return "?"
        finally:
            self._spare = _reserve()
        return listed if lent else listed - 1
