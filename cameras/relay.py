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
block over 16 KB, or a part or a run of bytes without a boundary over the
part cap (``--relay-max-part``, default 8 MB), is an error, never a growing
buffer.  A part is a frame only if it is a whole JPEG (SOI first, EOI last):
what a wrong Content-Length cuts short or runs on is dropped and counted,
never served.

Everything runs on the driver thread with blocking ``http.client`` calls and
socket timeouts, so a dead upstream, one that stalls mid-part or one whose
parts are not whole JPEGs is noticed within ``read_timeout_s`` (1.5 s); the
threaded helper then shows "no signal" and reconnects with a delay growing to
a second, keeping the promise to viewers ("no signal" within 2 s of a fault,
live frames within 3 s of the upstream's return).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import math
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from cameras.base import CameraConfig, ThreadedCamera
from cameras.jpeg import SOI, whole_jpeg_size
from frame import CameraError

log = logging.getLogger(__name__)

#: The largest JPEG the server takes from anywhere, bytes: the most
#: ``--relay-max-part`` allows, and an edge's cap on a frame from the bus.
MAX_PART_BYTES = 16 * 1024 * 1024
#: The relay's cap on one part (one JPEG) unless ``--relay-max-part`` says otherwise,
#: bytes: the bus's recommended ``max_payload`` (8 MB), far above a camera's JPEG.
DEFAULT_MAX_PART_BYTES = 8 * 1000 * 1000
#: The option of the part cap, named by the messages of a part over it.
CAP_OPTION = "--relay-max-part"
#: Largest header block of one part, bytes.
MAX_HEADER_BYTES = 16 * 1024
#: Parts dropped for not being whole JPEGs get at most one warning this often, seconds.
DROP_WARNING_S = 60.0


def shown_size(size: int) -> str:
    """A size for people: ``100 MB``, ``8 MB``, ``64 KB``, ``900 bytes`` (decimal units)."""
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


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
    ``max_part_bytes``, the cap: its buffer never holds much more than that.
    """

    def __init__(
        self,
        boundary: str | None,
        *,
        max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
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

    @property
    def mid_part(self) -> bool:
        """True while a part has begun (its headers or its body) and not ended."""
        return self._state == _BODY or (self._state == _HEADERS and bool(self._buf))

    def _over_cap(self, what: str) -> CameraError:
        return CameraError(f"{what} the {shown_size(self.max_part_bytes)} cap ({CAP_OPTION})")

    def _no_boundary(self) -> CameraError:
        return CameraError(
            f"no multipart boundary in {shown_size(self.max_part_bytes)} of the stream ({CAP_OPTION})"
        )

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
                    raise self._no_boundary()
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
                    raise self._no_boundary()

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
                size = shown_size(self._length)
                if size == shown_size(self.max_part_bytes):  # "a part of 8 MB is over the 8 MB cap"
                    size = f"{self._length} bytes"
                raise self._over_cap(f"a part of {size} is over")
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
                    raise self._over_cap("a part is over")
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
    ``read_timeout_s``.  ``capture`` returns the newest whole JPEG of what has
    arrived and raises :class:`CameraError` when the upstream refuses, answers
    with something that is not an MJPEG stream, goes silent for
    ``read_timeout_s`` (mid-part too), sends no whole JPEG for as long (parts
    a wrong Content-Length cut short or ran on, which are dropped and counted
    in ``parts_dropped``), or sends malformed parts or parts over the cap
    (``config.max_part_bytes``, ``--relay-max-part``).  A stream that the
    upstream ends after running a while is reopened at once, without a
    warning; otherwise the helper reconnects with a delay growing to
    ``retry_max_s``.  ``config.width/height/fps/quality`` do not apply: frames
    come at the upstream's size, rate and quality.  Construction raises
    CameraError for a bad ``--source`` or a cap out of range.
    """

    driver = "mjpeg"
    paced = False  # frames come at the upstream's pace
    connect_timeout_s = 5.0
    #: Silence, or data without a whole JPEG, for this long is a failure: inside the
    #: 2 s in which viewers are promised "no signal", above the second after which
    #: this server (as an upstream) sends its newest frame again.  The first frame of
    #: a connection made while the camera is healthy (its first, or after a stream
    #: the upstream ended) may take ``connect_timeout_s``: a cold upstream is
    #: starting its camera.
    read_timeout_s = 1.5
    #: Largest read from the socket at once, bytes.
    read_bytes = 64 * 1024
    #: A stream that ran at least this long and then ended is reopened at once.
    reconnect_after_s = 1.0

    def __init__(self, config: CameraConfig) -> None:
        super().__init__(config)
        self.upstream = parse_source(config.source)
        cap = DEFAULT_MAX_PART_BYTES if config.max_part_bytes is None else config.max_part_bytes
        if not 1 <= cap <= MAX_PART_BYTES:
            raise CameraError(f"{CAP_OPTION} {cap}: give at most {shown_size(MAX_PART_BYTES)}")
        #: The cap on one part, bytes.
        self.max_part_bytes = cap
        self._conn: http.client.HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._response: http.client.HTTPResponse | None = None
        self._parser: MultipartParser | None = None
        self._connected_at = 0.0
        self._frames_here = 0
        # The wait for this connection's next whole JPEG, and when the last one came.
        self._frame_timeout_s = self.read_timeout_s
        self._last_frame_at = 0.0
        # Parts dropped since the last whole JPEG, and whether any had a Content-Length.
        self._dropped_here = 0
        self._dropped_with_length = False
        self._drop_warned_at = -math.inf
        #: Connection attempts so far, and parts that were not whole JPEGs (driver
        #: thread writes, anyone reads).
        self.connection_attempts = 0
        self.parts_dropped = 0

    # -- contract additions -----------------------------------------------------
    def wake(self) -> None:
        """Stop at once, even while the driver thread waits for data (IOLoop thread)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read with end-of-stream

    def status(self) -> dict[str, Any]:
        """``/status``'s ``"relay"``: the upstream (no password), connection attempts,
        parts dropped for not being whole JPEGs, and the part cap in bytes."""
        return {
            "relay": {
                "upstream": self.upstream.label,
                "connections": self.connection_attempts,
                "parts_dropped": self.parts_dropped,
                "max_part_bytes": self.max_part_bytes,
            }
        }

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
        # While healthy, a cold upstream may take its time; during an outage, never.
        self._frame_timeout_s = self.connect_timeout_s if self.error is None else self.read_timeout_s
        conn.sock.settimeout(self._frame_timeout_s)
        headers = {"User-Agent": "camstream", "Accept": "multipart/x-mixed-replace, */*"}
        if up.authorization:
            headers["Authorization"] = up.authorization
        try:
            conn.request("GET", up.target, headers=headers)
            response = conn.getresponse()
        except TimeoutError as exc:
            raise CameraError(f"{up.label}: no response within {self._frame_timeout_s:g} s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise CameraError(f"{up.label}: bad response ({exc or type(exc).__name__})") from exc
        self._response = response
        if response.status != 200:
            raise CameraError(f"{up.label}: {self._status_problem(response)}")
        content_type = response.headers.get_content_type()
        if not content_type.startswith("multipart/"):
            raise CameraError(f"{up.label}: not an MJPEG stream (Content-Type {content_type})")
        boundary = response.headers.get_param("boundary")
        self._parser = MultipartParser(
            boundary if isinstance(boundary, str) else None, max_part_bytes=self.max_part_bytes
        )
        self._connected_at = self._last_frame_at = time.monotonic()
        self._frames_here = 0
        self._dropped_here, self._dropped_with_length = 0, False
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
        """Block until at least one whole JPEG has arrived; return the newest."""
        label = self.upstream.label
        while True:
            response, parser = self._response, self._parser
            if response is None or parser is None:
                raise CameraError(f"{label}: not connected")
            try:
                data = response.read1(self.read_bytes)
            except TimeoutError as exc:
                if self.stopping:
                    return None
                raise CameraError(f"{label}: no data for {self._frame_timeout_s:g} s") from exc
            except (OSError, ValueError, http.client.HTTPException) as exc:
                if self.stopping:
                    return None
                raise CameraError(f"{label}: connection lost ({exc})") from exc
            if not data:
                if self.stopping:
                    return None
                self._stream_ended()
                continue
            try:
                parts = parser.feed(data)
            except CameraError as exc:
                raise CameraError(f"{label}: {exc}") from exc
            newest = None
            for part in parts:
                frame = self._frame_of(part)
                if frame is not None:
                    newest = frame
            now = time.monotonic()
            if newest is not None:
                self._got_frame(now)
                return newest
            if now - self._last_frame_at > self._frame_timeout_s:
                raise CameraError(f"{label}: {self._no_frame_problem()}")

    def _frame_of(self, part: Part) -> tuple[bytes, int, int] | None:
        """The part as a frame if it is a whole JPEG (padding after its EOI removed);
        else None, and the part is dropped: counted, one warning a minute."""
        kind = part.headers.get("content-type", "image/jpeg").split(";")[0].strip().lower()
        if kind not in ("image/jpeg", "image/jpg", "image/pjpeg"):
            log.debug("mjpeg camera: skipped a part of Content-Type %s", kind)
            return None
        body = part.body
        size = whole_jpeg_size(body)
        if size is None and body.endswith((b"\r", b"\n", b"\x00", b" ")):  # padding after the EOI
            body = body.rstrip(b"\r\n\x00 ")
            size = whole_jpeg_size(body)
        if size is not None:
            return body, *size
        self.parts_dropped += 1
        self._dropped_here += 1
        length = part.headers.get("content-length")
        self._dropped_with_length = self._dropped_with_length or length is not None
        now = time.monotonic()
        if now - self._drop_warned_at >= DROP_WARNING_S:
            self._drop_warned_at = now
            log.warning(
                "%s camera: dropped a part that is not a whole JPEG, SOI to EOI (%d bytes%s); "
                "%d so far (one warning a minute)",
                self.label,
                len(part.body),
                f", Content-Length {length}" if length is not None else "",
                self.parts_dropped,
            )
        return None

    def _got_frame(self, now: float) -> None:
        self._frames_here += 1
        self._last_frame_at = now
        self._dropped_here, self._dropped_with_length = 0, False
        if self._frame_timeout_s != self.read_timeout_s:  # past a cold upstream's first frame
            self._frame_timeout_s = self.read_timeout_s
            sock = self._sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(self.read_timeout_s)

    def _no_frame_problem(self) -> str:
        problem = f"no whole JPEG for {self._frame_timeout_s:g} s"
        if self._dropped_with_length:
            return problem + " (the parts do not run from SOI to EOI: a wrong Content-Length?)"
        if self._dropped_here:
            return problem + " (the parts are not whole JPEGs)"
        return problem

    def _stream_ended(self) -> None:
        """The upstream closed the stream: reopen at once if it had been working."""
        ran_s = time.monotonic() - self._connected_at
        if not self._frames_here or ran_s < self.reconnect_after_s:
            parser = self._parser
            where = " in the middle of a part" if parser is not None and parser.mid_part else ""
            raise CameraError(f"{self.upstream.label}: the upstream closed the stream{where}")
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
