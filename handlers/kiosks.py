"""The kiosks that say they are alive: their heartbeats, ``/status``'s ``"kiosks"``
and ``POST heartbeat``, the beacon of a kiosk without a WebSocket.

A wall display shows one camera for months, and a page cannot heal a dead
renderer (a crashed web process, a hung page): someone, or a monitor, must see
it.  So the kiosk page (``static/kiosk.js``) says it is alive every
:data:`DEFAULT_INTERVAL_S` seconds, and at once whenever its socket opens:

* on its WebSocket (``"ws"`` mode), as a control message of the socket's
  protocol (:mod:`handlers.ws`) with ``"type": "heartbeat"``;
* without one (``?mode=mjpeg``, the ``<img>`` path), as the same JSON object in
  a ``POST`` to the camera's ``heartbeat`` URL (``Content-Type:
  application/json``; ``204`` when recorded, a one-line ``4xx`` when not).

The heartbeat (every key optional but ``type``; unknown keys are ignored)::

    {"type": "heartbeat", "id": "k3f9a0c2d1e4", "page": "/kiosk",
     "frames_shown": 1234, "interval_s": 5, "viewport": [1280, 720],
     "screen": [1920, 1080], "pixel_ratio": 1, "page_uptime_s": 3600.5,
     "reconnects": 0, "stalls": 0}

``id`` names the page load (letters, digits, ``-`` and ``_``; at most 64): a
kiosk that reconnects keeps its entry, a reloaded page or a restarted browser
gets a new one.  A socket's ``id`` may not change; a socket without one gets
``ws-N`` of the server's; a beacon needs one.  ``interval_s`` (1 to 60) is how
often the page beats: after :data:`TIMEOUT_INTERVALS` intervals without one,
a kiosk whose socket is still open is ``"silent"`` (a hung page, or a link that
died without a close), a beacon's is ``"gone"``.

:class:`Kiosks` remembers at most :data:`MAX_KIOSKS` of them: live ones, and the
gone ones for :data:`GONE_KEEP_S` seconds, so a monitor can tell a display that
died from one that is quiet.  IOLoop thread only; nothing here blocks.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers.base import BaseHandler

log = logging.getLogger(__name__)

#: Kiosks remembered at most; beyond it, the one gone longest (else the one
#: silent longest) is forgotten.
MAX_KIOSKS = 64
#: How long a gone kiosk stays in ``/status``, seconds.
GONE_KEEP_S = 300.0
#: A kiosk's heartbeat interval unless it says otherwise, seconds.
DEFAULT_INTERVAL_S = 5.0
#: The longest interval a kiosk may announce, seconds.
MAX_INTERVAL_S = 60.0
#: Intervals without a heartbeat after which a kiosk is silent (open socket) or gone.
TIMEOUT_INTERVALS = 3
#: Largest body of ``POST heartbeat``, bytes.
MAX_BEACON_BYTES = 4096

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_PAGE_CHARS = 256
_MAX_COUNT = 2**53 - 1  # a JavaScript number's last exact integer
_MAX_PIXELS = 100_000
_MAX_PIXEL_RATIO = 16.0

LIVE = "live"
SILENT = "silent"
GONE = "gone"
STATES = (LIVE, SILENT, GONE)


class BadHeartbeat(ValueError):
    """A heartbeat that breaks a rule of the module's format; the message says which."""


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat's facts, checked (:func:`parse_heartbeat`)."""

    id: str | None = None
    page: str | None = None
    frames_shown: int | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    viewport: tuple[int, int] | None = None
    screen: tuple[int, int] | None = None
    pixel_ratio: float | None = None
    page_uptime_s: float | None = None
    reconnects: int | None = None
    stalls: int | None = None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(message: dict[str, Any], key: str) -> int | None:
    value = message.get(key)
    if value is None:
        return None
    if not _is_number(value) or value != int(value) or not 0 <= value <= _MAX_COUNT:
        raise BadHeartbeat(f"{key} must be a whole number from 0 to {_MAX_COUNT}")
    return int(value)


def _size(message: dict[str, Any], key: str) -> tuple[int, int] | None:
    value = message.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_is_number(v) and v == int(v) and 0 <= v <= _MAX_PIXELS for v in value)
    ):
        raise BadHeartbeat(f"{key} must be [width, height], whole numbers from 0 to {_MAX_PIXELS}")
    return int(value[0]), int(value[1])


def parse_heartbeat(message: dict[str, Any]) -> Heartbeat:
    """The checked facts of ``message`` (a decoded JSON object, its ``type``
    already known to be ``"heartbeat"``).  Pure; raises :class:`BadHeartbeat`
    naming the first rule broken."""
    ident = message.get("id")
    if ident is not None and not (isinstance(ident, str) and _ID.fullmatch(ident)):
        raise BadHeartbeat("id must be 1 to 64 letters, digits, '-' or '_'")
    page = message.get("page")
    if page is not None and not (
        isinstance(page, str) and 0 < len(page) <= _MAX_PAGE_CHARS and page.isprintable()
    ):
        raise BadHeartbeat(f"page must be a path of at most {_MAX_PAGE_CHARS} printable characters")
    interval = message.get("interval_s", DEFAULT_INTERVAL_S)
    if not _is_number(interval) or not 1 <= interval <= MAX_INTERVAL_S:
        raise BadHeartbeat(f"interval_s must be a number from 1 to {MAX_INTERVAL_S:g}")
    ratio = message.get("pixel_ratio")
    if ratio is not None and not (_is_number(ratio) and 0 < ratio <= _MAX_PIXEL_RATIO):
        raise BadHeartbeat(f"pixel_ratio must be a number above 0, at most {_MAX_PIXEL_RATIO:g}")
    uptime = message.get("page_uptime_s")
    if uptime is not None and not (_is_number(uptime) and uptime >= 0):
        raise BadHeartbeat("page_uptime_s must be a number of seconds, 0 or more")
    return Heartbeat(
        id=ident,
        page=page,
        frames_shown=_count(message, "frames_shown"),
        interval_s=float(interval),
        viewport=_size(message, "viewport"),
        screen=_size(message, "screen"),
        pixel_ratio=None if ratio is None else float(ratio),
        page_uptime_s=None if uptime is None else float(uptime),
        reconnects=_count(message, "reconnects"),
        stalls=_count(message, "stalls"),
    )


def iso_time(unix_s: float) -> str:
    """``unix_s`` as an ISO 8601 UTC time to the millisecond (``...T12:00:00.123Z``)."""
    moment = datetime.datetime.fromtimestamp(unix_s, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Kiosk:
    id: str
    camera: str
    address: str
    transport: str
    connection: int | None  # the socket that carries it (ws), None when closed or a beacon
    first_at: float  # wall clock
    last: Heartbeat
    last_mono: float
    last_wall: float
    heartbeats: int = 1
    connections: int = 0
    gone_mono: float | None = None  # when its socket closed (ws)
    fps: float | None = None
    _rate_frames: int | None = None
    _rate_mono: float = 0.0

    def timeout_s(self) -> float:
        return self.last.interval_s * TIMEOUT_INTERVALS

    def state(self, now: float) -> str:
        if self.transport == "ws":
            if self.connection is None:
                return GONE
            return LIVE if now - self.last_mono <= self.timeout_s() else SILENT
        return LIVE if now - self.last_mono <= self.timeout_s() else GONE

    def gone_since(self, now: float) -> float | None:
        """Monotonic time it went, or None while it is not gone."""
        if self.state(now) != GONE:
            return None
        if self.transport == "ws" and self.gone_mono is not None:
            return self.gone_mono
        return self.last_mono + self.timeout_s()


class Kiosks:
    """The registry of kiosks heard from (see the module's docstring), one per
    application.  IOLoop thread only; every call is O(:data:`MAX_KIOSKS`) at
    most and never blocks.  ``monotonic`` (ages) and ``wall`` (the ISO times)
    are clocks in seconds, injectable for tests."""

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        max_kiosks: int = MAX_KIOSKS,
    ) -> None:
        self.monotonic = monotonic
        self.wall = wall
        self.max_kiosks = max_kiosks
        #: Kiosks forgotten to make room for others (beyond :attr:`max_kiosks`).
        self.forgotten = 0
        self._kiosks: dict[str, _Kiosk] = {}
        self._sockets = 0

    def connection_token(self) -> int:
        """A new number for one socket (its heartbeats' ``connection``)."""
        self._sockets += 1
        return self._sockets

    def heartbeat(
        self,
        beat: Heartbeat,
        *,
        camera: str,
        address: str,
        transport: str,
        connection: int | None = None,
    ) -> str:
        """Record ``beat`` of the kiosk watching ``camera`` from ``address``,
        over ``transport`` (``"ws"``, with its socket's ``connection`` token, or
        ``"http"``, a beacon); returns the kiosk's id (the beat's, else
        ``ws-<connection>``).  Raises :class:`BadHeartbeat` for a beacon without
        an id (each would be a kiosk of its own)."""
        ident = beat.id
        if ident is None:
            if connection is None:
                raise BadHeartbeat("a beacon needs an id")
            ident = f"ws-{connection}"
        now = self.monotonic()
        wall = self.wall()
        kiosk = self._kiosks.get(ident)
        if kiosk is None:
            self._make_room(now)
            kiosk = _Kiosk(ident, camera, address, transport, None, wall, beat, now, wall, heartbeats=0)
            self._kiosks[ident] = kiosk
        if transport == "ws" and kiosk.connection != connection:
            kiosk.connections += 1
        kiosk.camera, kiosk.address, kiosk.transport = camera, address, transport
        kiosk.connection = connection if transport == "ws" else None
        kiosk.gone_mono = None
        kiosk.last, kiosk.last_mono, kiosk.last_wall = beat, now, wall
        kiosk.heartbeats += 1
        self._rate(kiosk, beat, now)
        return ident

    @staticmethod
    def _rate(kiosk: _Kiosk, beat: Heartbeat, now: float) -> None:
        """Frames shown per second between heartbeats at least a second apart."""
        frames = beat.frames_shown
        if frames is None:
            return
        if kiosk._rate_frames is not None and frames >= kiosk._rate_frames:
            elapsed = now - kiosk._rate_mono
            if elapsed < 1.0:
                return  # keep the older reference: a rate over a longer span
            kiosk.fps = round((frames - kiosk._rate_frames) / elapsed, 2)
        kiosk._rate_frames, kiosk._rate_mono = frames, now

    def disconnected(self, ident: str, connection: int) -> None:
        """The socket ``connection`` that carried kiosk ``ident``'s heartbeats
        closed: the kiosk is gone, unless a newer socket carries it already."""
        kiosk = self._kiosks.get(ident)
        if kiosk is not None and kiosk.connection == connection:
            kiosk.connection = None
            kiosk.gone_mono = self.monotonic()

    def _prune(self, now: float) -> None:
        for ident, kiosk in list(self._kiosks.items()):
            since = kiosk.gone_since(now)
            if since is not None and now - since > GONE_KEEP_S:
                del self._kiosks[ident]

    def _make_room(self, now: float) -> None:
        self._prune(now)
        while len(self._kiosks) >= self.max_kiosks:

            def staleness(kiosk: _Kiosk) -> tuple[int, float]:
                since = kiosk.gone_since(now)
                return (1, now - since) if since is not None else (0, now - kiosk.last_mono)

            oldest = max(self._kiosks.values(), key=staleness)
            del self._kiosks[oldest.id]
            self.forgotten += 1

    def status(self, camera: str | None = None) -> list[dict[str, Any]]:
        """``/status``'s ``"kiosks"``: every kiosk remembered (of ``camera`` only,
        if given), in the order first heard from; strict JSON."""
        now = self.monotonic()
        self._prune(now)
        return [
            self._describe(kiosk, now)
            for kiosk in self._kiosks.values()
            if camera is None or kiosk.camera == camera
        ]

    def _describe(self, kiosk: _Kiosk, now: float) -> dict[str, Any]:
        beat = kiosk.last
        state = kiosk.state(now)
        age = max(0.0, now - kiosk.last_mono)
        since = kiosk.gone_since(now)
        return {
            "id": kiosk.id,
            "state": state,
            "camera": kiosk.camera,
            "page": beat.page,
            "address": kiosk.address,
            "transport": kiosk.transport,
            "last_heartbeat_age_s": round(age, 3),
            "last_heartbeat_at": iso_time(kiosk.last_wall),
            "first_heartbeat_at": iso_time(kiosk.first_at),
            "gone_for_s": None if since is None else round(max(0.0, now - since), 3),
            "heartbeats": kiosk.heartbeats,
            "connections": kiosk.connections,
            "interval_s": beat.interval_s,
            "frames_shown": beat.frames_shown,
            "frames_per_s": kiosk.fps,
            "viewport": None if beat.viewport is None else list(beat.viewport),
            "screen": None if beat.screen is None else list(beat.screen),
            "pixel_ratio": beat.pixel_ratio,
            "page_uptime_s": beat.page_uptime_s,
            "reconnects": beat.reconnects,
            "stalls": beat.stalls,
        }

    def counts(self) -> dict[str, int]:
        """Kiosks remembered by state (every one of :data:`STATES`, zeros included)."""
        now = self.monotonic()
        self._prune(now)
        counts = dict.fromkeys(STATES, 0)
        for kiosk in self._kiosks.values():
            counts[kiosk.state(now)] += 1
        return counts

    def oldest_heartbeat_age_s(self) -> float | None:
        """Seconds since the oldest last heartbeat of the kiosks not gone (live or
        silent), or None if there is none."""
        now = self.monotonic()
        ages = [now - k.last_mono for k in self._kiosks.values() if k.state(now) != GONE]
        return max(0.0, max(ages)) if ages else None


class HeartbeatHandler(BaseHandler):
    """``POST heartbeat``: the beacon of a kiosk without a WebSocket (see the
    module's docstring).  ``204`` when recorded; ``415`` unless the body is
    ``application/json`` (so another site's page cannot send one without the
    browser asking us first, which we never allow), ``413`` over
    :data:`MAX_BEACON_BYTES`, ``400`` naming the broken rule."""

    def initialize(self, kiosks: Kiosks, camera: str) -> None:
        self.kiosks = kiosks
        self.camera = camera

    def post(self) -> None:
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self.fail(415, "Unsupported Media Type: a heartbeat is application/json")
            return
        body = self.request.body
        if len(body) > MAX_BEACON_BYTES:
            self.fail(413, f"Content Too Large: a heartbeat is at most {MAX_BEACON_BYTES} bytes")
            return
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError too; nested too deep
            self.fail(400, "Bad Request: a heartbeat must be JSON")
            return
        if not isinstance(message, dict) or message.get("type", "heartbeat") != "heartbeat":
            self.fail(400, 'Bad Request: a heartbeat is a JSON object with "type": "heartbeat"')
            return
        try:
            beat = parse_heartbeat(message)
            if beat.id is None:
                raise BadHeartbeat("a beacon needs an id")
            self.kiosks.heartbeat(beat, camera=self.camera, address=self.request.remote_ip, transport="http")
        except BadHeartbeat as exc:
            self.fail(400, f"Bad Request: {exc}")
            return
        self.set_status(204)
        self.set_no_cache()
        self.finish()
