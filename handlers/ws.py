"""``/ws``: the camera's frames over a WebSocket, one binary message per frame.

The handler is a subscriber of the same :class:`~feed.FrameFeed` as
the MJPEG handlers, so the feed's rules hold here too: each new frame is
offered once, at most one frame is in flight per client (``send`` returns the
future of a write that did not go out at once, see
:mod:`handlers.fastwrite`), and a client still busy with an older frame skips
the stale one and gets the newest as soon as it is free.

Protocol, server to client:

* Binary messages only, until the client sends something: a client that
  treats every message as a JPEG (a blob into an ``<img>``) just works.
* Each binary message is one complete JPEG: the frame's bytes with one
  JPEG comment segment (``COM``, ``FF FE``) inserted after the ``APPn``
  headers, holding ASCII ``camstream seq=<int> t=<unix seconds>``: the
  frame's sequence number and capture time.  Every JPEG decoder skips
  comments, so the message is still a plain JPEG (``<img>``, Pillow,
  ``createImageBitmap``); a client that wants the timestamp reads the first
  few segments (:func:`frame_info` shows how).  The whole WebSocket frame
  is built once per frame and shared by every client (:func:`ws_wire`).  Data that does not start
  with a JPEG SOI marker is sent unchanged.
* While the camera produces nothing new, the newest frame is sent again about
  once a second (same ``seq``): a client can tell a still picture from a
  dead connection without a timer of the server per client.  Clients skip a
  ``seq`` they have already shown.
* In answer to the client's first accepted control message (``{}`` will do),
  one text message, a JSON object, before the reply::

      {"type": "hello", "camera": "emulated", "fps": 30.0,
       "server_time": 1700000000.123456, "max_message_bytes": 4096}

  ``fps`` is the camera's configured rate; ``server_time`` (Unix seconds)
  gives a first, rough estimate of the offset between the client's clock and
  the server's (see ``"time"`` below for a better one).  ``/status`` has
  the same facts for clients that never speak: ``name``, ``fps_configured``
  and ``ws_max_message_bytes``.
* After each accepted control message, one text message
  ``{"type": "reply", "fps": <cap or null>, "server_time": <unix s>, "time": <echo>}``
  (``time`` only when the request had one).

Client to server: only small JSON objects (at most :data:`MAX_CLIENT_MESSAGE_BYTES`),
with any of these keys; unknown keys are ignored:

* ``"fps": N`` caps the frames delivered to this client to N per second
  (``0 < N <= 120``; ``0`` or ``null`` removes the cap).  A frame arriving
  sooner than the cap allows is skipped for this client; the newest still
  arrives within a second, by the repeat of a still picture.
* ``"time": T`` (any number, say the client's clock) is echoed in the reply
  next to ``server_time``: the client measures the round trip and estimates
  the clock offset as ``server_time - (its clock at the midpoint)``, within
  half a round trip, to show how old a frame is.
* ``"type": "heartbeat"`` (with the kiosk's facts: ``id``, ``page``,
  ``frames_shown``...; see :mod:`handlers.kiosks`) says a kiosk is alive;
  ``/status`` lists it under ``"kiosks"``.  The reply says
  ``"heartbeat": "recorded"``, or ``"ignored: <the rule it broke>"``: a
  heartbeat with a bad field is not recorded, logged once per socket, and
  does not close the socket (a kiosk's monitoring failing must not take its
  picture away).  Other values of ``type`` are ignored.

Anything else closes that client's socket, and only that one: a binary
message with 1003, text that is not JSON with 1007, JSON that is not a valid
control object with 1008, a message over the limit with 1009 (Tornado's own
check, before the message is read).

Origin: same origin by default (Tornado's check of ``Origin`` against
``Host`` and ``Sec-Fetch-Site``); extra origins only through ``--allow-origin``.
Pings (``websocket_ping_interval`` in the application settings) close dead
connections.  No per-message compression: JPEG does not compress.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import tornado.websocket
from tornado.iostream import IOStream, StreamClosedError

from cameras.jpeg import first_comment, insert_comment
from feed import FrameFeed, SubscriberGone, consume
from frame import CameraError, Frame
from handlers.base import admit
from handlers.cors import origin_allowed
from handlers.fastwrite import binary_frame, websocket_stream, write_now
from handlers.kiosks import BadHeartbeat, Kiosks, parse_heartbeat
from handlers.limits import refuse_if_full
from handlers.plain import finish_plain, write_short_error
from handlers.viewing import BadRequest, VariantViewer, limit_unsent, parse_quality, parse_width, variant_args
from outputs.variants import Variants

log = logging.getLogger(__name__)

#: Largest message a client may send, bytes; bigger ones close its socket (1009).
MAX_CLIENT_MESSAGE_BYTES = 4096
#: Highest frame-rate cap a client may ask for.
MAX_FPS = 120.0

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013

_COMMENT_PREFIX = b"camstream "
_COMMENT_RE = re.compile(rb"camstream seq=(\d+) t=([0-9.]+)")


# -- the wire format ----------------------------------------------------------
def ws_message(frame: Frame) -> bytes:
    """The binary message for ``frame``: its JPEG with a ``camstream`` COM segment.

    Pure function of the frame (the feed builds it once per frame and shares
    it between WebSocket clients).  Data without a JPEG SOI marker is
    returned unchanged.
    """
    text = b"%sseq=%d t=%.6f" % (_COMMENT_PREFIX, frame.seq, frame.timestamp)
    return insert_comment(frame.jpeg, text)


def ws_wire(frame: Frame) -> bytes:
    """The bytes on the wire for ``frame``: :func:`ws_message` framed as one binary
    WebSocket message, built once per frame and shared by every client."""
    return binary_frame(ws_message(frame))


#: (origin, Host) pairs whose refusal was logged as a WARNING; bounded, so a
#: flood of made-up origins cannot grow it or the log.
_refusals_logged: set[tuple[str, str]] = set()
_MAX_REFUSALS_LOGGED = 32


def _netloc(origin: str) -> str:
    try:
        return urllib.parse.urlsplit(origin).netloc.lower()
    except ValueError:
        return ""


def refusal_reason(origin: str, host: str) -> str:
    """Why a WebSocket from a page of ``origin`` is refused when the request's
    ``Host`` header is ``host``, and the two ways to fix it (one line)."""
    return (
        f"the page's origin {origin} does not match the Host header the server received "
        f"({host or 'none'}): a proxy in front of the server must pass the browser's Host on "
        f"(nginx: proxy_set_header Host $host;), or start the server with --allow-origin {origin}"
    )


def hello_message(feed: FrameFeed) -> dict[str, Any]:
    """The ``hello`` text message for a client of ``feed`` (see the module's protocol)."""
    return {
        "type": "hello",
        "camera": feed.name,
        "fps": feed.camera.config.fps,
        "server_time": round(time.time(), 6),
        "max_message_bytes": MAX_CLIENT_MESSAGE_BYTES,
    }


def frame_info(message: bytes) -> tuple[bytes, int, float] | None:
    """Undo :func:`ws_message`: ``(original jpeg, seq, timestamp)``, or None if
    the message carries no ``camstream`` comment.  For tests and Python clients."""
    found = first_comment(message)
    if found is None:
        return None
    text, start, end = found
    match = _COMMENT_RE.fullmatch(text)
    if match is None:
        return None
    return message[:start] + message[end:], int(match.group(1)), float(match.group(2))


# -- the handler --------------------------------------------------------------
class WsHandler(VariantViewer, tornado.websocket.WebSocketHandler):
    """One WebSocket viewer; a :class:`~feed.Subscriber` of the feed
    (of the camera, or of the variant it gets: :class:`~handlers.viewing.VariantViewer`).

    IOLoop thread only.  ``clock`` (monotonic seconds) is injectable for the
    frame-rate cap in tests; ``kiosks`` is the registry a kiosk's heartbeats go
    to (None: they are answered, not recorded).
    """

    kind = "ws"

    def initialize(
        self,
        variants: Variants,
        clock: Callable[[], float] = time.monotonic,
        kiosks: Kiosks | None = None,
    ) -> None:
        self.clock = clock
        self.kiosks = kiosks
        self._kiosk_id: str | None = None
        self._kiosk_socket = kiosks.connection_token() if kiosks is not None else 0
        self._heartbeat_refused = False
        self._viewer_init(variants)
        self._args: tuple[int | None, int | None, bool] = (None, None, True)
        self.encoder = ws_wire
        self.repeat_stale = True
        self.fps_cap: float | None = None
        self._next_due = -math.inf
        self._subscribed = False
        self._greeted = False
        self._gone = False
        self._stream: IOStream | None = None

    # -- handshake ----------------------------------------------------------
    def check_origin(self, origin: str) -> bool:
        """Called only for cross-origin requests: accept the configured origins.

        A refusal is logged once per (origin, Host) pair as a WARNING that
        names the fix: the usual cause is a proxy that does not pass the
        browser's ``Host`` on (nginx's default), not an attack.
        """
        if origin_allowed(self, origin):
            return True
        host = self.request.headers.get("Host", "")
        key = (origin, host)
        if key not in _refusals_logged and len(_refusals_logged) < _MAX_REFUSALS_LOGGED:
            _refusals_logged.add(key)
            reason = refusal_reason(origin, host)
            log.warning("ws viewer %s refused (403): %s", self.request.remote_ip, reason)
        return False

    async def get(self, *args: Any, **kwargs: Any) -> None:
        """The upgrade; or, for a plain ``GET ws?origin=ORIGIN`` (no ``Upgrade``
        header), the answer to "would a WebSocket from a page of ORIGIN be
        accepted here?": JSON ``{"ok": true}`` or ``{"ok": false, "reason": "..."}``.
        Browsers hide why a handshake failed; the pages ask this to show it."""
        upgrade = self.request.headers.get("Upgrade", "").lower() == "websocket"
        if not upgrade and "origin" in self.request.query_arguments:
            self._diagnose(self.get_query_argument("origin"))
            return
        await super().get(*args, **kwargs)

    def _diagnose(self, origin: str) -> None:
        host = self.request.headers.get("Host", "")
        if _netloc(origin) == host.lower() or origin_allowed(self, origin):
            body: dict[str, Any] = {"ok": True}
        else:
            body = {"ok": False, "reason": refusal_reason(origin, host)}
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))

    def set_default_headers(self) -> None:
        # Refusals (a bad handshake, another method) are short plain text, not
        # HTML; Tornado drops the Content-Type from the 101 of an accepted upgrade.
        self.set_header("Content-Type", "text/plain; charset=utf-8")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        write_short_error(self, status_code)

    def prepare(self) -> None:
        # Credentials first (a 401 instead of the upgrade), then the parameters,
        # then room for one more stream.
        if not admit(self):
            return
        try:
            self._args = variant_args(self, adapt_default=True)
        except BadRequest as exc:
            finish_plain(self, 400, f"Bad Request: {exc}")
            return
        refuse_if_full(self)

    def get_compression_options(self) -> None:
        return None  # JPEG does not compress; deflate would only cost CPU

    @property
    def max_message_size(self) -> int:
        return MAX_CLIENT_MESSAGE_BYTES

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)
        # Looked up once: every frame is written onto it (see send).
        self._stream = websocket_stream(self.ws_connection)  # type: ignore[arg-type]
        width, quality, adapt = self._args
        if adapt:
            limit_unsent(self._stream.socket)
        try:
            self.join_variant(width, quality, adapt)
        except CameraError as exc:
            log.warning("ws viewer %s refused: %s", self.request.remote_ip, exc)
            self.close(CLOSE_TRY_AGAIN_LATER, _reason(str(exc)))
            return
        self._subscribed = True
        log.info(
            "ws viewer %s joined (%s%s); %d watching %s",
            self.request.remote_ip,
            self.variants.label(self.key),
            ", adaptive" if adapt else "",
            self.feed.viewer_count,
            self.feed.name,
        )

    # -- messages from the client -------------------------------------------
    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._refuse(CLOSE_UNSUPPORTED_DATA, "binary messages are not accepted")
            return
        try:
            request = json.loads(message)
        except (ValueError, RecursionError):  # not JSON, or nested too deep
            self._refuse(CLOSE_INVALID_PAYLOAD, "messages must be JSON")
            return
        if not isinstance(request, dict):
            self._refuse(CLOSE_POLICY, "messages must be JSON objects")
            return
        if "time" in request and not _is_number(request["time"]):
            self._refuse(CLOSE_POLICY, "time must be a number")
            return
        if "fps" in request:
            fps = request["fps"]
            if fps is None or (_is_number(fps) and fps == 0):
                self.fps_cap = None
            elif _is_number(fps) and 0 < fps <= MAX_FPS:
                self.fps_cap = float(fps)
            else:
                self._refuse(CLOSE_POLICY, f"fps must be a number above 0, at most {MAX_FPS:g}, or 0")
                return
            self._next_due = -math.inf
            log.debug("ws viewer %s: fps cap %s", self.request.remote_ip, self.fps_cap)
        if "width" in request or "quality" in request:
            try:
                width = _full_if_zero(request.get("width", self.asked_width), parse_width)
                quality = _full_if_zero(request.get("quality", self.asked_quality), parse_quality)
            except BadRequest as exc:
                self._refuse(CLOSE_POLICY, f"{exc}, or 0 or null")
                return
            if self._subscribed:
                self.ask_variant(width, quality)
        heartbeat = self._heartbeat(request) if request.get("type") == "heartbeat" else None
        if not self._greeted:
            self._greeted = True
            hello = hello_message(self.feed)
            if self._subscribed:
                hello["variant"] = self.variant_info()
            consume(self.write_message(json.dumps(hello)))
        reply: dict[str, Any] = {
            "type": "reply",
            "fps": self.fps_cap,
            "server_time": round(time.time(), 6),
            "variant": self.variant_info(),
        }
        if "time" in request:
            reply["time"] = request["time"]
        if heartbeat is not None:
            reply["heartbeat"] = heartbeat
        consume(self.write_message(json.dumps(reply)))

    def _heartbeat(self, request: dict[str, Any]) -> str:
        """Record a kiosk's heartbeat (see the module's protocol); what the reply says of it."""
        try:
            beat = parse_heartbeat(request)
            if self._kiosk_id is not None and beat.id not in (None, self._kiosk_id):
                raise BadHeartbeat("a socket's kiosk id may not change")
        except BadHeartbeat as exc:
            if not self._heartbeat_refused:  # one line per socket, however often it beats
                self._heartbeat_refused = True
                log.info("ws viewer %s: heartbeat ignored: %s", self.request.remote_ip, exc)
            return f"ignored: {exc}"
        if self.kiosks is not None:
            self._kiosk_id = self.kiosks.heartbeat(
                beat if beat.id is not None or self._kiosk_id is None else replace(beat, id=self._kiosk_id),
                camera=self.feed.name,
                address=self.request.remote_ip,
                transport="ws",
                connection=self._kiosk_socket,
            )
        return "recorded"

    def variant_changed(self, reason: str) -> None:
        if self._greeted:
            self._tell_variant(reason)

    def _tell_variant(self, reason: str) -> None:
        """The ``variant`` text message: what this client gets now, and why."""
        if self._gone or self.ws_connection is None or self.ws_connection.is_closing():
            return
        message = {"type": "variant", **self.variant_info(), "reason": reason}
        consume(self.write_message(json.dumps(message)))

    def _refuse(self, code: int, reason: str) -> None:
        log.info("ws viewer %s closed: %s (%d)", self.request.remote_ip, reason, code)
        self.close(code, reason)

    # -- the Subscriber side ------------------------------------------------
    def accepts(self) -> bool:
        """False while a frame would come sooner than this client's fps cap allows
        (the feed counts it as capped); True otherwise, taking the slot."""
        if self.fps_cap is None:
            return True
        now = self.clock()
        if now < self._next_due:
            return False
        interval = 1.0 / self.fps_cap
        # A deadline grid rather than "interval since the last send", so
        # frames arriving with jitter still average close to the cap; a
        # quarter interval of lateness is carried over, no more (no bursts).
        self._next_due = max(self._next_due, now - interval / 4) + interval
        return True

    def send(self, data: bytes) -> asyncio.Future[Any] | None:
        """Start sending ``data`` as one binary message; its future is done when
        written, None if it went out at once.  Raises SubscriberGone if the
        socket is closed."""
        if self._gone:
            raise SubscriberGone
        # ``data`` is a complete binary frame (ws_wire), shared by every client:
        # written straight to the connection's stream, not re-framed (and so
        # copied) per client by write_message.  Tornado's own writes (hello,
        # replies, pings, close) queue on the same stream, so frames never
        # interleave; nothing may follow a close frame.
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            raise SubscriberGone
        try:
            return write_now(self._stream, data)  # type: ignore[arg-type]
        except StreamClosedError as exc:
            raise SubscriberGone from exc

    def feed_closed(self) -> None:
        self.close(CLOSE_GOING_AWAY, "the server is shutting down")

    def on_close(self) -> None:
        if self._gone:
            return
        self._gone = True
        if self.kiosks is not None and self._kiosk_id is not None:
            self.kiosks.disconnected(self._kiosk_id, self._kiosk_socket)
        if not self._subscribed:
            return
        self.leave_variant()
        log.info(
            "ws viewer %s left (close code %s); %d watching %s",
            self.request.remote_ip,
            "none" if self.close_code is None else self.close_code,
            self.feed.viewer_count,
            self.feed.name,
        )


def _full_if_zero(value: Any, parse: Callable[[Any], int | None]) -> int | None:
    """A control message's ``width`` or ``quality``: 0 or null is the camera's own."""
    if value is None or (_is_number(value) and value == 0):
        return None
    return parse(value)


def _is_number(value: object) -> bool:
    """A finite JSON number (not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    data = text.encode()[:120]
    return data.decode(errors="ignore")
