"""What every handler of the server shares: admission, no-cache headers, short errors.

Every request is admitted first (:func:`admit`): its size is checked
(:mod:`handlers.limits`), then its credentials (:mod:`handlers.access`).
"""

from __future__ import annotations

from typing import Any

import tornado.web

from handlers.access import check
from handlers.limits import check_size
from handlers.plain import finish_plain, write_short_error


def admit(handler: tornado.web.RequestHandler) -> bool:
    """True if the request may go on; else it is finished (414, 431 or 401) and
    False is returned.  Every handler calls this first."""
    return check_size(handler) and check(handler)


NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}


class BaseHandler(tornado.web.RequestHandler):
    """Errors are one short line of text: never a traceback, never HTML.
    Every request is first checked for credentials (:func:`admit`)."""

    def prepare(self) -> None:
        admit(self)

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


class NotFoundHandler(BaseHandler):
    """Every unknown path: 404 with a short body."""

    def prepare(self) -> None:
        if admit(self):
            self.fail(404, "Not Found: no such page here; try /")
