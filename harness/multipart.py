"""A Motion-JPEG parser for the tests and the benchmarks: no HTTP library in between.

:func:`parse_head` reads a response head; :class:`PartParser` splits a multipart byte
stream into parts, by Content-Length when a part has one and by the next boundary
otherwise, and checks the framing on the way (a part must start with the boundary line).
The sockets that feed it are the callers' (tests/mjpeg_client.py, harness/link_client.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


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
