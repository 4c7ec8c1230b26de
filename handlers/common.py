"""What every handler shares: short plain-text errors and no-cache headers."""

from __future__ import annotations

import logging
import math
import time
import urllib.parse
from typing import Any

import tornado.web

from handlers.access import check
from handlers.plain import finish_plain, write_short_error

log = logging.getLogger(__name__)

NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}


class BaseHandler(tornado.web.RequestHandler):
    """Errors are one short line of text: never a traceback, never HTML.
    Every request is first checked for credentials (:mod:`handlers.access`)."""

    def prepare(self) -> None:
        check(self)

    def set_no_cache(self) -> None:
        for name, value in NO_CACHE.items():
            self.set_header(name, value)

    def fail(self, status: int, message: str) -> None:
        """Finish the request with ``status`` and a one-line plain-text body."""
        finish_plain(self, status, message)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        write_short_error(self, status_code)

    def data_received(self, chunk: bytes) -> None:  # pragma: no cover - no streaming bodies
        pass


def normalize_origin(text: str) -> str:
    """``scheme://host[:port]`` in the form browsers send in ``Origin``.

    Lower-case scheme and host, no default port, no trailing slash.  Raises
    ValueError for anything that is not an http(s) origin (a path, a query,
    user info, a missing host).
    """
    value = text.strip()
    parts = urllib.parse.urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin like https://example.com[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{text!r} is not an origin: no path, query or user info allowed")
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} has a bad port") from exc
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def origin_allowed(handler: tornado.web.RequestHandler, origin: str) -> bool:
    """Whether ``origin`` is one of the application's ``allow_origins`` (``--allow-origin``):
    the one list for the WebSocket's cross-origin check and for CORS."""
    allowed: frozenset[str] = handler.application.settings.get("allow_origins", frozenset())
    try:
        return bool(allowed) and normalize_origin(origin) in allowed
    except ValueError:
        return False


def cors_headers(handler: tornado.web.RequestHandler) -> dict[str, str]:
    """CORS headers for a request from an origin given with ``--allow-origin``, else none.

    Streams and snapshots send them so that web apps of those origins can
    ``fetch()`` them (credentials included); no other origin gets any.
    """
    origin = handler.request.headers.get("Origin")
    if not origin or not origin_allowed(handler, origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Timestamp",
        "Vary": "Origin",
    }


def answer_preflight(handler: tornado.web.RequestHandler) -> None:
    """``OPTIONS`` (a CORS preflight, which never carries credentials): 204 with the
    CORS headers for an allowed origin, 403 for any other."""
    headers = cors_headers(handler)
    if not headers:
        finish_plain(handler, 403, "Forbidden: this origin may not read this camera")
        return
    for name, value in headers.items():
        handler.set_header(name, value)
    handler.set_header("Access-Control-Allow-Methods", "GET, HEAD")
    handler.set_header("Access-Control-Allow-Headers", "Authorization")
    handler.set_header("Access-Control-Max-Age", "600")
    handler.set_status(204)
    handler.finish()


class ClientLimit:
    """At most ``max_clients`` streams (MJPEG and WebSocket, every camera) at once."""

    def __init__(self, feeds: list[Any], max_clients: int) -> None:
        self.feeds = feeds
        self.max_clients = max_clients
        self.refused = 0
        self._logged_at = -math.inf

    def full(self) -> bool:
        return sum(feed.subscriber_count for feed in self.feeds) >= self.max_clients


def refuse_if_full(handler: tornado.web.RequestHandler) -> bool:
    """True (and a 503 with Retry-After sent) if the server has all the streams it takes."""
    limit: ClientLimit | None = handler.application.settings.get("client_limit")
    if limit is None or not limit.full():
        return False
    limit.refused += 1
    now = time.monotonic()
    if now - limit._logged_at >= 10:  # one line per 10 s, however hard clients knock
        limit._logged_at = now
        log.warning(
            "refusing new streams: %d already (--max-clients); %d refused", limit.max_clients, limit.refused
        )
    finish_plain(
        handler, 503, "Service Unavailable: too many viewers, try again later", {"Retry-After": "10"}
    )
    return True


class NotFoundHandler(BaseHandler):
    """Every unknown path: 404 with a short body."""

    def prepare(self) -> None:
        if check(self):
            self.fail(404, "Not Found: no such page here; try /")
