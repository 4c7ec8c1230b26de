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
