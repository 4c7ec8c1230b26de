"""A Motion-JPEG client for the tests: raw TCP, no HTTP library in between.

``PartParser`` splits a multipart byte stream into parts, by Content-Length
when a part has one and by the next boundary otherwise, and checks the framing
on the way (a part must start with the boundary line).  ``read_stream`` (async,
Tornado) and ``StreamReader`` (a thread, plain sockets) feed it from a socket.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient


class FramingError(AssertionError):
    pass


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes
    arrived: float = field(default_factory=time.monotonic)
    #: Wall-clock arrival, comparable with the server's X-Timestamp on the same machine.
    received_at: float = field(default_factory=time.time)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw_head: bytes


def parse_head(head: bytes) -> Response:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Response(status, headers, head)


class PartParser:
    """Incremental multipart parser; :meth:`feed` returns the parts completed."""

    def __init__(self, boundary: bytes = b"frame") -> None:
        self.delimiter = b"--" + boundary
        self.buffer = bytearray()
        self._headers: dict[str, str] | None = None

    def feed(self, data: bytes) -> list[Part]:
        self.buffer += data
        parts = []
        while True:
            part = self._next()
            if part is None:
                return parts
            parts.append(part)

    def _next(self) -> Part | None:
        buf = self.buffer
        if self._headers is None:
            # Between parts only CRLFs may come before the boundary line.
            while buf.startswith(b"\r\n"):
                del buf[:2]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 8192:
                    raise FramingError(f"no part header in {bytes(buf[:80])!r}")
                return None
            block = bytes(buf[:end]).decode("latin-1").split("\r\n")
            if block[0] != self.delimiter.decode():
                raise FramingError(f"part does not start with the boundary: {block[0]!r}")
            headers = {}
            for line in block[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self._headers = headers
            del buf[: end + 4]
        length = self._headers.get("content-length")
        if length is not None:
            n = int(length)
            if len(buf) < n + 2:
                return None
            body = bytes(buf[:n])
            if buf[n : n + 2] != b"\r\n":
                raise FramingError(f"Content-Length {n} is wrong: {bytes(buf[n : n + 12])!r} after the data")
            del buf[: n + 2]
        else:
            end = buf.find(b"\r\n" + self.delimiter)
            if end < 0:
                return None
            body = bytes(buf[:end])
            del buf[: end + 2]
        part = Part(self._headers, body)
        self._headers = None
        return part


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
