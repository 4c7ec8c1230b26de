"""How much the server takes: streams at once, and the size of a request.

* :class:`ClientLimit` (``--max-clients``): streams (MJPEG and WebSocket, every
  camera) at once; one more gets ``503`` with ``Retry-After``
  (:func:`refuse_if_full`).
* :func:`check_size`: a URL over :data:`MAX_URL_BYTES` gets ``414``, headers over
  :data:`MAX_HEADERS_BYTES` get ``431``.  Beyond the HTTP server's own caps
  (:data:`MAX_HEADER_BYTES`, :data:`MAX_BODY_BYTES`, given to ``HTTPServer`` by
  ``server.py``) the connection is closed before any handler runs.

IOLoop thread only.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import tornado.web

from handlers.plain import finish_plain

log = logging.getLogger(__name__)

#: Request line and headers together; beyond this the connection is closed unanswered
#: (the handlers answer 414 and 431 below it).
MAX_HEADER_BYTES = 64 * 1024
#: No route takes a body; a small one (a client's habit) is read and ignored, a larger one refused.
MAX_BODY_BYTES = 64 * 1024
#: Longest URL (path and query) accepted; longer ones get 414.
MAX_URL_BYTES = 8 * 1024
#: Most bytes of request headers accepted; more get 431.
MAX_HEADERS_BYTES = 16 * 1024


def check_size(handler: tornado.web.RequestHandler) -> bool:
    """True if the request's URL and headers are within the limits; else finish it
    with 414 or 431 (and ``Connection: close``) and return False."""
    request = handler.request
    if len(request.uri or "") > MAX_URL_BYTES:
        finish_plain(handler, 414, "URI Too Long", {"Connection": "close"})
        return False
    if sum(len(k) + len(v) + 4 for k, v in request.headers.get_all()) > MAX_HEADERS_BYTES:
        finish_plain(handler, 431, "Request Header Fields Too Large", {"Connection": "close"})
        return False
    return True


class ClientLimit:
    """At most ``max_clients`` streams (MJPEG and WebSocket, every camera) at once."""

    def __init__(self, feeds: list[Any], max_clients: int) -> None:
        self.feeds = feeds
        self.max_clients = max_clients
        self.refused = 0
        self._logged_at = -math.inf

    def full(self) -> bool:
        return sum(feed.viewer_count for feed in self.feeds) >= self.max_clients


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
