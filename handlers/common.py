"""What every handler shares: short plain-text errors and no-cache headers."""

from __future__ import annotations

import http
import logging
from typing import Any

import tornado.web

log = logging.getLogger(__name__)

NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}


class BaseHandler(tornado.web.RequestHandler):
    """Errors are one short line of text: never a traceback, never HTML."""

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


class NotFoundHandler(BaseHandler):
    """Every unknown path: 404 with a short body."""

    def prepare(self) -> None:
        self.fail(404, "Not Found: no such page here; try /")
