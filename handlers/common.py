"""What every handler shares: short plain-text errors and no-cache headers."""

from __future__ import annotations

import http
import logging
import math
import time
from typing import Any

import tornado.web

from handlers.access import check

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
        self.clear()
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_no_cache()
        self.finish(f"{status} {message}\n")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        try:
            phrase = http.HTTPStatus(status_code).phrase
        except ValueError:
            phrase = "Error"
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {phrase}\n")

    def data_received(self, chunk: bytes) -> None:  # pragma: no cover - no streaming bodies
        pass


def cors_headers(handler: tornado.web.RequestHandler) -> dict[str, str]:
    """CORS headers for a request from an origin given with ``--allow-origin``, else none.

    Streams and snapshots send them so that web apps of those origins can
    ``fetch()`` them (credentials included); no other origin gets any.
    """
    origin = handler.request.headers.get("Origin")
    allowed: frozenset[str] = handler.application.settings.get("allow_origins", frozenset())
    if not origin or not allowed:
        return {}
    from handlers.ws import normalize_origin  # the one definition of an origin's form

    try:
        if normalize_origin(origin) not in allowed:
            return {}
    except ValueError:
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
        handler.set_status(403)
        handler.set_header("Content-Type", "text/plain; charset=utf-8")
        handler.finish("403 Forbidden: this origin may not read this camera\n")
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
    handler.clear()
    handler.set_status(503)
    handler.set_header("Retry-After", "10")
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    handler.set_header("Cache-Control", "no-store")
    handler.finish("503 Service Unavailable: too many viewers, try again later\n")
    return True


class NotFoundHandler(BaseHandler):
    """Every unknown path: 404 with a short body."""

    def prepare(self) -> None:
        if check(self):
            self.fail(404, "Not Found: no such page here; try /")
