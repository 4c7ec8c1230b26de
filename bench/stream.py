"""One MJPEG viewer for the benchmarks: reads a stream on a thread and keeps every
part with its arrival time, split by the server's own parser
(:class:`cameras.relay.MultipartParser`, the one the mjpeg camera relays with).

    reader = StreamReader(port)          # GET /stream.mjpg on 127.0.0.1
    reader.wait_for(30, timeout_s=10)    # the first 30 parts
    ...
    reader.close()
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from cameras.relay import MultipartParser
from frame import CameraError


@dataclass(frozen=True)
class Arrival:
    """One part of the stream: headers (names lowercased), body, and when it arrived."""

    headers: dict[str, str]
    body: bytes
    #: ``time.monotonic()`` when the read that completed it returned.
    arrived: float
    #: ``time.time()`` at the same moment, comparable with the server's X-Timestamp.
    received_at: float


class StreamReader:
    """``GET path`` on ``127.0.0.1:port``; a daemon thread appends each part to
    :attr:`parts` (read it from any thread; it only grows).  Raises
    ConnectionError when the answer is not a 200 multipart stream."""

    def __init__(self, port: int, path: str = "/stream.mjpg", timeout_s: float = 10.0) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        self._conn.request("GET", path)
        # Kept now: getresponse() hands the socket over to the response and forgets it.
        self._sock = self._conn.sock
        response = self._conn.getresponse()
        if response.status != 200 or response.headers.get_content_maintype() != "multipart":
            response.close()
            self._conn.close()
            raise ConnectionError(f"{path}: HTTP {response.status} {response.headers.get_content_type()}")
        boundary = response.headers.get_param("boundary")
        self._response = response
        self._parser = MultipartParser(boundary if isinstance(boundary, str) else None)
        self.parts: list[Arrival] = []
        #: What ended the reading early (a parse or socket error), else None.
        self.error: Exception | None = None
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="bench-stream-reader", daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[bytes]:
        """The bytes as they come, until the stream ends or :meth:`close` (reader thread)."""
        while not self._closing:
            with contextlib.suppress(TimeoutError):  # a quiet moment, not an end
                data = self._response.read1(65536)
                if not data:
                    return
                yield data

    def _run(self) -> None:
        try:
            for data in self._chunks():
                if parts := self._parser.feed(data):
                    arrived, received_at = time.monotonic(), time.time()
                    with self._changed:
                        self.parts += [Arrival(p.headers, p.body, arrived, received_at) for p in parts]
                        self._changed.notify_all()
        except (OSError, ValueError, http.client.HTTPException, CameraError) as exc:
            if not self._closing:
                self.error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    def wait_for(self, count: int, timeout_s: float) -> list[Arrival]:
        """Block until ``count`` parts have arrived in all; return a copy of them.

        Raises TimeoutError after ``timeout_s``, or at once when the stream has ended.
        """

        def arrived_or_ended() -> bool:
            return len(self.parts) >= count or not self._thread.is_alive()

        with self._changed:
            self._changed.wait_for(arrived_or_ended, timeout_s)
            if len(self.parts) < count:
                problem = f"only {len(self.parts)} of {count} parts within {timeout_s} s"
                raise TimeoutError(problem + (f" ({self.error})" if self.error else ""))
            return list(self.parts)

    def close(self) -> None:
        """Stop reading and close the connection (waits for the thread, at most 5 s)."""
        self._closing = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read
        self._thread.join(timeout=5)
        self._response.close()
        self._conn.close()
