"""A network camera: pulls a Motion-JPEG stream over HTTP and republishes its JPEGs.

``--camera mjpeg --source http://[user:password@]host[:port]/path`` reads an
existing MJPEG stream (an IP camera, mjpg-streamer, another instance of this
server) and serves its JPEGs byte for byte: nothing is decoded or re-encoded,
so relaying costs little more than copying bytes.  The picture size comes from
each JPEG's start-of-frame header (:func:`cameras.jpeg.jpeg_size`), not from decoding.

The stream is a ``multipart/x-mixed-replace`` response.  :class:`MultipartParser`
splits it into parts by ``Content-Length`` when a part has one and by the
boundary otherwise; it takes the boundary from the Content-Type header with or
without a leading ``--`` (or learns it from the first boundary line when the
header has none), CRLF or bare LF line ends, and bounds its memory: a header
block over 16 KB or a part over 16 MB is an error, never a growing buffer.

Everything runs on the driver thread with blocking ``http.client`` calls and
socket timeouts, so a dead upstream is noticed within ``read_timeout_s``; the
threaded helper then shows "no signal" and reconnects with a growing delay.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import socket
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from cameras.base import CameraConfig, ThreadedCamera
from cameras.jpeg import SOI, jpeg_size
from frame import CameraError

log = logging.getLogger(__name__)

#: Largest part (one JPEG) accepted, bytes.
MAX_PART_BYTES = 16 * 1024 * 1024
#: Largest header block of one part, bytes.
MAX_HEADER_BYTES = 16 * 1024


# -- the multipart parser -----------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One part of a multipart stream: its headers (names lowercased) and its body."""

    headers: dict[str, str]
    body: bytes


_SEEK, _HEADERS, _BODY = "seek", "headers", "body"


class MultipartParser:
    """Splits a ``multipart/x-mixed-replace`` byte stream into :class:`Part` objects.

    Feed it bytes as they arrive; :meth:`feed` returns the parts completed so
    far.  A part with a valid ``Content-Length`` is complete as soon as that
    many bytes have arrived (no wait for the next boundary); a part without one
    ends at the next boundary line.  Bytes outside parts (a preamble, stray
    line ends, a wrong Content-Length's leftovers) are skipped up to the next
    boundary line.  Not thread-safe: one parser per connection, one thread.

    Raises :class:`CameraError` when a header block exceeds ``max_header_bytes``
    or a part (or the bytes skipped while looking for a boundary) exceeds
    ``max_part_bytes``.
    """

    def __init__(
        self,
        boundary: str | None,
        *,
        max_part_bytes: int = MAX_PART_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        # "--frame" and "frame" name the same boundary: compare without leading dashes.
        token = (boundary or "").strip().strip('"').lstrip("-")
        self.token: bytes | None = token.encode("latin-1") if token else None
        self.max_part_bytes = max_part_bytes
        self.max_header_bytes = max_header_bytes
        self._buf = bytearray()
        self._state = _SEEK
        self._headers: dict[str, str] = {}
        self._length: int | None = None
        self._search_from = 0
        self._skipped_here = 0
        #: Bytes other than line ends skipped outside parts so far (for diagnostics).
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> list[Part]:
        """Add ``data``; return the parts it completed, oldest first."""
        self._buf += data
        parts: list[Part] = []
        while True:
            if self._state == _SEEK:
                progressed = self._seek()
            elif self._state == _HEADERS:
                progressed = self._read_headers()
            else:
                part = self._read_body()
                progressed = part is not None
                if part is not None:
                    parts.append(part)
            if not progressed:
                return parts

    # -- states ---------------------------------------------------------------
    def _delimiter_rest(self, line: bytes) -> bytes | None:
        """For a boundary line, what follows the token ('' or '--'); else None."""
        stripped = line.strip()
        if not stripped.startswith(b"-") and self.token is None:
            return None
        name = stripped.lstrip(b"-")
        if self.token is None:
            # No boundary in the Content-Type: the first "--token" line names it.
            if not name or not stripped.startswith(b"--"):
                return None
            self.token = name[:-2] if name.endswith(b"--") and len(name) > 2 else name
        if not name.startswith(self.token):
            return None
        rest = name[len(self.token) :]
        return rest if rest in (b"", b"--") else None

    def _seek(self) -> bool:
        """Skip to just after the next boundary line."""
        buf = self._buf
        while True:
            newline = buf.find(b"\n")
            if newline < 0:
                if len(buf) > self.max_part_bytes:
                    raise CameraError(f"no multipart boundary in {len(buf)} bytes of the stream")
                return False
            line = bytes(buf[:newline])
            del buf[: newline + 1]
            if self._delimiter_rest(line) is not None:
                self._skipped_here = 0
                self._state = _HEADERS
                return True
            if line.strip():  # line ends between parts are expected, anything else is not
                self.skipped_bytes += newline + 1
                self._skipped_here += newline + 1
                if self._skipped_here > self.max_part_bytes:
                    raise CameraError(f"no multipart boundary in {self._skipped_here} bytes of the stream")

    def _read_headers(self) -> bool:
        buf = self._buf
        if buf.startswith(SOI):  # no header block at all: the JPEG follows the boundary
            return self._begin_body({})
        headers: dict[str, str] = {}
        pos = 0
        while True:
            newline = buf.find(b"\n", pos)
            if newline < 0:
                if len(buf) > self.max_header_bytes:
                    raise CameraError(f"a part's header block is over {self.max_header_bytes} bytes")
                return False
            if newline > self.max_header_bytes:
                raise CameraError(f"a part's header block is over {self.max_header_bytes} bytes")
            line = bytes(buf[pos:newline]).rstrip(b"\r")
            pos = newline + 1
            if not line:
                del buf[:pos]
                return self._begin_body(headers)
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()

    def _begin_body(self, headers: dict[str, str]) -> bool:
        self._headers = headers
        self._length = None
        length = headers.get("content-length", "")
        if length.isdigit():
            self._length = int(length)
            if self._length > self.max_part_bytes:
                raise CameraError(
                    f"a part of {self._length} bytes is over the {self.max_part_bytes} byte limit"
                )
        self._search_from = 0
        self._state = _BODY
        return True

    def _read_body(self) -> Part | None:
        buf = self._buf
        if self._length is not None:
            if len(buf) < self._length:
                return None
            body = bytes(buf[: self._length])
            del buf[: self._length]
            self._state = _SEEK  # past the CRLF and the next boundary line
            return Part(self._headers, body)
        return self._read_body_to_boundary()

    def _read_body_to_boundary(self) -> Part | None:
        buf = self._buf
        token = self.token
        if token is None:  # cannot happen after a boundary line; be safe
            self._state = _SEEK
            return None
        while True:
            hit = buf.find(token, self._search_from)
            if hit < 0:
                if len(buf) > self.max_part_bytes:
                    raise CameraError(f"a part is over the {self.max_part_bytes} byte limit")
                self._search_from = max(0, len(buf) - len(token) + 1)
                return None
            start = hit
            while start > 0 and buf[start - 1] == 0x2D:  # the dashes before the token
                start -= 1
            if start > 0 and buf[start - 1] != 0x0A:  # not at the start of a line
                self._search_from = hit + 1
                continue
            newline = buf.find(b"\n", hit)
            if newline < 0:
                self._search_from = start  # the rest of this line has not arrived yet
                return None
            if self._delimiter_rest(bytes(buf[start:newline])) is None:
                self._search_from = hit + 1
                continue
            end = start
            if end > 0 and buf[end - 1] == 0x0A:
                end -= 1
                if end > 0 and buf[end - 1] == 0x0D:
                    end -= 1
            body = bytes(buf[:end])
            del buf[: newline + 1]
            self._state = _HEADERS
            return Part(self._headers, body)


# -- the upstream URL -----------------------------------------------------------
@dataclass(frozen=True)
class Upstream:
    """Where to connect and what to send; ``label`` is the URL without any password."""

    scheme: str
    host: str
    port: int
    target: str
    authorization: str | None
    label: str


def parse_source(source: str | None) -> Upstream:
    """Check ``--source`` for the mjpeg camera; raises CameraError with a one-line message.

    Accepts ``http://`` and ``https://`` URLs with a host; credentials in the
    URL (percent-encoded as needed) become a Basic ``Authorization`` header.
    The message never repeats a password.
    """
    usage = "http://[user:password@]host[:port]/path"
    if not source:
        raise CameraError(f"the mjpeg camera needs --source {usage}, the URL of an MJPEG stream")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in source):
        raise CameraError("--source: the URL contains spaces or control characters")
    try:
        parts = urlsplit(source)
        port = parts.port
    except ValueError as exc:
        raise CameraError(f"--source: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    shown_host = f"[{host}]" if ":" in host else host
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    port = port or (443 if scheme == "https" else 80)
    label = f"{scheme}://{shown_host}:{port}{target}"
    if scheme not in ("http", "https"):
        shown = f"{scheme}://{shown_host}" if scheme else source.split("@")[-1]
        raise CameraError(f"--source {shown}: the mjpeg camera needs an http:// or https:// URL ({usage})")
    if not host:
        raise CameraError(f"--source {scheme}://: no host in the URL ({usage})")
    authorization = None
    if parts.username is not None:
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(userinfo.encode("utf-8")).decode("ascii")
    return Upstream(scheme, host, port, target, authorization, label)


# -- the camera -------------------------------------------------------------------
class RelayCamera(ThreadedCamera):
    """Republishes the JPEGs of an MJPEG-over-HTTP stream, byte for byte.

    ``open``, ``capture`` and ``close`` run on the driver thread and block on
    the network, each wait bounded by ``connect_timeout_s`` or
    ``read_timeout_s``.  ``capture`` returns the newest complete JPEG of what
    has arrived and raises :class:`CameraError` when the upstream refuses,
    answers with something that is not an MJPEG stream, goes silent for
    ``read_timeout_s`` or sends malformed or oversized parts.  A stream that
    the upstream ends after running a while is reopened at once, without a
    warning; otherwise the helper reconnects with a delay growing to
    ``retry_max_s``.  ``config.width/height/fps/quality`` do not apply: frames
    come at the upstream's size, rate and quality.
    """

    driver = "mjpeg"
    paced = False  # frames come at the upstream's pace
    #: A refused connection costs nothing, so retry often: a viewer waits at most
    #: about this long after the upstream is back.
    retry_max_s = 2.0
    connect_timeout_s = 5.0
    read_timeout_s = 5.0
    #: Largest read from the socket at once, bytes.
    read_bytes = 64 * 1024
    #: A stream that ran at least this long and then ended is reopened at once.
    reconnect_after_s = 1.0

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self.upstream = parse_source(config.source)
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._response: http.client.HTTPResponse | None = None
        self._parser: MultipartParser | None = None
        self._connected_at = 0.0
        self._frames_here = 0
        #: Connection attempts so far (driver thread writes, anyone reads).
        self.connection_attempts = 0

    # -- contract additions -----------------------------------------------------
    def wake(self) -> None:
        """Stop at once, even while the driver thread waits for data (IOLoop thread)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read with end-of-stream

    # -- driver thread ------------------------------------------------------------
    def open(self) -> None:
        """Connect, send the request and check the response (driver thread, blocks)."""
        up = self.upstream
        self.connection_attempts += 1
        if up.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                up.host, up.port, timeout=self.connect_timeout_s
            )
        else:
            conn = http.client.HTTPConnection(up.host, up.port, timeout=self.connect_timeout_s)
        self._conn = conn
        try:
            self._request(conn)
        except BaseException:
            self.close()
            raise

    def _request(self, conn: http.client.HTTPConnection) -> None:
        up = self.upstream
        try:
            conn.connect()
        except TimeoutError as exc:
            raise CameraError(f"{up.label}: no answer within {self.connect_timeout_s:g} s") from exc
        except ConnectionRefusedError as exc:
            raise CameraError(f"{up.label}: connection refused") from exc
        except OSError as exc:  # DNS failure, unreachable network, TLS failure
            raise CameraError(f"{up.label}: cannot connect ({exc.strerror or exc})") from exc
        assert conn.sock is not None
        self._sock = conn.sock
        conn.sock.settimeout(self.read_timeout_s)
        headers = {"User-Agent": "camstream", "Accept": "multipart/x-mixed-replace, */*"}
        if up.authorization:
            headers["Authorization"] = up.authorization
        try:
            conn.request("GET", up.target, headers=headers)
            response = conn.getresponse()
        except TimeoutError as exc:
            raise CameraError(f"{up.label}: no response within {self.read_timeout_s:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise CameraError(f"{up.label}: bad response ({exc or type(exc).__name__})") from exc
        self._response = response
        if response.status != 200:
            raise CameraError(f"{up.label}: {self._status_problem(response)}")
        content_type = response.headers.get_content_type()
        if not content_type.startswith("multipart/"):
            raise CameraError(f"{up.label}: not an MJPEG stream (Content-Type {content_type})")
        boundary = response.headers.get_param("boundary")
        self._parser = MultipartParser(boundary if isinstance(boundary, str) else None)
        self._connected_at = time.monotonic()
        self._frames_here = 0
        log.info("mjpeg camera: connected to %s", up.label)

    def _status_problem(self, response: http.client.HTTPResponse) -> str:
        problem = f"HTTP {response.status} {response.reason}".strip()
        if response.status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            if challenge and not challenge.lower().startswith("basic"):
                scheme = challenge.split()[0]
                problem += f" (the upstream wants {scheme} authentication; only Basic is supported)"
            elif self.upstream.authorization:
                problem += " (check the user and password in --source)"
            else:
                problem += " (put user:password@ before the host in --source)"
        elif 300 <= response.status < 400 and response.headers.get("Location"):
            problem += f" (redirected to {response.headers['Location'].split('@')[-1]})"
        return problem

    def capture(self) -> tuple[bytes, int, int] | None:
        """Block until at least one complete JPEG has arrived; return the newest."""
        while True:
            response, parser = self._response, self._parser
            if response is None or parser is None:
                raise CameraError(f"{self.upstream.label}: not connected")
            try:
                data = response.read1(self.read_bytes)
            except TimeoutError as exc:
                if self.stopping:
                    return None
                raise CameraError(f"{self.upstream.label}: no data for {self.read_timeout_s:g} s") from exc
            except (OSError, ValueError, http.client.HTTPException) as exc:
                if self.stopping:
                    return None
                raise CameraError(f"{self.upstream.label}: connection lost ({exc})") from exc
            if not data:
                if self.stopping:
                    return None
                self._stream_ended()
                continue
            newest = None
            for part in parser.feed(data):
                size = jpeg_size(part.body)
                if size is None:
                    log.debug("mjpeg camera: skipped a part that is not a JPEG (%d bytes)", len(part.body))
                    continue
                newest = (part.body, *size)
            if newest is not None:
                self._frames_here += 1
                return newest

    def _stream_ended(self) -> None:
        """The upstream closed the stream: reopen at once if it had been working."""
        ran_s = time.monotonic() - self._connected_at
        if not self._frames_here or ran_s < self.reconnect_after_s:
            raise CameraError(f"{self.upstream.label}: the upstream closed the stream")
        log.info("mjpeg camera: %s ended the stream after %.1f s; reconnecting", self.upstream.label, ran_s)
        self.close()
        self.open()

    def close(self) -> None:
        """Close the response and the connection (driver thread); never raises."""
        response, conn = self._response, self._conn
        self._response = self._conn = self._sock = None
        self._parser = None
        if response is not None:
            with contextlib.suppress(OSError):
                response.close()
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
