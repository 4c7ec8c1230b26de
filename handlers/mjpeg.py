"""The Motion-JPEG stream: one endless ``multipart/x-mixed-replace`` response.

Two framings of the same parts:

* ``length`` (the default for programs): every part is ``--frame``,
  ``Content-Type``, ``Content-Length``, ``X-Timestamp``, a blank line, the JPEG
  and CRLF.  ffmpeg, go2rtc, fetch-based parsers and the like rely on
  Content-Length.
* ``img`` (for a browser's ``<img>``, recognised by ``Sec-Fetch-Dest: image``
  or ``?framing=img``): each JPEG is followed at once by the next part's
  header block.  Chromium paints a part only when the next part's headers have
  arrived, so this framing shows frame N as soon as it is sent instead of one
  frame late; it carries no Content-Length, which browsers do not need.

A script's ``fetch()`` (``Sec-Fetch-Dest: empty``) gets the same bytes as
``multipart/mixed``: WebKit's fetch refuses to read a
``multipart/x-mixed-replace`` body.

After the response headers the handler takes the socket over from the HTTP
layer (``detach``) and writes the prepared bytes of each frame straight to it:
no chunked encoding, no per-viewer copy, at most one frame in flight.
"""

from __future__ import annotations

import asyncio
import logging
from email.utils import formatdate
from typing import Any

from tornado.iostream import IOStream, StreamClosedError

from feed import SubscriberGone, consume
from frame import CameraError, Frame
from handlers.base import NO_CACHE, BaseHandler
from handlers.cors import answer_preflight, cors_headers
from handlers.fastwrite import write_now
from handlers.limits import refuse_if_full
from handlers.viewing import BadRequest, VariantViewer, limit_unsent, variant_args
from outputs.variants import Variants

log = logging.getLogger(__name__)

BOUNDARY = "frame"
CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
#: The same parts for a script's fetch() (``Sec-Fetch-Dest: empty``): WebKit's
#: fetch cannot read a multipart/x-mixed-replace body ("Load failed"), and a
#: script parses the parts itself whatever the type says.
FETCH_CONTENT_TYPE = f"multipart/mixed; boundary={BOUNDARY}"
FRAMINGS = ("img", "length")
#: Bytes a streaming client may send after its request before it is cut off.
MAX_CLIENT_BYTES = 64 * 1024

_IMG_PART_HEAD = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\n".encode()


def length_part(frame: Frame) -> bytes:
    """One part with Content-Length and X-Timestamp, ending in CRLF."""
    head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nX-Timestamp: %.6f\r\n\r\n" % (
        BOUNDARY.encode(),
        len(frame.jpeg),
        frame.timestamp,
    )
    return b"".join((head, frame.jpeg, b"\r\n"))


def img_part(frame: Frame) -> bytes:
    """The JPEG followed at once by the next part's complete header block."""
    return b"".join((frame.jpeg, b"\r\n", _IMG_PART_HEAD))


def response_head(
    version: str, extra: dict[str, str] | None = None, content_type: str = CONTENT_TYPE
) -> bytes:
    """The status line and headers of a stream response."""
    headers = {
        "Content-Type": content_type,
        **NO_CACHE,
        "Connection": "close",
        "Date": formatdate(usegmt=True),
        "X-Content-Type-Options": "nosniff",
        **(extra or {}),
    }
    status = "HTTP/1.0 200 OK" if version == "HTTP/1.0" else "HTTP/1.1 200 OK"
    lines = [status, *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1")


class MjpegHandler(VariantViewer, BaseHandler):
    """``GET`` streams frames until the client leaves; ``HEAD`` sends the headers only.

    ``?width=W`` and ``?quality=Q`` pick a variant (:mod:`outputs.variants`);
    ``?adapt=1`` lets the server move it to smaller ones while the link is too
    slow (:mod:`outputs.adapt`)."""

    kind = "mjpeg"

    def initialize(self, variants: Variants) -> None:
        self._viewer_init(variants)
        self.repeat_stale = True
        self.encoder = length_part
        self._stream: IOStream | None = None
        self._gone = False

    def _content_type(self) -> str:
        fetched = self.request.headers.get("Sec-Fetch-Dest") == "empty"
        return FETCH_CONTENT_TYPE if fetched else CONTENT_TYPE

    def _framing(self) -> str | None:
        framing = self.get_query_argument("framing", None)
        if framing is None:
            return "img" if self.request.headers.get("Sec-Fetch-Dest") == "image" else "length"
        if framing not in FRAMINGS:
            self.fail(400, f"Bad Request: framing must be one of {', '.join(FRAMINGS)}")
            return None
        return framing

    def options(self) -> None:
        answer_preflight(self)

    def head(self) -> None:
        if self._framing() is None:
            return
        try:
            variant_args(self, adapt_default=False)
        except BadRequest as exc:
            self.fail(400, f"Bad Request: {exc}")
            return
        for name, value in cors_headers(self).items():
            self.set_header(name, value)
        self.set_header("Content-Type", self._content_type())
        self.set_no_cache()
        self.flush()  # headers now, so no "Content-Length: 0" for an endless body
        self.finish()

    def compute_etag(self) -> None:
        return None

    def get(self) -> None:
        framing = self._framing()
        if framing is None:
            return
        try:
            width, quality, adapt = variant_args(self, adapt_default=False)
        except BadRequest as exc:
            self.fail(400, f"Bad Request: {exc}")
            return
        if refuse_if_full(self):
            return
        try:
            self.join_variant(width, quality, adapt)
        except CameraError as exc:
            self.fail(503, f"Service Unavailable: {exc}")
            return
        if framing == "img":
            # Still frames need no repeat: this framing shows the newest in full.
            self.encoder, self.repeat_stale = img_part, False
        stream = self.detach()
        self._stream = stream
        stream.max_buffer_size = MAX_CLIENT_BYTES
        stream.set_nodelay(True)
        if adapt:
            limit_unsent(stream.socket)
        stream.set_close_callback(self._on_close)
        opening = response_head(self.request.version, cors_headers(self), self._content_type())
        if framing == "img":
            opening += _IMG_PART_HEAD
        try:
            consume(stream.write(opening))
        except StreamClosedError:
            self._on_close()
            return
        log.info(
            "mjpeg viewer %s joined (%s framing, %s%s); %d watching %s",
            self.request.remote_ip,
            framing,
            self.variants.label(self.key),
            ", adaptive" if adapt else "",
            self.feed.viewer_count,
            self.feed.name,
        )
        if stream.closed():
            self._on_close()

    # -- the Subscriber side ------------------------------------------------
    def accepts(self) -> bool:
        return True  # no rate cap: every frame the viewer is free for

    def send(self, data: bytes) -> asyncio.Future[Any] | None:
        stream = self._stream
        if stream is None or self._gone:
            raise SubscriberGone
        try:
            return write_now(stream, data)
        except StreamClosedError as exc:
            raise SubscriberGone from exc

    def feed_closed(self) -> None:
        if self._stream is not None and not self._stream.closed():
            self._stream.close()

    def _on_close(self) -> None:
        if self._gone:
            return
        self._gone = True
        self.leave_variant()
        log.info(
            "mjpeg viewer %s left; %d watching %s",
            self.request.remote_ip,
            self.feed.viewer_count,
            self.feed.name,
        )
