"""A Motion-JPEG client for the tests: raw TCP, no HTTP library in between.

:func:`open_stream` and :func:`read_parts` (async, Tornado) and :class:`StreamReader`
(a thread, plain sockets) feed harness/multipart.py's ``PartParser`` from a socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

from harness.multipart import Part, PartParser, Response, parse_head


def request_bytes(path: str, headers: dict[str, str] | None = None, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_stream(
    port: int, path: str = "/stream.mjpg", headers: dict[str, str] | None = None
) -> tuple[IOStream, Response, PartParser]:
    """Connect, send the request and read the response head (Tornado)."""
    stream = await TCPClient().connect("127.0.0.1", port)
    await stream.write(request_bytes(path, headers))
    head = await stream.read_until(b"\r\n\r\n", max_bytes=65536)
    response = parse_head(head)
    boundary = response.headers.get("content-type", "").partition("boundary=")[2] or "frame"
    return stream, response, PartParser(boundary.encode())


async def read_parts(stream: IOStream, parser: PartParser, count: int) -> list[Part]:
    """Read until ``count`` parts have arrived (the caller bounds the time)."""
    parts = parser.feed(b"")
    while len(parts) < count:
        parts += parser.feed(await stream.read_bytes(65536, partial=True))
    return parts


class StreamReader:
    """Reads an MJPEG stream on a thread, keeping every part with its arrival time."""

    def __init__(self, port: int, path: str = "/stream.mjpg", headers: dict[str, str] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(request_bytes(path, headers))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the response head")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        self.response = parse_head(head + b"\r\n\r\n")
        self.parser = PartParser()
        self.parts: list[Part] = self.parser.feed(rest)
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self._stop:
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                parts = self.parser.feed(chunk)
                if parts:
                    with self.changed:
                        self.parts += parts
                        self.changed.notify_all()
        except (OSError, AssertionError) as exc:
            self.error = exc

    def wait_for(self, count: int, timeout_s: float) -> list[Part]:
        """Block until ``count`` parts have arrived in all; raise on timeout."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.parts) >= count, timeout_s):
                raise TimeoutError(f"only {len(self.parts)} of {count} parts within {timeout_s} s")
            return list(self.parts)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
